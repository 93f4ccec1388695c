//! Metered accesses: every charge (search retrievals and downloads), for buyers' activity, spend,
//! providers' revenue and dataset analytics.

use aggregates::metering::{Charge, Download, DownloadEvent};
use aggregates::search::{Search, SearchEvent};
use aggregates::timestamp;
use async_trait::async_trait;
use cqrs_es::Aggregate;
use serde::Serialize;
use sqlx::{AnyConnection, Row};

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
            insert(conn, "download", &c, None).await?;
        } else if event.aggregate_type == Search::TYPE {
            let SearchEvent::SearchPerformed(record) = event.decode()?;
            for charge in record.results.iter().filter_map(|r| r.charge.as_ref()) {
                insert(conn, "retrieval", charge, Some(&event.aggregate_id)).await?;
            }
        }
        Ok(())
    }
}

async fn insert(
    conn: &mut AnyConnection,
    kind: &str,
    c: &Charge,
    search_activity_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO accesses (access_id, kind, buyer_tenant_id, provider_tenant_id, dataset_id, object_id, \
         api_key_id, search_activity_id, charged_micros, fee_bps, occurred_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&c.access_id)
    .bind(kind)
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

/// An access as buyers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccessRow {
    pub access_id: String,
    pub kind: String,
    pub dataset_id: String,
    pub object_id: String,
    pub api_key_id: Option<String>,
    pub search_activity_id: Option<String>,
    pub charged_micros: i64,
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
    after: Option<(String, String)>,
    limit: usize,
) -> Result<(Vec<AccessRow>, i64), sqlx::Error> {
    let (after_at, after_id) = after.unwrap_or_else(|| ("~".into(), "~".into()));
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let rows = sqlx::query(&format!(
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
    .bind(limit as i64 + 1)
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
    let items = rows
        .iter()
        .map(|r| {
            Ok(AccessRow {
                access_id: r.try_get("access_id")?,
                kind: r.try_get("kind")?,
                dataset_id: r.try_get("dataset_id")?,
                object_id: r.try_get("object_id")?,
                api_key_id: r.try_get("api_key_id")?,
                search_activity_id: r.try_get("search_activity_id")?,
                charged_micros: r.try_get("charged_micros")?,
                occurred_at: r.try_get("occurred_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok((items, total))
}

/// Sums of a tenant's charges as buyer (`buyer_tenant_id`) or provider (`provider_tenant_id`), in
/// micro-USD: all time, and since `since`, in one query.
pub async fn totals(
    db: &Db,
    side: Side,
    tenant_id: &str,
    since: &str,
) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT CAST(COALESCE(SUM(charged_micros), 0) AS BIGINT) AS total, \
         CAST(COALESCE(SUM(CASE WHEN occurred_at >= $2 THEN charged_micros ELSE 0 END), 0) AS BIGINT) AS recent \
         FROM accesses WHERE {} = $1",
        side.column()
    ))
    .bind(tenant_id)
    .bind(since)
    .fetch_one(&db.pool)
    .await?;
    Ok((row.try_get("total")?, row.try_get("recent")?))
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
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT SUBSTR(occurred_at, 1, 10) AS day, CAST(SUM(charged_micros) AS BIGINT) AS amount FROM accesses \
         WHERE buyer_tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3 \
         GROUP BY SUBSTR(occurred_at, 1, 10) ORDER BY day",
    )
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("day")?, r.try_get("amount")?)))
        .collect()
}

/// A buyer's spend per dataset in `[from, to)`: `(dataset_id, dataset_name, amount)`, amount desc
/// then id.
pub async fn spend_by_dataset(
    db: &Db,
    tenant_id: &str,
    from: &str,
    to: &str,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT a.dataset_id, COALESCE(MAX(d.name), '') AS dataset_name, CAST(SUM(a.charged_micros) AS BIGINT) AS amount \
         FROM accesses a LEFT JOIN datasets d ON d.dataset_id = a.dataset_id \
         WHERE a.buyer_tenant_id = $1 AND a.occurred_at >= $2 AND a.occurred_at < $3 \
         GROUP BY a.dataset_id ORDER BY amount DESC, a.dataset_id",
    )
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("dataset_id")?,
                r.try_get("dataset_name")?,
                r.try_get("amount")?,
            ))
        })
        .collect()
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
    pub gross_micros: i64,
    /// Σ amount × fee bps, from which the fee is rounded once.
    pub fee_basis: i64,
}

/// Totals of a dataset's accesses in `[from, to)`.
pub async fn dataset_usage(
    db: &Db,
    dataset_id: &str,
    from: &str,
    to: &str,
) -> Result<DatasetUsage, sqlx::Error> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(CASE WHEN kind = 'retrieval' THEN 1 ELSE 0 END), 0) AS BIGINT) AS retrievals, \
         CAST(COALESCE(SUM(CASE WHEN kind = 'download' THEN 1 ELSE 0 END), 0) AS BIGINT) AS downloads, \
         COUNT(DISTINCT buyer_tenant_id) AS unique_buyers, \
         CAST(COALESCE(SUM(charged_micros), 0) AS BIGINT) AS gross, \
         CAST(COALESCE(SUM(charged_micros * fee_bps), 0) AS BIGINT) AS fee_basis \
         FROM accesses WHERE dataset_id = $1 AND occurred_at >= $2 AND occurred_at < $3",
    )
    .bind(dataset_id)
    .bind(from)
    .bind(to)
    .fetch_one(&db.pool)
    .await?;
    Ok(DatasetUsage {
        retrievals: row.try_get("retrievals")?,
        downloads: row.try_get("downloads")?,
        unique_buyers: row.try_get("unique_buyers")?,
        gross_micros: row.try_get("gross")?,
        fee_basis: row.try_get("fee_basis")?,
    })
}

/// A dataset's accesses per UTC date in `[from, to)`: `(date, retrievals, downloads, gross)`,
/// days with accesses only.
pub async fn dataset_daily(
    db: &Db,
    dataset_id: &str,
    from: &str,
    to: &str,
) -> Result<Vec<(String, i64, i64, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT SUBSTR(occurred_at, 1, 10) AS day, \
         CAST(SUM(CASE WHEN kind = 'retrieval' THEN 1 ELSE 0 END) AS BIGINT) AS retrievals, \
         CAST(SUM(CASE WHEN kind = 'download' THEN 1 ELSE 0 END) AS BIGINT) AS downloads, \
         CAST(SUM(charged_micros) AS BIGINT) AS gross \
         FROM accesses WHERE dataset_id = $1 AND occurred_at >= $2 AND occurred_at < $3 \
         GROUP BY SUBSTR(occurred_at, 1, 10) ORDER BY day",
    )
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
                r.try_get("gross")?,
            ))
        })
        .collect()
}
