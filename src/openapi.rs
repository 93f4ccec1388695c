//! The OpenAPI 3.1 document of the API (SPEC §3.15), served at `GET /openapi.json`.
//!
//! Each resource module describes its own operations with `#[utoipa::path]` next to the handlers
//! (request bodies, parameters, success bodies and the errors particular to the endpoint) and hands
//! them to the router with the routes themselves. [`document`] takes what the router collected and
//! applies, in one place, what the SPEC says once for every endpoint: the success envelope (§1.2),
//! the implicit error responses and the error envelope (§1.12), the credentials (§2.1: both,
//! unless an operation names one or is public with `security(())`),
//! `Idempotency-Key` (§1.9), the response headers, and the id patterns of §1.4. The schema helpers
//! at the end say what the derives cannot (closed sets, amounts, trimmed text).

use serde_json::{json, Map, Value};

/// The whole document: the operations the routes declare (`api`), with the SPEC's conventions and
/// this service's largest object.
pub fn document(api: utoipa::openapi::OpenApi, max_object_bytes: u64) -> Value {
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("ipto")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The v1 API of ipto, a marketplace for private data. Every /v1 route and \
                     /health answer in the envelope {data | error, request_id, timestamp}.",
                ))
                .build(),
        )
        .build();
    doc.merge(api);
    let mut doc = serde_json::to_value(&doc).unwrap_or_default();
    apply_conventions(&mut doc);
    doc["components"]["schemas"]["UploadRequest"]["properties"]["size_bytes"]["maximum"] =
        json!(max_object_bytes);
    doc
}

/// Id prefixes by field or parameter name (SPEC §1.4).
const ID_PREFIXES: &[(&str, &str)] = &[
    ("user_id", "usr"),
    ("tenant_id", "tnt"),
    ("dataset_id", "dset"),
    ("object_id", "obj"),
    ("api_key_id", "key"),
    ("grant_id", "grt"),
    ("search_activity_id", "sa"),
    ("retrieval_event_id", "ret"),
    ("access_id", "acc"),
    ("statement_id", "stmt"),
    ("invitation_id", "inv"),
    ("request_id", "req"),
];

/// The pattern of an id with this prefix.
pub fn id_pattern(prefix: &str) -> String {
    format!("^{prefix}_[0-9a-hjkmnp-tv-z]{{26}}$")
}

/// The error codes each status can carry (SPEC §1.12).
const ERROR_CODES: &[(u16, &str, &[&str])] = &[
    (
        400,
        "The request is malformed: body not a JSON object, a field of the wrong type, a bad \
         Authorization or Idempotency-Key header, both credential headers, or a bad cursor.",
        &["invalid_request", "invalid_cursor"],
    ),
    (
        401,
        "The credential is missing, malformed, unknown, expired or revoked (unauthorized, with \
         WWW-Authenticate: Bearer), or the email or password is wrong (invalid_credentials).",
        &["unauthorized", "invalid_credentials"],
    ),
    (
        403,
        "A scope is missing, or the endpoint needs a session or a platform admin.",
        &["forbidden"],
    ),
    (
        402,
        "The charge is over a bound the buyer set: a download's max_charge \
         (charge_limit_exceeded, details = {max_charge, charge}) or the key's monthly spend_limit \
         (spend_limit_exceeded, details = {spend_limit, spent, charge}); nothing is charged.",
        &["charge_limit_exceeded", "spend_limit_exceeded"],
    ),
    (
        404,
        "The resource is absent, deleted, foreign or inaccessible; a malformed id is also 404.",
        &["not_found"],
    ),
    (
        405,
        "Wrong method; details.allowed and Allow list the allowed ones.",
        &["method_not_allowed"],
    ),
    (
        409,
        "Conflict: the resource's state forbids the change (details.status), a concurrent change \
         won, an Idempotency-Key was reused or is still in progress, the address is registered or \
         invited already, or the tenant would lose its last owner.",
        &[
            "conflict",
            "email_taken",
            "already_invited",
            "last_owner",
            "invalid_state",
            "concurrency_conflict",
            "idempotency_key_reused",
            "idempotency_key_in_progress",
            "upload_incomplete",
        ],
    ),
    (
        410,
        "The invitation expired, was revoked or was used.",
        &["invitation_expired"],
    ),
    (
        413,
        "The body is over 1 MiB; details.limit gives the limit in bytes.",
        &["payload_too_large"],
    ),
    (
        415,
        "A non-empty body without Content-Type: application/json.",
        &["unsupported_media_type"],
    ),
    (
        422,
        "A rule is broken or a field is unknown (details.fields = {field: reason}), or the \
         uploaded bytes differ from the declared size or checksum (details = {expected, actual}), \
         or a charge exceeds the largest one that can be recorded (charge_too_large).",
        &[
            "validation_failed",
            "size_mismatch",
            "checksum_mismatch",
            "charge_too_large",
        ],
    ),
    (
        429,
        "Rate limited; Retry-After and details.retry_after give the seconds to wait.",
        &["rate_limited"],
    ),
    (
        500,
        "Internal error; the cause is logged with the request id.",
        &["internal"],
    ),
    (
        503,
        "The database is unreachable, or this instance has not yet applied the Ipto-Log-Position \
         the request sent (not_caught_up), or a new read-model version is being rebuilt \
         (rebuilding); Retry-After gives the seconds to wait.",
        &["unavailable", "not_caught_up", "rebuilding"],
    ),
];

