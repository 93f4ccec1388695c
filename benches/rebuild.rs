//! Benchmark: `ipto projections rebuild --all` over a log of 100,000 events, on SQLite and (when
//! reachable) PostgreSQL. Prints events/s.
//!
//! Run: `cargo bench --bench rebuild` (set `IPTO_BENCH_EVENTS` to change the log size and
//! `IPTO_BENCH_POSTGRES_URL` to name the PostgreSQL server; default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use std::time::Instant;

use aggregates::tenant::TenantEvent;
use aggregates::user::{Profile, UserEvent};
use aggregates::{DisplayName, Email, Role, TenantId, TenantName, UserId};
use cqrs_es::DomainEvent;
use ipto::Config;
use projections::Dialect;
use serde_json::json;

/// Events per account: TenantCreated, UserRegistered and three logins.
const PER_ACCOUNT: usize = 5;

#[tokio::main]
async fn main() {
    let events: usize = std::env::var("IPTO_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("ipto-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = format!("sqlite://{}", dir.join("ipto.db").display());
    bench("sqlite", &dir, &sqlite, events).await;

    let server = std::env::var("IPTO_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("ipto_bench_{}", uuid::Uuid::new_v4().simple());
    match admin(&server, &format!("CREATE DATABASE {name}")).await {
        Ok(()) => {
            let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
            bench("postgres", &dir, &format!("{base}/{name}"), events).await;
            let _ = admin(&server, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
        }
        Err(error) => println!("postgres: skipped ({error})"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

async fn admin(server: &str, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server).await?;
    sqlx::Executor::execute(&mut conn, sql).await?;
    conn.close().await
}

async fn bench(store: &str, dir: &std::path::Path, url: &str, events: usize) {
    let mut config = Config::defaults(dir.join(store));
    config.database_url = Some(url.to_owned());
    config.signing_key = Some("bench signing key, at least 32 bytes".into());
    let seeded = seed(&config, events).await;
    let started = Instant::now();
    ipto::cli::projections_rebuild(&config, None, false)
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    // `--all` replays the whole log once per projection (tenants, users).
    let replayed = seeded * 2;
    println!(
        "{store}: rebuild --all over a {seeded}-event log: {replayed} events applied (2 projections) in {seconds:.2}s = {:.0} events/s ({:.0} log events/s)",
        replayed as f64 / seconds,
        seeded as f64 / seconds,
    );
}

/// Appends accounts' events straight into the log (the shape cqrs-es writes), in one transaction.
async fn seed(config: &Config, events: usize) -> usize {
    let (store, _) = ipto::app::open_store(config).await.unwrap();
    let cast = if store.db.dialect == Dialect::Postgres {
        "::jsonb"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6{cast}, $7{cast})"
    );
    let started = Instant::now();
    let mut tx = store.db.begin_write().await.unwrap();
    let accounts = events.div_ceil(PER_ACCOUNT);
    let mut written = 0;
    for n in 0..accounts {
        let tenant_id = TenantId::generate();
        let user_id = UserId::generate();
        let tenant = TenantEvent::TenantCreated {
            tenant_id: tenant_id.clone(),
            name: TenantName::parse(&format!("Tenant {n}")).unwrap(),
            owner: Some(user_id.clone()),
        };
        let mut user_events = vec![UserEvent::UserRegistered(Profile {
            user_id: user_id.clone(),
            tenant_id: tenant_id.clone(),
            email: Email::parse(&format!("bench{n}@example.com")).unwrap(),
            display_name: DisplayName::parse(&format!("User {n}")).unwrap(),
            roles: vec![Role::Owner],
        })];
        user_events.extend((0..PER_ACCOUNT - 2).map(|_| UserEvent::UserLoggedIn {}));
        let metadata = json!({
            "actor_type": "user", "actor_id": user_id, "tenant_id": tenant_id,
            "request_id": "req_bench", "occurred_at": aggregates::timestamp::format(chrono::Utc::now()),
        })
        .to_string();
        let rows = std::iter::once((
            "tenant",
            tenant_id.to_string(),
            1,
            tenant.event_type(),
            serde_json::to_string(&tenant).unwrap(),
        ))
        .chain(user_events.iter().enumerate().map(|(i, e)| {
            (
                "user",
                user_id.to_string(),
                i as i64 + 1,
                e.event_type(),
                serde_json::to_string(e).unwrap(),
            )
        }));
        for (kind, id, sequence, event_type, payload) in rows {
            sqlx::query(&sql)
                .bind(kind)
                .bind(id)
                .bind(sequence)
                .bind(event_type)
                .bind("1.0")
                .bind(payload)
                .bind(&metadata)
                .execute(&mut *tx)
                .await
                .unwrap();
            written += 1;
        }
    }
    tx.commit().await.unwrap();
    println!(
        "{}: seeded {written} events in {:.1}s",
        store.db.dialect.as_str(),
        started.elapsed().as_secs_f64()
    );
    store.close().await;
    written
}
