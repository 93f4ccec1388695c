use chrono::{DateTime, Utc};

use crate::{Email, InvitationId, Role, TenantId, TenantName, UserId};

/// Commands on a tenant: its creation and its members.
#[derive(Debug, Clone)]
pub enum TenantCommand {
    /// Create the tenant with its first owner (idempotent for the same id, name and owner).
    Create {
        tenant_id: TenantId,
        name: TenantName,
        owner: UserId,
    },
    /// Record the owner of a tenant created before members were recorded; only while the tenant
    /// knows no member.
    RecordFounder { user_id: UserId },
    /// Invite an address to join with these roles, for [`INVITATION_TTL_DAYS`](super::INVITATION_TTL_DAYS).
    Invite {
        invitation_id: InvitationId,
        email: Email,
        roles: Vec<Role>,
        by: UserId,
        at: DateTime<Utc>,
    },
    /// Withdraw an invitation that was not accepted.
    RevokeInvitation {
        invitation_id: InvitationId,
        by: UserId,
        at: DateTime<Utc>,
    },
    /// The invited person accepted, as this new user (idempotent for the same user).
    AcceptInvitation {
        invitation_id: InvitationId,
        user_id: UserId,
        at: DateTime<Utc>,
    },
    /// Replace a member's roles.
    ChangeRoles {
        user_id: UserId,
        roles: Vec<Role>,
        by: UserId,
    },
    /// Remove a member; with `revoke_keys`, the keys they created are revoked too.
    RemoveMember {
        user_id: UserId,
        by: UserId,
        revoke_keys: bool,
    },
    /// Make another member the owner; the caller, an owner, becomes an admin.
    TransferOwnership { to: UserId, by: UserId },
}
