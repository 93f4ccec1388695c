//! The marketplace as Model Context Protocol tools, for agents. The same tools are served two
//! ways: `ipto mcp` speaks MCP on stdio and calls the API with the active profile's credential;
//! `ipto serve` mounts them at `/mcp` (streamable HTTP), where a call acts with the API key of the
//! request that carries it ([`Caller`], set by `http::mcp`).
//!
//! Either way a tool is a client of the public API, so the key's scopes, grants, metering and
//! rate limit apply exactly as to any other call. A tool answers the API's `data` as structured
//! content with the client's table as text; an API error is a tool error (`isError`) carrying the
//! SPEC's code, message and request id. Inputs are the client's own argument types, so a tool and
//! its command take the same fields.

use std::collections::BTreeMap;
use std::path::Path;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{tool, tool_handler, tool_router, RoleServer, ServerHandler, ServiceExt};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::client::api::{encode, Api, ApiError};
use crate::client::datasets::{details, segment, NewDataset};
use crate::client::market::{
    created_key_text, metered_text, NewKey, RetrieveArgs, SearchArgs, RESULTS, UNITS,
};
use crate::client::objects::Upload;
use crate::client::reports::Window;
use crate::client::table::{render, Column};
use crate::client::ClientError;

/// The API as one `/mcp` request's key may call it (an extension of the HTTP request).
#[derive(Clone)]
pub struct Caller(pub Api);

/// The tools, acting with one fixed client (stdio: the profile's, and the local files are the
/// caller's) or with each request's [`Caller`] (HTTP: no files of the server are reachable).
#[derive(Clone)]
pub struct Tools {
    local: Option<Api>,
    tool_router: ToolRouter<Self>,
}

/// One page of a list.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Page {
    /// Only items in this status.
    #[serde(default)]
    pub status: Option<String>,
    /// Items per page, 1..=100 (default 20).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

impl Page {
    fn on(&self, path: &str) -> String {
        let limit = self.limit.map(|l| l.to_string());
        let query: Vec<String> = [
            ("status", self.status.as_ref()),
            ("limit", limit.as_ref()),
            ("cursor", self.cursor.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| format!("{name}={}", encode(v))))
        .collect();
        if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", query.join("&"))
        }
    }
}

/// `ipto_objects_list`'s input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ObjectsList {
    /// The dataset (`dset_…`).
    pub dataset_id: String,
    #[serde(flatten)]
    pub page: Page,
}

/// `ipto_upload`'s input: exactly one of `path`, `content` and `content_base64`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct UploadInput {
    /// The dataset to upload into (`dset_…`).
    pub dataset_id: String,
    /// A local file to upload (stdio only: the HTTP server reads no files).
    #[serde(default)]
    pub path: Option<String>,
    /// The object's bytes as UTF-8 text.
    #[serde(default)]
    pub content: Option<String>,
    /// The object's bytes, base64-encoded.
    #[serde(default)]
    pub content_base64: Option<String>,
    /// The object's file name (required with `content` and `content_base64`; default: the
    /// path's).
    #[serde(default)]
    pub filename: Option<String>,
    /// Its media type (default: guessed from the file name's extension).
    #[serde(default)]
    pub content_type: Option<String>,
    /// String metadata to keep with the object.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl UploadInput {
    /// The upload, from a file when `files` are the caller's to read.
    async fn into_upload(self, files: bool) -> Result<Upload, ClientError> {
        let usage = |m: &str| ClientError::Usage(m.to_owned());
        let named = |filename: Option<String>| {
            filename
                .filter(|f| !f.is_empty())
                .ok_or_else(|| usage("filename is required with content and content_base64"))
        };
        let metadata: Map<String, Value> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        match (self.path, self.content, self.content_base64) {
            (Some(path), None, None) => {
                if !files {
                    return Err(usage(
                        "this server reads no files: send the bytes as content or content_base64",
                    ));
                }
                let mut upload =
                    Upload::file(Path::new(&path), self.content_type, &self.metadata).await?;
                if let Some(filename) = self.filename {
                    upload.filename = filename;
                }
                upload.metadata.entry("path").or_insert_with(|| path.into());
                Ok(upload)
            }
            (None, Some(text), None) => Ok(Upload::memory(
                named(self.filename)?,
                text.into_bytes().into(),
                self.content_type,
                metadata,
            )),
            (None, None, Some(encoded)) => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| {
                        ClientError::Usage(format!("content_base64 is not base64: {e}"))
                    })?;
                Ok(Upload::memory(
                    named(self.filename)?,
                    bytes.into(),
                    self.content_type,
                    metadata,
                ))
            }
            _ => Err(usage(
                "give exactly one of path, content and content_base64",
            )),
        }
    }
}

