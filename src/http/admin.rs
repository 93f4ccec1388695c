//! Admin review of staged objects (SPEC §3.5): platform-admin sessions only.

use crate::http::routes::Routes;
use aggregates::object::ObjectCommand;
use aggregates::{Object, ObjectId, TenantId};
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use cqrs_es::Aggregate;
use projections::objects::{self as read, ObjectRow};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::app::AppState;
use crate::http::datasets::sort_key;
use crate::http::envelope;
use crate::http::error::AppError;
use crate::http::extract::{Auth, Path, Query};
use crate::http::json::{Fields, JsonBody};
use crate::http::objects::{object_json, reload, ObjectView, DOWNLOAD_TTL};
use crate::http::openapi;
use crate::http::pagination::{self, PageQuery};

/// Routes under `/v1`.
pub fn routes() -> Routes {
    Routes::new()
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

/// The operations of this module, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(queue, detail, approve, reject, preview))]
pub struct Api;

/// A staged object awaiting review (SPEC §3.5).
#[derive(ToSchema)]
pub struct ReviewItem {
    /// The object.
    pub object_id: String,
    /// The owner tenant.
    pub tenant_id: String,
    /// The owner tenant's name.
    pub tenant_name: String,
    /// The dataset.
    pub dataset_id: String,
    /// The dataset's name.
    pub dataset_name: String,
    /// The file name.
    pub filename: String,
    /// The media type.
    pub content_type: String,
    /// The size.
    #[schema(minimum = 1)]
    pub size_bytes: i64,
    /// The server-computed SHA-256, null before confirm.
    #[schema(required = true, pattern = "^[0-9a-f]{64}$")]
    pub checksum_sha256: Option<String>,
    /// When the upload was confirmed.
    #[schema(required = true, format = DateTime)]
    pub uploaded_at: Option<String>,
    /// When the review window ends.
    #[schema(required = true, format = DateTime)]
    pub review_expires_at: Option<String>,
}

/// The review queue.
#[derive(ToSchema)]
pub struct ReviewQueue {
    /// Staged objects, oldest upload first.
    pub items: Vec<ReviewItem>,
    /// All matches.
    #[schema(minimum = 0)]
    pub total: i64,
    /// The next page's cursor, null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// An object under review, with its state and history (any status).
#[derive(ToSchema)]
pub struct ReviewDetail {
    /// The object.
    pub object_id: String,
    /// The owner tenant.
    pub tenant_id: String,
    /// The owner tenant's name.
    pub tenant_name: String,
    /// The dataset.
    pub dataset_id: String,
    /// The dataset's name.
    pub dataset_name: String,
    /// The file name.
    pub filename: String,
    /// The media type.
    pub content_type: String,
    /// The size.
    #[schema(minimum = 1)]
    pub size_bytes: i64,
    /// The server-computed SHA-256, null before confirm.
    #[schema(required = true, pattern = "^[0-9a-f]{64}$")]
    pub checksum_sha256: Option<String>,
    /// When the upload was confirmed.
    #[schema(required = true, format = DateTime)]
    pub uploaded_at: Option<String>,
    /// When the review window ends.
    #[schema(required = true, format = DateTime)]
    pub review_expires_at: Option<String>,
    /// String → string.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The object's status.
    pub status: String,
    /// staged, approved or rejected; null before confirm.
    #[schema(required = true)]
    pub review_state: Option<String>,
    /// The rejection reason, null unless rejected.
    #[schema(required = true)]
    pub rejection_reason: Option<String>,
    /// When it was reviewed.
    #[schema(required = true, format = DateTime)]
    pub reviewed_at: Option<String>,
    /// The object's events, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// One event in an object's history.
#[derive(ToSchema)]
pub struct HistoryEntry {
    /// The event type, e.g. `ObjectUploadConfirmed`.
    #[schema(rename = "type")]
    pub event_type: String,
    /// When it happened.
    #[schema(format = DateTime)]
    pub at: String,
    /// `usr_…`, `key_…` or `system`.
    #[schema(pattern = "^(usr_[0-9a-hjkmnp-tv-z]{26}|key_[0-9a-hjkmnp-tv-z]{26}|system)$")]
    pub actor: String,
}

/// A signed preview URL, never metered.
#[derive(ToSchema)]
pub struct Preview {
    /// A signed GET URL for the bytes.
    pub preview_url: String,
    /// When it stops working (now + 15 min).
    #[schema(format = DateTime)]
    pub expires_at: String,
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

/// The review queue's filters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct QueueQuery {
    /// Only this tenant's objects.
    tenant_id: Option<String>,
    /// Only this dataset's objects.
    dataset_id: Option<String>,
    #[param(ignore)]
    #[serde(flatten)]
    page: PageQuery,
}

#[utoipa::path(
    get,
    path = "/v1/admin/review/queue",
    tag = "admin",
    summary = "Staged objects awaiting review, oldest first (platform-admin session).",
    security(("session" = [])),
    params(QueueQuery, PageQuery),
    responses(
        (status = 200, description = "A page of the queue.", body = ReviewQueue),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 422, description = "limit is invalid."),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/admin/review/objects/{tenant_id}/{object_id}",
    tag = "admin",
    summary = "An object with its review state and history (platform-admin session).",
    security(("session" = [])),
    params(
        ("tenant_id" = String, Path, description = "The owner tenant."),
        ("object_id" = String, Path, description = "The object."),
    ),
    responses(
        (status = 200, description = "The object.", body = ReviewDetail),
        (status = 404, description = "Unknown, or the tenant does not own it."),
    )
)]
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

/// An approval's body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// At most 1000 characters; recorded in the event.
    #[schema(max_length = 1000)]
    note: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/admin/review/objects/{tenant_id}/{object_id}/approve",
    tag = "admin",
    summary = "Approves a staged object (platform-admin session).",
    security(("session" = [])),
    params(
        ("tenant_id" = String, Path, description = "The owner tenant."),
        ("object_id" = String, Path, description = "The object."),
    ),
    request_body = ApproveBody,
    responses(
        (status = 200, description = "The object, approved.", body = ObjectView),
        (status = 404, description = "Unknown, or the tenant does not own it."),
        (status = 409, description = "Not staged, or the dataset is pending_deletion (invalid_state)."),
        (status = 422, description = "note is too long."),
    )
)]
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

