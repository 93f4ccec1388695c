//! The audit order: every event numbered 1, 2, 3, … in the order the projector engine visits the
//! log, for `GET /v1/admin/events` and `ipto events export`.
//!
//! PostgreSQL hands out `global_position` at insert time, so transactions can commit out of position
//! order: a reader that pages on `global_position` could return 17 and later meet 16. The engine
//! already walks the log in an order that never changes once read (`(transaction_id,
//! global_position)` below the oldest running transaction, see [`crate::log`]), the same live and
//! on rebuild. Numbering events along that walk gives positions that only grow as events become
//! visible, without any lock on the write path. On SQLite the walk is `global_position` order and
//! the numbers equal the global positions.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::{AnyConnection, Row};

use crate::log::{self, StoredEvent};
use crate::merkle::{self, Hash, Node};
use crate::{Db, Dialect, Projection, ProjectionError, Reads};

/// The projection's name, as its checkpoint and progress are reported.
pub const NAME: &str = "audit_order";

/// The `audit_order` table.
pub struct AuditOrderProjection;

#[async_trait]
impl Projection for AuditOrderProjection {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> i64 {
        3
    }
    fn tables(&self) -> &'static [&'static str] {
        &["audit_order", "audit_tree"]
    }
    fn reads(&self) -> Reads {
        Reads::All
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_all(conn, &[event]).await.map_err(|(_, e)| e)
    }

    /// The batch numbered after the rows before it, in walk order, with multi-row inserts (the
    /// audit order reads every event, so a rebuild otherwise spends a statement per event of the
    /// log here alone), and the tree's new leaves and completed subtrees. Batches are applied one
    /// at a time; a concurrent batch that collides on the unique keys loses the checkpoint race
    /// and starts over.
    async fn apply_all(
        &self,
        conn: &mut AnyConnection,
        events: &[&StoredEvent],
    ) -> Result<(), (i64, ProjectionError)> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let failed = |e: sqlx::Error| (first.cursor.position, ProjectionError::from(e));
        let size: i64 = sqlx::query("SELECT COALESCE(MAX(position), 0) AS size FROM audit_order")
            .fetch_one(&mut *conn)
            .await
            .and_then(|row| row.try_get("size"))
            .map_err(failed)?;
        for (offset, chunk) in events.chunks(AUDIT_ROWS_PER_INSERT).enumerate() {
            let base = size + (offset * AUDIT_ROWS_PER_INSERT) as i64;
            let sql = format!(
                "INSERT INTO audit_order \
                 (position, global_position, aggregate_type, aggregate_id, tenant_id) VALUES {}",
                placeholders(chunk.len(), 5)
            );
            let mut query = sqlx::query(&sql);
            for (i, event) in chunk.iter().enumerate() {
                query = query
                    .bind(base + i as i64 + 1)
                    .bind(event.cursor.position)
                    .bind(&event.aggregate_type)
                    .bind(&event.aggregate_id)
                    .bind(&event.metadata.tenant_id);
            }
            query.execute(&mut *conn).await.map_err(failed)?;
        }
        let size = size as u64;
        let leaves: Vec<Hash> = events.iter().map(|e| leaf(&item(e))).collect();
        let edge = nodes(&mut *conn, &merkle::frontier(size).into_iter().collect())
            .await
            .map_err(failed)?;
        let added = merkle::append(size, &leaves, &edge);
        for chunk in added.chunks(TREE_ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO audit_tree (level, idx, hash) VALUES {}",
                placeholders(chunk.len(), 3)
            );
            let mut query = sqlx::query(&sql);
            for ((level, index), hash) in chunk {
                query = query
                    .bind(i64::from(*level))
                    .bind(*index as i64)
                    .bind(hex::encode(hash));
            }
            query.execute(&mut *conn).await.map_err(failed)?;
        }
        Ok(())
    }
}

