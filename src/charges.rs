//! What buyers bound their charges with: the amounts they send (`max_price_per_result`,
//! `max_charge`), and a key's monthly `spend_limit`, which every charge of the key reserves
//! against before it is recorded (see [`aggregates::spend`]).

use aggregates::money::{Amount, AmountError};
use aggregates::spend::{key_month, KeySpend, SpendCommand};
use aggregates::ApiKeyId;
use chrono::{DateTime, Utc};

use crate::auth::{Principal, PrincipalKind};
use crate::error::AppError;
use crate::state::AppState;

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

/// Amounts reserved for one charge, on the months of the caller's key and of every key above it
/// that has a spend limit.
pub struct Reservation {
    months: Vec<String>,
    reservation_id: String,
    amount_micros: i64,
}

/// Reserves `amount_micros` for the charge `reservation_id` (an access or a search activity)
/// against the month of `at` of the caller's key and of every key above it (each created by the
/// next) that has a spend limit: a key's children spend from its budget too, so no key can hand
/// out more than it may spend. 402 `spend_limit_exceeded` when any month would pass its limit,
/// and then nothing stays reserved. Sessions, keys without a limited key above them and free
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
    // Limits and creators are fixed when a key is created, so the read model is never stale for
    // them; a chain is at most as deep as authentication allows.
    let mut limited = Vec::new();
    let mut next = Some(api_key_id.clone());
    while let Some(id) = next.filter(|id| id.starts_with("key_")) {
        let key = projections::api_keys::key(&state.store.db, &id)
            .await?
            .ok_or(AppError::Unauthorized)?;
        if let Some(limit_micros) = key.spend_limit_micros {
            limited.push((id, limit_micros));
        }
        next = key.created_by;
    }
    if limited.is_empty() {
        return Ok(None);
    }
    let mut reservation = Reservation {
        months: Vec::new(),
        reservation_id: reservation_id.to_owned(),
        amount_micros,
    };
    for (id, limit_micros) in limited {
        let month = key_month(&ApiKeyId::parse(&id).map_err(AppError::internal)?, at);
        let command = SpendCommand::Reserve {
            reservation_id: reservation_id.to_owned(),
            amount_micros,
            limit_micros,
        };
        let reserved = state
            .store
            .execute_latest::<KeySpend>(&month, command, &(), &principal.actor())
            .await;
        if let Err(error) = reserved {
            release(state, principal, Some(reservation)).await;
            return Err(error.into());
        }
        reservation.months.push(month);
    }
    Ok(Some(reservation))
}

/// Gives back the reservation of a charge that was not recorded. Best effort: if this fails too,
/// the amount stays reserved, so a key may spend less than its limit this month, never more.
pub async fn release(state: &AppState, principal: &Principal, reservation: Option<Reservation>) {
    let Some(r) = reservation else { return };
    for month in &r.months {
        let command = SpendCommand::Release {
            reservation_id: r.reservation_id.clone(),
            amount_micros: r.amount_micros,
        };
        if let Err(error) = state
            .store
            .execute_latest::<KeySpend>(month, command, &(), &principal.actor())
            .await
        {
            tracing::warn!(%error, reservation = %r.reservation_id, "could not release a spend reservation");
        }
    }
}
