//! Auth and users: signup, login, logout, `GET /v1/me`, password change (SPEC §3.1, §3.2).

use aggregates::email::EmailError;
use aggregates::{DisplayName, Email, Password, Role, Scope, TenantId, TenantName, UserId};
use std::net::SocketAddr;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::extract::{ConnectInfo, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::accounts::{Accounts, NewAccount};
use crate::auth::PrincipalKind;
use crate::auth::SessionGrant;
use crate::error::AppError;
use crate::http::envelope::Envelope;
use crate::http::extract::{Auth, Path};
use crate::http::json::{Fields, JsonBody};
use crate::openapi;
use crate::state::AppState;

/// Routes under `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(erase))
}

/// A new session (signup and login).
#[derive(Serialize, ToSchema)]
pub struct Session {
    /// The session token `sess_…`, for `Authorization: Bearer`.
    pub session_token: String,
    /// When the session ends.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The user.
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// The user's tenant.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
}

/// The account created by signup, with its first session.
#[derive(Serialize, ToSchema)]
pub struct SignupResult {
    #[serde(flatten)]
    pub session: Session,
    /// The display name.
    pub display_name: String,
    /// The normalised email.
    pub email: String,
}

/// `{logged_out: true}`.
#[derive(Serialize, ToSchema)]
pub struct LoggedOut {
    /// Always true.
    pub logged_out: bool,
}

/// `{password_changed: true}`.
#[derive(Serialize, ToSchema)]
pub struct PasswordChanged {
    /// Always true.
    pub password_changed: bool,
}

/// The caller (SPEC §3.2); with an API key the user fields are null.
#[derive(Serialize, ToSchema)]
pub struct Me {
    /// The user, or null for an API key.
    #[schema(required = true)]
    pub user_id: Option<String>,
    /// The user's email, or null for an API key.
    #[schema(required = true)]
    pub email: Option<String>,
    /// The user's display name, or null for an API key.
    #[schema(required = true)]
    pub display_name: Option<String>,
    /// The caller's tenant.
    pub tenant_id: String,
    /// The tenant's name.
    pub tenant_display_name: String,
    /// Whether the user is a platform admin (false for an API key).
    pub is_platform_admin: bool,
    /// The user's roles (empty for an API key).
    pub roles: Vec<Role>,
    /// The effective scopes, in canonical order.
    pub scopes: Vec<Scope>,
    /// `user` or `api_key`.
    #[schema(pattern = "^(user|api_key)$")]
    pub principal_type: &'static str,
    /// The key, or null for a session.
    #[schema(required = true)]
    pub api_key_id: Option<String>,
}

fn accounts(state: &AppState) -> Accounts<'_> {
    Accounts {
        store: &state.store,
        key: &state.key,
        session_ttl_seconds: state.config.session_ttl_seconds,
    }
}

/// Signup's body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SignupBody {
    /// Trimmed and lowercased; at most 254 characters.
    #[schema(required = true, schema_with = email_schema)]
    email: Option<String>,
    /// 8..=128 characters, never trimmed.
    #[schema(required = true, value_type = String, min_length = 8, max_length = 128)]
    password: Option<String>,
    /// Trimmed, 1..=100 characters.
    #[schema(required = true, schema_with = name_schema)]
    display_name: Option<String>,
    /// Trimmed, 1..=100 characters; need not be unique.
    #[schema(required = true, schema_with = name_schema)]
    tenant_name: Option<String>,
}

pub(crate) fn name_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::trimmed(100, false)
}

/// `^[^@\s]+@[^@\s]+\.[^@\s]+$` (SPEC §3.1), with `\s` spelled out (and U+0000 excluded) as in
/// [`openapi::NOT_BLANK`].
pub(crate) fn email_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let part = format!("{}+", openapi::NOT_BLANK.replacen("[^", "[^@", 1));
    openapi::text(Email::MAX_LEN, &format!("^{part}@{part}\\.{part}$"))
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

impl From<SessionGrant> for Session {
    fn from(grant: SessionGrant) -> Self {
        Self {
            session_token: grant.token,
            expires_at: aggregates::timestamp::format(grant.expires_at),
            user_id: grant.user_id,
            tenant_id: grant.tenant_id,
        }
    }
}

