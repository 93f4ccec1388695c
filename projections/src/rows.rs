//! What every read model's queries share: the start of a keyset page, and the column types both
//! dialects store alike.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The `(created_at, id)` a newest-first keyset page starts below: the previous page's last row,
/// or past every row (`~` sorts after every timestamp and id).
pub fn keyset_start(after: Option<&(String, String)>) -> (&str, &str) {
    after.map_or(("~", "~"), |(at, id)| (at.as_str(), id.as_str()))
}

/// A truth value computed by a query (`CASE … THEN 1 ELSE 0 END`): SQLite has no boolean type,
/// so both dialects return it as an integer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Flag(pub bool);

impl From<i64> for Flag {
    fn from(value: i64) -> Self {
        Flag(value != 0)
    }
}

/// A value stored as JSON text (both dialects keep such columns as `TEXT`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct JsonText<T>(pub T);

impl<T: DeserializeOwned> TryFrom<String> for JsonText<T> {
    type Error = serde_json::Error;
    fn try_from(text: String) -> Result<Self, serde_json::Error> {
        serde_json::from_str(&text).map(JsonText)
    }
}

/// A schema written as JSON, for a response field whose shape the derive cannot say.
pub fn schema(json: serde_json::Value) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    serde_json::from_value(json).expect("a valid schema")
}

/// A list of dataset ids.
pub fn dataset_ids() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let pattern = "^dset_[0-9a-hjkmnp-tv-z]{26}$";
    schema(
        serde_json::json!({ "type": "array", "items": { "type": "string", "pattern": pattern } }),
    )
}
