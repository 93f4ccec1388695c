//! The audit log (SPEC §3.14) as pages and as a live stream: `GET /v1/admin/events[/stream]` for
//! platform-admin sessions, and `GET /v1/audit/events[/stream]`, where a tenant reads the events
//! recorded for it (an owner's or admin's session, or a key with `usage:read`).
//!
//! A stream is Server-Sent Events: `id:` is the audit position, `event:` the event type, `data:`
//! the list's item. It resumes after `Last-Event-ID` (or `?after=`), sends a `: heartbeat`
//! comment after 15 s without events, and never holds more than [`BUFFER`] events for a client:
//! a follower reads the log a page at a time into a bounded channel, and a client that leaves the
//! channel full for [`SLOW_CLIENT`] is dropped (it reconnects with `Last-Event-ID`).

use std::convert::Infallible;
use std::time::Duration;

use aggregates::{Role, Scope};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use projections::audit::{self, AuditFilter};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::{aggregate_type, AuditEvent, AGGREGATE_TYPES};
use crate::auth::{Principal, PrincipalKind};
use crate::error::{AppError, FieldErrors};
use crate::http::envelope::Envelope;
use crate::http::extract::{Auth, Query};
use crate::http::pagination;
use crate::state::AppState;

/// Routes under `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(stream))
        .routes(routes!(tenant_list))
        .routes(routes!(tenant_stream))
}

/// A comment sent after this long without an event, so proxies keep the connection.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events held for one client at most.
pub const BUFFER: usize = 256;
/// A client that takes no event for this long while its buffer is full is dropped.
pub const SLOW_CLIENT: Duration = Duration::from_secs(30);
/// How often an idle follower looks at the log itself (workers of another instance may number
/// the events).
const POLL: Duration = Duration::from_secs(1);
/// Events a follower reads per query.
const PAGE: i64 = 100;

/// The parameters of a page of the log.
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

/// The parameters of a stream of the log.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// Only events at positions above this one (default 0); a `Last-Event-ID` header wins.
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// Only events of this kind of aggregate.
    #[param(schema_with = aggregate_type)]
    aggregate_type: Option<String>,
    /// Only the events of this aggregate.
    aggregate_id: Option<String>,
    /// `false`: send the events up to the current end of the log, then close (default `true`:
    /// keep following).
    #[param(value_type = Option<bool>)]
    follow: Option<String>,
}

/// The `Last-Event-ID` header of a stream request.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct ResumeHeader {
    /// The last position received: the stream resumes after it (and wins over `after`).
    #[param(rename = "Last-Event-ID", value_type = i64, required = false, minimum = 0)]
    last_event_id: Option<String>,
}

/// One Server-Sent Event of a stream, as the SSE format carries its fields.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StreamEvent {
    /// The audit position.
    #[schema(pattern = "^[1-9][0-9]*$")]
    id: String,
    /// The event type, e.g. `ObjectApproved`.
    event: String,
    /// The item of `GET /v1/admin/events` (an `AuditEvent`) as JSON.
    data: String,
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

/// Which events a read selects, validated.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub after: i64,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    /// Set from the caller, never from a parameter.
    pub tenant_id: Option<String>,
}

impl Selection {
    fn filter(&self) -> AuditFilter<'_> {
        AuditFilter {
            aggregate_type: self.aggregate_type.as_deref(),
            aggregate_id: self.aggregate_id.as_deref(),
            tenant_id: self.tenant_id.as_deref(),
        }
    }

    /// The common parameters; a problem is recorded in `fields`.
    fn parse(
        after: Option<&str>,
        aggregate_type: Option<String>,
        aggregate_id: Option<String>,
        fields: &mut FieldErrors,
    ) -> Selection {
        let after = position("after", after, fields);
        // An empty filter is no filter, as on the other listings.
        let aggregate_type = aggregate_type.filter(|t| !t.is_empty());
        if aggregate_type
            .as_deref()
            .is_some_and(|t| !AGGREGATE_TYPES.contains(&t))
        {
            fields.insert(
                "aggregate_type".into(),
                format!("must be one of {}", AGGREGATE_TYPES.join(", ")),
            );
        }
        Selection {
            after,
            aggregate_type,
            aggregate_id: aggregate_id.filter(|i| !i.is_empty()),
            tenant_id: None,
        }
    }
}

