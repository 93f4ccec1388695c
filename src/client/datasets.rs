//! `ipto datasets …`: a provider's datasets (SPEC §3.3). The server validates every field; its
//! 422 names the field, and the client prints it.

use std::io::{BufRead, IsTerminal, Write};

use clap::{Args, Subcommand};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::client::table::{field, Column};
use crate::client::{ClientError, ListArgs, Session};

/// `ipto datasets …`
#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// Creates a dataset.
    Create(NewDataset),
    /// The tenant's datasets, newest first: ID, NAME, STATUS, OBJECTS.
    List(ListArgs),
    /// One dataset.
    Get { id: String },
    /// Changes the fields given.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// `draft`, `active` or `paused`.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        fields: DatasetFields,
    },
    /// Starts a dataset's deletion (asks first on a terminal; else needs `--confirm`).
    Delete {
        id: String,
        #[arg(long)]
        confirm: bool,
    },
}

/// The optional fields of create and update (on the command line and in the MCP tools; the
/// tools name them as the API does).
#[derive(Debug, Args, Deserialize, JsonSchema)]
pub struct DatasetFields {
    /// What the dataset holds.
    #[arg(long)]
    #[serde(default)]
    pub description: Option<String>,
    /// `document`, `image`, `audio`, `video`, `tabular` or `mixed`.
    #[arg(long)]
    #[serde(default, rename = "source_modality")]
    pub modality: Option<String>,
    /// `free` or `premium`.
    #[arg(long)]
    #[serde(default, rename = "monetization_mode")]
    pub monetization: Option<String>,
    /// `fixed`, `time_decay` or `demand_curve`.
    #[arg(long)]
    #[serde(default, rename = "pricing_model")]
    pub pricing: Option<String>,
    /// `private`, `listed` or `restricted`.
    #[arg(long)]
    #[serde(default)]
    pub visibility: Option<String>,
    /// Price per billable result in USD (`0.05`).
    #[arg(long)]
    #[serde(default, rename = "price_per_result")]
    pub price: Option<String>,
}

/// A dataset to create (`ipto datasets create`, the `ipto_datasets_create` tool).
#[derive(Debug, Args, Deserialize, JsonSchema)]
pub struct NewDataset {
    /// 1..=200 characters.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    #[serde(flatten)]
    pub fields: DatasetFields,
}

impl NewDataset {
    /// The `POST /v1/datasets` body.
    pub fn body(self) -> Value {
        let mut body = Map::new();
        body.insert("name".into(), self.name.into());
        self.fields.into_body(&mut body);
        body.into()
    }
}

impl DatasetFields {
    fn into_body(self, body: &mut Map<String, Value>) {
        let fields = [
            ("description", self.description),
            ("source_modality", self.modality),
            ("monetization_mode", self.monetization),
            ("pricing_model", self.pricing),
            ("visibility", self.visibility),
            ("price_per_result", self.price),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                body.insert(name.to_owned(), value.into());
            }
        }
    }
}

pub const COLUMNS: [Column; 4] = [
    ("ID", "dataset_id"),
    ("NAME", "name"),
    ("STATUS", "status"),
    ("OBJECTS", "object_count"),
];

/// Runs a datasets command.
pub async fn run(session: &Session, command: DatasetsCommand) -> Result<(), ClientError> {
    let api = session.api()?;
    match command {
        DatasetsCommand::Create(dataset) => {
            let dataset = api.post("/datasets", dataset.body()).await?;
            session.print(&dataset, details);
        }
        DatasetsCommand::List(list) => {
            session.print_list(list.fetch(&api, "/datasets").await?, &COLUMNS);
        }
        DatasetsCommand::Get { id } => {
            let dataset = api.get(&format!("/datasets/{}", segment(&id))).await?;
            session.print(&dataset, details);
        }
        DatasetsCommand::Update {
            id,
            name,
            status,
            fields,
        } => {
            let mut body = Map::new();
            for (key, value) in [("name", name), ("status", status)] {
                if let Some(value) = value {
                    body.insert(key.to_owned(), value.into());
                }
            }
            fields.into_body(&mut body);
            let dataset = api
                .patch(&format!("/datasets/{}", segment(&id)), body.into())
                .await?;
            session.print(&dataset, details);
        }
        DatasetsCommand::Delete { id, confirm } => {
            let path = format!("/datasets/{}", segment(&id));
            if !confirm {
                let dataset = api.get(&path).await?;
                let question = format!(
                    "Delete dataset {id} ({}) and all its objects?",
                    field(&dataset, "name")
                );
                if !ask(&question)? {
                    return Err(ClientError::Usage("not deleted".into()));
                }
            }
            let dataset = api.delete(&path).await?;
            session.print(&dataset, details);
        }
    }
    Ok(())
}

/// One resource as `key: value` lines, in the API's field order.
pub fn details(value: &Value) -> String {
    let mut out = String::new();
    for (key, _) in value.as_object().into_iter().flatten() {
        out.push_str(&format!("{key}: {}\n", field(value, key)));
    }
    out
}

/// An id as one path segment: anything but an id's own characters is %-encoded, so an id can
/// never reach another route.
pub fn segment(id: &str) -> String {
    crate::client::api::encode(id)
}

/// Asks a yes/no question on a terminal; without one, `--confirm` is required.
pub fn ask(question: &str) -> Result<bool, ClientError> {
    if !std::io::stdin().is_terminal() {
        return Err(ClientError::Usage(
            "refusing to delete without a terminal to ask on: pass --confirm".into(),
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