/// `ipto_objects_download`'s input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct DownloadInput {
    /// The object (`obj_…`).
    pub object_id: String,
    /// The most this download may cost, in USD (else any price).
    #[serde(default)]
    pub max_charge: Option<String>,
    /// Where to save the bytes, verified against the object's SHA-256 (stdio only). Without it
    /// the answer's signed `download_url` (valid 15 minutes) serves them.
    #[serde(default)]
    pub save_to: Option<String>,
}

/// `ipto_analytics`'s input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AnalyticsInput {
    /// One of the caller's datasets (`dset_…`).
    pub dataset_id: String,
    #[serde(flatten)]
    pub window: Window,
}

#[tool_router]
impl Tools {
    /// Tools acting with `api`, for a local agent: paths name the agent's own files.
    pub fn local(api: Api) -> Self {
        Self {
            local: Some(api),
            tool_router: Self::tool_router(),
        }
    }

    /// Tools acting with each request's [`Caller`], for remote agents.
    pub fn remote() -> Self {
        Self {
            local: None,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        name = "ipto_search",
        description = "Search the approved objects of every dataset the caller may search, by a plain-words question or a query with operators. METERED: each result from another tenant's dataset is charged that dataset's price per result (once per object; own datasets are free); the answer's charged_amount is the total, and max_price_per_result leaves out pricier results. Needs the search:query scope."
    )]
    async fn search(
        &self,
        Parameters(args): Parameters<SearchArgs>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let answer = async { Ok(self.api(&context)?.post("/search", args.body()).await?) };
        reply(answer.await, |a| metered_text(a, "results", &RESULTS))
    }

