//! Metered accesses: every charge (search retrievals and downloads), for buyers' activity, spend,
//! providers' revenue and dataset analytics.

use aggregates::metering::{AccessKind, Charge, Download, DownloadEvent};
use aggregates::money::{Amount, Limbs, Usd, LIMB, LIMB_BITS};
use aggregates::search::{Search, SearchEvent};
use aggregates::{timestamp, AccessId, DatasetId, ObjectId};
use async_trait::async_trait;
use cqrs_es::Aggregate;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use crate::rows::keyset_start;
use crate::{Db, Projection, ProjectionError, Reads, StoredEvent};

/// The `accesses` table.
pub struct AccessesProjection;

#[async_trait]
impl Projection for AccessesProjection {
    fn name(&self) -> &'static str {
        "accesses"
    }
    fn version(&self) -> i64 {
        2
    }
    fn tables(&self) -> &'static [&'static str] {
        &["accesses"]
    }
    fn reads(&self) -> Reads {
        Reads::Aggregates(&[Download::TYPE, Search::TYPE])
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type == Download::TYPE {
            let DownloadEvent::DownloadCharged(c) = event.decode()?;
            insert(conn, AccessKind::Download, &c, None).await?;
        } else if event.aggregate_type == Search::TYPE {
            let SearchEvent::SearchPerformed(record) = event.decode()?;
            for charge in record.results.iter().filter_map(|r| r.charge.as_ref()) {
                insert(
                    conn,
                    AccessKind::Retrieval,
                    charge,
                    Some(&event.aggregate_id),
                )
                .await?;
            }
        }
        Ok(())
    }
}

async fn insert(
    conn: &mut AnyConnection,
    kind: AccessKind,
    c: &Charge,
    search_activity_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO accesses (access_id, kind, buyer_tenant_id, provider_tenant_id, dataset_id, object_id, \
         api_key_id, search_activity_id, charged_micros, fee_bps, occurred_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&c.access_id)
    .bind(kind.as_str())
    .bind(c.buyer_tenant_id.as_str())
    .bind(c.provider_tenant_id.as_str())
    .bind(c.dataset_id.as_str())
    .bind(c.object_id.as_str())
    .bind(c.api_key_id.clone())
    .bind(search_activity_id.map(str::to_owned))
    .bind(c.amount_micros)
    .bind(i64::from(c.fee_bps))
    .bind(timestamp::format(c.occurred_at))
    .execute(conn)
    .await?;
    Ok(())
}

/// One metered access: a billed search result or download (SPEC §3.8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = Access)]
pub struct AccessRow {
    /// The access.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub access_id: AccessId,
    #[sqlx(try_from = "String")]
    pub kind: AccessKind,
    /// The dataset.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub dataset_id: DatasetId,
    /// The object.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub object_id: ObjectId,
    /// The key used, null for a session.
    #[schema(required = true)]
    pub api_key_id: Option<String>,
    /// The search, null for downloads.
    #[schema(required = true)]
    pub search_activity_id: Option<String>,
    /// The charge.
    #[sqlx(rename = "charged_micros", try_from = "i64")]
    pub charged_amount: Amount,
    /// Always `USD`.
    #[sqlx(skip)]
    pub currency: Usd,
    /// When it happened.
    #[schema(format = DateTime)]
    pub occurred_at: String,
}

