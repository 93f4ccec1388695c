//! Payout statements: the provider's list, the admins' list and mark-paid (SPEC §3.7, §3.13).

use crate::http::routes::Routes;
use aggregates::money::json_number;
use aggregates::payout::{PayoutCommand, PayoutError, PayoutStatement};
use aggregates::Scope;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use projections::payouts::{self as read, StatementRow};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::app::AppState;
use crate::http::datasets::sort_key;
use crate::http::envelope;
use crate::http::error::AppError;
use crate::http::extract::{Auth, Path, Query};
use crate::http::openapi;
use crate::http::pagination::{self, PageQuery};

/// Routes under `/v1`.
pub fn routes() -> Routes {
    Routes::new()
        .route("/provider/payouts", get(provider_list))
        .route("/admin/payouts", get(admin_list))
        .route("/admin/payouts/{statement_id}/mark-paid", post(mark_paid))
}

/// The operations of this module, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(provider_list, admin_list, mark_paid))]
pub struct Api;

/// A provider's monthly payout statement (SPEC §3.7, §5.6).
#[derive(ToSchema)]
#[schema(as = PayoutStatement)]
pub struct StatementView {
    /// The statement.
    pub statement_id: String,
    /// The provider tenant.
    pub tenant_id: String,
    /// The month's first instant (inclusive).
    #[schema(format = DateTime)]
    pub period_start: String,
    /// The next month's first instant (exclusive).
    #[schema(format = DateTime)]
    pub period_end: String,
    /// Σ charges.
    #[schema(schema_with = openapi::amount)]
    pub gross_amount: f64,
    /// The platform's share.
    #[schema(schema_with = openapi::amount)]
    pub platform_fee: f64,
    /// Gross − fee.
    #[schema(schema_with = openapi::amount)]
    pub net_amount: f64,
    /// Always `USD`.
    #[schema(pattern = "^USD$")]
    pub currency: String,
    /// `open`, `pending` or `paid`.
    #[schema(schema_with = statement_status)]
    pub status: String,
    /// Number of charges.
    #[schema(minimum = 0)]
    pub line_count: i64,
    /// When it was marked paid.
    #[schema(required = true, format = DateTime)]
    pub paid_at: Option<String>,
}

/// A payout statement with its tenant's name (admin list).
#[derive(ToSchema)]
pub struct AdminStatement {
    /// The statement.
    pub statement_id: String,
    /// The provider tenant.
    pub tenant_id: String,
    /// The provider tenant's name.
    pub tenant_name: String,
    /// The month's first instant (inclusive).
    #[schema(format = DateTime)]
    pub period_start: String,
    /// The next month's first instant (exclusive).
    #[schema(format = DateTime)]
    pub period_end: String,
    /// Σ charges.
    #[schema(schema_with = openapi::amount)]
    pub gross_amount: f64,
    /// The platform's share.
    #[schema(schema_with = openapi::amount)]
    pub platform_fee: f64,
    /// Gross − fee.
    #[schema(schema_with = openapi::amount)]
    pub net_amount: f64,
    /// Always `USD`.
    #[schema(pattern = "^USD$")]
    pub currency: String,
    /// `open`, `pending` or `paid`.
    #[schema(schema_with = statement_status)]
    pub status: String,
    /// Number of charges.
    #[schema(minimum = 0)]
    pub line_count: i64,
    /// When it was marked paid.
    #[schema(required = true, format = DateTime)]
    pub paid_at: Option<String>,
}

/// A page of statements.
#[derive(ToSchema)]
pub struct StatementPage {
    /// The statements, newest period first.
    pub items: Vec<StatementView>,
    /// The next page's cursor, null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A page of statements of all tenants.
#[derive(ToSchema)]
pub struct AdminStatementPage {
    /// The statements, newest period first.
    pub items: Vec<AdminStatement>,
    /// The next page's cursor, null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

fn statement_status() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice("open|pending|paid")
}

fn statement_json(row: &StatementRow, now: &str) -> Value {
    json!({
        "statement_id": row.statement_id,
        "tenant_id": row.tenant_id,
        "period_start": row.period_start,
        "period_end": row.period_end,
        "gross_amount": json_number(row.earnings.gross),
        "platform_fee": json_number(row.earnings.fee),
        "net_amount": json_number(row.earnings.net),
        "currency": "USD",
        "status": row.status(now),
        "line_count": row.line_count,
        "paid_at": row.paid_at,
    })
}

fn now(state: &AppState) -> String {
    aggregates::timestamp::format(state.store.clock.now())
}

#[utoipa::path(
    get,
    path = "/v1/provider/payouts",
    tag = "provider",
    summary = "The tenant's payout statements, newest period first (billing:read).",
    security(("session" = []), ("api_key" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of statements.", body = StatementPage),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 422, description = "limit is invalid."),
    )
)]
async fn provider_list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<PageQuery>,
) -> Result<Response, AppError> {
    principal.require(Scope::BillingRead)?;
    let scope = "provider-payouts";
    let page = query.page(&state.key, scope, 20, 100)?;
    let after = page.after.as_ref().map(sort_key).transpose()?;
    let rows = read::statements(
        &state.store.db,
        Some(&principal.tenant_id),
        after,
        page.limit,
    )
    .await?;
    let (rows, next) = pagination::finish(rows, &page, &state.key, scope, |r| {
        json!([r.period_start, r.statement_id])
    });
    let now = now(&state);
    let items: Vec<Value> = rows.iter().map(|r| statement_json(r, &now)).collect();
    Ok(envelope::ok(json!({ "items": items, "next_cursor": next })))
}

