//! The log as auditors read it: one JSON object per event with its position and metadata.

use projections::StoredEvent;
use serde_json::{json, Value};

/// An event shaped like the items of `GET /v1/admin/events`.
pub fn event_json(event: &StoredEvent) -> Value {
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
        "position": event.cursor.position,
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
