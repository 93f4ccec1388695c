//! The operator subcommands: `migrate`, `projections status|rebuild`, `admin promote` and
//! `events export`.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use projections::audit::{self, AuditFilter, AuditOrderProjection};
use projections::log;

use crate::accounts::Accounts;
use crate::app::{open_blobs, open_store, StartError};
use crate::config::Config;
use crate::search::extract::PdfExtractor;
use crate::search::{self, Indexer, SearchIndex};

/// A subcommand failed; the message goes to stderr and the exit code is 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Start(#[from] StartError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Failed(String),
}

/// `ipto migrate`.
pub async fn migrate(config: &Config) -> Result<(), CliError> {
    let (store, _) = open_store(config).await?;
    store.close().await;
    println!("migrations applied");
    Ok(())
}

/// `ipto projections status`.
pub async fn projections_status(config: &Config) -> Result<(), CliError> {
    let (store, _) = open_store(config).await?;
    let head = log::head(&store.db).await?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<24} {:>12} {:>12} {:>10}  STATE",
        "NAME", "POSITION", "HEAD", "LAG"
    );
    for status in store.engine.statuses().await? {
        let state = match (&status.error, status.failed_position) {
            (Some(error), Some(at)) => format!("failed at {at}: {error}"),
            _ => status.state().to_owned(),
        };
        let lag = (head - status.position).max(0);
        let _ = writeln!(
            out,
            "{:<24} {:>12} {:>12} {:>10}  {}",
            status.name, status.position, head, lag, state
        );
    }
    // The search index is this machine's own; its cursor is in the index directory.
    let dir = config.index_dir();
    let (position, state) = match SearchIndex::stored_cursor(&dir) {
        Some(cursor) => (cursor.position, "ok (local index)".to_owned()),
        None => (0, format!("no index at {}", dir.display())),
    };
    let _ = writeln!(
        out,
        "{:<24} {:>12} {:>12} {:>10}  {}",
        search::NAME,
        position,
        head,
        (head - position).max(0),
        state
    );
    store.close().await;
    Ok(())
}

/// Rebuilds this machine's search index from the log; the index must not be open in a server.
async fn rebuild_search_index(
    config: &Config,
    store: &crate::store::Store,
    key: &crate::signing::SigningKey,
) -> Result<u64, CliError> {
    let index = SearchIndex::open(&config.index_dir(), None)
        .map_err(|e| CliError::Failed(format!("{e}; stop the server to rebuild it")))?;
    let blobs = open_blobs(config, key, config.bind)?;
    let indexer = Indexer::new(
        std::sync::Arc::new(index),
        store.db.clone(),
        blobs,
        store.engine.clone(),
        PdfExtractor::from_config(config),
    );
    let tty = std::io::stderr().is_terminal();
    let mut last_draw = Instant::now();
    let count = indexer
        .rebuild(|done, total| {
            if tty && (last_draw.elapsed().as_millis() > 100 || done == total) {
                last_draw = Instant::now();
                draw_progress(search::NAME, done, total);
            }
        })
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    if tty {
        eprintln!();
    }
    eprintln!(
        "rebuilt {}: {count} events, {} chunks",
        search::NAME,
        indexer.index.document_count()
    );
    Ok(count)
}

