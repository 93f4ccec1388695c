//! The retrieval modes over one index (SPEC §3.12): `lexical` (BM25 with the query language),
//! `dense` (cosine over passage vectors), `hybrid` (Reciprocal Rank Fusion of the BM25 top 100 and
//! the dense top 100) and `auto`. A query without operators is read as a question in `hybrid` and
//! `auto`: any of its content words, BM25-ranked. `auto` is lexical for a query with operators,
//! unless that reading finds nothing; then (and for every other query) it is hybrid.
//!
//! Two shapes of answer share the engine: objects for `POST /v1/search` (one per object, its best
//! match) and passages for `POST /v1/retrieve` (several per object may come back).

use std::collections::HashMap;

use super::dense::Near;
use super::embed::{EmbedError, Embedder};
use super::extract;
use super::index::{ChunkHit, Hit, IndexError, SearchIndex, StoredChunk};
use super::query::{self, Node};

/// Each leg's depth in `hybrid`.
pub const LEG_DEPTH: usize = 100;
/// Reciprocal Rank Fusion's constant.
pub const RRF_K: f64 = 60.0;
/// Snippets are at most this many characters.
const SNIPPET_CHARS: usize = 200;

/// The mode asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requested {
    Auto,
    Lexical,
    Dense,
    Hybrid,
}

impl Requested {
    /// `auto`, `lexical`, `dense` or `hybrid`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "auto" => Self::Auto,
            "lexical" => Self::Lexical,
            "dense" => Self::Dense,
            "hybrid" => Self::Hybrid,
            _ => return None,
        })
    }
}

/// The mode that ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Lexical,
    Dense,
    Hybrid,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lexical => "lexical",
            Self::Dense => "dense",
            Self::Hybrid => "hybrid",
        }
    }
}

/// Why a retrieval failed.
#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    /// `dense` asked of a server without an embedder.
    #[error("dense retrieval is not available on this server")]
    NoDense,
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// One query, validated: its text and its parse.
pub struct Question<'a> {
    pub text: &'a str,
    pub parsed: &'a Node,
    pub requested: Requested,
}

/// The engine: an index and, if the dense leg is on, its embedder.
pub struct Engine<'a> {
    pub index: &'a SearchIndex,
    pub embedder: Option<&'a dyn Embedder>,
}

/// A passage found: where it is and its text.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    pub object_id: String,
    pub dataset_id: String,
    pub filename: String,
    /// Characters of the object's extracted text, end exclusive.
    pub start: u64,
    pub end: u64,
    pub text: String,
    pub score: f64,
}

/// How a question is answered: the mode and the lexical reading.
enum Plan<'a> {
    Lexical(Node),
    Dense,
    Hybrid(Option<Node>),
    /// Operators as written; if nothing matches, hybrid over the words.
    LexicalThenHybrid(&'a Node, Option<Node>),
}

