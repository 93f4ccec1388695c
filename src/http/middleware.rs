//! Conventions applied to every request, as one tower stack around the router ([`conventions`]),
//! outermost first:
//!
//! 1. a fresh request id (`req_` + a UUIDv7 in the ids' base32) in `X-Request-Id`, a client's
//!    own dropped, copied onto the response unless it carries one (a replay keeps the id it was
//!    first answered with); `X-Content-Type-Options: nosniff` on every response;
//! 2. the task-local request scope (the id for envelopes, the body deadline), the `RateLimit`
//!    headers of the bucket that applied, and the request metrics;
//! 3. the `request` tracing span around everything below, with one `served` line per response;
//! 4. a panic answered as 500 `internal` in the envelope (the cause logged once, in the span);
//! 5. the early body limit of `/v1` (413 `payload_too_large`), 404/405 in the error envelope, and
//!    read-your-writes: a successful command's response waits until the projections have applied
//!    what it wrote.
//!
//! The body deadline stays the request scope's: it bounds how long the client may take to send
//! its body (408 `request_timeout`, read by the extractors), which tower-http's `TimeoutLayer`
//! (the server's own work) and `RequestBodyTimeoutLayer` (an idle gap, reset by every frame) do
//! not express.

use std::any::Any;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::body::Limited;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::error::AppError;
use crate::http::consistency::{self, LOG_POSITION};
use crate::http::json::MAX_BODY_BYTES;
use crate::request::{RequestScope, REQUEST};
use crate::state::AppState;

/// How long a command's response waits for the projections.
const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(5);

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps `router` in the conventions (see the module's documentation for their order).
pub fn conventions(state: AppState, router: Router) -> Router {
    // Shared, so that each request's copy of the stack costs a reference count, not a state clone.
    let trusted_proxies = state.config.trusted_proxies.clone();
    let state = Arc::new(state);
    router.layer(
        ServiceBuilder::new()
            .map_request(move |mut request: Request| {
                request.headers_mut().remove(X_REQUEST_ID);
                crate::http::client_ip::resolve(&mut request, &trusted_proxies);
                request
            })
            .layer(SetRequestIdLayer::new(X_REQUEST_ID, NewRequestId))
            .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(from_fn_with_state(state.clone(), scope))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_request(())
                    .on_response(served)
                    // A 5xx is logged once, by `AppError`; a panic by `panicked`.
                    .on_failure(()),
            )
            .layer(CatchPanicLayer::custom(panicked))
            .layer(from_fn_with_state(state, around_routes)),
    )
}

/// Request ids: `req_` and a UUIDv7 in the ids' base32 (time-sortable, like every other id).
#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let body = aggregates::ids::encode_body(uuid::Uuid::now_v7().as_u128());
        HeaderValue::from_str(&format!("req_{body}"))
            .ok()
            .map(RequestId::new)
    }
}

fn request_id(request: &Request) -> &str {
    request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default()
}

/// Runs the request in its task-local scope, then adds the `RateLimit` headers and records it.
async fn scope(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(state.config.request_timeout_seconds);
    let scope = RequestScope::new(request_id(&request).to_owned()).with_body_deadline(deadline);
    REQUEST
        .scope(scope, async move {
            let started = Instant::now();
            let method = request.method().to_string();
            let mut response = next.run(request).await;
            // A panic below may have poisoned the lock; the quota it guards is still whole.
            let quota = REQUEST.with(|r| *r.quota.lock().unwrap_or_else(PoisonError::into_inner));
            if let Some(quota) = quota {
                let policy = format!("\"default\";q={};w=60", quota.limit);
                let now = format!("\"default\";r={};t={}", quota.remaining, quota.reset);
                if let (Ok(policy), Ok(now)) =
                    (HeaderValue::from_str(&policy), HeaderValue::from_str(&now))
                {
                    response.headers_mut().insert("ratelimit-policy", policy);
                    response.headers_mut().insert("ratelimit", now);
                }
            }
            state.store.metrics.request(
                method,
                route(),
                response.status().as_u16(),
                started.elapsed().as_secs_f64(),
            );
            response
        })
        .await
}

