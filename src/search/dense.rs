//! The dense leg's vectors: one per passage, kept in the index's chunk documents (so vectors,
//! text and the indexer's cursor commit together) and mirrored here in memory, quantised to one
//! byte a coordinate, for an exact scan. The scan reads every vector of the searched datasets
//! once per query, so its cost is memory traffic: f32 coordinates took 48 ms for 200,000
//! passages (293 MiB read), bytes a quarter of that.
//! A chunk document's `dense` bytes: `IPV1`, the embedder's key (u64), the dimensions (u32), the
//! passage count (u32), each passage's start and end in characters from the chunk's start (u32
//! each), then every vector's coordinates (f32), all little-endian.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 4] = b"IPV1";

/// The key of an embedder's identity stored with its vectors: vectors under another key are not
/// comparable and are embedded again.
pub fn key_of(identity: &str) -> u64 {
    let digest = Sha256::digest(identity.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("eight bytes"))
}

/// The `dense` bytes of one chunk: its passages' ranges (relative to the chunk) and vectors.
pub fn encode(key: u64, passages: &[(u32, u32)], vectors: &[Vec<f32>]) -> Vec<u8> {
    let dimensions = vectors.first().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(20 + passages.len() * (8 + 4 * dimensions));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&(dimensions as u32).to_le_bytes());
    out.extend_from_slice(&(passages.len() as u32).to_le_bytes());
    for (start, end) in passages {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
    }
    for vector in vectors {
        for x in vector {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

/// A passage's range in its chunk, and its vector.
pub type Embedded = ((u32, u32), Vec<f32>);

/// The passages and vectors in `bytes`, if they are of the embedder `key` and whole.
pub fn decode(bytes: &[u8], key: u64) -> Option<Vec<Embedded>> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    if bytes.get(..4)? != MAGIC || u64::from_le_bytes(bytes.get(4..12)?.try_into().ok()?) != key {
        return None;
    }
    let dimensions = u32_at(12)? as usize;
    let count = u32_at(16)? as usize;
    let ranges_at = 20;
    let vectors_at = ranges_at + count.checked_mul(8)?;
    if bytes.len() != vectors_at + count.checked_mul(dimensions * 4)? {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let range = (u32_at(ranges_at + 8 * i)?, u32_at(ranges_at + 8 * i + 4)?);
        let from = vectors_at + i * dimensions * 4;
        let vector = bytes[from..from + dimensions * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("four bytes")))
            .collect();
        out.push((range, vector));
    }
    Some(out)
}

/// A vector with coordinates as signed bytes: `values[i] · scale` ≈ the coordinate.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized {
    pub values: Box<[i8]>,
    pub scale: f32,
}

impl Quantized {
    /// `v` scaled so that its largest coordinate is ±127, rounded.
    pub fn of(v: &[f32]) -> Self {
        let largest = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
        Self {
            values: v
                .iter()
                .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
                .collect(),
            scale,
        }
    }

    /// The dot product with another quantised vector (the cosine, for unit vectors).
    pub fn dot(&self, other: &Quantized) -> f32 {
        let mut lanes = [0i32; 16];
        let (a, b) = (self.values.chunks_exact(16), other.values.chunks_exact(16));
        let tail: i32 = a
            .remainder()
            .iter()
            .zip(b.remainder())
            .map(|(x, y)| i32::from(*x) * i32::from(*y))
            .sum();
        for (x, y) in a.zip(b) {
            for i in 0..16 {
                lanes[i] += i32::from(x[i]) * i32::from(y[i]);
            }
        }
        (lanes.iter().sum::<i32>() + tail) as f32 * self.scale * other.scale
    }
}

/// One embedded passage, in characters of the object's extracted text (end exclusive).
#[derive(Clone, Debug)]
pub struct PassageVector {
    /// Where its chunk starts.
    pub chunk_start: u64,
    pub start: u64,
    pub end: u64,
    pub vector: Quantized,
}

/// The vectors of one object.
#[derive(Clone, Debug)]
pub struct ObjectVectors {
    pub dataset_id: Arc<str>,
    pub passages: Vec<PassageVector>,
}

