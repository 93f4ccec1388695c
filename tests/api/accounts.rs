//! Signup, login, logout, /v1/me and password changes.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn signup_creates_an_owner_with_a_session_and_a_normalised_email() {
    let app = spawn_app().await;
    let reply = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": "  Ann@Example.COM ", "password": PASSWORD, "display_name": " Ann ", "tenant_name": "Acme"}),
        )
        .await
        .expect(201);
    let data = reply.data();
    assert_eq!(data["email"], "ann@example.com");
    assert_eq!(data["display_name"], "Ann");
    let token = data["session_token"].as_str().unwrap();
    assert!(token.starts_with("sess_") && token.len() == 31, "{token}");
    assert!(data["user_id"].as_str().unwrap().starts_with("usr_"));
    assert!(data["tenant_id"].as_str().unwrap().starts_with("tnt_"));
    assert!(data["expires_at"].as_str().unwrap().ends_with('Z'));

    let me = app.get("/v1/me", Some(token)).await.expect(200);
    let me = me.data();
    assert_eq!(me["user_id"], data["user_id"]);
    assert_eq!(me["tenant_id"], data["tenant_id"]);
    assert_eq!(me["tenant_display_name"], "Acme");
    assert_eq!(me["email"], "ann@example.com");
    assert_eq!(me["roles"], json!(["owner"]));
    assert_eq!(
        me["scopes"],
        json!([
            "datasets:read",
            "datasets:write",
            "objects:write",
            "search:query",
            "usage:read",
            "keys:write",
            "billing:read"
        ])
    );
    assert_eq!(me["principal_type"], "user");
    assert_eq!(me["api_key_id"], json!(null));
    assert_eq!(me["is_platform_admin"], false);
    app.finish().await;
}

#[tokio::test]
async fn signup_names_every_invalid_field() {
    let app = spawn_app().await;
    let reply = app
        .post("/v1/auth/signup", None, json!({}))
        .await
        .expect(422);
    assert_eq!(reply.code(), "validation_failed");
    let fields = &reply.body["error"]["details"]["fields"];
    for field in ["email", "password", "display_name", "tenant_name"] {
        assert!(fields.get(field).is_some(), "{field} missing from {fields}");
    }
    let reply = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": "not-an-email", "password": "short", "display_name": "   ", "tenant_name": "x".repeat(101)}),
        )
        .await
        .expect(422);
    let fields = reply.body["error"]["details"]["fields"]
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(fields.len(), 4, "{fields:?}");

    let reply = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": email(), "password": PASSWORD, "display_name": "A", "tenant_name": "B", "tenant_id": "tnt_x", "is_platform_admin": true}),
        )
        .await
        .expect(422);
    assert_eq!(
        reply.body["error"]["details"]["fields"]["tenant_id"],
        "unknown field"
    );
    assert_eq!(
        reply.body["error"]["details"]["fields"]["is_platform_admin"],
        "unknown field"
    );

    let reply = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": 5, "password": PASSWORD, "display_name": "A", "tenant_name": "B"}),
        )
        .await
        .expect(400);
    assert_eq!(reply.code(), "invalid_request");
    assert!(reply.body["error"]["details"]["fields"]
        .get("email")
        .is_some());
    app.finish().await;
}

#[tokio::test]
async fn passwords_are_never_trimmed_and_limited_to_8_to_128_characters() {
    let app = spawn_app().await;
    let signup = |password: String| json!({"email": email(), "password": password, "display_name": "A", "tenant_name": "B"});
    app.post("/v1/auth/signup", None, signup("1234567".into()))
        .await
        .expect(422);
    app.post("/v1/auth/signup", None, signup("x".repeat(129)))
        .await
        .expect(422);
    app.post("/v1/auth/signup", None, signup("x".repeat(128)))
        .await
        .expect(201);
    let address = email();
    app.post(
        "/v1/auth/signup",
        None,
        json!({"email": address, "password": "  spaced  ", "display_name": "A", "tenant_name": "B"}),
    )
    .await
    .expect(201);
    app.login(&address, "spaced").await.expect(401);
    app.login(&address, "  spaced  ").await.expect(200);
    app.finish().await;
}

#[tokio::test]
async fn a_registered_email_is_taken_in_any_case() {
    let app = spawn_app().await;
    let address = email();
    app.signup(&address).await;
    let reply = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": address.to_uppercase(), "password": PASSWORD, "display_name": "B", "tenant_name": "B"}),
        )
        .await
        .expect(409);
    assert_eq!(reply.code(), "email_taken");
    app.finish().await;
}

