//! The test harness: the real application on a random port with a fresh database — a new SQLite
//! file, or a new PostgreSQL database when `IPTO_TEST_DATABASE_URL` names a server.

use std::path::PathBuf;
use std::time::Duration;

use ipto::{AppState, Application, Config};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A fresh, empty database URL and data directory.
#[derive(Clone)]
pub struct Fresh {
    pub data_dir: PathBuf,
    pub database_url: String,
}

/// Creates a new data directory and, on PostgreSQL, a new database.
pub async fn fresh() -> Fresh {
    let name = format!("ipto_t_{}", uuid::Uuid::new_v4().simple());
    let data_dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&data_dir).unwrap();
    let database_url = match std::env::var("IPTO_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        Some(server) => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&server)
                .await
                .expect("test PostgreSQL reachable");
            sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
                .await
                .expect("create test database");
            let _ = conn.close().await;
            let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
            format!("{base}/{name}")
        }
        None => format!("sqlite://{}", data_dir.join("ipto.db").display()),
    };
    Fresh {
        data_dir,
        database_url,
    }
}

/// Whether the suite runs against PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("IPTO_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty())
}

/// Configuration for a test server on a fresh database.
pub fn config(fresh: &Fresh) -> Config {
    let mut config = Config::defaults(&fresh.data_dir);
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.database_url = Some(fresh.database_url.clone());
    config.signing_key = Some("test signing key, at least 32 bytes".into());
    // Tests share one client IP and sign up freely; rate-limit tests set their own limits.
    config.rate_limit_per_minute = 100_000;
    config.auth_rate_limit_per_minute = 100_000;
    config.auth_failure_limit_per_minute = 100_000;
    // The app runs in this test binary: its own executable is not `ipto`.
    config.pdf_extractor = Some(env!("CARGO_BIN_EXE_ipto").into());
    config
}

/// A running server.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts the application on a fresh database with default settings.
pub async fn spawn_app() -> TestApp {
    let fresh = fresh().await;
    spawn_with(config(&fresh)).await
}

/// Starts the application with this configuration.
pub async fn spawn_with(config: Config) -> TestApp {
    let app = Application::build(config.clone())
        .await
        .expect("application starts");
    let address = format!("http://{}", app.local_addr());
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        client: http_client(),
        state,
        config,
        stop: Some(stop),
        handle: Some(handle),
    }
}

/// A response: status, headers and JSON body (`Null` when not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// `body.data`.
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// `body.error.code`.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts the status, with the body in the message.
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected reply: {}",
            self.body
        );
        self
    }
}

impl TestApp {
    /// Sends a request; `token` goes in `Authorization: Bearer`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.address, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        reply(request.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 200);
        response.text().await.expect("a text body")
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// Signs up a new account; returns `(session_token, user_id, tenant_id)`.
    pub async fn signup(&self, email: &str) -> (String, String, String) {
        let reply = self
            .post(
                "/v1/auth/signup",
                None,
                json!({"email": email, "password": PASSWORD, "display_name": "Test User", "tenant_name": "Test Tenant"}),
            )
            .await
            .expect(201);
        let data = reply.data();
        (
            data["session_token"].as_str().unwrap().to_owned(),
            data["user_id"].as_str().unwrap().to_owned(),
            data["tenant_id"].as_str().unwrap().to_owned(),
        )
    }

    /// Logs in; returns the reply.
    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/v1/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .await
    }

    /// Stops the server gracefully; its database stays for a restart.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }

    /// Stops the server and drops its PostgreSQL database (the end of a test).
    pub async fn finish(self) {
        let url = self.config.database_url.clone();
        let data_dir = self.config.data_dir.clone();
        self.stop().await;
        let _ = std::fs::remove_dir_all(data_dir);
        if let Some(url) = url {
            drop_database(&url).await;
        }
    }
}

/// Reads a reqwest response into a [`Reply`].
pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

/// The password every test account uses.
pub const PASSWORD: &str = "correct horse battery";

/// A unique e-mail address.
pub fn email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Rows of a query as JSON-ish strings, for comparing tables.
pub async fn table(state: &AppState, sql: &str) -> Vec<Vec<String>> {
    use sqlx::{Column, Row, TypeInfo, ValueRef};
    let rows = sqlx::query(sql)
        .fetch_all(&state.store.db.pool)
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            (0..row.columns().len())
                .map(|i| {
                    let raw = row.try_get_raw(i).unwrap();
                    if raw.is_null() {
                        return "NULL".to_owned();
                    }
                    let kind = raw.type_info().name().to_owned();
                    row.try_get::<String, _>(i)
                        .or_else(|_| row.try_get::<i64, _>(i).map(|n| n.to_string()))
                        .unwrap_or_else(|_| format!("<{kind} in {}>", row.columns()[i].name()))
                })
                .collect()
        })
        .collect()
}

/// Waits until every projection has caught up with the log head.
pub async fn settled(state: &AppState) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let head = projections::log::head(&state.store.db).await.unwrap();
        let statuses = state.store.engine.statuses().await.unwrap();
        if statuses
            .iter()
            .all(|s| s.position >= head || s.error.is_some())
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "projections did not catch up: {statuses:?} head {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Drops a test's PostgreSQL database (no-op for SQLite).
pub async fn drop_database(url: &str) {
    use sqlx::Connection;
    let Some(server) = std::env::var("IPTO_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        return;
    };
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    if !name.starts_with("ipto_t_") {
        return;
    }
    if let Ok(mut conn) = sqlx::PgConnection::connect(&server).await {
        let _ = sqlx::Executor::execute(
            &mut conn,
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
        )
        .await;
        let _ = conn.close().await;
    }
}

