//! The limits a fleet shares: the request buckets (SPEC §1.10) and the failed-login lock, kept
//! where every instance reads and writes the same counters, so that N instances allow the
//! configured rate once, not N times.
//!
//! - **Redis** (`IPTO_REDIS_URL`): each decision is one Lua script, atomic on the server: GCRA on
//!   the server's own clock (`TIME`) for a bucket, a sorted set of failure times for an address.
//! - **The database** (PostgreSQL without Redis): the same GCRA as one conditional upsert on the
//!   database's clock, the failures as rows; both tables are operational state outside the log.
//! - **Memory** ([`RateLimiter`]): the single-instance embedded default, and the fallback when the
//!   shared store fails (a warning is logged; the instance then limits alone rather than answer
//!   500 or let everything through).
//!
//! The failed-login lock counts by the caller's clock (the application clock, which
//! `IPTO_CLOCK_OFFSET_SECONDS` shifts), so its fifteen minutes read the same on every store. The
//! per-client failure budget of credential checks ([`crate::http::auth_failures`]) stays per
//! instance: it saves lookups of tokens too long to guess, and needs no fleet-wide count.
//!
//! Addresses are never written in clear: their key is an HMAC under the fleet's signing key.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{Quota, RateLimiter, FAILED_LOGIN_LIMIT, FAILED_LOGIN_WINDOW};
use crate::signing::SigningKey;

/// Microseconds in a minute, the period of every bucket.
const MINUTE_MICROS: i64 = 60_000_000;

/// Where the shared counters live.
enum Shared {
    Redis(Redis),
    Database(Database),
}

/// Every limit of one instance.
pub struct Limits {
    /// This instance's memory: the whole of the embedded default, the credential-check budget on
    /// every store, and the fallback while a shared store fails.
    pub local: RateLimiter,
    shared: Option<Shared>,
    /// Keys the addresses of the failed-login lock.
    key: Option<SigningKey>,
    /// When the last fallback was logged (Unix seconds): once a minute, not on every request.
    warned_at: AtomicI64,
}

impl Default for Limits {
    fn default() -> Self {
        Self::memory()
    }
}

/// A shared store's failure (logged, then the instance limits alone).
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Setting(&'static str),
}

impl Limits {
    /// Limits kept in this instance's memory only.
    pub fn memory() -> Self {
        Self {
            local: RateLimiter::default(),
            shared: None,
            key: None,
            warned_at: AtomicI64::new(0),
        }
    }

    /// Limits kept in Redis at `url`, under keys starting with `prefix`.
    pub async fn redis(url: &str, prefix: &str, key: SigningKey) -> Result<Self, SharedError> {
        let client = redis::Client::open(url)?;
        let connection = client.get_connection_manager().await?;
        Ok(Self {
            local: RateLimiter::default(),
            shared: Some(Shared::Redis(Redis {
                connection,
                prefix: prefix.to_owned(),
                gcra: redis::Script::new(GCRA_SCRIPT),
                failed: redis::Script::new(LOGIN_FAILED_SCRIPT),
                locked: redis::Script::new(LOGIN_LOCKED_SCRIPT),
            })),
            key: Some(key),
            warned_at: AtomicI64::new(0),
        })
    }

    /// Limits kept in the PostgreSQL database of `pool` (its migrations made the tables).
    pub fn database(pool: PgPool, key: SigningKey) -> Self {
        Self {
            local: RateLimiter::default(),
            shared: Some(Shared::Database(Database {
                pool,
                pruned_at: AtomicI64::new(0),
            })),
            key: Some(key),
            warned_at: AtomicI64::new(0),
        }
    }

    /// Where the limits are kept: `memory`, `redis` or `database`.
    pub fn store(&self) -> &'static str {
        match self.shared {
            None => "memory",
            Some(Shared::Redis(_)) => "redis",
            Some(Shared::Database(_)) => "database",
        }
    }

    /// Takes one request from `bucket`, which holds `limit` requests and refills one every
    /// minute / `limit`.
    pub async fn take(&self, bucket: &str, limit: u32, now: DateTime<Utc>) -> Quota {
        let Some(shared) = self.shared.as_ref().filter(|_| limit > 0) else {
            return self.local.take(bucket, limit, now);
        };
        let bucket = format!("{limit}:{bucket}");
        let taken = match shared {
            Shared::Redis(redis) => redis.take(&bucket, limit).await,
            Shared::Database(db) => db.take(&bucket, limit).await,
        };
        taken.unwrap_or_else(|error| {
            self.fell_back("take", &error);
            self.local.take(&bucket, limit, now)
        })
    }

    /// Seconds until a login for this (normalised) e-mail is allowed again, if it is locked.
    pub async fn login_locked(&self, email: &str, now: DateTime<Utc>) -> Option<u64> {
        let (Some(shared), Some(key)) = (&self.shared, &self.key) else {
            return self.local.login_locked(email, now);
        };
        let address = address_key(key, email);
        let locked = match shared {
            Shared::Redis(redis) => redis.login_locked(&address, now).await,
            Shared::Database(db) => db.login_locked(&address, now).await,
        };
        locked.unwrap_or_else(|error| {
            self.fell_back("login_locked", &error);
            self.local.login_locked(email, now)
        })
    }

    /// Records a failed login for this (normalised) e-mail.
    pub async fn login_failed(&self, email: &str, now: DateTime<Utc>) {
        let (Some(shared), Some(key)) = (&self.shared, &self.key) else {
            return self.local.login_failed(email, now);
        };
        let address = address_key(key, email);
        let recorded = match shared {
            Shared::Redis(redis) => redis.login_failed(&address, now).await,
            Shared::Database(db) => db.login_failed(&address, now).await,
        };
        if let Err(error) = recorded {
            self.fell_back("login_failed", &error);
            self.local.login_failed(email, now);
        }
    }
}

