//! Payout statements: one per provider tenant per UTC month, computed by a projection from the
//! charges. The only command is the admin's "paid", so a statement's amounts are never events.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::choice;
use crate::ids::encode_body;

choice!(
    /// Where a statement stands: its month not over, over and unpaid, or paid.
    StatementStatus { Open => "open", Pending => "pending", Paid => "paid" }
);

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

/// `round6(Σ amountᵢ × bpsᵢ / 10000)` from `Σ amount_micros × bps`: micro-units, half away from
/// zero. The basis is an exact `i128` sum (see [`crate::money::Limbs`]); the division cannot
/// overflow.
pub fn fee_micros(fee_basis: i128) -> i128 {
    let (q, r) = (fee_basis / 10_000, fee_basis % 10_000);
    if r.abs() * 2 >= 10_000 {
        q + fee_basis.signum()
    } else {
        q
    }
}

/// The figures of a set of charges (SPEC §5.5): gross, the fee rounded once from the whole
/// basis, and net = gross − fee.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Earnings {
    pub gross: i128,
    pub fee: i128,
    pub net: i128,
}

impl Earnings {
    /// From the exact sums of the amounts and of `amount × bps`. Both are below 2^106 (see
    /// [`crate::money::Limbs`]), so the difference cannot overflow.
    pub fn of(gross: i128, fee_basis: i128) -> Self {
        let fee = fee_micros(fee_basis);
        Earnings {
            gross,
            fee,
            net: gross - fee,
        }
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
    fn a_statement_can_be_paid_the_instant_its_period_ends() {
        let end = at("2026-12-01T00:00:00Z");
        TestFramework::<PayoutStatement>::with(())
            .given_no_previous_events()
            .when(PayoutCommand::MarkPaid {
                period_end: end,
                at: end,
            })
            .then_expect_events(vec![PayoutEvent::PayoutStatementPaid { paid_at: end }]);
        TestFramework::<PayoutStatement>::with(())
            .given_no_previous_events()
            .when(PayoutCommand::MarkPaid {
                period_end: end,
                at: end - chrono::Duration::microseconds(1),
            })
            .then_expect_error(PayoutError::Open);
    }

    #[test]
    fn a_paid_statement_stays_paid_whenever_it_is_asked_again() {
        let end = at("2026-12-01T00:00:00Z");
        for again in [
            end - chrono::Duration::days(1),
            end,
            at("2027-03-01T00:00:00Z"),
        ] {
            TestFramework::<PayoutStatement>::with(())
                .given(vec![PayoutEvent::PayoutStatementPaid { paid_at: end }])
                .when(PayoutCommand::MarkPaid {
                    period_end: end,
                    at: again,
                })
                .then_expect_error(PayoutError::Paid);
        }
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

    fn sha256(bytes: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(bytes).into()
    }

    #[test]
    fn a_statement_id_is_the_period_start_then_a_hash_of_tenant_and_period() {
        // Ids already stored by the read models must come out the same on every rebuild.
        let start = at("2026-11-01T00:00:00Z");
        let id = statement_id("tnt_a", start, sha256);
        let bits = crate::ids::parse_prefixed("stmt", &id).unwrap();
        assert_eq!(bits >> 80, 1_793_491_200_000, "milliseconds of 2026-11-01");
        let hash = sha256(b"ipto.statement\ntnt_a\n1793491200");
        let mut tail = [0u8; 16];
        tail[6..].copy_from_slice(&hash[..10]);
        assert_eq!(bits & ((1 << 80) - 1), u128::from_be_bytes(tail));
    }

    #[test]
    fn earnings_are_gross_less_the_rounded_fee() {
        // 12.5 USD at 20 % (basis 12_500_000 × 2000): fee 2.5, net 10.
        assert_eq!(
            Earnings::of(12_500_000, 25_000_000_000),
            Earnings {
                gross: 12_500_000,
                fee: 2_500_000,
                net: 10_000_000,
            }
        );
        assert_eq!(
            Earnings::of(0, 0),
            Earnings {
                gross: 0,
                fee: 0,
                net: 0
            }
        );
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

/// The period and id arithmetic against independent computations with `chrono`.
#[cfg(test)]
mod periods {
    use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;

    /// Instants from 1970 to 2400, as microseconds.
    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        (0i64..13_569_465_600_000_000).prop_map(|us| DateTime::from_timestamp_micros(us).unwrap())
    }

    fn digest(bytes: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(bytes).into()
    }

    proptest! {
        #[test]
        fn a_month_runs_from_its_first_day_to_the_next_months(at in instant()) {
            let first = NaiveDate::from_ymd_opt(at.year(), at.month(), 1).unwrap();
            let next = first.checked_add_months(Months::new(1)).unwrap();
            let midnight = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap());
            let (start, end) = month_of(at);
            prop_assert_eq!((start, end), (midnight(first), midnight(next)));
            prop_assert!(start <= at && at < end);
            prop_assert_eq!(month_of(start), (start, end));
            prop_assert_eq!(month_of(end).0, end);
        }

        #[test]
        fn an_id_carries_its_period_start_in_milliseconds_and_sorts_by_it(
            a in instant(),
            b in instant(),
            tenant in "tnt_[0-9a-z]{26}",
        ) {
            let (start_a, start_b) = (month_of(a).0, month_of(b).0);
            let (id_a, id_b) = (statement_id(&tenant, start_a, digest), statement_id(&tenant, start_b, digest));
            let bits = crate::ids::parse_prefixed("stmt", &id_a).unwrap();
            prop_assert_eq!((bits >> 80) as i64, start_a.timestamp_millis());
            prop_assert_eq!(id_a.cmp(&id_b), start_a.cmp(&start_b));
            prop_assert_eq!(&id_a, &statement_id(&tenant, start_a, digest));
        }
    }
}

/// SPEC §5.7 over the pure arithmetic of charges, with random charges up to the highest price in
/// numbers far past the old 64-bit limit: what the read models sum (as limb sums, the way SQL
/// adds them) agrees with exact sums of the charges, for every buyer, provider and statement.
#[cfg(test)]
mod invariants {
    use std::collections::BTreeMap;

    use chrono::{DateTime, Duration, Utc};
    use proptest::prelude::*;

    use super::*;
    use crate::metering::{download_price_micros, Charge};
    use crate::money::{Limbs, MAX_CHARGE_MICROS};
    use crate::search::{unit_price_micros, Retrieval, SearchRecord};
    use crate::{DatasetId, ObjectId, Price, PricingModel, TenantId};

    /// One billable use: a download, or a result of the buyer's search number `search`.
    #[derive(Clone, Debug)]
    struct Use {
        buyer: usize,
        provider: usize,
        month: i64,
        price: i64,
        model: PricingModel,
        age_days: i64,
        appearances: i64,
        bps: u32,
        search: Option<u8>,
    }

    fn price() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(Price::MAX.micros()),
            0..=Price::MAX.micros(),
            0i64..1_000,
        ]
    }

