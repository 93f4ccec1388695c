//! `ipto-bench`: the benchmark suite. Starts the release `ipto` binary on loopback, seeds it, and
//! measures on SQLite and PostgreSQL:
//!
//! 1. commands (create dataset; initiate + PUT + confirm upload) at 1, 16 and 64 clients,
//!    against single-event INSERT transactions through the same pool into the same database;
//! 2. reads (GET a dataset, list objects, provider dashboard) at 64 clients, against an empty
//!    axum route;
//! 3. search latency and throughput at 1, 16 and 64 clients over an index of 100,000 chunks;
//! 4. `ipto projections rebuild --all` over a log of a million events, against a raw ordered
//!    scan of the events table, with the process's peak RSS;
//!
//! and, once, on SQLite: retrieval quality over a test collection (CISI), each retrieval mode
//! against a tuned BM25 peer (`quality.rs`).
//!
//! Writes `results/latest.md` and `results/latest.json` beside this crate, after comparing with
//! the previous `latest.json`. Run through `bench/run`; settings in `bench/README.md`.

mod audit;
mod corpus;
mod eventlog;
mod fleet;
mod load;
mod logins;
mod quality;
mod report;
mod server;
mod statements;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use crate::load::{Api, Measured, Op, Timing};
use crate::report::{Figure, Results, Target};
use crate::server::{free_port, Scratch, Served};

/// Client counts for commands.
const COMMAND_LEVELS: [usize; 3] = [1, 16, 64];
/// Client count for reads.
const READ_CLIENTS: usize = 64;
const ADMIN_EMAIL: &str = "bench-admin@bench.test";
const ADMIN_PASSWORD: &str = "bench admin password";
const PASSWORD: &str = "bench password 1";

/// Settings, from `IPTO_BENCH_*` variables.
struct Settings {
    stores: Vec<String>,
    postgres: String,
    /// `IPTO_BENCH_REDIS_URL`: the Redis of the fleet slot (default the local server).
    redis: Option<String>,
    events: u64,
    search_chunks: u64,
    /// `IPTO_BENCH_DENSE_WAIT_SECONDS`: how long the search slot waits for every passage to be
    /// embedded.
    dense_wait: Duration,
    timing: Timing,
    sellers: usize,
    buyers: usize,
    out: PathBuf,
    bin: PathBuf,
    /// `IPTO_BENCH_ONLY`: the one slot to run (`quality`, or `search` on each store), or every
    /// slot.
    only: Option<String>,
    /// The SMART-format collection the quality slot measures.
    quality_dir: PathBuf,
    /// How long the quality slot waits for the index (dense leg included) to catch up.
    quality_timeout: Duration,
}

