use chrono::{DateTime, Utc};

use super::{AccessMode, KeyProfile};
use crate::{ApiKeyId, DatasetId, GrantId, Scope};

/// Commands on an API key.
#[derive(Debug, Clone)]
pub enum ApiKeyCommand {
    /// Create the key for a user's session (its secret's HMAC is stored outside the log
    /// beforehand).
    Create(KeyProfile),
    /// Create the key for another key, which may pass on no more than it holds itself.
    Derive {
        profile: KeyProfile,
        issuer: IssuingKey,
    },
    /// Revoke it; a second revocation changes nothing.
    Revoke { at: DateTime<Utc> },
    /// Grant a dataset (idempotent per dataset); `issuer` is the key asking, if a key asks.
    AddGrant {
        grant_id: GrantId,
        dataset_id: DatasetId,
        issuer: Option<IssuingKey>,
    },
    /// Remove a grant.
    RemoveGrant { grant_id: GrantId },
}

/// What a key that creates a key, or grants a dataset, holds itself at that moment: the bound on
/// what it may pass on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuingKey {
    pub api_key_id: ApiKeyId,
    pub scopes: Vec<Scope>,
    pub dataset_access_mode: AccessMode,
    /// The datasets granted to it (they bound an `allow_list` key).
    pub granted: Vec<DatasetId>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl IssuingKey {
    /// Why `profile` would be wider than this key, if it would.
    pub fn widened_by(&self, profile: &KeyProfile) -> Option<Widening> {
        if let Some(scope) = profile.scopes.iter().find(|s| !self.scopes.contains(s)) {
            return Some(Widening::Scope(*scope));
        }
        if self.dataset_access_mode == AccessMode::AllowList
            && profile.dataset_access_mode != AccessMode::AllowList
        {
            return Some(Widening::AccessMode);
        }
        match (self.expires_at, profile.expires_at) {
            (Some(_), None) => Some(Widening::Expiry),
            (Some(own), Some(theirs)) if theirs > own => Some(Widening::Expiry),
            _ => None,
        }
    }

    /// Whether this key may grant `dataset` (an `allow_list` key only what it is granted).
    pub fn may_grant(&self, dataset: &DatasetId) -> bool {
        self.dataset_access_mode == AccessMode::AllAvailable || self.granted.contains(dataset)
    }
}

/// How a key would pass on more than it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Widening {
    /// A scope the issuing key lacks.
    Scope(Scope),
    /// `all_available` from an `allow_list` key.
    AccessMode,
    /// No expiry, or a later one, from an expiring key.
    Expiry,
    /// A dataset the issuing `allow_list` key is not granted.
    Dataset,
    /// A grant to the issuing key itself.
    OwnGrant,
}

impl std::fmt::Display for Widening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Widening::Scope(scope) => write!(
                f,
                "a key cannot hold {}, which the caller lacks",
                scope.as_str()
            ),
            Widening::AccessMode => {
                f.write_str("an allow_list key can only create allow_list keys")
            }
            Widening::Expiry => f.write_str("a key cannot outlive the key that creates it"),
            Widening::Dataset => {
                f.write_str("an allow_list key can only grant datasets granted to it")
            }
            Widening::OwnGrant => f.write_str("a key cannot grant datasets to itself"),
        }
    }
}
