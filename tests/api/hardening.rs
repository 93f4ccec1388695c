//! Hardening against probes by an attacker: the bootstrap admin cannot be taken over by signing
//! up first, failed logins and failed credentials are bounded and throttled, signed downloads
//! honour any `Range`, the signing key has a minimum length, and the event log refuses TRUNCATE.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::ipto;
use crate::helpers::*;

const ROOT: &str = "root@example.com";
const ROOT_PASSWORD: &str = "bootstrap password";

/// Runs the binary until it exits; a server that keeps running is killed and reported as `None`.
fn exit_of(mut command: std::process::Command) -> Option<Output> {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

async fn platform_admin_grants(state: &ipto::AppState) -> String {
    table(
        state,
        "SELECT COUNT(*) FROM events WHERE event_type = 'PlatformAdminGranted'",
    )
    .await[0][0]
        .clone()
}

/// Someone signs up first with the bootstrap address: start-up refuses rather than promote them,
/// whether the configured password is wrong or missing, in the library and in the binary.
#[tokio::test]
async fn a_bootstrap_email_taken_by_a_stranger_stops_start_up_and_promotes_no_one() {
    let fresh = fresh().await;
    let app = spawn_with(config(&fresh)).await;
    let (stranger, _, _) = app.signup(ROOT).await;
    app.stop().await;

    for password in [Some(ROOT_PASSWORD), None] {
        let mut bootstrap = config(&fresh);
        bootstrap.bootstrap_admin_email = Some(ROOT.into());
        bootstrap.bootstrap_admin_password = password.map(str::to_owned);
        let refused = ipto::Application::build(bootstrap)
            .await
            .err()
            .expect("start-up refuses");
        let message = refused.to_string();
        assert!(
            message.contains("IPTO_BOOTSTRAP_ADMIN_EMAIL")
                && message.contains("not a platform admin"),
            "{message}"
        );
    }

    let mut serve = ipto(&fresh, &["serve"]);
    serve
        .env("IPTO_BIND", "127.0.0.1:0")
        .env("IPTO_BOOTSTRAP_ADMIN_EMAIL", ROOT)
        .env("IPTO_BOOTSTRAP_ADMIN_PASSWORD", ROOT_PASSWORD);
    let output = exit_of(serve).expect("the server refuses to start");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a platform admin"), "{stderr}");
    assert!(!stderr.contains(ROOT_PASSWORD), "{stderr}");

    let app = spawn_with(config(&fresh)).await;
    assert_eq!(platform_admin_grants(&app.state).await, "0");
    let me = app.get("/v1/me", Some(&stranger)).await.expect(200);
    assert_eq!(me.data()["is_platform_admin"], false);
    app.finish().await;
}

/// An account that signed up with the configured password is the operator's: it is promoted.
#[tokio::test]
async fn an_existing_account_with_the_configured_password_is_promoted() {
    let fresh = fresh().await;
    let app = spawn_with(config(&fresh)).await;
    app.post(
        "/v1/auth/signup",
        None,
        json!({"email": ROOT, "password": ROOT_PASSWORD, "display_name": "Root", "tenant_name": "Ops"}),
    )
    .await
    .expect(201);
    app.stop().await;

    let mut bootstrap = config(&fresh);
    bootstrap.bootstrap_admin_email = Some("  Root@Example.com ".into());
    bootstrap.bootstrap_admin_password = Some(ROOT_PASSWORD.into());
    let app = spawn_with(bootstrap).await;
    let token = app.login(ROOT, ROOT_PASSWORD).await.expect(200).data()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = app.get("/v1/me", Some(&token)).await.expect(200);
    assert_eq!(me.data()["is_platform_admin"], true);
    assert_eq!(
        me.data()["display_name"],
        "Root",
        "the account is kept as it was"
    );
    app.finish().await;
}

/// The bootstrap admin changed their password after the first start: a restart with the old
/// password configured (or none) keeps serving and changes nothing.
#[tokio::test]
async fn a_bootstrap_admin_who_changed_their_password_survives_a_restart() {
    let fresh = fresh().await;
    let mut bootstrap = config(&fresh);
    bootstrap.bootstrap_admin_email = Some(ROOT.into());
    bootstrap.bootstrap_admin_password = Some(ROOT_PASSWORD.into());
    let app = spawn_with(bootstrap.clone()).await;
    let token = app.login(ROOT, ROOT_PASSWORD).await.expect(200).data()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(
        "/v1/me/password",
        Some(&token),
        json!({"current_password": ROOT_PASSWORD, "new_password": "a newer password"}),
    )
    .await
    .expect(200);
    app.stop().await;

    for password in [Some(ROOT_PASSWORD), None] {
        let mut restart = bootstrap.clone();
        restart.bootstrap_admin_password = password.map(str::to_owned);
        let app = spawn_with(restart).await;
        assert_eq!(platform_admin_grants(&app.state).await, "1");
        let token = app.login(ROOT, "a newer password").await.expect(200).data()["session_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let me = app.get("/v1/me", Some(&token)).await.expect(200);
        assert_eq!(me.data()["is_platform_admin"], true);
        app.stop().await;
    }
    let app = spawn_with(config(&fresh)).await;
    app.finish().await;
}

/// A login e-mail longer than signup allows is refused before anything is looked up or counted;
/// one of exactly 254 characters is an ordinary failed login.
#[tokio::test]
async fn a_login_email_over_254_characters_is_a_validation_error() {
    // In memory, where the failures it counts can be read back.
    let fresh = fresh().await;
    let mut memory = config(&fresh);
    memory.limits = ipto::config::LimitsStore::Memory;
    let app = spawn_with(memory).await;
    let domain = "@example.com";
    let longest = format!("{}{domain}", "a".repeat(254 - domain.len()));
    let too_long = format!("a{longest}");
    for email in [too_long.clone(), format!("{}{domain}", "b".repeat(900_000))] {
        let refused = app.login(&email, PASSWORD).await.expect(422);
        assert_eq!(refused.code(), "validation_failed");
        assert!(
            refused.body["error"]["details"]["fields"]["email"].is_string(),
            "{}",
            refused.body
        );
    }
    // Trimmed before it is measured, as in signup.
    let padded = format!("  {longest}\n");
    assert_eq!(
        app.login(&padded, PASSWORD).await.expect(401).code(),
        "invalid_credentials"
    );
    // Refusals are not failed logins: the address is not locked by them.
    for _ in 0..ipto::ratelimit::FAILED_LOGIN_LIMIT {
        app.login(&format!(" {too_long}"), PASSWORD)
            .await
            .expect(422);
    }
    assert_eq!(app.state.limits.local.failed_login_footprint().0, 1);
    app.finish().await;
}

/// Waits, if need be, until at least 20 seconds of the current UTC minute remain, so that a
/// sequence of requests falls in one window of the per-minute buckets; returns that minute.
async fn fresh_minute() -> i64 {
    let second = chrono::Utc::now().timestamp().rem_euclid(60);
    if second > 40 {
        tokio::time::sleep(Duration::from_secs((61 - second) as u64)).await;
    }
    chrono::Utc::now().timestamp().div_euclid(60)
}

/// GET /v1/me with `Authorization: Bearer` or `X-API-Key`.
async fn me(app: &TestApp, bearer: Option<&str>, api_key: Option<&str>) -> Reply {
    let mut request = app.client.get(format!("{}/v1/me", app.address));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    if let Some(key) = api_key {
        request = request.header("x-api-key", key);
    }
    reply(request.send().await.unwrap()).await
}

/// A client IP that keeps sending bogus credentials is refused before any lookup once over its
/// budget, while credentials that were valid recently keep working from the same IP, and a
/// revoked one is still refused at once.
#[tokio::test]
async fn bogus_credentials_from_one_ip_are_throttled_without_locking_out_valid_ones() {
    let fresh = fresh().await;
    let mut limited = config(&fresh);
    limited.auth_failure_limit_per_minute = 5;
    let app = spawn_with(limited).await;
    let address = email();
    let (owner, _, _) = app.signup(&address).await;
    let second = app.login(&address, PASSWORD).await.expect(200).data()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = app
        .api_key(
            &owner,
            json!({"name": "unused", "scopes": ["datasets:read"]}),
        )
        .await;
    me(&app, Some(&second), None).await.expect(200);

    let minute = fresh_minute().await;
    for i in 0..5 {
        let refused = me(&app, Some(&format!("sess_bogus{i}")), None)
            .await
            .expect(401);
        assert_eq!(refused.code(), "unauthorized");
    }
    for (bearer, api_key) in [
        (Some("sess_bogus5"), None),
        (
            Some("ipto_abcdefgh_0000000000000000000000000000000000000000"),
            None,
        ),
        (
            None,
            Some("ipto_abcdefgh_0000000000000000000000000000000000000000"),
        ),
        // Valid, but never seen from anywhere: it cannot be told from a guess without a lookup.
        (None, Some(key.as_str())),
    ] {
        let throttled = me(&app, bearer, api_key).await.expect(429);
        assert_eq!(throttled.code(), "rate_limited");
        let retry: u64 = throttled.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(throttled.body["error"]["details"]["retry_after"], retry);
    }
    for _ in 0..3 {
        me(&app, Some(&owner), None).await.expect(200);
    }
    // A recently valid session is still looked up: revoked, it fails at once, and counts.
    app.post("/v1/auth/logout", Some(&second), json!({}))
        .await
        .expect(200);
    me(&app, Some(&second), None).await.expect(401);
    me(&app, Some(&second), None).await.expect(429);
    me(&app, Some(&owner), None).await.expect(200);
    assert_eq!(
        chrono::Utc::now().timestamp().div_euclid(60),
        minute,
        "the sequence outlasted its window"
    );
    app.finish().await;
}

const BYTES: &[u8] = b"0123456789abcdef";

/// A staged object's signed download URL.
async fn download_url(app: &TestApp) -> (String, String) {
    let (token, _, _) = app.signup(&email()).await;
    let dataset = app.dataset(&token, json!({})).await;
    let object = app.staged_object(&token, &dataset, BYTES).await;
    let download = app
        .get(&format!("/v1/objects/{object}/download"), Some(&token))
        .await
        .expect(200);
    let url = download.data()["download_url"].as_str().unwrap().to_owned();
    (object, url)
}

/// A range whose end lies past the blob, up to the largest number HTTP can carry, is the rest of
/// the blob (RFC 9110 §14.1.2), on every blob store.
async fn ranges_ending_past_the_blob_are_clamped(app: &TestApp, object: &str) {
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(BYTES));
    for (start, end) in [(0, u64::MAX), (5, u64::MAX), (5, u64::MAX - 1), (5, 1_000)] {
        let (total, served, stream) = app
            .state
            .blobs
            .read(object, &sha256, Some((start, Some(end))))
            .await
            .unwrap();
        let body: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(stream).await.unwrap();
        assert_eq!((total, served), (16, start..16), "{start}-{end}");
        assert_eq!(body.concat(), &BYTES[start as usize..]);
    }
}

#[tokio::test]
async fn a_signed_download_serves_a_range_ending_at_u64_max_and_every_response_is_nosniff() {
    let app = spawn_app().await;
    let (object, url) = download_url(&app).await;
    ranges_ending_past_the_blob_are_clamped(&app, &object).await;
    for (range, status, content_range, body) in [
        ("bytes=0-18446744073709551615", 206, "bytes 0-15/16", BYTES),
        (
            "bytes=10-18446744073709551615",
            206,
            "bytes 10-15/16",
            &BYTES[10..],
        ),
        (
            "bytes=10-18446744073709551614",
            206,
            "bytes 10-15/16",
            &BYTES[10..],
        ),
        ("bytes=16-18446744073709551615", 416, "bytes */16", b""),
    ] {
        let response = app
            .client
            .get(&url)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{range}");
        assert_eq!(
            response.headers()["content-range"],
            content_range,
            "{range}"
        );
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(response.bytes().await.unwrap().as_ref(), body, "{range}");
    }
    let whole = app.client.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["x-content-type-options"], "nosniff");
    let tampered = app
        .client
        .get(url.replace("signature=", "signature=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 403);
    assert_eq!(tampered.headers()["x-content-type-options"], "nosniff");
    for path in ["/health", "/openapi.json", "/v1/me", "/v1/nope"] {
        let response = app.get(path, None).await;
        assert_eq!(
            response.headers["x-content-type-options"], "nosniff",
            "{path}"
        );
    }
    app.finish().await;
}

/// The same ranges against S3, when the environment names a bucket.
#[tokio::test]
async fn ranges_ending_past_the_blob_are_clamped_on_s3() {
    let fresh = fresh().await;
    let Some(config) = s3_config(&fresh) else {
        eprintln!("IPTO_TEST_S3_BUCKET not set: S3 ranges skipped");
        drop_database(&fresh.database_url).await;
        return;
    };
    let app = spawn_with(config).await;
    assert_eq!(app.state.blobs.kind(), "s3");
    let (object, _) = download_url(&app).await;
    ranges_ending_past_the_blob_are_clamped(&app, &object).await;
    app.finish().await;
}

/// A signing key under 32 bytes is refused at start-up, by the library and by the binary (exit
/// 1, before binding), with a message that names the variable and not the key.
#[tokio::test]
async fn a_signing_key_under_32_bytes_stops_start_up() {
    let fresh = fresh().await;
    let short = "thirty-one bytes of secret key!";
    assert_eq!(short.len(), 31);
    let mut weak = config(&fresh);
    weak.signing_key = Some(short.into());
    let refused = ipto::Application::build(weak)
        .await
        .err()
        .expect("start-up refuses");
    let message = refused.to_string();
    assert!(
        message.contains("IPTO_SIGNING_KEY") && message.contains("32 bytes"),
        "{message}"
    );
    assert!(!message.contains(short), "{message}");

    let mut serve = ipto(&fresh, &["serve"]);
    serve
        .env("IPTO_BIND", "127.0.0.1:0")
        .env("IPTO_SIGNING_KEY", short);
    let output = exit_of(serve).expect("the server refuses to start");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("IPTO_SIGNING_KEY"), "{stderr}");
    assert!(!stderr.contains(short), "{stderr}");

    let mut strong = config(&fresh);
    strong.signing_key = Some(format!("{short}."));
    let app = spawn_with(strong).await;
    app.finish().await;
}

/// The event log refuses to be emptied: TRUNCATE on PostgreSQL (which skips row triggers), and
/// DELETE without a WHERE on both stores.
#[tokio::test]
async fn the_event_log_cannot_be_truncated() {
    let app = spawn_app().await;
    app.signup(&email()).await;
    let count = "SELECT COUNT(*) FROM events";
    let before = table(&app.state, count).await;
    let mut statements = vec!["DELETE FROM events"];
    if on_postgres() {
        statements.extend([
            "TRUNCATE events",
            "TRUNCATE TABLE events RESTART IDENTITY CASCADE",
        ]);
    }
    for statement in statements {
        let refused = sqlx::query(statement)
            .execute(&app.state.store.db.pool)
            .await
            .err()
            .unwrap_or_else(|| panic!("{statement} was allowed"));
        assert!(
            refused.to_string().contains("append-only"),
            "{statement}: {refused}"
        );
    }
    assert_eq!(table(&app.state, count).await, before);
    app.finish().await;
}
