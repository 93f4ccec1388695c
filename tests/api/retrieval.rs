//! The retrieval modes (`lexical`, `dense`, `hybrid`, `auto`) and `POST /v1/retrieve`, over the
//! bundled encoder: a paraphrase is found by meaning, an exact code by its letters, `auto` picks
//! by the query's operators, and the vectors survive a restart, and are made again for another
//! embedder.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;
use crate::search::publish;

const PORT_DELAYS: &str = "Containers from Rotterdam arrive late because of port congestion. \
    Vessels wait at anchor for days before a berth is free, and the terminals are short of \
    cranes and crews.";
const PAYMENT_CODE: &str = "Remittance advice. Payment reference ZX4471B settles the March \
    invoice for office furniture.";
const BREAD: &str = "A sourdough loaf needs flour, water, salt and a lively starter; bake it \
    in a hot oven until the crust is dark.";
const FOOTBALL: &str = "The home side won the cup final after extra time, with a header from \
    the captain in the last minute.";

/// A listed dataset of the four texts, approved and embedded: (app, admin, seller, buyer key,
/// object ids in the order of the texts).
async fn corpus(config: ipto::config::Config) -> (TestApp, String, String, String, Vec<String>) {
    let (app, admin) = spawn_with_admin(config).await;
    let (seller, _, tenant) = app.signup(&email()).await;
    let dataset = app
        .dataset(
            &seller,
            json!({"name": "Shipping notes", "visibility": "listed", "price_per_result": "0.02"}),
        )
        .await;
    let mut objects = Vec::new();
    for (i, text) in [PORT_DELAYS, PAYMENT_CODE, BREAD, FOOTBALL]
        .iter()
        .enumerate()
    {
        let upload = json!({"filename": format!("note-{i}.txt"), "content_type": "text/plain"});
        objects.push(
            publish(
                &app,
                &seller,
                &tenant,
                Some(&admin),
                &dataset,
                upload,
                text.as_bytes(),
            )
            .await,
        );
    }
    let (buyer, _, _) = app.signup(&email()).await;
    let key = app
        .api_key(&buyer, json!({"name": "agent", "scopes": ["search:query"]}))
        .await;
    if app.config.embedder != "none" {
        embedded(&app).await;
    }
    (app, admin, seller, key, objects)
}

/// Waits until the dense leg has embedded every approved object.
async fn embedded(app: &TestApp) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let health = app.get("/health", None).await.expect(200);
        let dense = health.data()["projections"]["search"]["dense"].clone();
        if dense["pending_objects"] == 0 && dense["embedded_passages"].as_u64() > Some(0) {
            return dense;
        }
        assert!(Instant::now() < deadline, "not embedded in time: {dense}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn search(app: &TestApp, key: &str, query: &str, mode: Option<&str>) -> Value {
    let mut body = json!({"query": query});
    if let Some(mode) = mode {
        body["retrieval_mode"] = json!(mode);
    }
    app.post("/v1/search", Some(key), body)
        .await
        .expect(200)
        .data()
        .clone()
}