impl Settings {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let number = |name: &str, default: u64| {
            var(name)
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or(default)
        };
        let bin = var("IPTO_BENCH_BIN").map(PathBuf::from).unwrap_or_else(|| {
            std::env::current_exe()
                .expect("own path")
                .with_file_name("ipto")
        });
        Self {
            stores: var("IPTO_BENCH_STORES")
                .unwrap_or_else(|| "sqlite,postgres".into())
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect(),
            postgres: var("IPTO_BENCH_POSTGRES_URL")
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            redis: Some(
                var("IPTO_BENCH_REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            )
            .filter(|url| url != "none"),
            events: number("IPTO_BENCH_EVENTS", 1_000_000),
            search_chunks: number("IPTO_BENCH_SEARCH_CHUNKS", 100_000),
            dense_wait: Duration::from_secs(number("IPTO_BENCH_DENSE_WAIT_SECONDS", 3600)),
            timing: Timing {
                warmup: Duration::from_millis(number("IPTO_BENCH_WARMUP_MS", 1000)),
                measure: Duration::from_secs(number("IPTO_BENCH_SECONDS", 5)),
            },
            sellers: number("IPTO_BENCH_SELLERS", 64) as usize,
            buyers: number("IPTO_BENCH_BUYERS", 8) as usize,
            out: var("IPTO_BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results")),
            bin,
            only: var("IPTO_BENCH_ONLY"),
            quality_dir: var("IPTO_BENCH_QUALITY_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    // The shared folder beside the repository.
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cisi")
                }),
            quality_timeout: Duration::from_secs(number(
                "IPTO_BENCH_QUALITY_TIMEOUT_SECONDS",
                1800,
            )),
        }
    }

    fn describe(&self) -> String {
        let quality = format!(
            "retrieval quality over {} on SQLite",
            std::fs::canonicalize(&self.quality_dir)
                .unwrap_or_else(|_| self.quality_dir.clone())
                .display()
        );
        match self.only.as_deref() {
            Some("quality") => return format!("only {quality}"),
            Some(slot) => {
                return format!(
                    "only the {slot} slot; {} s measured after {} ms warm-up per figure; log of {} events",
                    self.timing.measure.as_secs(),
                    self.timing.warmup.as_millis(),
                    self.events
                )
            }
            None => {}
        }
        format!(
            "{} s measured after {} ms warm-up per figure; {} sellers, {} buyers; search index of {} chunks; log of {} events; PostgreSQL {}; {quality}",
            self.timing.measure.as_secs(),
            self.timing.warmup.as_millis(),
            self.sellers,
            self.buyers,
            self.search_chunks,
            self.events,
            self.postgres.rsplit('@').next().unwrap_or("")
        )
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve-empty") {
        server::serve_empty(args.get(2).map(String::as_str).unwrap_or("127.0.0.1:0"));
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    ipto::blobs::install_crypto_provider();
    let settings = Settings::from_env();
    // The code measured is the code at the start.
    let revision = revision();
    assert!(
        settings.bin.exists(),
        "{} is missing: build it with `cargo build --release --bin ipto` (bench/run does)",
        settings.bin.display()
    );
    match settings.only.as_deref() {
        None | Some("quality") | Some("search") | Some("audit") | Some("fleet")
        | Some("logins") | Some("statements") => {}
        Some(other) => {
            panic!(
                "unknown IPTO_BENCH_ONLY={other}: the slots it selects are quality, search, audit, fleet, logins and statements"
            )
        }
    }
    let root = std::env::temp_dir().join(format!("ipto-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("scratch root");
    let mut figures = Vec::new();
    let stores = if settings.only.is_some() {
        Vec::new()
    } else {
        settings.stores.clone()
    };
    if settings.only.as_deref() == Some("audit") {
        for store in settings.stores.clone() {
            eprintln!("== {store}: audit");
            let postgres = (store == "postgres").then_some(settings.postgres.as_str());
            match bench_audit(&store, postgres, &settings, &root).await {
                Ok(mut f) => figures.append(&mut f),
                Err(error) => eprintln!("{store}: audit skipped: {error}"),
            }
        }
    }
    if settings.only.as_deref() == Some("fleet") {
        eprintln!("== fleet: the shared limiter");
        let postgres = settings
            .stores
            .iter()
            .any(|s| s == "postgres")
            .then_some(settings.postgres.as_str());
        match fleet::limiter_cost(&root, postgres, settings.redis.as_deref()).await {
            Ok(mut f) => figures.append(&mut f),
            Err(error) => eprintln!("fleet: skipped: {error}"),
        }
        for store in settings.stores.clone() {
            eprintln!("== {store}: reads during an online rebuild");
            let postgres = (store == "postgres").then_some(settings.postgres.as_str());
            match fleet::reads_during_rebuild(
                &store,
                postgres,
                &settings.bin,
                settings.timing,
                &root,
            )
            .await
            {
                Ok(mut f) => figures.append(&mut f),
                Err(error) => eprintln!("{store}: reads during a rebuild skipped: {error}"),
            }
        }
        if let Some(postgres) = postgres {
            eprintln!("== postgres: commands at one and three instances");
            match fleet::fleet_commands(postgres, &settings.bin, settings.timing, &root).await {
                Ok(mut f) => figures.append(&mut f),
                Err(error) => eprintln!("fleet: commands skipped: {error}"),
            }
        }
    }
    if settings.only.as_deref() == Some("logins") {
        for store in settings.stores.clone() {
            eprintln!("== {store}: a login after {} logins", logins::HISTORY);
            let postgres = (store == "postgres").then_some(settings.postgres.as_str());
            match logins::login_after_history(&store, postgres, &settings.bin, &root).await {
                Ok(mut f) => figures.append(&mut f),
                Err(error) => eprintln!("{store}: logins skipped: {error}"),
            }
        }
    }
    if settings.only.as_deref() == Some("statements") {
        for store in settings.stores.clone() {
            eprintln!("== {store}: statements and commits per command");
            let postgres = (store == "postgres").then_some(settings.postgres.as_str());
            match statements::per_command(&store, postgres, &settings.bin, &root).await {
                Ok(mut f) => figures.append(&mut f),
                Err(error) => eprintln!("{store}: statements skipped: {error}"),
            }
        }
    }
    if settings.only.as_deref() == Some("search") {
        for store in settings.stores.clone() {
            eprintln!("== {store}: search");
            let postgres = (store == "postgres").then_some(settings.postgres.as_str());
            match bench_search(&store, postgres, &settings, &root).await {
                Ok(mut f) => figures.append(&mut f),
                Err(error) => eprintln!("{store}: search skipped: {error}"),
            }
        }
    }
    for store in stores {
        eprintln!("== {store}");
        let postgres = match store.as_str() {
            "sqlite" => None,
            "postgres" => Some(settings.postgres.as_str()),
            other => panic!("unknown store {other}: use sqlite and/or postgres"),
        };
        match bench_store(&store, postgres, &settings, &root).await {
            Ok(mut f) => figures.append(&mut f),
            Err(error) => eprintln!("{store}: skipped: {error}"),
        }
    }
    let quality = quality::Quality {
        dir: &settings.quality_dir,
        timeout: settings.quality_timeout,
        bin: &settings.bin,
        root: &root,
    };
    if settings.only.is_none() || settings.only.as_deref() == Some("quality") {
        match quality::bench(quality).await {
            Ok(mut f) => figures.append(&mut f),
            Err(error) => eprintln!("quality: skipped: {error}"),
        }
    }
    let _ = std::fs::remove_dir_all(&root);

    let results = Results {
        generated_at: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        revision,
        command: "bench/run".into(),
        machine: machine(),
        settings: settings.describe(),
        figures,
    };
    std::fs::create_dir_all(&settings.out).expect("results directory");
    let json_path = settings.out.join("latest.json");
    let previous: Option<Results> = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let markdown = report::markdown(&results, previous.as_ref());
    std::fs::write(settings.out.join("latest.md"), &markdown).expect("write latest.md");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&results).expect("json") + "\n",
    )
    .expect("write latest.json");
    println!("{markdown}");
    println!("written to {}", settings.out.join("latest.md").display());
    if let Some(previous) = &previous {
        let worse = report::regressions(&results, previous);
        if !worse.is_empty() {
            eprintln!("figures worse than half their previous value:");
            for line in worse {
                eprintln!("  {line}");
            }
            std::process::exit(3);
        }
    }
}

