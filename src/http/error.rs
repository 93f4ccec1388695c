//! One error type for every route, mapped once to the SPEC's error envelope and status.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::http::envelope;
use crate::store::CommandError;

/// Field path → reason, for `details.fields`.
pub type FieldErrors = BTreeMap<String, String>;

/// Everything a request can fail with (SPEC §1.12).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400 `invalid_request`: malformed body, header or field type.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        fields: FieldErrors,
    },
    /// 400 `invalid_cursor`.
    #[error("invalid cursor")]
    InvalidCursor,
    /// 401 `unauthorized`: credential missing, malformed, unknown, expired or revoked.
    #[error("unauthorized")]
    Unauthorized,
    /// 401 `invalid_credentials`: login or current-password mismatch.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// 403 `forbidden`.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `not_found`.
    #[error("not found")]
    NotFound,
    /// 405 `method_not_allowed`.
    #[error("method not allowed")]
    MethodNotAllowed(Vec<String>),
    /// 409 `email_taken`.
    #[error("email taken")]
    EmailTaken,
    /// 409 `invalid_state`, with the current status.
    #[error("invalid state {0}")]
    InvalidState(String),
    /// 409 `concurrency_conflict`.
    #[error("concurrency conflict")]
    ConcurrencyConflict,
    /// 413 `payload_too_large`.
    #[error("payload too large")]
    PayloadTooLarge { limit: u64 },
    /// 415 `unsupported_media_type`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 422 `validation_failed`.
    #[error("validation failed")]
    Validation(FieldErrors),
    /// 503 `unavailable`: the database cannot be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 500 `internal`: logged with the request id, answered opaquely.
    #[error("internal: {0}")]
    Internal(String),
}

impl AppError {
    /// A 500 from any error.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }

    /// A 422 for one field.
    pub fn field(field: &str, reason: impl Into<String>) -> Self {
        Self::Validation(FieldErrors::from([(field.to_owned(), reason.into())]))
    }

    /// A 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            fields: FieldErrors::new(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } | Self::InvalidCursor => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::EmailTaken | Self::InvalidState(_) | Self::ConcurrencyConflict => {
                StatusCode::CONFLICT
            }
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error code, message and details of the envelope.
    fn parts(&self) -> (&'static str, String, Value) {
        match self {
            Self::InvalidRequest { message, fields } if fields.is_empty() => {
                ("invalid_request", message.clone(), json!({}))
            }
            Self::InvalidRequest { message, fields } => (
                "invalid_request",
                message.clone(),
                json!({ "fields": fields }),
            ),
            Self::InvalidCursor => (
                "invalid_cursor",
                "The cursor is not valid for this request.".into(),
                json!({}),
            ),
            Self::Unauthorized => ("unauthorized", "Authentication required.".into(), json!({})),
            Self::InvalidCredentials => (
                "invalid_credentials",
                "Invalid email or password.".into(),
                json!({}),
            ),
            Self::Forbidden(message) => ("forbidden", message.clone(), json!({})),
            Self::NotFound => ("not_found", "Resource not found.".into(), json!({})),
            Self::MethodNotAllowed(allowed) => (
                "method_not_allowed",
                "Method not allowed.".into(),
                json!({ "allowed": allowed }),
            ),
            Self::EmailTaken => (
                "email_taken",
                "This email is already registered.".into(),
                json!({}),
            ),
            Self::InvalidState(status) => (
                "invalid_state",
                format!("Not allowed while the resource is {status}."),
                json!({ "status": status }),
            ),
            Self::ConcurrencyConflict => (
                "concurrency_conflict",
                "The resource changed concurrently; retry the request.".into(),
                json!({}),
            ),
            Self::PayloadTooLarge { limit } => (
                "payload_too_large",
                "The request body is too large.".into(),
                json!({ "limit": limit }),
            ),
            Self::UnsupportedMediaType => (
                "unsupported_media_type",
                "Request bodies must be application/json.".into(),
                json!({}),
            ),
            Self::Validation(fields) => (
                "validation_failed",
                "Validation failed.".into(),
                json!({ "fields": fields }),
            ),
            Self::Unavailable(_) => (
                "unavailable",
                "The service is temporarily unavailable.".into(),
                json!({}),
            ),
            Self::Internal(_) => ("internal", "Internal server error.".into(), json!({})),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(cause) => tracing::error!(cause = %cause, "internal error"),
            Self::Unavailable(cause) => tracing::error!(cause = %cause, "database unavailable"),
            _ => {}
        }
        let (code, message, details) = self.parts();
        let body = json!({ "error": { "code": code, "message": message, "details": details } });
        let mut response = envelope::respond(self.status(), body);
        let headers = response.headers_mut();
        match &self {
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::MethodNotAllowed(allowed) => {
                if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
                    headers.insert(header::ALLOW, value);
                }
            }
            _ => {}
        }
        response
    }
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => Self::Unavailable(error.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl<E: std::error::Error> From<CommandError<E>> for AppError
where
    AppError: From<E>,
{
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Rejected(e) => e.into(),
            CommandError::Conflict => Self::ConcurrencyConflict,
            CommandError::Store(cause) => Self::Internal(cause),
            CommandError::Unavailable(cause) => Self::Unavailable(cause),
        }
    }
}

impl From<aggregates::email_reservation::EmailReservationError> for AppError {
    fn from(error: aggregates::email_reservation::EmailReservationError) -> Self {
        match error {
            aggregates::email_reservation::EmailReservationError::Taken => Self::EmailTaken,
        }
    }
}

impl From<aggregates::user::UserError> for AppError {
    fn from(error: aggregates::user::UserError) -> Self {
        match error {
            aggregates::user::UserError::NotRegistered => Self::NotFound,
            aggregates::user::UserError::AlreadyRegistered => Self::internal(error),
        }
    }
}

impl From<aggregates::tenant::TenantError> for AppError {
    fn from(error: aggregates::tenant::TenantError) -> Self {
        Self::internal(error)
    }
}
