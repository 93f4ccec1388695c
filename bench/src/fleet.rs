//! The operators' figures for a fleet: what one decision of the shared limiter costs a request
//! (µs per `take`, in this instance's memory, in Redis, in the PostgreSQL database), measured
//! in-process against the same `Limits` the server uses; read latency with and without an online
//! rebuild running; command throughput at one and three instances behind HAProxy.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ipto::ratelimit::shared::Limits;

use crate::load::{self, Api, Measured, Op, Timing};
use crate::report::Figure;
use crate::server::{free_port, Scratch, Served};

/// Decisions timed per store, after as many unmeasured ones.
const DECISIONS: usize = 5_000;
/// Concurrent callers of the throughput figure.
const CALLERS: usize = 16;

/// Median and p99 of one decision (µs) at one caller, and the decisions per second at
/// [`CALLERS`], for each limiter store that can be reached.
pub async fn limiter_cost(
    root: &Path,
    postgres: Option<&str>,
    redis: Option<&str>,
) -> Result<Vec<Figure>, String> {
    let mut stores: Vec<(&str, Limits, Option<Scratch>)> = vec![("memory", Limits::memory(), None)];
    let key = ipto::signing::SigningKey::load(Some("bench signing key, 32 bytes or more"), root)
        .map_err(|e| e.to_string())?;
    if let Some(url) = redis {
        let prefix = format!("ipto-bench:{}:", uuid::Uuid::new_v4().simple());
        let limits = Limits::redis(url, &prefix, key.clone())
            .await
            .map_err(|e| e.to_string())?;
        stores.push(("redis", limits, None));
    }
    if let Some(server) = postgres {
        let scratch = Scratch::create(root, Some(server)).await?;
        let mut config = ipto::Config::defaults(&scratch.dir);
        config.database_url = Some(scratch.database_url.clone());
        let (store, _) = ipto::app::open_store(&config)
            .await
            .map_err(|e| e.to_string())?;
        let ipto::store::EventPool::Postgres(pool) = &store.events else {
            return Err("not PostgreSQL".into());
        };
        let limits = Limits::database(pool.clone(), key.clone());
        stores.push(("database", limits, Some(scratch)));
    }
    let mut figures = Vec::new();
    for (name, limits, scratch) in stores {
        let now = chrono::Utc::now();
        // Buckets that never refuse: the cost measured is a counted request's.
        let bucket = |n: usize| format!("credential:bench-{}", n % 1000);
        for n in 0..DECISIONS {
            limits.take(&bucket(n), 1_000_000, now).await;
        }
        let mut took = Vec::with_capacity(DECISIONS);
        for n in 0..DECISIONS {
            let started = Instant::now();
            let quota = limits.take(&bucket(n), 1_000_000, now).await;
            took.push(started.elapsed().as_secs_f64() * 1e6);
            assert!(quota.allowed, "{name}: a bench bucket refused");
        }
        took.sort_by(f64::total_cmp);
        let median = took[took.len() / 2];
        let p99 = took[took.len() * 99 / 100];
        let limits = std::sync::Arc::new(limits);
        let started = Instant::now();
        let callers = (0..CALLERS).map(|caller| {
            let limits = limits.clone();
            tokio::spawn(async move {
                for n in 0..DECISIONS / CALLERS {
                    let bucket = format!("credential:bench-{caller}-{}", n % 100);
                    limits.take(&bucket, 1_000_000, now).await;
                }
            })
        });
        for caller in futures::future::join_all(callers).await {
            caller.map_err(|e| e.to_string())?;
        }
        let per_second = (DECISIONS / CALLERS * CALLERS) as f64 / started.elapsed().as_secs_f64();
        eprintln!("  limiter {name}: median {median:.1} µs, p99 {p99:.1} µs, {per_second:.0}/s at {CALLERS}");
        let store = "fleet";
        figures.push(
            Figure::new(
                store,
                "limits",
                &format!("{name}: one decision, median"),
                "µs",
                false,
            )
            .value(median),
        );
        figures.push(
            Figure::new(
                store,
                "limits",
                &format!("{name}: one decision, p99"),
                "µs",
                false,
            )
            .value(p99),
        );
        figures.push(
            Figure::new(
                store,
                "limits",
                &format!("{name}: decisions/s at {CALLERS} callers"),
                "/s",
                true,
            )
            .value(per_second),
        );
        drop(limits);
        if let Some(scratch) = scratch {
            scratch.remove().await;
        }
    }
    Ok(figures)
}

