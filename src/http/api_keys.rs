//! API keys and their dataset grants (SPEC §3.6).

use crate::http::routes::Routes;
use aggregates::api_key::{AccessMode, ApiKeyCommand, IssuingKey, KeyProfile};
use aggregates::money::{json_number, Amount, MICROS};
use aggregates::spend::MAX_SPEND_LIMIT_MICROS;
use aggregates::{ApiKey, ApiKeyId, DatasetId, GrantId, Scope, TenantId};
use axum::extract::State;
use axum::response::Response;
use axum::routing::{delete, get, post};
use projections::api_keys::{self as read, ApiKeyRow, GrantRow};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{OpenApi, ToSchema};

use crate::app::AppState;
use crate::auth::{new_api_key, ApiKeys, Principal, PrincipalKind};
use crate::http::datasets::sort_key;
use crate::http::envelope;
use crate::http::error::AppError;
use crate::http::extract::{Auth, Path, Query};
use crate::http::json::{number_or_string, Fields, JsonBody};
use crate::http::openapi;
use crate::http::pagination::{self, PageQuery};

/// Routes under `/v1`.
pub fn routes() -> Routes {
    Routes::new()
        .route("/api-keys", get(list).post(create))
        .route("/api-keys/{id}", get(show).delete(revoke))
        .route("/api-keys/{id}/grants", post(grant))
        .route("/api-keys/{id}/grants/{grant_id}", delete(remove_grant))
}

/// The operations of this module, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(create, list, show, revoke, grant, remove_grant))]
pub struct Api;

/// An API key, without its secret (SPEC §3.6).
#[derive(ToSchema)]
#[schema(as = ApiKey)]
pub struct ApiKeyView {
    /// The key's id (not the secret).
    pub api_key_id: String,
    /// Its name.
    pub name: String,
    /// The public 8-character prefix.
    #[schema(pattern = "^[a-z0-9]{8}$")]
    pub key_prefix: String,
    /// Its scopes, in canonical order.
    #[schema(schema_with = scope_list)]
    pub scopes: Vec<String>,
    /// Which datasets it may search and download.
    #[schema(schema_with = access_mode)]
    pub dataset_access_mode: String,
    /// `active`, `revoked` or `expired`.
    #[schema(schema_with = key_status)]
    pub status: String,
    /// When it was created.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it expires, null for never.
    #[schema(required = true, format = DateTime)]
    pub expires_at: Option<String>,
    /// When it was last used (refreshed at most every 60 s).
    #[schema(required = true, format = DateTime)]
    pub last_used_at: Option<String>,
    /// When it was revoked.
    #[schema(required = true, format = DateTime)]
    pub revoked_at: Option<String>,
    /// The most it may be charged per UTC month (USD), null for no limit.
    #[schema(required = true, schema_with = openapi::optional_amount)]
    pub spend_limit: Option<f64>,
}

/// A new API key with its secret, shown only here.
#[derive(ToSchema)]
pub struct NewApiKey {
    /// The key's id (not the secret).
    pub api_key_id: String,
    /// Its name.
    pub name: String,
    /// The public 8-character prefix.
    #[schema(pattern = "^[a-z0-9]{8}$")]
    pub key_prefix: String,
    /// Its scopes, in canonical order.
    #[schema(schema_with = scope_list)]
    pub scopes: Vec<String>,
    /// Which datasets it may search and download.
    #[schema(schema_with = access_mode)]
    pub dataset_access_mode: String,
    /// `active`.
    #[schema(schema_with = key_status)]
    pub status: String,
    /// When it was created.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it expires, null for never.
    #[schema(required = true, format = DateTime)]
    pub expires_at: Option<String>,
    /// Null.
    #[schema(required = true, format = DateTime)]
    pub last_used_at: Option<String>,
    /// Null.
    #[schema(required = true, format = DateTime)]
    pub revoked_at: Option<String>,
    /// The most it may be charged per UTC month (USD), null for no limit.
    #[schema(required = true, schema_with = openapi::optional_amount)]
    pub spend_limit: Option<f64>,
    /// The full key `ipto_{prefix}_{secret}`; `null` in an idempotent replay (the secret is
    /// never stored).
    #[schema(required = true, pattern = "^ipto_[a-z0-9]{8}_[0-9A-Za-z]{40}$")]
    pub key: Option<String>,
    /// The same full key; `null` in an idempotent replay.
    #[schema(required = true, pattern = "^ipto_[a-z0-9]{8}_[0-9A-Za-z]{40}$")]
    pub secret: Option<String>,
}

