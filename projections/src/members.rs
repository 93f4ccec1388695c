//! Members and invitations: who belongs to a tenant with which roles, and whom it invited.
//!
//! Roles live in the tenant aggregate; this read model is what sessions, keys and the member
//! list resolve them from on every request. A tenant created before members were recorded has
//! no row for its founder until the founder is recorded: its roles are then the `users` row's.

use aggregates::tenant::TenantEvent;
use aggregates::user::UserEvent;
use aggregates::{Role, Tenant, User};
use async_trait::async_trait;
use cqrs_es::Aggregate;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::accounts::Roles;
use crate::{Db, Projection, ProjectionError, Reads, StoredEvent};

/// The `members` and `invitations` tables.
pub struct MembersProjection;

fn roles_text(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[async_trait]
impl Projection for MembersProjection {
    fn name(&self) -> &'static str {
        "members"
    }
    fn version(&self) -> i64 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["members", "invitations"]
    }
    fn reads(&self) -> Reads {
        Reads::Aggregates(&[Tenant::TYPE, User::TYPE])
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let at = &event.metadata.occurred_at;
        let tenant_id = &event.aggregate_id;
        if event.aggregate_type == User::TYPE {
            // An erased member's invitation reads as erased, as the log does after the erasure.
            if let UserEvent::UserErased { subjects } = event.decode::<UserEvent>()? {
                for invitation in subjects.iter().filter(|s| s.starts_with("inv_")) {
                    sqlx::query("UPDATE invitations SET email = $1 WHERE invitation_id = $2")
                        .bind(crate::privacy::erased("email", invitation))
                        .bind(invitation)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            return Ok(());
        }
        if event.aggregate_type != Tenant::TYPE {
            return Ok(());
        }
        let changed = match event.decode::<TenantEvent>()? {
            TenantEvent::TenantCreated { owner: None, .. } => return Ok(()),
            TenantEvent::TenantCreated {
                owner: Some(user_id),
                ..
            }
            | TenantEvent::FounderRecorded { user_id } => {
                join(conn, user_id.as_str(), tenant_id, &[Role::Owner], at, None).await?
            }
            TenantEvent::MemberInvited {
                invitation_id,
                email,
                roles,
                invited_by,
                invited_at,
                expires_at,
            } => sqlx::query(
                "INSERT INTO invitations (invitation_id, tenant_id, email, roles, invited_by, \
                 created_at, expires_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')",
            )
            .bind(invitation_id.as_str())
            .bind(tenant_id)
            .bind(email.as_str())
            .bind(roles_text(&roles))
            .bind(invited_by.as_str())
            .bind(aggregates::timestamp::format(invited_at))
            .bind(aggregates::timestamp::format(expires_at))
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            TenantEvent::InvitationAccepted {
                invitation_id,
                user_id,
                roles,
                invited_by,
                accepted_at,
            } => {
                let closed = aggregates::timestamp::format(accepted_at);
                sqlx::query(
                    "UPDATE invitations SET state = 'accepted', accepted_by = $1, closed_at = $2 \
                     WHERE invitation_id = $3",
                )
                .bind(user_id.as_str())
                .bind(&closed)
                .bind(invitation_id.as_str())
                .execute(&mut *conn)
                .await?;
                let by = Some(invited_by.as_str());
                join(conn, user_id.as_str(), tenant_id, &roles, &closed, by).await?
            }
            TenantEvent::InvitationRevoked {
                invitation_id,
                revoked_at,
                ..
            } => sqlx::query(
                "UPDATE invitations SET state = 'revoked', closed_at = $1 WHERE invitation_id = $2",
            )
            .bind(aggregates::timestamp::format(revoked_at))
            .bind(invitation_id.as_str())
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            TenantEvent::MemberRolesChanged { user_id, roles, .. } => {
                set_roles(conn, user_id.as_str(), &roles).await?
            }
            TenantEvent::OwnershipTransferred {
                from,
                to,
                from_roles,
                to_roles,
            } => {
                set_roles(conn, from.as_str(), &from_roles).await?
                    * set_roles(conn, to.as_str(), &to_roles).await?
            }
            TenantEvent::MemberRemoved { user_id, .. } => {
                sqlx::query("UPDATE members SET removed_at = $1 WHERE user_id = $2")
                    .bind(at)
                    .bind(user_id.as_str())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
            }
        };
        if changed != 1 {
            return Err(ProjectionError::Inconsistent(format!(
                "no member or invitation row for {} at {}",
                event.aggregate_id, event.sequence
            )));
        }
        Ok(())
    }
}

async fn join(
    conn: &mut AnyConnection,
    user_id: &str,
    tenant_id: &str,
    roles: &[Role],
    at: &str,
    invited_by: Option<&str>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO members (user_id, tenant_id, roles, joined_at, invited_by) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(user_id)
    .bind(tenant_id)
    .bind(roles_text(roles))
    .bind(at)
    .bind(invited_by)
    .execute(conn)
    .await?
    .rows_affected())
}

