//! What `POST /v1/search` and `POST /v1/retrieve` share at the boundary: the fields both take,
//! validated into a [`Question`](crate::market::Common), and how a metered answer ends.

use std::collections::BTreeSet;

use aggregates::money::{Amount, Usd, MICROS};
use aggregates::Price;
use serde::Deserialize;
use serde_json::Value;

use crate::http::json::Fields;
use crate::market::{Common, Metered};
use crate::openapi;
use crate::search::query;
use crate::search::retrieval::{Mode, Requested};

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

/// How a metered answer (search or retrieve) ends: what it cost, where it is recorded, what ran.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Metering {
    /// Σ the charges of the answer (each object at most once).
    #[schema(schema_with = openapi::amount)]
    pub charged_amount: Value,
    /// Always `USD`.
    pub currency: Usd,
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
            currency: Usd,
            search_activity_id: metered.activity_id,
            retrieval_mode_used: mode.as_str().to_owned(),
        }
    }
}
