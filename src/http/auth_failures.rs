//! The failure budget of credential checks per client IP (an addition to SPEC §1.10): every
//! unknown, expired or revoked session token or API key costs a database lookup, so a client that
//! failed `IPTO_AUTH_FAILURE_LIMIT_PER_MINUTE` checks in the current minute gets 429 for further
//! credentials without a lookup.
//!
//! Only failures count, and a credential that passed its check within the last day skips the
//! budget (it is still looked up, so revocation and expiry take effect at once): an attacker
//! behind the same address as real clients (a NAT, a shared proxy) cannot lock out the sessions
//! and keys in use there. What the attacker blocks is a credential never seen valid by this
//! instance, arriving while the budget is spent; it cannot be told from a guess without the lookup
//! the budget exists to save. The client IP is the connection's peer address, as for the auth
//! routes' bucket.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::Extensions;
use chrono::{DateTime, Utc};

use crate::auth::Principal;
use crate::error::AppError;
use crate::ratelimit::{CredentialId, Quota};
use crate::state::AppState;

/// A credential check under way.
pub struct CredentialCheck<'a> {
    state: &'a AppState,
    client: Option<IpAddr>,
    credential: CredentialId,
    now: DateTime<Utc>,
}

/// Before `token` is looked up: 429 `rate_limited` if the client spent its failure budget and the
/// token was not valid recently.
pub fn begin<'a>(
    state: &'a AppState,
    extensions: &Extensions,
    token: &str,
    now: DateTime<Utc>,
) -> Result<CredentialCheck<'a>, AppError> {
    let client = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    let credential = state.key.mac(token.as_bytes());
    if let Some(client) = client {
        let limit = state.config.auth_failure_limit_per_minute;
        if let Err(retry_after) =
            state
                .limits
                .local
                .credential_check(client, &credential, limit, now)
        {
            let quota = Quota {
                limit,
                remaining: 0,
                reset: retry_after,
                allowed: false,
            };
            let _ =
                crate::request::REQUEST.try_with(|r| *r.quota.lock().expect("lock") = Some(quota));
            return Err(AppError::RateLimited { retry_after });
        }
    }
    Ok(CredentialCheck {
        state,
        client,
        credential,
        now,
    })
}

impl CredentialCheck<'_> {
    /// After the lookup: a failure counts against the client (401), a success is remembered.
    pub fn finish(self, principal: Option<Principal>) -> Result<Principal, AppError> {
        if let Some(client) = self.client {
            self.state.limits.local.credential_checked(
                client,
                &self.credential,
                principal.is_some(),
                self.now,
            );
        }
        principal.ok_or(AppError::Unauthorized)
    }
}
