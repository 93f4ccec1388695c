//! The harness: a fresh store per test — a new SQLite file, or a new PostgreSQL database when
//! `IPTO_TEST_DATABASE_URL` names a server — migrated with the service's own migrations; events
//! appended in the shape cqrs-es writes them; engines started and stopped; and [`Tally`], a test
//! read model that records every event it is handed.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cqrs_es::{Aggregate, DomainEvent};
use projections::{
    log, Db, Dialect, EventMetadata, LogPosition, Projection, ProjectionError, ProjectorEngine,
    Reads, StoredEvent,
};
use sqlx::any::AnyPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AnyConnection, Connection, Executor, PgConnection};
use tokio::sync::watch;
use tokio::task::JoinSet;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// How long a test waits for projections to reach the end of the log. On PostgreSQL a transaction
/// open anywhere on the server (another test) holds the reader back until it ends.
const SETTLE: Duration = Duration::from_secs(60);

/// The prefix of every test database, so that only those are ever dropped.
const PREFIX: &str = "ipto_p_";

/// The test server, if the suite runs against PostgreSQL.
fn test_server() -> Option<String> {
    std::env::var("IPTO_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A database name no other test (or earlier run) uses.
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{nanos}_{}_{n}", std::process::id())
}

/// A fresh, migrated store for one test.
pub struct Store {
    /// The read side's handle, opened as the service opens it.
    pub db: Db,
    url: String,
    /// The SQLite file, removed at the end.
    file: Option<PathBuf>,
}

impl Store {
    /// Creates a new SQLite file or PostgreSQL database and applies the service's migrations.
    pub async fn fresh() -> Store {
        sqlx::any::install_default_drivers();
        let name = unique_name();
        let (url, file) = match test_server() {
            Some(server) => {
                let mut conn = PgConnection::connect(&server)
                    .await
                    .expect("test PostgreSQL reachable");
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create test database");
                let _ = conn.close().await;
                let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
                (format!("{base}/{name}"), None)
            }
            None => {
                let file = std::env::temp_dir().join(format!("{name}.db"));
                (format!("sqlite://{}", file.display()), Some(file))
            }
        };
        migrate(&url).await;
        let db = open(&url).await;
        Store { db, url, file }
    }

    /// Another handle on the same store, with its own pool, as a second instance opens it.
    pub async fn another_handle(&self) -> Db {
        open(&self.url).await
    }

    /// Appends an aggregate's events in one transaction, as its event store would, each stamped
    /// `occurred_at`. Returns their places in the log.
    pub async fn append<A: Aggregate>(
        &self,
        aggregate_id: &str,
        events: &[A::Event],
        occurred_at: &str,
    ) -> Vec<LogPosition> {
        let rows: Vec<_> = events
            .iter()
            .map(|e| {
                let payload = serde_json::to_string(e).expect("event serializes");
                (e.event_type(), e.event_version(), payload)
            })
            .collect();
        self.append_rows(A::TYPE, aggregate_id, &rows, occurred_at)
            .await
    }

    /// Appends one event [`Tally`] reads, for aggregate `aggregate_id`. Returns its place.
    pub async fn append_tally(&self, aggregate_id: &str) -> LogPosition {
        let row = ("Counted".into(), "1.0".into(), r#"{"Counted":{}}"#.into());
        let at = aggregates::timestamp::format(chrono::Utc::now());
        self.append_rows(Tally::TYPE, aggregate_id, &[row], &at)
            .await[0]
    }

    /// Appends `(event_type, event_version, payload)` rows after the aggregate's last sequence.
    async fn append_rows(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        rows: &[(String, String, String)],
        occurred_at: &str,
    ) -> Vec<LogPosition> {
        let metadata = serde_json::to_string(&EventMetadata {
            actor_type: "system".into(),
            actor_id: "system".into(),
            tenant_id: None,
            request_id: None,
            occurred_at: occurred_at.into(),
        })
        .expect("metadata serializes");
        let cast = match self.db.dialect {
            Dialect::Postgres => "::jsonb",
            Dialect::Sqlite => "",
        };
        let insert = format!(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ($1, $2, $3, $4, $5, $6{cast}, $7{cast})"
        );
        let mut tx = self.db.begin_write().await.expect("begin");
        let last: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(MAX(sequence), 0) AS BIGINT) FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_one(&mut *tx)
        .await
        .expect("last sequence");
        for (n, (event_type, event_version, payload)) in rows.iter().enumerate() {
            sqlx::query(&insert)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(last + 1 + n as i64)
                .bind(event_type)
                .bind(event_version)
                .bind(payload)
                .bind(&metadata)
                .execute(&mut *tx)
                .await
                .expect("append event");
        }
        tx.commit().await.expect("commit events");
        let mut positions = Vec::new();
        for n in 0..rows.len() {
            let sequence = last + 1 + n as i64;
            let position = log::position_of(&self.db, aggregate_type, aggregate_id, sequence)
                .await
                .expect("read position")
                .expect("event stored");
            positions.push(position);
        }
        positions
    }

    /// Closes the store and deletes it.
    pub async fn finish(self) {
        self.db.pool.close().await;
        if let Some(file) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
        let (Some(server), Some((_, name))) = (test_server(), self.url.rsplit_once('/')) else {
            return;
        };
        if !name.starts_with(PREFIX) {
            return;
        }
        if let Ok(mut conn) = PgConnection::connect(&server).await {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
            let _ = conn.close().await;
        }
    }
}

/// Applies the service's migrations, over the concrete pool its start-up uses.
async fn migrate(url: &str) {
    if url.starts_with("postgres") {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .expect("open test database");
        POSTGRES_MIGRATIONS.run(&pool).await.expect("migrate");
        pool.close().await;
    } else {
        let options = SqliteConnectOptions::from_str(url)
            .expect("SQLite URL")
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("create test database");
        SQLITE_MIGRATIONS.run(&pool).await.expect("migrate");
        pool.close().await;
    }
}

/// The read side's pool on `url`, configured as the service configures it.
async fn open(url: &str) -> Db {
    if url.starts_with("postgres") {
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await
            .expect("open test database");
        Db::new(pool, Dialect::Postgres)
    } else {
        let pool = AnyPoolOptions::new()
            .max_connections(6)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    Executor::execute(&mut *conn, "PRAGMA busy_timeout = 10000").await?;
                    Ok(())
                })
            })
            .connect(url)
            .await
            .expect("open test database");
        Db::new(pool, Dialect::Sqlite)
    }
}

