//! `POST /v1/search`: the query language, who finds what, citations, charges and the views built
//! from searches (activity, dashboard, analytics).

use serde_json::{json, Value};

use crate::helpers::*;

/// A seller with a dataset: (session token, tenant id, dataset id).
async fn seller(app: &TestApp, fields: Value) -> (String, String, String) {
    let (token, _, tenant) = app.signup(&email()).await;
    let dataset = app.dataset(&token, fields).await;
    (token, tenant, dataset)
}

/// Uploads, confirms and (with `admin`) approves an object; returns its id.
pub async fn publish(
    app: &TestApp,
    seller: &str,
    tenant: &str,
    admin: Option<&str>,
    dataset: &str,
    upload: Value,
    bytes: &[u8],
) -> String {
    let mut body = upload;
    body["size_bytes"] = json!(bytes.len());
    let reply = app
        .post(
            &format!("/v1/datasets/{dataset}/objects/upload"),
            Some(seller),
            body,
        )
        .await
        .expect(201);
    let object = reply.data()["object_id"].as_str().unwrap().to_owned();
    let url = reply.data()["upload_url"].as_str().unwrap().to_owned();
    assert!(app.put_bytes(&url, bytes).await.status.is_success());
    app.post(
        &format!("/v1/objects/{object}/confirm"),
        Some(seller),
        json!({}),
    )
    .await
    .expect(200);
    if let Some(admin) = admin {
        app.post(
            &format!("/v1/admin/review/objects/{tenant}/{object}/approve"),
            Some(admin),
            json!({}),
        )
        .await
        .expect(200);
    }
    object
}

fn text_file(name: &str) -> Value {
    json!({"filename": name, "content_type": "text/plain"})
}

async fn search(app: &TestApp, token: &str, body: Value) -> Reply {
    app.post("/v1/search", Some(token), body).await
}

