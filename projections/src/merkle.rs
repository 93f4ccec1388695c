//! RFC 6962 / RFC 9162 Merkle trees over the audit order: leaf and node hashes, tree heads,
//! inclusion paths and consistency proofs, and their verification.
//!
//! The tree is stored as its complete subtrees: node `(level, index)` is the root of leaves
//! `index·2^level .. (index+1)·2^level` (level 0 is the leaf hashes). A tree of any size is
//! combined from O(log n) of them, so heads and proofs for any size read few rows. The algorithms
//! here take the nodes through a lookup; [`needed`] runs one with a recording lookup first, so a
//! caller fetches exactly the nodes it will use in one query.

use std::cell::RefCell;
use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// A complete subtree: `(level, index)`.
pub type Node = (u32, u64);

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(data);
    hasher.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n` (`n` ≥ 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// `MTH(D[start..start+len])` for a range the RFC's recursions produce (`start` a multiple of a
/// power of two ≥ `len`).
fn mth(start: u64, len: u64, get: &dyn Fn(Node) -> Hash) -> Hash {
    if len.is_power_of_two() {
        let level = len.trailing_zeros();
        return get((level, start >> level));
    }
    let k = split(len);
    node_hash(&mth(start, k, get), &mth(start + k, len - k, get))
}

/// The root of the first `size` leaves.
pub fn root(size: u64, get: &dyn Fn(Node) -> Hash) -> Hash {
    if size == 0 {
        empty_root()
    } else {
        mth(0, size, get)
    }
}

/// The audit path of leaf `index` in the tree of `size` leaves (RFC 6962 §2.1.1), leaf side
/// first. `index < size`.
pub fn inclusion_path(index: u64, size: u64, get: &dyn Fn(Node) -> Hash) -> Vec<Hash> {
    let mut path = Vec::new();
    path_of(index, 0, size, get, &mut path);
    path
}

fn path_of(m: u64, start: u64, n: u64, get: &dyn Fn(Node) -> Hash, out: &mut Vec<Hash>) {
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path_of(m, start, k, get, out);
        out.push(mth(start + k, n - k, get));
    } else {
        path_of(m - k, start + k, n - k, get, out);
        out.push(mth(start, k, get));
    }
}

/// The consistency proof from the tree of `old` leaves to the tree of `new` (RFC 6962 §2.1.2).
/// `0 < old ≤ new`.
pub fn consistency_proof(old: u64, new: u64, get: &dyn Fn(Node) -> Hash) -> Vec<Hash> {
    let mut proof = Vec::new();
    subproof(old, 0, new, true, get, &mut proof);
    proof
}

fn subproof(
    m: u64,
    start: u64,
    n: u64,
    whole: bool,
    get: &dyn Fn(Node) -> Hash,
    out: &mut Vec<Hash>,
) {
    if m == n {
        if !whole {
            out.push(mth(start, n, get));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, start, k, whole, get, out);
        out.push(mth(start + k, n - k, get));
    } else {
        subproof(m - k, start + k, n - k, false, get, out);
        out.push(mth(start, k, get));
    }
}

/// The nodes `run` reads: it is called with a lookup that records each request (and answers
/// zeros); the RFC's recursions depend only on the sizes, so a second run with the real nodes
/// reads exactly these.
pub fn needed(run: impl Fn(&dyn Fn(Node) -> Hash)) -> BTreeSet<Node> {
    let seen = RefCell::new(BTreeSet::new());
    run(&|node| {
        seen.borrow_mut().insert(node);
        [0; 32]
    });
    seen.into_inner()
}

/// Whether `path` proves leaf `index` (hash `leaf`) in the tree of `size` leaves with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// Whether `proof` shows the tree of `old` leaves with `old_root` is a prefix of the tree of
/// `new` leaves with `new_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> bool {
    if old == 0 || old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && fr == *old_root && sr == *new_root
}

