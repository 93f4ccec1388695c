//! Clients cannot exhaust the server: a signed upload URL takes one upload at a time, stalled
//! uploads and headers are cut off after `IPTO_REQUEST_TIMEOUT_SECONDS`, JSON bodies must arrive
//! within it, at most `IPTO_MAX_CONNECTIONS` connections are served at once, and failed logins
//! with huge e-mails are refused before anything is kept. Measured on the real binary, whose
//! resident memory stays bounded under each attack.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::Server;
use crate::helpers::*;

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Opens a connection and sends `head`, then `body_bytes` zero bytes, and keeps it open.
async fn stall(address: &str, head: &str, body_bytes: usize) -> TcpStream {
    let mut stream = TcpStream::connect(address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < body_bytes {
        let n = chunk.len().min(body_bytes - sent);
        if stream.write_all(&chunk[..n]).await.is_err() {
            break;
        }
        sent += n;
    }
    stream
}

/// Whether the server has closed (or answered and closed) the connection, within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn stalled_uploads_headers_and_bodies_leave_memory_bounded() {
    let fresh = fresh().await;
    let server = Server::start_with(
        &fresh,
        &[
            ("IPTO_MAX_CONNECTIONS", "64"),
            ("IPTO_REQUEST_TIMEOUT_SECONDS", "2"),
        ],
    )
    .await;
    let signup = server
        .post(
            "/v1/auth/signup",
            json!({"email": email(), "password": PASSWORD, "display_name": "A", "tenant_name": "T"}),
        )
        .await
        .unwrap()
        .expect(201);
    let token = signup.data()["session_token"].as_str().unwrap().to_owned();
    let created = reply(
        server
            .client
            .post(format!("{}/v1/datasets", server.address))
            .bearer_auth(&token)
            .json(&json!({"name": "Big"}))
            .send()
            .await
            .unwrap(),
    )
    .await
    .expect(201);
    let dataset = created.data()["dataset_id"].as_str().unwrap().to_owned();
    let size = 256 * 1024 * 1024;
    let ticket = reply(
        server
            .client
            .post(format!("{}/v1/datasets/{dataset}/objects/upload", server.address))
            .bearer_auth(&token)
            .json(&json!({"filename": "big.bin", "content_type": "application/octet-stream", "size_bytes": size}))
            .send()
            .await
            .unwrap(),
    )
    .await
    .expect(201);
    let url = url::Url::parse(ticket.data()["upload_url"].as_str().unwrap()).unwrap();
    let target = format!("{}?{}", url.path(), url.query().unwrap());
    let pid = server.pid();
    let baseline = rss_mib(pid);
    // The peak, sampled throughout the attack.
    let (done, mut finished) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let mut peak: f64 = 0.0;
        loop {
            peak = peak.max(rss_mib(pid));
            tokio::select! {
                _ = &mut finished => return peak,
                _ = tokio::time::sleep(Duration::from_millis(25)) => {}
            }
        }
    });

    // Twenty PUTs to one URL, each sending 8 MiB and then nothing.
    let put = format!("PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n");
    let mut uploads = Vec::new();
    for _ in 0..20 {
        uploads.push(stall(&server.address, &put, 8 * 1024 * 1024).await);
    }
    // Two hundred connections that never finish their headers.
    let partial = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut headers = Vec::new();
    for _ in 0..200 {
        headers.push(stall(&server.address, partial, 0).await);
    }
    // Twenty JSON bodies of almost 1 MiB, sent but for their last byte.
    let body = 1024 * 1024 - 1;
    let post = format!(
        "POST /v1/datasets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {body}\r\n\r\n"
    );
    let mut bodies = Vec::new();
    for _ in 0..20 {
        bodies.push(stall(&server.address, &post, body - 1).await);
    }

    // Thirty failed logins with e-mails of a mebibyte each (none is remembered: 422).
    let long = "a".repeat(1024 * 1024 - 256) + "@x.test";
    for _ in 0..30 {
        let login = server
            .post(
                "/v1/auth/login",
                json!({"email": long, "password": "wrong password"}),
            )
            .await
            .unwrap();
        assert_eq!(login.status, 422);
    }

    // Every one of them is cut off within the timeout (plus the wait of those beyond the cap).
    for stream in uploads.iter_mut().chain(bodies.iter_mut()) {
        assert!(closed_within(stream, Duration::from_secs(10)).await);
    }
    for stream in headers.iter_mut() {
        assert!(closed_within(stream, Duration::from_secs(20)).await);
    }
    let _ = done.send(());
    let under_attack = sampler.await.unwrap();
    let after = rss_mib(pid);
    // The server still answers.
    let health = server
        .client
        .get(format!("{}/health", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    eprintln!("RSS MiB: baseline {baseline:.1}, under attack {under_attack:.1}, after {after:.1}");
    assert!(
        under_attack - baseline < 64.0,
        "RSS peaked {:.1} MiB above its baseline under attack",
        under_attack - baseline
    );
    assert!(
        after - baseline < 64.0,
        "RSS grew by {:.1} MiB",
        after - baseline
    );
    server.stop();
    if let Some(url) = Some(fresh.database_url.clone()).filter(|u| u.starts_with("postgres")) {
        drop_database(&url).await;
    }
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let fresh = fresh().await;
    let mut config = config(&fresh);
    config.max_connections = 2;
    let app = spawn_with(config).await;
    let partial = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let first = stall(&app.address, partial, 0).await;
    let second = stall(&app.address, partial, 0).await;
    // A third client's complete request is not served while two connections are open…
    let mut third = stall(
        &app.address,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        0,
    )
    .await;
    let mut answer = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(500), third.read_to_end(&mut answer)).await;
    assert!(early.is_err(), "served beyond the connection limit");
    // …and is, once one of them goes.
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut answer))
        .await
        .expect("served after a connection closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    drop(second);
    app.finish().await;
}
