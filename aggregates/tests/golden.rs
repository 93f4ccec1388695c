//! The event log's contract: every aggregate's stored type, every event's type and version, and a
//! sample of each event's JSON payload as the log stores it today (`tests/golden/<type>.json`).
//!
//! A log written today must be readable by every later version: each stored sample must still
//! deserialize into the event built here, and that event must serialize back to the same JSON.
//! A failure here means stored events would be misread or renamed. A deliberate new event or
//! version adds a row and a sample; a stored sample is never edited to make a change pass.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use aggregates::api_key::{AccessMode, ApiKeyEvent, KeyProfile};
use aggregates::dataset::{DatasetEvent, DatasetProfile};
use aggregates::email_reservation::{EmailReservationEvent, Joining, Signup};
use aggregates::metering::{Charge, Download, DownloadEvent};
use aggregates::object::{ObjectDescriptor, ObjectEvent};
use aggregates::payout::{PayoutEvent, PayoutStatement};
use aggregates::search::{Retrieval, Search, SearchEvent, SearchRecord};
use aggregates::spend::{KeySpend, SpendEvent};
use aggregates::user::{Profile, UserEvent};
use aggregates::*;

/// One stored event: what the event store keeps besides the aggregate id and sequence.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Stored {
    event_type: String,
    event_version: String,
    payload: Value,
}

/// A golden file: the aggregate's stored type and a sample of each of its events.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Golden {
    aggregate_type: String,
    events: Vec<Stored>,
}

