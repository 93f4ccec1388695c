//! The provider's view (SPEC §3.7): figures over the caller's own datasets.

use crate::http::routes::Routes;
use aggregates::money::json_number;
use aggregates::Scope;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use projections::accesses::{self, Side};
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

use crate::app::AppState;
use crate::http::envelope;
use crate::http::error::AppError;
use crate::http::extract::Auth;
use crate::http::openapi;

/// Routes under `/v1`.
pub fn routes() -> Routes {
    Routes::new().route("/provider/dashboard", get(dashboard))
}

/// The operations of this module, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(dashboard))]
pub struct Api;

/// The provider's figures (SPEC §3.7).
#[derive(ToSchema)]
pub struct ProviderDashboard {
    /// Datasets not pending_deletion or deleted.
    #[schema(minimum = 0)]
    pub total_datasets: i64,
    /// Confirmed, non-deleted objects (staged + approved + rejected).
    #[schema(minimum = 0)]
    pub total_objects: i64,
    /// Their total size.
    #[schema(minimum = 0)]
    pub total_storage_bytes: i64,
    /// Staged objects.
    #[schema(minimum = 0)]
    pub objects_pending_review: i64,
    /// Approved objects.
    #[schema(minimum = 0)]
    pub objects_approved: i64,
    /// Rejected objects.
    #[schema(minimum = 0)]
    pub objects_rejected: i64,
    /// Gross charges, all time.
    #[schema(schema_with = openapi::amount)]
    pub total_revenue: f64,
    /// Gross charges over the trailing 30 × 24 h.
    #[schema(schema_with = openapi::amount)]
    pub revenue_last_30_days: f64,
    /// Always `USD`.
    #[schema(pattern = "^USD$")]
    pub currency: String,
}

#[utoipa::path(
    get,
    path = "/v1/provider/dashboard",
    tag = "provider",
    summary = "Counts and revenue over the tenant's own datasets (usage:read).",
    security(("session" = []), ("api_key" = [])),
    responses((status = 200, description = "The figures.", body = ProviderDashboard))
)]
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
