//! The HTTP API: conventions shared by every route (envelope, errors, request ids, JSON bodies,
//! pagination, credentials) and one router module per resource group.

pub mod accounts;
pub mod admin;
pub mod api_keys;
pub mod auth_failures;
pub mod buyer;
pub mod charges;
pub mod datasets;
pub mod envelope;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod json;
pub mod market;
pub mod middleware;
pub mod objects;
pub mod openapi;
pub mod pagination;
pub mod payouts;
pub mod provider;
pub mod retrieve;
pub mod routes;
pub mod search;
pub mod storage;
pub mod window;

use axum::Router;

use crate::app::AppState;
use crate::http::routes::Routes;

/// Every route of the service, recorded (see [`Routes`]).
pub fn routes() -> Routes {
    Routes::new()
        .merge(health::routes())
        .merge(openapi::routes())
        .merge(storage::routes())
        .nest(
            "/v1",
            accounts::routes()
                .merge(datasets::routes())
                .merge(objects::routes())
                .merge(admin::routes())
                .merge(api_keys::routes())
                .merge(buyer::routes())
                .merge(provider::routes())
                .merge(payouts::routes())
                .merge(search::routes())
                .merge(retrieve::routes())
                .merge(events::routes()),
        )
}

/// Every route of the service.
///
/// The conventions middleware wraps the whole router from outside, so that it sees responses
/// complete (axum adds `Allow` to a 405 at the router's top level).
pub fn router(state: AppState) -> Router {
    let routes = routes()
        .into_router()
        .route_layer(axum::middleware::from_fn(middleware::record_route))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .fallback(middleware::not_found)
        .with_state(state.clone());
    middleware::conventions(state, Router::new().fallback_service(routes))
}