fn error_schema_name(status: u16) -> String {
    format!("Error{status}")
}

/// The shared components: envelope parts, one error envelope per status, the credentials.
fn components() -> Value {
    let mut schemas = Map::new();
    schemas.insert(
        "RequestId".into(),
        json!({ "type": "string", "pattern": id_pattern("req"),
                "description": "The request's id, also in X-Request-Id." }),
    );
    schemas.insert("LogPosition".into(), log_position_schema());
    schemas.insert(
        "Timestamp".into(),
        json!({ "type": "string", "format": "date-time",
                "description": "RFC 3339 UTC with Z (SPEC §1.3)." }),
    );
    for (status, description, codes) in ERROR_CODES {
        schemas.insert(
            error_schema_name(*status),
            json!({
                "type": "object",
                "description": description,
                "required": ["error", "request_id", "timestamp"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message", "details"],
                        "properties": {
                            "code": { "type": "string", "enum": codes },
                            "message": { "type": "string" },
                            "details": { "type": "object" },
                        },
                    },
                    "request_id": { "$ref": "#/components/schemas/RequestId" },
                    "timestamp": { "$ref": "#/components/schemas/Timestamp" },
                },
            }),
        );
    }
    json!({
        "schemas": schemas,
        "headers": {
            "X-Request-Id": { "required": true, "description": "The request's id.",
                "schema": { "$ref": "#/components/schemas/RequestId" } },
            "WWW-Authenticate": { "description": "`Bearer` on unauthorized.",
                "schema": { "type": "string" } },
            "Allow": { "required": true, "description": "The allowed methods.",
                "schema": { "type": "string" } },
            "Retry-After": { "required": true,
                "description": "Seconds until a request may succeed.",
                "schema": { "type": "integer", "minimum": 0 } },
            "RateLimit-Policy": { "description":
                "The applicable bucket, e.g. `\"default\";q=600;w=60` (SPEC §1.10).",
                "schema": { "type": "string" } },
            "RateLimit": { "description": "The bucket's state, e.g. `\"default\";r=599;t=42`.",
                "schema": { "type": "string" } },
            "Ipto-Log-Position": { "description":
                "On a response to a request that wrote: the log position it reached (opaque). \
                 Sent back as a request header to any instance, the request is answered only \
                 once that instance has applied it.",
                "schema": { "$ref": "#/components/schemas/LogPosition" } },
        },
        "securitySchemes": {
            "session": {
                "type": "http",
                "scheme": "bearer",
                "description": "A session token `sess_…` from signup or login, as \
                                `Authorization: Bearer sess_…`. An API key may also be sent as \
                                `Authorization: Bearer ipto_…`.",
            },
            "api_key": {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "An API key `ipto_{prefix}_{secret}`. Sending both X-API-Key and \
                                Authorization is a 400.",
            },
        },
    })
}

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

