//! Limits a fleet shares: two instances allow the configured rate once between them, not twice,
//! and ten failed logins spread over both lock the address on both, through Redis and through the
//! database; instances that keep their limits in memory count alone (the control).

use ipto::config::LimitsStore;

use crate::helpers::*;

/// The Redis these tests use: `IPTO_TEST_REDIS_URL` (`.ci/run` sets it and starts the server).
fn redis_url() -> Option<String> {
    let url = std::env::var("IPTO_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("IPTO_TEST_REDIS_URL is not set: the Redis limits are not tested");
    }
    url
}

/// Two instances keeping their limits in `store`, allowing `auth_limit` logins per client IP a
/// minute. On PostgreSQL they share the database; on SQLite each has its own file, so that the
/// limits are all they share.
async fn pair(store: LimitsStore, redis: Option<&str>, auth_limit: u32) -> (TestApp, TestApp) {
    pair_with(store, redis, |config| {
        config.auth_rate_limit_per_minute = auth_limit;
    })
    .await
}

/// Two instances as [`pair`] makes them, with `adjust` applied to each one's settings.
async fn pair_with(
    store: LimitsStore,
    redis: Option<&str>,
    adjust: impl Fn(&mut ipto::Config),
) -> (TestApp, TestApp) {
    let fresh = fresh().await;
    let prefix = format!("ipto-test:{}:", uuid::Uuid::new_v4().simple());
    let settings = |dir: &str| {
        let mut config = config(&fresh);
        config.data_dir = fresh.data_dir.join(dir);
        if !on_postgres() {
            config.database_url = Some(format!(
                "sqlite://{}",
                config.data_dir.join("ipto.db").display()
            ));
        }
        config.limits = store;
        config.redis_url = redis.map(str::to_owned);
        config.redis_prefix = prefix.clone();
        adjust(&mut config);
        config
    };
    let a = spawn_with(settings("a")).await;
    let b = spawn_with(settings("b")).await;
    (a, b)
}

/// Logins alternating between `a` and `b`, each for a new address, until one is refused: how many
/// were answered.
async fn logins_until_refused(a: &TestApp, b: &TestApp, most: usize) -> usize {
    for n in 0..most {
        let app = if n % 2 == 0 { a } else { b };
        let answer = app.login(&email(), "not the password").await;
        if answer.status == 429 {
            assert_eq!(answer.code(), "rate_limited");
            assert!(answer.headers.contains_key("retry-after"));
            return n;
        }
        answer.expect(401);
    }
    most
}

/// Ten failed logins for one address, alternating between the instances, lock it on both, even
/// for the right password.
async fn failed_logins_lock_on_both(a: &TestApp, b: &TestApp) {
    let address = email();
    a.signup(&address).await;
    for n in 0..ipto::ratelimit::FAILED_LOGIN_LIMIT {
        let app = if n % 2 == 0 { a } else { b };
        app.login(&address, "wrong password!").await.expect(401);
    }
    for app in [a, b] {
        let locked = app.login(&address, PASSWORD).await.expect(429);
        assert_eq!(locked.code(), "rate_limited");
    }
    a.login(&email(), PASSWORD).await.expect(401);
}

/// The per-credential bucket: one token's requests over both instances (PostgreSQL: one log).
async fn a_credential_is_limited_once_across_instances(store: LimitsStore, redis: Option<&str>) {
    let (a, b) = pair_with(store, redis, |config| config.rate_limit_per_minute = 6).await;
    let (token, _, _) = a.signup(&email()).await;
    wait_for_user(&b, &token).await;
    let mut answered = 1; // the read above
    loop {
        let app = if answered % 2 == 0 { &a } else { &b };
        let answer = app.get("/v1/me", Some(&token)).await;
        if answer.status == 429 {
            break;
        }
        answer.expect(200);
        answered += 1;
        assert!(
            answered <= 6,
            "over the credential's limit across instances"
        );
    }
    assert_eq!(answered, 6);
    b.finish().await;
    a.finish().await;
}

