//! A search: one request of a buyer, recorded with everything it returned and charged. Like a
//! download it is its own small aggregate with a single event, so metering never contends; search
//! activity, retrieval accesses, appearances and payouts are projections of `SearchPerformed`.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::metering::{Charge, ChargeError};
use crate::{DatasetId, ObjectId, PricingModel, TenantId};

/// One result of a search: the object, its dataset's owner and, if another tenant owns it, the
/// charge for the retrieval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retrieval {
    /// The retrieval event's id (`ret_`), new for every result.
    pub retrieval_event_id: String,
    pub object_id: ObjectId,
    pub dataset_id: DatasetId,
    pub provider_tenant_id: TenantId,
    /// `None` for the searcher's own objects: own use is free and unrecorded.
    pub charge: Option<Charge>,
}

/// The facts of one search request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchRecord {
    pub buyer_tenant_id: TenantId,
    /// The searching key, `None` for a session.
    pub api_key_id: Option<String>,
    /// The query as sent (trimmed).
    pub query_text: String,
    /// The request's `dataset_ids`, else the distinct datasets of the results, sorted.
    pub dataset_ids: Vec<DatasetId>,
    /// The results in response order.
    pub results: Vec<Retrieval>,
    pub occurred_at: DateTime<Utc>,
}

impl SearchRecord {
    /// Σ of the results' charges, in micro-USD (exact; a recorded search's fits 64 bits).
    pub fn charged_micros(&self) -> i128 {
        self.results
            .iter()
            .filter_map(|r| r.charge.as_ref())
            .map(|c| i128::from(c.amount_micros))
            .sum()
    }

    /// The datasets that returned at least one result, sorted and distinct.
    pub fn result_datasets(&self) -> Vec<&DatasetId> {
        let mut ids: Vec<&DatasetId> = self.results.iter().map(|r| &r.dataset_id).collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// A search request.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Search {
    record: Option<SearchRecord>,
}

/// Commands on a search.
#[derive(Debug, Clone)]
pub enum SearchCommand {
    /// Record a search that was served, with its results and charges.
    Record(SearchRecord),
}

/// Facts about a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SearchEvent {
    /// A search was served; its billable results were charged.
    SearchPerformed(SearchRecord),
}

impl DomainEvent for SearchEvent {
    fn event_type(&self) -> String {
        "SearchPerformed".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

/// Business-rule violations on a search (all 500: the record is computed by the server).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// The search activity id is taken.
    #[error("search already recorded")]
    AlreadyRecorded,
    /// An object appears twice: a request charges an object at most once.
    #[error("duplicate result")]
    DuplicateResult,
    /// A charge that does not match its result (own object charged, other tenant's free,
    /// negative amount, fee over 100%, wrong buyer or object).
    #[error("invalid charge")]
    InvalidCharge,
    /// A result's charge, or their sum, exceeds the largest recordable amount (422
    /// `charge_too_large`).
    #[error("charge too large")]
    ChargeTooLarge,
}

impl Aggregate for Search {
    const TYPE: &'static str = "search";
    type Command = SearchCommand;
    type Event = SearchEvent;
    type Error = SearchError;
    type Services = ();

    async fn handle(
        &mut self,
        command: SearchCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), SearchError> {
        let SearchCommand::Record(record) = command;
        if self.record.is_some() {
            return Err(SearchError::AlreadyRecorded);
        }
        let mut objects: Vec<&ObjectId> = record.results.iter().map(|r| &r.object_id).collect();
        objects.sort();
        objects.dedup();
        if objects.len() != record.results.len() {
            return Err(SearchError::DuplicateResult);
        }
        for result in &record.results {
            let own = result.provider_tenant_id == record.buyer_tenant_id;
            match &result.charge {
                None if own => {}
                Some(c) if !own && c.check() == Err(ChargeError::TooLarge) => {
                    return Err(SearchError::ChargeTooLarge)
                }
                Some(c)
                    if !own
                        && c.check().is_ok()
                        && c.buyer_tenant_id == record.buyer_tenant_id
                        && c.provider_tenant_id == result.provider_tenant_id
                        && c.object_id == result.object_id
                        && c.dataset_id == result.dataset_id => {}
                _ => return Err(SearchError::InvalidCharge),
            }
        }
        if i64::try_from(record.charged_micros()).is_err() {
            return Err(SearchError::ChargeTooLarge);
        }
        sink.write(SearchEvent::SearchPerformed(record), self).await;
        Ok(())
    }

