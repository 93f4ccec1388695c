//! An aggregate's history as auditors read it: its events in the audit order, and its state as
//! of any point of that order or of time. The aggregates are pure, so a past state is the fold of
//! the events up to that point, with the same `apply` the write side uses.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use projections::audit::{self, AuditFilter};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::audit::aggregate_type;
use crate::error::AppError;

/// Where a fold stops.
#[derive(Clone, Copy, Debug)]
pub enum AsOf {
    /// The aggregate as it is now (every numbered event).
    Now,
    /// After the events at audit positions up to this one.
    Position(i64),
    /// After the events that occurred at or before this instant.
    Time(DateTime<Utc>),
}

impl AsOf {
    /// Whether the numbered event is past the point.
    fn excludes(self, event: &audit::AuditEvent) -> bool {
        match self {
            AsOf::Now => false,
            AsOf::Position(position) => event.position > position,
            AsOf::Time(at) => DateTime::parse_from_rfc3339(&event.event.metadata.occurred_at)
                .map_or(true, |occurred| occurred.to_utc() > at),
        }
    }
}

/// An aggregate's state at a point of the log.
#[derive(Serialize, ToSchema)]
pub struct AggregateState {
    /// The kind of aggregate.
    #[schema(schema_with = aggregate_type)]
    pub aggregate_type: String,
    /// The aggregate.
    pub aggregate_id: String,
    /// The audit position of the last event folded.
    #[schema(minimum = 1)]
    pub audit_position: i64,
    /// The sequence of the last event folded: how many events made this state.
    #[schema(minimum = 1)]
    pub sequence: i64,
    /// When the last event folded occurred.
    #[schema(format = DateTime)]
    pub occurred_at: String,
    /// The aggregate's state, as the write side holds it after those events.
    #[schema(value_type = Object)]
    pub state: Value,
}

/// Whether aggregate `aggregate_type`/`id` has a numbered event.
pub async fn exists(
    db: &projections::Db,
    aggregate_type: &str,
    id: &str,
) -> Result<bool, AppError> {
    let filter = AuditFilter {
        aggregate_type: Some(aggregate_type),
        aggregate_id: Some(id),
        tenant_id: None,
    };
    Ok(!audit::read_after(db, 0, filter, 1).await?.is_empty())
}

/// Events read per page while folding.
const PAGE: i64 = 500;

/// The state of aggregate `aggregate_type`/`id` as of `as_of`; `None` when it had no event by
/// then (an unknown aggregate, or one created later). `aggregate_type` is one of
/// [`crate::audit::AGGREGATE_TYPES`].
pub async fn state_as_of(
    db: &projections::Db,
    aggregate_type: &str,
    id: &str,
    as_of: AsOf,
) -> Result<Option<AggregateState>, AppError> {
    use aggregates::{
        api_key::ApiKey, dataset::Dataset, email_reservation::EmailReservation, login::Login,
        metering::Download, object::Object, payout::PayoutStatement, search::Search,
        spend::KeySpend, tenant::Tenant, user::User,
    };
    match aggregate_type {
        "tenant" => fold::<Tenant>(db, id, as_of).await,
        "user" => fold::<User>(db, id, as_of).await,
        "dataset" => fold::<Dataset>(db, id, as_of).await,
        "object" => fold::<Object>(db, id, as_of).await,
        "api_key" => fold::<ApiKey>(db, id, as_of).await,
        "search" => fold::<Search>(db, id, as_of).await,
        "access" => fold::<Download>(db, id, as_of).await,
        "payout_statement" => fold::<PayoutStatement>(db, id, as_of).await,
        "key_spend" => fold::<KeySpend>(db, id, as_of).await,
        "email_reservation" => fold::<EmailReservation>(db, id, as_of).await,
        "login" => fold::<Login>(db, id, as_of).await,
        other => Err(AppError::field(
            "aggregate_type",
            format!("unknown aggregate type {other}"),
        )),
    }
}

/// Folds `A`'s events of `id`, page by page (memory stays one page and the state), up to `as_of`.
async fn fold<A: Aggregate>(
    db: &projections::Db,
    id: &str,
    as_of: AsOf,
) -> Result<Option<AggregateState>, AppError> {
    let filter = AuditFilter {
        aggregate_type: Some(A::TYPE),
        aggregate_id: Some(id),
        tenant_id: None,
    };
    let mut aggregate = A::default();
    let mut last: Option<audit::AuditEvent> = None;
    let mut after = 0;
    'pages: loop {
        let page = audit::read_after(db, after, filter, PAGE).await?;
        let full = page.len() as i64 == PAGE;
        for mut numbered in page {
            if as_of.excludes(&numbered) {
                break 'pages;
            }
            // The state holds the plain values (or the erased placeholders).
            projections::log::open_sealed(db, std::slice::from_mut(&mut numbered.event)).await?;
            let event: A::Event = numbered.event.decode().map_err(|e| {
                AppError::Internal(format!(
                    "event at audit position {} does not decode: {e}",
                    numbered.position
                ))
            })?;
            aggregate.apply(event);
            after = numbered.position;
            last = Some(numbered);
        }
        if !full {
            break;
        }
    }
    let Some(last) = last else {
        return Ok(None);
    };
    let state = serde_json::to_value(&aggregate)
        .map_err(|e| AppError::Internal(format!("a state does not serialize: {e}")))?;
    Ok(Some(AggregateState {
        aggregate_type: A::TYPE.to_owned(),
        aggregate_id: id.to_owned(),
        audit_position: last.position,
        sequence: last.event.sequence,
        occurred_at: last.event.metadata.occurred_at,
        state,
    }))
}