/// `rows` groups of `width` numbered placeholders: `($1, $2), ($3, $4)`.
fn placeholders(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|row| {
            let cells: Vec<String> = (1..=width)
                .map(|c| format!("${}", row * width + c))
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Tree nodes written by one insert (three parameters each).
const TREE_ROWS_PER_INSERT: usize = 300;

/// An event as auditors read it, without its position and leaf hash: aggregate type and id,
/// sequence, event type and version, the payload's fields (cqrs-es stores the enum externally
/// tagged, `{"Variant": {...}}`; auditors get the fields) and the metadata. Its canonical JSON is
/// the event's Merkle leaf, so an export's items alone recompute the tree.
pub fn item(event: &StoredEvent) -> Value {
    let payload: Value = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
    let payload = match payload {
        Value::Object(map) if map.len() == 1 && map.contains_key(&event.event_type) => map
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .unwrap_or(Value::Null),
        other => other,
    };
    let actor = match event.metadata.actor_id.as_str() {
        "" => "system",
        actor => actor,
    };
    json!({
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "sequence": event.sequence,
        "event_type": event.event_type,
        "event_version": event.event_version,
        "payload": payload,
        "metadata": {
            "actor": actor,
            "tenant_id": event.metadata.tenant_id,
            "request_id": event.metadata.request_id,
            "occurred_at": event.metadata.occurred_at,
        },
    })
}

/// The Merkle leaf hash of an [`item`]: `SHA-256(0x00 || JCS(item))`.
pub fn leaf(item: &Value) -> Hash {
    let bytes = serde_jcs::to_vec(item).expect("a JSON value serializes");
    merkle::leaf_hash(&bytes)
}

/// The stored tree nodes among `wanted` (missing ones are left out).
pub async fn nodes(
    conn: &mut AnyConnection,
    wanted: &BTreeSet<Node>,
) -> Result<HashMap<Node, Hash>, sqlx::Error> {
    let mut found = HashMap::new();
    let wanted: Vec<&Node> = wanted.iter().collect();
    for chunk in wanted.chunks(200) {
        let terms: Vec<String> = (0..chunk.len())
            .map(|i| format!("(level = ${} AND idx = ${})", 2 * i + 1, 2 * i + 2))
            .collect();
        let sql = format!(
            "SELECT level, idx, hash FROM audit_tree WHERE {}",
            terms.join(" OR ")
        );
        let mut query = sqlx::query(&sql);
        for (level, index) in chunk {
            query = query.bind(i64::from(*level)).bind(*index as i64);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let level: i64 = row.try_get("level")?;
            let index: i64 = row.try_get("idx")?;
            let text: String = row.try_get("hash")?;
            let hash = hex::decode(&text)
                .ok()
                .and_then(|b| Hash::try_from(b).ok())
                .ok_or_else(|| sqlx::Error::Decode(format!("audit_tree hash {text:?}").into()))?;
            found.insert((level as u32, index as u64), hash);
        }
    }
    Ok(found)
}

/// Why the tree could not answer.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A node the tree should hold is missing (a tree size beyond the tree, or a damaged table).
    #[error("the audit tree has no node {0:?}")]
    Missing(Node),
}

/// The tree as stored: its size, and the roots and proofs it answers.
pub struct Tree<'a> {
    pub db: &'a Db,
}

impl Tree<'_> {
    /// Leaves in the tree (the highest audit position).
    pub async fn size(&self) -> Result<u64, sqlx::Error> {
        let row = sqlx::query("SELECT COALESCE(MAX(position), 0) AS size FROM audit_order")
            .fetch_one(&self.db.pool)
            .await?;
        Ok(row.try_get::<i64, _>("size")? as u64)
    }

    /// Runs `algorithm` over the stored nodes it needs (fetched in one read).
    async fn with_nodes<T>(
        &self,
        algorithm: impl Fn(&dyn Fn(Node) -> Hash) -> T,
    ) -> Result<T, TreeError> {
        let wanted = merkle::needed(|get| {
            algorithm(get);
        });
        let mut conn = self.db.pool.acquire().await?;
        let found = nodes(&mut conn, &wanted).await?;
        if let Some(missing) = wanted.iter().find(|n| !found.contains_key(n)) {
            return Err(TreeError::Missing(*missing));
        }
        Ok(algorithm(&|n| found[&n]))
    }

    /// The root of the first `size` leaves (`size` ≤ [`Self::size`]).
    pub async fn root(&self, size: u64) -> Result<Hash, TreeError> {
        self.with_nodes(|get| merkle::root(size, get)).await
    }

    /// The leaf hash at `position` (1-based).
    pub async fn leaf(&self, position: u64) -> Result<Hash, TreeError> {
        self.with_nodes(|get| get((0, position - 1))).await
    }

    /// The audit path of `position` (1-based) in the tree of `size` leaves.
    pub async fn inclusion(&self, position: u64, size: u64) -> Result<Vec<Hash>, TreeError> {
        self.with_nodes(|get| merkle::inclusion_path(position - 1, size, get))
            .await
    }

    /// The consistency proof from the tree of `old` leaves to that of `new`.
    pub async fn consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, TreeError> {
        self.with_nodes(|get| merkle::consistency_proof(old, new, get))
            .await
    }
}

