//! The tantivy index (BM25) over approved objects: one document per chunk of extracted text, each
//! carrying its object's filename and metadata so that every field can match, and, once the dense
//! leg has embedded it, its passages' vectors. The cursor of the log position it reflects is stored
//! in the index's own commit payload, so index, vectors and cursor move together and survive
//! restarts.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Mutex, RwLock};

use projections::LogPosition;
use tantivy::collector::TopDocs;
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, EmptyQuery, Occur, PhraseQuery, Query, TermQuery,
    TermSetQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING, TEXT,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
};

use super::dense::{self, DenseStore, Near, ObjectVectors, PassageVector};
use super::extract;
use super::query::Node;

/// Bump when the schema or what is indexed changes: an index of another version is rebuilt.
const INDEX_VERSION: u32 = 2;
/// Indexing memory budget (tantivy's minimum per thread is 15 MB).
const WRITER_HEAP_BYTES: usize = 64 * 1024 * 1024;
/// At most this many terms stand for one trailing wildcard, per field.
const MAX_PREFIX_TERMS: usize = 1024;
/// At most this many terms in the whole of one query: every word, phrase word and wildcard
/// expansion, in each of the three fields it is matched in. One short prefix alone fits (three
/// fields of [`MAX_PREFIX_TERMS`]); two that both expand that far, or hundreds of them, do not.
pub const MAX_QUERY_TERMS: usize = 4096;
/// At most this many postings read by one query: the sum of its terms' document frequencies
/// (a phrase's words [`PHRASE_WEIGHT`] times, once per phrase they are in), plus every document
/// once per negation. An upper bound on the documents the query scans, known before it runs.
/// Measured (benches/search.rs, 2 cores, 115,000 chunks): about 10 ns a posting, so a query at
/// the limit takes some 30 ms; the bench's ordinary queries cost well under a quarter of it.
pub const MAX_QUERY_DOCUMENTS: u64 = 3_000_000;
/// A phrase's postings cost this many plain ones: their positions are read and compared too
/// (measured: an OR of phrases of the commonest words took six times as long as an OR of as
/// many words' postings).
const PHRASE_WEIGHT: u64 = 6;
/// Each level of nesting past the first adds 1 / NESTING_STEP to a posting's cost.
const NESTING_STEP: u64 = 16;
/// The file whose lock marks the index as open in a process.
const LOCK_FILE: &str = "ipto-index.lock";
/// Snippets are at most this many characters.
const SNIPPET_CHARS: usize = 200;

/// Why the index cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Another process holds the index's writer lock.
    #[error("search index {0} is in use by another process")]
    InUse(String),
    /// The query is over its [`Budget`]; refused before it runs (HTTP 422 on `query`).
    #[error(transparent)]
    TooBroad(#[from] TooBroad),
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index: {0}")]
    Io(#[from] std::io::Error),
}

/// Which part of its [`Budget`] a query exceeds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TooBroad {
    #[error("too broad: expands to more than {0} terms; use longer prefixes or fewer words")]
    Terms(usize),
    #[error(
        "too broad: would scan more than {0} documents; use rarer words or fewer alternatives"
    )]
    Documents(u64),
}

/// What one query may cost before it runs: the terms its tantivy query holds and the postings
/// they (and its negations) read. Both grow with the index, so both are checked against the
/// index the query is about to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub terms: usize,
    pub documents: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            terms: MAX_QUERY_TERMS,
            documents: MAX_QUERY_DOCUMENTS,
        }
    }
}

/// What a query being built has used of its budget.
struct Spend {
    budget: Budget,
    terms: usize,
    documents: u64,
    /// Operators (AND, OR, NOT) around the part being built.
    nesting: u64,
}

impl Spend {
    fn new(budget: Budget) -> Self {
        Self {
            budget,
            terms: 0,
            documents: 0,
            nesting: 0,
        }
    }

    /// Charges `terms` more terms reading `documents` more postings; an error once over. Postings
    /// under operators nested in operators cost more: each level of union or intersection handles
    /// them again (measured: 30 levels of alternating OR and AND took twice a flat list).
    fn charge(&mut self, terms: usize, documents: u64) -> Result<(), TooBroad> {
        let levels = self.nesting.saturating_sub(1);
        let documents = documents.saturating_mul(NESTING_STEP + levels) / NESTING_STEP;
        self.terms = self.terms.saturating_add(terms);
        self.documents = self.documents.saturating_add(documents);
        if self.terms > self.budget.terms {
            return Err(TooBroad::Terms(self.budget.terms));
        }
        if self.documents > self.budget.documents {
            return Err(TooBroad::Documents(self.budget.documents));
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Fields {
    object_id: Field,
    dataset_id: Field,
    filename: Field,
    meta: Field,
    body: Field,
    /// The body for questions: stemmed, without stop words and single characters.
    body_en: Field,
    start: Field,
    /// The chunk's passages and their vectors ([`dense::encode`]); absent until embedded.
    dense: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let fields = Fields {
        object_id: builder.add_text_field("object_id", STRING | STORED),
        dataset_id: builder.add_text_field("dataset_id", STRING | STORED),
        filename: builder.add_text_field("filename", TEXT | STORED),
        meta: builder.add_text_field("meta", TEXT | STORED),
        body: builder.add_text_field("body", TEXT | STORED),
        body_en: builder.add_text_field(
            "body_en",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(ENGLISH)
                    .set_index_option(IndexRecordOption::WithFreqs),
            ),
        ),
        start: builder.add_u64_field("start", STORED),
        dense: builder.add_bytes_field("dense", STORED),
    };
    (builder.build(), fields)
}

/// The analyzer of [`Fields::body_en`].
const ENGLISH: &str = "ipto_en";

/// Words of 1 to 40 characters, lowercased, English stop words (Lucene's list) and single letters
/// and digits left out, then stemmed (Snowball English). Measured on CISI: stemming and the stop
/// words lift BM25's nDCG@10 from 0.356 to 0.385, dropping single characters to 0.395.
fn english() -> TextAnalyzer {
    let mut stop: Vec<String> = [
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is",
        "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there",
        "these", "they", "this", "to", "was", "will", "with",
    ]
    .iter()
    .map(|w| (*w).to_owned())
    .collect();
    stop.extend(('a'..='z').chain('0'..='9').map(String::from));
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::remove(stop))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// How a query's words are matched: as written (the query language) or as a question's (stemmed,
/// in [`Fields::body_en`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    Exact,
    Natural,
}

/// What the index holds of one approved object.
#[derive(Clone, Debug)]
pub struct IndexedObject {
    pub object_id: String,
    pub dataset_id: String,
    pub filename: String,
    pub metadata: Vec<(String, String)>,
    /// The extracted text, if the content type has any.
    pub text: Option<String>,
}

/// One object found by a search, with its best-matching chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub object_id: String,
    pub dataset_id: String,
    pub filename: String,
    pub score: f32,
    pub snippet: String,
    /// `chars:{start}-{end}`, `filename` or `metadata`.
    pub locator: String,
}

