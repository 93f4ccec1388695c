//! Blue/green rebuilds: a rebuild that never takes a read model away.
//!
//! 1. **Shadow.** One connection of its own, held for the whole rebuild, gets a temporary copy of
//!    each table of the projections and of the checkpoint table (`CREATE TEMP TABLE`, indexes
//!    included). Unqualified names resolve to a connection's temporary tables first on both
//!    SQLite and PostgreSQL, so the projections' own SQL, run by an engine on that connection,
//!    writes the shadow while every other connection keeps reading and updating the live tables.
//!    The log and every other table are read where they are.
//! 2. **Replay.** The shadow engine resets its copies and replays the whole log into them in one
//!    pass ([`ProjectorEngine::rebuild_all`]); live workers keep applying new events to the live
//!    tables meanwhile. The shadow's writes take no writer turn (on SQLite a deferred transaction
//!    that writes only temporary tables locks nothing others need).
//! 3. **Switch.** One transaction on the shadow's connection takes the live checkpoints (on
//!    PostgreSQL `FOR UPDATE`: a worker claims its checkpoint before it writes, so workers wait
//!    here; on SQLite the write lock), applies to the shadow what the log gained since the
//!    replay, replaces each live table's rows with the shadow's and the live checkpoints with the
//!    shadow's, and commits. Readers see the old rows until the commit and the new ones after it;
//!    a worker that was mid-batch finds its checkpoint moved and reads it again. The temporary
//!    tables go with the connection.
//!
//! Reactors are never rebuilt, so no side effect runs twice. One rebuild runs at a time across a
//! fleet: the row of `projection_rebuilds` is a lease its holder renews with the progress it
//! reports (phase, events, rate), which `/health`, `/metrics` and `ipto projections status` show.
//! A lost connection (its temporary tables with it) or a lost lease fails the rebuild before the
//! switch, and the live tables stay as they were.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, Row};

use super::{ProjectorEngine, RebuildError};
use crate::log;
use crate::{Db, Dialect, Projection, ProjectionStatus};

/// How long a rebuild's lease lasts without renewal.
const LEASE_MS: i64 = 30_000;
/// How often a running rebuild renews its lease and stores its progress.
const RENEW: Duration = Duration::from_millis(500);
/// Events applied per catch-up batch inside the switch.
const SWITCH_BATCH: i64 = 2000;
/// The checkpoint table, shadowed with the projections' own.
const CHECKPOINTS: &str = "projection_checkpoints";

/// Where an online rebuild stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RebuildPhase {
    /// The shadow tables are being filled from the log.
    Replaying,
    /// The shadow catches up and replaces the live tables, in one transaction.
    Switching,
    /// The rebuilt tables are live.
    Done,
    /// It stopped; the live tables are as they were.
    Failed,
    /// Its holder stopped renewing the lease (it was killed); the live tables are as they were.
    Abandoned,
}

impl RebuildPhase {
    /// As `/health` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replaying => "replaying",
            Self::Switching => "switching",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Abandoned => "abandoned",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "replaying" => Self::Replaying,
            "switching" => Self::Switching,
            "done" => Self::Done,
            _ => Self::Failed,
        }
    }

    /// Whether the rebuild is still under way.
    pub fn is_running(self) -> bool {
        matches!(self, Self::Replaying | Self::Switching)
    }
}

/// The current or last online rebuild, as `/health` and `ipto projections status` show it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RebuildProgress {
    /// The projections rebuilt.
    pub projections: Vec<String>,
    pub phase: RebuildPhase,
    /// Log events replayed so far.
    pub done: u64,
    /// Log events to replay (the log's size when the pass began; it grows meanwhile).
    pub total: u64,
    /// Log events replayed per second since the start.
    pub events_per_second: f64,
    /// Seconds until the replay reaches `total` at that rate, while replaying.
    pub eta_seconds: Option<u64>,
    /// When it began and when it last reported, RFC 3339.
    pub started_at: String,
    pub updated_at: String,
    /// Why it failed.
    pub error: Option<String>,
}

impl RebuildProgress {
    /// A replay under way in this process, of a read model it keeps itself (the search index).
    pub fn local(name: &str, done: u64, total: u64, seconds: f64) -> Self {
        let now = now_ms();
        let started = now - (seconds * 1000.0) as i64;
        Self::at(
            vec![name.to_owned()],
            RebuildPhase::Replaying,
            done,
            total,
            (started, now),
            None,
        )
    }

