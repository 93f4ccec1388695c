//! Objects: the three-step upload, listing, download URLs and deletion (SPEC §3.4).

use std::collections::BTreeMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use aggregates::metering::{download_price_micros, Charge, Download, DownloadCommand};
use aggregates::money::{Amount, Usd, MAX_CHARGE_MICROS};
use aggregates::object::{
    owner_download, ContentType, Filename, ObjectCommand, ObjectDescriptor, ObjectError,
    ObjectMetadata, ObjectStatus, Sha256Hex,
};
use aggregates::{AccessId, Object, ObjectId, Scope, TenantId};
use axum::extract::State;
use chrono::Duration;
use projections::datasets::DatasetRow;
use projections::objects::{self as read, ObjectRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Principal, PrincipalKind};
use crate::blobs::DOWNLOAD_TTL;
use crate::charges;
use crate::error::AppError;
use crate::http::envelope::Envelope;
use crate::http::extract::{Auth, Path, Query};
use crate::http::json::{Fields, JsonBody};
use crate::http::lookup::{own_dataset, own_object, written_object};
use crate::http::pagination::{filter, Keyset, Page, PageQuery};

use crate::openapi;
use crate::state::AppState;

/// How long an upload URL stays valid.
const UPLOAD_TTL: Duration = Duration::hours(1);
/// How long a staged object waits for review.
const REVIEW_WINDOW: Duration = Duration::days(7);

/// Routes under `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(initiate))
        .routes(routes!(list))
        .routes(routes!(show, remove))
        .routes(routes!(confirm))
        .routes(routes!(cancel))
        .routes(routes!(download))
}

/// Where and how to upload the bytes.
#[derive(Serialize, ToSchema)]
pub struct UploadTicket {
    /// The new object, `pending_upload`.
    pub object_id: String,
    /// A signed URL for the bytes.
    pub upload_url: String,
    /// Always `PUT`.
    #[schema(pattern = "^PUT$")]
    pub upload_method: &'static str,
    /// Headers the client must send with the bytes.
    pub upload_headers: BTreeMap<String, String>,
    /// When the URL stops working (now + 1 h).
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// A signed download URL; for another tenant's object, the charge.
#[derive(Serialize, ToSchema)]
pub struct DownloadTicket {
    /// A signed URL for the bytes.
    pub download_url: String,
    /// When the URL stops working (now + 15 min).
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The file name.
    pub filename: String,
    /// The media type.
    pub content_type: String,
    /// The size.
    #[schema(minimum = 1)]
    pub size_bytes: i64,
    /// The bytes' SHA-256 (lowercase hex), for the downloader to verify what arrived.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub checksum_sha256: String,
    /// `P × 10` for another tenant's object, 0 for one's own.
    pub charged_amount: Amount,
    /// Always `USD`.
    pub currency: Usd,
    /// The metered access, null for one's own object.
    #[schema(required = true)]
    pub access_id: Option<String>,
}

/// The body of an upload's start.
#[derive(Deserialize, ToSchema)]
#[schema(as = UploadRequest)]
#[serde(deny_unknown_fields)]
struct InitiateBody {
    /// The file name.
    #[schema(required = true, schema_with = openapi::filename)]
    filename: Option<String>,
    /// The media type.
    #[schema(required = true, schema_with = openapi::content_type)]
    content_type: Option<String>,
    /// 1..=`IPTO_MAX_OBJECT_BYTES`.
    #[schema(required = true, value_type = i64, minimum = 1)]
    #[serde(default, deserialize_with = "whole_number")]
    size_bytes: Option<u64>,
    /// 64 hex characters, any case; checked at confirm.
    #[schema(pattern = "^[0-9A-Fa-f]{64}$")]
    checksum_sha256: Option<String>,
    /// String → string metadata.
    #[schema(schema_with = openapi::metadata)]
    metadata: Option<BTreeMap<String, String>>,
}

/// A non-negative integer, also written with a zero fraction (`10.0`): JSON does not tell the two
/// apart, and neither does JSON Schema's `integer`.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("invalid type: {n}, expected a whole number"))
            }),
    }
}

