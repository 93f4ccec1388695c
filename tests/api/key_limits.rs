//! A key never reaches more than it was given: an `allow_list` key downloads only from granted
//! datasets, its tenant's own included; a key creates only keys no wider than itself (scopes,
//! access mode, grants, expiry), never grants to itself, and revoking a key revokes every key it
//! created, which stop working at once.

use aggregates::api_key::ApiKeyCommand;
use aggregates::ApiKey;
use serde_json::{json, Value};

use crate::helpers::*;

/// Creates a key with `body` by `credential`; returns the reply.
async fn create(app: &TestApp, credential: &str, body: Value) -> Reply {
    app.post("/v1/api-keys", Some(credential), body).await
}

fn id_and_key(reply: &Reply) -> (String, String) {
    (
        reply.data()["api_key_id"].as_str().unwrap().to_owned(),
        reply.data()["key"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn an_allow_list_key_downloads_only_from_granted_own_datasets() {
    let app = spawn_app().await;
    let (owner, _, _) = app.signup(&email()).await;
    let dataset = app.dataset(&owner, json!({})).await;
    let object = app.staged_object(&owner, &dataset, b"unreviewed").await;
    let reply = create(
        &app,
        &owner,
        json!({"name": "agent", "scopes": ["datasets:read"], "dataset_access_mode": "allow_list"}),
    )
    .await
    .expect(201);
    let (key_id, key) = id_and_key(&reply);

    let refused = app
        .get(&format!("/v1/objects/{object}/download"), Some(&key))
        .await
        .expect(404);
    assert_eq!(refused.code(), "not_found");

    app.post(
        &format!("/v1/api-keys/{key_id}/grants"),
        Some(&owner),
        json!({"dataset_id": dataset}),
    )
    .await
    .expect(201);
    app.get(&format!("/v1/objects/{object}/download"), Some(&key))
        .await
        .expect(200);
    // An all_available key of the tenant is not limited.
    let (_, open) = id_and_key(
        &create(
            &app,
            &owner,
            json!({"name": "open", "scopes": ["datasets:read"]}),
        )
        .await
        .expect(201),
    );
    app.get(&format!("/v1/objects/{object}/download"), Some(&open))
        .await
        .expect(200);
    app.finish().await;
}

#[tokio::test]
async fn a_key_cannot_widen_itself_or_create_wider_keys() {
    let app = spawn_app().await;
    let (owner, _, _) = app.signup(&email()).await;
    let granted = app.dataset(&owner, json!({})).await;
    let other = app.dataset(&owner, json!({})).await;
    let expires = (chrono::Utc::now() + chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (parent_id, parent) = id_and_key(
        &create(
            &app,
            &owner,
            json!({"name": "parent", "scopes": ["keys:write", "datasets:read"],
                   "dataset_access_mode": "allow_list", "expires_at": expires}),
        )
        .await
        .expect(201),
    );
    app.post(
        &format!("/v1/api-keys/{parent_id}/grants"),
        Some(&owner),
        json!({"dataset_id": granted}),
    )
    .await
    .expect(201);

    // Never a grant to itself, of any dataset.
    for dataset in [&other, &granted] {
        let refused = app
            .post(
                &format!("/v1/api-keys/{parent_id}/grants"),
                Some(&parent),
                json!({"dataset_id": dataset}),
            )
            .await
            .expect(403);
        assert_eq!(refused.code(), "forbidden");
    }
    // No wider children: all_available, a scope it lacks, no expiry beyond its own.
    let later = (chrono::Utc::now() + chrono::Duration::days(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for body in [
        json!({"name": "c", "scopes": ["datasets:read"]}),
        json!({"name": "c", "scopes": ["datasets:read", "search:query"], "dataset_access_mode": "allow_list"}),
        json!({"name": "c", "scopes": ["datasets:read"], "dataset_access_mode": "allow_list", "expires_at": later}),
    ] {
        create(&app, &parent, body).await.expect(403);
    }
    // A narrower child inherits the parent's expiry when it names none.
    let child = create(
        &app,
        &parent,
        json!({"name": "child", "scopes": ["datasets:read"], "dataset_access_mode": "allow_list"}),
    )
    .await
    .expect(201);
    let inherited = child.data()["expires_at"].as_str().unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(inherited).unwrap(),
        chrono::DateTime::parse_from_rfc3339(&expires).unwrap()
    );
    let (child_id, _) = id_and_key(&child);
    // The parent grants the child only what it is granted itself.
    app.post(
        &format!("/v1/api-keys/{child_id}/grants"),
        Some(&parent),
        json!({"dataset_id": other}),
    )
    .await
    .expect(403);
    app.post(
        &format!("/v1/api-keys/{child_id}/grants"),
        Some(&parent),
        json!({"dataset_id": granted}),
    )
    .await
    .expect(201);
    app.finish().await;
}

#[tokio::test]
async fn revoking_a_key_revokes_every_key_it_created() {
    let app = spawn_app().await;
    let (owner, _, _) = app.signup(&email()).await;
    let (parent_id, parent) = id_and_key(
        &create(
            &app,
            &owner,
            json!({"name": "parent", "scopes": ["keys:write", "datasets:read"]}),
        )
        .await
        .expect(201),
    );
    let (child_id, child) = id_and_key(
        &create(
            &app,
            &parent,
            json!({"name": "child", "scopes": ["keys:write", "datasets:read"]}),
        )
        .await
        .expect(201),
    );
    let (grandchild_id, grandchild) = id_and_key(
        &create(
            &app,
            &child,
            json!({"name": "grandchild", "scopes": ["datasets:read"]}),
        )
        .await
        .expect(201),
    );
    let (_, sibling) = id_and_key(
        &create(
            &app,
            &owner,
            json!({"name": "sibling", "scopes": ["datasets:read"]}),
        )
        .await
        .expect(201),
    );
    app.delete(&format!("/v1/api-keys/{parent_id}"), Some(&owner))
        .await
        .expect(200);
    for (id, key) in [(&child_id, &child), (&grandchild_id, &grandchild)] {
        let view = app
            .get(&format!("/v1/api-keys/{id}"), Some(&owner))
            .await
            .expect(200);
        assert_eq!(view.data()["status"], "revoked");
        app.get("/v1/me", Some(key)).await.expect(401);
    }
    let revocations = table(
        &app.state,
        "SELECT COUNT(*) FROM events WHERE event_type = 'ApiKeyRevoked'",
    )
    .await;
    assert_eq!(revocations[0][0], "3", "each revocation is an event");
    app.get("/v1/me", Some(&sibling)).await.expect(200);
    app.finish().await;
}

#[tokio::test]
async fn a_key_whose_creator_is_revoked_stops_working_even_before_it_is_revoked_itself() {
    let app = spawn_app().await;
    let (owner, _, _) = app.signup(&email()).await;
    let (parent_id, parent) = id_and_key(
        &create(
            &app,
            &owner,
            json!({"name": "parent", "scopes": ["keys:write", "datasets:read"]}),
        )
        .await
        .expect(201),
    );
    let (child_id, child) = id_and_key(
        &create(
            &app,
            &parent,
            json!({"name": "child", "scopes": ["datasets:read"]}),
        )
        .await
        .expect(201),
    );
    app.get("/v1/me", Some(&child)).await.expect(200);
    // The parent's revocation alone, as if the cascade had not reached the child yet.
    app.state
        .store
        .execute::<ApiKey>(
            &parent_id,
            ApiKeyCommand::Revoke {
                at: chrono::Utc::now(),
            },
            &(),
            &ipto::store::Actor::system(),
        )
        .await
        .unwrap();
    settled(&app.state).await;
    let view = app
        .get(&format!("/v1/api-keys/{child_id}"), Some(&owner))
        .await
        .expect(200);
    assert_eq!(view.data()["status"], "active");
    app.get("/v1/me", Some(&child)).await.expect(401);
    app.finish().await;
}
