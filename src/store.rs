//! The write side's storage: opening the database (SQLite or PostgreSQL, by URL scheme), running
//! the embedded migrations, and executing commands on aggregates through the cqrs-es plain event
//! store with metadata, optimistic-concurrency retries and read-your-writes tracking.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateError, EventEnvelope, EventStore};
use postgres_es::PostgresEventRepository;
use projections::{Db, Dialect, LogPosition, ProjectorEngine};
use sqlite_es::SqliteEventRepository;
use sqlx::any::AnyPoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

use crate::clock::Clock;
use crate::request::{current_request_id, Written, REQUEST};

mod reseal;
mod sealing;
pub use reseal::seal_legacy;
use sealing::Sealing;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The concrete pool the event-store crates need.
#[derive(Clone, Debug)]
pub enum EventPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// SQLite page cache per connection, in KiB (negative: a size, not a page count). The default
/// 2 MiB makes every read-model update beyond the hottest pages a `pread` of the file.
const SQLITE_CACHE_SIZE: &str = "-16384";

/// Opens the database named by `url`, creating the SQLite file if missing.
pub async fn connect(url: &str) -> Result<(EventPool, Db), sqlx::Error> {
    sqlx::any::install_default_drivers();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Duration::from_secs(60))
            .connect_with(options)
            .await?;
        let any = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Duration::from_secs(60))
            .connect(url)
            .await?;
        Ok((EventPool::Postgres(pool), Db::new(any, Dialect::Postgres)))
    } else if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .pragma("cache_size", SQLITE_CACHE_SIZE);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        // The first connection switched the file to WAL (a persistent setting); the read side's
        // pool opens the same file.
        let any = AnyPoolOptions::new()
            .max_connections(6)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *conn, "PRAGMA busy_timeout = 10000").await?;
                    sqlx::Executor::execute(&mut *conn, "PRAGMA synchronous = NORMAL").await?;
                    let cache = format!("PRAGMA cache_size = {SQLITE_CACHE_SIZE}");
                    sqlx::Executor::execute(&mut *conn, cache.as_str()).await?;
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        Ok((EventPool::Sqlite(pool), Db::new(any, Dialect::Sqlite)))
    } else {
        Err(sqlx::Error::Configuration(
            "IPTO_DATABASE_URL must start with sqlite: or postgres://".into(),
        ))
    }
}

/// Applies pending migrations; idempotent, and safe with several instances starting at once.
pub async fn migrate(pool: &EventPool) -> Result<(), sqlx::migrate::MigrateError> {
    match pool {
        EventPool::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await,
        EventPool::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await,
    }
}

/// The plain (non-snapshot) event store over either database.
/// Personal fields are sealed on append and opened on load ([`sealing`]).
pub enum EventLog<A: Aggregate> {
    Sqlite(PersistedEventStore<Sealing<SqliteEventRepository>, A>),
    Postgres(PersistedEventStore<Sealing<PostgresEventRepository>, A>),
}

impl<A: Aggregate> EventLog<A> {
    fn new(pool: &EventPool, db: &Db, clock: &Clock) -> Self {
        match pool {
            EventPool::Sqlite(p) => Self::Sqlite(PersistedEventStore::new_event_store(
                Sealing::new(SqliteEventRepository::new(p.clone()), db.clone(), *clock),
            )),
            EventPool::Postgres(p) => Self::Postgres(PersistedEventStore::new_event_store(
                Sealing::new(PostgresEventRepository::new(p.clone()), db.clone(), *clock),
            )),
        }
    }
}

impl<A: Aggregate> EventStore<A> for EventLog<A> {
    type AC = EventStoreAggregateContext<A>;

    async fn load_events(
        &self,
        id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        match self {
            Self::Sqlite(s) => s.load_events(id).await,
            Self::Postgres(s) => s.load_events(id).await,
        }
    }

    async fn load_aggregate(&self, id: &str) -> Result<Self::AC, AggregateError<A::Error>> {
        match self {
            Self::Sqlite(s) => s.load_aggregate(id).await,
            Self::Postgres(s) => s.load_aggregate(id).await,
        }
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        match self {
            Self::Sqlite(s) => s.commit(events, context, metadata).await,
            Self::Postgres(s) => s.commit(events, context, metadata).await,
        }
    }
}

