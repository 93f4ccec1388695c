//! `POST /v1/search` (SPEC §3.12): search over the approved objects of the datasets the caller
//! may search, in the mode asked for (lexical, dense, hybrid or auto), with every result from
//! another tenant's dataset charged and the whole request recorded as one `SearchPerformed` event.
//! The datasets searched, the prices and the metering are shared with `POST /v1/retrieve`.

use std::collections::{BTreeSet, HashMap};

use aggregates::metering::Charge;
use aggregates::money::{json_number, Amount, MICROS};
use aggregates::search::{unit_price_micros, Retrieval, Search, SearchCommand, SearchRecord};
use aggregates::{
    AccessId, DatasetId, ObjectId, Price, PricingModel, RetrievalId, Scope, SearchActivityId,
    TenantId,
};
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use chrono::{DateTime, Utc};
use projections::datasets::DatasetRow;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{OpenApi, ToSchema};

use crate::app::AppState;
use crate::auth::{Principal, PrincipalKind};
use crate::http::charges;
use crate::http::envelope;
use crate::http::error::AppError;
use crate::http::extract::Auth;
use crate::http::json::{number_or_string, Fields, JsonBody};
use crate::http::openapi;
use crate::http::routes::Routes;
use crate::search::index::Hit;
use crate::search::query::{self, Node};
use crate::search::retrieval::{Engine, Question, Requested, RetrievalError};
use crate::search::IndexError;

/// Longest accepted query, in characters.
pub(crate) const MAX_QUERY_CHARS: usize = 4000;
/// Most datasets a request may name.
pub(crate) const MAX_DATASET_IDS: usize = 100;
/// Most hits asked of the index when results over `max_price_per_result` are left out.
const MAX_FETCH: usize = 400;

/// Routes under `/v1`.
pub fn routes() -> Routes {
    Routes::new().route("/search", post(search))
}

/// The operations of this module, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(search))]
pub struct Api;

/// The body of `POST /v1/search`.
#[derive(Deserialize, ToSchema)]
#[schema(as = SearchQuery)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    /// Trimmed, 1..=4000 characters. A question (no operators) matches any of its words in
    /// `hybrid` and `auto` (stemmed, English stop words out). In the query language, terms are
    /// ANDed; `OR`, `NOT`/`-`, `"phrases"`, `( … )`, and a trailing `*` for a prefix. Unbalanced
    /// quotes or parentheses, or a leading wildcard, are 422.
    #[schema(required = true, schema_with = query_text)]
    query: Option<String>,
    /// 1..=100 accessible datasets (duplicates collapsed); default every searchable one.
    #[schema(schema_with = dataset_ids)]
    dataset_ids: Option<Vec<String>>,
    /// Default `auto`: `lexical` when the query uses an operator (unless that finds nothing),
    /// else `hybrid`. `dense` is 422 on a server without an embedder.
    #[schema(schema_with = retrieval_mode)]
    retrieval_mode: Option<String>,
    /// 1..=50 (default 10).
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 50)]
    #[serde(default, deserialize_with = "whole_number")]
    limit: Option<i64>,
    /// The most one result may cost, in USD (a price, SPEC §1.6): results of other tenants priced
    /// above it are left out and not charged. Default: no bound.
    #[schema(schema_with = max_price)]
    #[serde(default, deserialize_with = "number_or_string")]
    max_price_per_result: Option<Value>,
}

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
    openapi::schema(json!({
        "type": ["array", "null"], "minItems": 1, "maxItems": MAX_DATASET_IDS,
        "items": { "type": "string", "pattern": openapi::id_pattern("dset") },
    }))
}
pub(crate) fn retrieval_mode() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    openapi::optional_choice("auto|lexical|hybrid|dense")
}

/// The answer of a search (SPEC §3.12).
#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    /// At most `limit` results, one per object: score desc, then object_id asc.
    pub results: Vec<SearchResult>,
    /// How many results.
    #[schema(minimum = 0, maximum = 50)]
    pub result_count: i64,
    /// Σ the results' charges.
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

