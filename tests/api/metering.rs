//! Buyer downloads: access rules, charges and the access activity.

use serde_json::json;

use crate::helpers::*;

/// A seller's approved object in a dataset with these fields; returns (seller token, dataset, object).
async fn approved(
    app: &TestApp,
    admin: &str,
    fields: serde_json::Value,
) -> (String, String, String) {
    let (seller, _, tenant) = app.signup(&email()).await;
    let dataset = app.dataset(&seller, fields).await;
    let object = app.staged_object(&seller, &dataset, b"priced bytes").await;
    app.post(
        &format!("/v1/admin/review/objects/{tenant}/{object}/approve"),
        Some(admin),
        json!({}),
    )
    .await
    .expect(200);
    (seller, dataset, object)
}

#[tokio::test]
async fn buyers_pay_ten_results_per_download_and_see_each_access() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller, dataset, object) = approved(
        &app,
        &admin,
        json!({"visibility": "listed", "monetization_mode": "premium"}),
    )
    .await;
    let (buyer, _, _) = app.signup(&email()).await;
    let path = format!("/v1/objects/{object}/download");

    let first = app.get(&path, Some(&buyer)).await.expect(200);
    assert_eq!(first.data()["charged_amount"], json!(0.5));
    assert_eq!(first.data()["currency"], "USD");
    let access = first.data()["access_id"].as_str().unwrap().to_owned();
    assert!(access.starts_with("acc_"));
    let bytes = app
        .client
        .get(first.data()["download_url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.as_ref(), b"priced bytes");
    let second = app.get(&path, Some(&buyer)).await.expect(200);
    assert_ne!(
        second.data()["access_id"],
        access.as_str(),
        "every download is charged again"
    );

    let own = app.get(&path, Some(&seller)).await.expect(200);
    assert_eq!(own.data()["charged_amount"], json!(0));
    assert_eq!(own.data()["access_id"], json!(null));

    let listed = app
        .get("/v1/agent/activity/accesses", Some(&buyer))
        .await
        .expect(200);
    assert_eq!(listed.data()["total"], 2);
    let first_listed = &listed.data()["accesses"][1];
    assert_eq!(first_listed["access_id"], access.as_str());
    assert_eq!(first_listed["kind"], "download");
    assert_eq!(first_listed["dataset_id"], dataset.as_str());
    assert_eq!(first_listed["charged_amount"], json!(0.5));
    assert_eq!(first_listed["search_activity_id"], json!(null));
    let none = app
        .get("/v1/agent/activity/accesses?kind=retrieval", Some(&buyer))
        .await
        .expect(200);
    assert_eq!(none.data()["total"], 0);
    app.get("/v1/agent/activity/accesses?kind=other", Some(&buyer))
        .await
        .expect(422);
    app.get(
        "/v1/agent/activity/accesses?from=2026-02-02&to=2026-02-01",
        Some(&buyer),
    )
    .await
    .expect(422);
    let sellers = app
        .get("/v1/agent/activity/accesses", Some(&seller))
        .await
        .expect(200);
    assert_eq!(
        sellers.data()["total"],
        0,
        "the owner's own download is not recorded"
    );

    let charges = table(
        &app.state,
        "SELECT CAST(payload AS TEXT) FROM events WHERE event_type = 'DownloadCharged'",
    )
    .await;
    assert_eq!(charges.len(), 2);
    let charge: serde_json::Value = serde_json::from_str(&charges[0][0]).unwrap();
    assert_eq!(charge["DownloadCharged"]["fee_bps"], 2000);
    assert_eq!(charge["DownloadCharged"]["amount_micros"], 500000);
    app.finish().await;
}

#[tokio::test]
async fn only_approved_objects_of_accessible_datasets_can_be_bought() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (buyer, _, buyer_tenant) = app.signup(&email()).await;
    let (_, _, private) = approved(&app, &admin, json!({})).await;
    app.get(&format!("/v1/objects/{private}/download"), Some(&buyer))
        .await
        .expect(404);
    let (seller, restricted_set, restricted) =
        approved(&app, &admin, json!({"visibility": "restricted"})).await;
    app.get(&format!("/v1/objects/{restricted}/download"), Some(&buyer))
        .await
        .expect(404);
    app.post(
        &format!("/v1/datasets/{restricted_set}/entitlements"),
        Some(&seller),
        json!({"tenant_id": buyer_tenant}),
    )
    .await
    .expect(201);
    app.get(&format!("/v1/objects/{restricted}/download"), Some(&buyer))
        .await
        .expect(200);
    // A staged object of a listed dataset is not for sale.
    let listed = app.dataset(&seller, json!({"visibility": "listed"})).await;
    let staged = app.staged_object(&seller, &listed, b"s").await;
    app.get(&format!("/v1/objects/{staged}/download"), Some(&buyer))
        .await
        .expect(404);
    // A paused dataset is not for sale either.
    app.patch(
        &format!("/v1/datasets/{restricted_set}"),
        Some(&seller),
        json!({"status": "paused"}),
    )
    .await
    .expect(200);
    app.get(&format!("/v1/objects/{restricted}/download"), Some(&buyer))
        .await
        .expect(404);
    app.finish().await;
}