fn revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let rev = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    if dirty {
        format!("{rev} (with uncommitted changes)")
    } else {
        rev
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cores} cores, {model}")
}

/// The path a read fetches for an account.
type ReadPath = fn(&Account) -> String;

/// The reads measured, each a seller's session reading its own data.
const READS: [(&str, ReadPath); 3] = [
    ("GET dataset", |a| format!("/v1/datasets/{}", a.dataset)),
    ("list objects", |a| {
        format!("/v1/datasets/{}/objects", a.dataset)
    }),
    ("provider dashboard", |_| "/v1/provider/dashboard".into()),
];

/// An account the load acts as.
#[derive(Clone, Debug)]
struct Account {
    token: String,
    tenant: String,
    /// Its listed, premium dataset.
    dataset: String,
}

async fn bench_store(
    store: &str,
    postgres: Option<&str>,
    settings: &Settings,
    root: &Path,
) -> Result<Vec<Figure>, String> {
    let timing = settings.timing;
    let mut figures = Vec::new();

    // Ceiling of commands: single-event INSERT transactions into a scratch database.
    let scratch = Scratch::create(root, postgres).await?;
    let mut inserts = Vec::new();
    for clients in COMMAND_LEVELS {
        let m = eventlog::insert_ceiling(&scratch.database_url, clients, timing).await?;
        eprintln!("  INSERT ceiling, {clients} tasks: {}", line(&m));
        inserts.push(m);
    }
    scratch.remove().await;

    let scratch = Scratch::create(root, postgres).await?;
    let served = serve(&scratch, &settings.bin).await;
    let outcome = bench_server(store, settings, &served, &inserts, &mut figures).await;
    served.stop();
    outcome?;

    // Rebuild over a million events, against a raw scan.
    let grown = eventlog::grow(&scratch.database_url, settings.events).await?;
    eprintln!(
        "  grew the log from {} to {} events in {:.1} s",
        grown.template_events, grown.total_events, grown.seconds
    );
    eventlog::raw_scan(&scratch.database_url).await?; // warms the cache as a rebuild's first pass would
    let (scanned, scan_seconds) = eventlog::raw_scan(&scratch.database_url).await?;
    let scan_rate = scanned as f64 / scan_seconds;
    eprintln!("  raw scan: {scanned} events in {scan_seconds:.2} s");
    let rebuilt = rebuild(&scratch, &settings.bin)?;
    eprintln!(
        "  rebuild --all: {} events applied by {} projections in {:.2} s, peak RSS {:.0} MiB ({:.0} MiB anonymous)",
        rebuilt.applied,
        rebuilt.projections,
        rebuilt.seconds,
        rebuilt.peak_kib as f64 / 1024.0,
        rebuilt.anon_kib as f64 / 1024.0
    );
    let audited = audit_log_figures(store, &scratch, &settings.bin).await;
    scratch.remove().await;
    figures.extend(audited?);
    let applied_rate = rebuilt.applied as f64 / rebuilt.seconds;
    figures.push(
        Figure::new(
            store,
            "rebuild",
            "rebuild --all: events applied/s",
            "events/s",
            true,
        )
        .value(applied_rate)
        .ceiling("raw ordered scan", scan_rate)
        .target(Target::AtLeast { value: 100_000.0 })
        .target(Target::MinRatio { ratio: 0.30 })
        .note(format!(
            "{} projections × {} events",
            rebuilt.projections, grown.total_events
        )),
    );
    figures.push(
        Figure::new(
            store,
            "rebuild",
            "rebuild --all: log events/s",
            "events/s",
            true,
        )
        .value(grown.total_events as f64 / rebuilt.seconds)
        .ceiling("raw ordered scan", scan_rate)
        .note("log size / wall time"),
    );
    figures.push(
        Figure::new(store, "rebuild", "rebuild --all: wall time", "s", false)
            .value(rebuilt.seconds)
            .ceiling(
                "raw scan × projections",
                scan_seconds * rebuilt.projections as f64,
            ),
    );
    figures.push(
        Figure::new(store, "rebuild", "rebuild --all: peak RSS", "MiB", false)
            .value(rebuilt.peak_kib as f64 / 1024.0)
            .note("VmHWM, mapped database pages included"),
    );
    figures.push(
        Figure::new(
            store,
            "rebuild",
            "rebuild --all: peak anonymous RSS",
            "MiB",
            false,
        )
        .value(rebuilt.anon_kib as f64 / 1024.0)
        .note("RssAnon sampled every 20 ms"),
    );

    // Search, on a server of its own.
    figures.extend(bench_search(store, postgres, settings, root).await?);
    Ok(figures)
}