/// The filters of the admin statement list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AdminQuery {
    /// Only statements in this status.
    #[param(schema_with = statement_status)]
    status: Option<String>,
    /// Only this tenant's statements.
    tenant_id: Option<String>,
    #[param(ignore)]
    #[serde(flatten)]
    page: PageQuery,
}

#[utoipa::path(
    get,
    path = "/v1/admin/payouts",
    tag = "admin",
    summary = "Payout statements of all tenants, newest period first (platform-admin session).",
    security(("session" = [])),
    params(AdminQuery, PageQuery),
    responses(
        (status = 200, description = "A page of statements.", body = AdminStatementPage),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 422, description = "status or limit is invalid."),
    )
)]
async fn admin_list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<AdminQuery>,
) -> Result<Response, AppError> {
    principal.require_platform_admin()?;
    let status = query.status.filter(|s| !s.is_empty());
    if status
        .as_deref()
        .is_some_and(|s| !["open", "pending", "paid"].contains(&s))
    {
        return Err(AppError::field(
            "status",
            "must be one of open|pending|paid",
        ));
    }
    let tenant = query.tenant_id.filter(|t| !t.is_empty());
    let scope = format!(
        "admin-payouts?status={}&tenant={}",
        status.as_deref().unwrap_or(""),
        tenant.as_deref().unwrap_or("")
    );
    let page = query.page.page(&state.key, &scope, 20, 100)?;
    let after = page.after.as_ref().map(sort_key).transpose()?;
    let now = now(&state);
    let rows = match &status {
        Some(status) => {
            read::statements_in_status(
                &state.store.db,
                tenant.as_deref(),
                status,
                &now,
                after,
                page.limit,
            )
            .await?
        }
        None => read::statements(&state.store.db, tenant.as_deref(), after, page.limit).await?,
    };
    let (rows, next) = pagination::finish(rows, &page, &state.key, &scope, |r| {
        json!([r.period_start, r.statement_id])
    });
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut item = statement_json(r, &now);
            item["tenant_name"] = json!(r.tenant_name);
            item
        })
        .collect();
    Ok(envelope::ok(json!({ "items": items, "next_cursor": next })))
}

#[utoipa::path(
    post,
    path = "/v1/admin/payouts/{statement_id}/mark-paid",
    tag = "admin",
    summary = "Marks a pending statement paid (platform-admin session).",
    security(("session" = [])),
    params(("statement_id" = String, Path, description = "The statement.")),
    responses(
        (status = 200, description = "The statement, paid.", body = StatementView),
        (status = 404, description = "Unknown statement."),
        (status = 409, description = "The statement is open or already paid (invalid_state)."),
    )
)]
async fn mark_paid(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(statement_id): Path<String>,
) -> Result<Response, AppError> {
    principal.require_platform_admin()?;
    let row = read::statement(&state.store.db, &statement_id)
        .await?
        .ok_or(AppError::NotFound)?;
    let period_end = aggregates::timestamp::parse(&row.period_end)
        .ok_or_else(|| AppError::internal("bad period end"))?;
    let command = PayoutCommand::MarkPaid {
        period_end,
        at: state.store.clock.now(),
    };
    state
        .store
        .execute::<PayoutStatement>(&statement_id, command, &(), &principal.actor())
        .await?;
    state.store.settle_request().await;
    let row = read::statement(&state.store.db, &statement_id)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(envelope::ok(statement_json(&row, &now(&state))))
}

impl From<PayoutError> for AppError {
    fn from(error: PayoutError) -> Self {
        match error {
            PayoutError::Open => AppError::InvalidState("open".into()),
            PayoutError::Paid => AppError::InvalidState("paid".into()),
        }
    }
}