/// An API key with its grants.
#[derive(ToSchema)]
pub struct ApiKeyDetail {
    /// The key's id (not the secret).
    pub api_key_id: String,
    /// Its name.
    pub name: String,
    /// The public 8-character prefix.
    #[schema(pattern = "^[a-z0-9]{8}$")]
    pub key_prefix: String,
    /// Its scopes, in canonical order.
    #[schema(schema_with = scope_list)]
    pub scopes: Vec<String>,
    /// Which datasets it may search and download.
    #[schema(schema_with = access_mode)]
    pub dataset_access_mode: String,
    /// `active`, `revoked` or `expired`.
    #[schema(schema_with = key_status)]
    pub status: String,
    /// When it was created.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it expires, null for never.
    #[schema(required = true, format = DateTime)]
    pub expires_at: Option<String>,
    /// When it was last used.
    #[schema(required = true, format = DateTime)]
    pub last_used_at: Option<String>,
    /// When it was revoked.
    #[schema(required = true, format = DateTime)]
    pub revoked_at: Option<String>,
    /// The most it may be charged per UTC month (USD), null for no limit.
    #[schema(required = true, schema_with = openapi::optional_amount)]
    pub spend_limit: Option<f64>,
    /// Its grants, oldest first.
    pub grants: Vec<Grant>,
}

/// A page of API keys.
#[derive(ToSchema)]
pub struct ApiKeyPage {
    /// The keys, newest first, revoked ones included.
    pub items: Vec<ApiKeyView>,
    /// The next page's cursor, null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A dataset granted to an `allow_list` key.
#[derive(ToSchema)]
pub struct Grant {
    /// The grant's id.
    pub grant_id: String,
    /// The key.
    pub api_key_id: String,
    /// The dataset.
    pub dataset_id: String,
    /// When it was granted.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A removed grant.
#[derive(ToSchema)]
pub struct GrantDeleted {
    /// The grant's id.
    pub grant_id: String,
    /// The key.
    pub api_key_id: String,
    /// The dataset it granted.
    #[schema(required = true)]
    pub dataset_id: Option<String>,
    /// Always true.
    pub deleted: bool,
}

fn scope_list() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let scopes: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    openapi::schema(json!({ "type": "array", "items": { "type": "string", "enum": scopes } }))
}

/// A new key's scopes: known, not `admin:*`, at least one (duplicates collapse).
fn new_scope_list() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let scopes: Vec<&str> = Scope::ALL
        .iter()
        .filter(|s| **s != Scope::Admin)
        .map(|s| s.as_str())
        .collect();
    openapi::schema(json!({ "type": "array", "minItems": 1,
        "items": { "type": "string", "enum": scopes } }))
}

fn access_mode() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice(&AccessMode::expected())
}

fn optional_access_mode() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::optional_choice(&AccessMode::expected())
}

fn key_status() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice("active|revoked|expired")
}

fn key_name() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::trimmed(100, false)
}

fn key_json(row: &ApiKeyRow, now: &str) -> Value {
    let scopes: Vec<&str> = row.scopes.iter().map(|s| s.as_str()).collect();
    json!({
        "api_key_id": row.api_key_id,
        "name": row.name,
        "key_prefix": row.key_prefix,
        "scopes": scopes,
        "dataset_access_mode": row.dataset_access_mode,
        "status": row.status(now),
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "last_used_at": row.last_used_at,
        "revoked_at": row.revoked_at,
        "spend_limit": row.spend_limit_micros.map(json_number),
    })
}

