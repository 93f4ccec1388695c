//! A key's spend in one UTC month, held against the key's `spend_limit`.
//!
//! Charges are their own small aggregates (a download, a search), so nothing in them can see
//! what else a key spent; a check against a read model would race (twenty requests read the same
//! total and all pass). Every charge of a key with a limit therefore first reserves its amount
//! here, on the aggregate of that key and month: the reservation is refused when it would take
//! the month past the limit, and the optimistic lock on this one stream orders concurrent
//! reservations, so however many requests race, the month never exceeds the limit. The charge is
//! recorded after its reservation; a charge that then fails releases it. (A crash between the two
//! leaves the amount reserved: the key may spend less than its limit, never more.)
//!
//! Every event carries the month's total after it, so the state is the last event's alone
//! ([`LatestEventState`]): a command loads one event however long the month's stream.

use chrono::{DateTime, Datelike, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::ApiKeyId;

/// The largest `spend_limit` a key may have: 10^12 USD (in micro-USD, well inside 63 bits).
pub const MAX_SPEND_LIMIT_MICROS: i64 = 1_000_000_000_000 * crate::money::MICROS;

/// An aggregate whose state after any history equals its state after the last event alone: its
/// events carry the running state, so it can be loaded from its last event.
pub trait LatestEventState: Aggregate {}

/// The spend aggregate of `api_key_id` in the UTC month of `at`: `key_…/YYYY-MM`.
pub fn key_month(api_key_id: &ApiKeyId, at: DateTime<Utc>) -> String {
    format!("{api_key_id}/{:04}-{:02}", at.year(), at.month())
}

/// What a key has reserved in one month, in micro-USD.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KeySpend {
    spent_micros: i64,
}

impl KeySpend {
    /// Reserved so far this month.
    pub fn spent_micros(&self) -> i64 {
        self.spent_micros
    }
}

/// Commands on a key's month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendCommand {
    /// Reserve a charge's amount, unless the month would pass `limit_micros`.
    Reserve {
        /// The charge it is for: an access (`acc_`) or a search activity (`sa_`).
        reservation_id: String,
        amount_micros: i64,
        /// The key's `spend_limit`.
        limit_micros: i64,
    },
    /// Give back a reservation whose charge was not recorded.
    Release {
        reservation_id: String,
        amount_micros: i64,
    },
}

/// Facts about a key's month; each carries the month's total after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpendEvent {
    /// An amount was reserved for a charge.
    SpendReserved {
        reservation_id: String,
        amount_micros: i64,
        limit_micros: i64,
        spent_micros: i64,
    },
    /// A reservation was given back: its charge was not recorded.
    SpendReleased {
        reservation_id: String,
        amount_micros: i64,
        spent_micros: i64,
    },
}

