//! The success and error envelopes: `{data | error, request_id, timestamp}`.
//!
//! A handler returns an [`Envelope`] of its typed body; the same type is the body's schema in the
//! OpenAPI document, which wraps it in the envelope once for every operation.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use crate::request::current_request_id;

/// A body stamped with the request's id and the response time, as every answer is.
#[derive(Serialize)]
pub struct Stamped<B> {
    #[serde(flatten)]
    pub body: B,
    pub request_id: String,
    pub timestamp: String,
}

impl<B: Serialize> Stamped<B> {
    /// `body`, stamped now with the current request's id.
    pub fn now(body: B) -> Self {
        Self {
            body,
            request_id: current_request_id().unwrap_or_default(),
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    /// The response with `status`.
    pub fn respond(self, status: StatusCode) -> Response {
        (status, Json(self)).into_response()
    }
}

/// A success response: `{"data": …}` in the envelope, with its status.
#[must_use]
pub struct Envelope<T> {
    status: StatusCode,
    data: T,
    secrets: Option<SecretFields>,
}

#[derive(Serialize)]
struct Data<T> {
    data: T,
}

impl<T> Envelope<T> {
    /// 200 with `data`.
    pub fn ok(data: T) -> Self {
        Self::with_status(StatusCode::OK, data)
    }

    /// 201 with `data`.
    pub fn created(data: T) -> Self {
        Self::with_status(StatusCode::CREATED, data)
    }

    /// `data` with `status`.
    pub fn with_status(status: StatusCode, data: T) -> Self {
        Self {
            status,
            data,
            secrets: None,
        }
    }

    /// Marks `fields` of `data` as secrets shown once: whatever keeps this response (the
    /// idempotency layer) keeps it with them `null`.
    pub fn with_secrets(mut self, fields: &'static [&'static str]) -> Self {
        self.secrets = Some(SecretFields(fields));
        self
    }
}

impl<T: Serialize> IntoResponse for Envelope<T> {
    fn into_response(self) -> Response {
        let mut response = Stamped::now(Data { data: self.data }).respond(self.status);
        if let Some(secrets) = self.secrets {
            response.extensions_mut().insert(secrets);
        }
        response
    }
}

/// Fields of a response's `data` that hold a secret shown once (a new key).
#[derive(Clone, Copy, Debug)]
pub struct SecretFields(pub &'static [&'static str]);

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
