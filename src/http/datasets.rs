//! Datasets, entitlements and the catalog (SPEC §3.3, §3.10, §3.11).

use crate::http::routes::Routes;
use aggregates::dataset::{
    DatasetCommand, DatasetName, DatasetPatch, DatasetProfile, DatasetStatus, Description,
    MonetizationMode, PricingModel, SourceModality, Visibility,
};
use aggregates::money::json_number;
use aggregates::{Dataset, DatasetId, Price, Scope, TenantId};
use axum::extract::State;
use axum::response::Response;
use axum::routing::{delete, get};
use projections::datasets::{self as read, DatasetRow};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::app::AppState;
use crate::auth::Principal;
use crate::http::envelope;
use crate::http::error::AppError;
use crate::http::extract::{Auth, Path, Query};
use crate::http::json::{Fields, JsonBody};
use crate::http::openapi;
use crate::http::pagination::{self, PageQuery};

/// Routes under `/v1`.
pub fn routes() -> Routes {
    Routes::new()
        .route("/datasets", get(list).post(create))
        .route("/datasets/{id}", get(show).patch(update).delete(remove))
        .route(
            "/datasets/{id}/entitlements",
            get(list_entitlements).post(grant),
        )
        .route("/datasets/{id}/entitlements/{tenant_id}", delete(revoke))
        .route("/catalog/datasets", get(catalog))
}

/// The operations of this module, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(
    create,
    list,
    show,
    update,
    remove,
    grant,
    list_entitlements,
    revoke,
    catalog
))]
pub struct Api;

