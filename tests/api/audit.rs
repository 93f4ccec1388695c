//! The audit log, `GET /v1/admin/events`: position order and paging, filters, validation, who may
//! read it, the metadata of every event, no secrets, and positions that never go back when a slow
//! PostgreSQL transaction commits an earlier-numbered event late.

use std::collections::BTreeSet;
use std::time::Duration;

use aggregates::user::UserCommand;
use aggregates::User;
use ipto::store::Actor;
use serde_json::{json, Value};

use crate::helpers::*;

/// Reads the audit log after `after` by following `next_after` in pages of `limit`, checking the
/// paging contract on every page; `filter` is appended to the query string.
async fn events_after(
    app: &TestApp,
    admin: &str,
    mut after: i64,
    limit: usize,
    filter: &str,
) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    loop {
        let page = app
            .get(
                &format!("/v1/admin/events?after={after}&limit={limit}{filter}"),
                Some(admin),
            )
            .await
            .expect(200);
        let events = page.data()["events"].as_array().unwrap().clone();
        let next = page.data()["next_after"].as_i64().unwrap();
        assert!(events.len() <= limit);
        match events.last() {
            Some(last) => assert_eq!(next, last["position"].as_i64().unwrap()),
            None => assert_eq!(next, after, "an empty page keeps `after`"),
        }
        for event in &events {
            assert!(
                event["position"].as_i64().unwrap() > after,
                "position {} at or below after={after}",
                event["position"]
            );
        }
        let short = events.len() < limit;
        out.extend(events);
        after = next;
        if short {
            return out;
        }
    }
}

async fn all_events(app: &TestApp, admin: &str, filter: &str) -> Vec<Value> {
    events_after(app, admin, 0, 3, filter).await
}

fn positions(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect()
}

async fn log_size(app: &TestApp) -> usize {
    table(&app.state, "SELECT COUNT(*) FROM events").await[0][0]
        .parse()
        .unwrap()
}

