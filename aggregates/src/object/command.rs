use chrono::{DateTime, Utc};

use super::{ObjectDescriptor, Sha256Hex};
use crate::dataset::DatasetStatus;

/// Commands on an object. Times are decided by the caller's clock and recorded in the events;
/// `dataset` is the status of the object's dataset as the caller read it, which governs uploads,
/// confirms and reviews.
#[derive(Debug, Clone)]
pub enum ObjectCommand {
    /// Start an upload; the signed URL expires at `upload_expires_at`.
    InitiateUpload {
        descriptor: ObjectDescriptor,
        upload_expires_at: DateTime<Utc>,
        dataset: DatasetStatus,
    },
    /// The stored bytes were verified (size, and checksum if declared); `sha256` is the server's.
    ConfirmUpload {
        sha256: Sha256Hex,
        uploaded_at: DateTime<Utc>,
        review_expires_at: DateTime<Utc>,
        dataset: DatasetStatus,
    },
    /// Abandon a pending upload.
    CancelUpload,
    /// A platform admin approves a staged object.
    Approve {
        note: Option<String>,
        reviewed_at: DateTime<Utc>,
        dataset: DatasetStatus,
    },
    /// A platform admin rejects a staged object.
    Reject {
        reason: String,
        reviewed_at: DateTime<Utc>,
        dataset: DatasetStatus,
    },
    /// The review window passed (system).
    ExpireReview { reviewed_at: DateTime<Utc> },
    /// The owner deletes it, or the dataset cleanup does.
    Delete,
}
