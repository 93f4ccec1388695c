//! The event log at scale: growing it to a million events from a log the service wrote, the
//! single-event-transaction INSERT ceiling, and the raw ordered scan that bounds a rebuild.
//!
//! Growing copies the log the HTTP phases produced (real events of the real aggregates, in their
//! real global order) under fresh identities: every prefixed id (`usr_…`, `dset_…`, `obj_…`, …),
//! every e-mail address and every API-key prefix is replaced consistently within a copy, so each
//! copy is a self-contained, replayable history and the copies never collide. A final partial copy
//! is a prefix of the log in global order, which is itself a valid history.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use ipto::store::EventPool;
use projections::{Db, Dialect};
use sqlx::Row;

use crate::load::{self, Measured, Timing};

/// Rows per INSERT statement and per transaction when growing the log.
const ROWS_PER_STATEMENT: usize = 100;
const ROWS_PER_TRANSACTION: usize = 10_000;

/// One stored event's columns, as text.
#[derive(Clone, Debug)]
struct Row7 {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
}

/// A piece of a templated text: literal, or the n-th distinct id / e-mail / key prefix.
#[derive(Clone, Debug)]
enum Piece {
    Text(String),
    Id(usize),
    Email(usize),
    KeyPrefix(usize),
}

/// The log as a template: each text column cut into pieces.
struct Template {
    events: Vec<[Vec<Piece>; 3]>,
    rows: Vec<Row7>,
    /// The prefix of each distinct id (`usr`, `dset`, …).
    id_prefixes: Vec<String>,
    emails: Vec<String>,
    key_prefixes: Vec<String>,
}

/// Reads the whole log in global order.
async fn read_log(db: &Db) -> Result<Vec<Row7>, sqlx::Error> {
    let sql = match db.dialect {
        Dialect::Sqlite => {
            "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata \
             FROM events ORDER BY global_position"
        }
        Dialect::Postgres => {
            "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload::text AS payload, \
             metadata::text AS metadata FROM events ORDER BY transaction_id, global_position"
        }
    };
    let rows = sqlx::query(sql).fetch_all(&db.pool).await?;
    rows.iter()
        .map(|row| {
            Ok(Row7 {
                aggregate_type: row.try_get(0)?,
                aggregate_id: row.try_get(1)?,
                sequence: row.try_get(2)?,
                event_type: row.try_get(3)?,
                event_version: row.try_get(4)?,
                payload: row.try_get(5)?,
                metadata: row.try_get(6)?,
            })
        })
        .collect()
}

/// Whether `bytes[at..]` starts a prefixed id body (26 Crockford base32 characters, no more).
fn id_body_at(bytes: &[u8], at: usize) -> bool {
    let end = at + aggregates::ids::BODY_LEN;
    end <= bytes.len()
        && !bytes.get(end).is_some_and(|b| b.is_ascii_alphanumeric())
        && std::str::from_utf8(&bytes[at..end])
            .ok()
            .and_then(aggregates::ids::decode_body)
            .is_some()
}

