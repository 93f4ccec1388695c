//! Objects: the `objects` read model and the queries behind object listings, the review queue and
//! the storage routes.

use std::collections::BTreeMap;

use aggregates::object::{ObjectEvent, ObjectStatus};
use aggregates::{timestamp, DatasetId, Object, ObjectId, TenantId};
use async_trait::async_trait;
use cqrs_es::Aggregate;
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use crate::rows::{keyset_start, JsonText};
use crate::{Db, Projection, ProjectionError, Reads, StoredEvent};

// A row of the `objects` read model, answered as it is.
/// An object (SPEC §3.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = Object)]
pub struct ObjectRow {
    /// The object's id.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub object_id: ObjectId,
    /// Its dataset.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub dataset_id: DatasetId,
    /// The owner tenant.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// The file name.
    pub filename: String,
    /// The media type.
    pub content_type: String,
    /// The declared size.
    #[schema(minimum = 1)]
    pub size_bytes: i64,
    /// The SHA-256 the uploader declared, if any.
    #[serde(skip)]
    pub declared_sha256: Option<String>,
    /// The server-computed SHA-256 (lowercase hex), null before confirm.
    #[schema(required = true, pattern = "^[0-9a-f]{64}$")]
    pub checksum_sha256: Option<String>,
    /// String → string.
    #[sqlx(try_from = "String")]
    #[schema(value_type = BTreeMap<String, String>)]
    pub metadata: JsonText<BTreeMap<String, String>>,
    #[sqlx(try_from = "String")]
    pub status: ObjectStatus,
    /// Null for pending_upload and cancelled, else staged, approved or rejected.
    #[schema(required = true, schema_with = review_state)]
    pub review_state: Option<String>,
    /// The reason (or `review_expired`), null unless rejected.
    #[schema(required = true)]
    pub rejection_reason: Option<String>,
    /// When the upload was initiated.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When the upload was confirmed.
    #[schema(required = true, format = DateTime)]
    pub uploaded_at: Option<String>,
    /// `uploaded_at` + 7 days.
    #[schema(required = true, format = DateTime)]
    pub review_expires_at: Option<String>,
    /// When it was approved, rejected or expired.
    #[schema(required = true, format = DateTime)]
    pub reviewed_at: Option<String>,
    /// When it was approved (what time-decay pricing counts from).
    #[serde(skip)]
    pub approved_at: Option<String>,
    #[serde(skip)]
    pub updated_at: String,
}

/// An object's review state: null before confirm and for cancelled uploads.
fn review_state() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    crate::rows::schema(serde_json::json!({ "type": ["string", "null"],
        "enum": ["staged", "approved", "rejected", null] }))
}

const OBJECT_COLUMNS: &str = "o.object_id, o.dataset_id, o.tenant_id, o.filename, o.content_type, \
     o.size_bytes, o.declared_sha256, o.checksum_sha256, o.metadata, o.status, o.review_state, \
     o.rejection_reason, o.created_at, o.uploaded_at, o.review_expires_at, o.reviewed_at, \
     o.approved_at, o.updated_at";

/// An object by id, in any status.
pub async fn object(db: &Db, object_id: &str) -> Result<Option<ObjectRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {OBJECT_COLUMNS} FROM objects o WHERE o.object_id = $1"
    ))
    .bind(object_id)
    .fetch_optional(&db.pool)
    .await
}

/// A dataset's objects, newest first; without a status filter `cancelled` and `deleted` are
/// hidden. Fetches `limit + 1` rows after `(created_at, object_id)`.
pub async fn dataset_objects(
    db: &Db,
    dataset_id: &str,
    status: Option<&str>,
    after: Option<&(String, String)>,
    fetch: usize,
) -> Result<Vec<ObjectRow>, sqlx::Error> {
    let (after_at, after_id) = keyset_start(after);
    sqlx::query_as(&format!(
        "SELECT {OBJECT_COLUMNS} FROM objects o \
         WHERE o.dataset_id = $1 \
           AND (($2 = '' AND o.status NOT IN ('cancelled', 'deleted')) OR o.status = $2) \
           AND (o.created_at < $3 OR (o.created_at = $3 AND o.object_id < $4)) \
         ORDER BY o.created_at DESC, o.object_id DESC LIMIT $5"
    ))
    .bind(dataset_id)
    .bind(status.unwrap_or(""))
    .bind(after_at)
    .bind(after_id)
    .bind(fetch as i64)
    .fetch_all(&db.pool)
    .await
}

/// A staged object awaiting review, with its tenant and dataset names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ReviewRow {
    #[sqlx(flatten)]
    pub object: ObjectRow,
    pub tenant_name: String,
    pub dataset_name: String,
}

const QUEUE_FROM: &str = "FROM objects o JOIN datasets d ON d.dataset_id = o.dataset_id \
     LEFT JOIN tenants t ON t.tenant_id = o.tenant_id \
     WHERE o.status = 'staged' AND d.status NOT IN ('pending_deletion', 'deleted') \
       AND ($1 = '' OR o.tenant_id = $1) AND ($2 = '' OR o.dataset_id = $2)";

