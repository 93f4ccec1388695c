//! Money at its limits: sums far past 64 bits stay exact on every figure and for every tenant.

use serde_json::{json, Value};

use crate::helpers::*;

/// A listed dataset of `seller` at `price` with one approved object; returns (dataset, object).
async fn for_sale(
    app: &TestApp,
    admin: &str,
    (seller, tenant): (&str, &str),
    price: &str,
) -> (String, String) {
    let dataset = app
        .dataset(
            seller,
            json!({"visibility": "listed", "price_per_result": price}),
        )
        .await;
    let object = app.staged_object(seller, &dataset, b"for sale").await;
    app.post(
        &format!("/v1/admin/review/objects/{tenant}/{object}/approve"),
        Some(admin),
        json!({}),
    )
    .await
    .expect(200);
    (dataset, object)
}

/// An amount of a reply in micro-USD, read exactly from the JSON number's text.
fn micros(value: &Value) -> i128 {
    let text = value.to_string();
    assert!(value.is_number(), "not an amount: {text}");
    if text.contains(['e', 'E']) {
        // serde_json writes amounts below 0.00001 with an exponent; they are exact as f64.
        return (value.as_f64().unwrap() * 1e6).round() as i128;
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    assert!(fraction.len() <= 6, "more than 6 decimals: {text}");
    whole.parse::<i128>().unwrap() * 1_000_000 + format!("{fraction:0<6}").parse::<i128>().unwrap()
}

/// Downloads `object` as `buyer` `times` times, four at a time; every call is charged `amount`.
async fn download(app: &TestApp, buyer: &str, object: &str, times: usize, amount: i128) {
    use futures::StreamExt;
    let path = format!("/v1/objects/{object}/download");
    futures::stream::iter(0..times)
        .map(|_| app.get(&path, Some(buyer)))
        .buffer_unordered(4)
        .for_each(|reply| async move {
            let reply = reply.expect(200);
            assert_eq!(micros(&reply.data()["charged_amount"]), amount);
        })
        .await;
}

/// One attacker with two tenants, a provider at the highest price and its buyer, drives the
/// provider's statement past the point where Σ amount × fee bps left 64 bits (the 462nd download
/// at 20 %). Nothing stops: every figure of every tenant stays exact, and `/health` stays ok.
#[tokio::test]
async fn sums_past_64_bits_stay_exact_and_stop_no_projection() {
    const DOWNLOADS: usize = 500;
    const MAX_DOWNLOAD: i128 = 10_000_000 * 1_000_000;
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller, _, seller_tenant) = app.signup(&email()).await;
    let (buyer, _, _) = app.signup(&email()).await;
    let (bystander, _, bystander_tenant) = app.signup(&email()).await;
    let seller_side = (seller.as_str(), seller_tenant.as_str());
    let (dear, dear_object) = for_sale(&app, &admin, seller_side, "1000000").await;
    let (cheap, cheap_object) = for_sale(&app, &admin, seller_side, "0.000001").await;
    let (_, ordinary) = for_sale(
        &app,
        &admin,
        (bystander.as_str(), bystander_tenant.as_str()),
        "0.05",
    )
    .await;

    // Another provider's sale before and after the attacker's run.
    download(&app, &buyer, &ordinary, 1, 500_000).await;
    download(&app, &buyer, &dear_object, DOWNLOADS, MAX_DOWNLOAD).await;
    download(&app, &buyer, &cheap_object, 1, 10).await;
    download(&app, &buyer, &ordinary, 1, 500_000).await;

    let n = DOWNLOADS as i128;
    // 5000000000.00001 gross; the fee is round6 of the whole basis: 1000000000.000002.
    let gross = n * MAX_DOWNLOAD + 10;
    let fee = (gross * 2000 + 5_000) / 10_000;
    let health = app.get("/health", None).await.expect(200);
    assert_eq!(health.data()["status"], "ok", "{}", health.body);

    let statement = |reply: &Reply| {
        let items = reply.data()["items"].as_array().unwrap().clone();
        assert_eq!(items.len(), 1, "{}", reply.body);
        let s = &items[0];
        (
            micros(&s["gross_amount"]),
            micros(&s["platform_fee"]),
            micros(&s["net_amount"]),
            s["line_count"].as_i64().unwrap(),
        )
    };
    let seller_statement = app
        .get("/v1/provider/payouts", Some(&seller))
        .await
        .expect(200);
    assert_eq!(
        statement(&seller_statement),
        (gross, fee, gross - fee, DOWNLOADS as i64 + 1)
    );
    let bystanders = app
        .get("/v1/provider/payouts", Some(&bystander))
        .await
        .expect(200);
    assert_eq!(statement(&bystanders), (1_000_000, 200_000, 800_000, 2));
    for (tenant, expected) in [
        (
            &seller_tenant,
            (gross, fee, gross - fee, DOWNLOADS as i64 + 1),
        ),
        (&bystander_tenant, (1_000_000, 200_000, 800_000, 2)),
    ] {
        let listed = app
            .get(
                &format!("/v1/admin/payouts?tenant_id={tenant}"),
                Some(&admin),
            )
            .await
            .expect(200);
        assert_eq!(statement(&listed), expected);
    }
    let everyone = app
        .get("/v1/admin/payouts?status=open", Some(&admin))
        .await
        .expect(200);
    assert_eq!(everyone.data()["items"].as_array().unwrap().len(), 2);

    let dashboard = app
        .get("/v1/provider/dashboard", Some(&seller))
        .await
        .expect(200);
    assert_eq!(micros(&dashboard.data()["total_revenue"]), gross);
    assert_eq!(micros(&dashboard.data()["revenue_last_30_days"]), gross);
    let analytics = app
        .get(
            &format!("/v1/provider/datasets/{dear}/analytics"),
            Some(&seller),
        )
        .await
        .expect(200);
    let a = analytics.data();
    assert_eq!(a["downloads"], DOWNLOADS);
    assert_eq!(micros(&a["gross_revenue"]), n * MAX_DOWNLOAD);
    assert_eq!(micros(&a["provider_earnings"]), n * MAX_DOWNLOAD * 8 / 10);
    let daily: i128 = a["daily"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| micros(&d["gross_revenue"]))
        .sum();
    assert_eq!(daily, n * MAX_DOWNLOAD);
    let analytics = app
        .get(
            &format!("/v1/provider/datasets/{cheap}/analytics"),
            Some(&seller),
        )
        .await
        .expect(200);
    assert_eq!(micros(&analytics.data()["gross_revenue"]), 10);

    let spent = gross + 1_000_000;
    let dashboard = app
        .get("/v1/buyer/dashboard", Some(&buyer))
        .await
        .expect(200);
    assert_eq!(micros(&dashboard.data()["total_spend"]), spent);
    assert_eq!(micros(&dashboard.data()["spend_last_30_days"]), spent);
    assert_eq!(dashboard.data()["access_count"], DOWNLOADS + 3);
    let spend = app.get("/v1/agent/spend", Some(&buyer)).await.expect(200);
    let s = spend.data();
    assert_eq!(micros(&s["total_amount"]), spent);
    let by_day: i128 = s["by_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| micros(&d["amount"]))
        .sum();
    assert_eq!(by_day, spent);
    let by_dataset: Vec<(String, i128)> = s["by_dataset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["dataset_id"].as_str().unwrap().to_owned(),
                micros(&d["amount"]),
            )
        })
        .collect();
    assert_eq!(by_dataset[0], (dear.clone(), n * MAX_DOWNLOAD));
    assert_eq!(by_dataset.iter().map(|(_, a)| a).sum::<i128>(), spent);

    // The statement survives a rebuild unchanged.
    let payouts = app.state.store.engine.projection("payouts").unwrap();
    app.state
        .store
        .engine
        .rebuild(payouts.as_ref(), |_, _| {})
        .await
        .unwrap();
    let rebuilt = app
        .get("/v1/provider/payouts", Some(&seller))
        .await
        .expect(200);
    assert_eq!(rebuilt.data()["items"], seller_statement.data()["items"]);
    let health = app.get("/health", None).await.expect(200);
    assert_eq!(health.data()["status"], "ok", "{}", health.body);
    app.finish().await;
}