/// `IPTO_BENCH_ONLY=audit`: the stream's delivery under the create-dataset load at 16 clients,
/// then the tree's cost and `verify` over the grown log.
async fn bench_audit(
    store: &str,
    postgres: Option<&str>,
    settings: &Settings,
    root: &Path,
) -> Result<Vec<Figure>, String> {
    let scratch = Scratch::create(root, postgres).await?;
    let served = serve(&scratch, &settings.bin).await;
    let api = Api::new(served.base.clone());
    let outcome = async {
        let admin = admin_session(&api).await?;
        let sellers = Arc::new(sign_up(&api, settings.sellers, "seller").await?);
        stream_figures(store, &api, &admin, &sellers, settings.timing).await
    }
    .await;
    served.stop();
    let mut figures = outcome?;
    let grown = eventlog::grow(&scratch.database_url, settings.events).await?;
    eprintln!("  grew the log to {} events", grown.total_events);
    let audited = audit_log_figures(store, &scratch, &settings.bin).await;
    scratch.remove().await;
    figures.extend(audited?);
    Ok(figures)
}

/// `POST /v1/datasets` as the sellers, one after another per worker.
fn create_dataset(api: &Api, sellers: &Arc<Vec<Account>>) -> Op {
    let (api, sellers) = (api.clone(), sellers.clone());
    Arc::new(move |worker, i| {
        let (api, sellers) = (api.clone(), sellers.clone());
        Box::pin(async move {
            let seller = &sellers[worker % sellers.len()];
            api.post(
                "/v1/datasets",
                Some(&seller.token),
                json!({"name": format!("Dataset {worker}-{i}"), "description": "Rows of benchmark data"}),
            )
            .await
            .map(drop)
        })
    })
}

/// The admin's event stream followed while 16 clients create datasets.
async fn stream_figures(
    store: &str,
    api: &Api,
    admin: &str,
    sellers: &Arc<Vec<Account>>,
    timing: Timing,
) -> Result<Vec<Figure>, String> {
    let load = load::run(16, timing, create_dataset(api, sellers));
    let (measured, delivery) = audit::stream_delivery(api, admin, load).await?;
    eprintln!(
        "  event stream under create dataset at 16 clients ({}): {} events, delivery p50 {:.2} ms, p99 {:.2} ms",
        line(&measured),
        delivery.events,
        delivery.p50_ms,
        delivery.p99_ms
    );
    let note = format!(
        "occurred_at to arrival, {} events, create dataset at 16 clients ({:.0}/s)",
        delivery.events,
        measured.throughput()
    );
    Ok(vec![
        Figure::new(store, "audit", "event stream delivery p50", "ms", false)
            .value(delivery.p50_ms)
            .note(note.clone()),
        Figure::new(store, "audit", "event stream delivery p99", "ms", false)
            .value(delivery.p99_ms)
            .note(note),
    ])
}

/// Over the grown log: the audit order rebuilt without and with its tree, and `verify` over an
/// export.
async fn audit_log_figures(
    store: &str,
    scratch: &Scratch,
    bin: &Path,
) -> Result<Vec<Figure>, String> {
    let (numbering, with_tree) = audit::tree_cost(&scratch.database_url).await?;
    let (events, export_seconds, verify_seconds) = audit::verify_export(scratch, bin)?;
    eprintln!(
        "  audit order rebuild: {numbering:.0} events/s numbering only, {with_tree:.0} with the tree; \
         export {events} events in {export_seconds:.1} s, verify in {verify_seconds:.1} s"
    );
    Ok(vec![
        Figure::new(
            store,
            "audit",
            "audit order rebuild with the tree",
            "events/s",
            true,
        )
        .value(with_tree)
        .ceiling("numbering only (before the tree)", numbering),
        Figure::new(store, "audit", "events verify --export", "events/s", true)
            .value(events as f64 / verify_seconds)
            .note(format!("{events} events, no database")),
        Figure::new(store, "audit", "events export", "events/s", true)
            .value(events as f64 / export_seconds),
    ])
}