    fn bps() -> impl Strategy<Value = u32> {
        prop_oneof![Just(2000u32), Just(10_000), 0u32..=10_000]
    }

    fn a_use() -> impl Strategy<Value = Use> {
        (
            (0..3usize, 1..3usize, 0..3i64),
            (price(), 0..3usize, 0..400i64, 0..2_000i64),
            (bps(), prop::option::of(0..8u8)),
        )
            .prop_map(
                |((buyer, other, month), (price, model, age_days, appearances), (bps, search))| {
                    Use {
                        buyer,
                        provider: (buyer + other) % 3,
                        month,
                        price,
                        model: [
                            PricingModel::Fixed,
                            PricingModel::TimeDecay,
                            PricingModel::DemandCurve,
                        ][model],
                        age_days,
                        appearances,
                        bps,
                        search,
                    }
                },
            )
    }

    /// The old 64-bit fee, for amounts that fit it.
    fn fee_micros_64(fee_basis: i64) -> i64 {
        let (q, r) = (fee_basis / 10_000, fee_basis % 10_000);
        if r.abs() * 2 >= 10_000 {
            q + fee_basis.signum()
        } else {
            q
        }
    }

    fn add(sum: &mut Limbs, term: i128) {
        *sum = sum
            .checked_add(Limbs::of(term).expect("a term fits 63 bits"))
            .expect("a limb sum overflowed");
    }

