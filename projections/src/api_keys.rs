//! API keys and their dataset grants, without secrets.

use aggregates::api_key::{AccessMode, ApiKeyEvent, KeyStatus};
use aggregates::choice::UnknownChoice;
use aggregates::{timestamp, ApiKey, ApiKeyId, DatasetId, GrantId, Scope, TenantId};
use async_trait::async_trait;
use cqrs_es::Aggregate;
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use crate::rows::keyset_start;
use crate::{Db, Projection, ProjectionError, Reads, StoredEvent};

/// The `api_keys` and `api_key_grants` tables.
pub struct ApiKeysProjection;

#[async_trait]
impl Projection for ApiKeysProjection {
    fn name(&self) -> &'static str {
        "api_keys"
    }
    fn version(&self) -> i64 {
        2
    }
    fn tables(&self) -> &'static [&'static str] {
        &["api_keys", "api_key_grants"]
    }
    fn reads(&self) -> Reads {
        Reads::Aggregates(&[ApiKey::TYPE])
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != ApiKey::TYPE {
            return Ok(());
        }
        let at = &event.metadata.occurred_at;
        let id = &event.aggregate_id;
        let changed = match event.decode::<ApiKeyEvent>()? {
            ApiKeyEvent::ApiKeyCreated(p) => {
                let scopes: Vec<&str> = p.scopes.iter().map(|s| s.as_str()).collect();
                sqlx::query(
                    "INSERT INTO api_keys (api_key_id, tenant_id, name, key_prefix, scopes, dataset_access_mode, \
                     created_at, expires_at, created_by, spend_limit_micros) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(p.api_key_id.as_str())
                .bind(p.tenant_id.as_str())
                .bind(&p.name)
                .bind(&p.key_prefix)
                .bind(scopes.join(","))
                .bind(p.dataset_access_mode.as_str())
                .bind(at)
                .bind(p.expires_at.map(timestamp::format))
                .bind(&p.created_by)
                .bind(p.spend_limit_micros)
                .execute(conn)
                .await?
            }
            ApiKeyEvent::ApiKeyRevoked { revoked_at } => {
                sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE api_key_id = $2")
                    .bind(timestamp::format(revoked_at))
                    .bind(id)
                    .execute(conn)
                    .await?
            }
            ApiKeyEvent::ApiKeyGrantAdded { grant_id, dataset_id } => {
                sqlx::query("INSERT INTO api_key_grants (grant_id, api_key_id, dataset_id, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(grant_id.as_str())
                    .bind(id)
                    .bind(dataset_id.as_str())
                    .bind(at)
                    .execute(conn)
                    .await?
            }
            ApiKeyEvent::ApiKeyGrantRemoved { grant_id, .. } => {
                sqlx::query("DELETE FROM api_key_grants WHERE grant_id = $1")
                    .bind(grant_id.as_str())
                    .execute(conn)
                    .await?
            }
        };
        if changed.rows_affected() != 1 {
            return Err(ProjectionError::Inconsistent(format!(
                "no api key row for {} {id}",
                event.event_type
            )));
        }
        Ok(())
    }
}

/// A row of `api_keys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiKeyRow {
    #[sqlx(try_from = "String")]
    pub api_key_id: ApiKeyId,
    #[sqlx(try_from = "String")]
    pub tenant_id: TenantId,
    pub name: String,
    pub key_prefix: String,
    #[sqlx(try_from = "String")]
    pub scopes: Scopes,
    #[sqlx(try_from = "String")]
    pub dataset_access_mode: AccessMode,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    /// `usr_…` or `key_…` of the principal that created it.
    pub created_by: Option<String>,
    /// The monthly spend limit in micro-USD, if any.
    pub spend_limit_micros: Option<i64>,
}

