//! What a request or a job can fail with (SPEC §1.12): one error type for the whole service,
//! the error code and message a client reads, and the mapping of every domain error to it. How
//! HTTP answers each (status, envelope, headers) is `http::error`'s.

use std::collections::BTreeMap;

use aggregates::money::{format_micros, json_number, MAX_CHARGE_MICROS};
use serde_json::{json, Value};

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
    /// 409 `already_invited`: a pending invitation exists for the address.
    #[error("already invited")]
    AlreadyInvited,
    /// 409 `last_owner`: the change would leave the tenant without an owner.
    #[error("last owner")]
    LastOwner,
    /// 410 `invitation_expired`: the invitation expired, was revoked or was used.
    #[error("invitation expired")]
    InvitationExpired,
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
    /// 503 `not_caught_up`, with `Retry-After`: the request sent an `Ipto-Log-Position` this
    /// instance's read models and search index had not applied within the bounded wait.
    #[error("not caught up")]
    NotCaughtUp { retry_after: u64 },
    /// 503 `rebuilding`, with `Retry-After`: as `NotCaughtUp`, while a new version of a read
    /// model is being rebuilt (which can hold the instance back longer).
    #[error("rebuilding")]
    Rebuilding { retry_after: u64 },
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

    /// The SPEC's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalid_request",
            Self::InvalidCursor => "invalid_cursor",
            Self::Unauthorized => "unauthorized",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound | Self::DatasetNotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::EmailTaken => "email_taken",
            Self::AlreadyInvited => "already_invited",
            Self::LastOwner => "last_owner",
            Self::InvitationExpired => "invitation_expired",
            Self::InvalidState(_) => "invalid_state",
            Self::Conflict => "conflict",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::IdempotencyKeyInProgress => "idempotency_key_in_progress",
            Self::UploadIncomplete => "upload_incomplete",
            Self::UploadInProgress => "upload_in_progress",
            Self::RequestTimeout => "request_timeout",
            Self::SizeMismatch { .. } => "size_mismatch",
            Self::ChecksumMismatch { .. } => "checksum_mismatch",
            Self::RateLimited { .. } => "rate_limited",
            Self::ConcurrencyConflict => "concurrency_conflict",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Validation(_) => "validation_failed",
            Self::ChargeTooLarge => "charge_too_large",
            Self::ChargeLimitExceeded { .. } => "charge_limit_exceeded",
            Self::SpendLimitExceeded { .. } => "spend_limit_exceeded",
            Self::NotCaughtUp { .. } => "not_caught_up",
            Self::Rebuilding { .. } => "rebuilding",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The message a client reads; never a cause (those are logged).
    pub fn message(&self) -> String {
        let fixed = match self {
            Self::InvalidRequest { message, .. } | Self::Forbidden(message) => {
                return message.clone()
            }
            Self::InvalidState(status) => {
                return format!("Not allowed while the resource is {status}.")
            }
            Self::ChargeTooLarge => {
                return format!(
                    "The charge exceeds the largest amount a single charge may record ({} USD); \
                     nothing was charged.",
                    format_micros(MAX_CHARGE_MICROS)
                )
            }
            Self::ChargeLimitExceeded { max_charge, charge } => {
                return format!(
                    "The download costs {} USD, more than max_charge {}; nothing was charged.",
                    format_micros(*charge),
                    format_micros(*max_charge)
                )
            }
            Self::SpendLimitExceeded {
                spend_limit,
                spent,
                charge,
            } => {
                return format!(
                    "The charge of {} USD would take this key past its spend limit of {} USD \
                     this month ({} USD spent); nothing was charged.",
                    format_micros(*charge),
                    format_micros(*spend_limit),
                    format_micros(*spent)
                )
            }
            Self::InvalidCursor => "The cursor is not valid for this request.",
            Self::Unauthorized => "Authentication required.",
            Self::InvalidCredentials => "Invalid email or password.",
            Self::NotFound => "Resource not found.",
            Self::DatasetNotFound(_) => "Dataset not found.",
            Self::MethodNotAllowed(_) => "Method not allowed.",
            Self::EmailTaken => "This email is already registered.",
            Self::AlreadyInvited => "A pending invitation exists for this email.",
            Self::LastOwner => "A tenant keeps at least one owner.",
            Self::InvitationExpired => "The invitation expired, was revoked or was used.",
            Self::ConcurrencyConflict => "The resource changed concurrently; retry the request.",
            Self::PayloadTooLarge { .. } => "The request body is too large.",
            Self::UnsupportedMediaType => "Request bodies must be application/json.",
            Self::Validation(_) => "Validation failed.",
            Self::NotCaughtUp { .. } => {
                "This instance has not yet applied the log position the request sent; retry."
            }
            Self::Rebuilding { .. } => {
                "A new version of a read model is being rebuilt and this instance has not yet \
                 applied the log position the request sent; retry."
            }
            Self::Unavailable(_) => "The service is temporarily unavailable.",
            Self::Internal(_) => "Internal server error.",
            Self::Conflict => "Conflict.",
            Self::IdempotencyKeyReused => "This Idempotency-Key was used for a different request.",
            Self::IdempotencyKeyInProgress => {
                "A request with this Idempotency-Key is still running."
            }
            Self::UploadIncomplete => "The upload has not completed.",
            Self::UploadInProgress => "Another upload of this object is still being received.",
            Self::RequestTimeout => "The request was not received in time.",
            Self::SizeMismatch { .. } => "The uploaded size differs from size_bytes.",
            Self::ChecksumMismatch { .. } => "The uploaded SHA-256 differs from checksum_sha256.",
            Self::RateLimited { .. } => "Too many requests.",
        };
        fixed.to_owned()
    }

    /// The envelope's `details`: an object, `{}` for most errors.
    pub fn details(&self) -> Value {
        match self {
            Self::InvalidRequest { fields, .. } if !fields.is_empty() => {
                json!({ "fields": fields })
            }
            Self::Validation(fields) => json!({ "fields": fields }),
            Self::DatasetNotFound(id) => json!({ "dataset_id": id }),
            Self::MethodNotAllowed(allowed) => json!({ "allowed": allowed }),
            Self::InvalidState(status) => json!({ "status": status }),
            Self::PayloadTooLarge { limit } => json!({ "limit": limit }),
            Self::ChargeTooLarge => json!({ "limit": json_number(MAX_CHARGE_MICROS) }),
            Self::ChargeLimitExceeded { max_charge, charge } => {
                json!({ "max_charge": json_number(*max_charge), "charge": json_number(*charge) })
            }
            Self::SpendLimitExceeded {
                spend_limit,
                spent,
                charge,
            } => json!({
                "spend_limit": json_number(*spend_limit),
                "spent": json_number(*spent),
                "charge": json_number(*charge),
            }),
            Self::SizeMismatch { expected, actual } => {
                json!({ "expected": expected, "actual": actual })
            }
            Self::ChecksumMismatch { expected, actual } => {
                json!({ "expected": expected, "actual": actual })
            }
            Self::RateLimited { retry_after }
            | Self::NotCaughtUp { retry_after }
            | Self::Rebuilding { retry_after } => json!({ "retry_after": retry_after }),
            _ => json!({}),
        }
    }
}

