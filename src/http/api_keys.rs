//! API keys and their dataset grants (SPEC §3.6).

use aggregates::api_key::{AccessMode, ApiKeyCommand, IssuingKey, KeyProfile, KeyStatus};
use aggregates::money::{Amount, MICROS};
use aggregates::spend::MAX_SPEND_LIMIT_MICROS;
use aggregates::{ApiKey, ApiKeyId, DatasetId, GrantId, Scope, TenantId};
use axum::extract::State;
use projections::api_keys::{self as read, ApiKeyRow, GrantRow, Scopes};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{new_api_key, ApiKeys, Principal, PrincipalKind};
use crate::error::AppError;
use crate::http::envelope::Envelope;
use crate::http::extract::{Auth, Path, Query};
use crate::http::json::{number_or_string, Fields, JsonBody};
use crate::http::pagination::{Keyset, Page, PageQuery};
use crate::openapi;
use crate::state::AppState;

/// Routes under `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, revoke))
        .routes(routes!(grant))
        .routes(routes!(remove_grant))
}

/// An API key, without its secret (SPEC §3.6).
#[derive(Serialize, ToSchema)]
#[schema(as = ApiKey)]
pub struct ApiKeyView {
    /// The key's id (not the secret).
    #[schema(value_type = String)]
    pub api_key_id: ApiKeyId,
    /// Its name.
    pub name: String,
    /// The public 8-character prefix.
    #[schema(pattern = "^[a-z0-9]{8}$")]
    pub key_prefix: String,
    /// Its scopes, in canonical order.
    #[schema(value_type = Vec<Scope>)]
    pub scopes: Scopes,
    pub dataset_access_mode: AccessMode,
    pub status: KeyStatus,
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
    #[schema(required = true, value_type = Option<Amount>)]
    pub spend_limit: Option<Amount>,
    /// Who created it: a member (`usr_…`) or a key (`key_…`). A key never exceeds the current
    /// scopes of the member at the top of its chain.
    #[schema(required = true, pattern = "^(usr|key)_[0-9a-hjkmnp-tv-z]{26}$")]
    pub created_by: Option<String>,
}

impl ApiKeyView {
    /// The key as `row` holds it, its status at `now`.
    fn new(row: ApiKeyRow, now: &str) -> Self {
        Self {
            status: row.status(now),
            api_key_id: row.api_key_id,
            name: row.name,
            key_prefix: row.key_prefix,
            scopes: row.scopes,
            dataset_access_mode: row.dataset_access_mode,
            created_at: row.created_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
            spend_limit: row.spend_limit_micros.map(Amount::from_micros),
            created_by: row.created_by,
        }
    }
}

/// A new API key with its secret, shown only here.
#[derive(Serialize, ToSchema)]
pub struct NewApiKey {
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// The full key `ipto_{prefix}_{secret}`; `null` in an idempotent replay (the secret is
    /// never stored).
    #[serde(rename = "key")]
    #[schema(required = true, pattern = "^ipto_[a-z0-9]{8}_[0-9A-Za-z]{40}$")]
    pub full_key: Option<String>,
    /// The same full key; `null` in an idempotent replay.
    #[schema(required = true, pattern = "^ipto_[a-z0-9]{8}_[0-9A-Za-z]{40}$")]
    pub secret: Option<String>,
}

/// An API key with its grants.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyDetail {
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// Its grants, oldest first.
    pub grants: Vec<GrantRow>,
}

/// A removed grant.
#[derive(Serialize, ToSchema)]
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

/// A new key's scopes: known, not `admin:*`, at least one (duplicates collapse).
fn new_scope_list() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let scopes: Vec<&str> = Scope::ALL
        .iter()
        .filter(|s| **s != Scope::Admin)
        .map(|s| s.as_str())
        .collect();
    openapi::array_of_choice(&scopes.join("|"), 1)
}

fn key_name() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::trimmed(100, false)
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
        Some(row) if row.tenant_id.as_str() == principal.tenant_id => Ok(row),
        _ => Err(AppError::NotFound),
    }
}

async fn written_key(state: &AppState, id: &str) -> Result<ApiKeyRow, AppError> {
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
    #[schema(value_type = Option<AccessMode>)]
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
    path = "/api-keys",
    summary = "Creates an API key; its secret is shown only here (keys:write).",
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
) -> Result<Envelope<NewApiKey>, AppError> {
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
    let row = written_key(&state, api_key_id.as_str()).await?;
    let created = NewApiKey {
        key: ApiKeyView::new(row, &now_text(&state)),
        full_key: Some(full.clone()),
        secret: Some(full),
    };
    Ok(Envelope::created(created).with_secrets(&["key", "secret"]))
}