/// The per-IP bucket of the auth routes (before the body is read, as SPEC §1.11 orders).
pub(crate) async fn limit_auth_route(state: &AppState, client: SocketAddr) -> Result<(), AppError> {
    let quota = state
        .limits
        .take(
            &format!("ip:{}", client.ip()),
            state.config.auth_rate_limit_per_minute,
            state.store.clock.now(),
        )
        .await;
    let _ = crate::request::REQUEST.try_with(|r| *r.quota.lock().expect("lock") = Some(quota));
    if quota.allowed {
        Ok(())
    } else {
        Err(AppError::RateLimited {
            retry_after: quota.reset,
        })
    }
}

#[utoipa::path(
    post,
    path = "/auth/signup",
    security(()),
    summary = "Creates a tenant, its owner and a session (SPEC §3.1).",
    request_body = SignupBody,
    responses(
        (status = 201, description = "The account and its session.", body = SignupResult),
        (status = 409, description = "The normalised email is registered (email_taken)."),
        (status = 422, description = "A field is missing or invalid."),
        (status = 429, description = "Too many signups from this client IP."),
    )
)]
async fn signup(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: JsonBody,
) -> Result<Envelope<SignupResult>, AppError> {
    limit_auth_route(&state, client).await?;
    let body: SignupBody = body.parse()?;
    let account = NewAccount::try_from(body)?;
    let (email, display_name) = (account.email.clone(), account.display_name.clone());
    let grant = accounts(&state).signup(account).await?;
    Ok(Envelope::created(SignupResult {
        session: grant.into(),
        display_name: display_name.as_str().to_owned(),
        email: email.as_str().to_owned(),
    }))
}

/// Login's body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    /// Normalised as in signup, not format-checked; at most 254 characters.
    #[schema(required = true, value_type = String, max_length = 254)]
    email: Option<String>,
    /// The password.
    #[schema(required = true, value_type = String)]
    password: Option<String>,
}

/// Login's e-mail, normalised: not format-checked (SPEC §3.1), but no longer than signup allows,
/// so that no address of any length is looked up or counted.
fn login_email(raw: &str) -> Result<String, EmailError> {
    let normalised = Email::normalise(raw);
    if normalised.chars().count() > Email::MAX_LEN {
        return Err(EmailError::TooLong);
    }
    Ok(normalised)
}

#[utoipa::path(
    post,
    path = "/auth/login",
    security(()),
    summary = "Opens a session (SPEC §3.1).",
    request_body = LoginBody,
    responses(
        (status = 200, description = "The new session.", body = Session),
        (status = 401, description = "Unknown email or wrong password (invalid_credentials)."),
        (status = 422, description = "A field is missing, or the email is over 254 characters."),
        (status = 429, description = "Too many logins from this client IP, or too many failed \
            logins for this email."),
    )
)]
async fn login(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: JsonBody,
) -> Result<Envelope<Session>, AppError> {
    limit_auth_route(&state, client).await?;
    let body: LoginBody = body.parse()?;
    let mut fields = Fields::default();
    let email = fields.check("email", body.email.map(|e| login_email(&e)));
    let password = fields.check("password", body.password.map(Ok::<_, AppError>));
    fields.finish()?;
    let (Some(normalised), Some(password)) = (email, password) else {
        return Err(AppError::internal("validation passed without values"));
    };
    // Ten failed logins for an address lock it for the rest of their 15 minutes.
    let now = state.store.clock.now();
    if let Some(retry_after) = state.limits.login_locked(&normalised, now).await {
        return Err(AppError::RateLimited { retry_after });
    }
    match accounts(&state).login(&normalised, &password).await {
        Ok(grant) => Ok(Envelope::ok(grant.into())),
        Err(AppError::InvalidCredentials) => {
            state.limits.login_failed(&normalised, now).await;
            Err(AppError::InvalidCredentials)
        }
        Err(other) => Err(other),
    }
}

