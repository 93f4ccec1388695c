//! Admin review of staged objects (SPEC §3.5): platform-admin sessions only.

use aggregates::object::ObjectCommand;
use aggregates::{Object, ObjectId, TenantId};
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use cqrs_es::Aggregate;
use projections::objects::{self as read, ObjectRow};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::http::datasets::sort_key;
use crate::http::envelope;
use crate::http::error::AppError;
use crate::http::extract::{Auth, Path, Query};
use crate::http::json::{Fields, JsonBody};
use crate::http::objects::{object_json, reload, DOWNLOAD_TTL};
use crate::http::pagination::{self, PageQuery};

/// Routes under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/review/queue", get(queue))
        .route("/admin/review/objects/{tenant_id}/{object_id}", get(detail))
        .route(
            "/admin/review/objects/{tenant_id}/{object_id}/approve",
            post(approve),
        )
        .route(
            "/admin/review/objects/{tenant_id}/{object_id}/reject",
            post(reject),
        )
        .route(
            "/admin/review/objects/{tenant_id}/{object_id}/preview",
            get(preview),
        )
}

fn review_item(object: &ObjectRow, tenant_name: &str, dataset_name: &str) -> Value {
    json!({
        "object_id": object.object_id,
        "tenant_id": object.tenant_id,
        "tenant_name": tenant_name,
        "dataset_id": object.dataset_id,
        "dataset_name": dataset_name,
        "filename": object.filename,
        "content_type": object.content_type,
        "size_bytes": object.size_bytes,
        "checksum_sha256": object.checksum_sha256,
        "uploaded_at": object.uploaded_at,
        "review_expires_at": object.review_expires_at,
    })
}

