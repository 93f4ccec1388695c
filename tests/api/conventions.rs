//! SPEC §1 conventions: envelope, request ids, 404/405, bodies, health.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

fn is_rfc3339_utc(value: &str) -> bool {
    aggregates::timestamp::parse(value).is_some() && value.ends_with('Z') && value.len() >= 20
}

#[tokio::test]
async fn every_response_carries_its_request_id_in_body_and_header() {
    let app = spawn_app().await;
    for reply in [
        app.get("/health", None).await,
        app.get("/v1/me", None).await,
        app.get("/nowhere", None).await,
    ] {
        let id = reply.body["request_id"].as_str().unwrap();
        assert!(id.starts_with("req_") && id.len() == 30, "{id}");
        assert_eq!(reply.headers["x-request-id"], id);
        assert!(is_rfc3339_utc(reply.body["timestamp"].as_str().unwrap()));
    }
    let sent = app
        .client
        .get(format!("{}/health", app.address))
        .header("x-request-id", "req_mine")
        .send()
        .await
        .unwrap();
    assert_ne!(sent.headers()["x-request-id"], "req_mine");
    app.finish().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_the_envelope() {
    let app = spawn_app().await;
    for path in ["/nowhere", "/v1/me/", "/v1/ME", "/v1"] {
        let reply = app.get(path, None).await.expect(404);
        assert_eq!(reply.code(), "not_found", "{path}");
        assert_eq!(reply.body["error"]["details"], json!({}));
    }
    let reply = app
        .call(Method::DELETE, "/v1/auth/login", None, None)
        .await
        .expect(405);
    assert_eq!(reply.code(), "method_not_allowed");
    assert_eq!(reply.body["error"]["details"]["allowed"], json!(["POST"]));
    assert_eq!(reply.headers["allow"], "POST");
    let reply = app
        .call(Method::PUT, "/v1/me", None, None)
        .await
        .expect(405);
    assert!(reply.headers["allow"].to_str().unwrap().contains("GET"));
    app.finish().await;
}

#[tokio::test]
async fn request_bodies_are_checked_in_order() {
    let app = spawn_app().await;
    let url = format!("{}/v1/auth/signup", app.address);
    let send = |body: Vec<u8>, content_type: Option<&'static str>| {
        let mut request = app.client.post(&url).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        async move { reply(request.send().await.unwrap()).await }
    };
    let big = vec![b' '; 1_048_577];
    let reply_ = send(big, Some("application/json")).await.expect(413);
    assert_eq!(reply_.code(), "payload_too_large");
    assert_eq!(reply_.body["error"]["details"]["limit"], 1_048_576);
    assert_eq!(
        send(b"{}".to_vec(), Some("text/plain"))
            .await
            .expect(415)
            .code(),
        "unsupported_media_type"
    );
    assert_eq!(
        send(b"{}".to_vec(), None).await.expect(415).code(),
        "unsupported_media_type"
    );
    assert_eq!(
        send(b"{nope".to_vec(), Some("application/json"))
            .await
            .expect(400)
            .code(),
        "invalid_request"
    );
    assert_eq!(
        send(b"[]".to_vec(), Some("application/json"))
            .await
            .expect(400)
            .code(),
        "invalid_request"
    );
    assert_eq!(
        send(b"\"x\"".to_vec(), Some("application/json"))
            .await
            .expect(400)
            .code(),
        "invalid_request"
    );
    // An empty body counts as {} (so: missing fields), with any content type.
    assert_eq!(
        send(Vec::new(), None).await.expect(422).code(),
        "validation_failed"
    );
    send(b"{}".to_vec(), Some("application/json; charset=utf-8"))
        .await
        .expect(422);
    app.finish().await;
}

