//! Teams: a tenant's members and invitations, orchestrated over the tenant, user and
//! e-mail-reservation aggregates. The rules (who may invite, change roles, remove, hand
//! ownership over; the last owner) live in the tenant aggregate.
//!
//! Accepting an invitation, in an order that a retry completes: the token's invitation is looked
//! up by the token's HMAC and must be open; the password is hashed and stored under a fresh user
//! id (an orphan row, invisible, if the rest fails); the address is reserved for the joining
//! member (the gate: of concurrent accepts of one token exactly one reserves it, and an address
//! registered meanwhile is refused); then the tenant records the acceptance and the user is
//! registered with the invitation's roles. Those two steps are idempotent and also run from the
//! `signup_completion` reactor, so a crash after the reservation still ends in a member; a
//! reservation whose acceptance is refused (the invitation was revoked meanwhile) is released.

use aggregates::email_reservation::{EmailReservationCommand, Joining};
use aggregates::tenant::{TenantCommand, TenantError};
use aggregates::user::{Profile, UserCommand};
use aggregates::{
    ApiKey, DisplayName, Email, EmailReservation, InvitationId, Password, Role, Tenant, TenantId,
    User, UserId,
};

use crate::auth::{self, Principal, SessionGrant};
use crate::error::AppError;
use crate::signing::SigningKey;
use crate::store::{Actor, CommandError, Store};

/// A new invitation's token: `invt_` and 128 random bits; only its HMAC is stored.
pub fn new_invitation_token() -> String {
    format!(
        "invt_{}",
        aggregates::ids::encode_body(rand::random::<u128>())
    )
}

/// A new invitation, with the token shown once.
#[derive(Debug)]
pub struct Invited {
    pub invitation_id: InvitationId,
    pub token: String,
}

/// A validated acceptance.
#[derive(Debug)]
pub struct Acceptance {
    pub token: String,
    pub password: Password,
    pub display_name: DisplayName,
}

/// A member who joined by accepting an invitation, with their first session.
#[derive(Debug)]
pub struct NewMember {
    pub grant: SessionGrant,
    /// The invited address.
    pub email: Email,
    /// The invited roles.
    pub roles: Vec<Role>,
}

/// Team operations over the store, as `principal`.
pub struct Teams<'a> {
    pub store: &'a Store,
    pub key: &'a SigningKey,
}

