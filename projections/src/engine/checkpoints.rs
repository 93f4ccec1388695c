//! Checkpoints and claims: a batch is claimed by moving the projection's checkpoint, conditionally
//! on the checkpoint it was read after, in the transaction that applies it, so it is applied at
//! most once; a batch that keeps failing stores the failure and stops its projection.

use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyConnection;

use super::worker::Lead;
use super::{highest, now, ProjectorEngine, StepError};
use crate::log::{LogPosition, StoredEvent};
use crate::{Projection, ProjectionError, ProjectionStatus};

/// Attempts at a batch before the projection is declared failed.
const BATCH_ATTEMPTS: u32 = 3;

impl ProjectorEngine {
    /// Creates missing checkpoints; returns the read models whose version changed, for an
    /// online rebuild that keeps serving the previous version meanwhile (a reactor's checkpoint
    /// is reset instead: it has no tables, and its commands are idempotent).
    pub async fn prepare(&self) -> Result<Vec<Arc<dyn Projection>>, sqlx::Error> {
        let mut stale = Vec::new();
        for projection in self.projections() {
            if self
                .prepare_one(projection.as_ref(), projection.is_reactor())
                .await?
            {
                stale.push(projection);
            }
        }
        Ok(stale)
    }

    /// Creates the projection's checkpoint if missing. Whether its stored version differs from
    /// the projection's; with `reset`, such a projection is emptied to be replayed in place.
    pub(super) async fn prepare_one(
        &self,
        projection: &dyn Projection,
        reset: bool,
    ) -> Result<bool, sqlx::Error> {
        match self.stored_version(projection.name()).await? {
            Some(version) if version == projection.version() => Ok(false),
            Some(version) => {
                tracing::info!(
                    projection = projection.name(),
                    from = version,
                    to = projection.version(),
                    "projection version changed; rebuilding"
                );
                if reset {
                    self.reset(projection).await?;
                    return Ok(false);
                }
                Ok(true)
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
                Ok(false)
            }
        }
    }

    /// The version a projection's checkpoint carries, if it has one.
    pub(super) async fn stored_version(&self, name: &str) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT version FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.inner.db.pool)
            .await
    }

    /// Applies `events` (read after `checkpoint`, or after `lead` if given) in one transaction
    /// that also stores the checkpoint past them, retrying a failed batch; after the last attempt
    /// the failure is stored and the projection stops. Returns the number of events applied: 0 if
    /// someone else moved the checkpoint meanwhile.
    pub(super) async fn apply_with_retries(
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
    pub(super) async fn claim_and_apply(
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
}