fn grant_json(row: &GrantRow) -> Value {
    json!({ "grant_id": row.grant_id, "api_key_id": row.api_key_id, "dataset_id": row.dataset_id, "created_at": row.created_at })
}

fn now_text(state: &AppState) -> String {
    aggregates::timestamp::format(state.store.clock.now())
}

/// Reading keys needs `keys:write` or `usage:read`.
fn require_read(principal: &Principal) -> Result<(), AppError> {
    if principal.scopes.contains(&Scope::KeysWrite) {
        Ok(())
    } else {
        principal.require(Scope::UsageRead)
    }
}

/// The caller's tenant's key; anything else is 404.
async fn own_key(state: &AppState, principal: &Principal, id: &str) -> Result<ApiKeyRow, AppError> {
    ApiKeyId::parse(id).map_err(|_| AppError::NotFound)?;
    match read::key(&state.store.db, id).await? {
        Some(row) if row.tenant_id == principal.tenant_id => Ok(row),
        _ => Err(AppError::NotFound),
    }
}

async fn reload(state: &AppState, id: &str) -> Result<ApiKeyRow, AppError> {
    state.store.settle_request().await;
    read::key(&state.store.db, id)
        .await?
        .ok_or_else(|| AppError::internal("api key missing from read model"))
}

/// A new key's body.
#[derive(Deserialize, ToSchema)]
#[schema(as = KeyRequest)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// Trimmed, 1..=100 characters.
    #[schema(required = true, schema_with = key_name)]
    name: Option<String>,
    /// Known scopes other than `admin:*`, each held by the caller (else 403).
    #[schema(required = true, schema_with = new_scope_list)]
    scopes: Option<Vec<String>>,
    /// Default `all_available`.
    #[schema(schema_with = optional_access_mode)]
    dataset_access_mode: Option<String>,
    /// RFC 3339, in the future; null for never.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// The most the key may be charged per UTC month, in USD (0..=1000000000000, at most 6
    /// decimals); null for no limit. A charge past it is 402 spend_limit_exceeded.
    #[schema(schema_with = spend_limit_input)]
    #[serde(default, deserialize_with = "number_or_string")]
    spend_limit: Option<Value>,
}

fn spend_limit_input() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::amount_input((MAX_SPEND_LIMIT_MICROS / MICROS) as u64)
}

