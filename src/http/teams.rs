//! Teams: a tenant's members, its invitations and ownership (`/v1/tenant/…`), and accepting an
//! invitation (`/v1/invitations/accept`). The rules are the tenant aggregate's; see
//! [`crate::teams`].

use std::net::SocketAddr;

use aggregates::{DisplayName, Email, Password, Role, Scope};
use axum::extract::{ConnectInfo, State};
use projections::members::{self as read, InvitationRow, InvitationStatus, MemberRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::http::accounts::{email_schema, limit_auth_route, name_schema, Session};
use crate::http::envelope::Envelope;
use crate::http::extract::{Auth, Path, Query};
use crate::http::json::{Fields, JsonBody};
use crate::http::pagination::{Keyset, Page, PageQuery};
use crate::mail::InvitationMail;
use crate::openapi;
use crate::state::AppState;
use crate::teams::{require_manager, Acceptance, Teams};

/// Routes under `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_invitations, invite))
        .routes(routes!(revoke_invitation))
        .routes(routes!(accept))
        .routes(routes!(list_members))
        .routes(routes!(change_roles, remove_member))
        .routes(routes!(transfer_ownership))
}

fn teams(state: &AppState) -> Teams<'_> {
    Teams {
        store: &state.store,
        key: &state.key,
    }
}

/// An invitation to join the tenant.
#[derive(Serialize, ToSchema)]
pub struct Invitation {
    /// The invitation (`inv_…`), not its token.
    #[schema(schema_with = invitation_id)]
    pub invitation_id: String,
    /// The invited address.
    pub email: String,
    /// The roles the invitee joins with, in canonical order.
    pub roles: Vec<Role>,
    pub status: InvitationStatus,
    /// Until when it may be accepted (7 days after it was sent).
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The member who sent it.
    #[schema(schema_with = user_id)]
    pub invited_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The user who joined by it, null unless accepted.
    #[schema(required = true, schema_with = nullable_user_id)]
    pub accepted_by: Option<String>,
}

fn invitation_id() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::text(64, &openapi::id_pattern("inv"))
}

fn user_id() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::text(64, &openapi::id_pattern("usr"))
}

fn nullable_user_id() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    projections::rows::schema(serde_json::json!({
        "type": ["string", "null"], "pattern": openapi::id_pattern("usr") }))
}

impl Invitation {
    fn new(row: InvitationRow, now: &str) -> Self {
        Self {
            status: row.status(now),
            invitation_id: row.invitation_id,
            email: row.email,
            roles: row.roles.0,
            expires_at: row.expires_at,
            invited_by: row.invited_by,
            created_at: row.created_at,
            accepted_by: row.accepted_by,
        }
    }
}

/// A new invitation with its token, shown only here.
#[derive(Serialize, ToSchema)]
pub struct NewInvitation {
    #[serde(flatten)]
    pub invitation: Invitation,
    /// The token the invitee accepts with (128 random bits; only its HMAC is stored); `null` in
    /// an idempotent replay.
    #[schema(required = true, pattern = "^invt_[0-9a-hjkmnp-tv-z]{26}$")]
    pub token: Option<String>,
    /// Whether the invitation was sent by mail (`IPTO_SMTP_URL`); else the inviter passes the
    /// token on.
    pub mailed: bool,
}

/// A member of the tenant.
#[derive(Serialize, ToSchema)]
pub struct Member {
    #[schema(schema_with = user_id)]
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    /// Their roles now, in canonical order.
    pub roles: Vec<Role>,
    #[schema(format = DateTime)]
    pub joined_at: String,
    /// The member whose invitation they accepted, null for the tenant's founder.
    #[schema(required = true, schema_with = nullable_user_id)]
    pub invited_by: Option<String>,
}

impl From<MemberRow> for Member {
    fn from(row: MemberRow) -> Self {
        Self {
            user_id: row.user_id,
            email: row.email,
            display_name: row.display_name,
            roles: row.roles.0,
            joined_at: row.joined_at,
            invited_by: row.invited_by,
        }
    }
}