/// Checks aggregate `A` against its table of event types and versions and its golden file.
fn check<A>(aggregate_type: &str, table: &[(&str, &str)], samples: Vec<A::Event>)
where
    A: Aggregate,
    A::Event: PartialEq + Debug,
{
    assert_eq!(A::TYPE, aggregate_type, "the aggregate type is stored");

    // Every row of the table has a sample, and every sample is a row of the table.
    let rows: Vec<(String, String)> = samples
        .iter()
        .map(|e| (e.event_type(), e.event_version()))
        .collect();
    for (event_type, version) in table {
        assert!(
            rows.iter().any(|(t, v)| t == event_type && v == version),
            "{aggregate_type}: no sample of {event_type} {version}"
        );
    }
    for (event_type, version) in &rows {
        assert!(
            table.contains(&(event_type.as_str(), version.as_str())),
            "{aggregate_type}: {event_type} {version} is not in the table"
        );
    }

    let built = Golden {
        aggregate_type: aggregate_type.to_owned(),
        events: samples
            .iter()
            .map(|e| Stored {
                event_type: e.event_type(),
                event_version: e.event_version(),
                payload: serde_json::to_value(e).unwrap(),
            })
            .collect(),
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{aggregate_type}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let stored: Golden = serde_json::from_str(&text).unwrap();
    assert_eq!(
        stored,
        built,
        "{} no longer matches the events; if the change is deliberate and old logs stay \
         readable, the new samples are:\n{}",
        path.display(),
        serde_json::to_string_pretty(&built).unwrap()
    );

    for (sample, stored) in samples.iter().zip(&stored.events) {
        // The payload is tagged with the variant name, which is the event type.
        let tag: Vec<&String> = stored.payload.as_object().unwrap().keys().collect();
        assert_eq!(tag, [&stored.event_type]);
        let read: A::Event = serde_json::from_value(stored.payload.clone())
            .unwrap_or_else(|e| panic!("{} {}: {e}", aggregate_type, stored.event_type));
        assert_eq!(&read, sample);
        assert_eq!(serde_json::to_value(&read).unwrap(), stored.payload);
    }
}

fn at(raw: &str) -> DateTime<Utc> {
    timestamp::parse(raw).unwrap()
}

fn tenant(n: u128) -> TenantId {
    TenantId::from_bits(n)
}

fn dataset_profile() -> DatasetProfile {
    DatasetProfile {
        dataset_id: DatasetId::from_bits(1),
        tenant_id: tenant(1),
        name: DatasetName::parse("AP Invoices").unwrap(),
        description: Description::parse("Scanned supplier invoices").unwrap(),
        source_modality: SourceModality::Document,
        monetization_mode: MonetizationMode::Premium,
        pricing_model: PricingModel::TimeDecay,
        visibility: Visibility::Restricted,
        price_per_result: Price::parse("0.05").unwrap(),
    }
}

#[test]
fn dataset_events() {
    let profile = dataset_profile();
    check::<Dataset>(
        "dataset",
        &[
            ("DatasetCreated", "1.0"),
            ("DatasetUpdated", "1.0"),
            ("DatasetDeletionRequested", "1.0"),
            ("DatasetDeleted", "1.0"),
            ("DatasetSuspended", "1.0"),
            ("EntitlementGranted", "1.0"),
            ("EntitlementRevoked", "1.0"),
        ],
        vec![
            DatasetEvent::DatasetCreated {
                profile: profile.clone(),
                status: DatasetStatus::Draft,
            },
            DatasetEvent::DatasetUpdated {
                profile: DatasetProfile {
                    price_per_result: Price::parse("2").unwrap(),
                    ..profile
                },
                status: DatasetStatus::Active,
                changed: vec!["price_per_result".into(), "status".into()],
            },
            DatasetEvent::DatasetDeletionRequested {
                tenant_id: tenant(1),
            },
            DatasetEvent::DatasetDeleted {
                tenant_id: tenant(1),
            },
            DatasetEvent::DatasetSuspended {
                tenant_id: tenant(1),
            },
            DatasetEvent::EntitlementGranted {
                tenant_id: tenant(2),
            },
            DatasetEvent::EntitlementRevoked {
                tenant_id: tenant(2),
            },
        ],
    );
}

#[test]
fn object_events() {
    let (dataset_id, tenant_id) = (DatasetId::from_bits(1), tenant(1));
    let sha = Sha256Hex::parse(&"ab".repeat(32)).unwrap();
    check::<Object>(
        "object",
        &[
            ("ObjectUploadInitiated", "1.0"),
            ("ObjectUploadConfirmed", "1.0"),
            ("ObjectUploadCancelled", "1.0"),
            ("ObjectApproved", "1.0"),
            ("ObjectRejected", "1.0"),
            ("ObjectDeleted", "1.0"),
        ],
        vec![
            ObjectEvent::ObjectUploadInitiated {
                descriptor: ObjectDescriptor {
                    object_id: ObjectId::from_bits(1),
                    dataset_id: dataset_id.clone(),
                    tenant_id: tenant_id.clone(),
                    filename: Filename::parse("inv-001.pdf").unwrap(),
                    content_type: ContentType::parse("application/pdf").unwrap(),
                    size_bytes: 52_133,
                    declared_sha256: Some(sha.clone()),
                    metadata: ObjectMetadata::parse(BTreeMap::from([(
                        "lang".to_owned(),
                        "en".to_owned(),
                    )]))
                    .unwrap(),
                },
                upload_expires_at: at("2027-01-01T01:00:00Z"),
            },
            ObjectEvent::ObjectUploadConfirmed {
                dataset_id: dataset_id.clone(),
                tenant_id: tenant_id.clone(),
                size_bytes: 52_133,
                sha256: sha,
                uploaded_at: at("2027-01-01T00:10:00.123456Z"),
                review_expires_at: at("2027-01-08T00:10:00.123456Z"),
            },
            ObjectEvent::ObjectUploadCancelled {
                dataset_id: dataset_id.clone(),
                tenant_id: tenant_id.clone(),
            },
            ObjectEvent::ObjectApproved {
                dataset_id: dataset_id.clone(),
                tenant_id: tenant_id.clone(),
                size_bytes: 52_133,
                note: Some("legible".into()),
                reviewed_at: at("2027-01-02T00:00:00Z"),
            },
            ObjectEvent::ObjectRejected {
                dataset_id: dataset_id.clone(),
                tenant_id: tenant_id.clone(),
                reason: ObjectEvent::REVIEW_EXPIRED.into(),
                reviewed_at: at("2027-01-08T00:10:00.123456Z"),
            },
            ObjectEvent::ObjectDeleted {
                dataset_id,
                tenant_id,
                previous: ObjectStatus::Approved,
                size_bytes: 52_133,
            },
        ],
    );
}

#[test]
fn api_key_events() {
    let profile = KeyProfile {
        api_key_id: ApiKeyId::from_bits(1),
        tenant_id: tenant(1),
        created_by: UserId::from_bits(1).to_string(),
        name: "ingest agent".into(),
        key_prefix: "abcd1234".into(),
        scopes: vec![Scope::DatasetsRead, Scope::SearchQuery],
        dataset_access_mode: AccessMode::AllowList,
        expires_at: Some(at("2027-06-01T00:00:00Z")),
        spend_limit_micros: Some(5_000_000),
    };
    check::<ApiKey>(
        "api_key",
        &[
            ("ApiKeyCreated", "1.0"),
            ("ApiKeyRevoked", "1.0"),
            ("ApiKeyGrantAdded", "1.0"),
            ("ApiKeyGrantRemoved", "1.0"),
        ],
        vec![
            ApiKeyEvent::ApiKeyCreated(profile.clone()),
            // As written before keys had spend limits, and by keys without one.
            ApiKeyEvent::ApiKeyCreated(KeyProfile {
                created_by: ApiKeyId::from_bits(1).to_string(),
                dataset_access_mode: AccessMode::AllAvailable,
                expires_at: None,
                spend_limit_micros: None,
                ..profile
            }),
            ApiKeyEvent::ApiKeyRevoked {
                revoked_at: at("2027-02-01T12:00:00Z"),
            },
            ApiKeyEvent::ApiKeyGrantAdded {
                grant_id: GrantId::from_bits(1),
                dataset_id: DatasetId::from_bits(1),
            },
            ApiKeyEvent::ApiKeyGrantRemoved {
                grant_id: GrantId::from_bits(1),
                dataset_id: DatasetId::from_bits(1),
            },
        ],
    );
}

#[test]
fn user_events() {
    check::<User>(
        "user",
        &[
            ("UserRegistered", "1.0"),
            ("UserLoggedIn", "1.0"),
            ("UserLoggedOut", "1.0"),
            ("PasswordChanged", "1.0"),
            ("PlatformAdminGranted", "1.0"),
        ],
        vec![
            UserEvent::UserRegistered(Profile {
                user_id: UserId::from_bits(1),
                tenant_id: tenant(1),
                email: Email::parse("ann@example.com").unwrap(),
                display_name: DisplayName::parse("Ann").unwrap(),
                roles: vec![Role::Owner, Role::SellerManager],
            }),
            UserEvent::UserLoggedIn {},
            UserEvent::UserLoggedOut {},
            UserEvent::PasswordChanged {},
            UserEvent::PlatformAdminGranted {},
        ],
    );
}

#[test]
fn tenant_events() {
    let user = UserId::from_bits;
    let invitation = InvitationId::from_bits(1);
    check::<Tenant>(
        "tenant",
        &[
            ("TenantCreated", "1.0"),
            ("FounderRecorded", "1.0"),
            ("MemberInvited", "1.0"),
            ("InvitationAccepted", "1.0"),
            ("InvitationRevoked", "1.0"),
            ("MemberRolesChanged", "1.0"),
            ("MemberRemoved", "1.0"),
            ("OwnershipTransferred", "1.0"),
        ],
        vec![
            // As stored before tenants recorded their owner.
            tenant::TenantEvent::TenantCreated {
                tenant_id: tenant(1),
                name: TenantName::parse("Acme").unwrap(),
                owner: None,
            },
            tenant::TenantEvent::TenantCreated {
                tenant_id: tenant(1),
                name: TenantName::parse("Acme").unwrap(),
                owner: Some(user(1)),
            },
            tenant::TenantEvent::FounderRecorded { user_id: user(1) },
            tenant::TenantEvent::MemberInvited {
                invitation_id: invitation.clone(),
                email: Email::parse("bob@example.com").unwrap(),
                roles: vec![Role::SellerManager, Role::Viewer],
                invited_by: user(1),
                invited_at: at("2027-01-15T08:30:00.000001Z"),
                expires_at: at("2027-01-22T08:30:00.000001Z"),
            },
            tenant::TenantEvent::InvitationAccepted {
                invitation_id: invitation.clone(),
                user_id: user(2),
                roles: vec![Role::SellerManager, Role::Viewer],
                invited_by: user(1),
                accepted_at: at("2027-01-16T09:00:00Z"),
            },
            tenant::TenantEvent::InvitationRevoked {
                invitation_id: invitation,
                revoked_by: user(1),
                revoked_at: at("2027-01-16T09:00:00Z"),
            },
            tenant::TenantEvent::MemberRolesChanged {
                user_id: user(2),
                roles: vec![Role::Operator],
                changed_by: user(1),
            },
            tenant::TenantEvent::MemberRemoved {
                user_id: user(2),
                removed_by: user(1),
                revoke_keys: true,
            },
            tenant::TenantEvent::OwnershipTransferred {
                from: user(1),
                to: user(3),
                from_roles: vec![Role::Admin],
                to_roles: vec![Role::Owner],
            },
        ],
    );
}

#[test]
fn login_events() {
    check::<Login>(
        "login",
        &[("LoggedIn", "1.0"), ("LoggedOut", "1.0")],
        vec![
            login::LoginEvent::LoggedIn {
                user_id: UserId::from_bits(1),
            },
            login::LoginEvent::LoggedOut {
                user_id: UserId::from_bits(1),
            },
        ],
    );
}

#[test]
fn email_reservation_events() {
    check::<EmailReservation>(
        "email_reservation",
        &[("EmailReserved", "1.0"), ("MemberEmailReserved", "1.0")],
        vec![
            EmailReservationEvent::EmailReserved(Signup {
                email: Email::parse("ann@example.com").unwrap(),
                user_id: UserId::from_bits(1),
                tenant_id: tenant(1),
                display_name: DisplayName::parse("Ann").unwrap(),
                tenant_name: TenantName::parse("Acme").unwrap(),
            }),
            EmailReservationEvent::MemberEmailReserved(Joining {
                email: Email::parse("bob@example.com").unwrap(),
                user_id: UserId::from_bits(2),
                tenant_id: tenant(1),
                display_name: DisplayName::parse("Bob").unwrap(),
                invitation_id: InvitationId::from_bits(1),
                accepted_at: at("2027-01-16T09:00:00Z"),
            }),
        ],
    );
}

fn a_charge(amount_micros: i64, api_key_id: Option<String>) -> Charge {
    Charge {
        access_id: AccessId::from_bits(1).to_string(),
        buyer_tenant_id: tenant(2),
        api_key_id,
        provider_tenant_id: tenant(1),
        dataset_id: DatasetId::from_bits(1),
        object_id: ObjectId::from_bits(1),
        amount_micros,
        fee_bps: 2000,
        occurred_at: at("2027-01-15T08:30:00.000001Z"),
    }
}

#[test]
fn download_events() {
    check::<Download>(
        "access",
        &[("DownloadCharged", "1.0")],
        vec![
            DownloadEvent::DownloadCharged(a_charge(500_000, None)),
            DownloadEvent::DownloadCharged(a_charge(
                10_000_000_000_000,
                Some(ApiKeyId::from_bits(1).to_string()),
            )),
        ],
    );
}

#[test]
fn search_events() {
    let record = SearchRecord {
        buyer_tenant_id: tenant(2),
        api_key_id: Some(ApiKeyId::from_bits(1).to_string()),
        query_text: "unpaid invoices".into(),
        dataset_ids: vec![DatasetId::from_bits(1), DatasetId::from_bits(2)],
        results: vec![
            Retrieval {
                retrieval_event_id: RetrievalId::from_bits(1).to_string(),
                object_id: ObjectId::from_bits(1),
                dataset_id: DatasetId::from_bits(1),
                provider_tenant_id: tenant(1),
                charge: Some(a_charge(50_000, Some(ApiKeyId::from_bits(1).to_string()))),
            },
            Retrieval {
                retrieval_event_id: RetrievalId::from_bits(2).to_string(),
                object_id: ObjectId::from_bits(2),
                dataset_id: DatasetId::from_bits(2),
                provider_tenant_id: tenant(2),
                charge: None,
            },
        ],
        occurred_at: at("2027-01-15T08:30:00.000001Z"),
    };
    check::<Search>(
        "search",
        &[("SearchPerformed", "1.0")],
        vec![SearchEvent::SearchPerformed(record)],
    );
}

#[test]
fn payout_statement_events() {
    check::<PayoutStatement>(
        "payout_statement",
        &[("PayoutStatementPaid", "1.0")],
        vec![PayoutEvent::PayoutStatementPaid {
            paid_at: at("2027-02-03T09:00:00Z"),
        }],
    );
}

#[test]
fn key_spend_events() {
    check::<KeySpend>(
        "key_spend",
        &[("SpendReserved", "1.0"), ("SpendReleased", "1.0")],
        vec![
            SpendEvent::SpendReserved {
                reservation_id: AccessId::from_bits(1).to_string(),
                amount_micros: 500_000,
                limit_micros: 5_000_000,
                spent_micros: 4_500_000,
            },
            SpendEvent::SpendReleased {
                reservation_id: AccessId::from_bits(1).to_string(),
                amount_micros: 500_000,
                spent_micros: 4_000_000,
            },
        ],
    );
}