/// One matching object.
#[derive(Serialize, ToSchema)]
pub struct SearchResult {
    /// The object.
    pub object_id: String,
    /// Its dataset.
    pub dataset_id: String,
    /// The dataset's name.
    pub dataset_name: String,
    /// The object's file name.
    pub filename: String,
    /// Plain text, at most 200 characters, around the best match.
    #[schema(max_length = 200)]
    pub snippet: String,
    /// The BM25 score (lexical), the cosine similarity (dense), or the Reciprocal Rank Fusion
    /// score Σ 1/(60 + rank) over the two legs (hybrid).
    pub score: f64,
    /// Where the match is.
    pub citation: Citation,
    /// This result's retrieval.
    pub retrieval_event_id: String,
    /// True iff the dataset belongs to another tenant (the result is then charged).
    pub billable: bool,
    /// The unit price charged, 0 for own results.
    #[schema(schema_with = openapi::amount)]
    pub charged_amount: Value,
}

/// The place of a match.
#[derive(Serialize, ToSchema)]
pub struct Citation {
    /// The object.
    pub object_id: String,
    /// `chars:{start}-{end}` (0-based, end-exclusive offsets into the extracted text), or
    /// `filename` / `metadata`.
    #[schema(pattern = "^(chars:[0-9]+-[0-9]+|filename|metadata)$")]
    pub locator: String,
}

