//! The success and error envelopes: `{data | error, request_id, timestamp}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use crate::store::current_request_id;

/// Wraps `body`'s fields with the request id and the response time.
pub fn respond(status: StatusCode, mut body: Value) -> Response {
    if let Value::Object(map) = &mut body {
        map.insert(
            "request_id".into(),
            Value::String(current_request_id().unwrap_or_default()),
        );
        map.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
    }
    (status, Json(body)).into_response()
}

/// A success response: `{"data": …}` in the envelope.
pub fn data(status: StatusCode, data: impl Serialize) -> Response {
    match serde_json::to_value(data) {
        Ok(value) => respond(status, serde_json::json!({ "data": value })),
        Err(e) => crate::http::error::AppError::internal(e).into_response(),
    }
}

/// 200 with `data`.
pub fn ok(data: impl Serialize) -> Response {
    self::data(StatusCode::OK, data)
}

/// 201 with `data`.
pub fn created(data: impl Serialize) -> Response {
    self::data(StatusCode::CREATED, data)
}

/// Fields of a response's `data` that hold a secret shown once (a new key). Whatever keeps a
/// response (the idempotency layer) keeps it with these fields `null`.
#[derive(Clone, Copy, Debug)]
pub struct SecretFields(pub &'static [&'static str]);

/// Marks `response` as carrying `fields` in its `data` as secrets.
pub fn with_secrets(mut response: Response, fields: &'static [&'static str]) -> Response {
    response.extensions_mut().insert(SecretFields(fields));
    response
}

/// The body to keep of a response marked with [`SecretFields`]: the same JSON with each secret
/// field of `data` set to `null`. A body that is not such JSON is not kept at all (`None`).
pub fn without_secrets(body: &[u8], secrets: SecretFields) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let data = value.get_mut("data")?.as_object_mut()?;
    for field in secrets.0 {
        if let Some(slot) = data.get_mut(*field) {
            *slot = Value::Null;
        }
    }
    serde_json::to_vec(&value).ok()
}
