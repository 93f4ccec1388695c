//! `Idempotency-Key` on authenticated POSTs (SPEC §1.9). The first request with a key runs and, if
//! it ends 2xx, 404 or 409, its status and body are saved; a repeat with the same method, path and
//! JSON-equal body replays them with `Idempotent-Replayed: true` and executes nothing. Another
//! request under the same key is 409 `idempotency_key_reused`; a repeat while the first still runs
//! is 409 `idempotency_key_in_progress`. Records live in the database (restarts, several
//! instances), scoped per credential, for 24 hours; the jobs purge older ones.
//!
//! The credential is checked before anything is looked up, as for any request: a revoked or
//! expired key or an ended session gets its 401, a replay counts against the rate limit, and the
//! principal must still hold every scope the first run required. A response field marked secret
//! (a new key) is kept as `null`, so no stored body holds a secret.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use aggregates::Scope;

use crate::auth::PrincipalKind;
use crate::error::AppError;
use crate::http::envelope::{self, SecretFields};
use crate::http::extract::{authenticate, Authenticated};
use crate::http::json::MAX_BODY_BYTES;
use crate::idempotency::Record;
use crate::state::AppState;

/// The middleware.
pub async fn idempotency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let applies = request.method() == Method::POST
        && path.starts_with("/v1/")
        && path != "/v1/auth/signup"
        && path != "/v1/auth/login";
    let Some(raw_key) = request.headers().get("idempotency-key").cloned() else {
        return next.run(request).await;
    };
    if !applies {
        return next.run(request).await;
    }
    match run(&state, raw_key, path, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn run(
    state: &AppState,
    raw_key: HeaderValue,
    path: String,
    request: Request,
    next: Next,
) -> Result<Response, Response> {
    let (mut parts, body) = request.into_parts();
    // Credentials first (SPEC §1.11): nothing is replayed to a credential that no longer works.
    let principal = authenticate(&parts.headers, &parts.extensions, state)
        .await
        .map_err(IntoResponse::into_response)?;
    parts.extensions.insert(Authenticated(principal.clone()));
    let key = raw_key
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .ok_or_else(|| {
            AppError::bad_request("Idempotency-Key must be 1 to 255 printable ASCII characters.")
                .into_response()
        })?
        .to_owned();
    let scope = match &principal.kind {
        PrincipalKind::ApiKey { api_key_id } => format!("key:{api_key_id}"),
        PrincipalKind::User { session_hash, .. } => format!("session:{session_hash}"),
    };
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_secs(state.config.request_timeout_seconds);
    let bytes = tokio::time::timeout_at(deadline, to_bytes(body, MAX_BODY_BYTES as usize))
        .await
        .map_err(|_| AppError::RequestTimeout.into_response())?
        .map_err(|_| {
            AppError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            }
            .into_response()
        })?;
    let canonical = serde_json::from_slice::<serde_json::Value>(&bytes)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
    let request_hash = state
        .key
        .hmac_hex(format!("POST\n{path}\n{canonical}").as_bytes());
    let record = Record {
        db: &state.store.db,
        scope: &scope,
        key: &key,
    };
    let internal = |e: sqlx::Error| AppError::from(e).into_response();
    let now = state.store.clock.now();
    if let Some(saved) = record.reserve(&request_hash, now).await.map_err(internal)? {
        if saved.request_hash != request_hash {
            return Err(AppError::IdempotencyKeyReused.into_response());
        }
        if !saved.is_done() {
            return Err(AppError::IdempotencyKeyInProgress.into_response());
        }
        // The scopes the first run needed, the principal must still hold.
        for name in saved.required() {
            let scope = Scope::parse(name).ok_or_else(|| {
                AppError::internal(format!("stored scope {name}")).into_response()
            })?;
            principal
                .require(scope)
                .map_err(IntoResponse::into_response)?;
        }
        let status = saved
            .status
            .and_then(|s| StatusCode::from_u16(s as u16).ok());
        let mut response = Response::builder()
            .status(status.unwrap_or(StatusCode::OK))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotent-replayed", "true");
        if let Some(id) = saved.request_id {
            response = response.header("x-request-id", id);
        }
        return response
            .body(Body::from(saved.body.unwrap_or_default()))
            .map_err(|e| AppError::internal(e).into_response());
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    let keep =
        status.is_success() || status == StatusCode::NOT_FOUND || status == StatusCode::CONFLICT;
    if !keep {
        let _ = record.forget().await;
        return Ok(response);
    }
    let required: Vec<&str> = crate::request::REQUEST
        .try_with(|r| r.required())
        .unwrap_or_default()
        .iter()
        .map(|s| s.as_str())
        .collect();
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX)
        .await
        .map_err(|e| AppError::internal(e).into_response())?;
    let kept = match parts.extensions.get::<SecretFields>() {
        Some(secrets) => envelope::without_secrets(&bytes, *secrets).ok_or_else(|| {
            AppError::internal("a secret-bearing body that is not JSON").into_response()
        })?,
        None => bytes.to_vec(),
    };
    let text = String::from_utf8_lossy(&kept).into_owned();
    let request_id = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["request_id"].as_str().map(str::to_owned));
    record
        .complete(status.as_u16(), request_id, &text, &required)
        .await
        .map_err(internal)?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}
