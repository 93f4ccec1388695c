//! Rebuilds and catch-up outside the workers: reset a projection's tables and checkpoint, replay
//! the log into one projection or into several at once.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use super::{now, ProjectorEngine, StepError};
use crate::log::{self, LogPosition};
use crate::{Dialect, Projection, ProjectionStatus};

/// Events applied per transaction during a rebuild.
const REBUILD_BATCH: i64 = 2000;
/// Projections applying a rebuild batch at once on PostgreSQL (well below the pool size).
const REBUILD_PARALLEL: usize = 4;
/// How long a replay waits for events an open transaction elsewhere still hides.
const HIDDEN_TAIL_PATIENCE: Duration = Duration::from_secs(30);

impl ProjectorEngine {
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
        // No server may be running: a changed version is replayed in place.
        self.prepare_one(projection, true).await?;
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
            // The futures are made before they are streamed, so the whole rebuild stays a
            // `Send` future that a spawned task can run.
            let applies: Vec<_> = checkpoints
                .iter()
                .zip(projections)
                .filter_map(|(checkpoint, projection)| {
                    let status = checkpoint.as_ref()?;
                    Some(self.apply_with_retries(projection.as_ref(), status, &events, None))
                })
                .collect();
            let mut applied = futures::stream::iter(applies)
                .buffered(parallel)
                .collect::<Vec<_>>()
                .await
                .into_iter();
            let outcomes: Vec<_> = checkpoints
                .iter()
                .map(|c| c.as_ref().and_then(|_| applied.next()))
                .collect();
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

/// Why a rebuild did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The projection's handler failed; its stored status says where and why.
    #[error("projection {} stopped at position {:?}: {}", .0.name, .0.failed_position, .0.error.as_deref().unwrap_or(""))]
    Failed(ProjectionStatus),
    /// Another online rebuild holds the lease (of these projections).
    #[error("another rebuild is running ({0}); try again when it is done")]
    Busy(String),
    /// An online rebuild lost its shadow or its lease; the live tables are as they were.
    #[error("the rebuild was interrupted: {0}; the live read models are unchanged")]
    Interrupted(String),
}