/// Clients of the reads and commands below.
const CLIENTS: usize = 16;
/// Sellers whose data the reads read.
const SELLERS: usize = 8;

/// Read latency (GET dataset, list objects, provider dashboard at [`CLIENTS`] clients) on a
/// seeded server, without a rebuild and while `ipto projections rebuild --all` runs back to back
/// against it: p50 and p99 of each.
pub async fn reads_during_rebuild(
    store: &str,
    postgres: Option<&str>,
    bin: &Path,
    timing: Timing,
    root: &Path,
) -> Result<Vec<Figure>, String> {
    let scratch = Scratch::create(root, postgres).await?;
    let served = crate::serve(&scratch, bin).await;
    let api = Api::new(served.base.clone());
    let sellers = Arc::new(crate::sign_up(&api, SELLERS, "seller").await?);
    // A log to replay: datasets created by the sellers for a while.
    let creates = load::run(CLIENTS, timing, creating(&api, &sellers, "Filler")).await;
    let events = creates.ops;
    eprintln!("  {store}: seeded {events} datasets");
    let mut figures = Vec::new();
    for (what, path) in crate::READS {
        let op: Op = {
            let (api, sellers) = (api.clone(), sellers.clone());
            Arc::new(move |worker, _| {
                let (api, sellers) = (api.clone(), sellers.clone());
                Box::pin(async move {
                    let seller = &sellers[worker % sellers.len()];
                    api.get(&path(seller), &seller.token).await.map(drop)
                })
            })
        };
        let quiet = load::run(CLIENTS, timing, op.clone()).await;
        // Rebuilds back to back for the whole run.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rebuilding = {
            let (stop, command) = (
                stop.clone(),
                scratch.ipto(bin, &["projections", "rebuild", "--all"]),
            );
            let program = command.get_program().to_owned();
            let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
            let envs: Vec<_> = command
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
                .collect();
            std::thread::spawn(move || {
                let mut runs = 0u32;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let status = std::process::Command::new(&program)
                        .args(&args)
                        .env_clear()
                        .envs(envs.iter().cloned())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status();
                    match status {
                        Ok(s) if s.success() => runs += 1,
                        Ok(s) => return Err(format!("rebuild exited {s}")),
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Ok(runs)
            })
        };
        let during = load::run(CLIENTS, timing, op).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let runs = rebuilding.join().map_err(|_| "rebuild thread panicked")??;
        eprintln!(
            "  {store}: {what}, {CLIENTS} clients: p99 {:.2} ms quiet, {:.2} ms during {runs} rebuilds ({} errors)",
            quiet.p99_ms, during.p99_ms, during.errors
        );
        for (when, m) in [("no rebuild", &quiet), ("during rebuild --all", &during)] {
            for (metric, value) in [("p50", m.p50_ms), ("p99", m.p99_ms)] {
                let mut figure = Figure::new(
                    store,
                    "rebuild",
                    &format!("{what}, {CLIENTS} clients, {when}: {metric}"),
                    "ms",
                    false,
                )
                .value(value);
                if m.errors > 0 {
                    figure = figure.note(format!("{} errors", m.errors));
                }
                if when != "no rebuild" {
                    figure = figure.note(format!("{runs} rebuilds of a {events}-dataset log"));
                }
                figures.push(figure);
            }
        }
    }
    served.stop();
    scratch.remove().await;
    Ok(figures)
}

