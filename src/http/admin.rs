//! Admin review of staged objects (SPEC §3.5): platform-admin sessions only.

use std::collections::BTreeMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use aggregates::dataset::DatasetStatus;
use aggregates::object::{ObjectCommand, ObjectStatus};
use aggregates::{DatasetId, Object, ObjectId, TenantId};
use axum::extract::State;
use cqrs_es::Aggregate;
use projections::datasets::DatasetRow;
use projections::objects::{self as read, ObjectRow, ReviewRow};
use projections::rows::JsonText;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::blobs::DOWNLOAD_TTL;
use crate::error::AppError;
use crate::http::envelope::Envelope;
use crate::http::extract::{Auth, Path, Query};
use crate::http::json::{Fields, JsonBody};
use crate::http::lookup::written_object;
use crate::http::pagination::{Keyset, PageQuery};

use crate::openapi;
use crate::state::AppState;

/// Routes under `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(queue))
        .routes(routes!(detail))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(preview))
}

/// A staged object awaiting review (SPEC §3.5).
#[derive(Serialize, ToSchema)]
pub struct ReviewItem {
    /// The object.
    #[schema(value_type = String)]
    pub object_id: ObjectId,
    /// The owner tenant.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// The owner tenant's name.
    pub tenant_name: String,
    /// The dataset.
    #[schema(value_type = String)]
    pub dataset_id: DatasetId,
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

impl ReviewItem {
    /// The item of `object`, whose tenant and dataset are so named.
    fn new(object: &ObjectRow, tenant_name: String, dataset_name: String) -> Self {
        Self {
            object_id: object.object_id.clone(),
            tenant_id: object.tenant_id.clone(),
            tenant_name,
            dataset_id: object.dataset_id.clone(),
            dataset_name,
            filename: object.filename.clone(),
            content_type: object.content_type.clone(),
            size_bytes: object.size_bytes,
            checksum_sha256: object.checksum_sha256.clone(),
            uploaded_at: object.uploaded_at.clone(),
            review_expires_at: object.review_expires_at.clone(),
        }
    }
}

/// The review queue.
#[derive(Serialize, ToSchema)]
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
#[derive(Serialize, ToSchema)]
pub struct ReviewDetail {
    #[serde(flatten)]
    pub item: ReviewItem,
    /// String → string.
    #[schema(value_type = BTreeMap<String, String>)]
    pub metadata: JsonText<BTreeMap<String, String>>,
    /// The object's status.
    pub status: ObjectStatus,
    /// staged, approved or rejected; null before confirm.
    #[schema(required = true, schema_with = openapi::review_state)]
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
#[derive(Serialize, ToSchema)]
pub struct HistoryEntry {
    /// The event type, e.g. `ObjectUploadConfirmed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened.
    #[schema(format = DateTime)]
    pub at: String,
    /// `usr_…`, `key_…` or `system`.
    #[schema(pattern = "^(usr_[0-9a-hjkmnp-tv-z]{26}|key_[0-9a-hjkmnp-tv-z]{26}|system)$")]
    pub actor: String,
}

/// A signed preview URL, never metered.
#[derive(Serialize, ToSchema)]
pub struct Preview {
    /// A signed GET URL for the bytes.
    pub preview_url: String,
    /// When it stops working (now + 15 min).
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// An object under review, named by its owner tenant and its id.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct ReviewPath {
    /// The owner tenant.
    tenant_id: String,
    /// The object.
    object_id: String,
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
    path = "/admin/review/queue",
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
) -> Result<Envelope<ReviewQueue>, AppError> {
    principal.require_platform_admin()?;
    let tenant = query.tenant_id.filter(|t| !t.is_empty());
    let dataset = query.dataset_id.filter(|d| !d.is_empty());
    let scope = format!(
        "review?tenant={}&dataset={}",
        tenant.as_deref().unwrap_or(""),
        dataset.as_deref().unwrap_or("")
    );
    let keyset = Keyset::open(&state.key, &query.page, scope)?;
    let (rows, total) = read::review_queue(
        &state.store.db,
        tenant.as_deref(),
        dataset.as_deref(),
        keyset.after(),
        keyset.fetch(),
    )
    .await?;
    let sort_key = |r: &ReviewRow| {
        let uploaded_at = r.object.uploaded_at.clone().unwrap_or_default();
        (uploaded_at, r.object.object_id.to_string())
    };
    let page = keyset.page(rows, sort_key, |r| {
        ReviewItem::new(&r.object, r.tenant_name, r.dataset_name)
    });
    Ok(Envelope::ok(ReviewQueue {
        items: page.items,
        total,
        next_cursor: page.next_cursor,
    }))
}

/// The object named by `{tenant_id}/{object_id}`, with its tenant's name and its dataset; a
/// tenant that does not own the object is 404, as is an object of a deleted dataset.
async fn find(
    state: &AppState,
    tenant_id: &str,
    object_id: &str,
) -> Result<(ObjectRow, String, DatasetRow), AppError> {
    TenantId::parse(tenant_id).map_err(|_| AppError::NotFound)?;
    ObjectId::parse(object_id).map_err(|_| AppError::NotFound)?;
    let object = read::object(&state.store.db, object_id)
        .await?
        .ok_or(AppError::NotFound)?;
    if object.tenant_id.as_str() != tenant_id {
        return Err(AppError::NotFound);
    }
    let dataset = projections::datasets::dataset(&state.store.db, object.dataset_id.as_str())
        .await?
        .filter(|d| d.status != DatasetStatus::Deleted)
        .ok_or(AppError::NotFound)?;
    let tenant_name = projections::accounts::tenant_name(&state.store.db, tenant_id)
        .await?
        .unwrap_or_default();
    Ok((object, tenant_name, dataset))
}

#[utoipa::path(
    get,
    path = "/admin/review/objects/{tenant_id}/{object_id}",
    summary = "An object with its review state and history (platform-admin session).",
    security(("session" = [])),
    params(ReviewPath),
    responses(
        (status = 200, description = "The object.", body = ReviewDetail),
        (status = 404, description = "Unknown, or the tenant does not own it."),
    )
)]
async fn detail(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(ReviewPath {
        tenant_id,
        object_id,
    }): Path<ReviewPath>,
) -> Result<Envelope<ReviewDetail>, AppError> {
    principal.require_platform_admin()?;
    let (object, tenant_name, dataset) = find(&state, &tenant_id, &object_id).await?;
    let history = projections::log::events_of(&state.store.db, Object::TYPE, &object_id)
        .await?
        .into_iter()
        .map(|e| HistoryEntry {
            event_type: e.event_type,
            at: e.metadata.occurred_at,
            actor: if e.metadata.actor_id.is_empty() {
                "system".to_owned()
            } else {
                e.metadata.actor_id
            },
        })
        .collect();
    Ok(Envelope::ok(ReviewDetail {
        item: ReviewItem::new(&object, tenant_name, dataset.name),
        metadata: object.metadata,
        status: object.status,
        review_state: object.review_state,
        rejection_reason: object.rejection_reason,
        reviewed_at: object.reviewed_at,
        history,
    }))
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
    path = "/admin/review/objects/{tenant_id}/{object_id}/approve",
    summary = "Approves a staged object (platform-admin session).",
    security(("session" = [])),
    params(ReviewPath),
    request_body = ApproveBody,
    responses(
        (status = 200, description = "The object, approved.", body = ObjectRow),
        (status = 404, description = "Unknown, or the tenant does not own it."),
        (status = 409, description = "Not staged, or the dataset is pending_deletion (invalid_state)."),
        (status = 422, description = "note is too long."),
    )
)]
async fn approve(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(ReviewPath {
        tenant_id,
        object_id,
    }): Path<ReviewPath>,
    body: JsonBody,
) -> Result<Envelope<ObjectRow>, AppError> {
    principal.require_platform_admin()?;
    let body: ApproveBody = body.parse()?;
    if body.note.as_ref().is_some_and(|n| n.chars().count() > 1000) {
        return Err(AppError::field("note", "must be at most 1000 characters"));
    }
    let (_, _, dataset) = find(&state, &tenant_id, &object_id).await?;
    let command = ObjectCommand::Approve {
        note: body.note,
        reviewed_at: state.store.clock.now(),
        dataset: dataset.status,
    };
    state.run::<Object>(&object_id, command, &principal).await?;
    Ok(Envelope::ok(written_object(&state, &object_id).await?))
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
    path = "/admin/review/objects/{tenant_id}/{object_id}/reject",
    summary = "Rejects a staged object (platform-admin session).",
    security(("session" = [])),
    params(ReviewPath),
    request_body = RejectBody,
    responses(
        (status = 200, description = "The object, rejected.", body = ObjectRow),
        (status = 404, description = "Unknown, or the tenant does not own it."),
        (status = 409, description = "Not staged, or the dataset is pending_deletion (invalid_state)."),
        (status = 422, description = "reason is missing or invalid."),
    )
)]
async fn reject(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(ReviewPath {
        tenant_id,
        object_id,
    }): Path<ReviewPath>,
    body: JsonBody,
) -> Result<Envelope<ObjectRow>, AppError> {
    principal.require_platform_admin()?;
    let body: RejectBody = body.parse()?;
    let mut fields = Fields::default();
    let reason = fields.check(
        "reason",
        body.reason.map(|r| aggregates::text::trimmed(&r, 1000)),
    );
    fields.finish()?;
    let reason = reason.ok_or_else(|| AppError::internal("validation passed without a reason"))?;
    let (_, _, dataset) = find(&state, &tenant_id, &object_id).await?;
    let command = ObjectCommand::Reject {
        reason,
        reviewed_at: state.store.clock.now(),
        dataset: dataset.status,
    };
    state.run::<Object>(&object_id, command, &principal).await?;
    Ok(Envelope::ok(written_object(&state, &object_id).await?))
}

#[utoipa::path(
    get,
    path = "/admin/review/objects/{tenant_id}/{object_id}/preview",
    summary = "A signed preview URL of the bytes (platform-admin session).",
    security(("session" = [])),
    params(ReviewPath),
    responses(
        (status = 200, description = "Where to preview.", body = Preview),
        (status = 404, description = "Unknown, or the tenant does not own it."),
        (status = 409, description = "Not staged, approved or rejected (invalid_state)."),
    )
)]
async fn preview(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(ReviewPath {
        tenant_id,
        object_id,
    }): Path<ReviewPath>,
) -> Result<Envelope<Preview>, AppError> {
    principal.require_platform_admin()?;
    let (object, _, _) = find(&state, &tenant_id, &object_id).await?;
    if !object.status.has_bytes() {
        return Err(AppError::InvalidState(object.status.to_string()));
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
    Ok(Envelope::ok(Preview {
        preview_url: url.url,
        expires_at: aggregates::timestamp::format(url.expires_at),
    }))
}
