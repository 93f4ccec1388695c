//! Following the log live (`/v1/admin/events/stream`, `/v1/audit/events[/stream]`), an aggregate's
//! history and its state as of any point, and the audit numbering in `/health` and `/metrics`.

use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::helpers::*;

#[tokio::test]
async fn a_client_that_disconnects_at_random_and_resumes_collects_exactly_the_log() {
    let (app, admin) = spawn_with_admin(config(&fresh().await)).await;
    let (token, _, _) = app.signup(&email()).await;

    // Writers run the whole time the client reads.
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let client = app.client.clone();
            let address = app.address.clone();
            let token = token.clone();
            tokio::spawn(async move {
                for i in 0..60 {
                    let reply = client
                        .post(format!("{address}/v1/datasets"))
                        .bearer_auth(&token)
                        .json(&json!({"name": format!("writer {w} dataset {i}")}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(reply.status(), 201);
                }
            })
        })
        .collect();

    let mut collected: Vec<(i64, String, Value)> = Vec::new();
    let mut reconnects = 0;
    let mut rng = rand::thread_rng();
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        let last = collected.last().map(|(id, _, _)| *id);
        // Half the reconnections resume with the header, half with `?after=`.
        let mut reader = if reconnects % 2 == 0 {
            app.stream("/v1/admin/events/stream", &admin, last).await
        } else {
            let after = last.unwrap_or(0);
            app.stream(
                &format!("/v1/admin/events/stream?after={after}"),
                &admin,
                None,
            )
            .await
        };
        reconnects += 1;
        let take = rng.gen_range(1..=10);
        let mut taken = 0;
        while taken < take {
            match tokio::time::timeout(Duration::from_secs(2), reader.next()).await {
                Ok(Some(Sse::Event { id, event, data })) => {
                    collected.push((id, event, data));
                    taken += 1;
                }
                Ok(Some(Sse::Comment(_))) => {}
                // Caught up with the writers for now.
                Ok(None) | Err(_) => break,
            }
        }
        // Dropping the reader disconnects, at a random point of the log.
        drop(reader);
        if done && taken < take {
            break;
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(reconnects > 10, "only {reconnects} reconnections");

    settled(&app.state).await;
    let log = all_listed(&app, &admin, "/v1/admin/events").await;
    let ids: Vec<i64> = collected.iter().map(|(id, _, _)| *id).collect();
    let expected: Vec<i64> = (1..=log.len() as i64).collect();
    assert_eq!(ids, expected, "a gap or a repeat");
    for ((id, event, data), item) in collected.iter().zip(&log) {
        assert_eq!(data, item, "the streamed item at {id} is the listed one");
        assert_eq!(event, item["event_type"].as_str().unwrap());
    }
    assert!(log.len() > 120, "{} events", log.len());
    app.finish().await;
}

#[tokio::test]
async fn a_stream_follows_new_events_applies_the_filters_and_heartbeats_when_idle() {
    let (app, admin) = spawn_with_admin(config(&fresh().await)).await;
    let (token, _, _) = app.signup(&email()).await;
    let first = app.dataset(&token, json!({"name": "first"})).await;
    settled(&app.state).await;

    // Only dataset events, from now on.
    let head = all_listed(&app, &admin, "/v1/admin/events").await.len() as i64;
    let mut reader = app
        .stream(
            "/v1/admin/events/stream?aggregate_type=dataset",
            &admin,
            Some(head),
        )
        .await;
    let second = app.dataset(&token, json!({"name": "second"})).await;
    app.patch(
        &format!("/v1/datasets/{first}"),
        Some(&token),
        json!({"name": "first, renamed"}),
    )
    .await
    .expect(200);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
            Ok(Some(Sse::Event { id, event, data })) => {
                assert!(id > head);
                assert_eq!(data["aggregate_type"], "dataset");
                seen.push((event, data["aggregate_id"].as_str().unwrap().to_owned()));
            }
            Ok(Some(Sse::Comment(_))) => {}
            other => panic!("the stream stopped: {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            ("DatasetCreated".to_owned(), second),
            ("DatasetUpdated".to_owned(), first.clone()),
        ]
    );
    drop(reader);

    // `follow=false` reads to the current end and closes, with the list's items.
    let streamed = app
        .streamed(
            &format!("/v1/admin/events/stream?follow=false&aggregate_id={first}"),
            &admin,
        )
        .await;
    let page = app
        .get(
            &format!("/v1/admin/events?aggregate_id={first}&limit=100"),
            Some(&admin),
        )
        .await
        .expect(200);
    let items: Vec<Value> = streamed.into_iter().map(|(_, _, data)| data).collect();
    assert_eq!(&Value::from(items), &page.data()["events"]);

    // Nothing to send for 15 s: a heartbeat comment.
    let mut idle = app
        .stream(
            "/v1/admin/events/stream?aggregate_id=dset_nothing",
            &admin,
            None,
        )
        .await;
    let beat = tokio::time::timeout(Duration::from_secs(20), idle.next()).await;
    assert_eq!(beat.unwrap(), Some(Sse::Comment("heartbeat".into())));
    app.finish().await;
}

