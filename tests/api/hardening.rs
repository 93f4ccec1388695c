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