/// A removed member.
#[derive(Serialize, ToSchema)]
pub struct RemovedMember {
    #[schema(schema_with = user_id)]
    pub user_id: String,
    /// Always true.
    pub removed: bool,
    /// The keys revoked with them (`?revoke_keys=true`): the ones they created, and the ones
    /// those created.
    pub revoked_keys: Vec<String>,
}

/// The tenant's owners after a transfer.
#[derive(Serialize, ToSchema)]
pub struct OwnershipTransferred {
    /// The new owner.
    pub owner: Member,
    /// The caller, now an admin.
    pub previous_owner: Member,
}

/// The account created by accepting an invitation, with its first session.
#[derive(Serialize, ToSchema)]
pub struct Joined {
    #[serde(flatten)]
    pub session: Session,
    pub display_name: String,
    /// The invited address.
    pub email: String,
    /// The invited roles.
    pub roles: Vec<Role>,
}

/// Roles as a request names them: at least one, each a known role.
fn parse_roles(raw: Vec<String>) -> Result<Vec<Role>, String> {
    if raw.is_empty() {
        return Err("must name at least one role".into());
    }
    raw.iter()
        .map(|name| {
            Role::parse(name).ok_or_else(|| {
                format!("unknown role {name:?}; one of owner, admin, seller_manager, buyer_manager, operator, viewer")
            })
        })
        .collect()
}

/// An invitation's body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct InviteBody {
    /// The address to invite: trimmed and lowercased, as at signup.
    #[schema(required = true, schema_with = email_schema)]
    email: Option<String>,
    /// One or more roles; only an owner invites an owner.
    #[schema(required = true, value_type = Vec<Role>, min_items = 1)]
    roles: Option<Vec<String>>,
}

fn now_text(state: &AppState) -> String {
    aggregates::timestamp::format(state.store.clock.now())
}

#[utoipa::path(
    post,
    path = "/tenant/invitations",
    summary = "Invites an address to join the tenant with roles (owner or admin session).",
    description = "The token is shown once: it is sent by mail when IPTO_SMTP_URL is set, else \
        the inviter passes it on. The invitation expires after 7 days.",
    security(("session" = [])),
    request_body = InviteBody,
    responses(
        (status = 201, description = "The invitation and its token.", body = NewInvitation),
        (status = 403, description = "An API key, a member who is neither owner nor admin, or \
            an admin inviting an owner."),
        (status = 409, description = "The address belongs to a user (email_taken) or has a \
            pending invitation (already_invited)."),
        (status = 422, description = "A field is missing or invalid."),
    )
)]
async fn invite(
    State(state): State<AppState>,
    Auth(principal): Auth,
    body: JsonBody,
) -> Result<Envelope<NewInvitation>, AppError> {
    require_manager(&principal)?;
    let body: InviteBody = body.parse()?;
    let mut fields = Fields::default();
    let email = fields.check("email", body.email.map(|e| Email::parse(&e)));
    let roles = fields.check("roles", body.roles.map(parse_roles));
    fields.finish()?;
    let (Some(email), Some(roles)) = (email, roles) else {
        return Err(AppError::internal("validation passed without values"));
    };
    let invited = teams(&state).invite(&principal, email, roles).await?;
    state.store.settle_request().await;
    let row = read::invitation(
        &state.store.db,
        &principal.tenant_id,
        invited.invitation_id.as_str(),
    )
    .await?
    .ok_or_else(|| AppError::internal("invitation missing from read model"))?;
    let invitation = Invitation::new(row, &now_text(&state));
    let mailed = send_invitation(&state, &principal, &invitation, &invited.token).await;
    let created = NewInvitation {
        invitation,
        token: Some(invited.token),
        mailed,
    };
    Ok(Envelope::created(created).with_secrets(&["token"]))
}

