//! API keys and their dataset grants (SPEC §3.6).

use aggregates::api_key::{AccessMode, ApiKeyCommand, KeyProfile};
use aggregates::{ApiKey, ApiKeyId, DatasetId, GrantId, Scope, TenantId};
use axum::extract::State;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use projections::api_keys::{self as read, ApiKeyRow, GrantRow};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{new_api_key, ApiKeys, Principal};
use crate::http::datasets::sort_key;
use crate::http::envelope;
use crate::http::error::AppError;
use crate::http::extract::{Auth, Path, Query};
use crate::http::json::{Fields, JsonBody};
use crate::http::pagination::{self, PageQuery};

/// Routes under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api-keys", get(list).post(create))
        .route("/api-keys/{id}", get(show).delete(revoke))
        .route("/api-keys/{id}/grants", post(grant))
        .route("/api-keys/{id}/grants/{grant_id}", delete(remove_grant))
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

#[derive(Deserialize)]
struct CreateBody {
    name: Option<String>,
    scopes: Option<Vec<String>>,
    dataset_access_mode: Option<String>,
    expires_at: Option<String>,
}

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
    };
    state
        .store
        .execute::<ApiKey>(
            api_key_id.as_str(),
            ApiKeyCommand::Create(profile),
            &(),
            &actor,
        )
        .await?;
    let row = reload(&state, api_key_id.as_str()).await?;
    let mut data = key_json(&row, &now_text(&state));
    data["key"] = json!(full);
    data["secret"] = json!(full);
    Ok(envelope::created(data))
}

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
    Ok(envelope::ok(key_json(
        &reload(&state, &id).await?,
        &now_text(&state),
    )))
}

#[derive(Deserialize)]
struct GrantBody {
    dataset_id: Option<String>,
}

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
    let command = ApiKeyCommand::AddGrant {
        grant_id: GrantId::generate(),
        dataset_id: dataset,
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
