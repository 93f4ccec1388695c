//! Cursor pagination (SPEC §1.7): `limit` 1..=100 (default 20), and opaque cursors sealed with the
//! signing key and bound to their endpoint and filter set, so a tampered or foreign cursor is
//! refused with 400 `invalid_cursor`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::AppError;
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
pub struct PageRequest {
    pub limit: usize,
    /// The sort key after which the page starts.
    pub after: Option<Value>,
}

/// One page of a list, in the order the endpoint documents.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// The next page's cursor, null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A keyset page request: the limit and the sort key `K` of the previous page's last row, opened
/// from a cursor sealed for one endpoint and filter set. A cursor whose key is not a `K` is
/// refused like a tampered one.
pub struct Keyset<'a, K> {
    key: &'a SigningKey,
    scope: String,
    limit: usize,
    after: Option<K>,
}

impl<'a, K: Serialize + DeserializeOwned> Keyset<'a, K> {
    /// Checks `query`'s limit (1..=100, default 20; 422) and opens its cursor for `scope` (400).
    pub fn open(key: &'a SigningKey, query: &PageQuery, scope: String) -> Result<Self, AppError> {
        let page = query.page(key, &scope, 20, 100)?;
        let after = page
            .after
            .map(|value| serde_json::from_value(value).map_err(|_| AppError::InvalidCursor))
            .transpose()?;
        Ok(Self {
            key,
            scope,
            limit: page.limit,
            after,
        })
    }

    /// The sort key the page starts after.
    pub fn after(&self) -> Option<&K> {
        self.after.as_ref()
    }

    /// Rows to fetch: one more than the page, to know whether another follows.
    pub fn fetch(&self) -> usize {
        self.limit + 1
    }

    /// The page of up to `limit + 1` fetched `rows`, each made an item by `item`; the cursor
    /// holds `sort_key` of the last item shown.
    pub fn page<R, T>(
        &self,
        mut rows: Vec<R>,
        sort_key: impl Fn(&R) -> K,
        item: impl FnMut(R) -> T,
    ) -> Page<T> {
        let mut next_cursor = None;
        if rows.len() > self.limit {
            rows.truncate(self.limit);
            next_cursor = rows.last().map(|last| {
                let key = serde_json::to_value(sort_key(last)).unwrap_or_default();
                seal(self.key, &self.scope, &key)
            });
        }
        Page {
            items: rows.into_iter().map(item).collect(),
            next_cursor,
        }
    }
}

impl PageQuery {
    /// Checks the limit (422) and opens the cursor for `scope` (400).
    pub fn page(
        &self,
        key: &SigningKey,
        scope: &str,
        default_limit: usize,
        max_limit: usize,
    ) -> Result<PageRequest, AppError> {
        let limit = limit(self.limit.as_deref(), default_limit, max_limit)
            .map_err(|reason| AppError::field("limit", reason))?;
        // An empty cursor is no cursor, as empty filters are no filters.
        let after = self
            .cursor
            .as_deref()
            .filter(|raw| !raw.is_empty())
            .map(|raw| open(key, scope, raw))
            .transpose()?;
        Ok(PageRequest { limit, after })
    }
}

/// A list filter from a closed set given as `a|b|c`: absent or empty is no filter (SPEC §1.7);
/// anything else outside the set is 422.
pub fn filter(
    field: &str,
    raw: Option<String>,
    allowed: &'static str,
) -> Result<Option<&'static str>, AppError> {
    match raw.as_deref() {
        None | Some("") => Ok(None),
        Some(raw) => allowed
            .split('|')
            .find(|s| *s == raw)
            .map(Some)
            .ok_or_else(|| AppError::field(field, format!("must be one of {allowed}"))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        let after = Value::from(vec!["2026-01-01", "dset_x"]);
        let cursor = seal(&key(), "datasets?status=active", &after);
        assert_eq!(
            open(&key(), "datasets?status=active", &cursor).unwrap(),
            after
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
        let query = |cursor: Option<String>| PageQuery {
            cursor,
            limit: Some("2".into()),
        };
        let key = key();
        let keyset = Keyset::<i64>::open(&key, &query(None), "s".into()).unwrap();
        assert_eq!((keyset.after(), keyset.fetch()), (None, 3));
        let page = keyset.page(vec![1, 2, 3], |n| *n, |n| n * 10);
        assert_eq!(page.items, [10, 20]);
        let next = Keyset::<i64>::open(&key, &query(page.next_cursor), "s".into()).unwrap();
        assert_eq!(next.after(), Some(&2));
        let last = next.page(vec![3], |n| *n, |n| n);
        assert_eq!((last.items, last.next_cursor), (vec![3], None));
    }

    #[test]
    fn a_cursor_of_another_shape_is_refused() {
        let cursor = seal(&key(), "s", &Value::from("not a pair"));
        let query = PageQuery {
            cursor: Some(cursor),
            limit: None,
        };
        assert!(matches!(
            Keyset::<(String, String)>::open(&key(), &query, "s".into()),
            Err(AppError::InvalidCursor)
        ));
    }

    #[test]
    fn empty_filters_are_no_filters_and_others_must_be_known() {
        assert_eq!(filter("status", None, "a|b").unwrap(), None);
        assert_eq!(filter("status", Some(String::new()), "a|b").unwrap(), None);
        assert_eq!(
            filter("status", Some("b".into()), "a|b").unwrap(),
            Some("b")
        );
        assert!(matches!(
            filter("status", Some("c".into()), "a|b"),
            Err(AppError::Validation(fields)) if fields["status"] == "must be one of a|b"
        ));
    }

    proptest! {
        #[test]
        fn tampered_cursors_are_refused(n in any::<i64>(), flip in 0usize..64) {
            let cursor = seal(&key(), "s", &Value::from(n));
            let mut bytes = cursor.into_bytes();
            let i = flip % bytes.len();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            if let Ok(value) = open(&key(), "s", &tampered) {
                // Only an edit that decodes to the same bytes can pass.
                prop_assert_eq!(value, Value::from(n));
            }
        }

        #[test]
        fn garbage_cursors_never_panic(raw in "\\PC{0,80}") {
            let _ = open(&key(), "s", &raw);
        }
    }
}
