//! The projector engine: one worker per projection reads the log in global order from its
//! checkpoint and applies each batch together with the new checkpoint in one transaction.
//!
//! - The checkpoint update is conditional on the checkpoint read, so a batch is applied at most
//!   once even if two workers (or a worker and `projections rebuild`) race.
//! - On PostgreSQL a session advisory lock keeps one active worker per projection across instances;
//!   the others stand by and follow the checkpoint table.
//! - A handler error stops its projection at that event (no skipping); the failure is stored with
//!   the checkpoint and reported by `/health` and `ipto projections status`.
//! - Workers wake on an in-process signal after every commit, on PostgreSQL `NOTIFY`s from other
//!   instances, and on a slow poll as a safety net.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use sqlx::AnyConnection;
use sqlx::Row;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::log::{self, LogPosition, StoredEvent};
use crate::{Db, Dialect};

/// Events applied per transaction by a live worker.
const LIVE_BATCH: i64 = 500;
/// Events applied per transaction during a rebuild.
const REBUILD_BATCH: i64 = 2000;
/// Safety-net poll when no wake-up arrives.
const IDLE_POLL: Duration = Duration::from_millis(1000);
/// How long a replay waits for events an open transaction elsewhere still hides.
const HIDDEN_TAIL_PATIENCE: Duration = Duration::from_secs(30);
/// Attempts at a batch before the projection is declared failed.
const BATCH_ATTEMPTS: u32 = 3;

/// Why a projection could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The read model's database refused a write.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The payload is not the event the projection expects.
    #[error("undecodable event: {0}")]
    Decode(#[from] serde_json::Error),
    /// The event contradicts the read model (e.g. an update for a row that does not exist).
    #[error("{0}")]
    Inconsistent(String),
}

/// A read model: its tables, its handler and its version.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Unique name, as shown by `/health` and the CLI.
    fn name(&self) -> &'static str;
    /// Bump to rebuild the read model at the next start-up.
    fn version(&self) -> i64;
    /// Tables the projection owns; a rebuild empties them.
    fn tables(&self) -> &'static [&'static str];
    /// A reactor turns events into commands instead of writing tables: it runs outside the batch
    /// transaction (its commands commit on their own), at least once, so its commands must be
    /// idempotent. Reactors are not rebuilt.
    fn is_reactor(&self) -> bool {
        false
    }
    /// Applies one event inside the batch's transaction. Events of no interest are ignored.
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError>;
}

/// A projection's state as stored with its checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    /// Highest global position applied.
    pub position: i64,
    /// Where the next batch starts.
    pub cursor: LogPosition,
    /// Events applied since the last reset; equals the number of events read.
    pub events_applied: i64,
    /// The position of the event the projection stopped at, if its handler failed.
    pub failed_position: Option<i64>,
    /// The handler's error, if it failed.
    pub error: Option<String>,
}

impl ProjectionStatus {
    /// `ok` or `failed`.
    pub fn state(&self) -> &'static str {
        if self.error.is_some() {
            "failed"
        } else {
            "ok"
        }
    }
}

/// Runs the workers and answers questions about their progress.
#[derive(Clone)]
pub struct ProjectorEngine {
    inner: Arc<Inner>,
}

struct Inner {
    locks: LockSession,
    db: Db,
    projections: std::sync::RwLock<Vec<Arc<dyn Projection>>>,
    /// Read models each instance keeps for itself outside the database (the search index).
    locals: std::sync::RwLock<Vec<&'static str>>,
    wake: watch::Sender<u64>,
    progress: watch::Sender<HashMap<&'static str, Progress>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    cursor: LogPosition,
    failed: bool,
}

impl ProjectorEngine {
    /// An engine over these projections; nothing runs until [`ProjectorEngine::start`].
    pub fn new(db: Db, projections: Vec<Arc<dyn Projection>>) -> Self {
        let (wake, _) = watch::channel(0);
        let (progress, _) = watch::channel(HashMap::new());
        Self {
            inner: Arc::new(Inner {
                locks: LockSession::default(),
                db,
                projections: std::sync::RwLock::new(projections),
                locals: std::sync::RwLock::new(Vec::new()),
                wake,
                progress,
            }),
        }
    }

    /// Adds a projection (before [`ProjectorEngine::start`]); reactors that issue commands through
    /// a store holding this engine are registered this way.
    pub fn register(&self, projection: Arc<dyn Projection>) {
        self.inner
            .projections
            .write()
            .expect("lock poisoned")
            .push(projection);
    }