/// A passage found by similarity.
#[derive(Clone, Debug, PartialEq)]
pub struct Near {
    pub object_id: String,
    pub dataset_id: String,
    pub chunk_start: u64,
    pub start: u64,
    pub end: u64,
    /// Cosine similarity to the query.
    pub score: f32,
}

fn bytes_of(object: &ObjectVectors) -> u64 {
    object
        .passages
        .iter()
        .map(|p| (p.vector.values.len() + std::mem::size_of::<f32>()) as u64)
        .sum()
}

/// A passage's score, object, dataset and vector, while a scan ranks them.
type Scored<'a> = (f32, &'a str, &'a str, &'a PassageVector);

/// Stores with at least this many passages are scanned on every core.
const PARALLEL_FROM: u64 = 20_000;

/// Every committed vector of the index, by object and by dataset.
#[derive(Default)]
pub struct DenseStore {
    objects: HashMap<String, ObjectVectors>,
    by_dataset: HashMap<Arc<str>, BTreeSet<String>>,
    passages: u64,
    /// Bytes of every vector's coordinates and scale.
    bytes: u64,
}

impl DenseStore {
    /// Puts (or replaces) an object's vectors.
    pub fn insert(&mut self, object_id: String, vectors: ObjectVectors) {
        self.remove(&object_id);
        self.passages += vectors.passages.len() as u64;
        self.bytes += bytes_of(&vectors);
        self.by_dataset
            .entry(vectors.dataset_id.clone())
            .or_default()
            .insert(object_id.clone());
        self.objects.insert(object_id, vectors);
    }

