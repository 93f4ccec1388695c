//! Datasets, entitlements and the catalog (SPEC §3.3, §3.10, §3.11).

use aggregates::dataset::{
    DatasetCommand, DatasetName, DatasetPatch, DatasetProfile, DatasetStatus, Description,
    MonetizationMode, PricingModel, SourceModality, Visibility,
};
use aggregates::money::json_number;
use aggregates::{Dataset, DatasetId, Price, Scope, TenantId};
use axum::extract::State;
use axum::response::Response;
use axum::routing::{delete, get};
use axum::Router;
use projections::datasets::{self as read, DatasetRow};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Principal;
use crate::http::envelope;
use crate::http::error::AppError;
use crate::http::extract::{Auth, Path, Query};
use crate::http::json::{Fields, JsonBody};
use crate::http::pagination::{self, PageQuery};

/// Routes under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/datasets", get(list).post(create))
        .route("/datasets/{id}", get(show).patch(update).delete(remove))
        .route(
            "/datasets/{id}/entitlements",
            get(list_entitlements).post(grant),
        )
        .route("/datasets/{id}/entitlements/{tenant_id}", delete(revoke))
        .route("/catalog/datasets", get(catalog))
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

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

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

#[derive(Deserialize)]
struct GrantBody {
    tenant_id: Option<String>,
}

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

#[derive(Deserialize)]
struct CatalogQuery {
    q: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

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
