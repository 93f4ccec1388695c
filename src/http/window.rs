//! Time windows (SPEC §1.8): `from` inclusive, `to` exclusive; an RFC 3339 timestamp or a date
//! (`from` = 00:00Z that day, `to` = 00:00Z of the next day).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::AppError;
use crate::openapi;

/// A time window; by default the last 30 UTC days, today included (SPEC §1.8).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// Start, inclusive (a date = 00:00Z that day).
    #[param(schema_with = window_end)]
    pub from: Option<String>,
    /// End, exclusive (a date = 00:00Z of the next day).
    #[param(schema_with = window_end)]
    pub to: Option<String>,
}

/// A window end: an RFC 3339 timestamp or a date `YYYY-MM-DD` (SPEC §1.8).
pub fn window_end() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::timestamp_or_date()
}

/// Which end of a window a value is.
#[derive(Clone, Copy)]
pub enum End {
    From,
    To,
}

/// Parses one end of a window; a bad value is 422 on that field.
pub fn parse(raw: &str, end: End, field: &str) -> Result<DateTime<Utc>, AppError> {
    if let Some(at) = aggregates::timestamp::parse(raw) {
        return Ok(at);
    }
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
        AppError::field(field, "must be an RFC 3339 timestamp or a date YYYY-MM-DD")
    })?;
    let start = date
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    Ok(match end {
        End::From => start,
        End::To => start + Duration::days(1),
    })
}

/// A window whose ends may be open.
pub type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// An optional window: each end if given, and `from` < `to` when both are.
pub fn optional(from: Option<&str>, to: Option<&str>) -> Result<Window, AppError> {
    let from = from
        .filter(|f| !f.is_empty())
        .map(|f| parse(f, End::From, "from"))
        .transpose()?;
    let to = to
        .filter(|t| !t.is_empty())
        .map(|t| parse(t, End::To, "to"))
        .transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(AppError::field("from", "must be before to"));
        }
    }
    Ok((from, to))
}

/// A window with the default (SPEC §1.8): `to` = start of tomorrow UTC, `from` = `to` − 30 days;
/// at most 366 days (daily series).
pub fn with_default(
    from: Option<&str>,
    to: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), AppError> {
    let (from, to) = optional(from, to)?;
    let tomorrow = (now.date_naive() + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    let to = to.unwrap_or(tomorrow);
    let from = from.unwrap_or(to - Duration::days(30));
    if from >= to {
        return Err(AppError::field("from", "must be before to"));
    }
    if to - from > Duration::days(366) {
        return Err(AppError::field(
            "to",
            "the window may span at most 366 days",
        ));
    }
    Ok((from, to))
}

/// Every UTC date (`YYYY-MM-DD`) of `[from, to)`.
pub fn dates(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
    let mut day = from.date_naive();
    let mut out = Vec::new();
    while day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc() < to {
        out.push(day.format("%Y-%m-%d").to_string());
        day += Duration::days(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_window_is_the_last_30_utc_days_with_today() {
        let now = aggregates::timestamp::parse("2026-11-29T05:00:00Z").unwrap();
        let (from, to) = with_default(None, None, now).unwrap();
        assert_eq!(
            aggregates::timestamp::format(to),
            "2026-11-30T00:00:00.000000Z"
        );
        assert_eq!(
            aggregates::timestamp::format(from),
            "2026-10-31T00:00:00.000000Z"
        );
        assert_eq!(dates(from, to).len(), 30);
        assert_eq!(dates(from, to).last().unwrap(), "2026-11-29");
        assert!(with_default(Some("2025-01-01"), Some("2026-11-01"), now).is_err());
    }

    #[test]
    fn dates_cover_whole_utc_days() {
        let (from, to) = optional(Some("2026-11-01"), Some("2026-11-01")).unwrap();
        assert_eq!(
            aggregates::timestamp::format(from.unwrap()),
            "2026-11-01T00:00:00.000000Z"
        );
        assert_eq!(
            aggregates::timestamp::format(to.unwrap()),
            "2026-11-02T00:00:00.000000Z"
        );
    }

    #[test]
    fn offsets_are_normalised_and_bad_windows_refused() {
        let (from, _) = optional(Some("2026-11-01T02:00:00+02:00"), None).unwrap();
        assert_eq!(
            aggregates::timestamp::format(from.unwrap()),
            "2026-11-01T00:00:00.000000Z"
        );
        assert!(optional(Some("2026-11-02"), Some("2026-11-01")).is_err());
        assert!(optional(Some("yesterday"), None).is_err());
        assert!(optional(None, Some("2026-13-01")).is_err());
    }
}
