//! Credentials: password hashing, sessions and the principal a request acts as.
//!
//! Passwords are hashed with argon2id (m = 19 MiB, t = 2, p = 1, the OWASP minimum). Session tokens
//! carry 128 random bits; only HMAC-SHA256(signing key, token) is stored. Secrets are compared in
//! constant time and never logged.

use aggregates::api_key::{AccessMode, KeyStatus};
use std::sync::OnceLock;

use aggregates::access::session_scopes;
use aggregates::ids::encode_body;
use aggregates::{Role, Scope};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Duration, Utc};
use projections::Db;
use sqlx::Row;

use crate::error::AppError;
use crate::signing::SigningKey;

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password (CPU-heavy: runs on the blocking pool).
pub async fn hash_password(password: String) -> Result<String, AppError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(AppError::internal)?
    .map_err(AppError::internal)
}

/// Checks a password against a stored hash. With no hash (unknown user) it checks against a
/// dummy hash of the same cost, so both failures take the same time.
pub async fn verify_password(password: String, stored: Option<String>) -> Result<bool, AppError> {
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| dummy_hash().to_owned());
        let parsed = PasswordHash::new(&hash).map_err(AppError::internal)?;
        let matches = argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await
    .map_err(AppError::internal)?
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        argon2()
            .hash_password(b"ipto-dummy-password-for-timing", &salt)
            .expect("hashing a constant succeeds")
            .to_string()
    })
}

/// Warms the dummy hash so the first failed login is not slower than the rest.
pub fn prepare() {
    let _ = dummy_hash();
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A user's session; holds the session's stored hash.
    User {
        user_id: String,
        session_hash: String,
    },
    /// An API key.
    ApiKey { api_key_id: String },
}

/// The authenticated actor of a request.
#[derive(Clone, Debug)]
pub struct Principal {
    pub tenant_id: String,
    pub kind: PrincipalKind,
    pub scopes: Vec<Scope>,
    pub roles: Vec<Role>,
    pub is_platform_admin: bool,
}

impl Principal {
    /// 403 unless the principal holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), AppError> {
        if self.scopes.contains(&scope) {
            let _ = crate::request::REQUEST.try_with(|r| r.require(scope));
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "Missing scope {}.",
                scope.as_str()
            )))
        }
    }

    /// 403 for API keys on session-only endpoints.
    pub fn require_session(&self) -> Result<(&str, &str), AppError> {
        match &self.kind {
            PrincipalKind::User {
                user_id,
                session_hash,
            } => Ok((user_id, session_hash)),
            PrincipalKind::ApiKey { .. } => {
                Err(AppError::Forbidden("This endpoint needs a session.".into()))
            }
        }
    }

    /// 403 unless a platform admin's session.
    pub fn require_platform_admin(&self) -> Result<&str, AppError> {
        let (user_id, _) = self.require_session()?;
        if self.is_platform_admin {
            let _ = crate::request::REQUEST.try_with(|r| r.require(Scope::Admin));
            Ok(user_id)
        } else {
            Err(AppError::Forbidden("Platform admins only.".into()))
        }
    }

    /// The datasets an `allow_list` key may search and download (SPEC §3.6: only granted ones,
    /// its tenant's own included); `None` when the principal is not limited to a list.
    pub async fn allow_list(
        &self,
        db: &Db,
    ) -> Result<Option<std::collections::BTreeSet<String>>, AppError> {
        let PrincipalKind::ApiKey { api_key_id } = &self.kind else {
            return Ok(None);
        };
        let key = projections::api_keys::key(db, api_key_id)
            .await?
            .ok_or(AppError::Unauthorized)?;
        if key.dataset_access_mode != AccessMode::AllowList {
            return Ok(None);
        }
        let grants = projections::api_keys::grants(db, api_key_id).await?;
        Ok(Some(
            grants.into_iter().map(|g| g.dataset_id.into()).collect(),
        ))
    }

    /// The actor recorded on the events this principal causes.
    pub fn actor(&self) -> crate::store::Actor {
        match &self.kind {
            PrincipalKind::User { user_id, .. } => {
                crate::store::Actor::user(user_id, &self.tenant_id)
            }
            PrincipalKind::ApiKey { api_key_id } => crate::store::Actor {
                actor_type: "api_key",
                actor_id: api_key_id.clone(),
                tenant_id: Some(self.tenant_id.clone()),
            },
        }
    }
}

/// A new session token: `sess_` and 128 random bits.
pub fn new_session_token() -> String {
    format!("sess_{}", encode_body(rand::random::<u128>()))
}

