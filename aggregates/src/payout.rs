//! Payout statements: one per provider tenant per UTC month, computed by a projection from the
//! charges. The only command is the admin's "paid", so a statement's amounts are never events.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::ids::encode_body;

/// A statement's payment state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PayoutStatement {
    paid_at: Option<DateTime<Utc>>,
}

/// Commands on a statement.
#[derive(Debug, Clone)]
pub enum PayoutCommand {
    /// An admin marks it paid; allowed once its period has ended.
    MarkPaid {
        period_end: DateTime<Utc>,
        at: DateTime<Utc>,
    },
}

/// Facts about a statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PayoutEvent {
    PayoutStatementPaid { paid_at: DateTime<Utc> },
}

impl DomainEvent for PayoutEvent {
    fn event_type(&self) -> String {
        "PayoutStatementPaid".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

/// Business-rule violations on a statement (409 `invalid_state` with the status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayoutError {
    /// The period has not ended.
    #[error("statement is open")]
    Open,
    /// Already paid.
    #[error("statement is paid")]
    Paid,
}

impl Aggregate for PayoutStatement {
    const TYPE: &'static str = "payout_statement";
    type Command = PayoutCommand;
    type Event = PayoutEvent;
    type Error = PayoutError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PayoutCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), PayoutError> {
        let PayoutCommand::MarkPaid { period_end, at } = command;
        if self.paid_at.is_some() {
            return Err(PayoutError::Paid);
        }
        if at < period_end {
            return Err(PayoutError::Open);
        }
        sink.write(PayoutEvent::PayoutStatementPaid { paid_at: at }, self)
            .await;
        Ok(())
    }

    fn apply(&mut self, event: PayoutEvent) {
        let PayoutEvent::PayoutStatementPaid { paid_at } = event;
        self.paid_at = Some(paid_at);
    }
}

/// The UTC calendar month containing `at`: `[start, end)`.
pub fn month_of(at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc
        .with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .expect("first of month exists");
    let (y, m) = if at.month() == 12 {
        (at.year() + 1, 1)
    } else {
        (at.year(), at.month() + 1)
    };
    let end = Utc
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .expect("first of month exists");
    (start, end)
}

/// A statement id that survives rebuilds: the period start (48 bits of milliseconds, so ids sort
/// by period) followed by 80 bits of a hash of tenant and period.
pub fn statement_id(
    tenant_id: &str,
    period_start: DateTime<Utc>,
    digest: impl Fn(&[u8]) -> [u8; 32],
) -> String {
    let hash =
        digest(format!("ipto.statement\n{tenant_id}\n{}", period_start.timestamp()).as_bytes());
    let mut tail = [0u8; 16];
    tail[6..].copy_from_slice(&hash[..10]);
    let millis = (period_start.timestamp_millis() as u128) & ((1 << 48) - 1);
    format!(
        "stmt_{}",
        encode_body((millis << 80) | u128::from_be_bytes(tail))
    )
}

/// `round6(Σ amountᵢ × bpsᵢ / 10000)` from `Σ amount_micros × bps`: micro-units, half away from zero.
pub fn fee_micros(fee_basis: i64) -> i64 {
    let (q, r) = (fee_basis / 10_000, fee_basis % 10_000);
    if r.abs() * 2 >= 10_000 {
        q + fee_basis.signum()
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at(raw: &str) -> DateTime<Utc> {
        crate::timestamp::parse(raw).unwrap()
    }

    #[test]
    fn a_statement_is_paid_once_after_its_period() {
        let end = at("2026-12-01T00:00:00Z");
        TestFramework::<PayoutStatement>::with(())
            .given_no_previous_events()
            .when(PayoutCommand::MarkPaid {
                period_end: end,
                at: at("2026-12-02T00:00:00Z"),
            })
            .then_expect_events(vec![PayoutEvent::PayoutStatementPaid {
                paid_at: at("2026-12-02T00:00:00Z"),
            }]);
        TestFramework::<PayoutStatement>::with(())
            .given(vec![PayoutEvent::PayoutStatementPaid {
                paid_at: at("2026-12-02T00:00:00Z"),
            }])
            .when(PayoutCommand::MarkPaid {
                period_end: end,
                at: at("2026-12-03T00:00:00Z"),
            })
            .then_expect_error(PayoutError::Paid);
    }

    #[test]
    fn an_open_statement_cannot_be_paid() {
        TestFramework::<PayoutStatement>::with(())
            .given_no_previous_events()
            .when(PayoutCommand::MarkPaid {
                period_end: at("2026-12-01T00:00:00Z"),
                at: at("2026-11-30T23:59:59Z"),
            })
            .then_expect_error(PayoutError::Open);
    }

    #[test]
    fn months_are_utc_calendar_months() {
        let (start, end) = month_of(at("2026-12-31T23:59:59Z"));
        assert_eq!(
            (start, end),
            (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn statement_ids_are_stable_valid_and_distinct() {
        let digest = |b: &[u8]| -> [u8; 32] {
            use sha2::Digest;
            sha2::Sha256::digest(b).into()
        };
        let start = at("2026-11-01T00:00:00Z");
        let a = statement_id("tnt_a", start, digest);
        assert_eq!(a, statement_id("tnt_a", start, digest));
        assert_ne!(a, statement_id("tnt_b", start, digest));
        assert!(crate::ids::parse_prefixed("stmt", &a).is_ok());
        assert!(a < statement_id("tnt_a", at("2026-12-01T00:00:00Z"), digest));
    }

    #[test]
    fn fees_round_half_away_from_zero() {
        // 10 USD at 20% = 2 USD.
        assert_eq!(fee_micros(10_000_000 * 2000), 2_000_000);
        // 0.000005 at 10% = 0.0000005 → 0.000001.
        assert_eq!(fee_micros(5 * 1000), 1);
        assert_eq!(fee_micros(4 * 1000), 0);
    }
}