    /// Registers a read model this instance keeps outside the database, with its own cursor. Its
    /// worker follows the log itself and reports with [`ProjectorEngine::report_local`]; waits for
    /// read-your-writes include it.
    pub fn register_local(&self, name: &'static str) {
        self.inner.locals.write().expect("lock poisoned").push(name);
    }

    /// Where a local read model has got to, and whether it stopped on an error.
    pub fn report_local(&self, name: &'static str, cursor: LogPosition, failed: bool) {
        self.publish(name, cursor, failed);
    }

    /// A receiver of wake-ups: it changes whenever the log has grown.
    pub fn wake_ups(&self) -> watch::Receiver<u64> {
        self.inner.wake.subscribe()
    }

    /// Forgets every projection (at shutdown, to release reactors that hold the engine) and frees
    /// this instance's advisory locks.
    pub async fn shut_down(&self) {
        self.inner.locks.reset().await;
        self.clear();
    }

    /// Forgets every projection (to release reactors that hold the engine).
    pub fn clear(&self) {
        self.inner
            .projections
            .write()
            .expect("lock poisoned")
            .clear();
        self.inner.locals.write().expect("lock poisoned").clear();
    }

    /// The projections, in report order.
    pub fn projections(&self) -> Vec<Arc<dyn Projection>> {
        self.inner
            .projections
            .read()
            .expect("lock poisoned")
            .clone()
    }

    /// The database the engine reads and writes.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Looks a projection up by name.
    pub fn projection(&self, name: &str) -> Option<Arc<dyn Projection>> {
        self.projections().into_iter().find(|p| p.name() == name)
    }