/// Applies the SPEC's document-wide conventions to every operation.
fn apply_conventions(doc: &mut Value) {
    let generated = doc["components"].take();
    let mut components = components();
    if let Value::Object(generated) = generated {
        for (section, entries) in generated {
            if let (Some(target), Value::Object(entries)) =
                (components[&section].as_object_mut(), &entries)
            {
                target.extend(entries.clone());
            } else {
                components[&section] = entries;
            }
        }
    }
    doc["components"] = components;
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        for method in METHODS {
            if let Some(operation) = item.get_mut(*method) {
                apply_to_operation(path, method, operation);
            }
        }
    }
    add_id_patterns(doc);
    forbid_nul(doc);
    optional_bodies(doc);
    add_links(doc);
}

/// Says of every free-text string a request carries (body fields, query parameters) that it holds
/// no U+0000; strings with a pattern, a format or a closed set say it already.
fn forbid_nul(doc: &mut Value) {
    let mut bodies = Vec::new();
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            for method in METHODS {
                let Some(operation) = item.get_mut(*method) else {
                    continue;
                };
                if let Some(name) = operation["requestBody"]["content"]["application/json"]
                    ["schema"]["$ref"]
                    .as_str()
                    .and_then(|r| r.rsplit('/').next())
                {
                    bodies.push(name.to_owned());
                }
                if let Some(parameters) = operation
                    .get_mut("parameters")
                    .and_then(Value::as_array_mut)
                {
                    for parameter in parameters.iter_mut().filter(|p| p["in"] == "query") {
                        if let Some(schema) = parameter.get_mut("schema") {
                            set_no_nul(schema);
                        }
                    }
                }
            }
        }
    }
    for name in bodies {
        if let Some(schema) = doc["components"]["schemas"].get_mut(&name) {
            set_no_nul(schema);
        }
    }
}

/// An absent body counts as `{}` (SPEC §1.5), so a body none of whose fields is required may be
/// left out altogether.
fn optional_bodies(doc: &mut Value) {
    let schemas = doc["components"]["schemas"].clone();
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        for method in METHODS {
            let Some(body) = item
                .get_mut(*method)
                .and_then(|operation| operation.get_mut("requestBody"))
            else {
                continue;
            };
            let name = body["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or_default();
            let required = schemas[name]["required"]
                .as_array()
                .is_some_and(|r| !r.is_empty());
            body["required"] = json!(required);
        }
    }
}

fn set_no_nul(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    let is_string = match map.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(types)) => types.iter().any(|t| t == "string"),
        _ => false,
    };
    if is_string
        && !["pattern", "format", "enum"]
            .iter()
            .any(|k| map.contains_key(*k))
    {
        map.insert("pattern".into(), json!(NO_NUL));
    }
    for (key, child) in map.iter_mut() {
        match key.as_str() {
            "properties" => child
                .as_object_mut()
                .into_iter()
                .flat_map(|p| p.values_mut())
                .for_each(set_no_nul),
            "items" | "additionalProperties" | "propertyNames" => set_no_nul(child),
            "oneOf" | "anyOf" | "allOf" => child
                .as_array_mut()
                .into_iter()
                .flatten()
                .for_each(set_no_nul),
            _ => {}
        }
    }
}