/// Waits until `app` knows the session (its read model caught up), spending one request.
async fn wait_for_user(app: &TestApp, token: &str) {
    for _ in 0..100 {
        if app.get("/v1/me", Some(token)).await.status == 200 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the second instance never saw the session");
}

#[tokio::test]
async fn instances_keeping_limits_in_memory_count_alone() {
    let (a, b) = pair(LimitsStore::Memory, None, 4).await;
    assert_eq!(logins_until_refused(&a, &b, 12).await, 8);
    b.finish().await;
    a.finish().await;
}

#[tokio::test]
async fn through_redis_the_rate_and_the_lock_hold_across_instances() {
    let Some(redis) = redis_url() else { return };
    let (a, b) = pair(LimitsStore::Redis, Some(&redis), 4).await;
    assert_eq!(a.state.limits.store(), "redis");
    assert_eq!(logins_until_refused(&a, &b, 12).await, 4);
    b.finish().await;
    a.finish().await;
    let (a, b) = pair(LimitsStore::Redis, Some(&redis), 100).await;
    failed_logins_lock_on_both(&a, &b).await;
    b.finish().await;
    a.finish().await;
    if on_postgres() {
        a_credential_is_limited_once_across_instances(LimitsStore::Redis, Some(&redis)).await;
    }
}

#[tokio::test]
async fn through_the_database_the_rate_and_the_lock_hold_across_instances() {
    if !on_postgres() {
        return;
    }
    let (a, b) = pair(LimitsStore::Auto, None, 4).await;
    assert_eq!(a.state.limits.store(), "database");
    assert_eq!(logins_until_refused(&a, &b, 12).await, 4);
    b.finish().await;
    a.finish().await;
    let (a, b) = pair(LimitsStore::Database, None, 100).await;
    failed_logins_lock_on_both(&a, &b).await;
    b.finish().await;
    a.finish().await;
    a_credential_is_limited_once_across_instances(LimitsStore::Database, None).await;
}

#[tokio::test]
async fn concurrent_requests_through_the_shared_store_never_pass_the_limit() {
    let redis = redis_url();
    let store = match (&redis, on_postgres()) {
        (Some(_), _) => LimitsStore::Redis,
        (None, true) => LimitsStore::Database,
        (None, false) => return,
    };
    let (a, b) = pair(store, redis.as_deref(), 10).await;
    let attempts = (0..40).map(|n| {
        let app = if n % 2 == 0 { &a } else { &b };
        async move { app.login(&email(), "not the password").await.status }
    });
    let statuses = futures::future::join_all(attempts).await;
    let answered = statuses.iter().filter(|s| s.as_u16() == 401).count();
    let refused = statuses.iter().filter(|s| s.as_u16() == 429).count();
    assert_eq!((answered, refused), (10, 30), "{statuses:?}");
    b.finish().await;
    a.finish().await;
}

/// A login sent as if through a load balancer that forwards for `client`.
async fn login_from(app: &TestApp, client: &str) -> u16 {
    app.client
        .post(format!("{}/v1/auth/login", app.address))
        .header("x-forwarded-for", client)
        .json(&serde_json::json!({"email": email(), "password": "not the password"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn behind_a_trusted_balancer_each_forwarded_client_has_its_own_bucket() {
    let trusted = fresh().await;
    let mut settings = config(&trusted);
    settings.auth_rate_limit_per_minute = 2;
    settings.trusted_proxies = vec![ipto::config::parse_network("127.0.0.1").unwrap()];
    let app = spawn_with(settings).await;
    for client in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(login_from(&app, client).await, 401);
        assert_eq!(login_from(&app, client).await, 401);
        assert_eq!(login_from(&app, client).await, 429, "{client}");
    }
    // A client's own claim left of the balancer's entry is not believed.
    assert_eq!(login_from(&app, "203.0.113.5, 198.51.100.1").await, 429);
    app.finish().await;
    // Untrusted, the header is ignored: every "client" is the one peer.
    let untrusted = fresh().await;
    let mut settings = config(&untrusted);
    settings.auth_rate_limit_per_minute = 2;
    let app = spawn_with(settings).await;
    assert_eq!(login_from(&app, "198.51.100.1").await, 401);
    assert_eq!(login_from(&app, "198.51.100.2").await, 401);
    assert_eq!(login_from(&app, "198.51.100.3").await, 429);
    app.finish().await;
}

/// A shared store that fails while serving: requests are still answered (never 500), and the
/// instance goes on limiting alone, in memory.
#[tokio::test]
async fn when_the_shared_store_fails_the_instance_limits_alone() {
    if !on_postgres() {
        return;
    }
    let fresh = fresh().await;
    let mut settings = config(&fresh);
    settings.limits = LimitsStore::Database;
    settings.auth_rate_limit_per_minute = 2;
    let app = spawn_with(settings).await;
    // The shared counters become unreachable.
    sqlx::query("DROP TABLE rate_limit_buckets")
        .execute(&app.state.store.db.pool)
        .await
        .unwrap();
    app.login(&email(), "not the password").await.expect(401);
    app.login(&email(), "not the password").await.expect(401);
    let refused = app.login(&email(), "not the password").await.expect(429);
    assert_eq!(refused.code(), "rate_limited");
    app.finish().await;
}