impl ApiKeyRow {
    /// `active`, `revoked` or `expired` at `now` (RFC 3339).
    pub fn status(&self, now: &str) -> KeyStatus {
        if self.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if self.expires_at.as_deref().is_some_and(|e| e <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }
}

/// A key's scopes, stored comma-separated in canonical order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Scopes(pub Vec<Scope>);

impl TryFrom<String> for Scopes {
    type Error = UnknownChoice;
    fn try_from(stored: String) -> Result<Self, UnknownChoice> {
        stored
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| Scope::parse(s).ok_or_else(|| UnknownChoice(s.to_owned())))
            .collect::<Result<_, _>>()
            .map(Scopes)
    }
}

const KEY_SELECT: &str =
    "SELECT k.api_key_id, k.tenant_id, k.name, k.key_prefix, k.scopes, k.dataset_access_mode, \
     k.created_at, k.expires_at, k.revoked_at, u.last_used_at, k.created_by, k.spend_limit_micros \
     FROM api_keys k LEFT JOIN api_key_usage u ON u.api_key_id = k.api_key_id";

/// A key by id.
pub async fn key(db: &Db, api_key_id: &str) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(&format!("{KEY_SELECT} WHERE k.api_key_id = $1"))
        .bind(api_key_id)
        .fetch_optional(&db.pool)
        .await
}

/// The keys a key (or a user) created, revoked ones included.
pub async fn created_by_key(db: &Db, api_key_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT api_key_id FROM api_keys WHERE created_by = $1 ORDER BY api_key_id")
        .bind(api_key_id)
        .fetch_all(&db.pool)
        .await
}

/// The keys a user (or a key) created, the keys those created, and so on, in the order found.
pub async fn created_transitively(db: &Db, creator: &str) -> Result<Vec<String>, sqlx::Error> {
    let mut keys: Vec<String> = Vec::new();
    let mut parents = vec![creator.to_owned()];
    while let Some(parent) = parents.pop() {
        for child in created_by_key(db, &parent).await? {
            if !keys.contains(&child) {
                keys.push(child.clone());
                parents.push(child);
            }
        }
    }
    Ok(keys)
}

/// A tenant's keys, newest first; fetches `limit + 1` after `(created_at, id)`.
pub async fn tenant_keys(
    db: &Db,
    tenant_id: &str,
    after: Option<&(String, String)>,
    fetch: usize,
) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    let (after_at, after_id) = keyset_start(after);
    sqlx::query_as(&format!(
        "{KEY_SELECT} WHERE k.tenant_id = $1 AND (k.created_at < $2 OR (k.created_at = $2 AND k.api_key_id < $3)) \
         ORDER BY k.created_at DESC, k.api_key_id DESC LIMIT $4"
    ))
    .bind(tenant_id)
    .bind(after_at)
    .bind(after_id)
    .bind(fetch as i64)
    .fetch_all(&db.pool)
    .await
}

/// A dataset granted to an `allow_list` key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = Grant)]
pub struct GrantRow {
    /// The grant's id.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub grant_id: GrantId,
    /// The key.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub api_key_id: ApiKeyId,
    /// The dataset.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub dataset_id: DatasetId,
    /// When it was granted.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A key's grants, oldest first.
pub async fn grants(db: &Db, api_key_id: &str) -> Result<Vec<GrantRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT grant_id, api_key_id, dataset_id, created_at FROM api_key_grants WHERE api_key_id = $1 \
         ORDER BY created_at, grant_id",
    )
    .bind(api_key_id)
    .fetch_all(&db.pool)
    .await
}

/// Grants on a dataset, as `(api_key_id, grant_id)` (for the deletion cascade).
pub async fn grants_on(db: &Db, dataset_id: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT api_key_id, grant_id FROM api_key_grants WHERE dataset_id = $1 ORDER BY grant_id",
    )
    .bind(dataset_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// A tenant's keys: how many in all (revoked and expired included) and how many active at `now`.
pub async fn tenant_key_counts(
    db: &Db,
    tenant_id: &str,
    now: &str,
) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS total, \
         CAST(COALESCE(SUM(CASE WHEN revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) THEN 1 ELSE 0 END), 0) AS BIGINT) AS active \
         FROM api_keys WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .bind(now)
    .fetch_one(&db.pool)
    .await?;
    Ok((row.try_get("total")?, row.try_get("active")?))
}