/// The query of an object list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only objects in this status; without it, cancelled and deleted are hidden.
    #[param(schema_with = object_status)]
    status: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

fn object_status() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice(ObjectStatus::EXPECTED)
}

#[utoipa::path(
    post,
    path = "/datasets/{dataset_id}/objects/upload",
    summary = "Starts an upload: a pending_upload object and a signed URL (objects:write).",
    params(("dataset_id" = String, Path, description = "The dataset's id.")),
    request_body = InitiateBody,
    responses(
        (status = 201, description = "Where to upload.", body = UploadTicket),
        (status = 404, description = "The dataset is foreign, unknown or deleted."),
        (status = 409, description = "The dataset is pending_deletion (invalid_state)."),
        (status = 422, description = "A field is missing or invalid."),
    )
)]
async fn initiate(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(dataset_id): Path<String>,
    body: JsonBody,
) -> Result<Envelope<UploadTicket>, AppError> {
    principal.require(Scope::ObjectsWrite)?;
    let body: InitiateBody = body.parse()?;
    let mut fields = Fields::default();
    let filename = fields.check("filename", body.filename.map(|f| Filename::parse(&f)));
    let content_type = fields.check(
        "content_type",
        body.content_type.map(|c| ContentType::parse(&c)),
    );
    let max = state.config.max_object_bytes;
    let size_bytes = fields.check(
        "size_bytes",
        body.size_bytes.map(|n| {
            if (1..=max).contains(&n) {
                Ok(n)
            } else {
                Err(format!("must be from 1 to {max}"))
            }
        }),
    );
    let declared = fields.optional(
        "checksum_sha256",
        body.checksum_sha256.map(|c| Sha256Hex::parse(&c)),
    );
    let metadata = match ObjectMetadata::parse(body.metadata.unwrap_or_default()) {
        Ok(m) => Some(m),
        Err((key, error)) => {
            let path = key.map_or("metadata".to_owned(), |k| format!("metadata.{k}"));
            fields.fail(&path, error.to_string());
            None
        }
    };
    fields.finish()?;
    let dataset = own_dataset(&state, &principal, &dataset_id).await?;
    let (Some(filename), Some(content_type), Some(size_bytes), Some(metadata)) =
        (filename, content_type, size_bytes, metadata)
    else {
        return Err(AppError::internal("validation passed without values"));
    };
    let now = state.store.clock.now();
    let expires_at = now + UPLOAD_TTL;
    let descriptor = ObjectDescriptor {
        object_id: ObjectId::generate(),
        dataset_id: dataset.dataset_id,
        tenant_id: TenantId::parse(&principal.tenant_id).map_err(AppError::internal)?,
        filename,
        content_type,
        size_bytes,
        declared_sha256: declared,
        metadata,
    };
    let object_id = descriptor.object_id.to_string();
    state
        .run::<Object>(
            &object_id,
            ObjectCommand::InitiateUpload {
                descriptor,
                upload_expires_at: expires_at,
                dataset: dataset.status,
            },
            &principal,
        )
        .await?;
    let url = state.blobs.upload_url(&object_id, now, expires_at).await?;
    Ok(Envelope::created(UploadTicket {
        object_id,
        upload_url: url.url,
        upload_method: "PUT",
        upload_headers: BTreeMap::new(),
        expires_at: aggregates::timestamp::format(expires_at),
    }))
}

