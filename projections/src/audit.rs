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

use async_trait::async_trait;
use sqlx::AnyConnection;

use crate::log::{self, StoredEvent};
use crate::{Db, Dialect, Projection, ProjectionError, Reads};

/// The `audit_order` table.
pub struct AuditOrderProjection;

#[async_trait]
impl Projection for AuditOrderProjection {
    fn name(&self) -> &'static str {
        "audit_order"
    }
    fn version(&self) -> i64 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["audit_order"]
    }
    fn reads(&self) -> Reads {
        Reads::All
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        // The next number after the batch's own earlier rows: batches are applied in walk order,
        // one at a time (a concurrent batch that collides on the unique keys loses the
        // checkpoint race and starts over).
        sqlx::query(
            "INSERT INTO audit_order (position, global_position, aggregate_type, aggregate_id) \
             SELECT COALESCE(MAX(position), 0) + 1, $1, $2, $3 FROM audit_order",
        )
        .bind(event.cursor.position)
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// One multi-row insert per chunk of the batch (numbered after the rows before it, in walk
    /// order), instead of a statement per event: the audit order reads every event, so a rebuild
    /// otherwise spends a statement per event of the log here alone.
    async fn apply_all(
        &self,
        conn: &mut AnyConnection,
        events: &[&StoredEvent],
    ) -> Result<(), (i64, ProjectionError)> {
        for chunk in events.chunks(AUDIT_ROWS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let n = 4 * i;
                    format!("(${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4)
                })
                .collect();
            let sql = format!(
                "INSERT INTO audit_order (position, global_position, aggregate_type, aggregate_id) \
                 SELECT base.last + v.column1, v.column2, v.column3, v.column4 \
                 FROM (SELECT COALESCE(MAX(position), 0) AS last FROM audit_order) AS base, \
                      (VALUES {}) AS v",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (i, event) in chunk.iter().enumerate() {
                query = query
                    .bind(i as i64 + 1)
                    .bind(event.cursor.position)
                    .bind(&event.aggregate_type)
                    .bind(&event.aggregate_id);
            }
            query
                .execute(&mut *conn)
                .await
                .map_err(|e| (chunk[0].cursor.position, e.into()))?;
        }
        Ok(())
    }
}

/// Events numbered by one insert (four parameters each).
const AUDIT_ROWS_PER_INSERT: usize = 250;

/// An event with its place in the audit order.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    /// Dense, increasing; what auditors page on.
    pub position: i64,
    pub event: StoredEvent,
}

/// Optional filters of an audit read.
#[derive(Clone, Copy, Debug, Default)]
pub struct AuditFilter<'a> {
    pub aggregate_type: Option<&'a str>,
    pub aggregate_id: Option<&'a str>,
}

/// Up to `limit` numbered events with a position above `after`, ascending.
pub async fn read_after(
    db: &Db,
    after: i64,
    filter: AuditFilter<'_>,
    limit: i64,
) -> Result<Vec<AuditEvent>, sqlx::Error> {
    let (tx, payload, metadata) = match db.dialect {
        Dialect::Sqlite => ("0", "e.payload", "e.metadata"),
        Dialect::Postgres => (
            "e.transaction_id::text::bigint",
            "e.payload::text",
            "e.metadata::text",
        ),
    };
    let mut conditions = vec!["a.position > $1".to_owned()];
    let mut values: Vec<&str> = Vec::new();
    for (column, value) in [
        ("a.aggregate_type", filter.aggregate_type),
        ("a.aggregate_id", filter.aggregate_id),
    ] {
        if let Some(value) = value {
            values.push(value);
            conditions.push(format!("{column} = ${}", values.len() + 1));
        }
    }
    let sql = format!(
        "SELECT a.position AS audit_position, {tx} AS tx, e.global_position, e.aggregate_type, \
         e.aggregate_id, e.sequence, e.event_type, e.event_version, {payload} AS payload, \
         {metadata} AS metadata \
         FROM audit_order a JOIN events e ON e.global_position = a.global_position \
         WHERE {} ORDER BY a.position LIMIT ${}",
        conditions.join(" AND "),
        values.len() + 2
    );
    let mut query = sqlx::query(&sql).bind(after);
    for value in values {
        query = query.bind(value);
    }
    let rows = query.bind(limit).fetch_all(&db.pool).await?;
    rows.into_iter()
        .map(|row| {
            use sqlx::Row;
            let position = row.try_get("audit_position")?;
            Ok(AuditEvent {
                position,
                event: log::stored_event(row)?,
            })
        })
        .collect()
}
