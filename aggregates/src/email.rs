//! E-mail addresses, normalised (trimmed, lowercased) at the boundary.

use std::fmt;

/// A normalised e-mail address that passed the signup format check.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Email(String);

/// Why an e-mail address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Empty after trimming (422).
    #[error("is required")]
    Empty,
    /// Longer than 254 characters (422).
    #[error("must be at most 254 characters")]
    TooLong,
    /// Not `local@domain.tld` (422).
    #[error("is not a valid email address")]
    Malformed,
}

impl Email {
    /// Maximum length in Unicode scalar values.
    pub const MAX_LEN: usize = 254;

    /// Trims, lowercases and checks `^[^@\s]+@[^@\s]+\.[^@\s]+$`.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let normalised = Self::normalise(raw);
        if normalised.is_empty() {
            return Err(EmailError::Empty);
        }
        if normalised.chars().count() > Self::MAX_LEN {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = normalised.split_once('@').ok_or(EmailError::Malformed)?;
        let plain =
            |s: &str| !s.is_empty() && !s.contains('@') && !s.chars().any(char::is_whitespace);
        let dotted = domain
            .char_indices()
            .any(|(i, c)| c == '.' && i > 0 && i + 1 < domain.len());
        if plain(local) && plain(domain) && dotted {
            Ok(Self(normalised))
        } else {
            Err(EmailError::Malformed)
        }
    }

    /// The normal form used for lookups (login does not check the format).
    pub fn normalise(raw: &str) -> String {
        raw.trim().to_lowercase()
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn addresses_are_trimmed_and_lowercased() {
        assert_eq!(
            Email::parse("  Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for raw in [
            "",
            "   ",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "ann@.com",
            "ann@com.",
            "a b@c.d",
            "a@b@c.d",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} was accepted");
        }
        assert!(Email::parse("a@b..c").is_ok());
    }

    #[test]
    fn overlong_addresses_are_refused() {
        let raw = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&raw), Err(EmailError::TooLong));
    }

    #[test]
    fn two_hundred_and_fifty_four_characters_are_the_most() {
        // `@example.com` is 12 characters; the limit counts after trimming and lowercasing.
        let longest = format!("{}@example.com", "é".repeat(242));
        assert_eq!(
            Email::parse(&format!(" {longest} ")).unwrap().as_str(),
            longest
        );
        let over = format!("{}@example.com", "é".repeat(243));
        assert_eq!(Email::parse(&over), Err(EmailError::TooLong));
    }

    #[test]
    fn an_address_displays_as_its_normal_form() {
        let email = Email::parse(" Ann@Example.com").unwrap();
        assert_eq!(email.to_string(), "ann@example.com");
        assert_eq!(serde_json::to_value(&email).unwrap(), "ann@example.com");
    }

    proptest! {
        #[test]
        fn parsing_is_idempotent(local in "[a-zA-Z0-9._%+-]{1,30}", domain in "[a-zA-Z0-9-]{1,20}", tld in "[a-zA-Z]{2,6}") {
            let email = Email::parse(&format!(" {local}@{domain}.{tld} ")).unwrap();
            prop_assert_eq!(Email::parse(email.as_str()).unwrap(), email.clone());
            prop_assert_eq!(email.as_str(), email.as_str().to_lowercase());
        }

        #[test]
        fn parsing_never_panics(raw in "\\PC{0,300}") {
            let _ = Email::parse(&raw);
        }
    }
}