#[utoipa::path(
    post,
    path = "/objects/{id}/confirm",
    summary = "Verifies the uploaded bytes and stages the object for review (objects:write).",
    params(("id" = String, Path, description = "The object's id.", pattern = "^obj_[0-9a-hjkmnp-tv-z]{26}$")),
    responses(
        (status = 200, description = "The object, staged (or as it was, if already confirmed).", body = ObjectRow),
        (status = 404, description = "Foreign or unknown object, or its dataset is deleted."),
        (status = 409, description = "cancelled or deleted, dataset pending_deletion (invalid_state), \
            or no bytes yet (upload_incomplete)."),
        (status = 422, description = "The bytes differ from size_bytes (size_mismatch) or the \
            checksum (checksum_mismatch); they are discarded."),
    )
)]
async fn confirm(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<ObjectRow>, AppError> {
    principal.require(Scope::ObjectsWrite)?;
    let (object, dataset) = own_object(&state, &principal, &id).await?;
    match object.status {
        ObjectStatus::PendingUpload => {}
        ObjectStatus::Staged | ObjectStatus::Approved | ObjectStatus::Rejected => {
            return Ok(Envelope::ok(object))
        }
        other => return Err(AppError::InvalidState(other.to_string())),
    }
    // The aggregate decides; asking first spares verifying bytes it would refuse.
    if dataset.status.is_being_deleted() {
        return Err(ObjectError::DatasetState(dataset.status).into());
    }
    let Some(stored) = state.blobs.upload_size(&id).await? else {
        return Err(AppError::UploadIncomplete);
    };
    let expected = object.size_bytes as u64;
    if stored != expected {
        state.blobs.delete_upload(&id).await?;
        return Err(AppError::SizeMismatch {
            expected,
            actual: stored,
        });
    }
    // Verify a copy of its own: a PUT racing this confirm can change the upload, not the copy.
    let candidate = state.blobs.copy_upload(&id).await?;
    let failure = if candidate.length != expected {
        Some(AppError::SizeMismatch {
            expected,
            actual: candidate.length,
        })
    } else {
        object
            .declared_sha256
            .as_ref()
            .filter(|declared| **declared != candidate.sha256)
            .map(|declared| AppError::ChecksumMismatch {
                expected: declared.clone(),
                actual: candidate.sha256.clone(),
            })
    };
    if let Some(failure) = failure {
        state.blobs.discard(candidate).await?;
        state.blobs.delete_upload(&id).await?;
        return Err(failure);
    }
    let digest = candidate.sha256.clone();
    state.blobs.seal(candidate).await?;
    let uploaded_at = state.store.clock.now();
    let command = ObjectCommand::ConfirmUpload {
        sha256: Sha256Hex::parse(&digest).map_err(AppError::internal)?,
        uploaded_at,
        review_expires_at: uploaded_at + REVIEW_WINDOW,
        dataset: dataset.status,
    };
    // A concurrent confirm that loses here leaves its copy unreferenced; the collector takes it.
    state.run::<Object>(&id, command, &principal).await?;
    // The upload has served its purpose; a later PUT can only recreate it, and nothing serves it.
    if let Err(error) = state.blobs.delete_upload(&id).await {
        tracing::warn!(%error, object_id = %id, "could not remove a confirmed upload; the collector will");
    }
    Ok(Envelope::ok(written_object(&state, &id).await?))
}

#[utoipa::path(
    delete,
    path = "/objects/{id}/upload",
    summary = "Cancels a pending upload (objects:write).",
    params(("id" = String, Path, description = "The object's id.", pattern = "^obj_[0-9a-hjkmnp-tv-z]{26}$")),
    responses(
        (status = 200, description = "The object, cancelled.", body = ObjectRow),
        (status = 404, description = "Foreign or unknown object."),
        (status = 409, description = "Not pending_upload (invalid_state)."),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<ObjectRow>, AppError> {
    principal.require(Scope::ObjectsWrite)?;
    own_object(&state, &principal, &id).await?;
    state
        .run::<Object>(&id, ObjectCommand::CancelUpload, &principal)
        .await?;
    state.blobs.delete(&id).await?;
    Ok(Envelope::ok(written_object(&state, &id).await?))
}

#[utoipa::path(
    delete,
    path = "/objects/{id}",
    summary = "Deletes an object and its bytes (objects:write).",
    params(("id" = String, Path, description = "The object's id.", pattern = "^obj_[0-9a-hjkmnp-tv-z]{26}$")),
    responses(
        (status = 200, description = "The object, deleted.", body = ObjectRow),
        (status = 404, description = "Foreign or unknown object."),
        (status = 409, description = "Already cancelled or deleted (invalid_state)."),
    )
)]
async fn remove(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<ObjectRow>, AppError> {
    principal.require(Scope::ObjectsWrite)?;
    own_object(&state, &principal, &id).await?;
    state
        .run::<Object>(&id, ObjectCommand::Delete, &principal)
        .await?;
    state.blobs.delete(&id).await?;
    Ok(Envelope::ok(written_object(&state, &id).await?))
}

#[utoipa::path(
    get,
    path = "/objects/{id}",
    summary = "One of the caller's objects, in any status (datasets:read).",
    params(("id" = String, Path, description = "The object's id.", pattern = "^obj_[0-9a-hjkmnp-tv-z]{26}$")),
    responses(
        (status = 200, description = "The object.", body = ObjectRow),
        (status = 404, description = "Foreign or unknown object, or its dataset is deleted."),
    )
)]
async fn show(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<ObjectRow>, AppError> {
    principal.require(Scope::DatasetsRead)?;
    Ok(Envelope::ok(own_object(&state, &principal, &id).await?.0))
}

#[utoipa::path(
    get,
    path = "/datasets/{dataset_id}/objects",
    summary = "A dataset's objects, newest first (datasets:read, own dataset).",
    params(("dataset_id" = String, Path, description = "The dataset's id."), ListQuery, PageQuery),
    responses(
        (status = 200, description = "A page of objects, newest first.", body = Page<ObjectRow>),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 404, description = "The dataset is foreign, unknown or deleted."),
        (status = 422, description = "status or limit is invalid."),
    )
)]
async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(dataset_id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Envelope<Page<ObjectRow>>, AppError> {
    principal.require(Scope::DatasetsRead)?;
    let status = filter("status", query.status, ObjectStatus::EXPECTED)?;
    own_dataset(&state, &principal, &dataset_id).await?;
    let scope = format!(
        "objects?dataset={dataset_id}&status={}",
        status.unwrap_or("")
    );
    let keyset = Keyset::open(&state.key, &query.page, scope)?;
    let rows = read::dataset_objects(
        &state.store.db,
        &dataset_id,
        status,
        keyset.after(),
        keyset.fetch(),
    )
    .await?;
    let sort_key = |r: &ObjectRow| (r.created_at.clone(), r.object_id.to_string());
    Ok(Envelope::ok(keyset.page(rows, sort_key, ObjectRow::from)))
}

/// The query of a download.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DownloadQuery {
    /// The most this download may cost, in USD (`^\d+(\.\d{1,6})?$`, at most 10000000): a
    /// higher charge is 402 charge_limit_exceeded and nothing is charged.
    #[param(schema_with = max_charge)]
    max_charge: Option<String>,
}

