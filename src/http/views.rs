//! Response bodies that several resource modules return, each built from its read-model row.

use std::collections::BTreeMap;

use aggregates::object::ObjectStatus;
use aggregates::{DatasetId, ObjectId, TenantId};
use projections::objects::ObjectRow;
use projections::rows::JsonText;
use serde::Serialize;
use utoipa::ToSchema;

use crate::openapi;

/// An object (SPEC §3.4).
#[derive(Serialize, ToSchema)]
#[schema(as = Object)]
pub struct ObjectView {
    /// The object's id.
    #[schema(value_type = String)]
    pub object_id: ObjectId,
    /// Its dataset.
    #[schema(value_type = String)]
    pub dataset_id: DatasetId,
    /// The owner tenant.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// The file name.
    pub filename: String,
    /// The media type.
    pub content_type: String,
    /// The declared size.
    #[schema(minimum = 1)]
    pub size_bytes: i64,
    /// The server-computed SHA-256 (lowercase hex), null before confirm.
    #[schema(required = true, pattern = "^[0-9a-f]{64}$")]
    pub checksum_sha256: Option<String>,
    /// String → string.
    #[schema(value_type = BTreeMap<String, String>)]
    pub metadata: JsonText<BTreeMap<String, String>>,
    pub status: ObjectStatus,
    /// Null for pending_upload and cancelled, else staged, approved or rejected.
    #[schema(required = true, schema_with = openapi::review_state)]
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
}

impl From<ObjectRow> for ObjectView {
    fn from(row: ObjectRow) -> Self {
        Self {
            object_id: row.object_id,
            dataset_id: row.dataset_id,
            tenant_id: row.tenant_id,
            filename: row.filename,
            content_type: row.content_type,
            size_bytes: row.size_bytes,
            checksum_sha256: row.checksum_sha256,
            metadata: row.metadata,
            status: row.status,
            review_state: row.review_state,
            rejection_reason: row.rejection_reason,
            created_at: row.created_at,
            uploaded_at: row.uploaded_at,
            review_expires_at: row.review_expires_at,
            reviewed_at: row.reviewed_at,
        }
    }
}
