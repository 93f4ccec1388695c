//! Extractors whose rejections are SPEC errors: the credential (SPEC §2.1: a session token or an
//! API key, from `Authorization: Bearer …` or `X-API-Key`), and path and query parameters, which
//! replace axum's own so that a bad one is answered in the error envelope, never as plain text.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Extensions, HeaderMap};
use serde::de::DeserializeOwned;

use crate::auth::{ApiKeys, Principal, Sessions};
use crate::error::AppError;
use crate::state::AppState;

/// The authenticated principal of a request.
pub struct Auth(pub Principal);

/// The principal a request was already authenticated as (by the idempotency layer, which must
/// check credentials before it may replay anything), so that it is resolved and rate limited once.
#[derive(Clone)]
pub struct Authenticated(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if let Some(Authenticated(principal)) = parts.extensions.get::<Authenticated>() {
            return Ok(Auth(principal.clone()));
        }
        authenticate(&parts.headers, &parts.extensions, state)
            .await
            .map(Auth)
    }
}

/// Resolves the request's credential (SPEC §2.1) and takes one request from its rate-limit
/// bucket (SPEC §1.10): 400 for malformed headers, 401 for an unknown, expired or revoked
/// credential, 429 over the limit.
pub async fn authenticate(
    headers: &HeaderMap,
    extensions: &Extensions,
    state: &AppState,
) -> Result<Principal, AppError> {
    let authorization = headers.get(header::AUTHORIZATION);
    let api_key = headers.get("x-api-key");
    let token = match (authorization, api_key) {
        (Some(_), Some(_)) => {
            return Err(AppError::bad_request(
                "Send either Authorization or X-API-Key, not both.",
            ));
        }
        (Some(value), None) => {
            let value = value
                .to_str()
                .map_err(|_| AppError::bad_request("Malformed Authorization header."))?;
            let (scheme, token) = value
                .split_once(' ')
                .ok_or_else(|| AppError::bad_request("Authorization must be `Bearer <token>`."))?;
            if !scheme.eq_ignore_ascii_case("bearer")
                || token.trim().is_empty()
                || token.contains(' ')
            {
                return Err(AppError::bad_request(
                    "Authorization must be `Bearer <token>`.",
                ));
            }
            token.trim().to_owned()
        }
        (None, Some(value)) => {
            let key = value.to_str().map_err(|_| AppError::Unauthorized)?.trim();
            // X-API-Key carries API keys only.
            if !key.starts_with("ipto_") {
                return Err(AppError::Unauthorized);
            }
            key.to_owned()
        }
        (None, None) => return Err(AppError::Unauthorized),
    };
    let now = state.store.clock.now();
    let check = crate::http::auth_failures::begin(state, extensions, &token, now)?;
    let principal = if token.starts_with("sess_") {
        Sessions {
            db: &state.store.db,
            key: &state.key,
        }
        .resolve(&token, now)
        .await?
    } else if token.starts_with("ipto_") {
        ApiKeys {
            db: &state.store.db,
            key: &state.key,
        }
        .resolve(&token, now)
        .await?
    } else {
        None
    };
    let principal = check.finish(principal)?;
    let _ = crate::request::REQUEST.try_with(|r| r.set_tenant(&principal.tenant_id));
    // The per-credential bucket (SPEC §1.10), after credential validity and before scopes.
    let quota = state
        .limits
        .take(
            &format!("credential:{}", state.key.hmac_hex(token.as_bytes())),
            state.config.rate_limit_per_minute,
            now,
        )
        .await;
    let _ = crate::request::REQUEST.try_with(|r| *r.quota.lock().expect("lock") = Some(quota));
    if !quota.allowed {
        return Err(AppError::RateLimited {
            retry_after: quota.reset,
        });
    }
    crate::http::consistency::catch_up(headers, state).await?;
    Ok(principal)
}

/// Path parameters; one that cannot be decoded (e.g. not UTF-8) names nothing that exists: 404.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        // No id holds U+0000.
        if parts.uri.path().to_ascii_lowercase().contains("%00") {
            return Err(AppError::NotFound);
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|_| AppError::NotFound)
    }
}

/// Query parameters (SPEC §1.5): unknown ones are ignored; one given twice, or holding U+0000,
/// is an invalid value (422 on that parameter).
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let query = parts.uri.query().unwrap_or_default();
        if let Some((name, _)) = url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, value)| name.contains('\0') || value.contains('\0'))
        {
            return Err(AppError::field(&name, crate::http::json::NUL_REASON));
        }
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| {
                let text = rejection.body_text();
                // serde names the parameter between backticks: "duplicate field `limit`".
                match text.split('`').nth(1) {
                    Some(name) if text.contains("duplicate field") => {
                        AppError::field(name, "must be given at most once")
                    }
                    Some(name) => AppError::field(name, "is invalid"),
                    None => AppError::field("query", "is invalid"),
                }
            })
    }
}
