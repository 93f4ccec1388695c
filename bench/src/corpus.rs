//! The search corpus: text objects of made-up words with a Zipf-like frequency, uploaded and
//! approved through the API until the search index holds the wanted number of chunks, and the
//! queries run against it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use crate::load::Api;

/// Distinct words in the corpus.
const VOCABULARY: usize = 20_000;
/// Characters of text per object: about a hundred 1,000-character chunks each.
const OBJECT_CHARS: usize = 100_000;
/// Objects uploaded and approved at once while seeding.
const SEED_CLIENTS: usize = 16;

/// Word `rank` (0 = most frequent): two to four syllables spelled from the rank, so every rank
/// gives a distinct word and the words look like text to the analyzer.
pub fn word(rank: usize) -> String {
    const ONSETS: [&str; 16] = [
        "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st",
    ];
    const VOWELS: [&str; 8] = ["a", "e", "i", "o", "u", "ai", "ou", "ea"];
    let mut n = rank + 128;
    let mut out = String::new();
    while n > 0 {
        out.push_str(ONSETS[n % 16]);
        n /= 16;
        out.push_str(VOWELS[n % 8]);
        n /= 8;
    }
    out
}

/// A small deterministic generator (SplitMix64): the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws word ranks with probability proportional to 1 / (rank + 1).
pub struct Words {
    cumulative: Vec<f64>,
    words: Vec<String>,
}

impl Words {
    pub fn new() -> Self {
        let mut total = 0.0;
        let cumulative = (0..VOCABULARY)
            .map(|rank| {
                total += 1.0 / (rank as f64 + 1.0);
                total
            })
            .collect();
        Self {
            cumulative,
            words: (0..VOCABULARY).map(word).collect(),
        }
    }

    /// The text of object `n`: sentences of Zipf-drawn words, `OBJECT_CHARS` long.
    pub fn text(&self, n: u64) -> String {
        let mut rng = Rng(n.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
        let total = *self.cumulative.last().expect("vocabulary");
        let mut out = String::with_capacity(OBJECT_CHARS + 64);
        let mut in_sentence = 0;
        while out.len() < OBJECT_CHARS {
            let pick = rng.unit() * total;
            let rank = self.cumulative.partition_point(|c| *c < pick);
            out.push_str(&self.words[rank.min(VOCABULARY - 1)]);
            in_sentence += 1;
            if in_sentence > 8 && rng.next().is_multiple_of(6) {
                out.push_str(".\n");
                in_sentence = 0;
            } else {
                out.push(' ');
            }
        }
        out
    }
}

/// The queries the search figures cycle through: a word in nearly every chunk, common, rare
/// and very rare words, a conjunction, a disjunction, a phrase and a prefix.
pub fn queries() -> Vec<String> {
    let prefix: String = word(700).chars().take(4).collect();
    vec![
        word(2),
        word(60),
        word(1_500),
        word(12_000),
        format!("{} {}", word(40), word(400)),
        format!("{} OR {}", word(2_000), word(3_000)),
        format!("\"{} {}\"", word(0), word(1)),
        format!("{prefix}*"),
    ]
}

/// A seller's account and dataset, where the corpus goes.
pub struct Shelf {
    pub token: String,
    pub tenant: String,
    pub dataset: String,
}

/// Uploads and approves corpus objects across `shelves` until the index of the server at `api`
/// holds at least `chunks` documents. Returns the documents indexed and the objects added.
pub async fn seed(
    api: &Api,
    admin: &str,
    shelves: Arc<Vec<Shelf>>,
    chunks: u64,
) -> Result<(u64, u64), String> {
    let words = Arc::new(Words::new());
    let started = Instant::now();
    let mut objects = 0u64;
    loop {
        let documents = settled_documents(api).await?;
        if documents >= chunks {
            eprintln!(
                "  seeded {objects} objects, {documents} chunks indexed, in {:.0} s",
                started.elapsed().as_secs_f64()
            );
            return Ok((documents, objects));
        }
        // About a hundred chunks an object; a little short is topped up by the next round.
        let wanted = (chunks - documents).div_ceil(100).max(1);
        let outcomes = futures::stream::iter(objects..objects + wanted)
            .map(|n| {
                let (api, words, shelves) = (api.clone(), words.clone(), shelves.clone());
                let admin = admin.to_owned();
                async move {
                    let shelf = &shelves[n as usize % shelves.len()];
                    let bytes = words.text(n).into_bytes();
                    let initiated = api
                        .post(
                            &format!("/v1/datasets/{}/objects/upload", shelf.dataset),
                            Some(&shelf.token),
                            json!({"filename": format!("notes-{n}.txt"), "content_type": "text/plain", "size_bytes": bytes.len()}),
                        )
                        .await?;
                    let object = initiated["object_id"].as_str().unwrap_or_default().to_owned();
                    let url = initiated["upload_url"].as_str().unwrap_or_default();
                    api.put_url(url, bytes).await?;
                    api.post(&format!("/v1/objects/{object}/confirm"), Some(&shelf.token), json!({}))
                        .await?;
                    api.post(
                        &format!("/v1/admin/review/objects/{}/{object}/approve", shelf.tenant),
                        Some(&admin),
                        json!({}),
                    )
                    .await
                    .map(drop)
                }
            })
            .buffer_unordered(SEED_CLIENTS)
            .collect::<Vec<_>>()
            .await;
        outcomes.into_iter().collect::<Result<Vec<_>, _>>()?;
        objects += wanted;
    }
}

/// The value of the first `/metrics` line that starts with `name`.
fn gauge(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
}

/// Waits until the embedding worker has embedded every passage of the index (from `/metrics`),
/// at most `limit`; the passages embedded and the seconds waited.
pub async fn embedded(api: &Api, limit: Duration) -> Result<(u64, f64), String> {
    let started = Instant::now();
    let mut reported = Instant::now();
    loop {
        let text = api.text("/metrics").await?;
        let gauge = |name: &str| gauge(&text, name);
        let pending = gauge("ipto_search_dense_pending_passages ")
            .ok_or("/metrics has no ipto_search_dense_pending_passages")?;
        let done = gauge("ipto_search_dense_passages ").unwrap_or(0);
        if pending == 0 {
            return Ok((done, started.elapsed().as_secs_f64()));
        }
        if started.elapsed() > limit {
            return Err(format!(
                "{pending} passages still not embedded after {} s",
                limit.as_secs()
            ));
        }
        if reported.elapsed() > Duration::from_secs(60) {
            eprintln!("  embedding: {done} passages embedded, {pending} waiting");
            reported = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The index's document count once the search index has caught up with the log (from
/// `/metrics`).
async fn settled_documents(api: &Api) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let text = api.text("/metrics").await?;
        let gauge = |name: &str| gauge(&text, name);
        let documents = gauge("ipto_search_index_documents")
            .ok_or("/metrics has no ipto_search_index_documents")?;
        if gauge("ipto_projection_lag_events{projection=\"search\"}") == Some(0) {
            return Ok(documents);
        }
        if Instant::now() > deadline {
            return Err("the search index did not catch up in 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_distinct_and_texts_are_long_and_stable() {
        let words: std::collections::HashSet<String> = (0..VOCABULARY).map(word).collect();
        assert_eq!(words.len(), VOCABULARY);
        let corpus = Words::new();
        let text = corpus.text(7);
        assert!(text.len() >= OBJECT_CHARS);
        assert_eq!(text, corpus.text(7));
        assert_ne!(text, corpus.text(8));
    }
}
