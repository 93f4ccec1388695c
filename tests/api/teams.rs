//! Teams: invitations, the six roles in use, role changes, removal, the last owner and ownership
//! transfer, on the real app (both stores).

use serde_json::{json, Value};

use crate::helpers::*;

/// Invites `email` with `roles` as `token`; returns `(invitation_id, invitation token)`.
pub(crate) async fn invite(
    app: &TestApp,
    token: &str,
    email: &str,
    roles: &[&str],
) -> (String, String) {
    let reply = app
        .post(
            "/v1/tenant/invitations",
            Some(token),
            json!({"email": email, "roles": roles}),
        )
        .await
        .expect(201);
    (
        reply.data()["invitation_id"].as_str().unwrap().to_owned(),
        reply.data()["token"].as_str().unwrap().to_owned(),
    )
}

/// Accepts an invitation; returns the reply.
pub(crate) async fn accept(app: &TestApp, token: &str) -> Reply {
    app.post(
        "/v1/invitations/accept",
        None,
        json!({"token": token, "password": PASSWORD, "display_name": "New Member"}),
    )
    .await
}

/// A member of `owner`'s tenant with `roles`; returns `(session_token, user_id, email)`.
pub(crate) async fn member(app: &TestApp, owner: &str, roles: &[&str]) -> (String, String, String) {
    let address = email();
    let (_, token) = invite(app, owner, &address, roles).await;
    let joined = accept(app, &token).await.expect(201);
    (
        joined.data()["session_token"].as_str().unwrap().to_owned(),
        joined.data()["user_id"].as_str().unwrap().to_owned(),
        address,
    )
}