impl<'a> Engine<'a> {
    fn plan<'q>(&self, question: &Question<'q>) -> Result<Plan<'q>, RetrievalError> {
        let operators = query::uses_operators(question.text);
        let words = || query::any_word(question.text);
        let natural = || {
            if operators {
                Some(question.parsed.clone())
            } else {
                words()
            }
        };
        Ok(match (question.requested, self.embedder.is_some()) {
            (Requested::Lexical, _) => Plan::Lexical(question.parsed.clone()),
            (Requested::Dense, true) => Plan::Dense,
            (Requested::Dense, false) => return Err(RetrievalError::NoDense),
            (Requested::Hybrid, true) => Plan::Hybrid(natural()),
            (Requested::Auto, true) if operators => {
                Plan::LexicalThenHybrid(question.parsed, words())
            }
            (Requested::Auto, true) => Plan::Hybrid(words()),
            // Without a dense leg, hybrid is its lexical leg.
            (Requested::Hybrid | Requested::Auto, false) => match natural() {
                Some(node) => Plan::Lexical(node),
                None => Plan::Lexical(question.parsed.clone()),
            },
        })
    }

    fn embed(&self, text: &str) -> Result<Vec<f32>, RetrievalError> {
        let embedder = self.embedder.ok_or(RetrievalError::NoDense)?;
        Ok(embedder
            .embed(&[text])?
            .pop()
            .ok_or_else(|| EmbedError::Failed("no vector for the query".into()))?)
    }

    /// The best `limit` objects of `datasets`, one hit each, and the mode that ran.
    pub fn objects(
        &self,
        question: &Question<'_>,
        datasets: &[String],
        limit: usize,
    ) -> Result<(Vec<Hit>, Mode), RetrievalError> {
        let depth = limit.max(LEG_DEPTH);
        match self.plan(question)? {
            Plan::Lexical(node) => Ok((self.index.search(&node, datasets, limit)?, Mode::Lexical)),
            Plan::Dense => {
                let q = self.embed(question.text)?;
                let near = self.index.nearest(&q, datasets, limit, true);
                Ok((self.dense_hits(near)?, Mode::Dense))
            }
            Plan::LexicalThenHybrid(node, words) => {
                let hits = self.index.search(node, datasets, limit)?;
                if !hits.is_empty() {
                    return Ok((hits, Mode::Lexical));
                }
                self.hybrid_objects(question.text, words.as_ref(), datasets, limit, depth)
            }
            Plan::Hybrid(node) => {
                self.hybrid_objects(question.text, node.as_ref(), datasets, limit, depth)
            }
        }
    }

    fn hybrid_objects(
        &self,
        text: &str,
        node: Option<&Node>,
        datasets: &[String],
        limit: usize,
        depth: usize,
    ) -> Result<(Vec<Hit>, Mode), RetrievalError> {
        let lexical = match node {
            Some(node) => self.index.search(node, datasets, depth)?,
            None => Vec::new(),
        };
        let q = self.embed(text)?;
        let near = self.index.nearest(&q, datasets, depth, true);
        let mut fused: HashMap<&str, f64> = HashMap::new();
        for (rank, hit) in lexical.iter().enumerate() {
            *fused.entry(&hit.object_id).or_default() += rrf(rank);
        }
        for (rank, n) in near.iter().enumerate() {
            *fused.entry(&n.object_id).or_default() += rrf(rank);
        }
        let mut order: Vec<(&str, f64)> = fused.into_iter().collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        order.truncate(limit);
        let by_lexical: HashMap<&str, &Hit> =
            lexical.iter().map(|h| (h.object_id.as_str(), h)).collect();
        let by_dense: HashMap<&str, &Near> =
            near.iter().map(|n| (n.object_id.as_str(), n)).collect();
        let mut hits = Vec::with_capacity(order.len());
        for (object_id, score) in order {
            let hit = match by_lexical.get(object_id) {
                Some(hit) => Some((*hit).clone()),
                None => self.dense_hit(by_dense[object_id])?,
            };
            if let Some(mut hit) = hit {
                hit.score = score as f32;
                hits.push(hit);
            }
        }
        Ok((hits, Mode::Hybrid))
    }

    fn dense_hits(&self, near: Vec<Near>) -> Result<Vec<Hit>, RetrievalError> {
        let mut hits = Vec::with_capacity(near.len());
        for n in &near {
            hits.extend(self.dense_hit(n)?);
        }
        Ok(hits)
    }

    /// A dense hit as a search result: its passage is the snippet (cut to 200 characters).
    fn dense_hit(&self, near: &Near) -> Result<Option<Hit>, RetrievalError> {
        let Some(chunk) = self.index.chunk_at(&near.object_id, near.chunk_start)? else {
            return Ok(None);
        };
        let text = slice(&chunk, near.start, near.end);
        let snippet: String = text.trim_end().chars().take(SNIPPET_CHARS).collect();
        let to = near.start + snippet.chars().count() as u64;
        Ok(Some(Hit {
            object_id: near.object_id.clone(),
            dataset_id: near.dataset_id.clone(),
            filename: chunk.filename,
            score: near.score,
            snippet,
            locator: format!("chars:{}-{to}", near.start),
        }))
    }

    /// The best `limit` passages of `datasets`, and the mode that ran.
    pub fn passages(
        &self,
        question: &Question<'_>,
        datasets: &[String],
        limit: usize,
    ) -> Result<(Vec<Unit>, Mode), RetrievalError> {
        let depth = limit.max(LEG_DEPTH);
        match self.plan(question)? {
            Plan::Lexical(node) => Ok((self.lexical_units(&node, datasets, limit)?, Mode::Lexical)),
            Plan::Dense => {
                let q = self.embed(question.text)?;
                let near = self.index.nearest(&q, datasets, limit, false);
                let mut units = Vec::with_capacity(near.len());
                for n in &near {
                    units.extend(self.dense_unit(n, &mut HashMap::new())?);
                }
                Ok((units, Mode::Dense))
            }
            Plan::LexicalThenHybrid(node, words) => {
                let units = self.lexical_units(node, datasets, limit)?;
                if !units.is_empty() {
                    return Ok((units, Mode::Lexical));
                }
                self.hybrid_units(question.text, words.as_ref(), datasets, limit, depth)
            }
            Plan::Hybrid(node) => {
                self.hybrid_units(question.text, node.as_ref(), datasets, limit, depth)
            }
        }
    }

    fn hybrid_units(
        &self,
        text: &str,
        node: Option<&Node>,
        datasets: &[String],
        limit: usize,
        depth: usize,
    ) -> Result<(Vec<Unit>, Mode), RetrievalError> {
        let lexical = match node {
            Some(node) => self.lexical_units(node, datasets, depth)?,
            None => Vec::new(),
        };
        let q = self.embed(text)?;
        let near = self.index.nearest(&q, datasets, depth, false);
        let mut chunks = HashMap::new();
        let mut fused: HashMap<(String, u64), (f64, Option<Unit>)> = HashMap::new();
        for (rank, unit) in lexical.into_iter().enumerate() {
            let entry = fused
                .entry((unit.object_id.clone(), unit.start))
                .or_insert((0.0, None));
            entry.0 += rrf(rank);
            entry.1 = Some(unit);
        }
        for (rank, n) in near.iter().enumerate() {
            let entry = fused
                .entry((n.object_id.clone(), n.start))
                .or_insert((0.0, None));
            entry.0 += rrf(rank);
            if entry.1.is_none() {
                entry.1 = self.dense_unit(n, &mut chunks)?;
            }
        }
        let mut units: Vec<Unit> = fused
            .into_values()
            .filter_map(|(score, unit)| unit.map(|u| Unit { score, ..u }))
            .collect();
        units.sort_by(unit_order);
        units.truncate(limit);
        Ok((units, Mode::Hybrid))
    }

    /// Lexical hits as passages: each matching chunk's passage that holds its best match (one
    /// unit per passage, the chunk's score).
    fn lexical_units(
        &self,
        node: &Node,
        datasets: &[String],
        limit: usize,
    ) -> Result<Vec<Unit>, RetrievalError> {
        let hits = self.index.search_chunks(node, datasets, limit)?;
        let mut units: Vec<Unit> = hits.into_iter().map(unit_of_chunk).collect();
        units.sort_by(unit_order);
        Ok(units)
    }

    fn dense_unit(
        &self,
        near: &Near,
        chunks: &mut HashMap<(String, u64), Option<StoredChunk>>,
    ) -> Result<Option<Unit>, RetrievalError> {
        let key = (near.object_id.clone(), near.chunk_start);
        if !chunks.contains_key(&key) {
            let chunk = self.index.chunk_at(&near.object_id, near.chunk_start)?;
            chunks.insert(key.clone(), chunk);
        }
        Ok(chunks[&key].as_ref().map(|chunk| Unit {
            object_id: near.object_id.clone(),
            dataset_id: near.dataset_id.clone(),
            filename: chunk.filename.clone(),
            start: near.start,
            end: near.end,
            text: slice(chunk, near.start, near.end),
            score: f64::from(near.score),
        }))
    }
}