/// Mails the invitation when a relay is configured; a failed delivery is logged (without the
/// token) and the inviter still holds the token.
async fn send_invitation(
    state: &AppState,
    principal: &crate::auth::Principal,
    invitation: &Invitation,
    token: &str,
) -> bool {
    let Some(mailer) = &state.mailer else {
        return false;
    };
    let db = &state.store.db;
    let tenant_name = projections::accounts::tenant_name(db, &principal.tenant_id)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let inviter = projections::accounts::user_by_id(db, &invitation.invited_by)
        .await
        .ok()
        .flatten()
        .map(|u| u.display_name)
        .unwrap_or_default();
    let mail = InvitationMail {
        to: &invitation.email,
        tenant_name: &tenant_name,
        inviter: &inviter,
        roles: &invitation.roles,
        token,
        expires_at: &invitation.expires_at,
    };
    match mailer.send_invitation(&mail).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(invitation_id = %invitation.invitation_id, %error, "invitation mail not sent");
            false
        }
    }
}

#[utoipa::path(
    get,
    path = "/tenant/invitations",
    summary = "The tenant's invitations, newest first: pending, accepted, revoked and expired \
        (owner or admin session).",
    security(("session" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of invitations.", body = Page<Invitation>),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 403, description = "An API key, or a member who is neither owner nor admin."),
        (status = 422, description = "limit is invalid."),
    )
)]
async fn list_invitations(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<PageQuery>,
) -> Result<Envelope<Page<Invitation>>, AppError> {
    require_manager(&principal)?;
    let keyset = Keyset::open(&state.key, &query, "tenant-invitations".to_owned())?;
    let rows = read::invitations(
        &state.store.db,
        &principal.tenant_id,
        keyset.after(),
        keyset.fetch(),
    )
    .await?;
    let now = now_text(&state);
    let sort_key = |r: &InvitationRow| (r.created_at.clone(), r.invitation_id.clone());
    Ok(Envelope::ok(
        keyset.page(rows, sort_key, |r| Invitation::new(r, &now)),
    ))
}

#[utoipa::path(
    delete,
    path = "/tenant/invitations/{id}",
    summary = "Revokes an invitation; again is a no-op (owner or admin session).",
    security(("session" = [])),
    params(("id" = String, Path, description = "The invitation.", pattern = "^inv_[0-9a-hjkmnp-tv-z]{26}$")),
    responses(
        (status = 200, description = "The invitation, revoked.", body = Invitation),
        (status = 403, description = "An API key, or a member who is neither owner nor admin."),
        (status = 404, description = "Foreign or unknown invitation."),
        (status = 409, description = "The invitation was accepted (invalid_state)."),
    )
)]
async fn revoke_invitation(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<Invitation>, AppError> {
    require_manager(&principal)?;
    teams(&state).revoke(&principal, &id).await?;
    state.store.settle_request().await;
    let row = read::invitation(&state.store.db, &principal.tenant_id, &id)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(Envelope::ok(Invitation::new(row, &now_text(&state))))
}

/// Accepting an invitation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AcceptBody {
    /// The invitation's token.
    #[schema(required = true, schema_with = token_schema)]
    token: Option<String>,
    /// 8..=128 characters, never trimmed.
    #[schema(required = true, value_type = String, min_length = 8, max_length = 128)]
    password: Option<String>,
    /// Trimmed, 1..=100 characters.
    #[schema(required = true, schema_with = name_schema)]
    display_name: Option<String>,
}

fn token_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    projections::rows::schema(serde_json::json!({
        "type": "string", "minLength": 1, "maxLength": 64, "pattern": openapi::NO_NUL }))
}

/// A token is at most 64 characters, so that no text of any length is hashed or looked up.
fn token(raw: String) -> Result<String, String> {
    if raw.is_empty() || raw.chars().count() > 64 {
        return Err("must be the invitation's token".into());
    }
    Ok(raw)
}

