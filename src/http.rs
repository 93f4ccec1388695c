//! The HTTP API: conventions shared by every route (envelope, errors, request ids, JSON bodies,
//! pagination, credentials) and one router module per resource group.

pub mod accounts;
pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod auth_failures;
pub mod buyer;
pub mod client_ip;
pub mod consistency;
pub mod datasets;
pub mod envelope;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod history;
pub mod idempotency;
pub mod json;
pub mod lookup;
pub mod market;
pub mod mcp;
pub mod middleware;
pub mod objects;
pub mod pagination;
pub mod payouts;
pub mod provider;
pub mod retrieve;
pub mod search;
pub mod storage;
pub mod teams;
pub mod window;

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// Every documented route of the service, each with its OpenAPI operation.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .merge(tagged("health", health::routes()))
        .nest(
            "/v1",
            tagged("auth", accounts::routes())
                .merge(tagged("datasets", datasets::routes()))
                .merge(tagged("objects", objects::routes()))
                .merge(tagged("admin", admin::routes()))
                .merge(tagged("api-keys", api_keys::routes()))
                .merge(tagged("buyer", buyer::routes()))
                .merge(tagged("provider", provider::routes()))
                .merge(tagged("admin", payouts::routes()))
                .merge(tagged("search", search::routes()))
                .merge(tagged("search", retrieve::routes()))
                .merge(tagged("admin", events::routes()))
                .merge(tagged("admin", history::routes()))
                .merge(tagged("audit", audit::routes()))
                .merge(tagged("tenant", teams::routes())),
        )
}

/// A module's routes under its tag: every operation that names no other takes `tag`.
fn tagged(tag: &str, mut routes: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    for item in routes.get_openapi_mut().paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            operation.tags.get_or_insert_with(|| vec![tag.to_owned()]);
        }
    }
    routes
}

/// The path templates served, in axum's `{param}` syntax: every documented one, and the signed
/// storage URL.
pub fn paths() -> Vec<String> {
    let (_, api) = api().split_for_parts();
    api.paths
        .paths
        .into_keys()
        .chain([storage::PATH.to_owned(), mcp::PATH.to_owned()])
        .collect()
}

/// The served OpenAPI document, built once from the routes.
#[derive(Clone)]
struct Document(Arc<str>);

#[utoipa::path(
    get,
    path = "/openapi.json",
    security(()),
    tag = "meta",
    summary = "This OpenAPI 3.1 document (no envelope, no credentials).",
    responses((status = 200, description = "The OpenAPI document.", body = Object))
)]
async fn openapi_json(Extension(Document(document)): Extension<Document>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response()
}

/// Every route of the service.
///
/// The conventions middleware wraps the whole router from outside, so that it sees responses
/// complete (axum adds `Allow` to a 405 at the router's top level).
/// `address` is the listener's: the MCP tools at `/mcp` call the API there.
pub fn router(state: AppState, address: std::net::SocketAddr) -> Router {
    let (routes, api) = api().split_for_parts();
    let document = Document(Arc::from(
        crate::openapi::document(api, state.config.max_object_bytes).to_string(),
    ));
    let routes = routes
        .merge(storage::routes())
        .merge(mcp::routes(&state, address))
        .route_layer(axum::middleware::from_fn(middleware::record_route))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .fallback(middleware::not_found)
        .layer(Extension(document))
        .with_state(state.clone());
    middleware::conventions(state, Router::new().fallback_service(routes))
}