#[tokio::test]
async fn an_allow_list_key_buys_only_from_granted_datasets() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (_, dataset, object) = approved(&app, &admin, json!({"visibility": "listed"})).await;
    let (buyer, _, _) = app.signup(&email()).await;
    let reply = app
        .post("/v1/api-keys", Some(&buyer), json!({"name": "agent", "scopes": ["datasets:read", "usage:read"], "dataset_access_mode": "allow_list"}))
        .await
        .expect(201);
    let (key_id, key) = (
        reply.data()["api_key_id"].as_str().unwrap().to_owned(),
        reply.data()["key"].as_str().unwrap().to_owned(),
    );
    let open = app
        .post(
            "/v1/api-keys",
            Some(&buyer),
            json!({"name": "open", "scopes": ["datasets:read"]}),
        )
        .await
        .expect(201);
    let open_key = open.data()["key"].as_str().unwrap().to_owned();

    let path = format!("/v1/objects/{object}/download");
    app.get(&path, Some(&key)).await.expect(404);
    app.get(&path, Some(&open_key)).await.expect(200);
    app.post(
        &format!("/v1/api-keys/{key_id}/grants"),
        Some(&buyer),
        json!({"dataset_id": dataset}),
    )
    .await
    .expect(201);
    let bought = app.get(&path, Some(&key)).await.expect(200);
    assert_eq!(bought.data()["charged_amount"], json!(0.1));
    let mine = app
        .get(
            &format!("/v1/agent/activity/accesses?api_key_id={key_id}"),
            Some(&key),
        )
        .await
        .expect(200);
    assert_eq!(mine.data()["total"], 1);
    assert_eq!(mine.data()["accesses"][0]["api_key_id"], key_id.as_str());
    app.finish().await;
}

