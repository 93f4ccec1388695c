//! Erasure of personal data (GDPR art. 17) in the immutable log: sealed fields, a destroyed key,
//! read models and rebuilds that show the data erased, proofs that still verify, an address free
//! again, and the one-time upgrade of a log written before sealing.

use serde_json::{json, Value};

use crate::audit::{tamper, verify};
use crate::helpers::*;

const NAME: &str = "Annika Distinctive";
const QUERY: &str = "confidential merger plans";

/// Signs up a user with a distinctive name; their session and user id.
async fn person(app: &TestApp, email: &str) -> (String, String) {
    named(app, email, NAME).await
}

async fn named(app: &TestApp, email: &str, name: &str) -> (String, String) {
    let reply = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": email, "password": PASSWORD, "display_name": name,
                "tenant_name": "Erasure Holdings"}),
        )
        .await
        .expect(201);
    (
        reply.data()["session_token"].as_str().unwrap().to_owned(),
        reply.data()["user_id"].as_str().unwrap().to_owned(),
    )
}

/// Every event as the admin list serves it.
async fn log(app: &TestApp, admin: &str) -> Vec<Value> {
    all_listed(app, admin, "/v1/admin/events").await
}

fn mentions(events: &[Value], text: &str) -> Vec<Value> {
    let text = text.to_lowercase();
    events
        .iter()
        .filter(|e| e.to_string().to_lowercase().contains(&text))
        .cloned()
        .collect()
}

async fn head(app: &TestApp, admin: &str) -> Value {
    app.get("/v1/admin/audit/head", Some(admin))
        .await
        .expect(200)
        .data()
        .clone()
}