/// A linked operation: method, path, and each path parameter with the JSON pointer into the
/// linking response's body that supplies it.
type LinkTarget = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Where an answer's ids lead: `(method, path, status) → (method, path, [(parameter, source)])`.
/// Clients (and stateful testers) follow them from a created resource to its operations.
const LINKS: &[(&str, &str, &str, &[LinkTarget])] = &[
    (
        "post",
        "/v1/datasets",
        "201",
        &[
            ("get", "/v1/datasets/{id}", &[("id", "/data/dataset_id")]),
            ("patch", "/v1/datasets/{id}", &[("id", "/data/dataset_id")]),
            ("delete", "/v1/datasets/{id}", &[("id", "/data/dataset_id")]),
            (
                "get",
                "/v1/datasets/{dataset_id}/objects",
                &[("dataset_id", "/data/dataset_id")],
            ),
            (
                "post",
                "/v1/datasets/{dataset_id}/objects/upload",
                &[("dataset_id", "/data/dataset_id")],
            ),
            (
                "get",
                "/v1/datasets/{id}/entitlements",
                &[("id", "/data/dataset_id")],
            ),
            (
                "post",
                "/v1/datasets/{id}/entitlements",
                &[("id", "/data/dataset_id")],
            ),
        ],
    ),
    (
        "post",
        "/v1/datasets/{id}/entitlements",
        "201",
        &[(
            "delete",
            "/v1/datasets/{id}/entitlements/{tenant_id}",
            &[("id", "/data/dataset_id"), ("tenant_id", "/data/tenant_id")],
        )],
    ),
    (
        "post",
        "/v1/datasets/{dataset_id}/objects/upload",
        "201",
        &[
            ("get", "/v1/objects/{id}", &[("id", "/data/object_id")]),
            (
                "post",
                "/v1/objects/{id}/confirm",
                &[("id", "/data/object_id")],
            ),
            (
                "delete",
                "/v1/objects/{id}/upload",
                &[("id", "/data/object_id")],
            ),
            ("delete", "/v1/objects/{id}", &[("id", "/data/object_id")]),
            (
                "get",
                "/v1/objects/{id}/download",
                &[("id", "/data/object_id")],
            ),
        ],
    ),
    (
        "post",
        "/v1/api-keys",
        "201",
        &[
            ("get", "/v1/api-keys/{id}", &[("id", "/data/api_key_id")]),
            ("delete", "/v1/api-keys/{id}", &[("id", "/data/api_key_id")]),
            (
                "post",
                "/v1/api-keys/{id}/grants",
                &[("id", "/data/api_key_id")],
            ),
        ],
    ),
    (
        "post",
        "/v1/api-keys/{id}/grants",
        "201",
        &[(
            "delete",
            "/v1/api-keys/{id}/grants/{grant_id}",
            &[("id", "/data/api_key_id"), ("grant_id", "/data/grant_id")],
        )],
    ),
    (
        "get",
        "/v1/admin/review/queue",
        "200",
        &[
            (
                "get",
                "/v1/admin/review/objects/{tenant_id}/{object_id}",
                &[
                    ("tenant_id", "/data/items/0/tenant_id"),
                    ("object_id", "/data/items/0/object_id"),
                ],
            ),
            (
                "post",
                "/v1/admin/review/objects/{tenant_id}/{object_id}/approve",
                &[
                    ("tenant_id", "/data/items/0/tenant_id"),
                    ("object_id", "/data/items/0/object_id"),
                ],
            ),
            (
                "post",
                "/v1/admin/review/objects/{tenant_id}/{object_id}/reject",
                &[
                    ("tenant_id", "/data/items/0/tenant_id"),
                    ("object_id", "/data/items/0/object_id"),
                ],
            ),
            (
                "get",
                "/v1/admin/review/objects/{tenant_id}/{object_id}/preview",
                &[
                    ("tenant_id", "/data/items/0/tenant_id"),
                    ("object_id", "/data/items/0/object_id"),
                ],
            ),
        ],
    ),
    (
        "get",
        "/v1/admin/payouts",
        "200",
        &[(
            "post",
            "/v1/admin/payouts/{statement_id}/mark-paid",
            &[("statement_id", "/data/items/0/statement_id")],
        )],
    ),
];

/// Adds [`LINKS`] to the responses they start from, naming targets by operation id.
fn add_links(doc: &mut Value) {
    for (method, path, status, targets) in LINKS {
        let mut links = Map::new();
        for (target_method, target_path, parameters) in *targets {
            let operation_id = doc["paths"][target_path][target_method]["operationId"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("a link leads to {target_method} {target_path}"));
            let parameters: Map<String, Value> = parameters
                .iter()
                .map(|(name, pointer)| {
                    (
                        (*name).to_owned(),
                        json!(format!("$response.body#{pointer}")),
                    )
                })
                .collect();
            links.insert(
                operation_id.clone(),
                json!({ "operationId": operation_id, "parameters": parameters }),
            );
        }
        let response = doc["paths"]
            .get_mut(*path)
            .and_then(|item| item.get_mut(*method))
            .and_then(|operation| operation["responses"].get_mut(*status))
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("links start from {method} {path} {status}"));
        response.insert("links".into(), Value::Object(links));
    }
}

