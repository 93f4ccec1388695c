use std::collections::BTreeMap;

use crate::choice;

choice!(
    /// An object's lifecycle state (SPEC §4.1).
    ObjectStatus {
        PendingUpload => "pending_upload",
        Staged => "staged",
        Approved => "approved",
        Rejected => "rejected",
        Cancelled => "cancelled",
        Deleted => "deleted",
    }
);

/// Why an object field was refused (the message is the `details.fields` reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectFieldError {
    #[error("must be 1 to {0} characters")]
    Length(usize),
    #[error("must not contain '/', '\\\\' or control characters, nor be '.' or '..'")]
    IllegalFilename,
    #[error("must be a media type such as text/plain")]
    MediaType,
    #[error("must be 64 hexadecimal characters")]
    Sha256,
    #[error("at most 50 entries")]
    TooManyEntries,
    #[error("keys must be 1 to 64 characters")]
    MetadataKey,
    #[error("values must be at most 1024 characters")]
    MetadataValue,
}

/// A file name: 1..=255 characters, no path separators or control characters.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Filename(String);

impl Filename {
    pub fn parse(raw: &str) -> Result<Self, ObjectFieldError> {
        let n = raw.chars().count();
        if n == 0 || n > 255 {
            return Err(ObjectFieldError::Length(255));
        }
        let illegal = |c: char| c == '/' || c == '\\' || (c as u32) < 0x20 || c as u32 == 0x7f;
        if raw.chars().any(illegal) || raw == "." || raw == ".." {
            return Err(ObjectFieldError::IllegalFilename);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A media type `type/subtype[; param=value]…` in RFC 6838 restricted-name characters, ≤255.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ContentType(String);

impl ContentType {
    pub fn parse(raw: &str) -> Result<Self, ObjectFieldError> {
        let value = raw.trim();
        if value.is_empty() || value.chars().count() > 255 {
            return Err(ObjectFieldError::MediaType);
        }
        let name = |s: &str| {
            let mut chars = s.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
                && s.len() <= 127
                && chars.all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
        };
        let mut parts = value.split(';');
        let essence = parts.next().unwrap_or("");
        let valid_essence = essence
            .trim()
            .split_once('/')
            .is_some_and(|(t, s)| name(t) && name(s));
        let valid_params = parts.all(|p| {
            p.trim().split_once('=').is_some_and(|(k, v)| {
                name(k.trim())
                    && !v.trim().is_empty()
                    && v.trim().chars().all(|c| c.is_ascii_graphic())
            })
        });
        if valid_essence && valid_params {
            Ok(Self(value.to_owned()))
        } else {
            Err(ObjectFieldError::MediaType)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A SHA-256 digest as 64 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub fn parse(raw: &str) -> Result<Self, ObjectFieldError> {
        if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(raw.to_ascii_lowercase()))
        } else {
            Err(ObjectFieldError::Sha256)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Client metadata: at most 50 string entries; keys 1..=64, values ≤1024 characters.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ObjectMetadata(BTreeMap<String, String>);

impl ObjectMetadata {
    /// Checks the map; the error names the offending key when there is one.
    pub fn parse(
        map: BTreeMap<String, String>,
    ) -> Result<Self, (Option<String>, ObjectFieldError)> {
        if map.len() > 50 {
            return Err((None, ObjectFieldError::TooManyEntries));
        }
        for (key, value) in &map {
            let n = key.chars().count();
            if n == 0 || n > 64 {
                return Err((Some(key.clone()), ObjectFieldError::MetadataKey));
            }
            if value.chars().count() > 1024 {
                return Err((Some(key.clone()), ObjectFieldError::MetadataValue));
            }
        }
        Ok(Self(map))
    }

    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn filenames_refuse_paths_and_control_characters() {
        assert!(Filename::parse("inv-001.txt").is_ok());
        assert!(Filename::parse("résumé final.pdf").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a\u{0}b",
            "tab\there",
            "del\u{7f}",
        ] {
            assert!(Filename::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Filename::parse(&"x".repeat(256)).is_err());
    }

    #[test]
    fn media_types_follow_rfc_6838() {
        for good in [
            "text/plain",
            "application/vnd.ms-excel",
            "text/csv; charset=utf-8",
            "image/svg+xml",
        ] {
            assert!(ContentType::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "text",
            "text/",
            "/plain",
            "text/plain; charset",
            "te xt/plain",
            "text/plain;=x",
        ] {
            assert!(ContentType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_are_normalised_to_lowercase() {
        let upper = "A".repeat(64);
        assert_eq!(Sha256Hex::parse(&upper).unwrap().as_str(), "a".repeat(64));
        assert!(Sha256Hex::parse(&"g".repeat(64)).is_err());
        assert!(Sha256Hex::parse(&"a".repeat(63)).is_err());
    }

    #[test]
    fn metadata_is_bounded() {
        let many: BTreeMap<_, _> = (0..51).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(
            ObjectMetadata::parse(many).unwrap_err().1,
            ObjectFieldError::TooManyEntries
        );
        let long = BTreeMap::from([("lang".to_owned(), "x".repeat(1025))]);
        assert_eq!(
            ObjectMetadata::parse(long).unwrap_err(),
            (Some("lang".into()), ObjectFieldError::MetadataValue)
        );
        let empty_key = BTreeMap::from([(String::new(), "v".to_owned())]);
        assert!(ObjectMetadata::parse(empty_key).is_err());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(raw in "\\PC{0,300}") {
            let _ = Filename::parse(&raw);
            let _ = ContentType::parse(&raw);
            let _ = Sha256Hex::parse(&raw);
        }

        #[test]
        fn any_hex_digest_parses(bytes in proptest::collection::vec(any::<u8>(), 32)) {
            let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
            let parsed = Sha256Hex::parse(&hex).unwrap();
            prop_assert_eq!(parsed.as_str(), hex.to_lowercase());
        }
    }
}