#[tokio::test]
async fn spend_and_revenue_add_up_across_buyer_and_provider() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller, dataset, object) = approved(
        &app,
        &admin,
        json!({"name": "Invoices", "visibility": "listed", "price_per_result": "0.012345"}),
    )
    .await;
    let (buyer, _, _) = app.signup(&email()).await;
    for _ in 0..3 {
        app.get(&format!("/v1/objects/{object}/download"), Some(&buyer))
            .await
            .expect(200);
    }
    let spend = app.get("/v1/agent/spend", Some(&buyer)).await.expect(200);
    let data = spend.data();
    assert_eq!(data["total_amount"], json!(0.37035));
    assert_eq!(data["currency"], "USD");
    let days = data["by_day"].as_array().unwrap();
    assert_eq!(days.len(), 30, "the default window is the last 30 UTC days");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(days.last().unwrap()["date"], today.as_str());
    assert_eq!(days.last().unwrap()["amount"], json!(0.37035));
    assert_eq!(days[0]["amount"], json!(0));
    assert_eq!(
        data["by_dataset"],
        json!([{"dataset_id": dataset, "dataset_name": "Invoices", "amount": 0.37035}])
    );
    assert!(data["from"]
        .as_str()
        .unwrap()
        .ends_with("T00:00:00.000000Z"));

    let empty = app
        .get(
            "/v1/agent/spend?from=2020-01-01&to=2020-01-31",
            Some(&buyer),
        )
        .await
        .expect(200);
    assert_eq!(empty.data()["total_amount"], json!(0));
    assert_eq!(empty.data()["by_day"].as_array().unwrap().len(), 31);
    app.get(
        "/v1/agent/spend?from=2020-01-01&to=2021-06-01",
        Some(&buyer),
    )
    .await
    .expect(422);
    app.get("/v1/agent/spend?from=soon", Some(&buyer))
        .await
        .expect(422);

    let dashboard = app
        .get("/v1/provider/dashboard", Some(&seller))
        .await
        .expect(200);
    let d = dashboard.data();
    assert_eq!(
        d["total_revenue"],
        json!(0.37035),
        "buyer spend equals provider revenue"
    );
    assert_eq!(d["revenue_last_30_days"], json!(0.37035));
    assert_eq!(
        (d["total_datasets"].as_i64(), d["total_objects"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (
            d["objects_approved"].as_i64(),
            d["objects_pending_review"].as_i64(),
            d["objects_rejected"].as_i64()
        ),
        (Some(1), Some(0), Some(0))
    );
    assert_eq!(
        d["total_storage_bytes"].as_i64(),
        Some(b"priced bytes".len() as i64)
    );
    let buyers_view = app
        .get("/v1/provider/dashboard", Some(&buyer))
        .await
        .expect(200);
    assert_eq!(buyers_view.data()["total_revenue"], json!(0));
    app.finish().await;
}

#[tokio::test]
async fn the_provider_dashboard_counts_objects_by_review_state_in_live_datasets_only() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller, _, tenant) = app.signup(&email()).await;
    let live = app.dataset(&seller, json!({})).await;
    let review = |object: String, verdict: &'static str| {
        let (app, admin, tenant) = (&app, admin.clone(), tenant.clone());
        async move {
            app.post(
                &format!("/v1/admin/review/objects/{tenant}/{object}/{verdict}"),
                Some(&admin),
                if verdict == "reject" {
                    json!({"reason": "checked"})
                } else {
                    json!({})
                },
            )
            .await
            .expect(200);
        }
    };
    let approved = app.staged_object(&seller, &live, b"approved bytes").await;
    review(approved, "approve").await;
    let rejected = app.staged_object(&seller, &live, b"rejected").await;
    review(rejected, "reject").await;
    app.staged_object(&seller, &live, b"staged 1").await;
    app.staged_object(&seller, &live, b"staged 2").await;
    // A dataset being deleted no longer counts, nor do its objects.
    let doomed = app.dataset(&seller, json!({})).await;
    app.staged_object(&seller, &doomed, b"doomed staged").await;
    let doomed_rejected = app
        .staged_object(&seller, &doomed, b"doomed rejected")
        .await;
    review(doomed_rejected, "reject").await;
    app.delete(&format!("/v1/datasets/{doomed}"), Some(&seller))
        .await
        .expect(200);
    // Another tenant's objects never count.
    let (other, _, _) = app.signup(&email()).await;
    let elsewhere = app.dataset(&other, json!({})).await;
    app.staged_object(&other, &elsewhere, b"not mine").await;

    let d = app
        .get("/v1/provider/dashboard", Some(&seller))
        .await
        .expect(200)
        .data()
        .clone();
    assert_eq!(
        (
            d["total_datasets"].as_i64(),
            d["objects_approved"].as_i64(),
            d["objects_pending_review"].as_i64(),
            d["objects_rejected"].as_i64(),
        ),
        (Some(1), Some(1), Some(2), Some(1)),
        "{d}"
    );
    app.finish().await;
}