fn object_ids(reply: &Reply) -> Vec<String> {
    let mut ids: Vec<String> = reply.data()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["object_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| (*s).clone()).collect();
    v.sort();
    v
}

const INVOICE: &str = "Invoice 001. Quarterly services for Globex.\n\
    A VAT dispute with Acme in March delayed the payment of the final invoice.";

#[tokio::test]
async fn a_buyer_finds_approved_text_with_a_citation_and_pays_per_result() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller_token, seller_tenant, dataset) = seller(
        &app,
        json!({"name": "AP Invoices 2025", "visibility": "listed", "price_per_result": "0.05"}),
    )
    .await;
    let object = publish(
        &app,
        &seller_token,
        &seller_tenant,
        Some(&admin),
        &dataset,
        text_file("inv-001.txt"),
        INVOICE.as_bytes(),
    )
    .await;
    let (buyer, _, _) = app.signup(&email()).await;

    let found = search(
        &app,
        &buyer,
        json!({"query": "  acme ", "retrieval_mode": "hybrid"}),
    )
    .await
    .expect(200);
    let data = found.data();
    assert_eq!(data["retrieval_mode_used"], "hybrid");
    assert_eq!(data["result_count"], 1);
    assert_eq!(data["charged_amount"], json!(0.05));
    assert_eq!(data["currency"], "USD");
    let result = &data["results"][0];
    assert_eq!(result["object_id"], object.as_str());
    assert_eq!(result["dataset_id"], dataset.as_str());
    assert_eq!(result["dataset_name"], "AP Invoices 2025");
    assert_eq!(result["filename"], "inv-001.txt");
    assert_eq!(result["billable"], true);
    assert_eq!(result["charged_amount"], json!(0.05));
    // Hybrid: the fused standard score (0 for the only result).
    assert!(result["score"].as_f64().unwrap().is_finite());
    assert!(result["retrieval_event_id"]
        .as_str()
        .unwrap()
        .starts_with("ret_"));
    assert_eq!(result["citation"]["object_id"], object.as_str());
    // The locator points at the snippet in the extracted text, in characters.
    let snippet = result["snippet"].as_str().unwrap();
    assert!(snippet.contains("Acme"), "{snippet}");
    assert!(snippet.chars().count() <= 200);
    let locator = result["citation"]["locator"].as_str().unwrap();
    let (from, to) = locator
        .strip_prefix("chars:")
        .and_then(|r| r.split_once('-'))
        .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
        .unwrap_or_else(|| panic!("locator {locator}"));
    let cited: String = INVOICE.chars().skip(from).take(to - from).collect();
    assert_eq!(cited, snippet);
    let activity = data["search_activity_id"].as_str().unwrap().to_owned();
    assert!(activity.starts_with("sa_"));

    // The search shows in the buyer's activity, accesses, spend and dashboard at once.
    let searches = app
        .get("/v1/agent/activity/searches", Some(&buyer))
        .await
        .expect(200);
    assert_eq!(searches.data()["total"], 1);
    let item = &searches.data()["searches"][0];
    assert_eq!(item["search_activity_id"], activity.as_str());
    assert_eq!(item["query_text"], "acme");
    assert_eq!(item["dataset_ids"], json!([dataset]));
    assert_eq!(item["result_count"], 1);
    assert_eq!(item["charged_amount"], json!(0.05));
    assert_eq!(item["api_key_id"], Value::Null);
    let accesses = app
        .get("/v1/agent/activity/accesses?kind=retrieval", Some(&buyer))
        .await
        .expect(200);
    assert_eq!(accesses.data()["total"], 1);
    assert_eq!(
        accesses.data()["accesses"][0]["search_activity_id"],
        activity.as_str()
    );
    let dashboard = app
        .get("/v1/buyer/dashboard", Some(&buyer))
        .await
        .expect(200);
    assert_eq!(
        dashboard.data(),
        &json!({"api_key_count": 0, "active_api_key_count": 0, "search_count": 1, "access_count": 1,
                "total_spend": 0.05, "spend_last_30_days": 0.05, "currency": "USD"})
    );

    // The owner's own search is free, unrecorded as an access and not an appearance.
    let own = search(&app, &seller_token, json!({"query": "acme"}))
        .await
        .expect(200);
    assert_eq!(own.data()["results"][0]["billable"], false);
    assert_eq!(own.data()["results"][0]["charged_amount"], json!(0));
    assert_eq!(own.data()["charged_amount"], json!(0));
    // A search that finds nothing is still recorded (lexically: dense always finds a nearest).
    let none = search(
        &app,
        &buyer,
        json!({"query": "nothingmatches", "retrieval_mode": "lexical"}),
    )
    .await
    .expect(200);
    assert_eq!(none.data()["result_count"], 0);
    assert_eq!(none.data()["results"], json!([]));
    let searches = app
        .get("/v1/agent/activity/searches", Some(&buyer))
        .await
        .expect(200);
    assert_eq!(searches.data()["total"], 2);
    assert_eq!(searches.data()["searches"][0]["dataset_ids"], json!([]));

    let analytics = app
        .get(
            &format!("/v1/provider/datasets/{dataset}/analytics"),
            Some(&seller_token),
        )
        .await
        .expect(200);
    let a = analytics.data();
    assert_eq!(a["dataset_name"], "AP Invoices 2025");
    assert_eq!(a["object_count"], 1);
    assert_eq!(a["search_appearances"], 1);
    assert_eq!(a["retrievals"], 1);
    assert_eq!(a["downloads"], 0);
    assert_eq!(a["unique_buyers"], 1);
    assert_eq!(a["gross_revenue"], json!(0.05));
    assert_eq!(a["provider_earnings"], json!(0.04));
    assert_eq!(a["top_queries"], json!([{"query": "acme", "count": 1}]));
    let daily = a["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 30);
    assert_eq!(daily.last().unwrap()["retrievals"], 1);
    assert_eq!(daily.last().unwrap()["gross_revenue"], json!(0.05));
    // Analytics are the owner's: another tenant gets 404.
    app.get(
        &format!("/v1/provider/datasets/{dataset}/analytics"),
        Some(&buyer),
    )
    .await
    .expect(404);
    app.finish().await;
}