/// The embedder whose vectors the index keeps: the [`dense::key_of`] its identity and the
/// passage rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseKey {
    pub key: u64,
}

impl DenseKey {
    /// The key of an embedder's vectors.
    pub fn of(embedder: &dyn super::embed::Embedder) -> Self {
        Self {
            key: dense::key_of(&format!("{}|{PASSAGES}", embedder.identity())),
        }
    }
}

/// How passages are cut and what is embedded of them: part of every vector's key, so a change
/// embeds everything again.
const PASSAGES: &str = "passages/2: 500 characters, sentence ends, heading before each";

/// An object whose passages wait for vectors: its committed chunks.
#[derive(Clone, Debug)]
pub struct PendingObject {
    pub object_id: String,
    pub chunks: Vec<StoredChunk>,
}

/// One chunk document as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChunk {
    pub dataset_id: String,
    pub filename: String,
    pub meta: Vec<String>,
    pub body: String,
    pub start: u64,
}

impl StoredChunk {
    /// The chunk's passages, relative to its start: (start, end, text).
    pub fn passages(&self) -> Vec<(u32, u32, &str)> {
        extract::passages(&self.body)
            .into_iter()
            .filter(|p| !p.text.trim().is_empty())
            .map(|p| (p.start as u32, p.end as u32, p.text))
            .collect()
    }
}

/// What a staged change does to the in-memory state once committed.
enum Change {
    Added {
        object_id: String,
        passages: u64,
    },
    Removed(String),
    Cleared,
    Embedded {
        object_id: String,
        vectors: ObjectVectors,
    },
}

/// The dense leg's committed state: the vectors, and the objects still to embed.
#[derive(Default)]
struct DenseState {
    store: DenseStore,
    /// Objects with text and no vectors yet, with their passage counts, oldest first.
    pending: BTreeMap<String, u64>,
    pending_passages: u64,
}

impl DenseState {
    fn apply(&mut self, change: Change) {
        match change {
            Change::Added {
                object_id,
                passages,
            } => {
                self.forget(&object_id);
                if passages > 0 {
                    self.pending_passages += passages;
                    self.pending.insert(object_id, passages);
                }
            }
            Change::Removed(object_id) => self.forget(&object_id),
            Change::Cleared => *self = Self::default(),
            Change::Embedded { object_id, vectors } => {
                if let Some(n) = self.pending.remove(&object_id) {
                    self.pending_passages -= n;
                }
                self.store.insert(object_id, vectors);
            }
        }
    }

    fn forget(&mut self, object_id: &str) {
        if let Some(n) = self.pending.remove(object_id) {
            self.pending_passages -= n;
        }
        self.store.remove(object_id);
    }
}

/// The dense leg's progress, for `/health` and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenseProgress {
    pub embedded_passages: u64,
    pub pending_passages: u64,
    pub pending_objects: u64,
    /// Memory the vectors take.
    pub vector_bytes: u64,
}

/// One chunk found by a query.
#[derive(Clone, Debug)]
pub struct ChunkHit {
    pub object_id: String,
    pub score: f32,
    /// Where the first highlighted word is, in characters from the chunk's start (0 if none).
    pub matched_at: u64,
    pub chunk: StoredChunk,
}

/// The index of this instance.
pub struct SearchIndex {
    /// Held while the index is open; a second process gets [`IndexError::InUse`].
    _lock: std::fs::File,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    analyzer: TextAnalyzer,
    /// [`english`], built once.
    english: TextAnalyzer,
    cursor: Mutex<LogPosition>,
    /// The last rebuild request the committed index reflects (stored with the cursor).
    rebuilt: std::sync::atomic::AtomicI64,
    /// Held from a batch's first staged change to its commit: the indexer's and the embedder's
    /// batches never mix.
    pub batch: tokio::sync::Mutex<()>,
    /// Notified when a commit adds objects to embed.
    pub added: tokio::sync::Notify,
    /// The embedder whose vectors count; `None` without a dense leg.
    embedder: Option<DenseKey>,
    staged: Mutex<Vec<Change>>,
    dense: RwLock<DenseState>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    version: u32,
    cursor: LogPosition,
    /// The last rebuild request (`search_rebuild_requests`) this index was rebuilt for.
    #[serde(default)]
    rebuilt: i64,
}

