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