/// The nodes that appending leaves `size..` completes, given the leaves' hashes and the nodes
/// of the tree's right edge (`frontier(size)`): each new node with its hash, in order.
pub fn append(
    size: u64,
    leaves: &[Hash],
    frontier: &std::collections::HashMap<Node, Hash>,
) -> Vec<(Node, Hash)> {
    let mut known = frontier.clone();
    let mut added = Vec::with_capacity(leaves.len() * 2);
    for (offset, leaf) in leaves.iter().enumerate() {
        let mut index = size + offset as u64;
        let mut level = 0u32;
        let mut hash = *leaf;
        known.insert((0, index), hash);
        added.push(((0, index), hash));
        while index & 1 == 1 {
            let left = known[&(level, index - 1)];
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            known.insert((level, index), hash);
            added.push(((level, index), hash));
        }
    }
    added
}

/// The complete subtrees on the right edge of a tree of `size` leaves: the left siblings that
/// appending needs.
pub fn frontier(size: u64) -> Vec<Node> {
    (0..64u32)
        .filter(|level| size >> level & 1 == 1)
        .map(|level| (level, (size >> level) - 1))
        .collect()
}

/// A tree built leaf by leaf in memory that keeps only its right edge (O(log n) hashes): for
/// recomputing a root from a stream of leaves (`ipto events verify`).
#[derive(Default)]
pub struct Streaming {
    size: u64,
    /// The right edge's complete subtrees, lowest level last.
    edge: Vec<(u32, Hash)>,
}

impl Streaming {
    /// Adds the next leaf.
    pub fn push(&mut self, leaf: Hash) {
        let mut level = 0;
        let mut hash = leaf;
        while let Some(&(top, left)) = self.edge.last() {
            if top != level {
                break;
            }
            self.edge.pop();
            hash = node_hash(&left, &hash);
            level += 1;
        }
        self.edge.push((level, hash));
        self.size += 1;
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.edge.iter().rev();
        match iter.next() {
            None => empty_root(),
            Some(&(_, first)) => iter.fold(first, |right, &(_, left)| node_hash(&left, &right)),
        }
    }
}

#[cfg(test)]
mod tests {

    /// Proof sizes in a tree of 1,000,000 events (`cargo test -p projections proof_sizes --
    /// --nocapture` prints them): an audit path has at most 20 hashes (640 bytes), a consistency
    /// proof between two heads, sampled, at most 21 (672 bytes).
    #[test]
    fn proof_sizes_at_a_million_events() {
        const SIZE: u64 = 1_000_000;
        let stored = |_: Node| [0u8; 32];
        let inclusion: Vec<usize> = (0..SIZE)
            .step_by(997)
            .chain([SIZE - 1])
            .map(|m| inclusion_path(m, SIZE, &stored).len())
            .collect();
        let consistency: Vec<usize> = (1..SIZE)
            .step_by(4_999)
            .chain([SIZE - 1, 1 << 19, (1 << 19) + 1])
            .map(|old| consistency_proof(old, SIZE, &stored).len())
            .collect();
        let (max_in, max_co) = (
            *inclusion.iter().max().unwrap(),
            *consistency.iter().max().unwrap(),
        );
        println!(
            "tree of {SIZE}: audit path {}..={max_in} hashes ({} bytes at most), consistency proof \
             {}..={max_co} hashes ({} bytes at most)",
            inclusion.iter().min().unwrap(),
            max_in * 32,
            consistency.iter().min().unwrap(),
            max_co * 32
        );
        assert_eq!(max_in, 20);
        assert!(max_co <= 21, "{max_co}");
    }

    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// The leaves of the RFC 6962 test vectors (certificate-transparency's merkle_tree_test).
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn h(text: &str) -> Hash {
        hex::decode(text).unwrap().try_into().unwrap()
    }

    /// Every node of a tree of `leaves`, built by [`append`] one batch at a time.
    fn nodes(leaves: &[Hash], batch: usize) -> HashMap<Node, Hash> {
        let mut all = HashMap::new();
        let mut size = 0u64;
        for chunk in leaves.chunks(batch.max(1)) {
            let edge: HashMap<Node, Hash> =
                frontier(size).into_iter().map(|n| (n, all[&n])).collect();
            all.extend(append(size, chunk, &edge));
            size += chunk.len() as u64;
        }
        all
    }