fn scopes(reply: &Reply) -> Vec<String> {
    reply.data()["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_owner_invites_and_the_invitee_joins_with_the_invited_roles() {
    let app = spawn_app().await;
    let (owner, owner_id, tenant) = app.signup(&email()).await;
    let address = email();
    let invited = app
        .post(
            "/v1/tenant/invitations",
            Some(&owner),
            json!({"email": format!("  {}  ", address.to_uppercase()), "roles": ["viewer", "seller_manager", "viewer"]}),
        )
        .await
        .expect(201);
    let data = invited.data().clone();
    let token = data["token"].as_str().unwrap().to_owned();
    assert!(data["invitation_id"].as_str().unwrap().starts_with("inv_"));
    assert!(token.starts_with("invt_") && token.len() == 31, "{token}");
    assert_eq!(data["email"], address.as_str());
    assert_eq!(data["roles"], json!(["seller_manager", "viewer"]));
    assert_eq!(data["status"], "pending");
    assert_eq!(data["invited_by"], owner_id.as_str());
    assert_eq!(data["accepted_by"], Value::Null);
    assert_eq!(data["mailed"], false);
    let created =
        chrono::DateTime::parse_from_rfc3339(data["created_at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(data["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - created, chrono::Duration::days(7));

    let joined = accept(&app, &token).await.expect(201);
    let session = joined.data()["session_token"].as_str().unwrap().to_owned();
    let user_id = joined.data()["user_id"].as_str().unwrap().to_owned();
    assert_eq!(joined.data()["tenant_id"], tenant.as_str());
    assert_eq!(joined.data()["email"], address.as_str());
    assert_eq!(joined.data()["roles"], json!(["seller_manager", "viewer"]));
    let me = app.get("/v1/me", Some(&session)).await.expect(200);
    assert_eq!(me.data()["tenant_id"], tenant.as_str());
    assert_eq!(me.data()["roles"], json!(["seller_manager", "viewer"]));
    assert_eq!(
        scopes(&me),
        [
            "datasets:read",
            "datasets:write",
            "objects:write",
            "usage:read",
            "billing:read"
        ]
    );
    // The member signs in again with the password they chose.
    app.login(&address, PASSWORD).await.expect(200);

    let members = app
        .get("/v1/tenant/members", Some(&owner))
        .await
        .expect(200);
    let items = members.data()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "{items:?}");
    let joined_member = items
        .iter()
        .find(|m| m["user_id"] == user_id.as_str())
        .unwrap();
    assert_eq!(joined_member["invited_by"], owner_id.as_str());
    assert_eq!(joined_member["display_name"], "New Member");
    assert_eq!(joined_member["roles"], json!(["seller_manager", "viewer"]));
    let founder = items
        .iter()
        .find(|m| m["user_id"] == owner_id.as_str())
        .unwrap();
    assert_eq!(founder["roles"], json!(["owner"]));
    assert_eq!(founder["invited_by"], Value::Null);

    let invitations = app
        .get("/v1/tenant/invitations", Some(&owner))
        .await
        .expect(200);
    assert_eq!(invitations.data()["items"][0]["status"], "accepted");
    assert_eq!(
        invitations.data()["items"][0]["accepted_by"],
        user_id.as_str()
    );
    // A used token opens nothing again.
    assert_eq!(
        accept(&app, &token).await.expect(410).code(),
        "invitation_expired"
    );

    // The token is in no event and no table: only its HMAC is kept.
    settled(&app.state).await;
    for sql in [
        "SELECT CAST(payload AS TEXT) FROM events",
        "SELECT * FROM invitation_tokens",
        "SELECT * FROM invitations",
    ] {
        let rows = table(&app.state, sql).await;
        assert!(
            !format!("{rows:?}").contains(&token),
            "{sql} holds the token"
        );
    }
    // The invitee's address is sealed in the log like a signup's.
    let payloads = table(
        &app.state,
        "SELECT CAST(payload AS TEXT) FROM events WHERE event_type = 'MemberInvited'",
    )
    .await;
    assert!(!format!("{payloads:?}").contains(&address), "{payloads:?}");
    app.finish().await;
}

/// What a member of each role may do: `(role, operation, expected status)`.
const ROLE_TABLE: &[(&str, &str, u16)] = &[
    ("admin", "create dataset", 201),
    ("admin", "upload", 201),
    ("admin", "create key", 201),
    ("admin", "dashboard", 200),
    ("admin", "payouts", 200),
    ("admin", "search", 200),
    ("admin", "members", 200),
    ("admin", "invite", 201),
    ("seller_manager", "create dataset", 201),
    ("seller_manager", "upload", 201),
    ("seller_manager", "create key", 403),
    ("seller_manager", "dashboard", 200),
    ("seller_manager", "payouts", 200),
    ("seller_manager", "search", 403),
    ("seller_manager", "members", 200),
    ("seller_manager", "invite", 403),
    ("buyer_manager", "create dataset", 403),
    ("buyer_manager", "upload", 403),
    ("buyer_manager", "create key", 201),
    ("buyer_manager", "dashboard", 200),
    ("buyer_manager", "payouts", 200),
    ("buyer_manager", "search", 200),
    ("buyer_manager", "members", 200),
    ("buyer_manager", "invite", 403),
    ("operator", "create dataset", 403),
    ("operator", "upload", 403),
    ("operator", "create key", 403),
    ("operator", "dashboard", 200),
    ("operator", "payouts", 403),
    ("operator", "search", 403),
    ("operator", "members", 200),
    ("operator", "invite", 403),
    ("viewer", "create dataset", 403),
    ("viewer", "upload", 403),
    ("viewer", "create key", 403),
    ("viewer", "dashboard", 403),
    ("viewer", "payouts", 403),
    ("viewer", "search", 403),
    ("viewer", "members", 403),
    ("viewer", "invite", 403),
];

async fn attempt(app: &TestApp, token: &str, operation: &str, dataset: &str) -> Reply {
    match operation {
        "create dataset" => {
            app.post("/v1/datasets", Some(token), json!({"name": "Mine"}))
                .await
        }
        "upload" => {
            app.post(
                &format!("/v1/datasets/{dataset}/objects/upload"),
                Some(token),
                json!({"filename": "a.txt", "content_type": "text/plain", "size_bytes": 3}),
            )
            .await
        }
        "create key" => {
            app.post(
                "/v1/api-keys",
                Some(token),
                json!({"name": "k", "scopes": ["datasets:read"]}),
            )
            .await
        }
        "dashboard" => app.get("/v1/provider/dashboard", Some(token)).await,
        "payouts" => app.get("/v1/provider/payouts", Some(token)).await,
        "search" => {
            app.post("/v1/search", Some(token), json!({"query": "anything"}))
                .await
        }
        "members" => app.get("/v1/tenant/members", Some(token)).await,
        "invite" => {
            app.post(
                "/v1/tenant/invitations",
                Some(token),
                json!({"email": email(), "roles": ["viewer"]}),
            )
            .await
        }
        other => panic!("unknown operation {other}"),
    }
}

#[tokio::test]
async fn each_role_may_do_what_its_scopes_allow_and_nothing_more() {
    let app = spawn_app().await;
    let (owner, _, _) = app.signup(&email()).await;
    let dataset = app.dataset(&owner, json!({})).await;
    let mut tokens = std::collections::BTreeMap::new();
    for (role, _, _) in ROLE_TABLE {
        if !tokens.contains_key(role) {
            tokens.insert(*role, member(&app, &owner, &[role]).await.0);
        }
    }
    assert_eq!(tokens.len(), 5);
    for (role, operation, expected) in ROLE_TABLE {
        let reply = attempt(&app, &tokens[role], operation, &dataset).await;
        assert_eq!(
            reply.status.as_u16(),
            *expected,
            "{role} {operation}: {}",
            reply.body
        );
        if *expected == 403 {
            assert_eq!(reply.code(), "forbidden");
        }
    }
    app.finish().await;
}

#[tokio::test]
async fn a_role_change_counts_from_the_members_next_request_and_bounds_their_keys() {
    let app = spawn_app().await;
    let (owner, _, _) = app.signup(&email()).await;
    let (buyer, buyer_id, _) = member(&app, &owner, &["buyer_manager"]).await;
    let key = app
        .api_key(
            &buyer,
            json!({"name": "agent", "scopes": ["datasets:read", "search:query", "keys:write"]}),
        )
        .await;
    // A key created by the buyer's key is bounded by the buyer too.
    let child = app
        .api_key(
            &key,
            json!({"name": "child", "scopes": ["datasets:read", "search:query"]}),
        )
        .await;
    app.post("/v1/datasets", Some(&buyer), json!({"name": "No"}))
        .await
        .expect(403);
    let changed = app
        .patch(
            &format!("/v1/tenant/members/{buyer_id}"),
            Some(&owner),
            json!({"roles": ["seller_manager", "viewer"]}),
        )
        .await
        .expect(200);
    assert_eq!(changed.data()["roles"], json!(["seller_manager", "viewer"]));
    // The very next request holds the new roles: no new session needed.
    app.post("/v1/datasets", Some(&buyer), json!({"name": "Yes"}))
        .await
        .expect(201);
    let me = app.get("/v1/me", Some(&buyer)).await.expect(200);
    assert_eq!(me.data()["roles"], json!(["seller_manager", "viewer"]));
    // The keys lost what the buyer lost.
    for secret in [&key, &child] {
        let me = app.get("/v1/me", Some(secret)).await.expect(200);
        assert_eq!(scopes(&me), ["datasets:read"]);
        app.post("/v1/search", Some(secret), json!({"query": "x"}))
            .await
            .expect(403);
    }
    // And regain it when the role comes back.
    app.patch(
        &format!("/v1/tenant/members/{buyer_id}"),
        Some(&owner),
        json!({"roles": ["buyer_manager"]}),
    )
    .await
    .expect(200);
    let me = app.get("/v1/me", Some(&key)).await.expect(200);
    assert_eq!(scopes(&me), ["datasets:read", "search:query", "keys:write"]);
    app.finish().await;
}

#[tokio::test]
async fn removing_a_member_ends_their_sessions_at_once_and_leaves_their_keys_no_scope() {
    let app = spawn_app().await;
    let (owner, _, _) = app.signup(&email()).await;
    let (kept, kept_id, kept_email) = member(&app, &owner, &["buyer_manager"]).await;
    let second_session = app.login(&kept_email, PASSWORD).await.expect(200);
    let second_session = second_session.data()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let kept_key = app
        .post(
            "/v1/api-keys",
            Some(&kept),
            json!({"name": "stays", "scopes": ["datasets:read"]}),
        )
        .await
        .expect(201);
    let (kept_key_id, kept_key) = (
        kept_key.data()["api_key_id"].as_str().unwrap().to_owned(),
        kept_key.data()["key"].as_str().unwrap().to_owned(),
    );
    let removed = app
        .delete(&format!("/v1/tenant/members/{kept_id}"), Some(&owner))
        .await
        .expect(200);
    assert_eq!(removed.data()["removed"], true);
    assert_eq!(removed.data()["revoked_keys"], json!([]));
    for session in [&kept, &second_session] {
        assert_eq!(
            app.get("/v1/me", Some(session)).await.expect(401).code(),
            "unauthorized"
        );
    }
    assert_eq!(
        app.login(&kept_email, PASSWORD).await.expect(401).code(),
        "invalid_credentials"
    );
    // The key stays the tenant's, listed with its creator, and holds no scope.
    let listed = app
        .get(&format!("/v1/api-keys/{kept_key_id}"), Some(&owner))
        .await
        .expect(200);
    assert_eq!(listed.data()["created_by"], kept_id.as_str());
    assert_eq!(listed.data()["status"], "active");
    let me = app.get("/v1/me", Some(&kept_key)).await.expect(200);
    assert_eq!(scopes(&me), Vec::<String>::new());
    app.get("/v1/datasets", Some(&kept_key)).await.expect(403);
    let members = app
        .get("/v1/tenant/members", Some(&owner))
        .await
        .expect(200);
    assert_eq!(members.data()["items"].as_array().unwrap().len(), 1);
    // Removing again: not a member any more.
    app.delete(&format!("/v1/tenant/members/{kept_id}"), Some(&owner))
        .await
        .expect(404);

    // With revoke_keys, the member's keys (and their keys' keys) are revoked.
    let (gone, gone_id, _) = member(&app, &owner, &["buyer_manager"]).await;
    let parent = app
        .post(
            "/v1/api-keys",
            Some(&gone),
            json!({"name": "p", "scopes": ["datasets:read", "keys:write"]}),
        )
        .await
        .expect(201);
    let parent_secret = parent.data()["key"].as_str().unwrap().to_owned();
    let child = app
        .post(
            "/v1/api-keys",
            Some(&parent_secret),
            json!({"name": "c", "scopes": ["datasets:read"]}),
        )
        .await
        .expect(201);
    let child_id = child.data()["api_key_id"].as_str().unwrap().to_owned();
    app.delete(
        &format!("/v1/tenant/members/{gone_id}?revoke_keys=maybe"),
        Some(&owner),
    )
    .await
    .expect(422);
    let removed = app
        .delete(
            &format!("/v1/tenant/members/{gone_id}?revoke_keys=true"),
            Some(&owner),
        )
        .await
        .expect(200);
    let mut revoked: Vec<String> = removed.data()["revoked_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    revoked.sort();
    let mut expected = vec![
        parent.data()["api_key_id"].as_str().unwrap().to_owned(),
        child_id.clone(),
    ];
    expected.sort();
    assert_eq!(revoked, expected);
    app.get("/v1/me", Some(&parent_secret)).await.expect(401);
    let child_row = app
        .get(&format!("/v1/api-keys/{child_id}"), Some(&owner))
        .await
        .expect(200);
    assert_eq!(child_row.data()["status"], "revoked");
    app.finish().await;
}

#[tokio::test]
async fn the_last_owner_stays_and_only_owners_touch_owners() {
    let app = spawn_app().await;
    let (owner, owner_id, _) = app.signup(&email()).await;
    let (admin, admin_id, _) = member(&app, &owner, &["admin"]).await;
    let (_, viewer_id, _) = member(&app, &owner, &["viewer"]).await;
    let refused = |reply: Reply, code: &str| assert_eq!(reply.code(), code, "{}", reply.body);

    // The only owner can neither be demoted nor leave.
    refused(
        app.patch(
            &format!("/v1/tenant/members/{owner_id}"),
            Some(&owner),
            json!({"roles": ["admin"]}),
        )
        .await
        .expect(409),
        "last_owner",
    );
    refused(
        app.delete(&format!("/v1/tenant/members/{owner_id}"), Some(&owner))
            .await
            .expect(409),
        "last_owner",
    );
    // An admin does not grant, take or remove owner, invite an owner, or change their own roles.
    for reply in [
        app.patch(
            &format!("/v1/tenant/members/{viewer_id}"),
            Some(&admin),
            json!({"roles": ["owner"]}),
        )
        .await,
        app.patch(
            &format!("/v1/tenant/members/{owner_id}"),
            Some(&admin),
            json!({"roles": ["viewer"]}),
        )
        .await,
        app.delete(&format!("/v1/tenant/members/{owner_id}"), Some(&admin))
            .await,
        app.post(
            "/v1/tenant/invitations",
            Some(&admin),
            json!({"email": email(), "roles": ["owner"]}),
        )
        .await,
        app.patch(
            &format!("/v1/tenant/members/{admin_id}"),
            Some(&admin),
            json!({"roles": ["admin", "viewer"]}),
        )
        .await,
        app.post(
            "/v1/tenant/ownership",
            Some(&admin),
            json!({"user_id": admin_id}),
        )
        .await,
    ] {
        refused(reply.expect(403), "forbidden");
    }
    // An admin manages the other roles.
    app.patch(
        &format!("/v1/tenant/members/{viewer_id}"),
        Some(&admin),
        json!({"roles": ["operator"]}),
    )
    .await
    .expect(200);
    // Roles must be known and at least one.
    for roles in [json!([]), json!(["root"]), json!("viewer")] {
        let reply = app
            .patch(
                &format!("/v1/tenant/members/{viewer_id}"),
                Some(&owner),
                json!({"roles": roles}),
            )
            .await;
        assert!(
            matches!(reply.status.as_u16(), 400 | 422),
            "{roles}: {}",
            reply.body
        );
    }

    // The owner hands ownership over and becomes an admin.
    app.post(
        "/v1/tenant/ownership",
        Some(&owner),
        json!({"user_id": owner_id}),
    )
    .await
    .expect(403);
    let transferred = app
        .post(
            "/v1/tenant/ownership",
            Some(&owner),
            json!({"user_id": admin_id}),
        )
        .await
        .expect(200);
    assert_eq!(transferred.data()["owner"]["user_id"], admin_id.as_str());
    assert_eq!(
        transferred.data()["owner"]["roles"],
        json!(["owner", "admin"])
    );
    assert_eq!(
        transferred.data()["previous_owner"]["roles"],
        json!(["admin"])
    );
    let me = app.get("/v1/me", Some(&owner)).await.expect(200);
    assert_eq!(me.data()["roles"], json!(["admin"]));
    // The former owner can no longer hand it over; the new owner may remove them.
    app.post(
        "/v1/tenant/ownership",
        Some(&owner),
        json!({"user_id": viewer_id}),
    )
    .await
    .expect(403);
    app.delete(&format!("/v1/tenant/members/{owner_id}"), Some(&admin))
        .await
        .expect(200);
    app.finish().await;
}

#[tokio::test]
async fn invitations_are_refused_for_taken_or_invited_addresses_and_revoked_ones_open_nothing() {
    let app = spawn_app().await;
    let (owner, _, _) = app.signup(&email()).await;
    let registered = email();
    app.signup(&registered).await;
    let refused = app
        .post(
            "/v1/tenant/invitations",
            Some(&owner),
            json!({"email": registered, "roles": ["viewer"]}),
        )
        .await
        .expect(409);
    assert_eq!(refused.code(), "email_taken");
    let address = email();
    let (invitation, token) = invite(&app, &owner, &address, &["viewer"]).await;
    let again = app
        .post(
            "/v1/tenant/invitations",
            Some(&owner),
            json!({"email": address, "roles": ["operator"]}),
        )
        .await
        .expect(409);
    assert_eq!(again.code(), "already_invited");
    for body in [
        json!({"email": "nope", "roles": ["viewer"]}),
        json!({"email": email()}),
        json!({"email": email(), "roles": ["viewer"], "extra": 1}),
    ] {
        app.post("/v1/tenant/invitations", Some(&owner), body)
            .await
            .expect(422);
    }

    let revoked = app
        .delete(
            &format!("/v1/tenant/invitations/{invitation}"),
            Some(&owner),
        )
        .await
        .expect(200);
    assert_eq!(revoked.data()["status"], "revoked");
    app.delete(
        &format!("/v1/tenant/invitations/{invitation}"),
        Some(&owner),
    )
    .await
    .expect(200);
    assert_eq!(
        accept(&app, &token).await.expect(410).code(),
        "invitation_expired"
    );
    // The address may be invited again once the invitation is revoked.
    let (used, token) = invite(&app, &owner, &address, &["viewer"]).await;
    accept(&app, &token).await.expect(201);
    let accepted = app
        .delete(&format!("/v1/tenant/invitations/{used}"), Some(&owner))
        .await
        .expect(409);
    assert_eq!(accepted.code(), "invalid_state");
    // A token nobody issued is not found; a malformed body is refused.
    assert_eq!(
        accept(&app, "invt_00000000000000000000000000")
            .await
            .expect(404)
            .code(),
        "not_found"
    );
    app.post(
        "/v1/invitations/accept",
        None,
        json!({"token": token, "password": "short", "display_name": "X"}),
    )
    .await
    .expect(422);
    app.post(
        "/v1/invitations/accept",
        None,
        json!({"token": "x".repeat(65), "password": PASSWORD, "display_name": "X"}),
    )
    .await
    .expect(422);
    app.finish().await;
}

#[tokio::test]
async fn an_invitation_expires_after_seven_days() {
    let fresh = fresh().await;
    let app = spawn_with(config(&fresh)).await;
    let owner_email = email();
    app.signup(&owner_email).await;
    let owner = app.login(&owner_email, PASSWORD).await.expect(200);
    let owner = owner.data()["session_token"].as_str().unwrap().to_owned();
    let address = email();
    let (invitation, token) = invite(&app, &owner, &address, &["viewer"]).await;
    let (_, fresh_token) = invite(&app, &owner, &email(), &["viewer"]).await;
    app.stop().await;

    // A minute short of seven days, it still opens; seven days and a minute on, it does not.
    let mut almost = config(&fresh);
    almost.clock_offset_seconds = 7 * 86_400 - 60;
    let app = spawn_with(almost).await;
    accept(&app, &fresh_token).await.expect(201);
    app.stop().await;
    let mut later = config(&fresh);
    later.clock_offset_seconds = 7 * 86_400 + 60;
    let app = spawn_with(later).await;
    assert_eq!(
        accept(&app, &token).await.expect(410).code(),
        "invitation_expired"
    );
    // The owner's session has expired too: they sign in again and see the invitation expired.
    let owner = app.login(&owner_email, PASSWORD).await.expect(200);
    let owner = owner.data()["session_token"].as_str().unwrap().to_owned();
    let listed = app
        .get("/v1/tenant/invitations", Some(&owner))
        .await
        .expect(200);
    let expired = listed.data()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["invitation_id"] == invitation.as_str())
        .unwrap()
        .clone();
    assert_eq!(expired["status"], "expired");
    // The address may be invited again.
    invite(&app, &owner, &address, &["viewer"]).await;
    app.finish().await;
}

#[tokio::test]
async fn concurrent_accepts_of_one_token_make_exactly_one_member() {
    let app = spawn_app().await;
    let (owner, _, _) = app.signup(&email()).await;
    let address = email();
    let (_, token) = invite(&app, &owner, &address, &["viewer"]).await;
    let replies = futures::future::join_all((0..8).map(|_| accept(&app, &token))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 410),
        "{statuses:?}"
    );
    settled(&app.state).await;
    let users = table(
        &app.state,
        &format!("SELECT user_id FROM users WHERE email = '{address}'"),
    )
    .await;
    assert_eq!(users.len(), 1);
    let members = app
        .get("/v1/tenant/members", Some(&owner))
        .await
        .expect(200);
    assert_eq!(members.data()["items"].as_array().unwrap().len(), 2);
    // Only the winner holds a password.
    let credentials = table(&app.state, "SELECT user_id FROM credentials").await;
    assert_eq!(credentials.len(), 2, "{credentials:?}");
    app.finish().await;
}

