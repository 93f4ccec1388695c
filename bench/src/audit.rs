//! The auditors' figures: how late the event stream delivers under command load, what the audit
//! tree costs the audit order on a rebuild of the million-event log (the numbering alone, as the
//! audit order was before the tree, against numbering and tree), and `ipto events verify` over an
//! export of that log.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use projections::audit::AuditOrderProjection;
use projections::log::StoredEvent;
use projections::{Projection, ProjectionError, ProjectorEngine, Reads};
use sqlx::{AnyConnection, Row};

use crate::load::{Api, Measured};
use crate::server::Scratch;

/// Delivery latencies of the stream, in ms: from each event's `occurred_at` (the server's clock,
/// this machine's) to the moment its `data:` line reached the client.
pub struct Delivery {
    pub events: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Follows `GET /v1/admin/events/stream` from the current end while `load` runs, and measures
/// how late each event arrives.
pub async fn stream_delivery(
    api: &Api,
    admin: &str,
    load: impl std::future::Future<Output = Measured>,
) -> Result<(Measured, Delivery), String> {
    let health = api.get("/health", admin).await?;
    let after = health["audit"]["audit_position"].as_i64().unwrap_or(0);
    let mut response = api
        .http
        .get(format!("{}/v1/admin/events/stream?after={after}", api.base))
        .bearer_auth(admin)
        .timeout(Duration::from_secs(3600))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("stream: {}", response.status()));
    }
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let seen = latencies.clone();
    let reader = tokio::spawn(async move {
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            let arrived = chrono::Utc::now();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                    continue;
                };
                let Ok(item) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                    continue;
                };
                if let Some(at) = item["metadata"]["occurred_at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                {
                    let ms = (arrived - at.to_utc()).num_microseconds().unwrap_or(0) as f64 / 1e3;
                    seen.lock().expect("lock").push(ms);
                }
            }
        }
    });
    let measured = load.await;
    // The last commands' events are still on their way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader.abort();
    let mut all = latencies.lock().expect("lock").clone();
    if all.is_empty() {
        return Err("the stream delivered nothing".into());
    }
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all[((all.len() - 1) as f64 * q).round() as usize];
    Ok((
        measured,
        Delivery {
            events: all.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
        },
    ))
}

/// The audit order as it was before the tree: only the numbering insert (version 1's statement,
/// 250 events per statement), into the same table.
struct NumberingOnly;

#[async_trait]
impl Projection for NumberingOnly {
    fn name(&self) -> &'static str {
        "bench_audit_numbering_only"
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
        self.apply_all(conn, &[event]).await.map_err(|(_, e)| e)
    }
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
        for (offset, chunk) in events.chunks(250).enumerate() {
            let rows: Vec<String> = (0..chunk.len())
                .map(|r| {
                    format!(
                        "(${}, ${}, ${}, ${})",
                        r * 4 + 1,
                        r * 4 + 2,
                        r * 4 + 3,
                        r * 4 + 4
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO audit_order (position, global_position, aggregate_type, aggregate_id) \
                 VALUES {}",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (i, event) in chunk.iter().enumerate() {
                query = query
                    .bind(size + (offset * 250 + i) as i64 + 1)
                    .bind(event.cursor.position)
                    .bind(&event.aggregate_type)
                    .bind(&event.aggregate_id);
            }
            query.execute(&mut *conn).await.map_err(failed)?;
        }
        Ok(())
    }
}

/// The audit order rebuilt over the whole log, numbering only and then with the tree: events/s
/// of each.
pub async fn tree_cost(database_url: &str) -> Result<(f64, f64), String> {
    let (_, db) = ipto::store::connect(database_url)
        .await
        .map_err(|e| e.to_string())?;
    let engine = ProjectorEngine::new(db, Vec::new());
    let mut rates = Vec::new();
    for projection in [&NumberingOnly as &dyn Projection, &AuditOrderProjection] {
        let started = Instant::now();
        let events = engine
            .rebuild(projection, |_, _| {})
            .await
            .map_err(|e| e.to_string())?;
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "  audit order {}: {events} events in {seconds:.2} s",
            projection.name()
        );
        rates.push(events as f64 / seconds);
    }
    Ok((rates[0], rates[1]))
}

/// `ipto events export` to a file, then `ipto events verify --export` over it alone: events/s.
pub fn verify_export(scratch: &Scratch, bin: &Path) -> Result<(u64, f64, f64), String> {
    let file = scratch.dir.join("log.ndjson");
    let out = std::fs::File::create(&file).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let status = scratch
        .ipto(bin, &["events", "export"])
        .stdout(out)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("export: {status}"));
    }
    let export_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let output = scratch
        .ipto(
            bin,
            &["events", "verify", "--export", &file.to_string_lossy()],
        )
        .output()
        .map_err(|e| e.to_string())?;
    let verify_seconds = started.elapsed().as_secs_f64();
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "verify: {}{said}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let events = said
        .split_whitespace()
        .skip_while(|w| *w != "verified:")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let _ = std::fs::remove_file(&file);
    Ok((events, export_seconds, verify_seconds))
}