#[tokio::test]
async fn of_twenty_concurrent_signups_for_one_email_exactly_one_wins_and_losers_leave_nothing() {
    let app = spawn_app().await;
    let address = email();
    let attempts = (0..20).map(|i| {
        let spelled = if i % 2 == 0 { address.clone() } else { address.to_uppercase() };
        let body = json!({"email": spelled, "password": PASSWORD, "display_name": format!("N{i}"), "tenant_name": format!("T{i}")});
        let app = &app;
        async move { app.post("/v1/auth/signup", None, body).await }
    });
    let replies = futures::future::join_all(attempts).await;
    let created: Vec<_> = replies.iter().filter(|r| r.status == 201).collect();
    assert_eq!(
        created.len(),
        1,
        "statuses: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for reply in replies.iter().filter(|r| r.status != 201) {
        assert_eq!(reply.status, 409, "{}", reply.body);
        assert_eq!(reply.code(), "email_taken");
    }
    settled(&app.state).await;
    let count = |sql: &'static str| {
        let state = app.state.clone();
        async move { table(&state, sql).await[0][0].clone() }
    };
    // The reservation, the tenant, the user, and the login of the winner's first session.
    assert_eq!(count("SELECT COUNT(*) FROM events").await, "4");
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE aggregate_type = 'login'").await,
        "1"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE aggregate_type = 'tenant'").await,
        "1"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE aggregate_type = 'user'").await,
        "1"
    );
    assert_eq!(count("SELECT COUNT(*) FROM tenants").await, "1");
    assert_eq!(count("SELECT COUNT(*) FROM users").await, "1");
    assert_eq!(count("SELECT COUNT(*) FROM credentials").await, "1");
    assert_eq!(count("SELECT COUNT(*) FROM sessions").await, "1");
    let winner = created[0].data();
    let tenant = table(&app.state, "SELECT tenant_id FROM tenants").await;
    assert_eq!(tenant[0][0], winner["tenant_id"].as_str().unwrap());
    app.finish().await;
}

#[tokio::test]
async fn login_opens_a_session_for_the_right_password_only() {
    let app = spawn_app().await;
    let address = email();
    let (_, user_id, tenant_id) = app.signup(&address).await;
    let reply = app
        .login(&address.to_uppercase(), PASSWORD)
        .await
        .expect(200);
    assert_eq!(reply.data()["user_id"], user_id.as_str());
    assert_eq!(reply.data()["tenant_id"], tenant_id.as_str());
    let token = reply.data()["session_token"].as_str().unwrap().to_owned();
    app.get("/v1/me", Some(&token)).await.expect(200);

    let wrong = app.login(&address, "wrong password!").await.expect(401);
    let unknown = app.login(&email(), PASSWORD).await.expect(401);
    assert_eq!(wrong.code(), "invalid_credentials");
    assert_eq!(wrong.body["error"], unknown.body["error"]);
    app.login(&address, "").await.expect(401);
    let missing = app
        .post("/v1/auth/login", None, json!({"email": address}))
        .await
        .expect(422);
    assert!(missing.body["error"]["details"]["fields"]
        .get("password")
        .is_some());
    app.finish().await;
}

#[tokio::test]
async fn unknown_emails_take_as_long_as_wrong_passwords() {
    let app = spawn_app().await;
    let address = email();
    app.signup(&address).await;
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        app.login(&address, "wrong password!").await.expect(401);
        wrong.push(started.elapsed());
        let started = Instant::now();
        app.login(&email(), "wrong password!").await.expect(401);
        unknown.push(started.elapsed());
    }
    wrong.sort();
    unknown.sort();
    let (wrong, unknown) = (wrong[3], unknown[3]);
    // Both paths verify an argon2id hash; without the dummy hash the unknown path would be a
    // fraction of a millisecond against tens of milliseconds.
    assert!(
        unknown.as_secs_f64() > wrong.as_secs_f64() * 0.5
            && wrong.as_secs_f64() > unknown.as_secs_f64() * 0.5,
        "median wrong password {wrong:?}, unknown email {unknown:?}"
    );
    app.finish().await;
}

#[tokio::test]
async fn logout_kills_the_token_at_once() {
    let app = spawn_app().await;
    let address = email();
    let (token, _, _) = app.signup(&address).await;
    let other = app.login(&address, PASSWORD).await.expect(200).data()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = app
        .call(Method::POST, "/v1/auth/logout", Some(&token), None)
        .await
        .expect(200);
    assert_eq!(reply.data()["logged_out"], true);
    let after = app.get("/v1/me", Some(&token)).await.expect(401);
    assert_eq!(after.code(), "unauthorized");
    app.call(Method::POST, "/v1/auth/logout", Some(&token), None)
        .await
        .expect(401);
    app.get("/v1/me", Some(&other)).await.expect(200);
    app.finish().await;
}