/// A dataset (SPEC §3.3).
#[derive(ToSchema)]
#[schema(as = Dataset)]
pub struct DatasetView {
    /// The dataset's id.
    pub dataset_id: String,
    /// The owner tenant.
    pub tenant_id: String,
    /// 1..=200 characters.
    pub name: String,
    /// At most 5000 characters.
    pub description: String,
    /// What it holds.
    #[schema(schema_with = modality)]
    pub source_modality: String,
    /// How it earns.
    #[schema(schema_with = monetization)]
    pub monetization_mode: String,
    /// How the unit price is derived.
    #[schema(schema_with = pricing)]
    pub pricing_model: String,
    /// Who may find and use it.
    #[schema(schema_with = visibility)]
    pub visibility: String,
    /// Its lifecycle state (SPEC §4.2).
    #[schema(schema_with = status)]
    pub status: String,
    /// The price per billable result.
    #[schema(schema_with = openapi::amount)]
    pub price_per_result: f64,
    /// Always `USD`.
    #[schema(pattern = "^USD$")]
    pub currency: String,
    /// Confirmed, not deleted objects.
    #[schema(minimum = 0)]
    pub object_count: i64,
    /// Approved objects.
    #[schema(minimum = 0)]
    pub active_object_count: i64,
    /// Total size of the objects in `object_count`.
    #[schema(minimum = 0)]
    pub storage_bytes: i64,
    /// When it was created.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it last changed.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A page of datasets.
#[derive(ToSchema)]
pub struct DatasetPage {
    /// The datasets, newest first.
    pub items: Vec<DatasetView>,
    /// The next page's cursor, null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A dataset in the catalog (SPEC §3.10).
#[derive(ToSchema)]
pub struct CatalogDataset {
    /// The dataset's id.
    pub dataset_id: String,
    /// The owner tenant.
    pub tenant_id: String,
    /// The owner tenant's name.
    pub tenant_name: String,
    /// The name.
    pub name: String,
    /// The description.
    pub description: String,
    /// What it holds.
    #[schema(schema_with = modality)]
    pub source_modality: String,
    /// How it earns.
    #[schema(schema_with = monetization)]
    pub monetization_mode: String,
    /// How the unit price is derived.
    #[schema(schema_with = pricing)]
    pub pricing_model: String,
    /// `listed` or `restricted`.
    #[schema(schema_with = visibility)]
    pub visibility: String,
    /// The price per billable result.
    #[schema(schema_with = openapi::amount)]
    pub price_per_result: f64,
    /// Always `USD`.
    #[schema(pattern = "^USD$")]
    pub currency: String,
    /// Approved objects.
    #[schema(minimum = 0)]
    pub active_object_count: i64,
    /// Whether the caller's tenant may search and download it (SPEC §2.8).
    pub accessible: bool,
    /// When it was created.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it last changed.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A page of the catalog.
#[derive(ToSchema)]
pub struct CatalogPage {
    /// The datasets, newest first.
    pub items: Vec<CatalogDataset>,
    /// The next page's cursor, null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// An entitlement of a tenant to a restricted dataset (SPEC §3.11).
#[derive(ToSchema)]
pub struct Entitlement {
    /// The dataset.
    pub dataset_id: String,
    /// The entitled tenant.
    pub tenant_id: String,
    /// The entitled tenant's name.
    pub tenant_name: String,
    /// When it was granted.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A page of entitlements.
#[derive(ToSchema)]
pub struct EntitlementPage {
    /// The entitlements, newest first.
    pub items: Vec<Entitlement>,
    /// The next page's cursor, null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A revoked entitlement.
#[derive(ToSchema)]
pub struct EntitlementRevoked {
    /// The dataset.
    pub dataset_id: String,
    /// The tenant whose entitlement ended.
    pub tenant_id: String,
    /// Always true.
    pub revoked: bool,
}

/// The body of `POST /v1/datasets`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDataset {
    /// Trimmed, 1..=200 characters; need not be unique.
    #[schema(schema_with = name)]
    pub name: String,
    /// At most 5000 characters (default empty).
    #[schema(max_length = 5000)]
    pub description: Option<String>,
    /// Default `document`.
    #[schema(schema_with = optional_modality)]
    pub source_modality: Option<String>,
    /// Default `open`.
    #[schema(schema_with = optional_monetization)]
    pub monetization_mode: Option<String>,
    /// Default `fixed`.
    #[schema(schema_with = optional_pricing)]
    pub pricing_model: Option<String>,
    /// Default `private`.
    #[schema(schema_with = optional_visibility)]
    pub visibility: Option<String>,
    /// Default by monetization mode: open 0.01, premium 0.05, outcome_share 0.005.
    #[schema(schema_with = price_input)]
    pub price_per_result: Option<String>,
    /// `draft` or `active` (default `active`).
    #[schema(schema_with = create_status)]
    pub status: Option<String>,
}

/// The body of `PATCH /v1/datasets/{id}`: any subset of the fields.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetChanges {
    /// Trimmed, 1..=200 characters.
    #[schema(schema_with = optional_name)]
    pub name: Option<String>,
    /// At most 5000 characters.
    #[schema(max_length = 5000)]
    pub description: Option<String>,
    /// What it holds.
    #[schema(schema_with = optional_modality)]
    pub source_modality: Option<String>,
    /// How it earns; the price stays unless sent too.
    #[schema(schema_with = optional_monetization)]
    pub monetization_mode: Option<String>,
    /// How the unit price is derived.
    #[schema(schema_with = optional_pricing)]
    pub pricing_model: Option<String>,
    /// Who may find and use it.
    #[schema(schema_with = optional_visibility)]
    pub visibility: Option<String>,
    /// The price per billable result.
    #[schema(schema_with = price_input)]
    pub price_per_result: Option<String>,
    /// `draft`, `active` or `paused`.
    #[schema(schema_with = patch_status)]
    pub status: Option<String>,
}

fn name() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::trimmed(200, false)
}
fn optional_name() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::trimmed(200, true)
}
fn modality() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice(&SourceModality::expected())
}
fn monetization() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice(&MonetizationMode::expected())
}
fn pricing() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice(&PricingModel::expected())
}
fn visibility() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice(&Visibility::expected())
}
fn status() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice(&DatasetStatus::expected())
}
fn optional_modality() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::optional_choice(&SourceModality::expected())
}
fn optional_monetization() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::optional_choice(&MonetizationMode::expected())
}
fn optional_pricing() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::optional_choice(&PricingModel::expected())
}
fn optional_visibility() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::optional_choice(&Visibility::expected())
}
fn create_status() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::optional_choice("draft|active")
}
fn patch_status() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::optional_choice("draft|active|paused")
}
/// `price_per_result` (SPEC §1.6): a number, or a string `^\d+(\.\d{1,6})?$`; at most 1,000,000.
fn price_input() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::schema(json!({ "oneOf": [
        { "type": "null" },
        { "type": "number", "minimum": 0, "maximum": 1_000_000, "multipleOf": 0.000001 },
        { "type": "string", "pattern": "^(0*\\d{1,6}(\\.\\d{1,6})?|0*1000000(\\.0{1,6})?)$" },
    ] }))
}

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

