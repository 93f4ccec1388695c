//! Tenants and users: who signs in, their profile and roles.

use aggregates::login::LoginEvent;
use aggregates::tenant::TenantEvent;
use aggregates::user::{Profile, UserEvent};
use aggregates::{Login, Role, Tenant, TenantId, User, UserId};
use async_trait::async_trait;
use cqrs_es::Aggregate;
use serde::Serialize;
use sqlx::AnyConnection;
use sqlx::Row;

use crate::rows::Flag;
use crate::{Db, Projection, ProjectionError, Reads, StoredEvent};

/// The `tenants` table.
pub struct TenantsProjection;

#[async_trait]
impl Projection for TenantsProjection {
    fn name(&self) -> &'static str {
        "tenants"
    }
    fn version(&self) -> i64 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["tenants"]
    }
    fn reads(&self) -> Reads {
        Reads::Aggregates(&[Tenant::TYPE])
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Tenant::TYPE {
            return Ok(());
        }
        // Members and invitations are the `members` projection's.
        if let TenantEvent::TenantCreated {
            tenant_id, name, ..
        } = event.decode::<TenantEvent>()?
        {
            sqlx::query("INSERT INTO tenants (tenant_id, name, created_at) VALUES ($1, $2, $3)")
                .bind(tenant_id.as_str())
                .bind(name.as_str())
                .bind(&event.metadata.occurred_at)
                .execute(conn)
                .await?;
        }
        Ok(())
    }
}

/// The `users` table.
pub struct UsersProjection;

#[async_trait]
impl Projection for UsersProjection {
    fn name(&self) -> &'static str {
        "users"
    }
    fn version(&self) -> i64 {
        2
    }
    fn tables(&self) -> &'static [&'static str] {
        &["users"]
    }
    fn reads(&self) -> Reads {
        Reads::Aggregates(&[User::TYPE, Login::TYPE])
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let at = &event.metadata.occurred_at;
        if event.aggregate_type == Login::TYPE {
            let LoginEvent::LoggedIn { user_id } = event.decode::<LoginEvent>()? else {
                return Ok(());
            };
            return count_login(conn, user_id.as_str(), at).await;
        }
        if event.aggregate_type != User::TYPE {
            return Ok(());
        }
        let changed = match event.decode::<UserEvent>()? {
            UserEvent::UserRegistered(Profile {
                user_id,
                tenant_id,
                email,
                display_name,
                roles,
            }) => {
                let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                sqlx::query(
                    "INSERT INTO users (user_id, tenant_id, email, display_name, roles, is_platform_admin, \
                     login_count, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 0, 0, $6, $6)",
                )
                .bind(user_id.as_str())
                .bind(tenant_id.as_str())
                .bind(email.as_str())
                .bind(display_name.as_str())
                .bind(roles.join(","))
                .bind(at)
                .execute(conn)
                .await?
            }
            UserEvent::UserLoggedIn {} => return count_login(conn, &event.aggregate_id, at).await,
            UserEvent::PasswordChanged {} => {
                sqlx::query(
                    "UPDATE users SET password_changed_at = $1, updated_at = $1 WHERE user_id = $2",
                )
                .bind(at)
                .bind(&event.aggregate_id)
                .execute(conn)
                .await?
            }
            UserEvent::PlatformAdminGranted {} => {
                sqlx::query(
                    "UPDATE users SET is_platform_admin = 1, updated_at = $1 WHERE user_id = $2",
                )
                .bind(at)
                .bind(&event.aggregate_id)
                .execute(conn)
                .await?
            }
            UserEvent::UserErased { .. } => {
                let user_id = &event.aggregate_id;
                sqlx::query(
                    "UPDATE users SET email = $1, display_name = $2, erased_at = $3, updated_at = $3 \
                     WHERE user_id = $4",
                )
                .bind(crate::privacy::erased("email", user_id))
                .bind(crate::privacy::erased("display_name", user_id))
                .bind(at)
                .bind(user_id)
                .execute(conn)
                .await?
            }
            UserEvent::UserLoggedOut {} => return Ok(()),
        };
        if changed.rows_affected() != 1 {
            return Err(ProjectionError::Inconsistent(format!(
                "no user row for {}",
                event.aggregate_id
            )));
        }
        Ok(())
    }
}

/// One more login of `user_id`, at `at`.
async fn count_login(
    conn: &mut AnyConnection,
    user_id: &str,
    at: &str,
) -> Result<(), ProjectionError> {
    let changed = sqlx::query(
        "UPDATE users SET login_count = login_count + 1, last_login_at = $1 WHERE user_id = $2",
    )
    .bind(at)
    .bind(user_id)
    .execute(conn)
    .await?;
    if changed.rows_affected() != 1 {
        return Err(ProjectionError::Inconsistent(format!(
            "no user row for {user_id}"
        )));
    }
    Ok(())
}

/// A row of the `users` read model joined with its tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct UserRow {
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    #[sqlx(try_from = "String")]
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub email: String,
    pub display_name: String,
    #[sqlx(try_from = "String")]
    pub roles: Roles,
    #[sqlx(try_from = "i64")]
    pub is_platform_admin: Flag,
    pub login_count: i64,
    pub created_at: String,
}

/// A user with their tenant's name and their roles now (see [`crate::members::ROLES`]).
const USER_SELECT: &str = concat!(
    "SELECT u.user_id, u.tenant_id, COALESCE(t.name, '') AS tenant_name, u.email, \
     u.display_name, ",
    crate::members::roles_now!(),
    " AS roles, u.is_platform_admin, u.login_count, u.created_at FROM users u \
     LEFT JOIN tenants t ON t.tenant_id = u.tenant_id \
     LEFT JOIN members m ON m.user_id = u.user_id"
);

/// A user's roles, stored comma-separated by their wire names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Roles(pub Vec<Role>);

impl TryFrom<String> for Roles {
    type Error = serde_json::Error;
    fn try_from(stored: String) -> Result<Self, serde_json::Error> {
        stored
            .split(',')
            .filter(|r| !r.is_empty())
            .map(|r| serde_json::from_value(serde_json::Value::String(r.to_owned())))
            .collect::<Result<_, _>>()
            .map(Roles)
    }
}

/// A user by id.
pub async fn user_by_id(db: &Db, user_id: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("{USER_SELECT} WHERE u.user_id = $1"))
        .bind(user_id)
        .fetch_optional(&db.pool)
        .await
}

/// A user by normalised e-mail.
pub async fn user_by_email(db: &Db, email: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("{USER_SELECT} WHERE u.email = $1"))
        .bind(email)
        .fetch_optional(&db.pool)
        .await
}

/// Every user, by id (for tests and audits).
pub async fn all_users(db: &Db) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("{USER_SELECT} ORDER BY u.user_id"))
        .fetch_all(&db.pool)
        .await
}

/// A tenant's name.
pub async fn tenant_name(db: &Db, tenant_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM tenants WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(&db.pool)
        .await
}

/// Every tenant as `(tenant_id, name, created_at)`, by id.
pub async fn all_tenants(db: &Db) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let rows = sqlx::query("SELECT tenant_id, name, created_at FROM tenants ORDER BY tenant_id")
        .fetch_all(&db.pool)
        .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}
