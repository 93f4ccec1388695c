//! One active worker per projection across instances on PostgreSQL: a session of advisory locks.

use sqlx::AnyConnection;

use crate::Db;

/// One connection, detached from the pool, holds this instance's session-level advisory locks (one
/// per projection it applies). Closing it frees them all; the generation tells workers their lock
/// went with it.
#[derive(Default)]
pub(super) struct LockSession {
    inner: tokio::sync::Mutex<(u64, Option<AnyConnection>)>,
    generation: std::sync::atomic::AtomicU64,
}

impl LockSession {
    /// Takes the projection's lock; `Some(generation)` when held.
    pub(super) async fn try_lock(&self, db: &Db, name: &str) -> Option<u64> {
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
    pub(super) fn is_current(&self, generation: u64) -> bool {
        self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation
    }

    /// Closes the session, freeing every lock.
    pub(super) async fn reset(&self) {
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