fn list_status() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice("draft|active|paused|suspended|pending_deletion")
}

/// The SPEC's Dataset object.
pub fn dataset_json(row: &DatasetRow) -> Value {
    json!({
        "dataset_id": row.dataset_id,
        "tenant_id": row.tenant_id,
        "name": row.name,
        "description": row.description,
        "source_modality": row.source_modality,
        "monetization_mode": row.monetization_mode,
        "pricing_model": row.pricing_model,
        "visibility": row.visibility,
        "status": row.status,
        "price_per_result": json_number(row.price_micros),
        "currency": "USD",
        "object_count": row.object_count,
        "active_object_count": row.active_object_count,
        "storage_bytes": row.storage_bytes,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

/// The caller's own dataset, not deleted; anything else (foreign, unknown, malformed id) is 404.
pub async fn own_dataset(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<DatasetRow, AppError> {
    DatasetId::parse(id).map_err(|_| AppError::NotFound)?;
    match read::dataset(&state.store.db, id).await? {
        Some(row) if row.tenant_id == principal.tenant_id && row.status != "deleted" => Ok(row),
        _ => Err(AppError::NotFound),
    }
}

async fn reload(state: &AppState, id: &str) -> Result<DatasetRow, AppError> {
    state.store.settle_request().await;
    read::dataset(&state.store.db, id)
        .await?
        .ok_or_else(|| AppError::internal("dataset missing from read model"))
}

fn parse_choice<T>(
    fields: &mut Fields,
    name: &str,
    raw: Option<String>,
    parse: fn(&str) -> Option<T>,
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

/// A number or a string, else the wrong JSON type (400).
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    match value {
        None | Some(Value::Number(_)) | Some(Value::String(_)) => Ok(value),
        Some(_) => Err(serde::de::Error::custom(
            "invalid type: expected a number or a string",
        )),
    }
}

#[derive(Deserialize)]
struct DatasetBody {
    name: Option<String>,
    description: Option<String>,
    source_modality: Option<String>,
    monetization_mode: Option<String>,
    pricing_model: Option<String>,
    visibility: Option<String>,
    #[serde(default, deserialize_with = "number_or_string")]
    price_per_result: Option<Value>,
    status: Option<String>,
}

struct Parsed {
    name: Option<DatasetName>,
    description: Option<Description>,
    source_modality: Option<SourceModality>,
    monetization_mode: Option<MonetizationMode>,
    pricing_model: Option<PricingModel>,
    visibility: Option<Visibility>,
    price: Option<Price>,
    status: Option<DatasetStatus>,
}

fn parse_body(body: DatasetBody, creating: bool) -> Result<Parsed, AppError> {
    let mut fields = Fields::default();
    let name = match (body.name, creating) {
        (None, true) => fields.check::<DatasetName, String>("name", None),
        (raw, _) => fields.optional("name", raw.map(|n| DatasetName::parse(&n))),
    };
    let parsed = Parsed {
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
        price: parse_price(&mut fields, body.price_per_result),
        status: body.status.and_then(|raw| {
            let allowed: &[&str] = if creating {
                &["draft", "active"]
            } else {
                &["draft", "active", "paused"]
            };
            if allowed.contains(&raw.as_str()) {
                DatasetStatus::parse(&raw)
            } else {
                fields.fail("status", format!("must be one of {}", allowed.join("|")));
                None
            }
        }),
    };
    fields.finish()?;
    Ok(parsed)
}

#[utoipa::path(
    post,
    path = "/v1/datasets",
    tag = "datasets",
    summary = "Creates a dataset (datasets:write).",
    security(("session" = []), ("api_key" = [])),
    request_body = NewDataset,
    responses(
        (status = 201, description = "The new dataset, counters at 0.", body = DatasetView),
        (status = 422, description = "A field is missing or invalid."),
    )
)]
async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    body: JsonBody,
) -> Result<Response, AppError> {
    principal.require(Scope::DatasetsWrite)?;
    let parsed = parse_body(body.parse()?, true)?;
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
            .price
            .unwrap_or(Price::from_micros(monetization_mode.default_price_micros())),
    };
    let id = profile.dataset_id.to_string();
    let status = parsed.status.unwrap_or(DatasetStatus::Active);
    state
        .store
        .execute::<Dataset>(
            &id,
            DatasetCommand::Create { profile, status },
            &(),
            &principal.actor(),
        )
        .await?;
    Ok(envelope::created(dataset_json(&reload(&state, &id).await?)))
}