/// An HTTP client for the tests.
pub fn http_client() -> reqwest::Client {
    ipto::blobs::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Starts the application with a bootstrap platform admin; returns the app and the admin's token.
pub async fn spawn_with_admin(mut config: Config) -> (TestApp, String) {
    config.bootstrap_admin_email = Some("admin@platform.test".into());
    config.bootstrap_admin_password = Some("admin password 1".into());
    let app = spawn_with(config).await;
    let token = app
        .login("admin@platform.test", "admin password 1")
        .await
        .expect(200)
        .data()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    (app, token)
}

impl TestApp {
    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::PATCH, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::DELETE, path, token, None).await
    }

    /// Creates a dataset with these fields over `{"name": "Data"}`; returns its id.
    /// Creates an API key as `token` from `body` (`name`, `scopes`, …); returns its secret.
    pub async fn api_key(&self, token: &str, body: Value) -> String {
        self.post("/v1/api-keys", Some(token), body)
            .await
            .expect(201)
            .data()["key"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn dataset(&self, token: &str, fields: Value) -> String {
        let mut body = json!({"name": "Data"});
        for (k, v) in fields.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        let reply = self
            .post("/v1/datasets", Some(token), body)
            .await
            .expect(201);
        reply.data()["dataset_id"].as_str().unwrap().to_owned()
    }

    /// Initiates an upload of `bytes`; returns `(object_id, upload_url)`.
    pub async fn initiate(&self, token: &str, dataset_id: &str, bytes: &[u8]) -> (String, String) {
        let reply = self
            .post(
                &format!("/v1/datasets/{dataset_id}/objects/upload"),
                Some(token),
                json!({"filename": "notes.txt", "content_type": "text/plain", "size_bytes": bytes.len()}),
            )
            .await
            .expect(201);
        (
            reply.data()["object_id"].as_str().unwrap().to_owned(),
            reply.data()["upload_url"].as_str().unwrap().to_owned(),
        )
    }

    /// PUTs bytes to a signed URL; returns the status.
    pub async fn put_bytes(&self, url: &str, bytes: &[u8]) -> Reply {
        reply(
            self.client
                .put(url)
                .body(bytes.to_vec())
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Initiates, uploads and confirms an object; returns its id.
    pub async fn staged_object(&self, token: &str, dataset_id: &str, bytes: &[u8]) -> String {
        let (object_id, url) = self.initiate(token, dataset_id, bytes).await;
        let put = self.put_bytes(&url, bytes).await;
        assert!(put.status.is_success(), "upload failed: {}", put.status);
        self.post(
            &format!("/v1/objects/{object_id}/confirm"),
            Some(token),
            json!({}),
        )
        .await
        .expect(200);
        object_id
    }
}

/// A test server whose blobs live in S3 when `IPTO_TEST_S3_BUCKET` is set (else `None`).
pub fn s3_config(fresh: &Fresh) -> Option<Config> {
    let bucket = std::env::var("IPTO_TEST_S3_BUCKET")
        .ok()
        .filter(|b| !b.is_empty())?;
    let mut config = config(fresh);
    config.storage_url = Some(format!("s3://{bucket}/{}", uuid::Uuid::new_v4().simple()));
    Some(config)
}

/// One Server-Sent Event: `id:`, `event:` and the JSON of `data:`; or a comment (`: text`).
#[derive(Clone, Debug, PartialEq)]
pub enum Sse {
    Event { id: i64, event: String, data: Value },
    Comment(String),
}

/// Reads Server-Sent Events off a response as they arrive.
pub struct SseReader {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event or comment; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Sse> {
        use futures::StreamExt;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(sse) = parse_sse(&block) {
                    return Some(sse);
                }
                continue;
            }
            let chunk = self.body.next().await?.ok()?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }
}

fn parse_sse(block: &str) -> Option<Sse> {
    let (mut id, mut event, mut data) = (None, None, String::new());
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            return Some(Sse::Comment(comment.trim().to_owned()));
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.parse().expect("a numeric id")),
            "event" => event = Some(value.to_owned()),
            "data" => data.push_str(value),
            _ => {}
        }
    }
    Some(Sse::Event {
        id: id?,
        event: event?,
        data: serde_json::from_str(&data).expect("JSON data"),
    })
}

impl TestApp {
    /// Opens an event stream at `path` (resuming after `last_event_id`), asserting it is one.
    pub async fn stream(&self, path: &str, token: &str, last_event_id: Option<i64>) -> SseReader {
        let mut request = self
            .client
            .get(format!("{}{}", self.address, path))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("request sent");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{path}"
        );
        SseReader::new(response)
    }

    /// The events of a stream that ends (`follow=false` in `path`), comments left out.
    pub async fn streamed(&self, path: &str, token: &str) -> Vec<(i64, String, Value)> {
        let mut reader = self.stream(path, token, None).await;
        let mut out = Vec::new();
        while let Some(sse) = reader.next().await {
            if let Sse::Event { id, event, data } = sse {
                out.push((id, event, data));
            }
        }
        out
    }
}

/// Every event a log route (`/v1/admin/events`, `/v1/audit/events`) lists, following `next_after`.
pub async fn all_listed(app: &TestApp, token: &str, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = app
            .get(&format!("{path}?after={after}&limit=100"), Some(token))
            .await
            .expect(200);
        let events = page.data()["events"].as_array().unwrap().clone();
        after = page.data()["next_after"].as_i64().unwrap();
        let short = events.len() < 100;
        out.extend(events);
        if short {
            return out;
        }
    }
}