impl Teams<'_> {
    /// The caller's user id, checked to be a session (API keys do not manage members), with the
    /// founder of a tenant created before members were recorded recorded first. (The read model
    /// spares the tenant's load when the caller is recorded; the aggregate decides otherwise.)
    async fn manager<'p>(&self, principal: &'p Principal) -> Result<&'p str, AppError> {
        let user_id = require_manager(principal)?;
        if !principal.roles.contains(&Role::Owner)
            || projections::members::recorded(&self.store.db, user_id).await?
        {
            return Ok(user_id);
        }
        let tenant = self.store.load::<Tenant>(&principal.tenant_id).await?;
        if !tenant.knows_members() {
            let founder = TenantCommand::RecordFounder {
                user_id: parse_user(user_id)?,
            };
            self.execute(principal, founder).await?;
        }
        Ok(user_id)
    }

    async fn execute(&self, principal: &Principal, command: TenantCommand) -> Result<(), AppError> {
        self.store
            .execute::<Tenant>(&principal.tenant_id, command, &(), &principal.actor())
            .await?;
        Ok(())
    }

    /// Invites `email` with `roles`: 409 `email_taken` when the address belongs to a user.
    pub async fn invite(
        &self,
        principal: &Principal,
        email: Email,
        roles: Vec<Role>,
    ) -> Result<Invited, AppError> {
        let by = parse_user(self.manager(principal).await?)?;
        let reservation = self
            .store
            .load::<EmailReservation>(&self.key.email_reservation_id(email.as_str()))
            .await?;
        if reservation.user_id().is_some() {
            return Err(AppError::EmailTaken);
        }
        let invitation_id = InvitationId::generate();
        let token = new_invitation_token();
        let now = self.store.clock.now();
        sqlx::query(
            "INSERT INTO invitation_tokens (token_hash, invitation_id, tenant_id, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(self.key.hmac_hex(token.as_bytes()))
        .bind(invitation_id.as_str())
        .bind(&principal.tenant_id)
        .bind(aggregates::timestamp::format(now))
        .execute(&self.store.db.pool)
        .await?;
        let command = TenantCommand::Invite {
            invitation_id: invitation_id.clone(),
            email,
            roles,
            by,
            at: now,
        };
        if let Err(error) = self.execute(principal, command).await {
            // No invitation: its token must not open anything.
            sqlx::query("DELETE FROM invitation_tokens WHERE invitation_id = $1")
                .bind(invitation_id.as_str())
                .execute(&self.store.db.pool)
                .await?;
            return Err(error);
        }
        Ok(Invited {
            invitation_id,
            token,
        })
    }

    /// Withdraws an invitation (again is a no-op; an accepted one is 409 `invalid_state`).
    pub async fn revoke(&self, principal: &Principal, invitation_id: &str) -> Result<(), AppError> {
        let by = parse_user(self.manager(principal).await?)?;
        let invitation_id = InvitationId::parse(invitation_id).map_err(|_| AppError::NotFound)?;
        let command = TenantCommand::RevokeInvitation {
            invitation_id,
            by,
            at: self.store.clock.now(),
        };
        self.execute(principal, command).await
    }

    /// Replaces a member's roles.
    pub async fn change_roles(
        &self,
        principal: &Principal,
        user_id: &str,
        roles: Vec<Role>,
    ) -> Result<(), AppError> {
        let by = parse_user(self.manager(principal).await?)?;
        let command = TenantCommand::ChangeRoles {
            user_id: parse_user(user_id)?,
            roles,
            by,
        };
        self.execute(principal, command).await
    }

    /// Removes a member: their sessions end at once; the keys they created stay the tenant's
    /// (with no scope left, as a key never exceeds its creator) unless `revoke_keys`, which
    /// revokes them and the keys they created. Returns the revoked keys.
    pub async fn remove(
        &self,
        principal: &Principal,
        user_id: &str,
        revoke_keys: bool,
    ) -> Result<Vec<String>, AppError> {
        let by = parse_user(self.manager(principal).await?)?;
        let command = TenantCommand::RemoveMember {
            user_id: parse_user(user_id)?,
            by,
            revoke_keys,
        };
        self.execute(principal, command).await?;
        let db = &self.store.db;
        for sql in [
            "DELETE FROM sessions WHERE user_id = $1",
            "DELETE FROM credentials WHERE user_id = $1",
        ] {
            sqlx::query(sql).bind(user_id).execute(&db.pool).await?;
        }
        if !revoke_keys {
            return Ok(Vec::new());
        }
        let keys = projections::api_keys::created_transitively(db, user_id).await?;
        for key in &keys {
            let revoke = aggregates::api_key::ApiKeyCommand::Revoke {
                at: self.store.clock.now(),
            };
            self.store
                .execute::<ApiKey>(key, revoke, &(), &principal.actor())
                .await?;
        }
        Ok(keys)
    }

    /// Makes `user_id` an owner; the caller, an owner, becomes an admin.
    pub async fn transfer(&self, principal: &Principal, user_id: &str) -> Result<(), AppError> {
        let by = parse_user(self.manager(principal).await?)?;
        let command = TenantCommand::TransferOwnership {
            to: parse_user(user_id)?,
            by,
        };
        self.execute(principal, command).await
    }

    /// Accepts an invitation: a new user of the inviting tenant with the invited roles, and a
    /// session. An unknown token is 404; an expired, revoked or used one 410.
    pub async fn accept(
        &self,
        acceptance: Acceptance,
        session_ttl_seconds: u64,
    ) -> Result<NewMember, AppError> {
        let db = &self.store.db;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT invitation_id, tenant_id FROM invitation_tokens WHERE token_hash = $1",
        )
        .bind(self.key.hmac_hex(acceptance.token.as_bytes()))
        .fetch_optional(&db.pool)
        .await?;
        let (invitation_id, tenant_id) = row.ok_or(AppError::NotFound)?;
        let invitation_id = InvitationId::parse(&invitation_id).map_err(AppError::internal)?;
        let tenant_id = TenantId::parse(&tenant_id).map_err(AppError::internal)?;
        let tenant = self.store.load::<Tenant>(tenant_id.as_str()).await?;
        let invitation = tenant
            .invitation(&invitation_id)
            .cloned()
            .ok_or(AppError::NotFound)?;
        let now = self.store.clock.now();
        if !invitation.is_open(now) {
            return Err(AppError::InvitationExpired);
        }
        let hash = auth::hash_password(acceptance.password.expose().to_owned()).await?;
        let joining = Joining {
            email: invitation.email.clone(),
            user_id: UserId::generate(),
            tenant_id: tenant_id.clone(),
            display_name: acceptance.display_name,
            invitation_id: invitation_id.clone(),
            accepted_at: now,
        };
        let user_id = joining.user_id.as_str();
        sqlx::query(
            "INSERT INTO credentials (user_id, password_hash, updated_at) VALUES ($1, $2, $3)",
        )
        .bind(user_id)
        .bind(&hash)
        .bind(aggregates::timestamp::format(now))
        .execute(&db.pool)
        .await?;
        let actor = Actor::user(user_id, tenant_id.as_str());
        let reservation_id = self.key.email_reservation_id(joining.email.as_str());
        let reserved = self
            .store
            .execute::<EmailReservation>(
                &reservation_id,
                EmailReservationCommand::ReserveForMember(joining.clone()),
                &(),
                &actor,
            )
            .await;
        if let Err(error) = reserved {
            self.forget_credential(user_id).await?;
            let holder = self.store.load::<EmailReservation>(&reservation_id).await?;
            // The same invitation won the address: this token was used.
            if holder
                .joining()
                .is_some_and(|j| j.invitation_id == invitation_id)
            {
                return Err(AppError::InvitationExpired);
            }
            return Err(error.into());
        }
        if !complete_join(self.store, &reservation_id, &joining, &actor).await? {
            self.forget_credential(user_id).await?;
            return Err(AppError::InvitationExpired);
        }
        let grant = auth::open_session(
            self.store,
            self.key,
            joining.user_id,
            tenant_id,
            session_ttl_seconds,
        )
        .await?;
        Ok(NewMember {
            grant,
            email: joining.email,
            roles: invitation.roles,
        })
    }

    async fn forget_credential(&self, user_id: &str) -> Result<(), AppError> {
        sqlx::query("DELETE FROM credentials WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.store.db.pool)
            .await?;
        Ok(())
    }
}

