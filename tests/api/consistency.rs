//! The consistency header: a write's response carries `Ipto-Log-Position`, and a request that
//! sends it back is answered only once the instance has applied it, on this instance or another.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

const HEADER: &str = "ipto-log-position";

/// `GET path` with `Ipto-Log-Position: position`.
async fn get_at(app: &TestApp, path: &str, token: &str, position: &str) -> Reply {
    reply(
        app.client
            .get(format!("{}{path}", app.address))
            .bearer_auth(token)
            .header(HEADER, position)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The position a write answered with.
fn position(reply: &Reply) -> String {
    let value = reply.headers[HEADER].to_str().unwrap().to_owned();
    let (tx, at) = value.split_once('.').expect("TX.POSITION");
    assert!(
        tx.parse::<u64>().is_ok() && at.parse::<u64>().unwrap() > 0,
        "{value}"
    );
    value
}

#[tokio::test]
async fn a_write_carries_its_position_and_a_read_that_sends_it_back_sees_the_write() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let created = app
        .post("/v1/datasets", Some(&token), json!({"name": "Tides"}))
        .await
        .expect(201);
    let at = position(&created);
    let id = created.data()["dataset_id"].as_str().unwrap();
    let read = get_at(&app, &format!("/v1/datasets/{id}"), &token, &at)
        .await
        .expect(200);
    assert_eq!(read.data()["name"], "Tides");
    assert!(read.headers.get(HEADER).is_none(), "a read wrote nothing");
    // A later write reaches further.
    let renamed = app
        .call(
            Method::PATCH,
            &format!("/v1/datasets/{id}"),
            Some(&token),
            Some(json!({"name": "Tides 2"})),
        )
        .await
        .expect(200);
    let later: projections::LogPosition = position(&renamed).parse().unwrap();
    assert!(later > at.parse().unwrap());
    app.finish().await;
}

#[tokio::test]
async fn a_malformed_position_or_one_past_the_log_is_400_and_reads_nothing() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    for bad in [
        "x",
        "1",
        "-1.2",
        "1.2.3",
        "99999999999.1",
        "99999999999.99999999999",
    ] {
        let answer = get_at(&app, "/v1/datasets", &token, bad).await.expect(400);
        assert_eq!(answer.code(), "invalid_request", "{bad}");
    }
    // Credentials come first.
    let anonymous = reply(
        app.client
            .get(format!("{}/v1/datasets", app.address))
            .header(HEADER, "x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(anonymous.status, 401);
    get_at(&app, "/v1/datasets", &token, "0.0")
        .await
        .expect(200);
    app.finish().await;
}

#[tokio::test]
async fn on_postgresql_a_write_on_one_instance_is_seen_by_a_read_on_another_that_sends_it() {
    if !on_postgres() {
        return;
    }
    let fresh = fresh().await;
    let a = spawn_with(config(&fresh)).await;
    let mut other = config(&fresh);
    other.data_dir = fresh.data_dir.join("b");
    let b = spawn_with(other).await;
    let (token, _, _) = a.signup(&email()).await;
    for n in 0..20 {
        let created = a
            .post(
                "/v1/datasets",
                Some(&token),
                json!({"name": format!("d{n}")}),
            )
            .await
            .expect(201);
        let id = created.data()["dataset_id"].as_str().unwrap();
        let read = get_at(
            &b,
            &format!("/v1/datasets/{id}"),
            &token,
            &position(&created),
        )
        .await
        .expect(200);
        assert_eq!(read.data()["name"], format!("d{n}"));
        let listed = get_at(&b, "/v1/datasets?limit=100", &token, &position(&created))
            .await
            .expect(200);
        assert_eq!(listed.data()["items"].as_array().unwrap().len(), n + 1);
    }
    b.finish().await;
    a.finish().await;
}

#[tokio::test]
async fn while_a_new_projection_version_is_rebuilt_behind_the_live_tables_they_keep_serving_and_following(
) {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let created = app
        .post("/v1/datasets", Some(&token), json!({"name": "Tides"}))
        .await
        .expect(201);
    let at = position(&created);
    let id = created.data()["dataset_id"].as_str().unwrap().to_owned();
    settled(&app.state).await;
    let config = app.config.clone();
    app.stop().await;

    // A deploy with a new version of `datasets`, while another instance holds the rebuild lease.
    let (store, _) = ipto::app::open_store(&config).await.unwrap();
    sqlx::query("UPDATE projection_checkpoints SET version = 0 WHERE name = 'datasets'")
        .execute(&store.db.pool)
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    sqlx::query(
        "INSERT INTO projection_rebuilds (slot, holder, projections, phase, done, total, started_ms, updated_ms, expires_ms) \
         VALUES (1, 'another instance', 'datasets', 'replaying', 0, 0, $1, $1, $2)",
    )
    .bind(now)
    .bind(now + 600_000)
    .execute(&store.db.pool)
    .await
    .unwrap();
    store.close().await;

    let app = spawn_with(config).await;
    assert_eq!(app.state.store.engine.rebuilding(), vec!["datasets"]);
    let health = app.get("/health", None).await.expect(200);
    assert_eq!(
        health.data()["projections"]["datasets"]["state"],
        "rebuilding"
    );
    assert_eq!(health.data()["rebuild"]["phase"], "replaying");
    assert_eq!(health.data()["rebuild"]["projections"], json!(["datasets"]));
    // The live tables answer, the header too, and keep following the log: a write is read back.
    let read = get_at(&app, &format!("/v1/datasets/{id}"), &token, &at)
        .await
        .expect(200);
    assert_eq!(read.data()["name"], "Tides");
    let second = app
        .post("/v1/datasets", Some(&token), json!({"name": "Currents"}))
        .await
        .expect(201);
    let (at, id) = (
        position(&second),
        second.data()["dataset_id"].as_str().unwrap().to_owned(),
    );
    let read = get_at(&app, &format!("/v1/datasets/{id}"), &token, &at)
        .await
        .expect(200);
    assert_eq!(read.data()["name"], "Currents");

    // The other holder goes away (its lease expires): this instance rebuilds and switches.
    sqlx::query("UPDATE projection_rebuilds SET expires_ms = 0")
        .execute(&app.state.store.db.pool)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !app.state.store.engine.rebuilding().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new version never went live"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let read = get_at(&app, &format!("/v1/datasets/{id}"), &token, &at)
        .await
        .expect(200);
    assert_eq!(read.data()["name"], "Currents");
    let listed = app.get("/v1/datasets", Some(&token)).await.expect(200);
    assert_eq!(listed.data()["items"].as_array().unwrap().len(), 2);
    let health = app.get("/health", None).await.expect(200);
    assert_eq!(health.data()["projections"]["datasets"]["state"], "ok");
    assert_eq!(health.data()["rebuild"]["phase"], "done");
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM projection_checkpoints WHERE name = 'datasets'")
            .fetch_one(&app.state.store.db.pool)
            .await
            .unwrap();
    assert!(version > 0, "the checkpoint carries the new version");
    app.finish().await;
}