/// Who issued a command, recorded on each of its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// `user`, `api_key` or `system`.
    pub actor_type: &'static str,
    /// `usr_…`, `key_…` or `system`.
    pub actor_id: String,
    /// The tenant acted for.
    pub tenant_id: Option<String>,
}

impl Actor {
    /// Background jobs and the CLI.
    pub fn system() -> Self {
        Self {
            actor_type: "system",
            actor_id: "system".into(),
            tenant_id: None,
        }
    }

    /// A signed-in user.
    pub fn user(user_id: &str, tenant_id: &str) -> Self {
        Self {
            actor_type: "user",
            actor_id: user_id.into(),
            tenant_id: Some(tenant_id.into()),
        }
    }
}

/// What a successful command left behind.
pub struct Committed<A: Aggregate> {
    /// The aggregate after the command.
    pub aggregate: A,
    /// The new events (empty for a no-op).
    pub events: Vec<EventEnvelope<A>>,
}

/// A command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// A business rule refused it.
    #[error("{0}")]
    Rejected(E),
    /// Optimistic lock lost after every retry (409 `concurrency_conflict`).
    #[error("concurrency conflict")]
    Conflict,
    /// The store failed.
    #[error("event store: {0}")]
    Store(String),
    /// The database could not be reached.
    #[error("event store unreachable: {0}")]
    Unavailable(String),
}

/// Internal retries after a lost optimistic lock before answering 409.
const CONFLICT_RETRIES: usize = 3;

/// Executes commands and answers for the log: the one way state changes.
#[derive(Clone)]
pub struct Store {
    pub events: EventPool,
    pub db: Db,
    pub engine: ProjectorEngine,
    pub clock: Clock,
    pub metrics: Arc<crate::metrics::Metrics>,
    logs: Arc<Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
    /// Per-aggregate turns of [`Store::execute_latest`].
    turns: Arc<Mutex<HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>>>,
}

impl Store {
    /// A store over an opened, migrated database.
    pub fn new(events: EventPool, db: Db, engine: ProjectorEngine, clock: Clock) -> Self {
        Self {
            events,
            db,
            engine,
            clock,
            metrics: Arc::default(),
            logs: Arc::default(),
            turns: Arc::default(),
        }
    }