impl SearchIndex {
    /// Opens the index in `dir`, creating it (or recreating one of another version), and takes its
    /// writer lock.
    /// With `embedder`, vectors of that embedder are loaded and objects without them are pending.
    pub fn open(dir: &Path, embedder: Option<DenseKey>) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir)?;
        // Our own lock, taken before anything is read or wiped and never deleted: tantivy's
        // writer lock file would go with a wiped directory.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        if lock.try_lock().is_err() {
            return Err(IndexError::InUse(dir.display().to_string()));
        }
        let (schema, fields) = schema();
        let existing = if dir.join("meta.json").exists() {
            let index = Index::open_in_dir(dir)?;
            let version = stored_payload(&index).map_or(INDEX_VERSION, |p| p.version);
            match version {
                INDEX_VERSION if index.schema() == schema => Some(index),
                _ => {
                    tracing::info!(dir = %dir.display(), "search index of another version; rebuilding it");
                    None
                }
            }
        } else {
            None
        };
        let fresh = existing.is_none();
        let index = match existing {
            Some(index) => index,
            None => {
                for entry in std::fs::read_dir(dir)? {
                    let path = entry?.path();
                    if path.file_name() == Some(std::ffi::OsStr::new(LOCK_FILE)) {
                        continue;
                    }
                    if path.is_dir() {
                        std::fs::remove_dir_all(&path)?;
                    } else {
                        std::fs::remove_file(&path)?;
                    }
                }
                Index::create_in_dir(dir, schema)?
            }
        };
        let mut writer = index
            .writer_with_num_threads(1, WRITER_HEAP_BYTES)
            .map_err(|e| match e {
                tantivy::TantivyError::LockFailure(..) => {
                    IndexError::InUse(dir.display().to_string())
                }
                other => other.into(),
            })?;
        if fresh {
            // A new index records its version and the start of the log at once.
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&payload_text(LogPosition::default(), 0));
            prepared.commit()?;
        }
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        index.tokenizers().register(ENGLISH, english());
        let analyzer = index.tokenizer_for_field(fields.body)?;
        let (cursor, rebuilt) =
            stored_payload(&index).map_or((LogPosition::default(), 0), |p| (p.cursor, p.rebuilt));
        let opened = Self {
            _lock: lock,
            reader,
            writer: Mutex::new(writer),
            fields,
            analyzer,
            english: english(),
            cursor: Mutex::new(cursor),
            rebuilt: std::sync::atomic::AtomicI64::new(rebuilt),
            batch: tokio::sync::Mutex::new(()),
            added: tokio::sync::Notify::new(),
            embedder,
            staged: Mutex::default(),
            dense: RwLock::default(),
        };
        opened.load_dense()?;
        Ok(opened)
    }

    /// Reads every committed chunk: vectors of the configured embedder into memory, objects
    /// lacking them (or holding another embedder's) into the pending list.
    fn load_dense(&self) -> Result<(), IndexError> {
        let Some(embedder) = self.embedder else {
            return Ok(());
        };
        let searcher = self.reader.searcher();
        let mut objects: BTreeMap<String, (String, bool, u64, Vec<PassageVector>)> =
            BTreeMap::new();
        for segment in searcher.segment_readers() {
            let store = segment.get_store_reader(64)?;
            for doc in store.iter::<TantivyDocument>(segment.alive_bitset()) {
                let doc = doc?;
                let chunk = self.stored_chunk(&doc);
                let object_id = text_of(&doc, self.fields.object_id).to_owned();
                let entry = objects
                    .entry(object_id)
                    .or_insert_with(|| (chunk.dataset_id.clone(), true, 0, Vec::new()));
                let passages = chunk.passages();
                entry.2 += passages.len() as u64;
                if passages.is_empty() {
                    continue;
                }
                let decoded = doc
                    .get_first(self.fields.dense)
                    .and_then(|v| v.as_bytes())
                    .and_then(|b| dense::decode(b, embedder.key));
                match decoded {
                    Some(vectors) => {
                        entry
                            .3
                            .extend(vectors.into_iter().map(|((s, e), v)| PassageVector {
                                chunk_start: chunk.start,
                                start: chunk.start + u64::from(s),
                                end: chunk.start + u64::from(e),
                                vector: dense::Quantized::of(&v),
                            }))
                    }
                    None => entry.1 = false,
                }
            }
        }
        let mut state = self.dense.write().expect("lock poisoned");
        for (object_id, (dataset_id, complete, passages, vectors)) in objects {
            if complete {
                if !vectors.is_empty() {
                    state.apply(Change::Embedded {
                        object_id,
                        vectors: ObjectVectors {
                            dataset_id: dataset_id.into(),
                            passages: vectors,
                        },
                    });
                }
            } else {
                state.apply(Change::Added {
                    object_id,
                    passages,
                });
            }
        }
        Ok(())
    }

    fn stored_chunk(&self, doc: &TantivyDocument) -> StoredChunk {
        StoredChunk {
            dataset_id: text_of(doc, self.fields.dataset_id).to_owned(),
            filename: text_of(doc, self.fields.filename).to_owned(),
            meta: doc
                .get_all(self.fields.meta)
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            body: text_of(doc, self.fields.body).to_owned(),
            start: doc
                .get_first(self.fields.start)
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
        }
    }

    /// The committed chunks of an object, in order.
    pub fn chunks_of(&self, object_id: &str) -> Result<Vec<StoredChunk>, IndexError> {
        let searcher = self.reader.searcher();
        let query = TermQuery::new(
            Term::from_field_text(self.fields.object_id, object_id),
            IndexRecordOption::Basic,
        );
        let found = searcher.search(&query, &tantivy::collector::DocSetCollector)?;
        let mut chunks = Vec::with_capacity(found.len());
        for address in found {
            chunks.push(self.stored_chunk(&searcher.doc(address)?));
        }
        chunks.sort_by_key(|c| c.start);
        Ok(chunks)
    }

    /// Up to about `passages` passages' worth of objects waiting for vectors, oldest first
    /// (always at least one object if any waits).
    pub fn pending(&self, passages: u64) -> Result<Vec<PendingObject>, IndexError> {
        let ids: Vec<String> = {
            let state = self.dense.read().expect("lock poisoned");
            let mut total = 0;
            state
                .pending
                .iter()
                .take_while(|(_, n)| {
                    let take = total == 0 || total + **n <= passages;
                    total += **n;
                    take
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        ids.into_iter()
            .map(|object_id| {
                Ok(PendingObject {
                    chunks: self.chunks_of(&object_id)?,
                    object_id,
                })
            })
            .collect()
    }

    /// Stages an object's chunks again, each with its passages' vectors (`vectors[i]` are chunk
    /// i's, in [`StoredChunk::passages`] order). Skipped (false) if the object is no longer
    /// waiting or its chunks changed since they were read. Call with [`SearchIndex::batch`] held.
    pub fn stage_vectors(
        &self,
        object: &PendingObject,
        vectors: &[Vec<Vec<f32>>],
    ) -> Result<bool, IndexError> {
        let Some(embedder) = self.embedder else {
            return Ok(false);
        };
        let waiting = self
            .dense
            .read()
            .expect("lock poisoned")
            .pending
            .contains_key(&object.object_id);
        if !waiting || self.chunks_of(&object.object_id)? != object.chunks {
            return Ok(false);
        }
        let writer = self.writer.lock().expect("lock poisoned");
        writer.delete_term(Term::from_field_text(
            self.fields.object_id,
            &object.object_id,
        ));
        let mut all = Vec::new();
        for (chunk, vectors) in object.chunks.iter().zip(vectors) {
            let ranges: Vec<(u32, u32)> =
                chunk.passages().iter().map(|(s, e, _)| (*s, *e)).collect();
            let mut doc = self.chunk_doc(&object.object_id, chunk);
            if !ranges.is_empty() {
                doc.add_bytes(
                    self.fields.dense,
                    &dense::encode(embedder.key, &ranges, vectors),
                );
            }
            writer.add_document(doc)?;
            all.extend(ranges.iter().zip(vectors).map(|((s, e), v)| PassageVector {
                chunk_start: chunk.start,
                start: chunk.start + u64::from(*s),
                end: chunk.start + u64::from(*e),
                vector: dense::Quantized::of(v),
            }));
        }
        self.staged
            .lock()
            .expect("lock poisoned")
            .push(Change::Embedded {
                object_id: object.object_id.clone(),
                vectors: ObjectVectors {
                    dataset_id: object
                        .chunks
                        .first()
                        .map_or("", |c| c.dataset_id.as_str())
                        .into(),
                    passages: all,
                },
            });
        Ok(true)
    }

    fn chunk_doc(&self, object_id: &str, chunk: &StoredChunk) -> TantivyDocument {
        let mut doc = TantivyDocument::default();
        doc.add_text(self.fields.object_id, object_id);
        doc.add_text(self.fields.dataset_id, &chunk.dataset_id);
        doc.add_text(self.fields.filename, &chunk.filename);
        for meta in &chunk.meta {
            doc.add_text(self.fields.meta, meta);
        }
        doc.add_text(self.fields.body, &chunk.body);
        doc.add_text(self.fields.body_en, &chunk.body);
        doc.add_u64(self.fields.start, chunk.start);
        doc
    }

    /// Stops waiting for an object's vectors until the index is next opened (its passages could
    /// not be embedded); the lexical leg still serves it.
    pub fn set_aside(&self, object_id: &str) {
        let mut state = self.dense.write().expect("lock poisoned");
        if let Some(n) = state.pending.remove(object_id) {
            state.pending_passages -= n;
        }
    }

    /// The dense leg's progress.
    pub fn dense_progress(&self) -> DenseProgress {
        let state = self.dense.read().expect("lock poisoned");
        DenseProgress {
            embedded_passages: state.store.passage_count(),
            pending_passages: state.pending_passages,
            pending_objects: state.pending.len() as u64,
            vector_bytes: state.store.vector_bytes(),
        }
    }

    /// The `limit` passages (with `per_object`, objects by their best passage) of `datasets`
    /// nearest to the query vector.
    pub fn nearest(
        &self,
        query: &[f32],
        datasets: &[String],
        limit: usize,
        per_object: bool,
    ) -> Vec<Near> {
        self.dense
            .read()
            .expect("lock poisoned")
            .store
            .nearest(query, datasets, limit, per_object)
    }

    /// The committed text of an object's chunk that starts at `chunk_start`, with its filename.
    pub fn chunk_at(
        &self,
        object_id: &str,
        chunk_start: u64,
    ) -> Result<Option<StoredChunk>, IndexError> {
        Ok(self
            .chunks_of(object_id)?
            .into_iter()
            .find(|c| c.start == chunk_start))
    }

    /// The log position of the last committed batch, as stored in an index directory (without
    /// taking its lock; for `ipto projections status`). `None` if there is no index.
    pub fn stored_cursor(dir: &Path) -> Option<LogPosition> {
        if !dir.join("meta.json").exists() {
            return None;
        }
        let index = Index::open_in_dir(dir).ok()?;
        stored_payload(&index)
            .filter(|p| p.version == INDEX_VERSION)
            .map(|p| p.cursor)
    }

    /// The log position the committed index reflects.
    pub fn cursor(&self) -> LogPosition {
        *self.cursor.lock().expect("lock poisoned")
    }

    /// Stages an object's documents, replacing any it had.
    pub fn stage_object(&self, object: &IndexedObject) -> Result<(), IndexError> {
        let writer = self.writer.lock().expect("lock poisoned");
        writer.delete_term(Term::from_field_text(
            self.fields.object_id,
            &object.object_id,
        ));
        let text = object.text.as_deref().unwrap_or("");
        let mut pieces = extract::chunks(text);
        if pieces.is_empty() {
            pieces.push(extract::Chunk {
                start: 0,
                end: 0,
                text: "",
            });
        }
        let mut passages = 0;
        for piece in pieces {
            let chunk = StoredChunk {
                dataset_id: object.dataset_id.clone(),
                filename: object.filename.clone(),
                meta: object
                    .metadata
                    .iter()
                    .map(|(key, value)| format!("{key} {value}"))
                    .collect(),
                body: piece.text.to_owned(),
                start: piece.start as u64,
            };
            passages += chunk.passages().len() as u64;
            writer.add_document(self.chunk_doc(&object.object_id, &chunk))?;
        }
        if self.embedder.is_some() {
            self.staged
                .lock()
                .expect("lock poisoned")
                .push(Change::Added {
                    object_id: object.object_id.clone(),
                    passages,
                });
        }
        Ok(())
    }

    /// Stages the removal of an object's documents.
    pub fn stage_removal(&self, object_id: &str) {
        let writer = self.writer.lock().expect("lock poisoned");
        writer.delete_term(Term::from_field_text(self.fields.object_id, object_id));
        self.staged
            .lock()
            .expect("lock poisoned")
            .push(Change::Removed(object_id.to_owned()));
    }

    /// Stages the removal of every document (before a rebuild).
    pub fn stage_clear(&self) -> Result<(), IndexError> {
        let writer = self.writer.lock().expect("lock poisoned");
        writer.delete_all_documents()?;
        self.staged
            .lock()
            .expect("lock poisoned")
            .push(Change::Cleared);
        Ok(())
    }

    /// Commits what was staged together with the log position it reflects, and makes it visible
    /// to searches.
    pub fn commit(&self, cursor: LogPosition) -> Result<(), IndexError> {
        {
            let mut writer = self.writer.lock().expect("lock poisoned");
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&payload_text(cursor, self.rebuilt()));
            prepared.commit()?;
        }
        self.reader.reload()?;
        *self.cursor.lock().expect("lock poisoned") = cursor;
        let staged = std::mem::take(&mut *self.staged.lock().expect("lock poisoned"));
        let added = staged.iter().any(|c| matches!(c, Change::Added { .. }));
        let mut state = self.dense.write().expect("lock poisoned");
        for change in staged {
            state.apply(change);
        }
        if added {
            self.added.notify_one();
        }
        Ok(())
    }

    /// The last rebuild request the index reflects.
    pub fn rebuilt(&self) -> i64 {
        self.rebuilt.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Records that the index reflects rebuild request `request`; stored by the next commit.
    pub fn set_rebuilt(&self, request: i64) {
        self.rebuilt
            .store(request, std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves the cursor past events that changed nothing in the index, without writing.
    pub fn advance(&self, cursor: LogPosition) {
        *self.cursor.lock().expect("lock poisoned") = cursor;
    }

    /// Drops what was staged since the last commit (after a failed batch).
    pub fn rollback(&self) -> Result<(), IndexError> {
        let mut writer = self.writer.lock().expect("lock poisoned");
        writer.rollback()?;
        self.staged.lock().expect("lock poisoned").clear();
        Ok(())
    }

    /// Documents in the committed index (chunks, not objects).
    pub fn document_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The best `limit` objects of the given datasets for the query: score desc, then object id.
    /// A query over the default [`Budget`] is [`IndexError::TooBroad`].
    pub fn search(
        &self,
        node: &Node,
        datasets: &[String],
        limit: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        self.search_within(node, datasets, limit, Budget::default())
    }

    /// [`SearchIndex::search`] read as a question's words ([`Reading::Natural`]).
    pub fn search_natural(
        &self,
        node: &Node,
        datasets: &[String],
        limit: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        self.search_read(node, Reading::Natural, datasets, limit, Budget::default())
    }

    /// [`SearchIndex::search`] with another budget.
    pub fn search_within(
        &self,
        node: &Node,
        datasets: &[String],
        limit: usize,
        budget: Budget,
    ) -> Result<Vec<Hit>, IndexError> {
        self.search_read(node, Reading::Exact, datasets, limit, budget)
    }

    fn search_read(
        &self,
        node: &Node,
        reading: Reading,
        datasets: &[String],
        limit: usize,
        budget: Budget,
    ) -> Result<Vec<Hit>, IndexError> {
        let searcher = self.reader.searcher();
        // Checked first, whatever the datasets: whether a query is refused does not depend on
        // who asks.
        let user = self.query(&searcher, node, reading, &mut Spend::new(budget))?;
        if datasets.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let query = self.within(&*user, datasets);
        // Several chunks of one object may rank high: fetch more until `limit` objects are found
        // or the matches run out.
        let mut fetch = (limit * 8).max(64);
        let best = loop {
            let top = searcher.search(&query, &TopDocs::with_limit(fetch).order_by_score())?;
            let exhausted = top.len() < fetch;
            let mut best: Vec<(f32, String, DocAddress, TantivyDocument)> = Vec::new();
            let mut seen = HashMap::new();
            for (score, address) in top {
                let doc: TantivyDocument = searcher.doc(address)?;
                let object_id = text_of(&doc, self.fields.object_id).to_owned();
                if seen.insert(object_id.clone(), ()).is_none() {
                    best.push((score, object_id, address, doc));
                }
            }
            if best.len() >= limit || exhausted || fetch >= 1 << 16 {
                break best;
            }
            fetch *= 4;
        };
        let mut best = best;
        best.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        best.truncate(limit);
        let mut body_snippets = self.snippets(&searcher, &*user, reading)?;
        body_snippets.set_max_num_chars(SNIPPET_CHARS);
        let filename_snippets = SnippetGenerator::create(&searcher, &*user, self.fields.filename)?;
        let hits = best
            .into_iter()
            .map(|(score, object_id, _, doc)| {
                let body = text_of(&doc, self.fields.body);
                let filename = text_of(&doc, self.fields.filename).to_owned();
                let start = doc
                    .get_first(self.fields.start)
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0) as usize;
                let snippet = body_snippets.snippet(body);
                let (snippet, locator) = if !snippet.highlighted().is_empty() {
                    let range = snippet.fragment_range();
                    let from = start + body[..range.start].chars().count();
                    let to = from + snippet.fragment().chars().count();
                    (snippet.fragment().to_owned(), format!("chars:{from}-{to}"))
                } else if !filename_snippets
                    .snippet(&filename)
                    .highlighted()
                    .is_empty()
                {
                    (filename.clone(), "filename".to_owned())
                } else if body.is_empty() || !highlightable(node) {
                    // Nothing positive to point at (e.g. a pure negation): the start of the text.
                    let head: String = body.chars().take(SNIPPET_CHARS).collect();
                    if head.is_empty() {
                        (filename.clone(), "metadata".to_owned())
                    } else {
                        let n = head.chars().count();
                        (head, format!("chars:{start}-{}", start + n))
                    }
                } else {
                    (filename.clone(), "metadata".to_owned())
                };
                Hit {
                    object_id,
                    dataset_id: text_of(&doc, self.fields.dataset_id).to_owned(),
                    filename,
                    score,
                    snippet,
                    locator,
                }
            })
            .collect();
        Ok(hits)
    }

    /// The best `limit` chunks (several may be of one object) of the given datasets for the
    /// query, with where in each its best match starts: score desc, then object id and start.
    pub fn search_chunks(
        &self,
        node: &Node,
        reading: Reading,
        datasets: &[String],
        limit: usize,
    ) -> Result<Vec<ChunkHit>, IndexError> {
        let searcher = self.reader.searcher();
        let user = self.query(&searcher, node, reading, &mut Spend::new(Budget::default()))?;
        if datasets.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let query = self.within(&*user, datasets);
        let top = searcher.search(&query, &TopDocs::with_limit(limit).order_by_score())?;
        let mut snippets = self.snippets(&searcher, &*user, reading)?;
        snippets.set_max_num_chars(SNIPPET_CHARS);
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let chunk = self.stored_chunk(&doc);
            let snippet = snippets.snippet(&chunk.body);
            let at = if snippet.highlighted().is_empty() {
                0
            } else {
                chunk.body[..snippet.fragment_range().start].chars().count()
                    + snippet
                        .highlighted()
                        .first()
                        .map_or(0, |h| snippet.fragment()[..h.start].chars().count())
            };
            hits.push(ChunkHit {
                object_id: text_of(&doc, self.fields.object_id).to_owned(),
                score,
                matched_at: at as u64,
                chunk,
            });
        }
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.object_id.cmp(&b.object_id))
                .then_with(|| a.chunk.start.cmp(&b.chunk.start))
        });
        Ok(hits)
    }

    /// The tantivy query of a parsed query: each word, phrase or prefix matches the body, the
    /// filename or the metadata. Every term and negation is charged to `spend` as it is added,
    /// so a query over budget stops before it has expanded much.
    /// `user` restricted to the chunks of `datasets` (which add nothing to the score).
    fn within(&self, user: &dyn Query, datasets: &[String]) -> BooleanQuery {
        let filter = TermSetQuery::new(
            datasets
                .iter()
                .map(|d| Term::from_field_text(self.fields.dataset_id, d)),
        );
        BooleanQuery::new(vec![
            (Occur::Must, user.box_clone()),
            (
                Occur::Must,
                Box::new(ConstScoreQuery::new(Box::new(filter), 0.0)),
            ),
        ])
    }

    /// Highlights in the stored body what `query` matches: its body terms, or (for a question)
    /// its stemmed terms, found by stemming the body the same way.
    fn snippets(
        &self,
        searcher: &Searcher,
        query: &dyn Query,
        reading: Reading,
    ) -> Result<SnippetGenerator, IndexError> {
        if reading == Reading::Exact {
            return Ok(SnippetGenerator::create(searcher, query, self.fields.body)?);
        }
        let mut terms = BTreeMap::new();
        query.query_terms(&mut |term, _| {
            if term.field() == self.fields.body_en {
                if let Some(text) = term.value().as_str() {
                    terms.insert(text.to_owned(), 1.0);
                }
            }
        });
        Ok(SnippetGenerator::new(
            terms,
            self.english.clone(),
            self.fields.body,
            SNIPPET_CHARS,
        ))
    }

    fn query(
        &self,
        searcher: &Searcher,
        node: &Node,
        reading: Reading,
        spend: &mut Spend,
    ) -> Result<Box<dyn Query>, IndexError> {
        Ok(match node {
            Node::Term(word) | Node::Phrase(word) => {
                let mut per_field = Vec::new();
                for field in self.text_fields(reading) {
                    let terms = self.terms(field, word);
                    let mut documents = 0u64;
                    for term in &terms {
                        documents = documents.saturating_add(searcher.doc_freq(term)?);
                    }
                    if terms.len() > 1 {
                        documents = documents.saturating_mul(PHRASE_WEIGHT);
                    }
                    spend.charge(terms.len(), documents)?;
                    let query: Box<dyn Query> = match terms.len() {
                        0 => Box::new(EmptyQuery),
                        1 => Box::new(TermQuery::new(
                            terms[0].clone(),
                            IndexRecordOption::WithFreqs,
                        )),
                        _ => Box::new(PhraseQuery::new(terms)),
                    };
                    per_field.push((Occur::Should, query));
                }
                Box::new(BooleanQuery::new(per_field))
            }
            Node::Prefix(word) => {
                let mut per_field = Vec::new();
                for field in self.text_fields(reading) {
                    let mut words = self.words(field, word);
                    let Some(last) = words.pop() else {
                        continue;
                    };
                    let terms: Vec<Term> = words
                        .iter()
                        .map(|w| Term::from_field_text(field, w))
                        .collect();
                    let mut leading = 0u64;
                    for term in &terms {
                        leading = leading.saturating_add(searcher.doc_freq(term)?);
                    }
                    let expansions = expand(searcher, field, &last)?;
                    if expansions.is_empty() {
                        continue;
                    }
                    // Each expansion is a term of its own, or a phrase that reads the leading
                    // words again.
                    let weight = if terms.is_empty() { 1 } else { PHRASE_WEIGHT };
                    let documents = expansions.iter().fold(0u64, |sum, (_, df)| {
                        sum.saturating_add(df.saturating_add(leading).saturating_mul(weight))
                    });
                    spend.charge(expansions.len() * (terms.len() + 1), documents)?;
                    let query: Box<dyn Query> = if terms.is_empty() {
                        Box::new(BooleanQuery::new(
                            expansions
                                .into_iter()
                                .map(|(t, _)| {
                                    (
                                        Occur::Should,
                                        Box::new(TermQuery::new(t, IndexRecordOption::WithFreqs))
                                            as Box<dyn Query>,
                                    )
                                })
                                .collect(),
                        ))
                    } else {
                        // `e-mai*`: the leading words as a phrase, then any expansion of the last.
                        Box::new(BooleanQuery::new(
                            expansions
                                .into_iter()
                                .map(|(t, _)| {
                                    let mut phrase = terms.clone();
                                    phrase.push(t);
                                    (
                                        Occur::Should,
                                        Box::new(PhraseQuery::new(phrase)) as Box<dyn Query>,
                                    )
                                })
                                .collect(),
                        ))
                    };
                    per_field.push((Occur::Should, query));
                }
                Box::new(BooleanQuery::new(per_field))
            }
            Node::Not(inner) => {
                spend.nesting += 1;
                spend.charge(0, searcher.num_docs())?;
                let query = Box::new(BooleanQuery::new(vec![
                    (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                    (Occur::MustNot, self.query(searcher, inner, reading, spend)?),
                ]));
                spend.nesting -= 1;
                query
            }
            Node::And(all) => {
                spend.nesting += 1;
                let mut clauses = Vec::new();
                for child in spliced(all, |n| match n {
                    Node::And(inner) => Some(inner),
                    _ => None,
                }) {
                    match child {
                        Node::Not(inner) => clauses
                            .push((Occur::MustNot, self.query(searcher, inner, reading, spend)?)),
                        other => clauses
                            .push((Occur::Must, self.query(searcher, other, reading, spend)?)),
                    }
                }
                if !clauses.iter().any(|(occur, _)| *occur == Occur::Must) {
                    spend.charge(0, searcher.num_docs())?;
                    clauses.push((Occur::Must, Box::new(AllQuery)));
                }
                spend.nesting -= 1;
                Box::new(BooleanQuery::new(clauses))
            }
            Node::Or(any) => {
                spend.nesting += 1;
                let mut clauses = Vec::new();
                for child in spliced(any, |n| match n {
                    Node::Or(inner) => Some(inner),
                    _ => None,
                }) {
                    clauses.push((Occur::Should, self.query(searcher, child, reading, spend)?));
                }
                spend.nesting -= 1;
                Box::new(BooleanQuery::new(clauses))
            }
        })
    }

    fn text_fields(&self, reading: Reading) -> [Field; 3] {
        let body = match reading {
            Reading::Exact => self.fields.body,
            Reading::Natural => self.fields.body_en,
        };
        [body, self.fields.filename, self.fields.meta]
    }

    /// The words of `text` as the index stores them in `field` (split, lowercased; for
    /// [`Fields::body_en`] also stemmed, stop words out).
    fn words(&self, field: Field, text: &str) -> Vec<String> {
        let mut analyzer = if field == self.fields.body_en {
            self.english.clone()
        } else {
            self.analyzer.clone()
        };
        let mut stream = analyzer.token_stream(text);
        let mut words = Vec::new();
        while stream.advance() {
            words.push(stream.token().text.clone());
        }
        words
    }

    fn terms(&self, field: Field, text: &str) -> Vec<Term> {
        self.words(field, text)
            .iter()
            .map(|w| Term::from_field_text(field, w))
            .collect()
    }
}