#[utoipa::path(
    get,
    path = "/api-keys",
    summary = "The tenant's keys, newest first (keys:write or usage:read).",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of keys, newest first, revoked ones included.", body = Page<ApiKeyView>),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 422, description = "limit is invalid."),
    )
)]
async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<PageQuery>,
) -> Result<Envelope<Page<ApiKeyView>>, AppError> {
    require_read(&principal)?;
    let keyset = Keyset::open(&state.key, &query, "api-keys".to_owned())?;
    let db = &state.store.db;
    let rows = read::tenant_keys(db, &principal.tenant_id, keyset.after(), keyset.fetch()).await?;
    let now = now_text(&state);
    let sort_key = |r: &ApiKeyRow| (r.created_at.clone(), r.api_key_id.to_string());
    Ok(Envelope::ok(
        keyset.page(rows, sort_key, |r| ApiKeyView::new(r, &now)),
    ))
}

#[utoipa::path(
    get,
    path = "/api-keys/{id}",
    summary = "One of the tenant's keys with its grants (keys:write or usage:read).",
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
) -> Result<Envelope<ApiKeyDetail>, AppError> {
    require_read(&principal)?;
    let row = own_key(&state, &principal, &id).await?;
    let grants = read::grants(&state.store.db, &id).await?;
    Ok(Envelope::ok(ApiKeyDetail {
        key: ApiKeyView::new(row, &now_text(&state)),
        grants: grants.into_iter().collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/api-keys/{id}",
    summary = "Revokes a key; again is a no-op (keys:write).",
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
) -> Result<Envelope<ApiKeyView>, AppError> {
    principal.require(Scope::KeysWrite)?;
    own_key(&state, &principal, &id).await?;
    let command = ApiKeyCommand::Revoke {
        at: state.store.clock.now(),
    };
    state.run::<ApiKey>(&id, command, &principal).await?;
    revoke_created(&state, &principal, &id).await?;
    let row = written_key(&state, &id).await?;
    Ok(Envelope::ok(ApiKeyView::new(row, &now_text(&state))))
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
            state.run::<ApiKey>(&child, command, principal).await?;
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
        .into_iter()
        .map(|g| g.dataset_id)
        .collect();
    Ok(IssuingKey {
        api_key_id: row.api_key_id,
        scopes: row.scopes.0,
        dataset_access_mode: row.dataset_access_mode,
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
    path = "/api-keys/{id}/grants",
    summary = "Grants a dataset to a key (keys:write).",
    params(("id" = String, Path, description = "The key's id.", pattern = "^key_[0-9a-hjkmnp-tv-z]{26}$")),
    request_body = GrantBody,
    responses(
        (status = 201, description = "The new grant.", body = GrantRow),
        (status = 200, description = "The existing grant.", body = GrantRow),
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
) -> Result<Envelope<GrantRow>, AppError> {
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
    let committed = state.run::<ApiKey>(&id, command, &principal).await?;
    state.store.settle_request().await;
    let grants = read::grants(&state.store.db, &id).await?;
    let grant = grants
        .into_iter()
        .find(|g| g.dataset_id.as_str() == dataset_id)
        .ok_or_else(|| AppError::internal("grant missing from read model"))?;
    Ok(if committed.events.is_empty() {
        Envelope::ok(grant)
    } else {
        Envelope::created(grant)
    })
}

#[utoipa::path(
    delete,
    path = "/api-keys/{id}/grants/{grant_id}",
    summary = "Removes a grant (keys:write).",
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
) -> Result<Envelope<GrantDeleted>, AppError> {
    principal.require(Scope::KeysWrite)?;
    own_key(&state, &principal, &id).await?;
    let grant = GrantId::parse(&grant_id).map_err(|_| AppError::NotFound)?;
    let committed = state
        .run::<ApiKey>(
            &id,
            ApiKeyCommand::RemoveGrant { grant_id: grant },
            &principal,
        )
        .await?;
    let dataset_id = committed.events.first().and_then(|e| match &e.payload {
        aggregates::api_key::ApiKeyEvent::ApiKeyGrantRemoved { dataset_id, .. } => {
            Some(dataset_id.to_string())
        }
        _ => None,
    });
    Ok(Envelope::ok(GrantDeleted {
        grant_id,
        api_key_id: id,
        dataset_id,
        deleted: true,
    }))
}
