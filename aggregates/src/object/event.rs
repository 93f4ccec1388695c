use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::{ObjectDescriptor, ObjectStatus, Sha256Hex};
use crate::{DatasetId, TenantId};

/// Facts about an object; each carries its dataset and tenant for the projections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ObjectEvent {
    /// An upload was started: everything declared, and when the signed URL expires.
    ObjectUploadInitiated {
        descriptor: ObjectDescriptor,
        upload_expires_at: DateTime<Utc>,
    },
    /// The bytes were verified and the object is staged for review; `sha256` is the server's.
    ObjectUploadConfirmed {
        dataset_id: DatasetId,
        tenant_id: TenantId,
        size_bytes: u64,
        sha256: Sha256Hex,
        uploaded_at: DateTime<Utc>,
        review_expires_at: DateTime<Utc>,
    },
    /// A pending upload was abandoned.
    ObjectUploadCancelled {
        dataset_id: DatasetId,
        tenant_id: TenantId,
    },
    /// A platform admin approved it; it is searchable and downloadable from now on.
    ObjectApproved {
        dataset_id: DatasetId,
        tenant_id: TenantId,
        size_bytes: u64,
        note: Option<String>,
        reviewed_at: DateTime<Utc>,
    },
    /// Rejected by an admin, or with reason `review_expired` by the system.
    ObjectRejected {
        dataset_id: DatasetId,
        tenant_id: TenantId,
        reason: String,
        reviewed_at: DateTime<Utc>,
    },
    /// Deleted by the owner or the dataset cleanup; `previous` tells projections what to undo.
    ObjectDeleted {
        dataset_id: DatasetId,
        tenant_id: TenantId,
        previous: ObjectStatus,
        size_bytes: u64,
    },
}

impl ObjectEvent {
    /// The rejection reason of an expired review.
    pub const REVIEW_EXPIRED: &'static str = "review_expired";
}

impl DomainEvent for ObjectEvent {
    fn event_type(&self) -> String {
        match self {
            ObjectEvent::ObjectUploadInitiated { .. } => "ObjectUploadInitiated",
            ObjectEvent::ObjectUploadConfirmed { .. } => "ObjectUploadConfirmed",
            ObjectEvent::ObjectUploadCancelled { .. } => "ObjectUploadCancelled",
            ObjectEvent::ObjectApproved { .. } => "ObjectApproved",
            ObjectEvent::ObjectRejected { .. } => "ObjectRejected",
            ObjectEvent::ObjectDeleted { .. } => "ObjectDeleted",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1.0".into()
    }
}
