//! `ipto review …`: the platform admins' review of staged objects (SPEC §3.7). Objects are named
//! by tenant and id, as the queue lists them.

use clap::Subcommand;
use serde_json::json;

use crate::client::datasets::{details, segment};
use crate::client::table::Column;
use crate::client::{ClientError, Session};

/// `ipto review …`
#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// Staged objects waiting for review, oldest first.
    Queue {
        /// Every page, not just the first.
        #[arg(long)]
        all: bool,
    },
    /// One object under review, with its history.
    Show {
        tenant_id: String,
        object_id: String,
    },
    /// Approves a staged object.
    Approve {
        tenant_id: String,
        object_id: String,
        /// Recorded with the approval.
        #[arg(long)]
        note: Option<String>,
    },
    /// Rejects a staged object.
    Reject {
        tenant_id: String,
        object_id: String,
        #[arg(long)]
        reason: String,
    },
    /// A signed URL to look at the bytes.
    Preview {
        tenant_id: String,
        object_id: String,
    },
}

const QUEUE: [Column; 5] = [
    ("TENANT", "tenant_id"),
    ("OBJECT", "object_id"),
    ("DATASET", "dataset_name"),
    ("FILE", "filename"),
    ("UPLOADED", "uploaded_at"),
];

/// Runs a review command.
pub async fn run(session: &Session, command: ReviewCommand) -> Result<(), ClientError> {
    let api = session.api()?;
    let object = |tenant: &str, object: &str| {
        format!(
            "/admin/review/objects/{}/{}",
            segment(tenant),
            segment(object)
        )
    };
    let answer = match command {
        ReviewCommand::Queue { all } => {
            let items = api.list("/admin/review/queue", "items", None, all).await?;
            session.print_list(items, &QUEUE);
            return Ok(());
        }
        ReviewCommand::Show {
            tenant_id,
            object_id,
        } => api.get(&object(&tenant_id, &object_id)).await?,
        ReviewCommand::Approve {
            tenant_id,
            object_id,
            note,
        } => {
            let body = match note {
                Some(note) => json!({ "note": note }),
                None => json!({}),
            };
            let path = format!("{}/approve", object(&tenant_id, &object_id));
            api.post(&path, body).await?
        }
        ReviewCommand::Reject {
            tenant_id,
            object_id,
            reason,
        } => {
            let path = format!("{}/reject", object(&tenant_id, &object_id));
            api.post(&path, json!({ "reason": reason })).await?
        }
        ReviewCommand::Preview {
            tenant_id,
            object_id,
        } => {
            let path = format!("{}/preview", object(&tenant_id, &object_id));
            api.get(&path).await?
        }
    };
    session.print(&answer, details);
    Ok(())
}