#[tokio::test]
async fn stream_parameters_are_validated_and_the_streams_need_their_credentials() {
    let (app, admin) = spawn_with_admin(config(&fresh().await)).await;
    let (token, _, _) = app.signup(&email()).await;
    for path in [
        "/v1/admin/events/stream?after=-1",
        "/v1/admin/events/stream?after=x",
        "/v1/admin/events/stream?follow=maybe",
        "/v1/admin/events/stream?aggregate_type=planet",
        "/v1/audit/events/stream?after=1.5",
        "/v1/audit/events?limit=0",
    ] {
        let who = if path.starts_with("/v1/admin") {
            &admin
        } else {
            &token
        };
        let reply = app.get(path, Some(who)).await.expect(422);
        assert_eq!(reply.code(), "validation_failed", "{path}");
    }
    for bad in ["-3", "seven", ""] {
        let reply = reply(
            app.client
                .get(format!("{}/v1/admin/events/stream", app.address))
                .bearer_auth(&admin)
                .header("Last-Event-ID", bad)
                .send()
                .await
                .unwrap(),
        )
        .await
        .expect(422);
        assert!(
            reply.body["error"]["details"]["fields"]["Last-Event-ID"].is_string(),
            "{}",
            reply.body
        );
    }
    for path in ["/v1/admin/events/stream", "/v1/audit/events/stream"] {
        app.get(path, None).await.expect(401);
    }
    app.get("/v1/admin/events/stream", Some(&token))
        .await
        .expect(403);
    app.finish().await;
}

#[tokio::test]
async fn a_follower_never_holds_more_than_its_buffer_and_drops_a_client_that_reads_nothing() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    for i in 0..12 {
        app.dataset(&token, json!({"name": format!("d{i}")})).await;
    }
    settled(&app.state).await;
    // A client that never reads: a buffer of 4, and a patience of 200 ms.
    let (events, mut receiver) = mpsc::channel(4);
    let follower = tokio::spawn(ipto::http::events::follow(
        app.state.clone(),
        ipto::http::events::Selection::default(),
        true,
        events,
        Duration::from_millis(200),
    ));
    tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the follower gave the client up")
        .unwrap();
    let mut held = Vec::new();
    while let Some(event) = receiver.recv().await {
        held.push(event);
    }
    assert_eq!(held.len(), 4, "the follower held exactly its buffer");
    app.finish().await;
}

#[tokio::test]
async fn a_tenant_audits_its_own_events_only_as_a_list_and_a_stream() {
    let (app, admin) = spawn_with_admin(config(&fresh().await)).await;
    let (a, _, a_tenant) = app.signup(&email()).await;
    let (b, _, b_tenant) = app.signup(&email()).await;
    let a_dataset = app.dataset(&a, json!({"name": "a's"})).await;
    app.dataset(&b, json!({"name": "b's"})).await;
    let reader = app
        .api_key(&a, json!({"name": "auditor", "scopes": ["usage:read"]}))
        .await;
    let writer = app
        .api_key(&a, json!({"name": "writer", "scopes": ["datasets:write"]}))
        .await;
    settled(&app.state).await;

    let all = all_listed(&app, &admin, "/v1/admin/events").await;
    let a_events: Vec<Value> = all
        .iter()
        .filter(|e| e["metadata"]["tenant_id"] == a_tenant.as_str())
        .cloned()
        .collect();
    assert!(a_events
        .iter()
        .any(|e| e["aggregate_id"] == a_dataset.as_str()));
    assert!(all
        .iter()
        .any(|e| e["metadata"]["tenant_id"] == b_tenant.as_str()));

    // The owner's session and a usage:read key read exactly A's events, with their positions.
    for token in [&a, &reader] {
        assert_eq!(all_listed(&app, token, "/v1/audit/events").await, a_events);
        let streamed: Vec<Value> = app
            .streamed("/v1/audit/events/stream?follow=false", token)
            .await
            .into_iter()
            .map(|(_, _, data)| data)
            .collect();
        assert_eq!(streamed, a_events);
    }
    // Live: B's new event is not sent to A; A's is.
    let after = a_events.last().unwrap()["position"].as_i64().unwrap();
    let mut live = app
        .stream("/v1/audit/events/stream", &reader, Some(after))
        .await;
    app.dataset(&b, json!({"name": "b's second"})).await;
    let a_second = app.dataset(&a, json!({"name": "a's second"})).await;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), live.next()).await {
            Ok(Some(Sse::Event { data, .. })) => {
                assert_eq!(data["metadata"]["tenant_id"], a_tenant.as_str());
                if data["aggregate_id"] == a_second.as_str() {
                    break;
                }
            }
            Ok(Some(Sse::Comment(_))) => {}
            other => panic!("the stream stopped: {other:?}"),
        }
    }
    // A key without usage:read is refused, as is the platform list for a tenant.
    for path in ["/v1/audit/events", "/v1/audit/events/stream"] {
        let reply = app.get(path, Some(&writer)).await.expect(403);
        assert_eq!(reply.code(), "forbidden");
    }
    app.get("/v1/admin/events", Some(&a)).await.expect(403);
    app.finish().await;
}

