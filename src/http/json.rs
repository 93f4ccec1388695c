//! JSON request bodies (SPEC §1.5). [`JsonBody`] collects the raw body (413 past 1 MiB); its
//! [`JsonBody::parse`] then checks, in the SPEC's order, the content type (415), JSON and field
//! types (400) and unknown fields (422). Handlers that check credentials and scopes first take
//! `JsonBody` and parse after those checks; [`AppJson`] does both at extraction.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::{self, DeserializeOwned, Visitor};
use serde_json::Value;

use crate::error::{AppError, FieldErrors};

/// Largest JSON body accepted.
pub const MAX_BODY_BYTES: u64 = 1_048_576;

/// A request body not yet interpreted.
pub struct JsonBody {
    bytes: Bytes,
    is_json: bool,
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        let read = Bytes::from_request(req, state);
        let read = match crate::request::REQUEST
            .try_with(|r| r.body_deadline)
            .ok()
            .flatten()
        {
            Some(deadline) => tokio::time::timeout_at(deadline, read)
                .await
                .map_err(|_| AppError::RequestTimeout)?,
            None => read.await,
        };
        let bytes = read.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                AppError::bad_request("The request body could not be read.")
            }
        })?;
        // A body sent without Content-Length is only measured here.
        if bytes.len() as u64 > MAX_BODY_BYTES {
            return Err(AppError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        Ok(Self { bytes, is_json })
    }
}

impl JsonBody {
    /// Interprets the body as `T`: absent or empty means `{}`; unknown fields are refused with
    /// every one named; a wrong type names the field.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, AppError> {
        let value = if self.bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Default::default())
        } else {
            if !self.is_json {
                return Err(AppError::UnsupportedMediaType);
            }
            serde_json::from_slice::<Value>(&self.bytes)
                .map_err(|_| AppError::bad_request("The request body is not valid JSON."))?
        };
        let Value::Object(map) = &value else {
            return Err(AppError::bad_request(
                "The request body must be a JSON object.",
            ));
        };
        let known: BTreeSet<&str> = struct_fields::<T>().iter().copied().collect();
        let unknown: FieldErrors = map
            .keys()
            .filter(|k| !known.contains(k.as_str()))
            .map(|k| (k.clone(), "unknown field".to_owned()))
            .collect();
        if !unknown.is_empty() {
            return Err(AppError::Validation(unknown));
        }
        let mut with_nul = FieldErrors::new();
        find_nul(&value, "", &mut with_nul);
        let parsed = serde_path_to_error::deserialize(value).map_err(|error| {
            let path = error.path().to_string();
            let reason = error.inner().to_string();
            let reason = reason
                .split(" at line")
                .next()
                .unwrap_or(&reason)
                .to_owned();
            AppError::InvalidRequest {
                message: format!("Field {path} has the wrong type."),
                fields: FieldErrors::from([(path, reason)]),
            }
        })?;
        if with_nul.is_empty() {
            Ok(parsed)
        } else {
            Err(AppError::Validation(with_nul))
        }
    }
}

/// Names every string (or object key) holding U+0000, which no text may contain: PostgreSQL
/// cannot store it, and both stores refuse it alike.
fn find_nul(value: &Value, path: &str, found: &mut FieldErrors) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::String(text) if text.contains('\0') => {
            found.insert(path.to_owned(), NUL_REASON.to_owned());
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                find_nul(item, &format!("{path}[{i}]"), found);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                if key.contains('\0') {
                    found.insert(join(key), NUL_REASON.to_owned());
                } else {
                    find_nul(item, &join(key), found);
                }
            }
        }
        _ => {}
    }
}

/// A field that is a JSON number or a string (an amount, SPEC §1.6), else the wrong JSON type
/// (400); its value is checked afterwards (422).
pub fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    use serde::Deserialize;
    let value = Option::<Value>::deserialize(d)?;
    match value {
        None | Some(Value::Number(_)) | Some(Value::String(_)) => Ok(value),
        Some(_) => Err(de::Error::custom(
            "invalid type: expected a number or a string",
        )),
    }
}

