//! The audit log (SPEC §3.14): `GET /v1/admin/events`, platform-admin sessions only.

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use projections::audit::{self, AuditFilter};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::audit::{event_json, AGGREGATE_TYPES};
use crate::http::envelope;
use crate::http::error::{AppError, FieldErrors};
use crate::http::extract::{Auth, Query};
use crate::http::pagination;
use crate::http::routes::Routes;

/// Routes under `/v1`.
pub fn routes() -> Routes {
    Routes::new().route("/admin/events", get(list))
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<String>,
    limit: Option<String>,
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
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

/// Events above `after` in the audit order, ascending. A page stops at the last event the
/// `audit_order` projection has numbered, so a short page is the current end of the log.
async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<EventsQuery>,
) -> Result<Response, AppError> {
    principal.require_platform_admin()?;
    let request = EventsRequest::try_from(query)?;
    let filter = AuditFilter {
        aggregate_type: request.aggregate_type.as_deref(),
        aggregate_id: request.aggregate_id.as_deref(),
    };
    let events =
        audit::read_after(&state.store.db, request.after, filter, request.limit as i64).await?;
    let next_after = events.last().map_or(request.after, |e| e.position);
    let items: Vec<Value> = events
        .iter()
        .map(|e| event_json(e.position, &e.event))
        .collect();
    Ok(envelope::ok(
        json!({ "events": items, "next_after": next_after }),
    ))
}
