//! Auth and users: signup, login, logout, `GET /v1/me`, password change (SPEC §3.1, §3.2).

use aggregates::{DisplayName, Email, Password, TenantName};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use crate::accounts::{Accounts, NewAccount, SessionGrant};
use crate::app::AppState;
use crate::auth::PrincipalKind;
use crate::http::envelope;
use crate::http::error::AppError;
use crate::http::extract::Auth;
use crate::http::json::{Fields, JsonBody};

/// Routes under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/signup", post(signup))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/me", get(me))
        .route("/me/password", post(change_password))
}

fn accounts(state: &AppState) -> Accounts<'_> {
    Accounts {
        store: &state.store,
        key: &state.key,
        session_ttl_seconds: state.config.session_ttl_seconds,
    }
}

#[derive(Deserialize)]
struct SignupBody {
    email: Option<String>,
    password: Option<String>,
    display_name: Option<String>,
    tenant_name: Option<String>,
}

impl TryFrom<SignupBody> for NewAccount {
    type Error = AppError;

    fn try_from(body: SignupBody) -> Result<Self, AppError> {
        let mut fields = Fields::default();
        let email = fields.check("email", body.email.map(|e| Email::parse(&e)));
        let password = fields.check("password", body.password.map(|p| Password::parse(&p)));
        let display_name = fields.check(
            "display_name",
            body.display_name.map(|n| DisplayName::parse(&n)),
        );
        let tenant_name = fields.check(
            "tenant_name",
            body.tenant_name.map(|n| TenantName::parse(&n)),
        );
        fields.finish()?;
        match (email, password, display_name, tenant_name) {
            (Some(email), Some(password), Some(display_name), Some(tenant_name)) => {
                Ok(NewAccount {
                    email,
                    password,
                    display_name,
                    tenant_name,
                })
            }
            _ => Err(AppError::internal("validation passed without values")),
        }
    }
}

fn session_json(grant: &SessionGrant) -> serde_json::Value {
    json!({
        "session_token": grant.token,
        "expires_at": aggregates::timestamp::format(grant.expires_at),
        "user_id": grant.user_id,
        "tenant_id": grant.tenant_id,
    })
}

/// The per-IP bucket of the auth routes (before the body is read, as SPEC §1.11 orders).
fn limit_auth_route(state: &AppState, client: SocketAddr) -> Result<(), AppError> {
    let quota = state.limits.take(
        &format!("ip:{}", client.ip()),
        state.config.auth_rate_limit_per_minute,
        state.store.clock.now(),
    );
    let _ = crate::store::REQUEST.try_with(|r| *r.quota.lock().expect("lock") = Some(quota));
    if quota.allowed {
        Ok(())
    } else {
        Err(AppError::RateLimited {
            retry_after: quota.reset,
        })
    }
}

async fn signup(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: JsonBody,
) -> Result<Response, AppError> {
    limit_auth_route(&state, client)?;
    let body: SignupBody = body.parse()?;
    let account = NewAccount::try_from(body)?;
    let (email, display_name) = (account.email.clone(), account.display_name.clone());
    let grant = accounts(&state).signup(account).await?;
    let mut data = session_json(&grant);
    data["email"] = json!(email);
    data["display_name"] = json!(display_name);
    Ok(envelope::created(data))
}

#[derive(Deserialize)]
struct LoginBody {
    email: Option<String>,
    password: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: JsonBody,
) -> Result<Response, AppError> {
    limit_auth_route(&state, client)?;
    let body: LoginBody = body.parse()?;
    let mut fields = Fields::default();
    let email = fields.check("email", body.email.map(Ok::<_, AppError>));
    let password = fields.check("password", body.password.map(Ok::<_, AppError>));
    fields.finish()?;
    let (Some(email), Some(password)) = (email, password) else {
        return Err(AppError::internal("validation passed without values"));
    };
    // Ten failed logins for an address lock it for the rest of their 15 minutes.
    let normalised = Email::normalise(&email);
    let now = state.store.clock.now();
    if let Some(retry_after) = state.limits.login_locked(&normalised, now) {
        return Err(AppError::RateLimited { retry_after });
    }
    match accounts(&state).login(&email, &password).await {
        Ok(grant) => Ok(envelope::ok(session_json(&grant))),
        Err(AppError::InvalidCredentials) => {
            state.limits.login_failed(&normalised, now);
            Err(AppError::InvalidCredentials)
        }
        Err(other) => Err(other),
    }
}

async fn logout(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Response, AppError> {
    let (user_id, session_hash) = principal.require_session()?;
    accounts(&state)
        .logout(user_id, &principal.tenant_id, session_hash)
        .await?;
    Ok(envelope::ok(json!({ "logged_out": true })))
}

async fn me(State(state): State<AppState>, Auth(principal): Auth) -> Result<Response, AppError> {
    let tenant_name =
        projections::accounts::tenant_name(&state.store.db, &principal.tenant_id).await?;
    let scopes: Vec<&str> = principal.scopes.iter().map(|s| s.as_str()).collect();
    let data = match &principal.kind {
        PrincipalKind::User { user_id, .. } => {
            let user = projections::accounts::user_by_id(&state.store.db, user_id)
                .await?
                .ok_or(AppError::Unauthorized)?;
            let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
            json!({
                "user_id": user.user_id,
                "email": user.email,
                "display_name": user.display_name,
                "tenant_id": principal.tenant_id,
                "tenant_display_name": tenant_name,
                "is_platform_admin": user.is_platform_admin,
                "roles": roles,
                "scopes": scopes,
                "principal_type": "user",
                "api_key_id": null,
            })
        }
        PrincipalKind::ApiKey { api_key_id } => json!({
            "user_id": null,
            "email": null,
            "display_name": null,
            "tenant_id": principal.tenant_id,
            "tenant_display_name": tenant_name,
            "is_platform_admin": false,
            "roles": [],
            "scopes": scopes,
            "principal_type": "api_key",
            "api_key_id": api_key_id,
        }),
    };
    Ok(envelope::ok(data))
}

#[derive(Deserialize)]
struct PasswordBody {
    current_password: Option<String>,
    new_password: Option<String>,
}

async fn change_password(
    State(state): State<AppState>,
    Auth(principal): Auth,
    body: JsonBody,
) -> Result<Response, AppError> {
    let (user_id, session_hash) = principal.require_session()?;
    let body: PasswordBody = body.parse()?;
    let mut fields = Fields::default();
    let current = fields.check(
        "current_password",
        body.current_password.map(Ok::<_, AppError>),
    );
    let new = fields.check(
        "new_password",
        body.new_password.map(|p| Password::parse(&p)),
    );
    fields.finish()?;
    let (Some(current), Some(new)) = (current, new) else {
        return Err(AppError::internal("validation passed without values"));
    };
    accounts(&state)
        .change_password(user_id, &principal.tenant_id, session_hash, &current, new)
        .await?;
    Ok(envelope::ok(json!({ "password_changed": true })))
}