#[tokio::test]
async fn the_query_language_combines_terms_phrases_groups_and_prefixes() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (token, tenant, dataset) = seller(&app, json!({})).await;
    let mut ids = Vec::new();
    for (name, text) in [
        ("a.txt", "alpha bravo charlie"),
        ("b.txt", "alpha delta echo"),
        ("c.txt", "bravo alpha foxtrot invoicing"),
        ("d.txt", "golf hotel invoices"),
    ] {
        ids.push(
            publish(
                &app,
                &token,
                &tenant,
                Some(&admin),
                &dataset,
                text_file(name),
                text.as_bytes(),
            )
            .await,
        );
    }
    let (a, b, c, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    for (query, expected) in [
        ("alpha bravo", sorted(&[a, c])),
        ("alpha AND bravo", sorted(&[a, c])),
        ("ALPHA", sorted(&[a, b, c])),
        ("delta OR golf", sorted(&[b, d])),
        ("alpha NOT bravo", sorted(&[b])),
        ("alpha -bravo", sorted(&[b])),
        ("\"alpha bravo\"", sorted(&[a])),
        ("\"bravo alpha\"", sorted(&[c])),
        ("(delta OR foxtrot) alpha", sorted(&[b, c])),
        ("invoic*", sorted(&[c, d])),
        ("-alpha", sorted(&[d])),
        ("c.txt", sorted(&[c])),
    ] {
        let reply = search(
            &app,
            &token,
            json!({"query": query, "retrieval_mode": "lexical"}),
        )
        .await
        .expect(200);
        assert_eq!(object_ids(&reply), expected, "{query}");
    }
    // A match on the filename alone cites the filename.
    let by_name = search(
        &app,
        &token,
        json!({"query": "d.txt", "retrieval_mode": "lexical"}),
    )
    .await
    .expect(200);
    assert_eq!(
        by_name.data()["results"][0]["citation"]["locator"],
        "filename"
    );
    assert_eq!(by_name.data()["results"][0]["snippet"], "d.txt");
    // `limit` caps the results; order is score desc then object id.
    let limited = search(
        &app,
        &token,
        json!({"query": "alpha", "limit": 2, "retrieval_mode": "lexical"}),
    )
    .await
    .expect(200);
    assert_eq!(limited.data()["result_count"], 2);

    for bad in [
        "\"open",
        "(alpha",
        "alpha)",
        "*pha",
        "al*pha",
        "alpha AND",
        "()",
    ] {
        let reply = search(&app, &token, json!({"query": bad}))
            .await
            .expect(422);
        assert_eq!(reply.code(), "validation_failed");
        assert!(
            reply.body["error"]["details"]["fields"]["query"].is_string(),
            "{bad}: {}",
            reply.body
        );
    }
    for (body, field) in [
        (json!({}), "query"),
        (json!({"query": "   "}), "query"),
        (json!({"query": "x".repeat(4001)}), "query"),
        (json!({"query": "a", "limit": 0}), "limit"),
        (json!({"query": "a", "limit": 51}), "limit"),
        (
            json!({"query": "a", "retrieval_mode": "magic"}),
            "retrieval_mode",
        ),
        (json!({"query": "a", "dataset_ids": []}), "dataset_ids"),
    ] {
        let reply = search(&app, &token, body).await.expect(422);
        assert!(
            reply.body["error"]["details"]["fields"][field].is_string(),
            "{}",
            reply.body
        );
    }
    search(&app, &token, json!({"query": "a", "limit": "ten"}))
        .await
        .expect(400);
    search(&app, &token, json!({"query": "a", "extra": 1}))
        .await
        .expect(422);
    app.finish().await;
}

