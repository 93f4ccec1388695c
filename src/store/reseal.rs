//! The one-time upgrade of a log written before personal fields were sealed: every such field is
//! sealed in place for its subject, and every e-mail reservation keyed by its plain address is
//! re-keyed by the address's HMAC ([`SigningKey::email_reservation_id`]). It runs at start-up,
//! before any projection worker, in one transaction that lifts the append-only guard for its own
//! updates only; on a sealed log it finds nothing and does nothing.
//!
//! The rewrite changes those events' bytes, so the audit tree is rebuilt over the sealed log, and
//! the heads signed before are moved to `audit_heads_before_sealing`: they describe a log that
//! held plain personal data, which erasure could not have removed.

use std::collections::BTreeSet;

use projections::audit::AuditOrderProjection;
use projections::privacy::{self, EventRef};
use projections::{Db, Dialect, ProjectorEngine};
use serde_json::Value;
use sqlx::Row;

use crate::signing::SigningKey;

/// An event that may hold plain personal data.
struct Candidate {
    global_position: i64,
    aggregate_type: String,
    event_type: String,
    /// The id it is stored under differs from `aggregate_id` (a reservation keyed by its address;
    /// an address has an `@`, an HMAC id none).
    renamed: bool,
    aggregate_id: String,
    payload: Value,
    subject: Option<String>,
}

/// One event to rewrite.
struct Rewrite {
    global_position: i64,
    aggregate_id: String,
    payload: String,
}

/// Seals the legacy events of the log; how many were rewritten.
pub async fn seal_legacy(
    db: &Db,
    engine: &ProjectorEngine,
    key: &SigningKey,
    now: &str,
) -> Result<usize, sqlx::Error> {
    let payload = match db.dialect {
        Dialect::Sqlite => "payload",
        Dialect::Postgres => "payload::text",
    };
    let rows =
        sqlx::query(&format!(
        "SELECT global_position, aggregate_type, aggregate_id, event_type, {payload} AS payload, \
         metadata{cast} AS metadata FROM events \
         WHERE event_type IN ('UserRegistered', 'EmailReserved', 'SearchPerformed') \
           AND ({payload} NOT LIKE '%sealed:v1:%' OR aggregate_id LIKE '%@%') \
         ORDER BY global_position",
        cast = if db.dialect == Dialect::Postgres { "::text" } else { "" },
    ))
        .fetch_all(&db.pool)
        .await?;
    // Each candidate, and the subjects whose keys sealing it needs.
    let mut candidates = Vec::new();
    let mut subjects = BTreeSet::new();
    for row in rows {
        let aggregate_type: String = row.try_get("aggregate_type")?;
        let event_type: String = row.try_get("event_type")?;
        if !privacy::holds_personal_data(&aggregate_type, &event_type) {
            continue;
        }
        let stored_id: String = row.try_get("aggregate_id")?;
        let Ok(payload) = serde_json::from_str::<Value>(&row.try_get::<String, _>("payload")?)
        else {
            continue;
        };
        let metadata: Value =
            serde_json::from_str(&row.try_get::<String, _>("metadata")?).unwrap_or(Value::Null);
        let aggregate_id = if aggregate_type == "email_reservation" && stored_id.contains('@') {
            key.email_reservation_id(&stored_id)
        } else {
            stored_id.clone()
        };
        let subject = privacy::subject_of(
            &aggregate_type,
            &aggregate_id,
            &event_type,
            &payload,
            metadata["actor_id"].as_str().unwrap_or_default(),
        );
        subjects.extend(subject.clone());
        candidates.push(Candidate {
            global_position: row.try_get("global_position")?,
            aggregate_type,
            event_type,
            renamed: aggregate_id != stored_id,
            aggregate_id,
            payload,
            subject,
        });
    }
    let keys = privacy::ensure_keys(db, &subjects, now)
        .await
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let mut rewrites = Vec::new();
    for candidate in candidates {
        let mut payload = candidate.payload.clone();
        if let Some(subject) = &candidate.subject {
            let event = EventRef {
                aggregate_type: &candidate.aggregate_type,
                aggregate_id: &candidate.aggregate_id,
                event_type: &candidate.event_type,
            };
            privacy::seal(event, &mut payload, subject, &keys)
                .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        }
        if candidate.renamed || payload != candidate.payload {
            rewrites.push(Rewrite {
                global_position: candidate.global_position,
                aggregate_id: candidate.aggregate_id,
                payload: payload.to_string(),
            });
        }
    }
    if rewrites.is_empty() {
        return Ok(0);
    }
    rewrite(db, &rewrites).await?;
    engine.reset(&AuditOrderProjection).await?;
    tracing::info!(
        events = rewrites.len(),
        "sealed the personal fields of a log written before sealing; the audit tree is rebuilt"
    );
    Ok(rewrites.len())
}

/// Applies the rewrites in one transaction, past the append-only guard.
async fn rewrite(db: &Db, rewrites: &[Rewrite]) -> Result<(), sqlx::Error> {
    let mut tx = db.begin_write().await?;
    let guard = match db.dialect {
        // The guard as created, to create again after the updates.
        Dialect::Sqlite => {
            let sql: Option<String> = sqlx::query_scalar(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'events_no_update'",
            )
            .fetch_optional(&mut *tx)
            .await?;
            sqlx::query("DROP TRIGGER IF EXISTS events_no_update")
                .execute(&mut *tx)
                .await?;
            sql
        }
        Dialect::Postgres => {
            sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
                .execute(&mut *tx)
                .await?;
            Some("ALTER TABLE events ENABLE TRIGGER events_append_only".to_owned())
        }
    };
    let set = match db.dialect {
        Dialect::Sqlite => "payload = $1",
        Dialect::Postgres => "payload = CAST($1 AS JSONB)",
    };
    for rewrite in rewrites {
        sqlx::query(&format!(
            "UPDATE events SET {set}, aggregate_id = $2 WHERE global_position = $3"
        ))
        .bind(&rewrite.payload)
        .bind(&rewrite.aggregate_id)
        .bind(rewrite.global_position)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(guard) = guard {
        sqlx::query(&guard).execute(&mut *tx).await?;
    }
    sqlx::query(
        "INSERT INTO audit_heads_before_sealing (tree_size, root_hash, signed_at, key_id, signature) \
         SELECT tree_size, root_hash, signed_at, key_id, signature FROM audit_heads WHERE 1 = 1 \
         ON CONFLICT (tree_size) DO NOTHING",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM audit_heads")
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