/// Filters of the buyer's access listing.
#[derive(Clone, Debug, Default)]
pub struct AccessFilter {
    pub api_key_id: Option<String>,
    pub kind: Option<String>,
    pub dataset_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

const ACCESS_WHERE: &str = "WHERE buyer_tenant_id = $1 AND ($2 = '' OR api_key_id = $2) AND ($3 = '' OR kind = $3) \
     AND ($4 = '' OR dataset_id = $4) AND ($5 = '' OR occurred_at >= $5) AND ($6 = '' OR occurred_at < $6)";

/// A buyer tenant's accesses, newest first, and how many match in all.
pub async fn buyer_accesses(
    db: &Db,
    tenant_id: &str,
    filter: &AccessFilter,
    after: Option<&(String, String)>,
    fetch: usize,
) -> Result<(Vec<AccessRow>, i64), sqlx::Error> {
    let (after_at, after_id) = keyset_start(after);
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let items = sqlx::query_as(&format!(
        "SELECT access_id, kind, dataset_id, object_id, api_key_id, search_activity_id, charged_micros, occurred_at \
         FROM accesses {ACCESS_WHERE} AND (occurred_at < $7 OR (occurred_at = $7 AND access_id < $8)) \
         ORDER BY occurred_at DESC, access_id DESC LIMIT $9"
    ))
    .bind(tenant_id)
    .bind(text(&filter.api_key_id))
    .bind(text(&filter.kind))
    .bind(text(&filter.dataset_id))
    .bind(text(&filter.from))
    .bind(text(&filter.to))
    .bind(after_at)
    .bind(after_id)
    .bind(fetch as i64)
    .fetch_all(&db.pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM accesses {ACCESS_WHERE}"))
        .bind(tenant_id)
        .bind(text(&filter.api_key_id))
        .bind(text(&filter.kind))
        .bind(text(&filter.dataset_id))
        .bind(text(&filter.from))
        .bind(text(&filter.to))
        .fetch_one(&db.pool)
        .await?;
    Ok((items, total))
}

/// The select list of an exact sum of the non-negative BIGINT `expr` over a group: three sums of
/// its 21-bit limbs, `{alias}_l2`, `{alias}_l1`, `{alias}_l0` (see [`Limbs`]), each of which fits
/// a BIGINT on both stores where the plain `SUM(expr)` would not. Read it with [`limb_sum`].
pub(crate) fn limb_sums(expr: &str, alias: &str) -> String {
    let (low, high) = (LIMB, 1i64 << (2 * LIMB_BITS));
    format!(
        "CAST(COALESCE(SUM(({expr}) / {high}), 0) AS BIGINT) AS {alias}_l2, \
         CAST(COALESCE(SUM((({expr}) / {low}) % {low}), 0) AS BIGINT) AS {alias}_l1, \
         CAST(COALESCE(SUM(({expr}) % {low}), 0) AS BIGINT) AS {alias}_l0"
    )
}

/// The exact value of the limb columns `{alias}_l2`, `_l1`, `_l0` of a row.
pub(crate) fn limb_sum(row: &AnyRow, alias: &str) -> Result<i128, sqlx::Error> {
    Ok(Limbs([
        row.try_get(format!("{alias}_l2").as_str())?,
        row.try_get(format!("{alias}_l1").as_str())?,
        row.try_get(format!("{alias}_l0").as_str())?,
    ])
    .total())
}

/// Sums of a tenant's charges as buyer (`buyer_tenant_id`) or provider (`provider_tenant_id`), in
/// micro-USD: all time, and since `since`, in one query.
pub async fn totals(
    db: &Db,
    side: Side,
    tenant_id: &str,
    since: &str,
) -> Result<(i128, i128), sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {}, {} FROM accesses WHERE {} = $1",
        limb_sums("charged_micros", "total"),
        limb_sums(
            "CASE WHEN occurred_at >= $2 THEN charged_micros ELSE 0 END",
            "recent"
        ),
        side.column()
    ))
    .bind(tenant_id)
    .bind(since)
    .fetch_one(&db.pool)
    .await?;
    Ok((limb_sum(&row, "total")?, limb_sum(&row, "recent")?))
}

/// Which side of a charge a tenant is on.
#[derive(Clone, Copy, Debug)]
pub enum Side {
    Buyer,
    Provider,
}

impl Side {
    fn column(self) -> &'static str {
        match self {
            Side::Buyer => "buyer_tenant_id",
            Side::Provider => "provider_tenant_id",
        }
    }
}

/// A buyer's spend per UTC date (`YYYY-MM-DD`) in `[from, to)`, days with charges only.
pub async fn spend_by_day(
    db: &Db,
    tenant_id: &str,
    from: &str,
    to: &str,
) -> Result<Vec<(String, i128)>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT SUBSTR(occurred_at, 1, 10) AS day, {} FROM accesses \
         WHERE buyer_tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3 \
         GROUP BY SUBSTR(occurred_at, 1, 10) ORDER BY day",
        limb_sums("charged_micros", "amount")
    ))
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("day")?, limb_sum(r, "amount")?)))
        .collect()
}

