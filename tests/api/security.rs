//! Authorization sweeps over the router.
//!
//! - Object level: tenant B, by session and by an API key with every scope, calls every route that
//!   takes an id (in its path or body) with tenant A's ids, resources in every state: each call is
//!   404 (SPEC §2.8), or 403 where a role or a signature is checked first, and nothing changes.
//! - Function level: every `/v1/admin/…` route refuses a normal session and every API key, even an
//!   admin's (403), and a request without a credential (401).
//!
//! Both sweeps are tables; a guard reads the route registrations in `src/http/*.rs` and fails when
//! a route with an id (or an admin route) has no row, so a new route needs a new row.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

const ALL_SCOPES: [&str; 7] = [
    "datasets:read",
    "datasets:write",
    "objects:write",
    "search:query",
    "usage:read",
    "keys:write",
    "billing:read",
];

/// One call of a sweep. `route` is the template as registered (for the coverage guard); `path`
/// and `body` name the fixture's ids as `<set>`, and the row runs once per combination of them.
struct Probe {
    method: &'static str,
    route: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    expect: u16,
    /// What B's key gets (`expect`, unless the route takes sessions only: 403).
    key_expect: u16,
}

const fn probe(
    method: &'static str,
    route: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    expect: u16,
) -> Probe {
    Probe {
        method,
        route,
        path,
        body,
        expect,
        key_expect: expect,
    }
}

/// A row for a route that takes an owner's or admin's session only: B's session gets 404, B's
/// key 403.
const fn session_probe(
    method: &'static str,
    route: &'static str,
    path: &'static str,
    body: Option<&'static str>,
) -> Probe {
    Probe {
        method,
        route,
        path,
        body,
        expect: 404,
        key_expect: 403,
    }
}