    /// A rebuild that began and last reported at `(started, updated)` (ms since the epoch), with
    /// its rate and, while replaying, the time left at that rate.
    fn at(
        projections: Vec<String>,
        phase: RebuildPhase,
        done: u64,
        total: u64,
        (started, updated): (i64, i64),
        error: Option<String>,
    ) -> Self {
        let seconds = (updated - started).max(0) as f64 / 1000.0;
        let rate = if seconds > 0.0 {
            done as f64 / seconds
        } else {
            0.0
        };
        Self {
            projections,
            phase,
            done,
            total,
            events_per_second: (rate * 10.0).round() / 10.0,
            eta_seconds: (phase == RebuildPhase::Replaying && rate > 0.0)
                .then(|| (total.saturating_sub(done) as f64 / rate).ceil() as u64),
            started_at: format_ms(started),
            updated_at: format_ms(updated),
            error,
        }
    }

    /// This rebuild's Prometheus gauges: name, help and value.
    pub fn gauges(&self) -> [(&'static str, &'static str, f64); 5] {
        [
            ("ipto_projection_rebuild_running", "1 while an online rebuild is under way.", f64::from(u8::from(self.phase.is_running()))),
            ("ipto_projection_rebuild_events_done", "Log events the online rebuild has replayed.", self.done as f64),
            ("ipto_projection_rebuild_events_total", "Log events the online rebuild replays.", self.total as f64),
            ("ipto_projection_rebuild_events_per_second", "The online rebuild's replay rate.", self.events_per_second),
            ("ipto_projection_rebuild_eta_seconds", "Seconds until the online rebuild's replay ends at its rate (0 when not replaying).", self.eta_seconds.unwrap_or(0) as f64),
        ]
    }
}

/// What a progress report carries: log events done and to do.
type Counts = Arc<Mutex<(u64, u64)>>;