    fn vector_leaves() -> Vec<Hash> {
        LEAVES
            .iter()
            .map(|l| leaf_hash(&hex::decode(l).unwrap()))
            .collect()
    }

    #[test]
    fn roots_match_the_rfc_vectors_at_every_size() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let leaves = vector_leaves();
        for batch in 1..=8 {
            let all = nodes(&leaves, batch);
            for size in 1..=8u64 {
                assert_eq!(
                    root(size, &|n| all[&n]),
                    h(ROOTS[size as usize - 1]),
                    "size {size}"
                );
            }
        }
        let mut streaming = Streaming::default();
        for (i, leaf) in leaves.iter().enumerate() {
            streaming.push(*leaf);
            assert_eq!(streaming.root(), h(ROOTS[i]));
        }
    }

    #[test]
    fn paths_and_proofs_match_the_rfc_vectors() {
        let all = nodes(&vector_leaves(), 3);
        let get = |n: Node| all[&n];
        let paths: [(u64, u64, &[&str]); 3] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (index, size, want) in paths {
            let want: Vec<Hash> = want.iter().map(|w| h(w)).collect();
            assert_eq!(inclusion_path(index, size, &get), want, "{index} in {size}");
        }
        let proofs: [(u64, u64, &[&str]); 4] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old, new, want) in proofs {
            let want: Vec<Hash> = want.iter().map(|w| h(w)).collect();
            let proof = consistency_proof(old, new, &get);
            assert_eq!(proof, want, "{old} -> {new}");
            assert!(verify_consistency(
                old,
                new,
                &proof,
                &h(ROOTS[old as usize - 1]),
                &h(ROOTS[new as usize - 1])
            ));
        }
    }

    #[test]
    fn needed_names_exactly_the_nodes_read() {
        let all = nodes(&vector_leaves(), 8);
        let wanted = needed(|get| {
            inclusion_path(5, 7, get);
        });
        let path = inclusion_path(5, 7, &|n| {
            assert!(wanted.contains(&n), "{n:?} read but not named");
            all[&n]
        });
        assert_eq!(path.len(), 3);
    }

    proptest! {
        #[test]
        fn inclusion_proofs_verify_and_catch_a_changed_leaf(
            size in 1u64..300, pick in any::<u64>(), batch in 1usize..40, flip in 0usize..32,
        ) {
            let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            let all = nodes(&leaves, batch);
            let get = |n: Node| all[&n];
            let index = pick % size;
            let top = root(size, &get);
            let mut streaming = Streaming::default();
            leaves.iter().for_each(|l| streaming.push(*l));
            prop_assert_eq!(streaming.root(), top);
            let path = inclusion_path(index, size, &get);
            prop_assert!(verify_inclusion(&leaves[index as usize], index, size, &path, &top));
            let mut other = leaves[index as usize];
            other[flip] ^= 1;
            prop_assert!(!verify_inclusion(&other, index, size, &path, &top));
            // (The size a path is checked at is the signed head's, so it is not tampered with.)
        }

        #[test]
        fn consistency_proofs_verify_and_catch_a_rewritten_prefix(
            new in 1u64..300, pick in any::<u64>(), changed in any::<u64>(),
        ) {
            let leaves: Vec<Hash> = (0..new).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            let all = nodes(&leaves, 7);
            let get = |n: Node| all[&n];
            let old = 1 + pick % new;
            let proof = consistency_proof(old, new, &get);
            let (old_root, new_root) = (root(old, &get), root(new, &get));
            prop_assert!(verify_consistency(old, new, &proof, &old_root, &new_root));
            // A log whose first `old` leaves were altered afterwards is not consistent.
            let mut altered = leaves.clone();
            altered[(changed % old) as usize][0] ^= 1;
            let forged = nodes(&altered, 7);
            let forged_root = root(new, &|n| forged[&n]);
            let forged_proof = consistency_proof(old, new, &|n| forged[&n]);
            prop_assert!(!verify_consistency(old, new, &forged_proof, &old_root, &forged_root));
        }
    }
}