#[utoipa::path(
    get,
    path = "/v1/datasets",
    tag = "datasets",
    summary = "The caller's tenant's datasets, newest first (datasets:read).",
    security(("session" = []), ("api_key" = [])),
    params(ListQuery, PageQuery),
    responses(
        (status = 200, description = "A page of datasets.", body = DatasetPage),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 422, description = "status or limit is invalid."),
    )
)]
async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Response, AppError> {
    principal.require(Scope::DatasetsRead)?;
    let status = query.status.filter(|s| !s.is_empty());
    if let Some(status) = &status {
        if !["draft", "active", "paused", "suspended", "pending_deletion"]
            .contains(&status.as_str())
        {
            return Err(AppError::field(
                "status",
                "must be one of draft|active|paused|suspended|pending_deletion",
            ));
        }
    }
    let scope = format!("datasets?status={}", status.as_deref().unwrap_or(""));
    let page = query.page.page(&state.key, &scope, 20, 100)?;
    let after = page.after.as_ref().map(sort_key).transpose()?;
    let rows = read::tenant_datasets(
        &state.store.db,
        &principal.tenant_id,
        status.as_deref(),
        after,
        page.limit,
    )
    .await?;
    let (rows, next) = pagination::finish(rows, &page, &state.key, &scope, |r| {
        json!([r.created_at, r.dataset_id])
    });
    let items: Vec<Value> = rows.iter().map(dataset_json).collect();
    Ok(envelope::ok(json!({ "items": items, "next_cursor": next })))
}

/// A `[created_at, id]` sort key from an opened cursor.
pub fn sort_key(value: &Value) -> Result<(String, String), AppError> {
    match value.as_array().map(|a| a.as_slice()) {
        Some([Value::String(at), Value::String(id)]) => Ok((at.clone(), id.clone())),
        _ => Err(AppError::InvalidCursor),
    }
}

#[utoipa::path(
    get,
    path = "/v1/datasets/{id}",
    tag = "datasets",
    summary = "One of the caller's datasets (datasets:read).",
    security(("session" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "The dataset's id.", pattern = "^dset_[0-9a-hjkmnp-tv-z]{26}$")),
    responses(
        (status = 200, description = "The dataset.", body = DatasetView),
        (status = 404, description = "Foreign, unknown or deleted."),
    )
)]
async fn show(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    principal.require(Scope::DatasetsRead)?;
    Ok(envelope::ok(dataset_json(
        &own_dataset(&state, &principal, &id).await?,
    )))
}