#[tokio::test]
async fn json_and_pdf_text_and_metadata_are_searchable() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (token, tenant, dataset) = seller(&app, json!({})).await;
    let json_object = publish(
        &app,
        &token,
        &tenant,
        Some(&admin),
        &dataset,
        json!({"filename": "vendor.json", "content_type": "application/json"}),
        br#"{"vendor": "Initech", "lines": [{"item": "staplers"}]}"#,
    )
    .await;
    let pdf_object = publish(
        &app,
        &token,
        &tenant,
        Some(&admin),
        &dataset,
        json!({"filename": "ledger.pdf", "content_type": "application/pdf"}),
        &pdf_with_text("Quarterly ledger reconciliation"),
    )
    .await;
    let image = publish(
        &app,
        &token,
        &tenant,
        Some(&admin),
        &dataset,
        json!({"filename": "scan.png", "content_type": "image/png", "metadata": {"department": "treasury"}}),
        b"\x89PNG not really",
    )
    .await;
    for (query, expected) in [
        ("staplers", &json_object),
        ("initech", &json_object),
        ("reconciliation", &pdf_object),
        ("treasury", &image),
    ] {
        let reply = search(
            &app,
            &token,
            json!({"query": query, "retrieval_mode": "lexical"}),
        )
        .await
        .expect(200);
        assert_eq!(object_ids(&reply), vec![expected.clone()], "{query}");
    }
    let by_meta = search(
        &app,
        &token,
        json!({"query": "treasury", "retrieval_mode": "lexical"}),
    )
    .await
    .expect(200);
    assert_eq!(
        by_meta.data()["results"][0]["citation"]["locator"],
        "metadata"
    );
    assert_eq!(by_meta.data()["results"][0]["snippet"], "scan.png");
    app.finish().await;
}

