//! Retrieval quality: a SMART-format test collection (CISI by default) uploaded through the API,
//! every judged query searched in each retrieval mode, and the rankings scored (nDCG@10, MRR@10,
//! Recall@50, share without result) beside a tuned BM25 peer (`peer/bm25_peer.py`, bm25s) run
//! over the same texts and scored by the same code.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::load::Api;
use crate::report::Figure;
use crate::server::Scratch;

/// The modes every query is searched in, in this order.
const MODES: [&str; 4] = ["lexical", "dense", "hybrid", "auto"];
/// Results asked for per search (the API's maximum).
const LIMIT: usize = 50;
/// Passes over the queries per mode: the first gives the run, all are timed (three passes make
/// the p99 of CISI's 76 queries the third slowest of about 230 searches rather than the slowest).
const TIMED_PASSES: usize = 3;
/// Documents uploaded and approved at once.
const UPLOAD_CLIENTS: usize = 16;
/// The gauge of objects the dense leg has yet to embed; a server without it has no dense leg.
const DENSE_PENDING: &str = "ipto_search_dense_pending_objects";
const PEER: &str = "bm25s peer";

/// Query id → document ids, best first.
pub type Run = HashMap<String, Vec<String>>;

/// One document of the collection.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub id: String,
    pub title: String,
    pub text: String,
}

/// A test collection: documents, queries and binary relevance judgements.
#[derive(Debug)]
pub struct Collection {
    /// The `.ALL` file's stem in lower case (`cisi`).
    pub name: String,
    pub documents: Vec<Document>,
    /// Judged queries only, in file order: (id, the text: `.T` where there is one, then `.W`).
    pub queries: Vec<(String, String)>,
    /// Query id → relevant document ids.
    pub relevant: HashMap<String, HashSet<String>>,
}

impl Collection {
    /// Reads the one `*.ALL`, `*.QRY` and `*.REL` file of `dir` (suffixes in any case).
    pub fn load(dir: &Path) -> Result<Self, String> {
        let all = one_file(dir, ".ALL")?;
        let read = |path: &Path| {
            // SMART files predate UTF-8: read bytes as Latin-1.
            std::fs::read(path)
                .map(|bytes| bytes.into_iter().map(char::from).collect::<String>())
                .map_err(|e| format!("{}: {e}", path.display()))
        };
        let documents = records(&read(&all)?)
            .into_iter()
            .map(|(id, mut fields)| Document {
                id,
                title: fields.remove(&'T').unwrap_or_default(),
                text: fields.remove(&'W').unwrap_or_default(),
            })
            .collect();
        let relevant = judgements(&read(&one_file(dir, ".REL")?)?);
        let queries = records(&read(&one_file(dir, ".QRY")?)?)
            .into_iter()
            .filter(|(id, _)| relevant.contains_key(id))
            .map(|(id, mut fields)| (id, query_text(&mut fields)))
            .collect();
        let name = all
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('.').next())
            .unwrap_or("collection")
            .to_lowercase();
        Ok(Self {
            name,
            documents,
            queries,
            relevant,
        })
    }
}

/// A query as its record writes it: its title (some CISI queries have one) and its text, as the
/// issue's peer figure of 0.396 was measured.
fn query_text(fields: &mut HashMap<char, String>) -> String {
    let title = fields.remove(&'T').unwrap_or_default();
    let text = fields.remove(&'W').unwrap_or_default();
    format!("{}\n{}", title.trim(), text.trim())
        .trim()
        .to_owned()
}

fn one_file(dir: &Path, suffix: &str) -> Result<PathBuf, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.to_uppercase().ends_with(suffix))
        })
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(format!(
            "{}: expected one *{suffix} file, found {n}",
            dir.display()
        )),
    }
}