fn line(m: &Measured) -> String {
    let mut out = format!(
        "{:.0}/s, p50 {:.2} ms, p99 {:.2} ms ({} ops, {} errors)",
        m.throughput(),
        m.p50_ms,
        m.p99_ms,
        m.ops,
        m.errors
    );
    if let Some(e) = &m.first_error {
        out.push_str(&format!(
            "; first error: {}",
            e.chars().take(200).collect::<String>()
        ));
    }
    out
}

/// How a load run is judged: its ceiling run, how many ceiling operations one operation is worth,
/// and its targets.
struct Judge<'a> {
    ceiling: &'a Measured,
    ceiling_name: &'a str,
    per_op: f64,
    p99_max: Option<f64>,
    min_ratio: Option<f64>,
}

/// Figures for one load run: throughput, p50 and p99 against the ceiling run.
fn load_figures(store: &str, group: &str, what: &str, m: &Measured, judge: Judge) -> Vec<Figure> {
    let Judge {
        ceiling,
        ceiling_name,
        per_op,
        p99_max,
        min_ratio,
    } = judge;
    let name = |metric: &str| format!("{what}, {} clients: {metric}", m.concurrency);
    let mut throughput = Figure::new(store, group, &name("throughput"), "ops/s", true)
        .value(m.throughput())
        .ceiling(ceiling_name, ceiling.throughput() / per_op);
    if let Some(ratio) = min_ratio {
        throughput = throughput.target(Target::MinRatio { ratio });
    }
    if m.errors > 0 {
        throughput = throughput.note(format!("{} errors", m.errors));
    }
    let p50 = Figure::new(store, group, &name("p50"), "ms", false)
        .value(m.p50_ms)
        .ceiling(ceiling_name, ceiling.p50_ms * per_op);
    let mut p99 = Figure::new(store, group, &name("p99"), "ms", false)
        .value(m.p99_ms)
        .ceiling(ceiling_name, ceiling.p99_ms * per_op);
    if let Some(max) = p99_max {
        p99 = p99.target(Target::AtMost { value: max });
    }
    vec![throughput, p50, p99]
}

