//! Datasets: the `datasets` read model (with its object counters) and `entitlements`, and the
//! queries behind dataset listings, the catalog and access checks.

use aggregates::dataset::{
    DatasetEvent, DatasetStatus, MonetizationMode, PricingModel, SourceModality, Visibility,
};
use aggregates::money::Usd;
use aggregates::object::{ObjectEvent, ObjectStatus};
use aggregates::{Dataset, DatasetId, Object, Price, TenantId};
use async_trait::async_trait;
use cqrs_es::Aggregate;
use serde::Serialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::rows::{keyset_start, Flag};
use crate::{Db, Projection, ProjectionError, Reads, StoredEvent};

// A row of the `datasets` read model, answered as it is.
/// A dataset (SPEC §3.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = Dataset)]
pub struct DatasetRow {
    /// The dataset's id.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub dataset_id: DatasetId,
    /// The owner tenant.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// 1..=200 characters.
    pub name: String,
    /// At most 5000 characters.
    pub description: String,
    #[sqlx(try_from = "String")]
    pub source_modality: SourceModality,
    #[sqlx(try_from = "String")]
    pub monetization_mode: MonetizationMode,
    #[sqlx(try_from = "String")]
    pub pricing_model: PricingModel,
    #[sqlx(try_from = "String")]
    pub visibility: Visibility,
    #[sqlx(try_from = "String")]
    pub status: DatasetStatus,
    /// The price per billable result.
    #[sqlx(rename = "price_micros", try_from = "i64")]
    #[serde(rename = "price_per_result")]
    pub price: Price,
    /// Always `USD`.
    #[sqlx(skip)]
    pub currency: Usd,
    /// Confirmed, not deleted objects.
    #[schema(minimum = 0)]
    pub object_count: i64,
    /// Approved objects.
    #[schema(minimum = 0)]
    pub active_object_count: i64,
    /// Total size of the objects in `object_count`.
    #[schema(minimum = 0)]
    pub storage_bytes: i64,
    /// When it was created.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it last changed.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

const DATASET_COLUMNS: &str = "dataset_id, tenant_id, name, description, source_modality, monetization_mode, \
     pricing_model, visibility, status, price_micros, object_count, active_object_count, storage_bytes, \
     created_at, updated_at";

/// A dataset by id, in any status (deleted included; callers decide visibility).
pub async fn dataset(db: &Db, dataset_id: &str) -> Result<Option<DatasetRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DATASET_COLUMNS} FROM datasets WHERE dataset_id = $1"
    ))
    .bind(dataset_id)
    .fetch_optional(&db.pool)
    .await
}

/// A tenant's datasets, newest first, `deleted` never, optionally one status; `after` is the
/// `(created_at, dataset_id)` of the previous page's last row. Fetches `limit + 1` rows.
pub async fn tenant_datasets(
    db: &Db,
    tenant_id: &str,
    status: Option<&str>,
    after: Option<&(String, String)>,
    fetch: usize,
) -> Result<Vec<DatasetRow>, sqlx::Error> {
    let (after_at, after_id) = keyset_start(after);
    sqlx::query_as(&format!(
        "SELECT {DATASET_COLUMNS} FROM datasets \
         WHERE tenant_id = $1 AND status <> 'deleted' AND ($2 = '' OR status = $2) \
           AND (created_at < $3 OR (created_at = $3 AND dataset_id < $4)) \
         ORDER BY created_at DESC, dataset_id DESC LIMIT $5"
    ))
    .bind(tenant_id)
    .bind(status.unwrap_or(""))
    .bind(after_at)
    .bind(after_id)
    .bind(fetch as i64)
    .fetch_all(&db.pool)
    .await
}

/// A catalog entry: an `active`, `listed` or `restricted` dataset of any tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CatalogRow {
    #[sqlx(flatten)]
    pub dataset: DatasetRow,
    pub tenant_name: String,
    /// Whether the asking tenant may search and download it (own, listed, or entitled).
    #[sqlx(try_from = "i64")]
    pub accessible: Flag,
}