impl ProjectorEngine {
    /// Rebuilds these projections behind the live ones and switches them in atomically (see the
    /// module documentation); reactors among them are left out. `progress(done, total)` counts
    /// log events. Returns the events each projection applied, in order. Another rebuild running
    /// anywhere is [`RebuildError::Busy`].
    pub async fn rebuild_online(
        &self,
        projections: &[Arc<dyn Projection>],
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Vec<u64>, RebuildError> {
        let projections: Vec<_> = projections
            .iter()
            .filter(|p| !p.is_reactor())
            .cloned()
            .collect();
        let lease = Lease::take(&self.inner.db, &projections).await?;
        let counts: Counts = Arc::default();
        let renewer = tokio::spawn(lease.clone().renew_while_running(counts.clone()));
        let outcome = self
            .rebuild_behind(&projections, &lease, &counts, &mut progress)
            .await;
        renewer.abort();
        let error = outcome.as_ref().err().map(ToString::to_string);
        if let Err(e) = lease.finish(&counts, error.as_deref()).await {
            tracing::warn!(error = %e, "could not record the end of a rebuild");
        }
        outcome
    }

    /// The current or last online rebuild, if any ran.
    pub async fn rebuild_progress(&self) -> Result<Option<RebuildProgress>, sqlx::Error> {
        stored_progress(&self.inner.db).await
    }

    /// The shadow, its replay and the switch.
    async fn rebuild_behind(
        &self,
        projections: &[Arc<dyn Projection>],
        lease: &Lease,
        counts: &Counts,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<Vec<u64>, RebuildError> {
        let shadow = Shadow::open(&self.inner.db, projections).await?;
        let engine = ProjectorEngine::new(shadow.db.clone(), projections.to_vec());
        let replayed = engine
            .rebuild_all(projections, |done, total| {
                *counts.lock().expect("lock poisoned") = (done, total);
                progress(done, total);
            })
            .await;
        let outcome = match replayed {
            Ok(_) => self.switch(&shadow, &engine, projections, lease).await,
            Err(e) => Err(e),
        };
        shadow.db.pool.close().await;
        outcome
    }

    /// The switch: one transaction that catches the shadow up and makes it live.
    async fn switch(
        &self,
        shadow: &Shadow,
        engine: &ProjectorEngine,
        projections: &[Arc<dyn Projection>],
        lease: &Lease,
    ) -> Result<Vec<u64>, RebuildError> {
        let dialect = self.inner.db.dialect;
        // SQLite: this process's writers wait their turn, other processes' wait on the lock.
        let _turn = self.inner.db.write_turn().await;
        let mut tx = match dialect {
            Dialect::Sqlite => shadow.db.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => shadow.db.pool.begin().await?,
        };
        if shadow.connects.load(Ordering::SeqCst) != 1 {
            return Err(RebuildError::Interrupted(
                "the rebuild's connection was lost, and its shadow tables with it".into(),
            ));
        }
        let live = &shadow.live_schema;
        let mut names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        if dialect == Dialect::Postgres {
            for name in &names {
                sqlx::query(&format!(
                    "SELECT name FROM {live}.{CHECKPOINTS} WHERE name = $1 FOR UPDATE"
                ))
                .bind(*name)
                .fetch_optional(&mut *tx)
                .await?;
            }
        }
        if !lease.mark_switching(&mut tx).await? {
            return Err(RebuildError::Interrupted(
                "another rebuild took the lease".into(),
            ));
        }
        // What the log gained since the replay; the live log is read through the live pool.
        loop {
            let mut applied = 0;
            for projection in projections {
                let status = status_on(&mut tx, projection.name()).await?;
                let events = log::read_after(&self.inner.db, status.cursor, SWITCH_BATCH).await?;
                if events.is_empty() {
                    continue;
                }
                match engine
                    .claim_and_apply(&mut tx, projection.as_ref(), &status, &events, None)
                    .await
                {
                    Ok(true) => applied += events.len(),
                    Ok(false) => {
                        return Err(RebuildError::Interrupted(
                            "the shadow checkpoint moved during the switch".into(),
                        ))
                    }
                    Err((position, error)) => {
                        return Err(RebuildError::Failed(ProjectionStatus {
                            failed_position: Some(position),
                            error: Some(error.to_string()),
                            ..status
                        }))
                    }
                }
            }
            if applied == 0 {
                break;
            }
        }
        let temp = shadow.temp_schema();
        for table in projections.iter().flat_map(|p| p.tables()) {
            sqlx::query(&format!("DELETE FROM {live}.{table}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "INSERT INTO {live}.{table} SELECT * FROM {temp}.{table}"
            ))
            .execute(&mut *tx)
            .await?;
        }
        let mut statuses = Vec::new();
        for projection in projections {
            let name = projection.name();
            sqlx::query(&format!("DELETE FROM {live}.{CHECKPOINTS} WHERE name = $1"))
                .bind(name)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "INSERT INTO {live}.{CHECKPOINTS} SELECT * FROM {temp}.{CHECKPOINTS} WHERE name = $1"
            ))
            .bind(name)
            .execute(&mut *tx)
            .await?;
            statuses.push(status_on(&mut tx, name).await?);
        }
        tx.commit().await?;
        for (projection, status) in projections.iter().zip(&statuses) {
            self.publish(projection.name(), status.cursor, false);
        }
        Ok(statuses.iter().map(|s| s.events_applied as u64).collect())
    }
}

/// The row of `projection_rebuilds`, as progress; a running rebuild whose lease has expired is
/// [`RebuildPhase::Abandoned`].
async fn stored_progress(db: &Db) -> Result<Option<RebuildProgress>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT projections, phase, done, total, started_ms, updated_ms, expires_ms, error \
         FROM projection_rebuilds WHERE slot = 1",
    )
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut phase = RebuildPhase::parse(row.try_get::<String, _>("phase")?.as_str());
    if phase.is_running() && row.try_get::<i64, _>("expires_ms")? < now_ms() {
        phase = RebuildPhase::Abandoned;
    }
    let projections: String = row.try_get("projections")?;
    let count = |column: &str| row.try_get::<i64, _>(column).map(|n| n.max(0) as u64);
    Ok(Some(RebuildProgress::at(
        projections.split(',').map(str::to_owned).collect(),
        phase,
        count("done")?,
        count("total")?,
        (row.try_get("started_ms")?, row.try_get("updated_ms")?),
        row.try_get("error")?,
    )))
}

/// A projection's checkpoint as the connection sees it (the shadow's, on the shadow connection).
async fn status_on(conn: &mut AnyConnection, name: &str) -> Result<ProjectionStatus, sqlx::Error> {
    super::status::checkpoint_on(conn, name)
        .await?
        .ok_or_else(|| sqlx::Error::Protocol(format!("no checkpoint for {name}")))
}

/// The shadow: a pool of one connection whose temporary tables stand in for the live ones.
struct Shadow {
    db: Db,
    /// Connections the pool has opened: more than one means the first was lost with its tables.
    connects: Arc<AtomicU64>,
    /// Where the live tables are: `main` (SQLite) or the database's current schema.
    live_schema: String,
}

