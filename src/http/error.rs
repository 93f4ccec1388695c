//! One error type for every route, mapped once to the SPEC's error envelope and status.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::http::envelope::Stamped;
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
    /// 404 `not_found` naming the dataset a request referred to (`details.dataset_id`).
    #[error("dataset not found")]
    DatasetNotFound(String),
    /// 405 `method_not_allowed`.
    #[error("method not allowed")]
    MethodNotAllowed(Vec<String>),
    /// 409 `email_taken`.
    #[error("email taken")]
    EmailTaken,
    /// 409 `invalid_state`, with the current status.
    #[error("invalid state {0}")]
    InvalidState(String),
    /// 409 `conflict`: generic; reserved, no v1 endpoint emits it.
    #[error("conflict")]
    Conflict,
    /// 409 `idempotency_key_reused`: same key, different request.
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    /// 409 `idempotency_key_in_progress`: same key while the first request runs.
    #[error("idempotency key in progress")]
    IdempotencyKeyInProgress,
    /// 409 `upload_incomplete`: confirm before the blob is fully uploaded.
    #[error("upload incomplete")]
    UploadIncomplete,
    /// 409 `upload_in_progress`: another upload to the same object is still being received.
    #[error("upload in progress")]
    UploadInProgress,
    /// 408 `request_timeout`: the client sent its request too slowly.
    #[error("request timeout")]
    RequestTimeout,
    /// 422 `size_mismatch`: uploaded length differs from `size_bytes`.
    #[error("size mismatch")]
    SizeMismatch { expected: u64, actual: u64 },
    /// 422 `checksum_mismatch`: SHA-256 differs from the declared one.
    #[error("checksum mismatch")]
    ChecksumMismatch { expected: String, actual: String },
    /// 429 `rate_limited`, with `Retry-After`.
    #[error("rate limited")]
    RateLimited { retry_after: u64 },
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
    /// 422 `charge_too_large`: a charge above the largest recordable amount; nothing is charged.
    #[error("charge too large")]
    ChargeTooLarge,
    /// 402 `charge_limit_exceeded`: a download would cost more than its `max_charge`; nothing is
    /// charged.
    #[error("charge limit exceeded")]
    ChargeLimitExceeded { max_charge: i64, charge: i64 },
    /// 402 `spend_limit_exceeded`: the charge would take the key's month past its `spend_limit`;
    /// nothing is charged. Amounts in micro-USD.
    #[error("spend limit exceeded")]
    SpendLimitExceeded {
        spend_limit: i64,
        spent: i64,
        charge: i64,
    },
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
            Self::NotFound | Self::DatasetNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::EmailTaken
            | Self::InvalidState(_)
            | Self::ConcurrencyConflict
            | Self::Conflict
            | Self::IdempotencyKeyReused
            | Self::IdempotencyKeyInProgress
            | Self::UploadIncomplete
            | Self::UploadInProgress => StatusCode::CONFLICT,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::SizeMismatch { .. } | Self::ChecksumMismatch { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) | Self::ChargeTooLarge => StatusCode::UNPROCESSABLE_ENTITY,
            Self::ChargeLimitExceeded { .. } | Self::SpendLimitExceeded { .. } => {
                StatusCode::PAYMENT_REQUIRED
            }
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error code, message and details of the envelope.
    fn parts(&self) -> (&'static str, String, Value) {
        match self {
            Self::InvalidRequest { message, fields } if fields.is_empty() => {
                ("invalid_request", message.clone(), no_details())
            }
            Self::InvalidRequest { message, fields } => (
                "invalid_request",
                message.clone(),
                json!({ "fields": fields }),
            ),
            Self::InvalidCursor => (
                "invalid_cursor",
                "The cursor is not valid for this request.".into(),
                no_details(),
            ),
            Self::Unauthorized => (
                "unauthorized",
                "Authentication required.".into(),
                no_details(),
            ),
            Self::InvalidCredentials => (
                "invalid_credentials",
                "Invalid email or password.".into(),
                no_details(),
            ),
            Self::Forbidden(message) => ("forbidden", message.clone(), no_details()),
            Self::NotFound => ("not_found", "Resource not found.".into(), no_details()),
            Self::DatasetNotFound(id) => (
                "not_found",
                "Dataset not found.".into(),
                json!({ "dataset_id": id }),
            ),
            Self::MethodNotAllowed(allowed) => (
                "method_not_allowed",
                "Method not allowed.".into(),
                json!({ "allowed": allowed }),
            ),
            Self::EmailTaken => (
                "email_taken",
                "This email is already registered.".into(),
                no_details(),
            ),
            Self::InvalidState(status) => (
                "invalid_state",
                format!("Not allowed while the resource is {status}."),
                json!({ "status": status }),
            ),
            Self::ConcurrencyConflict => (
                "concurrency_conflict",
                "The resource changed concurrently; retry the request.".into(),
                no_details(),
            ),
            Self::PayloadTooLarge { limit } => (
                "payload_too_large",
                "The request body is too large.".into(),
                json!({ "limit": limit }),
            ),
            Self::UnsupportedMediaType => (
                "unsupported_media_type",
                "Request bodies must be application/json.".into(),
                no_details(),
            ),
            Self::Validation(fields) => (
                "validation_failed",
                "Validation failed.".into(),
                json!({ "fields": fields }),
            ),
            Self::ChargeTooLarge => (
                "charge_too_large",
                format!(
                    "The charge exceeds the largest amount a single charge may record ({} USD); \
                     nothing was charged.",
                    aggregates::money::format_micros(aggregates::money::MAX_CHARGE_MICROS)
                ),
                json!({ "limit": aggregates::money::json_number(aggregates::money::MAX_CHARGE_MICROS) }),
            ),
            Self::ChargeLimitExceeded { max_charge, charge } => (
                "charge_limit_exceeded",
                format!(
                    "The download costs {} USD, more than max_charge {}; nothing was charged.",
                    aggregates::money::format_micros(*charge),
                    aggregates::money::format_micros(*max_charge)
                ),
                json!({
                    "max_charge": aggregates::money::json_number(*max_charge),
                    "charge": aggregates::money::json_number(*charge),
                }),
            ),
            Self::SpendLimitExceeded {
                spend_limit,
                spent,
                charge,
            } => (
                "spend_limit_exceeded",
                format!(
                    "The charge of {} USD would take this key past its spend limit of {} USD \
                     this month ({} USD spent); nothing was charged.",
                    aggregates::money::format_micros(*charge),
                    aggregates::money::format_micros(*spend_limit),
                    aggregates::money::format_micros(*spent)
                ),
                json!({
                    "spend_limit": aggregates::money::json_number(*spend_limit),
                    "spent": aggregates::money::json_number(*spent),
                    "charge": aggregates::money::json_number(*charge),
                }),
            ),
            Self::Unavailable(_) => (
                "unavailable",
                "The service is temporarily unavailable.".into(),
                no_details(),
            ),
            Self::Internal(_) => ("internal", "Internal server error.".into(), no_details()),
            Self::Conflict => ("conflict", "Conflict.".into(), no_details()),
            Self::IdempotencyKeyReused => (
                "idempotency_key_reused",
                "This Idempotency-Key was used for a different request.".into(),
                no_details(),
            ),
            Self::IdempotencyKeyInProgress => (
                "idempotency_key_in_progress",
                "A request with this Idempotency-Key is still running.".into(),
                no_details(),
            ),
            Self::UploadIncomplete => (
                "upload_incomplete",
                "The upload has not completed.".into(),
                no_details(),
            ),
            Self::UploadInProgress => (
                "upload_in_progress",
                "Another upload of this object is still being received.".into(),
                no_details(),
            ),
            Self::RequestTimeout => (
                "request_timeout",
                "The request was not received in time.".into(),
                no_details(),
            ),
            Self::SizeMismatch { expected, actual } => (
                "size_mismatch",
                "The uploaded size differs from size_bytes.".into(),
                json!({ "expected": expected, "actual": actual }),
            ),
            Self::ChecksumMismatch { expected, actual } => (
                "checksum_mismatch",
                "The uploaded SHA-256 differs from checksum_sha256.".into(),
                json!({ "expected": expected, "actual": actual }),
            ),
            Self::RateLimited { retry_after } => (
                "rate_limited",
                "Too many requests.".into(),
                json!({ "retry_after": retry_after }),
            ),
        }
    }
}

