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
//!
//! A read model implements [`Projection`] (`engine/projection.rs`). The engine itself is one file
//! per concern: `worker` (the live workers and their steps), `checkpoints` (claiming a batch,
//! storing a failure), `rebuild` (reset, rebuild, catch-up), `online` (blue/green rebuilds behind the live tables), `status` (checkpoints as reported,
//! waits for read-your-writes), `locks` (PostgreSQL's advisory locks) and `registry` (building the
//! engine, registering projections, wake-ups).

mod projection;

mod checkpoints;
mod locks;
mod online;
mod rebuild;
mod registry;
mod status;
mod worker;

pub use online::{RebuildPhase, RebuildProgress};
pub use projection::{Projection, ProjectionError, Reads};
pub use rebuild::RebuildError;
pub use status::ProjectionStatus;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::log::StoredEvent;
use crate::Db;
use locks::LockSession;
use status::Progress;
use worker::{Lead, SharedRead};

/// Runs the workers and answers questions about their progress.
#[derive(Clone)]
pub struct ProjectorEngine {
    inner: Arc<Inner>,
}

/// What the engine's clones share.
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
    /// Read models whose new version is being rebuilt behind their live tables.
    rebuilding: std::sync::RwLock<Vec<&'static str>>,
    /// The last read of the log by a live worker, shared with workers at the same cursor.
    last_read: tokio::sync::Mutex<Option<SharedRead>>,
}

/// The highest global position in `events` (0 if none).
fn highest(events: &[StoredEvent]) -> i64 {
    events.iter().map(|e| e.cursor.position).max().unwrap_or(0)
}

/// Why a step applied nothing more: its projection has stopped, or the database failed.
enum StepError {
    /// The projection's handler failed; the failure is stored and the projection stopped.
    Stopped,
    /// The database failed.
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StepError {
    fn from(e: sqlx::Error) -> Self {
        StepError::Database(e)
    }
}

/// The time stored with a checkpoint.
fn now() -> String {
    aggregates::timestamp::format(chrono::Utc::now())
}
