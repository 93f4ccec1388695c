//! The search index's projector. Each instance keeps its own index on local disk, so the indexer
//! does not use the shared checkpoint table: it follows the log from the cursor stored in the
//! index's commit payload, applies a batch (approved objects in, deleted objects out), commits
//! index and cursor together, and reports its progress to the engine so that read-your-writes
//! waits for it like for any projection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aggregates::object::ObjectEvent;
use aggregates::Object;
use cqrs_es::Aggregate;
use projections::{log, Db, LogPosition, ProjectorEngine, Reads, StoredEvent};
use tokio::sync::watch;

use super::embedding::EmbeddingWorker;
use super::extract::{self, PdfExtractor, PdfFailure};
use super::index::{IndexError, IndexedObject, SearchIndex};
use crate::blobs::{BlobError, Blobs};

/// The index's name in `/health`, `ipto projections` and the engine's progress.
pub const NAME: &str = "search";
/// Events per committed batch while following the log.
const LIVE_BATCH: i64 = 500;
/// Events per committed batch during a rebuild.
const REBUILD_BATCH: i64 = 5000;
/// How often the indexer looks for a rebuild request.
const REQUEST_POLL: Duration = Duration::from_secs(1);
/// Attempts at a batch before the index reports itself failed (it keeps retrying).
const ATTEMPTS_BEFORE_FAILED: u32 = 3;

/// Why a batch could not be indexed.
#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("undecodable event: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("blob store: {0}")]
    Blobs(#[from] BlobError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("no upload initiation for object {0}")]
    Inconsistent(String),
}

/// The index's state, for `/health`.
#[derive(Clone, Debug, Default)]
pub struct IndexStatus {
    /// Highest global position applied (on PostgreSQL the cursor's own position may be lower).
    pub position: i64,
    pub error: Option<String>,
    /// PDFs whose extraction failed since this instance started.
    pub pdf_failures: PdfFailures,
    /// The rebuild under way, if any.
    pub rebuilding: Option<LocalRebuild>,
}

/// PDFs indexed without their text because extraction ran past its budget or crashed, since this
/// instance started (a restart does not read them again: their objects stay indexed as they are).
#[derive(Clone, Debug, Default)]
pub struct PdfFailures {
    /// Failures by reason (`timeout`, `memory`, `crashed`, `unavailable`); which objects failed
    /// is logged, not kept (the health report is public).
    pub by_reason: std::collections::BTreeMap<&'static str, u64>,
}

impl PdfFailures {
    /// All failures.
    pub fn total(&self) -> u64 {
        self.by_reason.values().sum()
    }

    fn record(&mut self, failure: &PdfFailure) {
        *self.by_reason.entry(failure.reason()).or_default() += 1;
    }
}