#[tokio::test]
async fn monthly_statements_sum_the_charges_and_are_paid_once_after_the_month() {
    let fresh = fresh().await;
    let mut now = config(&fresh);
    now.session_ttl_seconds = 90 * 86_400;
    let (app, admin) = spawn_with_admin(now.clone()).await;
    let (seller, _, object) = approved(
        &app,
        &admin,
        json!({"visibility": "listed", "monetization_mode": "premium"}),
    )
    .await;
    let (buyer, _, _) = app.signup(&email()).await;
    for _ in 0..2 {
        app.get(&format!("/v1/objects/{object}/download"), Some(&buyer))
            .await
            .expect(200);
    }
    let payouts = app
        .get("/v1/provider/payouts", Some(&seller))
        .await
        .expect(200);
    let items = payouts.data()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    let s = &items[0];
    assert!(s["statement_id"].as_str().unwrap().starts_with("stmt_"));
    assert_eq!(
        (
            s["gross_amount"].clone(),
            s["platform_fee"].clone(),
            s["net_amount"].clone()
        ),
        (json!(1), json!(0.2), json!(0.8))
    );
    assert_eq!(s["line_count"], 2);
    assert_eq!(s["status"], "open");
    assert_eq!(s["paid_at"], json!(null));
    let month = chrono::Utc::now()
        .format("%Y-%m-01T00:00:00.000000Z")
        .to_string();
    assert_eq!(s["period_start"], month.as_str());
    let id = s["statement_id"].as_str().unwrap().to_owned();
    let none = app
        .get("/v1/provider/payouts", Some(&buyer))
        .await
        .expect(200);
    assert!(none.data()["items"].as_array().unwrap().is_empty());

    let mark = format!("/v1/admin/payouts/{id}/mark-paid");
    assert_eq!(
        app.post(&mark, Some(&admin), json!({}))
            .await
            .expect(409)
            .code(),
        "invalid_state"
    );
    app.post(&mark, Some(&seller), json!({})).await.expect(403);
    app.post(
        "/v1/admin/payouts/stmt_00000000000000000000000000/mark-paid",
        Some(&admin),
        json!({}),
    )
    .await
    .expect(404);

    // The statement id and amounts survive a rebuild of the read model.
    let payouts_projection = app.state.store.engine.projection("payouts").unwrap();
    app.state
        .store
        .engine
        .rebuild(payouts_projection.as_ref(), |_, _| {})
        .await
        .unwrap();
    let rebuilt = app
        .get("/v1/provider/payouts", Some(&seller))
        .await
        .expect(200);
    assert_eq!(rebuilt.data()["items"][0], items[0]);
    app.stop().await;

    // Forty days later the month is over: pending, then paid once.
    let mut later = now;
    later.clock_offset_seconds = 40 * 86_400;
    let (app, admin) = spawn_with_admin(later).await;
    let pending = app
        .get("/v1/admin/payouts?status=pending", Some(&admin))
        .await
        .expect(200);
    assert_eq!(pending.data()["items"][0]["statement_id"], id.as_str());
    assert_eq!(pending.data()["items"][0]["tenant_name"], "Test Tenant");
    let paid = app.post(&mark, Some(&admin), json!({})).await.expect(200);
    assert_eq!(paid.data()["status"], "paid");
    assert!(paid.data()["paid_at"].is_string());
    assert_eq!(
        app.post(&mark, Some(&admin), json!({}))
            .await
            .expect(409)
            .code(),
        "invalid_state"
    );
    let listed = app
        .get("/v1/admin/payouts?status=paid", Some(&admin))
        .await
        .expect(200);
    assert_eq!(listed.data()["items"].as_array().unwrap().len(), 1);
    let open = app
        .get("/v1/admin/payouts?status=open", Some(&admin))
        .await
        .expect(200);
    assert!(open.data()["items"].as_array().unwrap().is_empty());
    app.get("/v1/admin/payouts?status=late", Some(&admin))
        .await
        .expect(422);
    app.finish().await;
}

mod money_invariants {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;

    use crate::helpers::*;

