//! Idempotent replays are answered only to a credential that still works: a revoked or expired
//! key, an ended session or a missing scope is refused before anything is replayed; a replay
//! counts against the rate limit; no stored response holds a secret; old records are purged.

use serde_json::{json, Value};

use crate::helpers::*;

async fn post_keyed(
    app: &TestApp,
    path: &str,
    credential: &str,
    idempotency_key: &str,
    body: Value,
) -> Reply {
    let response = app
        .client
        .post(format!("{}{path}", app.address))
        .bearer_auth(credential)
        .header("idempotency-key", idempotency_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    reply(response).await
}

/// A key with `scopes` created by `token`; returns `(api_key_id, full key)`.
async fn new_key(app: &TestApp, token: &str, scopes: &[&str]) -> (String, String) {
    let created = app
        .post(
            "/v1/api-keys",
            Some(token),
            json!({"name": "agent", "scopes": scopes}),
        )
        .await
        .expect(201);
    (
        created.data()["api_key_id"].as_str().unwrap().to_owned(),
        created.data()["key"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_revoked_key_cannot_replay_and_no_stored_body_holds_a_secret() {
    let app = spawn_app().await;
    let (owner, _, _) = app.signup(&email()).await;
    let (key_id, key) = new_key(&app, &owner, &["keys:write", "datasets:read"]).await;

    let body = json!({"name": "child", "scopes": ["datasets:read"]});
    let first = post_keyed(&app, "/v1/api-keys", &key, "make-child", body.clone())
        .await
        .expect(201);
    let secret = first.data()["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("ipto_"));

    // Nothing kept for replays holds the secret.
    let stored = table(
        &app.state,
        "SELECT COALESCE(body, '') FROM idempotency_keys",
    )
    .await;
    assert!(!stored.is_empty());
    let secret_part = secret.rsplit('_').next().unwrap();
    for row in &stored {
        assert!(
            !row[0].contains(secret_part),
            "a stored body holds the secret"
        );
    }
    // A replay by the same live key answers the same key, without its secret.
    let again = post_keyed(&app, "/v1/api-keys", &key, "make-child", body.clone())
        .await
        .expect(201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.data()["api_key_id"], first.data()["api_key_id"]);
    assert_eq!(again.data()["key"], Value::Null);
    assert_eq!(again.data()["secret"], Value::Null);

    // Once revoked, the key is refused before any replay.
    app.delete(&format!("/v1/api-keys/{key_id}"), Some(&owner))
        .await
        .expect(200);
    app.get("/v1/me", Some(&key)).await.expect(401);
    let replay = post_keyed(&app, "/v1/api-keys", &key, "make-child", body)
        .await
        .expect(401);
    assert!(replay.headers.get("idempotent-replayed").is_none());
    app.finish().await;
}

#[tokio::test]
async fn an_ended_session_cannot_replay() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let body = json!({"name": "Once"});
    post_keyed(&app, "/v1/datasets", &token, "ds-1", body.clone())
        .await
        .expect(201);
    app.post("/v1/auth/logout", Some(&token), json!({}))
        .await
        .expect(200);
    let replay = post_keyed(&app, "/v1/datasets", &token, "ds-1", body)
        .await
        .expect(401);
    assert!(replay.headers.get("idempotent-replayed").is_none());
    app.finish().await;
}

#[tokio::test]
async fn a_replay_needs_the_scopes_the_first_run_needed() {
    let app = spawn_app().await;
    let (owner, _, _) = app.signup(&email()).await;
    let (token, member, _) = crate::teams::member(&app, &owner, &["seller_manager"]).await;
    let body = json!({"name": "Scoped"});
    post_keyed(&app, "/v1/datasets", &token, "ds-scoped", body.clone())
        .await
        .expect(201);
    // The member loses the scope (roles are resolved at every request).
    app.patch(
        &format!("/v1/tenant/members/{member}"),
        Some(&owner),
        json!({"roles": ["viewer"]}),
    )
    .await
    .expect(200);
    let replay = post_keyed(&app, "/v1/datasets", &token, "ds-scoped", body)
        .await
        .expect(403);
    assert!(replay.headers.get("idempotent-replayed").is_none());
    app.finish().await;
}

#[tokio::test]
async fn replays_count_against_the_rate_limit() {
    let fresh = fresh().await;
    let mut config = config(&fresh);
    config.rate_limit_per_minute = 3;
    let app = spawn_with(config).await;
    let (token, _, _) = app.signup(&email()).await;
    let body = json!({"name": "Limited"});
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(
            post_keyed(&app, "/v1/datasets", &token, "ds-limited", body.clone())
                .await
                .status
                .as_u16(),
        );
    }
    // One run and six replays: at most three fit in a minute, six if it turned over meanwhile.
    assert_eq!(statuses[0], 201);
    assert!(statuses.contains(&429), "{statuses:?}");
    app.finish().await;
}

#[tokio::test]
async fn records_past_their_retention_are_purged() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    post_keyed(&app, "/v1/datasets", &token, "old", json!({"name": "Old"}))
        .await
        .expect(201);
    post_keyed(&app, "/v1/datasets", &token, "new", json!({"name": "New"}))
        .await
        .expect(201);
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = '2020-01-01T00:00:00Z' WHERE idem_key = 'old'",
    )
    .execute(&app.state.store.db.pool)
    .await
    .unwrap();
    let purged = ipto::idempotency::purge(&app.state.store.db, app.state.store.clock.now())
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let left = table(&app.state, "SELECT idem_key FROM idempotency_keys").await;
    assert_eq!(left, vec![vec!["new".to_owned()]]);
    app.finish().await;
}