#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "api-keys",
    summary = "Creates an API key; its secret is shown only here (keys:write).",
    security(("session" = []), ("api_key" = [])),
    request_body = CreateBody,
    responses(
        (status = 201, description = "The key and its secret.", body = NewApiKey),
        (status = 403, description = "A scope the caller lacks."),
        (status = 422, description = "A field is missing or invalid (admin:* included)."),
    )
)]
async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    body: JsonBody,
) -> Result<Response, AppError> {
    principal.require(Scope::KeysWrite)?;
    let body: CreateBody = body.parse()?;
    let now = state.store.clock.now();
    let mut fields = Fields::default();
    let name = fields.check(
        "name",
        body.name.map(|n| aggregates::text::trimmed(&n, 100)),
    );
    let mut scopes = Vec::new();
    match body.scopes {
        None => fields.fail("scopes", "is required"),
        Some(raw) if raw.is_empty() => fields.fail("scopes", "must not be empty"),
        Some(raw) => {
            for (i, name) in raw.iter().enumerate() {
                match Scope::parse(name) {
                    Some(Scope::Admin) => {
                        fields.fail(&format!("scopes[{i}]"), "admin:* cannot be given to a key")
                    }
                    Some(scope) => scopes.push(scope),
                    None => fields.fail(&format!("scopes[{i}]"), "unknown scope"),
                }
            }
        }
    }
    scopes.sort();
    scopes.dedup();
    let mode = match body.dataset_access_mode {
        None => Some(AccessMode::AllAvailable),
        Some(raw) => {
            let mode = AccessMode::parse(&raw);
            if mode.is_none() {
                fields.fail(
                    "dataset_access_mode",
                    format!("must be one of {}", AccessMode::expected()),
                );
            }
            mode
        }
    };
    let expires_at = match body.expires_at {
        None => None,
        Some(raw) => match aggregates::timestamp::parse(&raw) {
            Some(at) if at > now => Some(at),
            Some(_) => {
                fields.fail("expires_at", "must be in the future");
                None
            }
            None => {
                fields.fail("expires_at", "must be an RFC 3339 timestamp");
                None
            }
        },
    };
    let spend_limit = fields.optional(
        "spend_limit",
        body.spend_limit
            .map(|v| Amount::from_json(&v, MAX_SPEND_LIMIT_MICROS).map(|a| a.micros())),
    );
    fields.finish()?;
    if let Some(missing) = scopes.iter().find(|s| !principal.scopes.contains(s)) {
        return Err(AppError::Forbidden(format!(
            "A key cannot hold {}, which the caller lacks.",
            missing.as_str()
        )));
    }
    let (Some(name), Some(mode)) = (name, mode) else {
        return Err(AppError::internal("validation passed without values"));
    };
    let api_key_id = ApiKeyId::generate();
    let keys = ApiKeys {
        db: &state.store.db,
        key: &state.key,
    };
    // A prefix collision (1 in 36^8 per pair) just draws again.
    let mut issued = None;
    for _ in 0..3 {
        let (prefix, full) = new_api_key();
        if keys
            .store_secret(api_key_id.as_str(), &prefix, &full, now)
            .await
            .is_ok()
        {
            issued = Some((prefix, full));
            break;
        }
    }
    let (prefix, full) =
        issued.ok_or_else(|| AppError::internal("could not store the key's secret"))?;
    // A key creating a key passes on no more than it holds; by default, its own expiry.
    let issuer = match &principal.kind {
        PrincipalKind::ApiKey { api_key_id } => Some(issuing_key(&state, api_key_id).await?),
        PrincipalKind::User { .. } => None,
    };
    let expires_at = expires_at.or(issuer.as_ref().and_then(|i| i.expires_at));
    let actor = principal.actor();
    let profile = KeyProfile {
        api_key_id: api_key_id.clone(),
        tenant_id: TenantId::parse(&principal.tenant_id).map_err(AppError::internal)?,
        created_by: actor.actor_id.clone(),
        name,
        key_prefix: prefix,
        scopes,
        dataset_access_mode: mode,
        expires_at,
        spend_limit_micros: spend_limit,
    };
    state
        .store
        .execute::<ApiKey>(
            api_key_id.as_str(),
            match issuer {
                Some(issuer) => ApiKeyCommand::Derive { profile, issuer },
                None => ApiKeyCommand::Create(profile),
            },
            &(),
            &actor,
        )
        .await?;
    let row = reload(&state, api_key_id.as_str()).await?;
    let mut data = key_json(&row, &now_text(&state));
    data["key"] = json!(full);
    data["secret"] = json!(full);
    Ok(envelope::with_secrets(
        envelope::created(data),
        &["key", "secret"],
    ))
}

#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "api-keys",
    summary = "The tenant's keys, newest first (keys:write or usage:read).",
    security(("session" = []), ("api_key" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of keys.", body = ApiKeyPage),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 422, description = "limit is invalid."),
    )
)]
async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<PageQuery>,
) -> Result<Response, AppError> {
    require_read(&principal)?;
    let scope = "api-keys";
    let page = query.page(&state.key, scope, 20, 100)?;
    let after = page.after.as_ref().map(sort_key).transpose()?;
    let rows = read::tenant_keys(&state.store.db, &principal.tenant_id, after, page.limit).await?;
    let (rows, next) = pagination::finish(rows, &page, &state.key, scope, |r| {
        json!([r.created_at, r.api_key_id])
    });
    let now = now_text(&state);
    let items: Vec<Value> = rows.iter().map(|r| key_json(r, &now)).collect();
    Ok(envelope::ok(json!({ "items": items, "next_cursor": next })))
}

