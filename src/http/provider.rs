//! The provider's view (SPEC §3.7): figures over the caller's own datasets.

use aggregates::money::{Total, Usd};
use aggregates::payout::Earnings;
use aggregates::{DatasetId, Scope};
use axum::extract::State;
use projections::accesses::{self, Side};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::http::envelope::Envelope;
use crate::http::extract::{Auth, Path, Query};
use crate::http::lookup::own_dataset;
use crate::http::window::{self, WindowQuery};
use crate::state::AppState;

/// Routes under `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dashboard))
        .routes(routes!(analytics))
}

/// The provider's figures (SPEC §3.7).
#[derive(Serialize, ToSchema)]
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
    pub total_revenue: Total,
    /// Gross charges over the trailing 30 × 24 h.
    pub revenue_last_30_days: Total,
    /// Always `USD`.
    pub currency: Usd,
}

#[utoipa::path(
    get,
    path = "/provider/dashboard",
    summary = "Counts and revenue over the tenant's own datasets (usage:read).",
    responses((status = 200, description = "The figures.", body = ProviderDashboard))
)]
async fn dashboard(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Envelope<ProviderDashboard>, AppError> {
    principal.require(Scope::UsageRead)?;
    let db = &state.store.db;
    let counts = projections::datasets::provider_counts(db, &principal.tenant_id).await?;
    let month_ago =
        aggregates::timestamp::format(state.store.clock.now() - chrono::Duration::days(30));
    let (total, recent) =
        accesses::totals(db, Side::Provider, &principal.tenant_id, &month_ago).await?;
    Ok(Envelope::ok(ProviderDashboard {
        total_datasets: counts.total_datasets,
        total_objects: counts.total_objects,
        total_storage_bytes: counts.total_storage_bytes,
        objects_pending_review: counts.objects_pending_review,
        objects_approved: counts.objects_approved,
        objects_rejected: counts.objects_rejected,
        total_revenue: Total::from_micros(total),
        revenue_last_30_days: Total::from_micros(recent),
        currency: Usd,
    }))
}

/// A dataset's figures over a window (SPEC §3.7); the three object counters are current.
#[derive(Serialize, ToSchema)]
pub struct DatasetAnalytics {
    /// The dataset.
    #[schema(value_type = String)]
    pub dataset_id: DatasetId,
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
    pub gross_revenue: Total,
    /// Gross less the platform fee.
    pub provider_earnings: Total,
    /// Always `USD`.
    pub currency: Usd,
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
#[derive(Serialize, ToSchema)]
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
    pub gross_revenue: Total,
}

/// A query text that found the dataset, and how often.
#[derive(Serialize, ToSchema)]
pub struct TopQuery {
    /// The query text, trimmed and lowercased.
    pub query: String,
    /// Searches with it.
    #[schema(minimum = 1)]
    pub count: i64,
}

#[utoipa::path(
    get,
    path = "/provider/datasets/{id}/analytics",
    summary = "Use and revenue of one of the tenant's own datasets over a window (usage:read).",
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
) -> Result<Envelope<DatasetAnalytics>, AppError> {
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
    let daily = window::dates(from, to)
        .into_iter()
        .map(|date| {
            let (retrievals, downloads, gross) = days
                .iter()
                .find(|(d, ..)| *d == date)
                .map_or((0, 0, 0), |(_, r, d, g)| (*r, *d, *g));
            DatasetDay {
                date,
                retrievals,
                downloads,
                gross_revenue: Total::from_micros(gross),
            }
        })
        .collect();
    let earnings = Earnings::of(usage.gross_micros, usage.fee_basis);
    Ok(Envelope::ok(DatasetAnalytics {
        dataset_id: dataset.dataset_id,
        dataset_name: dataset.name,
        object_count: dataset.object_count,
        active_object_count: dataset.active_object_count,
        storage_bytes: dataset.storage_bytes,
        search_appearances: appearances,
        retrievals: usage.retrievals,
        downloads: usage.downloads,
        unique_buyers: usage.unique_buyers,
        gross_revenue: Total::from_micros(earnings.gross),
        provider_earnings: Total::from_micros(earnings.net),
        currency: Usd,
        from: from_text,
        to: to_text,
        daily,
        top_queries: top
            .into_iter()
            .map(|(query, count)| TopQuery { query, count })
            .collect(),
    }))
}
