//! Payout statements: each charge lands in its provider's statement for the UTC month of the
//! charge; an admin's `PayoutStatementPaid` sets `paid_at`.

use aggregates::metering::{Charge, Download, DownloadEvent};
use aggregates::money::Limbs;
use aggregates::payout::StatementStatus;
use aggregates::payout::{month_of, statement_id, Earnings, PayoutEvent, PayoutStatement};
use aggregates::search::{Search, SearchEvent};
use aggregates::timestamp;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde::Serialize;
use sha2::Digest;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::accesses::limb_sum;
use crate::rows::keyset_start;
use crate::{Db, Projection, ProjectionError, Reads, StoredEvent};

/// The statement id of a provider's month (stable across rebuilds).
pub fn statement_for(tenant_id: &str, at: DateTime<Utc>) -> (String, DateTime<Utc>, DateTime<Utc>) {
    let (start, end) = month_of(at);
    let id = statement_id(tenant_id, start, |bytes| sha2::Sha256::digest(bytes).into());
    (id, start, end)
}

/// The `payout_statements` table.
pub struct PayoutsProjection;

#[async_trait]
impl Projection for PayoutsProjection {
    fn name(&self) -> &'static str {
        "payouts"
    }
    fn version(&self) -> i64 {
        // 3: sums kept as limbs (migration 0013), rebuilt from the log.
        3
    }
    fn tables(&self) -> &'static [&'static str] {
        &["payout_statements"]
    }
    fn reads(&self) -> Reads {
        Reads::Aggregates(&[Download::TYPE, Search::TYPE, PayoutStatement::TYPE])
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type == Download::TYPE {
            let DownloadEvent::DownloadCharged(c) = event.decode()?;
            add_charge(conn, &c).await?;
        } else if event.aggregate_type == Search::TYPE {
            let SearchEvent::SearchPerformed(record) = event.decode()?;
            for charge in record.results.iter().filter_map(|r| r.charge.as_ref()) {
                add_charge(conn, charge).await?;
            }
        } else if event.aggregate_type == PayoutStatement::TYPE {
            let PayoutEvent::PayoutStatementPaid { paid_at } = event.decode()?;
            let changed =
                sqlx::query("UPDATE payout_statements SET paid_at = $1 WHERE statement_id = $2")
                    .bind(timestamp::format(paid_at))
                    .bind(&event.aggregate_id)
                    .execute(conn)
                    .await?;
            if changed.rows_affected() != 1 {
                return Err(ProjectionError::Inconsistent(format!(
                    "no statement {}",
                    event.aggregate_id
                )));
            }
        }
        Ok(())
    }
}

/// Adds one charge to its provider's statement for the month, creating the statement. The gross
/// and the fee basis grow by the limbs of the charge's amount and `amount × bps` (see
/// [`Limbs`]): no client can drive a statement's sums out of range.
async fn add_charge(conn: &mut AnyConnection, c: &Charge) -> Result<(), ProjectionError> {
    let (id, start, end) = statement_for(c.provider_tenant_id.as_str(), c.occurred_at);
    // Commands refuse charges over MAX_CHARGE_MICROS, so both terms are far below 2^63.
    let out_of_range =
        || ProjectionError::Inconsistent(format!("charge {} out of range", c.access_id));
    let Limbs([g2, g1, g0]) = Limbs::of(c.amount_micros.into()).ok_or_else(out_of_range)?;
    let Limbs([f2, f1, f0]) = Limbs::of(c.fee_basis()).ok_or_else(out_of_range)?;
    sqlx::query(
        "INSERT INTO payout_statements (statement_id, tenant_id, period_start, period_end, \
         gross_l2, gross_l1, gross_l0, fee_basis_l2, fee_basis_l1, fee_basis_l0, line_count) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1) \
         ON CONFLICT (statement_id) DO UPDATE SET \
         gross_l2 = payout_statements.gross_l2 + excluded.gross_l2, \
         gross_l1 = payout_statements.gross_l1 + excluded.gross_l1, \
         gross_l0 = payout_statements.gross_l0 + excluded.gross_l0, \
         fee_basis_l2 = payout_statements.fee_basis_l2 + excluded.fee_basis_l2, \
         fee_basis_l1 = payout_statements.fee_basis_l1 + excluded.fee_basis_l1, \
         fee_basis_l0 = payout_statements.fee_basis_l0 + excluded.fee_basis_l0, \
         line_count = payout_statements.line_count + 1",
    )
    .bind(&id)
    .bind(c.provider_tenant_id.as_str())
    .bind(timestamp::format(start))
    .bind(timestamp::format(end))
    .bind(g2)
    .bind(g1)
    .bind(g0)
    .bind(f2)
    .bind(f1)
    .bind(f0)
    .execute(conn)
    .await?;
    Ok(())
}

