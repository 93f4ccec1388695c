//! The log as auditors read it (`GET /v1/admin/events`, `ipto events export`): one JSON object per
//! event with its place in the audit order (see [`projections::audit`]) and its metadata.

use projections::StoredEvent;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::openapi;

/// The aggregate types an audit read can be filtered on: those of SPEC §3.14, and `key_spend`
/// (a key's monthly spend reservations) and `email_reservation`, whose events the log also holds.
pub const AGGREGATE_TYPES: &[&str] = &[
    "tenant",
    "user",
    "dataset",
    "object",
    "api_key",
    "search",
    "access",
    "payout_statement",
    "key_spend",
    "email_reservation",
];

/// One recorded event.
#[derive(Serialize, ToSchema)]
pub struct AuditEvent {
    /// Its place in the log: unique and increasing (gaps allowed).
    #[schema(minimum = 1)]
    pub position: i64,
    /// The kind of aggregate.
    #[schema(schema_with = aggregate_type)]
    pub aggregate_type: String,
    /// The aggregate.
    pub aggregate_id: String,
    /// 1-based per aggregate.
    #[schema(minimum = 1)]
    pub sequence: i64,
    /// E.g. `ObjectApproved`.
    pub event_type: String,
    /// E.g. `1.0`.
    pub event_version: String,
    /// The event's fields; never passwords, hashes, tokens or key secrets.
    #[schema(value_type = Value)]
    pub payload: Value,
    /// Who, when, in which request.
    pub metadata: AuditMetadata,
}

/// The circumstances of an event.
#[derive(Serialize, ToSchema)]
pub struct AuditMetadata {
    /// `usr_…`, `key_…` or `system`.
    #[schema(schema_with = actor)]
    pub actor: String,
    /// The request, null for background jobs.
    #[schema(required = true)]
    pub request_id: Option<String>,
    /// When it happened.
    #[schema(format = DateTime)]
    pub occurred_at: String,
}

fn actor() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let id = |prefix: &str| {
        openapi::id_pattern(prefix)
            .trim_matches(['^', '$'])
            .to_owned()
    };
    openapi::text(64, &format!("^({}|{}|system)$", id("usr"), id("key")))
}

/// One of [`AGGREGATE_TYPES`].
pub fn aggregate_type() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice(&AGGREGATE_TYPES.join("|"))
}

impl AuditEvent {
    /// `event` at audit position `position`, its payload's fields without the variant's tag.
    pub fn new(position: i64, event: &StoredEvent) -> Self {
        let payload: Value = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
        // cqrs-es stores the enum externally tagged: `{"Variant": {...}}`; auditors want the fields.
        let payload = match payload {
            Value::Object(map) if map.len() == 1 && map.contains_key(&event.event_type) => map
                .into_iter()
                .next()
                .map(|(_, v)| v)
                .unwrap_or(Value::Null),
            other => other,
        };
        let actor = match event.metadata.actor_id.as_str() {
            "" => "system".to_owned(),
            actor => actor.to_owned(),
        };
        Self {
            position,
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
            event_type: event.event_type.clone(),
            event_version: event.event_version.clone(),
            payload,
            metadata: AuditMetadata {
                actor,
                request_id: event.metadata.request_id.clone(),
                occurred_at: event.metadata.occurred_at.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::Aggregate;

    #[test]
    fn every_aggregate_of_the_service_can_be_filtered_on() {
        for kind in [
            aggregates::Tenant::TYPE,
            aggregates::User::TYPE,
            aggregates::Dataset::TYPE,
            aggregates::Object::TYPE,
            aggregates::ApiKey::TYPE,
            aggregates::metering::Download::TYPE,
            aggregates::payout::PayoutStatement::TYPE,
            aggregates::EmailReservation::TYPE,
        ] {
            assert!(AGGREGATE_TYPES.contains(&kind), "{kind}");
        }
    }
}