async fn user_id_of(app: &TestApp, token: &str) -> String {
    app.get("/v1/me", Some(token)).await.expect(200).data()["user_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_audit_log_pages_in_position_order_and_filters() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let admin_user = user_id_of(&app, &admin).await;
    let (seller, seller_user, seller_tenant) = app.signup(&email()).await;
    let dataset = app.dataset(&seller, json!({})).await;
    let object = app.staged_object(&seller, &dataset, b"audited").await;
    app.post(
        &format!("/v1/admin/review/objects/{seller_tenant}/{object}/approve"),
        Some(&admin),
        json!({"note": "fine"}),
    )
    .await
    .expect(200);
    let key = app
        .post(
            "/v1/api-keys",
            Some(&seller),
            json!({"name": "writer", "scopes": ["datasets:read", "datasets:write"]}),
        )
        .await
        .expect(201);
    let key_id = key.data()["api_key_id"].as_str().unwrap().to_owned();
    let key_secret = key.data()["key"].as_str().unwrap().to_owned();
    let by_key = app.dataset(&key_secret, json!({"name": "By key"})).await;
    settled(&app.state).await;

    // Pages of 3 followed by next_after give the whole log, once, in strictly increasing order,
    // and the same as one big page.
    let everything = all_events(&app, &admin, "").await;
    assert_eq!(everything.len(), log_size(&app).await);
    assert!(positions(&everything).windows(2).all(|w| w[0] < w[1]));
    let one_page = app
        .get("/v1/admin/events?limit=100", Some(&admin))
        .await
        .expect(200);
    assert_eq!(one_page.data()["events"].as_array().unwrap(), &everything);
    let default_page = app.get("/v1/admin/events", Some(&admin)).await.expect(200);
    assert_eq!(
        default_page.data()["events"].as_array().unwrap().as_slice(),
        &everything[..20.min(everything.len())],
        "limit defaults to 20 and after to 0"
    );

    // One event, whole.
    let approved = everything
        .iter()
        .find(|e| e["event_type"] == "ObjectApproved")
        .unwrap();
    let keys: BTreeSet<&str> = approved
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "position",
            "leaf_hash",
            "aggregate_type",
            "aggregate_id",
            "sequence",
            "event_type",
            "event_version",
            "payload",
            "metadata"
        ])
    );
    assert_eq!(approved["aggregate_type"], "object");
    assert_eq!(approved["aggregate_id"], object.as_str());
    assert_eq!(approved["sequence"], 3);
    assert_eq!(approved["event_version"], "1.0");
    assert_eq!(approved["payload"]["note"], "fine");
    let metadata = approved["metadata"].as_object().unwrap();
    assert_eq!(
        metadata.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["actor", "tenant_id", "request_id", "occurred_at"])
    );
    // The leaf hash is the event's own: SHA-256(0x00 || JCS(the item without position and
    // leaf_hash)), as an auditor recomputes it from the list alone.
    for event in &everything {
        let mut item = event.clone();
        let object = item.as_object_mut().unwrap();
        object.remove("position");
        let served = object.remove("leaf_hash").unwrap();
        let recomputed = projections::audit::leaf(&item);
        assert_eq!(served, hex::encode(recomputed), "{event}");
    }
    assert_eq!(metadata["actor"], admin_user.as_str());
    assert!(metadata["request_id"].as_str().unwrap().starts_with("req_"));
    let at = metadata["occurred_at"].as_str().unwrap();
    assert!(
        at.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(at).is_ok(),
        "{at}"
    );

    // Actors: the user who acted, or the API key.
    let created = |id: &str| {
        everything
            .iter()
            .find(|e| e["aggregate_id"] == id && e["event_type"] == "DatasetCreated")
            .unwrap()
            .clone()
    };
    assert_eq!(created(&dataset)["metadata"]["actor"], seller_user.as_str());
    assert_eq!(
        created(by_key.as_str())["metadata"]["actor"],
        key_id.as_str()
    );
    assert_eq!(created(&dataset)["sequence"], 1);

    // Filters, alone and together, keep the order and paging.
    let objects = all_events(&app, &admin, "&aggregate_type=object").await;
    let expected: Vec<Value> = everything
        .iter()
        .filter(|e| e["aggregate_type"] == "object")
        .cloned()
        .collect();
    assert_eq!(objects, expected);
    let one_object = all_events(&app, &admin, &format!("&aggregate_id={object}")).await;
    assert_eq!(
        one_object
            .iter()
            .map(|e| (
                e["sequence"].as_i64().unwrap(),
                e["event_type"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [
            (1, "ObjectUploadInitiated"),
            (2, "ObjectUploadConfirmed"),
            (3, "ObjectApproved")
        ]
    );
    let both = all_events(
        &app,
        &admin,
        &format!("&aggregate_type=object&aggregate_id={object}"),
    )
    .await;
    assert_eq!(both, one_object);
    let mismatched = all_events(
        &app,
        &admin,
        &format!("&aggregate_type=dataset&aggregate_id={object}"),
    )
    .await;
    assert!(mismatched.is_empty());
    let keys_only = all_events(&app, &admin, "&aggregate_type=api_key").await;
    assert_eq!(keys_only.len(), 1);
    assert_eq!(keys_only[0]["event_type"], "ApiKeyCreated");
    assert!(all_events(&app, &admin, "&aggregate_type=search")
        .await
        .is_empty());

    // `after` starts anywhere; past the end the page is empty and next_after stays.
    let middle = everything[4]["position"].as_i64().unwrap();
    let rest = events_after(&app, &admin, middle, 100, "").await;
    assert_eq!(rest, everything[5..]);
    let end = everything.last().unwrap()["position"].as_i64().unwrap();
    let past = app
        .get(&format!("/v1/admin/events?after={end}"), Some(&admin))
        .await
        .expect(200);
    assert_eq!(past.data()["events"], json!([]));
    assert_eq!(past.data()["next_after"], end);
    let far = app
        .get("/v1/admin/events?after=9000000000", Some(&admin))
        .await
        .expect(200);
    assert_eq!(far.data()["next_after"], 9_000_000_000i64);
    app.finish().await;
}

#[tokio::test]
async fn audit_queries_are_validated() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    for (query, field) in [
        ("after=-1", "after"),
        ("after=abc", "after"),
        ("after=1.5", "after"),
        ("after=", "after"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("aggregate_type=nope", "aggregate_type"),
        ("aggregate_type=Dataset", "aggregate_type"),
        ("aggregate_type=events", "aggregate_type"),
    ] {
        let reply = app
            .get(&format!("/v1/admin/events?{query}"), Some(&admin))
            .await
            .expect(422);
        assert_eq!(reply.code(), "validation_failed", "{query}");
        assert!(
            reply.body["error"]["details"]["fields"][field].is_string(),
            "{query}: {}",
            reply.body
        );
    }
    let all_bad = app
        .get(
            "/v1/admin/events?after=x&limit=0&aggregate_type=x",
            Some(&admin),
        )
        .await
        .expect(422);
    let fields = all_bad.body["error"]["details"]["fields"]
        .as_object()
        .unwrap();
    assert_eq!(fields.len(), 3, "{}", all_bad.body);
    for kind in [
        "tenant",
        "user",
        "dataset",
        "object",
        "api_key",
        "search",
        "access",
        "payout_statement",
    ] {
        app.get(
            &format!("/v1/admin/events?aggregate_type={kind}"),
            Some(&admin),
        )
        .await
        .expect(200);
    }
    let one = app
        .get("/v1/admin/events?limit=1&unknown=ignored", Some(&admin))
        .await
        .expect(200);
    assert_eq!(one.data()["events"].as_array().unwrap().len(), 1);
    app.get("/v1/admin/events?limit=100&after=0", Some(&admin))
        .await
        .expect(200);
    app.finish().await;
}

#[tokio::test]
async fn the_audit_log_is_for_platform_admin_sessions_only() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (user, _, _) = app.signup(&email()).await;
    let scopes = json!([
        "datasets:read",
        "datasets:write",
        "objects:write",
        "search:query",
        "usage:read",
        "keys:write",
        "billing:read"
    ]);
    let admins_key = app
        .api_key(&admin, json!({"name": "admin's", "scopes": scopes}))
        .await;
    let users_key = app
        .api_key(&user, json!({"name": "user's", "scopes": scopes}))
        .await;
    for token in [&user, &admins_key, &users_key] {
        let reply = app.get("/v1/admin/events", Some(token)).await.expect(403);
        assert_eq!(reply.code(), "forbidden");
    }
    let none = app.get("/v1/admin/events", None).await.expect(401);
    assert_eq!(none.code(), "unauthorized");
    // The credential check comes before query validation.
    app.get("/v1/admin/events?limit=0", Some(&user))
        .await
        .expect(403);
    app.get("/v1/admin/events", Some(&admin)).await.expect(200);
    app.finish().await;
}

/// Every object key in `value`, at any depth.
fn keys_of(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.to_lowercase());
                keys_of(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys_of(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn audit_payloads_carry_no_passwords_hashes_tokens_or_key_secrets() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let address = email();
    let (first, _, _) = app.signup(&address).await;
    let second = app.login(&address, PASSWORD).await.expect(200).data()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let new_password = "a brand new password 42";
    app.post(
        "/v1/me/password",
        Some(&first),
        json!({"current_password": PASSWORD, "new_password": new_password}),
    )
    .await
    .expect(200);
    let created = app
        .post(
            "/v1/api-keys",
            Some(&first),
            json!({"name": "agent", "scopes": ["datasets:read"]}),
        )
        .await
        .expect(201);
    let key = created.data()["key"].as_str().unwrap().to_owned();
    let key_id = created.data()["api_key_id"].as_str().unwrap().to_owned();
    app.delete(&format!("/v1/api-keys/{key_id}"), Some(&first))
        .await
        .expect(200);
    app.post("/v1/auth/logout", Some(&first), json!({}))
        .await
        .expect(200);
    settled(&app.state).await;

    let events = all_events(&app, &admin, "").await;
    let types: BTreeSet<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    for expected in [
        "TenantCreated",
        "UserRegistered",
        "LoggedIn",
        "PasswordChanged",
        "LoggedOut",
        "PlatformAdminGranted",
        "ApiKeyCreated",
        "ApiKeyRevoked",
    ] {
        assert!(types.contains(expected), "{expected} missing: {types:?}");
    }
    let text = serde_json::to_string(&events).unwrap();
    let secret = key.rsplit('_').next().unwrap();
    for needle in [
        PASSWORD,
        new_password,
        "admin password 1",
        first.as_str(),
        second.as_str(),
        admin.as_str(),
        key.as_str(),
        secret,
        "$argon2",
    ] {
        assert!(!text.contains(needle), "the audit log holds {needle}");
    }
    let mut keys = Vec::new();
    for event in &events {
        keys_of(&event["payload"], &mut keys);
    }
    for key in &keys {
        for word in ["password", "hash", "token", "secret"] {
            assert!(!key.contains(word), "payload field {key}");
        }
    }
    app.finish().await;
}

#[tokio::test]
async fn background_jobs_are_recorded_as_system_without_a_request_id() {
    let fresh = fresh().await;
    let mut now = config(&fresh);
    now.session_ttl_seconds = 30 * 86_400;
    let (app, _) = spawn_with_admin(now.clone()).await;
    let (seller, seller_user, _) = app.signup(&email()).await;
    let dataset = app.dataset(&seller, json!({})).await;
    let object = app
        .staged_object(&seller, &dataset, b"never reviewed")
        .await;
    app.stop().await;

    // Eight days later the review window has passed and the expiry job rejects the object.
    let mut later = now;
    later.clock_offset_seconds = 8 * 86_400;
    let (app, admin) = spawn_with_admin(later).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let history = loop {
        let history = all_events(&app, &admin, &format!("&aggregate_id={object}")).await;
        if history.len() == 3 {
            break history;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not expired: {history:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rejected = &history[2];
    assert_eq!(rejected["event_type"], "ObjectRejected");
    assert_eq!(rejected["payload"]["reason"], "review_expired");
    assert_eq!(rejected["metadata"]["actor"], "system");
    assert_eq!(rejected["metadata"]["request_id"], Value::Null);
    for earlier in &history[..2] {
        assert_eq!(earlier["metadata"]["actor"], seller_user.as_str());
        assert!(earlier["metadata"]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("req_"));
    }
    app.finish().await;
}

#[tokio::test]
async fn positions_never_go_back_when_a_slow_transaction_commits_late() {
    if !on_postgres() {
        return; // SQLite has one writer: commit order is position order.
    }
    use sqlx::Connection;
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (_, slow_user, _) = app.signup(&email()).await;
    let (_, busy_user, _) = app.signup(&email()).await;
    settled(&app.state).await;
    let mut seen = all_events(&app, &admin, "").await;
    let mut after = *positions(&seen).last().unwrap();

    // A transaction appends an event, taking a global position, and holds its commit…
    let url = app.config.database_url.clone().unwrap();
    let mut slow = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = slow.begin().await.unwrap();
    let next: i64 = sqlx::query_scalar(
        "SELECT MAX(sequence) + 1 FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1",
    )
    .bind(&slow_user)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let slow_position: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('user', $1, $2, 'UserLoggedIn', '1.0', '{\"UserLoggedIn\":{}}', $3) RETURNING global_position",
    )
    .bind(&slow_user)
    .bind(next)
    .bind(json!({"actor_type": "system", "actor_id": "system", "occurred_at": "2026-01-01T00:00:00.000000Z"}))
    .fetch_one(&mut *tx)
    .await
    .unwrap();

    // …while other writers commit events with higher global positions.
    let store = app.state.store.clone();
    for _ in 0..10 {
        store
            .execute::<User>(
                &busy_user,
                UserCommand::RecordPasswordChange,
                &(),
                &Actor::system(),
            )
            .await
            .unwrap();
    }
    let above: i64 = sqlx::query_scalar(
        "SELECT MIN(global_position) FROM events WHERE aggregate_id = $1 AND event_type = 'PasswordChanged'",
    )
    .bind(&busy_user)
    .fetch_one(&store.db.pool)
    .await
    .unwrap();
    assert!(above > slow_position, "{above} <= {slow_position}");

    // An auditor following next_after meanwhile, then after the late commit, never sees a
    // position at or below one already returned, and ends with every event exactly once.
    for _ in 0..5 {
        let page = events_after(&app, &admin, after, 4, "").await;
        if let Some(last) = page.last() {
            after = last["position"].as_i64().unwrap();
        }
        seen.extend(page);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tx.commit().await.unwrap();
    store.engine.notify();
    let total = log_size(&app).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < total {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {total} events returned",
            seen.len()
        );
        let page = events_after(&app, &admin, after, 4, "").await;
        if let Some(last) = page.last() {
            after = last["position"].as_i64().unwrap();
        }
        seen.extend(page);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        positions(&seen).windows(2).all(|w| w[0] < w[1]),
        "positions went back: {:?}",
        positions(&seen)
    );
    let identities: BTreeSet<(String, i64)> = seen
        .iter()
        .map(|e| {
            (
                e["aggregate_id"].as_str().unwrap().to_owned(),
                e["sequence"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(identities.len(), total, "an event was returned twice");
    assert!(identities.contains(&(slow_user.clone(), next)));
    // Reading again from the start gives the same events at the same positions.
    assert_eq!(all_events(&app, &admin, "").await, seen);
    app.finish().await;
}

/// Creates `n` datasets as `token` (an event each).
async fn write_events(app: &TestApp, token: &str, n: usize) {
    for i in 0..n {
        app.dataset(token, json!({ "name": format!("audited {i}") }))
            .await;
    }
}

fn hash(value: &Value) -> projections::merkle::Hash {
    hex::decode(value.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn hashes(value: &Value) -> Vec<projections::merkle::Hash> {
    value.as_array().unwrap().iter().map(hash).collect()
}

#[tokio::test]
async fn signed_heads_and_proofs_verify_against_the_listed_events() {
    let (app, admin) = spawn_with_admin(config(&fresh().await)).await;
    let (seller, _, _) = app.signup(&email()).await;
    write_events(&app, &seller, 5).await;
    settled(&app.state).await;

    // The public key needs no credentials; the head is an admin's.
    let key: ipto::notary::PublicKey = serde_json::from_value(
        app.get("/v1/audit/public-key", None)
            .await
            .expect(200)
            .data()
            .clone(),
    )
    .unwrap();
    assert_eq!(
        app.get("/v1/admin/audit/head", Some(&seller)).await.status,
        403
    );
    let head: ipto::notary::SignedHead = serde_json::from_value(
        app.get("/v1/admin/audit/head", Some(&admin))
            .await
            .expect(200)
            .data()
            .clone(),
    )
    .unwrap();
    let root = head
        .verify(&key)
        .expect("the head verifies with the public key");

    // The head's root is the root of the listed leaves, and each event's proof leads to it.
    let events = app
        .get("/v1/admin/events?limit=100", Some(&admin))
        .await
        .expect(200)
        .data()["events"]
        .clone();
    let events = events.as_array().unwrap();
    assert_eq!(events.len() as u64, head.tree_size);
    let mut streaming = projections::merkle::Streaming::default();
    for event in events {
        streaming.push(hash(&event["leaf_hash"]));
    }
    assert_eq!(streaming.root(), root);
    for event in events {
        let position = event["position"].as_u64().unwrap();
        let proof = app
            .get(
                &format!(
                    "/v1/admin/audit/proof/inclusion?position={position}&tree_size={}",
                    head.tree_size
                ),
                Some(&admin),
            )
            .await
            .expect(200);
        let proof = proof.data();
        assert_eq!(proof["leaf_hash"], event["leaf_hash"]);
        assert!(projections::merkle::verify_inclusion(
            &hash(&event["leaf_hash"]),
            position - 1,
            head.tree_size,
            &hashes(&proof["audit_path"]),
            &root
        ));
    }
    for bad in [
        "position=0".to_owned(),
        format!("position={}", head.tree_size + 1),
        format!("position=1&tree_size={}", head.tree_size + 1),
        "position=x".to_owned(),
        String::new(),
    ] {
        let reply = app
            .get(
                &format!("/v1/admin/audit/proof/inclusion?{bad}"),
                Some(&admin),
            )
            .await;
        assert_eq!(reply.status, 422, "{bad}: {}", reply.body);
    }

    // After 1,000 more events the old head is a prefix of the new one.
    let many = 1_000;
    for chunk in 0..(many / 50) {
        let writes =
            (0..50).map(|i| app.dataset(&seller, json!({ "name": format!("more {chunk}-{i}") })));
        futures::future::join_all(writes).await;
    }
    settled(&app.state).await;
    let later: ipto::notary::SignedHead = serde_json::from_value(
        app.get("/v1/admin/audit/head", Some(&admin))
            .await
            .expect(200)
            .data()
            .clone(),
    )
    .unwrap();
    assert!(later.tree_size >= head.tree_size + many);
    let later_root = later.verify(&key).unwrap();
    let proof = app
        .get(
            &format!(
                "/v1/admin/audit/proof/consistency?from={}&to={}",
                head.tree_size, later.tree_size
            ),
            Some(&admin),
        )
        .await
        .expect(200);
    assert!(projections::merkle::verify_consistency(
        head.tree_size,
        later.tree_size,
        &hashes(&proof.data()["proof"]),
        &root,
        &later_root
    ));
    // Not against another root.
    assert!(!projections::merkle::verify_consistency(
        head.tree_size,
        later.tree_size,
        &hashes(&proof.data()["proof"]),
        &[0; 32],
        &later_root
    ));

    // Heads are kept at multiples of 10,000 events and hourly: the server's job kept the first
    // hourly one; within the hour, with fewer than 10,000 events, nothing more is due.
    let (db, audit_key, now) = (
        &app.state.store.db,
        &app.state.audit_key,
        app.state.store.clock.now(),
    );
    ipto::audit::keep_heads(db, audit_key, now).await.unwrap();
    assert_eq!(
        ipto::audit::keep_heads(db, audit_key, now).await.unwrap(),
        0
    );
    let heads = app
        .get("/v1/admin/audit/heads", Some(&admin))
        .await
        .expect(200);
    let listed: Vec<ipto::notary::SignedHead> =
        serde_json::from_value(heads.data()["heads"].clone()).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let kept_root = listed[0].verify(&key).unwrap();
    let tree = projections::audit::Tree { db };
    assert_eq!(tree.root(listed[0].tree_size).await.unwrap(), kept_root);
    app.finish().await;
}

/// A log of a few datasets' events, numbered and treed: the app, its fresh store, and the audit
/// positions of the `DatasetCreated` events.
async fn audited_log() -> (TestApp, Fresh, Vec<i64>) {
    let fresh = fresh().await;
    let app = spawn_with(config(&fresh)).await;
    let (seller, _, _) = app.signup(&email()).await;
    write_events(&app, &seller, 6).await;
    settled(&app.state).await;
    let created = table(
        &app.state,
        "SELECT CAST(a.position AS TEXT) FROM audit_order a \
         JOIN events e ON e.global_position = a.global_position \
         WHERE e.event_type = 'DatasetCreated' ORDER BY a.position",
    )
    .await
    .into_iter()
    .map(|row| row[0].parse().unwrap())
    .collect();
    (app, fresh, created)
}

/// Runs `sql` on the events table as a superuser would, past the append-only triggers.
pub(crate) async fn tamper(app: &TestApp, sql: &str, binds: &[String]) {
    use sqlx::Executor;
    let mut conn = app.state.store.db.pool.acquire().await.unwrap();
    if on_postgres() {
        conn.execute("SET session_replication_role = replica")
            .await
            .unwrap();
    } else {
        for trigger in ["events_no_update", "events_no_delete"] {
            conn.execute(format!("DROP TRIGGER IF EXISTS {trigger}").as_str())
                .await
                .unwrap();
        }
    }
    let mut query = sqlx::query(sql);
    for bind in binds {
        query = query.bind(bind);
    }
    let changed = query.execute(&mut *conn).await.unwrap();
    assert!(changed.rows_affected() >= 1, "{sql}");
    if on_postgres() {
        conn.execute("SET session_replication_role = origin")
            .await
            .unwrap();
    }
}

fn global(position: i64) -> String {
    format!("(SELECT global_position FROM audit_order WHERE position = {position})")
}

/// `ipto events verify ARGS`: exit code and what it said.
pub(crate) fn verify(fresh: &Fresh, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["events", "verify"];
    all.extend(args);
    let output = crate::cli::run(fresh, &all);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), said)
}

#[tokio::test]
async fn verify_passes_on_the_untouched_log_and_its_export_and_checks_proofs_offline() {
    let (app, fresh, created) = audited_log().await;
    let (code, said) = verify(&fresh, &[]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("verified:"), "{said}");

    let dir = fresh.data_dir.join("auditor");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, output: std::process::Output| {
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = dir.join(name);
        std::fs::write(&path, output.stdout).unwrap();
        path.display().to_string()
    };
    let export = write(
        "export.ndjson",
        crate::cli::run(&fresh, &["events", "export"]),
    );
    let key = write(
        "key.json",
        crate::cli::run(&fresh, &["events", "public-key"]),
    );
    // The key the CLI prints is the one the server publishes.
    let served = app.get("/v1/audit/public-key", None).await.expect(200);
    let printed: Value = serde_json::from_str(&std::fs::read_to_string(&key).unwrap()).unwrap();
    assert_eq!(&printed, served.data());
    let head = ipto::audit::current_head(
        &app.state.store.db,
        &app.state.audit_key,
        app.state.store.clock.now(),
    )
    .await
    .unwrap();
    let head_file = dir.join("head.json");
    std::fs::write(&head_file, serde_json::to_vec(&head).unwrap()).unwrap();
    let head_file = head_file.display().to_string();
    let (code, said) = verify(
        &fresh,
        &[
            "--export",
            &export,
            "--head",
            &head_file,
            "--public-key",
            &key,
        ],
    );
    assert_eq!(code, Some(0), "{said}");

    // One line edited, or one left out: the export's first bad position is named.
    let lines: Vec<String> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let at = created[2] as usize;
    let mut edited = lines.clone();
    edited[at - 1] = edited[at - 1].replace("audited 2", "audited X");
    let mut shortened = lines.clone();
    shortened.remove(at - 1);
    let damaged = dir.join("damaged.ndjson").display().to_string();
    for copy in [edited, shortened] {
        std::fs::write(&damaged, copy.join("\n")).unwrap();
        let args = [
            "--export",
            &damaged,
            "--head",
            &head_file,
            "--public-key",
            &key,
        ];
        let (code, said) = verify(&fresh, &args);
        assert_eq!(code, Some(1), "{said}");
        assert!(said.contains(&format!("position {at}:")), "{said}");
    }

    // A proof an auditor checks offline; an edited one fails.
    let proof = write(
        "proof.json",
        crate::cli::run(&fresh, &["events", "prove", &at.to_string()]),
    );
    let (code, said) = verify(&fresh, &["--proof", &proof, "--public-key", &key]);
    assert_eq!(code, Some(0), "{said}");
    let forged = std::fs::read_to_string(&proof)
        .unwrap()
        .replace("audited 2", "audited X");
    std::fs::write(&proof, forged).unwrap();
    let (code, said) = verify(&fresh, &["--proof", &proof, "--public-key", &key]);
    assert_eq!(code, Some(1), "{said}");
    app.finish().await;
}

#[tokio::test]
async fn verify_names_an_altered_a_deleted_and_a_swapped_event_in_the_database() {
    // One payload byte changed.
    let (app, fresh, created) = audited_log().await;
    let at = created[3];
    let payload = if on_postgres() {
        "CAST(replace(CAST(payload AS TEXT), 'audited 3', 'audited 4') AS jsonb)"
    } else {
        "replace(payload, 'audited 3', 'audited 4')"
    };
    tamper(
        &app,
        &format!(
            "UPDATE events SET payload = {payload} WHERE global_position = {}",
            global(at)
        ),
        &[],
    )
    .await;
    let (code, said) = verify(&fresh, &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains(&format!("position {at}:")), "{said}");
    app.finish().await;

    // An event deleted.
    let (app, fresh, created) = audited_log().await;
    let at = created[1];
    tamper(
        &app,
        &format!("DELETE FROM events WHERE global_position = {}", global(at)),
        &[],
    )
    .await;
    let (code, said) = verify(&fresh, &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains(&format!("position {at}:")), "{said}");
    app.finish().await;

    // Two events' contents swapped.
    let (app, fresh, created) = audited_log().await;
    let (first, second) = (created[1], created[4]);
    let payloads: Vec<String> = table(
        &app.state,
        &format!(
            "SELECT CAST(payload AS TEXT) FROM events WHERE global_position IN ({}, {}) \
             ORDER BY global_position",
            global(first),
            global(second)
        ),
    )
    .await
    .into_iter()
    .map(|row| row[0].clone())
    .collect();
    let set = if on_postgres() {
        "CAST($1 AS jsonb)"
    } else {
        "$1"
    };
    for (at, payload) in [(first, &payloads[1]), (second, &payloads[0])] {
        let sql = format!(
            "UPDATE events SET payload = {set} WHERE global_position = {}",
            global(at)
        );
        tamper(&app, &sql, std::slice::from_ref(payload)).await;
    }
    let (code, said) = verify(&fresh, &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains(&format!("position {first}:")), "{said}");
    app.finish().await;
}