/// A rejection's body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    /// Trimmed, 1..=1000 characters.
    #[schema(required = true, schema_with = reason_schema)]
    reason: Option<String>,
}

fn reason_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::trimmed(1000, false)
}

#[utoipa::path(
    post,
    path = "/v1/admin/review/objects/{tenant_id}/{object_id}/reject",
    tag = "admin",
    summary = "Rejects a staged object (platform-admin session).",
    security(("session" = [])),
    params(
        ("tenant_id" = String, Path, description = "The owner tenant."),
        ("object_id" = String, Path, description = "The object."),
    ),
    request_body = RejectBody,
    responses(
        (status = 200, description = "The object, rejected.", body = ObjectView),
        (status = 404, description = "Unknown, or the tenant does not own it."),
        (status = 409, description = "Not staged, or the dataset is pending_deletion (invalid_state)."),
        (status = 422, description = "reason is missing or invalid."),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/admin/review/objects/{tenant_id}/{object_id}/preview",
    tag = "admin",
    summary = "A signed preview URL of the bytes (platform-admin session).",
    security(("session" = [])),
    params(
        ("tenant_id" = String, Path, description = "The owner tenant."),
        ("object_id" = String, Path, description = "The object."),
    ),
    responses(
        (status = 200, description = "Where to preview.", body = Preview),
        (status = 404, description = "Unknown, or the tenant does not own it."),
        (status = 409, description = "Not staged, approved or rejected (invalid_state)."),
    )
)]
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
    let sha256 = object
        .checksum_sha256
        .as_deref()
        .ok_or_else(|| AppError::internal("a confirmed object without a checksum"))?;
    let url = state
        .blobs
        .download_url(&object_id, sha256, now, now + DOWNLOAD_TTL)
        .await?;
    Ok(envelope::ok(json!({
        "preview_url": url.url,
        "expires_at": aggregates::timestamp::format(url.expires_at),
    })))
}
