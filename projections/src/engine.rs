//! The projector engine: workers read the log in global order from each projection's checkpoint
//! and apply each batch together with the new checkpoint in one transaction.
//!
//! - On PostgreSQL there is one worker per projection, and a session advisory lock keeps one
//!   active worker per projection across instances; the others stand by and follow the
//!   checkpoint table. On SQLite, which has one writer, one worker applies each batch for every
//!   projection in one transaction, each under a savepoint (reactors keep workers of their own).
//! - Each projection declares the aggregate types it reads ([`Reads`]); it is handed only those,
//!   a live worker writes nothing for a batch holding none of them (its checkpoint catches up
//!   later), and read-your-writes waits only for the projections that read what was written.
//! - The checkpoint update is conditional on the checkpoint read, so a batch is applied at most
//!   once even if two workers (or a worker and `projections rebuild`) race.
//! - A handler error stops its projection at that event (no skipping); the failure is stored with
//!   the checkpoint and reported by `/health` and `ipto projections status`.
//! - Workers wake on an in-process signal after every commit, on PostgreSQL `NOTIFY`s from other
//!   instances, and on a slow poll as a safety net; workers woken by the same commit share one read
//!   of the log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
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
/// First poll while committed events are held back by an older running transaction (PostgreSQL);
/// it doubles while they stay hidden, up to the idle poll.
const HELD_BACK_POLL: Duration = Duration::from_millis(5);
/// Projections applying a rebuild batch at once on PostgreSQL (well below the pool size).
const REBUILD_PARALLEL: usize = 4;
/// Safety-net poll when no wake-up arrives.
const IDLE_POLL: Duration = Duration::from_millis(1000);
/// Events a live worker may read past its stored checkpoint, all of no interest to it, before it
/// stores the checkpoint anyway (it also stores it after an idle poll and at shutdown).
const LEAD_LIMIT: i64 = 10_000;
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

/// Which events a projection reads. The engine hands it only those: a batch holding none of them
/// costs the projection no call and, in a live worker, no write (see [`ProjectorEngine`]), and a
/// request waits for read-your-writes only on the projections that read what it wrote.
#[derive(Clone, Copy, Debug)]
pub enum Reads {
    /// Every event (e.g. the audit order).
    All,
    /// The events of these aggregate types.
    Aggregates(&'static [&'static str]),
}

impl Reads {
    /// Whether events of `aggregate_type` are read.
    pub fn aggregate(self, aggregate_type: &str) -> bool {
        match self {
            Reads::All => true,
            Reads::Aggregates(types) => types.contains(&aggregate_type),
        }
    }

    /// Whether any of `aggregate_types` is read; `None` stands for every type.
    fn any_of(self, aggregate_types: Option<&[&str]>) -> bool {
        aggregate_types.is_none_or(|types| types.iter().any(|t| self.aggregate(t)))
    }
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
    /// The events `apply` is given; the others are skipped without a call.
    fn reads(&self) -> Reads;
    /// Applies one event inside the batch's transaction. Events of no interest are ignored.
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError>;
    /// Applies the events of a batch that the projection reads, in order, inside the batch's
    /// transaction; on failure, the position of the event (or of the first event of the group of
    /// events) that failed. One by one unless the projection writes them together.
    async fn apply_all(
        &self,
        conn: &mut AnyConnection,
        events: &[&StoredEvent],
    ) -> Result<(), (i64, ProjectionError)> {
        for event in events {
            self.apply(conn, event)
                .await
                .map_err(|e| (event.cursor.position, e))?;
        }
        Ok(())
    }
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
    /// The checkpoint once `events` (and the skipped `lead` before them) are applied.
    fn past(&self, events: &[StoredEvent], lead: Option<&Lead>) -> ProjectionStatus {
        let (skipped, skipped_highest) = lead.map_or((0, 0), |l| (l.events, l.highest));
        ProjectionStatus {
            cursor: events.last().map_or(self.cursor, |e| e.cursor),
            position: self.position.max(highest(events)).max(skipped_highest),
            events_applied: self.events_applied + skipped + events.len() as i64,
            ..self.clone()
        }
    }

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
    locals: std::sync::RwLock<Vec<(&'static str, Reads)>>,
    wake: watch::Sender<u64>,
    progress: watch::Sender<HashMap<&'static str, Progress>>,
    /// Each live worker's lead over its stored checkpoint, shown by [`ProjectorEngine::statuses`].
    leads: std::sync::Mutex<HashMap<&'static str, Lead>>,
    /// The last read of the log by a live worker, shared with workers at the same cursor.
    last_read: tokio::sync::Mutex<Option<SharedRead>>,
}

/// A read of the log: the events after `after`, read once wake-up `generation` had been sent.
struct SharedRead {
    generation: u64,
    after: LogPosition,
    limit: i64,
    events: Arc<Vec<StoredEvent>>,
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
                leads: std::sync::Mutex::default(),
                last_read: tokio::sync::Mutex::default(),
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
    pub fn register_local(&self, name: &'static str, reads: Reads) {
        self.inner
            .locals
            .write()
            .expect("lock poisoned")
            .push((name, reads));
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
        let (grouped, alone): (Vec<_>, Vec<_>) = self
            .projections()
            .into_iter()
            .partition(|p| self.inner.db.dialect == Dialect::Sqlite && !p.is_reactor());
        if !grouped.is_empty() {
            let engine = self.clone();
            let shutdown = shutdown.clone();
            workers.spawn(async move { engine.run_group(grouped, shutdown).await });
        }
        for projection in alone {
            let engine = self.clone();
            let shutdown = shutdown.clone();
            workers.spawn(async move { engine.run_worker(projection, shutdown).await });
        }
        Ok(workers)
    }