/// The matched route template, or `unmatched`.
fn route() -> String {
    REQUEST
        .try_with(|r| r.route())
        .ok()
        .flatten()
        .unwrap_or_else(|| "unmatched".into())
}

fn request_span(request: &Request) -> Span {
    tracing::info_span!(
        "request",
        request_id = %request_id(request),
        method = %request.method(),
        path = %request.uri().path(),
    )
}

/// The one line per response: what a log collector indexes (the span adds method and path).
fn served<B>(response: &axum::http::Response<B>, latency: Duration, _: &Span) {
    let (request_id, tenant) = REQUEST
        .try_with(|r| (r.request_id.clone(), r.tenant()))
        .unwrap_or_default();
    tracing::info!(
        request_id = %request_id,
        route = %route(),
        status = response.status().as_u16(),
        latency_ms = latency.as_secs_f64() * 1000.0,
        tenant = tenant.as_deref().unwrap_or(""),
        "served"
    );
}

/// A handler's panic: 500 `internal`, its message logged (by `AppError`) with the request id.
fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    AppError::internal(format!("handler panicked: {message}")).into_response()
}

/// Just outside the router: the `/v1` body limit, 405 and 413 in the envelope, read-your-writes.
async fn around_routes(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let response = if request.uri().path().starts_with("/v1/") {
        // A declared length over the limit is refused before any handler runs; a longer
        // chunked body fails when it is read (the extractors answer 413 then).
        ServiceBuilder::new()
            .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES as usize))
            .map_request(|request: axum::http::Request<Limited<Body>>| request.map(Body::new))
            .service(next)
            .oneshot(request)
            .await
            .into_response()
    } else {
        next.run(request).await
    };
    if !is_json(&response) {
        match response.status() {
            StatusCode::METHOD_NOT_ALLOWED => {
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
            StatusCode::PAYLOAD_TOO_LARGE => {
                return AppError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                }
                .into_response();
            }
            _ => {}
        }
    }
    // Any successful request that wrote (commands, and metered GETs such as downloads) waits,
    // and says how far it wrote, for a read sent to another instance (`http::consistency`).
    let mut response = response;
    if response.status().is_success() {
        if let Some(written) = REQUEST.with(|r| r.written()) {
            state
                .store
                .settle_written(&written, READ_YOUR_WRITES_WAIT)
                .await;
            response
                .headers_mut()
                .insert(LOG_POSITION, consistency::header_value(written.position));
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn explode(message: &'static str) -> Result<Response, std::convert::Infallible> {
        if message.is_empty() {
            std::panic::panic_any(42_u8);
        }
        panic!("{message}")
    }

    /// A panicking service behind `CatchPanicLayer::custom(panicked)`, inside a request scope.
    async fn answer_to_a_panic(message: &'static str) -> (StatusCode, serde_json::Value) {
        let service = ServiceBuilder::new()
            .layer(CatchPanicLayer::custom(panicked))
            .service_fn(move |_: Request| explode(message));
        let scope = RequestScope::new("req_0000000000000000000000test".into());
        let response = REQUEST
            .scope(scope, service.oneshot(Request::new(Body::empty())))
            .await
            .unwrap();
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_panic_is_a_500_internal_in_the_envelope_with_the_request_id() {
        for message in ["boom with a secret", ""] {
            let (status, body) = answer_to_a_panic(message).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(body["error"]["code"], "internal");
            assert_eq!(body["error"]["details"], serde_json::json!({}));
            assert_eq!(body["request_id"], "req_0000000000000000000000test");
            assert!(!body.to_string().contains("secret"), "{body}");
        }
    }

    #[test]
    fn request_ids_are_req_and_26_characters_of_base32() {
        let request = axum::http::Request::new(());
        let id = NewRequestId.make_request_id(&request).unwrap();
        let id = id.header_value().to_str().unwrap();
        let body = id.strip_prefix("req_").unwrap();
        assert_eq!(body.len(), 26, "{id}");
        assert!(body
            .chars()
            .all(|c| c.is_ascii_digit() || "abcdefghjkmnpqrstvwxyz".contains(c)));
    }
}
