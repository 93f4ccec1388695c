//! Cursor pagination (SPEC §1.7): `limit` 1..=100 (default 20), and opaque cursors sealed with the
//! signing key and bound to their endpoint and filter set, so a tampered or foreign cursor is
//! refused with 400 `invalid_cursor`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use crate::http::error::AppError;
use crate::signing::SigningKey;

/// Raw pagination parameters from a query string.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page (opaque).
    pub cursor: Option<String>,
    /// Page size, 1..=100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
}

/// A validated page request.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub limit: usize,
    /// The sort key after which the page starts.
    pub after: Option<Value>,
}

impl PageQuery {
    /// Checks the limit (422) and opens the cursor for `scope` (400).
    pub fn page(
        &self,
        key: &SigningKey,
        scope: &str,
        default_limit: usize,
        max_limit: usize,
    ) -> Result<Page, AppError> {
        let limit = limit(self.limit.as_deref(), default_limit, max_limit)
            .map_err(|reason| AppError::field("limit", reason))?;
        // An empty cursor is no cursor, as empty filters are no filters.
        let after = self
            .cursor
            .as_deref()
            .filter(|raw| !raw.is_empty())
            .map(|raw| open(key, scope, raw))
            .transpose()?;
        Ok(Page { limit, after })
    }
}

/// A `limit` query value: `default_limit` when absent, else an integer in `1..=max_limit`; the
/// reason it is refused otherwise.
pub fn limit(raw: Option<&str>, default_limit: usize, max_limit: usize) -> Result<usize, String> {
    match raw {
        None => Ok(default_limit),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max_limit).contains(n))
            .ok_or_else(|| format!("must be an integer from 1 to {max_limit}")),
    }
}

/// Seals a sort key into a cursor valid only for `scope` (endpoint plus filters).
pub fn seal(key: &SigningKey, scope: &str, after: &Value) -> String {
    let payload = URL_SAFE_NO_PAD.encode(after.to_string());
    let tag = key.mac(format!("cursor\n{scope}\n{payload}").as_bytes());
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(&tag[..16]))
}

/// Opens a cursor sealed for `scope`.
pub fn open(key: &SigningKey, scope: &str, raw: &str) -> Result<Value, AppError> {
    let (payload, tag) = raw.split_once('.').ok_or(AppError::InvalidCursor)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| AppError::InvalidCursor)?;
    if !key.verify(format!("cursor\n{scope}\n{payload}").as_bytes(), &tag) {
        return Err(AppError::InvalidCursor);
    }
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AppError::InvalidCursor)?;
    serde_json::from_slice(&json).map_err(|_| AppError::InvalidCursor)
}

/// Splits `limit + 1` fetched rows into a page and the next cursor.
pub fn finish<T>(
    mut rows: Vec<T>,
    page: &Page,
    key: &SigningKey,
    scope: &str,
    sort_key: impl Fn(&T) -> Value,
) -> (Vec<T>, Option<String>) {
    if rows.len() > page.limit {
        rows.truncate(page.limit);
        let next = rows.last().map(|last| seal(key, scope, &sort_key(last)));
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn key() -> SigningKey {
        SigningKey::load(
            Some(crate::signing::TEST_KEY),
            std::path::Path::new("/nonexistent"),
        )
        .unwrap()
    }

    #[test]
    fn limits_outside_1_to_100_are_refused() {
        for bad in ["0", "101", "-1", "ten", ""] {
            let query = PageQuery {
                cursor: None,
                limit: Some(bad.into()),
            };
            assert!(
                matches!(
                    query.page(&key(), "s", 20, 100),
                    Err(AppError::Validation(_))
                ),
                "{bad}"
            );
        }
        let query = PageQuery {
            cursor: None,
            limit: None,
        };
        assert_eq!(query.page(&key(), "s", 20, 100).unwrap().limit, 20);
    }

    #[test]
    fn a_cursor_only_opens_for_its_scope() {
        let cursor = seal(
            &key(),
            "datasets?status=active",
            &json!(["2026-01-01", "dset_x"]),
        );
        assert_eq!(
            open(&key(), "datasets?status=active", &cursor).unwrap(),
            json!(["2026-01-01", "dset_x"])
        );
        assert!(matches!(
            open(&key(), "datasets?status=draft", &cursor),
            Err(AppError::InvalidCursor)
        ));
        assert!(matches!(
            open(&key(), "objects", &cursor),
            Err(AppError::InvalidCursor)
        ));
    }

    #[test]
    fn pages_end_with_a_null_cursor() {
        let page = Page {
            limit: 2,
            after: None,
        };
        let (items, next) = finish(vec![1, 2, 3], &page, &key(), "s", |n| json!(n));
        assert_eq!(items, [1, 2]);
        assert_eq!(open(&key(), "s", &next.unwrap()).unwrap(), json!(2));
        let (items, next) = finish(vec![1, 2], &page, &key(), "s", |n| json!(n));
        assert_eq!(items, [1, 2]);
        assert!(next.is_none());
    }

    proptest! {
        #[test]
        fn tampered_cursors_are_refused(n in any::<i64>(), flip in 0usize..64) {
            let cursor = seal(&key(), "s", &json!(n));
            let mut bytes = cursor.into_bytes();
            let i = flip % bytes.len();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            if let Ok(value) = open(&key(), "s", &tampered) {
                // Only an edit that decodes to the same bytes can pass.
                prop_assert_eq!(value, json!(n));
            }
        }

        #[test]
        fn garbage_cursors_never_panic(raw in "\\PC{0,80}") {
            let _ = open(&key(), "s", &raw);
        }
    }
}
