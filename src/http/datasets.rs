//! Datasets, entitlements and the catalog (SPEC §3.3, §3.10, §3.11).

use aggregates::dataset::{
    DatasetCommand, DatasetName, DatasetPatch, DatasetProfile, DatasetStatus, Description,
    MonetizationMode, PricingModel, SourceModality, Visibility,
};
use aggregates::money::Usd;
use aggregates::{Dataset, DatasetId, Price, Scope, TenantId};
use axum::extract::State;
use projections::datasets::{self as read, CatalogRow, DatasetRow, EntitlementRow};
use projections::rows::Flag;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::http::envelope::Envelope;
use crate::http::extract::{Auth, Path, Query};
use crate::http::json::{number_or_string, Fields, JsonBody};
use crate::http::lookup::{own_dataset, written_dataset};
use crate::http::pagination::{filter, Keyset, Page, PageQuery};
use crate::openapi;
use crate::state::AppState;

/// Routes under `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(list_entitlements, grant))
        .routes(routes!(revoke))
        .routes(routes!(catalog))
}

/// A dataset in the catalog (SPEC §3.10): the dataset without its counters of staged and
/// rejected objects, with its tenant's name and whether the caller may use it.
#[derive(Serialize, ToSchema)]
pub struct CatalogDataset {
    /// The dataset's id.
    #[schema(value_type = String)]
    pub dataset_id: DatasetId,
    /// The owner tenant.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// The owner tenant's name.
    pub tenant_name: String,
    /// The name.
    pub name: String,
    /// The description.
    pub description: String,
    pub source_modality: SourceModality,
    pub monetization_mode: MonetizationMode,
    pub pricing_model: PricingModel,
    /// `listed` or `restricted`.
    pub visibility: Visibility,
    /// The price per billable result.
    pub price_per_result: Price,
    /// Always `USD`.
    pub currency: Usd,
    /// Approved objects.
    #[schema(minimum = 0)]
    pub active_object_count: i64,
    /// Whether the caller's tenant may search and download it (SPEC §2.8).
    #[schema(value_type = bool)]
    pub accessible: Flag,
    /// When it was created.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it last changed.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<CatalogRow> for CatalogDataset {
    fn from(
        CatalogRow {
            dataset,
            tenant_name,
            accessible,
        }: CatalogRow,
    ) -> Self {
        Self {
            dataset_id: dataset.dataset_id,
            tenant_id: dataset.tenant_id,
            tenant_name,
            name: dataset.name,
            description: dataset.description,
            source_modality: dataset.source_modality,
            monetization_mode: dataset.monetization_mode,
            pricing_model: dataset.pricing_model,
            visibility: dataset.visibility,
            price_per_result: dataset.price,
            currency: Usd,
            active_object_count: dataset.active_object_count,
            accessible,
            created_at: dataset.created_at,
            updated_at: dataset.updated_at,
        }
    }
}

/// A revoked entitlement.
#[derive(Serialize, ToSchema)]
pub struct EntitlementRevoked {
    /// The dataset.
    pub dataset_id: String,
    /// The tenant whose entitlement ended.
    pub tenant_id: String,
    /// Always true.
    pub revoked: bool,
}

/// The body of `POST /v1/datasets`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDataset {
    /// Trimmed, 1..=200 characters; need not be unique.
    #[schema(schema_with = name, required = true)]
    name: Option<String>,
    /// At most 5000 characters (default empty).
    #[schema(max_length = 5000)]
    description: Option<String>,
    /// Default `document`.
    #[schema(value_type = Option<SourceModality>)]
    source_modality: Option<String>,
    /// Default `open`.
    #[schema(value_type = Option<MonetizationMode>)]
    monetization_mode: Option<String>,
    /// Default `fixed`.
    #[schema(value_type = Option<PricingModel>)]
    pricing_model: Option<String>,
    /// Default `private`.
    #[schema(value_type = Option<Visibility>)]
    visibility: Option<String>,
    /// Default by monetization mode: open 0.01, premium 0.05, outcome_share 0.005.
    #[serde(default, deserialize_with = "number_or_string")]
    #[schema(schema_with = openapi::price_input)]
    price_per_result: Option<Value>,
    /// `draft` or `active` (default `active`).
    #[schema(schema_with = create_status)]
    status: Option<String>,
}

