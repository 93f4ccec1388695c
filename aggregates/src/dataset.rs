//! The dataset: a provider's collection of objects, its listing terms and its entitlements.

mod command;
mod error;
mod event;
mod values;

pub use command::{DatasetCommand, DatasetPatch};
pub use error::DatasetError;
pub use event::DatasetEvent;
pub use values::{
    DatasetName, DatasetStatus, Description, MonetizationMode, PricingModel, SourceModality,
    Visibility,
};

use std::collections::BTreeSet;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::money::Price;
use crate::{DatasetId, TenantId};

/// Everything a dataset says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetProfile {
    pub dataset_id: DatasetId,
    pub tenant_id: TenantId,
    pub name: DatasetName,
    pub description: Description,
    pub source_modality: SourceModality,
    pub monetization_mode: MonetizationMode,
    pub pricing_model: PricingModel,
    pub visibility: Visibility,
    pub price_per_result: Price,
}

/// Dataset state, rebuilt from its events.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Dataset {
    profile: Option<DatasetProfile>,
    status: Option<DatasetStatus>,
    entitlements: BTreeSet<TenantId>,
}

impl Dataset {
    /// The profile, unless never created.
    pub fn profile(&self) -> Option<&DatasetProfile> {
        self.profile.as_ref()
    }

    /// The status, unless never created.
    pub fn status(&self) -> Option<DatasetStatus> {
        self.status
    }

    /// Tenants entitled to this (restricted) dataset.
    pub fn entitlements(&self) -> &BTreeSet<TenantId> {
        &self.entitlements
    }

    fn live(&self) -> Result<(&DatasetProfile, DatasetStatus), DatasetError> {
        match (&self.profile, self.status) {
            (Some(profile), Some(status)) if status != DatasetStatus::Deleted => {
                Ok((profile, status))
            }
            _ => Err(DatasetError::NotFound),
        }
    }
}

impl Aggregate for Dataset {
    const TYPE: &'static str = "dataset";
    type Command = DatasetCommand;
    type Event = DatasetEvent;
    type Error = DatasetError;
    type Services = ();