impl Shadow {
    async fn open(live: &Db, projections: &[Arc<dyn Projection>]) -> Result<Shadow, sqlx::Error> {
        let dialect = live.dialect;
        let live_schema: String = match dialect {
            Dialect::Sqlite => "main".into(),
            Dialect::Postgres => {
                sqlx::query_scalar("SELECT CAST(current_schema() AS TEXT)")
                    .fetch_one(&live.pool)
                    .await?
            }
        };
        let mut tables: Vec<&'static str> = vec![CHECKPOINTS];
        tables.extend(projections.iter().flat_map(|p| p.tables()).copied());
        let connects = Arc::new(AtomicU64::new(0));
        let schema = live_schema.clone();
        let counter = connects.clone();
        // Every connection the pool opens gets the tables, so none can ever write the live ones;
        // a second connection means the first was lost, which the switch refuses.
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(3600))
            .after_connect(move |conn, _| {
                let (schema, tables, counter) = (schema.clone(), tables.clone(), counter.clone());
                Box::pin(async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    create_temporary_tables(conn, dialect, &schema, &tables).await
                })
            })
            .connect_with((*live.pool.connect_options()).clone())
            .await?;
        Ok(Shadow {
            db: Db::shadow(pool, dialect),
            connects,
            live_schema,
        })
    }

    /// Where the shadow's tables are.
    fn temp_schema(&self) -> &'static str {
        match self.db.dialect {
            Dialect::Sqlite => "temp",
            Dialect::Postgres => "pg_temp",
        }
    }
}