/// A statement as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatementRow {
    pub statement_id: String,
    pub tenant_id: String,
    pub tenant_name: String,
    pub period_start: String,
    pub period_end: String,
    /// Gross, fee and net in micro-USD, exact.
    pub earnings: Earnings,
    pub line_count: i64,
    pub paid_at: Option<String>,
}

impl StatementRow {
    /// `open` until the period ends, then `pending`, then `paid`.
    pub fn status(&self, now: &str) -> StatementStatus {
        if self.paid_at.is_some() {
            StatementStatus::Paid
        } else if now < self.period_end.as_str() {
            StatementStatus::Open
        } else {
            StatementStatus::Pending
        }
    }
}

const STATEMENT_SELECT: &str =
    "SELECT s.statement_id, s.tenant_id, COALESCE(t.name, '') AS tenant_name, s.period_start, \
     s.period_end, s.gross_l2, s.gross_l1, s.gross_l0, s.fee_basis_l2, s.fee_basis_l1, s.fee_basis_l0, \
     s.line_count, s.paid_at \
     FROM payout_statements s LEFT JOIN tenants t ON t.tenant_id = s.tenant_id";

fn statement_row(row: &AnyRow) -> Result<StatementRow, sqlx::Error> {
    Ok(StatementRow {
        statement_id: row.try_get("statement_id")?,
        tenant_id: row.try_get("tenant_id")?,
        tenant_name: row.try_get("tenant_name")?,
        period_start: row.try_get("period_start")?,
        period_end: row.try_get("period_end")?,
        earnings: Earnings::of(limb_sum(row, "gross")?, limb_sum(row, "fee_basis")?),
        line_count: row.try_get("line_count")?,
        paid_at: row.try_get("paid_at")?,
    })
}

/// One statement.
pub async fn statement(db: &Db, statement_id: &str) -> Result<Option<StatementRow>, sqlx::Error> {
    let row = sqlx::query(&format!("{STATEMENT_SELECT} WHERE s.statement_id = $1"))
        .bind(statement_id)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(statement_row).transpose()
}

/// Statements, newest period first (ties by id), optionally one tenant's; `after` is the previous
/// page's last `(period_start, statement_id)`. Fetches `limit + 1` rows. Status filters apply after.
pub async fn statements(
    db: &Db,
    tenant_id: Option<&str>,
    after: Option<&(String, String)>,
    fetch: usize,
) -> Result<Vec<StatementRow>, sqlx::Error> {
    let (after_at, after_id) = keyset_start(after);
    let rows = sqlx::query(&format!(
        "{STATEMENT_SELECT} WHERE ($1 = '' OR s.tenant_id = $1) \
         AND (s.period_start < $2 OR (s.period_start = $2 AND s.statement_id < $3)) \
         ORDER BY s.period_start DESC, s.statement_id DESC LIMIT $4"
    ))
    .bind(tenant_id.unwrap_or(""))
    .bind(after_at)
    .bind(after_id)
    .bind(fetch as i64)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(statement_row).collect()
}

/// Statements in a status at `now` (for the admin's filter), same order and paging.
pub async fn statements_in_status(
    db: &Db,
    tenant_id: Option<&str>,
    status: StatementStatus,
    now: &str,
    after: Option<&(String, String)>,
    fetch: usize,
) -> Result<Vec<StatementRow>, sqlx::Error> {
    let condition = match status {
        StatementStatus::Paid => "s.paid_at IS NOT NULL",
        StatementStatus::Open => "s.paid_at IS NULL AND s.period_end > $5",
        StatementStatus::Pending => "s.paid_at IS NULL AND s.period_end <= $5",
    };
    let (after_at, after_id) = keyset_start(after);
    let rows = sqlx::query(&format!(
        "{STATEMENT_SELECT} WHERE ($1 = '' OR s.tenant_id = $1) AND ($5 = $5) AND {condition} \
         AND (s.period_start < $2 OR (s.period_start = $2 AND s.statement_id < $3)) \
         ORDER BY s.period_start DESC, s.statement_id DESC LIMIT $4"
    ))
    .bind(tenant_id.unwrap_or(""))
    .bind(after_at)
    .bind(after_id)
    .bind(fetch as i64)
    .bind(now)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(statement_row).collect()
}