#[utoipa::path(
    patch,
    path = "/v1/datasets/{id}",
    tag = "datasets",
    summary = "Changes any subset of a dataset's fields; {} changes nothing (datasets:write).",
    security(("session" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "The dataset's id.", pattern = "^dset_[0-9a-hjkmnp-tv-z]{26}$")),
    request_body = DatasetChanges,
    responses(
        (status = 200, description = "The dataset.", body = DatasetView),
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
) -> Result<Response, AppError> {
    principal.require(Scope::DatasetsWrite)?;
    let parsed = parse_body(body.parse()?, false)?;
    own_dataset(&state, &principal, &id).await?;
    let patch = DatasetPatch {
        name: parsed.name,
        description: parsed.description,
        source_modality: parsed.source_modality,
        monetization_mode: parsed.monetization_mode,
        pricing_model: parsed.pricing_model,
        visibility: parsed.visibility,
        price_per_result: parsed.price,
        status: parsed.status,
    };
    state
        .store
        .execute::<Dataset>(&id, DatasetCommand::Update(patch), &(), &principal.actor())
        .await?;
    Ok(envelope::ok(dataset_json(&reload(&state, &id).await?)))
}

#[utoipa::path(
    delete,
    path = "/v1/datasets/{id}",
    tag = "datasets",
    summary = "Starts a dataset's deletion; cleanup runs in the background (datasets:write).",
    security(("session" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "The dataset's id.", pattern = "^dset_[0-9a-hjkmnp-tv-z]{26}$")),
    responses(
        (status = 200, description = "The dataset, status pending_deletion.", body = DatasetView),
        (status = 404, description = "Foreign, unknown or deleted."),
        (status = 409, description = "Already pending_deletion (invalid_state)."),
    )
)]
async fn remove(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    principal.require(Scope::DatasetsWrite)?;
    own_dataset(&state, &principal, &id).await?;
    state
        .store
        .execute::<Dataset>(
            &id,
            DatasetCommand::RequestDeletion,
            &(),
            &principal.actor(),
        )
        .await?;
    // The cleanup job reads the read model: wake it once the deletion is projected.
    let row = reload(&state, &id).await?;
    crate::jobs::wake(&state);
    Ok(envelope::ok(dataset_json(&row)))
}

