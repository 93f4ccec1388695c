//! The API key: a credential for agents, with scopes, an access mode and dataset grants. Its secret
//! never enters the log; only an HMAC of it is kept, outside the log.

mod command;
mod error;
mod event;

pub use command::{ApiKeyCommand, IssuingKey, Widening};
pub use error::ApiKeyError;
pub use event::ApiKeyEvent;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::{choice, ApiKeyId, DatasetId, GrantId, Scope, TenantId};

choice!(
    /// Which datasets a key may search and download.
    AccessMode { AllAvailable => "all_available", AllowList => "allow_list" }
);
choice!(
    /// Whether a key still authenticates: neither revoked nor past its expiry.
    KeyStatus { Active => "active", Revoked => "revoked", Expired => "expired" }
);

/// What a key is, as created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProfile {
    pub api_key_id: ApiKeyId,
    pub tenant_id: TenantId,
    /// `usr_…` or `key_…` of the principal that created it.
    pub created_by: String,
    pub name: String,
    /// The public 8-character prefix of the key.
    pub key_prefix: String,
    pub scopes: Vec<Scope>,
    pub dataset_access_mode: AccessMode,
    pub expires_at: Option<DateTime<Utc>>,
    /// The most the key may be charged per UTC month, in micro-USD; `None` for no limit.
    /// (Absent from keys created before limits existed.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend_limit_micros: Option<i64>,
}

/// API-key state, rebuilt from its events.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ApiKey {
    profile: Option<KeyProfile>,
    revoked_at: Option<DateTime<Utc>>,
    grants: BTreeMap<GrantId, DatasetId>,
}

impl ApiKey {
    /// The profile, unless never created.
    pub fn profile(&self) -> Option<&KeyProfile> {
        self.profile.as_ref()
    }

    /// When it was revoked, if it was.
    pub fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.revoked_at
    }

    /// Grant ids and their datasets.
    pub fn grants(&self) -> &BTreeMap<GrantId, DatasetId> {
        &self.grants
    }

    /// The grant for a dataset, if any.
    pub fn grant_for(&self, dataset_id: &DatasetId) -> Option<&GrantId> {
        self.grants
            .iter()
            .find(|(_, d)| *d == dataset_id)
            .map(|(g, _)| g)
    }
}

impl Aggregate for ApiKey {
    const TYPE: &'static str = "api_key";
    type Command = ApiKeyCommand;
    type Event = ApiKeyEvent;
    type Error = ApiKeyError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ApiKeyCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ApiKeyError> {
        let (profile, issuer) = match command {
            ApiKeyCommand::Create(profile) => (profile, None),
            ApiKeyCommand::Derive { profile, issuer } => (profile, Some(issuer)),
            other => return self.change(other, sink).await,
        };
        if self.profile.is_some() {
            return Err(ApiKeyError::AlreadyExists);
        }
        if profile.scopes.is_empty() || profile.scopes.contains(&Scope::Admin) {
            return Err(ApiKeyError::InvalidScopes);
        }
        if let Some(widening) = issuer.and_then(|issuer| issuer.widened_by(&profile)) {
            return Err(ApiKeyError::Wider(widening));
        }
        sink.write(ApiKeyEvent::ApiKeyCreated(profile), self).await;
        Ok(())
    }

    fn apply(&mut self, event: ApiKeyEvent) {
        match event {
            ApiKeyEvent::ApiKeyCreated(profile) => self.profile = Some(profile),
            ApiKeyEvent::ApiKeyRevoked { revoked_at } => self.revoked_at = Some(revoked_at),
            ApiKeyEvent::ApiKeyGrantAdded {
                grant_id,
                dataset_id,
            } => {
                self.grants.insert(grant_id, dataset_id);
            }
            ApiKeyEvent::ApiKeyGrantRemoved { grant_id, .. } => {
                self.grants.remove(&grant_id);
            }
        }
    }
}

