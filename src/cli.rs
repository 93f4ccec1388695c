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
    if let Some(rebuild) = store.engine.rebuild_progress().await? {
        let eta = rebuild
            .eta_seconds
            .map_or(String::new(), |s| format!(", about {s}s left"));
        let error = rebuild
            .error
            .as_deref()
            .map_or(String::new(), |e| format!(": {e}"));
        let _ = writeln!(
            out,
            "\nonline rebuild of {}: {} ({}/{} events, {} events/s{eta}; started {}, last report {}){error}",
            rebuild.projections.join(", "),
            rebuild.phase.as_str(),
            rebuild.done,
            rebuild.total,
            rebuild.events_per_second,
            rebuild.started_at,
            rebuild.updated_at,
        );
    }
    // Positions above are global positions; the audit order numbers the same log densely.
    let audit_position = audit::Tree { db: &store.db }.size().await?;
    let _ = writeln!(
        out,
        "\naudit order: {audit_position} events numbered (audit positions 1..={audit_position}, \
         not global positions)"
    );
    store.close().await;
    Ok(())
}

/// Asks every instance to rebuild its search index, and rebuilds this machine's own now if no
/// server here holds it (a running server does it behind its live index within a second).
async fn rebuild_search_index(
    config: &Config,
    store: &crate::store::Store,
    key: &crate::signing::SigningKey,
) -> Result<u64, CliError> {
    let request = search::indexer::request_rebuild(&store.db).await?;
    let index = match SearchIndex::open(&config.index_dir(), None) {
        Ok(index) => index,
        Err(search::IndexError::InUse(_)) => {
            eprintln!(
                "requested a rebuild of {} (request {request}): each running instance rebuilds \
                 its own index behind the live one and switches to it (see /health)",
                search::NAME
            );
            return Ok(0);
        }
        Err(e) => return Err(CliError::Failed(e.to_string())),
    };
    let blobs = open_blobs(config, key, config.bind)?;
    let indexer = Indexer::new(
        std::sync::Arc::new(index),
        store.db.clone(),
        blobs,
        store.engine.clone(),
        PdfExtractor::from_config(config),
    );
    let mut bar = Progress::new(search::NAME);
    let count = indexer
        .rebuild(request, |done, total| bar.draw(done, total))
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    bar.finish();
    eprintln!(
        "rebuilt {}: {count} events, {} chunks",
        search::NAME,
        indexer.index.document_count()
    );
    Ok(count)
}

