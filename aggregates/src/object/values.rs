//! An object's value objects: its status, file name, media type, digest and metadata, each parsed
//! at the boundary with the reason a client sees in `details.fields`.

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

impl ObjectStatus {
    /// Whether its bytes were confirmed and are kept: staged, approved or rejected.
    pub fn has_bytes(self) -> bool {
        matches!(
            self,
            ObjectStatus::Staged | ObjectStatus::Approved | ObjectStatus::Rejected
        )
    }
}

/// Why an object field was refused (the message is the `details.fields` reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectFieldError {
    /// Empty or longer than the maximum (422).
    #[error("must be 1 to {0} characters")]
    Length(usize),
    /// A path separator, a control character, or `.`/`..` (422).
    #[error("must not contain '/', '\\\\' or control characters, nor be '.' or '..'")]
    IllegalFilename,
    /// Not `type/subtype[; param=value]…` in RFC 6838 characters, or over 255 (422).
    #[error("must be a media type such as text/plain")]
    MediaType,
    /// Not 64 hexadecimal characters (422).
    #[error("must be 64 hexadecimal characters")]
    Sha256,
    /// More than 50 metadata entries (422).
    #[error("at most 50 entries")]
    TooManyEntries,
    /// A metadata key is empty or over 64 characters (422).
    #[error("keys must be 1 to 64 characters")]
    MetadataKey,
    /// A metadata value is over 1024 characters (422).
    #[error("values must be at most 1024 characters")]
    MetadataValue,
}

/// A file name: 1..=255 characters, no path separators or control characters.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Filename(String);

impl Filename {
    /// Maximum length in Unicode scalar values.
    pub const MAX_LEN: usize = 255;

    /// Checks the name as given (not trimmed: spaces are legal in file names).
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

    /// The value as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A media type `type/subtype[; param=value]…` in RFC 6838 restricted-name characters, ≤255.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ContentType(String);

impl ContentType {
    /// Trims and checks the media type; parameters are kept as given.
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