/// Tenant B against tenant A's ids. Id sets (see [`Fixture`]): `<dataset>` every A dataset
/// (private, listed, restricted, deleted); `<hidden_dataset>` those B cannot access; `<object>`
/// every A object (pending_upload, staged, approved, rejected, cancelled, deleted, in a listed, a
/// restricted and a deleted dataset); `<hidden_object>` those B may not download; `<key>` A's keys
/// (active with grants, revoked); `<grant>` A's grants; `<entitled>` the tenant A entitled;
/// `<tenant>` A's tenant; `<statement>` A's payout statement; `<member>` A's members (the owner,
/// an invited admin, a removed one); `<invitation>` A's invitations (pending, accepted, revoked);
/// `<own_dataset>`, `<own_key>` B's own.
const BOLA_SWEEP: &[Probe] = &[
    // Members and invitations.
    session_probe(
        "PATCH",
        "/v1/tenant/members/{user_id}",
        "/v1/tenant/members/<member>",
        Some(r#"{"roles": ["viewer"]}"#),
    ),
    session_probe(
        "DELETE",
        "/v1/tenant/members/{user_id}",
        "/v1/tenant/members/<member>?revoke_keys=true",
        None,
    ),
    session_probe(
        "POST",
        "/v1/tenant/ownership",
        "/v1/tenant/ownership",
        Some(r#"{"user_id": "<member>"}"#),
    ),
    session_probe(
        "DELETE",
        "/v1/tenant/invitations/{id}",
        "/v1/tenant/invitations/<invitation>",
        None,
    ),
    // Datasets and entitlements.
    probe(
        "GET",
        "/v1/datasets/{id}",
        "/v1/datasets/<dataset>",
        None,
        404,
    ),
    probe(
        "PATCH",
        "/v1/datasets/{id}",
        "/v1/datasets/<dataset>",
        Some(r#"{"name": "Taken over", "visibility": "listed"}"#),
        404,
    ),
    probe(
        "DELETE",
        "/v1/datasets/{id}",
        "/v1/datasets/<dataset>",
        None,
        404,
    ),
    probe(
        "GET",
        "/v1/datasets/{id}/entitlements",
        "/v1/datasets/<dataset>/entitlements",
        None,
        404,
    ),
    probe(
        "POST",
        "/v1/datasets/{id}/entitlements",
        "/v1/datasets/<dataset>/entitlements",
        Some(r#"{"tenant_id": "<entitled>"}"#),
        404,
    ),
    probe(
        "DELETE",
        "/v1/datasets/{id}/entitlements/{tenant_id}",
        "/v1/datasets/<dataset>/entitlements/<entitled>",
        None,
        404,
    ),
    // Objects.
    probe(
        "POST",
        "/v1/datasets/{dataset_id}/objects/upload",
        "/v1/datasets/<dataset>/objects/upload",
        Some(r#"{"filename": "planted.txt", "content_type": "text/plain", "size_bytes": 7}"#),
        404,
    ),
    probe(
        "GET",
        "/v1/datasets/{dataset_id}/objects",
        "/v1/datasets/<dataset>/objects?status=approved",
        None,
        404,
    ),
    probe("GET", "/v1/objects/{id}", "/v1/objects/<object>", None, 404),
    probe(
        "DELETE",
        "/v1/objects/{id}",
        "/v1/objects/<object>",
        None,
        404,
    ),
    probe(
        "POST",
        "/v1/objects/{id}/confirm",
        "/v1/objects/<object>/confirm",
        None,
        404,
    ),
    probe(
        "DELETE",
        "/v1/objects/{id}/upload",
        "/v1/objects/<object>/upload",
        None,
        404,
    ),
    probe(
        "GET",
        "/v1/objects/{id}/download",
        "/v1/objects/<hidden_object>/download",
        None,
        404,
    ),
    // API keys and grants, including A's grant reached through B's own key.
    probe("GET", "/v1/api-keys/{id}", "/v1/api-keys/<key>", None, 404),
    probe(
        "DELETE",
        "/v1/api-keys/{id}",
        "/v1/api-keys/<key>",
        None,
        404,
    ),
    probe(
        "POST",
        "/v1/api-keys/{id}/grants",
        "/v1/api-keys/<key>/grants",
        Some(r#"{"dataset_id": "<own_dataset>"}"#),
        404,
    ),
    probe(
        "DELETE",
        "/v1/api-keys/{id}/grants/{grant_id}",
        "/v1/api-keys/<key>/grants/<grant>",
        None,
        404,
    ),
    probe(
        "DELETE",
        "/v1/api-keys/{id}/grants/{grant_id}",
        "/v1/api-keys/<own_key>/grants/<grant>",
        None,
        404,
    ),
    // Ids in bodies: a grant on a dataset B cannot access.
    probe(
        "POST",
        "/v1/api-keys/{id}/grants",
        "/v1/api-keys/<own_key>/grants",
        Some(r#"{"dataset_id": "<hidden_dataset>"}"#),
        404,
    ),
    // Search names datasets in its body: a hidden one is 404 with details.dataset_id (SPEC §3.12).
    probe(
        "POST",
        "/v1/search",
        "/v1/search",
        Some(r#"{"query": "bytes", "dataset_ids": ["<hidden_dataset>"]}"#),
        404,
    ),
    probe(
        "POST",
        "/v1/search",
        "/v1/search",
        Some(r#"{"query": "bytes", "dataset_ids": ["<own_dataset>", "<hidden_dataset>"]}"#),
        404,
    ),
    // Retrieve names datasets in its body the same way.
    probe(
        "POST",
        "/v1/retrieve",
        "/v1/retrieve",
        Some(r#"{"query": "bytes", "dataset_ids": ["<hidden_dataset>"]}"#),
        404,
    ),
    probe(
        "POST",
        "/v1/retrieve",
        "/v1/retrieve",
        Some(r#"{"query": "bytes", "dataset_ids": ["<own_dataset>", "<hidden_dataset>"]}"#),
        404,
    ),
    //
    // Provider analytics (SPEC §3.7): own dataset only.
    probe(
        "GET",
        "/v1/provider/datasets/{id}/analytics",
        "/v1/provider/datasets/<dataset>/analytics",
        None,
        404,
    ),
    // Admin routes check the role first: B is no platform admin.
    probe(
        "POST",
        "/v1/admin/users/{id}/erase",
        "/v1/admin/users/<user>/erase",
        Some("{}"),
        403,
    ),
    probe(
        "GET",
        "/v1/admin/aggregates/{type}/{id}",
        "/v1/admin/aggregates/dataset/<dataset>",
        None,
        403,
    ),
    probe(
        "GET",
        "/v1/admin/aggregates/{type}/{id}/events",
        "/v1/admin/aggregates/dataset/<dataset>/events",
        None,
        403,
    ),
    probe(
        "GET",
        "/v1/admin/review/objects/{tenant_id}/{object_id}",
        "/v1/admin/review/objects/<tenant>/<object>",
        None,
        403,
    ),
    probe(
        "POST",
        "/v1/admin/review/objects/{tenant_id}/{object_id}/approve",
        "/v1/admin/review/objects/<tenant>/<object>/approve",
        Some("{}"),
        403,
    ),
    probe(
        "POST",
        "/v1/admin/review/objects/{tenant_id}/{object_id}/reject",
        "/v1/admin/review/objects/<tenant>/<object>/reject",
        Some(r#"{"reason": "spite"}"#),
        403,
    ),
    probe(
        "GET",
        "/v1/admin/review/objects/{tenant_id}/{object_id}/preview",
        "/v1/admin/review/objects/<tenant>/<object>/preview",
        None,
        403,
    ),
    probe(
        "POST",
        "/v1/admin/payouts/{statement_id}/mark-paid",
        "/v1/admin/payouts/<statement>/mark-paid",
        None,
        403,
    ),
    // Signed blob URLs ignore credentials: without a signature they are refused.
    probe(
        "GET",
        "/storage/objects/{object_id}",
        "/storage/objects/<object>",
        None,
        403,
    ),
    probe(
        "PUT",
        "/storage/objects/{object_id}",
        "/storage/objects/<object>",
        Some(r#"{"planted": true}"#),
        403,
    ),
];

/// Query parameters that name ids filter the caller's own data: with A's ids, B sees nothing.
const QUERY_SWEEP: &[&str] = &[
    "/v1/agent/activity/accesses?api_key_id=<key>",
    "/v1/agent/activity/accesses?dataset_id=<dataset>",
];

/// Every admin route, with real ids: `<staged>`, `<staged2>` are staged objects of A.
const ADMIN_ROUTES: &[Probe] = &[
    probe(
        "GET",
        "/v1/admin/review/queue",
        "/v1/admin/review/queue?tenant_id=<tenant>",
        None,
        200,
    ),
    probe(
        "GET",
        "/v1/admin/review/objects/{tenant_id}/{object_id}",
        "/v1/admin/review/objects/<tenant>/<staged>",
        None,
        200,
    ),
    probe(
        "POST",
        "/v1/admin/review/objects/{tenant_id}/{object_id}/approve",
        "/v1/admin/review/objects/<tenant>/<staged>/approve",
        Some(r#"{"note": "looks fine"}"#),
        200,
    ),
    probe(
        "POST",
        "/v1/admin/review/objects/{tenant_id}/{object_id}/reject",
        "/v1/admin/review/objects/<tenant>/<staged2>/reject",
        Some(r#"{"reason": "not fine"}"#),
        200,
    ),
    probe(
        "GET",
        "/v1/admin/review/objects/{tenant_id}/{object_id}/preview",
        "/v1/admin/review/objects/<tenant>/<staged>/preview",
        None,
        200,
    ),
    probe("GET", "/v1/admin/payouts", "/v1/admin/payouts", None, 200),
    // The statement's month is still open: the admin gets 409, which proves the id is real.
    probe(
        "POST",
        "/v1/admin/payouts/{statement_id}/mark-paid",
        "/v1/admin/payouts/<statement>/mark-paid",
        None,
        409,
    ),
    probe("GET", "/v1/admin/events", "/v1/admin/events", None, 200),
    probe(
        "POST",
        "/v1/admin/users/{id}/erase",
        "/v1/admin/users/<user>/erase",
        Some("{}"),
        200,
    ),
    probe(
        "GET",
        "/v1/admin/events/stream",
        "/v1/admin/events/stream?follow=false",
        None,
        200,
    ),
    probe(
        "GET",
        "/v1/admin/aggregates/{type}/{id}",
        "/v1/admin/aggregates/dataset/<dataset>?as_of_position=1000000",
        None,
        200,
    ),
    probe(
        "GET",
        "/v1/admin/aggregates/{type}/{id}/events",
        "/v1/admin/aggregates/object/<object>/events",
        None,
        200,
    ),
    probe(
        "GET",
        "/v1/admin/audit/head",
        "/v1/admin/audit/head",
        None,
        200,
    ),
    probe(
        "GET",
        "/v1/admin/audit/heads",
        "/v1/admin/audit/heads",
        None,
        200,
    ),
    probe(
        "GET",
        "/v1/admin/audit/proof/inclusion",
        "/v1/admin/audit/proof/inclusion?position=1",
        None,
        200,
    ),
    probe(
        "GET",
        "/v1/admin/audit/proof/consistency",
        "/v1/admin/audit/proof/consistency?from=1",
        None,
        200,
    ),
];

/// Tenant A's resources in every state, and the credentials of B, C and the admin.
struct Fixture {
    ids: BTreeMap<&'static str, Vec<String>>,
    admin: String,
    a: String,
    b: String,
    b_key: String,
    admins_key: String,
}

impl Fixture {
    fn one(&self, set: &str) -> &str {
        &self.ids[set][0]
    }
}

async fn key(app: &TestApp, token: &str, body: Value) -> (String, String) {
    let reply = app
        .post("/v1/api-keys", Some(token), body)
        .await
        .expect(201);
    (
        reply.data()["api_key_id"].as_str().unwrap().to_owned(),
        reply.data()["key"].as_str().unwrap().to_owned(),
    )
}

async fn grant(app: &TestApp, token: &str, key_id: &str, dataset: &str) -> String {
    app.post(
        &format!("/v1/api-keys/{key_id}/grants"),
        Some(token),
        json!({ "dataset_id": dataset }),
    )
    .await
    .expect(201)
    .data()["grant_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn review(app: &TestApp, admin: &str, tenant: &str, object: &str, verb: &str) {
    let body = if verb == "reject" {
        json!({"reason": "not for sale"})
    } else {
        json!({})
    };
    app.post(
        &format!("/v1/admin/review/objects/{tenant}/{object}/{verb}"),
        Some(admin),
        body,
    )
    .await
    .expect(200);
}

async fn fixture(app: &TestApp, admin: String) -> Fixture {
    let (a, a_owner, a_tenant) = app.signup(&email()).await;
    let (b, _, _) = app.signup(&email()).await;
    let (c, _, c_tenant) = app.signup(&email()).await;
    // A user for the platform admin to erase.
    let (_, a_user, _) = app.signup(&email()).await;

    // C sells a listed dataset; A buys from it with an allow-list key.
    let c_listed = app
        .dataset(
            &c,
            json!({"visibility": "listed", "monetization_mode": "premium"}),
        )
        .await;
    let c_object = app.staged_object(&c, &c_listed, b"c's data").await;
    review(app, &admin, &c_tenant, &c_object, "approve").await;

    // A's datasets: private, listed, restricted (entitled to C), and one deleted.
    let private = app.dataset(&a, json!({})).await;
    let listed = app
        .dataset(
            &a,
            json!({"visibility": "listed", "monetization_mode": "premium"}),
        )
        .await;
    let restricted = app
        .dataset(
            &a,
            json!({"visibility": "restricted", "monetization_mode": "premium"}),
        )
        .await;
    app.post(
        &format!("/v1/datasets/{restricted}/entitlements"),
        Some(&a),
        json!({ "tenant_id": c_tenant }),
    )
    .await
    .expect(201);
    let deleted = app.dataset(&a, json!({"name": "Gone"})).await;
    let in_deleted = app.staged_object(&a, &deleted, b"gone").await;

    // A's objects in every state.
    let (pending, _) = app.initiate(&a, &private, b"pending").await;
    let staged = app.staged_object(&a, &private, b"staged").await;
    let staged2 = app.staged_object(&a, &private, b"staged two").await;
    let approved = app.staged_object(&a, &private, b"approved").await;
    review(app, &admin, &a_tenant, &approved, "approve").await;
    let rejected = app.staged_object(&a, &private, b"rejected").await;
    review(app, &admin, &a_tenant, &rejected, "reject").await;
    let (cancelled, _) = app.initiate(&a, &private, b"cancelled").await;
    app.delete(&format!("/v1/objects/{cancelled}/upload"), Some(&a))
        .await
        .expect(200);
    let removed = app.staged_object(&a, &private, b"removed").await;
    app.delete(&format!("/v1/objects/{removed}"), Some(&a))
        .await
        .expect(200);
    let in_listed = app.staged_object(&a, &listed, b"listed").await;
    review(app, &admin, &a_tenant, &in_listed, "approve").await;
    let in_restricted = app.staged_object(&a, &restricted, b"restricted").await;
    review(app, &admin, &a_tenant, &in_restricted, "approve").await;

    // A's keys: an allow-list key with grants (one on C's dataset, used to buy), a revoked one.
    let (a_key, a_secret) = key(
        app,
        &a,
        json!({"name": "agent", "scopes": ["datasets:read"], "dataset_access_mode": "allow_list"}),
    )
    .await;
    let grant_private = grant(app, &a, &a_key, &private).await;
    let grant_c = grant(app, &a, &a_key, &c_listed).await;
    app.get(&format!("/v1/objects/{c_object}/download"), Some(&a_secret))
        .await
        .expect(200);
    let (revoked, _) = key(app, &a, json!({"name": "old", "scopes": ["datasets:read"]})).await;
    app.delete(&format!("/v1/api-keys/{revoked}"), Some(&a))
        .await
        .expect(200);

    // C buys from A's restricted dataset: A earns and has a payout statement.
    app.get(&format!("/v1/objects/{in_restricted}/download"), Some(&c))
        .await
        .expect(200);
    let statement = app
        .get("/v1/provider/payouts", Some(&a))
        .await
        .expect(200)
        .data()["items"][0]["statement_id"]
        .as_str()
        .unwrap()
        .to_owned();

    app.delete(&format!("/v1/datasets/{deleted}"), Some(&a))
        .await
        .expect(200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while app
        .get(&format!("/v1/datasets/{deleted}"), Some(&a))
        .await
        .status
        != 404
    {
        assert!(Instant::now() < deadline, "cleanup did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A's members and invitations in every state.
    let (_, a_admin, _) = crate::teams::member(app, &a, &["admin"]).await;
    let (_, a_removed, _) = crate::teams::member(app, &a, &["viewer"]).await;
    app.delete(&format!("/v1/tenant/members/{a_removed}"), Some(&a))
        .await
        .expect(200);
    let (pending_invitation, _) = crate::teams::invite(app, &a, &email(), &["viewer"]).await;
    let (revoked_invitation, _) = crate::teams::invite(app, &a, &email(), &["viewer"]).await;
    app.delete(
        &format!("/v1/tenant/invitations/{revoked_invitation}"),
        Some(&a),
    )
    .await
    .expect(200);
    let accepted_invitation = app
        .get("/v1/tenant/invitations?limit=100", Some(&a))
        .await
        .expect(200)
        .data()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["status"] == "accepted")
        .unwrap()["invitation_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // B: its own dataset, and a key with every scope.
    let own_dataset = app.dataset(&b, json!({})).await;
    let (own_key, b_key) = key(app, &b, json!({"name": "everything", "scopes": ALL_SCOPES})).await;
    let (_, admins_key) = key(
        app,
        &admin,
        json!({"name": "admin's", "scopes": ALL_SCOPES}),
    )
    .await;
    settled(&app.state).await;

    let hidden_objects = vec![
        pending.clone(),
        staged.clone(),
        staged2.clone(),
        approved,
        rejected,
        cancelled,
        removed,
        in_restricted.clone(),
        in_deleted.clone(),
    ];
    let mut objects = hidden_objects.clone();
    objects.push(in_listed);
    let ids = BTreeMap::from([
        (
            "dataset",
            vec![private.clone(), listed, restricted.clone(), deleted.clone()],
        ),
        ("hidden_dataset", vec![private, restricted, deleted]),
        ("object", objects),
        ("hidden_object", hidden_objects),
        ("key", vec![a_key, revoked]),
        ("grant", vec![grant_private, grant_c]),
        ("entitled", vec![c_tenant]),
        ("tenant", vec![a_tenant]),
        ("user", vec![a_user]),
        ("statement", vec![statement]),
        ("member", vec![a_owner, a_admin, a_removed]),
        (
            "invitation",
            vec![pending_invitation, accepted_invitation, revoked_invitation],
        ),
        ("staged", vec![staged]),
        ("staged2", vec![staged2]),
        ("own_dataset", vec![own_dataset]),
        ("own_key", vec![own_key]),
    ]);
    Fixture {
        ids,
        admin,
        a,
        b,
        b_key,
        admins_key,
    }
}

/// Every `(path, body)` a probe's path and body stand for: one per combination of the id sets
/// they name.
fn expand(
    ids: &BTreeMap<&'static str, Vec<String>>,
    path: &str,
    body: Option<&str>,
) -> Vec<(String, Option<Value>)> {
    let mut calls = vec![(path.to_owned(), body.unwrap_or("").to_owned())];
    for (set, values) in ids {
        let marker = format!("<{set}>");
        calls = calls
            .into_iter()
            .flat_map(|(path, body)| {
                if path.contains(&marker) || body.contains(&marker) {
                    values
                        .iter()
                        .map(|v| (path.replace(&marker, v), body.replace(&marker, v)))
                        .collect()
                } else {
                    vec![(path, body)]
                }
            })
            .collect();
    }
    calls
        .into_iter()
        .map(|(path, body)| {
            assert!(
                !path.contains('<') && !body.contains('<'),
                "unknown id set in {path} {body}"
            );
            let body = (!body.is_empty()).then(|| serde_json::from_str(&body).unwrap());
            (path, body)
        })
        .collect()
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).unwrap()
}

/// Everything a refused call must leave as it was: the log, every read model, and the
/// operational tables a call could touch on A's behalf.
async fn snapshot(app: &TestApp) -> Vec<Vec<Vec<String>>> {
    let mut out = Vec::new();
    for sql in [
        "SELECT COUNT(*), CAST(MAX(global_position) AS BIGINT) FROM events",
        "SELECT * FROM tenants ORDER BY tenant_id",
        "SELECT * FROM users ORDER BY user_id",
        "SELECT * FROM datasets ORDER BY dataset_id",
        "SELECT * FROM entitlements ORDER BY dataset_id, tenant_id",
        "SELECT * FROM objects ORDER BY object_id",
        "SELECT * FROM api_keys ORDER BY api_key_id",
        "SELECT * FROM api_key_grants ORDER BY grant_id",
        "SELECT * FROM accesses ORDER BY access_id",
        "SELECT * FROM payout_statements ORDER BY statement_id",
        "SELECT * FROM members ORDER BY user_id",
        "SELECT * FROM invitations ORDER BY invitation_id",
        "SELECT * FROM invitation_tokens ORDER BY token_hash",
        "SELECT * FROM audit_order ORDER BY position",
        "SELECT * FROM audit_tree ORDER BY level, idx",
        "SELECT token_hash, user_id, expires_at FROM sessions ORDER BY token_hash",
        "SELECT * FROM credentials ORDER BY user_id",
        "SELECT * FROM api_key_secrets ORDER BY api_key_id",
    ] {
        out.push(table(&app.state, sql).await);
    }
    out
}

/// A refusal says nothing about the resource.
fn assert_refused(reply: &Reply, expect: u16, context: &str) {
    assert_eq!(reply.status.as_u16(), expect, "{context}: {}", reply.body);
    let code = match expect {
        401 => "unauthorized",
        403 => "forbidden",
        _ => "not_found",
    };
    assert_eq!(reply.code(), code, "{context}: {}", reply.body);
    // Nothing about the resource leaks; a search names back only the dataset id it was sent.
    let details = &reply.body["error"]["details"];
    assert!(
        *details == json!({})
            || (details.as_object().unwrap().len() == 1
                && context.contains(details["dataset_id"].as_str().unwrap_or("-"))),
        "{context}: {}",
        reply.body
    );
}

#[tokio::test]
async fn another_tenants_ids_are_not_found_on_every_route_and_change_nothing() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let f = fixture(&app, admin).await;

    // The ids are live: A reaches them.
    for path in [
        format!("/v1/datasets/{}", f.one("dataset")),
        format!("/v1/datasets/{}/entitlements", f.ids["dataset"][2]),
        format!("/v1/objects/{}", f.one("object")),
        format!("/v1/api-keys/{}", f.one("key")),
    ] {
        app.get(&path, Some(&f.a)).await.expect(200);
    }

    let before = snapshot(&app).await;
    let mut calls = 0;
    for probe in BOLA_SWEEP {
        for (path, body) in expand(&f.ids, probe.path, probe.body) {
            for (who, token, expect) in [
                ("B's session", &f.b, probe.expect),
                ("B's key", &f.b_key, probe.key_expect),
            ] {
                let reply = app
                    .call(method(probe.method), &path, Some(token), body.clone())
                    .await;
                let context = format!("{who}: {} {path} {body:?}", probe.method);
                assert_refused(&reply, expect, &context);
                calls += 1;
            }
        }
    }
    for query in QUERY_SWEEP {
        for (path, _) in expand(&f.ids, query, None) {
            for token in [&f.b, &f.b_key] {
                let reply = app.get(&path, Some(token)).await.expect(200);
                assert_eq!(reply.data()["total"], 0, "{path}: {}", reply.body);
                calls += 1;
            }
        }
    }
    // A tenant's own audit log holds none of A's events, whichever of A's ids it is filtered on.
    for set in ["dataset", "object", "key"] {
        for id in &f.ids[set] {
            for token in [&f.b, &f.b_key] {
                let page = app
                    .get(
                        &format!("/v1/audit/events?aggregate_id={id}&limit=100"),
                        Some(token),
                    )
                    .await
                    .expect(200);
                assert_eq!(page.data()["events"], json!([]), "{id}: {}", page.body);
                let streamed = app
                    .streamed(
                        &format!("/v1/audit/events/stream?follow=false&aggregate_id={id}"),
                        token,
                    )
                    .await;
                assert!(streamed.is_empty(), "{id}: {streamed:?}");
                calls += 2;
            }
        }
    }
    settled(&app.state).await;
    assert_eq!(
        snapshot(&app).await,
        before,
        "a refused call changed something"
    );
    assert!(calls > 200, "only {calls} calls");

    // A still sees its own objects as they were.
    let objects = app
        .get(
            &format!("/v1/datasets/{}/objects?limit=100", f.one("dataset")),
            Some(&f.a),
        )
        .await
        .expect(200);
    assert!(!objects.data()["items"].as_array().unwrap().is_empty());
    app.finish().await;
}

#[tokio::test]
async fn admin_routes_refuse_normal_sessions_every_api_key_and_no_credential() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let f = fixture(&app, admin).await;

    let before = snapshot(&app).await;
    for probe in ADMIN_ROUTES {
        for (path, body) in expand(&f.ids, probe.path, probe.body) {
            let none = app
                .call(method(probe.method), &path, None, body.clone())
                .await;
            assert_refused(&none, 401, &format!("no credential: {path}"));
            assert_eq!(
                none.headers
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{path}"
            );
            for (who, token) in [
                ("a normal session", &f.a),
                ("a key with every scope", &f.b_key),
                ("a platform admin's key", &f.admins_key),
            ] {
                let reply = app
                    .call(method(probe.method), &path, Some(token), body.clone())
                    .await;
                assert_refused(&reply, 403, &format!("{who}: {} {path}", probe.method));
            }
        }
    }
    // Even the admin names an object with its own tenant: another tenant's id is 404.
    for probe in ADMIN_ROUTES
        .iter()
        .filter(|p| p.path.contains("/<tenant>/"))
    {
        let mismatched = probe.path.replace("<tenant>", "<entitled>");
        for (path, body) in expand(&f.ids, &mismatched, probe.body) {
            let reply = app
                .call(method(probe.method), &path, Some(&f.admin), body)
                .await;
            assert_refused(&reply, 404, &format!("admin, wrong tenant: {path}"));
        }
    }
    settled(&app.state).await;
    assert_eq!(
        snapshot(&app).await,
        before,
        "a refused call changed something"
    );

    // The same calls work for the admin's session, so the refusals were about the credential.
    for probe in ADMIN_ROUTES {
        for (path, body) in expand(&f.ids, probe.path, probe.body) {
            let reply = app
                .call(method(probe.method), &path, Some(&f.admin), body)
                .await;
            assert_eq!(
                reply.status.as_u16(),
                probe.expect,
                "admin: {} {path}: {}",
                probe.method,
                reply.body
            );
        }
    }
    app.finish().await;
}

/// `(method, template)` of every route the router registers: the documented operations, which
/// the routes carry (see `ipto::http::api`), and the signed storage URL's two methods.
fn registered_routes() -> BTreeSet<(String, String)> {
    let (_, api) = ipto::http::api().split_for_parts();
    let mut routes = BTreeSet::from([
        ("GET".to_owned(), ipto::http::storage::PATH.to_owned()),
        ("PUT".to_owned(), ipto::http::storage::PATH.to_owned()),
    ]);
    for (template, item) in api.paths.paths {
        let operations = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ];
        for (method, operation) in operations {
            if operation.is_some() {
                routes.insert((method.to_owned(), template.clone()));
            }
        }
    }
    routes
}

#[test]
fn every_route_with_an_id_and_every_admin_route_has_a_row() {
    let routes = registered_routes();
    assert!(
        routes.contains(&("GET".into(), "/v1/datasets/{id}".into())),
        "the route scan found {routes:?}"
    );
    let swept: BTreeSet<(String, String)> = BOLA_SWEEP
        .iter()
        .map(|p| (p.method.to_owned(), p.route.to_owned()))
        .collect();
    let admin: BTreeSet<(String, String)> = ADMIN_ROUTES
        .iter()
        .map(|p| (p.method.to_owned(), p.route.to_owned()))
        .collect();
    for (method, template) in &routes {
        let key = (method.clone(), template.clone());
        if template.contains('{') {
            assert!(
                swept.contains(&key),
                "{method} {template} takes an id but has no row in BOLA_SWEEP"
            );
        }
        if template.starts_with("/v1/admin/") {
            assert!(
                admin.contains(&key),
                "{method} {template} has no row in ADMIN_ROUTES"
            );
        }
    }
}

/// Ids that name nothing: undecodable, not an id, a bad character, a wrong prefix.
const MALFORMED_IDS: [&str; 5] = [
    "%FF",
    "%C0%AF",
    "not-an-id",
    "dset_01M8K83QCPE5QRWW8QA846ARDS",
    "usr_01m8k83qcpe5qrww8qa846ards",
];

#[tokio::test]
async fn malformed_ids_in_paths_are_404_and_repeated_query_parameters_422_in_the_envelope() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (b, _, _) = app.signup(&email()).await;
    let (_, _, c_tenant) = app.signup(&email()).await;
    let own_dataset = app.dataset(&b, json!({})).await;
    let (own_key, _) = key(&app, &b, json!({"name": "k", "scopes": ALL_SCOPES})).await;
    let own = |text: &str| {
        text.replace("<own_dataset>", &own_dataset)
            .replace("<hidden_dataset>", &own_dataset)
            .replace("<own_key>", &own_key)
            .replace("<entitled>", &c_tenant)
    };
    // Rows for routes not built yet would only meet the unknown-route 404.
    let registered = registered_routes();
    let mut calls = 0;
    for row in BOLA_SWEEP.iter().filter(|r| {
        r.path.starts_with("/v1/") && registered.contains(&(r.method.into(), r.route.into()))
    }) {
        let path = own(row.path);
        if !path.contains('<') {
            continue;
        }
        let body = row
            .body
            .map(|b| serde_json::from_str::<Value>(&own(b)).unwrap());
        // Admin routes are reached by the admin; the others by a tenant with every scope.
        let token = if row.route.starts_with("/v1/admin/") {
            &admin
        } else {
            &b
        };
        for bad in MALFORMED_IDS {
            let mut target = path.clone();
            while let (Some(start), Some(end)) = (target.find('<'), target.find('>')) {
                target.replace_range(start..=end, bad);
            }
            let reply = app
                .call(method(row.method), &target, Some(token), body.clone())
                .await;
            assert_refused(&reply, 404, &format!("{} {target}", row.method));
            calls += 1;
        }
        // Credentials are checked before the id.
        let mut target = path.clone();
        while let (Some(start), Some(end)) = (target.find('<'), target.find('>')) {
            target.replace_range(start..=end, "%FF");
        }
        let reply = app.call(method(row.method), &target, None, body).await;
        assert_refused(&reply, 401, &format!("no credential: {target}"));
    }
    assert!(calls > 50, "{calls}");

    // A parameter given twice has no single value: 422 on that parameter.
    for (path, token, name) in [
        ("/v1/datasets?limit=1&limit=2", &b, "limit"),
        (
            "/v1/agent/activity/accesses?kind=download&kind=retrieval",
            &b,
            "kind",
        ),
        ("/v1/api-keys?cursor=a&cursor=b", &b, "cursor"),
        ("/v1/admin/events?after=1&after=2", &admin, "after"),
        (
            "/v1/admin/review/queue?tenant_id=a&tenant_id=b",
            &admin,
            "tenant_id",
        ),
    ] {
        let reply = app.get(path, Some(token)).await.expect(422);
        assert_eq!(reply.code(), "validation_failed", "{path}: {}", reply.body);
        assert!(
            reply.body["error"]["details"]["fields"][name].is_string(),
            "{path}: {}",
            reply.body
        );
    }
    app.finish().await;
}