/// SMART records: `.I id` starts one, `.X` (a letter) starts field X, which runs to the next
/// marker. Text after a field's marker on the same line belongs to the field.
pub fn records(text: &str) -> Vec<(String, HashMap<char, String>)> {
    let mut out: Vec<(String, HashMap<char, Vec<&str>>)> = Vec::new();
    let mut field = None;
    for line in text.lines() {
        let mut chars = line.chars();
        let marker = match (chars.next(), chars.next(), chars.next()) {
            (Some('.'), Some(letter), None | Some(' ')) if letter.is_ascii_alphabetic() => {
                Some(letter)
            }
            _ => None,
        };
        match marker {
            Some('I') => {
                out.push((line[2..].trim().to_owned(), HashMap::new()));
                field = None;
            }
            Some(letter) => {
                field = Some(letter);
                if let Some((_, fields)) = out.last_mut() {
                    let lines = fields.entry(letter).or_default();
                    let rest = line[2..].trim();
                    if !rest.is_empty() {
                        lines.push(rest);
                    }
                }
            }
            None => {
                if let (Some(letter), Some((_, fields))) = (field, out.last_mut()) {
                    fields.entry(letter).or_default().push(line);
                }
            }
        }
    }
    out.into_iter()
        .map(|(id, fields)| {
            let fields = fields
                .into_iter()
                .map(|(k, lines)| (k, lines.join("\n").trim().to_owned()))
                .collect();
            (id, fields)
        })
        .collect()
}

/// Relevance judgements: lines `query_id document_id …` (CISI's `1 28 0 0.000000`).
pub fn judgements(text: &str) -> HashMap<String, HashSet<String>> {
    let mut relevant: HashMap<String, HashSet<String>> = HashMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some(query), Some(document)) = (words.next(), words.next()) {
            relevant
                .entry(query.to_owned())
                .or_default()
                .insert(document.to_owned());
        }
    }
    relevant
}

/// nDCG at `k` with binary gains and a log2 discount; the ideal ranking puts `min(k, |relevant|)`
/// relevant documents first.
pub fn ndcg_at(k: usize, ranked: &[String], relevant: &HashSet<String>) -> f64 {
    let discount = |rank: usize| 1.0 / (rank as f64 + 2.0).log2();
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, d)| relevant.contains(*d))
        .map(|(rank, _)| discount(rank))
        .sum();
    let ideal: f64 = (0..k.min(relevant.len())).map(discount).sum();
    if ideal > 0.0 {
        dcg / ideal
    } else {
        0.0
    }
}

/// 1 / the rank of the first relevant document within the first `k`, else 0.
pub fn reciprocal_rank_at(k: usize, ranked: &[String], relevant: &HashSet<String>) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|d| relevant.contains(d))
        .map_or(0.0, |rank| 1.0 / (rank as f64 + 1.0))
}

/// The share of the relevant documents found within the first `k`.
pub fn recall_at(k: usize, ranked: &[String], relevant: &HashSet<String>) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    let found: HashSet<&String> = ranked
        .iter()
        .take(k)
        .filter(|d| relevant.contains(*d))
        .collect();
    found.len() as f64 / relevant.len() as f64
}

/// A run's scores, each the mean over the judged queries (a query without result scores 0).
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    pub ndcg10: f64,
    pub mrr10: f64,
    pub recall50: f64,
    /// Share of the judged queries with no result.
    pub no_result: f64,
}

/// Scores `run` against `relevant` over the queries `judged`.
pub fn score(run: &Run, judged: &[String], relevant: &HashMap<String, HashSet<String>>) -> Scores {
    let empty = (Vec::new(), HashSet::new());
    let mean = |metric: &dyn Fn(&[String], &HashSet<String>) -> f64| {
        if judged.is_empty() {
            return 0.0;
        }
        let total: f64 = judged
            .iter()
            .map(|q| {
                metric(
                    run.get(q).unwrap_or(&empty.0),
                    relevant.get(q).unwrap_or(&empty.1),
                )
            })
            .sum();
        total / judged.len() as f64
    };
    Scores {
        ndcg10: mean(&|r, rel| ndcg_at(10, r, rel)),
        mrr10: mean(&|r, rel| reciprocal_rank_at(10, r, rel)),
        recall50: mean(&|r, rel| recall_at(50, r, rel)),
        no_result: mean(&|r, _| if r.is_empty() { 1.0 } else { 0.0 }),
    }
}

/// What searching every judged query in one mode gave.
#[derive(Debug, Default)]
struct ModeRun {
    run: Run,
    /// Queries answered 422 (the query refused).
    refused: usize,
    /// Queries answered with another error, and the first such answer.
    failed: usize,
    first_failure: Option<String>,
    /// `retrieval_mode_used` → queries.
    used: BTreeMap<String, usize>,
    /// Answered (2xx) searches, sorted.
    latencies: Vec<Duration>,
}

