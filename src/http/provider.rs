//! The provider's view (SPEC §3.7): figures over the caller's own datasets.

use crate::http::routes::Routes;
use aggregates::money::json_number;
use aggregates::payout::Earnings;
use aggregates::Scope;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use projections::accesses::{self, Side};
use serde_json::{json, Value};
use utoipa::{OpenApi, ToSchema};

use crate::app::AppState;
use crate::http::buyer::WindowQuery;
use crate::http::datasets::own_dataset;
use crate::http::envelope;
use crate::http::error::AppError;
use crate::http::extract::{Auth, Path, Query};
use crate::http::openapi;
use crate::http::window;

/// Routes under `/v1`.
pub fn routes() -> Routes {
    Routes::new()
        .route("/provider/dashboard", get(dashboard))
        .route("/provider/datasets/{id}/analytics", get(analytics))
}

/// The operations of this module, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(dashboard, analytics))]
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
    let month_ago =
        aggregates::timestamp::format(state.store.clock.now() - chrono::Duration::days(30));
    let (total, recent) =
        accesses::totals(db, Side::Provider, &principal.tenant_id, &month_ago).await?;
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

/// A dataset's figures over a window (SPEC §3.7); the three object counters are current.
#[derive(ToSchema)]
pub struct DatasetAnalytics {
    /// The dataset.
    pub dataset_id: String,
    /// Its name.
    pub dataset_name: String,
    /// Its confirmed, non-deleted objects, now.
    #[schema(minimum = 0)]
    pub object_count: i64,
    /// Its approved objects, now.
    #[schema(minimum = 0)]
    pub active_object_count: i64,
    /// The size of its objects, now.
    #[schema(minimum = 0)]
    pub storage_bytes: i64,
    /// Searches by other tenants that returned at least one of its results.
    #[schema(minimum = 0)]
    pub search_appearances: i64,
    /// Retrieval accesses.
    #[schema(minimum = 0)]
    pub retrievals: i64,
    /// Download accesses.
    #[schema(minimum = 0)]
    pub downloads: i64,
    /// Distinct buyer tenants with at least one access.
    #[schema(minimum = 0)]
    pub unique_buyers: i64,
    /// Σ charges.
    #[schema(schema_with = openapi::amount)]
    pub gross_revenue: f64,
    /// Gross less the platform fee.
    #[schema(schema_with = openapi::amount)]
    pub provider_earnings: f64,
    /// Always `USD`.
    #[schema(pattern = "^USD$")]
    pub currency: String,
    /// The resolved start (inclusive).
    #[schema(format = DateTime)]
    pub from: String,
    /// The resolved end (exclusive).
    #[schema(format = DateTime)]
    pub to: String,
    /// One entry per UTC date of the window, ascending.
    pub daily: Vec<DatasetDay>,
    /// At most 10 query texts (trimmed, lowercased), count desc, then query asc.
    #[schema(max_items = 10)]
    pub top_queries: Vec<TopQuery>,
}

/// A day of a dataset's use.
#[derive(ToSchema)]
pub struct DatasetDay {
    /// The UTC date.
    #[schema(format = Date)]
    pub date: String,
    /// Retrieval accesses that day.
    #[schema(minimum = 0)]
    pub retrievals: i64,
    /// Download accesses that day.
    #[schema(minimum = 0)]
    pub downloads: i64,
    /// Σ charges that day.
    #[schema(schema_with = openapi::amount)]
    pub gross_revenue: f64,
}

/// A query text that found the dataset, and how often.
#[derive(ToSchema)]
pub struct TopQuery {
    /// The query text, trimmed and lowercased.
    pub query: String,
    /// Searches with it.
    #[schema(minimum = 1)]
    pub count: i64,
}

#[utoipa::path(
    get,
    path = "/v1/provider/datasets/{id}/analytics",
    tag = "provider",
    summary = "Use and revenue of one of the tenant's own datasets over a window (usage:read).",
    security(("session" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "The dataset's id.", pattern = "^dset_[0-9a-hjkmnp-tv-z]{26}$"), WindowQuery),
    responses(
        (status = 200, description = "The figures.", body = DatasetAnalytics),
        (status = 404, description = "The dataset is foreign, unknown or deleted."),
        (status = 422, description = "from or to is invalid, from ≥ to, or the window spans \
            more than 366 days."),
    )
)]
async fn analytics(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Query(query): Query<WindowQuery>,
) -> Result<Response, AppError> {
    principal.require(Scope::UsageRead)?;
    let dataset = own_dataset(&state, &principal, &id).await?;
    let (from, to) = window::with_default(
        query.from.as_deref(),
        query.to.as_deref(),
        state.store.clock.now(),
    )?;
    let (from_text, to_text) = (
        aggregates::timestamp::format(from),
        aggregates::timestamp::format(to),
    );
    let db = &state.store.db;
    let usage = accesses::dataset_usage(db, &id, &from_text, &to_text).await?;
    let appearances = projections::searches::appearances(db, &id, &from_text, &to_text).await?;
    let top = projections::searches::top_queries(db, &id, &from_text, &to_text).await?;
    let days = accesses::dataset_daily(db, &id, &from_text, &to_text).await?;
    let daily: Vec<Value> = window::dates(from, to)
        .into_iter()
        .map(|date| {
            let (retrievals, downloads, gross) = days
                .iter()
                .find(|(d, ..)| *d == date)
                .map_or((0, 0, 0), |(_, r, d, g)| (*r, *d, *g));
            json!({ "date": date, "retrievals": retrievals, "downloads": downloads, "gross_revenue": json_number(gross) })
        })
        .collect();
    let earnings = Earnings::of(usage.gross_micros, usage.fee_basis);
    Ok(envelope::ok(json!({
        "dataset_id": dataset.dataset_id,
        "dataset_name": dataset.name,
        "object_count": dataset.object_count,
        "active_object_count": dataset.active_object_count,
        "storage_bytes": dataset.storage_bytes,
        "search_appearances": appearances,
        "retrievals": usage.retrievals,
        "downloads": usage.downloads,
        "unique_buyers": usage.unique_buyers,
        "gross_revenue": json_number(earnings.gross),
        "provider_earnings": json_number(earnings.net),
        "currency": "USD",
        "from": from_text,
        "to": to_text,
        "daily": daily,
        "top_queries": top.iter().map(|(q, n)| json!({ "query": q, "count": n })).collect::<Vec<_>>(),
    })))
}