/// The body of `PATCH /v1/datasets/{id}`: any subset of the fields.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetChanges {
    /// Trimmed, 1..=200 characters.
    #[schema(schema_with = optional_name)]
    name: Option<String>,
    /// At most 5000 characters.
    #[schema(max_length = 5000)]
    description: Option<String>,
    /// What it holds.
    #[schema(value_type = Option<SourceModality>)]
    source_modality: Option<String>,
    /// How it earns; the price stays unless sent too.
    #[schema(value_type = Option<MonetizationMode>)]
    monetization_mode: Option<String>,
    /// How the unit price is derived.
    #[schema(value_type = Option<PricingModel>)]
    pricing_model: Option<String>,
    /// Who may find and use it.
    #[schema(value_type = Option<Visibility>)]
    visibility: Option<String>,
    /// The price per billable result.
    #[serde(default, deserialize_with = "number_or_string")]
    #[schema(schema_with = openapi::price_input)]
    price_per_result: Option<Value>,
    /// `draft`, `active` or `paused`.
    #[schema(schema_with = patch_status)]
    status: Option<String>,
}

impl From<NewDataset> for DatasetChanges {
    fn from(body: NewDataset) -> Self {
        Self {
            name: body.name,
            description: body.description,
            source_modality: body.source_modality,
            monetization_mode: body.monetization_mode,
            pricing_model: body.pricing_model,
            visibility: body.visibility,
            price_per_result: body.price_per_result,
            status: body.status,
        }
    }
}

fn name() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::trimmed(200, false)
}
fn optional_name() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::trimmed(200, true)
}
fn create_status() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::optional_choice(CREATE_STATUSES)
}
fn patch_status() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::optional_choice(PATCH_STATUSES)
}
fn list_status() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice(LIST_STATUSES)
}

/// The statuses a dataset may be created in, set to by its owner, and listed by.
const CREATE_STATUSES: &str = "draft|active";
const PATCH_STATUSES: &str = "draft|active|paused";
const LIST_STATUSES: &str = "draft|active|paused|suspended|pending_deletion";

/// The query of `GET /v1/datasets`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only datasets in this status.
    #[param(schema_with = list_status)]
    status: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

fn parse_choice<T>(
    fields: &mut Fields,
    name: &str,
    raw: Option<String>,
    parse: impl Fn(&str) -> Option<T>,
    expected: String,
) -> Option<T> {
    let raw = raw?;
    let parsed = parse(&raw);
    if parsed.is_none() {
        fields.fail(name, format!("must be one of {expected}"));
    }
    parsed
}

/// `price_per_result` as a JSON number or string (SPEC §1.6).
fn parse_price(fields: &mut Fields, raw: Option<Value>) -> Option<Price> {
    let parsed = match raw? {
        Value::Number(n) => Price::from_json_number(&n),
        Value::String(s) => Price::parse(&s),
        _ => unreachable!("rejected as a wrong type before"),
    };
    fields.optional("price_per_result", Some(parsed))
}

/// A body's fields, each checked (422 naming every bad one); `creating` requires a name and
/// allows the statuses a dataset may be created in.
fn parse_body(body: DatasetChanges, creating: bool) -> Result<DatasetPatch, AppError> {
    let mut fields = Fields::default();
    let name = match (body.name, creating) {
        (None, true) => fields.check::<DatasetName, String>("name", None),
        (raw, _) => fields.optional("name", raw.map(|n| DatasetName::parse(&n))),
    };
    let statuses = if creating {
        CREATE_STATUSES
    } else {
        PATCH_STATUSES
    };
    let patch = DatasetPatch {
        name,
        description: fields.optional(
            "description",
            body.description.map(|d| Description::parse(&d)),
        ),
        source_modality: parse_choice(
            &mut fields,
            "source_modality",
            body.source_modality,
            SourceModality::parse,
            SourceModality::expected(),
        ),
        monetization_mode: parse_choice(
            &mut fields,
            "monetization_mode",
            body.monetization_mode,
            MonetizationMode::parse,
            MonetizationMode::expected(),
        ),
        pricing_model: parse_choice(
            &mut fields,
            "pricing_model",
            body.pricing_model,
            PricingModel::parse,
            PricingModel::expected(),
        ),
        visibility: parse_choice(
            &mut fields,
            "visibility",
            body.visibility,
            Visibility::parse,
            Visibility::expected(),
        ),
        price_per_result: parse_price(&mut fields, body.price_per_result),
        status: parse_choice(
            &mut fields,
            "status",
            body.status,
            |raw| {
                let allowed = statuses.split('|').any(|s| s == raw);
                DatasetStatus::parse(raw).filter(|_| allowed)
            },
            statuses.to_owned(),
        ),
    };
    fields.finish()?;
    Ok(patch)
}