/// `nodes` with the children of those of the same operator (`same` gives them) put in their
/// place, at any depth: `a OR (b OR (c OR d))` is `a OR b OR c OR d`. Scores are sums either
/// way, but nested unions pass each posting through every level: 30 levels of ORs cost 30 times
/// one flat list.
fn spliced(nodes: &[Node], same: fn(&Node) -> Option<&Vec<Node>>) -> Vec<&Node> {
    let mut out = Vec::new();
    for node in nodes {
        match same(node) {
            Some(inner) => out.extend(spliced(inner, same)),
            None => out.push(node),
        }
    }
    out
}

/// Whether the query has any positive word (something a snippet can highlight).
fn highlightable(node: &Node) -> bool {
    match node {
        Node::Term(_) | Node::Phrase(_) | Node::Prefix(_) => true,
        Node::Not(_) => false,
        Node::And(all) | Node::Or(all) => all.iter().any(highlightable),
    }
}

/// The indexed terms of `field` starting with `prefix`, the first [`MAX_PREFIX_TERMS`] in order,
/// each with its document frequency. A term among the first of all segments together is among
/// the first of each segment that holds it, so no segment is read past its own first ones.
fn expand(searcher: &Searcher, field: Field, prefix: &str) -> Result<Vec<(Term, u64)>, IndexError> {
    let mut found: BTreeMap<String, u64> = BTreeMap::new();
    for segment in searcher.segment_readers() {
        let inverted = segment.inverted_index(field)?;
        let mut stream = inverted
            .terms()
            .range()
            .ge(prefix.as_bytes())
            .into_stream()?;
        let mut taken = 0;
        while taken < MAX_PREFIX_TERMS && stream.advance() {
            let key = stream.key();
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            if let Ok(word) = std::str::from_utf8(key) {
                *found.entry(word.to_owned()).or_default() += u64::from(stream.value().doc_freq);
                taken += 1;
            }
        }
    }
    Ok(found
        .into_iter()
        .take(MAX_PREFIX_TERMS)
        .map(|(w, df)| (Term::from_field_text(field, &w), df))
        .collect())
}