#[tokio::test]
async fn health_reports_the_store_and_every_projection() {
    let app = spawn_app().await;
    app.signup(&email()).await;
    let reply = app.get("/health", None).await.expect(200);
    let data = reply.data();
    assert_eq!(data["status"], "ok");
    assert_eq!(data["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        data["store"],
        if on_postgres() { "postgres" } else { "sqlite" }
    );
    for name in ["tenants", "users"] {
        let projection = &data["projections"][name];
        assert_eq!(projection["lag"], 0, "{data}");
        assert!(projection["position"].as_i64().unwrap() >= 3, "{data}");
    }
    app.finish().await;
}

#[tokio::test]
async fn health_is_503_when_the_database_is_unreachable() {
    let app = spawn_app().await;
    app.state.store.db.pool.close().await;
    let reply = app.get("/health", None).await.expect(503);
    assert_eq!(reply.code(), "unavailable");
    app.finish().await;
}

#[tokio::test]
async fn a_chunked_body_over_one_mebibyte_is_413() {
    let app = spawn_app().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..17).map(|_| Ok(vec![b' '; 65_536])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let response = app
        .client
        .post(format!("{}/v1/auth/signup", app.address))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let reply = reply(response).await.expect(413);
    assert_eq!(reply.code(), "payload_too_large");
    app.finish().await;
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text() {
    let app = spawn_app().await;
    app.signup(&email()).await;
    app.get("/v1/me", None).await.expect(401);
    let response = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4"
    );
    let text = response.text().await.unwrap();
    for line in [
        "ipto_http_requests_total{method=\"POST\",route=\"/v1/auth/signup\",status=\"201\"} 1",
        "ipto_http_requests_total{method=\"GET\",route=\"/v1/me\",status=\"401\"} 1",
        "ipto_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/auth/signup\"} 1",
        "ipto_commands_total{aggregate=\"email_reservation\",outcome=\"ok\"} 1",
        "ipto_projection_lag_events{projection=\"users\"} 0",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(text.contains("ipto_events_appended_total "));
    // Positions come from a sequence that may skip values (PostgreSQL), so the
    // gauge is compared with the log itself rather than with an event count.
    let head = projections::log::head(&app.state.store.db).await.unwrap();
    assert!(head >= 3);
    assert!(text.contains(&format!("ipto_event_log_head {head}\n")));
    app.finish().await;
}

async fn post_with_key(app: &TestApp, token: &str, key: &str, body: serde_json::Value) -> Reply {
    let response = app
        .client
        .post(format!("{}/v1/datasets", app.address))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    reply(response).await
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_executes_nothing_again() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let first = post_with_key(
        &app,
        &token,
        "create-1",
        json!({"name": "Once", "visibility": "listed"}),
    )
    .await
    .expect(201);
    assert!(first.headers.get("idempotent-replayed").is_none());
    // Key order and whitespace do not matter.
    let again = post_with_key(
        &app,
        &token,
        "create-1",
        json!({"visibility": "listed", "name": "Once"}),
    )
    .await
    .expect(201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(
        again.body, first.body,
        "replayed unchanged, request id included"
    );
    assert_eq!(
        again.headers["x-request-id"],
        first.body["request_id"].as_str().unwrap()
    );
    let created = table(
        &app.state,
        "SELECT COUNT(*) FROM events WHERE event_type = 'DatasetCreated'",
    )
    .await;
    assert_eq!(created[0][0], "1");

    let reused = post_with_key(&app, &token, "create-1", json!({"name": "Other"}))
        .await
        .expect(409);
    assert_eq!(reused.code(), "idempotency_key_reused");
    // Another credential has its own keys.
    let (other, _, _) = app.signup(&email()).await;
    post_with_key(&app, &other, "create-1", json!({"name": "Theirs"}))
        .await
        .expect(201);
    // A 422 is not saved: the key stays usable.
    post_with_key(&app, &token, "create-2", json!({"name": ""}))
        .await
        .expect(422);
    post_with_key(&app, &token, "create-2", json!({"name": "Fixed"}))
        .await
        .expect(201);
    // A malformed key is 400.
    post_with_key(&app, &token, &"x".repeat(256), json!({"name": "n"}))
        .await
        .expect(400);
    post_with_key(&app, &token, "tab\tkey", json!({"name": "n"}))
        .await
        .expect(400);
    app.finish().await;
}

#[tokio::test]
async fn a_key_whose_first_request_still_runs_is_409_in_progress() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let first = post_with_key(&app, &token, "busy", json!({"name": "A"}))
        .await
        .expect(201);
    assert!(first.headers.get("idempotent-replayed").is_none());
    // Simulate a first request that has not finished: the record is back in progress.
    sqlx::query("UPDATE idempotency_keys SET state = 'in_progress' WHERE idem_key = 'busy'")
        .execute(&app.state.store.db.pool)
        .await
        .unwrap();
    let busy = post_with_key(&app, &token, "busy", json!({"name": "A"}))
        .await
        .expect(409);
    assert_eq!(busy.code(), "idempotency_key_in_progress");
    app.finish().await;
}

#[tokio::test]
async fn credentials_and_auth_routes_are_rate_limited_with_ietf_headers() {
    let fresh = fresh().await;
    let mut limited = config(&fresh);
    limited.rate_limit_per_minute = 5;
    limited.auth_rate_limit_per_minute = 3;
    let app = spawn_with(limited).await;
    let (token, _, _) = app.signup(&email()).await;
    let mut last = None;
    for _ in 0..5 {
        last = Some(app.get("/v1/me", Some(&token)).await);
    }
    let last = last.unwrap().expect(200);
    assert_eq!(last.headers["ratelimit-policy"], "\"default\";q=5;w=60");
    assert!(last.headers["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"default\";r=0;t="));
    let refused = app.get("/v1/me", Some(&token)).await;
    // The window may have turned over between the requests; then this one is allowed again.
    if refused.status == 429 {
        assert_eq!(refused.code(), "rate_limited");
        let retry: u64 = refused.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry));
        assert_eq!(refused.body["error"]["details"]["retry_after"], retry);
    }
    // Signup and login share the per-IP bucket (3 a minute): one signup was spent above.
    let address = email();
    app.login(&address, "whatever password").await.expect(401);
    app.login(&address, "whatever password").await.expect(401);
    let blocked = app.login(&address, "whatever password").await;
    assert!(
        [429, 401].contains(&blocked.status.as_u16()),
        "{}",
        blocked.body
    );
    app.finish().await;
}