#[utoipa::path(
    post,
    path = "/datasets",
    summary = "Creates a dataset (datasets:write).",
    request_body = NewDataset,
    responses(
        (status = 201, description = "The new dataset, counters at 0.", body = DatasetRow),
        (status = 422, description = "A field is missing or invalid."),
    )
)]
async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    body: JsonBody,
) -> Result<Envelope<DatasetRow>, AppError> {
    principal.require(Scope::DatasetsWrite)?;
    let parsed = parse_body(body.parse::<NewDataset>()?.into(), true)?;
    let monetization_mode = parsed.monetization_mode.unwrap_or(MonetizationMode::Open);
    let profile = DatasetProfile {
        dataset_id: DatasetId::generate(),
        tenant_id: TenantId::parse(&principal.tenant_id).map_err(AppError::internal)?,
        name: parsed
            .name
            .ok_or_else(|| AppError::field("name", "is required"))?,
        description: parsed.description.unwrap_or_default(),
        source_modality: parsed.source_modality.unwrap_or(SourceModality::Document),
        monetization_mode,
        pricing_model: parsed.pricing_model.unwrap_or(PricingModel::Fixed),
        visibility: parsed.visibility.unwrap_or(Visibility::Private),
        price_per_result: parsed
            .price_per_result
            .unwrap_or(Price::from_micros(monetization_mode.default_price_micros())),
    };
    let id = profile.dataset_id.to_string();
    let status = parsed.status.unwrap_or(DatasetStatus::Active);
    state
        .run::<Dataset>(&id, DatasetCommand::Create { profile, status }, &principal)
        .await?;
    Ok(Envelope::created(written_dataset(&state, &id).await?))
}

#[utoipa::path(
    get,
    path = "/datasets",
    summary = "The caller's tenant's datasets, newest first (datasets:read).",
    params(ListQuery, PageQuery),
    responses(
        (status = 200, description = "A page of datasets, newest first.", body = Page<DatasetRow>),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 422, description = "status or limit is invalid."),
    )
)]
async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Envelope<Page<DatasetRow>>, AppError> {
    principal.require(Scope::DatasetsRead)?;
    let status = filter("status", query.status, LIST_STATUSES)?;
    let scope = format!("datasets?status={}", status.unwrap_or(""));
    let keyset = Keyset::open(&state.key, &query.page, scope)?;
    let rows = read::tenant_datasets(
        &state.store.db,
        &principal.tenant_id,
        status,
        keyset.after(),
        keyset.fetch(),
    )
    .await?;
    Ok(Envelope::ok(keyset.page(
        rows,
        newest_first,
        DatasetRow::from,
    )))
}

/// The keyset of newest-first dataset lists.
fn newest_first(row: &DatasetRow) -> (String, String) {
    (row.created_at.clone(), row.dataset_id.to_string())
}