/// A non-negative audit position (0 when absent); a problem is recorded in `fields` as `name`'s.
pub fn position(name: &str, raw: Option<&str>, fields: &mut FieldErrors) -> i64 {
    match raw.map(|raw| raw.parse::<i64>().ok().filter(|n| *n >= 0)) {
        None => 0,
        Some(Some(n)) => n,
        Some(None) => {
            fields.insert(name.into(), "must be an integer of at least 0".into());
            0
        }
    }
}

/// A validated page request.
pub struct PageRequest {
    pub selection: Selection,
    pub limit: usize,
}

impl TryFrom<EventsQuery> for PageRequest {
    type Error = AppError;

    fn try_from(query: EventsQuery) -> Result<Self, AppError> {
        let mut fields = FieldErrors::new();
        let selection = Selection::parse(
            query.after.as_deref(),
            query.aggregate_type,
            query.aggregate_id,
            &mut fields,
        );
        let limit = pagination::limit(query.limit.as_deref(), 20, 100)
            .map_err(|reason| fields.insert("limit".into(), reason))
            .unwrap_or_default();
        if fields.is_empty() {
            Ok(Self { selection, limit })
        } else {
            Err(AppError::Validation(fields))
        }
    }
}

/// A validated stream request.
struct StreamRequest {
    selection: Selection,
    follow: bool,
}

impl StreamRequest {
    fn parse(query: StreamQuery, headers: &HeaderMap) -> Result<Self, AppError> {
        let mut fields = FieldErrors::new();
        let mut selection = Selection::parse(
            query.after.as_deref(),
            query.aggregate_type,
            query.aggregate_id,
            &mut fields,
        );
        if let Some(last) = headers.get("last-event-id") {
            let raw = last.to_str().ok();
            selection.after = position("Last-Event-ID", raw.or(Some("")), &mut fields);
        }
        let follow = match query.follow.as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(_) => {
                fields.insert("follow".into(), "must be true or false".into());
                true
            }
        };
        if fields.is_empty() {
            Ok(Self { selection, follow })
        } else {
            Err(AppError::Validation(fields))
        }
    }
}

/// The page `request` selects.
pub async fn page(state: &AppState, request: &PageRequest) -> Result<EventPage, AppError> {
    let selection = &request.selection;
    let events = audit::read_after(
        &state.store.db,
        selection.after,
        selection.filter(),
        request.limit as i64,
    )
    .await?;
    Ok(EventPage {
        next_after: events.last().map_or(selection.after, |e| e.position),
        events: events.iter().map(AuditEvent::new).collect(),
    })
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
    let request = PageRequest::try_from(query)?;
    Ok(Envelope::ok(page(&state, &request).await?))
}