#[tokio::test]
async fn ten_failed_logins_lock_an_email_even_for_the_right_password() {
    let app = spawn_app().await;
    let address = email();
    app.signup(&address).await;
    for _ in 0..10 {
        app.login(&address, "wrong password!").await.expect(401);
    }
    let locked = app
        .login(&address.to_uppercase(), PASSWORD)
        .await
        .expect(429);
    assert_eq!(locked.code(), "rate_limited");
    assert!(locked.headers.contains_key("retry-after"));
    app.login(&email(), PASSWORD).await.expect(401);
    app.finish().await;
}

#[tokio::test]
async fn bad_query_and_path_parameters_are_answered_in_the_envelope() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let reply = app
        .get("/v1/datasets?limit=1&limit=2", Some(&token))
        .await
        .expect(422);
    assert_eq!(reply.code(), "validation_failed");
    assert!(reply.body["error"]["details"]["fields"]["limit"].is_string());
    // Not UTF-8 once decoded: names nothing, like a malformed id.
    let reply = app
        .get("/v1/datasets/%FF%FE", Some(&token))
        .await
        .expect(404);
    assert_eq!(reply.code(), "not_found");
    // An empty cursor or filter is none.
    app.post("/v1/datasets", Some(&token), json!({"name": "a"}))
        .await
        .expect(201);
    let reply = app
        .get("/v1/datasets?cursor=&status=", Some(&token))
        .await
        .expect(200);
    assert_eq!(reply.data()["items"].as_array().unwrap().len(), 1);
    app.finish().await;
}

#[tokio::test]
async fn a_whole_number_written_with_a_fraction_is_an_integer() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let dataset = app
        .post("/v1/datasets", Some(&token), json!({"name": "a"}))
        .await
        .expect(201);
    let path = format!(
        "/v1/datasets/{}/objects/upload",
        dataset.data()["dataset_id"].as_str().unwrap()
    );
    let body = |size: serde_json::Value| json!({"filename": "a.txt", "content_type": "text/plain", "size_bytes": size});
    app.post(&path, Some(&token), body(json!(10.0)))
        .await
        .expect(201);
    for wrong in [json!(10.5), json!("10"), json!(-1)] {
        let reply = app.post(&path, Some(&token), body(wrong.clone())).await;
        assert_eq!(reply.status, 400, "{wrong}: {}", reply.body);
        assert!(reply.body["error"]["details"]["fields"]["size_bytes"].is_string());
    }
    app.finish().await;
}

#[tokio::test]
async fn text_holding_nul_is_refused_on_every_store() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let reply = app
        .post("/v1/datasets", Some(&token), json!({"name": "a\u{0}b"}))
        .await
        .expect(422);
    assert!(reply.body["error"]["details"]["fields"]["name"].is_string());
    let reply = app
        .post(
            "/v1/datasets",
            Some(&token),
            json!({"name": "a", "description": "x\u{0}"}),
        )
        .await
        .expect(422);
    assert!(reply.body["error"]["details"]["fields"]["description"].is_string());
    let reply = app
        .get("/v1/catalog/datasets?q=a%00b", Some(&token))
        .await
        .expect(422);
    assert!(reply.body["error"]["details"]["fields"]["q"].is_string());
    app.get("/v1/datasets/dset_%00", Some(&token))
        .await
        .expect(404);
    app.finish().await;
}
