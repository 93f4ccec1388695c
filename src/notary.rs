//! Signed tree heads: the audit tree's size and root, signed with the service's Ed25519 audit key,
//! so an auditor holding the public key can check any export or proof offline.
//!
//! The key is `IPTO_AUDIT_SIGNING_KEY` (hex of a 32-byte Ed25519 seed), else generated once into
//! `{DATA_DIR}/audit-signing.key` (mode 0600); it is never logged. The signature covers exactly
//! these bytes (big-endian integers):
//!
//! | bytes | field |
//! |---|---|
//! | 24 | the ASCII text `ipto-audit-tree-head/v1` and a newline (`0x0a`) |
//! | 8 | `tree_size`, unsigned |
//! | 8 | `signed_at` as milliseconds since 1970-01-01T00:00:00Z, signed |
//! | 32 | `root_hash` |
//!
//! `key_id` is the first 16 hex digits of SHA-256 of the 32-byte public key.

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use projections::merkle::Hash;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// What a tree head's signature covers first.
const CONTEXT: &[u8; 24] = b"ipto-audit-tree-head/v1\n";

/// The Ed25519 key that signs tree heads.
pub struct AuditKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey({})", self.key_id())
    }
}

/// Why the audit key could not be loaded; no message holds the key.
#[derive(Debug, thiserror::Error)]
pub enum AuditKeyError {
    #[error("IPTO_AUDIT_SIGNING_KEY must be 64 hex digits (a 32-byte Ed25519 seed)")]
    BadSetting,
    #[error("{0} must hold 64 hex digits (a 32-byte Ed25519 seed)")]
    BadFile(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

impl AuditKey {
    /// The configured seed, or the one in `data_dir` (created from 256 random bits if missing).
    pub fn load(configured: Option<&str>, data_dir: &Path) -> Result<Self, AuditKeyError> {
        if let Some(seed) = configured {
            return Self::from_hex(seed).ok_or(AuditKeyError::BadSetting);
        }
        let path = data_dir.join("audit-signing.key");
        let shown = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_hex(text.trim()).ok_or(AuditKeyError::BadFile(shown)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let seed: [u8; 32] = rand::random();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(&path) {
                    Ok(mut file) => {
                        let io = |e| AuditKeyError::Io(shown.clone(), e);
                        file.write_all(hex::encode(seed).as_bytes()).map_err(io)?;
                        file.sync_all().map_err(io)?;
                        Self::from_seed(&seed).ok_or(AuditKeyError::BadFile(shown))
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load(None, data_dir)
                    }
                    Err(e) => Err(AuditKeyError::Io(shown, e)),
                }
            }
            Err(e) => Err(AuditKeyError::Io(shown, e)),
        }
    }

    fn from_hex(text: &str) -> Option<Self> {
        let seed: [u8; 32] = hex::decode(text).ok()?.try_into().ok()?;
        Self::from_seed(&seed)
    }

    fn from_seed(seed: &[u8; 32]) -> Option<Self> {
        Ed25519KeyPair::from_seed_unchecked(seed)
            .ok()
            .map(|pair| Self { pair })
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        let bytes: [u8; 32] = self
            .pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("an Ed25519 public key is 32 bytes");
        PublicKey::new(bytes)
    }

    /// The public key's id.
    pub fn key_id(&self) -> String {
        self.public().key_id
    }

    /// A head for the tree of `tree_size` leaves with `root`, signed as of `signed_at`.
    pub fn sign(
        &self,
        tree_size: u64,
        root: &Hash,
        signed_at: chrono::DateTime<chrono::Utc>,
    ) -> SignedHead {
        let millis = signed_at.timestamp_millis();
        let signed_at = chrono::DateTime::from_timestamp_millis(millis).unwrap_or(signed_at);
        let signature = self.pair.sign(&message(tree_size, millis, root));
        SignedHead {
            tree_size,
            root_hash: hex::encode(root),
            signed_at: signed_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            key_id: self.key_id(),
            signature: base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
        }
    }
}

/// The bytes a head's signature covers (see the module's table).
fn message(tree_size: u64, signed_at_ms: i64, root: &Hash) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(72);
    bytes.extend_from_slice(CONTEXT);
    bytes.extend_from_slice(&tree_size.to_be_bytes());
    bytes.extend_from_slice(&signed_at_ms.to_be_bytes());
    bytes.extend_from_slice(root);
    bytes
}

