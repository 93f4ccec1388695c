//! `ipto events verify`: recomputes the audit tree from the events (the database's, or an NDJSON
//! export's alone) and checks it against signed heads; `ipto events prove` writes an inclusion
//! proof that the same command checks offline.
//!
//! A [`Checker`] takes the events in audit order and stops at the first thing wrong: a position
//! missing, an event whose bytes do not give its leaf hash, or a prefix whose root is not a
//! signed head's. Memory stays O(log n): the tree is kept as its right edge.

use projections::merkle::{self, Hash, Streaming};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::notary::{PublicKey, SignedHead};

/// What verification found wrong first.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", position.map(|p| format!("position {p}: ")).unwrap_or_default())]
pub struct Failure {
    /// The first bad position, when one can be named.
    pub position: Option<u64>,
    pub reason: String,
}

impl Failure {
    fn at(position: u64, reason: impl Into<String>) -> Self {
        Self {
            position: Some(position),
            reason: reason.into(),
        }
    }
}

/// What a verification covered.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub events: u64,
    pub root: Hash,
    /// The signed heads checked, by tree size.
    pub heads: Vec<u64>,
}

/// Checks events one by one against their leaf hashes and the signed heads.
pub struct Checker {
    tree: Streaming,
    /// Verified heads not yet reached: (tree size, root), ascending.
    heads: Vec<(u64, Hash)>,
    checked: Vec<u64>,
}

impl Checker {
    /// A checker of `heads`, each verified with `key` first.
    pub fn new(heads: &[SignedHead], key: Option<&PublicKey>) -> Result<Self, Failure> {
        let mut verified = Vec::new();
        for head in heads {
            let key = key.ok_or_else(|| Failure {
                position: None,
                reason: "a signed head needs the public key to be checked (--public-key)".into(),
            })?;
            let root = head.verify(key).map_err(|e| Failure {
                position: None,
                reason: format!("the head of tree size {}: {e}", head.tree_size),
            })?;
            verified.push((head.tree_size, root));
        }
        verified.sort_unstable();
        verified.reverse();
        Ok(Self {
            tree: Streaming::default(),
            heads: verified,
            checked: Vec::new(),
        })
    }

    /// The event at `position`: its item as auditors read it (`None` if the log lost it), with or
    /// without `position` and `leaf_hash`, and the leaf hash recorded for it, if any.
    pub fn push(
        &mut self,
        position: u64,
        item: Option<&Value>,
        recorded: Option<&str>,
    ) -> Result<(), Failure> {
        let expected = self.tree.size() + 1;
        if position != expected {
            return Err(Failure::at(
                expected,
                format!("missing (the next event is at position {position})"),
            ));
        }
        let Some(item) = item else {
            return Err(Failure::at(position, "the event is missing from the log"));
        };
        let mut item = item.clone();
        if let Some(object) = item.as_object_mut() {
            object.remove("position");
            object.remove("leaf_hash");
        }
        let leaf = projections::audit::leaf(&item);
        if let Some(recorded) = recorded {
            if recorded != hex::encode(leaf) {
                return Err(Failure::at(
                    position,
                    "the event's bytes do not give its leaf hash (altered, or another event's)",
                ));
            }
        }
        self.tree.push(leaf);
        while let Some(&(size, root)) = self.heads.last() {
            if size != position {
                break;
            }
            self.heads.pop();
            if self.tree.root() != root {
                return Err(Failure {
                    position: None,
                    reason: format!(
                        "the first {size} events do not give the signed head's root (an event \
                         before it was altered, removed or reordered)"
                    ),
                });
            }
            self.checked.push(size);
        }
        Ok(())
    }

    /// The end of the events: every head must have been reached.
    pub fn finish(mut self) -> Result<Verified, Failure> {
        // A head of size 0 is the empty tree's.
        if let Some(&(0, root)) = self.heads.last() {
            if root != merkle::empty_root() {
                return Err(Failure {
                    position: None,
                    reason: "the head of the empty tree has another root".into(),
                });
            }
            self.heads.pop();
            self.checked.push(0);
        }
        if let Some(&(size, _)) = self.heads.first() {
            let events = self.tree.size();
            return Err(Failure::at(
                events + 1,
                format!("missing: the signed head covers {size} events, the log has {events}"),
            ));
        }
        self.checked.sort_unstable();
        Ok(Verified {
            events: self.tree.size(),
            root: self.tree.root(),
            heads: self.checked,
        })
    }
}

/// What `ipto events prove` writes: an event, its audit path and a signed head it leads to.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProofFile {
    /// The event as `GET /v1/admin/events` lists it.
    pub event: Value,
    pub proof: crate::audit::InclusionProof,
    pub head: SignedHead,
}