    /// Forgets an object's vectors.
    pub fn remove(&mut self, object_id: &str) {
        if let Some(old) = self.objects.remove(object_id) {
            self.passages -= old.passages.len() as u64;
            self.bytes -= bytes_of(&old);
            if let Some(set) = self.by_dataset.get_mut(&old.dataset_id) {
                set.remove(object_id);
                if set.is_empty() {
                    self.by_dataset.remove(&old.dataset_id);
                }
            }
        }
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Embedded passages.
    pub fn passage_count(&self) -> u64 {
        self.passages
    }

    /// Bytes the vectors take in memory (coordinates only).
    pub fn vector_bytes(&self) -> u64 {
        self.bytes
    }

    /// The `limit` passages of `datasets` most similar to `query` (with `per_object`, only each
    /// object's best): score desc, then object id and position asc.
    pub fn nearest<'a>(
        &'a self,
        query: &[f32],
        datasets: &[String],
        limit: usize,
        per_object: bool,
    ) -> Vec<Near> {
        let query = Quantized::of(query);
        let objects: Vec<(&str, &str, &ObjectVectors)> = datasets
            .iter()
            .filter_map(|d| self.by_dataset.get_key_value(d.as_str()))
            .flat_map(|(d, set)| {
                set.iter()
                    .map(move |o| (o.as_str(), d.as_ref(), &self.objects[o]))
            })
            .collect();
        // Large scans on every core: the work is reading the vectors.
        let parts = if self.passages >= PARALLEL_FROM {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, 8)
        } else {
            1
        };
        let share = objects.len().div_ceil(parts).max(1);
        let score = |part: &[(&'a str, &'a str, &'a ObjectVectors)]| {
            let mut found: Vec<Scored<'a>> = Vec::new();
            for (object_id, dataset, object) in part {
                let scored = object.passages.iter().map(|p| (query.dot(&p.vector), p));
                if per_object {
                    if let Some((score, p)) = scored.max_by(|a, b| a.0.total_cmp(&b.0)) {
                        found.push((score, object_id, dataset, p));
                    }
                } else {
                    found.extend(scored.map(|(score, p)| (score, *object_id, *dataset, p)));
                }
            }
            found
        };
        let mut found: Vec<Scored<'a>> = if parts == 1 {
            score(&objects)
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = objects
                    .chunks(share)
                    .map(|part| scope.spawn(move || score(part)))
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("a scan thread does not panic"))
                    .collect()
            })
        };
        let order = |a: &(f32, &str, &str, &PassageVector),
                     b: &(f32, &str, &str, &PassageVector)| {
            b.0.total_cmp(&a.0)
                .then_with(|| a.1.cmp(b.1))
                .then_with(|| a.3.start.cmp(&b.3.start))
        };
        if found.len() > limit && limit > 0 {
            found.select_nth_unstable_by(limit - 1, order);
        }
        found.truncate(limit);
        found.sort_by(order);
        found
            .into_iter()
            .map(|(score, object_id, dataset_id, p)| Near {
                object_id: object_id.to_owned(),
                dataset_id: dataset_id.to_owned(),
                chunk_start: p.chunk_start,
                start: p.start,
                end: p.end,
                score,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unit(v: &[f32]) -> Quantized {
        Quantized::of(&crate::search::embed::normalised(v.to_vec()).unwrap())
    }

    #[test]
    fn bytes_round_trip_and_refuse_another_embedder() {
        let vectors = vec![vec![0.6, 0.8], vec![1.0, 0.0]];
        let bytes = encode(7, &[(0, 5), (5, 9)], &vectors);
        let back = decode(&bytes, 7).unwrap();
        assert_eq!(back[0], ((0, 5), vec![0.6, 0.8]));
        assert_eq!(back[1], ((5, 9), vec![1.0, 0.0]));
        assert!(decode(&bytes, 8).is_none(), "another embedder's key");
        assert!(decode(&bytes[..bytes.len() - 1], 7).is_none(), "truncated");
        assert!(decode(b"junk", 7).is_none());
    }

    #[test]
    fn nearest_keeps_to_the_datasets_and_ranks_by_similarity() {
        let mut store = DenseStore::default();
        let passage = |start, v: &[f32]| PassageVector {
            chunk_start: 0,
            start,
            end: start + 10,
            vector: unit(v),
        };
        store.insert(
            "obj_a".into(),
            ObjectVectors {
                dataset_id: "dset_1".into(),
                passages: vec![passage(0, &[1.0, 0.0]), passage(10, &[0.0, 1.0])],
            },
        );
        store.insert(
            "obj_b".into(),
            ObjectVectors {
                dataset_id: "dset_2".into(),
                passages: vec![passage(0, &[0.9, 0.1])],
            },
        );
        assert_eq!(store.passage_count(), 3);
        // Two coordinates and a scale each.
        assert_eq!(store.vector_bytes(), 3 * (2 + 4));
        let q = [0.0, 1.0];
        let best = store.nearest(&q, &["dset_1".into(), "dset_2".into()], 10, false);
        assert_eq!(
            best.iter()
                .map(|n| (n.object_id.as_str(), n.start))
                .collect::<Vec<_>>(),
            [("obj_a", 10), ("obj_b", 0), ("obj_a", 0)]
        );
        let per_object = store.nearest(&q, &["dset_1".into(), "dset_2".into()], 10, true);
        assert_eq!(per_object.len(), 2);
        assert_eq!(per_object[0].start, 10);
        assert!(store.nearest(&q, &["dset_3".into()], 10, true).is_empty());
        assert_eq!(
            store.nearest(&q, &["dset_2".into()], 10, true)[0].object_id,
            "obj_b"
        );
        store.remove("obj_a");
        assert_eq!(store.passage_count(), 1);
        assert_eq!(store.vector_bytes(), 2 + 4);
        assert!(store.nearest(&q, &["dset_1".into()], 10, false).is_empty());
    }

    proptest! {
        #[test]
        fn the_quantised_dot_product_is_within_a_hundredth_of_the_exact_one(
            v in proptest::collection::vec(-1.0f32..1.0, 1..400),
            w in proptest::collection::vec(-1.0f32..1.0, 1..400),
        ) {
            let n = v.len().min(w.len());
            let (Some(v), Some(w)) = (
                crate::search::embed::normalised(v[..n].to_vec()),
                crate::search::embed::normalised(w[..n].to_vec()),
            ) else {
                return Ok(());
            };
            let exact: f32 = v.iter().zip(&w).map(|(a, b)| a * b).sum();
            let quantised = Quantized::of(&v).dot(&Quantized::of(&w));
            prop_assert!((exact - quantised).abs() < 0.01, "{exact} vs {quantised}");
        }
    }
}