/// Why a text holding U+0000 is refused.
pub const NUL_REASON: &str = "must not contain U+0000";

/// Collects per-field validation failures so one response names them all.
#[derive(Default)]
pub struct Fields(pub FieldErrors);

impl Fields {
    /// Records a missing (`None`) or invalid value under `field`; returns the valid one.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        value: Option<Result<T, E>>,
    ) -> Option<T> {
        match value {
            None => {
                self.0.insert(field.into(), "is required".into());
                None
            }
            Some(Err(e)) => {
                self.0.insert(field.into(), e.to_string());
                None
            }
            Some(Ok(v)) => Some(v),
        }
    }

    /// Records an error for an optional field that was present but invalid.
    pub fn optional<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        value: Option<Result<T, E>>,
    ) -> Option<T> {
        match value {
            None => None,
            some => self.check(field, some),
        }
    }

    /// Records a reason directly.
    pub fn fail(&mut self, field: &str, reason: impl Into<String>) {
        self.0.insert(field.into(), reason.into());
    }

    /// 422 with every recorded field, or Ok.
    pub fn finish(self) -> Result<(), AppError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation(self.0))
        }
    }
}

/// A JSON object body parsed into `T` at extraction (for routes without credentials).
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        JsonBody::from_request(req, state)
            .await?
            .parse()
            .map(AppJson)
    }
}

/// The field names a struct's `Deserialize` accepts, asked of serde itself.
pub fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);

    #[derive(Debug)]
    struct Done;
    impl std::fmt::Display for Done {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Done {}
    impl de::Error for Done {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Done
        }
    }

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = Done;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Done> {
            Err(Done)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Done> {
            *self.0 = fields;
            Err(Done)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: Option<String>,
        size_bytes: Option<u64>,
    }

    fn body(raw: &str, is_json: bool) -> JsonBody {
        JsonBody {
            bytes: Bytes::from(raw.to_owned()),
            is_json,
        }
    }

    #[test]
    fn serde_names_the_fields() {
        assert_eq!(struct_fields::<Body>(), ["name", "size_bytes"]);
    }

    #[test]
    fn an_empty_body_is_an_empty_object() {
        let parsed: Body = body("", false).parse().unwrap();
        assert!(parsed.name.is_none());
    }

    #[test]
    fn bodies_are_checked_in_the_spec_order() {
        assert!(matches!(
            body("{}", false).parse::<Body>(),
            Err(AppError::UnsupportedMediaType)
        ));
        assert!(matches!(
            body("{", true).parse::<Body>(),
            Err(AppError::InvalidRequest { .. })
        ));
        assert!(matches!(
            body("[1]", true).parse::<Body>(),
            Err(AppError::InvalidRequest { .. })
        ));
        match body(r#"{"tenant_id":"x","status":"y","name":"n"}"#, true).parse::<Body>() {
            Err(AppError::Validation(fields)) => {
                assert_eq!(fields.keys().collect::<Vec<_>>(), ["status", "tenant_id"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        match body(r#"{"size_bytes":"10"}"#, true).parse::<Body>() {
            Err(AppError::InvalidRequest { fields, .. }) => {
                assert!(fields.contains_key("size_bytes"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn text_holding_nul_is_refused_after_the_types() {
        match body("{\"name\":\"a\\u0000b\"}", true).parse::<Body>() {
            Err(AppError::Validation(fields)) => {
                assert_eq!(fields.keys().collect::<Vec<_>>(), ["name"])
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            body("{\"name\":\"\\u0000\",\"size_bytes\":\"1\"}", true).parse::<Body>(),
            Err(AppError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn null_means_absent() {
        let parsed: Body = body(r#"{"name":null}"#, true).parse().unwrap();
        assert!(parsed.name.is_none());
    }
}
