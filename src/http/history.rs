//! One aggregate's history (platform-admin sessions): its events with their audit positions, and
//! its state folded up to a position or an instant (see [`crate::history`]).

use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::AGGREGATE_TYPES;
use crate::error::{AppError, FieldErrors};
use crate::history::{self, AggregateState, AsOf};
use crate::http::envelope::Envelope;
use crate::http::events::{self, EventPage, PageRequest, Selection};
use crate::http::extract::{Auth, Path, Query};
use crate::http::pagination;
use crate::state::AppState;

/// Routes under `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(aggregate_events))
        .routes(routes!(aggregate_state))
}

/// An aggregate, by type and id.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct AggregatePath {
    /// The kind of aggregate.
    #[param(schema_with = crate::audit::aggregate_type)]
    r#type: String,
    /// The aggregate's id.
    id: String,
}

impl AggregatePath {
    /// The type, if it is one of [`AGGREGATE_TYPES`].
    fn checked_type(&self) -> Result<&str, AppError> {
        if AGGREGATE_TYPES.contains(&self.r#type.as_str()) {
            Ok(&self.r#type)
        } else {
            Err(AppError::field(
                "type",
                format!("must be one of {}", AGGREGATE_TYPES.join(", ")),
            ))
        }
    }
}

/// A page of an aggregate's events.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// Only events at audit positions above this one (default 0): the previous page's
    /// `next_after`.
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// Page size, 1..=100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

#[utoipa::path(
    get,
    path = "/admin/aggregates/{type}/{id}/events",
    summary = "One aggregate's events with their audit positions (platform-admin session).",
    security(("session" = [])),
    params(AggregatePath, HistoryQuery),
    responses(
        (status = 200, description = "A page of the aggregate's events, ascending.", body = EventPage),
        (status = 404, description = "The aggregate has no events."),
        (status = 422, description = "type, after or limit is invalid."),
    )
)]
async fn aggregate_events(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(path): Path<AggregatePath>,
    Query(query): Query<HistoryQuery>,
) -> Result<Envelope<EventPage>, AppError> {
    principal.require_platform_admin()?;
    let aggregate_type = path.checked_type()?;
    let mut fields = FieldErrors::new();
    let after = events::position("after", query.after.as_deref(), &mut fields);
    let limit = pagination::limit(query.limit.as_deref(), 20, 100)
        .map_err(|reason| fields.insert("limit".into(), reason))
        .unwrap_or_default();
    if !fields.is_empty() {
        return Err(AppError::Validation(fields));
    }
    let request = PageRequest {
        selection: Selection {
            after,
            aggregate_type: Some(aggregate_type.to_owned()),
            aggregate_id: Some(path.id.clone()),
            tenant_id: None,
        },
        limit,
    };
    let page = events::page(&state, &request).await?;
    if page.events.is_empty() && !history::exists(&state.store.db, aggregate_type, &path.id).await?
    {
        return Err(AppError::NotFound);
    }
    Ok(Envelope::ok(page))
}

/// Where the fold stops: at most one of the two.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AsOfQuery {
    /// Fold the events at audit positions up to this one.
    #[param(value_type = Option<i64>, minimum = 0)]
    as_of_position: Option<String>,
    /// Fold the events that occurred at or before this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    as_of: Option<String>,
}

impl TryFrom<AsOfQuery> for AsOf {
    type Error = AppError;

    fn try_from(query: AsOfQuery) -> Result<Self, AppError> {
        // An empty parameter is no parameter, as on the listings.
        fn given(raw: &Option<String>) -> Option<&str> {
            raw.as_deref().filter(|r| !r.is_empty())
        }
        match (given(&query.as_of_position), given(&query.as_of)) {
            (None, None) => Ok(AsOf::Now),
            (Some(_), Some(_)) => Err(AppError::field(
                "as_of",
                "give as_of_position or as_of, not both",
            )),
            (Some(raw), None) => raw
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(AsOf::Position)
                .ok_or_else(|| {
                    AppError::field("as_of_position", "must be an integer of at least 0")
                }),
            (None, Some(raw)) => chrono::DateTime::parse_from_rfc3339(raw)
                .map(|t| AsOf::Time(t.to_utc()))
                .map_err(|_| AppError::field("as_of", "must be an RFC 3339 date-time")),
        }
    }
}

#[utoipa::path(
    get,
    path = "/admin/aggregates/{type}/{id}",
    summary = "One aggregate's state, now or as of an audit position or an instant (platform-admin session).",
    description = "The fold of the aggregate's events up to the point, with the write side's own \
        `apply`: what a command at that point would have decided on.",
    security(("session" = [])),
    params(AggregatePath, AsOfQuery),
    responses(
        (status = 200, description = "The state after the last event up to the point.", body = AggregateState),
        (status = 404, description = "The aggregate had no event by then (or has none)."),
        (status = 422, description = "type, as_of_position or as_of is invalid, or both are given."),
    )
)]
async fn aggregate_state(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(path): Path<AggregatePath>,
    Query(query): Query<AsOfQuery>,
) -> Result<Envelope<AggregateState>, AppError> {
    principal.require_platform_admin()?;
    let aggregate_type = path.checked_type()?;
    let as_of = AsOf::try_from(query)?;
    history::state_as_of(&state.store.db, aggregate_type, &path.id, as_of)
        .await?
        .map(Envelope::ok)
        .ok_or(AppError::NotFound)
}
