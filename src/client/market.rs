//! What buyers and their keys do: `ipto search` and `ipto retrieve` (metered: every result from
//! another tenant's dataset is charged) and `ipto keys …` (scoped API keys for agents and CI).

use clap::Subcommand;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::datasets::{details, segment};
use crate::client::table::{field, Column};
use crate::client::{ClientError, PageArgs, Session};

/// What `ipto search` and `ipto retrieve` (and their MCP tools) both ask.
#[derive(Debug, clap::Args, Deserialize, JsonSchema)]
pub struct Question {
    /// A question in plain words, or a query with operators (AND, OR, NOT, `-`, quotes).
    pub query: String,
    /// Only these datasets (repeatable).
    #[arg(long = "dataset")]
    #[serde(default, rename = "dataset_ids")]
    pub datasets: Vec<String>,
    /// `auto` (the default), `lexical`, `hybrid` or `dense`.
    #[arg(long)]
    #[serde(default, rename = "retrieval_mode")]
    pub mode: Option<String>,
    /// Leave out objects whose results would cost more than this, in USD.
    #[arg(long)]
    #[serde(default, rename = "max_price_per_result")]
    pub max_price: Option<String>,
}

impl Question {
    /// The request body's shared fields.
    fn body(self) -> Value {
        let mut body = json!({ "query": self.query });
        if !self.datasets.is_empty() {
            body["dataset_ids"] = self.datasets.into();
        }
        if let Some(mode) = self.mode {
            body["retrieval_mode"] = mode.into();
        }
        if let Some(max) = self.max_price {
            body["max_price_per_result"] = max.into();
        }
        body
    }
}

/// `ipto search QUERY …`
#[derive(Debug, clap::Args, Deserialize, JsonSchema)]
pub struct SearchArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub question: Question,
    /// Most results (1..=50).
    #[arg(long)]
    #[serde(default)]
    pub limit: Option<u32>,
}

impl SearchArgs {
    /// The `POST /v1/search` body.
    pub fn body(self) -> Value {
        let mut body = self.question.body();
        if let Some(limit) = self.limit {
            body["limit"] = limit.into();
        }
        body
    }
}

/// `ipto retrieve QUERY …`
#[derive(Debug, clap::Args, Deserialize, JsonSchema)]
pub struct RetrieveArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub question: Question,
    /// Most passages (1..=50).
    #[arg(long)]
    #[serde(default)]
    pub top_k: Option<u32>,
    /// Leave out passages scoring below this.
    #[arg(long)]
    #[serde(default)]
    pub min_score: Option<f64>,
}

impl RetrieveArgs {
    /// The `POST /v1/retrieve` body.
    pub fn body(self) -> Value {
        let mut body = self.question.body();
        if let Some(top_k) = self.top_k {
            body["top_k"] = top_k.into();
        }
        if let Some(min) = self.min_score {
            body["min_score"] = min.into();
        }
        body
    }
}

pub const RESULTS: [Column; 5] = [
    ("SCORE", "score"),
    ("DATASET", "dataset_name"),
    ("FILE", "filename"),
    ("SNIPPET", "snippet"),
    ("CHARGE", "charged_amount"),
];

pub const UNITS: [Column; 5] = [
    ("SCORE", "score"),
    ("DATASET", "dataset_name"),
    ("LOCATOR", "locator"),
    ("TEXT", "text"),
    ("CHARGE", "charged_amount"),
];

/// `ipto search`: the results, and what the search was charged in all.
pub async fn search(session: &Session, args: SearchArgs) -> Result<(), ClientError> {
    metered(session, "/search", args.body(), ("results", &RESULTS)).await
}

/// `ipto retrieve`: passages for an agent's context, and what they were charged in all.
pub async fn retrieve(session: &Session, args: RetrieveArgs) -> Result<(), ClientError> {
    metered(session, "/retrieve", args.body(), ("units", &UNITS)).await
}

/// Asks a metered question: the answer's `items` under `columns`, then its metering.
async fn metered(
    session: &Session,
    path: &str,
    body: Value,
    (items, columns): (&str, &[Column]),
) -> Result<(), ClientError> {
    let answer = session.api()?.post(path, body).await?;
    session.print(&answer, |a| metered_text(a, items, columns));
    Ok(())
}

