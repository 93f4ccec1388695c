//! Reading the event log in global order.
//!
//! SQLite has one writer, so `global_position` (set by a trigger at insert) is commit order.
//! PostgreSQL commits out of sequence order, so the reader orders on the pair
//! `(transaction_id, global_position)` and only reads transactions older than the oldest one still
//! running (`pg_snapshot_xmin`): nothing below the cursor can appear later.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use crate::{privacy, Db, Dialect};

/// A place in the global order. Compared as a pair; on SQLite `tx` is always 0.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogPosition {
    /// PostgreSQL transaction id (xid8) that wrote the event; 0 on SQLite.
    pub tx: i64,
    /// The event's `global_position`.
    pub position: i64,
}

impl std::fmt::Display for LogPosition {
    /// `TX.POSITION`, as the `Ipto-Log-Position` header carries it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.tx, self.position)
    }
}

impl std::str::FromStr for LogPosition {
    type Err = InvalidLogPosition;

    /// `TX.POSITION`: two non-negative integers of at most 19 digits.
    fn from_str(text: &str) -> Result<Self, InvalidLogPosition> {
        let (tx, position) = text.split_once('.').ok_or(InvalidLogPosition)?;
        let number = |s: &str| {
            if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(InvalidLogPosition);
            }
            s.parse::<i64>().map_err(|_| InvalidLogPosition)
        };
        Ok(LogPosition {
            tx: number(tx)?,
            position: number(position)?,
        })
    }
}

/// Text that is not `TX.POSITION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a log position (TX.POSITION)")]
pub struct InvalidLogPosition;

/// Metadata on every event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventMetadata {
    /// `user`, `api_key` or `system`.
    pub actor_type: String,
    /// `usr_…`, `key_…` or `system`.
    pub actor_id: String,
    /// The tenant acted for, if any.
    pub tenant_id: Option<String>,
    /// The HTTP request, `None` for background jobs and the CLI.
    pub request_id: Option<String>,
    /// When the command ran (RFC 3339).
    pub occurred_at: String,
}

/// One event as stored, with its place in the global order.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub cursor: LogPosition,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The serialized event enum as stored: personal fields sealed (see [`crate::privacy`]).
    pub payload: String,
    pub metadata: EventMetadata,
    /// The payload with its sealed fields opened, when it has any and the read opened them.
    pub opened: Option<String>,
}

impl StoredEvent {
    /// Decodes the payload as an aggregate's event enum, its sealed fields opened.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, serde_json::Error> {
        serde_json::from_str(self.opened.as_deref().unwrap_or(&self.payload))
    }
}

const SQLITE_AFTER: &str =
    "SELECT 0 AS tx, global_position, aggregate_type, aggregate_id, sequence, event_type, \
     event_version, payload, metadata FROM events WHERE global_position > $1 \
     ORDER BY global_position LIMIT $2";

const POSTGRES_AFTER: &str = "SELECT transaction_id::text::bigint AS tx, global_position, aggregate_type, \
     aggregate_id, sequence, event_type, event_version, payload::text AS payload, metadata::text AS metadata \
     FROM events \
     WHERE (transaction_id, global_position) > ($1::bigint::text::xid8, $2::bigint) \
       AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY transaction_id, global_position LIMIT $3";

/// Reads up to `limit` events after `after`, in global order, never past an event that could still
/// be preceded by an uncommitted one.
pub async fn read_after(
    db: &Db,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = match db.dialect {
        Dialect::Sqlite => {
            sqlx::query(SQLITE_AFTER)
                .bind(after.position)
                .bind(limit)
                .fetch_all(&db.pool)
                .await?
        }
        Dialect::Postgres => {
            sqlx::query(POSTGRES_AFTER)
                .bind(after.tx)
                .bind(after.position)
                .bind(limit)
                .fetch_all(&db.pool)
                .await?
        }
    };
    opened(db, rows).await
}