/// Events numbered by one insert (five parameters each).
const AUDIT_ROWS_PER_INSERT: usize = 200;

/// An event with its place in the audit order and its leaf hash.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    /// Dense, increasing; what auditors page on.
    pub position: i64,
    /// Lowercase hex of the event's Merkle leaf hash, as the tree holds it.
    pub leaf_hash: String,
    pub event: StoredEvent,
}

/// Optional filters of an audit read.
#[derive(Clone, Copy, Debug, Default)]
pub struct AuditFilter<'a> {
    pub aggregate_type: Option<&'a str>,
    pub aggregate_id: Option<&'a str>,
    /// Only events recorded for this tenant (a tenant auditing itself).
    pub tenant_id: Option<&'a str>,
}

/// Up to `limit` numbered events with a position above `after`, ascending.
pub async fn read_after(
    db: &Db,
    after: i64,
    filter: AuditFilter<'_>,
    limit: i64,
) -> Result<Vec<AuditEvent>, sqlx::Error> {
    let mut conditions = vec!["a.position > $1".to_owned()];
    let mut values: Vec<&str> = Vec::new();
    for (column, value) in [
        ("a.aggregate_type", filter.aggregate_type),
        ("a.aggregate_id", filter.aggregate_id),
        ("a.tenant_id", filter.tenant_id),
    ] {
        if let Some(value) = value {
            values.push(value);
            conditions.push(format!("{column} = ${}", values.len() + 1));
        }
    }
    let sql = numbered(
        db.dialect,
        "JOIN",
        &conditions.join(" AND "),
        values.len() + 2,
    );
    let mut query = sqlx::query(&sql).bind(after);
    for value in values {
        query = query.bind(value);
    }
    let rows = query.bind(limit).fetch_all(&db.pool).await?;
    rows.into_iter()
        .map(|row| {
            let position = row.try_get("audit_position")?;
            let leaf_hash: Option<String> = row.try_get("leaf_hash")?;
            Ok(AuditEvent {
                position,
                leaf_hash: leaf_hash.unwrap_or_default(),
                event: log::stored_event(row)?,
            })
        })
        .collect()
}

/// The numbered events matching `conditions` (over `a`, the audit order), ascending, at most
/// `$limit`, each with its leaf hash; `join` is `JOIN`, or `LEFT JOIN` to keep numbered events
/// whose row is gone from the log.
fn numbered(dialect: Dialect, join: &str, conditions: &str, limit: usize) -> String {
    let (tx, payload, metadata) = match dialect {
        Dialect::Sqlite => ("0", "e.payload", "e.metadata"),
        Dialect::Postgres => (
            "e.transaction_id::text::bigint",
            "e.payload::text",
            "e.metadata::text",
        ),
    };
    format!(
        "SELECT a.position AS audit_position, {tx} AS tx, e.global_position, e.aggregate_type, \
         e.aggregate_id, e.sequence, e.event_type, e.event_version, {payload} AS payload, \
         {metadata} AS metadata, t.hash AS leaf_hash \
         FROM audit_order a {join} events e ON e.global_position = a.global_position \
         LEFT JOIN audit_tree t ON t.level = 0 AND t.idx = a.position - 1 \
         WHERE {conditions} ORDER BY a.position LIMIT ${limit}"
    )
}

/// A numbered position as verification reads it: its event, unless the log lost it, and the
/// leaf hash the tree holds for it.
#[derive(Clone, Debug)]
pub struct Numbered {
    pub position: i64,
    pub leaf_hash: Option<String>,
    pub event: Option<StoredEvent>,
}

/// Up to `limit` numbered positions above `after`, ascending, whether or not their events are
/// still in the log (for `ipto events verify`).
pub async fn read_numbered(db: &Db, after: i64, limit: i64) -> Result<Vec<Numbered>, sqlx::Error> {
    let sql = numbered(db.dialect, "LEFT JOIN", "a.position > $1", 2);
    let rows = sqlx::query(&sql)
        .bind(after)
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    rows.into_iter()
        .map(|row| {
            let position = row.try_get("audit_position")?;
            let leaf_hash = row.try_get("leaf_hash")?;
            let present: Option<String> = row.try_get("event_type")?;
            Ok(Numbered {
                position,
                leaf_hash,
                event: match present {
                    Some(_) => Some(log::stored_event(row)?),
                    None => None,
                },
            })
        })
        .collect()
}