    /// SQLite's worker: SQLite has one writer, so instead of one worker per projection each
    /// taking its turn with a transaction of its own, one worker reads each batch once and applies
    /// it for every projection that reads something in it in one transaction, each projection
    /// under a savepoint with its own conditional checkpoint update (a projection whose handler
    /// fails is rolled back alone and retried alone, exactly as a worker of its own would; one
    /// whose checkpoint someone else moved is skipped and reads its checkpoint again). Reactors
    /// keep workers of their own: their commands commit outside the batch.
    async fn run_group(
        &self,
        projections: Vec<Arc<dyn Projection>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut wake = self.inner.wake.subscribe();
        let mut lives: Vec<Live> = projections.iter().map(|_| Live::default()).collect();
        let mut poll = false;
        loop {
            if *shutdown.borrow() {
                for (projection, live) in projections.iter().zip(lives.iter_mut()) {
                    let _ = self.store_lead(projection.as_ref(), live).await;
                    self.show_lead(projection.name(), None);
                }
                return;
            }
            let seen = *wake.borrow_and_update();
            let outcome = self
                .group_step(&projections, &mut lives, (!poll).then_some(seen))
                .await;
            for (projection, live) in projections.iter().zip(&lives) {
                self.show_lead(projection.name(), live.lead);
            }
            match outcome {
                Ok(n) if n as i64 >= LIVE_BATCH => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "projection worker could not reach the database; retrying");
                    lives.iter_mut().for_each(|l| *l = Live::default());
                }
            }
            poll = tokio::select! {
                _ = wake.changed() => false,
                _ = shutdown.changed() => false,
                _ = tokio::time::sleep(IDLE_POLL) => true,
            };
            if poll {
                for (projection, live) in projections.iter().zip(lives.iter_mut()) {
                    if let Err(error) = self.store_lead(projection.as_ref(), live).await {
                        tracing::warn!(projection = projection.name(), %error, "could not store a checkpoint; retrying");
                    }
                    self.show_lead(projection.name(), live.lead);
                }
            }
        }
    }

    /// One batch for every projection of the group (see [`ProjectorEngine::run_group`]). Returns
    /// the number of events read.
    async fn group_step(
        &self,
        projections: &[Arc<dyn Projection>],
        lives: &mut [Live],
        seen: Option<u64>,
    ) -> Result<usize, sqlx::Error> {
        // Where each projection stands; stopped ones (a stored failure) sit out.
        let mut from: Option<LogPosition> = None;
        for (projection, live) in projections.iter().zip(lives.iter_mut()) {
            if live.checkpoint.is_none() {
                live.checkpoint = Some(self.status_of(projection.name()).await?);
                live.lead = None;
            }
            let checkpoint = live.checkpoint.as_ref().expect("just read");
            if checkpoint.error.is_some() {
                self.publish(projection.name(), checkpoint.cursor, true);
                continue;
            }
            let at = live.lead.map_or(checkpoint.cursor, |l| l.to);
            from = Some(from.map_or(at, |f| f.min(at)));
        }
        let Some(from) = from else { return Ok(0) };
        let events = self.read_shared(from, LIVE_BATCH, seen).await?;
        // Each projection's share of the batch: a lead to extend, or events to write.
        let mut writes: Vec<(usize, usize)> = Vec::new();
        for (index, (projection, live)) in projections.iter().zip(lives.iter_mut()).enumerate() {
            let checkpoint = live.checkpoint.as_ref().expect("read above");
            if checkpoint.error.is_some() {
                continue;
            }
            let at = live.lead.map_or(checkpoint.cursor, |l| l.to);
            let skip = events.partition_point(|e| e.cursor <= at);
            let mine = &events[skip..];
            if mine.is_empty() {
                self.publish(projection.name(), at, false);
                continue;
            }
            let reads = projection.reads();
            if mine.iter().any(|e| reads.aggregate(&e.aggregate_type)) {
                writes.push((index, skip));
                continue;
            }
            self.skip(projection.as_ref(), live, at, mine).await?;
        }
        if writes.is_empty() {
            return Ok(events.len());
        }
        let mut tx = self.inner.db.begin_write().await?;
        let mut outcomes = Vec::with_capacity(writes.len());
        for &(index, skip) in &writes {
            let (projection, live) = (&projections[index], &lives[index]);
            let checkpoint = live.checkpoint.as_ref().expect("read above");
            let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
            let outcome = self
                .claim_and_apply(
                    &mut savepoint,
                    projection.as_ref(),
                    checkpoint,
                    &events[skip..],
                    live.lead,
                )
                .await;
            match outcome {
                Ok(true) => savepoint.commit().await?,
                _ => savepoint.rollback().await?,
            }
            outcomes.push(outcome);
        }
        tx.commit().await?;
        for (&(index, skip), outcome) in writes.iter().zip(outcomes) {
            let (projection, live) = (&projections[index], &mut lives[index]);
            let mine = &events[skip..];
            let last = mine.last().expect("non-empty").cursor;
            let checkpoint = live.checkpoint.take().expect("read above");
            let lead = live.lead.take();
            match outcome {
                Ok(true) => {
                    live.checkpoint = Some(checkpoint.past(mine, lead.as_ref()));
                    self.publish(projection.name(), last, false);
                }
                // Someone else moved the checkpoint: read it again next time.
                Ok(false) => {}
                // The handler failed: alone, with retries, as a worker of its own would.
                Err(_) => {
                    match self
                        .apply_with_retries(projection.as_ref(), &checkpoint, mine, lead)
                        .await
                    {
                        Err(StepError::Database(e)) => return Err(e),
                        Ok(_) | Err(StepError::Stopped) => {}
                    }
                }
            }
        }
        Ok(events.len())
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
        // Consecutive looks at events held back by an older transaction; each waits twice as long.
        let mut held_back_looks: u32 = 0;
        let mut live = Live::default();
        loop {
            if *shutdown.borrow() {
                let _ = self.store_lead(projection.as_ref(), &mut live).await;
                self.show_lead(name, None);
                return;
            }
            let active = match self.inner.db.dialect {
                Dialect::Sqlite => true,
                Dialect::Postgres => {
                    if !held.is_some_and(|generation| self.inner.locks.is_current(generation)) {
                        held = self.inner.locks.try_lock(&self.inner.db, name).await;
                        live = Live::default();
                    }
                    held.is_some()
                }
            };
            // Seen before reading: a commit after the read wakes the worker again.
            live.seen = *wake.borrow_and_update();
            let outcome = if active {
                self.step(projection.as_ref(), LIVE_BATCH, Some(&mut live))
                    .await
            } else {
                Ok(0)
            };
            self.show_lead(name, live.lead);
            let mut held_back = false;
            match outcome {
                // A full batch: more may follow at once.
                Ok(n) if n as i64 >= LIVE_BATCH => {
                    held_back_looks = 0;
                    continue;
                }
                Ok(n) => {
                    if !active {
                        let _ = self.refresh_progress().await;
                    } else if self.inner.db.dialect == Dialect::Postgres {
                        held_back = self.held_back(name).await;
                    }
                    if n > 0 {
                        held_back_looks = 0;
                    }
                }
                Err(StepError::Stopped) => return,
                Err(StepError::Database(error)) => {
                    tracing::warn!(projection = name, %error, "projection worker could not reach the database; retrying");
                    // Closing the session frees its locks; they are taken again on the next round.
                    self.inner.locks.reset().await;
                    held = None;
                    live = Live::default();
                }
            }
            held_back_looks = if held_back { held_back_looks + 1 } else { 0 };
            let poll = if held_back {
                (HELD_BACK_POLL * 2u32.pow(held_back_looks.min(8) - 1)).min(IDLE_POLL)
            } else if active {
                IDLE_POLL
            } else {
                Duration::from_millis(100)
            };
            let idle = tokio::select! {
                _ = wake.changed() => false,
                _ = shutdown.changed() => false,
                _ = tokio::time::sleep(poll) => true,
            };
            // A poll looks at the log itself: what it looks for (events an older transaction
            // held back) wakes nobody, so another worker's read may predate it.
            live.poll = idle;
            if idle && active {
                if let Err(error) = self.store_lead(projection.as_ref(), &mut live).await {
                    tracing::warn!(projection = name, %error, "could not store a checkpoint; retrying");
                }
                self.show_lead(name, live.lead);
            }
        }
    }

    /// Whether the log holds events past the projection's cursor that the last read could not
    /// see yet (PostgreSQL: a transaction older than them, often another worker's batch, was still
    /// running). Their commit wakes nobody, since that transaction appended no event, so the worker
    /// looks again soon instead of at the idle poll.
    async fn held_back(&self, name: &str) -> bool {
        let Some(progress) = self.inner.progress.borrow().get(name).copied() else {
            return false;
        };
        matches!(log::tail(&self.inner.db).await, Ok(Some(tail)) if tail > progress.cursor)
    }

    /// Carries `events` (read after `at`, none of them read by the projection) in the worker's
    /// lead instead of writing them, and reports them as applied; stores the lead once it is long.
    async fn skip(
        &self,
        projection: &dyn Projection,
        live: &mut Live,
        at: LogPosition,
        events: &[StoredEvent],
    ) -> Result<(), sqlx::Error> {
        let (Some(checkpoint), Some(last)) = (live.checkpoint.as_ref(), events.last()) else {
            return Ok(());
        };
        let mut ahead = live.lead.unwrap_or(Lead {
            base: checkpoint.cursor,
            to: at,
            events: 0,
            highest: 0,
        });
        ahead.to = last.cursor;
        ahead.events += events.len() as i64;
        ahead.highest = ahead.highest.max(highest(events));
        live.lead = Some(ahead);
        self.publish(projection.name(), last.cursor, false);
        if ahead.events >= LEAD_LIMIT {
            self.store_lead(projection, live).await?;
        }
        Ok(())
    }

    /// Makes a worker's lead visible to [`ProjectorEngine::statuses`].
    fn show_lead(&self, name: &'static str, lead: Option<Lead>) {
        let mut leads = self.inner.leads.lock().expect("lock poisoned");
        match lead {
            Some(lead) => leads.insert(name, lead),
            None => leads.remove(name),
        };
    }

    /// Stores the checkpoint a worker's lead has reached, if the stored one has not moved since,
    /// and forgets the worker's copy of the checkpoint (read again at its next step).
    async fn store_lead(
        &self,
        projection: &dyn Projection,
        live: &mut Live,
    ) -> Result<(), sqlx::Error> {
        live.checkpoint = None;
        let Some(ahead) = live.lead.take() else {
            return Ok(());
        };
        let checkpoint = self.status_of(projection.name()).await?;
        if checkpoint.cursor == ahead.base && checkpoint.error.is_none() {
            // Nothing to apply, so the only failure is the database's.
            if let Err(StepError::Database(e)) = self
                .apply_with_retries(projection, &checkpoint, &[], Some(ahead))
                .await
            {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Reads up to `limit` events after `after` for a live worker woken by wake-up `seen`
    /// (`None`: by a poll, which reads afresh). Workers woken by the same commit mostly stand at
    /// the same cursor: one of them reads and the others take its result, as long as that read
    /// began after the wake-up they saw (so it includes every commit announced by then). Reads
    /// take turns, which also keeps a dozen workers from queueing on the pool at once.
    async fn read_shared(
        &self,
        after: LogPosition,
        limit: i64,
        seen: Option<u64>,
    ) -> Result<Arc<Vec<StoredEvent>>, sqlx::Error> {
        let mut last = self.inner.last_read.lock().await;
        if let (Some(read), Some(seen)) = (last.as_ref(), seen) {
            if read.after == after && read.limit == limit && read.generation >= seen {
                return Ok(read.events.clone());
            }
        }
        let generation = *self.inner.wake.borrow();
        let events = Arc::new(log::read_after(&self.inner.db, after, limit).await?);
        *last = Some(SharedRead {
            generation,
            after,
            limit,
            events: events.clone(),
        });
        Ok(events)
    }

    /// Applies at most one batch. Returns the number of events read.
    ///
    /// A live worker (`live`) keeps its checkpoint as it last wrote it instead of reading it
    /// before every batch (the conditional update notices if someone else moved it), and does not
    /// write a batch holding no event its projection reads: it reports the batch as applied at
    /// once and carries it as a lead; the stored checkpoint catches up with the next batch that
    /// writes, after an idle poll, or every [`LEAD_LIMIT`] events. Skipped events change
    /// nothing, so reading them again after a restart is harmless.
    async fn step(
        &self,
        projection: &dyn Projection,
        batch: i64,
        mut live: Option<&mut Live>,
    ) -> Result<usize, StepError> {
        let known = live.as_mut().and_then(|l| l.checkpoint.clone());
        let checkpoint = match known {
            Some(checkpoint) => checkpoint,
            None => self.status_of(projection.name()).await?,
        };
        if checkpoint.error.is_some() {
            self.publish(projection.name(), checkpoint.cursor, true);
            return Err(StepError::Stopped);
        }
        let mut lead = None;
        if let Some(live) = live.as_mut() {
            live.checkpoint = Some(checkpoint.clone());
            // A lead stands on the checkpoint it started from.
            if live.lead.is_some_and(|l| l.base != checkpoint.cursor) {
                live.lead = None;
            }
            lead = live.lead;
        }
        let from = lead.map_or(checkpoint.cursor, |l| l.to);
        let events = match live.as_ref() {
            Some(live) => {
                let seen = (!live.poll).then_some(live.seen);
                self.read_shared(from, batch, seen).await?
            }
            None => Arc::new(log::read_after(&self.inner.db, from, batch).await?),
        };
        let events = events.as_slice();
        if events.is_empty() {
            self.publish(projection.name(), from, false);
            return Ok(0);
        }
        let reads = projection.reads();
        if let Some(live) = live.as_mut() {
            if !events.iter().any(|e| reads.aggregate(&e.aggregate_type)) {
                self.skip(projection, live, from, events).await?;
                return Ok(events.len());
            }
            live.lead = None;
        }
        let applied = self
            .apply_with_retries(projection, &checkpoint, events, lead)
            .await?;
        if let Some(live) = live {
            live.checkpoint =
                (applied == events.len()).then(|| checkpoint.past(events, lead.as_ref()));
        }
        Ok(applied)
    }

    /// Applies `events` (read after `checkpoint`, or after `lead` if given) in one transaction
    /// that also stores the checkpoint past them, retrying a failed batch; after the last attempt
    /// the failure is stored and the projection stops. Returns the number of events applied: 0 if
    /// someone else moved the checkpoint meanwhile.
    async fn apply_with_retries(
        &self,
        projection: &dyn Projection,
        checkpoint: &ProjectionStatus,
        events: &[StoredEvent],
        lead: Option<Lead>,
    ) -> Result<usize, StepError> {
        let mut last_error = None;
        for attempt in 1..=BATCH_ATTEMPTS {
            match self.apply_batch(projection, checkpoint, events, lead).await {
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
        lead: Option<Lead>,
    ) -> Result<Option<LogPosition>, (i64, ProjectionError)> {
        let (last, first) = match (events.first(), events.last(), lead) {
            (Some(first), Some(last), _) => (last.cursor, first.cursor.position),
            (_, _, Some(lead)) => (lead.to, lead.to.position),
            _ => return Ok(Some(checkpoint.cursor)),
        };
        let reads = projection.reads();
        let read = || events.iter().filter(|e| reads.aggregate(&e.aggregate_type));
        if projection.is_reactor() {
            let mut conn = self
                .inner
                .db
                .pool
                .acquire()
                .await
                .map_err(|e| (first, e.into()))?;
            for event in read() {
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
        match self
            .claim_and_apply(&mut tx, projection, checkpoint, events, lead)
            .await?
        {
            true => {
                tx.commit().await.map_err(|e| (first, e.into()))?;
                Ok(Some(last))
            }
            false => Ok(None),
        }
    }

    /// Inside a transaction: claims the batch by moving the checkpoint past `events` (and `lead`)
    /// if nobody moved it since `checkpoint`, then applies the events the projection reads (not
    /// for a reactor, which applied them before). False if the checkpoint had moved.
    async fn claim_and_apply(
        &self,
        conn: &mut AnyConnection,
        projection: &dyn Projection,
        checkpoint: &ProjectionStatus,
        events: &[StoredEvent],
        lead: Option<Lead>,
    ) -> Result<bool, (i64, ProjectionError)> {
        let (last, first) = match (events.first(), events.last(), lead) {
            (Some(first), Some(last), _) => (last.cursor, first.cursor.position),
            (_, _, Some(lead)) => (lead.to, lead.to.position),
            _ => return Ok(true),
        };
        // Claim the batch first: the conditional update takes the checkpoint row's lock, so a
        // concurrent worker or rebuild waits here and then finds the cursor moved, instead of
        // applying the same events into the same tables and tripping over our rows.
        let (skipped, skipped_highest) = lead.map_or((0, 0), |l| (l.events, l.highest));
        let moved = sqlx::query(
            "UPDATE projection_checkpoints \
             SET cursor_tx = $1, cursor_position = $2, \
                 position = CASE WHEN position > $3 THEN position ELSE $3 END, \
                 events_applied = events_applied + $4, updated_at = $5 \
             WHERE name = $6 AND cursor_tx = $7 AND cursor_position = $8 AND error IS NULL",
        )
        .bind(last.tx)
        .bind(last.position)
        .bind(highest(events).max(skipped_highest))
        .bind(events.len() as i64 + skipped)
        .bind(now())
        .bind(projection.name())
        .bind(checkpoint.cursor.tx)
        .bind(checkpoint.cursor.position)
        .execute(&mut *conn)
        .await
        .map_err(|e| (first, e.into()))?;
        if moved.rows_affected() == 0 {
            return Ok(false);
        }
        if !projection.is_reactor() {
            let reads = projection.reads();
            let read: Vec<&StoredEvent> = events
                .iter()
                .filter(|e| reads.aggregate(&e.aggregate_type))
                .collect();
            if !read.is_empty() {
                projection.apply_all(conn, &read).await?;
            }
        }
        Ok(true)
    }

    fn publish(&self, name: &'static str, cursor: LogPosition, failed: bool) {
        self.inner.progress.send_modify(|map| {
            map.insert(name, Progress { cursor, failed });
        });
    }

    /// Takes the progress of projections from the checkpoint table (their workers may run in
    /// another instance). A checkpoint behind what this instance saw is a worker's lead not yet
    /// stored, so progress only moves forward here; resets publish their own.
    async fn refresh_progress(&self) -> Result<(), sqlx::Error> {
        for status in self.statuses().await? {
            if let Some(p) = self.projection(&status.name) {
                let seen = self.inner.progress.borrow().get(p.name()).map(|s| s.cursor);
                let cursor = seen.map_or(status.cursor, |seen| seen.max(status.cursor));
                self.publish(p.name(), cursor, status.error.is_some());
            }
        }
        Ok(())
    }

    /// Waits (bounded) until every projection that reads events of `aggregate_types` (`None`:
    /// every projection) has applied the event at `target`, or has failed. Returns false on
    /// timeout.
    pub async fn wait_for(
        &self,
        target: LogPosition,
        aggregate_types: Option<&[&str]>,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut progress = self.inner.progress.subscribe();
        let mut awaited: Vec<&'static str> = self
            .projections()
            .iter()
            .filter(|p| p.reads().any_of(aggregate_types))
            .map(|p| p.name())
            .collect();
        awaited.extend(
            self.inner
                .locals
                .read()
                .expect("lock poisoned")
                .iter()
                .filter(|(_, reads)| reads.any_of(aggregate_types))
                .map(|(name, _)| *name),
        );
        loop {
            let reached = {
                let map = progress.borrow_and_update();
                awaited.iter().all(|name| {
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

    /// Every projection's checkpoint, in report order: as stored, moved past the events a worker
    /// of this instance has read beyond it without finding any its projection reads.
    pub async fn statuses(&self) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
        let mut out = Vec::new();
        for projection in &self.projections() {
            let mut status = self.status_of(projection.name()).await?;
            let lead = self
                .inner
                .leads
                .lock()
                .expect("lock poisoned")
                .get(projection.name())
                .copied();
            if let Some(lead) = lead.filter(|l| l.base == status.cursor && status.error.is_none()) {
                status.cursor = lead.to;
                status.position = status.position.max(lead.highest);
                status.events_applied += lead.events;
            }
            out.push(status);
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

    /// Clears these projections and replays the whole log into them, reading each batch of the
    /// log once for all of them (a rebuild is bound by reading the log). Each projection applies
    /// the batch in its own transaction with its own checkpoint, exactly as a worker would; one
    /// whose checkpoint someone else moved meanwhile is finished alone. `progress(done, total)`
    /// counts log events. Returns the number of events each projection replayed, in order.
    pub async fn rebuild_all(
        &self,
        projections: &[Arc<dyn Projection>],
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Vec<u64>, RebuildError> {
        let mut checkpoints = Vec::new();
        for projection in projections {
            self.reset(projection.as_ref()).await?;
            checkpoints.push(Some(self.status_of(projection.name()).await?));
        }
        let total = log::count(&self.inner.db).await? as u64;
        let mut cursor = LogPosition::default();
        let mut done = 0u64;
        progress(0, total);
        loop {
            let events = log::read_after(&self.inner.db, cursor, REBUILD_BATCH).await?;
            let Some(last) = events.last().map(|e| e.cursor) else {
                break;
            };
            // Projections write disjoint tables and checkpoints: on PostgreSQL several apply the
            // batch at once, each in its own transaction, overlapping their round trips. SQLite
            // has one writer, so there they take turns.
            let parallel = match self.inner.db.dialect {
                Dialect::Sqlite => 1,
                Dialect::Postgres => REBUILD_PARALLEL,
            };
            let events = &events;
            let outcomes: Vec<_> = futures::stream::iter(checkpoints.iter().zip(projections))
                .map(|(checkpoint, projection)| async move {
                    match checkpoint {
                        Some(status) => Some(
                            self.apply_with_retries(projection.as_ref(), status, events, None)
                                .await,
                        ),
                        None => None,
                    }
                })
                .buffered(parallel)
                .collect()
                .await;
            for ((projection, checkpoint), outcome) in
                projections.iter().zip(checkpoints.iter_mut()).zip(outcomes)
            {
                let (Some(status), Some(outcome)) = (checkpoint.as_mut(), outcome) else {
                    continue;
                };
                match outcome {
                    Ok(n) if n == events.len() => {
                        status.cursor = last;
                        status.events_applied += n as i64;
                    }
                    Ok(_) => *checkpoint = None,
                    Err(StepError::Stopped) => {
                        return Err(RebuildError::Failed(
                            self.status_of(projection.name()).await?,
                        ));
                    }
                    Err(StepError::Database(e)) => return Err(e.into()),
                }
            }
            cursor = last;
            done += events.len() as u64;
            progress(done, total.max(done));
        }
        // Events appended during the pass, and projections that left it, are caught up one by one.
        let mut counts = Vec::new();
        for projection in projections {
            counts.push(self.replay(projection.as_ref(), |_, _| {}).await?);
        }
        Ok(counts)
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
            match self.step(projection, REBUILD_BATCH, None).await {
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

/// What a live worker remembers between batches.
#[derive(Default)]
struct Live {
    /// The checkpoint as this worker last stored it; `None` reads it from the table.
    checkpoint: Option<ProjectionStatus>,
    /// Events read past that checkpoint that the projection does not read.
    lead: Option<Lead>,
    /// The last wake-up seen before reading.
    seen: u64,
    /// Whether the worker woke from a poll rather than a wake-up.
    poll: bool,
}

/// Events a live worker has read past its stored checkpoint, none of which its projection reads.
#[derive(Clone, Copy, Debug)]
struct Lead {
    /// The stored checkpoint the lead starts from.
    base: LogPosition,
    /// The last event read.
    to: LogPosition,
    /// Events read since `base`.
    events: i64,
    /// Highest global position among them.
    highest: i64,
}

/// The highest global position in `events` (0 if none).
fn highest(events: &[StoredEvent]) -> i64 {
    events.iter().map(|e| e.cursor.position).max().unwrap_or(0)
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
