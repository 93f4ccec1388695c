//! Rate limits (SPEC §1.10): a fixed one-minute window per credential and per client IP on the
//! auth routes, and failed logins per e-mail over a rolling 15 minutes. Counters live in memory, per
//! instance.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// Failed logins that lock an e-mail.
pub const FAILED_LOGIN_LIMIT: usize = 10;
/// How long a failed login counts.
pub const FAILED_LOGIN_WINDOW: i64 = 15 * 60;

/// The outcome of taking one request from a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window resets.
    pub reset: u64,
    pub allowed: bool,
}

/// All buckets of one instance.
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, (i64, u32)>>,
    failures: Mutex<HashMap<String, VecDeque<DateTime<Utc>>>>,
}

impl RateLimiter {
    /// Takes one request from `bucket` (a fixed window per UTC minute).
    pub fn take(&self, bucket: &str, limit: u32, now: DateTime<Utc>) -> Quota {
        let minute = now.timestamp().div_euclid(60);
        let reset = (60 - now.timestamp().rem_euclid(60)) as u64;
        let mut windows = self.windows.lock().expect("lock");
        if windows.len() > 100_000 {
            windows.retain(|_, (m, _)| *m == minute);
        }
        let entry = windows.entry(bucket.to_owned()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        let allowed = entry.1 < limit;
        if allowed {
            entry.1 += 1;
        }
        Quota {
            limit,
            remaining: limit.saturating_sub(entry.1),
            reset,
            allowed,
        }
    }

    /// Seconds until a login for this e-mail is allowed again, if it is locked.
    pub fn login_locked(&self, email: &str, now: DateTime<Utc>) -> Option<u64> {
        let mut failures = self.failures.lock().expect("lock");
        let list = failures.get_mut(email)?;
        while list
            .front()
            .is_some_and(|t| now - *t >= Duration::seconds(FAILED_LOGIN_WINDOW))
        {
            list.pop_front();
        }
        (list.len() >= FAILED_LOGIN_LIMIT).then(|| {
            let oldest = *list.front().expect("non-empty");
            (Duration::seconds(FAILED_LOGIN_WINDOW) - (now - oldest))
                .num_seconds()
                .max(1) as u64
        })
    }

    /// Records a failed login for this e-mail.
    pub fn login_failed(&self, email: &str, now: DateTime<Utc>) {
        self.failures
            .lock()
            .expect("lock")
            .entry(email.to_owned())
            .or_default()
            .push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn a_window_allows_its_limit_then_resets() {
        let limiter = RateLimiter::default();
        assert!((0..3).all(|_| limiter.take("k", 3, at(0)).allowed));
        let refused = limiter.take("k", 3, at(10));
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset, 50);
        assert!(limiter.take("other", 3, at(10)).allowed);
        assert!(limiter.take("k", 3, at(60)).allowed);
    }

    #[test]
    fn ten_failures_lock_an_email_until_the_oldest_ages_out() {
        let limiter = RateLimiter::default();
        for i in 0..10 {
            assert_eq!(limiter.login_locked("a@x.y", at(i)), None);
            limiter.login_failed("a@x.y", at(i));
        }
        assert_eq!(limiter.login_locked("a@x.y", at(100)), Some(800));
        assert_eq!(limiter.login_locked("a@x.y", at(900)), None);
    }
}
