//! The service's HMAC key: it signs storage URLs and cursors and peppers stored token hashes.
//! From `IPTO_SIGNING_KEY`, else generated once into `{DATA_DIR}/signing.key`.

use std::io::Write;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A secret HMAC-SHA256 key.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// The configured key, or the one in `data_dir` (created with 256 random bits if missing).
    pub fn load(configured: Option<&str>, data_dir: &Path) -> std::io::Result<Self> {
        if let Some(key) = configured {
            return Ok(Self(key.as_bytes().to_vec()));
        }
        let path = data_dir.join("signing.key");
        match std::fs::read_to_string(&path) {
            Ok(hex_key) => hex::decode(hex_key.trim()).map(Self).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "signing.key is not hex")
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(&path) {
                    Ok(mut file) => {
                        file.write_all(hex::encode(key).as_bytes())?;
                        file.sync_all()?;
                        Ok(Self(key.to_vec()))
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load(None, data_dir)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// HMAC-SHA256 of `message`, hex encoded.
    pub fn hmac_hex(&self, message: &[u8]) -> String {
        hex::encode(self.mac(message))
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
    fn verification_refuses_other_messages_and_short_tags() {
        let key = SigningKey::load(Some("k"), Path::new("/nonexistent")).unwrap();
        let tag = key.mac(b"message");
        assert!(key.verify(b"message", &tag));
        assert!(key.verify(b"message", &tag[..16]));
        assert!(!key.verify(b"message", &tag[..8]));
        assert!(!key.verify(b"massage", &tag));
    }
}