/// The catalog, newest first, filtered by a case-insensitive substring of name or description.
pub async fn catalog(
    db: &Db,
    viewer_tenant: &str,
    q: Option<&str>,
    after: Option<&(String, String)>,
    fetch: usize,
) -> Result<Vec<CatalogRow>, sqlx::Error> {
    let (after_at, after_id) = keyset_start(after);
    let pattern = q
        .map(|q| format!("%{}%", escape_like(&q.to_lowercase())))
        .unwrap_or_default();
    let columns: Vec<String> = DATASET_COLUMNS
        .split(", ")
        .map(|c| format!("d.{c}"))
        .collect();
    sqlx::query_as(&format!(
        "SELECT {}, COALESCE(t.name, '') AS tenant_name, \
           CASE WHEN d.tenant_id = $1 OR d.visibility = 'listed' \
                  OR EXISTS (SELECT 1 FROM entitlements e WHERE e.dataset_id = d.dataset_id AND e.tenant_id = $1) \
                THEN 1 ELSE 0 END AS accessible \
         FROM datasets d LEFT JOIN tenants t ON t.tenant_id = d.tenant_id \
         WHERE d.status = 'active' AND d.visibility IN ('listed', 'restricted') \
           AND ($2 = '' OR LOWER(d.name) LIKE $2 ESCAPE '\\' OR LOWER(d.description) LIKE $2 ESCAPE '\\') \
           AND (d.created_at < $3 OR (d.created_at = $3 AND d.dataset_id < $4)) \
         ORDER BY d.created_at DESC, d.dataset_id DESC LIMIT $5",
        columns.join(", ")
    ))
    .bind(viewer_tenant)
    .bind(pattern)
    .bind(after_at)
    .bind(after_id)
    .bind(fetch as i64)
    .fetch_all(&db.pool)
    .await
}