/// A metered answer for people: its `items` under `columns`, then what was charged in all.
pub fn metered_text(answer: &Value, items: &str, columns: &[Column]) -> String {
    let found = answer[items].as_array().map(Vec::as_slice).unwrap_or(&[]);
    format!(
        "{}{} {items} ({} mode), {} USD charged in all (search {})\n",
        crate::client::table::render(columns, found),
        found.len(),
        field(answer, "retrieval_mode_used"),
        field(answer, "charged_amount"),
        field(answer, "search_activity_id"),
    )
}

/// `ipto keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Creates a key; its secret is printed once and never again.
    Create(NewKey),
    /// The tenant's keys: ID, NAME, PREFIX, STATUS, SCOPES.
    List(PageArgs),
    /// One key with its grants.
    Get { id: String },
    /// Revokes a key (and the keys it created).
    Revoke { id: String },
    /// Grants a dataset to an `allow_list` key.
    Grant { key_id: String, dataset_id: String },
    /// Removes a grant.
    Ungrant { key_id: String, grant_id: String },
}

/// A key to create (`ipto keys create`, the `ipto_keys_create` tool).
#[derive(Debug, clap::Args, Deserialize, JsonSchema)]
pub struct NewKey {
    /// A name to know it by (1..=200 characters).
    #[arg(long)]
    pub name: String,
    /// Its scopes (comma-separated on the command line), e.g. `datasets:read,search:query`; at
    /// most the creator's own.
    #[arg(long, value_delimiter = ',', required = true)]
    pub scopes: Vec<String>,
    /// Only the datasets granted to it (`ipto keys grant`) may be searched and downloaded.
    #[arg(long)]
    #[serde(default)]
    pub allow_list: bool,
    /// When it stops working (RFC 3339).
    #[arg(long)]
    #[serde(default, rename = "expires_at")]
    pub expires: Option<String>,
    /// The most it may spend a month, in USD.
    #[arg(long)]
    #[serde(default)]
    pub spend_limit: Option<String>,
}

impl NewKey {
    /// The `POST /v1/api-keys` body.
    pub fn body(self) -> Value {
        let mut body = json!({ "name": self.name, "scopes": self.scopes });
        if self.allow_list {
            body["dataset_access_mode"] = "allow_list".into();
        }
        if let Some(expires) = self.expires {
            body["expires_at"] = expires.into();
        }
        if let Some(limit) = self.spend_limit {
            body["spend_limit"] = limit.into();
        }
        body
    }
}

/// A created key for people: its fields, then the secret on its own line.
pub fn created_key_text(key: &Value) -> String {
    format!(
        "{}\nThe key (shown once, store it now):\n{}\n",
        details(&without(key, "key")).trim_end(),
        field(key, "key")
    )
}

const KEYS: [Column; 5] = [
    ("ID", "api_key_id"),
    ("NAME", "name"),
    ("PREFIX", "key_prefix"),
    ("STATUS", "status"),
    ("SCOPES", "scopes"),
];

/// Runs a keys command.
pub async fn keys(session: &Session, command: KeysCommand) -> Result<(), ClientError> {
    let api = session.api()?;
    let answer = match command {
        KeysCommand::Create(key) => {
            let created = api.post("/api-keys", key.body()).await?;
            session.print(&created, created_key_text);
            return Ok(());
        }
        KeysCommand::List(list) => {
            let items = list.fetch(&api, "/api-keys").await?;
            session.print_list(items, &KEYS);
            return Ok(());
        }
        KeysCommand::Get { id } => api.get(&format!("/api-keys/{}", segment(&id))).await?,
        KeysCommand::Revoke { id } => api.delete(&format!("/api-keys/{}", segment(&id))).await?,
        KeysCommand::Grant { key_id, dataset_id } => {
            let path = format!("/api-keys/{}/grants", segment(&key_id));
            api.post(&path, json!({ "dataset_id": dataset_id })).await?
        }
        KeysCommand::Ungrant { key_id, grant_id } => {
            let path = format!(
                "/api-keys/{}/grants/{}",
                segment(&key_id),
                segment(&grant_id)
            );
            api.delete(&path).await?
        }
    };
    session.print(&answer, details);
    Ok(())
}

/// `value` without one field (the secret, shown on its own).
fn without(value: &Value, key: &str) -> Value {
    let mut copy = value.clone();
    if let Some(object) = copy.as_object_mut() {
        object.remove(key);
        object.remove("secret");
    }
    copy
}