    /// Sums of the raw charges (`DownloadCharged`, and the charged results of `SearchPerformed`): per buyer, per provider, and the fee basis per provider.
    async fn from_the_log(
        app: &TestApp,
    ) -> (
        BTreeMap<String, i64>,
        BTreeMap<String, i64>,
        BTreeMap<String, i64>,
    ) {
        let rows = table(
            &app.state,
            "SELECT CAST(payload AS TEXT) FROM events WHERE event_type = 'DownloadCharged'",
        )
        .await;
        let (mut buyers, mut providers, mut fees) =
            (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        let mut charges = Vec::new();
        for row in rows {
            let charge: serde_json::Value = serde_json::from_str(&row[0]).unwrap();
            charges.push(charge["DownloadCharged"].clone());
        }
        let searches = table(
            &app.state,
            "SELECT CAST(payload AS TEXT) FROM events WHERE event_type = 'SearchPerformed'",
        )
        .await;
        for row in searches {
            let search: serde_json::Value = serde_json::from_str(&row[0]).unwrap();
            for result in search["SearchPerformed"]["results"].as_array().unwrap() {
                if !result["charge"].is_null() {
                    charges.push(result["charge"].clone());
                }
            }
        }
        for c in &charges {
            let amount = c["amount_micros"].as_i64().unwrap();
            *buyers
                .entry(c["buyer_tenant_id"].as_str().unwrap().to_owned())
                .or_insert(0) += amount;
            let provider = c["provider_tenant_id"].as_str().unwrap().to_owned();
            *providers.entry(provider.clone()).or_insert(0) += amount;
            *fees.entry(provider).or_insert(0) += amount * c["fee_bps"].as_i64().unwrap();
        }
        (buyers, providers, fees)
    }

    fn micros(value: &serde_json::Value) -> i64 {
        let text = value.to_string();
        aggregates::Price::parse(&text)
            .map(|p| p.micros())
            .unwrap_or_else(|_| panic!("not an amount: {text}"))
    }

    /// What the API reports: per tenant (spend, revenue, Σ statement gross, Σ statement fee).
    async fn reported(
        app: &TestApp,
        tokens: &[(String, String)],
    ) -> BTreeMap<String, (i64, i64, i64, i64)> {
        let mut out = BTreeMap::new();
        for (token, tenant) in tokens {
            let spend = app
                .get("/v1/agent/spend?from=2000-01-01&to=2000-12-31", Some(token))
                .await
                .expect(200);
            assert_eq!(micros(&spend.data()["total_amount"]), 0);
            let today = chrono::Utc::now().date_naive();
            let from = (today - chrono::Duration::days(3)).format("%Y-%m-%d");
            let spend = app
                .get(
                    &format!("/v1/agent/spend?from={from}&to={today}"),
                    Some(token),
                )
                .await
                .expect(200);
            let days: i64 = spend.data()["by_day"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| micros(&d["amount"]))
                .sum();
            let datasets: i64 = spend.data()["by_dataset"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| micros(&d["amount"]))
                .sum();
            let total = micros(&spend.data()["total_amount"]);
            assert_eq!(
                (days, datasets),
                (total, total),
                "by_day and by_dataset add up to the total"
            );
            let revenue = micros(
                &app.get("/v1/provider/dashboard", Some(token))
                    .await
                    .expect(200)
                    .data()["total_revenue"],
            );
            let statements = app
                .get("/v1/provider/payouts?limit=100", Some(token))
                .await
                .expect(200);
            let (mut gross, mut fee) = (0, 0);
            for s in statements.data()["items"].as_array().unwrap() {
                let (g, f, n) = (
                    micros(&s["gross_amount"]),
                    micros(&s["platform_fee"]),
                    micros(&s["net_amount"]),
                );
                assert_eq!(n, g - f, "net = gross - fee");
                gross += g;
                fee += f;
            }
            // A buyer's total spend = Σ its search activities' charges + Σ its download charges.
            let dashboard = app
                .get("/v1/buyer/dashboard", Some(token))
                .await
                .expect(200);
            assert_eq!(micros(&dashboard.data()["total_spend"]), total);
            let searches = app
                .get("/v1/agent/activity/searches?limit=100", Some(token))
                .await
                .expect(200);
            let searched: i64 = searches.data()["searches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| micros(&s["charged_amount"]))
                .sum();
            let downloads = app
                .get(
                    "/v1/agent/activity/accesses?kind=download&limit=100",
                    Some(token),
                )
                .await
                .expect(200);
            let downloaded: i64 = downloads.data()["accesses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| micros(&a["charged_amount"]))
                .sum();
            assert_eq!(searched + downloaded, total, "spend = searches + downloads");
            out.insert(tenant.clone(), (total, revenue, gross, fee));
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3, ..ProptestConfig::default() })]

        #[test]
        fn spend_revenue_and_statements_agree_with_the_log_and_survive_rebuilds(
            prices in prop::collection::vec((0u32..2_000_000, 0usize..3), 1..4),
            uses in prop::collection::vec((0usize..3, 0usize..4, 0usize..3), 1..12),
        ) {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let fresh = fresh().await;
                let (app, admin) = spawn_with_admin(config(&fresh)).await;
                let mut tenants = Vec::new();
                for _ in 0..3 {
                    let (token, _, tenant) = app.signup(&email()).await;
                    tenants.push((token, tenant));
                }
                // Each price becomes a listed dataset of tenant i % 3 with one approved object.
                let mut objects = Vec::new();
                for (i, (price, model)) in prices.iter().enumerate() {
                    let (token, tenant) = &tenants[i % 3];
                    let price = aggregates::money::format_micros(i64::from(*price));
                    let model = ["fixed", "time_decay", "demand_curve"][*model];
                    let dataset = app.dataset(token, json!({"visibility": "listed", "price_per_result": price, "pricing_model": model})).await;
                    let object = app.staged_object(token, &dataset, format!("common word{i}").as_bytes()).await;
                    app.post(&format!("/v1/admin/review/objects/{tenant}/{object}/approve"), Some(&admin), json!({})).await.expect(200);
                    objects.push(object);
                }
                // Downloads, and searches and retrievals for one object's word or for the word all
                // objects share.
                for (buyer, n, kind) in &uses {
                    let token = &tenants[*buyer].0;
                    let i = n % objects.len();
                    let query = if n % 2 == 0 { "common".to_owned() } else { format!("word{i}") };
                    match kind {
                        0 => {
                            app.post("/v1/search", Some(token), json!({"query": query})).await.expect(200);
                        }
                        1 => {
                            app.post("/v1/retrieve", Some(token), json!({"query": query, "top_k": 3})).await.expect(200);
                        }
                        _ => {
                            app.get(&format!("/v1/objects/{}/download", objects[i]), Some(token)).await.expect(200);
                        }
                    }
                }
                let (buyers, providers, fees) = from_the_log(&app).await;
                let report = reported(&app, &tenants).await;
                let mut spend_total = 0;
                let mut revenue_total = 0;
                for (tenant, (spend, revenue, gross, fee)) in &report {
                    assert_eq!(*spend, *buyers.get(tenant).unwrap_or(&0), "spend = log");
                    assert_eq!(*revenue, *providers.get(tenant).unwrap_or(&0), "revenue = log");
                    assert_eq!(*gross, *revenue, "statements = revenue");
                    // One month here, so the statement fee is round6 of the whole basis.
                    assert_eq!(i128::from(*fee), aggregates::payout::fee_micros((*fees.get(tenant).unwrap_or(&0)).into()));
                    spend_total += spend;
                    revenue_total += revenue;
                }
                assert_eq!(spend_total, revenue_total, "all spend = all revenue");

                for projection in app.state.store.engine.projections().into_iter().filter(|p| !p.is_reactor()) {
                    app.state.store.engine.rebuild(projection.as_ref(), |_, _| {}).await.unwrap();
                }
                assert_eq!(reported(&app, &tenants).await, report, "figures survive a rebuild");
                app.finish().await;
            });
        }
    }
}