/// A new session.
#[derive(Debug)]
pub struct SessionGrant {
    pub user_id: aggregates::UserId,
    pub tenant_id: aggregates::TenantId,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Opens a session for a user who proved who they are, recorded as a `login` aggregate of its
/// own (so the user's stream does not grow with logins); its logout closes that login.
pub async fn open_session(
    store: &crate::store::Store,
    key: &SigningKey,
    user_id: aggregates::UserId,
    tenant_id: aggregates::TenantId,
    ttl_seconds: u64,
) -> Result<SessionGrant, AppError> {
    use aggregates::login::{Login, LoginCommand};
    let login_id = aggregates::LoginId::generate();
    let sessions = Sessions { db: &store.db, key };
    let (token, expires_at) = sessions
        .create(
            user_id.as_str(),
            tenant_id.as_str(),
            store.clock.now(),
            ttl_seconds,
            login_id.as_str(),
        )
        .await?;
    let open = LoginCommand::Open {
        user_id: user_id.clone(),
    };
    let actor = crate::store::Actor::user(user_id.as_str(), tenant_id.as_str());
    store
        .execute::<Login>(login_id.as_str(), open, &(), &actor)
        .await?;
    Ok(SessionGrant {
        user_id,
        tenant_id,
        token,
        expires_at,
    })
}

/// Sessions in the operational `sessions` table.
pub struct Sessions<'a> {
    pub db: &'a Db,
    pub key: &'a SigningKey,
}

impl Sessions<'_> {
    /// Stores a new session, which the `login` aggregate `login_id` records, and returns its
    /// token; the token itself is never stored.
    pub async fn create(
        &self,
        user_id: &str,
        tenant_id: &str,
        now: DateTime<Utc>,
        ttl_seconds: u64,
        login_id: &str,
    ) -> Result<(String, DateTime<Utc>), AppError> {
        let token = new_session_token();
        let expires_at = now + Duration::seconds(ttl_seconds.min(i64::MAX as u64 / 1000) as i64);
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, tenant_id, created_at, expires_at, login_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(self.key.hmac_hex(token.as_bytes()))
        .bind(user_id)
        .bind(tenant_id)
        .bind(aggregates::timestamp::format(now))
        .bind(aggregates::timestamp::format(expires_at))
        .bind(login_id)
        .execute(&self.db.pool)
        .await?;
        Ok((token, expires_at))
    }

    /// The principal of a live session token, if any.
    pub async fn resolve(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Principal>, AppError> {
        let hash = self.key.hmac_hex(token.as_bytes());
        // Roles are the member's current ones (a change counts from the next request); a removed
        // member's sessions are refused even before they are deleted.
        let row = sqlx::query(&format!(
            "SELECT s.user_id, s.tenant_id, s.expires_at, {} FROM sessions s \
             JOIN users u ON u.user_id = s.user_id {} WHERE s.token_hash = $1",
            projections::members::STANDING,
            projections::members::MEMBERSHIP
        ))
        .bind(&hash)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let expires_at: String = row.try_get("expires_at")?;
        if expires_at <= aggregates::timestamp::format(now) {
            return Ok(None);
        }
        let Some(standing) = projections::members::Standing::from_row(&row)? else {
            return Ok(None);
        };
        let (roles, is_platform_admin) = (standing.roles, standing.is_platform_admin);
        Ok(Some(Principal {
            tenant_id: row.try_get("tenant_id")?,
            kind: PrincipalKind::User {
                user_id: row.try_get("user_id")?,
                session_hash: hash,
            },
            scopes: session_scopes(&roles, is_platform_admin),
            roles,
            is_platform_admin,
        }))
    }

    /// Ends one session at once; returns the login that opened it, if one did.
    pub async fn revoke(&self, session_hash: &str) -> Result<Option<String>, AppError> {
        let login: Option<Option<String>> =
            sqlx::query_scalar("DELETE FROM sessions WHERE token_hash = $1 RETURNING login_id")
                .bind(session_hash)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(login.flatten())
    }

    /// Ends every session of a user but one.
    pub async fn revoke_others(&self, user_id: &str, keep_hash: &str) -> Result<(), AppError> {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2")
            .bind(user_id)
            .bind(keep_hash)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const PREFIX_ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A new API key: `(prefix, full key)` where the key is `ipto_{prefix}_{secret}`, the prefix 8
/// characters of `[a-z0-9]` and the secret 40 base62 characters (≈238 random bits).
pub fn new_api_key() -> (String, String) {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    let prefix: String = (0..8)
        .map(|_| PREFIX_ALPHABET[rng.gen_range(0..PREFIX_ALPHABET.len())] as char)
        .collect();
    let secret: String = (0..40)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect();
    let key = format!("ipto_{prefix}_{secret}");
    (prefix, key)
}

/// Splits `ipto_{prefix}_{secret}` into prefix and secret, checking their shapes.
pub fn split_api_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("ipto_")?;
    let (prefix, secret) = rest.split_once('_')?;
    let prefix_ok = prefix.len() == 8 && prefix.bytes().all(|b| PREFIX_ALPHABET.contains(&b));
    let secret_ok =
        secret.len() >= 32 && secret.len() <= 256 && secret.bytes().all(|b| BASE62.contains(&b));
    (prefix_ok && secret_ok).then_some((prefix, secret))
}

/// How many keys may stand above a working key (each created by the one above it).
const MAX_KEY_CHAIN: usize = 16;

/// API keys in the operational `api_key_secrets` table and the `api_keys` read model.
pub struct ApiKeys<'a> {
    pub db: &'a Db,
    pub key: &'a SigningKey,
}