fn payload_text(cursor: LogPosition, rebuilt: i64) -> String {
    serde_json::to_string(&Payload {
        version: INDEX_VERSION,
        cursor,
        rebuilt,
    })
    .expect("a payload serialises")
}

fn stored_payload(index: &Index) -> Option<Payload> {
    let metas = index.load_metas().ok()?;
    serde_json::from_str(metas.payload.as_deref()?).ok()
}

fn text_of(doc: &TantivyDocument, field: Field) -> &str {
    doc.get_first(field).and_then(|v| v.as_str()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(id: &str, text: &str) -> IndexedObject {
        IndexedObject {
            object_id: id.into(),
            dataset_id: "dset_a".into(),
            filename: format!("{id}.txt"),
            metadata: vec![("team".into(), "audit".into())],
            text: Some(text.into()),
        }
    }

    #[test]
    fn an_open_index_is_locked_and_keeps_its_cursor_across_reopening() {
        let dir = std::env::temp_dir().join(format!("ipto-index-{}", uuid::Uuid::new_v4()));
        let index = SearchIndex::open(&dir, None).unwrap();
        assert!(matches!(
            SearchIndex::open(&dir, None),
            Err(IndexError::InUse(_))
        ));
        index.stage_object(&object("obj_1", "alpha beta")).unwrap();
        let cursor = LogPosition { tx: 0, position: 7 };
        index.commit(cursor).unwrap();
        let hits = index
            .search(&Node::Term("beta".into()), &["dset_a".into()], 10)
            .unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].locator, "chars:0-10");
        drop(index);
        assert_eq!(SearchIndex::stored_cursor(&dir), Some(cursor));
        let reopened = SearchIndex::open(&dir, None).unwrap();
        assert_eq!(reopened.cursor(), cursor);
        assert_eq!(reopened.document_count(), 1);
        // Another dataset's documents are never returned.
        let other = reopened
            .search(&Node::Term("beta".into()), &["dset_b".into()], 10)
            .unwrap();
        assert!(other.is_empty());
        drop(reopened);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Words behind each of `prefixes` two-letter prefixes, `per_prefix` each, and the query of
    /// those prefixes.
    fn lexicon(prefixes: usize, per_prefix: usize) -> (String, Node) {
        let letter = |k: usize| char::from(b'a' + k as u8);
        let prefixes: Vec<String> = (0..prefixes)
            .map(|i| format!("{}{}", letter(i / 26), letter(i % 26)))
            .collect();
        let mut text = String::new();
        for prefix in &prefixes {
            for i in 0..per_prefix {
                text.push_str(&format!("{prefix}q{i} "));
            }
        }
        let query = Node::And(prefixes.into_iter().map(Node::Prefix).collect());
        (text, query)
    }

    #[test]
    fn a_query_expanding_past_the_term_budget_is_refused() {
        let dir = std::env::temp_dir().join(format!("ipto-index-{}", uuid::Uuid::new_v4()));
        let index = SearchIndex::open(&dir, None).unwrap();
        let (text, hostile) = lexicon(250, 20);
        index.stage_object(&object("obj_1", &text)).unwrap();
        index.commit(LogPosition::default()).unwrap();
        let refused = index
            .search(&hostile, &["dset_a".into()], 10)
            .expect_err("5,000 expansions are over the budget");
        assert!(
            refused
                .to_string()
                .starts_with("too broad: expands to more than"),
            "{refused}"
        );
        // Fewer prefixes over the same index stay within it and find the object.
        let narrow = match lexicon(20, 20).1 {
            Node::And(prefixes) => Node::Or(prefixes),
            other => other,
        };
        let hits = index.search(&narrow, &["dset_a".into()], 10).unwrap();
        assert_eq!(hits.len(), 1);
        drop(index);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn negations_phrases_and_long_alternatives_are_charged_to_the_budget() {
        let dir = std::env::temp_dir().join(format!("ipto-index-{}", uuid::Uuid::new_v4()));
        let index = SearchIndex::open(&dir, None).unwrap();
        for i in 0..10 {
            index
                .stage_object(&object(&format!("obj_{i}"), "alpha beta gamma"))
                .unwrap();
        }
        index.commit(LogPosition::default()).unwrap();
        let datasets = ["dset_a".to_owned()];
        // Ten documents: "alpha" reads 10 postings in the body (none in filename or metadata);
        // each negation reads every document once more.
        let budget = Budget {
            terms: 30,
            documents: 40,
        };
        let run = |query: &str| {
            let node = crate::search::query::parse(query).unwrap();
            index.search_within(&node, &datasets, 10, budget)
        };
        let refused = |query: &str| match run(query) {
            Err(IndexError::TooBroad(why)) => why,
            other => panic!("{query} was not refused: {other:?}"),
        };
        assert_eq!(run("alpha OR beta OR gamma").unwrap().len(), 10);
        assert_eq!(run("-alpha").unwrap().len(), 0);
        assert_eq!(
            refused("alpha OR beta OR gamma OR alpha OR beta"),
            TooBroad::Documents(40)
        );
        // Negations beside each other share one scan of every document; alternatives do not.
        assert_eq!(run("-a -b -c -d -e").unwrap().len(), 10);
        assert_eq!(refused("NOT NOT NOT NOT NOT a"), TooBroad::Documents(40));
        assert_eq!(
            refused("(-a) OR (-b) OR (-c) OR (-d) OR (-e)"),
            TooBroad::Documents(40)
        );
        // A phrase's postings count six times: its positions are read too.
        assert_eq!(run("alpha beta").unwrap().len(), 10);
        assert_eq!(refused("\"alpha beta\""), TooBroad::Documents(40));
        // Postings deep in alternating ORs and ANDs cost more: under seventeen, twice.
        let deep = (0..17).rev().fold("alpha".to_owned(), |inner, i| {
            let op = if i % 2 == 0 { "OR" } else { "AND" };
            format!("(absent{i} {op} {inner})")
        });
        let nested = |documents| {
            let node = crate::search::query::parse(&deep).unwrap();
            let budget = Budget {
                terms: 100,
                documents,
            };
            index.search_within(&node, &datasets, 10, budget)
        };
        assert!(nested(20).is_ok());
        assert!(matches!(
            nested(19),
            Err(IndexError::TooBroad(TooBroad::Documents(19)))
        ));
        // Nested alternatives of one kind are one list: no dearer than written flat.
        let flat_cost = Budget {
            terms: 30,
            documents: 30,
        };
        let node = crate::search::query::parse("alpha OR (beta OR (gamma))").unwrap();
        assert_eq!(
            index
                .search_within(&node, &datasets, 10, flat_cost)
                .unwrap()
                .len(),
            10
        );
        // Words that match nothing cost no postings but still a term in each field.
        let words: Vec<String> = (0..11).map(|i| format!("absent{i}")).collect();
        assert_eq!(refused(&words.join(" OR ")), TooBroad::Terms(30));
        assert_eq!(
            refused(&format!("\"{}\"", words.join(" "))),
            TooBroad::Terms(30)
        );
        drop(index);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_long_text_is_cited_by_the_fragment_around_its_match() {
        let dir = std::env::temp_dir().join(format!("ipto-index-{}", uuid::Uuid::new_v4()));
        let index = SearchIndex::open(&dir, None).unwrap();
        let text = format!(
            "{} needle here {}",
            "hay ".repeat(400),
            "straw ".repeat(300)
        );
        index.stage_object(&object("obj_1", &text)).unwrap();
        index.commit(LogPosition::default()).unwrap();
        let hit = &index
            .search(&Node::Term("needle".into()), &["dset_a".into()], 10)
            .unwrap()[0];
        let (from, to) = hit
            .locator
            .strip_prefix("chars:")
            .and_then(|r| r.split_once('-'))
            .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
            .unwrap();
        let cited: String = text.chars().skip(from).take(to - from).collect();
        assert_eq!(cited, hit.snippet);
        assert!(hit.snippet.contains("needle"));
        assert!(hit.snippet.chars().count() <= SNIPPET_CHARS);
        drop(index);
        let _ = std::fs::remove_dir_all(dir);
    }
}