#[utoipa::path(
    post,
    path = "/invitations/accept",
    tag = "tenant",
    security(()),
    summary = "Accepts an invitation: a user of the inviting tenant with the invited roles, and \
        a session (no credential; the login rate limits apply).",
    request_body = AcceptBody,
    responses(
        (status = 201, description = "The new member and their session.", body = Joined),
        (status = 404, description = "Unknown token."),
        (status = 409, description = "The address was registered meanwhile (email_taken)."),
        (status = 410, description = "The invitation expired, was revoked or was used \
            (invitation_expired)."),
        (status = 422, description = "A field is missing or invalid."),
        (status = 429, description = "Too many attempts from this client IP."),
    )
)]
async fn accept(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: JsonBody,
) -> Result<Envelope<Joined>, AppError> {
    limit_auth_route(&state, client).await?;
    let body: AcceptBody = body.parse()?;
    let mut fields = Fields::default();
    let token = fields.check("token", body.token.map(token));
    let password = fields.check("password", body.password.map(|p| Password::parse(&p)));
    let display_name = fields.check(
        "display_name",
        body.display_name.map(|n| DisplayName::parse(&n)),
    );
    fields.finish()?;
    let (Some(token), Some(password), Some(display_name)) = (token, password, display_name) else {
        return Err(AppError::internal("validation passed without values"));
    };
    let shown_name = display_name.as_str().to_owned();
    let acceptance = Acceptance {
        token,
        password,
        display_name,
    };
    let joined = teams(&state)
        .accept(acceptance, state.config.session_ttl_seconds)
        .await?;
    state.store.settle_request().await;
    Ok(Envelope::created(Joined {
        session: joined.grant.into(),
        display_name: shown_name,
        email: joined.email.as_str().to_owned(),
        roles: joined.roles,
    })
    .with_secrets(&["session_token"]))
}

#[utoipa::path(
    get,
    path = "/tenant/members",
    summary = "The tenant's members by user id, with their roles now (usage:read).",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of members.", body = Page<Member>),
        (status = 400, description = "The cursor is invalid (invalid_cursor)."),
        (status = 422, description = "limit is invalid."),
    )
)]
async fn list_members(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<PageQuery>,
) -> Result<Envelope<Page<Member>>, AppError> {
    principal.require(Scope::UsageRead)?;
    let keyset = Keyset::<String>::open(&state.key, &query, "tenant-members".to_owned())?;
    let rows = read::members(
        &state.store.db,
        &principal.tenant_id,
        keyset.after().map(String::as_str),
        keyset.fetch(),
    )
    .await?;
    Ok(Envelope::ok(keyset.page(
        rows,
        |r: &MemberRow| r.user_id.clone(),
        Member::from,
    )))
}

/// A member's new roles.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RolesBody {
    /// One or more roles, replacing the member's; only an owner grants or takes `owner`.
    #[schema(required = true, value_type = Vec<Role>, min_items = 1)]
    roles: Option<Vec<String>>,
}

async fn member_view(state: &AppState, tenant_id: &str, user_id: &str) -> Result<Member, AppError> {
    state.store.settle_request().await;
    read::member(&state.store.db, tenant_id, user_id)
        .await?
        .map(Member::from)
        .ok_or(AppError::NotFound)
}

#[utoipa::path(
    patch,
    path = "/tenant/members/{user_id}",
    summary = "Replaces a member's roles, in force from their next request (owner or admin \
        session).",
    description = "Only an owner grants or takes owner; nobody changes their own roles; the last \
        owner keeps the role. Keys the member created lose any scope their new roles lack.",
    security(("session" = [])),
    params(("user_id" = String, Path, description = "The member.", pattern = "^usr_[0-9a-hjkmnp-tv-z]{26}$")),
    request_body = RolesBody,
    responses(
        (status = 200, description = "The member with their new roles.", body = Member),
        (status = 403, description = "An API key, a member who is neither owner nor admin, an \
            admin granting or taking owner, or the caller's own roles."),
        (status = 404, description = "Not a member of the tenant."),
        (status = 409, description = "The tenant's last owner would lose the role (last_owner)."),
        (status = 422, description = "roles is missing or invalid."),
    )
)]
async fn change_roles(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(user_id): Path<String>,
    body: JsonBody,
) -> Result<Envelope<Member>, AppError> {
    require_manager(&principal)?;
    let body: RolesBody = body.parse()?;
    let mut fields = Fields::default();
    let roles = fields.check("roles", body.roles.map(parse_roles));
    fields.finish()?;
    let Some(roles) = roles else {
        return Err(AppError::internal("validation passed without values"));
    };
    teams(&state)
        .change_roles(&principal, &user_id, roles)
        .await?;
    Ok(Envelope::ok(
        member_view(&state, &principal.tenant_id, &user_id).await?,
    ))
}

