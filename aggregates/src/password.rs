//! A new password's policy. Passwords never enter events; only their argon2id hash is kept, outside
//! the log.

use std::fmt;

/// A password that meets the policy (8..=128 Unicode scalar values, never trimmed).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

/// Why a password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Fewer than 8 characters (422).
    #[error("must be at least 8 characters")]
    TooShort,
    /// More than 128 characters (422).
    #[error("must be at most 128 characters")]
    TooLong,
}

impl Password {
    /// Checks the length; whitespace counts.
    pub fn parse(raw: &str) -> Result<Self, PasswordError> {
        match raw.chars().count() {
            0..=7 => Err(PasswordError::TooShort),
            8..=128 => Ok(Self(raw.to_owned())),
            _ => Err(PasswordError::TooLong),
        }
    }

    /// The secret itself, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn debug_output_hides_the_secret() {
        let password = Password::parse("correct horse").unwrap();
        assert_eq!(format!("{password:?}"), "Password(<redacted>)");
    }

    #[test]
    fn seven_characters_are_too_short_and_eight_are_enough() {
        assert_eq!(Password::parse(""), Err(PasswordError::TooShort));
        assert_eq!(Password::parse("1234567"), Err(PasswordError::TooShort));
        assert_eq!(Password::parse("12345678").unwrap().expose(), "12345678");
    }

    #[test]
    fn a_hundred_and_twenty_eight_characters_are_the_most() {
        let longest = "é".repeat(128);
        assert_eq!(Password::parse(&longest).unwrap().expose(), longest);
        assert_eq!(
            Password::parse(&"é".repeat(129)),
            Err(PasswordError::TooLong)
        );
    }

    proptest! {
        #[test]
        fn length_decides(raw in "\\PC{0,140}") {
            let n = raw.chars().count();
            prop_assert_eq!(Password::parse(&raw).is_ok(), (8..=128).contains(&n));
        }

        #[test]
        fn whitespace_is_kept(core in "[a-z]{8,20}") {
            let raw = format!("  {core}  ");
            let password = Password::parse(&raw).unwrap();
            prop_assert_eq!(password.expose(), raw.as_str());
        }
    }
}
