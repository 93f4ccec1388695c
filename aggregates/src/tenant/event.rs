use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::{TenantId, TenantName};

/// Facts about a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TenantEvent {
    /// A tenant was created at signup.
    TenantCreated {
        tenant_id: TenantId,
        name: TenantName,
    },
}

impl DomainEvent for TenantEvent {
    fn event_type(&self) -> String {
        match self {
            TenantEvent::TenantCreated { .. } => "TenantCreated".into(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".into()
    }
}