impl ApiKey {
    /// Every command on an existing key.
    async fn change(
        &mut self,
        command: ApiKeyCommand,
        sink: &EventSink<Self>,
    ) -> Result<(), ApiKeyError> {
        if self.profile.is_none() {
            return Err(ApiKeyError::NotFound);
        }
        let event = match command {
            ApiKeyCommand::Create(_) | ApiKeyCommand::Derive { .. } => {
                return Err(ApiKeyError::AlreadyExists)
            }
            // Revoking again changes nothing (`revoked_at` stays).
            ApiKeyCommand::Revoke { .. } if self.revoked_at.is_some() => return Ok(()),
            ApiKeyCommand::Revoke { at } => ApiKeyEvent::ApiKeyRevoked { revoked_at: at },
            ApiKeyCommand::AddGrant { .. } if self.revoked_at.is_some() => {
                return Err(ApiKeyError::Revoked)
            }
            ApiKeyCommand::AddGrant {
                issuer: Some(issuer),
                ..
            } if self
                .profile
                .as_ref()
                .is_some_and(|p| p.api_key_id == issuer.api_key_id) =>
            {
                return Err(ApiKeyError::Wider(Widening::OwnGrant))
            }
            ApiKeyCommand::AddGrant {
                issuer: Some(issuer),
                dataset_id,
                ..
            } if !issuer.may_grant(&dataset_id) => {
                return Err(ApiKeyError::Wider(Widening::Dataset))
            }
            ApiKeyCommand::AddGrant { dataset_id, .. } if self.grant_for(&dataset_id).is_some() => {
                return Ok(())
            }
            ApiKeyCommand::AddGrant {
                grant_id,
                dataset_id,
                ..
            } => ApiKeyEvent::ApiKeyGrantAdded {
                grant_id,
                dataset_id,
            },
            ApiKeyCommand::RemoveGrant { grant_id } => match self.grants.get(&grant_id) {
                Some(dataset_id) => ApiKeyEvent::ApiKeyGrantRemoved {
                    grant_id,
                    dataset_id: dataset_id.clone(),
                },
                None => return Err(ApiKeyError::GrantNotFound),
            },
        };
        sink.write(event, self).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type KeyTest = TestFramework<ApiKey>;

    fn profile(scopes: Vec<Scope>) -> KeyProfile {
        KeyProfile {
            api_key_id: ApiKeyId::generate(),
            tenant_id: TenantId::generate(),
            created_by: "usr_x".into(),
            name: "agent".into(),
            key_prefix: "abcd1234".into(),
            scopes,
            dataset_access_mode: AccessMode::AllowList,
            expires_at: None,
            spend_limit_micros: None,
        }
    }

    fn created() -> Vec<ApiKeyEvent> {
        vec![ApiKeyEvent::ApiKeyCreated(profile(vec![
            Scope::SearchQuery,
        ]))]
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn creating_a_key_records_its_profile() {
        let p = profile(vec![Scope::DatasetsRead]);
        KeyTest::with(())
            .given_no_previous_events()
            .when(ApiKeyCommand::Create(p.clone()))
            .then_expect_events(vec![ApiKeyEvent::ApiKeyCreated(p)]);
    }

    #[test]
    fn a_key_without_scopes_or_with_admin_scope_is_refused() {
        for scopes in [vec![], vec![Scope::Admin]] {
            KeyTest::with(())
                .given_no_previous_events()
                .when(ApiKeyCommand::Create(profile(scopes)))
                .then_expect_error(ApiKeyError::InvalidScopes);
        }
    }

    #[test]
    fn revoking_is_recorded_once() {
        KeyTest::with(())
            .given(created())
            .when(ApiKeyCommand::Revoke { at: at() })
            .then_expect_events(vec![ApiKeyEvent::ApiKeyRevoked { revoked_at: at() }]);
        let mut revoked = created();
        revoked.push(ApiKeyEvent::ApiKeyRevoked { revoked_at: at() });
        KeyTest::with(())
            .given(revoked)
            .when(ApiKeyCommand::Revoke { at: at() })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_dataset_is_granted_once() {
        let (grant_id, dataset_id) = (GrantId::generate(), DatasetId::generate());
        KeyTest::with(())
            .given(created())
            .when(ApiKeyCommand::AddGrant {
                grant_id: grant_id.clone(),
                dataset_id: dataset_id.clone(),
                issuer: None,
            })
            .then_expect_events(vec![ApiKeyEvent::ApiKeyGrantAdded {
                grant_id: grant_id.clone(),
                dataset_id: dataset_id.clone(),
            }]);
        let mut granted = created();
        granted.push(ApiKeyEvent::ApiKeyGrantAdded {
            grant_id,
            dataset_id: dataset_id.clone(),
        });
        KeyTest::with(())
            .given(granted)
            .when(ApiKeyCommand::AddGrant {
                grant_id: GrantId::generate(),
                dataset_id,
                issuer: None,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn granting_on_a_revoked_key_is_refused() {
        let mut revoked = created();
        revoked.push(ApiKeyEvent::ApiKeyRevoked { revoked_at: at() });
        KeyTest::with(())
            .given(revoked)
            .when(ApiKeyCommand::AddGrant {
                grant_id: GrantId::generate(),
                dataset_id: DatasetId::generate(),
                issuer: None,
            })
            .then_expect_error(ApiKeyError::Revoked);
    }

    #[test]
    fn removing_a_grant_names_its_dataset_and_an_unknown_grant_is_refused() {
        let (grant_id, dataset_id) = (GrantId::generate(), DatasetId::generate());
        let mut granted = created();
        granted.push(ApiKeyEvent::ApiKeyGrantAdded {
            grant_id: grant_id.clone(),
            dataset_id: dataset_id.clone(),
        });
        KeyTest::with(())
            .given(granted)
            .when(ApiKeyCommand::RemoveGrant {
                grant_id: grant_id.clone(),
            })
            .then_expect_events(vec![ApiKeyEvent::ApiKeyGrantRemoved {
                grant_id,
                dataset_id,
            }]);
        KeyTest::with(())
            .given(created())
            .when(ApiKeyCommand::RemoveGrant {
                grant_id: GrantId::generate(),
            })
            .then_expect_error(ApiKeyError::GrantNotFound);
    }

    #[test]
    fn the_state_knows_the_profile_revocation_and_grants() {
        let p = profile(vec![Scope::SearchQuery]);
        let (kept, removed) = (GrantId::generate(), GrantId::generate());
        let (dataset, other) = (DatasetId::generate(), DatasetId::generate());
        let mut key = ApiKey::default();
        assert_eq!(key.profile(), None);
        for event in [
            ApiKeyEvent::ApiKeyCreated(p.clone()),
            ApiKeyEvent::ApiKeyGrantAdded {
                grant_id: kept.clone(),
                dataset_id: dataset.clone(),
            },
            ApiKeyEvent::ApiKeyGrantAdded {
                grant_id: removed.clone(),
                dataset_id: other.clone(),
            },
            ApiKeyEvent::ApiKeyGrantRemoved {
                grant_id: removed,
                dataset_id: other.clone(),
            },
        ] {
            key.apply(event);
        }
        assert_eq!(key.profile(), Some(&p));
        assert_eq!(key.revoked_at(), None);
        assert_eq!(
            key.grants(),
            &BTreeMap::from([(kept.clone(), dataset.clone())])
        );
        assert_eq!(key.grant_for(&dataset), Some(&kept));
        assert_eq!(key.grant_for(&other), None);
        key.apply(ApiKeyEvent::ApiKeyRevoked { revoked_at: at() });
        assert_eq!(key.revoked_at(), Some(at()));
    }

    #[test]
    fn commands_on_an_unknown_key_are_not_found() {
        KeyTest::with(())
            .given_no_previous_events()
            .when(ApiKeyCommand::Revoke { at: at() })
            .then_expect_error(ApiKeyError::NotFound);
    }

    fn issuer(scopes: Vec<Scope>, mode: AccessMode, granted: Vec<DatasetId>) -> IssuingKey {
        IssuingKey {
            api_key_id: ApiKeyId::generate(),
            scopes,
            dataset_access_mode: mode,
            granted,
            expires_at: Some(at()),
        }
    }

    fn derived(mode: AccessMode, expires_at: Option<DateTime<Utc>>) -> KeyProfile {
        KeyProfile {
            dataset_access_mode: mode,
            expires_at,
            ..profile(vec![Scope::SearchQuery])
        }
    }

    #[test]
    fn a_key_may_derive_a_key_no_wider_than_itself() {
        let parent = issuer(
            vec![Scope::SearchQuery, Scope::KeysWrite],
            AccessMode::AllowList,
            vec![],
        );
        for child in [
            derived(AccessMode::AllowList, Some(at())),
            derived(
                AccessMode::AllowList,
                Some(at() - chrono::Duration::seconds(1)),
            ),
        ] {
            KeyTest::with(())
                .given_no_previous_events()
                .when(ApiKeyCommand::Derive {
                    profile: child.clone(),
                    issuer: parent.clone(),
                })
                .then_expect_events(vec![ApiKeyEvent::ApiKeyCreated(child)]);
        }
    }

    #[test]
    fn a_derived_key_wider_than_its_issuer_is_refused() {
        let parent = issuer(
            vec![Scope::SearchQuery, Scope::KeysWrite],
            AccessMode::AllowList,
            vec![],
        );
        let cases = [
            (
                KeyProfile {
                    scopes: vec![Scope::SearchQuery, Scope::DatasetsRead],
                    ..derived(AccessMode::AllowList, Some(at()))
                },
                Widening::Scope(Scope::DatasetsRead),
            ),
            (
                derived(AccessMode::AllAvailable, Some(at())),
                Widening::AccessMode,
            ),
            (derived(AccessMode::AllowList, None), Widening::Expiry),
            (
                derived(
                    AccessMode::AllowList,
                    Some(at() + chrono::Duration::seconds(1)),
                ),
                Widening::Expiry,
            ),
        ];
        for (child, widening) in cases {
            KeyTest::with(())
                .given_no_previous_events()
                .when(ApiKeyCommand::Derive {
                    profile: child,
                    issuer: parent.clone(),
                })
                .then_expect_error(ApiKeyError::Wider(widening));
        }
    }

    #[test]
    fn an_all_available_issuer_without_expiry_may_derive_any_mode_and_expiry() {
        let parent = IssuingKey {
            expires_at: None,
            ..issuer(vec![Scope::SearchQuery], AccessMode::AllAvailable, vec![])
        };
        for child in [
            derived(AccessMode::AllAvailable, None),
            derived(AccessMode::AllowList, Some(at())),
        ] {
            KeyTest::with(())
                .given_no_previous_events()
                .when(ApiKeyCommand::Derive {
                    profile: child.clone(),
                    issuer: parent.clone(),
                })
                .then_expect_events(vec![ApiKeyEvent::ApiKeyCreated(child)]);
        }
    }

    #[test]
    fn each_widening_says_what_the_caller_cannot_pass_on() {
        // The 403's message, capitalised by the HTTP layer.
        for (widening, reason) in [
            (
                Widening::Scope(Scope::BillingRead),
                "a key cannot hold billing:read, which the caller lacks",
            ),
            (
                Widening::AccessMode,
                "an allow_list key can only create allow_list keys",
            ),
            (
                Widening::Expiry,
                "a key cannot outlive the key that creates it",
            ),
            (
                Widening::Dataset,
                "an allow_list key can only grant datasets granted to it",
            ),
            (Widening::OwnGrant, "a key cannot grant datasets to itself"),
        ] {
            assert_eq!(ApiKeyError::Wider(widening).to_string(), reason);
        }
    }

    #[test]
    fn a_key_never_grants_to_itself() {
        let events = created();
        let ApiKeyEvent::ApiKeyCreated(own) = &events[0] else {
            unreachable!()
        };
        let myself = IssuingKey {
            api_key_id: own.api_key_id.clone(),
            ..issuer(vec![Scope::KeysWrite], AccessMode::AllAvailable, vec![])
        };
        KeyTest::with(())
            .given(events)
            .when(ApiKeyCommand::AddGrant {
                grant_id: GrantId::generate(),
                dataset_id: DatasetId::generate(),
                issuer: Some(myself),
            })
            .then_expect_error(ApiKeyError::Wider(Widening::OwnGrant));
    }

    #[test]
    fn an_allow_list_issuer_grants_only_what_it_is_granted() {
        let granted = DatasetId::generate();
        let other = DatasetId::generate();
        let parent = issuer(
            vec![Scope::KeysWrite],
            AccessMode::AllowList,
            vec![granted.clone()],
        );
        let grant_id = GrantId::generate();
        KeyTest::with(())
            .given(created())
            .when(ApiKeyCommand::AddGrant {
                grant_id: grant_id.clone(),
                dataset_id: granted.clone(),
                issuer: Some(parent.clone()),
            })
            .then_expect_events(vec![ApiKeyEvent::ApiKeyGrantAdded {
                grant_id,
                dataset_id: granted,
            }]);
        KeyTest::with(())
            .given(created())
            .when(ApiKeyCommand::AddGrant {
                grant_id: GrantId::generate(),
                dataset_id: other,
                issuer: Some(parent),
            })
            .then_expect_error(ApiKeyError::Wider(Widening::Dataset));
    }
}
