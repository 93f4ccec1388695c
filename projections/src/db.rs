//! The read side's handle on the database: one `sqlx::Any` pool for both dialects, so read models
//! are written once. Queries use `$n` parameters, which SQLite and PostgreSQL both accept.

use sqlx::AnyPool;
use sqlx::{Any, Transaction};

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
}

impl Db {
    /// Begins a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so a read inside it can never fail later with a stale snapshot.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool.begin().await,
        }
    }
}