#[tokio::test]
async fn only_approved_objects_of_searchable_datasets_are_found() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller_token, seller_tenant, listed) = seller(&app, json!({"visibility": "listed"})).await;
    let private = app.dataset(&seller_token, json!({})).await;
    let restricted = app
        .dataset(&seller_token, json!({"visibility": "restricted"}))
        .await;
    let publish_in = |dataset: String, approve: bool| {
        let (app, seller_token, seller_tenant, admin) =
            (&app, &seller_token, &seller_tenant, &admin);
        async move {
            publish(
                app,
                seller_token,
                seller_tenant,
                approve.then_some(admin.as_str()),
                &dataset,
                text_file("secret.txt"),
                b"zebra crossing report",
            )
            .await
        }
    };
    let in_listed = publish_in(listed.clone(), true).await;
    let staged = publish_in(listed.clone(), false).await;
    let in_private = publish_in(private.clone(), true).await;
    let in_restricted = publish_in(restricted.clone(), true).await;
    let rejected = publish_in(listed.clone(), false).await;
    app.post(
        &format!("/v1/admin/review/objects/{seller_tenant}/{rejected}/reject"),
        Some(&admin),
        json!({"reason": "no"}),
    )
    .await
    .expect(200);
    let query = json!({"query": "zebra"});

    // The owner finds every approved object of its active datasets, never staged or rejected ones.
    let own = search(&app, &seller_token, query.clone()).await.expect(200);
    assert_eq!(
        object_ids(&own),
        sorted(&[&in_listed, &in_private, &in_restricted])
    );
    assert!(!object_ids(&own).contains(&staged));

    // Another tenant: listed only, restricted once entitled, private never.
    let (buyer, _, buyer_tenant) = app.signup(&email()).await;
    let found = search(&app, &buyer, query.clone()).await.expect(200);
    assert_eq!(object_ids(&found), vec![in_listed.clone()]);
    let named = search(
        &app,
        &buyer,
        json!({"query": "zebra", "dataset_ids": [private]}),
    )
    .await
    .expect(404);
    assert_eq!(
        named.body["error"]["details"]["dataset_id"],
        private.as_str()
    );
    search(
        &app,
        &buyer,
        json!({"query": "zebra", "dataset_ids": ["dset_nonexistent"]}),
    )
    .await
    .expect(404);
    app.post(
        &format!("/v1/datasets/{restricted}/entitlements"),
        Some(&seller_token),
        json!({"tenant_id": buyer_tenant}),
    )
    .await
    .expect(201);
    let found = search(&app, &buyer, query.clone()).await.expect(200);
    assert_eq!(object_ids(&found), sorted(&[&in_listed, &in_restricted]));
    let narrowed = search(
        &app,
        &buyer,
        json!({"query": "zebra", "dataset_ids": [restricted, restricted]}),
    )
    .await
    .expect(200);
    assert_eq!(object_ids(&narrowed), vec![in_restricted.clone()]);

    // An allow-list key sees granted datasets only; naming another is 404.
    let key = app
        .post(
            "/v1/api-keys",
            Some(&buyer),
            json!({"name": "agent", "scopes": ["search:query"], "dataset_access_mode": "allow_list"}),
        )
        .await
        .expect(201);
    let (key_id, secret) = (
        key.data()["api_key_id"].as_str().unwrap().to_owned(),
        key.data()["key"].as_str().unwrap().to_owned(),
    );
    let by_key = search(&app, &secret, query.clone()).await.expect(200);
    assert_eq!(object_ids(&by_key), Vec::<String>::new());
    app.post(
        &format!("/v1/api-keys/{key_id}/grants"),
        Some(&buyer),
        json!({"dataset_id": listed}),
    )
    .await
    .expect(201);
    let by_key = search(&app, &secret, query.clone()).await.expect(200);
    assert_eq!(object_ids(&by_key), vec![in_listed.clone()]);
    let key_activity = app
        .get(
            &format!("/v1/agent/activity/searches?api_key_id={key_id}"),
            Some(&buyer),
        )
        .await
        .expect(200);
    assert_eq!(key_activity.data()["total"], 2);
    assert_eq!(
        key_activity.data()["searches"][0]["api_key_id"],
        key_id.as_str()
    );
    search(
        &app,
        &secret,
        json!({"query": "zebra", "dataset_ids": [restricted]}),
    )
    .await
    .expect(404);
    // A key without search:query is refused.
    let reader = app
        .post(
            "/v1/api-keys",
            Some(&buyer),
            json!({"name": "reader", "scopes": ["datasets:read"]}),
        )
        .await
        .expect(201);
    search(&app, reader.data()["key"].as_str().unwrap(), query.clone())
        .await
        .expect(403);

    // Deleting an object takes it out of the index; a paused dataset contributes nothing.
    app.delete(&format!("/v1/objects/{in_restricted}"), Some(&seller_token))
        .await
        .expect(200);
    app.patch(
        &format!("/v1/datasets/{listed}"),
        Some(&seller_token),
        json!({"status": "paused"}),
    )
    .await
    .expect(200);
    let own = search(&app, &seller_token, query.clone()).await.expect(200);
    assert_eq!(object_ids(&own), vec![in_private.clone()]);
    let paused_named = search(
        &app,
        &seller_token,
        json!({"query": "zebra", "dataset_ids": [listed]}),
    )
    .await
    .expect(200);
    assert_eq!(paused_named.data()["result_count"], 0);
    let found = search(&app, &buyer, query).await.expect(200);
    assert_eq!(object_ids(&found), Vec::<String>::new());
    app.finish().await;
}