/// `ipto projections rebuild NAME | --all [--offline]`: online by default, behind the live read
/// models (see `projections::engine::online`); `--offline` empties and replays them in place, for
/// a service that is stopped.
pub async fn projections_rebuild(
    config: &Config,
    name: Option<&str>,
    offline: bool,
) -> Result<(), CliError> {
    let (store, key) = open_store(config).await?;
    let targets: Vec<_> = match name {
        None => store
            .engine
            .projections()
            .into_iter()
            .filter(|p| !p.is_reactor())
            .collect(),
        Some(name) if name == search::NAME => Vec::new(),
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
    let started = Instant::now();
    let mut replayed = 0u64;
    if !targets.is_empty() {
        let label = name.unwrap_or("all projections");
        let mut bar = Progress::new(label);
        let counts = if offline {
            store
                .engine
                .rebuild_all(&targets, |done, total| bar.draw(done, total))
                .await
        } else {
            store
                .engine
                .rebuild_online(&targets, |done, total| bar.draw(done, total))
                .await
        }
        .map_err(|e| CliError::Failed(e.to_string()))?;
        bar.finish();
        for (projection, count) in targets.iter().zip(counts) {
            replayed += count;
            eprintln!("rebuilt {}: {count} events", projection.name());
        }
        if !offline {
            eprintln!("switched: the rebuilt read models are live");
        }
    }
    if name.is_none() || name == Some(search::NAME) {
        replayed += rebuild_search_index(config, &store, &key).await?;
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

/// A progress line on a terminal's stderr: a bar, events/s and the time left.
struct Progress {
    label: String,
    tty: bool,
    started: Instant,
    drawn: Instant,
}

impl Progress {
    fn new(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            drawn: Instant::now(),
        }
    }

    fn draw(&mut self, done: u64, total: u64) {
        if !self.tty || (self.drawn.elapsed().as_millis() < 100 && done < total) {
            return;
        }
        self.drawn = Instant::now();
        const WIDTH: u64 = 30;
        let filled = (done.min(total) * WIDTH)
            .checked_div(total)
            .unwrap_or(WIDTH);
        let bar: String = (0..WIDTH)
            .map(|i| if i < filled { '#' } else { '-' })
            .collect();
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let eta = if rate > 0.0 {
            format!("{:.0}s left", total.saturating_sub(done) as f64 / rate)
        } else {
            String::new()
        };
        eprint!(
            "\r{:<20} [{bar}] {done}/{total} {rate:.0} events/s {eta}   ",
            self.label
        );
        let _ = std::io::stderr().flush();
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
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

/// `ipto admin erase EMAIL`: the keys the user created are read from the `api_keys` read model,
/// brought up to date first.
pub async fn admin_erase(config: &Config, email: &str) -> Result<(), CliError> {
    let (store, key) = open_store(config).await?;
    let accounts = Accounts {
        store: &store,
        key: &key,
        session_ttl_seconds: config.session_ttl_seconds,
    };
    let outcome = async {
        store
            .engine
            .catch_up(&projections::api_keys::ApiKeysProjection)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        let user_id = accounts
            .user_of(email)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?
            .ok_or_else(|| CliError::Failed(format!("no user with email {}", email.trim())))?;
        accounts
            .erase(&user_id, &crate::store::Actor::system())
            .await
            .map_err(|e| CliError::Failed(e.to_string()))
    }
    .await;
    store.close().await;
    let erasure = outcome?;
    println!(
        "erased {} (data keys destroyed: {})",
        erasure.user_id,
        erasure.subjects.join(", ")
    );
    Ok(())
}

/// The store with the audit order (and its tree) brought up to date: the audit commands are
/// complete even when no server ran since the last writes.
async fn audited_store(config: &Config) -> Result<crate::store::Store, CliError> {
    let (store, _) = open_store(config).await?;
    store
        .engine
        .catch_up(&AuditOrderProjection)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    Ok(store)
}

/// `ipto events export`: NDJSON in the audit order, like `GET /v1/admin/events`. The `audit_order`
/// projection is brought up to date first, so the export is complete even when no server ran
/// since the last writes.
pub async fn events_export(
    config: &Config,
    after: i64,
    aggregate_type: Option<&str>,
) -> Result<(), CliError> {
    let store = audited_store(config).await?;
    let filter = AuditFilter {
        aggregate_type,
        ..AuditFilter::default()
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut cursor = after;
    loop {
        let batch = audit::read_after(&store.db, cursor, filter, 1000).await?;
        let Some(last) = batch.last() else { break };
        cursor = last.position;
        for event in &batch {
            let line = crate::audit::AuditEvent::new(event);
            serde_json::to_writer(&mut out, &line).map_err(|e| CliError::Failed(e.to_string()))?;
            writeln!(out).map_err(|e| CliError::Failed(e.to_string()))?;
        }
    }
    out.flush().map_err(|e| CliError::Failed(e.to_string()))?;
    store.close().await;
    Ok(())
}

/// What `ipto events verify` checks.
pub struct VerifyArgs {
    pub export: Option<std::path::PathBuf>,
    pub head: Option<std::path::PathBuf>,
    pub public_key: Option<std::path::PathBuf>,
    pub proof: Option<std::path::PathBuf>,
}

fn service_key(config: &Config) -> Result<crate::notary::AuditKey, CliError> {
    crate::notary::AuditKey::load(config.audit_signing_key.as_deref(), &config.data_dir)
        .map_err(|e| CliError::Failed(e.to_string()))
}

/// `ipto events public-key`.
pub fn events_public_key(config: &Config) -> Result<(), CliError> {
    let public = service_key(config)?.public();
    println!(
        "{}",
        serde_json::to_string_pretty(&public).map_err(|e| CliError::Failed(e.to_string()))?
    );
    Ok(())
}

/// `ipto events prove POSITION`: the event, its audit path in the current tree, and that tree's
/// head signed now, as one JSON document for `ipto events verify --proof`.
pub async fn events_prove(config: &Config, position: u64) -> Result<(), CliError> {
    let key = service_key(config)?;
    let store = audited_store(config).await?;
    let tree = audit::Tree { db: &store.db };
    let size = tree.size().await?;
    if position > size {
        return Err(CliError::Failed(format!(
            "position {position} is beyond the log ({size} events)"
        )));
    }
    let proof = crate::audit::prove(&store.db, position, size)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let event = audit::read_after(&store.db, position as i64 - 1, AuditFilter::default(), 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Failed(format!("position {position} has no event")))?;
    let root: projections::merkle::Hash = hex::decode(&proof.root_hash)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| CliError::Failed("the stored root is not a hash".into()))?;
    let file = crate::verify::ProofFile {
        event: serde_json::to_value(crate::audit::AuditEvent::new(&event))
            .map_err(|e| CliError::Failed(e.to_string()))?,
        head: key.sign(size, &root, store.clock.now()),
        proof,
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&file).map_err(|e| CliError::Failed(e.to_string()))?
    );
    store.close().await;
    Ok(())
}

/// `ipto events verify`: see [`crate::verify`].
pub async fn events_verify(config: &Config, args: VerifyArgs) -> Result<(), CliError> {
    use crate::verify::{read_json, Checker};
    let failed = |e: String| CliError::Failed(e);
    let given_key: Option<crate::notary::PublicKey> = args
        .public_key
        .as_deref()
        .map(read_json)
        .transpose()
        .map_err(failed)?;
    if let Some(path) = &args.proof {
        let key = given_key.ok_or_else(|| {
            CliError::Failed("checking a proof needs the public key (--public-key FILE)".into())
        })?;
        let file: crate::verify::ProofFile = read_json(path).map_err(failed)?;
        let position = file
            .verify(&key)
            .map_err(|f| CliError::Failed(format!("verification failed: {f}")))?;
        println!(
            "verified: the event at position {position} is in the tree of {} events signed by key {} at {}",
            file.head.tree_size, file.head.key_id, file.head.signed_at
        );
        return Ok(());
    }
    let given_head: Option<crate::notary::SignedHead> = args
        .head
        .as_deref()
        .map(read_json)
        .transpose()
        .map_err(failed)?;
    let outcome = match &args.export {
        Some(path) => {
            let heads: Vec<_> = given_head.into_iter().collect();
            let mut checker = Checker::new(&heads, given_key.as_ref())
                .map_err(|f| CliError::Failed(format!("verification failed: {f}")))?;
            let file = std::fs::File::open(path)
                .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
            let mut result = Ok(());
            for (number, line) in std::io::BufRead::lines(std::io::BufReader::new(file)).enumerate()
            {
                let line =
                    line.map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
                if line.trim().is_empty() {
                    continue;
                }
                let item: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
                    CliError::Failed(format!(
                        "{} line {}: not JSON ({e})",
                        path.display(),
                        number + 1
                    ))
                })?;
                let position = item["position"].as_u64().unwrap_or(0);
                result = checker.push(position, Some(&item), item["leaf_hash"].as_str());
                if result.is_err() {
                    break;
                }
            }
            result.and_then(|()| checker.finish())
        }
        None => {
            let key = match given_key {
                Some(key) => key,
                None => service_key(config)?.public(),
            };
            let store = audited_store(config).await?;
            let heads = match given_head {
                Some(head) => vec![head],
                None => crate::audit::kept_heads(&store.db, 0, i64::MAX).await?,
            };
            let mut checker = Checker::new(&heads, Some(&key))
                .map_err(|f| CliError::Failed(format!("verification failed: {f}")))?;
            let mut after = 0;
            let mut result = Ok(());
            'pages: loop {
                let page = audit::read_numbered(&store.db, after, 1000).await?;
                let Some(last) = page.last() else { break };
                after = last.position;
                for numbered in &page {
                    let item = numbered.event.as_ref().map(audit::item);
                    result = checker.push(
                        numbered.position as u64,
                        item.as_ref(),
                        numbered.leaf_hash.as_deref(),
                    );
                    if result.is_err() {
                        break 'pages;
                    }
                }
            }
            // Events the audit order never numbered (a row inserted past the numbering).
            let logged = log::count(&store.db).await? as u64;
            let outcome = result.and_then(|()| checker.finish());
            let outcome = match outcome {
                Ok(verified) if verified.events != logged => Err(crate::verify::Failure {
                    position: None,
                    reason: format!(
                        "the log holds {logged} events, the audit tree {}",
                        verified.events
                    ),
                }),
                other => other,
            };
            store.close().await;
            outcome
        }
    };
    match outcome {
        Ok(verified) => {
            let heads: Vec<String> = verified.heads.iter().map(u64::to_string).collect();
            println!(
                "verified: {} events, root {}; signed heads checked at tree sizes: {}",
                verified.events,
                hex::encode(verified.root),
                if heads.is_empty() {
                    "none".to_owned()
                } else {
                    heads.join(", ")
                }
            );
            Ok(())
        }
        Err(failure) => Err(CliError::Failed(format!("verification failed: {failure}"))),
    }
}
