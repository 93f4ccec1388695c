//! What one command costs the database: SQL statements per command (the request's and the
//! projections' that follow it), counted from sqlx's statement log, and on PostgreSQL the
//! transactions committed per command (`pg_stat_database.xact_commit`). The baseline of group
//! commit and of fewer round trips.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::load::Api;
use crate::report::Figure;
use crate::server::{free_port, Scratch, Served};

/// Commands counted per figure, one after another.
const COMMANDS: usize = 50;

pub async fn per_command(
    store: &str,
    postgres: Option<&str>,
    bin: &Path,
    root: &Path,
) -> Result<Vec<Figure>, String> {
    let scratch = Scratch::create(root, postgres).await?;
    let port = free_port();
    let log = scratch.dir.join("statements.log");
    let mut command = scratch.ipto(bin, &["serve"]);
    command
        .env("IPTO_BIND", format!("127.0.0.1:{port}"))
        .env("IPTO_RATE_LIMIT_PER_MINUTE", "1000000000")
        .env("IPTO_AUTH_RATE_LIMIT_PER_MINUTE", "1000000000")
        // Every statement the server runs, one line each.
        .env("IPTO_LOG", "warn,sqlx::query=debug");
    let served = Served::start(command, port, "/health", &log).await;
    let api = Api::new(served.base.clone());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let signup = api
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": format!("counted-{run}@bench.test"), "password": crate::PASSWORD, "display_name": "Counted", "tenant_name": "Counted"}),
        )
        .await?;
    let token = signup["session_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    crate::logins::caught_up(&api, Duration::from_secs(60)).await?;

    // What the server runs while idle (its workers' polls), per second, to subtract.
    let idle_window = Duration::from_secs(3);
    let before = statements(&log)?;
    tokio::time::sleep(idle_window).await;
    let idle_per_second = (statements(&log)? - before) as f64 / idle_window.as_secs_f64();

    let mut figures = Vec::new();
    let database = scratch
        .database_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let commits = |database: String| async move {
        match postgres {
            Some(server) => xact_commit(server, &database).await.map(Some),
            None => Ok(None),
        }
    };
    let lines_before = statements(&log)?;
    let commits_before = commits(database.clone()).await?;
    let started = Instant::now();
    for n in 0..COMMANDS {
        api.post(
            "/v1/datasets",
            Some(&token),
            json!({"name": format!("Counted {n}")}),
        )
        .await?;
    }
    crate::logins::caught_up(&api, Duration::from_secs(60)).await?;
    // Statistics reach pg_stat_database when a backend's transaction ends or within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let lines = statements(&log)? - lines_before;
    for (count, summary) in top_statements(&log, lines_before, 8)? {
        eprintln!("    {count:>5}  {summary}");
    }
    let commits_after = commits(database).await?;
    served.stop();
    let per = (lines as f64 - idle_per_second * elapsed).max(0.0) / COMMANDS as f64;
    eprintln!(
        "  {store}: create dataset: {per:.1} statements per command ({lines} in {elapsed:.1} s, \
         {idle_per_second:.1}/s idle subtracted)"
    );
    figures.push(
        Figure::new(
            store,
            "statements",
            "create dataset: SQL statements per command (request and projections)",
            "",
            false,
        )
        .value(per)
        .note(format!(
            "{COMMANDS} commands; {idle_per_second:.1} statements/s of the idle workers subtracted"
        )),
    );
    if let (Some(before), Some(after)) = (commits_before, commits_after) {
        let per = (after - before) as f64 / COMMANDS as f64;
        eprintln!("  {store}: create dataset: {per:.1} commits per command");
        figures.push(
            Figure::new(
                store,
                "statements",
                "create dataset: transactions committed per command (all of the database's)",
                "",
                false,
            )
            .value(per)
            .note(format!("{COMMANDS} commands; idle polls included")),
        );
    }
    scratch.remove().await;
    Ok(figures)
}

/// Statements logged so far.
fn statements(log: &Path) -> Result<usize, String> {
    let text = std::fs::read_to_string(log).map_err(|e| e.to_string())?;
    Ok(text.lines().filter(|l| l.contains("sqlx::query")).count())
}

/// The `limit` statements run most often after the first `skip` logged, with their counts.
fn top_statements(log: &Path, skip: usize, limit: usize) -> Result<Vec<(usize, String)>, String> {
    let text = std::fs::read_to_string(log).map_err(|e| e.to_string())?;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for line in text
        .lines()
        .filter(|l| l.contains("sqlx::query"))
        .skip(skip)
    {
        let summary = line
            .split("summary=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("?");
        *counts.entry(summary.to_owned()).or_default() += 1;
    }
    let mut counts: Vec<(usize, String)> = counts.into_iter().map(|(s, n)| (n, s)).collect();
    counts.sort_by_key(|c| std::cmp::Reverse(c.0));
    counts.truncate(limit);
    Ok(counts)
}

/// Transactions committed in `database` so far.
async fn xact_commit(server: &str, database: &str) -> Result<i64, String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server)
        .await
        .map_err(|e| e.to_string())?;
    let commits: i64 = sqlx::query_scalar(
        "SELECT CAST(xact_commit AS BIGINT) FROM pg_stat_database WHERE datname = $1",
    )
    .bind(database)
    .fetch_one(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(commits)
}
