//! The service's clock. `IPTO_CLOCK_OFFSET_SECONDS` shifts it forward for tests of expiry, decay
//! and month rollover.

use chrono::{DateTime, Duration, Utc};

/// Wall-clock time plus a fixed offset.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    offset_seconds: i64,
}

impl Clock {
    /// A clock shifted forward by `offset_seconds`.
    pub fn with_offset(offset_seconds: i64) -> Self {
        Self { offset_seconds }
    }

    /// The current instant.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::seconds(self.offset_seconds)
    }
}