/// Asks every instance to rebuild its search index (each checks about once a second); returns
/// the request's number.
pub async fn request_rebuild(db: &Db) -> Result<i64, sqlx::Error> {
    let mut attempts = 0;
    loop {
        let inserted = sqlx::query(
            "INSERT INTO search_rebuild_requests (id, requested_at) \
             SELECT COALESCE(MAX(id), 0) + 1, $1 FROM search_rebuild_requests",
        )
        .bind(aggregates::timestamp::format(chrono::Utc::now()))
        .execute(&db.pool)
        .await;
        match inserted {
            Ok(_) => return latest_request(db).await,
            // Two requests at once took the same number: the later one takes the next.
            Err(_) if attempts < 3 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The newest rebuild request's number (0: none).
pub async fn latest_request(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM search_rebuild_requests")
        .fetch_one(&db.pool)
        .await
}

/// A rebuild of this instance's index under way.
#[derive(Clone, Copy, Debug)]
pub struct LocalRebuild {
    /// Log events replayed, and to replay.
    pub done: u64,
    pub total: u64,
    /// Seconds since it began.
    pub seconds: f64,
}

/// Keeps one [`SearchIndex`] up to date with the log.
#[derive(Clone)]
pub struct Indexer {
    pub index: Arc<SearchIndex>,
    db: Db,
    blobs: Blobs,
    engine: ProjectorEngine,
    pdf: PdfExtractor,
    error: Arc<Mutex<Option<String>>>,
    highest: Arc<std::sync::atomic::AtomicI64>,
    pdf_failures: Arc<Mutex<PdfFailures>>,
    /// The rebuild under way, if any.
    rebuilding: Arc<Mutex<Option<LocalRebuild>>>,
    /// The dense leg, if an embedder is configured.
    pub dense: Option<EmbeddingWorker>,
}

impl Indexer {
    /// An indexer of `index` that reads PDFs with `pdf`; registers it with the engine so that
    /// waits include it.
    pub fn new(
        index: Arc<SearchIndex>,
        db: Db,
        blobs: Blobs,
        engine: ProjectorEngine,
        pdf: PdfExtractor,
    ) -> Self {
        engine.register_local(NAME, Reads::Aggregates(&[Object::TYPE]));
        engine.report_local(NAME, index.cursor(), false);
        Self {
            index,
            db,
            blobs,
            engine,
            pdf,
            error: Arc::default(),
            highest: Arc::default(),
            pdf_failures: Arc::default(),
            rebuilding: Arc::default(),
            dense: None,
        }
    }

    /// With the dense leg's worker (which embeds what this indexer adds).
    pub fn with_dense(mut self, dense: Option<EmbeddingWorker>) -> Self {
        self.dense = dense;
        self
    }

    /// Where the index is and whether its last batch failed.
    pub fn status(&self) -> IndexStatus {
        IndexStatus {
            position: self
                .highest
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(self.index.cursor().position),
            error: self.error.lock().expect("lock poisoned").clone(),
            pdf_failures: self.pdf_failures.lock().expect("lock poisoned").clone(),
            rebuilding: *self.rebuilding.lock().expect("lock poisoned"),
        }
    }

    /// Follows the log until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut wake = self.engine.wake_ups();
        let mut failures = 0u32;
        let mut last_check = std::time::Instant::now() - REQUEST_POLL;
        loop {
            if *shutdown.borrow() {
                // Store the cursor of batches that changed nothing, to spare the next start.
                let _batch = self.index.batch.lock().await;
                let (index, cursor) = (self.index.clone(), self.index.cursor());
                let _ = tokio::task::spawn_blocking(move || index.commit(cursor)).await;
                return;
            }
            if last_check.elapsed() >= REQUEST_POLL {
                last_check = std::time::Instant::now();
                if let Err(error) = self.rebuild_if_requested().await {
                    tracing::warn!(index = NAME, %error, "search index rebuild failed; the live index serves on, and it is tried again in a minute");
                    last_check += Duration::from_secs(60);
                }
            }
            // Seen before reading: a commit after the read wakes the indexer again.
            wake.borrow_and_update();
            let pause = match self.step(LIVE_BATCH).await {
                Ok(n) if n as i64 >= LIVE_BATCH => {
                    failures = 0;
                    continue;
                }
                Ok(_) => {
                    failures = 0;
                    Duration::from_secs(1)
                }
                Err(error) => {
                    failures += 1;
                    let _ = self.index.rollback();
                    tracing::warn!(index = NAME, attempt = failures, %error, "search index batch failed");
                    if failures >= ATTEMPTS_BEFORE_FAILED {
                        *self.error.lock().expect("lock poisoned") = Some(error.to_string());
                        self.engine.report_local(NAME, self.index.cursor(), true);
                    }
                    Duration::from_millis(200 * u64::from(failures.min(25)))
                }
            };
            tokio::select! {
                _ = wake.changed() => {}
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Indexes at most one batch and commits it. Returns the number of events read.
    pub async fn step(&self, batch: i64) -> Result<usize, IndexerError> {
        let _batch = self.index.batch.lock().await;
        let cursor = self.index.cursor();
        let events = log::read_after(&self.db, cursor, batch).await?;
        let Some(last) = events.last().map(|e| e.cursor) else {
            self.report_ok(cursor);
            return Ok(0);
        };
        let mut changed = false;
        for event in &events {
            changed |= self.apply(event).await?;
        }
        if changed {
            let index = self.index.clone();
            tokio::task::spawn_blocking(move || index.commit(last))
                .await
                .map_err(|e| IndexError::Io(std::io::Error::other(e)))??;
        } else {
            // Nothing to write: the stored cursor may lag behind events that change nothing
            // here, which a restart then reads again at no cost.
            self.index.advance(last);
        }
        let highest = events.iter().map(|e| e.cursor.position).max().unwrap_or(0);
        self.highest
            .fetch_max(highest, std::sync::atomic::Ordering::Relaxed);
        self.report_ok(last);
        Ok(events.len())
    }

    fn report_ok(&self, cursor: LogPosition) {
        *self.error.lock().expect("lock poisoned") = None;
        self.engine.report_local(NAME, cursor, false);
    }

    /// Stages what the event changes in the index; whether it changed anything.
    async fn apply(&self, event: &StoredEvent) -> Result<bool, IndexerError> {
        if event.aggregate_type != Object::TYPE {
            return Ok(false);
        }
        match event.decode::<ObjectEvent>()? {
            ObjectEvent::ObjectApproved { .. } => {
                let object = self.describe(&event.aggregate_id).await?;
                let index = self.index.clone();
                tokio::task::spawn_blocking(move || index.stage_object(&object))
                    .await
                    .map_err(|e| IndexError::Io(std::io::Error::other(e)))??;
                Ok(true)
            }
            ObjectEvent::ObjectDeleted { .. } => {
                self.index.stage_removal(&event.aggregate_id);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// What is indexed of an approved object: its declared fields, read from its own first event
    /// (they never change), and the text of its blob.
    async fn describe(&self, object_id: &str) -> Result<IndexedObject, IndexerError> {
        let history = log::events_of(&self.db, Object::TYPE, object_id).await?;
        let descriptor = history
            .iter()
            .find_map(|e| match e.decode::<ObjectEvent>() {
                Ok(ObjectEvent::ObjectUploadInitiated { descriptor, .. }) => Some(descriptor),
                _ => None,
            })
            .ok_or_else(|| IndexerError::Inconsistent(object_id.to_owned()))?;
        let sha256 = history
            .iter()
            .find_map(|e| match e.decode::<ObjectEvent>() {
                Ok(ObjectEvent::ObjectUploadConfirmed { sha256, .. }) => Some(sha256),
                _ => None,
            })
            .ok_or_else(|| IndexerError::Inconsistent(object_id.to_owned()))?;
        let extracted = extract::extract(
            &self.blobs,
            object_id,
            sha256.as_str(),
            descriptor.content_type.as_str(),
            &self.pdf,
        )
        .await?;
        if let Some(failure) = &extracted.failure {
            // Indexed by filename and metadata only; the batch goes on.
            tracing::warn!(index = NAME, object_id, %failure, "PDF indexed without its text");
            self.pdf_failures
                .lock()
                .expect("lock poisoned")
                .record(failure);
        }
        let text = extracted.text;
        Ok(IndexedObject {
            object_id: object_id.to_owned(),
            dataset_id: descriptor.dataset_id.to_string(),
            filename: descriptor.filename.as_str().to_owned(),
            metadata: descriptor
                .metadata
                .entries()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            text,
        })
    }

    /// Rebuilds the index from the whole log behind the live one: the replay is staged in the
    /// index's writer (Tantivy writes its segments beside the committed ones) while searches keep
    /// reading the last commit, and one commit switches every search to the rebuilt index with
    /// the cursor it reached (Tantivy replaces its `meta.json` atomically). Live batches wait
    /// meanwhile, and then go on from there. A failure drops what was staged and leaves the live
    /// index as it was. `request` is the rebuild request it answers (stored with the commit).
    /// `progress(done, total)` is called after each batch. Returns the number of events replayed.
    pub async fn rebuild(
        &self,
        request: i64,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, IndexerError> {
        let _batch = self.index.batch.lock().await;
        let total = log::count(&self.db).await? as u64;
        let started = std::time::Instant::now();
        let mut done = 0u64;
        let show = |done: u64, total: u64| {
            *self.rebuilding.lock().expect("lock poisoned") = Some(LocalRebuild {
                done,
                total,
                seconds: started.elapsed().as_secs_f64(),
            });
        };
        show(0, total);
        progress(0, total);
        let replayed = async {
            self.index.stage_clear()?;
            let mut cursor = LogPosition::default();
            loop {
                let events = log::read_after(&self.db, cursor, REBUILD_BATCH).await?;
                let Some(last) = events.last().map(|e| e.cursor) else {
                    return Ok::<_, IndexerError>(cursor);
                };
                for event in &events {
                    self.apply(event).await?;
                }
                cursor = last;
                done += events.len() as u64;
                show(done, total.max(done));
                progress(done, total.max(done));
            }
        }
        .await;
        let outcome = match replayed {
            Ok(cursor) => {
                self.index.set_rebuilt(request.max(self.index.rebuilt()));
                let index = self.index.clone();
                match tokio::task::spawn_blocking(move || index.commit(cursor)).await {
                    Ok(Ok(())) => {
                        self.report_ok(cursor);
                        Ok(done)
                    }
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => Err(IndexError::Io(std::io::Error::other(e)).into()),
                }
            }
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            let _ = self.index.rollback();
        }
        *self.rebuilding.lock().expect("lock poisoned") = None;
        outcome
    }

    /// Rebuilds the index if a rebuild was requested since it was last rebuilt (see
    /// [`request_rebuild`]); an index that has read nothing yet answers every request as it is.
    async fn rebuild_if_requested(&self) -> Result<(), IndexerError> {
        let latest = latest_request(&self.db).await?;
        if latest <= self.index.rebuilt() {
            return Ok(());
        }
        if self.index.cursor() == LogPosition::default() {
            self.index.set_rebuilt(latest);
            return Ok(());
        }
        tracing::info!(
            index = NAME,
            request = latest,
            "rebuilding the search index behind the live one"
        );
        let count = self.rebuild(latest, |_, _| {}).await?;
        tracing::info!(
            index = NAME,
            events = count,
            "search index rebuilt and switched"
        );
        Ok(())
    }
}
