//! The provider's view (SPEC §3.7): figures over the caller's own datasets.

use aggregates::money::json_number;
use aggregates::Scope;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use projections::accesses::{self, Side};
use serde_json::json;

use crate::app::AppState;
use crate::http::envelope;
use crate::http::error::AppError;
use crate::http::extract::Auth;

/// Routes under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/provider/dashboard", get(dashboard))
}

async fn dashboard(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Response, AppError> {
    principal.require(Scope::UsageRead)?;
    let db = &state.store.db;
    let counts = projections::datasets::provider_counts(db, &principal.tenant_id).await?;
    let total = accesses::total(db, Side::Provider, &principal.tenant_id, "", "").await?;
    let month_ago =
        aggregates::timestamp::format(state.store.clock.now() - chrono::Duration::days(30));
    let recent = accesses::total(db, Side::Provider, &principal.tenant_id, &month_ago, "").await?;
    Ok(envelope::ok(json!({
        "total_datasets": counts.total_datasets,
        "total_objects": counts.total_objects,
        "total_storage_bytes": counts.total_storage_bytes,
        "objects_pending_review": counts.objects_pending_review,
        "objects_approved": counts.objects_approved,
        "objects_rejected": counts.objects_rejected,
        "total_revenue": json_number(total),
        "revenue_last_30_days": json_number(recent),
        "currency": "USD",
    })))
}