fn max_charge() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::amount_text(10_000_000)
}

#[utoipa::path(
    get,
    path = "/objects/{id}/download",
    summary = "A signed download URL; another tenant's object is charged P × 10 (datasets:read).",
    params(("id" = String, Path, description = "The object's id.", pattern = "^obj_[0-9a-hjkmnp-tv-z]{26}$"), DownloadQuery),
    responses(
        (status = 200, description = "Where to download.", body = DownloadTicket),
        (status = 402, description = "The charge is over max_charge (charge_limit_exceeded), or \
            would take the key past its monthly spend_limit (spend_limit_exceeded); nothing is \
            charged."),
        (status = 404, description = "Unknown, or not reachable by the caller."),
        (status = 409, description = "The owner's object is not staged or approved, or its \
            dataset is pending_deletion (invalid_state)."),
        (status = 422, description = "The charge would exceed the largest amount a single charge \
            may record (charge_too_large); nothing is charged."),
    )
)]
async fn download(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Query(query): Query<DownloadQuery>,
) -> Result<Envelope<DownloadTicket>, AppError> {
    principal.require(Scope::DatasetsRead)?;
    let max_charge = charges::bound(
        "max_charge",
        query
            .max_charge
            .map(|raw| Amount::parse(&raw, MAX_CHARGE_MICROS)),
    )?;
    ObjectId::parse(&id).map_err(|_| AppError::NotFound)?;
    let object = read::object(&state.store.db, &id)
        .await?
        .ok_or(AppError::NotFound)?;
    let now = state.store.clock.now();
    let (charged_micros, access_id) = if object.tenant_id.as_str() == principal.tenant_id {
        // The owner downloads staged or approved objects, free and unrecorded.
        let (object, dataset) = own_object(&state, &principal, &id).await?;
        // An allow_list key reaches its own tenant's datasets only when granted, as elsewhere.
        if let Some(granted) = principal.allow_list(&state.store.db).await? {
            if !granted.iter().any(|g| g == object.dataset_id.as_str()) {
                return Err(AppError::NotFound);
            }
        }
        owner_download(object.status, dataset.status)?;
        (0, None)
    } else {
        let dataset = buyer_dataset(&state, &principal, &object).await?;
        let access_id = AccessId::generate();
        let charge = Charge {
            access_id: access_id.to_string(),
            buyer_tenant_id: TenantId::parse(&principal.tenant_id).map_err(AppError::internal)?,
            api_key_id: match &principal.kind {
                PrincipalKind::ApiKey { api_key_id } => Some(api_key_id.clone()),
                PrincipalKind::User { .. } => None,
            },
            provider_tenant_id: dataset.tenant_id,
            dataset_id: dataset.dataset_id,
            object_id: object.object_id.clone(),
            amount_micros: download_price_micros(dataset.price.micros())
                .ok_or(AppError::ChargeTooLarge)?,
            fee_bps: state.config.platform_fee_bps,
            occurred_at: now,
        };
        let amount = charge.amount_micros;
        if let Some(max_charge) = max_charge.filter(|max| amount > *max) {
            return Err(AppError::ChargeLimitExceeded {
                max_charge,
                charge: amount,
            });
        }
        let reservation =
            charges::reserve(&state, &principal, access_id.as_str(), amount, now).await?;
        let charged = state
            .run::<Download>(
                access_id.as_str(),
                DownloadCommand::Charge(charge),
                &principal,
            )
            .await;
        if let Err(error) = charged {
            charges::release(&state, &principal, reservation).await;
            return Err(error);
        }
        (amount, Some(access_id.to_string()))
    };
    let sha256 = object
        .checksum_sha256
        .ok_or_else(|| AppError::internal("a downloadable object without a checksum"))?;
    let url = state
        .blobs
        .download_url(&id, &sha256, now, now + DOWNLOAD_TTL)
        .await?;
    Ok(Envelope::ok(DownloadTicket {
        download_url: url.url,
        expires_at: aggregates::timestamp::format(url.expires_at),
        filename: object.filename,
        content_type: object.content_type,
        size_bytes: object.size_bytes,
        checksum_sha256: sha256,
        charged_amount: Amount::from_micros(charged_micros),
        currency: Usd,
        access_id,
    }))
}

/// For a buyer: the object's dataset if the object is approved, the dataset accessible (SPEC §2.8)
/// and, for an `allow_list` key, granted. Anything else is 404.
async fn buyer_dataset(
    state: &AppState,
    principal: &Principal,
    object: &ObjectRow,
) -> Result<DatasetRow, AppError> {
    if object.status != ObjectStatus::Approved {
        return Err(AppError::NotFound);
    }
    let dataset = projections::datasets::dataset(&state.store.db, object.dataset_id.as_str())
        .await?
        .ok_or(AppError::NotFound)?;
    let entitled = projections::datasets::is_entitled(
        &state.store.db,
        dataset.dataset_id.as_str(),
        &principal.tenant_id,
    )
    .await?;
    if !projections::datasets::accessible(&dataset, &principal.tenant_id, entitled) {
        return Err(AppError::NotFound);
    }
    if let Some(granted) = principal.allow_list(&state.store.db).await? {
        if !granted.iter().any(|g| g == dataset.dataset_id.as_str()) {
            return Err(AppError::NotFound);
        }
    }
    Ok(dataset)
}
