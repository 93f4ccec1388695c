//! Prefixed identifiers: `{prefix}_{body}` where the body is 26 characters of lowercase Crockford
//! base32 encoding 128 bits (a UUIDv7, so ids sort by creation time, or random bits).

use std::fmt;

/// Lowercase Crockford base32 alphabet (no i, l, o, u).
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Length of an id body.
pub const BODY_LEN: usize = 26;

/// Encodes 128 bits as 26 base32 characters (the first one is at most `7`).
pub fn encode_body(value: u128) -> String {
    (0..BODY_LEN)
        .map(|i| {
            let shift = 125 - 5 * i as u32;
            ALPHABET[((value >> shift) & 31) as usize] as char
        })
        .collect()
}

/// Decodes a 26-character body; `None` unless it is exactly what [`encode_body`] produces.
pub fn decode_body(body: &str) -> Option<u128> {
    if body.len() != BODY_LEN {
        return None;
    }
    let mut value: u128 = 0;
    for (i, byte) in body.bytes().enumerate() {
        let digit = ALPHABET.iter().position(|&c| c == byte)? as u128;
        if i == 0 && digit > 7 {
            return None;
        }
        value = (value << 5) | digit;
    }
    Some(value)
}

/// A string is not a well-formed id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed id")]
pub struct IdError;

/// Checks `{prefix}_{body}` and returns the body's value.
pub fn parse_prefixed(prefix: &str, raw: &str) -> Result<u128, IdError> {
    let body = raw
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .ok_or(IdError)?;
    decode_body(body).ok_or(IdError)
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id's prefix, without the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// A new time-ordered id (UUIDv7 body).
            pub fn generate() -> Self {
                Self::from_bits(uuid::Uuid::now_v7().as_u128())
            }

            /// The id whose body encodes these bits.
            pub fn from_bits(bits: u128) -> Self {
                Self(format!("{}_{}", $prefix, encode_body(bits)))
            }

            /// Parses an id, refusing another prefix or a malformed body.
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                parse_prefixed($prefix, raw).map(|_| Self(raw.to_owned()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, IdError> {
                parse_prefixed($prefix, &raw).map(|_| Self(raw))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A user (`usr_`).
    UserId,
    "usr"
);
prefixed_id!(
    /// A tenant (`tnt_`).
    TenantId,
    "tnt"
);

prefixed_id!(
    /// A dataset (`dset_`).
    DatasetId,
    "dset"
);
prefixed_id!(
    /// An object (`obj_`).
    ObjectId,
    "obj"
);

prefixed_id!(
    /// An API key's public id (`key_`), not its secret.
    ApiKeyId,
    "key"
);
prefixed_id!(
    /// A dataset grant on an API key (`grt_`).
    GrantId,
    "grt"
);

prefixed_id!(
    /// A session opened by login, as the log records it (`lgn_`; not the session's token).
    LoginId,
    "lgn"
);
prefixed_id!(
    /// An invitation to join a tenant (`inv_`), not its token.
    InvitationId,
    "inv"
);

prefixed_id!(
    /// A metered access: one charged retrieval or download (`acc_`).
    AccessId,
    "acc"
);
prefixed_id!(
    /// A search request as recorded (`sa_`).
    SearchActivityId,
    "sa"
);
prefixed_id!(
    /// One result returned by a search (`ret_`).
    RetrievalId,
    "ret"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bodies_round_trip(bits in any::<u128>()) {
            let body = encode_body(bits);
            prop_assert_eq!(body.len(), BODY_LEN);
            prop_assert_eq!(decode_body(&body), Some(bits));
        }

        #[test]
        fn encoding_preserves_order(a in any::<u128>(), b in any::<u128>()) {
            prop_assert_eq!(a.cmp(&b), encode_body(a).cmp(&encode_body(b)));
        }

        #[test]
        fn parsing_never_panics_and_accepts_only_canonical_ids(raw in "\\PC{0,40}") {
            if let Ok(id) = UserId::parse(&raw) {
                prop_assert_eq!(id.as_str(), raw.as_str());
                prop_assert!(raw.starts_with("usr_"));
            }
        }
    }

    #[test]
    fn generated_ids_have_their_prefix_and_parse_back() {
        let id = UserId::generate();
        assert!(id.as_str().starts_with("usr_"));
        assert_eq!(UserId::parse(id.as_str()), Ok(id.clone()));
        assert_eq!(TenantId::parse(id.as_str()), Err(IdError));
    }

    #[test]
    fn uppercase_and_overflowing_bodies_are_refused() {
        let id = UserId::generate();
        assert!(UserId::parse(&id.as_str().to_uppercase()).is_err());
        assert!(UserId::parse("usr_8zzzzzzzzzzzzzzzzzzzzzzzzz").is_err());
        assert!(UserId::parse("usr_7zzzzzzzzzzzzzzzzzzzzzzzzz").is_ok());
        assert!(UserId::parse("usr_0000000000000000000000000i").is_err());
    }
}