impl ProofFile {
    /// Checks the proof offline with the auditor's copy of the public key.
    pub fn verify(&self, key: &PublicKey) -> Result<u64, Failure> {
        let position = self.proof.position;
        let failed = |reason: &str| Failure::at(position, reason.to_owned());
        let root = self.head.verify(key).map_err(|e| Failure {
            position: None,
            reason: format!("the head: {e}"),
        })?;
        if self.head.tree_size != self.proof.tree_size {
            return Err(failed("the proof is for another tree size than the head"));
        }
        let mut item = self.event.clone();
        if let Some(object) = item.as_object_mut() {
            object.remove("position");
            object.remove("leaf_hash");
        }
        let leaf = projections::audit::leaf(&item);
        let path: Option<Vec<Hash>> = self
            .proof
            .audit_path
            .iter()
            .map(|h| hex::decode(h).ok().and_then(|b| b.try_into().ok()))
            .collect();
        let path = path.ok_or_else(|| failed("the audit path is not hex hashes"))?;
        if !merkle::verify_inclusion(&leaf, position - 1, self.proof.tree_size, &path, &root) {
            return Err(failed(
                "the event is not in the signed tree (or its bytes were altered)",
            ));
        }
        Ok(position)
    }
}

/// A signed head or public key from a file: the object itself, or an API answer's `data`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON ({e})", path.display()))?;
    let value = match value.get("data") {
        Some(data) => data.clone(),
        None => value,
    };
    serde_json::from_value(value).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::notary::AuditKey;

    fn items(n: u64) -> Vec<Value> {
        (1..=n)
            .map(|i| {
                json!({
                    "position": i,
                    "aggregate_type": "dataset",
                    "aggregate_id": format!("dset_{i}"),
                    "sequence": 1,
                    "event_type": "DatasetCreated",
                    "event_version": "1.0",
                    "payload": { "name": format!("n{i}") },
                    "metadata": { "actor": "system", "tenant_id": null, "request_id": null,
                                  "occurred_at": "2026-12-02T00:00:00Z" },
                })
            })
            .collect()
    }

    fn head(key: &AuditKey, items: &[Value]) -> SignedHead {
        let mut tree = Streaming::default();
        for item in items {
            let mut item = item.clone();
            item.as_object_mut().unwrap().remove("position");
            tree.push(projections::audit::leaf(&item));
        }
        key.sign(items.len() as u64, &tree.root(), chrono::Utc::now())
    }

    fn run(items: &[Value], heads: &[SignedHead], key: &AuditKey) -> Result<Verified, Failure> {
        let mut checker = Checker::new(heads, Some(&key.public()))?;
        for item in items {
            checker.push(item["position"].as_u64().unwrap(), Some(item), None)?;
        }
        checker.finish()
    }

    #[test]
    fn an_untouched_log_verifies_against_its_heads() {
        let key = AuditKey::load(Some(&"01".repeat(32)), Path::new("/x")).unwrap();
        let all = items(10);
        let heads = [head(&key, &all[..4]), head(&key, &all)];
        let verified = run(&all, &heads, &key).unwrap();
        assert_eq!(verified.events, 10);
        assert_eq!(verified.heads, [4, 10]);
    }

    #[test]
    fn an_altered_removed_or_swapped_event_is_caught() {
        let key = AuditKey::load(Some(&"01".repeat(32)), Path::new("/x")).unwrap();
        let all = items(10);
        let heads = [head(&key, &all)];

        let mut altered = all.clone();
        altered[6]["payload"]["name"] = "m7".into();
        assert!(run(&altered, &heads, &key)
            .unwrap_err()
            .reason
            .contains("root"));

        let mut removed = all.clone();
        removed.remove(3);
        assert_eq!(run(&removed, &heads, &key).unwrap_err().position, Some(4));

        let mut swapped = all.clone();
        swapped.swap(2, 5);
        swapped[2]["position"] = 3.into();
        swapped[5]["position"] = 6.into();
        assert!(run(&swapped, &heads, &key).is_err());

        let short = &all[..8];
        assert_eq!(run(short, &heads, &key).unwrap_err().position, Some(9));

        // With the recorded leaf hashes, the first altered event is named.
        let mut checker = Checker::new(&heads, Some(&key.public())).unwrap();
        let mut found = None;
        for (i, item) in altered.iter().enumerate() {
            let mut original = all[i].clone();
            original.as_object_mut().unwrap().remove("position");
            let recorded = hex::encode(projections::audit::leaf(&original));
            if let Err(failure) = checker.push(i as u64 + 1, Some(item), Some(&recorded)) {
                found = failure.position;
                break;
            }
        }
        assert_eq!(found, Some(7));
    }

    #[test]
    fn a_head_from_another_key_or_edited_is_refused() {
        let key = AuditKey::load(Some(&"01".repeat(32)), Path::new("/x")).unwrap();
        let other = AuditKey::load(Some(&"02".repeat(32)), Path::new("/x")).unwrap();
        let all = items(3);
        assert!(run(&all, &[head(&other, &all)], &key).is_err());
        let mut edited = head(&key, &all);
        edited.tree_size = 2;
        assert!(run(&all, &[edited], &key).is_err());
    }
}
