//! API keys: issuing, authenticating, revoking, expiry and grants.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

async fn key(app: &TestApp, token: &str, body: serde_json::Value) -> (String, String) {
    let reply = app
        .post("/v1/api-keys", Some(token), body)
        .await
        .expect(201);
    (
        reply.data()["api_key_id"].as_str().unwrap().to_owned(),
        reply.data()["key"].as_str().unwrap().to_owned(),
    )
}

async fn me_with_key(app: &TestApp, key: &str) -> Reply {
    reply(
        app.client
            .get(format!("{}/v1/me", app.address))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_key_is_shown_once_and_authenticates_both_ways() {
    let app = spawn_app().await;
    let (token, _, tenant) = app.signup(&email()).await;
    let reply = app
        .post(
            "/v1/api-keys",
            Some(&token),
            json!({"name": " agent ", "scopes": ["search:query", "datasets:read", "search:query"]}),
        )
        .await
        .expect(201);
    let data = reply.data().clone();
    let full = data["key"].as_str().unwrap().to_owned();
    assert_eq!(data["secret"], full.as_str());
    let (prefix, secret) = full.strip_prefix("ipto_").unwrap().split_once('_').unwrap();
    assert!(
        prefix.len() == 8
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
    assert!(secret.len() == 40 && secret.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(data["key_prefix"], prefix);
    assert_eq!(data["name"], "agent");
    assert_eq!(data["scopes"], json!(["datasets:read", "search:query"]));
    assert_eq!(data["dataset_access_mode"], "all_available");
    assert_eq!(data["status"], "active");
    assert_eq!(data["last_used_at"], json!(null));
    let id = data["api_key_id"].as_str().unwrap().to_owned();

    let me = me_with_key(&app, &full).await.expect(200);
    assert_eq!(me.data()["principal_type"], "api_key");
    assert_eq!(me.data()["api_key_id"], id.as_str());
    assert_eq!(me.data()["tenant_id"], tenant.as_str());
    assert_eq!(me.data()["user_id"], json!(null));
    assert_eq!(me.data()["roles"], json!([]));
    assert_eq!(
        me.data()["scopes"],
        json!(["datasets:read", "search:query"])
    );
    app.get("/v1/me", Some(&full)).await.expect(200);

    let shown = app
        .get(&format!("/v1/api-keys/{id}"), Some(&token))
        .await
        .expect(200);
    assert!(shown.data().get("key").is_none() && shown.data().get("secret").is_none());
    assert!(
        shown.data()["last_used_at"].is_string(),
        "first use is recorded"
    );
    assert_eq!(shown.data()["grants"], json!([]));
    let listed = app.get("/v1/api-keys", Some(&token)).await.expect(200);
    assert_eq!(listed.data()["items"][0]["api_key_id"], id.as_str());
    assert!(!listed.body.to_string().contains(secret));

    // Only a hash is stored, and the log never holds the secret.
    let stored = table(&app.state, "SELECT secret_hash FROM api_key_secrets").await;
    assert!(!stored[0][0].contains(secret));
    let log = table(&app.state, "SELECT CAST(payload AS TEXT) FROM events").await;
    assert!(log.iter().all(|row| !row[0].contains(secret)));

    // A wrong secret with a right prefix, or a malformed key, is 401.
    let forged = format!("ipto_{prefix}_{}", "A".repeat(40));
    me_with_key(&app, &forged).await.expect(401);
    me_with_key(&app, "ipto_short").await.expect(401);
    // Admin routes refuse every key.
    app.get("/v1/admin/review/queue", Some(&full))
        .await
        .expect(403);
    // Session-only endpoints refuse keys.
    let logout = app
        .call(Method::POST, "/v1/auth/logout", Some(&full), None)
        .await
        .expect(403);
    assert_eq!(logout.code(), "forbidden");
    app.post(
        "/v1/me/password",
        Some(&full),
        json!({"current_password": "x", "new_password": "yyyyyyyy"}),
    )
    .await
    .expect(403);
    app.finish().await;
}

#[tokio::test]
async fn key_fields_are_validated_and_scopes_cannot_grow() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    for (body, field) in [
        (json!({"scopes": ["datasets:read"]}), "name"),
        (json!({"name": "k"}), "scopes"),
        (json!({"name": "k", "scopes": []}), "scopes"),
        (json!({"name": "k", "scopes": ["admin:*"]}), "scopes[0]"),
        (
            json!({"name": "k", "scopes": ["datasets:read", "nope"]}),
            "scopes[1]",
        ),
        (
            json!({"name": "k", "scopes": ["datasets:read"], "dataset_access_mode": "some"}),
            "dataset_access_mode",
        ),
        (
            json!({"name": "k", "scopes": ["datasets:read"], "expires_at": "2000-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"name": "k", "scopes": ["datasets:read"], "expires_at": "tomorrow"}),
            "expires_at",
        ),
    ] {
        let reply = app
            .post("/v1/api-keys", Some(&token), body)
            .await
            .expect(422);
        assert!(
            reply.body["error"]["details"]["fields"]
                .get(field)
                .is_some(),
            "{field}: {}",
            reply.body
        );
    }
    // A key may create keys only within its own scopes.
    let (_, narrow) = key(
        &app,
        &token,
        json!({"name": "narrow", "scopes": ["keys:write", "datasets:read"]}),
    )
    .await;
    let refused = app
        .post(
            "/v1/api-keys",
            Some(&narrow),
            json!({"name": "wide", "scopes": ["search:query"]}),
        )
        .await
        .expect(403);
    assert_eq!(refused.code(), "forbidden");
    app.post(
        "/v1/api-keys",
        Some(&narrow),
        json!({"name": "ok", "scopes": ["datasets:read"]}),
    )
    .await
    .expect(201);
    // Without keys:write or usage:read, keys cannot even be listed.
    let (_, reader) = key(
        &app,
        &token,
        json!({"name": "reader", "scopes": ["datasets:read"]}),
    )
    .await;
    app.get("/v1/api-keys", Some(&reader)).await.expect(403);
    app.finish().await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_on_its_very_next_request() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let (id, full) = key(
        &app,
        &token,
        json!({"name": "k", "scopes": ["keys:write", "datasets:read"]}),
    )
    .await;
    me_with_key(&app, &full).await.expect(200);
    let revoked = app
        .delete(&format!("/v1/api-keys/{id}"), Some(&token))
        .await
        .expect(200);
    assert_eq!(revoked.data()["status"], "revoked");
    let at = revoked.data()["revoked_at"].clone();
    assert!(at.is_string());
    assert_eq!(
        me_with_key(&app, &full).await.expect(401).code(),
        "unauthorized"
    );
    let again = app
        .delete(&format!("/v1/api-keys/{id}"), Some(&token))
        .await
        .expect(200);
    assert_eq!(again.data()["revoked_at"], at);

    // A key may revoke itself.
    let (own, own_key) = key(
        &app,
        &token,
        json!({"name": "self", "scopes": ["keys:write"]}),
    )
    .await;
    app.delete(&format!("/v1/api-keys/{own}"), Some(&own_key))
        .await
        .expect(200);
    app.get("/v1/api-keys", Some(&own_key)).await.expect(401);
    app.finish().await;
}

#[tokio::test]
async fn an_expired_key_is_refused_and_reads_as_expired() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let soon = aggregates::timestamp::format(chrono::Utc::now() + chrono::Duration::seconds(2));
    let (id, full) = key(
        &app,
        &token,
        json!({"name": "k", "scopes": ["datasets:read"], "expires_at": soon}),
    )
    .await;
    me_with_key(&app, &full).await.expect(200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    me_with_key(&app, &full).await.expect(401);
    let shown = app
        .get(&format!("/v1/api-keys/{id}"), Some(&token))
        .await
        .expect(200);
    assert_eq!(shown.data()["status"], "expired");
    app.finish().await;
}

#[tokio::test]
async fn grants_are_idempotent_checked_for_access_and_scoped_to_their_key() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let (other, _, _) = app.signup(&email()).await;
    let own = app.dataset(&token, json!({})).await;
    let foreign_listed = app.dataset(&other, json!({"visibility": "listed"})).await;
    let foreign_private = app.dataset(&other, json!({})).await;
    let (id, _) = key(
        &app,
        &token,
        json!({"name": "k", "scopes": ["search:query"], "dataset_access_mode": "allow_list"}),
    )
    .await;
    let (second, _) = key(
        &app,
        &token,
        json!({"name": "k2", "scopes": ["search:query"]}),
    )
    .await;

    let first = app
        .post(
            &format!("/v1/api-keys/{id}/grants"),
            Some(&token),
            json!({"dataset_id": own}),
        )
        .await
        .expect(201);
    let grant = first.data()["grant_id"].as_str().unwrap().to_owned();
    assert!(grant.starts_with("grt_"));
    let repeat = app
        .post(
            &format!("/v1/api-keys/{id}/grants"),
            Some(&token),
            json!({"dataset_id": own}),
        )
        .await
        .expect(200);
    assert_eq!(repeat.data()["grant_id"], grant.as_str());
    app.post(
        &format!("/v1/api-keys/{id}/grants"),
        Some(&token),
        json!({"dataset_id": foreign_listed}),
    )
    .await
    .expect(201);
    app.post(
        &format!("/v1/api-keys/{id}/grants"),
        Some(&token),
        json!({"dataset_id": foreign_private}),
    )
    .await
    .expect(404);
    app.post(
        &format!("/v1/api-keys/{id}/grants"),
        Some(&token),
        json!({"dataset_id": "dset_nope"}),
    )
    .await
    .expect(404);
    let shown = app
        .get(&format!("/v1/api-keys/{id}"), Some(&token))
        .await
        .expect(200);
    assert_eq!(shown.data()["grants"].as_array().unwrap().len(), 2);
    assert_eq!(
        shown.data()["grants"][0]["grant_id"],
        grant.as_str(),
        "oldest first"
    );

    app.delete(
        &format!("/v1/api-keys/{second}/grants/{grant}"),
        Some(&token),
    )
    .await
    .expect(404);
    let removed = app
        .delete(&format!("/v1/api-keys/{id}/grants/{grant}"), Some(&token))
        .await
        .expect(200);
    assert_eq!(removed.data()["deleted"], true);
    assert_eq!(removed.data()["dataset_id"], own.as_str());
    app.delete(&format!("/v1/api-keys/{id}/grants/{grant}"), Some(&token))
        .await
        .expect(404);

    app.delete(&format!("/v1/api-keys/{id}"), Some(&token))
        .await
        .expect(200);
    let refused = app
        .post(
            &format!("/v1/api-keys/{id}/grants"),
            Some(&token),
            json!({"dataset_id": own}),
        )
        .await
        .expect(409);
    assert_eq!(refused.code(), "invalid_state");
    // Another tenant sees none of it.
    app.get(&format!("/v1/api-keys/{id}"), Some(&other))
        .await
        .expect(404);
    app.delete(&format!("/v1/api-keys/{second}"), Some(&other))
        .await
        .expect(404);
    app.post(
        &format!("/v1/api-keys/{second}/grants"),
        Some(&other),
        json!({"dataset_id": foreign_listed}),
    )
    .await
    .expect(404);
    app.finish().await;
}