fn apply_to_operation(path: &str, method: &str, operation: &mut Value) {
    // Most operations take either credential (SPEC §2.1), so an operation that names none takes
    // both; a public one says `security(())`.
    match operation.get("security") {
        None => operation["security"] = json!([{ "session": [] }, { "api_key": [] }]),
        Some(security) if *security == json!([{}]) => {
            operation
                .as_object_mut()
                .expect("an operation is an object")
                .remove("security");
        }
        Some(_) => {}
    }
    let v1 = path.starts_with("/v1/");
    let enveloped = v1 || path == "/health";
    let authenticated = operation["security"]
        .as_array()
        .is_some_and(|s| !s.is_empty());
    let has_body = operation.get("requestBody").is_some();
    let command = v1 && authenticated && method != "get";
    // Handler names repeat across modules; the tag makes the id unique.
    if let (Some(tag), Some(id)) = (
        operation["tags"][0].as_str().map(str::to_owned),
        operation["operationId"].as_str().map(str::to_owned),
    ) {
        operation["operationId"] = json!(format!("{tag}.{id}"));
    }

    let mut implicit: Vec<u16> = Vec::new();
    if path != "/openapi.json" {
        implicit.extend([500, 503]);
    }
    if v1 {
        // The body size is checked before routing to a handler, and both auth routes are limited
        // per client IP.
        implicit.extend([413, 429]);
    }
    if authenticated {
        implicit.extend([400, 401, 403, 429]);
    }
    if has_body {
        implicit.extend([400, 415, 422]);
    }
    if command {
        implicit.push(409);
    }
    if path.contains('{') {
        implicit.push(404);
    }
    let responses = operation["responses"]
        .as_object_mut()
        .expect("every operation has responses");
    for status in implicit {
        let (_, description, _) = ERROR_CODES
            .iter()
            .find(|(s, _, _)| *s == status)
            .expect("every implicit status has codes");
        responses
            .entry(status.to_string())
            .or_insert_with(|| json!({ "description": description }));
    }
    for (status, response) in responses.iter_mut() {
        let code: u16 = status.parse().unwrap_or(0);
        if code >= 400 {
            response["content"] = json!({ "application/json": { "schema": {
                "$ref": format!("#/components/schemas/{}", error_schema_name(code)) } } });
        } else if enveloped && (200..300).contains(&code) {
            if let Some(content) = response
                .get_mut("content")
                .and_then(|c| c.get_mut("application/json"))
                .and_then(Value::as_object_mut)
            {
                let data = content.remove("schema").unwrap_or(json!({}));
                content.insert("schema".into(), envelope(data));
            }
        }
        let headers = response
            .as_object_mut()
            .expect("a response is an object")
            .entry("headers")
            .or_insert_with(|| json!({}));
        let mut names = vec!["X-Request-Id"];
        match code {
            401 => names.push("WWW-Authenticate"),
            405 => names.push("Allow"),
            429 => names.push("Retry-After"),
            _ => {}
        }
        if v1 && code != 401 {
            names.extend(["RateLimit-Policy", "RateLimit"]);
        }
        if v1 && (200..300).contains(&code) {
            names.push("Ipto-Log-Position");
        }
        for name in names {
            headers[name] = json!({ "$ref": format!("#/components/headers/{name}") });
        }
    }
    // An empty filter is no filter (`?status=` lists everything): say so for the parameters
    // whose schema would refuse "" (closed sets and times; numbers such as `limit` and `after`
    // must be numbers and stay strict).
    if let Some(parameters) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    {
        for parameter in parameters {
            let constrained = ["enum", "format", "anyOf"]
                .iter()
                .any(|k| parameter["schema"].get(*k).is_some());
            let number = match &parameter["schema"]["type"] {
                Value::String(t) => t == "integer",
                Value::Array(types) => types.iter().any(|t| t == "integer"),
                _ => false,
            };
            if parameter["in"] == "query" && !number && constrained {
                let schema = parameter["schema"].take();
                parameter["schema"] =
                    json!({ "anyOf": [schema, { "type": "string", "maxLength": 0 }] });
            }
        }
    }
    if authenticated {
        push_parameter(
            operation,
            json!({
                "name": "Ipto-Log-Position",
                "in": "header",
                "required": false,
                "description": "A log position from an earlier response's Ipto-Log-Position: the \
                                request is answered once this instance's read models and search \
                                index have applied it (503 not_caught_up after a bounded wait); \
                                one no response carried is 400.",
                // Inline, not a reference: a header's schema must say itself that "" is not one.
                "schema": log_position_schema(),
            }),
        );
    }
    if authenticated && method == "post" {
        push_parameter(
            operation,
            json!({
                "name": "Idempotency-Key",
                "in": "header",
                "required": false,
                "description": "Replays the saved answer of an earlier request with the same key, \
                                method, path and body (SPEC §1.9); 1..=255 printable ASCII.",
                "schema": { "type": "string", "minLength": 1, "maxLength": 255,
                            "pattern": "^[\\x21-\\x7E]([\\x20-\\x7E]*[\\x21-\\x7E])?$" },
            }),
        );
    }
}