/// `details` of an error that has none: `{}`.
fn no_details() -> Value {
    Value::Object(Map::new())
}

/// The error envelope's body (SPEC §1.12).
#[derive(Serialize)]
struct ErrorBody {
    error: ErrorObject,
}

#[derive(Serialize)]
struct ErrorObject {
    code: &'static str,
    message: String,
    details: Value,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(cause) => tracing::error!(cause = %cause, "internal error"),
            Self::Unavailable(cause) => tracing::error!(cause = %cause, "database unavailable"),
            _ => {}
        }
        let (code, message, details) = self.parts();
        let mut response = Stamped::now(ErrorBody {
            error: ErrorObject {
                code,
                message,
                details,
            },
        })
        .respond(self.status());
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
            Self::RateLimited { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
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

impl From<aggregates::dataset::DatasetError> for AppError {
    fn from(error: aggregates::dataset::DatasetError) -> Self {
        use aggregates::dataset::DatasetError;
        match error {
            DatasetError::NotFound | DatasetError::NotEntitled => Self::NotFound,
            DatasetError::InvalidState(status) => Self::InvalidState(status.as_str().to_owned()),
            DatasetError::StatusNotAllowed(_) => {
                Self::field("status", "must be draft, active or paused")
            }
            DatasetError::OwnTenant => Self::field("tenant_id", "must be another tenant"),
            DatasetError::AlreadyExists => Self::internal(error),
        }
    }
}

impl From<aggregates::object::ObjectError> for AppError {
    fn from(error: aggregates::object::ObjectError) -> Self {
        use aggregates::object::ObjectError;
        match error {
            ObjectError::NotFound => Self::NotFound,
            ObjectError::InvalidState(status) => Self::InvalidState(status.as_str().to_owned()),
            ObjectError::DatasetState(status) => Self::InvalidState(status.as_str().to_owned()),
            ObjectError::AlreadyExists => Self::internal(error),
        }
    }
}

impl From<aggregates::api_key::ApiKeyError> for AppError {
    fn from(error: aggregates::api_key::ApiKeyError) -> Self {
        use aggregates::api_key::ApiKeyError;
        match error {
            ApiKeyError::NotFound | ApiKeyError::GrantNotFound => Self::NotFound,
            ApiKeyError::InvalidScopes => {
                Self::field("scopes", "must be non-empty and exclude admin:*")
            }
            ApiKeyError::Revoked => Self::InvalidState("revoked".into()),
            ApiKeyError::Wider(widening) => {
                let reason = widening.to_string();
                let mut message = reason[..1].to_uppercase();
                message.push_str(&reason[1..]);
                message.push('.');
                Self::Forbidden(message)
            }
            ApiKeyError::AlreadyExists => Self::internal(error),
        }
    }
}

impl From<aggregates::search::SearchError> for AppError {
    /// A charge too large to record is 422; every other search error is the server's own
    /// inconsistency.
    fn from(error: aggregates::search::SearchError) -> Self {
        match error {
            aggregates::search::SearchError::ChargeTooLarge => Self::ChargeTooLarge,
            other => Self::internal(other),
        }
    }
}

impl From<aggregates::spend::SpendError> for AppError {
    fn from(error: aggregates::spend::SpendError) -> Self {
        use aggregates::spend::SpendError;
        match error {
            SpendError::LimitExceeded {
                limit_micros,
                spent_micros,
                amount_micros,
            } => Self::SpendLimitExceeded {
                spend_limit: limit_micros,
                spent: spent_micros,
                charge: amount_micros,
            },
            SpendError::InvalidAmount => Self::internal(error),
        }
    }
}

impl From<aggregates::metering::DownloadError> for AppError {
    fn from(error: aggregates::metering::DownloadError) -> Self {
        match error {
            aggregates::metering::DownloadError::ChargeTooLarge => Self::ChargeTooLarge,
            other => Self::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SPEC's error-code table, row by row.
    #[test]
    fn every_error_maps_to_its_code_and_status() {
        let table: Vec<(AppError, &str, u16)> = vec![
            (AppError::bad_request("x"), "invalid_request", 400),
            (AppError::InvalidCursor, "invalid_cursor", 400),
            (AppError::Unauthorized, "unauthorized", 401),
            (AppError::InvalidCredentials, "invalid_credentials", 401),
            (AppError::Forbidden("x".into()), "forbidden", 403),
            (AppError::NotFound, "not_found", 404),
            (
                AppError::MethodNotAllowed(vec!["GET".into()]),
                "method_not_allowed",
                405,
            ),
            (AppError::Conflict, "conflict", 409),
            (AppError::EmailTaken, "email_taken", 409),
            (
                AppError::InvalidState("staged".into()),
                "invalid_state",
                409,
            ),
            (AppError::ConcurrencyConflict, "concurrency_conflict", 409),
            (
                AppError::IdempotencyKeyReused,
                "idempotency_key_reused",
                409,
            ),
            (
                AppError::IdempotencyKeyInProgress,
                "idempotency_key_in_progress",
                409,
            ),
            (AppError::UploadIncomplete, "upload_incomplete", 409),
            (AppError::UploadInProgress, "upload_in_progress", 409),
            (AppError::RequestTimeout, "request_timeout", 408),
            (
                AppError::PayloadTooLarge { limit: 1 },
                "payload_too_large",
                413,
            ),
            (
                AppError::UnsupportedMediaType,
                "unsupported_media_type",
                415,
            ),
            (
                AppError::field("name", "is required"),
                "validation_failed",
                422,
            ),
            (
                AppError::SizeMismatch {
                    expected: 1,
                    actual: 2,
                },
                "size_mismatch",
                422,
            ),
            (
                AppError::ChecksumMismatch {
                    expected: "a".into(),
                    actual: "b".into(),
                },
                "checksum_mismatch",
                422,
            ),
            (
                AppError::RateLimited { retry_after: 3 },
                "rate_limited",
                429,
            ),
            (AppError::DatasetNotFound("dset_x".into()), "not_found", 404),
            (AppError::ChargeTooLarge, "charge_too_large", 422),
            (
                AppError::ChargeLimitExceeded {
                    max_charge: 1,
                    charge: 2,
                },
                "charge_limit_exceeded",
                402,
            ),
            (
                aggregates::spend::SpendError::LimitExceeded {
                    limit_micros: 5,
                    spent_micros: 4,
                    amount_micros: 2,
                }
                .into(),
                "spend_limit_exceeded",
                402,
            ),
            (
                aggregates::metering::DownloadError::ChargeTooLarge.into(),
                "charge_too_large",
                422,
            ),
            (
                aggregates::search::SearchError::ChargeTooLarge.into(),
                "charge_too_large",
                422,
            ),
            (AppError::internal("boom"), "internal", 500),
            (AppError::Unavailable("down".into()), "unavailable", 503),
        ];
        for (error, code, status) in table {
            assert_eq!(error.status().as_u16(), status, "{code}");
            let (actual, _, details) = error.parts();
            assert_eq!(actual, code);
            assert!(details.is_object(), "{code}: details must be an object");
        }
    }

    #[test]
    fn internal_causes_never_reach_the_client() {
        let (_, message, details) = AppError::internal("password=hunter2").parts();
        assert!(!message.contains("hunter2"));
        assert_eq!(details, no_details());
    }

    #[test]
    fn detail_shapes_follow_the_spec() {
        let details = AppError::InvalidState("staged".into()).parts().2;
        assert_eq!(details.to_string(), r#"{"status":"staged"}"#);
        let details = AppError::SizeMismatch {
            expected: 3,
            actual: 4,
        }
        .parts()
        .2;
        assert_eq!(details.to_string(), r#"{"actual":4,"expected":3}"#);
        let details = AppError::RateLimited { retry_after: 7 }.parts().2;
        assert_eq!(details.to_string(), r#"{"retry_after":7}"#);
        let response = AppError::RateLimited { retry_after: 7 }.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        let response = AppError::Unauthorized.into_response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
