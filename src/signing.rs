//! The service's HMAC key: it signs storage URLs and cursors and peppers stored token hashes.
//! From `IPTO_SIGNING_KEY`, else generated once into `{DATA_DIR}/signing.key`. A key is at least
//! [`MIN_KEY_BYTES`] long: HMAC-SHA256 is only as strong as its key, and a short one can be
//! guessed offline from any signed URL.

use std::io::Write;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The shortest accepted key (the 256 bits of a generated one).
pub const MIN_KEY_BYTES: usize = 32;

/// A secret HMAC-SHA256 key.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// Why no key could be loaded; no message holds the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `IPTO_SIGNING_KEY` is shorter than [`MIN_KEY_BYTES`].
    #[error("IPTO_SIGNING_KEY must be at least {MIN_KEY_BYTES} bytes (it has {0})")]
    TooShort(usize),
    /// `signing.key` is not hex of at least [`MIN_KEY_BYTES`] bytes.
    #[error("{0} must hold at least {MIN_KEY_BYTES} bytes as hex")]
    BadFile(String),
    /// `signing.key` could not be read or created.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

impl SigningKey {
    /// The configured key, or the one in `data_dir` (created with 256 random bits if missing).
    pub fn load(configured: Option<&str>, data_dir: &Path) -> Result<Self, KeyError> {
        if let Some(key) = configured {
            if key.len() < MIN_KEY_BYTES {
                return Err(KeyError::TooShort(key.len()));
            }
            return Ok(Self(key.as_bytes().to_vec()));
        }
        let path = data_dir.join("signing.key");
        let io = |e| KeyError::Io(path.display().to_string(), e);
        match std::fs::read_to_string(&path) {
            Ok(hex_key) => hex::decode(hex_key.trim())
                .ok()
                .filter(|key| key.len() >= MIN_KEY_BYTES)
                .map(Self)
                .ok_or_else(|| KeyError::BadFile(path.display().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(&path) {
                    Ok(mut file) => {
                        file.write_all(hex::encode(key).as_bytes()).map_err(io)?;
                        file.sync_all().map_err(io)?;
                        Ok(Self(key.to_vec()))
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load(None, data_dir)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    /// HMAC-SHA256 of `message`, hex encoded.
    pub fn hmac_hex(&self, message: &[u8]) -> String {
        hex::encode(self.mac(message))
    }

    /// The id of an address's e-mail reservation: `eml_` and a keyed HMAC of the normalised
    /// address, so the log's aggregate ids name no address and nobody without the key can test
    /// one against them.
    pub fn email_reservation_id(&self, normalised_email: &str) -> String {
        let tag = self.mac(format!("email-reservation\n{normalised_email}").as_bytes());
        format!("eml_{}", hex::encode(&tag[..20]))
    }

    /// Raw HMAC-SHA256 of `message`.
    pub fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// Checks a MAC in constant time.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(message);
        mac.verify_truncated_left(tag).is_ok() && tag.len() >= 16
    }
}

/// A key for unit tests.
#[cfg(test)]
pub const TEST_KEY: &str = "unit test signing key, 32+ bytes";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_kept_and_reused() {
        let dir = std::env::temp_dir().join(format!("ipto-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = SigningKey::load(None, &dir).unwrap();
        let second = SigningKey::load(None, &dir).unwrap();
        assert_eq!(first.hmac_hex(b"x"), second.hmac_hex(b"x"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn keys_under_32_bytes_are_refused_without_being_shown() {
        let short = "0123456789abcdef0123456789abcde";
        let refused = SigningKey::load(Some(short), Path::new("/nonexistent")).unwrap_err();
        assert!(matches!(refused, KeyError::TooShort(31)));
        assert!(!refused.to_string().contains(short));
        assert!(SigningKey::load(Some(&format!("{short}f")), Path::new("/nonexistent")).is_ok());

        let dir = std::env::temp_dir().join(format!("ipto-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("signing.key"), hex::encode([7u8; 31])).unwrap();
        assert!(matches!(
            SigningKey::load(None, &dir),
            Err(KeyError::BadFile(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn verification_refuses_other_messages_and_short_tags() {
        let key = SigningKey::load(Some(TEST_KEY), Path::new("/nonexistent")).unwrap();
        let tag = key.mac(b"message");
        assert!(key.verify(b"message", &tag));
        assert!(key.verify(b"message", &tag[..16]));
        assert!(!key.verify(b"message", &tag[..8]));
        assert!(!key.verify(b"massage", &tag));
    }
}
