//! The log as auditors read it (`GET /v1/admin/events`, `ipto events export`): one JSON object per
//! event with its place in the audit order (see [`projections::audit`]) and its metadata.

use projections::StoredEvent;
use serde_json::{json, Value};

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

/// An event shaped like the items of `GET /v1/admin/events`, at audit position `position`.
pub fn event_json(position: i64, event: &StoredEvent) -> Value {
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
    json!({
        "position": position,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "sequence": event.sequence,
        "event_type": event.event_type,
        "event_version": event.event_version,
        "payload": payload,
        "metadata": {
            "actor": if event.metadata.actor_id.is_empty() { "system" } else { event.metadata.actor_id.as_str() },
            "request_id": event.metadata.request_id,
            "occurred_at": event.metadata.occurred_at,
        },
    })
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