/// A place in the event log, as the service issued it: `TX.POSITION`.
fn log_position_schema() -> Value {
    json!({ "type": "string", "minLength": 3, "maxLength": 37,
            "pattern": "^[0-9]{1,18}\\.[0-9]{1,18}$",
            "description": "A place in the event log, as the service issued it (opaque)." })
}

/// Adds `parameter` to the operation's parameters.
fn push_parameter(operation: &mut Value, parameter: Value) {
    let parameters = operation
        .as_object_mut()
        .expect("an operation is an object")
        .entry("parameters")
        .or_insert_with(|| json!([]));
    if let Some(parameters) = parameters.as_array_mut() {
        parameters.push(parameter);
    }
}

/// The success envelope around `data`.
fn envelope(data: Value) -> Value {
    json!({
        "type": "object",
        "required": ["data", "request_id", "timestamp"],
        "properties": {
            "data": data,
            "request_id": { "$ref": "#/components/schemas/RequestId" },
            "timestamp": { "$ref": "#/components/schemas/Timestamp" },
        },
    })
}

/// Gives every string field or path parameter named like an id (`dataset_id`, …) its prefix
/// pattern, unless it already has one.
fn add_id_patterns(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = map.get_mut("properties") {
                for (name, schema) in properties.iter_mut() {
                    set_id_pattern(name, schema);
                }
            }
            // Query filters by id are not checked for shape; path ids are (a malformed one is 404).
            if map.get("in").and_then(Value::as_str) == Some("path") {
                if let (Some(Value::String(name)), Some(schema)) =
                    (map.get("name").cloned(), map.get_mut("schema"))
                {
                    set_id_pattern(&name, schema);
                }
            }
            for child in map.values_mut() {
                add_id_patterns(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(add_id_patterns),
        _ => {}
    }
}

fn set_id_pattern(name: &str, schema: &mut Value) {
    let Some((_, prefix)) = ID_PREFIXES.iter().find(|(n, _)| *n == name) else {
        return;
    };
    let is_string = match &schema["type"] {
        Value::String(t) => t == "string",
        Value::Array(types) => types.iter().any(|t| t == "string"),
        _ => false,
    };
    if is_string && schema.get("pattern").is_none() {
        schema["pattern"] = json!(id_pattern(prefix));
    }
}

/// A schema written as JSON (for shapes the derive cannot say, such as a closed set of strings).
pub fn schema(value: Value) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    serde_json::from_value(value).expect("a valid schema")
}

/// A string from a closed set given as `a|b|c` (the domain's own `expected()` list).
pub fn choice(expected: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    schema(json!({ "type": "string", "enum": expected.split('|').collect::<Vec<_>>() }))
}

/// A list of at least `min_items` strings, each from a closed set given as `a|b|c`.
pub fn array_of_choice(
    expected: &str,
    min_items: usize,
) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    schema(json!({ "type": "array", "minItems": min_items,
        "items": { "type": "string", "enum": expected.split('|').collect::<Vec<_>>() } }))
}

/// An optional request field from a closed set: absent or `null` keep the default.
pub fn optional_choice(expected: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let mut values: Vec<Value> = expected.split('|').map(|v| json!(v)).collect();
    values.push(Value::Null);
    schema(json!({ "type": ["string", "null"], "enum": values }))
}

/// A money amount in the response (SPEC §1.6): a plain decimal with at most 6 places.
pub fn amount() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    schema(json!({ "type": "number", "minimum": 0 }))
}

/// An amount a client sends (SPEC §1.6): a JSON number, or a string `^\d+(\.\d{1,6})?$`, from
/// 0 to `max` (a power of ten, in USD); `null` is absent.
pub fn amount_input(max: u64) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let digits = max.to_string();
    assert!(
        digits.starts_with('1') && digits[1..].bytes().all(|b| b == b'0'),
        "a power of ten"
    );
    let below = digits.len() - 1;
    schema(json!({ "oneOf": [
        { "type": "null" },
        { "type": "number", "minimum": 0, "maximum": max, "multipleOf": 0.000001 },
        { "type": "string", "pattern": format!("^(0*\\d{{1,{below}}}(\\.\\d{{1,6}})?|0*{max}(\\.0{{1,6}})?)$") },
    ] }))
}