/// The audit key's public half (`GET /v1/audit/public-key`, `ipto events public-key`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PublicKey {
    /// Always `Ed25519`.
    pub algorithm: String,
    /// The first 16 hex digits of SHA-256 of the key.
    pub key_id: String,
    /// The 32-byte key, base64.
    pub public_key: String,
}

impl PublicKey {
    fn new(bytes: [u8; 32]) -> Self {
        Self {
            algorithm: "Ed25519".into(),
            key_id: hex::encode(Sha256::digest(bytes))[..16].to_owned(),
            public_key: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }
}

/// A signed tree head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignedHead {
    /// Leaves (events) the tree covers: audit positions 1..=tree_size.
    #[schema(minimum = 0)]
    pub tree_size: u64,
    /// The RFC 6962 root of those leaves, lowercase hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub root_hash: String,
    /// When it was signed (RFC 3339, milliseconds, UTC).
    pub signed_at: String,
    /// The signing key's id (see `GET /v1/audit/public-key`).
    pub key_id: String,
    /// Ed25519 over the documented byte layout, base64.
    pub signature: String,
}

/// Why a head was not accepted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the head was signed by key {head}, not by key {key}")]
    OtherKey { head: String, key: String },
    #[error("the head is malformed: {0}")]
    Malformed(&'static str),
    #[error("the head's signature does not verify")]
    BadSignature,
}

impl SignedHead {
    /// The root this head vouches for, if `key` signed exactly it.
    pub fn verify(&self, key: &PublicKey) -> Result<Hash, HeadError> {
        if self.key_id != key.key_id {
            return Err(HeadError::OtherKey {
                head: self.key_id.clone(),
                key: key.key_id.clone(),
            });
        }
        let engine = base64::engine::general_purpose::STANDARD;
        let public = engine
            .decode(&key.public_key)
            .map_err(|_| HeadError::Malformed("public_key is not base64"))?;
        let signature = engine
            .decode(&self.signature)
            .map_err(|_| HeadError::Malformed("signature is not base64"))?;
        let root: Hash = hex::decode(&self.root_hash)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(HeadError::Malformed("root_hash is not 64 hex digits"))?;
        let signed_at = chrono::DateTime::parse_from_rfc3339(&self.signed_at)
            .map_err(|_| HeadError::Malformed("signed_at is not RFC 3339"))?
            .timestamp_millis();
        UnparsedPublicKey::new(&ED25519, public)
            .verify(&message(self.tree_size, signed_at, &root), &signature)
            .map_err(|_| HeadError::BadSignature)?;
        Ok(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::load(Some(&"07".repeat(32)), Path::new("/nonexistent")).unwrap()
    }

    #[test]
    fn a_head_verifies_with_its_key_and_nothing_in_it_can_change() {
        let key = key();
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-02T10:00:00.123Z")
            .unwrap()
            .to_utc();
        let head = key.sign(42, &[9; 32], at);
        assert_eq!(head.signed_at, "2026-12-02T10:00:00.123Z");
        assert_eq!(head.verify(&key.public()), Ok([9; 32]));
        let mut bigger = head.clone();
        bigger.tree_size = 43;
        assert_eq!(bigger.verify(&key.public()), Err(HeadError::BadSignature));
        let mut later = head.clone();
        later.signed_at = "2026-12-02T10:00:00.124Z".into();
        assert_eq!(later.verify(&key.public()), Err(HeadError::BadSignature));
        let mut other_root = head.clone();
        other_root.root_hash = hex::encode([8u8; 32]);
        assert_eq!(
            other_root.verify(&key.public()),
            Err(HeadError::BadSignature)
        );
        let stranger = AuditKey::load(Some(&"08".repeat(32)), Path::new("/x")).unwrap();
        assert!(matches!(
            head.verify(&stranger.public()),
            Err(HeadError::OtherKey { .. })
        ));
    }

    #[test]
    fn a_generated_key_is_kept_private_and_reused_and_never_shown() {
        let dir = std::env::temp_dir().join(format!("ipto-audit-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = AuditKey::load(None, &dir).unwrap();
        let second = AuditKey::load(None, &dir).unwrap();
        assert_eq!(first.public().public_key, second.public().public_key);
        let path = dir.join("audit-signing.key");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let seed = std::fs::read_to_string(&path).unwrap();
        assert!(!format!("{first:?}").contains(&seed));
        assert!(AuditKey::load(Some("short"), &dir).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
