use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::{Email, InvitationId, Role, TenantId, TenantName, UserId};

/// Facts about a tenant and its members. None carries an invitation's token or its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TenantEvent {
    /// A tenant was created at signup, by its first owner (absent on tenants created before
    /// members were recorded: see `FounderRecorded`).
    TenantCreated {
        tenant_id: TenantId,
        name: TenantName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<UserId>,
    },
    /// The owner of a tenant created before members were recorded.
    FounderRecorded { user_id: UserId },
    /// An address was invited at `invited_at` to join with these roles until `expires_at`.
    MemberInvited {
        invitation_id: InvitationId,
        email: Email,
        roles: Vec<Role>,
        invited_by: UserId,
        invited_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    /// The invitation was accepted: `user_id` joined with its roles.
    InvitationAccepted {
        invitation_id: InvitationId,
        user_id: UserId,
        roles: Vec<Role>,
        invited_by: UserId,
        accepted_at: DateTime<Utc>,
    },
    /// The invitation was withdrawn before it was accepted.
    InvitationRevoked {
        invitation_id: InvitationId,
        revoked_by: UserId,
        revoked_at: DateTime<Utc>,
    },
    /// A member's roles were replaced.
    MemberRolesChanged {
        user_id: UserId,
        roles: Vec<Role>,
        changed_by: UserId,
    },
    /// A member left or was removed; with `revoke_keys`, the keys they created were revoked.
    MemberRemoved {
        user_id: UserId,
        removed_by: UserId,
        revoke_keys: bool,
    },
    /// `to` became an owner and `from`, the owner who handed over, an admin; the roles are
    /// each one's afterwards.
    OwnershipTransferred {
        from: UserId,
        to: UserId,
        from_roles: Vec<Role>,
        to_roles: Vec<Role>,
    },
}

impl DomainEvent for TenantEvent {
    fn event_type(&self) -> String {
        match self {
            TenantEvent::TenantCreated { .. } => "TenantCreated",
            TenantEvent::FounderRecorded { .. } => "FounderRecorded",
            TenantEvent::MemberInvited { .. } => "MemberInvited",
            TenantEvent::InvitationAccepted { .. } => "InvitationAccepted",
            TenantEvent::InvitationRevoked { .. } => "InvitationRevoked",
            TenantEvent::MemberRolesChanged { .. } => "MemberRolesChanged",
            TenantEvent::MemberRemoved { .. } => "MemberRemoved",
            TenantEvent::OwnershipTransferred { .. } => "OwnershipTransferred",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1.0".into()
    }
}
