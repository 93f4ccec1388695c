//! Signed storage URLs of the embedded file store (`/storage/objects/{id}`): PUT streams an upload
//! (capped at the object's declared size), GET streams a download with `Range` support. Both check
//! the HMAC signature over method, path and expiry; the JSON body rules of `/v1` do not apply.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use serde::Deserialize;

use aggregates::object::ObjectStatus;

use crate::blobs::{storage_path, BlobError};
use crate::error::AppError;
use crate::http::extract::{Path, Query};
use crate::state::AppState;

/// Routes outside `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new().route(PATH, get(download).put(upload))
}

/// The signed URL's path: the one route outside the OpenAPI document.
pub const PATH: &str = "/storage/objects/{object_id}";

#[derive(Deserialize)]
struct Signature {
    expires: Option<String>,
    signature: Option<String>,
}

impl Signature {
    /// Checks the signature and expiry; returns when the URL expires.
    fn check(
        &self,
        state: &AppState,
        method: &str,
        object_id: &str,
    ) -> Result<chrono::DateTime<chrono::Utc>, AppError> {
        let expires = self.expires.as_deref().and_then(|e| e.parse::<i64>().ok());
        let valid = match (expires, self.signature.as_deref()) {
            (Some(expires), Some(signature)) => state.blobs.verify(
                method,
                &storage_path(object_id),
                expires,
                signature,
                state.store.clock.now(),
            ),
            _ => false,
        };
        match expires.and_then(|e| chrono::DateTime::from_timestamp(e, 0)) {
            Some(expires_at) if valid => Ok(expires_at),
            _ => Err(AppError::Forbidden(
                "Invalid or expired storage signature.".into(),
            )),
        }
    }
}
impl From<BlobError> for AppError {
    fn from(error: BlobError) -> Self {
        match error {
            BlobError::NotFound => AppError::NotFound,
            BlobError::TooLarge { limit } => AppError::PayloadTooLarge { limit },
            BlobError::RangeNotSatisfiable => AppError::bad_request("Range not satisfiable."),
            BlobError::Store(cause) => AppError::Internal(cause),
        }
    }
}

/// Receives an upload. The signature and the object's state are checked before the first byte
/// and again before the upload replaces the previous one; one upload per object at a time; the
/// client must keep sending (an idle gap of `IPTO_REQUEST_TIMEOUT_SECONDS` ends it, 408) and
/// finish before the URL expires.
async fn upload(
    State(state): State<AppState>,
    Path(object_id): Path<String>,
    Query(signature): Query<Signature>,
    request: Request,
) -> Result<Response, AppError> {
    let expires = signature.check(&state, "PUT", &object_id)?;
    let object = pending_upload(&state, &object_id).await?;
    let Some(_claim) = state.uploads.claim(&object_id) else {
        return Err(AppError::UploadInProgress);
    };
    let limit = object.size_bytes.max(0) as u64;
    let idle = std::time::Duration::from_secs(state.config.request_timeout_seconds);
    let deadline = tokio::time::Instant::now()
        + (expires - state.store.clock.now())
            .to_std()
            .unwrap_or_default();
    let mut body = request.into_body().into_data_stream();
    let mut writer = state.blobs.begin_upload(&object_id, limit).await?;
    let received = loop {
        let wait = idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, body.next()).await {
            Err(_) => break Err(AppError::RequestTimeout),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(AppError::bad_request(format!("Upload stream: {e}"))),
            Ok(Some(Ok(chunk))) => {
                if let Err(e) = writer.push(chunk).await {
                    break Err(e.into());
                }
            }
        }
    };
    // The final step: the URL must still be valid and the object still waiting for its bytes.
    let checked = match received {
        Ok(()) => match signature.check(&state, "PUT", &object_id) {
            Ok(_) => pending_upload(&state, &object_id).await.map(|_| ()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    if let Err(error) = checked {
        writer.abort().await;
        return Err(error);
    }
    let (_, sha256) = writer.finish().await?;
    let mut response = StatusCode::OK.into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{sha256}\"")) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

/// The object, if it still waits for its bytes (else 404 or 409).
async fn pending_upload(
    state: &AppState,
    object_id: &str,
) -> Result<projections::objects::ObjectRow, AppError> {
    let object = projections::objects::object(&state.store.db, object_id)
        .await?
        .ok_or(AppError::NotFound)?;
    if object.status != ObjectStatus::PendingUpload {
        return Err(AppError::InvalidState(object.status.to_string()));
    }
    Ok(object)
}

/// Serves an object's confirmed bytes: only sealed blobs, named by the checksum its events
/// record, never an upload.
async fn download(
    State(state): State<AppState>,
    Path(object_id): Path<String>,
    Query(signature): Query<Signature>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    signature.check(&state, "GET", &object_id)?;
    let object = projections::objects::object(&state.store.db, &object_id)
        .await?
        .ok_or(AppError::NotFound)?;
    let sha256 = object
        .checksum_sha256
        .as_deref()
        .ok_or(AppError::NotFound)?;
    let requested = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range);
    let (total, served, stream) = match state.blobs.read(&object_id, sha256, requested).await {
        Err(BlobError::RangeNotSatisfiable) => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(
                    header::CONTENT_RANGE,
                    format!("bytes */{}", object.size_bytes),
                )
                .body(Body::empty())
                .map_err(AppError::internal)
        }
        other => other?,
    };
    let partial = requested.is_some();
    let mut response = Response::builder()
        .status(if partial {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(header::CONTENT_TYPE, object.content_type.as_str())
        .header(header::CONTENT_LENGTH, served.end - served.start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"{}\"",
                disposition_name(&object.filename)
            ),
        );
    if partial {
        response = response.header(
            header::CONTENT_RANGE,
            format!(
                "bytes {}-{}/{total}",
                served.start,
                served.end.saturating_sub(1)
            ),
        );
    }
    response
        .body(Body::from_stream(stream))
        .map_err(AppError::internal)
}

/// Parses a single `bytes=a-b` or `bytes=a-` range; anything else means "the whole body".
fn parse_range(raw: &str) -> Option<(u64, Option<u64>)> {
    let spec = raw.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => None,
        e => Some(e.parse::<u64>().ok().filter(|e| *e >= start)?),
    };
    Some((start, end))
}

/// A filename safe inside a quoted header parameter.
fn disposition_name(filename: &str) -> String {
    filename
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || !c.is_ascii() || c.is_ascii_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_http() {
        assert_eq!(parse_range("bytes=0-9"), Some((0, Some(9))));
        assert_eq!(parse_range("bytes=10-"), Some((10, None)));
        assert_eq!(parse_range("bytes=9-1"), None);
        assert_eq!(parse_range("bytes=0-1,4-5"), None);
        assert_eq!(parse_range("items=0-1"), None);
    }

    #[test]
    fn disposition_names_cannot_break_the_header() {
        assert_eq!(disposition_name("a\"b\\c\u{7f}é.txt"), "a_b_c__.txt");
    }
}
