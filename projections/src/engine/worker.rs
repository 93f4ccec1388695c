//! The live workers: one per projection (PostgreSQL, and reactors), or one for the whole group
//! (SQLite), each stepping from its checkpoint as the log grows, sharing reads of the log and
//! carrying a lead over batches its projection does not read.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{highest, ProjectorEngine, StepError};
use crate::log::{self, LogPosition, StoredEvent};
use crate::{Dialect, Projection, ProjectionStatus};

/// Events applied per transaction by a live worker.
const LIVE_BATCH: i64 = 500;
/// First poll while committed events are held back by an older running transaction (PostgreSQL);
/// it doubles while they stay hidden, up to the idle poll.
const HELD_BACK_POLL: Duration = Duration::from_millis(5);
/// Safety-net poll when no wake-up arrives.
const IDLE_POLL: Duration = Duration::from_millis(1000);
/// Events a live worker may read past its stored checkpoint, all of no interest to it, before it
/// stores the checkpoint anyway (it also stores it after an idle poll and at shutdown).
const LEAD_LIMIT: i64 = 10_000;

impl ProjectorEngine {
    /// Starts one worker per projection. They stop when `shutdown` turns true, at a checkpoint.
    pub async fn start(&self, shutdown: watch::Receiver<bool>) -> Result<JoinSet<()>, sqlx::Error> {
        let stale = self.prepare().await?;
        // A stored failure is retried at start-up: the fix may be in this build.
        sqlx::query("UPDATE projection_checkpoints SET failed_position = NULL, error = NULL")
            .execute(&self.inner.db.pool)
            .await?;
        let mut workers = JoinSet::new();
        if !stale.is_empty() {
            self.set_rebuilding(stale.iter().map(|p| p.name()).collect());
            let engine = self.clone();
            let shutdown = shutdown.clone();
            let stale = stale.clone();
            workers.spawn(async move { engine.deploy_version(stale, shutdown).await });
        }
        // Every read model keeps following the log in its live tables, a stale one too (with
        // this build's code over the previous version's rows), so that writes and
        // read-your-writes go on while the new version is rebuilt behind it.
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

    /// A new version of these read models: rebuilt online behind the live tables (or by another
    /// instance, whichever takes the lease), then switched in.
    async fn deploy_version(
        &self,
        stale: Vec<Arc<dyn Projection>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.versions_deployed(&stale).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "could not read the projections' versions"),
            }
            let pause = match self.rebuild_online(&stale, |_, _| {}).await {
                Ok(_) => break,
                // Another instance is rebuilding (maybe these): look again shortly.
                Err(super::RebuildError::Busy(_)) => Duration::from_secs(1),
                Err(error) => {
                    tracing::error!(%error, "the new version's rebuild failed; retrying");
                    Duration::from_secs(5)
                }
            };
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        self.set_rebuilding(Vec::new());
        tracing::info!("the new projection versions are live");
    }

    /// Whether every one of these projections' checkpoints carries its version.
    async fn versions_deployed(&self, stale: &[Arc<dyn Projection>]) -> Result<bool, sqlx::Error> {
        for projection in stale {
            if self.stored_version(projection.name()).await? != Some(projection.version()) {
                return Ok(false);
            }
        }
        Ok(true)
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
    pub(super) async fn step(
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
}

/// A read of the log: the events after `after`, read once wake-up `generation` had been sent.
pub(super) struct SharedRead {
    generation: u64,
    after: LogPosition,
    limit: i64,
    events: Arc<Vec<StoredEvent>>,
}

/// What a live worker remembers between batches.
#[derive(Default)]
pub(super) struct Live {
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
pub(super) struct Lead {
    /// The stored checkpoint the lead starts from.
    pub(super) base: LogPosition,
    /// The last event read.
    pub(super) to: LogPosition,
    /// Events read since `base`.
    pub(super) events: i64,
    /// Highest global position among them.
    pub(super) highest: i64,
}