    /// A statement as the projection keeps it.
    #[derive(Default)]
    struct Statement {
        gross: Limbs,
        fee_basis: Limbs,
        lines: i64,
        exact_gross: i128,
        exact_basis: i128,
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        #[test]
        fn every_figure_adds_up_far_past_64_bits(
            uses in prop::collection::vec(a_use(), 0..64),
            dear in 463usize..3_000,
            (target, month, dear_bps) in (0..3usize, 0..3i64, prop_oneof![Just(2000u32), 1u32..=10_000]),
        ) {
            let tenants: Vec<TenantId> = (0..3).map(|_| TenantId::generate()).collect();
            let datasets: Vec<DatasetId> = (0..3).map(|_| DatasetId::generate()).collect();
            let objects: Vec<ObjectId> = (0..3).map(|_| ObjectId::generate()).collect();
            let start: DateTime<Utc> = DateTime::from_timestamp(1_798_761_600, 0).unwrap(); // 2027-01-01
            let charge = |u: &Use, amount_micros: i64| Charge {
                access_id: "acc_x".into(),
                buyer_tenant_id: tenants[u.buyer].clone(),
                api_key_id: None,
                provider_tenant_id: tenants[u.provider].clone(),
                dataset_id: datasets[u.provider].clone(),
                object_id: objects[u.provider].clone(),
                amount_micros,
                fee_bps: u.bps,
                occurred_at: start + Duration::days(31 * u.month + 3),
            };
            // A run of downloads at the highest price into one statement, and random uses.
            let run = Use {
                buyer: (target + 1) % 3, provider: target, month, price: Price::MAX.micros(),
                model: PricingModel::Fixed, age_days: 0, appearances: 0, bps: dear_bps, search: None,
            };
            // Each use with how many times it happens; the run is one charge downloaded `dear` times.
            let all = std::iter::once((run, dear)).chain(uses.into_iter().map(|u| (u, 1)));

            let mut downloads: Vec<(Charge, usize)> = Vec::new();
            let mut searches: BTreeMap<(usize, u8), SearchRecord> = BTreeMap::new();
            for (u, times) in all {
                let amount = match u.search {
                    None => download_price_micros(u.price).unwrap(),
                    Some(_) => unit_price_micros(u.model, u.price, u.age_days, u.appearances),
                };
                let c = charge(&u, amount);
                prop_assert_eq!(c.check(), Ok(()), "every charge of a valid price is recordable");
                prop_assert!(c.amount_micros <= MAX_CHARGE_MICROS);
                match u.search {
                    None => downloads.push((c, times)),
                    Some(n) => searches
                        .entry((u.buyer, n))
                        .or_insert_with(|| SearchRecord {
                            buyer_tenant_id: tenants[u.buyer].clone(),
                            api_key_id: None,
                            query_text: "q".into(),
                            dataset_ids: vec![],
                            results: vec![],
                            occurred_at: c.occurred_at,
                        })
                        .results
                        .push(Retrieval {
                            retrieval_event_id: "ret_x".into(),
                            object_id: c.object_id.clone(),
                            dataset_id: c.dataset_id.clone(),
                            provider_tenant_id: c.provider_tenant_id.clone(),
                            charge: Some(c),
                        }),
                }
            }
            let accesses: Vec<(&Charge, usize)> = downloads
                .iter()
                .map(|(c, times)| (c, *times))
                .chain(searches.values().flat_map(|s| s.results.iter().filter_map(|r| r.charge.as_ref()).map(|c| (c, 1))))
                .collect();

            // What the read models sum, as SQL sums limbs.
            let mut spend = [Limbs::default(); 3];
            let mut revenue = [Limbs::default(); 3];
            let mut statements: BTreeMap<(usize, DateTime<Utc>), Statement> = BTreeMap::new();
            let index = |t: &TenantId| tenants.iter().position(|x| x == t).unwrap();
            for (c, times) in &accesses {
                let (buyer, provider) = (index(&c.buyer_tenant_id), index(&c.provider_tenant_id));
                let s = statements.entry((provider, month_of(c.occurred_at).0)).or_default();
                for _ in 0..*times {
                    add(&mut spend[buyer], c.amount_micros.into());
                    add(&mut revenue[provider], c.amount_micros.into());
                    add(&mut s.gross, c.amount_micros.into());
                    add(&mut s.fee_basis, c.fee_basis());
                    s.lines += 1;
                    s.exact_gross += i128::from(c.amount_micros);
                    s.exact_basis += i128::from(c.amount_micros) * i128::from(c.fee_bps);
                }
            }

            for s in searches.values() {
                prop_assert!(i64::try_from(s.charged_micros()).is_ok(), "a search's total fits its column");
            }
            for (buyer, spent) in spend.iter().enumerate() {
                // total_spend = Σ accesses = Σ search activities + Σ downloads.
                let searched: i128 = searches.iter().filter(|((b, _), _)| *b == buyer).map(|(_, s)| s.charged_micros()).sum();
                let downloaded: i128 = downloads
                    .iter()
                    .filter(|(c, _)| index(&c.buyer_tenant_id) == buyer)
                    .map(|(c, times)| i128::from(c.amount_micros) * *times as i128)
                    .sum();
                prop_assert_eq!(spent.total(), searched + downloaded);
            }
            // Σ buyer spend = Σ provider gross.
            let spent: i128 = spend.iter().map(|s| s.total()).sum();
            let earned: i128 = revenue.iter().map(|r| r.total()).sum();
            prop_assert_eq!(spent, earned);
            prop_assert_eq!(spent, accesses.iter().map(|(c, times)| i128::from(c.amount_micros) * *times as i128).sum::<i128>());

            let mut past_64_bits = false;
            for (provider, earned) in revenue.iter().enumerate() {
                // Σ statement gross = total revenue.
                let gross: i128 = statements.iter().filter(|((p, _), _)| *p == provider).map(|(_, s)| s.gross.total()).sum();
                prop_assert_eq!(gross, earned.total());
            }
            for s in statements.values() {
                prop_assert_eq!(s.gross.total(), s.exact_gross);
                prop_assert_eq!(s.fee_basis.total(), s.exact_basis);
                let e = Earnings::of(s.gross.total(), s.fee_basis.total());
                // round6 half away from zero of basis / 10000, computed another way.
                prop_assert_eq!(e.fee, (s.exact_basis + 5_000) / 10_000);
                prop_assert_eq!(e.net, e.gross - e.fee);
                prop_assert!(0 <= e.fee && e.fee <= e.gross && e.net >= 0);
                prop_assert!(s.lines > 0);
                match i64::try_from(s.exact_basis) {
                    // Normal amounts: exactly the fee of the 64-bit arithmetic.
                    Ok(basis) => prop_assert_eq!(e.fee, i128::from(fee_micros_64(basis))),
                    Err(_) => past_64_bits = true,
                }
            }
            // The run at the highest price drives one statement's basis past 2^63.
            prop_assert!(past_64_bits || dear_bps < 2000);
        }
    }
}