/// Whether to revoke the removed member's keys.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RemoveQuery {
    /// `true`: revoke the keys the member created (and the keys those created); default
    /// `false`: they stay the tenant's, with no scope while their creator is not a member.
    #[param(value_type = Option<bool>)]
    revoke_keys: Option<String>,
}

#[utoipa::path(
    delete,
    path = "/tenant/members/{user_id}",
    summary = "Removes a member; their sessions end at once (owner or admin session).",
    description = "An admin does not remove an owner; the last owner is not removed. The keys \
        the member created stay the tenant's (listed with created_by) unless revoke_keys=true; \
        a key never exceeds its creator's current scopes, so they keep none.",
    security(("session" = [])),
    params(
        ("user_id" = String, Path, description = "The member.", pattern = "^usr_[0-9a-hjkmnp-tv-z]{26}$"),
        RemoveQuery,
    ),
    responses(
        (status = 200, description = "The member is removed.", body = RemovedMember),
        (status = 403, description = "An API key, a member who is neither owner nor admin, or \
            an admin removing an owner."),
        (status = 404, description = "Not a member of the tenant."),
        (status = 409, description = "The tenant's last owner (last_owner)."),
        (status = 422, description = "revoke_keys is not true or false."),
    )
)]
async fn remove_member(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(user_id): Path<String>,
    Query(query): Query<RemoveQuery>,
) -> Result<Envelope<RemovedMember>, AppError> {
    require_manager(&principal)?;
    let revoke_keys = match query.revoke_keys.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(AppError::field("revoke_keys", "must be true or false")),
    };
    let revoked_keys = teams(&state)
        .remove(&principal, &user_id, revoke_keys)
        .await?;
    state.store.settle_request().await;
    Ok(Envelope::ok(RemovedMember {
        user_id,
        removed: true,
        revoked_keys,
    }))
}

/// The member who becomes owner.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct OwnershipBody {
    /// Another member of the tenant.
    #[schema(required = true, schema_with = user_id)]
    user_id: Option<String>,
}

#[utoipa::path(
    post,
    path = "/tenant/ownership",
    summary = "Hands ownership to another member; the caller becomes an admin (owner session).",
    security(("session" = [])),
    request_body = OwnershipBody,
    responses(
        (status = 200, description = "The new and the previous owner.", body = OwnershipTransferred),
        (status = 403, description = "An API key, a caller who is not an owner, or the caller \
            themself as the target."),
        (status = 404, description = "Not a member of the tenant."),
        (status = 422, description = "user_id is missing."),
    )
)]
async fn transfer_ownership(
    State(state): State<AppState>,
    Auth(principal): Auth,
    body: JsonBody,
) -> Result<Envelope<OwnershipTransferred>, AppError> {
    let (caller, _) = principal.require_session()?;
    let body: OwnershipBody = body.parse()?;
    let Some(target) = body.user_id else {
        return Err(AppError::field("user_id", "required"));
    };
    teams(&state).transfer(&principal, &target).await?;
    Ok(Envelope::ok(OwnershipTransferred {
        owner: member_view(&state, &principal.tenant_id, &target).await?,
        previous_owner: member_view(&state, &principal.tenant_id, caller).await?,
    }))
}
