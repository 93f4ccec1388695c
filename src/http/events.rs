//! The audit log (SPEC §3.14): `GET /v1/admin/events`, platform-admin sessions only.

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use projections::audit::{self, AuditFilter};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::app::AppState;
use crate::audit::{event_json, AGGREGATE_TYPES};
use crate::http::envelope;
use crate::http::error::{AppError, FieldErrors};
use crate::http::extract::{Auth, Query};
use crate::http::openapi;
use crate::http::pagination;
use crate::http::routes::Routes;

/// Routes under `/v1`.
pub fn routes() -> Routes {
    Routes::new().route("/admin/events", get(list))
}

/// The operations of this module, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(list))]
pub struct Api;

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

fn aggregate_type() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::choice(&AGGREGATE_TYPES.join("|"))
}

/// A page of the audit log (SPEC §3.14).
#[derive(ToSchema)]
pub struct EventPage {
    /// Events in ascending position.
    pub events: Vec<AuditEvent>,
    /// The last position returned, or `after` if the page is empty.
    #[schema(minimum = 0)]
    pub next_after: i64,
}

/// One recorded event.
#[derive(ToSchema)]
pub struct AuditEvent {
    /// Its place in the log: unique and increasing (gaps allowed).
    #[schema(minimum = 1)]
    pub position: i64,
    /// The kind of aggregate.
    #[schema(schema_with = aggregate_type)]
    pub aggregate_type: String,
    /// The aggregate.
    pub aggregate_id: String,
    /// 1-based per aggregate.
    #[schema(minimum = 1)]
    pub sequence: i64,
    /// E.g. `ObjectApproved`.
    pub event_type: String,
    /// E.g. `1.0`.
    pub event_version: String,
    /// The event's fields; never passwords, hashes, tokens or key secrets.
    #[schema(value_type = Value)]
    pub payload: Value,
    /// Who, when, in which request.
    pub metadata: AuditMetadata,
}

/// The circumstances of an event.
#[derive(ToSchema)]
pub struct AuditMetadata {
    /// `usr_…`, `key_…` or `system`.
    #[schema(schema_with = actor)]
    pub actor: String,
    /// The request, null for background jobs.
    #[schema(required = true)]
    pub request_id: Option<String>,
    /// When it happened.
    #[schema(format = DateTime)]
    pub occurred_at: String,
}

fn actor() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let id = |prefix: &str| {
        openapi::id_pattern(prefix)
            .trim_matches(['^', '$'])
            .to_owned()
    };
    openapi::schema(json!({
        "type": "string",
        "pattern": format!("^({}|{}|system)$", id("usr"), id("key")),
    }))
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
    path = "/v1/admin/events",
    tag = "admin",
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
