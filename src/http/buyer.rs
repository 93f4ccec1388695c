//! The buyer's view of its metered use (SPEC §3.8).

use aggregates::metering::AccessKind;
use aggregates::money::{checked_sum, Total, Usd};
use aggregates::Scope;
use axum::extract::State;
use projections::accesses::{self as read, AccessFilter, AccessRow, Side};
use projections::searches::{SearchActivityRow, SearchFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::http::envelope::Envelope;
use crate::http::extract::{Auth, Query};
use crate::http::pagination::{filter, Keyset, PageQuery};
use crate::http::window::{self, window_end, WindowQuery};
use crate::openapi;
use crate::state::AppState;

/// Routes under `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dashboard))
        .routes(routes!(searches))
        .routes(routes!(accesses))
        .routes(routes!(spend))
}

/// The buyer's figures (SPEC §3.8).
#[derive(Serialize, ToSchema)]
pub struct BuyerDashboard {
    /// All the tenant's keys, revoked and expired included.
    #[schema(minimum = 0)]
    pub api_key_count: i64,
    /// Keys with status `active`.
    #[schema(minimum = 0)]
    pub active_api_key_count: i64,
    /// All search activities.
    #[schema(minimum = 0)]
    pub search_count: i64,
    /// All accesses.
    #[schema(minimum = 0)]
    pub access_count: i64,
    /// Σ charges, all time.
    pub total_spend: Total,
    /// Σ charges over the trailing 30 × 24 h.
    pub spend_last_30_days: Total,
    /// Always `USD`.
    pub currency: Usd,
}

/// A page of search activities.
#[derive(Serialize, ToSchema)]
pub struct SearchActivityPage {
    /// The searches, newest first.
    pub searches: Vec<SearchActivityRow>,
    /// All matches.
    #[schema(minimum = 0)]
    pub total: i64,
    /// The next page's cursor, null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A page of accesses.
#[derive(Serialize, ToSchema)]
pub struct AccessPage {
    /// The accesses, newest first.
    pub accesses: Vec<AccessRow>,
    /// All matches.
    #[schema(minimum = 0)]
    pub total: i64,
    /// The next page's cursor, null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The buyer's spend over a window.
#[derive(Serialize, ToSchema)]
pub struct Spend {
    /// Σ charges in the window.
    pub total_amount: Total,
    /// Always `USD`.
    pub currency: Usd,
    /// The resolved start (inclusive).
    #[schema(format = DateTime)]
    pub from: String,
    /// The resolved end (exclusive).
    #[schema(format = DateTime)]
    pub to: String,
    /// One entry per UTC date of the window, ascending.
    pub by_day: Vec<DailyAmount>,
    /// Datasets with accesses in the window, amount desc, then id.
    pub by_dataset: Vec<DatasetAmount>,
}

/// A day's amount.
#[derive(Serialize, ToSchema)]
pub struct DailyAmount {
    /// The UTC date.
    #[schema(format = Date)]
    pub date: String,
    /// Σ charges that day.
    pub amount: Total,
}

/// A dataset's amount.
#[derive(Serialize, ToSchema)]
pub struct DatasetAmount {
    /// The dataset.
    pub dataset_id: String,
    /// Its name.
    pub dataset_name: String,
    /// Σ charges.
    pub amount: Total,
}

fn access_kind() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice(AccessKind::EXPECTED)
}

#[utoipa::path(
    get,
    path = "/buyer/dashboard",
    summary = "Counts and spend of the tenant as a buyer (usage:read).",
    responses((status = 200, description = "The figures.", body = BuyerDashboard))
)]
async fn dashboard(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Envelope<BuyerDashboard>, AppError> {
    principal.require(Scope::UsageRead)?;
    let db = &state.store.db;
    let tenant = &principal.tenant_id;
    let now = state.store.clock.now();
    let (keys, active_keys) =
        projections::api_keys::tenant_key_counts(db, tenant, &aggregates::timestamp::format(now))
            .await?;
    let searches = projections::searches::buyer_count(db, tenant).await?;
    let accesses = read::buyer_count(db, tenant).await?;
    let month_ago = aggregates::timestamp::format(now - chrono::Duration::days(30));
    let (total, recent) = read::totals(db, Side::Buyer, tenant, &month_ago).await?;
    Ok(Envelope::ok(BuyerDashboard {
        api_key_count: keys,
        active_api_key_count: active_keys,
        search_count: searches,
        access_count: accesses,
        total_spend: Total::from_micros(total),
        spend_last_30_days: Total::from_micros(recent),
        currency: Usd,
    }))
}

/// The filters of the search activity list; the window is open unless given.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SearchActivityQuery {
    /// Only this key's searches.
    api_key_id: Option<String>,
    /// Start, inclusive (a date = 00:00Z that day).
    #[param(schema_with = window_end)]
    from: Option<String>,
    /// End, exclusive (a date = 00:00Z of the next day).
    #[param(schema_with = window_end)]
    to: Option<String>,
    #[param(ignore)]
    #[serde(flatten)]
    page: PageQuery,
}

#[utoipa::path(
    get,
    path = "/agent/activity/searches",
    summary = "The tenant's search activities, newest first (usage:read).",
    params(SearchActivityQuery, PageQuery),
    responses(
        (status = 200, description = "A page of search activities.", body = SearchActivityPage),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 422, description = "from, to or limit is invalid, or from ≥ to."),
    )
)]