/// `ipto projections rebuild NAME | --all`.
pub async fn projections_rebuild(config: &Config, name: Option<&str>) -> Result<(), CliError> {
    let (store, key) = open_store(config).await?;
    if name == Some(search::NAME) {
        let started = Instant::now();
        let outcome = rebuild_search_index(config, &store, &key).await;
        store.close().await;
        print_rate(outcome?, started);
        return Ok(());
    }
    let targets: Vec<_> = match name {
        None => store
            .engine
            .projections()
            .into_iter()
            .filter(|p| !p.is_reactor())
            .collect(),
        Some(name) => match store.engine.projection(name) {
            Some(p) if p.is_reactor() => {
                return Err(CliError::Failed(format!(
                    "{name} is a reactor; reactors are not rebuilt"
                )))
            }
            Some(p) => vec![p],
            None => return Err(CliError::Failed(format!("unknown projection {name}"))),
        },
    };
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut replayed = 0u64;
    if name.is_none() {
        // One pass over the log feeds every projection.
        let mut last_draw = Instant::now();
        let counts = store
            .engine
            .rebuild_all(&targets, |done, total| {
                if tty && (last_draw.elapsed().as_millis() > 100 || done == total) {
                    last_draw = Instant::now();
                    draw_progress("all projections", done, total);
                }
            })
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        if tty {
            eprintln!();
        }
        for (projection, count) in targets.iter().zip(counts) {
            replayed += count;
            eprintln!("rebuilt {}: {count} events", projection.name());
        }
    } else {
        for projection in targets {
            let label = projection.name();
            let mut last_draw = Instant::now();
            let count = store
                .engine
                .rebuild(projection.as_ref(), |done, total| {
                    if tty && (last_draw.elapsed().as_millis() > 100 || done == total) {
                        last_draw = Instant::now();
                        draw_progress(label, done, total);
                    }
                })
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            if tty {
                eprintln!();
            }
            replayed += count;
            eprintln!("rebuilt {label}: {count} events");
        }
    }
    if name.is_none() {
        // A running server holds its index; `--all` still rebuilds every shared read model.
        match rebuild_search_index(config, &store, &key).await {
            Ok(count) => replayed += count,
            Err(e) => eprintln!("skipped {}: {e}", search::NAME),
        }
    }
    store.close().await;
    print_rate(replayed, started);
    Ok(())
}

fn print_rate(replayed: u64, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 {
        replayed as f64 / seconds
    } else {
        0.0
    };
    println!("replayed {replayed} events in {seconds:.2}s ({rate:.0} events/s)");
}

fn draw_progress(label: &str, done: u64, total: u64) {
    const WIDTH: u64 = 30;
    let filled = (done.min(total) * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '-' })
        .collect();
    eprint!("\r{label:<20} [{bar}] {done}/{total}");
    let _ = std::io::stderr().flush();
}

/// `ipto admin promote EMAIL`.
pub async fn admin_promote(config: &Config, email: &str) -> Result<(), CliError> {
    let (store, key) = open_store(config).await?;
    let accounts = Accounts {
        store: &store,
        key: &key,
        session_ttl_seconds: config.session_ttl_seconds,
    };
    let outcome = accounts
        .promote(email)
        .await
        .map_err(|e| CliError::Failed(e.to_string()));
    store.close().await;
    match outcome? {
        None => Err(CliError::Failed(format!(
            "no user with email {}",
            email.trim()
        ))),
        Some(false) => {
            println!("already a platform admin");
            Ok(())
        }
        Some(true) => {
            println!("promoted");
            Ok(())
        }
    }
}

/// `ipto events export`: NDJSON in the audit order, like `GET /v1/admin/events`. The `audit_order`
/// projection is brought up to date first, so the export is complete even when no server ran
/// since the last writes.
pub async fn events_export(
    config: &Config,
    after: i64,
    aggregate_type: Option<&str>,
) -> Result<(), CliError> {
    let (store, _) = open_store(config).await?;
    store
        .engine
        .catch_up(&AuditOrderProjection)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let filter = AuditFilter {
        aggregate_type,
        aggregate_id: None,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut cursor = after;
    loop {
        let batch = audit::read_after(&store.db, cursor, filter, 1000).await?;
        let Some(last) = batch.last() else { break };
        cursor = last.position;
        for event in &batch {
            let line = crate::audit::AuditEvent::new(&event);
            serde_json::to_writer(&mut out, &line).map_err(|e| CliError::Failed(e.to_string()))?;
            writeln!(out).map_err(|e| CliError::Failed(e.to_string()))?;
        }
    }
    out.flush().map_err(|e| CliError::Failed(e.to_string()))?;
    store.close().await;
    Ok(())
}