/// The caller's user id: 403 for an API key, or a member who does not manage members (before
/// anything about the request is looked up).
pub fn require_manager(principal: &Principal) -> Result<&str, AppError> {
    let (user_id, _) = principal.require_session()?;
    if !aggregates::tenant::manages_members(&principal.roles) {
        return Err(AppError::Forbidden(
            aggregates::tenant::NOT_A_MANAGER.to_owned(),
        ));
    }
    Ok(user_id)
}

fn parse_user(raw: &str) -> Result<UserId, AppError> {
    UserId::parse(raw).map_err(|_| AppError::NotFound)
}

/// Records the acceptance of a reserved joining and registers its user with the invitation's
/// roles; both steps are idempotent. `Ok(false)`: the tenant refused the acceptance (the
/// invitation was revoked or had expired at `accepted_at`), and the address is released.
pub async fn complete_join(
    store: &Store,
    reservation_id: &str,
    joining: &Joining,
    actor: &Actor,
) -> Result<bool, AppError> {
    let accept = TenantCommand::AcceptInvitation {
        invitation_id: joining.invitation_id.clone(),
        user_id: joining.user_id.clone(),
        at: joining.accepted_at,
    };
    let tenant = match store
        .execute::<Tenant>(joining.tenant_id.as_str(), accept, &(), actor)
        .await
    {
        Ok(committed) => committed.aggregate,
        Err(CommandError::Rejected(
            TenantError::InvitationExpired | TenantError::UnknownInvitation,
        )) => {
            let release = EmailReservationCommand::Release {
                user_id: joining.user_id.clone(),
            };
            store
                .execute::<EmailReservation>(reservation_id, release, &(), actor)
                .await?;
            return Ok(false);
        }
        Err(other) => return Err(other.into()),
    };
    let roles = tenant
        .invitation(&joining.invitation_id)
        .map(|i| i.roles.clone())
        .ok_or_else(|| AppError::internal("accepted invitation missing"))?;
    let profile = Profile {
        user_id: joining.user_id.clone(),
        tenant_id: joining.tenant_id.clone(),
        email: joining.email.clone(),
        display_name: joining.display_name.clone(),
        roles,
    };
    store
        .execute::<User>(
            joining.user_id.as_str(),
            UserCommand::Register(profile),
            &(),
            actor,
        )
        .await?;
    Ok(true)
}
