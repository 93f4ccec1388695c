//! Consistency across instances: every response to a request that wrote carries the log position
//! it reached in `Ipto-Log-Position`; a request that sends one back, to any instance, is answered
//! only once that instance's read models and search index have applied it (a bounded wait, then
//! 503 `not_caught_up` with `Retry-After`). Requests without it are answered as before.
//!
//! The value is opaque to clients: `TX.POSITION` ([`LogPosition`]'s text), the PostgreSQL
//! transaction that wrote the event and its global position (`0.POSITION` on SQLite), the order
//! the projections follow.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use projections::LogPosition;

use crate::error::AppError;
use crate::state::AppState;

/// The request and response header.
pub const LOG_POSITION: HeaderName = HeaderName::from_static("ipto-log-position");

/// How long a request waits for this instance to apply the position it sent.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

/// Seconds a client waits before retrying a `not_caught_up`.
const RETRY_AFTER: u64 = 1;
/// Seconds a client waits before retrying a `rebuilding`.
const REBUILDING_RETRY_AFTER: u64 = 5;

/// The header value of `position`.
pub fn header_value(position: LogPosition) -> HeaderValue {
    HeaderValue::from_str(&position.to_string()).expect("digits and a dot")
}

/// Waits until this instance has applied the position the request sent, if it sent one: 400 for
/// a malformed value or one past the log's end (no instance issued it), 503 `not_caught_up` when
/// the wait runs out (`rebuilding` while a new read-model version is rebuilt).
pub async fn catch_up(headers: &HeaderMap, state: &AppState) -> Result<(), AppError> {
    let Some(value) = headers.get(LOG_POSITION) else {
        return Ok(());
    };
    let unknown = || {
        AppError::bad_request(
            "Ipto-Log-Position must be a position a response of this service carried.",
        )
    };
    let target: LogPosition = value
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(unknown)?;
    let tail = projections::log::tail(&state.store.db)
        .await?
        .unwrap_or_default();
    if target > tail {
        return Err(unknown());
    }
    if state
        .store
        .engine
        .wait_for(target, None, CATCH_UP_WAIT)
        .await
    {
        Ok(())
    } else if !state.store.engine.rebuilding().is_empty() {
        // Say why: a new read-model version is being rebuilt, which may take longer.
        Err(AppError::Rebuilding {
            retry_after: REBUILDING_RETRY_AFTER,
        })
    } else {
        Err(AppError::NotCaughtUp {
            retry_after: RETRY_AFTER,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Option<LogPosition> {
        text.parse().ok()
    }

    proptest! {
        #[test]
        fn a_position_reads_back_as_itself(tx in 0..i64::MAX, position in 0..i64::MAX) {
            let at = LogPosition { tx, position };
            prop_assert_eq!(parse(header_value(at).to_str().unwrap()), Some(at));
        }

        #[test]
        fn anything_else_is_refused(text in "\\PC{0,30}") {
            let shaped = text.split_once('.').is_some_and(|(a, b)| {
                [a, b].iter().all(|s| !s.is_empty() && s.len() <= 19 && s.bytes().all(|c| c.is_ascii_digit()))
            });
            if !shaped {
                prop_assert_eq!(parse(&text), None);
            }
        }
    }

    #[test]
    fn signs_overflow_and_extra_parts_are_refused() {
        for text in [
            "-1.2",
            "1.-2",
            "1.2.3",
            "9223372036854775808.1",
            "1",
            ".",
            "1.",
            "a.b",
            "1.2 3",
            " 1.2",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }
}
