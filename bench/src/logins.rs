//! A login's cost against its user's history: the login of a user whose own stream already holds
//! [`HISTORY`] `UserLoggedIn` events (as every account that logged in before logins had streams
//! of their own does), against a fresh user's, on one server. Target: within 2× of the fresh
//! user's.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::load::Api;
use crate::report::Figure;
use crate::server::Scratch;

/// Logins already in the veteran's stream.
pub const HISTORY: usize = 100_000;
/// Logins timed per user, alternating between the two, after [`WARM_UP`] each.
const TIMED: usize = 40;
const WARM_UP: usize = 3;
/// Rows per INSERT of the seeded history.
const ROWS_PER_STATEMENT: usize = 500;

pub async fn login_after_history(
    store: &str,
    postgres: Option<&str>,
    bin: &Path,
    root: &Path,
) -> Result<Vec<Figure>, String> {
    let scratch = Scratch::create(root, postgres).await?;
    let served = crate::serve(&scratch, bin).await;
    let api = Api::new(served.base.clone());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut users = Vec::new();
    for who in ["fresh", "veteran"] {
        let email = format!("{who}-{run}@bench.test");
        let signup = api
            .post(
                "/v1/auth/signup",
                None,
                json!({"email": email, "password": crate::PASSWORD, "display_name": who, "tenant_name": who}),
            )
            .await?;
        let user_id = signup["user_id"].as_str().unwrap_or_default().to_owned();
        let tenant_id = signup["tenant_id"].as_str().unwrap_or_default().to_owned();
        users.push((email, user_id, tenant_id));
    }
    served.stop();

    seed_history(&scratch, &users[1].1, &users[1].2).await?;
    let served = crate::serve(&scratch, bin).await;
    let api = Api::new(served.base.clone());
    caught_up(&api, Duration::from_secs(600)).await?;

    let mut took: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..WARM_UP + TIMED {
        for (n, (email, _, _)) in users.iter().enumerate() {
            let started = Instant::now();
            api.post(
                "/v1/auth/login",
                None,
                json!({"email": email, "password": crate::PASSWORD}),
            )
            .await?;
            if round >= WARM_UP {
                took[n].push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    served.stop();
    scratch.remove().await;
    let [fresh, veteran] = took.map(|mut t| {
        t.sort_by(f64::total_cmp);
        (t[t.len() / 2], t[t.len() * 99 / 100])
    });
    eprintln!(
        "  {store}: login p50 {:.1} ms fresh, {:.1} ms after {HISTORY} logins ({:.2}×)",
        fresh.0,
        veteran.0,
        veteran.0 / fresh.0
    );
    let mut figures = Vec::new();
    for (metric, fresh, veteran) in [("p50", fresh.0, veteran.0), ("p99", fresh.1, veteran.1)] {
        figures.push(
            Figure::new(
                store,
                "logins",
                &format!("login of a fresh user: {metric}"),
                "ms",
                false,
            )
            .value(fresh),
        );
        figures.push(
            Figure::new(
                store,
                "logins",
                &format!("login after {HISTORY} logins: {metric}"),
                "ms",
                false,
            )
            .value(veteran)
            .note(format!(
                "{:.2}× the fresh user's (target ≤ 2×)",
                veteran / fresh
            )),
        );
    }
    Ok(figures)
}

/// Appends [`HISTORY`] `UserLoggedIn` events to the user's own stream, after its registration.
async fn seed_history(scratch: &Scratch, user_id: &str, tenant_id: &str) -> Result<(), String> {
    let mut config = ipto::Config::defaults(&scratch.dir);
    config.database_url = Some(scratch.database_url.clone());
    config.signing_key = Some("bench signing key, at least 32 bytes".into());
    let (store, _) = ipto::app::open_store(&config)
        .await
        .map_err(|e| e.to_string())?;
    let db = &store.db;
    let next: i64 = sqlx::query_scalar(
        "SELECT CAST(MAX(sequence) AS BIGINT) FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1",
    )
    .bind(user_id)
    .fetch_one(&db.pool)
    .await
    .map_err(|e| e.to_string())?;
    let cast = if scratch.database_url.starts_with("postgres") {
        "::jsonb"
    } else {
        ""
    };
    let metadata = json!({
        "actor_type": "user", "actor_id": user_id, "tenant_id": tenant_id,
        "request_id": "req_bench", "occurred_at": aggregates::timestamp::format(chrono::Utc::now()),
    })
    .to_string();
    let mut tx = db.begin_write().await.map_err(|e| e.to_string())?;
    for chunk in (1..=HISTORY as i64)
        .collect::<Vec<_>>()
        .chunks(ROWS_PER_STATEMENT)
    {
        let values: Vec<String> = (0..chunk.len())
            .map(|r| {
                format!(
                    "('user', $1, ${}, 'UserLoggedIn', '1.0', '{{\"UserLoggedIn\":{{}}}}'{cast}, $2{cast})",
                    r + 3
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(user_id).bind(&metadata);
        for offset in chunk {
            query = query.bind(next + offset);
        }
        query.execute(&mut *tx).await.map_err(|e| e.to_string())?;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    store.close().await;
    Ok(())
}

/// Waits until every projection has applied the whole log (`/metrics`: each lag 0).
pub async fn caught_up(api: &Api, timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let text = api.text("/metrics").await?;
        let lags: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with("ipto_projection_lag_events{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        if !lags.is_empty() && lags.iter().all(|lag| *lag == 0) {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "projections still behind after {timeout:?}: {lags:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
