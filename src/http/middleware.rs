//! Conventions applied to every request: a request id (task-local, `X-Request-Id`), the early body
//! size check, 404/405 in the error envelope, a tracing span, and read-your-writes: a successful
//! command's response waits until the projections have applied what it wrote.

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::app::AppState;
use crate::http::error::AppError;
use crate::http::json::MAX_BODY_BYTES;
use crate::store::{RequestScope, REQUEST};

/// How long a command's response waits for the projections.
const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(5);

/// The conventions middleware.
pub async fn conventions(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let request_id = format!(
        "req_{}",
        aggregates::ids::encode_body(uuid::Uuid::now_v7().as_u128())
    );
    let span = tracing::info_span!("request", %request_id, method = %request.method(), path = %request.uri().path());
    let scope = RequestScope::new(request_id.clone()).with_body_deadline(
        tokio::time::Instant::now() + Duration::from_secs(state.config.request_timeout_seconds),
    );
    REQUEST
        .scope(scope, async move {
            let started = std::time::Instant::now();
            let method = request.method().to_string();
            let mut response = handle(&state, request, next).await;
            // No response, downloads least of all, is to be sniffed into another content type.
            let nosniff = HeaderValue::from_static("nosniff");
            response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, nosniff);
            // A replayed response keeps the request id it was first answered with.
            let replayed = response.headers().contains_key("idempotent-replayed");
            if let (false, Ok(value)) = (replayed, HeaderValue::from_str(&request_id)) {
                response.headers_mut().insert("x-request-id", value);
            }
            if let Some(quota) = REQUEST.with(|r| *r.quota.lock().expect("lock")) {
                let headers = response.headers_mut();
                let policy = format!("\"default\";q={};w=60", quota.limit);
                let state_now = format!("\"default\";r={};t={}", quota.remaining, quota.reset);
                if let (Ok(policy), Ok(now)) = (HeaderValue::from_str(&policy), HeaderValue::from_str(&state_now)) {
                    headers.insert("ratelimit-policy", policy);
                    headers.insert("ratelimit", now);
                }
            }
            let route = REQUEST.with(|r| r.route()).unwrap_or_else(|| "unmatched".into());
            state.store.metrics.request(method, route.clone(), response.status().as_u16(), started.elapsed().as_secs_f64());
            tracing::info!(%route, status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "served");
            response
        })
        .instrument(span)
        .await
}

async fn handle(state: &AppState, request: Request, next: Next) -> Response {
    let too_large = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY_BYTES);
    if too_large && request.uri().path().starts_with("/v1/") {
        return AppError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        }
        .into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED && !is_json(&response) {
        let allowed = response
            .headers()
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(',')
                    .map(|m| m.trim().to_owned())
                    .filter(|m| !m.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        return AppError::MethodNotAllowed(allowed).into_response();
    }
    // Any successful request that wrote (commands, and metered GETs such as downloads) waits.
    if response.status().is_success() {
        if let Some(written) = REQUEST.with(|r| r.written()) {
            state
                .store
                .settle_written(&written, READ_YOUR_WRITES_WAIT)
                .await;
        }
    }
    response
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

/// Records the matched route template (for logs and metrics) in the request scope.
pub async fn record_route(request: Request, next: Next) -> Response {
    if let Some(path) = request.extensions().get::<MatchedPath>() {
        let path = path.as_str().to_owned();
        let _ = REQUEST.try_with(|r| r.set_route(path));
    }
    next.run(request).await
}

/// Unknown routes.
pub async fn not_found() -> AppError {
    AppError::NotFound
}