    #[tool(
        name = "ipto_retrieve",
        description = "Passages for an agent's context (text with locators and provenance) from the datasets the caller may search. METERED like ipto_search: each object of another tenant's dataset is charged its price per result once, however many of its passages come back. Needs the search:query scope."
    )]
    async fn retrieve(
        &self,
        Parameters(args): Parameters<RetrieveArgs>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let answer = async { Ok(self.api(&context)?.post("/retrieve", args.body()).await?) };
        reply(answer.await, |a| metered_text(a, "units", &UNITS))
    }

    #[tool(
        name = "ipto_upload",
        description = "Upload one object into one of the caller's datasets: its SHA-256 is declared and checked by the server, and the object is staged for review. Free. Needs the objects:write scope."
    )]
    async fn upload(
        &self,
        Parameters(input): Parameters<UploadInput>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let answer = async {
            let api = self.api(&context)?;
            let dataset_id = input.dataset_id.clone();
            let upload = input.into_upload(self.local.is_some()).await?;
            upload
                .send(&api, &dataset_id, &indicatif::ProgressBar::hidden())
                .await
        };
        reply(answer.await, details)
    }

    #[tool(
        name = "ipto_datasets_list",
        description = "The caller's own datasets, newest first, one page at a time (follow next_cursor). Free. Needs the datasets:read scope."
    )]
    async fn datasets_list(
        &self,
        Parameters(page): Parameters<Page>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let answer = async { Ok(self.api(&context)?.get(&page.on("/datasets")).await?) };
        reply(answer.await, |a| {
            page_text(a, &crate::client::datasets::COLUMNS)
        })
    }

    #[tool(
        name = "ipto_datasets_create",
        description = "Create a dataset owned by the caller's tenant (draft until made active). Free. Needs the datasets:write scope."
    )]
    async fn datasets_create(
        &self,
        Parameters(dataset): Parameters<NewDataset>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let answer = async {
            Ok(self
                .api(&context)?
                .post("/datasets", dataset.body())
                .await?)
        };
        reply(answer.await, details)
    }

    #[tool(
        name = "ipto_objects_list",
        description = "The objects of one of the caller's datasets, newest first, one page at a time (follow next_cursor). Free. Needs the datasets:read scope."
    )]
    async fn objects_list(
        &self,
        Parameters(list): Parameters<ObjectsList>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let path = list
            .page
            .on(&format!("/datasets/{}/objects", segment(&list.dataset_id)));
        let answer = async { Ok(self.api(&context)?.get(&path).await?) };
        reply(answer.await, |a| {
            page_text(a, &crate::client::objects::COLUMNS)
        })
    }

    #[tool(
        name = "ipto_objects_download",
        description = "A signed download URL for an object (saved and SHA-256 verified with save_to, on stdio). METERED: an approved object of another tenant's dataset costs 10 times its dataset's price per result on every call (max_charge refuses a higher price); the caller's own objects are free. Needs the datasets:read scope."
    )]
    async fn objects_download(
        &self,
        Parameters(input): Parameters<DownloadInput>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let answer = async {
            let api = self.api(&context)?;
            // Refused before the (charged) ticket is asked for.
            if input.save_to.is_some() && self.local.is_none() {
                return Err(ClientError::Usage(
                    "this server writes no files: leave out save_to and fetch download_url".into(),
                ));
            }
            let mut path = format!("/objects/{}/download", segment(&input.object_id));
            if let Some(max) = &input.max_charge {
                path.push_str(&format!("?max_charge={}", encode(max)));
            }
            let ticket = api.get(&path).await?;
            match input.save_to {
                None => Ok(ticket),
                Some(to) => {
                    crate::client::objects::download(&api, &ticket, Path::new(&to)).await?;
                    Ok(json!({ "saved_to": to, "ticket": ticket }))
                }
            }
        };
        reply(answer.await, |a| match a["saved_to"].as_str() {
            Some(to) => format!(
                "saved to {to} ({} bytes, SHA-256 verified), charged {} USD\n",
                a["ticket"]["size_bytes"], a["ticket"]["charged_amount"]
            ),
            None => details(a),
        })
    }

    #[tool(
        name = "ipto_keys_create",
        description = "Create an API key for an agent or a job, with at most the caller's own scopes; the secret is in the answer once and never again. Free. Needs the keys:write scope."
    )]
    async fn keys_create(
        &self,
        Parameters(key): Parameters<NewKey>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let answer = async { Ok(self.api(&context)?.post("/api-keys", key.body()).await?) };
        reply(answer.await, created_key_text)
    }

    #[tool(
        name = "ipto_analytics",
        description = "One of the caller's datasets' analytics over a window: searches, results, accesses and revenue. Free. Needs the usage:read scope."
    )]
    async fn analytics(
        &self,
        Parameters(input): Parameters<AnalyticsInput>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let path = input.window.on(&format!(
            "/provider/datasets/{}/analytics",
            segment(&input.dataset_id)
        ));
        let answer = async { Ok(self.api(&context)?.get(&path).await?) };
        reply(answer.await, details)
    }

    #[tool(
        name = "ipto_spend",
        description = "What the caller's tenant spent over a window (searches and downloads): in all, by day and by dataset. Free. Needs the billing:read scope."
    )]
    async fn spend(
        &self,
        Parameters(window): Parameters<Window>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let answer = async { Ok(self.api(&context)?.get(&window.on("/agent/spend")).await?) };
        reply(answer.await, details)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("ipto", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools of the ipto data marketplace: search and retrieve approved data (metered), \
                 upload into your datasets, list datasets and objects, download (metered for \
                 other tenants' data), create keys, and read analytics and spend.",
            )
    }
}

