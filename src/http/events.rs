//! The audit log (SPEC §3.14): `GET /v1/admin/events`, platform-admin sessions only.

use axum::extract::State;
use projections::audit::{self, AuditFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::{aggregate_type, AuditEvent, AGGREGATE_TYPES};
use crate::error::{AppError, FieldErrors};
use crate::http::envelope::Envelope;
use crate::http::extract::{Auth, Query};
use crate::http::pagination;
use crate::state::AppState;

/// Routes under `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// The parameters of the audit log.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Only events at positions above this one (default 0): the previous page's `next_after`.
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// Page size, 1..=100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// Only events of this kind of aggregate.
    #[param(schema_with = aggregate_type)]
    aggregate_type: Option<String>,
    /// Only the events of this aggregate.
    aggregate_id: Option<String>,
}

/// A page of the audit log (SPEC §3.14).
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// Events in ascending position.
    pub events: Vec<AuditEvent>,
    /// The last position returned, or `after` if the page is empty.
    #[schema(minimum = 0)]
    pub next_after: i64,
}

/// A validated query.
struct EventsRequest {
    after: i64,
    limit: usize,
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
}

impl TryFrom<EventsQuery> for EventsRequest {
    type Error = AppError;

    fn try_from(query: EventsQuery) -> Result<Self, AppError> {
        let mut fields = FieldErrors::new();
        let after = match query.after.as_deref() {
            None => Some(0),
            Some(raw) => raw.parse::<i64>().ok().filter(|n| *n >= 0),
        };
        if after.is_none() {
            fields.insert("after".into(), "must be an integer of at least 0".into());
        }
        let limit = pagination::limit(query.limit.as_deref(), 20, 100)
            .map_err(|reason| fields.insert("limit".into(), reason))
            .ok();
        // An empty filter is no filter, as on the other listings.
        let aggregate_type = query.aggregate_type.filter(|t| !t.is_empty());
        if aggregate_type
            .as_deref()
            .is_some_and(|t| !AGGREGATE_TYPES.contains(&t))
        {
            fields.insert(
                "aggregate_type".into(),
                format!("must be one of {}", AGGREGATE_TYPES.join(", ")),
            );
        }
        match (after, limit) {
            (Some(after), Some(limit)) if fields.is_empty() => Ok(Self {
                after,
                limit,
                aggregate_type,
                aggregate_id: query.aggregate_id.filter(|i| !i.is_empty()),
            }),
            _ => Err(AppError::Validation(fields)),
        }
    }
}

#[utoipa::path(
    get,
    path = "/admin/events",
    summary = "The event log in audit order, after a position (platform-admin session).",
    security(("session" = [])),
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of events; a short page is the current end of the log.", body = EventPage),
        (status = 422, description = "after, limit or aggregate_type is invalid."),
    )
)]
/// Events above `after` in the audit order, ascending. A page stops at the last event the
/// `audit_order` projection has numbered, so a short page is the current end of the log.
async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<EventsQuery>,
) -> Result<Envelope<EventPage>, AppError> {
    principal.require_platform_admin()?;
    let request = EventsRequest::try_from(query)?;
    let filter = AuditFilter {
        aggregate_type: request.aggregate_type.as_deref(),
        aggregate_id: request.aggregate_id.as_deref(),
    };
    let events =
        audit::read_after(&state.store.db, request.after, filter, request.limit as i64).await?;
    let next_after = events.last().map_or(request.after, |e| e.position);
    Ok(Envelope::ok(EventPage {
        events: events.iter().map(AuditEvent::new).collect(),
        next_after,
    }))
}