impl ApiKeys<'_> {
    /// Stores the HMAC of a new key's secret under its prefix (before the key's event exists).
    pub async fn store_secret(
        &self,
        api_key_id: &str,
        prefix: &str,
        full_key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let (_, secret) = split_api_key(full_key).expect("generated keys are well formed");
        sqlx::query("INSERT INTO api_key_secrets (api_key_id, key_prefix, secret_hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(api_key_id)
            .bind(prefix)
            .bind(self.key.hmac_hex(secret.as_bytes()))
            .bind(aggregates::timestamp::format(now))
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// The principal of a live key, if any. Compares the secret's HMAC in constant time, refuses
    /// revoked and expired keys, and refreshes `last_used_at` at most once a minute.
    pub async fn resolve(
        &self,
        full_key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Principal>, AppError> {
        use subtle::ConstantTimeEq;
        let Some((prefix, secret)) = split_api_key(full_key) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT api_key_id, secret_hash FROM api_key_secrets WHERE key_prefix = $1",
        )
        .bind(prefix)
        .fetch_optional(&self.db.pool)
        .await?;
        let presented = self.key.hmac_hex(secret.as_bytes());
        let Some(row) = row else { return Ok(None) };
        let stored: String = row.try_get("secret_hash")?;
        if !bool::from(presented.as_bytes().ct_eq(stored.as_bytes())) {
            return Ok(None);
        }
        let api_key_id: String = row.try_get("api_key_id")?;
        let Some(key) = projections::api_keys::key(self.db, &api_key_id).await? else {
            return Ok(None);
        };
        let now_text = aggregates::timestamp::format(now);
        if key.status(&now_text) != KeyStatus::Active {
            return Ok(None);
        }
        // A key created by a key works only while every key above it does.
        let mut creator = key.created_by.clone();
        let mut depth = 0;
        while let Some(parent) = creator.clone().filter(|c| c.starts_with("key_")) {
            depth += 1;
            if depth > MAX_KEY_CHAIN {
                return Ok(None);
            }
            match projections::api_keys::key(self.db, &parent).await? {
                Some(row) if row.status(&now_text) == KeyStatus::Active => creator = row.created_by,
                _ => return Ok(None),
            }
        }
        // A key never exceeds what the user at the top of its chain may do now: a role they lost
        // is lost to their keys, and a removed member's keys keep no scope.
        let scopes = match creator {
            Some(user_id) => {
                let allowed = projections::members::standing(self.db, &user_id)
                    .await?
                    .filter(|s| s.tenant_id == key.tenant_id.as_str())
                    .map(|s| session_scopes(&s.roles, false))
                    .unwrap_or_default();
                key.scopes
                    .0
                    .iter()
                    .copied()
                    .filter(|s| allowed.contains(s))
                    .collect()
            }
            None => key.scopes.0.clone(),
        };
        let minute_ago = aggregates::timestamp::format(now - Duration::seconds(60));
        if key
            .last_used_at
            .as_deref()
            .is_none_or(|used| used <= minute_ago.as_str())
        {
            sqlx::query(
                "INSERT INTO api_key_usage (api_key_id, last_used_at) VALUES ($1, $2) \
                 ON CONFLICT (api_key_id) DO UPDATE SET last_used_at = excluded.last_used_at \
                 WHERE api_key_usage.last_used_at <= $3",
            )
            .bind(&api_key_id)
            .bind(&now_text)
            .bind(&minute_ago)
            .execute(&self.db.pool)
            .await?;
        }
        Ok(Some(Principal {
            tenant_id: key.tenant_id.into(),
            kind: PrincipalKind::ApiKey { api_key_id },
            scopes,
            roles: Vec::new(),
            is_platform_admin: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password("correct horse".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!verify_password("wrong horse".into(), Some(hash))
            .await
            .unwrap());
        assert!(!verify_password("correct horse".into(), None).await.unwrap());
    }

    #[test]
    fn generated_api_keys_have_the_spec_shape_and_split_back() {
        let (prefix, key) = new_api_key();
        assert_eq!(key.len(), "ipto_".len() + 8 + 1 + 40);
        assert_eq!(split_api_key(&key).map(|(p, _)| p), Some(prefix.as_str()));
        assert_ne!(new_api_key().1, key);
        for bad in [
            "ipto_ABCDEFGH_".to_owned() + &"a".repeat(40),
            format!("ipto_abcdefgh_{}", "a".repeat(31)),
            "ipto_abc_x".into(),
            format!("sess_abcdefgh_{}", "a".repeat(40)),
        ] {
            assert!(split_api_key(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn session_tokens_carry_128_random_bits() {
        let a = new_session_token();
        let b = new_session_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), "sess_".len() + 26);
        assert!(aggregates::ids::parse_prefixed("sess", &a).is_ok());
    }
}
