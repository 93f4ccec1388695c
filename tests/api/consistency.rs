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