impl Template {
    fn new(rows: Vec<Row7>) -> Self {
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut id_prefixes = Vec::new();
        let mut emails: Vec<String> = Vec::new();
        let mut key_prefixes: Vec<String> = Vec::new();
        for row in &rows {
            if row.aggregate_type == "email_reservation" && !emails.contains(&row.aggregate_id) {
                emails.push(row.aggregate_id.clone());
            }
            if row.event_type == "ApiKeyCreated" {
                let payload: serde_json::Value =
                    serde_json::from_str(&row.payload).unwrap_or_default();
                if let Some(prefix) = payload["ApiKeyCreated"]["key_prefix"].as_str() {
                    key_prefixes.push(prefix.to_owned());
                }
            }
        }
        let mut cut = |text: &str| -> Vec<Piece> {
            let bytes = text.as_bytes();
            let mut pieces = Vec::new();
            let mut literal_from = 0;
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'_' && id_body_at(bytes, i + 1) {
                    let mut start = i;
                    while start > 0 && bytes[start - 1].is_ascii_lowercase() {
                        start -= 1;
                    }
                    let boundary = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
                    if start < i && boundary {
                        let end = i + 1 + aggregates::ids::BODY_LEN;
                        let id = &text[start..end];
                        let next = ids.len();
                        let n = *ids.entry(id.to_owned()).or_insert(next);
                        if n == id_prefixes.len() {
                            id_prefixes.push(text[start..i].to_owned());
                        }
                        literals(
                            &text[literal_from..start],
                            &emails,
                            &key_prefixes,
                            &mut pieces,
                        );
                        pieces.push(Piece::Id(n));
                        literal_from = end;
                        i = end;
                        continue;
                    }
                }
                i += 1;
            }
            literals(&text[literal_from..], &emails, &key_prefixes, &mut pieces);
            pieces
        };
        let events = rows
            .iter()
            .map(|r| [cut(&r.aggregate_id), cut(&r.payload), cut(&r.metadata)])
            .collect();
        Self {
            events,
            rows,
            id_prefixes,
            emails,
            key_prefixes,
        }
    }

    /// The texts of copy `copy`: fresh ids, e-mails and key prefixes, consistent within the copy.
    fn render(&self, copy: usize) -> Vec<Row7> {
        let ids: Vec<String> = self
            .id_prefixes
            .iter()
            .map(|p| {
                format!(
                    "{p}_{}",
                    aggregates::ids::encode_body(uuid::Uuid::new_v4().as_u128())
                )
            })
            .collect();
        let emails: Vec<String> = self.emails.iter().map(|e| format!("c{copy}x{e}")).collect();
        let key_prefixes: Vec<String> = (0..self.key_prefixes.len())
            .map(|n| key_prefix(copy * self.key_prefixes.len() + n, &self.key_prefixes))
            .collect();
        let render = |pieces: &[Piece]| -> String {
            let mut out = String::new();
            for piece in pieces {
                match piece {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Id(n) => out.push_str(&ids[*n]),
                    Piece::Email(n) => out.push_str(&emails[*n]),
                    Piece::KeyPrefix(n) => out.push_str(&key_prefixes[*n]),
                }
            }
            out
        };
        self.rows
            .iter()
            .zip(&self.events)
            .map(|(row, [id, payload, metadata])| Row7 {
                aggregate_type: row.aggregate_type.clone(),
                aggregate_id: render(id),
                sequence: row.sequence,
                event_type: row.event_type.clone(),
                event_version: row.event_version.clone(),
                payload: render(payload),
                metadata: render(metadata),
            })
            .collect()
    }
}

/// Cuts literal text at e-mails and key prefixes.
fn literals(text: &str, emails: &[String], key_prefixes: &[String], out: &mut Vec<Piece>) {
    let mut rest = text;
    'outer: while !rest.is_empty() {
        let mut best: Option<(usize, usize, Piece)> = None;
        for (n, email) in emails.iter().enumerate() {
            if let Some(at) = rest.find(email.as_str()) {
                if best.as_ref().is_none_or(|(b, _, _)| at < *b) {
                    best = Some((at, email.len(), Piece::Email(n)));
                }
            }
        }
        for (n, prefix) in key_prefixes.iter().enumerate() {
            // A key prefix only ever appears as a whole JSON string value.
            let quoted = format!("\"{prefix}\"");
            if let Some(at) = rest.find(quoted.as_str()) {
                if best.as_ref().is_none_or(|(b, _, _)| at + 1 < *b) {
                    best = Some((at + 1, prefix.len(), Piece::KeyPrefix(n)));
                }
            }
        }
        match best {
            Some((at, len, piece)) => {
                if at > 0 {
                    out.push(Piece::Text(rest[..at].to_owned()));
                }
                out.push(piece);
                rest = &rest[at + len..];
            }
            None => {
                out.push(Piece::Text(rest.to_owned()));
                break 'outer;
            }
        }
    }
}