#[utoipa::path(
    get,
    path = "/v1/api-keys/{id}",
    tag = "api-keys",
    summary = "One of the tenant's keys with its grants (keys:write or usage:read).",
    security(("session" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "The key's id.", pattern = "^key_[0-9a-hjkmnp-tv-z]{26}$")),
    responses(
        (status = 200, description = "The key.", body = ApiKeyDetail),
        (status = 404, description = "Foreign or unknown key."),
    )
)]
async fn show(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    require_read(&principal)?;
    let row = own_key(&state, &principal, &id).await?;
    let grants: Vec<Value> = read::grants(&state.store.db, &id)
        .await?
        .iter()
        .map(grant_json)
        .collect();
    let mut data = key_json(&row, &now_text(&state));
    data["grants"] = json!(grants);
    Ok(envelope::ok(data))
}

#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    tag = "api-keys",
    summary = "Revokes a key; again is a no-op (keys:write).",
    security(("session" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "The key's id.", pattern = "^key_[0-9a-hjkmnp-tv-z]{26}$")),
    responses(
        (status = 200, description = "The key, revoked.", body = ApiKeyView),
        (status = 404, description = "Foreign or unknown key."),
    )
)]
async fn revoke(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    principal.require(Scope::KeysWrite)?;
    own_key(&state, &principal, &id).await?;
    let command = ApiKeyCommand::Revoke {
        at: state.store.clock.now(),
    };
    state
        .store
        .execute::<ApiKey>(&id, command, &(), &principal.actor())
        .await?;
    revoke_created(&state, &principal, &id).await?;
    Ok(envelope::ok(key_json(
        &reload(&state, &id).await?,
        &now_text(&state),
    )))
}

/// Revokes every key that `id` created, and theirs, as events of the same actor. (A key whose
/// creator is not active is refused at authentication anyway; this makes the views say so.)
async fn revoke_created(state: &AppState, principal: &Principal, id: &str) -> Result<(), AppError> {
    let mut parents = vec![id.to_owned()];
    let mut seen = std::collections::HashSet::from([id.to_owned()]);
    while let Some(parent) = parents.pop() {
        for child in read::created_by_key(&state.store.db, &parent).await? {
            if !seen.insert(child.clone()) {
                continue;
            }
            let command = ApiKeyCommand::Revoke {
                at: state.store.clock.now(),
            };
            state
                .store
                .execute::<ApiKey>(&child, command, &(), &principal.actor())
                .await?;
            parents.push(child);
        }
    }
    Ok(())
}

/// What a key holds now, as the bound on the keys and grants it may pass on.
async fn issuing_key(state: &AppState, api_key_id: &str) -> Result<IssuingKey, AppError> {
    let row = read::key(&state.store.db, api_key_id)
        .await?
        .ok_or_else(|| AppError::internal("the calling key is missing from the read model"))?;
    let granted = read::grants(&state.store.db, api_key_id)
        .await?
        .iter()
        .map(|g| DatasetId::parse(&g.dataset_id))
        .collect::<Result<Vec<_>, _>>()
        .map_err(AppError::internal)?;
    Ok(IssuingKey {
        api_key_id: ApiKeyId::parse(api_key_id).map_err(AppError::internal)?,
        scopes: row.scopes.clone(),
        dataset_access_mode: AccessMode::parse(&row.dataset_access_mode)
            .ok_or_else(|| AppError::internal("stored access mode"))?,
        granted,
        expires_at: row
            .expires_at
            .as_deref()
            .map(|e| {
                aggregates::timestamp::parse(e).ok_or_else(|| AppError::internal("stored expiry"))
            })
            .transpose()?,
    })
}

