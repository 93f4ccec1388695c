//! The pure domain of ipto: aggregates (commands, events, errors, state), value objects and the
//! services aggregates ask through. No I/O lives here.

pub mod access;
pub mod api_key;
pub mod choice;
pub mod dataset;
pub mod email;
pub mod email_reservation;
pub mod ids;
pub mod login;
pub mod metering;
pub mod money;
pub mod object;
pub mod password;
pub mod payout;
pub mod search;
pub mod spend;
pub mod tenant;
pub mod text;
pub mod user;

pub use access::{Role, Scope};
pub use api_key::ApiKey;
pub use dataset::{
    Dataset, DatasetName, DatasetStatus, Description, MonetizationMode, PricingModel,
    SourceModality, Visibility,
};
pub use email::Email;
pub use email_reservation::EmailReservation;
pub use ids::{
    AccessId, ApiKeyId, DatasetId, GrantId, IdError, InvitationId, LoginId, ObjectId, RetrievalId,
    SearchActivityId, TenantId, UserId,
};
pub use login::Login;
pub use money::{Price, PriceError};
pub use object::{
    ContentType, Filename, Object, ObjectFieldError, ObjectMetadata, ObjectStatus, Sha256Hex,
};
pub use password::Password;
pub use tenant::Tenant;
pub use text::{DisplayName, TenantName, TextError};
pub use user::User;

/// Timestamps as stored and served: RFC 3339 UTC with microseconds and `Z`, so that text order is
/// time order.
pub mod timestamp {
    use chrono::{DateTime, SecondsFormat, Utc};

    /// Formats an instant as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub fn format(at: DateTime<Utc>) -> String {
        at.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// Parses any RFC 3339 timestamp and normalises it to UTC.
    pub fn parse(raw: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(raw)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        #[test]
        fn instants_print_in_utc_with_microseconds() {
            let at = parse("2026-12-31T23:30:00.5-01:00").unwrap();
            assert_eq!(format(at), "2027-01-01T00:30:00.500000Z");
            assert_eq!(parse("2027-01-01T00:30:00.5Z"), Some(at));
            assert_eq!(parse("2027-01-01 00:30"), None);
        }

        proptest! {
            #[test]
            fn text_order_is_time_order(a in 0i64..=253_402_300_799_999_999, b in 0i64..=253_402_300_799_999_999) {
                let (a, b) = (DateTime::from_timestamp_micros(a).unwrap(), DateTime::from_timestamp_micros(b).unwrap());
                prop_assert_eq!(format(a).cmp(&format(b)), a.cmp(&b));
                prop_assert_eq!(parse(&format(a)), Some(a));
            }
        }
    }
}