impl ModeRun {
    fn percentile_ms(&self, p: f64) -> Option<f64> {
        let n = self.latencies.len();
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1));
        self.latencies
            .get(rank - 1)
            .map(|d| d.as_secs_f64() * 1000.0)
    }

    /// Records the answer to query `id`: its results mapped back to document ids (`documents`:
    /// object id → document id), or why there are none.
    fn record(
        &mut self,
        id: &str,
        answer: Result<Value, String>,
        documents: &HashMap<String, String>,
    ) {
        let found = match answer {
            Ok(found) => found,
            Err(error) if error.starts_with("422") => {
                self.refused += 1;
                return;
            }
            Err(error) => {
                self.failed += 1;
                self.first_failure.get_or_insert(error);
                return;
            }
        };
        let used = found["retrieval_mode_used"].as_str().unwrap_or("?");
        *self.used.entry(used.to_owned()).or_default() += 1;
        let mut ranked: Vec<String> = Vec::new();
        for result in found["results"].as_array().into_iter().flatten() {
            let document = result["object_id"].as_str().and_then(|o| documents.get(o));
            if let Some(document) = document.filter(|d| !ranked.contains(d)) {
                ranked.push(document.clone());
            }
        }
        self.run.insert(id.to_owned(), ranked);
    }

    fn ran_as(&self) -> String {
        let used: Vec<String> = self.used.iter().map(|(m, n)| format!("{m} {n}")).collect();
        if used.is_empty() {
            "–".into()
        } else {
            used.join(", ")
        }
    }
}

/// The slot's settings.
pub struct Quality<'a> {
    pub dir: &'a Path,
    pub timeout: Duration,
    pub bin: &'a Path,
    pub root: &'a Path,
}

/// Runs the slot on a server of its own on SQLite; figures under the store `quality`.
pub async fn bench(quality: Quality<'_>) -> Result<Vec<Figure>, String> {
    let collection = Collection::load(quality.dir)?;
    let dir = std::fs::canonicalize(quality.dir).unwrap_or_else(|_| quality.dir.to_owned());
    eprintln!(
        "== quality: {} ({} documents, {} judged queries) from {}",
        collection.name,
        collection.documents.len(),
        collection.queries.len(),
        dir.display()
    );
    // The peer first: it is quick, and its output does not depend on the server.
    let peer = peer(quality.dir, quality.root);
    let scratch = Scratch::create(quality.root, None).await?;
    let served = crate::serve(&scratch, quality.bin).await;
    let api = Api::new(served.base.clone());
    let measured = measure(&api, &collection, quality.timeout).await;
    served.stop();
    scratch.remove().await;
    let (dense, runs) = measured?;
    Ok(report(&collection, &dense, &runs, peer.as_ref()))
}