    fn apply(&mut self, event: SearchEvent) {
        let SearchEvent::SearchPerformed(record) = event;
        self.record = Some(record);
    }
}

/// The unit price of one billable result (SPEC §5.3), in micro-USD, `round6` half away from zero.
///
/// `age_days` is whole days since the object's approval (`time_decay`); `appearances` the earlier
/// searches of the last 24 h by other tenants that returned the dataset (`demand_curve`).
pub fn unit_price_micros(
    model: PricingModel,
    price_micros: i64,
    age_days: i64,
    appearances: i64,
) -> i64 {
    match model {
        PricingModel::Fixed => price_micros,
        PricingModel::TimeDecay => {
            let factor = 0.5f64.powf(age_days.max(0) as f64 / 90.0).max(0.2);
            // Micro-units stay below 2^53, so the product is exact to well over 12 digits.
            (price_micros as f64 * factor).round() as i64
        }
        PricingModel::DemandCurve => {
            // In i128, so no price overflows; a result over 64 bits saturates and the command
            // refuses it as too large.
            let numerator =
                i128::from(price_micros) * i128::from(1000 + appearances.clamp(0, 1000));
            let (q, r) = (numerator / 1000, numerator % 1000);
            let rounded = if r * 2 >= 1000 { q + 1 } else { q };
            i64::try_from(rounded).unwrap_or(i64::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use proptest::prelude::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn record(buyer: &TenantId, results: Vec<Retrieval>) -> SearchRecord {
        SearchRecord {
            buyer_tenant_id: buyer.clone(),
            api_key_id: None,
            query_text: "invoice".into(),
            dataset_ids: vec![],
            results,
            occurred_at: at(),
        }
    }

    fn result(buyer: &TenantId, provider: &TenantId, amount: Option<i64>) -> Retrieval {
        let object_id = ObjectId::generate();
        let dataset_id = DatasetId::generate();
        Retrieval {
            retrieval_event_id: "ret_x".into(),
            charge: amount.map(|amount_micros| Charge {
                access_id: "acc_x".into(),
                buyer_tenant_id: buyer.clone(),
                api_key_id: None,
                provider_tenant_id: provider.clone(),
                dataset_id: dataset_id.clone(),
                object_id: object_id.clone(),
                amount_micros,
                fee_bps: 2000,
                occurred_at: at(),
            }),
            object_id,
            dataset_id,
            provider_tenant_id: provider.clone(),
        }
    }

    #[test]
    fn a_search_is_recorded_once_with_its_charges() {
        let (buyer, provider) = (TenantId::generate(), TenantId::generate());
        let r = record(
            &buyer,
            vec![
                result(&buyer, &provider, Some(50_000)),
                result(&buyer, &buyer, None),
            ],
        );
        assert_eq!(r.charged_micros(), 50_000);
        TestFramework::<Search>::with(())
            .given_no_previous_events()
            .when(SearchCommand::Record(r.clone()))
            .then_expect_events(vec![SearchEvent::SearchPerformed(r.clone())]);
        TestFramework::<Search>::with(())
            .given(vec![SearchEvent::SearchPerformed(r.clone())])
            .when(SearchCommand::Record(r))
            .then_expect_error(SearchError::AlreadyRecorded);
    }

    #[test]
    fn a_record_sums_its_charges_and_names_the_datasets_that_answered() {
        let (buyer, provider) = (TenantId::generate(), TenantId::generate());
        let (a, b, own) = (
            result(&buyer, &provider, Some(50_000)),
            result(&buyer, &provider, Some(7)),
            result(&buyer, &buyer, None),
        );
        // A second result from the first dataset.
        let again = Retrieval {
            object_id: ObjectId::generate(),
            ..a.clone()
        };
        let r = record(&buyer, vec![b.clone(), own.clone(), a.clone(), again]);
        assert_eq!(r.charged_micros(), 100_007);
        let mut expected = vec![&a.dataset_id, &b.dataset_id, &own.dataset_id];
        expected.sort();
        assert_eq!(r.result_datasets(), expected);
        assert_eq!(
            record(&buyer, vec![]).result_datasets(),
            Vec::<&DatasetId>::new()
        );
        assert_eq!(record(&buyer, vec![]).charged_micros(), 0);
    }

    #[test]
    fn a_search_with_no_results_is_still_recorded() {
        let r = record(&TenantId::generate(), vec![]);
        TestFramework::<Search>::with(())
            .given_no_previous_events()
            .when(SearchCommand::Record(r.clone()))
            .then_expect_events(vec![SearchEvent::SearchPerformed(r)]);
    }

    #[test]
    fn an_object_is_charged_at_most_once_per_search() {
        let (buyer, provider) = (TenantId::generate(), TenantId::generate());
        let one = result(&buyer, &provider, Some(1));
        TestFramework::<Search>::with(())
            .given_no_previous_events()
            .when(SearchCommand::Record(record(
                &buyer,
                vec![one.clone(), one],
            )))
            .then_expect_error(SearchError::DuplicateResult);
    }

    #[test]
    fn a_charge_above_the_largest_recordable_amount_is_refused() {
        let (buyer, provider) = (TenantId::generate(), TenantId::generate());
        let too_large = crate::money::MAX_CHARGE_MICROS + 1;
        TestFramework::<Search>::with(())
            .given_no_previous_events()
            .when(SearchCommand::Record(record(
                &buyer,
                vec![result(&buyer, &provider, Some(too_large))],
            )))
            .then_expect_error(SearchError::ChargeTooLarge);
    }

    #[test]
    fn own_results_are_free_and_others_are_charged() {
        let (buyer, provider) = (TenantId::generate(), TenantId::generate());
        for bad in [
            result(&buyer, &buyer, Some(0)),
            result(&buyer, &provider, None),
            result(&buyer, &provider, Some(-1)),
            result(&provider, &provider, Some(1)),
        ] {
            TestFramework::<Search>::with(())
                .given_no_previous_events()
                .when(SearchCommand::Record(record(&buyer, vec![bad])))
                .then_expect_error(SearchError::InvalidCharge);
        }
    }

    #[test]
    fn prices_follow_the_spec_examples() {
        let p = 50_000; // 0.05
        assert_eq!(unit_price_micros(PricingModel::Fixed, p, 400, 400), 50_000);
        assert_eq!(unit_price_micros(PricingModel::TimeDecay, p, 0, 0), 50_000);
        assert_eq!(unit_price_micros(PricingModel::TimeDecay, p, 90, 0), 25_000);
        assert_eq!(
            unit_price_micros(PricingModel::TimeDecay, p, 209, 0),
            10_000
        );
        assert_eq!(
            unit_price_micros(PricingModel::TimeDecay, p, 5000, 0),
            10_000
        );
        assert_eq!(
            unit_price_micros(PricingModel::DemandCurve, p, 0, 10),
            50_500
        );
        assert_eq!(
            unit_price_micros(PricingModel::DemandCurve, p, 0, 1000),
            100_000
        );
        assert_eq!(
            unit_price_micros(PricingModel::DemandCurve, p, 0, 5000),
            100_000
        );
        // 0.000001 × 1.0005 = 0.0000010005 → 0.000001; × 1.5 = 0.0000015 → 0.000002.
        assert_eq!(unit_price_micros(PricingModel::DemandCurve, 1, 0, 0), 1);
        assert_eq!(unit_price_micros(PricingModel::DemandCurve, 1, 0, 500), 2);
    }

    proptest! {
        #[test]
        fn decayed_prices_stay_between_a_fifth_and_the_full_price(
            price in 0i64..=1_000_000_000_000, age in 0i64..10_000,
        ) {
            let decayed = unit_price_micros(PricingModel::TimeDecay, price, age, 0);
            prop_assert!(decayed <= price);
            prop_assert!(decayed * 5 >= price - 5);
            let older = unit_price_micros(PricingModel::TimeDecay, price, age + 1, 0);
            prop_assert!(older <= decayed);
        }

        #[test]
        fn demand_raises_prices_up_to_double(
            price in 0i64..=1_000_000_000_000, n in 0i64..5_000,
        ) {
            let priced = unit_price_micros(PricingModel::DemandCurve, price, 0, n);
            prop_assert!(priced >= price && priced <= 2 * price);
            prop_assert!(unit_price_micros(PricingModel::DemandCurve, price, 0, n + 1) >= priced);
        }
    }
}
