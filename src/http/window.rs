//! Time windows (SPEC §1.8): `from` inclusive, `to` exclusive; an RFC 3339 timestamp or a date
//! (`from` = 00:00Z that day, `to` = 00:00Z of the next day).

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::http::error::AppError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