/// A validated request.
struct SearchRequest {
    common: Common,
    limit: usize,
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

fn validate(body: SearchBody) -> Result<SearchRequest, AppError> {
    let mut fields = Fields::default();
    let common = validate_common(
        &mut fields,
        body.query,
        body.dataset_ids,
        body.retrieval_mode,
        body.max_price_per_result,
    );
    let limit = body.limit.unwrap_or(10);
    if !(1..=50).contains(&limit) {
        fields.fail("limit", "must be between 1 and 50");
    }
    fields.finish()?;
    Ok(SearchRequest {
        common: common.expect("validated"),
        limit: limit as usize,
    })
}

#[utoipa::path(
    post,
    path = "/v1/search",
    tag = "search",
    summary = "Searches the approved objects of the accessible datasets; results from other \
        tenants' datasets are charged (search:query).",
    security(("session" = []), ("api_key" = [])),
    request_body = SearchBody,
    responses(
        (status = 200, description = "The results, and the charge.", body = SearchResults),
        (status = 402, description = "The charge would take the key past its monthly \
            spend_limit (spend_limit_exceeded); nothing is charged or recorded."),
        (status = 404, description = "A named dataset is not accessible or, for an allow_list \
            key, not granted; details.dataset_id names it."),
        (status = 422, description = "A field is missing or invalid, or the query's syntax is, \
            or the query is too broad: more than 4096 terms once its wildcards are expanded, or \
            more than 3,000,000 documents to scan (details.fields.query)."),
    )
)]
async fn search(
    State(state): State<AppState>,
    Auth(principal): Auth,
    body: JsonBody,
) -> Result<Response, AppError> {
    principal.require(Scope::SearchQuery)?;
    let SearchRequest { common, limit } = validate(body.parse()?)?;
    let market = Market::open(&state, &principal, &common).await?;
    // The hits to answer with, and the unit price of each billable one. Results over the bound
    // (time-decayed objects of a dataset near it) are left out; the engine is asked for more
    // until `limit` remain or the matches run out.
    let mut fetch = limit;
    let mut prices = Prices::default();
    let (hits, mode) = loop {
        let (found, mode) = run(&state, &common, &market.ids, fetch, |engine, q, ids, n| {
            engine.objects(q, ids, n)
        })
        .await?;
        let exhausted = found.len() < fetch;
        let mut kept: Vec<Hit> = Vec::with_capacity(limit);
        for hit in found {
            if market
                .price(&state, &mut prices, &hit.dataset_id, &hit.object_id)
                .await?
            {
                kept.push(hit);
            }
            if kept.len() == limit {
                break;
            }
        }
        if kept.len() == limit || exhausted || fetch >= MAX_FETCH {
            break (kept, mode);
        }
        fetch = (fetch * 4).min(MAX_FETCH);
    };
    let objects: Vec<(&str, &str)> = hits
        .iter()
        .map(|h| (h.object_id.as_str(), h.dataset_id.as_str()))
        .collect();
    let metered = market.meter(&state, &common, &objects, &prices).await?;
    let results: Vec<SearchResult> = hits
        .iter()
        .zip(&metered.record.results)
        .map(|(hit, retrieval)| {
            let charged = retrieval.charge.as_ref().map_or(0, |c| c.amount_micros);
            SearchResult {
                object_id: hit.object_id.clone(),
                dataset_id: hit.dataset_id.clone(),
                dataset_name: market.datasets[&hit.dataset_id].name.clone(),
                filename: hit.filename.clone(),
                snippet: hit.snippet.clone(),
                score: rounded(f64::from(hit.score)),
                citation: Citation {
                    object_id: hit.object_id.clone(),
                    locator: hit.locator.clone(),
                },
                retrieval_event_id: retrieval.retrieval_event_id.clone(),
                billable: retrieval.charge.is_some(),
                charged_amount: json_number(charged),
            }
        })
        .collect();
    Ok(envelope::ok(SearchResults {
        result_count: results.len() as i64,
        results,
        charged_amount: json_number(metered.record.charged_micros()),
        currency: "USD".to_owned(),
        search_activity_id: metered.activity_id,
        retrieval_mode_used: mode.as_str().to_owned(),
    }))
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
            datasets.retain(|_, d| d.tenant_id == principal.tenant_id || lowest_price(d) <= max);
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
                let unit = if dataset.tenant_id == self.principal.tenant_id {
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
            let provider = TenantId::parse(&dataset.tenant_id).map_err(AppError::internal)?;
            let object_id = ObjectId::parse(object_id).map_err(AppError::internal)?;
            let dataset_id = DatasetId::parse(&dataset.dataset_id).map_err(AppError::internal)?;
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
        if allowed(&dataset.dataset_id) && named.is_none_or(|n| n.contains(&dataset.dataset_id)) {
            out.insert(dataset.dataset_id.clone(), dataset);
        }
    }
    Ok(out)
}

/// The least a result of `dataset` can cost (SPEC §5.3): its price, or a fifth of it when it
/// decays with age; the demand curve only raises it.
fn lowest_price(dataset: &DatasetRow) -> i64 {
    match PricingModel::parse(&dataset.pricing_model) {
        Some(model) => unit_price_micros(model, dataset.price_micros, i64::MAX / 2, 0),
        None => dataset.price_micros,
    }
}

/// The unit price of one billable result from `dataset` (SPEC §5.3), served now.
async fn price(
    state: &AppState,
    dataset: &DatasetRow,
    object_id: &str,
    now: DateTime<Utc>,
    demand: &mut HashMap<String, i64>,
) -> Result<i64, AppError> {
    let model = PricingModel::parse(&dataset.pricing_model)
        .ok_or_else(|| AppError::internal("unknown pricing model in read model"))?;
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
            let n = match demand.get(&dataset.dataset_id) {
                Some(n) => *n,
                None => {
                    let since = aggregates::timestamp::format(now - chrono::Duration::hours(24));
                    let until = aggregates::timestamp::format(now);
                    let n =
                        projections::searches::appearances(db, &dataset.dataset_id, &since, &until)
                            .await?;
                    demand.insert(dataset.dataset_id.clone(), n);
                    n
                }
            };
            (0, n)
        }
    };
    Ok(unit_price_micros(
        model,
        dataset.price_micros,
        age_days,
        appearances,
    ))
}
