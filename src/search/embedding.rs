//! The dense leg's worker: embeds the passages of approved objects after the indexer has made
//! them searchable lexically, off the request path. It takes the oldest waiting objects, embeds
//! their passages in batches on every core, then stages each object's chunks again with the
//! vectors and commits them together with the index's cursor, holding the index's batch lock so
//! that no indexer batch is half in that commit.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::embed::{EmbedError, Embedder};
use super::index::{IndexError, PendingObject, SearchIndex};

/// Passages embedded per commit.
const BATCH_PASSAGES: u64 = 256;
/// Passages per call of an embedder that runs on one thread per call.
const CALL_PASSAGES: usize = 32;
/// Passages per call of an embedder that spreads each call over the cores itself: its matrix
/// products grow with the batch.
const PARALLEL_CALL_PASSAGES: usize = 512;

/// Why a batch could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// What the worker has done, for `/health` and `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct EmbeddingStatus {
    /// Passages per second over the last batch.
    pub passages_per_second: f64,
    /// Passages embedded since start.
    pub embedded_since_start: u64,
    /// Objects set aside since start because their passages could not be embedded (tried
    /// again at the next start).
    pub set_aside: u64,
    pub error: Option<String>,
}

/// Embeds waiting passages of one index.
#[derive(Clone)]
pub struct EmbeddingWorker {
    index: Arc<SearchIndex>,
    embedder: Arc<dyn Embedder>,
    status: Arc<Mutex<EmbeddingStatus>>,
}

impl EmbeddingWorker {
    pub fn new(index: Arc<SearchIndex>, embedder: Arc<dyn Embedder>) -> Self {
        Self {
            index,
            embedder,
            status: Arc::default(),
        }
    }

    /// The embedder, for queries.
    pub fn embedder(&self) -> &dyn Embedder {
        &*self.embedder
    }

    pub fn status(&self) -> EmbeddingStatus {
        self.status.lock().expect("lock poisoned").clone()
    }

    /// Embeds until `shutdown` turns true; idles until the indexer commits new objects.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let pause = match self.step().await {
                Ok(0) => Duration::from_secs(1),
                Ok(_) => {
                    failures = 0;
                    continue;
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(attempt = failures, %error, "embedding batch failed");
                    self.status.lock().expect("lock poisoned").error = Some(error.to_string());
                    Duration::from_millis(500 * u64::from(failures.min(60)))
                }
            };
            tokio::select! {
                _ = self.index.added.notified() => {}
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Embeds and commits one batch; the number of passages embedded.
    pub async fn step(&self) -> Result<u64, EmbeddingError> {
        let index = self.index.clone();
        let batch = blocking(move || index.pending(BATCH_PASSAGES)).await??;
        if batch.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        let embedder = self.embedder.clone();
        let (batch, vectors) = blocking(move || {
            let vectors = embed_objects(&*embedder, &batch);
            (batch, vectors)
        })
        .await?;
        let (batch, vectors) = match vectors {
            Ok(vectors) => (batch, vectors),
            Err(error) if batch.len() > 1 => self.one_by_one(batch, error).await?,
            Err(error) => return Err(error.into()),
        };
        let passages: u64 = vectors
            .iter()
            .flat_map(|chunks| chunks.iter().map(|c| c.len() as u64))
            .sum();
        let _batch = self.index.batch.lock().await;
        let index = self.index.clone();
        blocking(move || -> Result<(), IndexError> {
            let mut staged = false;
            for (object, vectors) in batch.iter().zip(&vectors) {
                staged |= index.stage_vectors(object, vectors)?;
            }
            if staged {
                index.commit(index.cursor())?;
            }
            Ok(())
        })
        .await??;
        let seconds = started.elapsed().as_secs_f64().max(1e-6);
        let mut status = self.status.lock().expect("lock poisoned");
        status.passages_per_second = passages as f64 / seconds;
        status.embedded_since_start += passages;
        status.error = None;
        Ok(passages.max(1))
    }
}

impl EmbeddingWorker {
    /// After a failed batch, each object alone: those that fail while others succeed are set
    /// aside until the next start (logged and counted), so one text the embedder cannot take
    /// does not stop the rest. If every object fails, the embedder is at fault: the batch's
    /// error is returned and the batch retried later.
    async fn one_by_one(
        &self,
        batch: Vec<PendingObject>,
        error: EmbedError,
    ) -> Result<(Vec<PendingObject>, Vec<Embeddings>), EmbeddingError> {
        let embedder = self.embedder.clone();
        let outcomes = blocking(move || {
            batch
                .into_iter()
                .map(|object| {
                    let vectors = embed_objects(&*embedder, std::slice::from_ref(&object));
                    (object, vectors.map(|mut v| v.remove(0)))
                })
                .collect::<Vec<_>>()
        })
        .await?;
        if outcomes.iter().all(|(_, v)| v.is_err()) {
            return Err(error.into());
        }
        let mut kept = (Vec::new(), Vec::new());
        for (object, vectors) in outcomes {
            match vectors {
                Ok(vectors) => {
                    kept.0.push(object);
                    kept.1.push(vectors);
                }
                Err(error) => {
                    tracing::warn!(object_id = %object.object_id, %error, "object set aside: its passages could not be embedded");
                    self.index.set_aside(&object.object_id);
                    self.status.lock().expect("lock poisoned").set_aside += 1;
                }
            }
        }
        Ok(kept)
    }
}