fn hash(value: &Value) -> projections::merkle::Hash {
    hex::decode(value.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

/// The read models erasure touches, as rows.
async fn personal_rows(app: &TestApp) -> Vec<Vec<String>> {
    let mut rows = table(
        &app.state,
        "SELECT user_id, email, display_name, COALESCE(erased_at, '-') FROM users ORDER BY user_id",
    )
    .await;
    rows.extend(
        table(
            &app.state,
            "SELECT search_activity_id, query_text, COALESCE(subject_id, '-') FROM search_activities \
             ORDER BY search_activity_id",
        )
        .await,
    );
    rows
}

#[tokio::test]
async fn erasing_a_user_removes_their_data_everywhere_and_every_proof_still_verifies() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let address = email();
    let (session, user_id) = person(&app, &address).await;
    let key = app
        .api_key(
            &session,
            json!({"name": "agent", "scopes": ["search:query"]}),
        )
        .await;
    app.post("/v1/search", Some(&session), json!({"query": QUERY}))
        .await
        .expect(200);
    app.post("/v1/search", Some(&key), json!({"query": QUERY}))
        .await
        .expect(200);
    let bystander = email();
    named(&app, &bystander, "Bystander").await;
    settled(&app.state).await;

    // Sealed in the log from the start: the served items carry no address, name or query.
    let before = log(&app, &admin).await;
    for text in [&address, NAME, QUERY] {
        assert_eq!(
            mentions(&before, text),
            Vec::<Value>::new(),
            "{text} in the log"
        );
    }
    // The read models still read them.
    let rows = personal_rows(&app).await;
    assert!(rows.iter().flatten().any(|c| *c == address));
    assert_eq!(
        rows.iter()
            .flatten()
            .filter(|c| c.as_str() == QUERY)
            .count(),
        2
    );
    let old_head = head(&app, &admin).await;

    let erased = app
        .post(
            &format!("/v1/admin/users/{user_id}/erase"),
            Some(&admin),
            json!({}),
        )
        .await
        .expect(200);
    let subjects = erased.data()["erased_subjects"].clone();
    assert_eq!(subjects[0], user_id.as_str());
    assert!(subjects.as_array().unwrap().len() == 2, "{subjects}");
    settled(&app.state).await;

    // They can do nothing more: the session, a login and the key they made are refused.
    app.get("/v1/me", Some(&session)).await.expect(401);
    app.login(&address, PASSWORD).await.expect(401);
    app.post("/v1/search", Some(&key), json!({"query": "again"}))
        .await
        .expect(401);

    // The read models show the data as erased: the user's row and both query texts.
    let rows = personal_rows(&app).await;
    let text: Vec<&String> = rows.iter().flatten().collect();
    assert!(
        !text
            .iter()
            .any(|c| **c == address || **c == NAME || **c == QUERY),
        "{rows:?}"
    );
    assert!(rows.iter().any(|r| r[0] == user_id
        && r[1] == projections::privacy::erased("email", &user_id)
        && r[2] == "Erased user"
        && r[3] != "-"));
    assert_eq!(
        rows.iter()
            .filter(|r| r.get(1).map(String::as_str) == Some("[erased]"))
            .count(),
        2,
        "{rows:?}"
    );
    // The bystander is untouched.
    assert!(text.iter().any(|c| **c == bystander));

    // A rebuild reads the same: the destroyed key opens nothing.
    for name in ["users", "searches"] {
        let projection = app.state.store.engine.projection(name).unwrap();
        app.state
            .store
            .engine
            .rebuild(projection.as_ref(), |_, _| {})
            .await
            .unwrap();
    }
    assert_eq!(personal_rows(&app).await, rows, "rebuild differs from live");
    // So does the user's state folded from the log.
    let state = app
        .get(
            &format!("/v1/admin/aggregates/user/{user_id}"),
            Some(&admin),
        )
        .await
        .expect(200);
    let state = state.data()["state"].to_string();
    assert!(
        !state.contains(&address) && state.contains("Erased user"),
        "{state}"
    );

    // The log kept its bytes: the same items and leaves, and the old head is a prefix of the new.
    let after = log(&app, &admin).await;
    assert_eq!(&after[..before.len()], &before[..]);
    let new_head = head(&app, &admin).await;
    let (from, to) = (
        old_head["tree_size"].as_u64().unwrap(),
        new_head["tree_size"].as_u64().unwrap(),
    );
    let proof = app
        .get(
            &format!("/v1/admin/audit/proof/consistency?from={from}&to={to}"),
            Some(&admin),
        )
        .await
        .expect(200);
    let path: Vec<_> = proof.data()["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(hash)
        .collect();
    assert!(projections::merkle::verify_consistency(
        from,
        to,
        &path,
        &hash(&old_head["root_hash"]),
        &hash(&new_head["root_hash"]),
    ));
    let (code, said) = verify(&fresh, &[]);
    assert_eq!(code, Some(0), "{said}");

    // The address is free again, for a new user; erasing again changes nothing.
    let (again, new_user) = person(&app, &address).await;
    assert_ne!(new_user, user_id);
    app.get("/v1/me", Some(&again)).await.expect(200);
    app.login(&address, PASSWORD).await.expect(200);
    let events = log(&app, &admin).await.len();
    app.post(
        &format!("/v1/admin/users/{user_id}/erase"),
        Some(&admin),
        json!({}),
    )
    .await
    .expect(200);
    settled(&app.state).await;
    assert_eq!(
        log(&app, &admin).await.len(),
        events,
        "a second erasure wrote events"
    );
    app.post(
        "/v1/admin/users/usr_01M8K83QCPE5QRWW8QA846ARDS/erase",
        Some(&admin),
        json!({}),
    )
    .await
    .expect(404);
    app.post(
        &format!("/v1/admin/users/{new_user}/erase"),
        Some(&again),
        json!({}),
    )
    .await
    .expect(403);
    app.finish().await;
}

#[tokio::test]
async fn ipto_admin_erase_erases_by_address() {
    let fresh = fresh().await;
    let app = spawn_with(config(&fresh)).await;
    let address = email();
    let (session, user_id) = person(&app, &address).await;
    settled(&app.state).await;
    let output = crate::cli::run(&fresh, &["admin", "erase", &address]);
    assert!(output.status.success(), "{output:?}");
    assert!(crate::cli::stdout(&output).contains(&user_id));
    app.get("/v1/me", Some(&session)).await.expect(401);
    app.login(&address, PASSWORD).await.expect(401);
    let unknown = crate::cli::run(&fresh, &["admin", "erase", "nobody@example.com"]);
    assert_eq!(unknown.status.code(), Some(1));
    app.finish().await;
}

/// Rewrites the sealed log of `app` into the shape a log written before sealing has: plain
/// personal fields, reservations keyed by their address, and no data keys.
async fn unseal_into_legacy(app: &TestApp) {
    let db = &app.state.store.db;
    let payload = if on_postgres() {
        "payload::text"
    } else {
        "payload"
    };
    let rows = table(
        &app.state,
        &format!(
            "SELECT CAST(global_position AS TEXT), aggregate_type, aggregate_id, event_type, {payload} \
             FROM events WHERE {payload} LIKE '%sealed:v1:%'"
        ),
    )
    .await;
    let mut subjects = std::collections::BTreeSet::new();
    for row in &rows {
        let payload: Value = serde_json::from_str(&row[4]).unwrap();
        projections::privacy::sealed_subjects(&row[1], &row[3], &payload, &mut subjects);
    }
    let keys = projections::privacy::keys(db, &subjects).await.unwrap();
    let set = if on_postgres() {
        "payload = CAST($1 AS JSONB)"
    } else {
        "payload = $1"
    };
    for row in rows {
        let mut payload: Value = serde_json::from_str(&row[4]).unwrap();
        let event = projections::privacy::EventRef {
            aggregate_type: &row[1],
            aggregate_id: &row[2],
            event_type: &row[3],
        };
        assert!(projections::privacy::open(event, &mut payload, &keys));
        let id = match row[1].as_str() {
            "email_reservation" => payload["EmailReserved"]["email"]
                .as_str()
                .unwrap()
                .to_owned(),
            _ => row[2].clone(),
        };
        tamper(
            app,
            &format!(
                "UPDATE events SET {set}, aggregate_id = $2 WHERE global_position = CAST($3 AS BIGINT)"
            ),
            &[payload.to_string(), id, row[0].clone()],
        )
        .await;
    }
    sqlx::query("DELETE FROM subject_keys")
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_log_written_before_sealing_is_sealed_once_at_start_up_and_keeps_working() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let address = email();
    let (session, user_id) = person(&app, &address).await;
    app.post("/v1/search", Some(&session), json!({"query": QUERY}))
        .await
        .expect(200);
    settled(&app.state).await;
    unseal_into_legacy(&app).await;
    let legacy = log(&app, &admin).await;
    assert!(
        !mentions(&legacy, &address).is_empty(),
        "the legacy log holds the address"
    );
    assert!(!mentions(&legacy, QUERY).is_empty());
    app.stop().await;

    // The next start seals the log and rebuilds the audit tree over it.
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    settled(&app.state).await;
    let sealed = log(&app, &admin).await;
    // The same events in the same order (and the admin's new login after them).
    let kinds = |events: &[Value]| -> Vec<(Value, Value)> {
        events
            .iter()
            .map(|e| (e["aggregate_type"].clone(), e["event_type"].clone()))
            .collect()
    };
    assert_eq!(kinds(&sealed[..legacy.len()]), kinds(&legacy));
    for text in [&address, NAME, QUERY] {
        assert_eq!(
            mentions(&sealed, text),
            Vec::<Value>::new(),
            "{text} still in the log"
        );
    }
    let (code, said) = verify(&fresh, &[]);
    assert_eq!(code, Some(0), "{said}");
    // The account works as before, the address is still taken, and erasure works on it.
    app.login(&address, PASSWORD).await.expect(200);
    let taken = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": address, "password": PASSWORD, "display_name": "Other",
                "tenant_name": "Other"}),
        )
        .await
        .expect(409);
    assert_eq!(taken.code(), "email_taken");
    app.post(
        &format!("/v1/admin/users/{user_id}/erase"),
        Some(&admin),
        json!({}),
    )
    .await
    .expect(200);
    settled(&app.state).await;
    app.login(&address, PASSWORD).await.expect(401);
    person(&app, &address).await;
    let (code, said) = verify(&fresh, &[]);
    assert_eq!(code, Some(0), "{said}");
    app.stop().await;

    // A third start finds nothing left to seal: the log is unchanged.
    let app = spawn_with(config(&fresh)).await;
    settled(&app.state).await;
    assert_eq!(
        table(&app.state, "SELECT COUNT(*) FROM events").await,
        table(&app.state, "SELECT COUNT(*) FROM audit_order").await
    );
    let (code, said) = verify(&fresh, &[]);
    assert_eq!(code, Some(0), "{said}");
    app.finish().await;
}