#[tokio::test]
async fn prices_follow_the_dataset_pricing_model() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller_token, seller_tenant, demand) = seller(
        &app,
        json!({"visibility": "listed", "price_per_result": "0.05", "pricing_model": "demand_curve"}),
    )
    .await;
    let decay = app
        .dataset(
            &seller_token,
            json!({"visibility": "listed", "price_per_result": "0.05", "pricing_model": "time_decay"}),
        )
        .await;
    publish(
        &app,
        &seller_token,
        &seller_tenant,
        Some(&admin),
        &demand,
        text_file("d.txt"),
        b"walrus",
    )
    .await;
    publish(
        &app,
        &seller_token,
        &seller_tenant,
        Some(&admin),
        &decay,
        text_file("t.txt"),
        b"narwhal",
    )
    .await;
    let (buyer, _, _) = app.signup(&email()).await;
    let price = |reply: &Reply| reply.data()["results"][0]["charged_amount"].clone();
    // demand_curve: P × (1 + n/1000) with n earlier searches by other tenants in 24 h.
    for n in 0..3 {
        let reply = search(&app, &buyer, json!({"query": "walrus"}))
            .await
            .expect(200);
        let expected = [0.05, 0.05005, 0.0501][n];
        assert_eq!(price(&reply), json!(expected), "after {n} searches");
    }
    // The owner's searches do not raise the price.
    search(&app, &seller_token, json!({"query": "walrus"}))
        .await
        .expect(200);
    let reply = search(&app, &buyer, json!({"query": "walrus"}))
        .await
        .expect(200);
    assert_eq!(price(&reply), json!(0.05015));
    // time_decay: full price on the day of approval, half after 90 days.
    let reply = search(&app, &buyer, json!({"query": "narwhal"}))
        .await
        .expect(200);
    assert_eq!(price(&reply), json!(0.05));
    // Sessions last a week; a key without expiry outlives the jump of the clock.
    let key = app
        .post(
            "/v1/api-keys",
            Some(&buyer),
            json!({"name": "later", "scopes": ["search:query"]}),
        )
        .await
        .expect(201);
    let key = key.data()["key"].as_str().unwrap().to_owned();
    let mut config = app.config.clone();
    app.stop().await;
    config.clock_offset_seconds = 90 * 86_400;
    let later = spawn_with(config).await;
    let reply = search(&later, &key, json!({"query": "narwhal"}))
        .await
        .expect(200);
    assert_eq!(price(&reply), json!(0.025));
    later.finish().await;
}

/// A one-page PDF whose text layer holds `text` (Helvetica, uncompressed), with a correct xref.
pub fn pdf_with_text(text: &str) -> Vec<u8> {
    let content = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
    pdf_of(&[
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        stream("", &content),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_owned(),
    ])
}

/// A PDF of these objects (numbered from 1, the catalog first), with a correct xref.
fn pdf_of(objects: &[String]) -> Vec<u8> {
    let objects: Vec<Vec<u8>> = objects.iter().map(|o| o.as_bytes().to_vec()).collect();
    pdf_of_bytes(&objects)
}

/// [`pdf_of`] for objects that are not all text.
fn pdf_of_bytes(objects: &[Vec<u8>]) -> Vec<u8> {
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        pdf.extend_from_slice(body);
        pdf.extend_from_slice(b"\nendobj\n");
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

/// A stream object: `dict` entries besides the length, then the content.
fn stream(dict: &str, content: &str) -> String {
    format!(
        "<< {dict} /Length {} >>\nstream\n{content}\nendstream",
        content.len()
    )
}

/// A one-page PDF whose page draws form `X` (object 5): objects 5 and after are `forms`.
fn pdf_drawing_forms(forms: Vec<String>) -> Vec<u8> {
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /XObject << /X 5 0 R >> >> >>".to_owned(),
        stream("", "/X Do"),
    ];
    objects.extend(forms);
    pdf_of(&objects)
}

/// A form drawing form `next` `times` times.
fn form_drawing(next: usize, times: usize) -> String {
    stream(
        &format!("/Type /XObject /Subtype /Form /BBox [0 0 1 1] /Resources << /XObject << /X {next} 0 R >> >>"),
        &vec!["/X Do"; times].join(" "),
    )
}

/// Twelve levels of forms, each drawing the next eight times: 8^12 forms to walk, a few hundred
/// bytes to send. The parser never finishes.
fn pdf_of_nested_forms() -> Vec<u8> {
    let mut forms: Vec<String> = (0..12).map(|level| form_drawing(6 + level, 8)).collect();
    forms.push(stream(
        "/Type /XObject /Subtype /Form /BBox [0 0 1 1]",
        "0 0 m 1 1 l S",
    ));
    pdf_drawing_forms(forms)
}

/// A form that draws itself: the parser recurses until its stack overflows.
fn pdf_of_a_form_drawing_itself() -> Vec<u8> {
    pdf_drawing_forms(vec![form_drawing(5, 1)])
}