    async fn handle(
        &mut self,
        command: DatasetCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DatasetError> {
        use DatasetStatus::*;
        if let DatasetCommand::Create { profile, status } = command {
            if self.profile.is_some() {
                return Err(DatasetError::AlreadyExists);
            }
            if !matches!(status, Draft | Active) {
                return Err(DatasetError::StatusNotAllowed(status));
            }
            sink.write(DatasetEvent::DatasetCreated { profile, status }, self)
                .await;
            return Ok(());
        }
        let (profile, status) = self.live()?;
        let (profile, tenant_id) = (profile.clone(), profile.tenant_id.clone());
        let event = match command {
            DatasetCommand::Create { .. } => unreachable!("handled above"),
            DatasetCommand::Update(patch) => {
                // Validation (422) before state (409), as in SPEC §1.11.
                if let Some(target) = patch.status {
                    if !matches!(target, Draft | Active | Paused) {
                        return Err(DatasetError::StatusNotAllowed(target));
                    }
                }
                if matches!(status, Suspended | PendingDeletion) {
                    return Err(DatasetError::InvalidState(status));
                }
                let (updated, new_status, changed) = patch.apply(&profile, status);
                if changed.is_empty() {
                    return Ok(());
                }
                DatasetEvent::DatasetUpdated {
                    profile: updated,
                    status: new_status,
                    changed,
                }
            }
            DatasetCommand::RequestDeletion => {
                if status == PendingDeletion {
                    return Err(DatasetError::InvalidState(status));
                }
                DatasetEvent::DatasetDeletionRequested { tenant_id }
            }
            DatasetCommand::CompleteDeletion => {
                if status != PendingDeletion {
                    return Err(DatasetError::InvalidState(status));
                }
                DatasetEvent::DatasetDeleted { tenant_id }
            }
            DatasetCommand::Suspend => {
                if matches!(status, Suspended | PendingDeletion) {
                    return Err(DatasetError::InvalidState(status));
                }
                DatasetEvent::DatasetSuspended { tenant_id }
            }
            DatasetCommand::GrantEntitlement { tenant_id: grantee } => {
                if grantee == tenant_id {
                    return Err(DatasetError::OwnTenant);
                }
                if status == PendingDeletion {
                    return Err(DatasetError::InvalidState(status));
                }
                if self.entitlements.contains(&grantee) {
                    return Ok(());
                }
                DatasetEvent::EntitlementGranted { tenant_id: grantee }
            }
            DatasetCommand::RevokeEntitlement { tenant_id: grantee } => {
                if !self.entitlements.contains(&grantee) {
                    return Err(DatasetError::NotEntitled);
                }
                DatasetEvent::EntitlementRevoked { tenant_id: grantee }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: DatasetEvent) {
        match event {
            DatasetEvent::DatasetCreated { profile, status }
            | DatasetEvent::DatasetUpdated {
                profile, status, ..
            } => {
                self.profile = Some(profile);
                self.status = Some(status);
            }
            DatasetEvent::DatasetDeletionRequested { .. } => {
                self.status = Some(DatasetStatus::PendingDeletion)
            }
            DatasetEvent::DatasetDeleted { .. } => {
                self.status = Some(DatasetStatus::Deleted);
                self.entitlements.clear();
            }
            DatasetEvent::DatasetSuspended { .. } => self.status = Some(DatasetStatus::Suspended),
            DatasetEvent::EntitlementGranted { tenant_id } => {
                self.entitlements.insert(tenant_id);
            }
            DatasetEvent::EntitlementRevoked { tenant_id } => {
                self.entitlements.remove(&tenant_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent;
    use DatasetStatus::*;

    type DatasetTest = TestFramework<Dataset>;

    fn profile() -> DatasetProfile {
        DatasetProfile {
            dataset_id: DatasetId::generate(),
            tenant_id: TenantId::generate(),
            name: DatasetName::parse("AP Invoices").unwrap(),
            description: Description::default(),
            source_modality: SourceModality::Document,
            monetization_mode: MonetizationMode::Premium,
            pricing_model: PricingModel::Fixed,
            visibility: Visibility::Listed,
            price_per_result: Price::parse("0.05").unwrap(),
        }
    }

    fn created(status: DatasetStatus) -> (DatasetProfile, Vec<DatasetEvent>) {
        let profile = profile();
        let mut events = vec![DatasetEvent::DatasetCreated {
            profile: profile.clone(),
            status: Active,
        }];
        match status {
            Active => {}
            Draft | Paused => events.push(DatasetEvent::DatasetUpdated {
                profile: profile.clone(),
                status,
                changed: vec!["status".into()],
            }),
            Suspended => events.push(DatasetEvent::DatasetSuspended {
                tenant_id: profile.tenant_id.clone(),
            }),
            PendingDeletion => events.push(DatasetEvent::DatasetDeletionRequested {
                tenant_id: profile.tenant_id.clone(),
            }),
            Deleted => {
                events.push(DatasetEvent::DatasetDeletionRequested {
                    tenant_id: profile.tenant_id.clone(),
                });
                events.push(DatasetEvent::DatasetDeleted {
                    tenant_id: profile.tenant_id.clone(),
                });
            }
        }
        (profile, events)
    }

    #[test]
    fn creating_a_dataset_records_its_profile_and_status() {
        let profile = profile();
        DatasetTest::with(())
            .given_no_previous_events()
            .when(DatasetCommand::Create {
                profile: profile.clone(),
                status: Draft,
            })
            .then_expect_events(vec![DatasetEvent::DatasetCreated {
                profile,
                status: Draft,
            }]);
    }

    #[test]
    fn creating_a_dataset_as_paused_is_refused() {
        DatasetTest::with(())
            .given_no_previous_events()
            .when(DatasetCommand::Create {
                profile: profile(),
                status: Paused,
            })
            .then_expect_error(DatasetError::StatusNotAllowed(Paused));
    }

    #[test]
    fn creating_over_an_existing_dataset_is_refused() {
        let (profile, events) = created(Active);
        DatasetTest::with(())
            .given(events)
            .when(DatasetCommand::Create {
                profile,
                status: Active,
            })
            .then_expect_error(DatasetError::AlreadyExists);
    }

    #[test]
    fn patching_records_the_new_profile_and_what_changed() {
        let (profile, events) = created(Active);
        let mut expected = profile.clone();
        expected.name = DatasetName::parse("Renamed").unwrap();
        let patch = DatasetPatch {
            name: Some(expected.name.clone()),
            visibility: Some(Visibility::Listed),
            status: Some(Paused),
            ..DatasetPatch::default()
        };
        DatasetTest::with(())
            .given(events)
            .when(DatasetCommand::Update(patch))
            .then_expect_events(vec![DatasetEvent::DatasetUpdated {
                profile: expected,
                status: Paused,
                changed: vec!["name".into(), "status".into()],
            }]);
    }

    #[test]
    fn a_patch_that_changes_nothing_records_nothing() {
        let (profile, events) = created(Active);
        let patch = DatasetPatch {
            name: Some(profile.name.clone()),
            status: Some(Active),
            ..DatasetPatch::default()
        };
        DatasetTest::with(())
            .given(events)
            .when(DatasetCommand::Update(patch))
            .then_expect_events(vec![]);
    }

    #[test]
    fn patching_a_suspended_or_deleting_dataset_is_refused() {
        for status in [Suspended, PendingDeletion] {
            DatasetTest::with(())
                .given(created(status).1)
                .when(DatasetCommand::Update(DatasetPatch::default()))
                .then_expect_error(DatasetError::InvalidState(status));
        }
    }

    #[test]
    fn patching_the_status_to_suspended_is_refused() {
        let patch = DatasetPatch {
            status: Some(Suspended),
            ..DatasetPatch::default()
        };
        DatasetTest::with(())
            .given(created(Active).1)
            .when(DatasetCommand::Update(patch))
            .then_expect_error(DatasetError::StatusNotAllowed(Suspended));
    }

    #[test]
    fn deletion_is_requested_from_any_live_status_once() {
        for status in [Draft, Active, Paused, Suspended] {
            let (profile, events) = created(status);
            DatasetTest::with(())
                .given(events)
                .when(DatasetCommand::RequestDeletion)
                .then_expect_events(vec![DatasetEvent::DatasetDeletionRequested {
                    tenant_id: profile.tenant_id,
                }]);
        }
        DatasetTest::with(())
            .given(created(PendingDeletion).1)
            .when(DatasetCommand::RequestDeletion)
            .then_expect_error(DatasetError::InvalidState(PendingDeletion));
    }

    #[test]
    fn deletion_completes_only_after_it_was_requested() {
        let (profile, events) = created(PendingDeletion);
        DatasetTest::with(())
            .given(events)
            .when(DatasetCommand::CompleteDeletion)
            .then_expect_events(vec![DatasetEvent::DatasetDeleted {
                tenant_id: profile.tenant_id,
            }]);
        DatasetTest::with(())
            .given(created(Active).1)
            .when(DatasetCommand::CompleteDeletion)
            .then_expect_error(DatasetError::InvalidState(Active));
    }

    #[test]
    fn anything_on_a_deleted_or_unknown_dataset_is_not_found() {
        DatasetTest::with(())
            .given(created(Deleted).1)
            .when(DatasetCommand::RequestDeletion)
            .then_expect_error(DatasetError::NotFound);
        DatasetTest::with(())
            .given_no_previous_events()
            .when(DatasetCommand::Update(DatasetPatch::default()))
            .then_expect_error(DatasetError::NotFound);
    }

    #[test]
    fn a_live_dataset_can_be_suspended() {
        let (profile, events) = created(Paused);
        DatasetTest::with(())
            .given(events)
            .when(DatasetCommand::Suspend)
            .then_expect_events(vec![DatasetEvent::DatasetSuspended {
                tenant_id: profile.tenant_id,
            }]);
    }

    #[test]
    fn entitlements_are_granted_once_and_revoked() {
        let (_, events) = created(Active);
        let buyer = TenantId::generate();
        DatasetTest::with(())
            .given(events.clone())
            .when(DatasetCommand::GrantEntitlement {
                tenant_id: buyer.clone(),
            })
            .then_expect_events(vec![DatasetEvent::EntitlementGranted {
                tenant_id: buyer.clone(),
            }]);
        let mut granted = events;
        granted.push(DatasetEvent::EntitlementGranted {
            tenant_id: buyer.clone(),
        });
        DatasetTest::with(())
            .given(granted.clone())
            .when(DatasetCommand::GrantEntitlement {
                tenant_id: buyer.clone(),
            })
            .then_expect_events(vec![]);
        DatasetTest::with(())
            .given(granted)
            .when(DatasetCommand::RevokeEntitlement {
                tenant_id: buyer.clone(),
            })
            .then_expect_events(vec![DatasetEvent::EntitlementRevoked { tenant_id: buyer }]);
    }

    #[test]
    fn entitling_the_own_tenant_or_revoking_a_missing_entitlement_is_refused() {
        let (profile, events) = created(Active);
        DatasetTest::with(())
            .given(events.clone())
            .when(DatasetCommand::GrantEntitlement {
                tenant_id: profile.tenant_id,
            })
            .then_expect_error(DatasetError::OwnTenant);
        DatasetTest::with(())
            .given(events)
            .when(DatasetCommand::RevokeEntitlement {
                tenant_id: TenantId::generate(),
            })
            .then_expect_error(DatasetError::NotEntitled);
        DatasetTest::with(())
            .given(created(PendingDeletion).1)
            .when(DatasetCommand::GrantEntitlement {
                tenant_id: TenantId::generate(),
            })
            .then_expect_error(DatasetError::InvalidState(PendingDeletion));
    }

    fn every_command_but_create() -> Vec<DatasetCommand> {
        vec![
            DatasetCommand::Update(DatasetPatch {
                name: Some(DatasetName::parse("Other").unwrap()),
                ..DatasetPatch::default()
            }),
            DatasetCommand::RequestDeletion,
            DatasetCommand::CompleteDeletion,
            DatasetCommand::Suspend,
            DatasetCommand::GrantEntitlement {
                tenant_id: TenantId::generate(),
            },
            DatasetCommand::RevokeEntitlement {
                tenant_id: TenantId::generate(),
            },
        ]
    }

    fn state_after(events: Vec<DatasetEvent>) -> Dataset {
        let mut dataset = Dataset::default();
        events.into_iter().for_each(|e| dataset.apply(e));
        dataset
    }

    #[test]
    fn creating_a_dataset_as_active_records_it() {
        let profile = profile();
        DatasetTest::with(())
            .given_no_previous_events()
            .when(DatasetCommand::Create {
                profile: profile.clone(),
                status: Active,
            })
            .then_expect_events(vec![DatasetEvent::DatasetCreated {
                profile,
                status: Active,
            }]);
    }

    #[test]
    fn creating_a_dataset_in_a_status_clients_cannot_set_is_refused() {
        for status in [Suspended, PendingDeletion, Deleted] {
            DatasetTest::with(())
                .given_no_previous_events()
                .when(DatasetCommand::Create {
                    profile: profile(),
                    status,
                })
                .then_expect_error(DatasetError::StatusNotAllowed(status));
        }
    }

    #[test]
    fn creating_over_a_deleted_dataset_is_refused() {
        let (profile, events) = created(Deleted);
        DatasetTest::with(())
            .given(events)
            .when(DatasetCommand::Create {
                profile,
                status: Active,
            })
            .then_expect_error(DatasetError::AlreadyExists);
    }

    #[test]
    fn every_command_on_an_unknown_dataset_is_not_found() {
        for command in every_command_but_create() {
            DatasetTest::with(())
                .given_no_previous_events()
                .when(command)
                .then_expect_error(DatasetError::NotFound);
        }
    }

    #[test]
    fn every_command_on_a_deleted_dataset_is_not_found() {
        for command in every_command_but_create() {
            DatasetTest::with(())
                .given(created(Deleted).1)
                .when(command)
                .then_expect_error(DatasetError::NotFound);
        }
    }

    #[test]
    fn the_status_moves_freely_between_draft_active_and_paused() {
        for from in [Draft, Active, Paused] {
            for to in [Draft, Active, Paused] {
                let (profile, events) = created(from);
                let patch = DatasetPatch {
                    status: Some(to),
                    ..DatasetPatch::default()
                };
                let expected = if from == to {
                    vec![]
                } else {
                    vec![DatasetEvent::DatasetUpdated {
                        profile,
                        status: to,
                        changed: vec!["status".into()],
                    }]
                };
                DatasetTest::with(())
                    .given(events)
                    .when(DatasetCommand::Update(patch))
                    .then_expect_events(expected);
            }
        }
    }

    #[test]
    fn a_patch_records_every_field_it_changes_and_the_complete_result() {
        let (profile, events) = created(Active);
        let expected = DatasetProfile {
            name: DatasetName::parse("Receipts").unwrap(),
            description: Description::parse("Scanned receipts").unwrap(),
            source_modality: SourceModality::Image,
            monetization_mode: MonetizationMode::OutcomeShare,
            pricing_model: PricingModel::DemandCurve,
            visibility: Visibility::Restricted,
            price_per_result: Price::parse("1.5").unwrap(),
            ..profile
        };
        let patch = DatasetPatch {
            name: Some(expected.name.clone()),
            description: Some(expected.description.clone()),
            source_modality: Some(expected.source_modality),
            monetization_mode: Some(expected.monetization_mode),
            pricing_model: Some(expected.pricing_model),
            visibility: Some(expected.visibility),
            price_per_result: Some(expected.price_per_result),
            status: Some(Draft),
        };
        let changed = [
            "name",
            "description",
            "source_modality",
            "monetization_mode",
            "pricing_model",
            "visibility",
            "price_per_result",
            "status",
        ];
        DatasetTest::with(())
            .given(events)
            .when(DatasetCommand::Update(patch))
            .then_expect_events(vec![DatasetEvent::DatasetUpdated {
                profile: expected,
                status: Draft,
                changed: changed.iter().map(|f| f.to_string()).collect(),
            }]);
    }

    #[test]
    fn changing_the_monetization_mode_keeps_the_price() {
        let (profile, events) = created(Active);
        let patch = DatasetPatch {
            monetization_mode: Some(MonetizationMode::Open),
            ..DatasetPatch::default()
        };
        let expected = DatasetProfile {
            monetization_mode: MonetizationMode::Open,
            ..profile.clone()
        };
        assert_eq!(expected.price_per_result, profile.price_per_result);
        DatasetTest::with(())
            .given(events)
            .when(DatasetCommand::Update(patch))
            .then_expect_events(vec![DatasetEvent::DatasetUpdated {
                profile: expected,
                status: Active,
                changed: vec!["monetization_mode".into()],
            }]);
    }

    #[test]
    fn an_empty_patch_records_nothing() {
        DatasetTest::with(())
            .given(created(Paused).1)
            .when(DatasetCommand::Update(DatasetPatch::default()))
            .then_expect_events(vec![]);
    }

    #[test]
    fn patching_a_suspended_dataset_is_refused() {
        let patch = DatasetPatch {
            name: Some(DatasetName::parse("Renamed").unwrap()),
            ..DatasetPatch::default()
        };
        DatasetTest::with(())
            .given(created(Suspended).1)
            .when(DatasetCommand::Update(patch))
            .then_expect_error(DatasetError::InvalidState(Suspended));
    }

    #[test]
    fn an_unsettable_status_is_refused_before_the_state_is_considered() {
        for target in [Suspended, PendingDeletion, Deleted] {
            let patch = DatasetPatch {
                status: Some(target),
                ..DatasetPatch::default()
            };
            DatasetTest::with(())
                .given(created(PendingDeletion).1)
                .when(DatasetCommand::Update(patch))
                .then_expect_error(DatasetError::StatusNotAllowed(target));
        }
    }

    #[test]
    fn deleting_a_dataset_twice_is_refused() {
        DatasetTest::with(())
            .given(created(PendingDeletion).1)
            .when(DatasetCommand::RequestDeletion)
            .then_expect_error(DatasetError::InvalidState(PendingDeletion));
    }

    #[test]
    fn deletion_cannot_complete_before_it_was_requested() {
        for status in [Draft, Active, Paused, Suspended] {
            DatasetTest::with(())
                .given(created(status).1)
                .when(DatasetCommand::CompleteDeletion)
                .then_expect_error(DatasetError::InvalidState(status));
        }
    }

    #[test]
    fn any_live_status_can_be_suspended() {
        for status in [Draft, Active, Paused] {
            let (profile, events) = created(status);
            DatasetTest::with(())
                .given(events)
                .when(DatasetCommand::Suspend)
                .then_expect_events(vec![DatasetEvent::DatasetSuspended {
                    tenant_id: profile.tenant_id,
                }]);
        }
    }

    #[test]
    fn suspending_a_suspended_or_deleting_dataset_is_refused() {
        for status in [Suspended, PendingDeletion] {
            DatasetTest::with(())
                .given(created(status).1)
                .when(DatasetCommand::Suspend)
                .then_expect_error(DatasetError::InvalidState(status));
        }
    }

    #[test]
    fn entitlements_can_be_granted_in_every_status_but_pending_deletion() {
        for status in [Draft, Active, Paused, Suspended] {
            let buyer = TenantId::generate();
            DatasetTest::with(())
                .given(created(status).1)
                .when(DatasetCommand::GrantEntitlement {
                    tenant_id: buyer.clone(),
                })
                .then_expect_events(vec![DatasetEvent::EntitlementGranted { tenant_id: buyer }]);
        }
    }

    #[test]
    fn entitling_the_own_tenant_is_refused() {
        let (profile, events) = created(Active);
        DatasetTest::with(())
            .given(events)
            .when(DatasetCommand::GrantEntitlement {
                tenant_id: profile.tenant_id,
            })
            .then_expect_error(DatasetError::OwnTenant);
    }

    #[test]
    fn revoking_a_revoked_entitlement_is_not_found() {
        let (_, mut events) = created(Active);
        let buyer = TenantId::generate();
        events.push(DatasetEvent::EntitlementGranted {
            tenant_id: buyer.clone(),
        });
        events.push(DatasetEvent::EntitlementRevoked {
            tenant_id: buyer.clone(),
        });
        DatasetTest::with(())
            .given(events)
            .when(DatasetCommand::RevokeEntitlement { tenant_id: buyer })
            .then_expect_error(DatasetError::NotEntitled);
    }

    #[test]
    fn the_state_tracks_status_profile_and_entitlements() {
        let (profile, mut events) = created(Active);
        let buyer = TenantId::generate();
        events.push(DatasetEvent::EntitlementGranted {
            tenant_id: buyer.clone(),
        });
        let dataset = state_after(events.clone());
        assert_eq!(dataset.status(), Some(Active));
        assert_eq!(dataset.profile(), Some(&profile));
        assert!(dataset.entitlements().contains(&buyer));

        events.push(DatasetEvent::DatasetDeletionRequested {
            tenant_id: profile.tenant_id.clone(),
        });
        events.push(DatasetEvent::DatasetDeleted {
            tenant_id: profile.tenant_id,
        });
        let dataset = state_after(events);
        assert_eq!(dataset.status(), Some(Deleted));
        assert!(dataset.entitlements().is_empty(), "cleanup removes them");
    }

    #[test]
    fn event_types_are_the_variant_names_at_version_one() {
        let (profile, mut events) = created(Deleted);
        events.push(DatasetEvent::DatasetUpdated {
            profile: profile.clone(),
            status: Paused,
            changed: vec!["status".into()],
        });
        events.push(DatasetEvent::DatasetSuspended {
            tenant_id: profile.tenant_id.clone(),
        });
        events.push(DatasetEvent::EntitlementGranted {
            tenant_id: profile.tenant_id.clone(),
        });
        events.push(DatasetEvent::EntitlementRevoked {
            tenant_id: profile.tenant_id,
        });
        let mut names = Vec::new();
        for event in events {
            assert_eq!(event.event_version(), "1.0");
            let json = serde_json::to_value(&event).unwrap();
            let variant = json.as_object().unwrap().keys().next().unwrap().clone();
            assert_eq!(event.event_type(), variant);
            names.push(event.event_type());
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 7);
    }

    #[test]
    fn created_events_carry_the_price_as_a_json_number() {
        let profile = profile();
        let json = serde_json::to_value(DatasetEvent::DatasetCreated {
            profile,
            status: Active,
        })
        .unwrap();
        assert_eq!(
            json["DatasetCreated"]["profile"]["price_per_result"],
            serde_json::json!(0.05)
        );
    }

    #[test]
    fn events_survive_the_event_stores_json_round_trip() {
        for price in [
            "0",
            "0.000001",
            "0.000012",
            "0.05",
            "2",
            "123456.789012",
            "1000000",
        ] {
            let event = DatasetEvent::DatasetCreated {
                profile: DatasetProfile {
                    price_per_result: Price::parse(price).unwrap(),
                    ..profile()
                },
                status: Draft,
            };
            let value = serde_json::to_value(&event).unwrap();
            assert_eq!(
                serde_json::from_value::<DatasetEvent>(value.clone()).unwrap(),
                event
            );
            let text = value.to_string();
            assert_eq!(
                serde_json::from_str::<DatasetEvent>(&text).unwrap(),
                event,
                "{text}"
            );
        }
    }
}
