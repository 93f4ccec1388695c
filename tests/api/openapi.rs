//! SPEC §3.15: `GET /openapi.json` is an OpenAPI 3.1 document whose operations are exactly the
//! routes the service serves (every route but `/storage/…`), with the same `{param}` names.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::spawn_app;

/// Routes of the SPEC that this build does not serve yet. Each is checked to be absent from both
/// the router and the document; once one is served, the test below names it so it is removed
/// from here (and then must be documented like every other route).
const PENDING_ROUTES: &[(&str, &str)] = &[];

/// How many routes SPEC §3 lists (all but the signed `/storage/…` URLs): with the pending ones,
/// the service must serve them all, so a route lost from the router and the document together is
/// still noticed.
const SPEC_ROUTES: usize = 46;
/// Routes the issues add beyond SPEC §3: `POST /v1/retrieve`; the audit tree's head, heads,
/// inclusion and consistency proofs, and public key; the event streams (admin and tenant), the
/// tenant's own log, an aggregate's events and state, and a user's erasure; the teams' eight
/// (invitations: create, list, revoke, accept; members: list, change roles, remove; ownership).
const ADDED_ROUTES: usize = 20;

/// Methods an OpenAPI path item may hold.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "options", "head", "trace",
];

/// `(METHOD, path)` for every operation of the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

/// `(METHOD, path)` for every route the router serves: the paths recorded at registration, each
/// asked for its methods with a method no route has (TRACE), whose 405 lists them in `Allow`.
async fn served(app: &crate::helpers::TestApp) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for path in ipto::http::paths() {
        let concrete: String = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x0"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let response = app
            .client
            .request(Method::TRACE, format!("{}{concrete}", app.address))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 405, "TRACE {concrete}");
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        for method in allow.split(',').map(str::trim) {
            // axum answers HEAD wherever it answers GET.
            if !method.is_empty() && method != "HEAD" {
                operations.insert((method.to_owned(), path.clone()));
            }
        }
    }
    operations
}

#[tokio::test]
async fn the_document_describes_exactly_the_routes_served() {
    let app = spawn_app().await;
    let reply = app.get("/openapi.json", None).await.expect(200);
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{:?}",
        reply.headers
    );
    let doc = reply.body;
    assert!(doc.get("data").is_none(), "no envelope");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );

    let served: BTreeSet<_> = served(&app)
        .await
        .into_iter()
        // Signed storage URLs and the MCP endpoint are not REST operations (README).
        .filter(|(_, path)| !path.starts_with("/storage/") && path != ipto::http::mcp::PATH)
        .collect();
    let documented = documented(&doc);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in /openapi.json: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in /openapi.json but not served: {unserved:?}"
    );
    assert_eq!(
        served.len() + PENDING_ROUTES.len(),
        SPEC_ROUTES + ADDED_ROUTES,
        "every route of SPEC §3 is served or pending: {served:?}"
    );
    for (method, path) in PENDING_ROUTES {
        assert!(
            !served.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is served now: remove it from PENDING_ROUTES"
        );
    }
    app.finish().await;
}

#[tokio::test]
async fn path_parameters_match_the_templates_and_operations_are_complete() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json", None).await.expect(200).body;
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let in_template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for method in METHODS {
            let Some(operation) = item.get(*method) else {
                continue;
            };
            assert!(
                operation.get("parameters").is_none_or(Value::is_array),
                "{method} {path}: parameters must be a list"
            );
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(declared, in_template, "{method} {path}");
            for response in operation["responses"].as_object().unwrap().values() {
                for link in response["links"]
                    .as_object()
                    .into_iter()
                    .flat_map(|l| l.values())
                {
                    let target = link["operationId"].as_str().unwrap();
                    assert!(
                        doc["paths"]
                            .as_object()
                            .unwrap()
                            .values()
                            .any(|item| METHODS.iter().any(|m| item[*m]["operationId"] == target)),
                        "{method} {path}: link to unknown {target}"
                    );
                }
            }
            let id = operation["operationId"].as_str().unwrap().to_owned();
            assert!(ids.insert(id.clone()), "operationId {id} repeats");
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path}: no success response"
            );
            let authenticated = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            for status in responses.keys().filter(|s| s.as_str() >= "400") {
                let schema = &responses[status]["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["$ref"],
                    format!("#/components/schemas/Error{status}"),
                    "{method} {path} {status}"
                );
            }
            if authenticated {
                for status in ["400", "401", "403", "429"] {
                    assert!(responses.contains_key(status), "{method} {path} {status}");
                }
            }
            if path.starts_with("/v1/") {
                let success = responses
                    .iter()
                    .find(|(s, _)| s.starts_with('2'))
                    .unwrap()
                    .1;
                let schema = &success["content"]["application/json"]["schema"];
                // An event stream is the one success outside the envelope.
                let stream = success["content"].get("text/event-stream").is_some();
                assert!(
                    stream
                        || schema["required"]
                            .as_array()
                            .is_some_and(|r| r.contains(&Value::from("data"))),
                    "{method} {path}: success not in the envelope"
                );
            }
        }
    }
    app.finish().await;
}

#[tokio::test]
async fn the_document_states_the_upload_limit_and_which_bodies_may_be_left_out() {
    let fresh = crate::helpers::fresh().await;
    let mut config = crate::helpers::config(&fresh);
    config.max_object_bytes = 1234;
    let app = crate::helpers::spawn_with(config).await;
    let doc = app.get("/openapi.json", None).await.expect(200).body;
    let upload = &doc["paths"]["/v1/datasets/{dataset_id}/objects/upload"]["post"];
    let schema = upload["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        doc["components"]["schemas"][&schema]["properties"]["size_bytes"]["maximum"],
        1234
    );
    assert_eq!(upload["requestBody"]["required"], true);
    // {} is a valid change and a valid approval, so the body may be left out (SPEC §1.5).
    assert_eq!(
        doc["paths"]["/v1/datasets/{id}"]["patch"]["requestBody"]["required"],
        false
    );
    app.finish().await;
}

/// The closed sets in the document list the very names the service writes (its wire names, not
/// the Rust variants), so a response's `status` or `kind` validates against its schema.
#[tokio::test]
async fn closed_sets_are_documented_by_their_wire_names() {
    use aggregates::api_key::{AccessMode, KeyStatus};
    use aggregates::dataset::{DatasetStatus, MonetizationMode, PricingModel, SourceModality};
    use aggregates::metering::AccessKind;
    use aggregates::object::ObjectStatus;
    use aggregates::payout::StatementStatus;
    use aggregates::Visibility;

    let app = spawn_app().await;
    let doc = app.get("/openapi.json", None).await.expect(200).body;
    let sets = [
        ("SourceModality", SourceModality::EXPECTED),
        ("MonetizationMode", MonetizationMode::EXPECTED),
        ("PricingModel", PricingModel::EXPECTED),
        ("Visibility", Visibility::EXPECTED),
        ("DatasetStatus", DatasetStatus::EXPECTED),
        ("ObjectStatus", ObjectStatus::EXPECTED),
        ("AccessMode", AccessMode::EXPECTED),
        ("KeyStatus", KeyStatus::EXPECTED),
        ("AccessKind", AccessKind::EXPECTED),
        ("StatementStatus", StatementStatus::EXPECTED),
    ];
    for (name, wire) in sets {
        let listed: Vec<&str> = doc["components"]["schemas"][name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is a documented closed set"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(listed.join("|"), wire, "{name}");
    }
    app.finish().await;
}
