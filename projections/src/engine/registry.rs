//! Building the engine and the projections it runs, and the wake-ups that tell its workers the
//! log has grown.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::locks::LockSession;
use super::{Inner, ProjectorEngine};
use crate::{Db, Projection, Reads};

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
                rebuilding: std::sync::RwLock::default(),
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

    /// A receiver of wake-ups: it changes whenever the log has grown.
    pub fn wake_ups(&self) -> watch::Receiver<u64> {
        self.inner.wake.subscribe()
    }

    /// Tells the workers the log has grown.
    pub fn notify(&self) {
        self.inner.wake.send_modify(|n| *n = n.wrapping_add(1));
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

    /// The read models whose new version is being rebuilt behind their live tables (see
    /// [`ProjectorEngine::start`]).
    pub fn rebuilding(&self) -> Vec<&'static str> {
        self.inner.rebuilding.read().expect("lock poisoned").clone()
    }

    pub(super) fn set_rebuilding(&self, names: Vec<&'static str>) {
        *self.inner.rebuilding.write().expect("lock poisoned") = names;
    }

    /// The database the engine reads and writes.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Looks a projection up by name.
    pub fn projection(&self, name: &str) -> Option<Arc<dyn Projection>> {
        self.projections().into_iter().find(|p| p.name() == name)
    }
}
