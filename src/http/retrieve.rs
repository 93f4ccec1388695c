//! `POST /v1/retrieve`: passages ("retrieval units") for agents, over the engine, datasets,
//! prices and metering of `POST /v1/search`. Several passages of one object may come back; each
//! object is charged at most once, and the request is one `SearchPerformed` event with one
//! retrieval per object.

use std::collections::HashMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use aggregates::money::json_number;
use aggregates::Scope;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

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
use crate::search::retrieval::Unit;
use crate::state::AppState;

/// Most units a request may ask for.
const MAX_TOP_K: i64 = 50;
/// Most units asked of the engine when results over `max_price_per_result` are left out.
const MAX_FETCH: usize = 400;

/// Routes under `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(retrieve))
}

/// The body of `POST /v1/retrieve`.
#[derive(Deserialize, ToSchema)]
#[schema(as = RetrieveQuery)]
#[serde(deny_unknown_fields)]
struct RetrieveBody {
    /// A question, or a query in the search syntax; trimmed, 1..=4000 characters.
    #[schema(required = true, schema_with = query_text)]
    query: Option<String>,
    /// 1..=100 accessible datasets (duplicates collapsed); default every searchable one.
    #[schema(schema_with = dataset_ids)]
    dataset_ids: Option<Vec<String>>,
    /// 1..=50 passages (default 5).
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 50)]
    #[serde(default, deserialize_with = "whole_number")]
    top_k: Option<i64>,
    /// Passages scoring below it are left out (the score of the mode that ran: BM25, cosine or
    /// the fused rank score).
    #[schema(value_type = Option<f64>)]
    min_score: Option<f64>,
    /// Default `auto`, as for `POST /v1/search`.
    #[schema(schema_with = retrieval_mode)]
    retrieval_mode: Option<String>,
    /// The most one object's passages may cost, in USD (a price, SPEC §1.6).
    #[schema(schema_with = max_price)]
    #[serde(default, deserialize_with = "number_or_string")]
    max_price_per_result: Option<Value>,
}

/// The answer of `POST /v1/retrieve`.
#[derive(Serialize, ToSchema)]
pub struct Retrieved {
    /// At most `top_k` passages: score desc, then object_id and position asc.
    pub units: Vec<RetrievalUnit>,
    /// The charge, the activity and the mode.
    #[serde(flatten)]
    pub metering: Metering,
}

/// One passage.
#[derive(Serialize, ToSchema)]
pub struct RetrievalUnit {
    /// The recorded retrieval (`ret_`) of the passage's object: passages of one object share it.
    pub unit_id: String,
    pub object_id: String,
    pub dataset_id: String,
    pub dataset_name: String,
    /// The passage: at most 500 characters of the object's extracted text.
    #[schema(max_length = 500)]
    pub text: String,
    /// `chars:{start}-{end}` of the passage in the extracted text (0-based, end exclusive).
    #[schema(pattern = "^chars:[0-9]+-[0-9]+$")]
    pub locator: String,
    /// The score of the mode that ran.
    pub score: f64,
    pub provenance: Provenance,
    /// True iff the dataset belongs to another tenant.
    pub billable: bool,
    /// The unit price charged for the object, on its first passage; 0 on the others and for
    /// own objects.
    #[schema(schema_with = openapi::amount)]
    pub charged_amount: Value,
}

/// Where a passage comes from.
#[derive(Clone, Serialize, ToSchema)]
pub struct Provenance {
    pub filename: String,
    /// The SHA-256 of the approved bytes.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub checksum_sha256: String,
    /// When the object was approved.
    pub approved_at: String,
}

struct RetrieveRequest {
    common: Common,
    top_k: usize,
    min_score: Option<f64>,
}

fn validate(body: RetrieveBody) -> Result<RetrieveRequest, AppError> {
    let mut fields = Fields::default();
    let common = validate_common(
        &mut fields,
        body.query,
        body.dataset_ids,
        body.retrieval_mode,
        body.max_price_per_result,
    );
    let top_k = body.top_k.unwrap_or(5);
    if !(1..=MAX_TOP_K).contains(&top_k) {
        fields.fail("top_k", format!("must be between 1 and {MAX_TOP_K}"));
    }
    if body.min_score.is_some_and(|m| !m.is_finite()) {
        fields.fail("min_score", "must be a finite number");
    }
    fields.finish()?;
    Ok(RetrieveRequest {
        common: common.expect("validated"),
        top_k: top_k as usize,
        min_score: body.min_score,
    })
}