/// A one-page PDF whose content stream inflates to `n` zero bytes from about n / 160 bytes.
fn pdf_inflating_to(n: usize) -> Vec<u8> {
    let deflated = zeros_deflated(n);
    let mut content = format!(
        "<< /Filter /FlateDecode /Length {} >>\nstream\n",
        deflated.len()
    )
    .into_bytes();
    content.extend_from_slice(&deflated);
    content.extend_from_slice(b"\nendstream");
    let mut objects: Vec<Vec<u8>> = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
    ]
    .iter()
    .map(|o| o.as_bytes().to_vec())
    .collect();
    objects.push(content);
    pdf_of_bytes(&objects)
}

/// A zlib stream of `n` (≥ 1) zero bytes, written by hand: one fixed-Huffman block of a literal
/// zero, then copies of 258 bytes from 1 back (13 bits each), then the Adler-32 of the zeros.
fn zeros_deflated(n: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        pending: u32,
        count: u32,
    }
    impl Bits {
        /// `count` bits of `value`, least significant first (the order of headers).
        fn put(&mut self, value: u32, count: u32) {
            self.pending |= value << self.count;
            self.count += count;
            while self.count >= 8 {
                self.out.push(self.pending as u8);
                self.pending >>= 8;
                self.count -= 8;
            }
        }
        /// A Huffman code: most significant bit first.
        fn code(&mut self, code: u32, count: u32) {
            self.put(code.reverse_bits() >> (32 - count), count);
        }
    }
    let mut bits = Bits {
        out: vec![0x78, 0x01],
        pending: 0,
        count: 0,
    };
    bits.put(1, 1); // the last block
    bits.put(1, 2); // of fixed Huffman codes
    bits.code(0x30, 8); // literal 0
    let mut left = n - 1;
    while left >= 258 {
        bits.code(0b1100_0101, 8); // length code 285: 258 bytes
        bits.code(0, 5); // distance code 0: 1 back
        left -= 258;
    }
    for _ in 0..left {
        bits.code(0x30, 8);
    }
    bits.code(0, 7); // end of block
    if bits.count > 0 {
        bits.out.push(bits.pending as u8);
    }
    // Adler-32 of zeros: a = 1, b = n.
    let b = (n % 65_521) as u32;
    bits.out.extend_from_slice(&((b << 16) | 1).to_be_bytes());
    bits.out
}

/// Runs `body` on a runtime of its own, failing after `limit`. The runtime is then shut down
/// without waiting for its blocking threads: an extraction that never ends must fail the test,
/// not hang it.
fn within(
    limit: std::time::Duration,
    body: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome =
        runtime.block_on(async move { tokio::time::timeout(limit, tokio::spawn(body)).await });
    runtime.shutdown_background();
    match outcome {
        Err(_) => panic!("did not finish within {limit:?}"),
        Ok(Err(failed)) => std::panic::resume_unwind(failed.into_panic()),
        Ok(Ok(())) => {}
    }
}