/// A grant's body.
#[derive(Deserialize, ToSchema)]
#[schema(as = KeyGrant)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    /// An accessible dataset.
    #[schema(required = true, value_type = String)]
    dataset_id: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/api-keys/{id}/grants",
    tag = "api-keys",
    summary = "Grants a dataset to a key (keys:write).",
    security(("session" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "The key's id.", pattern = "^key_[0-9a-hjkmnp-tv-z]{26}$")),
    request_body = GrantBody,
    responses(
        (status = 201, description = "The new grant.", body = Grant),
        (status = 200, description = "The existing grant.", body = Grant),
        (status = 404, description = "Unknown key, or a dataset that is not accessible."),
        (status = 409, description = "The key is revoked (invalid_state)."),
        (status = 422, description = "dataset_id is missing."),
    )
)]
async fn grant(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Response, AppError> {
    principal.require(Scope::KeysWrite)?;
    let body: GrantBody = body.parse()?;
    let dataset_id = body
        .dataset_id
        .ok_or_else(|| AppError::field("dataset_id", "is required"))?;
    own_key(&state, &principal, &id).await?;
    let dataset = DatasetId::parse(&dataset_id).map_err(|_| AppError::NotFound)?;
    let row = projections::datasets::dataset(&state.store.db, &dataset_id)
        .await?
        .ok_or(AppError::NotFound)?;
    let entitled =
        projections::datasets::is_entitled(&state.store.db, &dataset_id, &principal.tenant_id)
            .await?;
    if !projections::datasets::accessible(&row, &principal.tenant_id, entitled) {
        return Err(AppError::NotFound);
    }
    let issuer = match &principal.kind {
        PrincipalKind::ApiKey { api_key_id } => Some(issuing_key(&state, api_key_id).await?),
        PrincipalKind::User { .. } => None,
    };
    let command = ApiKeyCommand::AddGrant {
        grant_id: GrantId::generate(),
        dataset_id: dataset,
        issuer,
    };
    let committed = state
        .store
        .execute::<ApiKey>(&id, command, &(), &principal.actor())
        .await?;
    state.store.settle_request().await;
    let grants = read::grants(&state.store.db, &id).await?;
    let grant = grants
        .iter()
        .find(|g| g.dataset_id == dataset_id)
        .ok_or_else(|| AppError::internal("grant missing from read model"))?;
    Ok(if committed.events.is_empty() {
        envelope::ok(grant_json(grant))
    } else {
        envelope::created(grant_json(grant))
    })
}

#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}/grants/{grant_id}",
    tag = "api-keys",
    summary = "Removes a grant (keys:write).",
    security(("session" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "The key's id.", pattern = "^key_[0-9a-hjkmnp-tv-z]{26}$"), ("grant_id" = String, Path, description = "The grant.")),
    responses(
        (status = 200, description = "Removed.", body = GrantDeleted),
        (status = 404, description = "Unknown key or grant, or a grant of another key."),
    )
)]
async fn remove_grant(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((id, grant_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    principal.require(Scope::KeysWrite)?;
    own_key(&state, &principal, &id).await?;
    let grant = GrantId::parse(&grant_id).map_err(|_| AppError::NotFound)?;
    let committed = state
        .store
        .execute::<ApiKey>(
            &id,
            ApiKeyCommand::RemoveGrant { grant_id: grant },
            &(),
            &principal.actor(),
        )
        .await?;
    let dataset_id = committed.events.first().and_then(|e| match &e.payload {
        aggregates::api_key::ApiKeyEvent::ApiKeyGrantRemoved { dataset_id, .. } => {
            Some(dataset_id.to_string())
        }
        _ => None,
    });
    Ok(envelope::ok(
        json!({ "grant_id": grant_id, "api_key_id": id, "dataset_id": dataset_id, "deleted": true }),
    ))
}