impl Limits {
    /// Logs that the shared store failed, at most once a minute (an outage would otherwise log
    /// every request).
    fn fell_back(&self, operation: &str, error: &SharedError) {
        let now = chrono::Utc::now().timestamp();
        let last = self.warned_at.load(Ordering::Relaxed);
        if now - last >= 60
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(%error, operation, "shared limits unavailable: this instance limits alone");
        }
    }
}

/// The key of an address's failures: an HMAC, so that the shared store never holds the address.
fn address_key(key: &SigningKey, email: &str) -> String {
    key.hmac_hex(format!("login-failures:{email}").as_bytes())
}

/// A bucket's emission interval in microseconds: a minute shared by its `limit` requests.
fn interval(limit: u32) -> i64 {
    (MINUTE_MICROS / i64::from(limit)).max(1)
}

/// The quota of a GCRA decision: `ahead` is how far the bucket's theoretical arrival time lies
/// past now (µs) once this request is counted; over the burst, the request is refused.
fn decided(limit: u32, allowed: bool, ahead: i64) -> Quota {
    let interval = interval(limit);
    let burst = interval * i64::from(limit);
    let seconds = |micros: i64| (micros.max(0) as u64).div_ceil(1_000_000);
    if allowed {
        Quota {
            limit,
            remaining: ((burst - ahead).max(0) / interval).min(i64::from(limit)) as u32,
            reset: seconds(ahead),
            allowed: true,
        }
    } else {
        Quota {
            limit,
            remaining: 0,
            reset: seconds(ahead - burst).max(1),
            allowed: false,
        }
    }
}

/// Seconds until the oldest of the newest failures ages out (the lock's `Retry-After`).
fn locked_for(oldest_millis: i64, now: DateTime<Utc>) -> u64 {
    let ends = oldest_millis + FAILED_LOGIN_WINDOW * 1000;
    ((ends - now.timestamp_millis()) / 1000).max(1) as u64
}

/// GCRA on the server's clock. KEYS[1]: the bucket; ARGV[1]: the emission interval (µs);
/// ARGV[2]: the burst. Returns {allowed (0|1), how far the arrival time lies ahead (µs)}.
const GCRA_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local burst = interval * tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next = tat + interval
if next - now > burst then
  return {0, next - now}
end
redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.ceil((next - now) / 1000))
return {1, next - now}
";

/// Records a failure. KEYS[1]: the address's failures; ARGV: now (ms), the window (ms), the
/// failures that lock, a member unique to this failure.
const LOGIN_FAILED_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[3]) + 1))
redis.call('PEXPIRE', KEYS[1], window)
return 1
";

/// Whether an address is locked. KEYS[1]: its failures; ARGV: now (ms), the window (ms), the
/// failures that lock. Returns the oldest counted failure (ms) when locked, else -1.
const LOGIN_LOCKED_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then return -1 end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tonumber(oldest[2])
";

struct Redis {
    connection: redis::aio::ConnectionManager,
    prefix: String,
    gcra: redis::Script,
    failed: redis::Script,
    locked: redis::Script,
}

impl Redis {
    async fn take(&self, bucket: &str, limit: u32) -> Result<Quota, SharedError> {
        let (allowed, ahead): (i64, i64) = self
            .gcra
            .key(format!("{}rate:{bucket}", self.prefix))
            .arg(interval(limit))
            .arg(limit)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(decided(limit, allowed == 1, ahead))
    }

    fn failures_key(&self, address: &str) -> String {
        format!("{}login-failures:{address}", self.prefix)
    }