fn escape_like(raw: &str) -> String {
    raw.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Whether `tenant` may reach the dataset for search and download (SPEC §2.8): its own (not
/// deleted), or another tenant's `active` dataset that is `listed`, or `restricted` with an
/// entitlement.
pub fn accessible(dataset: &DatasetRow, tenant: &str, entitled: bool) -> bool {
    if dataset.tenant_id.as_str() == tenant {
        return dataset.status != DatasetStatus::Deleted;
    }
    dataset.status == DatasetStatus::Active
        && match dataset.visibility {
            Visibility::Listed => true,
            Visibility::Restricted => entitled,
            Visibility::Private => false,
        }
}

/// Whether `tenant` holds an entitlement on the dataset.
pub async fn is_entitled(db: &Db, dataset_id: &str, tenant_id: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM entitlements WHERE dataset_id = $1 AND tenant_id = $2")
            .bind(dataset_id)
            .bind(tenant_id)
            .fetch_optional(&db.pool)
            .await?;
    Ok(found.is_some())
}

/// An entitlement of a tenant to a restricted dataset (SPEC §3.11).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = Entitlement)]
pub struct EntitlementRow {
    /// The dataset.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub dataset_id: DatasetId,
    /// The entitled tenant.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// The entitled tenant's name.
    pub tenant_name: String,
    /// When it was granted.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A dataset's entitlements, newest first.
pub async fn entitlements(
    db: &Db,
    dataset_id: &str,
    after: Option<&(String, String)>,
    fetch: usize,
) -> Result<Vec<EntitlementRow>, sqlx::Error> {
    let (after_at, after_id) = keyset_start(after);
    sqlx::query_as(
        "SELECT e.dataset_id, e.tenant_id, COALESCE(t.name, '') AS tenant_name, e.created_at \
         FROM entitlements e LEFT JOIN tenants t ON t.tenant_id = e.tenant_id \
         WHERE e.dataset_id = $1 AND (e.created_at < $2 OR (e.created_at = $2 AND e.tenant_id < $3)) \
         ORDER BY e.created_at DESC, e.tenant_id DESC LIMIT $4",
    )
    .bind(dataset_id)
    .bind(after_at)
    .bind(after_id)
    .bind(fetch as i64)
    .fetch_all(&db.pool)
    .await
}

/// The `datasets` table: profile, status and the object counters.
pub struct DatasetsProjection;

#[async_trait]
impl Projection for DatasetsProjection {
    fn name(&self) -> &'static str {
        "datasets"
    }
    fn version(&self) -> i64 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["datasets"]
    }
    fn reads(&self) -> Reads {
        Reads::Aggregates(&[Dataset::TYPE, Object::TYPE])
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let at = &event.metadata.occurred_at;
        let changed = match event.aggregate_type.as_str() {
            t if t == Dataset::TYPE => match event.decode::<DatasetEvent>()? {
                DatasetEvent::DatasetCreated { profile, status } => {
                    sqlx::query(&format!(
                        "INSERT INTO datasets ({DATASET_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, 0, 0, $11, $11)"
                    ))
                    .bind(profile.dataset_id.as_str())
                    .bind(profile.tenant_id.as_str())
                    .bind(profile.name.as_str())
                    .bind(profile.description.as_str())
                    .bind(profile.source_modality.as_str())
                    .bind(profile.monetization_mode.as_str())
                    .bind(profile.pricing_model.as_str())
                    .bind(profile.visibility.as_str())
                    .bind(status.as_str())
                    .bind(profile.price_per_result.micros())
                    .bind(at)
                    .execute(conn)
                    .await?
                }
                DatasetEvent::DatasetUpdated {
                    profile, status, ..
                } => {
                    sqlx::query(
                        "UPDATE datasets SET name = $1, description = $2, source_modality = $3, \
                         monetization_mode = $4, pricing_model = $5, visibility = $6, status = $7, \
                         price_micros = $8, updated_at = $9 WHERE dataset_id = $10",
                    )
                    .bind(profile.name.as_str())
                    .bind(profile.description.as_str())
                    .bind(profile.source_modality.as_str())
                    .bind(profile.monetization_mode.as_str())
                    .bind(profile.pricing_model.as_str())
                    .bind(profile.visibility.as_str())
                    .bind(status.as_str())
                    .bind(profile.price_per_result.micros())
                    .bind(at)
                    .bind(profile.dataset_id.as_str())
                    .execute(conn)
                    .await?
                }
                DatasetEvent::DatasetDeletionRequested { .. } => {
                    set_status(conn, event, "pending_deletion").await?
                }
                DatasetEvent::DatasetDeleted { .. } => set_status(conn, event, "deleted").await?,
                DatasetEvent::DatasetSuspended { .. } => {
                    set_status(conn, event, "suspended").await?
                }
                DatasetEvent::EntitlementGranted { .. }
                | DatasetEvent::EntitlementRevoked { .. } => return Ok(()),
            },
            t if t == Object::TYPE => {
                // (object_count, active_object_count, storage_bytes) deltas.
                let (dataset_id, delta) = match event.decode::<ObjectEvent>()? {
                    ObjectEvent::ObjectUploadConfirmed {
                        dataset_id,
                        size_bytes,
                        ..
                    } => (dataset_id, (1, 0, size_bytes as i64)),
                    ObjectEvent::ObjectApproved { dataset_id, .. } => (dataset_id, (0, 1, 0)),
                    ObjectEvent::ObjectDeleted {
                        dataset_id,
                        previous,
                        size_bytes,
                        ..
                    } => match previous {
                        ObjectStatus::Staged | ObjectStatus::Rejected => {
                            (dataset_id, (-1, 0, -(size_bytes as i64)))
                        }
                        ObjectStatus::Approved => (dataset_id, (-1, -1, -(size_bytes as i64))),
                        _ => return Ok(()),
                    },
                    _ => return Ok(()),
                };
                sqlx::query(
                    "UPDATE datasets SET object_count = object_count + $1, \
                     active_object_count = active_object_count + $2, storage_bytes = storage_bytes + $3 \
                     WHERE dataset_id = $4",
                )
                .bind(delta.0)
                .bind(delta.1)
                .bind(delta.2)
                .bind(dataset_id.as_str())
                .execute(conn)
                .await?
            }
            _ => return Ok(()),
        };
        if changed.rows_affected() != 1 {
            return Err(ProjectionError::Inconsistent(format!(
                "no dataset row for {} {}",
                event.event_type, event.aggregate_id
            )));
        }
        Ok(())
    }
}

async fn set_status(
    conn: &mut AnyConnection,
    event: &StoredEvent,
    status: &str,
) -> Result<sqlx::any::AnyQueryResult, sqlx::Error> {
    sqlx::query("UPDATE datasets SET status = $1, updated_at = $2 WHERE dataset_id = $3")
        .bind(status)
        .bind(&event.metadata.occurred_at)
        .bind(&event.aggregate_id)
        .execute(conn)
        .await
}

/// The `entitlements` table.
pub struct EntitlementsProjection;

#[async_trait]
impl Projection for EntitlementsProjection {
    fn name(&self) -> &'static str {
        "entitlements"
    }
    fn version(&self) -> i64 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["entitlements"]
    }
    fn reads(&self) -> Reads {
        Reads::Aggregates(&[Dataset::TYPE])
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Dataset::TYPE {
            return Ok(());
        }
        match event.decode::<DatasetEvent>()? {
            DatasetEvent::EntitlementGranted { tenant_id } => {
                sqlx::query("INSERT INTO entitlements (dataset_id, tenant_id, created_at) VALUES ($1, $2, $3)")
                    .bind(&event.aggregate_id)
                    .bind(tenant_id.as_str())
                    .bind(&event.metadata.occurred_at)
                    .execute(conn)
                    .await?;
            }
            DatasetEvent::EntitlementRevoked { tenant_id } => {
                sqlx::query("DELETE FROM entitlements WHERE dataset_id = $1 AND tenant_id = $2")
                    .bind(&event.aggregate_id)
                    .bind(tenant_id.as_str())
                    .execute(conn)
                    .await?;
            }
            DatasetEvent::DatasetDeleted { .. } => {
                sqlx::query("DELETE FROM entitlements WHERE dataset_id = $1")
                    .bind(&event.aggregate_id)
                    .execute(conn)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A provider's catalogue in figures: datasets not being deleted, and their confirmed objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ProviderCounts {
    #[sqlx(rename = "datasets")]
    pub total_datasets: i64,
    #[sqlx(rename = "objects")]
    pub total_objects: i64,
    #[sqlx(rename = "bytes")]
    pub total_storage_bytes: i64,
    #[sqlx(rename = "staged")]
    pub objects_pending_review: i64,
    #[sqlx(rename = "approved")]
    pub objects_approved: i64,
    #[sqlx(rename = "rejected")]
    pub objects_rejected: i64,
}

/// The provider dashboard's counters.
pub async fn provider_counts(db: &Db, tenant_id: &str) -> Result<ProviderCounts, sqlx::Error> {
    // One round trip: the dataset sums, and the review states counted beside them.
    sqlx::query_as(
        "SELECT COUNT(*) AS datasets, CAST(COALESCE(SUM(object_count), 0) AS BIGINT) AS objects, \
         CAST(COALESCE(SUM(storage_bytes), 0) AS BIGINT) AS bytes, \
         CAST(COALESCE(SUM(active_object_count), 0) AS BIGINT) AS approved, \
         (SELECT COUNT(*) FROM objects o JOIN datasets od ON od.dataset_id = o.dataset_id \
          WHERE o.tenant_id = $1 AND o.status = 'staged' \
            AND od.status NOT IN ('pending_deletion', 'deleted')) AS staged, \
         (SELECT COUNT(*) FROM objects o JOIN datasets od ON od.dataset_id = o.dataset_id \
          WHERE o.tenant_id = $1 AND o.status = 'rejected' \
            AND od.status NOT IN ('pending_deletion', 'deleted')) AS rejected \
         FROM datasets WHERE tenant_id = $1 AND status NOT IN ('pending_deletion', 'deleted')",
    )
    .bind(tenant_id)
    .fetch_one(&db.pool)
    .await
}

/// The active datasets `tenant` may search (SPEC §3.12): its own, and other tenants' that are
/// `listed`, or `restricted` with an entitlement.
pub async fn searchable(db: &Db, tenant_id: &str) -> Result<Vec<DatasetRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DATASET_COLUMNS} FROM datasets d WHERE d.status = 'active' AND (d.tenant_id = $1 \
         OR d.visibility = 'listed' OR (d.visibility = 'restricted' AND EXISTS \
         (SELECT 1 FROM entitlements e WHERE e.dataset_id = d.dataset_id AND e.tenant_id = $1)))"
    ))
    .bind(tenant_id)
    .fetch_all(&db.pool)
    .await
}