fn entitlement_json(row: &read::EntitlementRow) -> Value {
    json!({
        "dataset_id": row.dataset_id,
        "tenant_id": row.tenant_id,
        "tenant_name": row.tenant_name,
        "created_at": row.created_at,
    })
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
    path = "/v1/datasets/{id}/entitlements",
    tag = "entitlements",
    summary = "Entitles a tenant to a restricted dataset (datasets:write).",
    security(("session" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "The dataset's id.", pattern = "^dset_[0-9a-hjkmnp-tv-z]{26}$")),
    request_body = GrantBody,
    responses(
        (status = 201, description = "The new entitlement.", body = Entitlement),
        (status = 200, description = "The existing entitlement.", body = Entitlement),
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
) -> Result<Response, AppError> {
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
        .store
        .execute::<Dataset>(
            &id,
            DatasetCommand::GrantEntitlement {
                tenant_id: tenant.clone(),
            },
            &(),
            &principal.actor(),
        )
        .await?;
    state.store.settle_request().await;
    let rows = read::entitlements(&state.store.db, &id, None, 1000).await?;
    let row = rows
        .iter()
        .find(|r| r.tenant_id == tenant.as_str())
        .ok_or_else(|| AppError::internal("entitlement missing from read model"))?;
    Ok(if committed.events.is_empty() {
        envelope::ok(entitlement_json(row))
    } else {
        envelope::created(entitlement_json(row))
    })
}

#[utoipa::path(
    get,
    path = "/v1/datasets/{id}/entitlements",
    tag = "entitlements",
    summary = "A dataset's entitlements, newest first (datasets:read).",
    security(("session" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "The dataset's id.", pattern = "^dset_[0-9a-hjkmnp-tv-z]{26}$"), PageQuery),
    responses(
        (status = 200, description = "A page of entitlements.", body = EntitlementPage),
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
) -> Result<Response, AppError> {
    principal.require(Scope::DatasetsRead)?;
    own_dataset(&state, &principal, &id).await?;
    let scope = format!("entitlements?dataset={id}");
    let page = query.page(&state.key, &scope, 20, 100)?;
    let after = page.after.as_ref().map(sort_key).transpose()?;
    let rows = read::entitlements(&state.store.db, &id, after, page.limit).await?;
    let (rows, next) = pagination::finish(rows, &page, &state.key, &scope, |r| {
        json!([r.created_at, r.tenant_id])
    });
    let items: Vec<Value> = rows.iter().map(entitlement_json).collect();
    Ok(envelope::ok(json!({ "items": items, "next_cursor": next })))
}

#[utoipa::path(
    delete,
    path = "/v1/datasets/{id}/entitlements/{tenant_id}",
    tag = "entitlements",
    summary = "Ends a tenant's entitlement (datasets:write).",
    security(("session" = []), ("api_key" = [])),
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
) -> Result<Response, AppError> {
    principal.require(Scope::DatasetsWrite)?;
    own_dataset(&state, &principal, &id).await?;
    let tenant = TenantId::parse(&tenant_id).map_err(|_| AppError::NotFound)?;
    state
        .store
        .execute::<Dataset>(
            &id,
            DatasetCommand::RevokeEntitlement { tenant_id: tenant },
            &(),
            &principal.actor(),
        )
        .await?;
    Ok(envelope::ok(
        json!({ "dataset_id": id, "tenant_id": tenant_id, "revoked": true }),
    ))
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
    path = "/v1/catalog/datasets",
    tag = "catalog",
    summary = "Active listed and restricted datasets of all tenants, newest first (datasets:read).",
    security(("session" = []), ("api_key" = [])),
    params(CatalogQuery, PageQuery),
    responses(
        (status = 200, description = "A page of the catalog.", body = CatalogPage),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 422, description = "q or limit is invalid."),
    )
)]
async fn catalog(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<CatalogQuery>,
) -> Result<Response, AppError> {
    principal.require(Scope::DatasetsRead)?;
    let q = query
        .q
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty());
    if q.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(AppError::field("q", "must be at most 200 characters"));
    }
    let scope = format!("catalog?q={}", q.as_deref().unwrap_or(""));
    let page = query.page.page(&state.key, &scope, 20, 100)?;
    let after = page.after.as_ref().map(sort_key).transpose()?;
    let rows = read::catalog(
        &state.store.db,
        &principal.tenant_id,
        q.as_deref(),
        after,
        page.limit,
    )
    .await?;
    let (rows, next) = pagination::finish(rows, &page, &state.key, &scope, |r| {
        json!([r.dataset.created_at, r.dataset.dataset_id])
    });
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            let d = &r.dataset;
            json!({
                "dataset_id": d.dataset_id, "tenant_id": d.tenant_id, "tenant_name": r.tenant_name,
                "name": d.name, "description": d.description, "source_modality": d.source_modality,
                "monetization_mode": d.monetization_mode, "pricing_model": d.pricing_model,
                "visibility": d.visibility, "price_per_result": json_number(d.price_micros), "currency": "USD",
                "active_object_count": d.active_object_count, "accessible": r.accessible,
                "created_at": d.created_at, "updated_at": d.updated_at,
            })
        })
        .collect();
    Ok(envelope::ok(json!({ "items": items, "next_cursor": next })))
}
