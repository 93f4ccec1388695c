//! The read side's handle on the database: one `sqlx::Any` pool for both dialects, so read models
//! are written once. Queries use `$n` parameters, which SQLite and PostgreSQL both accept.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::{Any, AnyConnection, AnyPool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// Which SQL database holds the log and the read models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded default: one file, one writer at a time.
    Sqlite,
    /// The shared store for several instances.
    Postgres,
}

impl Dialect {
    /// The name reported by `/health` and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

/// A pool and its dialect.
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    pub dialect: Dialect,
    /// SQLite admits one writer at a time; a writer that finds the file locked sleeps in SQLite's
    /// busy handler (1, 2, 5, 10, 15 … ms), and a dozen writers woken by one commit (the command
    /// and every projection worker) spend most of their time asleep. Writers of this process
    /// take turns here instead, in arrival order; the busy handler remains for other processes.
    writers: Arc<Mutex<()>>,
    /// A shadow's handle (see `engine/online.rs`): its writes go to temporary tables of its one
    /// connection and only read the shared ones, so they take no writer turn and, on SQLite, no
    /// write lock on the file (a deferred `BEGIN`).
    shadow: bool,
}

/// A write transaction; on SQLite it also holds this process's writer turn until it ends.
/// Dereferences to the connection, like [`Transaction`].
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// Commits, then gives the turn to the next writer.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Rolls back, then gives the turn to the next writer.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl Db {
    /// A handle on `pool`.
    pub fn new(pool: AnyPool, dialect: Dialect) -> Self {
        Self {
            pool,
            dialect,
            writers: Arc::default(),
            shadow: false,
        }
    }

    /// A handle on a shadow's pool: writes that touch only its connection's temporary tables.
    pub fn shadow(pool: AnyPool, dialect: Dialect) -> Self {
        Self {
            shadow: true,
            ..Self::new(pool, dialect)
        }
    }

    /// Waits for this process's writer turn on SQLite (`None` on PostgreSQL, whose writers do not
    /// exclude each other). Hold it across a write transaction made outside [`Db::begin_write`],
    /// such as the event store's commit.
    pub async fn write_turn(&self) -> Option<OwnedMutexGuard<()>> {
        match self.dialect {
            Dialect::Sqlite if !self.shadow => Some(self.writers.clone().lock_owned().await),
            Dialect::Sqlite | Dialect::Postgres => None,
        }
    }

    /// Begins a transaction that will write. On SQLite it takes the writer turn and then the write
    /// lock up front (`BEGIN IMMEDIATE`), so a read inside it can never fail later with a stale
    /// snapshot.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = self.write_turn().await;
        let tx = match self.dialect {
            Dialect::Sqlite if !self.shadow => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Sqlite | Dialect::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _turn: turn })
    }
}
