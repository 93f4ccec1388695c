//! A closed-loop load generator: `concurrency` workers each run one operation after another for a
//! fixed time; throughput and latency percentiles are taken after a warm-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::Value;

/// One operation, given the worker's index and its iteration number. `Err` counts as an error.
pub type Op = Arc<dyn Fn(usize, u64) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// What a load run measured.
#[derive(Clone, Debug)]
pub struct Measured {
    pub concurrency: usize,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub first_error: Option<String>,
}

impl Measured {
    /// Completed operations per second.
    pub fn throughput(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// How long each run lasts.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub warmup: Duration,
    pub measure: Duration,
}

/// Runs `op` from `concurrency` workers for the warm-up and then the measured time.
pub async fn run(concurrency: usize, timing: Timing, op: Op) -> Measured {
    let start = Instant::now();
    let record_from = start + timing.warmup;
    let end = record_from + timing.measure;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let op = op.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            let mut last_done = record_from;
            let mut iteration = 0u64;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let outcome = op(worker, iteration).await;
                let done = Instant::now();
                iteration += 1;
                if began < record_from {
                    continue;
                }
                last_done = last_done.max(done);
                match outcome {
                    Ok(()) => latencies.push(done - began),
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert(error);
                    }
                }
            }
            (latencies, errors, first_error, last_done)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut last_done = record_from;
    while let Some(joined) = workers.join_next().await {
        let (l, e, f, d) = joined.expect("load worker");
        latencies.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
        last_done = last_done.max(d);
    }
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1].as_secs_f64() * 1000.0
    };
    Measured {
        concurrency,
        ops: latencies.len() as u64,
        errors,
        seconds: (last_done - record_from).as_secs_f64(),
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        first_error,
    }
}

/// A JSON client of one server.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    /// A client with a connection pool large enough for every worker.
    pub fn new(base: String) -> Self {
        ipto::blobs::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build()
            .expect("http client");
        Self { base, http }
    }

    /// Sends a request; the body's `data` on 2xx, else the status and body as the error.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
        }
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(value.get("data").cloned().unwrap_or(value))
    }

    pub async fn get(&self, path: &str, token: &str) -> Result<Value, String> {
        self.send(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> Result<Value, String> {
        self.send(reqwest::Method::POST, path, token, Some(&body))
            .await
    }

    /// PUTs raw bytes to an absolute (signed) URL.
    pub async fn put_url(&self, url: &str, bytes: Vec<u8>) -> Result<(), String> {
        let response = self
            .http
            .put(url)
            .body(bytes)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("PUT {}", response.status()))
        }
    }

    /// The body of a plain GET that must answer 2xx (e.g. `/metrics`).
    pub async fn text(&self, path: &str) -> Result<String, String> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.text().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("GET {path}: {status}"))
        }
    }

    /// The status of a plain GET (for the empty-route ceiling).
    pub async fn status(&self, path: &str) -> Result<u16, String> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let _ = response.bytes().await;
        Ok(status)
    }
}