/// Opens the sealed fields of `events` (one key read for all), setting each one's `opened`
/// payload, which [`StoredEvent::decode`] reads (see [`crate::privacy`]).
pub async fn open_sealed(db: &Db, events: &mut [StoredEvent]) -> Result<(), sqlx::Error> {
    let mut parsed: Vec<(usize, Value)> = Vec::new();
    let mut subjects = BTreeSet::new();
    for (i, event) in events.iter().enumerate() {
        if !privacy::holds_personal_data(&event.aggregate_type, &event.event_type)
            || !event.payload.contains(privacy::SEALED)
        {
            continue;
        }
        let Ok(payload) = serde_json::from_str::<Value>(&event.payload) else {
            continue;
        };
        privacy::sealed_subjects(
            &event.aggregate_type,
            &event.event_type,
            &payload,
            &mut subjects,
        );
        parsed.push((i, payload));
    }
    if parsed.is_empty() {
        return Ok(());
    }
    let keys = privacy::keys(db, &subjects).await?;
    for (i, mut payload) in parsed {
        let event = &mut events[i];
        let reference = privacy::EventRef {
            aggregate_type: &event.aggregate_type,
            aggregate_id: &event.aggregate_id,
            event_type: &event.event_type,
        };
        if privacy::open(reference, &mut payload, &keys) {
            event.opened = Some(payload.to_string());
        }
    }
    Ok(())
}

/// The rows as events, their sealed fields opened.
async fn opened(db: &Db, rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut events = rows
        .into_iter()
        .map(stored_event)
        .collect::<Result<Vec<_>, _>>()?;
    open_sealed(db, &mut events).await?;
    Ok(events)
}

pub(crate) fn stored_event(row: sqlx::any::AnyRow) -> Result<StoredEvent, sqlx::Error> {
    let metadata: String = row.try_get("metadata")?;
    Ok(StoredEvent {
        cursor: LogPosition {
            tx: row.try_get("tx")?,
            position: row.try_get("global_position")?,
        },
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload")?,
        metadata: serde_json::from_str(&metadata).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        opened: None,
    })
}

/// The highest global position in the log (0 when empty).
pub async fn head(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT CAST(COALESCE(MAX(global_position), 0) AS BIGINT) FROM events")
        .fetch_one(&db.pool)
        .await
}

/// The number of events in the log.
pub async fn count(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&db.pool)
        .await
}

/// The place of one stored event, used to wait until projections have passed it.
pub async fn position_of(
    db: &Db,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
) -> Result<Option<LogPosition>, sqlx::Error> {
    let sql = match db.dialect {
        Dialect::Sqlite => {
            "SELECT 0 AS tx, global_position FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3"
        }
        Dialect::Postgres => {
            "SELECT transaction_id::text::bigint AS tx, global_position FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3"
        }
    };
    let row = sqlx::query(sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence)
        .fetch_optional(&db.pool)
        .await?;
    row.map(|row| {
        Ok(LogPosition {
            tx: row.try_get("tx")?,
            position: row.try_get("global_position")?,
        })
    })
    .transpose()
}

/// The place of the last event in the global order (`None` when the log is empty).
pub async fn tail(db: &Db) -> Result<Option<LogPosition>, sqlx::Error> {
    let sql = match db.dialect {
        Dialect::Sqlite => {
            "SELECT 0 AS tx, global_position FROM events ORDER BY global_position DESC LIMIT 1"
        }
        Dialect::Postgres => {
            "SELECT transaction_id::text::bigint AS tx, global_position FROM events \
             ORDER BY transaction_id DESC, global_position DESC LIMIT 1"
        }
    };
    let row = sqlx::query(sql).fetch_optional(&db.pool).await?;
    row.map(|row| {
        Ok(LogPosition {
            tx: row.try_get("tx")?,
            position: row.try_get("global_position")?,
        })
    })
    .transpose()
}

/// One aggregate's events, by sequence.
pub async fn events_of(
    db: &Db,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let (tx, payload, metadata) = match db.dialect {
        Dialect::Sqlite => ("0", "payload", "metadata"),
        Dialect::Postgres => (
            "transaction_id::text::bigint",
            "payload::text",
            "metadata::text",
        ),
    };
    let rows = sqlx::query(&format!(
        "SELECT {tx} AS tx, global_position, aggregate_type, aggregate_id, sequence, event_type, event_version, \
         {payload} AS payload, {metadata} AS metadata FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_all(&db.pool)
    .await?;
    opened(db, rows).await
}
