//! Rate limits (SPEC §1.10): request buckets per credential and per client IP on the auth routes
//! (governor's GCRA: a burst of the per-minute limit, refilled evenly over the minute), failed
//! logins per e-mail over a rolling 15 minutes, and failed credential checks per client IP per
//! minute, kept in this instance's memory; [`shared`] keeps the buckets and the lock where a fleet
//! shares them.
//!
//! The failed-login lock and the credential-check budget stay hand-written: the lock holds until
//! the oldest of the last ten failures ages out (a sliding log, not a rate), and the budget counts
//! only checks that failed, which is known after the lookup it exists to save, while a GCRA cell
//! is taken by the same call that decides.
//!
//! The failed-login map is bounded whatever clients send: it is keyed by the SHA-256 of the
//! normalised address (32 bytes however long the address), keeps at most the newest
//! [`FAILED_LOGIN_LIMIT`] failures of an address, forgets addresses whose failures all aged out
//! (a sweep at most once a minute), and holds at most [`MAX_TRACKED_EMAILS`] addresses: when full,
//! those failed least recently are dropped, locked addresses last.

pub mod shared;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Duration, Utc};
use governor::clock::{Clock, MonotonicClock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use sha2::{Digest, Sha256};

/// Failed logins that lock an e-mail.
pub const FAILED_LOGIN_LIMIT: usize = 10;
/// Request buckets (credentials, client IPs) kept at most for each limit.
pub const MAX_BUCKETS: usize = 100_000;
/// How long a failed login counts.
pub const FAILED_LOGIN_WINDOW: i64 = 15 * 60;
/// The most e-mails whose failed logins are tracked at once.
pub const MAX_TRACKED_EMAILS: usize = 100_000;
/// The most client addresses whose failed credential checks are counted in one minute; past it
/// new addresses go uncounted until the minute turns (the limit fails open, as before it existed).
pub const MAX_TRACKED_CLIENTS: usize = 100_000;
/// How long a credential that passed its check may skip its client's failure budget.
pub const KNOWN_CREDENTIAL_SECONDS: i64 = 24 * 60 * 60;
/// The most credentials remembered as recently valid.
pub const MAX_KNOWN_CREDENTIALS: usize = 100_000;

/// The outcome of taking one request from a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket resets: when refused, until the next request is allowed (the
    /// `Retry-After`); otherwise until the whole burst is back.
    pub reset: u64,
    pub allowed: bool,
}

/// All buckets of one instance. The request buckets keep time by `C` (a monotonic clock; tests
/// advance a fake one), the failure maps by the caller's `now`.
pub struct RateLimiter<C: Clock = MonotonicClock> {
    clock: C,
    /// One GCRA limiter per distinct limit (in practice two: credentials and auth routes).
    buckets: RwLock<HashMap<u32, Arc<Buckets<C>>>>,
    failures: Mutex<FailedLogins>,
    credentials: Mutex<CredentialChecks>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::with_clock(MonotonicClock)
    }
}

/// The buckets of one limit: governor's keyed GCRA over [`Cells`].
struct Buckets<C: Clock> {
    gcra: governor::RateLimiter<String, Cells, C, StateInformationMiddleware>,
    /// When a full map was last pruned, so that it is pruned at most once a minute.
    pruned: Mutex<Option<C::Instant>>,
}

/// Each bucket's GCRA state (its theoretical arrival time), for at most [`MAX_BUCKETS`] buckets:
/// in a full map a new bucket is let through without being counted (the limit fails open) rather
/// than grow the map without bound, while the buckets already in it keep counting.
#[derive(Default)]
struct Cells(Mutex<HashMap<String, Nanos>>);

impl StateStore for Cells {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut cells = self.0.lock().expect("lock");
        if let Some(tat) = cells.get_mut(key) {
            let (outcome, next) = f(Some(*tat))?;
            *tat = next;
            return Ok(outcome);
        }
        let (outcome, next) = f(None)?;
        if cells.len() < MAX_BUCKETS {
            cells.insert(key.clone(), next);
        }
        Ok(outcome)
    }
}

impl ShrinkableKeyedStateStore<String> for Cells {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0
            .lock()
            .expect("lock")
            .retain(|_, tat| *tat > drop_below);
    }

    fn len(&self) -> usize {
        self.0.lock().expect("lock").len()
    }

    fn is_empty(&self) -> bool {
        self.0.lock().expect("lock").is_empty()
    }
}

