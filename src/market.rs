//! A metered answer to a buyer's question, as `POST /v1/search` and `POST /v1/retrieve` give it
//! (and any other front end would): the datasets a request may search, the engine run on a
//! blocking thread, the price of each result (SPEC §5.3), and the metering of the answer as one
//! `SearchPerformed` event within the key's spend limits.

use std::collections::HashMap;

use aggregates::metering::Charge;
use aggregates::search::{unit_price_micros, Retrieval, Search, SearchCommand, SearchRecord};
use aggregates::{
    AccessId, DatasetId, ObjectId, PricingModel, RetrievalId, SearchActivityId, TenantId,
};
use chrono::{DateTime, Utc};
use projections::datasets::DatasetRow;

use crate::auth::{Principal, PrincipalKind};
use crate::charges;
use crate::error::AppError;
use crate::search::query::Node;
use crate::search::retrieval::{Engine, Question, Requested, RetrievalError};
use crate::search::IndexError;
use crate::state::AppState;

/// What `POST /v1/search` and `POST /v1/retrieve` ask alike, validated.
pub struct Common {
    pub text: String,
    pub query: Node,
    pub dataset_ids: Option<Vec<String>>,
    pub requested: Requested,
    /// `max_price_per_result` in micro-USD.
    pub max_price: Option<i64>,
}

/// Runs the engine on a blocking thread: `what` of this instance's index and embedder. A query
/// over the budget is 422 on `query`; `dense` without an embedder is 422 on `retrieval_mode`.
pub async fn run<T: Send + 'static>(
    state: &AppState,
    common: &Common,
    ids: &[String],
    limit: usize,
    what: impl FnOnce(&Engine<'_>, &Question<'_>, &[String], usize) -> Result<T, RetrievalError>
        + Send
        + 'static,
) -> Result<T, AppError> {
    let search = state.search.clone();
    let (text, parsed, requested) = (common.text.clone(), common.query.clone(), common.requested);
    let ids = ids.to_vec();
    let outcome = tokio::task::spawn_blocking(move || {
        let engine = Engine {
            index: &search.index,
            embedder: search.dense.as_ref().map(|d| d.embedder()),
        };
        let question = Question {
            text: &text,
            parsed: &parsed,
            requested,
        };
        what(&engine, &question, &ids, limit)
    })
    .await
    .map_err(AppError::internal)?;
    outcome.map_err(|e| match e {
        RetrievalError::Index(IndexError::TooBroad(why)) => {
            AppError::field("query", why.to_string())
        }
        RetrievalError::NoDense => AppError::field(
            "retrieval_mode",
            "dense retrieval is not available on this server",
        ),
        other => AppError::internal(other),
    })
}

/// Unit prices decided so far in one request, by object (`None` for the caller's own), and the
/// demand counts they were decided from.
#[derive(Default)]
pub struct Prices {
    units: HashMap<String, Option<i64>>,
    demand: HashMap<String, i64>,
}

/// The datasets one request searches and who asks: what prices and meters its results.
pub struct Market<'a> {
    principal: &'a Principal,
    pub datasets: HashMap<String, DatasetRow>,
    /// The datasets' ids.
    pub ids: Vec<String>,
    buyer: TenantId,
    api_key_id: Option<String>,
    max_price: Option<i64>,
    now: DateTime<Utc>,
}

/// A request's recorded search activity.
pub struct Metered {
    pub record: SearchRecord,
    pub activity_id: String,
}

impl<'a> Market<'a> {
    /// The searchable datasets (SPEC §3.12); a named one the caller may not reach is 404.
    pub async fn open(
        state: &AppState,
        principal: &'a Principal,
        common: &Common,
    ) -> Result<Self, AppError> {
        let mut datasets = searchable(state, principal, common.dataset_ids.as_deref()).await?;
        if let Some(max) = common.max_price {
            // Not searched: other tenants' datasets none of whose results can cost `max` or less.
            datasets.retain(|_, d| {
                d.tenant_id.as_str() == principal.tenant_id || lowest_price(d) <= max
            });
        }
        let mut ids: Vec<String> = datasets.keys().cloned().collect();
        ids.sort();
        Ok(Self {
            principal,
            ids,
            datasets,
            buyer: TenantId::parse(&principal.tenant_id).map_err(AppError::internal)?,
            api_key_id: match &principal.kind {
                PrincipalKind::ApiKey { api_key_id } => Some(api_key_id.clone()),
                PrincipalKind::User { .. } => None,
            },
            max_price: common.max_price,
            now: state.store.clock.now(),
        })
    }

    /// Prices an object's result into `prices`; whether it may be answered (false: over
    /// `max_price_per_result`).
    pub async fn price(
        &self,
        state: &AppState,
        prices: &mut Prices,
        dataset_id: &str,
        object_id: &str,
    ) -> Result<bool, AppError> {
        let unit = match prices.units.get(object_id) {
            Some(unit) => *unit,
            None => {
                let dataset = &self.datasets[dataset_id];
                let unit = if dataset.tenant_id.as_str() == self.principal.tenant_id {
                    None
                } else {
                    Some(price(state, dataset, object_id, self.now, &mut prices.demand).await?)
                };
                prices.units.insert(object_id.to_owned(), unit);
                unit
            }
        };
        Ok(unit.zip(self.max_price).is_none_or(|(p, max)| p <= max))
    }