/// One object's vectors: per chunk, per passage.
type Embeddings = Vec<Vec<Vec<f32>>>;

/// Every passage of every object, embedded on as many threads as there are cores: per object,
/// per chunk, the vectors in passage order. A passage after the object's heading is embedded
/// with the heading before it ([`heading`]).
fn embed_objects(
    embedder: &dyn Embedder,
    objects: &[PendingObject],
) -> Result<Vec<Embeddings>, EmbedError> {
    let mut owned: Vec<String> = Vec::new();
    for object in objects {
        let heading = heading(object);
        for chunk in &object.chunks {
            for (start, _, text) in chunk.passages() {
                owned.push(match &heading {
                    Some(h) if chunk.start + u64::from(start) > 0 => passage_text(h, text),
                    _ => text.to_owned(),
                });
            }
        }
    }
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    let flat = embed_parallel(embedder, &texts)?;
    let mut flat = flat.into_iter();
    Ok(objects
        .iter()
        .map(|o| {
            o.chunks
                .iter()
                .map(|c| flat.by_ref().take(c.passages().len()).collect())
                .collect()
        })
        .collect())
}

/// One vector per text, in order: in calls of [`PARALLEL_CALL_PASSAGES`] to an embedder that
/// spreads them over the cores itself, else on as many threads as there are cores (at most 8),
/// [`CALL_PASSAGES`] texts per call.
pub fn embed_parallel(
    embedder: &dyn Embedder,
    texts: &[&str],
) -> Result<Vec<Vec<f32>>, EmbedError> {
    if embedder.parallel() {
        let mut flat = Vec::with_capacity(texts.len());
        for call in texts.chunks(PARALLEL_CALL_PASSAGES) {
            flat.extend(embedder.embed(call)?);
        }
        return checked(flat, texts.len());
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let share = texts.len().div_ceil(threads).max(1);
    // An embedder that calls a service runs its requests on the server's runtime.
    let runtime = tokio::runtime::Handle::try_current().ok();
    let flat: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let parts: Vec<_> = texts
            .chunks(share)
            .map(|part| {
                let runtime = runtime.clone();
                scope.spawn(move || -> Result<Vec<Vec<f32>>, EmbedError> {
                    let _entered = runtime.as_ref().map(|r| r.enter());
                    let mut out = Vec::with_capacity(part.len());
                    for call in part.chunks(CALL_PASSAGES) {
                        out.extend(embedder.embed(call)?);
                    }
                    Ok(out)
                })
            })
            .collect();
        let mut flat = Vec::with_capacity(texts.len());
        for part in parts {
            let part = part
                .join()
                .map_err(|_| EmbedError::Failed("an embedding thread panicked".into()))??;
            flat.extend(part);
        }
        Ok::<_, EmbedError>(flat)
    })?;
    checked(flat, texts.len())
}

fn checked(flat: Vec<Vec<f32>>, expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
    if flat.len() != expected {
        return Err(EmbedError::Failed("fewer vectors than passages".into()));
    }
    Ok(flat)
}

/// An object's heading: its first paragraph (up to the first blank line; its lines joined), or
/// else its first line, if that is short (at most 200 characters) and not the whole text.
/// Measured on CISI: putting the title before every passage lifts the dense leg's nDCG@10 by 0.02
/// to 0.03 at every passage size tried.
pub fn heading(object: &PendingObject) -> Option<String> {
    let first = object.chunks.first().filter(|c| c.start == 0)?;
    let whole = first.body.trim();
    let short = |text: &str| {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        (!text.is_empty() && text.chars().count() <= HEADING_CHARS).then_some(text)
    };
    let paragraph = whole.split("\n\n").next().filter(|p| p.len() < whole.len());
    let line = whole.lines().next().filter(|l| l.len() < whole.len());
    paragraph.and_then(short).or_else(|| line.and_then(short))
}

/// Longest first line taken as a heading.
const HEADING_CHARS: usize = 200;

/// A passage as embedded after its object's heading.
fn passage_text(heading: &str, passage: &str) -> String {
    if heading.ends_with(['.', '!', '?', ':']) {
        format!("{heading} {passage}")
    } else {
        format!("{heading}. {passage}")
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, IndexError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| IndexError::Io(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::index::StoredChunk;

    fn object(text: &str) -> PendingObject {
        PendingObject {
            object_id: "obj_1".into(),
            chunks: vec![StoredChunk {
                dataset_id: "dset_1".into(),
                filename: "a.txt".into(),
                meta: Vec::new(),
                body: text.into(),
                start: 0,
            }],
        }
    }

    #[test]
    fn a_heading_is_the_first_paragraph_or_line_when_short() {
        let title = object("Port congestion\nin Rotterdam\n\nVessels wait at anchor.");
        assert_eq!(
            heading(&title).as_deref(),
            Some("Port congestion in Rotterdam")
        );
        let line = object("Port congestion\nVessels wait at anchor.");
        assert_eq!(heading(&line).as_deref(), Some("Port congestion"));
        assert_eq!(heading(&object("One line only.")), None);
        let long = format!("{}\n\nbody", "word ".repeat(60));
        assert_eq!(heading(&object(&long)), None);
        assert_eq!(passage_text("Title", "body"), "Title. body");
        assert_eq!(passage_text("Why?", "body"), "Why? body");
    }
}