async fn set_roles(
    conn: &mut AnyConnection,
    user_id: &str,
    roles: &[Role],
) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("UPDATE members SET roles = $1 WHERE user_id = $2 AND removed_at IS NULL")
            .bind(roles_text(roles))
            .bind(user_id)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

/// A member as listed: the user's profile and their current roles.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct MemberRow {
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    #[sqlx(try_from = "String")]
    pub roles: Roles,
    pub joined_at: String,
    pub invited_by: Option<String>,
}

/// The join that gives a user (`u`) their membership (`m`); with it, [`ROLES`] is the user's
/// roles now and `m.removed_at` says whether they were removed.
pub const MEMBERSHIP: &str = "LEFT JOIN members m ON m.user_id = u.user_id";

/// A user's roles now: the ones their tenant gives them, or, for a founder not yet recorded
/// there, the ones they registered with (with [`MEMBERSHIP`]).
macro_rules! roles_now {
    () => {
        "COALESCE(m.roles, u.roles)"
    };
}
pub(crate) use roles_now;

/// [`roles_now`] as a constant.
pub const ROLES: &str = roles_now!();

/// The members of a tenant: its users that were not removed, with their roles now.
fn member_select() -> String {
    format!(
        "SELECT u.user_id, u.email, u.display_name, {ROLES} AS roles, \
         COALESCE(m.joined_at, u.created_at) AS joined_at, m.invited_by FROM users u {MEMBERSHIP} \
         WHERE u.tenant_id = $1 AND m.removed_at IS NULL"
    )
}

/// A page of a tenant's members by user id, after `after`.
pub async fn members(
    db: &Db,
    tenant_id: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<MemberRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{} AND u.user_id > $2 ORDER BY u.user_id LIMIT $3",
        member_select()
    ))
    .bind(tenant_id)
    .bind(after.unwrap_or(""))
    .bind(limit as i64)
    .fetch_all(&db.pool)
    .await
}

/// One member of a tenant (`None`: not a member of it, or removed).
pub async fn member(
    db: &Db,
    tenant_id: &str,
    user_id: &str,
) -> Result<Option<MemberRow>, sqlx::Error> {
    sqlx::query_as(&format!("{} AND u.user_id = $2", member_select()))
        .bind(tenant_id)
        .bind(user_id)
        .fetch_optional(&db.pool)
        .await
}

/// What a user may do now: their tenant, roles and platform-admin flag; `None` for an unknown or
/// removed user. Sessions and keys resolve their scopes from this on every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    pub tenant_id: String,
    pub roles: Vec<Role>,
    pub is_platform_admin: bool,
}

/// Whether the `members` read model has a row for the user (a founder of a tenant created before
/// members were recorded has none until they are recorded).
pub async fn recorded(db: &Db, user_id: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM members WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(&db.pool)
        .await?;
    Ok(found.is_some())
}

