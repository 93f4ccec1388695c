//! The log as auditors read it (`GET /v1/admin/events`, `ipto events export`): one JSON object per
//! event with its place in the audit order (see [`projections::audit`]) and its metadata.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::openapi;

/// The aggregate types an audit read can be filtered on: those of SPEC §3.14, and `key_spend`
/// (a key's monthly spend reservations), `email_reservation` and `login` (a session opened by
/// login), whose events the log also holds.
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
    "login",
];

/// One recorded event. Without `position` and `leaf_hash`, its RFC 8785 canonical JSON is its
/// leaf of the audit tree ([`projections::audit::item`]).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// Its place in the audit order: 1, 2, 3, … (its Merkle leaf index + 1).
    #[schema(minimum = 1)]
    pub position: i64,
    /// Lowercase hex of `SHA-256(0x00 || JCS(the event without position and leaf_hash))`.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub leaf_hash: String,
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
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AuditMetadata {
    /// `usr_…`, `key_…` or `system`.
    #[schema(schema_with = actor)]
    pub actor: String,
    /// The tenant acted for, null for platform-level events.
    #[schema(required = true)]
    pub tenant_id: Option<String>,
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
    /// A numbered event as auditors read it: [`projections::audit::item`] with its position and
    /// leaf hash, so the shape served and the bytes hashed are one definition.
    pub fn new(event: &projections::audit::AuditEvent) -> Self {
        let mut item = projections::audit::item(&event.event);
        item["position"] = event.position.into();
        item["leaf_hash"] = event.leaf_hash.clone().into();
        serde_json::from_value(item).expect("an audit item has the AuditEvent shape")
    }
}

/// Heads are kept at every multiple of this many events (and hourly).
pub const HEAD_EVERY: u64 = 10_000;

/// The tree's current head, signed now.
pub async fn current_head(
    db: &projections::Db,
    key: &crate::notary::AuditKey,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<crate::notary::SignedHead, projections::audit::TreeError> {
    let tree = projections::audit::Tree { db };
    let size = tree.size().await?;
    let root = tree.root(size).await?;
    Ok(key.sign(size, &root, now))
}

/// Keeps the heads that are due: one at each multiple of [`HEAD_EVERY`] not yet kept, and the
/// current one when the newest kept is an hour old and the tree has grown. The number kept.
pub async fn keep_heads(
    db: &projections::Db,
    key: &crate::notary::AuditKey,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<usize, projections::audit::TreeError> {
    use sqlx::Row;
    let tree = projections::audit::Tree { db };
    let size = tree.size().await?;
    let newest =
        sqlx::query("SELECT tree_size, signed_at FROM audit_heads ORDER BY tree_size DESC LIMIT 1")
            .fetch_optional(&db.pool)
            .await?;
    let (kept, kept_at) = match newest {
        Some(row) => (
            row.try_get::<i64, _>("tree_size")? as u64,
            chrono::DateTime::parse_from_rfc3339(&row.try_get::<String, _>("signed_at")?)
                .map(|t| t.to_utc())
                .ok(),
        ),
        None => (0, None),
    };
    let mut due: Vec<u64> = (kept / HEAD_EVERY + 1..=size / HEAD_EVERY)
        .map(|k| k * HEAD_EVERY)
        .collect();
    let hourly = kept_at.is_none_or(|at| now - at >= chrono::Duration::hours(1));
    if hourly && size > kept && due.last() != Some(&size) {
        due.push(size);
    }
    for tree_size in &due {
        let head = key.sign(*tree_size, &tree.root(*tree_size).await?, now);
        // Another instance may keep the same head first.
        sqlx::query(
            "INSERT INTO audit_heads (tree_size, root_hash, signed_at, key_id, signature) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tree_size) DO NOTHING",
        )
        .bind(head.tree_size as i64)
        .bind(&head.root_hash)
        .bind(&head.signed_at)
        .bind(&head.key_id)
        .bind(&head.signature)
        .execute(&db.pool)
        .await?;
    }
    Ok(due.len())
}

/// Up to `limit` kept heads above tree size `after`, ascending.
pub async fn kept_heads(
    db: &projections::Db,
    after: i64,
    limit: i64,
) -> Result<Vec<crate::notary::SignedHead>, sqlx::Error> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT tree_size, root_hash, signed_at, key_id, signature FROM audit_heads \
         WHERE tree_size > $1 ORDER BY tree_size LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(crate::notary::SignedHead {
                tree_size: row.try_get::<i64, _>("tree_size")? as u64,
                root_hash: row.try_get("root_hash")?,
                signed_at: row.try_get("signed_at")?,
                key_id: row.try_get("key_id")?,
                signature: row.try_get("signature")?,
            })
        })
        .collect()
}

/// An RFC 6962 audit path.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InclusionProof {
    #[schema(minimum = 1)]
    pub position: u64,
    #[schema(minimum = 1)]
    pub tree_size: u64,
    /// The event's leaf hash, hex.
    pub leaf_hash: String,
    /// Sibling hashes from the leaf up, hex.
    pub audit_path: Vec<String>,
    /// The root of the tree of `tree_size` leaves, hex.
    pub root_hash: String,
}

/// The inclusion proof of `position` in the tree of `tree_size` leaves.
pub async fn prove(
    db: &projections::Db,
    position: u64,
    tree_size: u64,
) -> Result<InclusionProof, projections::audit::TreeError> {
    let tree = projections::audit::Tree { db };
    Ok(InclusionProof {
        position,
        tree_size,
        leaf_hash: hex::encode(tree.leaf(position).await?),
        audit_path: tree
            .inclusion(position, tree_size)
            .await?
            .into_iter()
            .map(hex::encode)
            .collect(),
        root_hash: hex::encode(tree.root(tree_size).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::Aggregate;

    #[test]
    fn the_served_item_is_the_hashed_item_plus_position_and_leaf_hash() {
        let event = projections::StoredEvent {
            cursor: projections::LogPosition { tx: 0, position: 9 },
            aggregate_type: "dataset".into(),
            aggregate_id: "dset_1".into(),
            sequence: 2,
            event_type: "DatasetRenamed".into(),
            event_version: "1.0".into(),
            payload: r#"{"DatasetRenamed":{"name":"n","price":0.05}}"#.into(),
            metadata: projections::EventMetadata {
                actor_id: "usr_1".into(),
                tenant_id: Some("tnt_1".into()),
                occurred_at: "2026-12-02T00:00:00Z".into(),
                ..Default::default()
            },
            opened: None,
        };
        let numbered = projections::audit::AuditEvent {
            position: 3,
            leaf_hash: "ab".repeat(32),
            event: event.clone(),
        };
        let mut served = serde_json::to_value(AuditEvent::new(&numbered)).unwrap();
        assert_eq!(
            served["payload"],
            serde_json::json!({"name": "n", "price": 0.05})
        );
        let object = served.as_object_mut().unwrap();
        assert_eq!(object.remove("position"), Some(3.into()));
        assert!(object.remove("leaf_hash").is_some());
        assert_eq!(served, projections::audit::item(&event));
    }

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
