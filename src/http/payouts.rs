//! Payout statements: the provider's list, the admins' list and mark-paid (SPEC §3.7, §3.13).

use aggregates::money::json_number;
use aggregates::payout::{PayoutCommand, PayoutError, PayoutStatement};
use aggregates::Scope;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use projections::payouts::{self as read, StatementRow};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::http::datasets::sort_key;
use crate::http::envelope;
use crate::http::error::AppError;
use crate::http::extract::{Auth, Path, Query};
use crate::http::pagination::{self, PageQuery};

/// Routes under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/provider/payouts", get(provider_list))
        .route("/admin/payouts", get(admin_list))
        .route("/admin/payouts/{statement_id}/mark-paid", post(mark_paid))
}

fn statement_json(row: &StatementRow, now: &str) -> Value {
    json!({
        "statement_id": row.statement_id,
        "tenant_id": row.tenant_id,
        "period_start": row.period_start,
        "period_end": row.period_end,
        "gross_amount": json_number(row.gross_micros),
        "platform_fee": json_number(row.fee_micros),
        "net_amount": json_number(row.gross_micros - row.fee_micros),
        "currency": "USD",
        "status": row.status(now),
        "line_count": row.line_count,
        "paid_at": row.paid_at,
    })
}

fn now(state: &AppState) -> String {
    aggregates::timestamp::format(state.store.clock.now())
}

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

#[derive(Deserialize)]
struct AdminQuery {
    status: Option<String>,
    tenant_id: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

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
