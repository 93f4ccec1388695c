//! The API as the client calls it: one base URL and credential, JSON in, the envelope's `data`
//! out, and every error answer as an [`ApiError`] carrying the SPEC's code, message and request id.
//!
//! A client and its clones remember the furthest `Ipto-Log-Position` a response carried and send
//! it with every request, so that what one command wrote is what its next read sees, whichever
//! instance of a fleet answers (README, Operating a fleet).

use std::sync::{Arc, Mutex};

use projections::LogPosition;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::client::profile::Credential;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with the error envelope (SPEC §1.12).
    #[error("{code}: {message} (request {request_id})")]
    Answered {
        status: StatusCode,
        code: String,
        message: String,
        request_id: String,
        details: Value,
    },
    /// The server could not be reached, or answered something that is not the API.
    #[error("{0}")]
    Transport(String),
    /// A command needs a credential and the profile has none.
    #[error("not logged in: run `ipto login` (or set IPTO_API_KEY)")]
    NoCredential,
}

impl ApiError {
    /// The SPEC's error code, when the server answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Answered { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A client of one server.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    credential: Option<Credential>,
    /// The furthest log position a response carried, shared by the clones.
    position: Arc<Mutex<Option<LogPosition>>>,
}

/// The consistency header (`http::consistency` on the server).
const LOG_POSITION: &str = "ipto-log-position";

impl Api {
    /// A client of the server at `base` (`http://host:port`, no `/v1`).
    pub fn new(base: &str, credential: Option<Credential>) -> Result<Self, ApiError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("ipto/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ApiError::Transport(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            credential,
            position: Arc::default(),
        })
    }

    /// The same client, sending and keeping its log position in `shared` (a command's session
    /// starts it from the position file).
    pub fn with_position(self, shared: Arc<Mutex<Option<LogPosition>>>) -> Self {
        Self {
            position: shared,
            ..self
        }
    }

    /// The same server with another credential.
    pub fn with_credential(&self, credential: Credential) -> Self {
        Self {
            credential: Some(credential),
            ..self.clone()
        }
    }

    /// `GET /v1{path}`.
    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST /v1{path}` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Result<Value, ApiError> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `PATCH /v1{path}` with a JSON body.
    pub async fn patch(&self, path: &str, body: Value) -> Result<Value, ApiError> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    /// `DELETE /v1{path}`.
    pub async fn delete(&self, path: &str) -> Result<Value, ApiError> {
        self.call(Method::DELETE, path, None).await
    }

    /// Every item of a list (`items_key` of each page's `data`), `limit` a page (100 with `all`
    /// and no limit): the first page only, or with `all` each next page by its cursor.
    pub async fn list(
        &self,
        path: &str,
        items_key: &str,
        limit: Option<u32>,
        all: bool,
    ) -> Result<Vec<Value>, ApiError> {
        let limit = limit.or(all.then_some(100));
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = Vec::new();
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            if let Some(cursor) = &cursor {
                query.push(format!("cursor={}", encode(cursor)));
            }
            let page_path = match (query.is_empty(), path.contains('?')) {
                (true, _) => path.to_owned(),
                (false, true) => format!("{path}&{}", query.join("&")),
                (false, false) => format!("{path}?{}", query.join("&")),
            };
            let page = self.get(&page_path).await?;
            if let Some(found) = page[items_key].as_array() {
                items.extend(found.iter().cloned());
            }
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if !all || cursor.is_none() {
                return Ok(items);
            }
        }
    }

    /// A call without a credential (signup, login).
    pub async fn anonymous(
        &self,
        method: Method,
        path: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        let request = self.http.request(method, self.url(path)).json(&body);
        self.answer(request).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ApiError> {
        let mut request = self.http.request(method, self.url(path));
        request = match &self.credential {
            Some(Credential::ApiKey(key)) => request.header("x-api-key", key),
            Some(Credential::Session(token)) => request.bearer_auth(token),
            None => return Err(ApiError::NoCredential),
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.answer(request).await
    }

    /// The furthest log position a response carried so far.
    pub fn position(&self) -> Option<LogPosition> {
        *self.position.lock().expect("lock poisoned")
    }

    /// Sends `request` with the furthest position seen, and remembers the one its answer carries.
    async fn answer(&self, mut request: reqwest::RequestBuilder) -> Result<Value, ApiError> {
        if let Some(position) = self.position() {
            request = request.header(LOG_POSITION, position.to_string());
        }
        answer(request, |reached| {
            let mut position = self.position.lock().expect("lock poisoned");
            *position = (*position).max(Some(reached));
        })
        .await
    }

    /// Sends a body to a signed URL (no credential: the signature is the permission).
    pub async fn send_signed(
        &self,
        method: &str,
        url: &str,
        headers: &serde_json::Map<String, Value>,
        body: reqwest::Body,
    ) -> Result<(), ApiError> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| ApiError::Transport(format!("unknown upload method {method}")))?;
        let mut request = self.http.request(method, url).body(body);
        for (name, value) in headers {
            if let Some(value) = value.as_str() {
                request = request.header(name.as_str(), value);
            }
        }
        let response = request
            .send()
            .await
            .map_err(|e| ApiError::Transport(format!("upload failed: {e}")))?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Err(ApiError::Answered {
            status,
            code: body["error"]["code"]
                .as_str()
                .unwrap_or("upload_failed")
                .to_owned(),
            message: body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            request_id: body["request_id"].as_str().unwrap_or("unknown").to_owned(),
            details: body["error"]["details"].clone(),
        })
    }

    /// The body of a signed URL, to stream.
    pub async fn fetch_signed(&self, url: &str) -> Result<reqwest::Response, ApiError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| ApiError::Transport(format!("download failed: {e}")))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(ApiError::Transport(format!(
                "download failed: the signed URL answered {}",
                response.status()
            )))
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.base)
    }
}

/// Sends `request` and unwraps the envelope; `reached` is given the log position a response
/// carries.
async fn answer(
    request: reqwest::RequestBuilder,
    reached: impl FnOnce(LogPosition),
) -> Result<Value, ApiError> {
    let response = request.send().await.map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        ApiError::Transport(format!("cannot reach the server ({e}{cause})"))
    })?;
    let status = response.status();
    if let Some(position) = response
        .headers()
        .get(LOG_POSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        reached(position);
    }
    let header_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = response.json().await.map_err(|e| {
        ApiError::Transport(format!(
            "the server answered {status} without the API's JSON ({e})"
        ))
    })?;
    if status.is_success() {
        return Ok(body.get("data").cloned().unwrap_or(Value::Null));
    }
    let error = &body["error"];
    let text = |v: &Value| v.as_str().map(str::to_owned);
    Err(ApiError::Answered {
        status,
        code: text(&error["code"]).unwrap_or_else(|| status.as_u16().to_string()),
        message: text(&error["message"]).unwrap_or_default(),
        request_id: text(&body["request_id"])
            .or(header_id)
            .unwrap_or_else(|| "unknown".into()),
        details: error["details"].clone(),
    })
}

/// `text` as one query-string value.
pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