#[utoipa::path(
    get,
    path = "/admin/events/stream",
    summary = "The event log as Server-Sent Events, live (platform-admin session).",
    description = "`id:` is the audit position, `event:` the event type, `data:` the item of \
        `GET /v1/admin/events`. Resumes after `Last-Event-ID` or `after`; a `: heartbeat` comment \
        follows 15 s without events; a client that takes nothing for 30 s while 256 events wait \
        is dropped and resumes with `Last-Event-ID`.",
    security(("session" = [])),
    params(StreamQuery, ResumeHeader),
    responses(
        (status = 200, description = "The stream.", content_type = "text/event-stream", body = StreamEvent),
        (status = 422, description = "after, Last-Event-ID, follow or aggregate_type is invalid."),
    )
)]
async fn stream(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<Response, AppError> {
    principal.require_platform_admin()?;
    let request = StreamRequest::parse(query, &headers)?;
    Ok(sse(state, request))
}

/// 403 unless the caller may audit its tenant: an owner's or admin's session, or a key with
/// `usage:read`.
fn require_tenant_auditor(principal: &Principal) -> Result<(), AppError> {
    let session = matches!(principal.kind, PrincipalKind::User { .. });
    if session
        && !principal
            .roles
            .iter()
            .any(|r| matches!(r, Role::Owner | Role::Admin))
    {
        return Err(AppError::Forbidden(
            "Only the tenant's owners and admins read its audit log.".into(),
        ));
    }
    principal.require(Scope::UsageRead)
}

#[utoipa::path(
    get,
    path = "/audit/events",
    tag = "audit",
    summary = "The events recorded for the caller's tenant, in audit order (owner or admin session, or usage:read).",
    description = "The items and positions of `GET /v1/admin/events`, only those whose \
        `metadata.tenant_id` is the caller's tenant; positions have gaps where other tenants' \
        events are.",
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of the tenant's events.", body = EventPage),
        (status = 422, description = "after, limit or aggregate_type is invalid."),
    )
)]
async fn tenant_list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<EventsQuery>,
) -> Result<Envelope<EventPage>, AppError> {
    require_tenant_auditor(&principal)?;
    let mut request = PageRequest::try_from(query)?;
    request.selection.tenant_id = Some(principal.tenant_id.clone());
    Ok(Envelope::ok(page(&state, &request).await?))
}

#[utoipa::path(
    get,
    path = "/audit/events/stream",
    tag = "audit",
    summary = "The caller's tenant's events as Server-Sent Events, live (owner or admin session, or usage:read).",
    description = "As `GET /v1/admin/events/stream`, only the events of `GET /v1/audit/events`.",
    params(StreamQuery, ResumeHeader),
    responses(
        (status = 200, description = "The stream.", content_type = "text/event-stream", body = StreamEvent),
        (status = 422, description = "after, Last-Event-ID, follow or aggregate_type is invalid."),
    )
)]
async fn tenant_stream(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<Response, AppError> {
    require_tenant_auditor(&principal)?;
    let mut request = StreamRequest::parse(query, &headers)?;
    request.selection.tenant_id = Some(principal.tenant_id.clone());
    Ok(sse(state, request))
}

/// The SSE response of a stream request: a follower task feeds a bounded channel.
fn sse(state: AppState, request: StreamRequest) -> Response {
    let (events, receiver) = mpsc::channel(BUFFER);
    tokio::spawn(follow(
        state,
        request.selection,
        request.follow,
        events,
        SLOW_CLIENT,
    ));
    Sse::new(receive(receiver))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response()
}

fn receive(receiver: mpsc::Receiver<Event>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok(event), receiver))
    })
}

/// Sends the selected events to `events` from `selection.after` on, in order, and then (when
/// `follow`) each one as it is numbered. Ends when the client is gone, or has left `events` full
/// for `patience`, or the database fails (the client resumes).
pub async fn follow(
    state: AppState,
    mut selection: Selection,
    follow: bool,
    events: mpsc::Sender<Event>,
    patience: Duration,
) {
    let engine = &state.store.engine;
    loop {
        // Read before looking at the log, so a numbering after the read wakes the wait below.
        let seen = engine.published(audit::NAME);
        let page =
            match audit::read_after(&state.store.db, selection.after, selection.filter(), PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "an event stream stopped on a database error");
                    return;
                }
            };
        let full = page.len() as i64 == PAGE;
        for numbered in &page {
            let item = AuditEvent::new(numbered);
            let Ok(event) = Event::default()
                .id(numbered.position.to_string())
                .event(&numbered.event.event_type)
                .json_data(&item)
            else {
                return;
            };
            if events.send_timeout(event, patience).await.is_err() {
                // Gone, or too slow: the client resumes from its last id.
                return;
            }
            selection.after = numbered.position;
        }
        if full {
            continue;
        }
        if !follow {
            return;
        }
        tokio::select! {
            _ = engine.moved_past(audit::NAME, seen) => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = events.closed() => return,
        }
    }
}