    async fn login_locked(
        &self,
        address: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, SharedError> {
        let oldest: i64 = self
            .locked
            .key(self.failures_key(address))
            .arg(now.timestamp_millis())
            .arg(FAILED_LOGIN_WINDOW * 1000)
            .arg(FAILED_LOGIN_LIMIT)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok((oldest >= 0).then(|| locked_for(oldest, now)))
    }

    async fn login_failed(&self, address: &str, now: DateTime<Utc>) -> Result<(), SharedError> {
        let _: i64 = self
            .failed
            .key(self.failures_key(address))
            .arg(now.timestamp_millis())
            .arg(FAILED_LOGIN_WINDOW * 1000)
            .arg(FAILED_LOGIN_LIMIT)
            .arg(uuid::Uuid::new_v4().to_string())
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }
}

struct Database {
    pool: PgPool,
    /// When aged rows were last deleted (Unix seconds), so that it happens once a minute.
    pruned_at: AtomicI64,
}

/// GCRA as one statement on the database's clock: the upsert counts the request only while the
/// arrival time stays within the burst (the row lock orders concurrent requests); the last column
/// is the arrival time before this request, which a refusal reports from.
const GCRA_SQL: &str = "
WITH clock AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS now),
counted AS (
    INSERT INTO rate_limit_buckets AS b (bucket, tat)
    SELECT $1, clock.now + $2 FROM clock
    ON CONFLICT (bucket) DO UPDATE SET tat = GREATEST(b.tat, (SELECT now FROM clock)) + $2
    WHERE GREATEST(b.tat, (SELECT now FROM clock)) + $2 - (SELECT now FROM clock) <= $3
    RETURNING b.tat
)
SELECT (SELECT now FROM clock), (SELECT tat FROM counted),
       (SELECT tat FROM rate_limit_buckets WHERE bucket = $1)";

impl Database {
    async fn take(&self, bucket: &str, limit: u32) -> Result<Quota, SharedError> {
        let interval = interval(limit);
        let (now, counted, before): (i64, Option<i64>, Option<i64>) = sqlx::query_as(GCRA_SQL)
            .bind(bucket)
            .bind(interval)
            .bind(interval * i64::from(limit))
            .fetch_one(&self.pool)
            .await?;
        self.prune(now);
        Ok(match counted {
            Some(tat) => decided(limit, true, tat - now),
            None => decided(
                limit,
                false,
                before.unwrap_or(now).max(now) + interval - now,
            ),
        })
    }

    /// Deletes buckets back to a whole burst and failures past the window, once a minute.
    fn prune(&self, now_micros: i64) {
        let now = now_micros / 1_000_000;
        let last = self.pruned_at.load(Ordering::Relaxed);
        if now - last < 60
            || self
                .pruned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // Off the request's path: the request that noticed the minute turn does not wait for it.
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let pruned = async {
                sqlx::query("DELETE FROM rate_limit_buckets WHERE tat < $1")
                    .bind(now_micros)
                    .execute(&pool)
                    .await?;
                sqlx::query("DELETE FROM login_failures WHERE failed_at <= $1")
                    .bind(now * 1000 - FAILED_LOGIN_WINDOW * 1000 * 2)
                    .execute(&pool)
                    .await
            };
            if let Err(error) = pruned.await {
                tracing::warn!(%error, "pruning the shared limits failed");
            }
        });
    }

    async fn login_locked(
        &self,
        address: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, SharedError> {
        let counted: Vec<(i64,)> = sqlx::query_as(
            "SELECT failed_at FROM login_failures WHERE address = $1 AND failed_at > $2
             ORDER BY failed_at DESC LIMIT $3",
        )
        .bind(address)
        .bind(now.timestamp_millis() - FAILED_LOGIN_WINDOW * 1000)
        .bind(FAILED_LOGIN_LIMIT as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok((counted.len() >= FAILED_LOGIN_LIMIT)
            .then(|| locked_for(counted.last().map_or(0, |row| row.0), now)))
    }

    async fn login_failed(&self, address: &str, now: DateTime<Utc>) -> Result<(), SharedError> {
        // The newest failures decide the lock; older ones and those past the window go.
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO login_failures (address, failed_at) VALUES ($1, $2)")
            .bind(address)
            .bind(now.timestamp_millis())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM login_failures WHERE address = $1 AND (failed_at <= $2 OR ctid NOT IN
             (SELECT ctid FROM login_failures WHERE address = $1 ORDER BY failed_at DESC LIMIT $3))",
        )
        .bind(address)
        .bind(now.timestamp_millis() - FAILED_LOGIN_WINDOW * 1000)
        .bind(FAILED_LOGIN_LIMIT as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_bucket_counts_one_request_of_its_burst() {
        let quota = decided(60, true, interval(60));
        assert_eq!((quota.remaining, quota.reset, quota.allowed), (59, 1, true));
    }

    #[test]
    fn a_full_bucket_is_refused_until_one_request_is_back() {
        // 60 a minute, all taken: the arrival time is a minute ahead, plus this request's second.
        let quota = decided(60, false, 61 * 1_000_000);
        assert_eq!((quota.remaining, quota.reset, quota.allowed), (0, 1, false));
        let quota = decided(2, false, 90 * 1_000_000);
        assert_eq!(quota.reset, 30);
    }

    #[test]
    fn a_lock_lasts_until_the_oldest_counted_failure_ages_out() {
        let now = DateTime::from_timestamp(10_000, 0).expect("valid");
        assert_eq!(locked_for(now.timestamp_millis() - 60_000, now), 840);
        assert_eq!(locked_for(now.timestamp_millis() - 900_000, now), 1);
    }
}