#[tokio::test]
async fn api_keys_never_manage_members_but_may_list_them() {
    let app = spawn_app().await;
    let (owner, owner_id, _) = app.signup(&email()).await;
    let key = app
        .api_key(
            &owner,
            json!({"name": "all", "scopes": ["datasets:read", "usage:read", "keys:write"]}),
        )
        .await;
    for reply in [
        app.post(
            "/v1/tenant/invitations",
            Some(&key),
            json!({"email": email(), "roles": ["viewer"]}),
        )
        .await,
        app.get("/v1/tenant/invitations", Some(&key)).await,
        app.patch(
            &format!("/v1/tenant/members/{owner_id}"),
            Some(&key),
            json!({"roles": ["viewer"]}),
        )
        .await,
        app.delete(&format!("/v1/tenant/members/{owner_id}"), Some(&key))
            .await,
        app.post(
            "/v1/tenant/ownership",
            Some(&key),
            json!({"user_id": owner_id}),
        )
        .await,
    ] {
        assert_eq!(reply.expect(403).code(), "forbidden");
    }
    let members = app.get("/v1/tenant/members", Some(&key)).await.expect(200);
    assert_eq!(members.data()["items"][0]["user_id"], owner_id.as_str());
    app.finish().await;
}

#[tokio::test]
async fn members_and_invitations_page_with_cursors() {
    let app = spawn_app().await;
    let (owner, _, _) = app.signup(&email()).await;
    for _ in 0..3 {
        member(&app, &owner, &["viewer"]).await;
        invite(&app, &owner, &email(), &["operator"]).await;
    }
    for (path, total, id) in [
        ("/v1/tenant/members", 4, "user_id"),
        ("/v1/tenant/invitations", 6, "invitation_id"),
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = cursor.map_or(String::new(), |c| format!("&cursor={c}"));
            let page = app
                .get(&format!("{path}?limit=2{query}"), Some(&owner))
                .await
                .expect(200);
            let items = page.data()["items"].as_array().unwrap().clone();
            assert!(items.len() <= 2);
            seen.extend(items.iter().map(|i| i[id].as_str().unwrap().to_owned()));
            match page.data()["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            (seen.len(), unique.len()),
            (total, total),
            "{path}: {seen:?}"
        );
        let first = app
            .get(&format!("{path}?limit=2"), Some(&owner))
            .await
            .expect(200);
        let cursor = first.data()["next_cursor"].as_str().unwrap().to_owned();
        // A cursor belongs to its list.
        let other = if path.ends_with("members") {
            "/v1/tenant/invitations"
        } else {
            "/v1/tenant/members"
        };
        app.get(&format!("{other}?cursor={cursor}"), Some(&owner))
            .await
            .expect(400);
    }
    app.finish().await;
}