    /// Tells the workers the log has grown.
    pub fn notify(&self) {
        self.inner.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Creates missing checkpoints and rebuilds projections whose version changed.
    pub async fn prepare(&self) -> Result<(), sqlx::Error> {
        for projection in &self.projections() {
            self.prepare_one(projection.as_ref()).await?;
        }
        Ok(())
    }

    /// Creates the projection's checkpoint if missing, or rebuilds it if its version changed.
    async fn prepare_one(&self, projection: &dyn Projection) -> Result<(), sqlx::Error> {
        let stored: Option<i64> =
            sqlx::query_scalar("SELECT version FROM projection_checkpoints WHERE name = $1")
                .bind(projection.name())
                .fetch_optional(&self.inner.db.pool)
                .await?;
        match stored {
            Some(version) if version == projection.version() => {}
            Some(version) => {
                tracing::info!(
                    projection = projection.name(),
                    from = version,
                    to = projection.version(),
                    "projection version changed; rebuilding"
                );
                self.reset(projection).await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO projection_checkpoints (name, version, cursor_tx, cursor_position, position, events_applied, updated_at) \
                     VALUES ($1, $2, 0, 0, 0, 0, $3) ON CONFLICT (name) DO NOTHING",
                )
                .bind(projection.name())
                .bind(projection.version())
                .bind(now())
                .execute(&self.inner.db.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Starts one worker per projection. They stop when `shutdown` turns true, at a checkpoint.
    pub async fn start(&self, shutdown: watch::Receiver<bool>) -> Result<JoinSet<()>, sqlx::Error> {
        self.prepare().await?;
        // A stored failure is retried at start-up: the fix may be in this build.
        sqlx::query("UPDATE projection_checkpoints SET failed_position = NULL, error = NULL")
            .execute(&self.inner.db.pool)
            .await?;
        let mut workers = JoinSet::new();
        for projection in self.projections() {
            let engine = self.clone();
            let shutdown = shutdown.clone();
            workers.spawn(async move { engine.run_worker(projection, shutdown).await });
        }
        Ok(workers)
    }

    async fn run_worker(
        &self,
        projection: Arc<dyn Projection>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let name = projection.name();
        let mut wake = self.inner.wake.subscribe();
        // On PostgreSQL, only the holder of the projection's advisory lock applies events.
        let mut held: Option<u64> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let active = match self.inner.db.dialect {
                Dialect::Sqlite => true,
                Dialect::Postgres => {
                    if !held.is_some_and(|generation| self.inner.locks.is_current(generation)) {
                        held = self.inner.locks.try_lock(&self.inner.db, name).await;
                    }
                    held.is_some()
                }
            };
            let outcome = if active {
                self.step(projection.as_ref(), LIVE_BATCH).await
            } else {
                Ok(0)
            };
            match outcome {
                Ok(n) if n > 0 => continue,
                Ok(_) => {
                    if !active {
                        let _ = self.refresh_progress().await;
                    }
                }
                Err(StepError::Stopped) => return,
                Err(StepError::Database(error)) => {
                    tracing::warn!(projection = name, %error, "projection worker could not reach the database; retrying");
                    // Closing the session frees its locks; they are taken again on the next round.
                    self.inner.locks.reset().await;
                    held = None;
                }
            }
            let poll = if active {
                IDLE_POLL
            } else {
                Duration::from_millis(100)
            };
            tokio::select! {
                _ = wake.changed() => {}
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Applies at most one batch. Returns the number of events applied.
    async fn step(&self, projection: &dyn Projection, batch: i64) -> Result<usize, StepError> {
        let checkpoint = self.status_of(projection.name()).await?;
        if checkpoint.error.is_some() {
            self.publish(projection.name(), checkpoint.cursor, true);
            return Err(StepError::Stopped);
        }
        let events = log::read_after(&self.inner.db, checkpoint.cursor, batch).await?;
        if events.is_empty() {
            self.publish(projection.name(), checkpoint.cursor, false);
            return Ok(0);
        }
        let mut last_error = None;
        for attempt in 1..=BATCH_ATTEMPTS {
            match self.apply_batch(projection, &checkpoint, &events).await {
                Ok(Some(cursor)) => {
                    self.publish(projection.name(), cursor, false);
                    return Ok(events.len());
                }
                // Someone else moved the checkpoint (another worker or a rebuild): start over.
                Ok(None) => return Ok(0),
                Err((position, error)) => {
                    // A batch read before another worker (or a rebuild) committed the same events
                    // collides with that worker's rows; the checkpoint has moved, so this is a lost
                    // race to start over from, not a failure of the projection.
                    if self.status_of(projection.name()).await?.cursor != checkpoint.cursor {
                        return Ok(0);
                    }
                    tracing::warn!(projection = projection.name(), position, attempt, %error, "projection batch failed");
                    last_error = Some((position, error));
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
            }
        }
        let (position, error) = last_error.expect("at least one attempt ran");
        tracing::error!(projection = projection.name(), position, %error, "projection stopped");
        sqlx::query("UPDATE projection_checkpoints SET failed_position = $1, error = $2, updated_at = $3 WHERE name = $4")
            .bind(position)
            .bind(error.to_string())
            .bind(now())
            .bind(projection.name())
            .execute(&self.inner.db.pool)
            .await?;
        self.publish(projection.name(), checkpoint.cursor, true);
        Err(StepError::Stopped)
    }

    /// One transaction: claim the batch by moving the checkpoint if nobody moved it meanwhile, then
    /// apply the events.
    async fn apply_batch(
        &self,
        projection: &dyn Projection,
        checkpoint: &ProjectionStatus,
        events: &[StoredEvent],
    ) -> Result<Option<LogPosition>, (i64, ProjectionError)> {
        let first = events[0].cursor.position;
        if projection.is_reactor() {
            let mut conn = self
                .inner
                .db
                .pool
                .acquire()
                .await
                .map_err(|e| (first, e.into()))?;
            for event in events {
                projection
                    .apply(&mut conn, event)
                    .await
                    .map_err(|e| (event.cursor.position, e))?;
            }
        }
        let mut tx = self
            .inner
            .db
            .begin_write()
            .await
            .map_err(|e| (first, e.into()))?;
        // Claim the batch first: the conditional update takes the checkpoint row's lock, so a
        // concurrent worker or rebuild waits here and then finds the cursor moved, instead of
        // applying the same events into the same tables and tripping over our rows.
        let last = events[events.len() - 1].cursor;
        let highest = events.iter().map(|e| e.cursor.position).max().unwrap_or(0);
        let moved = sqlx::query(
            "UPDATE projection_checkpoints \
             SET cursor_tx = $1, cursor_position = $2, \
                 position = CASE WHEN position > $3 THEN position ELSE $3 END, \
                 events_applied = events_applied + $4, updated_at = $5 \
             WHERE name = $6 AND cursor_tx = $7 AND cursor_position = $8 AND error IS NULL",
        )
        .bind(last.tx)
        .bind(last.position)
        .bind(highest)
        .bind(events.len() as i64)
        .bind(now())
        .bind(projection.name())
        .bind(checkpoint.cursor.tx)
        .bind(checkpoint.cursor.position)
        .execute(&mut *tx)
        .await
        .map_err(|e| (first, e.into()))?;
        if moved.rows_affected() == 0 {
            return Ok(None);
        }
        if !projection.is_reactor() {
            for event in events {
                projection
                    .apply(&mut tx, event)
                    .await
                    .map_err(|e| (event.cursor.position, e))?;
            }
        }
        tx.commit().await.map_err(|e| (first, e.into()))?;
        Ok(Some(last))
    }

    fn publish(&self, name: &'static str, cursor: LogPosition, failed: bool) {
        self.inner.progress.send_modify(|map| {
            map.insert(name, Progress { cursor, failed });
        });
    }

    async fn refresh_progress(&self) -> Result<(), sqlx::Error> {
        for status in self.statuses().await? {
            if let Some(p) = self.projection(&status.name) {
                self.publish(p.name(), status.cursor, status.error.is_some());
            }
        }
        Ok(())
    }

    /// Waits (bounded) until every projection has applied the event at `target`, or has failed.
    /// Returns false on timeout.
    pub async fn wait_for(&self, target: LogPosition, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut progress = self.inner.progress.subscribe();
        loop {
            let reached = {
                let map = progress.borrow_and_update();
                let locals = self.inner.locals.read().expect("lock poisoned").clone();
                self.projections()
                    .iter()
                    .map(|p| p.name())
                    .chain(locals)
                    .all(|name| {
                        map.get(name)
                            .is_some_and(|s| s.failed || s.cursor >= target)
                    })
            };
            if reached {
                return true;
            }
            tokio::select! {
                _ = progress.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    // Workers of another instance may hold the projections: read the table.
                    let _ = self.refresh_progress().await;
                }
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }

    /// Every projection's stored checkpoint, in report order.
    pub async fn statuses(&self) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
        let mut out = Vec::new();
        for projection in &self.projections() {
            out.push(self.status_of(projection.name()).await?);
        }
        Ok(out)
    }

    async fn status_of(&self, name: &str) -> Result<ProjectionStatus, sqlx::Error> {
        let row = sqlx::query(
            "SELECT name, cursor_tx, cursor_position, position, events_applied, failed_position, error \
             FROM projection_checkpoints WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.inner.db.pool)
        .await?;
        let Some(row) = row else {
            return Ok(ProjectionStatus {
                name: name.to_owned(),
                position: 0,
                cursor: LogPosition::default(),
                events_applied: 0,
                failed_position: None,
                error: None,
            });
        };
        Ok(ProjectionStatus {
            name: row.try_get("name")?,
            position: row.try_get("position")?,
            cursor: LogPosition {
                tx: row.try_get("cursor_tx")?,
                position: row.try_get("cursor_position")?,
            },
            events_applied: row.try_get("events_applied")?,
            failed_position: row.try_get("failed_position")?,
            error: row.try_get("error")?,
        })
    }

    /// Empties a projection's tables and resets its checkpoint, in one transaction.
    pub async fn reset(&self, projection: &dyn Projection) -> Result<(), sqlx::Error> {
        let mut tx = self.inner.db.begin_write().await?;
        // The checkpoint first: its row lock waits out a worker's batch in flight (whose rows the
        // deletes below then see) and makes any later batch find the cursor moved.
        sqlx::query(
            "INSERT INTO projection_checkpoints (name, version, cursor_tx, cursor_position, position, events_applied, updated_at) \
             VALUES ($1, $2, 0, 0, 0, 0, $3) \
             ON CONFLICT (name) DO UPDATE SET version = excluded.version, cursor_tx = 0, cursor_position = 0, \
               position = 0, events_applied = 0, failed_position = NULL, error = NULL, updated_at = excluded.updated_at",
        )
        .bind(projection.name())
        .bind(projection.version())
        .bind(now())
        .execute(&mut *tx)
        .await?;
        for table in projection.tables() {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.publish(projection.name(), LogPosition::default(), false);
        Ok(())
    }

    /// Clears a projection and replays the whole log into it. `progress(done, total)` is called
    /// after each batch. Returns the number of events replayed.
    pub async fn rebuild(
        &self,
        projection: &dyn Projection,
        progress: impl FnMut(u64, u64),
    ) -> Result<u64, RebuildError> {
        self.reset(projection).await?;
        self.replay(projection, progress).await
    }

    /// Applies whatever the log holds beyond the projection's checkpoint, outside the workers (a
    /// CLI command that reads a read model while no server may be running). Returns the number of
    /// events the projection has applied since its last reset.
    pub async fn catch_up(&self, projection: &dyn Projection) -> Result<u64, RebuildError> {
        self.prepare_one(projection).await?;
        self.replay(projection, |_, _| {}).await
    }

    /// Steps a projection until it has read the whole log.
    async fn replay(
        &self,
        projection: &dyn Projection,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, RebuildError> {
        let total = log::count(&self.inner.db).await? as u64;
        // The last event in the log now: on PostgreSQL a transaction open anywhere in the cluster
        // can hide it from the reader for a while, and the replay waits for it (bounded).
        let end = log::tail(&self.inner.db).await?.unwrap_or_default();
        let patience = Instant::now() + HIDDEN_TAIL_PATIENCE;
        let mut done = 0u64;
        progress(0, total);
        loop {
            match self.step(projection, REBUILD_BATCH).await {
                Ok(0) => {
                    let status = self.status_of(projection.name()).await?;
                    if status.error.is_some() {
                        return Err(RebuildError::Failed(status));
                    }
                    if status.cursor < end && Instant::now() < patience {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    // A concurrent worker may have moved the checkpoint; stop when caught up.
                    let tail = log::read_after(&self.inner.db, status.cursor, 1).await?;
                    if tail.is_empty() {
                        progress(
                            status.events_applied as u64,
                            total.max(status.events_applied as u64),
                        );
                        return Ok(status.events_applied as u64);
                    }
                }
                Ok(n) => {
                    done += n as u64;
                    progress(done, total.max(done));
                }
                Err(StepError::Stopped) => {
                    return Err(RebuildError::Failed(
                        self.status_of(projection.name()).await?,
                    ));
                }
                Err(StepError::Database(e)) => return Err(e.into()),
            }
        }
    }
}

/// Why a rebuild did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("projection {} stopped at position {:?}: {}", .0.name, .0.failed_position, .0.error.as_deref().unwrap_or(""))]
    Failed(ProjectionStatus),
}

enum StepError {
    Stopped,
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StepError {
    fn from(e: sqlx::Error) -> Self {
        StepError::Database(e)
    }
}

/// One connection, detached from the pool, holds this instance's session-level advisory locks (one
/// per projection it applies). Closing it frees them all; the generation tells workers their lock
/// went with it.
#[derive(Default)]
struct LockSession {
    inner: tokio::sync::Mutex<(u64, Option<AnyConnection>)>,
    generation: std::sync::atomic::AtomicU64,
}

impl LockSession {
    /// Takes the projection's lock; `Some(generation)` when held.
    async fn try_lock(&self, db: &Db, name: &str) -> Option<u64> {
        let mut guard = self.inner.lock().await;
        if guard.1.is_none() {
            guard.1 = Some(db.pool.acquire().await.ok()?.detach());
            guard.0 += 1;
            self.generation
                .store(guard.0, std::sync::atomic::Ordering::SeqCst);
        }
        let generation = guard.0;
        let conn = guard.1.as_mut()?;
        match try_advisory_lock(conn, name).await {
            Ok(true) => Some(generation),
            Ok(false) => None,
            Err(_) => {
                guard.1 = None;
                guard.0 += 1;
                self.generation
                    .store(guard.0, std::sync::atomic::Ordering::SeqCst);
                None
            }
        }
    }

    /// Whether a lock taken in `generation` is still held.
    fn is_current(&self, generation: u64) -> bool {
        self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation
    }

    /// Closes the session, freeing every lock.
    async fn reset(&self) {
        let mut guard = self.inner.lock().await;
        if let Some(conn) = guard.1.take() {
            let _ = sqlx::Connection::close(conn).await;
        }
        guard.0 += 1;
        self.generation
            .store(guard.0, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Tries to take the projection's session-level advisory lock on `conn`.
async fn try_advisory_lock(conn: &mut AnyConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(lock_key(name))
        .fetch_one(conn)
        .await
}

/// A stable advisory-lock key per projection (FNV-1a).
fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"ipto.projection.".iter().chain(name.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

fn now() -> String {
    aggregates::timestamp::format(chrono::Utc::now())
}