#[tokio::test]
async fn an_aggregates_history_lists_its_events_and_folds_its_state_as_of_any_point() {
    let (app, admin) = spawn_with_admin(config(&fresh().await)).await;
    let (token, _, _) = app.signup(&email()).await;
    let dataset = app.dataset(&token, json!({"name": "original"})).await;
    settled(&app.state).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.patch(
        &format!("/v1/datasets/{dataset}"),
        Some(&token),
        json!({"name": "renamed"}),
    )
    .await
    .expect(200);
    settled(&app.state).await;

    let events = app
        .get(
            &format!("/v1/admin/aggregates/dataset/{dataset}/events"),
            Some(&admin),
        )
        .await
        .expect(200);
    let events = events.data()["events"].as_array().unwrap().clone();
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["DatasetCreated", "DatasetUpdated"]);
    let created_at = events[0]["position"].as_i64().unwrap();
    let updated_at = events[1]["position"].as_i64().unwrap();
    // The same items as the log's.
    let page = app
        .get(
            &format!("/v1/admin/events?aggregate_id={dataset}"),
            Some(&admin),
        )
        .await
        .expect(200);
    assert_eq!(Value::from(events.clone()), page.data()["events"]);

    let state = |query: String| {
        let app = &app;
        let admin = admin.clone();
        let dataset = dataset.clone();
        async move {
            app.get(
                &format!("/v1/admin/aggregates/dataset/{dataset}{query}"),
                Some(&admin),
            )
            .await
        }
    };
    let now = state(String::new()).await.expect(200);
    assert_eq!(now.data()["audit_position"], updated_at);
    assert_eq!(now.data()["sequence"], 2);
    assert!(now.data()["state"].to_string().contains("renamed"));
    for query in [
        format!("?as_of_position={created_at}"),
        format!("?as_of_position={}", updated_at - 1),
        format!(
            "?as_of={}",
            between.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ),
    ] {
        let then = state(query.replace('+', "%2B")).await.expect(200);
        assert_eq!(then.data()["audit_position"], created_at, "{query}");
        assert_eq!(then.data()["sequence"], 1);
        let text = then.data()["state"].to_string();
        assert!(
            text.contains("original") && !text.contains("renamed"),
            "{text}"
        );
    }
    // Before it existed, or never: 404.
    state(format!("?as_of_position={}", created_at - 1))
        .await
        .expect(404);
    state("?as_of=2000-01-01T00:00:00Z".into())
        .await
        .expect(404);
    for path in [
        "/v1/admin/aggregates/dataset/dset_unknown",
        "/v1/admin/aggregates/dataset/dset_unknown/events",
        "/v1/admin/aggregates/user/usr_unknown",
    ] {
        let reply = app.get(path, Some(&admin)).await.expect(404);
        assert_eq!(reply.code(), "not_found");
    }
    for query in [
        "?as_of_position=-1",
        "?as_of=yesterday",
        "?as_of_position=1&as_of=2026-01-01T00:00:00Z",
    ] {
        state(query.into()).await.expect(422);
    }
    app.get(
        &format!("/v1/admin/aggregates/planet/{dataset}"),
        Some(&admin),
    )
    .await
    .expect(422);
    app.get(
        &format!("/v1/admin/aggregates/dataset/{dataset}"),
        Some(&token),
    )
    .await
    .expect(403);
    app.finish().await;
}

#[tokio::test]
async fn health_metrics_and_status_show_the_audit_head_in_audit_positions() {
    let (app, admin) = spawn_with_admin(config(&fresh().await)).await;
    let (token, _, _) = app.signup(&email()).await;
    app.dataset(&token, json!({})).await;
    settled(&app.state).await;
    let log = all_listed(&app, &admin, "/v1/admin/events").await;
    let last = log.last().unwrap()["position"].as_i64().unwrap();
    assert_eq!(last, log.len() as i64);

    let health = app.get("/health", None).await.expect(200);
    assert_eq!(health.data()["audit"]["audit_position"], last);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(&format!("\nipto_audit_position {last}\n")),
        "{metrics}"
    );
    app.finish().await;
}
