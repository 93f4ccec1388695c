//! The object: one uploaded file, from upload through review to deletion (SPEC §4.1). The bytes
//! live in the blob store; the service verifies them before it confirms.

mod command;
mod error;
mod event;
mod values;

pub use command::ObjectCommand;
pub use error::ObjectError;
pub use event::ObjectEvent;
pub use values::{
    ContentType, Filename, ObjectFieldError, ObjectMetadata, ObjectStatus, Sha256Hex,
};

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::dataset::DatasetStatus;
use crate::{DatasetId, ObjectId, TenantId};

/// What was declared when the upload started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectDescriptor {
    pub object_id: ObjectId,
    pub dataset_id: DatasetId,
    pub tenant_id: TenantId,
    pub filename: Filename,
    pub content_type: ContentType,
    pub size_bytes: u64,
    pub declared_sha256: Option<Sha256Hex>,
    pub metadata: ObjectMetadata,
}

/// Object state, rebuilt from its events.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Object {
    descriptor: Option<ObjectDescriptor>,
    status: Option<ObjectStatus>,
    upload_expires_at: Option<DateTime<Utc>>,
    checksum_sha256: Option<Sha256Hex>,
    uploaded_at: Option<DateTime<Utc>>,
    review_expires_at: Option<DateTime<Utc>>,
    review_state: Option<ObjectStatus>,
    reviewed_at: Option<DateTime<Utc>>,
    review_note: Option<String>,
    rejection_reason: Option<String>,
}

impl Object {
    /// The declared descriptor, unless never initiated.
    pub fn descriptor(&self) -> Option<&ObjectDescriptor> {
        self.descriptor.as_ref()
    }

    /// The status, unless never initiated.
    pub fn status(&self) -> Option<ObjectStatus> {
        self.status
    }

    /// When the signed upload URL expires.
    pub fn upload_expires_at(&self) -> Option<DateTime<Utc>> {
        self.upload_expires_at
    }

    /// The server-computed digest, from confirmation on.
    pub fn checksum_sha256(&self) -> Option<&Sha256Hex> {
        self.checksum_sha256.as_ref()
    }

    /// When the upload was confirmed.
    pub fn uploaded_at(&self) -> Option<DateTime<Utc>> {
        self.uploaded_at
    }

    /// When an unreviewed upload is rejected as `review_expired`.
    pub fn review_expires_at(&self) -> Option<DateTime<Utc>> {
        self.review_expires_at
    }

    /// `staged`, `approved` or `rejected` once confirmed; a deleted object keeps its last value.
    pub fn review_state(&self) -> Option<ObjectStatus> {
        self.review_state
    }

    /// When it was approved, rejected or its review expired.
    pub fn reviewed_at(&self) -> Option<DateTime<Utc>> {
        self.reviewed_at
    }

    /// The reviewer's note on approval.
    pub fn review_note(&self) -> Option<&str> {
        self.review_note.as_deref()
    }

    /// The reason (or `review_expired`) while the review state is `rejected`.
    pub fn rejection_reason(&self) -> Option<&str> {
        self.rejection_reason.as_deref()
    }
}