    /// The value as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A SHA-256 digest as 64 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    /// Accepts 64 hex characters in any case and normalises them to lowercase.
    pub fn parse(raw: &str) -> Result<Self, ObjectFieldError> {
        if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(raw.to_ascii_lowercase()))
        } else {
            Err(ObjectFieldError::Sha256)
        }
    }

    /// The value as text.
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

    /// The entries, ordered by key.
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_confirmed_and_kept_objects_have_bytes() {
        use ObjectStatus::*;
        for status in ObjectStatus::ALL {
            let expected = matches!(status, Staged | Approved | Rejected);
            assert_eq!(status.has_bytes(), expected, "{status}");
        }
        assert!(!PendingUpload.has_bytes() && !Deleted.has_bytes() && Staged.has_bytes());
    }

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

    #[test]
    fn a_filename_has_one_to_255_characters() {
        let longest = "é".repeat(255);
        assert_eq!(Filename::parse(&longest).unwrap().as_str(), longest);
        assert_eq!(
            Filename::parse(&"é".repeat(256)),
            Err(ObjectFieldError::Length(255))
        );
        assert_eq!(Filename::parse(""), Err(ObjectFieldError::Length(255)));
        assert_eq!(Filename::parse("a").unwrap().as_str(), "a");
        for dots in [".", ".."] {
            assert_eq!(
                Filename::parse(dots),
                Err(ObjectFieldError::IllegalFilename)
            );
        }
        assert_eq!(Filename::parse("...").unwrap().as_str(), "...");
        assert_eq!(Filename::parse(" ~").unwrap().as_str(), " ~");
    }

    #[test]
    fn a_media_type_has_at_most_255_characters_and_127_per_name() {
        let longest = format!("{}/{}", "a".repeat(127), "b".repeat(127));
        assert_eq!(ContentType::parse(&longest).unwrap().as_str(), longest);
        let long_name = format!("{}/b", "a".repeat(128));
        assert_eq!(
            ContentType::parse(&long_name),
            Err(ObjectFieldError::MediaType)
        );
        let long_subtype = format!("a/{}", "b".repeat(128));
        assert_eq!(
            ContentType::parse(&long_subtype),
            Err(ObjectFieldError::MediaType)
        );
        // `text/plain; p=` is 14 characters.
        let with_parameter = format!("text/plain; p={}", "v".repeat(241));
        assert_eq!(
            ContentType::parse(&format!(" {with_parameter} "))
                .unwrap()
                .as_str(),
            with_parameter
        );
        let over = format!("text/plain; p={}", "v".repeat(242));
        assert_eq!(ContentType::parse(&over), Err(ObjectFieldError::MediaType));
    }

    #[test]
    fn media_type_parameters_need_a_name_and_a_printable_value() {
        for good in ["text/plain;charset=utf-8", "text/plain ; a=1 ; b=\"x\""] {
            assert_eq!(ContentType::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "text/plain; charset=",
            "text/plain; charset= ",
            "text/plain; =utf-8",
            "text/plain; -x=1",
            "text/plain; charset=ütf",
            "text/plain; a=1; b",
            "-text/plain",
            "text/-plain",
            "text/pl ain",
            "text/plain/x",
            "text/plain;",
        ] {
            assert_eq!(
                ContentType::parse(bad),
                Err(ObjectFieldError::MediaType),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_digest_has_exactly_64_hex_characters() {
        let digest = "0123456789abcdefABCDEF".repeat(3)[..64].to_owned();
        assert_eq!(
            Sha256Hex::parse(&digest).unwrap().as_str(),
            digest.to_lowercase()
        );
        assert_eq!(
            Sha256Hex::parse(&"a".repeat(65)),
            Err(ObjectFieldError::Sha256)
        );
        assert_eq!(Sha256Hex::parse(""), Err(ObjectFieldError::Sha256));
        assert_eq!(
            Sha256Hex::parse(&format!("{}g", "a".repeat(63))),
            Err(ObjectFieldError::Sha256)
        );
    }

    #[test]
    fn metadata_holds_at_most_50_entries_with_keys_to_64_and_values_to_1024() {
        let fifty: BTreeMap<_, _> = (0..50).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(
            ObjectMetadata::parse(fifty.clone()).unwrap().entries(),
            &fifty
        );
        let widest = BTreeMap::from([
            ("k".repeat(64), "é".repeat(1024)),
            ("a".into(), String::new()),
        ]);
        assert_eq!(
            ObjectMetadata::parse(widest.clone()).unwrap().entries(),
            &widest
        );
        let long_key = BTreeMap::from([("é".repeat(65), "v".to_owned())]);
        assert_eq!(
            ObjectMetadata::parse(long_key),
            Err((Some("é".repeat(65)), ObjectFieldError::MetadataKey))
        );
        let long_value = BTreeMap::from([("lang".to_owned(), "é".repeat(1025))]);
        assert_eq!(
            ObjectMetadata::parse(long_value),
            Err((Some("lang".into()), ObjectFieldError::MetadataValue))
        );
        assert_eq!(
            ObjectMetadata::parse(BTreeMap::from([(String::new(), "v".to_owned())])),
            Err((Some(String::new()), ObjectFieldError::MetadataKey))
        );
        assert!(ObjectMetadata::parse(BTreeMap::new())
            .unwrap()
            .entries()
            .is_empty());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(raw in "\\PC{0,300}") {
            let _ = Filename::parse(&raw);
            let _ = ContentType::parse(&raw);
            let _ = Sha256Hex::parse(&raw);
        }

        #[test]
        fn names_without_forbidden_characters_are_kept_as_given(raw in "[^/\\\\\\x00-\\x1f\\x7f]{1,255}") {
            prop_assume!(raw != "." && raw != "..");
            let name = Filename::parse(&raw).unwrap();
            prop_assert_eq!(name.as_str(), raw.as_str());
        }

        #[test]
        fn any_forbidden_character_refuses_a_name(
            prefix in "[a-z]{0,20}",
            bad in prop_oneof![Just('/'), Just('\\'), Just('\u{7f}'), (0u8..0x20).prop_map(char::from)],
            suffix in "[a-z]{0,20}",
        ) {
            prop_assert_eq!(
                Filename::parse(&format!("{prefix}{bad}{suffix}")),
                Err(ObjectFieldError::IllegalFilename)
            );
        }

        #[test]
        fn long_names_are_refused(n in 256usize..400) {
            prop_assert_eq!(Filename::parse(&"é".repeat(n)), Err(ObjectFieldError::Length(255)));
        }

        #[test]
        fn well_formed_media_types_are_trimmed_and_kept(
            kind in "[a-z0-9][a-z0-9!#$&^_.+-]{0,20}",
            sub in "[a-z0-9][a-z0-9!#$&^_.+-]{0,20}",
            params in proptest::collection::vec(("[a-z][a-z0-9-]{0,10}", "[a-zA-Z0-9-]{1,10}"), 0..3),
        ) {
            let mut raw = format!("{kind}/{sub}");
            for (key, value) in &params {
                raw.push_str(&format!("; {key}={value}"));
            }
            let parsed = ContentType::parse(&format!("  {raw}\t")).unwrap();
            prop_assert_eq!(parsed.as_str(), raw.as_str());
        }

        #[test]
        fn media_types_with_spaces_or_slashes_in_names_are_refused(
            kind in "[a-z]{1,10}",
            sub in "[a-z]{1,10}",
            bad in prop_oneof![Just(' '), Just('/'), Just('('), Just('@'), Just(',')],
        ) {
            let raw = format!("{kind}/{sub}{bad}x");
            prop_assert!(ContentType::parse(&raw).is_err());
        }

        #[test]
        fn metadata_is_accepted_exactly_within_its_bounds(
            entries in 0usize..60,
            key_len in 1usize..70,
            value_len in 0usize..1030,
        ) {
            let map: BTreeMap<String, String> = (0..entries)
                .map(|i| (format!("{i:0>width$}", width = key_len), "v".repeat(value_len)))
                .collect();
            let within = entries <= 50 && (entries == 0 || (key_len <= 64 && value_len <= 1024));
            prop_assert_eq!(ObjectMetadata::parse(map).is_ok(), within);
        }

        #[test]
        fn any_hex_digest_parses(bytes in proptest::collection::vec(any::<u8>(), 32)) {
            let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
            let parsed = Sha256Hex::parse(&hex).unwrap();
            prop_assert_eq!(parsed.as_str(), hex.to_lowercase());
        }
    }
}
