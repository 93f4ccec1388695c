//! Read-only reports: a provider's dashboard, a dataset's analytics and the monthly payouts; a
//! buyer's dashboard, spend and activity. Windows take `--from` and `--to` (RFC 3339 or a date).

use clap::{Args, Subcommand};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::client::api::encode;
use crate::client::datasets::{details, segment};
use crate::client::table::Column;
use crate::client::{ClientError, Session};

/// A time window (SPEC §1.8).
#[derive(Debug, Args, Deserialize, JsonSchema)]
pub struct Window {
    /// Start, inclusive (RFC 3339 or a date).
    #[arg(long)]
    #[serde(default)]
    pub from: Option<String>,
    /// End, exclusive (RFC 3339 or a date).
    #[arg(long)]
    #[serde(default)]
    pub to: Option<String>,
}

impl Window {
    /// `path` with the window as its query.
    pub fn on(&self, path: &str) -> String {
        let mut query = Vec::new();
        for (name, value) in [("from", &self.from), ("to", &self.to)] {
            if let Some(value) = value {
                query.push(format!("{name}={}", encode(value)));
            }
        }
        if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", query.join("&"))
        }
    }
}

/// `ipto dashboard`
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// The buyer's dashboard (keys, searches, spend) instead of the provider's.
    #[arg(long)]
    pub buyer: bool,
}

/// `ipto activity …`
#[derive(Debug, Subcommand)]
pub enum ActivityCommand {
    /// The tenant's searches, newest first.
    Searches {
        #[command(flatten)]
        window: Window,
        /// Every page, not just the first.
        #[arg(long)]
        all: bool,
    },
    /// The tenant's metered accesses (billed results and downloads), newest first.
    Accesses {
        #[command(flatten)]
        window: Window,
        /// Every page, not just the first.
        #[arg(long)]
        all: bool,
    },
}

const SEARCHES: [Column; 5] = [
    ("ID", "search_activity_id"),
    ("WHEN", "occurred_at"),
    ("QUERY", "query_text"),
    ("RESULTS", "result_count"),
    ("CHARGED", "charged_amount"),
];

const ACCESSES: [Column; 5] = [
    ("ID", "access_id"),
    ("WHEN", "occurred_at"),
    ("KIND", "kind"),
    ("OBJECT", "object_id"),
    ("CHARGED", "charged_amount"),
];

const PAYOUTS: [Column; 5] = [
    ("STATEMENT", "statement_id"),
    ("FROM", "period_start"),
    ("GROSS", "gross_amount"),
    ("NET", "net_amount"),
    ("STATUS", "status"),
];

/// `ipto dashboard`.
pub async fn dashboard(session: &Session, args: DashboardArgs) -> Result<(), ClientError> {
    let path = if args.buyer {
        "/buyer/dashboard"
    } else {
        "/provider/dashboard"
    };
    let answer = session.api()?.get(path).await?;
    session.print(&answer, details);
    Ok(())
}

/// `ipto analytics DATASET_ID`.
pub async fn analytics(session: &Session, id: &str, window: Window) -> Result<(), ClientError> {
    let path = window.on(&format!("/provider/datasets/{}/analytics", segment(id)));
    let answer = session.api()?.get(&path).await?;
    session.print(&answer, details);
    Ok(())
}

/// `ipto spend`.
pub async fn spend(session: &Session, window: Window) -> Result<(), ClientError> {
    let answer = session.api()?.get(&window.on("/agent/spend")).await?;
    session.print(&answer, details);
    Ok(())
}

/// `ipto payouts`: the provider's monthly statements.
pub async fn payouts(session: &Session, all: bool) -> Result<(), ClientError> {
    let items = session
        .api()?
        .list("/provider/payouts", "items", None, all)
        .await?;
    session.print_list(items, &PAYOUTS);
    Ok(())
}

/// `ipto activity searches|accesses`.
pub async fn activity(session: &Session, command: ActivityCommand) -> Result<(), ClientError> {
    let api = session.api()?;
    let (path, key, columns, all) = match &command {
        ActivityCommand::Searches { window, all } => (
            window.on("/agent/activity/searches"),
            "searches",
            &SEARCHES,
            *all,
        ),
        ActivityCommand::Accesses { window, all } => (
            window.on("/agent/activity/accesses"),
            "accesses",
            &ACCESSES,
            *all,
        ),
    };
    let items: Vec<Value> = api.list(&path, key, None, all).await?;
    session.print_list(items, columns);
    Ok(())
}