/// Creates a temporary table, with its indexes, for each of `tables` on `conn`.
async fn create_temporary_tables(
    conn: &mut AnyConnection,
    dialect: Dialect,
    schema: &str,
    tables: &[&'static str],
) -> Result<(), sqlx::Error> {
    use sqlx::Executor;
    match dialect {
        Dialect::Postgres => {
            for table in tables {
                conn.execute(
                    format!("CREATE TEMP TABLE {table} (LIKE {schema}.{table} INCLUDING ALL)")
                        .as_str(),
                )
                .await?;
            }
        }
        Dialect::Sqlite => {
            conn.execute("PRAGMA busy_timeout = 10000").await?;
            for table in tables {
                let ddl: String = sqlx::query_scalar(
                    "SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = $1",
                )
                .bind(*table)
                .fetch_one(&mut *conn)
                .await?;
                conn.execute(temporary_table(table, &ddl).as_str()).await?;
                let indexes: Vec<String> = sqlx::query_scalar(
                    "SELECT sql FROM main.sqlite_master \
                     WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL",
                )
                .bind(*table)
                .fetch_all(&mut *conn)
                .await?;
                for index in indexes {
                    let ddl = temporary_index(&index).ok_or_else(|| {
                        sqlx::Error::Protocol(format!("cannot shadow the index `{index}`"))
                    })?;
                    conn.execute(ddl.as_str()).await?;
                }
            }
        }
    }
    Ok(())
}

/// SQLite: `CREATE TABLE name (…)` as `CREATE TEMP TABLE name (…)`, with the same columns in the
/// same order (the switch copies rows with `SELECT *`).
fn temporary_table(name: &str, ddl: &str) -> String {
    let columns = ddl.find('(').map_or("", |at| &ddl[at..]);
    format!("CREATE TEMP TABLE {name} {columns}")
}

/// SQLite: `CREATE [UNIQUE] INDEX [IF NOT EXISTS] name ON table …` in the temporary schema.
fn temporary_index(ddl: &str) -> Option<String> {
    let on = ddl.to_ascii_uppercase().find(" ON ")?;
    let (head, rest) = ddl.split_at(on);
    let (create, name) = head.trim_end().rsplit_once(char::is_whitespace)?;
    Some(format!("{create} temp.{name}{rest}"))
}

/// The row of `projection_rebuilds` one rebuild holds.
#[derive(Clone)]
struct Lease {
    db: Db,
    holder: String,
}

impl Lease {
    /// Takes the lease unless another rebuild holds it.
    async fn take(db: &Db, projections: &[Arc<dyn Projection>]) -> Result<Lease, RebuildError> {
        let holder = holder_id();
        let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
        let now = now_ms();
        let taken = sqlx::query(
            "INSERT INTO projection_rebuilds \
               (slot, holder, projections, phase, done, total, started_ms, updated_ms, expires_ms, error) \
             VALUES (1, $1, $2, 'replaying', 0, 0, $3, $3, $4, NULL) \
             ON CONFLICT (slot) DO UPDATE SET holder = excluded.holder, \
               projections = excluded.projections, phase = excluded.phase, done = 0, total = 0, \
               started_ms = excluded.started_ms, updated_ms = excluded.updated_ms, \
               expires_ms = excluded.expires_ms, error = NULL \
             WHERE projection_rebuilds.expires_ms < $3",
        )
        .bind(&holder)
        .bind(names.join(","))
        .bind(now)
        .bind(now + LEASE_MS)
        .execute(&db.pool)
        .await?;
        if taken.rows_affected() == 0 {
            let running = stored_progress(db).await?;
            return Err(RebuildError::Busy(
                running
                    .map(|r| r.projections.join(", "))
                    .unwrap_or_default(),
            ));
        }
        Ok(Lease {
            db: db.clone(),
            holder,
        })
    }

    /// Renews the lease with the progress, until aborted.
    async fn renew_while_running(self, counts: Counts) {
        loop {
            tokio::time::sleep(RENEW).await;
            let (done, total) = *counts.lock().expect("lock poisoned");
            let now = now_ms();
            let renewed = sqlx::query(
                "UPDATE projection_rebuilds SET done = $1, total = $2, updated_ms = $3, expires_ms = $4 \
                 WHERE slot = 1 AND holder = $5 AND phase = 'replaying'",
            )
            .bind(done as i64)
            .bind(total as i64)
            .bind(now)
            .bind(now + LEASE_MS)
            .bind(&self.holder)
            .execute(&self.db.pool)
            .await;
            if let Err(error) = renewed {
                tracing::warn!(%error, "could not renew the rebuild's lease; retrying");
            }
        }
    }

    /// Inside the switch's transaction: whether the lease is still ours (then marked switching).
    async fn mark_switching(&self, conn: &mut AnyConnection) -> Result<bool, sqlx::Error> {
        let now = now_ms();
        let marked = sqlx::query(
            "UPDATE projection_rebuilds SET phase = 'switching', updated_ms = $1, expires_ms = $2 \
             WHERE slot = 1 AND holder = $3 AND expires_ms >= $1",
        )
        .bind(now)
        .bind(now + LEASE_MS)
        .bind(&self.holder)
        .execute(&mut *conn)
        .await?;
        Ok(marked.rows_affected() == 1)
    }

    /// Records the end (done, or failed with `error`) and frees the lease.
    async fn finish(&self, counts: &Counts, error: Option<&str>) -> Result<(), sqlx::Error> {
        let (done, total) = *counts.lock().expect("lock poisoned");
        let phase = match error {
            None => RebuildPhase::Done,
            Some(_) => RebuildPhase::Failed,
        };
        sqlx::query(
            "UPDATE projection_rebuilds SET phase = $1, done = $2, total = $3, updated_ms = $4, \
               expires_ms = 0, error = $5 WHERE slot = 1 AND holder = $6",
        )
        .bind(phase.as_str())
        .bind(done as i64)
        .bind(total as i64)
        .bind(now_ms())
        .bind(error)
        .bind(&self.holder)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }
}

/// A random id for a lease's holder.
fn holder_id() -> String {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random source");
    hex::encode(bytes)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(aggregates::timestamp::format)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_shadowed_with_its_columns() {
        assert_eq!(
            temporary_table(
                "datasets",
                "CREATE TABLE datasets\n(\n    id TEXT NOT NULL PRIMARY KEY,\n    n BIGINT\n)"
            ),
            "CREATE TEMP TABLE datasets (\n    id TEXT NOT NULL PRIMARY KEY,\n    n BIGINT\n)"
        );
    }

    #[test]
    fn an_index_is_shadowed_in_the_temporary_schema() {
        assert_eq!(
            temporary_index("CREATE INDEX objects_by_dataset ON objects (dataset_id, id)")
                .as_deref(),
            Some("CREATE INDEX temp.objects_by_dataset ON objects (dataset_id, id)")
        );
        assert_eq!(
            temporary_index("CREATE UNIQUE INDEX IF NOT EXISTS u ON t(a) WHERE a IS NOT NULL")
                .as_deref(),
            Some("CREATE UNIQUE INDEX IF NOT EXISTS temp.u ON t(a) WHERE a IS NOT NULL")
        );
        assert_eq!(temporary_index("CREATE INDEX broken"), None);
    }
}