async fn bench_server(
    store: &str,
    settings: &Settings,
    served: &Served,
    inserts: &[Measured],
    figures: &mut Vec<Figure>,
) -> Result<(), String> {
    let timing = settings.timing;
    let api = Api::new(served.base.clone());
    let admin = admin_session(&api).await?;
    let sellers = Arc::new(sign_up(&api, settings.sellers, "seller").await?);
    let buyers = Arc::new(sign_up(&api, settings.buyers, "buyer").await?);

    // 1. Commands.
    for (level, clients) in COMMAND_LEVELS.into_iter().enumerate() {
        let m = load::run(clients, timing, create_dataset(&api, &sellers)).await;
        eprintln!("  create dataset, {clients} clients: {}", line(&m));
        figures.extend(load_figures(
            store,
            "commands",
            "create dataset",
            &m,
            Judge {
                ceiling: &inserts[level],
                ceiling_name: "1 INSERT transaction",
                per_op: 1.0,
                p99_max: (clients == 64).then_some(50.0),
                min_ratio: Some(0.5),
            },
        ));
    }
    figures.extend(stream_figures(store, &api, &admin, &sellers, timing).await?);
    let uploaded: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    for (level, clients) in COMMAND_LEVELS.into_iter().enumerate() {
        let (api, sellers, uploaded) = (api.clone(), sellers.clone(), uploaded.clone());
        let op: Op = Arc::new(move |worker, i| {
            let (api, sellers, uploaded) = (api.clone(), sellers.clone(), uploaded.clone());
            Box::pin(async move {
                let owner = worker % sellers.len();
                let seller = &sellers[owner];
                let bytes = format!("row {worker},{i},benchmark data\n")
                    .repeat(40)
                    .into_bytes();
                let initiated = api
                    .post(
                        &format!("/v1/datasets/{}/objects/upload", seller.dataset),
                        Some(&seller.token),
                        json!({"filename": "rows.csv", "content_type": "text/csv", "size_bytes": bytes.len()}),
                    )
                    .await?;
                let object = initiated["object_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let url = initiated["upload_url"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                api.put_url(&url, bytes).await?;
                api.post(
                    &format!("/v1/objects/{object}/confirm"),
                    Some(&seller.token),
                    json!({}),
                )
                .await?;
                uploaded.lock().unwrap().push((owner, object));
                Ok(())
            })
        });
        let m = load::run(clients, timing, op).await;
        eprintln!("  upload flow, {clients} clients: {}", line(&m));
        figures.extend(load_figures(
            store,
            "commands",
            "initiate + PUT + confirm upload",
            &m,
            Judge {
                ceiling: &inserts[level],
                ceiling_name: "2 INSERT transactions",
                per_op: 2.0,
                p99_max: (clients == 64).then_some(50.0),
                min_ratio: Some(0.5),
            },
        ));
    }

    // Seed the reads: two approved objects per seller, bought by every buyer.
    let to_approve: Vec<(usize, String)> = {
        let uploaded = uploaded.lock().unwrap();
        let mut per_seller = vec![0; sellers.len()];
        uploaded
            .iter()
            .filter(|(owner, _)| {
                per_seller[*owner] += 1;
                per_seller[*owner] <= 2
            })
            .cloned()
            .collect()
    };
    let approvals = futures::stream::iter(to_approve.iter().cloned())
        .map(|(owner, object)| {
            let (api, admin, tenant) = (api.clone(), admin.clone(), sellers[owner].tenant.clone());
            async move {
                api.post(
                    &format!("/v1/admin/review/objects/{tenant}/{object}/approve"),
                    Some(&admin),
                    json!({}),
                )
                .await
                .map(|_| object)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let approved: Vec<String> = approvals.into_iter().collect::<Result<_, _>>()?;
    let downloads = futures::stream::iter(0..approved.len() * buyers.len())
        .map(|n| {
            let (api, token, object) = (
                api.clone(),
                buyers[n % buyers.len()].token.clone(),
                approved[n / buyers.len()].clone(),
            );
            async move {
                api.get(&format!("/v1/objects/{object}/download"), &token)
                    .await
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    downloads.into_iter().collect::<Result<Vec<_>, _>>()?;
    eprintln!(
        "  seeded {} approvals and {} downloads",
        approved.len(),
        approved.len() * buyers.len()
    );

    // 2. Reads, against an empty route.
    let empty_port = free_port();
    let mut empty = std::process::Command::new(std::env::current_exe().expect("own path"));
    empty.args(["serve-empty", &format!("127.0.0.1:{empty_port}")]);
    let empty = Served::start(
        empty,
        empty_port,
        "/",
        &std::env::temp_dir().join("ipto-bench-empty.log"),
    )
    .await;
    let empty_api = Api::new(empty.base.clone());
    let op: Op = Arc::new(move |_, _| {
        let api = empty_api.clone();
        Box::pin(async move {
            match api.status("/").await? {
                200 => Ok(()),
                other => Err(format!("status {other}")),
            }
        })
    });
    let floor = load::run(READ_CLIENTS, timing, op).await;
    empty.stop();
    eprintln!(
        "  empty axum route, {READ_CLIENTS} clients: {}",
        line(&floor)
    );
    for (what, path) in READS {
        let (api, sellers) = (api.clone(), sellers.clone());
        let op: Op = Arc::new(move |worker, _| {
            let (api, sellers) = (api.clone(), sellers.clone());
            Box::pin(async move {
                let seller = &sellers[worker % sellers.len()];
                api.get(&path(seller), &seller.token).await.map(drop)
            })
        });
        let m = load::run(READ_CLIENTS, timing, op).await;
        eprintln!("  {what}, {READ_CLIENTS} clients: {}", line(&m));
        figures.extend(load_figures(
            store,
            "reads",
            what,
            &m,
            Judge {
                ceiling: &floor,
                ceiling_name: "empty axum route",
                per_op: 1.0,
                p99_max: Some(20.0),
                min_ratio: None,
            },
        ));
    }

    Ok(())
}

/// Signs up `n` accounts; sellers each get a listed, premium dataset.
async fn sign_up(api: &Api, n: usize, role: &'static str) -> Result<Vec<Account>, String> {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let email = format!("{role}-{i}-{run_id}@bench.test");
            async move {
                let signup = api
                    .post(
                        "/v1/auth/signup",
                        None,
                        json!({"email": email, "password": PASSWORD, "display_name": "Bench", "tenant_name": format!("Bench {role} {i}")}),
                    )
                    .await?;
                let token = signup["session_token"].as_str().unwrap_or_default().to_owned();
                let tenant = signup["tenant_id"].as_str().unwrap_or_default().to_owned();
                let dataset = if role == "seller" {
                    api.post(
                        "/v1/datasets",
                        Some(&token),
                        json!({"name": format!("Catalogue {i}"), "visibility": "listed", "monetization_mode": "premium"}),
                    )
                    .await?["dataset_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                } else {
                    String::new()
                };
                Ok::<_, String>(Account {
                    token,
                    tenant,
                    dataset,
                })
            }
        })
        .buffered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// A session of the bootstrap admin.
async fn admin_session(api: &Api) -> Result<String, String> {
    Ok(api
        .post(
            "/v1/auth/login",
            None,
            json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
        )
        .await?["session_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// Starts `ipto serve` (release) on `scratch` with limits out of the way and the bench's admin.
async fn serve(scratch: &Scratch, bin: &Path) -> Served {
    let port = free_port();
    let mut command = scratch.ipto(bin, &["serve"]);
    command
        .env("IPTO_BIND", format!("127.0.0.1:{port}"))
        .env("IPTO_RATE_LIMIT_PER_MINUTE", "1000000000")
        .env("IPTO_AUTH_RATE_LIMIT_PER_MINUTE", "1000000000")
        .env("IPTO_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("IPTO_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD);
    Served::start(command, port, "/health", &scratch.dir.join("server.log")).await
}

/// Sellers whose datasets hold the search corpus.
const SEARCH_SELLERS: usize = 16;

/// Search on a server of its own (so the rebuild's log stays the same from run to run): seeds
/// the corpus, measures searches, then times `ipto projections rebuild search` over it.
async fn bench_search(
    store: &str,
    postgres: Option<&str>,
    settings: &Settings,
    root: &Path,
) -> Result<Vec<Figure>, String> {
    let scratch = Scratch::create(root, postgres).await?;
    let served = serve(&scratch, &settings.bin).await;
    let api = Api::new(served.base.clone());
    let seeded = async {
        let admin = admin_session(&api).await?;
        let sellers = sign_up(&api, SEARCH_SELLERS, "seller").await?;
        let buyer = sign_up(&api, 1, "buyer").await?.remove(0);
        let shelves = Arc::new(
            sellers
                .iter()
                .map(|s| corpus::Shelf {
                    token: s.token.clone(),
                    tenant: s.tenant.clone(),
                    dataset: s.dataset.clone(),
                })
                .collect::<Vec<_>>(),
        );
        let seeding = Instant::now();
        let (chunks, _) = corpus::seed(&api, &admin, shelves, settings.search_chunks).await?;
        let seeded = seeding.elapsed().as_secs_f64();
        let (passages, waited) = corpus::embedded(&api, settings.dense_wait).await?;
        let rate = passages as f64 / (seeded + waited);
        eprintln!(
            "  dense leg: {passages} passages embedded {waited:.0} s after seeding ({seeded:.0} s); {rate:.0} passages/s from the first upload"
        );
        let embedding = Figure::new(store, "search", "embedding: passages/s", "passages/s", true)
            .value(rate)
            .note(format!(
                "{passages} passages of {chunks} chunks, from the first upload until none waits (uploads and indexing running alongside)"
            ))
            .target(Target::AtLeast { value: 200.0 });
        Ok::<_, String>((chunks, buyer, embedding))
    }
    .await;
    let mut figures = match seeded {
        Ok((chunks, buyer, embedding)) => {
            let mut figures = vec![embedding];
            figures.extend(search(store, &api, &buyer.token, settings.timing, chunks).await);
            figures.extend(search_modes(store, &api, &buyer.token, settings.timing, chunks).await);
            figures
        }
        Err(e) => {
            served.stop();
            scratch.remove().await;
            return Err(e);
        }
    };
    served.stop();
    let started = Instant::now();
    let output = scratch
        .ipto(&settings.bin, &["projections", "rebuild", "search"])
        .output()
        .map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    scratch.remove().await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    // "rebuilt search: N events, D documents"
    let documents = stderr
        .lines()
        .find_map(|l| l.strip_prefix("rebuilt search: "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|d| d.split_whitespace().next())
        .and_then(|d| d.parse::<f64>().ok());
    match documents {
        Some(documents) if output.status.success() => {
            eprintln!("  rebuild search: {documents} chunks in {seconds:.2} s");
            figures.push(
                Figure::new(
                    store,
                    "search",
                    "rebuild search index: chunks/s",
                    "chunks/s",
                    true,
                )
                .value(documents / seconds)
                .note(format!(
                    "{documents} chunks in {seconds:.1} s, blobs read back"
                )),
            );
        }
        _ => eprintln!("  rebuild search failed: {stderr}"),
    }
    Ok(figures)
}

/// Search over the seeded index, as a buyer whose every search is metered (each result from
/// another tenant is charged), at 1, 16 and 64 clients. The latency target is judged with one
/// client: the time a search takes; with more clients the p99 is the queue in front of it.
async fn search(store: &str, api: &Api, token: &str, timing: Timing, chunks: u64) -> Vec<Figure> {
    let queries = Arc::new(corpus::queries());
    let mut figures = Vec::new();
    for clients in COMMAND_LEVELS {
        let (api, token, queries) = (api.clone(), token.to_owned(), queries.clone());
        let op: Op = Arc::new(move |worker, i| {
            let (api, token, queries) = (api.clone(), token.clone(), queries.clone());
            Box::pin(async move {
                let query = &queries[(worker + i as usize) % queries.len()];
                let found = api
                    .post("/v1/search", Some(&token), json!({"query": query}))
                    .await?;
                match found["results"].as_array() {
                    Some(results) if !results.is_empty() => Ok(()),
                    _ => Err(format!("no results for {query}")),
                }
            })
        });
        let m = load::run(clients, timing, op).await;
        eprintln!("  search, {clients} clients: {}", line(&m));
        let note = format!("index of {chunks} chunks");
        let name = |what: &str| format!("search, {clients} clients: {what}");
        figures.push(
            Figure::new(store, "search", &name("throughput"), "ops/s", true)
                .value(m.throughput())
                .note(note.clone()),
        );
        figures.extend(latencies(store, &name, &m, note, clients == 1));
    }
    figures
}

/// A search measurement's p50 and p99 (the p99 judged against 50 ms when `judged`); its errors
/// are reported.
fn latencies(
    store: &str,
    name: &dyn Fn(&str) -> String,
    m: &load::Measured,
    note: String,
    judged: bool,
) -> [Figure; 2] {
    if m.errors > 0 {
        eprintln!(
            "  {}: {} errors, first: {}",
            name("errors"),
            m.errors,
            m.first_error.as_deref().unwrap_or("")
        );
    }
    let p99 = Figure::new(store, "search", &name("p99"), "ms", false)
        .value(m.p99_ms)
        .note(note.clone());
    [
        Figure::new(store, "search", &name("p50"), "ms", false)
            .value(m.p50_ms)
            .note(note),
        if judged {
            p99.target(Target::AtMost { value: 50.0 })
        } else {
            p99
        },
    ]
}

/// Each retrieval mode alone, at one client, once every passage is embedded: the time one
/// search takes (`hybrid` is judged against 50 ms).
async fn search_modes(
    store: &str,
    api: &Api,
    token: &str,
    timing: Timing,
    chunks: u64,
) -> Vec<Figure> {
    let queries = Arc::new(corpus::queries());
    let mut figures = Vec::new();
    for mode in ["lexical", "dense", "hybrid"] {
        let (api, token, queries) = (api.clone(), token.to_owned(), queries.clone());
        let op: Op = Arc::new(move |worker, i| {
            let (api, token, queries) = (api.clone(), token.clone(), queries.clone());
            Box::pin(async move {
                let query = &queries[(worker + i as usize) % queries.len()];
                let found = api
                    .post(
                        "/v1/search",
                        Some(&token),
                        json!({"query": query, "retrieval_mode": mode}),
                    )
                    .await?;
                match found["results"].as_array() {
                    Some(results) if !results.is_empty() => Ok(()),
                    _ => Err(format!("no {mode} results for {query}")),
                }
            })
        });
        let m = load::run(1, timing, op).await;
        eprintln!("  search {mode}, 1 client: {}", line(&m));
        let note =
            format!("retrieval_mode {mode}, index of {chunks} chunks, every passage embedded");
        let name = |what: &str| format!("search {mode}, 1 client: {what}");
        figures.extend(latencies(store, &name, &m, note, mode == "hybrid"));
    }
    figures
}

/// What `ipto projections rebuild --all` did.
struct Rebuilt {
    applied: u64,
    projections: usize,
    seconds: f64,
    /// Peak resident set (VmHWM), mapped database pages included.
    peak_kib: u64,
    /// Peak anonymous resident memory, sampled every 20 ms.
    anon_kib: u64,
}

/// Runs `ipto projections rebuild --all`, sampling the process's peak RSS until it exits.
fn rebuild(scratch: &Scratch, bin: &Path) -> Result<Rebuilt, String> {
    let started = Instant::now();
    let mut child = scratch
        .ipto(bin, &["projections", "rebuild", "--all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id();
    let (mut peak_kib, mut anon_kib) = (0, 0);
    loop {
        if let Some(kib) = server::status_kib(pid, "VmHWM:") {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(kib) = server::status_kib(pid, "RssAnon:") {
            anon_kib = anon_kib.max(kib);
        }
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = started.elapsed().as_secs_f64();
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("rebuild failed: {stderr}"));
    }
    // "replayed N events in Xs (R events/s)"
    let applied = stdout
        .split_whitespace()
        .skip_while(|w| *w != "replayed")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("unexpected rebuild output: {stdout}"))?;
    let projections = stderr.lines().filter(|l| l.starts_with("rebuilt ")).count();
    Ok(Rebuilt {
        applied,
        projections,
        seconds,
        peak_kib,
        anon_kib,
    })
}