#[utoipa::path(
    get,
    path = "/datasets/{id}",
    summary = "One of the caller's datasets (datasets:read).",
    params(("id" = String, Path, description = "The dataset's id.", pattern = "^dset_[0-9a-hjkmnp-tv-z]{26}$")),
    responses(
        (status = 200, description = "The dataset.", body = DatasetRow),
        (status = 404, description = "Foreign, unknown or deleted."),
    )
)]
async fn show(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<DatasetRow>, AppError> {
    principal.require(Scope::DatasetsRead)?;
    Ok(Envelope::ok(own_dataset(&state, &principal, &id).await?))
}

#[utoipa::path(
    patch,
    path = "/datasets/{id}",
    summary = "Changes any subset of a dataset's fields; {} changes nothing (datasets:write).",
    params(("id" = String, Path, description = "The dataset's id.", pattern = "^dset_[0-9a-hjkmnp-tv-z]{26}$")),
    request_body = DatasetChanges,
    responses(
        (status = 200, description = "The dataset.", body = DatasetRow),
        (status = 404, description = "Foreign, unknown or deleted."),
        (status = 409, description = "The dataset is suspended or pending_deletion (invalid_state)."),
        (status = 422, description = "A field is invalid."),
    )
)]
async fn update(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Envelope<DatasetRow>, AppError> {
    principal.require(Scope::DatasetsWrite)?;
    let patch = parse_body(body.parse()?, false)?;
    own_dataset(&state, &principal, &id).await?;
    state
        .run::<Dataset>(&id, DatasetCommand::Update(patch), &principal)
        .await?;
    Ok(Envelope::ok(written_dataset(&state, &id).await?))
}

#[utoipa::path(
    delete,
    path = "/datasets/{id}",
    summary = "Starts a dataset's deletion; cleanup runs in the background (datasets:write).",
    params(("id" = String, Path, description = "The dataset's id.", pattern = "^dset_[0-9a-hjkmnp-tv-z]{26}$")),
    responses(
        (status = 200, description = "The dataset, status pending_deletion.", body = DatasetRow),
        (status = 404, description = "Foreign, unknown or deleted."),
        (status = 409, description = "Already pending_deletion (invalid_state)."),
    )
)]
async fn remove(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<DatasetRow>, AppError> {
    principal.require(Scope::DatasetsWrite)?;
    own_dataset(&state, &principal, &id).await?;
    state
        .run::<Dataset>(&id, DatasetCommand::RequestDeletion, &principal)
        .await?;
    // The cleanup job reads the read model: wake it once the deletion is projected.
    let row = written_dataset(&state, &id).await?;
    state.wake_jobs();
    Ok(Envelope::ok(row))
}

/// The body of an entitlement grant.
#[derive(Deserialize, ToSchema)]
#[schema(as = EntitlementGrant)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    /// Another tenant.
    #[schema(required = true, value_type = String)]
    tenant_id: Option<String>,
}

