//! Payout statements: the provider's list, the admins' list and mark-paid (SPEC §3.7, §3.13).

use aggregates::money::{Total, Usd};
use aggregates::payout::{PayoutCommand, PayoutError, PayoutStatement, StatementStatus};
use aggregates::Scope;
use axum::extract::State;
use projections::payouts::{self as read, StatementRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::http::envelope::Envelope;
use crate::http::extract::{Auth, Path, Query};
use crate::http::pagination::{filter, Keyset, Page, PageQuery};
use crate::openapi;
use crate::state::AppState;

/// Routes under `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(provider_list))
        .routes(routes!(admin_list))
        .routes(routes!(mark_paid))
}

/// A provider's monthly payout statement (SPEC §3.7, §5.6).
#[derive(Serialize, ToSchema)]
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
    pub gross_amount: Total,
    /// The platform's share.
    pub platform_fee: Total,
    /// Gross − fee.
    pub net_amount: Total,
    /// Always `USD`.
    pub currency: Usd,
    pub status: StatementStatus,
    /// Number of charges.
    #[schema(minimum = 0)]
    pub line_count: i64,
    /// When it was marked paid.
    #[schema(required = true, format = DateTime)]
    pub paid_at: Option<String>,
}

impl StatementView {
    /// The statement as `row` holds it, its status at `now`.
    fn new(row: StatementRow, now: &str) -> Self {
        Self {
            status: row.status(now),
            statement_id: row.statement_id,
            tenant_id: row.tenant_id,
            period_start: row.period_start,
            period_end: row.period_end,
            gross_amount: Total::from_micros(row.earnings.gross),
            platform_fee: Total::from_micros(row.earnings.fee),
            net_amount: Total::from_micros(row.earnings.net),
            currency: Usd,
            line_count: row.line_count,
            paid_at: row.paid_at,
        }
    }
}

/// A payout statement with its tenant's name (admin list).
#[derive(Serialize, ToSchema)]
pub struct AdminStatement {
    #[serde(flatten)]
    pub statement: StatementView,
    /// The provider tenant's name.
    pub tenant_name: String,
}

fn statement_status() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice(StatementStatus::EXPECTED)
}

/// The keyset of statement lists: newest period first, then by id.
fn newest_period_first(row: &StatementRow) -> (String, String) {
    (row.period_start.clone(), row.statement_id.clone())
}

fn now(state: &AppState) -> String {
    aggregates::timestamp::format(state.store.clock.now())
}

#[utoipa::path(
    get,
    path = "/provider/payouts",
    tag = "provider",
    summary = "The tenant's payout statements, newest period first (billing:read).",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of statements, newest period first.", body = Page<StatementView>),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 422, description = "limit is invalid."),
    )
)]
async fn provider_list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<PageQuery>,
) -> Result<Envelope<Page<StatementView>>, AppError> {
    principal.require(Scope::BillingRead)?;
    let keyset = Keyset::open(&state.key, &query, "provider-payouts".to_owned())?;
    let tenant = Some(principal.tenant_id.as_str());
    let rows = read::statements(&state.store.db, tenant, keyset.after(), keyset.fetch()).await?;
    let now = now(&state);
    let item = |r| StatementView::new(r, &now);
    Ok(Envelope::ok(keyset.page(rows, newest_period_first, item)))
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
    path = "/admin/payouts",
    summary = "Payout statements of all tenants, newest period first (platform-admin session).",
    security(("session" = [])),
    params(AdminQuery, PageQuery),
    responses(
        (status = 200, description = "A page of statements, newest period first.", body = Page<AdminStatement>),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 422, description = "status or limit is invalid."),
    )
)]
async fn admin_list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<AdminQuery>,
) -> Result<Envelope<Page<AdminStatement>>, AppError> {
    principal.require_platform_admin()?;
    let status = filter("status", query.status, StatementStatus::EXPECTED)?;
    let tenant = query.tenant_id.filter(|t| !t.is_empty());
    let scope = format!(
        "admin-payouts?status={}&tenant={}",
        status.unwrap_or(""),
        tenant.as_deref().unwrap_or("")
    );
    let keyset = Keyset::open(&state.key, &query.page, scope)?;
    let now = now(&state);
    let db = &state.store.db;
    let (after, fetch) = (keyset.after(), keyset.fetch());
    let rows = match status.and_then(StatementStatus::parse) {
        Some(status) => {
            read::statements_in_status(db, tenant.as_deref(), status, &now, after, fetch).await?
        }
        None => read::statements(db, tenant.as_deref(), after, fetch).await?,
    };
    Ok(Envelope::ok(keyset.page(rows, newest_period_first, |r| {
        AdminStatement {
            tenant_name: r.tenant_name.clone(),
            statement: StatementView::new(r, &now),
        }
    })))
}

#[utoipa::path(
    post,
    path = "/admin/payouts/{statement_id}/mark-paid",
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
) -> Result<Envelope<StatementView>, AppError> {
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
        .run::<PayoutStatement>(&statement_id, command, &principal)
        .await?;
    state.store.settle_request().await;
    let row = read::statement(&state.store.db, &statement_id)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(Envelope::ok(StatementView::new(row, &now(&state))))
}

impl From<PayoutError> for AppError {
    fn from(error: PayoutError) -> Self {
        match error {
            PayoutError::Open => AppError::InvalidState("open".into()),
            PayoutError::Paid => AppError::InvalidState("paid".into()),
        }
    }
}