/// Uploads and approves the collection, waits for the index, then searches every judged query
/// in every mode. Returns how the dense leg was waited for, and each mode's run.
async fn measure(
    api: &Api,
    collection: &Collection,
    timeout: Duration,
) -> Result<(String, Vec<(&'static str, ModeRun)>), String> {
    let admin = crate::admin_session(api).await?;
    let provider = crate::sign_up(api, 1, "provider").await?.remove(0);
    let dataset = api
        .post(
            "/v1/datasets",
            Some(&provider.token),
            json!({"name": format!("{} collection", collection.name), "visibility": "listed", "status": "active"}),
        )
        .await?["dataset_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let started = Instant::now();
    let uploads = futures::stream::iter(&collection.documents)
        .map(|document| {
            let (api, admin, provider, dataset) = (api, &admin, &provider, &dataset);
            async move {
                let bytes = format!("{}\n\n{}", document.title, document.text).into_bytes();
                let initiated = api
                    .post(
                        &format!("/v1/datasets/{dataset}/objects/upload"),
                        Some(&provider.token),
                        json!({"filename": format!("{}-{}.txt", collection.name, document.id), "content_type": "text/plain", "size_bytes": bytes.len()}),
                    )
                    .await?;
                let object = initiated["object_id"].as_str().unwrap_or_default().to_owned();
                let url = initiated["upload_url"].as_str().unwrap_or_default();
                api.put_url(url, bytes).await?;
                api.post(&format!("/v1/objects/{object}/confirm"), Some(&provider.token), json!({}))
                    .await?;
                api.post(
                    &format!("/v1/admin/review/objects/{}/{object}/approve", provider.tenant),
                    Some(admin),
                    json!({}),
                )
                .await?;
                Ok::<_, String>((object, document.id.clone()))
            }
        })
        .buffer_unordered(UPLOAD_CLIENTS)
        .collect::<Vec<_>>()
        .await;
    let documents: HashMap<String, String> = uploads.into_iter().collect::<Result<_, _>>()?;
    eprintln!(
        "  uploaded and approved {} documents in {:.0} s",
        documents.len(),
        started.elapsed().as_secs_f64()
    );
    let dense = caught_up(api, timeout).await?;

    let buyer = crate::sign_up(api, 1, "buyer").await?.remove(0);
    let key = api
        .post(
            "/v1/api-keys",
            Some(&buyer.token),
            json!({"name": "retrieval quality", "scopes": ["search:query"]}),
        )
        .await?["key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // One untimed pass first: the first searches after indexing pay for cold caches.
    for (_, query) in &collection.queries {
        let _ = api
            .post(
                "/v1/search",
                Some(&key),
                json!({"query": query, "limit": LIMIT}),
            )
            .await;
    }
    let mut runs = Vec::new();
    for mode in MODES {
        let run = search_all(api, &key, mode, collection, &documents).await;
        if let Some(failure) = &run.first_failure {
            eprintln!("  {mode}: {} failed searches, first: {failure}", run.failed);
        }
        runs.push((mode, run));
    }
    Ok((dense, runs))
}

/// Waits until the lexical index has applied the whole log and, if the server has a dense leg,
/// until it has no object left to embed. Says which, in a few words.
async fn caught_up(api: &Api, timeout: Duration) -> Result<String, String> {
    let started = Instant::now();
    loop {
        let text = api.text("/metrics").await?;
        let gauge = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        let lexical = gauge("ipto_projection_lag_events{projection=\"search\"} ") == Some(0);
        let dense = gauge(&format!("{DENSE_PENDING} "));
        match (lexical, dense) {
            (true, None) => {
                eprintln!("  no dense leg ({DENSE_PENDING} absent from /metrics): searching at once");
                return Ok("no dense leg".into());
            }
            (true, Some(0)) => {
                let caught = format!(
                    "dense leg caught up in {:.0} s",
                    started.elapsed().as_secs_f64()
                );
                eprintln!("  {caught} ({DENSE_PENDING} 0)");
                return Ok(caught);
            }
            _ if started.elapsed() > timeout => {
                return Err(format!(
                    "the index did not catch up in {} s (search lag 0: {lexical}, {DENSE_PENDING}: {dense:?})",
                    timeout.as_secs()
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Every judged query as is, one at a time, in `mode`, `TIMED_PASSES` times: the first pass's
/// answers are the run, every pass's answered searches are timed.
async fn search_all(
    api: &Api,
    key: &str,
    mode: &str,
    collection: &Collection,
    documents: &HashMap<String, String>,
) -> ModeRun {
    let mut out = ModeRun::default();
    for pass in 0..TIMED_PASSES {
        for (id, query) in &collection.queries {
            let began = Instant::now();
            let answer = api
                .post(
                    "/v1/search",
                    Some(key),
                    json!({"query": query, "limit": LIMIT, "retrieval_mode": mode}),
                )
                .await;
            if answer.is_ok() {
                out.latencies.push(began.elapsed());
            }
            if pass == 0 {
                out.record(id, answer, documents);
            }
        }
    }
    out.latencies.sort_unstable();
    out
}

/// Runs `peer/bm25_peer.py` over `dir`: its run, or `None` (said why) when it cannot run.
fn peer(dir: &Path, root: &Path) -> Option<Run> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peer/bm25_peer.py");
    let out = root.join("bm25-peer-run.json");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir)
        .arg(&out)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            eprintln!("  {PEER}: skipped: python3 did not start ({error})");
            return None;
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(2) {
        eprintln!("  {PEER}: skipped: {}", stderr.trim());
        return None;
    }
    if !output.status.success() {
        eprintln!("  {PEER}: failed: {}", stderr.trim());
        return None;
    }
    eprintln!(
        "  {PEER}: {}",
        String::from_utf8_lossy(&output.stdout).trim()
    );
    let run = std::fs::read_to_string(&out)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()));
    let _ = std::fs::remove_file(&out);
    run.map_err(|e| eprintln!("  {PEER}: unreadable run: {e}"))
        .ok()
}

/// Prints the table and turns it into figures: each score set against the peer's as its
/// ceiling, so that the report's ratio is mode / peer.
fn report(
    collection: &Collection,
    dense: &str,
    runs: &[(&str, ModeRun)],
    peer: Option<&Run>,
) -> Vec<Figure> {
    let judged: Vec<String> = collection
        .queries
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    let peer = peer.map(|run| (score(run, &judged, &collection.relevant), run));
    let name = &collection.name;
    let without = |run: &Run| format!("{} of {}", without_result(run, &judged), judged.len());
    let figure = |who: &str, metric: &str, unit: &str, value: Option<f64>| {
        let f = Figure::new(
            "quality",
            name,
            &format!("{name}, {who}: {metric}"),
            unit,
            unit != "%" && unit != "ms",
        );
        match value {
            Some(v) => f.value(v),
            None => f,
        }
    };
    eprintln!(
        "  {:<11} {:>8} {:>7} {:>9} {:>16} {:>4} {:>7} {:>7}  {:<22} nDCG@10 vs peer",
        "run", "nDCG@10", "MRR@10", "Recall@50", "no result", "422", "p50 ms", "p99 ms", "ran as"
    );
    let ms = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
    let mut figures = Vec::new();
    for (mode, run) in runs {
        let scores = score(&run.run, &judged, &collection.relevant);
        let versus = peer
            .as_ref()
            .filter(|(p, _)| p.ndcg10 > 0.0)
            .map(|(p, _)| (scores.ndcg10 / p.ndcg10 - 1.0) * 100.0);
        let (p50, p99) = (run.percentile_ms(0.50), run.percentile_ms(0.99));
        eprintln!(
            "  {mode:<11} {:>8.3} {:>7.3} {:>9.3} {:>16} {:>4} {:>7} {:>7}  {:<22} {}",
            scores.ndcg10,
            scores.mrr10,
            scores.recall50,
            format!("{} ({:.1}%)", without(&run.run), scores.no_result * 100.0),
            run.refused,
            ms(p50),
            ms(p99),
            run.ran_as(),
            versus.map_or("–".into(), |v| format!("{v:+.1}%"))
        );
        let against = |f: Figure, of_peer: fn(&Scores) -> f64| match &peer {
            Some((p, _)) => f.ceiling(PEER, of_peer(p)),
            None => f,
        };
        let ndcg = figure(mode, "nDCG@10", "", Some(scores.ndcg10)).note(match versus {
            Some(v) => format!("{v:+.1}% vs peer; ran as {}", run.ran_as()),
            None => format!("ran as {}", run.ran_as()),
        });
        figures.push(against(ndcg, |p| p.ndcg10));
        let mrr = figure(mode, "MRR@10", "", Some(scores.mrr10));
        figures.push(against(mrr, |p| p.mrr10));
        let recall = figure(mode, "Recall@50", "", Some(scores.recall50));
        figures.push(against(recall, |p| p.recall50));
        figures.push(
            figure(
                mode,
                "queries without result",
                "%",
                Some(scores.no_result * 100.0),
            )
            .note(format!(
                "{}; {} refused (422), {} failed",
                without(&run.run),
                run.refused,
                run.failed
            )),
        );
        figures.push(figure(mode, "search p50, 1 client", "ms", p50));
        figures.push(figure(mode, "search p99, 1 client", "ms", p99));
    }
    if let Some((p, run)) = &peer {
        eprintln!(
            "  {PEER:<11} {:>8.3} {:>7.3} {:>9.3} {:>16} {:>4} {:>7} {:>7}  {:<22} –",
            p.ndcg10,
            p.mrr10,
            p.recall50,
            format!("{} ({:.1}%)", without(run), p.no_result * 100.0),
            "–",
            "–",
            "–",
            "bm25s, lucene"
        );
        figures.push(
            figure(PEER, "nDCG@10", "", Some(p.ndcg10))
                .note("bm25s lucene, k1 1.5, b 0.75, English stop words, Snowball stemmer, OR"),
        );
        figures.push(figure(PEER, "MRR@10", "", Some(p.mrr10)));
        figures.push(figure(PEER, "Recall@50", "", Some(p.recall50)));
        figures.push(
            figure(
                PEER,
                "queries without result",
                "%",
                Some(p.no_result * 100.0),
            )
            .note(without(run)),
        );
    }
    if let Some(first) = figures.first_mut() {
        first.note = format!(
            "{} documents, {} judged queries, {dense}; {}",
            collection.documents.len(),
            judged.len(),
            first.note
        );
    }
    figures
}

/// How many of the queries `judged` have no result in `run`.
fn without_result(run: &Run, judged: &[String]) -> usize {
    judged
        .iter()
        .filter(|q| run.get(*q).is_none_or(|r| r.is_empty()))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn set(list: &[&str]) -> HashSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ndcg_discounts_by_log2_of_rank_against_the_judged_ideal() {
        // Relevant at ranks 1 and 3 of three judged relevant:
        // DCG = 1 + 1/log2(4) = 1.5; ideal = 1 + 1/log2(3) + 1/log2(4) = 2.1309.
        let ranked = ids(&["a", "x", "b", "y"]);
        let ndcg = ndcg_at(10, &ranked, &set(&["a", "b", "c"]));
        assert!((ndcg - 1.5 / 2.130_929_753_571_457).abs() < 1e-9, "{ndcg}");
        assert_eq!(ndcg_at(10, &ids(&["a", "b"]), &set(&["a", "b"])), 1.0);
        assert_eq!(ndcg_at(10, &[], &set(&["a"])), 0.0);
    }

    #[test]
    fn ndcg_ignores_what_lies_past_the_cutoff_and_caps_the_ideal_at_it() {
        let mut ranked = ids(&["x"; 10]);
        ranked.push("a".into());
        assert_eq!(ndcg_at(10, &ranked, &set(&["a"])), 0.0);
        // Twelve relevant, the first ten retrieved: a perfect top 10.
        let relevant: Vec<String> = (0..12).map(|i| i.to_string()).collect();
        let ranked: Vec<String> = relevant[..10].to_vec();
        let relevant: HashSet<String> = relevant.into_iter().collect();
        assert!((ndcg_at(10, &ranked, &relevant) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn reciprocal_rank_is_that_of_the_first_relevant_within_the_cutoff() {
        assert_eq!(
            reciprocal_rank_at(10, &ids(&["x", "y", "a", "b"]), &set(&["a", "b"])),
            1.0 / 3.0
        );
        let mut late = ids(&["x"; 10]);
        late.push("a".into());
        assert_eq!(reciprocal_rank_at(10, &late, &set(&["a"])), 0.0);
    }

    #[test]
    fn recall_counts_the_relevant_found_within_the_cutoff() {
        let ranked = ids(&["a", "x", "b", "c"]);
        assert_eq!(recall_at(50, &ranked, &set(&["a", "b", "d", "e"])), 0.5);
        assert_eq!(recall_at(2, &ranked, &set(&["a", "b", "d", "e"])), 0.25);
        assert_eq!(recall_at(50, &ranked, &set(&[])), 0.0);
    }

    #[test]
    fn scores_average_over_judged_queries_counting_missing_ones_as_zero() {
        let relevant: HashMap<String, HashSet<String>> = [
            ("1".to_string(), set(&["a"])),
            ("2".to_string(), set(&["b"])),
        ]
        .into();
        let run: Run = [("1".to_string(), ids(&["a"]))].into();
        let scores = score(&run, &ids(&["1", "2"]), &relevant);
        assert_eq!(
            scores,
            Scores {
                ndcg10: 0.5,
                mrr10: 0.5,
                recall50: 0.5,
                no_result: 0.5
            }
        );
    }

    #[test]
    fn smart_records_gather_each_field_up_to_the_next_marker() {
        let text = ".I 1\n.T\nA title\n.A\nSomeone\n.W\n   first line\nsecond line\n.X\n1\t5\t1\n.I 2\n.T Same line\n.W\nText\n";
        let parsed = records(text);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].0, "1");
        assert_eq!(parsed[0].1[&'T'], "A title");
        assert_eq!(parsed[0].1[&'W'], "first line\nsecond line");
        assert_eq!(parsed[1].0, "2");
        assert_eq!(parsed[1].1[&'T'], "Same line");
        assert_eq!(parsed[1].1[&'W'], "Text");
    }

    #[test]
    fn judgements_read_query_and_document_from_each_line() {
        let relevant = judgements("     1     28\t0\t0.000000\n1 35 0 0.0\n\n2 7 0 0\n");
        assert_eq!(relevant["1"], set(&["28", "35"]));
        assert_eq!(relevant["2"], set(&["7"]));
    }
}