    /// Records the request as one search activity with one retrieval per object (in order;
    /// each priced before), charging the billable ones within the key's spend limits.
    pub async fn meter(
        &self,
        state: &AppState,
        common: &Common,
        objects: &[(&str, &str)],
        prices: &Prices,
    ) -> Result<Metered, AppError> {
        let mut retrievals = Vec::with_capacity(objects.len());
        for (object_id, dataset_id) in objects {
            let dataset = &self.datasets[*dataset_id];
            let provider = dataset.tenant_id.clone();
            let object_id = ObjectId::parse(object_id).map_err(AppError::internal)?;
            let dataset_id = dataset.dataset_id.clone();
            let charge = prices
                .units
                .get(object_id.as_str())
                .copied()
                .flatten()
                .map(|price| Charge {
                    access_id: AccessId::generate().to_string(),
                    buyer_tenant_id: self.buyer.clone(),
                    api_key_id: self.api_key_id.clone(),
                    provider_tenant_id: provider.clone(),
                    dataset_id: dataset_id.clone(),
                    object_id: object_id.clone(),
                    amount_micros: price,
                    fee_bps: state.config.platform_fee_bps,
                    occurred_at: self.now,
                });
            retrievals.push(Retrieval {
                retrieval_event_id: RetrievalId::generate().to_string(),
                object_id,
                dataset_id,
                provider_tenant_id: provider,
                charge,
            });
        }
        let record = SearchRecord {
            buyer_tenant_id: self.buyer.clone(),
            api_key_id: self.api_key_id.clone(),
            query_text: common.text.clone(),
            dataset_ids: match &common.dataset_ids {
                Some(named) => named
                    .iter()
                    .map(|id| DatasetId::parse(id).map_err(AppError::internal))
                    .collect::<Result<_, _>>()?,
                None => {
                    let mut ids: Vec<DatasetId> =
                        retrievals.iter().map(|r| r.dataset_id.clone()).collect();
                    ids.sort();
                    ids.dedup();
                    ids
                }
            },
            results: retrievals,
            occurred_at: self.now,
        };
        let activity_id = SearchActivityId::generate();
        let total = i64::try_from(record.charged_micros()).map_err(|_| AppError::ChargeTooLarge)?;
        let reservation =
            charges::reserve(state, self.principal, activity_id.as_str(), total, self.now).await?;
        let recorded = state
            .run::<Search>(
                activity_id.as_str(),
                SearchCommand::Record(record.clone()),
                self.principal,
            )
            .await;
        if let Err(error) = recorded {
            charges::release(state, self.principal, reservation).await;
            return Err(error);
        }
        Ok(Metered {
            record,
            activity_id: activity_id.to_string(),
        })
    }
}

/// The datasets this request searches, by id: accessible (SPEC §2.8), `active`, granted to an
/// `allow_list` key, and among `named` if given. A named dataset the caller may not reach is 404.
async fn searchable(
    state: &AppState,
    principal: &Principal,
    named: Option<&[String]>,
) -> Result<HashMap<String, DatasetRow>, AppError> {
    let db = &state.store.db;
    let granted = principal.allow_list(db).await?;
    let allowed = |id: &str| granted.as_ref().is_none_or(|g| g.contains(id));
    if let Some(named) = named {
        for id in named {
            let reachable = match projections::datasets::dataset(db, id).await? {
                Some(dataset) if DatasetId::parse(id).is_ok() => {
                    let entitled =
                        projections::datasets::is_entitled(db, id, &principal.tenant_id).await?;
                    projections::datasets::accessible(&dataset, &principal.tenant_id, entitled)
                }
                _ => false,
            };
            if !reachable || !allowed(id) {
                return Err(AppError::DatasetNotFound(id.clone()));
            }
        }
    }
    let mut out = HashMap::new();
    for dataset in projections::datasets::searchable(db, &principal.tenant_id).await? {
        let id = dataset.dataset_id.to_string();
        if allowed(&id) && named.is_none_or(|n| n.contains(&id)) {
            out.insert(id, dataset);
        }
    }
    Ok(out)
}

/// The least a result of `dataset` can cost (SPEC §5.3): its price, or a fifth of it when it
/// decays with age; the demand curve only raises it.
fn lowest_price(dataset: &DatasetRow) -> i64 {
    unit_price_micros(
        dataset.pricing_model,
        dataset.price.micros(),
        i64::MAX / 2,
        0,
    )
}

/// The unit price of one billable result from `dataset` (SPEC §5.3), served now.
async fn price(
    state: &AppState,
    dataset: &DatasetRow,
    object_id: &str,
    now: DateTime<Utc>,
    demand: &mut HashMap<String, i64>,
) -> Result<i64, AppError> {
    let model = dataset.pricing_model;
    let db = &state.store.db;
    let (age_days, appearances) = match model {
        PricingModel::Fixed => (0, 0),
        PricingModel::TimeDecay => {
            let approved_at = projections::objects::object(db, object_id)
                .await?
                .and_then(|o| o.approved_at)
                .and_then(|at| aggregates::timestamp::parse(&at))
                .unwrap_or(now);
            ((now - approved_at).num_seconds().max(0) / 86_400, 0)
        }
        PricingModel::DemandCurve => {
            let n = match demand.get(dataset.dataset_id.as_str()) {
                Some(n) => *n,
                None => {
                    let since = aggregates::timestamp::format(now - chrono::Duration::hours(24));
                    let until = aggregates::timestamp::format(now);
                    let n = projections::searches::appearances(
                        db,
                        dataset.dataset_id.as_str(),
                        &since,
                        &until,
                    )
                    .await?;
                    demand.insert(dataset.dataset_id.to_string(), n);
                    n
                }
            };
            (0, n)
        }
    };
    Ok(unit_price_micros(
        model,
        dataset.price.micros(),
        age_days,
        appearances,
    ))
}
