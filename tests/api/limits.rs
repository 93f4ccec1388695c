//! Bounds a buyer sets on what it pays: `max_price_per_result` on a search, `max_charge` on a
//! download, and a key's monthly `spend_limit`, which holds under concurrent use.

use futures::StreamExt;
use serde_json::{json, Value};

use crate::helpers::*;

/// A listed dataset of the seller with one approved object holding `text`; returns (dataset, object).
async fn for_sale(
    app: &TestApp,
    admin: &str,
    (seller, tenant): (&str, &str),
    fields: Value,
    text: &[u8],
) -> (String, String) {
    let mut body = json!({"visibility": "listed"});
    for (k, v) in fields.as_object().cloned().unwrap_or_default() {
        body[k] = v;
    }
    let dataset = app.dataset(seller, body).await;
    let object = app.staged_object(seller, &dataset, text).await;
    app.post(
        &format!("/v1/admin/review/objects/{tenant}/{object}/approve"),
        Some(admin),
        json!({}),
    )
    .await
    .expect(200);
    (dataset, object)
}

/// A key of `token`'s tenant with these extra fields; returns (key id, key).
async fn key(app: &TestApp, token: &str, fields: Value) -> (String, String) {
    let mut body =
        json!({"name": "agent", "scopes": ["datasets:read", "search:query", "usage:read"]});
    for (k, v) in fields.as_object().cloned().unwrap_or_default() {
        body[k] = v;
    }
    let reply = app
        .post("/v1/api-keys", Some(token), body)
        .await
        .expect(201);
    (
        reply.data()["api_key_id"].as_str().unwrap().to_owned(),
        reply.data()["key"].as_str().unwrap().to_owned(),
    )
}

/// An amount in micro-USD.
fn micros(value: &Value) -> i64 {
    (value
        .as_f64()
        .unwrap_or_else(|| panic!("not an amount: {value}"))
        * 1e6)
        .round() as i64
}

/// How many accesses the buyer has, and its total spend in micro-USD.
async fn bought(app: &TestApp, token: &str) -> (i64, i64) {
    let dashboard = app
        .get("/v1/buyer/dashboard", Some(token))
        .await
        .expect(200);
    (
        dashboard.data()["access_count"].as_i64().unwrap(),
        micros(&dashboard.data()["total_spend"]),
    )
}

fn field_error(reply: &Reply, field: &str) -> bool {
    reply.body["error"]["details"]["fields"][field].is_string()
}