/// An engine whose workers run until [`Running::stop`].
pub struct Running {
    pub engine: ProjectorEngine,
    stop: watch::Sender<bool>,
    workers: JoinSet<()>,
}

/// Starts the engine's workers, as the service does at start-up.
pub async fn start(engine: ProjectorEngine) -> Running {
    let (stop, shutdown) = watch::channel(false);
    let workers = engine.start(shutdown).await.expect("workers start");
    Running {
        engine,
        stop,
        workers,
    }
}

impl Running {
    /// Wakes the workers and waits until every projection has applied the log to its last
    /// event, or has failed.
    pub async fn settle(&self) {
        let tail = log::tail(self.engine.db())
            .await
            .expect("read the log")
            .unwrap_or_default();
        self.engine.notify();
        assert!(
            self.engine.wait_for(tail, None, SETTLE).await,
            "projections did not reach {tail:?}"
        );
    }

    /// Stops the workers at a checkpoint and frees the instance's locks, as shutdown does.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.workers.join_next().await.is_some() {}
        self.engine.shut_down().await;
    }
}

/// A test read model: one row in `tally` per event it applies, so an event applied twice shows
/// as two rows. While poisoned, it fails on every event of one aggregate.
#[derive(Default)]
pub struct Tally {
    poison: Mutex<Option<String>>,
}

impl Tally {
    /// The aggregate type it reads.
    pub const TYPE: &'static str = "tally";

    /// Creates its table: no key, so that a second application of an event is a second row
    /// rather than an error the engine would take for a lost race.
    pub async fn create_table(db: &Db) {
        sqlx::query("CREATE TABLE tally (position BIGINT NOT NULL, aggregate_id TEXT NOT NULL)")
            .execute(&db.pool)
            .await
            .expect("create the tally table");
    }

    /// From now on, fails on every event of `aggregate_id`.
    pub fn poison(&self, aggregate_id: &str) {
        *self.poison.lock().expect("lock poisoned") = Some(aggregate_id.into());
    }

    /// Removes the fault.
    pub fn heal(&self) {
        *self.poison.lock().expect("lock poisoned") = None;
    }

    /// The positions of the events applied, one per application, in order.
    pub async fn rows(db: &Db) -> Vec<i64> {
        sqlx::query_scalar("SELECT position FROM tally ORDER BY position")
            .fetch_all(&db.pool)
            .await
            .expect("read the tally")
    }
}

#[async_trait]
impl Projection for Tally {
    fn name(&self) -> &'static str {
        "tally"
    }
    fn version(&self) -> i64 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["tally"]
    }
    fn reads(&self) -> Reads {
        Reads::Aggregates(&[Tally::TYPE])
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let poisoned = self.poison.lock().expect("lock poisoned").clone();
        if poisoned.as_deref() == Some(event.aggregate_id.as_str()) {
            return Err(ProjectionError::Inconsistent(format!(
                "poisoned event at {}",
                event.cursor.position
            )));
        }
        sqlx::query("INSERT INTO tally (position, aggregate_id) VALUES ($1, $2)")
            .bind(event.cursor.position)
            .bind(&event.aggregate_id)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// The global positions of `places`, in order: what [`Tally::rows`] holds when each event was
/// applied once.
pub fn positions(places: &[LogPosition]) -> Vec<i64> {
    let mut positions: Vec<i64> = places.iter().map(|p| p.position).collect();
    positions.sort_unstable();
    positions
}

/// A handle on `tally` for an engine.
pub fn as_projection(tally: &Arc<Tally>) -> Arc<dyn Projection> {
    tally.clone()
}
