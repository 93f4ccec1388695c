//! The saved answers of `Idempotency-Key` requests (SPEC §1.9): one row per credential (`scope`)
//! and key, reserved while the first request runs, then holding its answer for 24 hours. The
//! middleware that consults them is `http::idempotency`; the jobs purge old ones.

use chrono::{DateTime, Utc};
use projections::Db;

/// How long a key is remembered.
pub const RETENTION_HOURS: i64 = 24;

/// A request saved under a key: still running, or done with its answer.
#[derive(sqlx::FromRow)]
pub struct Saved {
    /// The HMAC of method, path and canonical body the key was first used with.
    pub request_hash: String,
    /// `in_progress` or `done`.
    pub state: String,
    pub status: Option<i64>,
    /// The first answer's request id.
    #[sqlx(rename = "headers")]
    pub request_id: Option<String>,
    pub body: Option<String>,
    /// The scopes the first run required, comma-separated.
    pub required_scopes: Option<String>,
}

impl Saved {
    /// Whether the first request has finished.
    pub fn is_done(&self) -> bool {
        self.state == "done"
    }

    /// The scopes the first run required.
    pub fn required(&self) -> impl Iterator<Item = &str> {
        let names = self.required_scopes.as_deref().unwrap_or("");
        names.split(',').filter(|n| !n.is_empty())
    }
}

/// One credential's key.
pub struct Record<'a> {
    pub db: &'a Db,
    pub scope: &'a str,
    pub key: &'a str,
}

impl Record<'_> {
    /// Reserves the key for a request with `request_hash` (a record past the retention is dropped
    /// first): `None` when this request holds it now, else the record that already does.
    pub async fn reserve(
        &self,
        request_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Saved>, sqlx::Error> {
        let expired = aggregates::timestamp::format(now - chrono::Duration::hours(RETENTION_HOURS));
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND created_at < $3",
        )
        .bind(self.scope)
        .bind(self.key)
        .bind(&expired)
        .execute(&self.db.pool)
        .await?;
        let reserved = sqlx::query(
            "INSERT INTO idempotency_keys (scope, idem_key, request_hash, state, created_at) \
             VALUES ($1, $2, $3, 'in_progress', $4) ON CONFLICT (scope, idem_key) DO NOTHING",
        )
        .bind(self.scope)
        .bind(self.key)
        .bind(request_hash)
        .bind(aggregates::timestamp::format(now))
        .execute(&self.db.pool)
        .await?;
        if reserved.rows_affected() == 1 {
            return Ok(None);
        }
        sqlx::query_as(
            "SELECT request_hash, state, status, headers, body, required_scopes \
             FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
        )
        .bind(self.scope)
        .bind(self.key)
        .fetch_one(&self.db.pool)
        .await
        .map(Some)
    }

    /// Saves the answer of the request that holds the key.
    pub async fn complete(
        &self,
        status: u16,
        request_id: Option<String>,
        body: &str,
        required: &[&str],
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'done', status = $1, headers = $2, body = $3, \
             required_scopes = $4 WHERE scope = $5 AND idem_key = $6",
        )
        .bind(i64::from(status))
        .bind(request_id)
        .bind(body)
        .bind(required.join(","))
        .bind(self.scope)
        .bind(self.key)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Frees the key: the request that held it ended with an answer that is not kept.
    pub async fn forget(&self) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2")
            .bind(self.scope)
            .bind(self.key)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }
}

/// Deletes records older than the retention (the jobs run it); returns how many.
pub async fn purge(db: &Db, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let expired = aggregates::timestamp::format(now - chrono::Duration::hours(RETENTION_HOURS));
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(expired)
        .execute(&db.pool)
        .await?;
    Ok(done.rows_affected())
}