/// The n-th generated key prefix: 8 characters of `[a-z0-9]`, never one of the template's.
fn key_prefix(n: usize, taken: &[String]) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = n as u64;
    loop {
        let mut value = n;
        let text: String = (0..8)
            .map(|_| {
                let c = ALPHABET[(value % 36) as usize] as char;
                value /= 36;
                c
            })
            .collect();
        if !taken.contains(&text) {
            return text;
        }
        n += 1u64 << 40;
    }
}

/// What growing the log did.
pub struct Grown {
    pub template_events: usize,
    pub total_events: u64,
    pub seconds: f64,
}

/// Appends copies of the current log until it holds `target` events.
pub async fn grow(database_url: &str, target: u64) -> Result<Grown, String> {
    let (events, db) = ipto::store::connect(database_url)
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let rows = read_log(&db).await.map_err(|e| e.to_string())?;
    let template_events = rows.len();
    if template_events == 0 {
        return Err("the log is empty; nothing to copy".into());
    }
    let template = Arc::new(Template::new(rows));
    let cast = if db.dialect == Dialect::Postgres {
        "::jsonb"
    } else {
        ""
    };
    let values: Vec<String> = (0..ROWS_PER_STATEMENT)
        .map(|r| {
            let b = r * 7;
            format!(
                "(${}, ${}, ${}, ${}, ${}, ${}{cast}, ${}{cast})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7
            )
        })
        .collect();
    let insert = |n: usize| {
        format!(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES {}",
            values[..n].join(", ")
        )
    };
    let full_insert = insert(ROWS_PER_STATEMENT);
    let mut total = template_events as u64;
    let mut copy = 0;
    let mut pending: Vec<Row7> = Vec::new();
    while total < target {
        copy += 1;
        let template = template.clone();
        let mut rows = tokio::task::spawn_blocking(move || template.render(copy))
            .await
            .map_err(|e| e.to_string())?;
        rows.truncate((target - total) as usize);
        total += rows.len() as u64;
        pending.extend(rows);
        if pending.len() >= ROWS_PER_TRANSACTION || total >= target {
            let mut tx = db.begin_write().await.map_err(|e| e.to_string())?;
            for chunk in pending.chunks(ROWS_PER_STATEMENT) {
                let sql = if chunk.len() == ROWS_PER_STATEMENT {
                    full_insert.clone()
                } else {
                    insert(chunk.len())
                };
                let mut query = sqlx::query(&sql);
                for row in chunk {
                    query = query
                        .bind(row.aggregate_type.clone())
                        .bind(row.aggregate_id.clone())
                        .bind(row.sequence)
                        .bind(row.event_type.clone())
                        .bind(row.event_version.clone())
                        .bind(row.payload.clone())
                        .bind(row.metadata.clone());
                }
                query.execute(&mut *tx).await.map_err(|e| e.to_string())?;
            }
            tx.commit().await.map_err(|e| e.to_string())?;
            pending.clear();
        }
    }
    if db.dialect == Dialect::Postgres {
        // Fresh statistics, as an operator's autovacuum would have them, for the scans below.
        sqlx::query("ANALYZE events")
            .execute(&db.pool)
            .await
            .map_err(|e| e.to_string())?;
    }
    db.pool.close().await;
    close(events).await;
    Ok(Grown {
        template_events,
        total_events: total,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn close(pool: EventPool) {
    match pool {
        EventPool::Sqlite(p) => p.close().await,
        EventPool::Postgres(p) => p.close().await,
    }
}

/// Reads every event in global order in one streaming query, decoding every column the
/// projections read: the ceiling of a replay. Returns (events, seconds).
pub async fn raw_scan(database_url: &str) -> Result<(u64, f64), String> {
    let (events, db) = ipto::store::connect(database_url)
        .await
        .map_err(|e| e.to_string())?;
    let sql = match db.dialect {
        Dialect::Sqlite => {
            "SELECT 0 AS tx, global_position, aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata FROM events ORDER BY global_position"
        }
        Dialect::Postgres => {
            "SELECT transaction_id::text::bigint AS tx, global_position, aggregate_type, aggregate_id, \
             sequence, event_type, event_version, payload::text AS payload, metadata::text AS metadata \
             FROM events ORDER BY transaction_id, global_position"
        }
    };
    let started = Instant::now();
    let mut rows = sqlx::query(sql).fetch(&db.pool);
    let mut count = 0u64;
    let mut bytes = 0usize;
    while let Some(row) = rows.try_next().await.map_err(|e| e.to_string())? {
        let _: i64 = row.try_get(0).map_err(|e| e.to_string())?;
        let _: i64 = row.try_get(1).map_err(|e| e.to_string())?;
        let _: i64 = row.try_get(4).map_err(|e| e.to_string())?;
        for column in [2, 3, 5, 6, 7, 8] {
            let text: String = row.try_get(column).map_err(|e| e.to_string())?;
            bytes += text.len();
        }
        count += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(rows);
    std::hint::black_box(bytes);
    db.pool.close().await;
    close(events).await;
    Ok((count, seconds))
}

/// Single-event transactions (BEGIN, one INSERT into `events`, COMMIT) from `concurrency` tasks
/// through the event store's own pool: the ceiling of command throughput.
pub async fn insert_ceiling(
    database_url: &str,
    concurrency: usize,
    timing: Timing,
) -> Result<Measured, String> {
    let (events, db) = ipto::store::connect(database_url)
        .await
        .map_err(|e| e.to_string())?;
    ipto::store::migrate(&events)
        .await
        .map_err(|e| e.to_string())?;
    let cast = if db.dialect == Dialect::Postgres {
        "::jsonb"
    } else {
        ""
    };
    let sql: Arc<str> = format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ($1, $2, 1, 'BenchInserted', '1.0', $3{cast}, $4{cast})"
    )
    .into();
    // Payload and metadata the size of a DatasetCreated event's.
    let payload: Arc<str> = serde_json::json!({"BenchInserted": {"name": "Benchmark dataset", "description": "x".repeat(120), "visibility": "private", "monetization_mode": "open", "price_per_result_micros": 0}}).to_string().into();
    let metadata: Arc<str> = serde_json::json!({"actor_type": "user", "actor_id": "usr_0000000000000000000000000", "tenant_id": "tnt_0000000000000000000000000", "request_id": "req_0000000000000000000000000", "occurred_at": "2026-01-01T00:00:00.000000Z"}).to_string().into();
    let pool = events.clone();
    let op: load::Op = Arc::new(move |_, _| {
        let (pool, sql, payload, metadata) =
            (pool.clone(), sql.clone(), payload.clone(), metadata.clone());
        Box::pin(async move {
            let id = uuid::Uuid::new_v4().simple().to_string();
            match &pool {
                EventPool::Sqlite(p) => {
                    let mut tx = p.begin().await.map_err(|e| e.to_string())?;
                    sqlx::query(&sql)
                        .bind("bench")
                        .bind(id)
                        .bind(&*payload)
                        .bind(&*metadata)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| e.to_string())?;
                    tx.commit().await.map_err(|e| e.to_string())
                }
                EventPool::Postgres(p) => {
                    let mut tx = p.begin().await.map_err(|e| e.to_string())?;
                    sqlx::query(&sql)
                        .bind("bench")
                        .bind(id)
                        .bind(&*payload)
                        .bind(&*metadata)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| e.to_string())?;
                    tx.commit().await.map_err(|e| e.to_string())
                }
            }
        })
    });
    let measured = load::run(concurrency, timing, op).await;
    db.pool.close().await;
    close(events).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(measured)
}