#[utoipa::path(
    post,
    path = "/datasets/{id}/entitlements",
    tag = "entitlements",
    summary = "Entitles a tenant to a restricted dataset (datasets:write).",
    params(("id" = String, Path, description = "The dataset's id.", pattern = "^dset_[0-9a-hjkmnp-tv-z]{26}$")),
    request_body = GrantBody,
    responses(
        (status = 201, description = "The new entitlement.", body = EntitlementRow),
        (status = 200, description = "The existing entitlement.", body = EntitlementRow),
        (status = 404, description = "Unknown dataset or tenant."),
        (status = 409, description = "The dataset is pending_deletion (invalid_state)."),
        (status = 422, description = "tenant_id is missing or the caller's own."),
    )
)]
async fn grant(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Envelope<EntitlementRow>, AppError> {
    principal.require(Scope::DatasetsWrite)?;
    let body: GrantBody = body.parse()?;
    let raw = body
        .tenant_id
        .ok_or_else(|| AppError::field("tenant_id", "is required"))?;
    if raw == principal.tenant_id {
        return Err(AppError::field("tenant_id", "must be another tenant"));
    }
    own_dataset(&state, &principal, &id).await?;
    let tenant = TenantId::parse(&raw).map_err(|_| AppError::NotFound)?;
    projections::accounts::tenant_name(&state.store.db, tenant.as_str())
        .await?
        .ok_or(AppError::NotFound)?;
    let committed = state
        .run::<Dataset>(
            &id,
            DatasetCommand::GrantEntitlement {
                tenant_id: tenant.clone(),
            },
            &principal,
        )
        .await?;
    state.store.settle_request().await;
    let rows = read::entitlements(&state.store.db, &id, None, 1000).await?;
    let row = rows
        .into_iter()
        .find(|r| r.tenant_id == tenant)
        .ok_or_else(|| AppError::internal("entitlement missing from read model"))?;
    Ok(if committed.events.is_empty() {
        Envelope::ok(row)
    } else {
        Envelope::created(row)
    })
}

#[utoipa::path(
    get,
    path = "/datasets/{id}/entitlements",
    tag = "entitlements",
    summary = "A dataset's entitlements, newest first (datasets:read).",
    params(("id" = String, Path, description = "The dataset's id.", pattern = "^dset_[0-9a-hjkmnp-tv-z]{26}$"), PageQuery),
    responses(
        (status = 200, description = "A page of entitlements, newest first.", body = Page<EntitlementRow>),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 404, description = "Foreign, unknown or deleted dataset."),
        (status = 422, description = "limit is invalid."),
    )
)]
async fn list_entitlements(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Envelope<Page<EntitlementRow>>, AppError> {
    principal.require(Scope::DatasetsRead)?;
    own_dataset(&state, &principal, &id).await?;
    let keyset = Keyset::open(&state.key, &query, format!("entitlements?dataset={id}"))?;
    let rows = read::entitlements(&state.store.db, &id, keyset.after(), keyset.fetch()).await?;
    let sort_key = |r: &EntitlementRow| (r.created_at.clone(), r.tenant_id.to_string());
    Ok(Envelope::ok(keyset.page(
        rows,
        sort_key,
        EntitlementRow::from,
    )))
}

#[utoipa::path(
    delete,
    path = "/datasets/{id}/entitlements/{tenant_id}",
    tag = "entitlements",
    summary = "Ends a tenant's entitlement (datasets:write).",
    params(
        ("id" = String, Path, description = "The dataset's id.", pattern = "^dset_[0-9a-hjkmnp-tv-z]{26}$"),
        ("tenant_id" = String, Path, description = "The entitled tenant."),
    ),
    responses(
        (status = 200, description = "Revoked.", body = EntitlementRevoked),
        (status = 404, description = "Unknown dataset, tenant or entitlement."),
    )
)]
async fn revoke(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((id, tenant_id)): Path<(String, String)>,
) -> Result<Envelope<EntitlementRevoked>, AppError> {
    principal.require(Scope::DatasetsWrite)?;
    own_dataset(&state, &principal, &id).await?;
    let tenant = TenantId::parse(&tenant_id).map_err(|_| AppError::NotFound)?;
    state
        .run::<Dataset>(
            &id,
            DatasetCommand::RevokeEntitlement { tenant_id: tenant },
            &principal,
        )
        .await?;
    Ok(Envelope::ok(EntitlementRevoked {
        dataset_id: id,
        tenant_id,
        revoked: true,
    }))
}

/// The query of the catalog.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CatalogQuery {
    /// A case-insensitive substring of the name or description; at most 200 characters.
    #[param(max_length = 200)]
    q: Option<String>,
    #[param(ignore)]
    #[serde(flatten)]
    page: PageQuery,
}

#[utoipa::path(
    get,
    path = "/catalog/datasets",
    tag = "catalog",
    summary = "Active listed and restricted datasets of all tenants, newest first (datasets:read).",
    params(CatalogQuery, PageQuery),
    responses(
        (status = 200, description = "A page of the catalog, newest first.", body = Page<CatalogDataset>),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 422, description = "q or limit is invalid."),
    )
)]
async fn catalog(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<CatalogQuery>,
) -> Result<Envelope<Page<CatalogDataset>>, AppError> {
    principal.require(Scope::DatasetsRead)?;
    let q = query
        .q
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty());
    if q.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(AppError::field("q", "must be at most 200 characters"));
    }
    let keyset = Keyset::open(
        &state.key,
        &query.page,
        format!("catalog?q={}", q.as_deref().unwrap_or("")),
    )?;
    let rows = read::catalog(
        &state.store.db,
        &principal.tenant_id,
        q.as_deref(),
        keyset.after(),
        keyset.fetch(),
    )
    .await?;
    let sort_key = |r: &CatalogRow| newest_first(&r.dataset);
    Ok(Envelope::ok(keyset.page(
        rows,
        sort_key,
        CatalogDataset::from,
    )))
}
