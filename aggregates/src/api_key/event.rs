use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::KeyProfile;
use crate::{DatasetId, GrantId};

/// Facts about an API key. None carries the secret or its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApiKeyEvent {
    ApiKeyCreated(KeyProfile),
    ApiKeyRevoked {
        revoked_at: DateTime<Utc>,
    },
    ApiKeyGrantAdded {
        grant_id: GrantId,
        dataset_id: DatasetId,
    },
    ApiKeyGrantRemoved {
        grant_id: GrantId,
        dataset_id: DatasetId,
    },
}

impl DomainEvent for ApiKeyEvent {
    fn event_type(&self) -> String {
        match self {
            ApiKeyEvent::ApiKeyCreated(_) => "ApiKeyCreated",
            ApiKeyEvent::ApiKeyRevoked { .. } => "ApiKeyRevoked",
            ApiKeyEvent::ApiKeyGrantAdded { .. } => "ApiKeyGrantAdded",
            ApiKeyEvent::ApiKeyGrantRemoved { .. } => "ApiKeyGrantRemoved",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1.0".into()
    }
}