/// An SMTP sink on loopback (aiosmtpd from PyPI) that writes each message it receives into a
/// maildir; stopped when dropped.
struct SmtpSink {
    port: u16,
    maildir: std::path::PathBuf,
    child: std::process::Child,
}

impl SmtpSink {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let maildir =
            std::env::temp_dir().join(format!("ipto-mail-{}", uuid::Uuid::new_v4().simple()));
        let child = std::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd) runs the SMTP sink");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the SMTP sink did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Self {
            port,
            maildir,
            child,
        }
    }

    /// The messages received so far, as raw text.
    fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}

/// A quoted-printable body as plain text (soft line breaks joined, `=3D` decoded).
fn unfold(raw: &str) -> String {
    raw.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

#[tokio::test]
async fn with_smtp_configured_the_invitation_is_mailed_with_its_accept_link() {
    let sink = SmtpSink::start().await;
    let fresh = fresh().await;
    let mut config = config(&fresh);
    config.smtp_url = Some(format!("smtp://127.0.0.1:{}", sink.port));
    config.smtp_from = "Acme Market <market@acme.example>".into();
    config.public_url = Some("https://market.acme.example/".into());
    let app = spawn_with(config).await;
    let (owner, _, _) = app.signup(&email()).await;
    let address = email();
    let invited = app
        .post(
            "/v1/tenant/invitations",
            Some(&owner),
            json!({"email": address, "roles": ["operator"]}),
        )
        .await
        .expect(201);
    assert_eq!(invited.data()["mailed"], true);
    let token = invited.data()["token"].as_str().unwrap().to_owned();
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = unfold(&messages[0]);
    assert!(message.contains(&format!("To: {address}")), "{message}");
    assert!(
        message.contains("From: \"Acme Market\" <market@acme.example>")
            || message.contains("From: Acme Market <market@acme.example>"),
        "{message}"
    );
    assert!(
        message.contains("Subject: You are invited to join Test Tenant on ipto"),
        "{message}"
    );
    let link = format!("https://market.acme.example/invitations/accept#token={token}");
    assert!(message.contains(&link), "{message}");
    assert!(message.contains("operator"), "{message}");
    // The token read from the mail joins.
    let from_mail = message
        .split("#token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    accept(&app, &from_mail).await.expect(201);
    app.finish().await;
}

#[tokio::test]
async fn without_smtp_nothing_is_mailed_and_an_unreachable_relay_still_answers_with_the_token() {
    let fresh = fresh().await;
    let mut config = config(&fresh);
    // Nothing listens on the relay's port: the invitation is made, the mail is not sent.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
    let app = spawn_with(config).await;
    let (owner, _, _) = app.signup(&email()).await;
    let invited = app
        .post(
            "/v1/tenant/invitations",
            Some(&owner),
            json!({"email": email(), "roles": ["viewer"]}),
        )
        .await
        .expect(201);
    assert_eq!(invited.data()["mailed"], false);
    accept(&app, invited.data()["token"].as_str().unwrap())
        .await
        .expect(201);
    app.finish().await;
}

#[tokio::test]
async fn a_joining_cut_short_after_its_reservation_is_completed_or_released_by_the_reactor() {
    use aggregates::email_reservation::{EmailReservationCommand, Joining};
    use aggregates::{DisplayName, Email, EmailReservation, InvitationId, TenantId, UserId};
    let app = spawn_app().await;
    let (owner, _, tenant) = app.signup(&email()).await;
    let store = &app.state.store;
    // What an accept stopped right after reserving the address leaves behind: the reservation.
    let reserve = |address: &str, invitation: &str| {
        let joining = Joining {
            email: Email::parse(address).unwrap(),
            user_id: UserId::generate(),
            tenant_id: TenantId::parse(&tenant).unwrap(),
            display_name: DisplayName::parse("Cut Short").unwrap(),
            invitation_id: InvitationId::parse(invitation).unwrap(),
            accepted_at: store.clock.now(),
        };
        let id = app.state.key.email_reservation_id(address);
        async move {
            store
                .execute::<EmailReservation>(
                    &id,
                    EmailReservationCommand::ReserveForMember(joining.clone()),
                    &(),
                    &ipto::store::Actor::system(),
                )
                .await
                .unwrap();
            joining.user_id.to_string()
        }
    };
    let address = email();
    let (invitation, _) = invite(&app, &owner, &address, &["operator"]).await;
    let user_id = reserve(&address, &invitation).await;
    // The reactor records the acceptance and registers the member.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let members = app
            .get("/v1/tenant/members", Some(&owner))
            .await
            .expect(200);
        let found = members.data()["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user_id"] == user_id.as_str())
            .cloned();
        if let Some(found) = found {
            assert_eq!(found["roles"], json!(["operator"]));
            assert_eq!(found["display_name"], "Cut Short");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the joining was not completed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A joining whose invitation was revoked meanwhile is released: the address is free again.
    let address = email();
    let (invitation, _) = invite(&app, &owner, &address, &["viewer"]).await;
    app.delete(
        &format!("/v1/tenant/invitations/{invitation}"),
        Some(&owner),
    )
    .await
    .expect(200);
    let refused = reserve(&address, &invitation).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let reservation = store
            .load::<EmailReservation>(&app.state.key.email_reservation_id(&address))
            .await
            .unwrap();
        if reservation.user_id().is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the joining was not released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    settled(&app.state).await;
    let users = table(
        &app.state,
        &format!("SELECT user_id FROM users WHERE user_id = '{refused}'"),
    )
    .await;
    assert!(users.is_empty());
    app.signup(&address).await;
    app.finish().await;
}

#[tokio::test]
async fn erasing_a_member_erases_the_address_of_the_invitation_they_accepted() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (owner, _, _) = app.signup(&email()).await;
    let (_, user_id, address) = member(&app, &owner, &["viewer"]).await;
    let erased = app
        .post(
            &format!("/v1/admin/users/{user_id}/erase"),
            Some(&admin),
            json!({}),
        )
        .await
        .expect(200);
    let subjects = erased.data()["erased_subjects"].as_array().unwrap().clone();
    assert!(
        subjects
            .iter()
            .any(|s| s.as_str().unwrap().starts_with("inv_")),
        "{subjects:?}"
    );
    settled(&app.state).await;
    let invitations = app
        .get("/v1/tenant/invitations", Some(&owner))
        .await
        .expect(200);
    let shown = invitations.data()["items"][0]["email"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(shown, address);
    assert!(shown.ends_with("@erased.invalid"), "{shown}");
    let rows = table(&app.state, "SELECT email FROM invitations").await;
    assert!(!format!("{rows:?}").contains(&address), "{rows:?}");
    app.finish().await;
}

#[tokio::test]
async fn the_owner_of_a_tenant_created_before_members_were_recorded_is_recorded_as_founder() {
    use aggregates::user::{Profile, UserCommand};
    use aggregates::{DisplayName, Email, Role, TenantId, User, UserId};
    let app = spawn_app().await;
    let store = &app.state.store;
    // A tenant as signup created it before tenants named their owner, and its owner.
    let tenant = TenantId::generate();
    let user = UserId::generate();
    let address = email();
    let cast = if on_postgres() { "::jsonb" } else { "" };
    sqlx::query(&format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('tenant', $1, 1, 'TenantCreated', '1.0', $2{cast}, $3{cast})"
    ))
    .bind(tenant.as_str())
    .bind(json!({"TenantCreated": {"tenant_id": tenant, "name": "Old"}}).to_string())
    .bind(json!({"actor_type": "system", "actor_id": "system", "occurred_at": "2026-01-01T00:00:00.000000Z"}).to_string())
    .execute(&store.db.pool)
    .await
    .unwrap();
    let profile = Profile {
        user_id: user.clone(),
        tenant_id: tenant.clone(),
        email: Email::parse(&address).unwrap(),
        display_name: DisplayName::parse("Founder").unwrap(),
        roles: vec![Role::Owner],
    };
    store
        .execute::<User>(
            user.as_str(),
            UserCommand::Register(profile),
            &(),
            &ipto::store::Actor::system(),
        )
        .await
        .unwrap();
    sqlx::query("INSERT INTO credentials (user_id, password_hash, updated_at) VALUES ($1, $2, $3)")
        .bind(user.as_str())
        .bind(ipto::auth::hash_password(PASSWORD.into()).await.unwrap())
        .bind("2026-01-01T00:00:00.000000Z")
        .execute(&store.db.pool)
        .await
        .unwrap();
    store.engine.notify();
    settled(&app.state).await;

    let session = app.login(&address, PASSWORD).await.expect(200);
    let session = session.data()["session_token"].as_str().unwrap().to_owned();
    // Before anything is recorded, the owner is the one they registered as.
    let me = app.get("/v1/me", Some(&session)).await.expect(200);
    assert_eq!(me.data()["roles"], json!(["owner"]));
    let members = app
        .get("/v1/tenant/members", Some(&session))
        .await
        .expect(200);
    assert_eq!(members.data()["items"][0]["roles"], json!(["owner"]));
    let founded = "SELECT COUNT(*) FROM events WHERE event_type = 'FounderRecorded'";
    assert_eq!(table(&app.state, founded).await[0][0], "0");
    // Their first membership command records them, once; the tenant's rules then hold.
    let (_, viewer, _) = member(&app, &session, &["viewer"]).await;
    invite(&app, &session, &email(), &["operator"]).await;
    assert_eq!(table(&app.state, founded).await[0][0], "1");
    app.patch(
        &format!("/v1/tenant/members/{user}"),
        Some(&session),
        json!({"roles": ["admin"]}),
    )
    .await
    .expect(409);
    app.patch(
        &format!("/v1/tenant/members/{viewer}"),
        Some(&session),
        json!({"roles": ["operator"]}),
    )
    .await
    .expect(200);
    app.finish().await;
}
