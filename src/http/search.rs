//! `POST /v1/search` (SPEC §3.12): search over the approved objects of the datasets the caller
//! may search, in the mode asked for (lexical, dense, hybrid or auto), with every result from
//! another tenant's dataset charged and the whole request recorded as one `SearchPerformed` event.
//! The datasets searched, the prices and the metering are shared with `POST /v1/retrieve`.

use aggregates::money::json_number;
use aggregates::Scope;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::http::envelope::Envelope;
use crate::http::extract::Auth;
use crate::http::json::{number_or_string, Fields, JsonBody};
use crate::http::market::{
    dataset_ids, max_price, query_text, retrieval_mode, rounded, validate_common, whole_number,
    Metering,
};
use crate::market::{run, Common, Market, Prices};
use crate::openapi;
use crate::search::index::Hit;
use crate::state::AppState;

/// Most hits asked of the index when results over `max_price_per_result` are left out.
const MAX_FETCH: usize = 400;

/// Routes under `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search))
}

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

/// The answer of a search (SPEC §3.12).
#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    /// At most `limit` results, one per object: score desc, then object_id asc.
    pub results: Vec<SearchResult>,
    /// How many results.
    #[schema(minimum = 0, maximum = 50)]
    pub result_count: i64,
    /// The charge, the activity and the mode.
    #[serde(flatten)]
    pub metering: Metering,
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
    path = "/search",
    summary = "Searches the approved objects of the accessible datasets; results from other \
        tenants' datasets are charged (search:query).",
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
) -> Result<Envelope<SearchResults>, AppError> {
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
    Ok(Envelope::ok(SearchResults {
        result_count: results.len() as i64,
        results,
        metering: Metering::of(metered, mode),
    }))
}
