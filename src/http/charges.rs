//! What buyers bound their charges with: the amounts they send (`max_price_per_result`,
//! `max_charge`), and a key's monthly `spend_limit`, which every charge of the key reserves
//! against before it is recorded (see [`aggregates::spend`]).

use aggregates::money::{Amount, AmountError};
use aggregates::spend::{key_month, KeySpend, SpendCommand};
use aggregates::ApiKeyId;
use chrono::{DateTime, Utc};

use crate::app::AppState;
use crate::auth::{Principal, PrincipalKind};
use crate::http::error::AppError;

/// A bound from a request: absent, or an amount of at most `max_micros`; anything else is 422
/// on `field` (an empty text included: a blank bound must not mean "any price").
pub fn bound(
    field: &str,
    raw: Option<Result<Amount, AmountError>>,
) -> Result<Option<i64>, AppError> {
    match raw {
        None => Ok(None),
        Some(Ok(amount)) => Ok(Some(amount.micros())),
        Some(Err(e)) => Err(AppError::field(field, e.to_string())),
    }
}

/// An amount reserved against a key's month for one charge.
pub struct Reservation {
    month: String,
    reservation_id: String,
    amount_micros: i64,
}

/// Reserves `amount_micros` for the charge `reservation_id` (an access or a search activity)
/// against the month of `at` of the caller's key, if the key has a spend limit: 402
/// `spend_limit_exceeded` when the month would pass it. Sessions, keys without a limit and free
/// charges reserve nothing (`None`).
pub async fn reserve(
    state: &AppState,
    principal: &Principal,
    reservation_id: &str,
    amount_micros: i64,
    at: DateTime<Utc>,
) -> Result<Option<Reservation>, AppError> {
    let PrincipalKind::ApiKey { api_key_id } = &principal.kind else {
        return Ok(None);
    };
    if amount_micros == 0 {
        return Ok(None);
    }
    // The limit is fixed when the key is created, so its read model is never stale for it.
    let key = projections::api_keys::key(&state.store.db, api_key_id)
        .await?
        .ok_or(AppError::Unauthorized)?;
    let Some(limit_micros) = key.spend_limit_micros else {
        return Ok(None);
    };
    let month = key_month(
        &ApiKeyId::parse(api_key_id).map_err(AppError::internal)?,
        at,
    );
    let command = SpendCommand::Reserve {
        reservation_id: reservation_id.to_owned(),
        amount_micros,
        limit_micros,
    };
    state
        .store
        .execute_latest::<KeySpend>(&month, command, &(), &principal.actor())
        .await?;
    Ok(Some(Reservation {
        month,
        reservation_id: reservation_id.to_owned(),
        amount_micros,
    }))
}

/// Gives back the reservation of a charge that was not recorded. Best effort: if this fails too,
/// the amount stays reserved, so the key may spend less than its limit this month, never more.
pub async fn release(state: &AppState, principal: &Principal, reservation: Option<Reservation>) {
    let Some(r) = reservation else { return };
    let command = SpendCommand::Release {
        reservation_id: r.reservation_id.clone(),
        amount_micros: r.amount_micros,
    };
    if let Err(error) = state
        .store
        .execute_latest::<KeySpend>(&r.month, command, &(), &principal.actor())
        .await
    {
        tracing::warn!(%error, reservation = %r.reservation_id, "could not release a spend reservation");
    }
}