impl Aggregate for Object {
    const TYPE: &'static str = "object";
    type Command = ObjectCommand;
    type Event = ObjectEvent;
    type Error = ObjectError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ObjectCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ObjectError> {
        use ObjectStatus::*;
        if let ObjectCommand::InitiateUpload {
            descriptor,
            upload_expires_at,
            dataset,
        } = command
        {
            if self.descriptor.is_some() {
                return Err(ObjectError::AlreadyExists);
            }
            admit(dataset)?;
            sink.write(
                ObjectEvent::ObjectUploadInitiated {
                    descriptor,
                    upload_expires_at,
                },
                self,
            )
            .await;
            return Ok(());
        }
        let (Some(descriptor), Some(status)) = (&self.descriptor, self.status) else {
            return Err(ObjectError::NotFound);
        };
        let (dataset_id, tenant_id, size_bytes) = (
            descriptor.dataset_id.clone(),
            descriptor.tenant_id.clone(),
            descriptor.size_bytes,
        );
        let event = match command {
            ObjectCommand::InitiateUpload { .. } => unreachable!("handled above"),
            ObjectCommand::ConfirmUpload {
                sha256,
                uploaded_at,
                review_expires_at,
                dataset,
            } => match status {
                PendingUpload => {
                    admit(dataset)?;
                    ObjectEvent::ObjectUploadConfirmed {
                        dataset_id,
                        tenant_id,
                        size_bytes,
                        sha256,
                        uploaded_at,
                        review_expires_at,
                    }
                }
                // A retried confirm answers with the current object.
                Staged | Approved | Rejected => return Ok(()),
                Cancelled | Deleted => return Err(ObjectError::InvalidState(status)),
            },
            ObjectCommand::CancelUpload => match status {
                PendingUpload => ObjectEvent::ObjectUploadCancelled {
                    dataset_id,
                    tenant_id,
                },
                _ => return Err(ObjectError::InvalidState(status)),
            },
            // A review needs the dataset before the object's own state.
            ObjectCommand::Approve {
                note,
                reviewed_at,
                dataset,
            } => {
                admit(dataset)?;
                match status {
                    Staged => ObjectEvent::ObjectApproved {
                        dataset_id,
                        tenant_id,
                        size_bytes,
                        note,
                        reviewed_at,
                    },
                    _ => return Err(ObjectError::InvalidState(status)),
                }
            }
            ObjectCommand::Reject {
                reason,
                reviewed_at,
                dataset,
            } => {
                admit(dataset)?;
                match status {
                    Staged => ObjectEvent::ObjectRejected {
                        dataset_id,
                        tenant_id,
                        reason,
                        reviewed_at,
                    },
                    _ => return Err(ObjectError::InvalidState(status)),
                }
            }
            ObjectCommand::ExpireReview { reviewed_at } => match status {
                Staged => ObjectEvent::ObjectRejected {
                    dataset_id,
                    tenant_id,
                    reason: ObjectEvent::REVIEW_EXPIRED.to_owned(),
                    reviewed_at,
                },
                _ => return Err(ObjectError::InvalidState(status)),
            },
            ObjectCommand::Delete => match status {
                PendingUpload | Staged | Approved | Rejected => ObjectEvent::ObjectDeleted {
                    dataset_id,
                    tenant_id,
                    previous: status,
                    size_bytes,
                },
                Cancelled | Deleted => return Err(ObjectError::InvalidState(status)),
            },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: ObjectEvent) {
        use ObjectStatus::*;
        let next = match event {
            ObjectEvent::ObjectUploadInitiated {
                descriptor,
                upload_expires_at,
            } => {
                self.descriptor = Some(descriptor);
                self.upload_expires_at = Some(upload_expires_at);
                PendingUpload
            }
            ObjectEvent::ObjectUploadConfirmed {
                sha256,
                uploaded_at,
                review_expires_at,
                ..
            } => {
                self.checksum_sha256 = Some(sha256);
                self.uploaded_at = Some(uploaded_at);
                self.review_expires_at = Some(review_expires_at);
                self.review_state = Some(Staged);
                Staged
            }
            ObjectEvent::ObjectUploadCancelled { .. } => Cancelled,
            ObjectEvent::ObjectApproved {
                note, reviewed_at, ..
            } => {
                self.review_state = Some(Approved);
                self.reviewed_at = Some(reviewed_at);
                self.review_note = note;
                Approved
            }
            ObjectEvent::ObjectRejected {
                reason,
                reviewed_at,
                ..
            } => {
                self.review_state = Some(Rejected);
                self.reviewed_at = Some(reviewed_at);
                self.rejection_reason = Some(reason);
                Rejected
            }
            ObjectEvent::ObjectDeleted { .. } => Deleted,
        };
        self.status = Some(next);
    }
}

/// Uploads, confirms and reviews need a dataset that is not being deleted (SPEC §4.2).
fn admit(dataset: DatasetStatus) -> Result<(), ObjectError> {
    if dataset.is_being_deleted() {
        Err(ObjectError::DatasetState(dataset))
    } else {
        Ok(())
    }
}

/// Whether the owner may download an object in `status` of a dataset in `dataset` (free and
/// unrecorded): staged or approved bytes, while the dataset is not being deleted. Otherwise the
/// refusal names the object's status.
pub fn owner_download(status: ObjectStatus, dataset: DatasetStatus) -> Result<(), ObjectError> {
    match status {
        ObjectStatus::Staged | ObjectStatus::Approved if !dataset.is_being_deleted() => Ok(()),
        _ => Err(ObjectError::InvalidState(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent;
    use ObjectStatus::*;

    type ObjectTest = TestFramework<Object>;

    fn descriptor() -> ObjectDescriptor {
        ObjectDescriptor {
            object_id: ObjectId::generate(),
            dataset_id: DatasetId::generate(),
            tenant_id: TenantId::generate(),
            filename: Filename::parse("inv-001.txt").unwrap(),
            content_type: ContentType::parse("text/plain").unwrap(),
            size_bytes: 11,
            declared_sha256: None,
            metadata: ObjectMetadata::default(),
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn sha() -> Sha256Hex {
        Sha256Hex::parse(&"ab".repeat(32)).unwrap()
    }

    /// The events that bring an object to `status`.
    fn history(status: ObjectStatus) -> (ObjectDescriptor, Vec<ObjectEvent>) {
        let d = descriptor();
        let (ds, t) = (d.dataset_id.clone(), d.tenant_id.clone());
        let mut events = vec![ObjectEvent::ObjectUploadInitiated {
            descriptor: d.clone(),
            upload_expires_at: at(3600),
        }];
        let confirmed = ObjectEvent::ObjectUploadConfirmed {
            dataset_id: ds.clone(),
            tenant_id: t.clone(),
            size_bytes: 11,
            sha256: sha(),
            uploaded_at: at(10),
            review_expires_at: at(10 + 7 * 86400),
        };
        match status {
            PendingUpload => {}
            Cancelled => events.push(ObjectEvent::ObjectUploadCancelled {
                dataset_id: ds,
                tenant_id: t,
            }),
            Staged => events.push(confirmed),
            Approved => {
                events.push(confirmed);
                events.push(ObjectEvent::ObjectApproved {
                    dataset_id: ds,
                    tenant_id: t,
                    size_bytes: 11,
                    note: None,
                    reviewed_at: at(20),
                });
            }
            Rejected => {
                events.push(confirmed);
                events.push(ObjectEvent::ObjectRejected {
                    dataset_id: ds,
                    tenant_id: t,
                    reason: "blurry".into(),
                    reviewed_at: at(20),
                });
            }
            Deleted => events.push(ObjectEvent::ObjectDeleted {
                dataset_id: ds,
                tenant_id: t,
                previous: PendingUpload,
                size_bytes: 11,
            }),
        }
        (d, events)
    }

    #[test]
    fn initiating_an_upload_records_the_declaration() {
        let d = descriptor();
        ObjectTest::with(())
            .given_no_previous_events()
            .when(ObjectCommand::InitiateUpload {
                dataset: DatasetStatus::Active,
                descriptor: d.clone(),
                upload_expires_at: at(3600),
            })
            .then_expect_events(vec![ObjectEvent::ObjectUploadInitiated {
                descriptor: d,
                upload_expires_at: at(3600),
            }]);
    }

    #[test]
    fn nothing_is_uploaded_into_a_dataset_being_deleted() {
        for dataset in [DatasetStatus::PendingDeletion, DatasetStatus::Deleted] {
            ObjectTest::with(())
                .given_no_previous_events()
                .when(ObjectCommand::InitiateUpload {
                    dataset,
                    descriptor: descriptor(),
                    upload_expires_at: at(3600),
                })
                .then_expect_error(ObjectError::DatasetState(dataset));
        }
    }

    #[test]
    fn a_pending_upload_is_not_confirmed_once_its_dataset_is_being_deleted() {
        let (_, events) = history(PendingUpload);
        ObjectTest::with(())
            .given(events)
            .when(ObjectCommand::ConfirmUpload {
                dataset: DatasetStatus::PendingDeletion,
                sha256: sha(),
                uploaded_at: at(10),
                review_expires_at: at(20),
            })
            .then_expect_error(ObjectError::DatasetState(DatasetStatus::PendingDeletion));
    }

    #[test]
    fn a_retried_confirm_still_answers_while_the_dataset_is_being_deleted() {
        let (_, events) = history(Staged);
        ObjectTest::with(())
            .given(events)
            .when(ObjectCommand::ConfirmUpload {
                dataset: DatasetStatus::PendingDeletion,
                sha256: sha(),
                uploaded_at: at(10),
                review_expires_at: at(20),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn no_review_happens_while_the_dataset_is_being_deleted_whatever_the_object() {
        let dataset = DatasetStatus::PendingDeletion;
        let reviews = [
            ObjectCommand::Approve {
                dataset,
                note: None,
                reviewed_at: at(30),
            },
            ObjectCommand::Reject {
                dataset,
                reason: "late".into(),
                reviewed_at: at(30),
            },
        ];
        for status in [Staged, Approved] {
            for review in reviews.clone() {
                ObjectTest::with(())
                    .given(history(status).1)
                    .when(review)
                    .then_expect_error(ObjectError::DatasetState(dataset));
            }
        }
    }

    #[test]
    fn owners_download_staged_or_approved_bytes_of_a_dataset_not_being_deleted() {
        for status in ObjectStatus::ALL {
            for dataset in DatasetStatus::ALL {
                let allowed = matches!(status, Staged | Approved) && !dataset.is_being_deleted();
                let expected = if allowed {
                    Ok(())
                } else {
                    Err(ObjectError::InvalidState(*status))
                };
                assert_eq!(
                    owner_download(*status, *dataset),
                    expected,
                    "{status} in {dataset}"
                );
            }
        }
    }

    #[test]
    fn initiating_over_an_existing_object_is_refused() {
        let (d, events) = history(PendingUpload);
        ObjectTest::with(())
            .given(events)
            .when(ObjectCommand::InitiateUpload {
                dataset: DatasetStatus::Active,
                descriptor: d,
                upload_expires_at: at(1),
            })
            .then_expect_error(ObjectError::AlreadyExists);
    }

    #[test]
    fn confirming_a_pending_upload_stages_it() {
        let (d, events) = history(PendingUpload);
        ObjectTest::with(())
            .given(events)
            .when(ObjectCommand::ConfirmUpload {
                dataset: DatasetStatus::Active,
                sha256: sha(),
                uploaded_at: at(10),
                review_expires_at: at(20),
            })
            .then_expect_events(vec![ObjectEvent::ObjectUploadConfirmed {
                dataset_id: d.dataset_id,
                tenant_id: d.tenant_id,
                size_bytes: 11,
                sha256: sha(),
                uploaded_at: at(10),
                review_expires_at: at(20),
            }]);
    }

    #[test]
    fn confirming_a_reviewed_or_staged_object_again_changes_nothing() {
        for status in [Staged, Approved, Rejected] {
            ObjectTest::with(())
                .given(history(status).1)
                .when(ObjectCommand::ConfirmUpload {
                    dataset: DatasetStatus::Active,
                    sha256: sha(),
                    uploaded_at: at(30),
                    review_expires_at: at(40),
                })
                .then_expect_events(vec![]);
        }
    }

    #[test]
    fn confirming_a_cancelled_or_deleted_object_is_refused() {
        for status in [Cancelled, Deleted] {
            ObjectTest::with(())
                .given(history(status).1)
                .when(ObjectCommand::ConfirmUpload {
                    dataset: DatasetStatus::Active,
                    sha256: sha(),
                    uploaded_at: at(30),
                    review_expires_at: at(40),
                })
                .then_expect_error(ObjectError::InvalidState(status));
        }
    }

    #[test]
    fn only_a_pending_upload_can_be_cancelled() {
        let (d, events) = history(PendingUpload);
        ObjectTest::with(())
            .given(events)
            .when(ObjectCommand::CancelUpload)
            .then_expect_events(vec![ObjectEvent::ObjectUploadCancelled {
                dataset_id: d.dataset_id,
                tenant_id: d.tenant_id,
            }]);
        for status in [Staged, Approved, Rejected, Cancelled, Deleted] {
            ObjectTest::with(())
                .given(history(status).1)
                .when(ObjectCommand::CancelUpload)
                .then_expect_error(ObjectError::InvalidState(status));
        }
    }

    #[test]
    fn approving_a_staged_object_records_the_note() {
        let (d, events) = history(Staged);
        ObjectTest::with(())
            .given(events)
            .when(ObjectCommand::Approve {
                dataset: DatasetStatus::Active,
                note: Some("fine".into()),
                reviewed_at: at(50),
            })
            .then_expect_events(vec![ObjectEvent::ObjectApproved {
                dataset_id: d.dataset_id,
                tenant_id: d.tenant_id,
                size_bytes: 11,
                note: Some("fine".into()),
                reviewed_at: at(50),
            }]);
    }

    #[test]
    fn approving_or_rejecting_anything_but_a_staged_object_is_refused() {
        for status in [PendingUpload, Approved, Rejected, Cancelled, Deleted] {
            ObjectTest::with(())
                .given(history(status).1)
                .when(ObjectCommand::Approve {
                    dataset: DatasetStatus::Active,
                    note: None,
                    reviewed_at: at(50),
                })
                .then_expect_error(ObjectError::InvalidState(status));
            ObjectTest::with(())
                .given(history(status).1)
                .when(ObjectCommand::Reject {
                    dataset: DatasetStatus::Active,
                    reason: "no".into(),
                    reviewed_at: at(50),
                })
                .then_expect_error(ObjectError::InvalidState(status));
        }
    }

    #[test]
    fn rejecting_a_staged_object_records_the_reason() {
        let (d, events) = history(Staged);
        ObjectTest::with(())
            .given(events)
            .when(ObjectCommand::Reject {
                dataset: DatasetStatus::Active,
                reason: "blurry".into(),
                reviewed_at: at(50),
            })
            .then_expect_events(vec![ObjectEvent::ObjectRejected {
                dataset_id: d.dataset_id,
                tenant_id: d.tenant_id,
                reason: "blurry".into(),
                reviewed_at: at(50),
            }]);
    }

    #[test]
    fn an_expired_review_rejects_with_review_expired() {
        let (d, events) = history(Staged);
        ObjectTest::with(())
            .given(events)
            .when(ObjectCommand::ExpireReview {
                reviewed_at: at(60),
            })
            .then_expect_events(vec![ObjectEvent::ObjectRejected {
                dataset_id: d.dataset_id,
                tenant_id: d.tenant_id,
                reason: "review_expired".into(),
                reviewed_at: at(60),
            }]);
        ObjectTest::with(())
            .given(history(Approved).1)
            .when(ObjectCommand::ExpireReview {
                reviewed_at: at(60),
            })
            .then_expect_error(ObjectError::InvalidState(Approved));
    }

    #[test]
    fn deleting_records_the_previous_status_and_size() {
        for status in [PendingUpload, Staged, Approved, Rejected] {
            let (d, events) = history(status);
            ObjectTest::with(())
                .given(events)
                .when(ObjectCommand::Delete)
                .then_expect_events(vec![ObjectEvent::ObjectDeleted {
                    dataset_id: d.dataset_id,
                    tenant_id: d.tenant_id,
                    previous: status,
                    size_bytes: 11,
                }]);
        }
        for status in [Cancelled, Deleted] {
            ObjectTest::with(())
                .given(history(status).1)
                .when(ObjectCommand::Delete)
                .then_expect_error(ObjectError::InvalidState(status));
        }
    }

    #[test]
    fn commands_on_an_unknown_object_are_not_found() {
        for command in every_command_but_initiate() {
            ObjectTest::with(())
                .given_no_previous_events()
                .when(command)
                .then_expect_error(ObjectError::NotFound);
        }
    }

    #[test]
    fn initiating_over_a_deleted_object_is_still_refused() {
        let (d, events) = history(Deleted);
        ObjectTest::with(())
            .given(events)
            .when(ObjectCommand::InitiateUpload {
                dataset: DatasetStatus::Active,
                descriptor: d,
                upload_expires_at: at(1),
            })
            .then_expect_error(ObjectError::AlreadyExists);
    }

    #[test]
    fn approving_a_rejected_object_is_refused() {
        ObjectTest::with(())
            .given(history(Rejected).1)
            .when(ObjectCommand::Approve {
                dataset: DatasetStatus::Active,
                note: None,
                reviewed_at: at(50),
            })
            .then_expect_error(ObjectError::InvalidState(Rejected));
    }

    #[test]
    fn rejecting_an_approved_object_is_refused() {
        ObjectTest::with(())
            .given(history(Approved).1)
            .when(ObjectCommand::Reject {
                dataset: DatasetStatus::Active,
                reason: "late".into(),
                reviewed_at: at(50),
            })
            .then_expect_error(ObjectError::InvalidState(Approved));
    }

    #[test]
    fn confirming_a_staged_object_again_changes_nothing() {
        ObjectTest::with(())
            .given(history(Staged).1)
            .when(ObjectCommand::ConfirmUpload {
                dataset: DatasetStatus::Active,
                sha256: Sha256Hex::parse(&"cd".repeat(32)).unwrap(),
                uploaded_at: at(30),
                review_expires_at: at(40),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_approval_after_the_review_expired_is_refused() {
        let (d, mut events) = history(Staged);
        events.push(ObjectEvent::ObjectRejected {
            dataset_id: d.dataset_id,
            tenant_id: d.tenant_id,
            reason: ObjectEvent::REVIEW_EXPIRED.into(),
            reviewed_at: at(60),
        });
        ObjectTest::with(())
            .given(events)
            .when(ObjectCommand::Approve {
                dataset: DatasetStatus::Active,
                note: None,
                reviewed_at: at(61),
            })
            .then_expect_error(ObjectError::InvalidState(Rejected));
    }

    #[test]
    fn only_a_staged_review_can_expire() {
        for status in [PendingUpload, Approved, Rejected, Cancelled, Deleted] {
            ObjectTest::with(())
                .given(history(status).1)
                .when(ObjectCommand::ExpireReview {
                    reviewed_at: at(60),
                })
                .then_expect_error(ObjectError::InvalidState(status));
        }
    }

    #[test]
    fn a_deleted_object_refuses_every_further_command() {
        for command in every_command_but_initiate() {
            ObjectTest::with(())
                .given(history(Deleted).1)
                .when(command)
                .then_expect_error(ObjectError::InvalidState(Deleted));
        }
    }

    #[test]
    fn a_cancelled_object_refuses_every_further_command() {
        for command in every_command_but_initiate() {
            ObjectTest::with(())
                .given(history(Cancelled).1)
                .when(command)
                .then_expect_error(ObjectError::InvalidState(Cancelled));
        }
    }

    #[test]
    fn the_state_exposes_what_the_service_answers_with() {
        let mut object = Object::default();
        let (_, events) = history(PendingUpload);
        events.into_iter().for_each(|e| object.apply(e));
        assert_eq!(object.status(), Some(PendingUpload));
        assert_eq!(object.review_state(), None);
        assert_eq!(object.checksum_sha256(), None);
        assert_eq!(object.upload_expires_at(), Some(at(3600)));

        let (_, events) = history(Rejected);
        let mut object = Object::default();
        events.into_iter().for_each(|e| object.apply(e));
        assert_eq!(object.status(), Some(Rejected));
        assert_eq!(object.review_state(), Some(Rejected));
        assert_eq!(object.checksum_sha256(), Some(&sha()));
        assert_eq!(object.uploaded_at(), Some(at(10)));
        assert_eq!(object.review_expires_at(), Some(at(10 + 7 * 86400)));
        assert_eq!(object.reviewed_at(), Some(at(20)));
        assert_eq!(object.rejection_reason(), Some("blurry"));

        let d = object.descriptor().cloned().unwrap();
        object.apply(ObjectEvent::ObjectDeleted {
            dataset_id: d.dataset_id,
            tenant_id: d.tenant_id,
            previous: Rejected,
            size_bytes: 11,
        });
        assert_eq!(object.status(), Some(Deleted));
        assert_eq!(object.review_state(), Some(Rejected), "kept after deletion");
        assert_eq!(object.rejection_reason(), Some("blurry"));
    }

    #[test]
    fn an_approval_records_its_note_in_the_state() {
        let (_, events) = history(Approved);
        let mut object = Object::default();
        events.into_iter().for_each(|e| object.apply(e));
        assert_eq!(object.review_state(), Some(Approved));
        assert_eq!(object.review_note(), None);
        assert_eq!(object.rejection_reason(), None);

        let (d, mut events) = history(Staged);
        events.push(ObjectEvent::ObjectApproved {
            dataset_id: d.dataset_id,
            tenant_id: d.tenant_id,
            size_bytes: 11,
            note: Some("legible".into()),
            reviewed_at: at(30),
        });
        let mut object = Object::default();
        events.into_iter().for_each(|e| object.apply(e));
        assert_eq!(object.review_note(), Some("legible"));
        assert_eq!(object.reviewed_at(), Some(at(30)));
    }

    #[test]
    fn event_types_are_the_variant_names_at_version_one() {
        let mut names = Vec::new();
        for status in [PendingUpload, Cancelled, Approved, Rejected, Deleted] {
            for event in history(status).1 {
                assert_eq!(event.event_version(), "1.0");
                let json = serde_json::to_value(&event).unwrap();
                let variant = json.as_object().unwrap().keys().next().unwrap().clone();
                assert_eq!(event.event_type(), variant);
                names.push(event.event_type());
            }
        }
        names.sort();
        names.dedup();
        assert_eq!(
            names,
            [
                "ObjectApproved",
                "ObjectDeleted",
                "ObjectRejected",
                "ObjectUploadCancelled",
                "ObjectUploadConfirmed",
                "ObjectUploadInitiated"
            ]
        );
    }

    fn every_command_but_initiate() -> Vec<ObjectCommand> {
        vec![
            ObjectCommand::ConfirmUpload {
                dataset: DatasetStatus::Active,
                sha256: sha(),
                uploaded_at: at(30),
                review_expires_at: at(40),
            },
            ObjectCommand::CancelUpload,
            ObjectCommand::Approve {
                dataset: DatasetStatus::Active,
                note: None,
                reviewed_at: at(50),
            },
            ObjectCommand::Reject {
                dataset: DatasetStatus::Active,
                reason: "no".into(),
                reviewed_at: at(50),
            },
            ObjectCommand::ExpireReview {
                reviewed_at: at(60),
            },
            ObjectCommand::Delete,
        ]
    }
}