impl From<projections::audit::TreeError> for AppError {
    fn from(error: projections::audit::TreeError) -> Self {
        match error {
            projections::audit::TreeError::Database(error) => error.into(),
            missing => Self::internal(missing),
        }
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

impl From<aggregates::login::LoginError> for AppError {
    fn from(error: aggregates::login::LoginError) -> Self {
        match error {
            aggregates::login::LoginError::NotFound => Self::NotFound,
            aggregates::login::LoginError::AlreadyOpened => Self::internal(error),
        }
    }
}

impl From<aggregates::user::UserError> for AppError {
    fn from(error: aggregates::user::UserError) -> Self {
        match error {
            aggregates::user::UserError::NotRegistered => Self::NotFound,
            aggregates::user::UserError::AlreadyRegistered => Self::internal(error),
            aggregates::user::UserError::Erased => Self::NotFound,
        }
    }
}

impl From<aggregates::tenant::TenantError> for AppError {
    fn from(error: aggregates::tenant::TenantError) -> Self {
        use aggregates::tenant::TenantError;
        match error {
            TenantError::NotFound | TenantError::UnknownMember | TenantError::UnknownInvitation => {
                Self::NotFound
            }
            TenantError::Forbidden(reason) => Self::Forbidden(reason.to_owned()),
            TenantError::AlreadyInvited => Self::AlreadyInvited,
            TenantError::InvitationExpired => Self::InvitationExpired,
            TenantError::InvitationAccepted => Self::InvalidState("accepted".into()),
            TenantError::LastOwner => Self::LastOwner,
            TenantError::NoRoles => Self::field("roles", "must name at least one role"),
            TenantError::AlreadyExists | TenantError::MembersRecorded => Self::internal(error),
        }
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