/// A `price_per_result` a client sends: an amount up to 1,000,000 USD.
pub fn price_input() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    amount_input(1_000_000)
}

/// A response amount that may be absent (`null`).
pub fn optional_amount() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    schema(json!({ "type": ["number", "null"], "minimum": 0 }))
}

/// Text that is trimmed before its length (1..=`max`) is checked: it must hold a character that
/// is not white space (Rust's `char::is_whitespace`, spelled out so every regex dialect agrees).
pub fn trimmed(max: usize, nullable: bool) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let kind = if nullable {
        json!(["string", "null"])
    } else {
        json!("string")
    };
    let pattern = format!("^[^\\x00]*{NOT_BLANK}[^\\x00]*$");
    schema(json!({ "type": kind, "minLength": 1, "maxLength": max, "pattern": pattern }))
}

/// One character that is neither white space nor U+0000 (no text may hold U+0000).
pub const NOT_BLANK: &str =
    "[^\\x00\\t\\n\\x0B\\f\\r \\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]";

/// Text without U+0000, which no request may carry (PostgreSQL cannot store it).
pub const NO_NUL: &str = "^[^\\x00]*$";

/// An amount sent as text in a query (`^\d+(\.\d{1,6})?$`), from 0 to `max` (a power of ten).
pub fn amount_text(max: u64) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let below = max.to_string().len() - 1;
    schema(json!({ "type": "string",
        "pattern": format!("^(0*\\d{{1,{below}}}(\\.\\d{{1,6}})?|0*{max}(\\.0{{1,6}})?)$") }))
}

/// An object's review state: null before confirm and for cancelled uploads.
pub fn review_state() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    schema(json!({ "type": ["string", "null"], "enum": ["staged", "approved", "rejected", null] }))
}

/// `type/subtype` in RFC 6838 token characters, with optional `; name=value` parameters.
pub fn content_type() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let token = "[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}";
    schema(json!({
        "type": "string",
        "maxLength": 255,
        "pattern": format!("^{token}/{token}([ \\t]*;[ \\t]*{token}[ \\t]*=[ \\t]*[!-:<-~]+[ \\t]*)*$"),
    }))
}

/// 1..=255 characters without `/`, `\\`, control characters, and not `.` or `..`.
pub fn filename() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let plain = "[^/\\\\\\x00-\\x1F\\x7F]";
    let no_dot = "[^/\\\\\\x00-\\x1F\\x7F.]";
    schema(json!({
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": format!("^({no_dot}{plain}*|\\.{no_dot}{plain}*|\\.\\.{plain}+)$"),
    }))
}

/// An object's metadata: up to 50 entries; keys 1..=64 characters, values strings of at most 1024.
pub fn metadata() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    schema(json!({
        "type": ["object", "null"],
        "maxProperties": 50,
        "propertyNames": { "type": "string", "minLength": 1, "maxLength": 64 },
        "additionalProperties": { "type": "string", "maxLength": 1024 },
    }))
}

/// A list of ids with this prefix.
pub fn ids(prefix: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    schema(json!({ "type": "array", "items": { "type": "string", "pattern": id_pattern(prefix) } }))
}

/// A window end (SPEC §1.8): an RFC 3339 timestamp or a date `YYYY-MM-DD`.
pub fn timestamp_or_date() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    schema(json!({ "anyOf": [
        { "type": "string", "format": "date-time" },
        { "type": "string", "format": "date" },
    ] }))
}

/// A string of at most `max_length` characters matching `pattern`.
pub fn text(max_length: usize, pattern: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    schema(json!({ "type": "string", "maxLength": max_length, "pattern": pattern }))
}

/// An optional list of 1..=`max_items` ids with this prefix.
pub fn optional_ids(
    prefix: &str,
    max_items: usize,
) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    schema(json!({
        "type": ["array", "null"], "minItems": 1, "maxItems": max_items,
        "items": { "type": "string", "pattern": id_pattern(prefix) },
    }))
}