#[test]
fn pdfs_whose_extraction_hangs_crashes_or_runs_out_of_memory_are_indexed_by_name_and_reported() {
    within(std::time::Duration::from_secs(120), async {
        let fresh = fresh().await;
        let mut config = config(&fresh);
        // Long enough that the inflating bomb meets its memory limit first on a loaded machine.
        config.pdf_timeout_seconds = 5;
        // The debug build's own image (the bundled encoder included) takes about half of this.
        config.pdf_memory_mb = 192;
        let (app, admin) = spawn_with_admin(config).await;
        let (token, tenant, dataset) = seller(&app, json!({})).await;
        let pdf = |name: &str| json!({"filename": name, "content_type": "application/pdf"});
        let endless = publish(
            &app,
            &token,
            &tenant,
            Some(&admin),
            &dataset,
            pdf("endless-forms.pdf"),
            &pdf_of_nested_forms(),
        )
        .await;
        app.get("/health", None).await.expect(200);
        let recursive = publish(
            &app,
            &token,
            &tenant,
            Some(&admin),
            &dataset,
            pdf("recursive-form.pdf"),
            &pdf_of_a_form_drawing_itself(),
        )
        .await;
        let bomb = publish(
            &app,
            &token,
            &tenant,
            Some(&admin),
            &dataset,
            pdf("inflating-bomb.pdf"),
            &pdf_inflating_to(256 << 20),
        )
        .await;
        let ledger = publish(
            &app,
            &token,
            &tenant,
            Some(&admin),
            &dataset,
            pdf("ledger.pdf"),
            &pdf_with_text("Quarterly ledger reconciliation"),
        )
        .await;
        // The hostile PDFs are found by their names; the normal one by its text too.
        for (query, expected) in [
            ("endless", &endless),
            ("recursive", &recursive),
            ("bomb", &bomb),
            ("reconciliation", &ledger),
        ] {
            let reply = search(
                &app,
                &token,
                json!({"query": query, "retrieval_mode": "lexical"}),
            )
            .await
            .expect(200);
            assert_eq!(object_ids(&reply), vec![expected.clone()], "{query}");
        }
        let by_name = search(&app, &token, json!({"query": "endless"}))
            .await
            .expect(200);
        assert_eq!(
            by_name.data()["results"][0]["citation"]["locator"],
            "filename"
        );
        // /health counts them by reason, without calling the service degraded.
        let health = app.get("/health", None).await.expect(200);
        assert_eq!(health.data()["status"], "ok", "{}", health.body);
        let report = &health.data()["projections"]["search"]["pdf_extraction"];
        assert_eq!(report["failed"], 3, "{}", health.body);
        assert_eq!(
            report["by_reason"],
            json!({"memory": 1, "crashed": 1, "timeout": 1}),
            "{}",
            health.body
        );
        // Which objects failed is not public.
        for id in [&bomb, &recursive, &endless] {
            assert!(!health.body.to_string().contains(id.as_str()));
        }
        let metrics = app.metrics().await;
        for reason in ["timeout", "crashed", "memory"] {
            let line =
                format!("ipto_search_pdf_extraction_failures_total{{reason=\"{reason}\"}} 1");
            assert!(metrics.contains(&line), "{line} missing in {metrics}");
        }
        app.finish().await;
    });
}

/// The first `n` two-letter prefixes in order: `aa`, `ab`, … `az`, `ba`, …
fn two_letter_prefixes(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let letter = |k: usize| char::from(b'a' + k as u8);
            format!("{}{}", letter(i / 26), letter(i % 26))
        })
        .collect()
}

#[tokio::test]
async fn a_query_of_many_short_prefixes_is_refused_as_too_broad() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (token, tenant, dataset) = seller(&app, json!({})).await;
    // An index with many distinct words: forty behind each two-letter prefix.
    let prefixes = two_letter_prefixes(250);
    let mut text = String::new();
    for prefix in &prefixes {
        for i in 0..40 {
            text.push_str(&format!("{prefix}q{}{} ", i / 10, i % 10));
        }
    }
    publish(
        &app,
        &token,
        &tenant,
        Some(&admin),
        &dataset,
        text_file("lexicon.txt"),
        text.as_bytes(),
    )
    .await;
    let hostile: String = prefixes
        .iter()
        .map(|p| format!("{p}*"))
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(hostile.chars().count(), 999);
    let refused = search(&app, &token, json!({"query": hostile}))
        .await
        .expect(422);
    assert_eq!(refused.code(), "validation_failed");
    let message = refused.body["error"]["details"]["fields"]["query"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", refused.body));
    assert!(
        message.starts_with("too broad: expands to more than")
            && message.contains("use longer prefixes"),
        "{message}"
    );
    // A refused query is not a search: nothing is recorded.
    let searches = app
        .get("/v1/agent/activity/searches", Some(&token))
        .await
        .expect(200);
    assert_eq!(searches.data()["total"], 0);
    // Narrower queries over the same index still answer.
    for query in ["aa*", "aaq0* OR abq1*", "aaq00 abq01 acq02"] {
        let found = search(&app, &token, json!({"query": query}))
            .await
            .expect(200);
        assert_eq!(found.data()["result_count"], 1, "{query}");
    }
    app.finish().await;
}
