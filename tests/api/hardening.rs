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
    let app = spawn_app().await;
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
    assert_eq!(app.state.limits.failed_login_footprint().0, 1);
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
        .post(
            "/v1/api-keys",
            Some(&owner),
            json!({"name": "unused", "scopes": ["datasets:read"]}),
        )
        .await
        .expect(201)
        .data()["key"]
        .as_str()
        .unwrap()
        .to_owned();
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
