use chrono::{DateTime, Utc};

use super::KeyProfile;
use crate::{DatasetId, GrantId};

/// Commands on an API key.
#[derive(Debug, Clone)]
pub enum ApiKeyCommand {
    /// Create the key (its secret's HMAC is stored outside the log beforehand).
    Create(KeyProfile),
    /// Revoke it; a second revocation changes nothing.
    Revoke { at: DateTime<Utc> },
    /// Grant a dataset (idempotent per dataset).
    AddGrant {
        grant_id: GrantId,
        dataset_id: DatasetId,
    },
    /// Remove a grant.
    RemoveGrant { grant_id: GrantId },
}