#[tokio::test]
async fn a_search_leaves_out_and_does_not_charge_results_priced_above_its_maximum() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller, _, seller_tenant) = app.signup(&email()).await;
    let (buyer, _, buyer_tenant) = app.signup(&email()).await;
    let seller_side = (seller.as_str(), seller_tenant.as_str());
    let (cheap, cheap_object) = for_sale(
        &app,
        &admin,
        seller_side,
        json!({"price_per_result": "0.01"}),
        b"quartz",
    )
    .await;
    // The dear object ranks first: it matches the query three times.
    let (_, dear_object) = for_sale(
        &app,
        &admin,
        seller_side,
        json!({"price_per_result": "0.5"}),
        b"quartz quartz quartz",
    )
    .await;
    // The buyer's own dataset is free to it, whatever its price.
    let (_, own_object) = for_sale(
        &app,
        &admin,
        (buyer.as_str(), buyer_tenant.as_str()),
        json!({"price_per_result": "5"}),
        b"quartz",
    )
    .await;

    let all = app
        .post("/v1/search", Some(&buyer), json!({"query": "quartz"}))
        .await
        .expect(200);
    assert_eq!(all.data()["result_count"], 3);
    assert_eq!(micros(&all.data()["charged_amount"]), 510_000);

    let bounded = app
        .post(
            "/v1/search",
            Some(&buyer),
            json!({"query": "quartz", "max_price_per_result": 0.1}),
        )
        .await
        .expect(200);
    let objects: Vec<&str> = bounded.data()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["object_id"].as_str().unwrap())
        .collect();
    assert_eq!(objects.len(), 2, "{}", bounded.body);
    assert!(objects.contains(&cheap_object.as_str()) && objects.contains(&own_object.as_str()));
    assert!(!objects.contains(&dear_object.as_str()));
    assert_eq!(micros(&bounded.data()["charged_amount"]), 10_000);
    // An excluded result does not take a place of the limit.
    let one = app
        .post(
            "/v1/search",
            Some(&buyer),
            json!({"query": "quartz", "max_price_per_result": "0.01", "limit": 1, "dataset_ids": [cheap]}),
        )
        .await
        .expect(200);
    assert_eq!(one.data()["results"][0]["object_id"], cheap_object.as_str());
    let at_most_own = app
        .post(
            "/v1/search",
            Some(&buyer),
            json!({"query": "quartz", "max_price_per_result": 0, "limit": 1}),
        )
        .await
        .expect(200);
    assert_eq!(
        at_most_own.data()["results"][0]["object_id"],
        own_object.as_str()
    );
    assert_eq!(micros(&at_most_own.data()["charged_amount"]), 0);

    // The provider raises the price: the bounded search no longer pays it.
    app.patch(
        &format!("/v1/datasets/{cheap}"),
        Some(&seller),
        json!({"price_per_result": 1000000}),
    )
    .await
    .expect(200);
    let (accesses, spent) = bought(&app, &buyer).await;
    let raised = app
        .post(
            "/v1/search",
            Some(&buyer),
            json!({"query": "quartz", "max_price_per_result": "0.1", "dataset_ids": [cheap]}),
        )
        .await
        .expect(200);
    assert_eq!(raised.data()["result_count"], 0);
    assert_eq!(micros(&raised.data()["charged_amount"]), 0);
    assert_eq!(bought(&app, &buyer).await, (accesses, spent));

    for bad in [
        json!(-1),
        json!("0.0000001"),
        json!(1000001),
        json!("abc"),
        json!(""),
    ] {
        let reply = app
            .post(
                "/v1/search",
                Some(&buyer),
                json!({"query": "quartz", "max_price_per_result": bad}),
            )
            .await
            .expect(422);
        assert!(
            field_error(&reply, "max_price_per_result"),
            "{}",
            reply.body
        );
    }
    app.post(
        "/v1/search",
        Some(&buyer),
        json!({"query": "quartz", "max_price_per_result": true}),
    )
    .await
    .expect(400);
    assert_eq!(bought(&app, &buyer).await, (accesses, spent));
    app.finish().await;
}

#[tokio::test]
async fn a_download_over_max_charge_is_refused_and_charges_nothing() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller, _, seller_tenant) = app.signup(&email()).await;
    let (buyer, _, _) = app.signup(&email()).await;
    let (dataset, object) = for_sale(
        &app,
        &admin,
        (seller.as_str(), seller_tenant.as_str()),
        json!({"price_per_result": "0.05"}),
        b"bytes",
    )
    .await;
    let path = format!("/v1/objects/{object}/download");

    let refused = app
        .get(&format!("{path}?max_charge=0.499999"), Some(&buyer))
        .await
        .expect(402);
    assert_eq!(refused.code(), "charge_limit_exceeded");
    assert_eq!(
        refused.body["error"]["details"],
        json!({"max_charge": 0.499999, "charge": 0.5})
    );
    assert_eq!(bought(&app, &buyer).await, (0, 0));
    let paid = app
        .get(&format!("{path}?max_charge=0.5"), Some(&buyer))
        .await
        .expect(200);
    assert_eq!(micros(&paid.data()["charged_amount"]), 500_000);
    assert_eq!(bought(&app, &buyer).await, (1, 500_000));
    // The owner's own download is free, so no bound refuses it.
    app.get(&format!("{path}?max_charge=0"), Some(&seller))
        .await
        .expect(200);

    app.patch(
        &format!("/v1/datasets/{dataset}"),
        Some(&seller),
        json!({"price_per_result": "1000000"}),
    )
    .await
    .expect(200);
    let raised = app
        .get(&format!("{path}?max_charge=1"), Some(&buyer))
        .await
        .expect(402);
    assert_eq!(raised.code(), "charge_limit_exceeded");
    assert_eq!(bought(&app, &buyer).await, (1, 500_000));

    // An empty value is refused too: a bound left blank by mistake must not mean "any price".
    for bad in ["-1", "abc", "0.0000001", "10000000.000001", "1e3", ""] {
        let reply = app
            .get(&format!("{path}?max_charge={bad}"), Some(&buyer))
            .await
            .expect(422);
        assert!(field_error(&reply, "max_charge"), "{bad}: {}", reply.body);
    }
    app.get(&format!("{path}?max_charge=10000000"), Some(&buyer))
        .await
        .expect(200);
    app.finish().await;
}

