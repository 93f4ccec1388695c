//! What `POST /v1/search` and `POST /v1/retrieve` share: the fields both take, the datasets a
//! request searches, the prices of their results, the engine run on a blocking thread, and the
//! metering of the answer as one `SearchPerformed` event.

use std::collections::{BTreeSet, HashMap};

use aggregates::metering::Charge;
use aggregates::money::{Amount, MICROS};
use aggregates::search::{unit_price_micros, Retrieval, Search, SearchCommand, SearchRecord};
use aggregates::{
    AccessId, DatasetId, ObjectId, Price, PricingModel, RetrievalId, SearchActivityId, TenantId,
};
use chrono::{DateTime, Utc};
use projections::datasets::DatasetRow;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Principal, PrincipalKind};
use crate::http::charges;
use crate::http::error::AppError;
use crate::http::json::Fields;
use crate::openapi;
use crate::search::query::{self, Node};
use crate::search::retrieval::{Engine, Mode, Question, Requested, RetrievalError};
use crate::search::IndexError;
use crate::state::AppState;

/// Longest accepted query, in characters.
pub(crate) const MAX_QUERY_CHARS: usize = 4000;
/// Most datasets a request may name.
pub(crate) const MAX_DATASET_IDS: usize = 100;
/// The OpenAPI schema of `max_price_per_result`.
pub(crate) fn max_price() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::amount_input((Price::MAX.micros() / MICROS) as u64)
}

/// An integer, also written with a zero fraction (`10.0`): JSON does not tell the two apart, and
/// neither does JSON Schema's `integer`.
pub(crate) fn whole_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<i64>, D::Error> {
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < i64::MAX as f64)
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("must be an integer")),
    }
}

pub(crate) fn query_text() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::trimmed(MAX_QUERY_CHARS, false)
}
pub(crate) fn dataset_ids() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::optional_ids("dset", MAX_DATASET_IDS)
}
pub(crate) fn retrieval_mode() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::optional_choice("auto|lexical|hybrid|dense")
}

/// What `POST /v1/search` and `POST /v1/retrieve` ask alike, validated.
pub(crate) struct Common {
    pub text: String,
    pub query: Node,
    pub dataset_ids: Option<Vec<String>>,
    pub requested: Requested,
    /// `max_price_per_result` in micro-USD.
    pub max_price: Option<i64>,
}

/// The fields both endpoints share, checked into `fields`; `None` where one failed.
pub(crate) fn validate_common(
    fields: &mut Fields,
    query: Option<String>,
    dataset_ids: Option<Vec<String>>,
    retrieval_mode: Option<String>,
    max_price_per_result: Option<Value>,
) -> Option<Common> {
    let text = query.map(|q| q.trim().to_owned());
    let parsed = match &text {
        None => {
            fields.fail("query", "is required");
            None
        }
        Some(t) if t.is_empty() => {
            fields.fail("query", "must not be empty");
            None
        }
        Some(t) if t.chars().count() > MAX_QUERY_CHARS => {
            fields.fail(
                "query",
                format!("must be at most {MAX_QUERY_CHARS} characters"),
            );
            None
        }
        Some(t) => match query::parse(t) {
            Ok(node) => Some(node),
            Err(e) => {
                fields.fail("query", format!("invalid query syntax: {e}"));
                None
            }
        },
    };
    let dataset_ids = dataset_ids.map(|ids| {
        if ids.is_empty() || ids.len() > MAX_DATASET_IDS {
            fields.fail(
                "dataset_ids",
                format!("must list 1 to {MAX_DATASET_IDS} datasets"),
            );
        }
        let unique: BTreeSet<String> = ids.into_iter().collect();
        unique.into_iter().collect::<Vec<_>>()
    });
    let requested = match retrieval_mode.as_deref() {
        None => Some(Requested::Auto),
        Some(mode) => {
            let requested = Requested::parse(mode);
            if requested.is_none() {
                fields.fail(
                    "retrieval_mode",
                    "must be one of auto, lexical, hybrid, dense",
                );
            }
            requested
        }
    };
    let max_price = fields.optional(
        "max_price_per_result",
        max_price_per_result
            .map(|v| Amount::from_json(&v, Price::MAX.micros()).map(|a| a.micros())),
    );
    Some(Common {
        text: text?,
        query: parsed?,
        dataset_ids,
        requested: requested?,
        max_price,
    })
}

/// A score as answered: six decimals.
pub(crate) fn rounded(score: f64) -> f64 {
    (score * 1e6).round() / 1e6
}

/// Runs the engine on a blocking thread: `what` of this instance's index and embedder. A query
/// over the budget is 422 on `query`; `dense` without an embedder is 422 on `retrieval_mode`.
pub(crate) async fn run<T: Send + 'static>(
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
pub(crate) struct Prices {
    units: HashMap<String, Option<i64>>,
    demand: HashMap<String, i64>,
}

/// The datasets one request searches and who asks: what prices and meters its results.
pub(crate) struct Market<'a> {
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
pub(crate) struct Metered {
    pub record: SearchRecord,
    pub activity_id: String,
}

/// How a metered answer (search or retrieve) ends: what it cost, where it is recorded, what ran.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Metering {
    /// Σ the charges of the answer (each object at most once).
    #[schema(schema_with = openapi::amount)]
    pub charged_amount: Value,
    /// Always `USD`.
    #[schema(pattern = "^USD$")]
    pub currency: String,
    /// The search activity recorded for the request.
    pub search_activity_id: String,
    /// The mode that ran: `lexical`, `dense` or `hybrid`.
    #[schema(pattern = "^(lexical|dense|hybrid)$")]
    pub retrieval_mode_used: String,
}

impl Metering {
    pub(crate) fn of(metered: Metered, mode: Mode) -> Self {
        Self {
            charged_amount: aggregates::money::json_number(metered.record.charged_micros()),
            currency: "USD".to_owned(),
            search_activity_id: metered.activity_id,
            retrieval_mode_used: mode.as_str().to_owned(),
        }
    }
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
            .store
            .execute::<Search>(
                activity_id.as_str(),
                SearchCommand::Record(record.clone()),
                &(),
                &self.principal.actor(),
            )
            .await;
        if let Err(error) = recorded {
            charges::release(state, self.principal, reservation).await;
            return Err(error.into());
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