/// The columns [`Standing::from_row`] reads (with [`MEMBERSHIP`]).
pub const STANDING: &str = concat!(
    "u.tenant_id AS user_tenant_id, ",
    roles_now!(),
    " AS roles, u.is_platform_admin, m.removed_at"
);

impl Standing {
    /// The standing in a row selecting [`STANDING`]; `None` for a removed member.
    pub fn from_row(row: &AnyRow) -> Result<Option<Self>, sqlx::Error> {
        if row.try_get::<Option<String>, _>("removed_at")?.is_some() {
            return Ok(None);
        }
        let roles: String = row.try_get("roles")?;
        Ok(Some(Standing {
            tenant_id: row.try_get("user_tenant_id")?,
            roles: Roles::try_from(roles)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?
                .0,
            is_platform_admin: row.try_get::<i64, _>("is_platform_admin")? != 0,
        }))
    }
}

/// A user's [`Standing`].
pub async fn standing(db: &Db, user_id: &str) -> Result<Option<Standing>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {STANDING} FROM users u {MEMBERSHIP} WHERE u.user_id = $1"
    ))
    .bind(user_id)
    .fetch_optional(&db.pool)
    .await?;
    match row {
        Some(row) => Standing::from_row(&row),
        None => Ok(None),
    }
}

/// An invitation as listed.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct InvitationRow {
    pub invitation_id: String,
    pub tenant_id: String,
    pub email: String,
    #[sqlx(try_from = "String")]
    pub roles: Roles,
    pub invited_by: String,
    pub created_at: String,
    pub expires_at: String,
    pub state: String,
    pub accepted_by: Option<String>,
    pub closed_at: Option<String>,
}

/// Where an invitation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Revoked,
    Expired,
}

impl InvitationRow {
    /// Its state, `expired` for a pending one past its expiry at `now`.
    pub fn status(&self, now: &str) -> InvitationStatus {
        match self.state.as_str() {
            "accepted" => InvitationStatus::Accepted,
            "revoked" => InvitationStatus::Revoked,
            _ if self.expires_at.as_str() <= now => InvitationStatus::Expired,
            _ => InvitationStatus::Pending,
        }
    }
}

const INVITATION_SELECT: &str = "SELECT invitation_id, tenant_id, email, roles, invited_by, \
     created_at, expires_at, state, accepted_by, closed_at FROM invitations";

/// A page of a tenant's invitations, newest first, below `after` (`(created_at, id)`).
pub async fn invitations(
    db: &Db,
    tenant_id: &str,
    after: Option<&(String, String)>,
    limit: usize,
) -> Result<Vec<InvitationRow>, sqlx::Error> {
    let (at, id) = crate::rows::keyset_start(after);
    sqlx::query_as(&format!(
        "{INVITATION_SELECT} WHERE tenant_id = $1 AND (created_at < $2 OR (created_at = $2 AND \
         invitation_id < $3)) ORDER BY created_at DESC, invitation_id DESC LIMIT $4"
    ))
    .bind(tenant_id)
    .bind(at)
    .bind(id)
    .bind(limit as i64)
    .fetch_all(&db.pool)
    .await
}

/// One invitation of a tenant.
pub async fn invitation(
    db: &Db,
    tenant_id: &str,
    invitation_id: &str,
) -> Result<Option<InvitationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{INVITATION_SELECT} WHERE tenant_id = $1 AND invitation_id = $2"
    ))
    .bind(tenant_id)
    .bind(invitation_id)
    .fetch_optional(&db.pool)
    .await
}

/// The invitations a user accepted (an erasure destroys their keys with the user's).
pub async fn accepted_by(db: &Db, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT invitation_id FROM invitations WHERE accepted_by = $1")
        .bind(user_id)
        .fetch_all(&db.pool)
        .await
}
