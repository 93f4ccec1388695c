//! Searches: `search_activities` (one row per search request, for buyers' activity and
//! dashboards) and `search_appearances` (one row per search of another tenant that returned a
//! dataset, for analytics and the demand-curve price).

use aggregates::money::{Amount, Usd};
use aggregates::search::{Search, SearchEvent};
use aggregates::user::{User, UserEvent};
use aggregates::{timestamp, DatasetId, SearchActivityId};
use async_trait::async_trait;
use cqrs_es::Aggregate;
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use crate::rows::{keyset_start, JsonText};
use crate::{Db, Projection, ProjectionError, Reads, StoredEvent};

/// The `search_activities` and `search_appearances` tables.
pub struct SearchesProjection;

#[async_trait]
impl Projection for SearchesProjection {
    fn name(&self) -> &'static str {
        "searches"
    }
    fn version(&self) -> i64 {
        2
    }
    fn tables(&self) -> &'static [&'static str] {
        &["search_activities", "search_appearances"]
    }
    fn reads(&self) -> Reads {
        Reads::Aggregates(&[Search::TYPE, User::TYPE])
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type == User::TYPE {
            // An erased user's query texts, and those of the keys they created, read as erased.
            if let UserEvent::UserErased { subjects } = event.decode()? {
                for table in ["search_activities", "search_appearances"] {
                    for subject in &subjects {
                        sqlx::query(&format!(
                            "UPDATE {table} SET query_text = $1 WHERE subject_id = $2"
                        ))
                        .bind(crate::privacy::erased("query_text", subject))
                        .bind(subject)
                        .execute(&mut *conn)
                        .await?;
                    }
                }
            }
            return Ok(());
        }
        if event.aggregate_type != Search::TYPE {
            return Ok(());
        }
        let SearchEvent::SearchPerformed(record) = event.decode()?;
        let subject = crate::privacy::subject_of(
            &event.aggregate_type,
            &event.aggregate_id,
            &event.event_type,
            &serde_json::Value::Null,
            &event.metadata.actor_id,
        );
        // The command refuses a search whose total would not fit (SearchError::ChargeTooLarge).
        let charged = i64::try_from(record.charged_micros()).map_err(|_| {
            ProjectionError::Inconsistent(format!(
                "search {} total out of range",
                event.aggregate_id
            ))
        })?;
        let occurred_at = timestamp::format(record.occurred_at);
        let dataset_ids: Vec<&str> = record.dataset_ids.iter().map(|d| d.as_str()).collect();
        sqlx::query(
            "INSERT INTO search_activities (search_activity_id, buyer_tenant_id, api_key_id, query_text, \
             dataset_ids, result_count, charged_micros, occurred_at, subject_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&event.aggregate_id)
        .bind(record.buyer_tenant_id.as_str())
        .bind(record.api_key_id.clone())
        .bind(&record.query_text)
        .bind(serde_json::to_string(&dataset_ids)?)
        .bind(record.results.len() as i64)
        .bind(charged)
        .bind(&occurred_at)
        .bind(subject.clone())
        .execute(&mut *conn)
        .await?;
        let query = record.query_text.trim().to_lowercase();
        for dataset_id in record.result_datasets() {
            let foreign = record.results.iter().any(|r| {
                &r.dataset_id == dataset_id && r.provider_tenant_id != record.buyer_tenant_id
            });
            if !foreign {
                continue;
            }
            sqlx::query(
                "INSERT INTO search_appearances (search_activity_id, dataset_id, buyer_tenant_id, query_text, \
                 occurred_at, subject_id) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&event.aggregate_id)
            .bind(dataset_id.as_str())
            .bind(record.buyer_tenant_id.as_str())
            .bind(&query)
            .bind(&occurred_at)
            .bind(subject.clone())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// One search request and what it was charged (SPEC §3.8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = SearchActivity)]
pub struct SearchActivityRow {
    /// The search activity.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub search_activity_id: SearchActivityId,
    /// The query as searched (trimmed).
    pub query_text: String,
    /// The request's datasets, else the distinct datasets of the results (sorted).
    #[sqlx(try_from = "String")]
    #[schema(schema_with = crate::rows::dataset_ids)]
    pub dataset_ids: JsonText<Vec<DatasetId>>,
    /// How many results it returned.
    #[schema(minimum = 0)]
    pub result_count: i64,
    /// Σ charges of its results.
    #[sqlx(rename = "charged_micros", try_from = "i64")]
    pub charged_amount: Amount,
    /// Always `USD`.
    #[sqlx(skip)]
    pub currency: Usd,
    /// The key used, null for a session.
    #[schema(required = true)]
    pub api_key_id: Option<String>,
    /// When it happened.
    #[schema(format = DateTime)]
    pub occurred_at: String,
}

/// Filters of the buyer's search listing; empty strings are open.
#[derive(Clone, Debug, Default)]
pub struct SearchFilter {
    pub api_key_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

const SEARCH_WHERE: &str = "WHERE buyer_tenant_id = $1 AND ($2 = '' OR api_key_id = $2) \
     AND ($3 = '' OR occurred_at >= $3) AND ($4 = '' OR occurred_at < $4)";

/// A buyer tenant's searches, newest first, after the `(occurred_at, id)` cursor, and how many
/// match in all.
pub async fn buyer_searches(
    db: &Db,
    tenant_id: &str,
    filter: &SearchFilter,
    after: Option<&(String, String)>,
    fetch: usize,
) -> Result<(Vec<SearchActivityRow>, i64), sqlx::Error> {
    let (after_at, after_id) = keyset_start(after);
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let items = sqlx::query_as(&format!(
        "SELECT search_activity_id, query_text, dataset_ids, result_count, charged_micros, api_key_id, occurred_at \
         FROM search_activities {SEARCH_WHERE} \
         AND (occurred_at < $5 OR (occurred_at = $5 AND search_activity_id < $6)) \
         ORDER BY occurred_at DESC, search_activity_id DESC LIMIT $7"
    ))
    .bind(tenant_id)
    .bind(text(&filter.api_key_id))
    .bind(text(&filter.from))
    .bind(text(&filter.to))
    .bind(after_at)
    .bind(after_id)
    .bind(fetch as i64)
    .fetch_all(&db.pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM search_activities {SEARCH_WHERE}"
    ))
    .bind(tenant_id)
    .bind(text(&filter.api_key_id))
    .bind(text(&filter.from))
    .bind(text(&filter.to))
    .fetch_one(&db.pool)
    .await?;
    Ok((items, total))
}

/// How many searches a buyer tenant has made, all time.
pub async fn buyer_count(db: &Db, tenant_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM search_activities WHERE buyer_tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(&db.pool)
        .await
}

/// Searches by other tenants that returned the dataset in `[from, to)`.
pub async fn appearances(
    db: &Db,
    dataset_id: &str,
    from: &str,
    to: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM search_appearances WHERE dataset_id = $1 AND occurred_at >= $2 AND occurred_at < $3",
    )
    .bind(dataset_id)
    .bind(from)
    .bind(to)
    .fetch_one(&db.pool)
    .await
}

/// The ten most frequent (trimmed, lowercased) queries among the dataset's appearances in
/// `[from, to)`: count desc, then query asc.
pub async fn top_queries(
    db: &Db,
    dataset_id: &str,
    from: &str,
    to: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT query_text, COUNT(*) AS n FROM search_appearances \
         WHERE dataset_id = $1 AND occurred_at >= $2 AND occurred_at < $3 \
         GROUP BY query_text ORDER BY n DESC, query_text LIMIT 10",
    )
    .bind(dataset_id)
    .bind(from)
    .bind(to)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("query_text")?, r.try_get("n")?)))
        .collect()
}