impl Tools {
    /// The client this call acts with.
    fn api(&self, context: &RequestContext<RoleServer>) -> Result<Api, ClientError> {
        if let Some(api) = &self.local {
            return Ok(api.clone());
        }
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .map(|Caller(api)| api.clone())
            .ok_or(ClientError::Api(ApiError::NoCredential))
    }
}

/// Serves the tools on standard input and output until the agent closes them.
pub async fn serve_stdio(api: Api) -> Result<(), ClientError> {
    let running = Tools::local(api)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| ClientError::Failed(format!("MCP on stdio: {e}")))?;
    running
        .waiting()
        .await
        .map_err(|e| ClientError::Failed(format!("MCP on stdio: {e}")))?;
    Ok(())
}

/// The tools over streamable HTTP, without sessions (each POST stands alone, so any instance of a
/// fleet answers it) and with JSON answers. Hosts are not checked: every request needs an API key
/// in a header, which a page that rebinds a name cannot send. Bodies are capped at `max_body`.
pub fn http_service(max_body: usize) -> StreamableHttpService<Tools, NeverSessionManager> {
    let mut config = StreamableHttpServerConfig::default().disable_allowed_hosts();
    config.legacy_session_mode = false;
    config.json_response = true;
    config.sse_keep_alive = None;
    config.max_request_body_bytes = max_body;
    StreamableHttpService::new(|| Ok(Tools::remote()), Default::default(), config)
}

/// A tool's answer: `data` as structured content and `text` of it, or the failure.
fn reply(
    outcome: Result<Value, ClientError>,
    text: impl FnOnce(&Value) -> String,
) -> CallToolResult {
    match outcome {
        Ok(data) => {
            let rendered = text(&data);
            let data = match data {
                Value::Object(_) => data,
                other => json!({ "value": other }),
            };
            let mut result = CallToolResult::structured(data);
            result.content = vec![ContentBlock::text(rendered)];
            result
        }
        Err(error) => failure(error),
    }
}

/// A failed call as a tool error: the API's code, message, details and request id, or the
/// client's own reason (`invalid_input` for arguments it refused before calling).
fn failure(error: ClientError) -> CallToolResult {
    let (code, message, details, request_id) = match error {
        ClientError::Api(ApiError::Answered {
            code,
            message,
            details,
            request_id,
            ..
        }) => (code, message, details, Some(request_id)),
        ClientError::Api(ApiError::NoCredential) => (
            "unauthorized".to_owned(),
            "no credential: log in with `ipto login` or set IPTO_API_KEY".to_owned(),
            json!({}),
            None,
        ),
        ClientError::Usage(message) => ("invalid_input".to_owned(), message, json!({}), None),
        other => (
            "client_error".to_owned(),
            other.to_string(),
            json!({}),
            None,
        ),
    };
    let text = match &request_id {
        Some(id) => format!("{code}: {message} (request {id})"),
        None => format!("{code}: {message}"),
    };
    let mut result = CallToolResult::structured_error(json!({
        "error": { "code": code, "message": message, "details": details },
        "request_id": request_id,
    }));
    result.content = vec![ContentBlock::text(text)];
    result
}

/// A page for people: its items under `columns`, and the cursor of the next.
fn page_text(page: &Value, columns: &[Column]) -> String {
    let items = page["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut out = render(columns, items);
    if let Some(cursor) = page["next_cursor"].as_str() {
        out.push_str(&format!("next_cursor: {cursor}\n"));
    }
    out
}
