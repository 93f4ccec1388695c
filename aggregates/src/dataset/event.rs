use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::{DatasetProfile, DatasetStatus};
use crate::TenantId;

/// Facts about a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DatasetEvent {
    /// The dataset was created.
    DatasetCreated {
        profile: DatasetProfile,
        status: DatasetStatus,
    },
    /// Fields changed; carries the whole new profile and status.
    DatasetUpdated {
        profile: DatasetProfile,
        status: DatasetStatus,
        changed: Vec<String>,
    },
    /// The owner deleted it; cleanup follows.
    DatasetDeletionRequested { tenant_id: TenantId },
    /// Cleanup finished: objects, blobs, index entries, grants and entitlements are gone.
    DatasetDeleted { tenant_id: TenantId },
    /// The platform suspended it.
    DatasetSuspended { tenant_id: TenantId },
    /// A tenant may now use this restricted dataset.
    EntitlementGranted { tenant_id: TenantId },
    /// A tenant's entitlement was withdrawn.
    EntitlementRevoked { tenant_id: TenantId },
}

impl DomainEvent for DatasetEvent {
    fn event_type(&self) -> String {
        match self {
            DatasetEvent::DatasetCreated { .. } => "DatasetCreated",
            DatasetEvent::DatasetUpdated { .. } => "DatasetUpdated",
            DatasetEvent::DatasetDeletionRequested { .. } => "DatasetDeletionRequested",
            DatasetEvent::DatasetDeleted { .. } => "DatasetDeleted",
            DatasetEvent::DatasetSuspended { .. } => "DatasetSuspended",
            DatasetEvent::EntitlementGranted { .. } => "EntitlementGranted",
            DatasetEvent::EntitlementRevoked { .. } => "EntitlementRevoked",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1.0".into()
    }
}
