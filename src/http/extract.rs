//! The credential extractor (SPEC §2.1): a session token or an API key, from `Authorization:
//! Bearer …` or `X-API-Key`.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::auth::{ApiKeys, Principal, Sessions};
use crate::http::error::AppError;

/// The authenticated principal of a request.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let authorization = parts.headers.get(header::AUTHORIZATION);
        let api_key = parts.headers.get("x-api-key");
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
                let (scheme, token) = value.split_once(' ').ok_or_else(|| {
                    AppError::bad_request("Authorization must be `Bearer <token>`.")
                })?;
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
        let principal = principal.ok_or(AppError::Unauthorized)?;
        // The per-credential bucket (SPEC §1.10), after credential validity and before scopes.
        let quota = state.limits.take(
            &format!("credential:{}", state.key.hmac_hex(token.as_bytes())),
            state.config.rate_limit_per_minute,
            now,
        );
        let _ = crate::store::REQUEST.try_with(|r| *r.quota.lock().expect("lock") = Some(quota));
        if !quota.allowed {
            return Err(AppError::RateLimited {
                retry_after: quota.reset,
            });
        }
        Ok(Auth(principal))
    }
}

/// Path parameters, like `axum::extract::Path`, rejected through [`AppError`]: a parameter that
/// cannot even be decoded (e.g. `%FF`) names no resource, so it is 404 like any malformed id
/// (SPEC §1.1), in the error envelope.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            // A route whose handler does not match its template is a defect, not a bad id.
            Err(rejection) if rejection.status().is_server_error() => {
                Err(AppError::internal(rejection.body_text()))
            }
            Err(_) => Err(AppError::NotFound),
        }
    }
}

/// Query parameters, like `axum::extract::Query`, rejected through [`AppError`]: a query string
/// that cannot be read (e.g. a parameter given twice) is 400 `invalid_request` in the envelope.
/// Values are checked by the handlers (422).
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| {
                AppError::bad_request(format!(
                    "The query string could not be read: {}",
                    rejection.body_text()
                ))
            })
    }
}
