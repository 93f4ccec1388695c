//! What a read model implements: the [`Projection`] trait, the [`Reads`] that say which events it
//! is handed, and the [`ProjectionError`] its handler returns.

use async_trait::async_trait;
use sqlx::AnyConnection;

use crate::log::StoredEvent;

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

/// Which events a projection reads. The engine hands it only those: a batch holding none of them
/// costs the projection no call and, in a live worker, no write (see
/// [`ProjectorEngine`](super::ProjectorEngine)), and a request waits for read-your-writes only on
/// the projections that read what it wrote.
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
    pub(super) fn any_of(self, aggregate_types: Option<&[&str]>) -> bool {
        aggregate_types.is_none_or(|types| types.iter().any(|t| self.aggregate(t)))
    }
}

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