#[tokio::test]
async fn a_password_change_revokes_the_other_sessions_and_the_old_password() {
    let app = spawn_app().await;
    let address = email();
    let (token, _, _) = app.signup(&address).await;
    let other = app.login(&address, PASSWORD).await.expect(200).data()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let wrong = app
        .post(
            "/v1/me/password",
            Some(&token),
            json!({"current_password": "not it at all", "new_password": "new password 1"}),
        )
        .await
        .expect(401);
    assert_eq!(wrong.code(), "invalid_credentials");
    app.post(
        "/v1/me/password",
        Some(&token),
        json!({"current_password": PASSWORD, "new_password": "short"}),
    )
    .await
    .expect(422);
    app.post(
        "/v1/me/password",
        Some(&token),
        json!({"current_password": PASSWORD}),
    )
    .await
    .expect(422);
    app.get("/v1/me", Some(&other)).await.expect(200);

    let reply = app
        .post(
            "/v1/me/password",
            Some(&token),
            json!({"current_password": PASSWORD, "new_password": "new password 1"}),
        )
        .await
        .expect(200);
    assert_eq!(reply.data()["password_changed"], true);
    app.get("/v1/me", Some(&token)).await.expect(200);
    app.get("/v1/me", Some(&other)).await.expect(401);
    app.login(&address, PASSWORD).await.expect(401);
    app.login(&address, "new password 1").await.expect(200);
    app.finish().await;
}

#[tokio::test]
async fn sessions_expire_after_their_ttl() {
    let fresh = fresh().await;
    let mut config = config(&fresh);
    config.session_ttl_seconds = 4;
    let app = spawn_with(config).await;
    let (token, _, _) = app.signup(&email()).await;
    app.get("/v1/me", Some(&token)).await.expect(200);
    tokio::time::sleep(Duration::from_millis(4300)).await;
    app.get("/v1/me", Some(&token)).await.expect(401);
    app.finish().await;
}

#[tokio::test]
async fn credentials_are_checked_as_the_spec_says() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let url = format!("{}/v1/me", app.address);

    let none = reply(app.client.get(&url).send().await.unwrap())
        .await
        .expect(401);
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    let both = app
        .client
        .get(&url)
        .bearer_auth(&token)
        .header("x-api-key", "ipto_abcdefgh_x")
        .send()
        .await
        .unwrap();
    assert_eq!(reply(both).await.expect(400).code(), "invalid_request");
    let basic = app
        .client
        .get(&url)
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(reply(basic).await.expect(400).code(), "invalid_request");
    let bare = app
        .client
        .get(&url)
        .header("authorization", "Bearer")
        .send()
        .await
        .unwrap();
    reply(bare).await.expect(400);
    app.get("/v1/me", Some("not-a-token")).await.expect(401);
    app.get("/v1/me", Some("sess_0000000000000000000000000"))
        .await
        .expect(401);
    let key = app
        .client
        .get(&url)
        .header("x-api-key", format!("ipto_abcdefgh_{}", "A".repeat(40)))
        .send()
        .await
        .unwrap();
    reply(key).await.expect(401);
    let key = app
        .client
        .get(&url)
        .bearer_auth(format!("ipto_abcdefgh_{}", "A".repeat(40)))
        .send()
        .await
        .unwrap();
    reply(key).await.expect(401);
    app.finish().await;
}

#[tokio::test]
async fn secrets_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let address = email();
    let (token, _, _) = app.signup(&address).await;
    let sessions = table(&app.state, "SELECT token_hash FROM sessions").await;
    assert!(sessions
        .iter()
        .all(|row| row[0] != token && !row[0].contains(&token[5..])));
    let hashes = table(&app.state, "SELECT password_hash FROM credentials").await;
    assert!(hashes[0][0].starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    let log = table(
        &app.state,
        "SELECT CAST(payload AS TEXT), CAST(metadata AS TEXT) FROM events",
    )
    .await;
    for row in log {
        for cell in row {
            assert!(
                !cell.contains(PASSWORD) && !cell.contains(&token) && !cell.contains("$argon2"),
                "{cell}"
            );
        }
    }
    app.finish().await;
}

#[tokio::test]
async fn the_bootstrap_admin_is_created_and_holds_the_admin_scope() {
    let fresh = fresh().await;
    let mut config = config(&fresh);
    config.bootstrap_admin_email = Some("Root@Example.com".into());
    config.bootstrap_admin_password = Some("bootstrap password".into());
    let app = spawn_with(config.clone()).await;
    let login = app
        .login("root@example.com", "bootstrap password")
        .await
        .expect(200);
    let token = login.data()["session_token"].as_str().unwrap().to_owned();
    let me = app.get("/v1/me", Some(&token)).await.expect(200);
    assert_eq!(me.data()["is_platform_admin"], true);
    assert_eq!(me.data()["display_name"], "Platform Admin");
    assert_eq!(me.data()["tenant_display_name"], "Platform");
    assert_eq!(
        me.data()["scopes"].as_array().unwrap().last().unwrap(),
        "admin:*"
    );
    app.stop().await;

    // A restart with the same settings neither fails nor adds events.
    let app = spawn_with(config.clone()).await;
    let before = table(
        &app.state,
        "SELECT COUNT(*) FROM events WHERE event_type = 'PlatformAdminGranted'",
    )
    .await;
    assert_eq!(before[0][0], "1");
    app.finish().await;

    // Creating the admin needs the password.
    let fresh = crate::helpers::fresh().await;
    let mut config = crate::helpers::config(&fresh);
    config.bootstrap_admin_email = Some("root@example.com".into());
    assert!(ipto::Application::build(config).await.is_err());
}
