//! The operators' figures for a fleet: what one decision of the shared limiter costs a request
//! (µs per `take`, in this instance's memory, in Redis, in the PostgreSQL database), measured
//! in-process against the same `Limits` the server uses.

use std::path::Path;
use std::time::Instant;

use ipto::ratelimit::shared::Limits;

use crate::report::Figure;
use crate::server::Scratch;

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
