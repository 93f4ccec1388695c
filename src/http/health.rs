//! `GET /health`: the store, and each projection's position, lag and state.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use crate::app::AppState;
use crate::http::envelope;
use crate::http::error::AppError;

/// A projection lagging by more than this many events makes the service `degraded`.
pub const LAG_THRESHOLD: i64 = 1000;

/// Routes outside `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    store: &'static str,
    projections: BTreeMap<String, ProjectionHealth>,
}

#[derive(Serialize)]
struct ProjectionHealth {
    position: i64,
    lag: i64,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_position: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn health(State(state): State<AppState>) -> Result<Response, AppError> {
    let report = tokio::time::timeout(Duration::from_secs(3), projection_report(&state))
        .await
        .map_err(|_| AppError::Unavailable("health check timed out".into()))?
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    Ok(envelope::ok(report))
}

async fn projection_report(state: &AppState) -> Result<Health, sqlx::Error> {
    let head = projections::log::head(&state.store.db).await?;
    let mut degraded = false;
    let mut projections = BTreeMap::new();
    for status in state.store.engine.statuses().await? {
        let lag = (head - status.position).max(0);
        degraded |= lag > LAG_THRESHOLD || status.error.is_some();
        projections.insert(
            status.name.clone(),
            ProjectionHealth {
                position: status.position,
                lag,
                state: status.state(),
                failed_position: status.failed_position,
                error: status.error,
            },
        );
    }
    let index = state.search.status();
    let lag = (head - index.position).max(0);
    degraded |= lag > LAG_THRESHOLD || index.error.is_some();
    projections.insert(
        crate::search::NAME.to_owned(),
        ProjectionHealth {
            position: index.position,
            lag,
            state: if index.error.is_some() {
                "failed"
            } else {
                "ok"
            },
            failed_position: None,
            error: index.error,
        },
    );
    Ok(Health {
        status: if degraded { "degraded" } else { "ok" },
        version: env!("CARGO_PKG_VERSION"),
        store: state.store.db.dialect.as_str(),
        projections,
    })
}

async fn metrics(State(state): State<AppState>) -> Result<axum::response::Response, AppError> {
    use axum::response::IntoResponse;
    let head = projections::log::head(&state.store.db).await?;
    let positions: Vec<(String, i64)> = state
        .store
        .engine
        .statuses()
        .await?
        .into_iter()
        .map(|s| (s.name, s.position))
        .chain([(
            crate::search::NAME.to_owned(),
            state.search.status().position,
        )])
        .collect();
    let body = state.store.metrics.render(head, &positions);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response())
}
