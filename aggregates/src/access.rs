//! Roles and scopes (SPEC §2.5, §2.6).

use serde::{Deserialize, Serialize};

/// A permission a principal may hold. The declaration order is the canonical order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Scope {
    /// Read own datasets, objects and entitlements; catalog; download.
    #[serde(rename = "datasets:read")]
    DatasetsRead,
    /// Create, update and delete datasets; entitlements.
    #[serde(rename = "datasets:write")]
    DatasetsWrite,
    /// Initiate, confirm and cancel uploads; delete objects.
    #[serde(rename = "objects:write")]
    ObjectsWrite,
    /// Search.
    #[serde(rename = "search:query")]
    SearchQuery,
    /// Dashboards, analytics, activity; read keys.
    #[serde(rename = "usage:read")]
    UsageRead,
    /// Create and revoke keys and grants; read keys.
    #[serde(rename = "keys:write")]
    KeysWrite,
    /// Payout statements, spend.
    #[serde(rename = "billing:read")]
    BillingRead,
    /// Admin endpoints (platform-admin sessions only).
    #[serde(rename = "admin:*")]
    Admin,
}

impl Scope {
    /// Every scope, in canonical order.
    pub const ALL: [Scope; 8] = [
        Scope::DatasetsRead,
        Scope::DatasetsWrite,
        Scope::ObjectsWrite,
        Scope::SearchQuery,
        Scope::UsageRead,
        Scope::KeysWrite,
        Scope::BillingRead,
        Scope::Admin,
    ];

    /// The scope's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::DatasetsRead => "datasets:read",
            Scope::DatasetsWrite => "datasets:write",
            Scope::ObjectsWrite => "objects:write",
            Scope::SearchQuery => "search:query",
            Scope::UsageRead => "usage:read",
            Scope::KeysWrite => "keys:write",
            Scope::BillingRead => "billing:read",
            Scope::Admin => "admin:*",
        }
    }

    /// Parses a wire name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// A user's role within their tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The signup user.
    Owner,
    /// Same scopes as the owner.
    Admin,
    /// Provider side.
    SellerManager,
    /// Buyer side.
    BuyerManager,
    /// Read-only operations.
    Operator,
    /// Read-only datasets.
    Viewer,
}

impl Role {
    /// Every role, in canonical order.
    pub const ALL: [Role; 6] = [
        Role::Owner,
        Role::Admin,
        Role::SellerManager,
        Role::BuyerManager,
        Role::Operator,
        Role::Viewer,
    ];

    /// Parses a wire name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == raw)
    }

    /// The role's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::SellerManager => "seller_manager",
            Role::BuyerManager => "buyer_manager",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    /// The scopes a session of this role holds.
    pub fn scopes(self) -> &'static [Scope] {
        use Scope::*;
        match self {
            Role::Owner | Role::Admin => &[
                DatasetsRead,
                DatasetsWrite,
                ObjectsWrite,
                SearchQuery,
                UsageRead,
                KeysWrite,
                BillingRead,
            ],
            Role::SellerManager => &[
                DatasetsRead,
                DatasetsWrite,
                ObjectsWrite,
                UsageRead,
                BillingRead,
            ],
            Role::BuyerManager => &[DatasetsRead, SearchQuery, UsageRead, KeysWrite, BillingRead],
            Role::Operator => &[DatasetsRead, UsageRead],
            Role::Viewer => &[DatasetsRead],
        }
    }
}

/// Session scopes: the union over the roles, plus `admin:*` for platform admins, in canonical order.
pub fn session_scopes(roles: &[Role], is_platform_admin: bool) -> Vec<Scope> {
    let mut scopes: Vec<Scope> = roles
        .iter()
        .flat_map(|r| r.scopes().iter().copied())
        .collect();
    if is_platform_admin {
        scopes.push(Scope::Admin);
    }
    scopes.sort();
    scopes.dedup();
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_parses_back_from_its_wire_name_in_canonical_order() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        }
        assert!(Role::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Role::parse("Owner"), None);
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn an_owner_holds_the_seven_non_admin_scopes_in_canonical_order() {
        let names: Vec<_> = session_scopes(&[Role::Owner], false)
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "datasets:read",
                "datasets:write",
                "objects:write",
                "search:query",
                "usage:read",
                "keys:write",
                "billing:read"
            ]
        );
    }

    #[test]
    fn platform_admins_also_hold_admin_scope() {
        assert_eq!(
            session_scopes(&[Role::Viewer], true),
            vec![Scope::DatasetsRead, Scope::Admin]
        );
    }

    #[test]
    fn roles_serialize_as_their_wire_names() {
        for (role, name) in [
            (Role::Owner, "owner"),
            (Role::Admin, "admin"),
            (Role::SellerManager, "seller_manager"),
            (Role::BuyerManager, "buyer_manager"),
            (Role::Operator, "operator"),
            (Role::Viewer, "viewer"),
        ] {
            assert_eq!(role.as_str(), name);
            assert_eq!(serde_json::to_value(role).unwrap(), name);
        }
    }

    #[test]
    fn scopes_round_trip_through_their_names() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
            assert_eq!(serde_json::to_value(scope).unwrap(), scope.as_str());
        }
        assert_eq!(Scope::parse("datasets:delete"), None);
    }
}