#[utoipa::path(
    post,
    path = "/retrieve",
    summary = "Retrieves passages of the approved objects of the accessible datasets for a \
        question; each object of another tenant's dataset is charged once (search:query).",
    request_body = RetrieveBody,
    responses(
        (status = 200, description = "The passages, and the charge.", body = Retrieved),
        (status = 402, description = "The charge would take the key past its monthly \
            spend_limit (spend_limit_exceeded); nothing is charged or recorded."),
        (status = 404, description = "A named dataset is not accessible or, for an allow_list \
            key, not granted; details.dataset_id names it."),
        (status = 422, description = "A field is missing or invalid, the query's syntax is, \
            or the query is too broad (details.fields.query); dense asked of a server without \
            an embedder (details.fields.retrieval_mode)."),
    )
)]
async fn retrieve(
    State(state): State<AppState>,
    Auth(principal): Auth,
    body: JsonBody,
) -> Result<Envelope<Retrieved>, AppError> {
    principal.require(Scope::SearchQuery)?;
    let request = validate(body.parse()?)?;
    let common = &request.common;
    let market = Market::open(&state, &principal, common).await?;
    let mut prices = Prices::default();
    let mut fetch = request.top_k;
    let (units, mode) = loop {
        let (found, mode) = run(&state, common, &market.ids, fetch, |engine, q, ids, n| {
            engine.passages(q, ids, n)
        })
        .await?;
        let exhausted = found.len() < fetch;
        let mut kept: Vec<Unit> = Vec::with_capacity(request.top_k);
        for unit in found {
            if request.min_score.is_some_and(|m| unit.score < m) {
                continue;
            }
            if market
                .price(&state, &mut prices, &unit.dataset_id, &unit.object_id)
                .await?
            {
                kept.push(unit);
            }
            if kept.len() == request.top_k {
                break;
            }
        }
        if kept.len() == request.top_k || exhausted || fetch >= MAX_FETCH {
            break (kept, mode);
        }
        fetch = (fetch * 4).min(MAX_FETCH);
    };
    // One retrieval per object, in the order of its best passage.
    let mut objects: Vec<(&str, &str)> = Vec::new();
    for unit in &units {
        if !objects.iter().any(|(o, _)| *o == unit.object_id) {
            objects.push((&unit.object_id, &unit.dataset_id));
        }
    }
    let metered = market.meter(&state, common, &objects, &prices).await?;
    let retrieval_of: HashMap<&str, &aggregates::search::Retrieval> = metered
        .record
        .results
        .iter()
        .map(|r| (r.object_id.as_str(), r))
        .collect();
    // Each object's provenance, read once; its first unit carries its charge.
    let mut provenance: HashMap<&str, Provenance> = HashMap::new();
    let mut answer = Vec::with_capacity(units.len());
    for unit in &units {
        let retrieval = retrieval_of[unit.object_id.as_str()];
        let first = !provenance.contains_key(unit.object_id.as_str());
        if first {
            let object = projections::objects::object(&state.store.db, &unit.object_id)
                .await?
                .ok_or_else(|| AppError::internal("a retrieved object has no read model"))?;
            provenance.insert(
                &unit.object_id,
                Provenance {
                    filename: unit.filename.clone(),
                    checksum_sha256: object.checksum_sha256.unwrap_or_default(),
                    approved_at: object.approved_at.unwrap_or_default(),
                },
            );
        }
        let charged = match &retrieval.charge {
            Some(charge) if first => charge.amount_micros,
            _ => 0,
        };
        answer.push(RetrievalUnit {
            unit_id: retrieval.retrieval_event_id.clone(),
            object_id: unit.object_id.clone(),
            dataset_id: unit.dataset_id.clone(),
            dataset_name: market.datasets[&unit.dataset_id].name.clone(),
            text: unit.text.clone(),
            locator: format!("chars:{}-{}", unit.start, unit.end),
            score: rounded(unit.score),
            provenance: provenance[unit.object_id.as_str()].clone(),
            billable: retrieval.charge.is_some(),
            charged_amount: json_number(charged),
        });
    }
    Ok(Envelope::ok(Retrieved {
        units: answer,
        metering: Metering::of(metered, mode),
    }))
}