/// A lexical chunk hit as the passage holding its match.
fn unit_of_chunk(hit: ChunkHit) -> Unit {
    let ChunkHit {
        object_id,
        score,
        matched_at,
        chunk,
    } = hit;
    let passages = extract::passages(&chunk.body);
    let (start, end, text) = passages
        .iter()
        .find(|p| (p.start as u64) <= matched_at && matched_at < p.end as u64)
        .or(passages.first())
        .map_or((0, 0, ""), |p| (p.start as u64, p.end as u64, p.text));
    Unit {
        object_id,
        dataset_id: chunk.dataset_id.clone(),
        filename: chunk.filename.clone(),
        start: chunk.start + start,
        end: chunk.start + end,
        text: text.to_owned(),
        score: f64::from(score),
    }
}

fn unit_order(a: &Unit, b: &Unit) -> std::cmp::Ordering {
    b.score
        .total_cmp(&a.score)
        .then_with(|| a.object_id.cmp(&b.object_id))
        .then_with(|| a.start.cmp(&b.start))
}

/// The fused score of a 0-based rank.
fn rrf(rank: usize) -> f64 {
    1.0 / (RRF_K + rank as f64 + 1.0)
}

/// The characters `start..end` of the object's text, from the chunk that holds them.
fn slice(chunk: &StoredChunk, start: u64, end: u64) -> String {
    let from = start.saturating_sub(chunk.start) as usize;
    let to = end.saturating_sub(chunk.start) as usize;
    chunk
        .body
        .chars()
        .skip(from)
        .take(to.saturating_sub(from))
        .collect()
}