/// The review queue, oldest upload first, and the number of all matches.
pub async fn review_queue(
    db: &Db,
    tenant_id: Option<&str>,
    dataset_id: Option<&str>,
    after: Option<&(String, String)>,
    fetch: usize,
) -> Result<(Vec<ReviewRow>, i64), sqlx::Error> {
    // Oldest first: the first page starts after "", which sorts before every timestamp.
    let (after_at, after_id) = after.map_or(("", ""), |(at, id)| (at.as_str(), id.as_str()));
    let items = sqlx::query_as(&format!(
        "SELECT {OBJECT_COLUMNS}, COALESCE(t.name, '') AS tenant_name, d.name AS dataset_name {QUEUE_FROM} \
           AND (o.uploaded_at > $3 OR (o.uploaded_at = $3 AND o.object_id > $4)) \
         ORDER BY o.uploaded_at, o.object_id LIMIT $5"
    ))
    .bind(tenant_id.unwrap_or(""))
    .bind(dataset_id.unwrap_or(""))
    .bind(after_at)
    .bind(after_id)
    .bind(fetch as i64)
    .fetch_all(&db.pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) {QUEUE_FROM}"))
        .bind(tenant_id.unwrap_or(""))
        .bind(dataset_id.unwrap_or(""))
        .fetch_one(&db.pool)
        .await?;
    Ok((items, total))
}

/// Staged objects whose review window has passed (for the expiry job).
pub async fn expired_reviews(db: &Db, now: &str, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT object_id FROM objects WHERE status = 'staged' AND review_expires_at <= $1 \
         ORDER BY review_expires_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&db.pool)
    .await
}

/// A dataset's objects that are not yet `deleted` or `cancelled` (for the deletion cascade).
pub async fn live_objects_of(db: &Db, dataset_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT object_id FROM objects WHERE dataset_id = $1 AND status NOT IN ('deleted', 'cancelled') \
         ORDER BY object_id",
    )
    .bind(dataset_id)
    .fetch_all(&db.pool)
    .await
}

/// Of `object_ids`, those confirmed and not deleted, with their checksums (for the blob
/// collector, which keeps these blobs without further checks).
pub async fn confirmed_checksums(
    db: &Db,
    object_ids: &[&str],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let mut found = Vec::new();
    for chunk in object_ids.chunks(200) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT object_id, checksum_sha256 FROM objects WHERE object_id IN ({}) \
             AND status IN ('staged', 'approved', 'rejected') AND checksum_sha256 IS NOT NULL",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&db.pool).await? {
            found.push((row.try_get("object_id")?, row.try_get("checksum_sha256")?));
        }
    }
    Ok(found)
}

/// The `objects` table.
pub struct ObjectsProjection;

#[async_trait]
impl Projection for ObjectsProjection {
    fn name(&self) -> &'static str {
        "objects"
    }
    fn version(&self) -> i64 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["objects"]
    }
    fn reads(&self) -> Reads {
        Reads::Aggregates(&[Object::TYPE])
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Object::TYPE {
            return Ok(());
        }
        let at = &event.metadata.occurred_at;
        let id = &event.aggregate_id;
        let changed = match event.decode::<ObjectEvent>()? {
            ObjectEvent::ObjectUploadInitiated { descriptor: d, .. } => {
                sqlx::query(
                    "INSERT INTO objects (object_id, dataset_id, tenant_id, filename, content_type, size_bytes, \
                     declared_sha256, metadata, status, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending_upload', $9, $9)",
                )
                .bind(d.object_id.as_str())
                .bind(d.dataset_id.as_str())
                .bind(d.tenant_id.as_str())
                .bind(d.filename.as_str())
                .bind(d.content_type.as_str())
                .bind(d.size_bytes as i64)
                .bind(d.declared_sha256.as_ref().map(|s| s.as_str().to_owned()))
                .bind(serde_json::to_string(d.metadata.entries())?)
                .bind(at)
                .execute(conn)
                .await?
            }
            ObjectEvent::ObjectUploadConfirmed { sha256, uploaded_at, review_expires_at, .. } => {
                sqlx::query(
                    "UPDATE objects SET status = 'staged', review_state = 'staged', checksum_sha256 = $1, \
                     uploaded_at = $2, review_expires_at = $3, updated_at = $4 WHERE object_id = $5",
                )
                .bind(sha256.as_str())
                .bind(timestamp::format(uploaded_at))
                .bind(timestamp::format(review_expires_at))
                .bind(at)
                .bind(id)
                .execute(conn)
                .await?
            }
            ObjectEvent::ObjectUploadCancelled { .. } => {
                sqlx::query("UPDATE objects SET status = 'cancelled', updated_at = $1 WHERE object_id = $2")
                    .bind(at)
                    .bind(id)
                    .execute(conn)
                    .await?
            }
            ObjectEvent::ObjectApproved { reviewed_at, .. } => {
                let reviewed_at = timestamp::format(reviewed_at);
                sqlx::query(
                    "UPDATE objects SET status = 'approved', review_state = 'approved', reviewed_at = $1, \
                     approved_at = $1, updated_at = $2 WHERE object_id = $3",
                )
                .bind(reviewed_at)
                .bind(at)
                .bind(id)
                .execute(conn)
                .await?
            }
            ObjectEvent::ObjectRejected { reason, reviewed_at, .. } => {
                sqlx::query(
                    "UPDATE objects SET status = 'rejected', review_state = 'rejected', rejection_reason = $1, \
                     reviewed_at = $2, updated_at = $3 WHERE object_id = $4",
                )
                .bind(reason)
                .bind(timestamp::format(reviewed_at))
                .bind(at)
                .bind(id)
                .execute(conn)
                .await?
            }
            ObjectEvent::ObjectDeleted { .. } => {
                sqlx::query("UPDATE objects SET status = 'deleted', updated_at = $1 WHERE object_id = $2")
                    .bind(at)
                    .bind(id)
                    .execute(conn)
                    .await?
            }
        };
        if changed.rows_affected() != 1 {
            return Err(ProjectionError::Inconsistent(format!(
                "no object row for {} {id}",
                event.event_type
            )));
        }
        Ok(())
    }
}