impl DomainEvent for SpendEvent {
    fn event_type(&self) -> String {
        match self {
            SpendEvent::SpendReserved { .. } => "SpendReserved",
            SpendEvent::SpendReleased { .. } => "SpendReleased",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

/// Business-rule violations on a key's month.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpendError {
    /// The charge would take the month past the key's limit (402 `spend_limit_exceeded`).
    #[error("spend limit exceeded")]
    LimitExceeded {
        limit_micros: i64,
        spent_micros: i64,
        amount_micros: i64,
    },
    /// A negative amount, or a release of more than is reserved (500: computed by the server).
    #[error("invalid amount")]
    InvalidAmount,
}

impl Aggregate for KeySpend {
    const TYPE: &'static str = "key_spend";
    type Command = SpendCommand;
    type Event = SpendEvent;
    type Error = SpendError;
    type Services = ();

    async fn handle(
        &mut self,
        command: SpendCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), SpendError> {
        let event = match command {
            SpendCommand::Reserve {
                reservation_id,
                amount_micros,
                limit_micros,
            } => {
                if amount_micros < 0 {
                    return Err(SpendError::InvalidAmount);
                }
                match self.spent_micros.checked_add(amount_micros) {
                    Some(spent) if spent <= limit_micros => SpendEvent::SpendReserved {
                        reservation_id,
                        amount_micros,
                        limit_micros,
                        spent_micros: spent,
                    },
                    _ => {
                        return Err(SpendError::LimitExceeded {
                            limit_micros,
                            spent_micros: self.spent_micros,
                            amount_micros,
                        })
                    }
                }
            }
            SpendCommand::Release {
                reservation_id,
                amount_micros,
            } => {
                if !(0..=self.spent_micros).contains(&amount_micros) {
                    return Err(SpendError::InvalidAmount);
                }
                SpendEvent::SpendReleased {
                    reservation_id,
                    amount_micros,
                    spent_micros: self.spent_micros - amount_micros,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: SpendEvent) {
        // The total after the event, whatever came before: see [`LatestEventState`].
        self.spent_micros = match event {
            SpendEvent::SpendReserved { spent_micros, .. }
            | SpendEvent::SpendReleased { spent_micros, .. } => spent_micros,
        };
    }
}

impl LatestEventState for KeySpend {}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use proptest::prelude::*;

    fn reserved(id: &str, amount: i64, spent: i64) -> SpendEvent {
        SpendEvent::SpendReserved {
            reservation_id: id.into(),
            amount_micros: amount,
            limit_micros: 5_000_000,
            spent_micros: spent,
        }
    }

    fn reserve(id: &str, amount: i64) -> SpendCommand {
        SpendCommand::Reserve {
            reservation_id: id.into(),
            amount_micros: amount,
            limit_micros: 5_000_000,
        }
    }

    #[test]
    fn a_reservation_within_the_limit_is_recorded_with_the_new_total() {
        TestFramework::<KeySpend>::with(())
            .given(vec![reserved("acc_1", 4_000_000, 4_000_000)])
            .when(reserve("acc_2", 1_000_000))
            .then_expect_events(vec![reserved("acc_2", 1_000_000, 5_000_000)]);
    }

    #[test]
    fn a_reservation_past_the_limit_is_refused() {
        TestFramework::<KeySpend>::with(())
            .given(vec![reserved("acc_1", 4_000_000, 4_000_000)])
            .when(reserve("acc_2", 1_000_001))
            .then_expect_error(SpendError::LimitExceeded {
                limit_micros: 5_000_000,
                spent_micros: 4_000_000,
                amount_micros: 1_000_001,
            });
        TestFramework::<KeySpend>::with(())
            .given(vec![reserved("acc_1", 5_000_000, 5_000_000)])
            .when(reserve("acc_2", i64::MAX))
            .then_expect_error(SpendError::LimitExceeded {
                limit_micros: 5_000_000,
                spent_micros: 5_000_000,
                amount_micros: i64::MAX,
            });
    }

    #[test]
    fn a_zero_limit_allows_only_free_charges() {
        let free = SpendCommand::Reserve {
            reservation_id: "acc_1".into(),
            amount_micros: 0,
            limit_micros: 0,
        };
        TestFramework::<KeySpend>::with(())
            .given_no_previous_events()
            .when(free)
            .then_expect_events(vec![SpendEvent::SpendReserved {
                reservation_id: "acc_1".into(),
                amount_micros: 0,
                limit_micros: 0,
                spent_micros: 0,
            }]);
    }

    #[test]
    fn the_state_is_what_the_month_has_reserved() {
        let mut spend = KeySpend::default();
        assert_eq!(spend.spent_micros(), 0);
        spend.apply(reserved("acc_1", 4_000_000, 4_000_000));
        assert_eq!(spend.spent_micros(), 4_000_000);
        spend.apply(SpendEvent::SpendReleased {
            reservation_id: "acc_1".into(),
            amount_micros: 1_500_000,
            spent_micros: 2_500_000,
        });
        assert_eq!(spend.spent_micros(), 2_500_000);
    }

    #[test]
    fn a_release_gives_the_amount_back() {
        TestFramework::<KeySpend>::with(())
            .given(vec![reserved("acc_1", 3_000_000, 3_000_000)])
            .when(SpendCommand::Release {
                reservation_id: "acc_1".into(),
                amount_micros: 3_000_000,
            })
            .then_expect_events(vec![SpendEvent::SpendReleased {
                reservation_id: "acc_1".into(),
                amount_micros: 3_000_000,
                spent_micros: 0,
            }]);
    }

    #[test]
    fn impossible_amounts_are_refused() {
        TestFramework::<KeySpend>::with(())
            .given_no_previous_events()
            .when(reserve("acc_1", -1))
            .then_expect_error(SpendError::InvalidAmount);
        TestFramework::<KeySpend>::with(())
            .given(vec![reserved("acc_1", 1, 1)])
            .when(SpendCommand::Release {
                reservation_id: "acc_1".into(),
                amount_micros: 2,
            })
            .then_expect_error(SpendError::InvalidAmount);
    }

    #[test]
    fn the_largest_spend_limit_is_a_trillion_dollars() {
        assert_eq!(MAX_SPEND_LIMIT_MICROS, 1_000_000_000_000_000_000);
    }

    #[test]
    fn months_are_utc_calendar_months_of_one_key() {
        let key = ApiKeyId::generate();
        let at = |s: &str| crate::timestamp::parse(s).unwrap();
        assert_eq!(
            key_month(&key, at("2026-12-31T23:59:59Z")),
            format!("{key}/2026-12")
        );
        assert_eq!(
            key_month(&key, at("2026-12-31T23:30:00-01:00")),
            format!("{key}/2027-01")
        );
    }

    proptest! {
        /// Any run of reservations and releases leaves the state its last event carries, and the
        /// total never passes the limit.
        #[test]
        fn the_last_event_is_the_whole_state(
            steps in prop::collection::vec((any::<bool>(), 0i64..3_000_000), 1..60),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut spend = KeySpend::default();
            let mut last = None;
            for (i, (release, amount)) in steps.into_iter().enumerate() {
                let command = if release {
                    SpendCommand::Release { reservation_id: format!("acc_{i}"), amount_micros: amount }
                } else {
                    reserve(&format!("acc_{i}"), amount)
                };
                let sink = EventSink::default();
                if runtime.block_on(spend.handle(command, &(), &sink)).is_ok() {
                    // `write` applied the events to `spend` already.
                    if let Some(event) = runtime.block_on(sink.collect()).pop() {
                        last = Some(event);
                    }
                }
                prop_assert!((0..=5_000_000).contains(&spend.spent_micros));
            }
            let mut from_last = KeySpend::default();
            if let Some(event) = last {
                from_last.apply(event);
            }
            prop_assert_eq!(from_last.spent_micros, spend.spent_micros);
        }
    }
}