/// A buyer's spend per dataset in `[from, to)`: `(dataset_id, dataset_name, amount)`, amount desc
/// then id (sorted here: SQL cannot order by an exact sum it only holds in limbs).
pub async fn spend_by_dataset(
    db: &Db,
    tenant_id: &str,
    from: &str,
    to: &str,
) -> Result<Vec<(String, String, i128)>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT a.dataset_id, COALESCE(MAX(d.name), '') AS dataset_name, {} \
         FROM accesses a LEFT JOIN datasets d ON d.dataset_id = a.dataset_id \
         WHERE a.buyer_tenant_id = $1 AND a.occurred_at >= $2 AND a.occurred_at < $3 \
         GROUP BY a.dataset_id",
        limb_sums("a.charged_micros", "amount")
    ))
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .fetch_all(&db.pool)
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get("dataset_id")?,
                r.try_get("dataset_name")?,
                limb_sum(r, "amount")?,
            ))
        })
        .collect::<Result<Vec<(String, String, i128)>, sqlx::Error>>()?;
    out.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
}

/// How many accesses a buyer tenant has, all time.
pub async fn buyer_count(db: &Db, tenant_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM accesses WHERE buyer_tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(&db.pool)
        .await
}

/// A dataset's accesses in `[from, to)`, as its analytics report them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatasetUsage {
    pub retrievals: i64,
    pub downloads: i64,
    pub unique_buyers: i64,
    pub gross_micros: i128,
    /// Σ amount × fee bps, from which the fee is rounded once.
    pub fee_basis: i128,
}

/// Totals of a dataset's accesses in `[from, to)`.
pub async fn dataset_usage(
    db: &Db,
    dataset_id: &str,
    from: &str,
    to: &str,
) -> Result<DatasetUsage, sqlx::Error> {
    // A charge's fee basis is below 2^58 (commands bound the amount), so the product fits a row.
    let row = sqlx::query(&format!(
        "SELECT CAST(COALESCE(SUM(CASE WHEN kind = 'retrieval' THEN 1 ELSE 0 END), 0) AS BIGINT) AS retrievals, \
         CAST(COALESCE(SUM(CASE WHEN kind = 'download' THEN 1 ELSE 0 END), 0) AS BIGINT) AS downloads, \
         COUNT(DISTINCT buyer_tenant_id) AS unique_buyers, {}, {} \
         FROM accesses WHERE dataset_id = $1 AND occurred_at >= $2 AND occurred_at < $3",
        limb_sums("charged_micros", "gross"),
        limb_sums("charged_micros * fee_bps", "fee_basis"),
    ))
    .bind(dataset_id)
    .bind(from)
    .bind(to)
    .fetch_one(&db.pool)
    .await?;
    Ok(DatasetUsage {
        retrievals: row.try_get("retrievals")?,
        downloads: row.try_get("downloads")?,
        unique_buyers: row.try_get("unique_buyers")?,
        gross_micros: limb_sum(&row, "gross")?,
        fee_basis: limb_sum(&row, "fee_basis")?,
    })
}

/// A dataset's accesses per UTC date in `[from, to)`: `(date, retrievals, downloads, gross)`,
/// days with accesses only.
pub async fn dataset_daily(
    db: &Db,
    dataset_id: &str,
    from: &str,
    to: &str,
) -> Result<Vec<(String, i64, i64, i128)>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT SUBSTR(occurred_at, 1, 10) AS day, \
         CAST(SUM(CASE WHEN kind = 'retrieval' THEN 1 ELSE 0 END) AS BIGINT) AS retrievals, \
         CAST(SUM(CASE WHEN kind = 'download' THEN 1 ELSE 0 END) AS BIGINT) AS downloads, {} \
         FROM accesses WHERE dataset_id = $1 AND occurred_at >= $2 AND occurred_at < $3 \
         GROUP BY SUBSTR(occurred_at, 1, 10) ORDER BY day",
        limb_sums("charged_micros", "gross")
    ))
    .bind(dataset_id)
    .bind(from)
    .bind(to)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("day")?,
                r.try_get("retrievals")?,
                r.try_get("downloads")?,
                limb_sum(r, "gross")?,
            ))
        })
        .collect()
}
