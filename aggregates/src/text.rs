//! Bounded, trimmed texts: display names and tenant names.

use std::fmt;

/// Why a text field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Empty after trimming (422).
    #[error("is required")]
    Empty,
    /// Longer than allowed (422).
    #[error("must be at most {0} characters")]
    TooLong(usize),
}

/// Trims and checks a length of 1..=max Unicode scalar values.
pub fn trimmed(raw: &str, max: usize) -> Result<String, TextError> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(TextError::Empty);
    }
    if value.chars().count() > max {
        return Err(TextError::TooLong(max));
    }
    Ok(value.to_owned())
}

macro_rules! bounded_text {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Maximum length in Unicode scalar values.
            pub const MAX_LEN: usize = $max;

            /// Trims and checks the length.
            pub fn parse(raw: &str) -> Result<Self, TextError> {
                trimmed(raw, $max).map(Self)
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

bounded_text!(
    /// A user's display name, 1..=100 characters.
    DisplayName,
    100
);
bounded_text!(
    /// A tenant's display name, 1..=100 characters; need not be unique.
    TenantName,
    100
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_trimmed() {
        assert_eq!(DisplayName::parse("  Ann  ").unwrap().as_str(), "Ann");
        assert_eq!(DisplayName::parse(" \t "), Err(TextError::Empty));
    }

    #[test]
    fn a_hundred_characters_are_the_most() {
        let longest = "é".repeat(100);
        assert_eq!(DisplayName::parse(&longest).unwrap().as_str(), longest);
        assert_eq!(
            TenantName::parse(&format!(" {longest} ")).unwrap().as_str(),
            longest
        );
        assert_eq!(
            DisplayName::parse(&"é".repeat(101)),
            Err(TextError::TooLong(100))
        );
        assert_eq!(
            TenantName::parse(&"é".repeat(101)),
            Err(TextError::TooLong(100))
        );
    }

    proptest! {
        #[test]
        fn lengths_count_scalar_values(n in 1usize..130) {
            let raw = "é".repeat(n);
            let parsed = TenantName::parse(&raw);
            prop_assert_eq!(parsed.is_ok(), n <= 100);
        }

        #[test]
        fn a_parsed_name_parses_to_itself(raw in "\\PC{0,120}") {
            if let Ok(name) = DisplayName::parse(&raw) {
                prop_assert_eq!(DisplayName::parse(name.as_str()).unwrap(), name.clone());
                prop_assert_eq!(name.as_str().trim(), name.as_str());
            }
        }
    }
}