#[tokio::test]
async fn a_keys_spend_limit_is_validated_and_shown_in_every_key_view() {
    let app = spawn_app().await;
    let (owner, _, _) = app.signup(&email()).await;
    let created = app
        .post(
            "/v1/api-keys",
            Some(&owner),
            json!({"name": "capped", "scopes": ["datasets:read"], "spend_limit": 12.5}),
        )
        .await
        .expect(201);
    assert_eq!(created.data()["spend_limit"], json!(12.5));
    let id = created.data()["api_key_id"].as_str().unwrap().to_owned();
    let shown = app
        .get(&format!("/v1/api-keys/{id}"), Some(&owner))
        .await
        .expect(200);
    assert_eq!(shown.data()["spend_limit"], json!(12.5));
    let (open, _) = key(&app, &owner, json!({"spend_limit": "0"})).await;
    let (unlimited, _) = key(&app, &owner, json!({})).await;
    let listed = app.get("/v1/api-keys", Some(&owner)).await.expect(200);
    let limit_of = |key: &str| -> Value {
        listed.data()["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["api_key_id"] == key)
            .unwrap()["spend_limit"]
            .clone()
    };
    assert_eq!(limit_of(&id), json!(12.5));
    assert_eq!(limit_of(&open), json!(0));
    assert_eq!(limit_of(&unlimited), json!(null));

    for bad in [
        json!(-1),
        json!("1.0000001"),
        json!("x"),
        json!(1e13),
        json!(""),
    ] {
        let reply = app
            .post(
                "/v1/api-keys",
                Some(&owner),
                json!({"name": "bad", "scopes": ["datasets:read"], "spend_limit": bad}),
            )
            .await
            .expect(422);
        assert!(field_error(&reply, "spend_limit"), "{}", reply.body);
    }
    app.post(
        "/v1/api-keys",
        Some(&owner),
        json!({"name": "bad", "scopes": ["datasets:read"], "spend_limit": [1]}),
    )
    .await
    .expect(400);
    app.finish().await;
}

/// Twenty downloads of one key at once, when its limit allows five: exactly five are charged,
/// the rest refused with nothing charged; the month after, the key spends again.
#[tokio::test]
async fn concurrent_downloads_of_one_key_never_pass_its_spend_limit() {
    let fresh = fresh().await;
    let mut settings = config(&fresh);
    settings.session_ttl_seconds = 90 * 86_400;
    let (app, admin) = spawn_with_admin(settings.clone()).await;
    let (seller, _, seller_tenant) = app.signup(&email()).await;
    let (buyer, _, _) = app.signup(&email()).await;
    let (_, object) = for_sale(
        &app,
        &admin,
        (seller.as_str(), seller_tenant.as_str()),
        json!({"price_per_result": "0.1"}),
        b"limited",
    )
    .await;
    let (key_id, agent) = key(&app, &buyer, json!({"spend_limit": 5})).await;
    let path = format!("/v1/objects/{object}/download");

    let replies: Vec<Reply> = futures::stream::iter(0..20)
        .map(|_| app.get(&path, Some(&agent)))
        .buffer_unordered(20)
        .collect()
        .await;
    let paid: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 402).collect();
    assert_eq!(
        (paid.len(), refused.len()),
        (5, 15),
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    for reply in &refused {
        assert_eq!(reply.code(), "spend_limit_exceeded");
        assert_eq!(reply.body["error"]["details"]["spend_limit"], json!(5));
        assert_eq!(reply.body["error"]["details"]["charge"], json!(1));
    }
    assert_eq!(bought(&app, &buyer).await, (5, 5_000_000));
    let listed = app
        .get(
            &format!("/v1/agent/activity/accesses?api_key_id={key_id}"),
            Some(&buyer),
        )
        .await
        .expect(200);
    assert_eq!(listed.data()["total"], 5);
    let statement = app
        .get("/v1/provider/payouts", Some(&seller))
        .await
        .expect(200);
    assert_eq!(
        micros(&statement.data()["items"][0]["gross_amount"]),
        5_000_000
    );
    // A search that would charge is refused as well, and records nothing.
    let search = app
        .post("/v1/search", Some(&agent), json!({"query": "limited"}))
        .await
        .expect(402);
    assert_eq!(search.code(), "spend_limit_exceeded");
    let searches = app
        .get("/v1/agent/activity/searches", Some(&buyer))
        .await
        .expect(200);
    assert_eq!(searches.data()["total"], 0);
    // The buyer's session has no limit.
    app.get(&path, Some(&buyer)).await.expect(200);
    app.stop().await;

    // Forty days later it is another month: the key spends again.
    let mut later = settings;
    later.clock_offset_seconds = 40 * 86_400;
    let app = spawn_with(later).await;
    app.get(&path, Some(&agent)).await.expect(200);
    app.finish().await;
}

/// Searches and downloads of one key at once share its budget: what is charged never passes the
/// limit, and a refusal means the budget was nearly spent.
#[tokio::test]
async fn concurrent_searches_and_downloads_share_one_spend_limit() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller, _, seller_tenant) = app.signup(&email()).await;
    let (buyer, _, _) = app.signup(&email()).await;
    let (_, object) = for_sale(
        &app,
        &admin,
        (seller.as_str(), seller_tenant.as_str()),
        json!({"price_per_result": "0.5"}),
        b"shared budget",
    )
    .await;
    let (_, agent) = key(&app, &buyer, json!({"spend_limit": "7.5"})).await;
    let download = format!("/v1/objects/{object}/download");
    let replies: Vec<Reply> = futures::stream::iter(0..24)
        .map(|i| {
            let (app, agent, download) = (&app, agent.clone(), download.clone());
            async move {
                if i % 2 == 0 {
                    app.post("/v1/search", Some(&agent), json!({"query": "shared"}))
                        .await
                } else {
                    app.get(&download, Some(&agent)).await
                }
            }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    let mut charged = 0;
    for reply in &replies {
        match reply.status.as_u16() {
            200 => charged += micros(&reply.data()["charged_amount"]),
            402 => assert_eq!(reply.code(), "spend_limit_exceeded"),
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    // 12 searches at 0.5 and 12 downloads at 5 would cost 66; the largest charge is 5.
    assert!(
        charged <= 7_500_000 && charged > 2_500_000,
        "charged {charged}"
    );
    assert_eq!(bought(&app, &buyer).await.1, charged);
    app.finish().await;
}

/// Two instances on one database serve one key at once: each takes its own turns, so only the
/// optimistic lock on the key's month orders them, and still the limit holds.
#[tokio::test]
async fn two_instances_never_pass_a_keys_spend_limit_together() {
    let fresh = fresh().await;
    let (first, admin) = spawn_with_admin(config(&fresh)).await;
    let mut other = first.config.clone();
    other.index_dir = Some(other.data_dir.join("second-index"));
    let second = spawn_with(other).await;
    let (seller, _, seller_tenant) = first.signup(&email()).await;
    let (buyer, _, _) = first.signup(&email()).await;
    let (_, object) = for_sale(
        &first,
        &admin,
        (seller.as_str(), seller_tenant.as_str()),
        json!({"price_per_result": "0.1"}),
        b"two instances",
    )
    .await;
    let (_, agent) = key(&first, &buyer, json!({"spend_limit": 5})).await;
    let path = format!("/v1/objects/{object}/download");
    let replies: Vec<Reply> = futures::stream::iter(0..24)
        .map(|i| {
            let app = if i % 2 == 0 { &first } else { &second };
            app.get(&path, Some(&agent))
        })
        .buffer_unordered(24)
        .collect()
        .await;
    let mut paid = 0;
    for reply in &replies {
        match (reply.status.as_u16(), reply.code()) {
            (200, _) => paid += 1,
            (402, "spend_limit_exceeded") | (409, "concurrency_conflict") => {}
            _ => panic!("unexpected reply: {}", reply.body),
        }
    }
    assert!((1..=5).contains(&paid), "paid {paid}");
    settled(&first.state).await;
    assert_eq!(bought(&first, &buyer).await, (paid, paid * 1_000_000));
    second.stop().await;
    first.finish().await;
}

/// Whether `schema` (or a part of it, through `allOf` and `$ref`) describes `field` and requires it.
fn requires(schemas: &Value, schema: &Value, field: &str) -> bool {
    if let Some(name) = schema["$ref"].as_str().and_then(|r| r.rsplit('/').next()) {
        return requires(schemas, &schemas[name], field);
    }
    let own = schema["properties"][field].is_object()
        && schema["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!(field)));
    own || schema["allOf"]
        .as_array()
        .is_some_and(|parts| parts.iter().any(|p| requires(schemas, p, field)))
}

/// The three bounds, their 402s and the views' `spend_limit` are in the OpenAPI document.
#[tokio::test]
async fn the_document_describes_the_buyers_bounds() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json", None).await.expect(200).body;
    let schemas = &doc["components"]["schemas"];
    let search_body = &schemas["SearchQuery"]["properties"]["max_price_per_result"];
    assert!(search_body["oneOf"].is_array(), "{search_body}");
    let key_body = &schemas["KeyRequest"]["properties"]["spend_limit"];
    assert!(key_body["oneOf"].is_array(), "{key_body}");
    for view in ["ApiKey", "NewApiKey", "ApiKeyDetail"] {
        assert!(
            requires(schemas, &schemas[view], "spend_limit"),
            "{view}: {}",
            schemas[view]
        );
    }
    let download = &doc["paths"]["/v1/objects/{id}/download"]["get"];
    assert!(download["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "max_charge" && p["in"] == "query"));
    assert!(download["responses"]["402"].is_object());
    assert!(doc["paths"]["/v1/search"]["post"]["responses"]["402"].is_object());
    let codes = &schemas["Error402"]["properties"]["error"]["properties"]["code"]["enum"];
    assert_eq!(
        *codes,
        json!(["charge_limit_exceeded", "spend_limit_exceeded"])
    );
    // A schema-valid bound is accepted: the string patterns agree with the server.
    let max_charge = download["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "max_charge")
        .unwrap()["schema"]["pattern"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        max_charge,
        "^(0*\\d{1,7}(\\.\\d{1,6})?|0*10000000(\\.0{1,6})?)$"
    );
    app.finish().await;
}

#[tokio::test]
async fn keys_created_by_a_limited_key_spend_from_its_budget() {
    let (app, admin) = spawn_with_admin(config(&fresh().await)).await;
    let (seller, _, seller_tenant) = app.signup(&email()).await;
    let (buyer, _, _) = app.signup(&email()).await;
    let (_, object) = for_sale(
        &app,
        &admin,
        (seller.as_str(), seller_tenant.as_str()),
        json!({"price_per_result": "0.1"}),
        b"shared budget",
    )
    .await;
    // A parent that may spend 3 (three downloads) creates two children without limits.
    let (_, parent) = key(
        &app,
        &buyer,
        json!({"spend_limit": 3, "scopes": ["datasets:read", "keys:write"]}),
    )
    .await;
    let mut children = Vec::new();
    for name in ["a", "b"] {
        let child = app
            .post(
                "/v1/api-keys",
                Some(&parent),
                json!({"name": name, "scopes": ["datasets:read"]}),
            )
            .await
            .expect(201);
        children.push(child.data()["key"].as_str().unwrap().to_owned());
    }
    let path = format!("/v1/objects/{object}/download");
    let mut statuses = Vec::new();
    for child in children.iter().cycle().take(5) {
        statuses.push(app.get(&path, Some(child)).await.status.as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 200, 402, 402]);
    app.get(&path, Some(&parent)).await.expect(402);
    assert_eq!(bought(&app, &buyer).await, (3, 3_000_000));
    app.finish().await;
}