#[derive(Deserialize)]
struct QueueQuery {
    tenant_id: Option<String>,
    dataset_id: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

async fn queue(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<QueueQuery>,
) -> Result<Response, AppError> {
    principal.require_platform_admin()?;
    let tenant = query.tenant_id.filter(|t| !t.is_empty());
    let dataset = query.dataset_id.filter(|d| !d.is_empty());
    let scope = format!(
        "review?tenant={}&dataset={}",
        tenant.as_deref().unwrap_or(""),
        dataset.as_deref().unwrap_or("")
    );
    let page = query.page.page(&state.key, &scope, 20, 100)?;
    let after = page.after.as_ref().map(sort_key).transpose()?;
    let (rows, total) = read::review_queue(
        &state.store.db,
        tenant.as_deref(),
        dataset.as_deref(),
        after,
        page.limit,
    )
    .await?;
    let (rows, next) = pagination::finish(rows, &page, &state.key, &scope, |r| {
        json!([
            r.object.uploaded_at.clone().unwrap_or_default(),
            r.object.object_id
        ])
    });
    let items: Vec<Value> = rows
        .iter()
        .map(|r| review_item(&r.object, &r.tenant_name, &r.dataset_name))
        .collect();
    Ok(envelope::ok(
        json!({ "items": items, "total": total, "next_cursor": next }),
    ))
}

/// The object named by `{tenant_id}/{object_id}`, with its tenant's and dataset's names and the
/// dataset's status; a tenant that does not own the object is 404.
async fn find(
    state: &AppState,
    tenant_id: &str,
    object_id: &str,
) -> Result<(ObjectRow, String, String, String), AppError> {
    TenantId::parse(tenant_id).map_err(|_| AppError::NotFound)?;
    ObjectId::parse(object_id).map_err(|_| AppError::NotFound)?;
    let object = read::object(&state.store.db, object_id)
        .await?
        .ok_or(AppError::NotFound)?;
    if object.tenant_id != tenant_id {
        return Err(AppError::NotFound);
    }
    let dataset = projections::datasets::dataset(&state.store.db, &object.dataset_id)
        .await?
        .ok_or(AppError::NotFound)?;
    if dataset.status == "deleted" {
        return Err(AppError::NotFound);
    }
    let tenant_name = projections::accounts::tenant_name(&state.store.db, tenant_id)
        .await?
        .unwrap_or_default();
    Ok((object, tenant_name, dataset.name, dataset.status))
}

async fn detail(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((tenant_id, object_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    principal.require_platform_admin()?;
    let (object, tenant_name, dataset_name, _) = find(&state, &tenant_id, &object_id).await?;
    let history: Vec<Value> =
        projections::log::events_of(&state.store.db, Object::TYPE, &object_id)
            .await?
            .iter()
            .map(|e| {
                let actor = if e.metadata.actor_id.is_empty() {
                    "system"
                } else {
                    e.metadata.actor_id.as_str()
                };
                json!({ "type": e.event_type, "at": e.metadata.occurred_at, "actor": actor })
            })
            .collect();
    let mut item = review_item(&object, &tenant_name, &dataset_name);
    item["metadata"] = json!(object.metadata);
    item["status"] = json!(object.status);
    item["review_state"] = json!(object.review_state);
    item["rejection_reason"] = json!(object.rejection_reason);
    item["reviewed_at"] = json!(object.reviewed_at);
    item["history"] = json!(history);
    Ok(envelope::ok(item))
}

#[derive(Deserialize)]
struct ApproveBody {
    note: Option<String>,
}

async fn approve(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((tenant_id, object_id)): Path<(String, String)>,
    body: JsonBody,
) -> Result<Response, AppError> {
    principal.require_platform_admin()?;
    let body: ApproveBody = body.parse()?;
    if body.note.as_ref().is_some_and(|n| n.chars().count() > 1000) {
        return Err(AppError::field("note", "must be at most 1000 characters"));
    }
    let (_, _, _, dataset_status) = find(&state, &tenant_id, &object_id).await?;
    if dataset_status == "pending_deletion" {
        return Err(AppError::InvalidState(dataset_status));
    }
    let command = ObjectCommand::Approve {
        note: body.note,
        reviewed_at: state.store.clock.now(),
    };
    state
        .store
        .execute::<Object>(&object_id, command, &(), &principal.actor())
        .await?;
    Ok(envelope::ok(object_json(
        &reload(&state, &object_id).await?,
    )))
}

#[derive(Deserialize)]
struct RejectBody {
    reason: Option<String>,
}

async fn reject(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((tenant_id, object_id)): Path<(String, String)>,
    body: JsonBody,
) -> Result<Response, AppError> {
    principal.require_platform_admin()?;
    let body: RejectBody = body.parse()?;
    let mut fields = Fields::default();
    let reason = fields.check(
        "reason",
        body.reason.map(|r| aggregates::text::trimmed(&r, 1000)),
    );
    fields.finish()?;
    let reason = reason.ok_or_else(|| AppError::internal("validation passed without a reason"))?;
    let (_, _, _, dataset_status) = find(&state, &tenant_id, &object_id).await?;
    if dataset_status == "pending_deletion" {
        return Err(AppError::InvalidState(dataset_status));
    }
    let command = ObjectCommand::Reject {
        reason,
        reviewed_at: state.store.clock.now(),
    };
    state
        .store
        .execute::<Object>(&object_id, command, &(), &principal.actor())
        .await?;
    Ok(envelope::ok(object_json(
        &reload(&state, &object_id).await?,
    )))
}

async fn preview(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((tenant_id, object_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    principal.require_platform_admin()?;
    let (object, _, _, _) = find(&state, &tenant_id, &object_id).await?;
    if !matches!(object.status.as_str(), "staged" | "approved" | "rejected") {
        return Err(AppError::InvalidState(object.status));
    }
    let now = state.store.clock.now();
    let url = state
        .blobs
        .download_url(&object_id, now, now + DOWNLOAD_TTL)
        .await?;
    Ok(envelope::ok(json!({
        "preview_url": url.url,
        "expires_at": aggregates::timestamp::format(url.expires_at),
    })))
}
