use crate::{TenantId, TenantName};

/// Commands on a tenant.
#[derive(Debug, Clone)]
pub enum TenantCommand {
    /// Create the tenant (idempotent for the same id and name).
    Create {
        tenant_id: TenantId,
        name: TenantName,
    },
}
