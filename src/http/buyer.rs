//! The buyer's view of its metered use (SPEC §3.8).

use crate::http::routes::Routes;
use aggregates::money::{checked_sum, json_number};
use aggregates::Scope;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use projections::accesses::{self as read, AccessFilter, Side};
use projections::searches::SearchFilter;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::app::AppState;
use crate::http::datasets::sort_key;
use crate::http::envelope;
use crate::http::error::AppError;
use crate::http::extract::{Auth, Query};
use crate::http::openapi;
use crate::http::pagination::{self, PageQuery};
use crate::http::window;

/// Routes under `/v1`.
pub fn routes() -> Routes {
    Routes::new()
        .route("/buyer/dashboard", get(dashboard))
        .route("/agent/activity/searches", get(searches))
        .route("/agent/activity/accesses", get(accesses))
        .route("/agent/spend", get(spend))
}

/// The operations of this module, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(dashboard, searches, accesses, spend))]
pub struct Api;

/// The buyer's figures (SPEC §3.8).
#[derive(ToSchema)]
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
    #[schema(schema_with = openapi::amount)]
    pub total_spend: f64,
    /// Σ charges over the trailing 30 × 24 h.
    #[schema(schema_with = openapi::amount)]
    pub spend_last_30_days: f64,
    /// Always `USD`.
    #[schema(pattern = "^USD$")]
    pub currency: String,
}

/// One search request and what it was charged (SPEC §3.8).
#[derive(ToSchema)]
pub struct SearchActivity {
    /// The search activity.
    pub search_activity_id: String,
    /// The query as searched (trimmed).
    pub query_text: String,
    /// The request's datasets, else the distinct datasets of the results (sorted).
    #[schema(schema_with = dataset_ids)]
    pub dataset_ids: Vec<String>,
    /// How many results it returned.
    #[schema(minimum = 0)]
    pub result_count: i64,
    /// Σ charges of its results.
    #[schema(schema_with = openapi::amount)]
    pub charged_amount: f64,
    /// Always `USD`.
    #[schema(pattern = "^USD$")]
    pub currency: String,
    /// The key used, null for a session.
    #[schema(required = true)]
    pub api_key_id: Option<String>,
    /// When it happened.
    #[schema(format = DateTime)]
    pub occurred_at: String,
}

/// A page of search activities.
#[derive(ToSchema)]
pub struct SearchActivityPage {
    /// The searches, newest first.
    pub searches: Vec<SearchActivity>,
    /// All matches.
    #[schema(minimum = 0)]
    pub total: i64,
    /// The next page's cursor, null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

fn dataset_ids() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::schema(json!({ "type": "array", "items": {
        "type": "string", "pattern": openapi::id_pattern("dset") } }))
}

/// One metered access: a billed search result or download (SPEC §3.8).
#[derive(ToSchema)]
pub struct Access {
    /// The access.
    pub access_id: String,
    /// `retrieval` or `download`.
    #[schema(schema_with = access_kind)]
    pub kind: String,
    /// The dataset.
    pub dataset_id: String,
    /// The object.
    pub object_id: String,
    /// The key used, null for a session.
    #[schema(required = true)]
    pub api_key_id: Option<String>,
    /// The search, null for downloads.
    #[schema(required = true)]
    pub search_activity_id: Option<String>,
    /// The charge.
    #[schema(schema_with = openapi::amount)]
    pub charged_amount: f64,
    /// Always `USD`.
    #[schema(pattern = "^USD$")]
    pub currency: String,
    /// When it happened.
    #[schema(format = DateTime)]
    pub occurred_at: String,
}

/// A page of accesses.
#[derive(ToSchema)]
pub struct AccessPage {
    /// The accesses, newest first.
    pub accesses: Vec<Access>,
    /// All matches.
    #[schema(minimum = 0)]
    pub total: i64,
    /// The next page's cursor, null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The buyer's spend over a window.
#[derive(ToSchema)]
pub struct Spend {
    /// Σ charges in the window.
    #[schema(schema_with = openapi::amount)]
    pub total_amount: f64,
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
    pub by_day: Vec<DailyAmount>,
    /// Datasets with accesses in the window, amount desc, then id.
    pub by_dataset: Vec<DatasetAmount>,
}

/// A day's amount.
#[derive(ToSchema)]
pub struct DailyAmount {
    /// The UTC date.
    #[schema(format = Date)]
    pub date: String,
    /// Σ charges that day.
    #[schema(schema_with = openapi::amount)]
    pub amount: f64,
}

/// A dataset's amount.
#[derive(ToSchema)]
pub struct DatasetAmount {
    /// The dataset.
    pub dataset_id: String,
    /// Its name.
    pub dataset_name: String,
    /// Σ charges.
    #[schema(schema_with = openapi::amount)]
    pub amount: f64,
}

fn access_kind() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice("retrieval|download")
}