async fn searches(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<SearchActivityQuery>,
) -> Result<Envelope<SearchActivityPage>, AppError> {
    principal.require(Scope::UsageRead)?;
    let (from, to) = window::optional(query.from.as_deref(), query.to.as_deref())?;
    let filter = SearchFilter {
        api_key_id: query.api_key_id.filter(|k| !k.is_empty()),
        from: from.map(aggregates::timestamp::format),
        to: to.map(aggregates::timestamp::format),
    };
    let scope = format!(
        "searches?key={}&from={}&to={}",
        filter.api_key_id.as_deref().unwrap_or(""),
        filter.from.as_deref().unwrap_or(""),
        filter.to.as_deref().unwrap_or(""),
    );
    let keyset = Keyset::open(&state.key, &query.page, scope)?;
    let (rows, total) = projections::searches::buyer_searches(
        &state.store.db,
        &principal.tenant_id,
        &filter,
        keyset.after(),
        keyset.fetch(),
    )
    .await?;
    let sort_key =
        |r: &SearchActivityRow| (r.occurred_at.clone(), r.search_activity_id.to_string());
    let page = keyset.page(rows, sort_key, SearchActivityRow::from);
    Ok(Envelope::ok(SearchActivityPage {
        searches: page.items,
        total,
        next_cursor: page.next_cursor,
    }))
}

/// The filters of the access list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AccessQuery {
    /// Only this key's accesses.
    api_key_id: Option<String>,
    /// `retrieval` or `download`.
    #[param(schema_with = access_kind)]
    kind: Option<String>,
    /// Only this dataset.
    dataset_id: Option<String>,
    /// Start, inclusive (a date = 00:00Z that day).
    #[param(schema_with = window_end)]
    from: Option<String>,
    /// End, exclusive (a date = 00:00Z of the next day).
    #[param(schema_with = window_end)]
    to: Option<String>,
    #[param(ignore)]
    #[serde(flatten)]
    page: PageQuery,
}

#[utoipa::path(
    get,
    path = "/agent/activity/accesses",
    summary = "The tenant's metered accesses as a buyer, newest first (usage:read).",
    params(AccessQuery, PageQuery),
    responses(
        (status = 200, description = "A page of accesses.", body = AccessPage),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 422, description = "kind, from, to or limit is invalid, or from ≥ to."),
    )
)]
async fn accesses(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<AccessQuery>,
) -> Result<Envelope<AccessPage>, AppError> {
    principal.require(Scope::UsageRead)?;
    let kind = filter("kind", query.kind, AccessKind::EXPECTED)?.map(str::to_owned);
    let (from, to) = window::optional(query.from.as_deref(), query.to.as_deref())?;
    let filter = AccessFilter {
        api_key_id: query.api_key_id.filter(|k| !k.is_empty()),
        kind,
        dataset_id: query.dataset_id.filter(|d| !d.is_empty()),
        from: from.map(aggregates::timestamp::format),
        to: to.map(aggregates::timestamp::format),
    };
    let scope = format!(
        "accesses?key={}&kind={}&dataset={}&from={}&to={}",
        filter.api_key_id.as_deref().unwrap_or(""),
        filter.kind.as_deref().unwrap_or(""),
        filter.dataset_id.as_deref().unwrap_or(""),
        filter.from.as_deref().unwrap_or(""),
        filter.to.as_deref().unwrap_or(""),
    );
    let keyset = Keyset::open(&state.key, &query.page, scope)?;
    let (rows, total) = read::buyer_accesses(
        &state.store.db,
        &principal.tenant_id,
        &filter,
        keyset.after(),
        keyset.fetch(),
    )
    .await?;
    let sort_key = |r: &AccessRow| (r.occurred_at.clone(), r.access_id.to_string());
    let page = keyset.page(rows, sort_key, AccessRow::from);
    Ok(Envelope::ok(AccessPage {
        accesses: page.items,
        total,
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(
    get,
    path = "/agent/spend",
    summary = "The tenant's spend by day and by dataset over a window (billing:read).",
    params(WindowQuery),
    responses(
        (status = 200, description = "The spend.", body = Spend),
        (status = 422, description = "from or to is invalid, from ≥ to, or the window spans \
            more than 366 days."),
    )
)]
async fn spend(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<WindowQuery>,
) -> Result<Envelope<Spend>, AppError> {
    principal.require(Scope::BillingRead)?;
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
    let days = read::spend_by_day(db, &principal.tenant_id, &from_text, &to_text).await?;
    let by_day = window::dates(from, to)
        .into_iter()
        .map(|date| {
            let amount = days.iter().find(|(d, _)| *d == date).map_or(0, |(_, a)| *a);
            DailyAmount {
                date,
                amount: Total::from_micros(amount),
            }
        })
        .collect();
    let datasets = read::spend_by_dataset(db, &principal.tenant_id, &from_text, &to_text).await?;
    let total = checked_sum(days.iter().map(|(_, a)| *a))
        .ok_or_else(|| AppError::internal("spend total out of range"))?;
    let by_dataset = datasets
        .into_iter()
        .map(|(dataset_id, dataset_name, amount)| DatasetAmount {
            dataset_id,
            dataset_name,
            amount: Total::from_micros(amount),
        })
        .collect();
    Ok(Envelope::ok(Spend {
        total_amount: Total::from_micros(total),
        currency: Usd,
        from: from_text,
        to: to_text,
        by_day,
        by_dataset,
    }))
}