/// Whole seconds, rounded up.
fn seconds(duration: std::time::Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// A MAC of a credential (the caller's keyed hash of the token), never the token itself.
pub type CredentialId = [u8; 32];

/// Failed credential checks per client in the current minute, and the credentials that passed.
#[derive(Default)]
struct CredentialChecks {
    minute: i64,
    failures: HashMap<IpAddr, u32>,
    /// When each credential last passed its check.
    valid: HashMap<CredentialId, DateTime<Utc>>,
    valid_swept_at: Option<DateTime<Utc>>,
}

impl CredentialChecks {
    /// Starts a new window when the minute turned.
    fn turn(&mut self, now: DateTime<Utc>) {
        let minute = now.timestamp().div_euclid(60);
        if self.minute != minute {
            self.minute = minute;
            self.failures.clear();
        }
    }

    fn recently_valid(&self, credential: &CredentialId, now: DateTime<Utc>) -> bool {
        self.valid
            .get(credential)
            .is_some_and(|at| now - *at < Duration::seconds(KNOWN_CREDENTIAL_SECONDS))
    }
}

/// The client a failure budget belongs to: the IPv4 address, or the /64 of an IPv6 one (the
/// smallest block a site is usually given, so that walking its addresses gains nothing).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// SHA-256 of a normalised e-mail.
type EmailKey = [u8; 32];

/// Recent failed logins per e-mail, oldest first.
#[derive(Default)]
struct FailedLogins {
    by_email: HashMap<EmailKey, VecDeque<DateTime<Utc>>>,
    swept_at: Option<DateTime<Utc>>,
}

fn window() -> Duration {
    Duration::seconds(FAILED_LOGIN_WINDOW)
}

impl FailedLogins {
    /// Drops failures that aged out, and addresses left with none.
    fn sweep(&mut self, now: DateTime<Utc>) {
        self.by_email.retain(|_, list| {
            list.retain(|t| now - *t < window());
            !list.is_empty()
        });
        self.swept_at = Some(now);
    }

    /// Makes room in a full map: aged entries go first, then, down to three quarters of the cap,
    /// the addresses that failed least recently (unlocked ones before locked ones). Filling the
    /// map again takes a quarter of the cap in distinct failures, and rarely frees a locked
    /// address.
    fn make_room(&mut self, now: DateTime<Utc>) {
        self.sweep(now);
        let keep = MAX_TRACKED_EMAILS / 4 * 3;
        if self.by_email.len() <= keep {
            return;
        }
        let mut order: Vec<(bool, DateTime<Utc>, EmailKey)> = self
            .by_email
            .iter()
            .filter_map(|(key, list)| Some((list.len() >= FAILED_LOGIN_LIMIT, *list.back()?, *key)))
            .collect();
        let evict = order.len() - keep;
        order.select_nth_unstable(evict);
        for (_, _, key) in &order[..evict] {
            self.by_email.remove(key);
        }
    }
}

fn email_key(email: &str) -> EmailKey {
    Sha256::digest(email.as_bytes()).into()
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// Request buckets timed by `clock`.
    pub fn with_clock(clock: C) -> Self {
        Self {
            clock,
            buckets: RwLock::default(),
            failures: Mutex::default(),
            credentials: Mutex::default(),
        }
    }

    /// Takes one request from `bucket`, which holds `limit` requests and refills one every
    /// minute / `limit`. `_now` is not read: the buckets keep their own monotonic time.
    pub fn take(&self, bucket: &str, limit: u32, _now: DateTime<Utc>) -> Quota {
        let Some(burst) = NonZeroU32::new(limit) else {
            return Quota {
                limit,
                remaining: 0,
                reset: 60,
                allowed: false,
            };
        };
        let buckets = self.buckets(burst);
        if buckets.gcra.len() >= MAX_BUCKETS {
            self.prune(&buckets);
        }
        match buckets.gcra.check_key(&bucket.to_owned()) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let refill = state.quota().replenish_interval();
                Quota {
                    limit,
                    remaining,
                    reset: seconds(refill * (limit - remaining)),
                    allowed: true,
                }
            }
            Err(refused) => Quota {
                limit,
                remaining: 0,
                reset: seconds(refused.wait_time_from(self.clock.now())).max(1),
                allowed: false,
            },
        }
    }

    /// The buckets of `limit`, made on first use.
    fn buckets(&self, limit: NonZeroU32) -> Arc<Buckets<C>> {
        if let Some(buckets) = self.buckets.read().expect("lock").get(&limit.get()) {
            return buckets.clone();
        }
        let mut all = self.buckets.write().expect("lock");
        all.entry(limit.get())
            .or_insert_with(|| {
                let quota = governor::Quota::per_minute(limit);
                Arc::new(Buckets {
                    gcra: governor::RateLimiter::new(quota, Cells::default(), self.clock.clone()),
                    pruned: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Forgets the buckets of a full map that are back to a whole burst (as good as new), at
    /// most once a minute.
    fn prune(&self, buckets: &Buckets<C>) {
        let now = self.clock.now();
        let mut pruned = buckets.pruned.lock().expect("lock");
        let minute = Nanos::from(std::time::Duration::from_secs(60));
        if pruned.is_none_or(|at| now.duration_since(at) >= minute) {
            *pruned = Some(now);
            buckets.gcra.retain_recent();
        }
    }

    /// Seconds until a login for this (normalised) e-mail is allowed again, if it is locked.
    pub fn login_locked(&self, email: &str, now: DateTime<Utc>) -> Option<u64> {
        let mut failures = self.failures.lock().expect("lock");
        let list = failures.by_email.get_mut(&email_key(email))?;
        while list.front().is_some_and(|t| now - *t >= window()) {
            list.pop_front();
        }
        (list.len() >= FAILED_LOGIN_LIMIT).then(|| {
            let oldest = *list.front().expect("non-empty");
            (window() - (now - oldest)).num_seconds().max(1) as u64
        })
    }

    /// Records a failed login for this (normalised) e-mail.
    pub fn login_failed(&self, email: &str, now: DateTime<Utc>) {
        let mut failures = self.failures.lock().expect("lock");
        if failures
            .swept_at
            .is_none_or(|at| now - at >= Duration::minutes(1))
        {
            failures.sweep(now);
        }
        let key = email_key(email);
        if !failures.by_email.contains_key(&key) && failures.by_email.len() >= MAX_TRACKED_EMAILS {
            failures.make_room(now);
        }
        let list = failures.by_email.entry(key).or_default();
        list.push_back(now);
        // The newest ten decide the lock: while they all lie within the window it holds.
        while list.len() > FAILED_LOGIN_LIMIT {
            list.pop_front();
        }
    }

    /// Whether a credential check from `client` may run: `Err(retry_after)` once the client had
    /// `limit` failed checks this minute, unless `credential` passed its check within
    /// [`KNOWN_CREDENTIAL_SECONDS`] (so that an attacker sharing the address cannot lock out
    /// credentials in use there; the check itself still runs, revocation takes effect at once).
    pub fn credential_check(
        &self,
        client: IpAddr,
        credential: &CredentialId,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<(), u64> {
        let mut checks = self.credentials.lock().expect("lock");
        checks.turn(now);
        let failed = checks
            .failures
            .get(&client_key(client))
            .copied()
            .unwrap_or(0);
        if failed < limit || checks.recently_valid(credential, now) {
            Ok(())
        } else {
            Err((60 - now.timestamp().rem_euclid(60)) as u64)
        }
    }

    /// Records the outcome of a credential check from `client`: a failure counts against the
    /// client's budget and forgets the credential as valid; a success remembers it.
    pub fn credential_checked(
        &self,
        client: IpAddr,
        credential: &CredentialId,
        valid: bool,
        now: DateTime<Utc>,
    ) {
        let mut checks = self.credentials.lock().expect("lock");
        if !valid {
            checks.turn(now);
            checks.valid.remove(credential);
            let key = client_key(client);
            if checks.failures.len() < MAX_TRACKED_CLIENTS || checks.failures.contains_key(&key) {
                let failed = checks.failures.entry(key).or_default();
                *failed = failed.saturating_add(1);
            }
            return;
        }
        let ttl = Duration::seconds(KNOWN_CREDENTIAL_SECONDS);
        if checks
            .valid_swept_at
            .is_none_or(|at| now - at >= Duration::minutes(1))
        {
            checks.valid.retain(|_, at| now - *at < ttl);
            checks.valid_swept_at = Some(now);
        }
        if checks.valid.len() >= MAX_KNOWN_CREDENTIALS && !checks.valid.contains_key(credential) {
            // Full of credentials used within the day: forget the quarter used least recently.
            let mut order: Vec<(DateTime<Utc>, CredentialId)> =
                checks.valid.iter().map(|(id, at)| (*at, *id)).collect();
            let evict = MAX_KNOWN_CREDENTIALS / 4;
            order.select_nth_unstable(evict);
            for (_, id) in &order[..evict] {
                checks.valid.remove(id);
            }
        }
        checks.valid.insert(*credential, now);
    }

    /// What the credential-check maps hold: clients counted this minute and credentials
    /// remembered as valid.
    pub fn credential_footprint(&self) -> (usize, usize) {
        let checks = self.credentials.lock().expect("lock");
        (checks.failures.len(), checks.valid.len())
    }

    /// What the failed-login map holds: tracked e-mails and the bytes they take (keys and
    /// timestamps, without the map's own table).
    pub fn failed_login_footprint(&self) -> (usize, usize) {
        let failures = self.failures.lock().expect("lock");
        let bytes = failures
            .by_email
            .iter()
            .map(|(key, list)| {
                std::mem::size_of_val(key)
                    + std::mem::size_of_val(list)
                    + list.capacity() * std::mem::size_of::<DateTime<Utc>>()
            })
            .sum();
        (failures.by_email.len(), bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn fake() -> (FakeRelativeClock, RateLimiter<FakeRelativeClock>) {
        let clock = FakeRelativeClock::default();
        (clock.clone(), RateLimiter::with_clock(clock))
    }

    #[test]
    fn a_bucket_allows_a_burst_of_its_limit_then_one_request_per_refill() {
        let (clock, limiter) = fake();
        let first = limiter.take("k", 3, at(0));
        assert_eq!((first.allowed, first.remaining, first.reset), (true, 2, 20));
        assert!((0..2).all(|_| limiter.take("k", 3, at(0)).allowed));
        clock.advance(StdDuration::from_secs(10));
        let refused = limiter.take("k", 3, at(10));
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(
            refused.reset, 10,
            "one request is back 20 s after the burst"
        );
        assert!(limiter.take("other", 3, at(10)).allowed);
        clock.advance(StdDuration::from_secs(10));
        let again = limiter.take("k", 3, at(20));
        assert_eq!((again.allowed, again.remaining), (true, 0));
        assert!(!limiter.take("k", 3, at(20)).allowed);
        clock.advance(StdDuration::from_secs(60));
        assert_eq!(limiter.take("k", 3, at(80)).remaining, 2, "a whole burst");
    }

    #[test]
    fn each_limit_has_its_own_buckets_and_a_zero_limit_refuses() {
        let (_, limiter) = fake();
        assert!(limiter.take("k", 1, at(0)).allowed);
        assert!(!limiter.take("k", 1, at(0)).allowed);
        assert!(limiter.take("k", 2, at(0)).allowed);
        let none = limiter.take("k", 0, at(0));
        assert!(!none.allowed && none.reset > 0);
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

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn failed_credential_checks_exhaust_the_clients_budget_until_the_minute_turns() {
        let limiter = RateLimiter::default();
        let (client, bogus) = (ip("192.0.2.1"), [1; 32]);
        for _ in 0..3 {
            assert_eq!(limiter.credential_check(client, &bogus, 3, at(0)), Ok(()));
            limiter.credential_checked(client, &bogus, false, at(0));
        }
        assert_eq!(limiter.credential_check(client, &bogus, 3, at(15)), Err(45));
        assert_eq!(
            limiter.credential_check(ip("192.0.2.2"), &bogus, 3, at(15)),
            Ok(()),
            "another client has its own budget"
        );
        assert_eq!(limiter.credential_check(client, &bogus, 3, at(60)), Ok(()));
    }

    #[test]
    fn a_recently_valid_credential_skips_an_exhausted_budget_until_it_fails_or_ages() {
        let limiter = RateLimiter::default();
        let (client, good, bogus) = (ip("192.0.2.1"), [1; 32], [2; 32]);
        limiter.credential_checked(client, &good, true, at(0));
        for _ in 0..3 {
            limiter.credential_checked(client, &bogus, false, at(1));
        }
        assert!(limiter.credential_check(client, &bogus, 3, at(2)).is_err());
        assert_eq!(limiter.credential_check(client, &good, 3, at(2)), Ok(()));
        let later = at(KNOWN_CREDENTIAL_SECONDS);
        for _ in 0..3 {
            limiter.credential_checked(client, &bogus, false, later);
        }
        assert!(
            limiter.credential_check(client, &good, 3, later).is_err(),
            "aged"
        );
        limiter.credential_checked(client, &good, true, later);
        assert_eq!(limiter.credential_check(client, &good, 3, later), Ok(()));
        limiter.credential_checked(client, &good, false, later);
        assert!(
            limiter.credential_check(client, &good, 3, later).is_err(),
            "revoked"
        );
    }

    #[test]
    fn an_ipv6_site_shares_one_budget_and_ipv4_mapped_addresses_count_as_ipv4() {
        let limiter = RateLimiter::default();
        for host in 1..=3 {
            limiter.credential_checked(
                ip(&format!("2001:db8:0:1::{host}")),
                &[0; 32],
                false,
                at(0),
            );
        }
        assert!(limiter
            .credential_check(ip("2001:db8:0:1:ffff::9"), &[0; 32], 3, at(0))
            .is_err());
        assert!(limiter
            .credential_check(ip("2001:db8:0:2::1"), &[0; 32], 3, at(0))
            .is_ok());
        for _ in 0..3 {
            limiter.credential_checked(ip("::ffff:192.0.2.7"), &[0; 32], false, at(0));
        }
        assert!(limiter
            .credential_check(ip("192.0.2.7"), &[0; 32], 3, at(0))
            .is_err());
    }

    #[test]
    fn the_credential_maps_stay_within_their_caps() {
        let limiter = RateLimiter::default();
        for n in 0..(MAX_TRACKED_CLIENTS as u32 + 10_000) {
            let client = IpAddr::from(n.to_be_bytes());
            let mut credential = [0; 32];
            credential[..4].copy_from_slice(&n.to_be_bytes());
            limiter.credential_checked(client, &credential, false, at(0));
            limiter.credential_checked(client, &credential, true, at(0));
        }
        let (clients, credentials) = limiter.credential_footprint();
        assert_eq!(clients, MAX_TRACKED_CLIENTS);
        assert!(credentials <= MAX_KNOWN_CREDENTIALS, "{credentials}");
        limiter.credential_checked(ip("192.0.2.1"), &[9; 32], false, at(60));
        assert_eq!(
            limiter.credential_footprint().0,
            1,
            "a new minute starts empty"
        );
    }

    /// 10,000 failed logins, each for a different address of at least `length` bytes.
    fn flood(limiter: &RateLimiter, at: DateTime<Utc>, length: usize, tag: &str) {
        let padding = "a".repeat(length);
        for i in 0..10_000 {
            limiter.login_failed(&format!("{padding}{tag}{i}@x.y"), at);
        }
    }

    #[test]
    fn failed_logins_of_long_addresses_take_a_fixed_size_each() {
        let limiter = RateLimiter::default();
        // The attack sent megabytes; 10 kB show the point.
        flood(&limiter, at(0), 10_000, "");
        let (entries, bytes) = limiter.failed_login_footprint();
        assert_eq!(entries, 10_000);
        assert!(bytes <= 10_000 * 128, "{bytes} bytes for {entries} entries");
    }

    #[test]
    fn failed_logins_are_forgotten_once_they_age_out() {
        let limiter = RateLimiter::default();
        flood(&limiter, at(0), 10, "");
        limiter.login_failed("late@x.y", at(FAILED_LOGIN_WINDOW));
        assert_eq!(limiter.failed_login_footprint().0, 1);
        assert_eq!(
            limiter.login_locked("late@x.y", at(FAILED_LOGIN_WINDOW)),
            None
        );
    }

    #[test]
    fn fresh_failures_beyond_the_cap_evict_others_but_keep_locked_addresses_locked() {
        let limiter = RateLimiter::default();
        for i in 0..FAILED_LOGIN_LIMIT as i64 {
            limiter.login_failed("victim@x.y", at(i));
        }
        for round in 0..(MAX_TRACKED_EMAILS / 10_000 + 2) {
            flood(&limiter, at(60), 10, &format!("r{round}-"));
            assert!(limiter.failed_login_footprint().0 <= MAX_TRACKED_EMAILS);
        }
        assert!(limiter.login_locked("victim@x.y", at(60)).is_some());
    }

    #[test]
    fn request_buckets_stay_within_their_cap() {
        let (clock, limiter) = fake();
        let count = |limiter: &RateLimiter<FakeRelativeClock>| {
            limiter.buckets(NonZeroU32::new(5).unwrap()).gcra.len()
        };
        for i in 0..MAX_BUCKETS + 10 {
            assert!(limiter.take(&format!("ip:{i}"), 5, at(0)).allowed);
        }
        assert_eq!(count(&limiter), MAX_BUCKETS);
        // Known buckets keep counting; once the old ones have refilled they make room.
        assert!((0..4).all(|_| limiter.take("ip:0", 5, at(1)).allowed));
        assert!(!limiter.take("ip:0", 5, at(1)).allowed);
        clock.advance(StdDuration::from_secs(120));
        assert!(limiter.take("ip:new", 5, at(120)).allowed);
        assert_eq!(count(&limiter), 1);
    }
}