    fn log<A: Aggregate + 'static>(&self) -> Arc<EventLog<A>> {
        let mut logs = self.logs.lock().expect("lock poisoned");
        let entry = logs
            .entry(TypeId::of::<A>())
            .or_insert_with(|| Arc::new(EventLog::<A>::new(&self.events, &self.db, &self.clock)));
        entry
            .clone()
            .downcast::<EventLog<A>>()
            .expect("one log per aggregate type")
    }

    /// Loads an aggregate's current state.
    pub async fn load<A: Aggregate + 'static>(
        &self,
        id: &str,
    ) -> Result<A, CommandError<A::Error>> {
        let context = self.log::<A>().load_aggregate(id).await.map_err(classify)?;
        Ok(context.aggregate)
    }

    /// Runs `command` on aggregate `id` and appends its events with `actor`'s metadata. A lost
    /// optimistic lock reloads the aggregate and decides again (the aggregate re-checks every
    /// rule), up to three times.
    pub async fn execute<A>(
        &self,
        id: &str,
        command: A::Command,
        services: &A::Services,
        actor: &Actor,
    ) -> Result<Committed<A>, CommandError<A::Error>>
    where
        A: Aggregate + 'static,
        A::Command: Clone,
    {
        self.execute_with::<A>(id, command, services, actor, false)
            .await
    }

    /// [`Store::execute`] for an aggregate whose events carry its whole state: it loads only the
    /// last event, so a long stream (a key's month of charges) costs one row per command.
    /// Commands on one such aggregate take turns within this process, so they do not keep losing
    /// the optimistic lock to each other; a write from another instance still makes the append
    /// fail and the command decide again.
    pub async fn execute_latest<A>(
        &self,
        id: &str,
        command: A::Command,
        services: &A::Services,
        actor: &Actor,
    ) -> Result<Committed<A>, CommandError<A::Error>>
    where
        A: aggregates::spend::LatestEventState + 'static,
        A::Command: Clone,
    {
        let turn = {
            let mut turns = self.turns.lock().expect("lock poisoned");
            if turns.len() > 1024 {
                turns.retain(|_, t| t.strong_count() > 0);
            }
            let key = format!("{}/{id}", A::TYPE);
            match turns.get(&key).and_then(std::sync::Weak::upgrade) {
                Some(turn) => turn,
                None => {
                    let turn = Arc::new(tokio::sync::Mutex::new(()));
                    turns.insert(key, Arc::downgrade(&turn));
                    turn
                }
            }
        };
        let _turn = turn.lock().await;
        self.execute_with::<A>(id, command, services, actor, true)
            .await
    }

    /// The aggregate as its last event leaves it (see [`Store::execute_latest`]).
    async fn load_last_event<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<EventStoreAggregateContext<A>, CommandError<A::Error>> {
        use sqlx::Row;
        let row = sqlx::query(
            "SELECT sequence, event_type, CAST(payload AS TEXT) AS payload FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence DESC LIMIT 1",
        )
        .bind(A::TYPE)
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await
        .map_err(|e| CommandError::Store(e.to_string()))?;
        let mut context = EventStoreAggregateContext {
            aggregate_id: id.to_owned(),
            aggregate: A::default(),
            current_sequence: 0,
            current_snapshot: None,
        };
        if let Some(row) = row {
            let sequence: i64 = row
                .try_get("sequence")
                .map_err(|e| CommandError::Store(e.to_string()))?;
            let payload: String = row
                .try_get("payload")
                .map_err(|e| CommandError::Store(e.to_string()))?;
            let mut stored = projections::StoredEvent {
                cursor: LogPosition::default(),
                aggregate_type: A::TYPE.to_owned(),
                aggregate_id: id.to_owned(),
                sequence,
                event_type: row
                    .try_get("event_type")
                    .map_err(|e| CommandError::Store(e.to_string()))?,
                event_version: String::new(),
                payload,
                metadata: Default::default(),
                opened: None,
            };
            projections::log::open_sealed(&self.db, std::slice::from_mut(&mut stored))
                .await
                .map_err(|e| CommandError::Store(e.to_string()))?;
            let event: A::Event = stored
                .decode()
                .map_err(|e| CommandError::Store(e.to_string()))?;
            context.aggregate.apply(event);
            context.current_sequence = sequence as usize;
        }
        Ok(context)
    }

    async fn execute_with<A>(
        &self,
        id: &str,
        command: A::Command,
        services: &A::Services,
        actor: &Actor,
        from_last_event: bool,
    ) -> Result<Committed<A>, CommandError<A::Error>>
    where
        A: Aggregate + 'static,
        A::Command: Clone,
    {
        let outcome = self
            .decide_and_append::<A>(id, command, services, actor, from_last_event)
            .await;
        let (label, events) = match &outcome {
            Ok(committed) => ("ok", committed.events.len()),
            Err(CommandError::Rejected(_)) => ("rejected", 0),
            Err(CommandError::Conflict) => ("conflict", 0),
            Err(_) => ("error", 0),
        };
        self.metrics.command(A::TYPE, label, events);
        outcome
    }

    async fn decide_and_append<A>(
        &self,
        id: &str,
        command: A::Command,
        services: &A::Services,
        actor: &Actor,
        from_last_event: bool,
    ) -> Result<Committed<A>, CommandError<A::Error>>
    where
        A: Aggregate + 'static,
        A::Command: Clone,
    {
        let log = self.log::<A>();
        for _ in 0..=CONFLICT_RETRIES {
            let mut context = if from_last_event {
                self.load_last_event::<A>(id).await?
            } else {
                log.load_aggregate(id).await.map_err(classify)?
            };
            let sink = EventSink::default();
            context
                .aggregate
                .handle(command.clone(), services, &sink)
                .await
                .map_err(CommandError::Rejected)?;
            let events = sink.collect().await;
            if events.is_empty() {
                // A no-op still answers with state another writer produced: wait for it too.
                let current = (context.current_sequence > 0).then_some(context.current_sequence);
                self.track(A::TYPE, id, current).await;
                return Ok(Committed {
                    aggregate: context.aggregate,
                    events: Vec::new(),
                });
            }
            let mut state = A::default();
            std::mem::swap(&mut state, &mut context.aggregate);
            // On SQLite the append takes its turn with the projection workers' transactions.
            let turn = self.db.write_turn().await;
            let appended = log.commit(events, context, self.metadata(actor)).await;
            drop(turn);
            match appended {
                Ok(committed) => {
                    self.engine.notify();
                    self.track(A::TYPE, id, committed.last().map(|e| e.sequence))
                        .await;
                    return Ok(Committed {
                        aggregate: state,
                        events: committed,
                    });
                }
                Err(AggregateError::AggregateConflict) => continue,
                Err(other) => return Err(classify(other)),
            }
        }
        Err(CommandError::Conflict)
    }

    fn metadata(&self, actor: &Actor) -> HashMap<String, String> {
        let mut metadata = HashMap::from([
            ("actor_type".to_owned(), actor.actor_type.to_owned()),
            ("actor_id".to_owned(), actor.actor_id.clone()),
            (
                "occurred_at".to_owned(),
                aggregates::timestamp::format(self.clock.now()),
            ),
        ]);
        if let Some(tenant) = &actor.tenant_id {
            metadata.insert("tenant_id".into(), tenant.clone());
        }
        if let Some(request_id) = current_request_id() {
            metadata.insert("request_id".into(), request_id);
        }
        metadata
    }

    /// Remembers the request's last written position so the response can wait for projections.
    async fn track(&self, aggregate_type: &'static str, id: &str, sequence: Option<usize>) {
        let Some(sequence) = sequence else { return };
        if REQUEST.try_with(|_| ()).is_err() {
            return;
        }
        match projections::log::position_of(&self.db, aggregate_type, id, sequence as i64).await {
            Ok(Some(position)) => {
                let _ = REQUEST.try_with(|r| r.record(position, aggregate_type));
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "could not read the position of a committed event")
            }
        }
    }

    /// Waits (bounded) until the projections have applied everything the current request wrote,
    /// so a handler can answer from the read models.
    pub async fn settle_request(&self) {
        if let Some(written) = REQUEST.try_with(|r| r.written()).ok().flatten() {
            self.settle_written(&written, Duration::from_secs(5)).await;
        }
    }

    /// Waits (bounded) until the projections that read what was written have applied it.
    pub async fn settle_written(&self, written: &Written, timeout: Duration) {
        let types = Some(written.aggregate_types.as_slice());
        if !self.engine.wait_for(written.position, types, timeout).await {
            tracing::warn!(
                position = ?written.position,
                "projections did not catch up in time; answering anyway"
            );
        }
    }

    /// Waits (bounded) until every projection has applied `position`.
    pub async fn settle(&self, position: LogPosition, timeout: Duration) {
        if !self.engine.wait_for(position, None, timeout).await {
            tracing::warn!(
                ?position,
                "projections did not catch up in time; answering anyway"
            );
        }
    }
}

fn classify<E: std::error::Error>(error: AggregateError<E>) -> CommandError<E> {
    match error {
        AggregateError::UserError(e) => CommandError::Rejected(e),
        AggregateError::AggregateConflict => CommandError::Conflict,
        AggregateError::DatabaseConnectionError(e) => CommandError::Unavailable(e.to_string()),
        AggregateError::DeserializationError(e) | AggregateError::UnexpectedError(e) => {
            CommandError::Store(e.to_string())
        }
    }
}

impl Store {
    /// Closes both pools (at shutdown).
    pub async fn close(&self) {
        self.db.pool.close().await;
        match &self.events {
            EventPool::Sqlite(p) => p.close().await,
            EventPool::Postgres(p) => p.close().await,
        }
    }
}