/// A window end: an RFC 3339 timestamp or a date `YYYY-MM-DD` (SPEC §1.8).
pub fn window_end() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::schema(json!({ "anyOf": [
        { "type": "string", "format": "date-time" },
        { "type": "string", "format": "date" },
    ] }))
}

#[utoipa::path(
    get,
    path = "/v1/buyer/dashboard",
    tag = "buyer",
    summary = "Counts and spend of the tenant as a buyer (usage:read).",
    security(("session" = []), ("api_key" = [])),
    responses((status = 200, description = "The figures.", body = BuyerDashboard))
)]
async fn dashboard(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Response, AppError> {
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
    Ok(envelope::ok(json!({
        "api_key_count": keys,
        "active_api_key_count": active_keys,
        "search_count": searches,
        "access_count": accesses,
        "total_spend": json_number(total),
        "spend_last_30_days": json_number(recent),
        "currency": "USD",
    })))
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
    path = "/v1/agent/activity/searches",
    tag = "buyer",
    summary = "The tenant's search activities, newest first (usage:read).",
    security(("session" = []), ("api_key" = [])),
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
) -> Result<Response, AppError> {
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
    let page = query.page.page(&state.key, &scope, 20, 100)?;
    let after = page.after.as_ref().map(sort_key).transpose()?;
    let (rows, total) = projections::searches::buyer_searches(
        &state.store.db,
        &principal.tenant_id,
        &filter,
        after,
        page.limit,
    )
    .await?;
    let (rows, next) = pagination::finish(rows, &page, &state.key, &scope, |r| {
        json!([r.occurred_at, r.search_activity_id])
    });
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "search_activity_id": r.search_activity_id, "query_text": r.query_text,
                "dataset_ids": r.dataset_ids, "result_count": r.result_count,
                "charged_amount": json_number(r.charged_micros), "currency": "USD",
                "api_key_id": r.api_key_id, "occurred_at": r.occurred_at,
            })
        })
        .collect();
    Ok(envelope::ok(
        json!({ "searches": items, "total": total, "next_cursor": next }),
    ))
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
    path = "/v1/agent/activity/accesses",
    tag = "buyer",
    summary = "The tenant's metered accesses as a buyer, newest first (usage:read).",
    security(("session" = []), ("api_key" = [])),
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
) -> Result<Response, AppError> {
    principal.require(Scope::UsageRead)?;
    let kind = query.kind.filter(|k| !k.is_empty());
    if kind
        .as_deref()
        .is_some_and(|k| k != "retrieval" && k != "download")
    {
        return Err(AppError::field("kind", "must be retrieval or download"));
    }
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
    let page = query.page.page(&state.key, &scope, 20, 100)?;
    let after = page.after.as_ref().map(sort_key).transpose()?;
    let (rows, total) = read::buyer_accesses(
        &state.store.db,
        &principal.tenant_id,
        &filter,
        after,
        page.limit,
    )
    .await?;
    let (rows, next) = pagination::finish(rows, &page, &state.key, &scope, |r| {
        json!([r.occurred_at, r.access_id])
    });
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "access_id": r.access_id, "kind": r.kind, "dataset_id": r.dataset_id, "object_id": r.object_id,
                "api_key_id": r.api_key_id, "search_activity_id": r.search_activity_id,
                "charged_amount": json_number(r.charged_micros), "currency": "USD", "occurred_at": r.occurred_at,
            })
        })
        .collect();
    Ok(envelope::ok(
        json!({ "accesses": items, "total": total, "next_cursor": next }),
    ))
}

/// A time window; by default the last 30 UTC days, today included (SPEC §1.8).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// Start, inclusive (a date = 00:00Z that day).
    #[param(schema_with = window_end)]
    pub from: Option<String>,
    /// End, exclusive (a date = 00:00Z of the next day).
    #[param(schema_with = window_end)]
    pub to: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/agent/spend",
    tag = "buyer",
    summary = "The tenant's spend by day and by dataset over a window (billing:read).",
    security(("session" = []), ("api_key" = [])),
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
) -> Result<Response, AppError> {
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
    let by_day: Vec<Value> = window::dates(from, to)
        .into_iter()
        .map(|date| {
            let amount = days.iter().find(|(d, _)| *d == date).map_or(0, |(_, a)| *a);
            json!({ "date": date, "amount": json_number(amount) })
        })
        .collect();
    let datasets = read::spend_by_dataset(db, &principal.tenant_id, &from_text, &to_text).await?;
    let total = checked_sum(days.iter().map(|(_, a)| *a))
        .ok_or_else(|| AppError::internal("spend total out of range"))?;
    let by_dataset: Vec<Value> = datasets
        .iter()
        .map(|(id, name, amount)| json!({ "dataset_id": id, "dataset_name": name, "amount": json_number(*amount) }))
        .collect();
    Ok(envelope::ok(json!({
        "total_amount": json_number(total), "currency": "USD", "from": from_text, "to": to_text,
        "by_day": by_day, "by_dataset": by_dataset,
    })))
}