fn ids(data: &Value) -> Vec<String> {
    data["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["object_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_paraphrase_is_found_by_meaning_and_an_exact_code_by_its_letters() {
    let fresh = fresh().await;
    let (app, _, _, key, objects) = corpus(config(&fresh)).await;
    // No word in common with the text about port congestion.
    let question = "why do cargo ships get held up at the harbour";
    let lexical = search(&app, &key, question, Some("lexical")).await;
    assert_eq!(lexical["retrieval_mode_used"], "lexical");
    assert!(ids(&lexical).is_empty(), "{lexical}");
    let dense = search(&app, &key, question, Some("dense")).await;
    assert_eq!(dense["retrieval_mode_used"], "dense");
    assert_eq!(ids(&dense)[0], objects[0], "{dense}");
    let hybrid = search(&app, &key, question, Some("hybrid")).await;
    assert_eq!(hybrid["retrieval_mode_used"], "hybrid");
    assert_eq!(ids(&hybrid)[0], objects[0], "{hybrid}");
    let auto = search(&app, &key, question, None).await;
    assert_eq!(auto["retrieval_mode_used"], "hybrid");
    assert_eq!(ids(&auto)[0], objects[0]);
    // A dense hit's snippet is its passage, cited by its characters.
    let hit = &dense["results"][0];
    let locator = hit["citation"]["locator"].as_str().unwrap();
    assert_eq!(
        locator,
        format!("chars:0-{}", PORT_DELAYS.chars().count().min(200))
    );
    assert!(PORT_DELAYS.starts_with(hit["snippet"].as_str().unwrap()));
    // One result per object, each charged once.
    assert_eq!(dense["result_count"], 4);
    assert_eq!(dense["charged_amount"], json!(0.08));

    // An exact code: lexical and hybrid put it first.
    for mode in ["lexical", "hybrid"] {
        let found = search(&app, &key, "ZX4471B", Some(mode)).await;
        assert_eq!(ids(&found)[0], objects[1], "{mode}: {found}");
    }
    // A question's words are any of them, not all: "rotterdam" alone matches.
    let words = search(&app, &key, "which shipments from Rotterdam are late", None).await;
    assert_eq!(ids(&words)[0], objects[0]);
    app.finish().await;
}

#[tokio::test]
async fn auto_is_lexical_for_operators_and_hybrid_for_questions() {
    let fresh = fresh().await;
    let (app, _, _, key, objects) = corpus(config(&fresh)).await;
    for query in [
        "rotterdam AND congestion",
        "rotterdam OR sourdough",
        "rotterdam NOT sourdough",
        "rotterdam -sourdough",
        "\"port congestion\"",
        "(rotterdam)",
        "rotter*",
    ] {
        let found = search(&app, &key, query, None).await;
        assert_eq!(found["retrieval_mode_used"], "lexical", "{query}");
        assert!(ids(&found).contains(&objects[0]), "{query}: {found}");
        assert!(!ids(&found).contains(&objects[3]), "{query}: {found}");
    }
    // Operators keep their meaning in hybrid's lexical leg too, and AND still means AND in
    // lexical mode.
    let strict = search(&app, &key, "rotterdam bread", Some("lexical")).await;
    assert!(ids(&strict).is_empty());
    // Operators that match nothing: auto answers the words instead.
    let fallback = search(&app, &key, "\"harbour queues\" (ships)", None).await;
    assert_eq!(fallback["retrieval_mode_used"], "hybrid");
    assert!(!ids(&fallback).is_empty());
    let question = search(&app, &key, "what does a bakery need", None).await;
    assert_eq!(question["retrieval_mode_used"], "hybrid");
    assert_eq!(ids(&question)[0], objects[2], "{question}");
    app.finish().await;
}

#[tokio::test]
async fn retrieve_answers_passages_with_provenance_and_charges_each_object_once() {
    let fresh = fresh().await;
    let (app, _, _, key, objects) = corpus(config(&fresh)).await;
    let retrieve = |body: Value| {
        let app = &app;
        let key = key.clone();
        async move { app.post("/v1/retrieve", Some(&key), body).await }
    };
    let answer = retrieve(json!({"query": "why are ships late in port", "top_k": 3}))
        .await
        .expect(200);
    let data = answer.data();
    assert_eq!(data["retrieval_mode_used"], "hybrid");
    let units = data["units"].as_array().unwrap();
    assert_eq!(units.len(), 3);
    let unit = &units[0];
    assert_eq!(unit["object_id"], objects[0].as_str());
    assert!(unit["unit_id"].as_str().unwrap().starts_with("ret_"));
    assert_eq!(unit["dataset_name"], "Shipping notes");
    assert_eq!(unit["text"], PORT_DELAYS);
    assert_eq!(
        unit["locator"],
        format!("chars:0-{}", PORT_DELAYS.chars().count())
    );
    assert_eq!(unit["provenance"]["filename"], "note-0.txt");
    assert_eq!(
        unit["provenance"]["checksum_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert!(unit["provenance"]["approved_at"].is_string());
    assert_eq!(unit["billable"], true);
    assert_eq!(unit["charged_amount"], json!(0.02));
    assert_eq!(data["charged_amount"], json!(0.06));
    assert!(data["search_activity_id"]
        .as_str()
        .unwrap()
        .starts_with("sa_"));
    // min_score leaves out what scores below it.
    let strict = retrieve(json!({"query": "why are ships late in port", "retrieval_mode": "dense", "min_score": 0.99}))
        .await
        .expect(200);
    assert_eq!(strict.data()["units"], json!([]));
    assert_eq!(strict.data()["charged_amount"], json!(0));
    // Bad input is 422 on its field.
    for (body, field) in [
        (json!({"query": "x", "top_k": 0}), "top_k"),
        (json!({"query": "x", "top_k": 51}), "top_k"),
        (json!({"query": ""}), "query"),
        (
            json!({"query": "x", "retrieval_mode": "psychic"}),
            "retrieval_mode",
        ),
        (json!({"query": "\"open"}), "query"),
    ] {
        let refused = retrieve(body.clone()).await.expect(422);
        assert!(
            refused.body["error"]["details"]["fields"][field].is_string(),
            "{body}: {}",
            refused.body
        );
    }
    app.finish().await;
}

#[tokio::test]
async fn a_long_object_gives_several_passages_and_is_charged_once() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller, _, tenant) = app.signup(&email()).await;
    let dataset = app
        .dataset(
            &seller,
            json!({"name": "Port log", "visibility": "listed", "price_per_result": "0.03"}),
        )
        .await;
    let text = format!("{PORT_DELAYS} ").repeat(6);
    let object = publish(
        &app,
        &seller,
        &tenant,
        Some(&admin),
        &dataset,
        json!({"filename": "log.txt", "content_type": "text/plain"}),
        text.as_bytes(),
    )
    .await;
    let (buyer, _, _) = app.signup(&email()).await;
    embedded(&app).await;
    let answer = app
        .post(
            "/v1/retrieve",
            Some(&buyer),
            json!({"query": "port congestion delays", "top_k": 4, "retrieval_mode": "dense"}),
        )
        .await
        .expect(200);
    let units = answer.data()["units"].as_array().unwrap().clone();
    assert!(units.len() >= 2, "{}", answer.body);
    assert!(units.iter().all(|u| u["object_id"] == object.as_str()));
    let charged: Vec<&Value> = units.iter().map(|u| &u["charged_amount"]).collect();
    assert_eq!(charged[0], &json!(0.03));
    assert!(charged[1..].iter().all(|c| **c == json!(0)));
    assert_eq!(answer.data()["charged_amount"], json!(0.03));
    // Passages are distinct places in the text.
    let mut locators: Vec<&str> = units
        .iter()
        .map(|u| u["locator"].as_str().unwrap())
        .collect();
    locators.sort();
    locators.dedup();
    assert_eq!(locators.len(), units.len());
    app.finish().await;
}

#[tokio::test]
async fn vectors_survive_a_restart_and_another_embedder_embeds_again() {
    let fresh = fresh().await;
    let config = config(&fresh);
    let (app, _, _, key, objects) = corpus(config.clone()).await;
    let before = embedded(&app).await;
    let passages = before["embedded_passages"].as_u64().unwrap();
    app.stop().await;

    // Restarted on the same index: the vectors are there at once, nothing waits.
    let app = spawn_with(config.clone()).await;
    let health = app.get("/health", None).await.expect(200);
    let dense = &health.data()["projections"]["search"]["dense"];
    assert_eq!(
        dense["embedded_passages"].as_u64(),
        Some(passages),
        "{dense}"
    );
    assert_eq!(dense["pending_objects"], 0);
    let found = search(
        &app,
        &key,
        "why do cargo ships get held up at the harbour",
        Some("dense"),
    )
    .await;
    assert_eq!(ids(&found)[0], objects[0]);
    app.stop().await;

    // Another embedder (an OpenAI-compatible endpoint, here serving the bundled encoder under
    // another model name): every passage is embedded again, through it.
    let calls = Arc::new(AtomicUsize::new(0));
    let endpoint = embeddings_endpoint(calls.clone()).await;
    let mut other = config;
    other.embedder = format!("openai:{endpoint}#pocket-as-a-service");
    let app = spawn_with(other.clone()).await;
    let again = embedded(&app).await;
    assert_eq!(again["embedded_passages"].as_u64(), Some(passages));
    assert!(calls.load(Ordering::SeqCst) as u64 >= passages);
    let found = search(
        &app,
        &key,
        "why do cargo ships get held up at the harbour",
        Some("dense"),
    )
    .await;
    assert_eq!(ids(&found)[0], objects[0]);
    app.stop().await;

    // Restarted with that endpoint: its vectors are the ones kept, nothing is embedded again.
    let before = calls.load(Ordering::SeqCst);
    let app = spawn_with(other).await;
    let health = app.get("/health", None).await.expect(200);
    let dense = &health.data()["projections"]["search"]["dense"];
    assert_eq!(
        dense["embedded_passages"].as_u64(),
        Some(passages),
        "{dense}"
    );
    assert_eq!(dense["pending_objects"], 0, "{dense}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls.load(Ordering::SeqCst), before);
    app.finish().await;
}

/// An OpenAI-compatible embeddings endpoint on a random port, answering with the bundled
/// encoder; `calls` counts the texts it embedded. A request holding the word POISON fails (500).
async fn embeddings_endpoint(calls: Arc<AtomicUsize>) -> String {
    use axum::routing::post;
    let encoder = Arc::new(ipto::search::embed::Pocket::new().unwrap());
    let app = axum::Router::new().route(
        "/v1/embeddings",
        post(move |axum::Json(body): axum::Json<Value>| {
            let encoder = encoder.clone();
            let calls = calls.clone();
            async move {
                use ipto::search::embed::Embedder;
                let texts: Vec<String> = body["input"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_owned())
                    .collect();
                if texts.iter().any(|t| t.contains("POISON")) {
                    return Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                }
                calls.fetch_add(texts.len(), Ordering::SeqCst);
                let vectors = tokio::task::spawn_blocking(move || {
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    encoder.embed(&refs).unwrap()
                })
                .await
                .unwrap();
                let data: Vec<Value> = vectors
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| json!({"index": i, "embedding": v}))
                    .collect();
                Ok(axum::Json(json!({"data": data})))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/v1/embeddings")
}

#[tokio::test]
async fn vectors_committed_before_a_crash_are_kept_and_the_rest_are_embedded_after_it() {
    use crate::cli::Server;
    let fresh = fresh().await;
    // Approved and indexed lexically by a server without a dense leg: nothing embedded yet.
    let mut lexical_only = config(&fresh);
    lexical_only.embedder = "none".into();
    let (app, _, _, key, objects) = corpus(lexical_only).await;
    app.stop().await;

    // A server with the encoder embeds them; it is killed (SIGKILL) once some are committed.
    let health = |server: &Server| {
        let (client, address) = (server.client.clone(), server.address.clone());
        async move {
            let response = client
                .get(format!("{address}/health"))
                .send()
                .await
                .unwrap();
            reply(response).await.data()["projections"]["search"]["dense"].clone()
        }
    };
    let server = Server::start(&fresh).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let before = loop {
        let dense = health(&server).await;
        if dense["embedded_passages"].as_u64() > Some(0) {
            break dense["embedded_passages"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "nothing embedded: {dense}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.kill();

    // Restarted: what was committed is there at once; the rest is embedded; dense search works.
    let server = Server::start(&fresh).await;
    let at_start = health(&server).await;
    assert!(
        at_start["embedded_passages"].as_u64().unwrap() >= before,
        "{at_start}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let dense = health(&server).await;
        if dense["pending_objects"] == 0 {
            assert_eq!(dense["embedded_passages"].as_u64(), Some(4), "{dense}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not embedded after the restart: {dense}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let found = server
        .client
        .post(format!("{}/v1/search", server.address))
        .bearer_auth(&key)
        .json(&json!({"query": "why do cargo ships get held up at the harbour", "retrieval_mode": "dense"}))
        .send()
        .await
        .unwrap();
    let found = reply(found).await.expect(200);
    assert_eq!(ids(found.data())[0], objects[0]);
    server.stop();
}

#[tokio::test]
async fn without_an_embedder_hybrid_is_its_lexical_leg_and_dense_is_refused() {
    let fresh = fresh().await;
    let mut lexical_only = config(&fresh);
    lexical_only.embedder = "none".into();
    let (app, _, _, key, objects) = corpus(lexical_only).await;
    // A phrase that is nowhere: the lexical leg reads its words instead.
    for mode in [None, Some("hybrid")] {
        let found = search(&app, &key, "\"rotterdam sourdough\"", mode).await;
        assert_eq!(found["retrieval_mode_used"], "lexical", "{mode:?}");
        let mut found = ids(&found);
        found.sort();
        let mut expected = vec![objects[0].clone(), objects[2].clone()];
        expected.sort();
        assert_eq!(found, expected, "{mode:?}");
    }
    // In lexical mode the phrase keeps its meaning.
    assert!(ids(&search(&app, &key, "\"rotterdam sourdough\"", Some("lexical")).await).is_empty());
    let refused = app
        .post(
            "/v1/search",
            Some(&key),
            json!({"query": "ships", "retrieval_mode": "dense"}),
        )
        .await
        .expect(422);
    assert!(refused.body["error"]["details"]["fields"]["retrieval_mode"].is_string());
    let health = app.get("/health", None).await.expect(200);
    assert!(health.data()["projections"]["search"]["dense"].is_null());
    app.finish().await;
}

#[tokio::test]
async fn an_object_the_embedder_refuses_is_set_aside_and_the_others_are_embedded() {
    let fresh = fresh().await;
    let mut config = config(&fresh);
    config.embedder = format!(
        "openai:{}#pocket-as-a-service",
        embeddings_endpoint(Arc::default()).await
    );
    let (app, admin) = spawn_with_admin(config).await;
    let (seller, _, tenant) = app.signup(&email()).await;
    let dataset = app
        .dataset(&seller, json!({"name": "Notes", "visibility": "listed"}))
        .await;
    let mut objects = Vec::new();
    for (i, text) in [PORT_DELAYS, "A POISON pill for the embedder.", BREAD]
        .iter()
        .enumerate()
    {
        let upload = json!({"filename": format!("n-{i}.txt"), "content_type": "text/plain"});
        objects.push(
            publish(
                &app,
                &seller,
                &tenant,
                Some(&admin),
                &dataset,
                upload,
                text.as_bytes(),
            )
            .await,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let dense = loop {
        let health = app.get("/health", None).await.expect(200);
        let dense = health.data()["projections"]["search"]["dense"].clone();
        if dense["pending_objects"] == 0 {
            break dense;
        }
        assert!(Instant::now() < deadline, "still waiting: {dense}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dense["embedded_passages"], 2, "{dense}");
    assert_eq!(dense["set_aside_objects"], 1, "{dense}");
    // The refused object is still found by its words; the others by their meaning.
    let (buyer, _, _) = app.signup(&email()).await;
    assert_eq!(
        ids(&search(&app, &buyer, "poison", Some("lexical")).await),
        [objects[1].clone()]
    );
    let found = search(
        &app,
        &buyer,
        "why do cargo ships get held up at the harbour",
        Some("dense"),
    )
    .await;
    assert_eq!(ids(&found), [objects[0].clone(), objects[2].clone()]);
    app.finish().await;
}