/// Command throughput (create dataset at [`CLIENTS`] clients) on PostgreSQL: one instance
/// directly, then three on the same database behind HAProxy (round-robin).
pub async fn fleet_commands(
    postgres: &str,
    bin: &Path,
    timing: Timing,
    root: &Path,
) -> Result<Vec<Figure>, String> {
    if std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_err()
    {
        return Err("haproxy is not installed".into());
    }
    let scratch = Scratch::create(root, Some(postgres)).await?;
    let mut instances = vec![crate::serve(&scratch, bin).await];
    let mut figures = Vec::new();
    let one = create_load(&instances[0].base, timing).await?;
    for n in 1..3 {
        let dir = scratch.dir.join(format!("instance-{n}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let port = free_port();
        let mut command = scratch.ipto(bin, &["serve"]);
        command
            .env("IPTO_DATA_DIR", &dir)
            .env("IPTO_BIND", format!("127.0.0.1:{port}"))
            .env("IPTO_RATE_LIMIT_PER_MINUTE", "1000000000")
            .env("IPTO_AUTH_RATE_LIMIT_PER_MINUTE", "1000000000");
        instances.push(Served::start(command, port, "/health", &dir.join("server.log")).await);
    }
    let front = free_port();
    let backends: String = instances
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "    server i{i} {} check inter 500ms\n",
                s.base.trim_start_matches("http://")
            )
        })
        .collect();
    let config = scratch.dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n\
             frontend front\n    bind 127.0.0.1:{front}\n    default_backend instances\n\
             backend instances\n    balance roundrobin\n    option httpchk GET /health\n{backends}"
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut haproxy = std::process::Command::new("haproxy");
    haproxy.arg("-db").arg("-f").arg(&config);
    let balancer = Served::start(haproxy, front, "/health", &scratch.dir.join("haproxy.log")).await;
    let three = create_load(&balancer.base, timing).await?;
    balancer.stop();
    for instance in instances {
        instance.stop();
    }
    for (instances, m) in [(1, &one), (3, &three)] {
        eprintln!(
            "  fleet: create dataset, {CLIENTS} clients, {instances} instance(s): {:.0} ops/s, p99 {:.1} ms ({} errors)",
            m.throughput(),
            m.p99_ms,
            m.errors
        );
        let name = |metric: &str| {
            format!("create dataset, {CLIENTS} clients, {instances} instance(s): {metric}")
        };
        let mut throughput = Figure::new("postgres", "fleet", &name("throughput"), "ops/s", true)
            .value(m.throughput());
        if m.errors > 0 {
            throughput = throughput.note(format!("{} errors", m.errors));
        }
        figures.push(throughput);
        figures.push(Figure::new("postgres", "fleet", &name("p99"), "ms", false).value(m.p99_ms));
    }
    scratch.remove().await;
    Ok(figures)
}

/// Sellers signed up through `base`, then dataset creations from [`CLIENTS`] clients.
async fn create_load(base: &str, timing: Timing) -> Result<Measured, String> {
    let api = Api::new(base.to_owned());
    let sellers = Arc::new(crate::sign_up(&api, SELLERS, "seller").await?);
    Ok(load::run(CLIENTS, timing, creating(&api, &sellers, "Fleet")).await)
}

/// One dataset created per operation, each worker as one of `sellers`.
fn creating(api: &Api, sellers: &Arc<Vec<crate::Account>>, label: &'static str) -> Op {
    let (api, sellers) = (api.clone(), sellers.clone());
    Arc::new(move |worker, n| {
        let (api, sellers) = (api.clone(), sellers.clone());
        Box::pin(async move {
            let seller = &sellers[worker % sellers.len()];
            api.post(
                "/v1/datasets",
                Some(&seller.token),
                serde_json::json!({"name": format!("{label} {worker}-{n}")}),
            )
            .await
            .map(drop)
        })
    })
}