#[utoipa::path(
    post,
    path = "/auth/logout",
    summary = "Ends the calling session (session only).",
    security(("session" = [])),
    responses(
        (status = 200, description = "The session is over.", body = LoggedOut),
        (status = 403, description = "Called with an API key."),
    )
)]
async fn logout(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Envelope<LoggedOut>, AppError> {
    let (user_id, session_hash) = principal.require_session()?;
    accounts(&state)
        .logout(user_id, &principal.tenant_id, session_hash)
        .await?;
    Ok(Envelope::ok(LoggedOut { logged_out: true }))
}

#[utoipa::path(
    get,
    path = "/me",
    tag = "users",
    summary = "The caller: user or API key, tenant, roles and scopes (no scope needed).",
    responses((status = 200, description = "The caller.", body = Me))
)]
async fn me(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Envelope<Me>, AppError> {
    let tenant_display_name =
        projections::accounts::tenant_name(&state.store.db, &principal.tenant_id).await?;
    let caller = Me {
        user_id: None,
        email: None,
        display_name: None,
        tenant_id: principal.tenant_id.clone(),
        tenant_display_name: tenant_display_name.unwrap_or_default(),
        is_platform_admin: false,
        roles: Vec::new(),
        scopes: principal.scopes.clone(),
        principal_type: "api_key",
        api_key_id: None,
    };
    Ok(Envelope::ok(match &principal.kind {
        PrincipalKind::User { user_id, .. } => {
            let user = projections::accounts::user_by_id(&state.store.db, user_id)
                .await?
                .ok_or(AppError::Unauthorized)?;
            Me {
                user_id: Some(user.user_id.into()),
                email: Some(user.email),
                display_name: Some(user.display_name),
                is_platform_admin: user.is_platform_admin.0,
                roles: user.roles.0,
                principal_type: "user",
                ..caller
            }
        }
        PrincipalKind::ApiKey { api_key_id } => Me {
            api_key_id: Some(api_key_id.clone()),
            ..caller
        },
    }))
}

/// The password change's body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    /// The current password.
    #[schema(required = true, value_type = String)]
    current_password: Option<String>,
    /// 8..=128 characters.
    #[schema(required = true, value_type = String, min_length = 8, max_length = 128)]
    new_password: Option<String>,
}

#[utoipa::path(
    post,
    path = "/me/password",
    tag = "users",
    summary = "Changes the password and revokes the user's other sessions (session only).",
    security(("session" = [])),
    request_body = PasswordBody,
    responses(
        (status = 200, description = "Changed.", body = PasswordChanged),
        (status = 401, description = "Wrong current_password (invalid_credentials)."),
        (status = 403, description = "Called with an API key."),
        (status = 422, description = "A field is missing or the new password is invalid."),
    )
)]
async fn change_password(
    State(state): State<AppState>,
    Auth(principal): Auth,
    body: JsonBody,
) -> Result<Envelope<PasswordChanged>, AppError> {
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
    Ok(Envelope::ok(PasswordChanged {
        password_changed: true,
    }))
}

/// An erased user.
#[derive(Serialize, ToSchema)]
pub struct ErasedUser {
    /// The user.
    #[schema(schema_with = user_id)]
    pub user_id: String,
    /// Whose data keys were destroyed: the user, and the API keys they created (now revoked).
    pub erased_subjects: Vec<String>,
}

fn user_id() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::text(64, &openapi::id_pattern("usr"))
}

#[utoipa::path(
    post,
    path = "/admin/users/{id}/erase",
    tag = "admin",
    summary = "Erase a user's personal data (GDPR art. 17; platform-admin session).",
    description = "Destroys the data keys of the user and of the API keys they created: their \
        e-mail address, display name and search texts read as erased everywhere, in the read \
        models and on every rebuild, while the log keeps its bytes, so every signed head and \
        proof still verifies. The user's sessions end, they can no longer log in, the keys they \
        created are revoked, and the address may be registered again. Erasing an erased user \
        changes nothing.",
    security(("session" = [])),
    params(("id" = String, Path, description = "The user.")),
    responses(
        (status = 200, description = "The user is erased.", body = ErasedUser),
        (status = 404, description = "No such user."),
    )
)]
async fn erase(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<ErasedUser>, AppError> {
    principal.require_platform_admin()?;
    if !id.starts_with("usr_") {
        return Err(AppError::NotFound);
    }
    let erasure = accounts(&state).erase(&id, &principal.actor()).await?;
    Ok(Envelope::ok(ErasedUser {
        user_id: erasure.user_id,
        erased_subjects: erasure.subjects,
    }))
}
