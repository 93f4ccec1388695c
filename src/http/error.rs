//! How HTTP answers an [`AppError`]: its status, the SPEC's error envelope and headers.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::error::AppError;
use crate::http::envelope::Stamped;

impl AppError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } | Self::InvalidCursor => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound | Self::DatasetNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::EmailTaken
            | Self::AlreadyInvited
            | Self::LastOwner
            | Self::InvalidState(_)
            | Self::ConcurrencyConflict
            | Self::Conflict
            | Self::IdempotencyKeyReused
            | Self::IdempotencyKeyInProgress
            | Self::UploadIncomplete
            | Self::UploadInProgress => StatusCode::CONFLICT,
            Self::InvitationExpired => StatusCode::GONE,
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
            Self::Unavailable(_) | Self::NotCaughtUp { .. } | Self::Rebuilding { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
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
        let error = ErrorObject {
            code: self.code(),
            message: self.message(),
            details: self.details(),
        };
        let mut response = Stamped::now(ErrorBody { error }).respond(self.status());
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
            Self::RateLimited { retry_after }
            | Self::NotCaughtUp { retry_after }
            | Self::Rebuilding { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        response
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
            (AppError::AlreadyInvited, "already_invited", 409),
            (AppError::LastOwner, "last_owner", 409),
            (AppError::InvitationExpired, "invitation_expired", 410),
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
            (AppError::Rebuilding { retry_after: 5 }, "rebuilding", 503),
            (
                AppError::NotCaughtUp { retry_after: 1 },
                "not_caught_up",
                503,
            ),
        ];
        for (error, code, status) in table {
            assert_eq!(error.status().as_u16(), status, "{code}");
            assert_eq!(error.code(), code);
            assert!(
                error.details().is_object(),
                "{code}: details must be an object"
            );
        }
    }

    #[test]
    fn internal_causes_never_reach_the_client() {
        let error = AppError::internal("password=hunter2");
        assert!(!error.message().contains("hunter2"));
        assert_eq!(error.details(), serde_json::json!({}));
    }

    #[test]
    fn detail_shapes_follow_the_spec() {
        let details = AppError::InvalidState("staged".into()).details();
        assert_eq!(details.to_string(), r#"{"status":"staged"}"#);
        let details = AppError::SizeMismatch {
            expected: 3,
            actual: 4,
        }
        .details();
        assert_eq!(details.to_string(), r#"{"actual":4,"expected":3}"#);
        let details = AppError::RateLimited { retry_after: 7 }.details();
        assert_eq!(details.to_string(), r#"{"retry_after":7}"#);
        let response = AppError::RateLimited { retry_after: 7 }.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        let response = AppError::Unauthorized.into_response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
