//! Benchmark: search over an index of at least 100,000 chunks, against the release `ipto` binary.
//!
//! 1. Seeds objects of generated text through the API (initiate → PUT → confirm → approve, 16
//!    clients), each about ten chunks long, and reports the live indexing throughput.
//! 2. Stops the server and runs `ipto projections rebuild search`: the indexing rate from the log
//!    (blob reads, extraction, chunking, tantivy) in events/s, objects/s and chunks/s.
//! 3. Restarts it and runs a mix of queries as a buyer (every result billable, so each search also
//!    writes its `SearchPerformed` event): latency p50/p99 with one client, then throughput and
//!    p50/p99 with eight.
//! 4. Hostile queries, over an index that also holds a lexicon of 743,600 distinct words (1,100
//!    behind every two-letter prefix): many short prefixes, long OR lists, deeply nested ORs, long
//!    phrase lists and many negations. For each kind, the largest query the per-query budget still
//!    accepts (found by bisection) and the 1,000-character one it refuses are timed, with one
//!    client and then with four at once; it prints p50/p99 per kind and the p99 of them all.
//!
//! Run: `cargo bench --bench search`. `IPTO_BENCH_SEARCH_OBJECTS` (default 10,000) sets the number
//! of objects; `IPTO_BENCH_DATABASE_URL=postgres://…` runs it on PostgreSQL (a fresh database).
//! `IPTO_BENCH_HOSTILE_ROUNDS` (default 50) sets the timed runs of each hostile query per client.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PASSWORD: &str = "bench password";
/// Characters of text per object: ten chunks of the index's 1,000.
const OBJECT_CHARS: usize = 10_000;
const QUERIES: [&str; 8] = [
    "kalo",
    "misen AND dorpa",
    "tuve OR quira",
    "\"kalo misen\"",
    "senka*",
    "ravedor -kalo",
    "(paqui OR dorsen) tuve",
    "zzzabsent",
];

/// Words behind each two-letter prefix in the lexicon objects: more than one prefix expands to
/// per field.
const LEXICON_WORDS_PER_PREFIX: usize = 1_100;
/// The longest query the API accepts.
const MAX_QUERY_CHARS: usize = 1_000;

struct Server {
    child: Child,
    base: String,
}

fn start(dir: &std::path::Path, database: Option<&str>) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ipto"));
    command
        .env("IPTO_DATA_DIR", dir)
        .env("IPTO_BIND", format!("127.0.0.1:{port}"))
        .env("IPTO_BOOTSTRAP_ADMIN_EMAIL", "admin@example.com")
        .env("IPTO_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)
        .env("IPTO_RATE_LIMIT_PER_MINUTE", "100000000")
        .env("IPTO_AUTH_RATE_LIMIT_PER_MINUTE", "100000")
        .env("IPTO_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(url) = database {
        command.env("IPTO_DATABASE_URL", url);
    }
    Server {
        child: command.spawn().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    }
}

fn stop(mut server: Server) {
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    let _ = server.child.wait();
}

async fn ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {body}");
    body
}

async fn post(client: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    call(client, reqwest::Method::POST, url, token, Some(body)).await
}

/// Pseudo-words from syllables, drawn with a skew so that some are common and most are rare.
struct Words {
    vocabulary: Vec<String>,
    state: u64,
}

impl Words {
    fn new(seed: u64) -> Self {
        const SYLLABLES: [&str; 12] = [
            "ka", "lo", "mi", "sen", "dor", "pa", "tu", "ve", "qui", "ra", "ni", "zo",
        ];
        let mut vocabulary = Vec::new();
        for a in SYLLABLES {
            for b in SYLLABLES {
                vocabulary.push(format!("{a}{b}"));
                for c in SYLLABLES {
                    vocabulary.push(format!("{a}{b}{c}"));
                }
            }
        }
        Self {
            vocabulary,
            state: seed | 1,
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn text(&mut self, chars: usize) -> String {
        let mut out = String::with_capacity(chars + 16);
        while out.len() < chars {
            let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
            let word = &self.vocabulary[(u * u * u * self.vocabulary.len() as f64) as usize];
            out.push_str(word);
            out.push(if self.next().is_multiple_of(12) {
                '\n'
            } else {
                ' '
            });
        }
        out
    }
}

/// Every two-letter prefix, `aa` to `zz`.
fn two_letter_prefixes() -> Vec<String> {
    let letters = || (b'a'..=b'z').map(char::from);
    letters()
        .flat_map(|a| letters().map(move |b| format!("{a}{b}")))
        .collect()
}

/// The lexicon as objects of about `OBJECT_CHARS` each: `LEXICON_WORDS_PER_PREFIX` distinct words
/// behind every two-letter prefix (`aa` + `aaa`, `aab`, …).
fn lexicon_texts() -> Vec<String> {
    let mut texts = vec![String::new()];
    for prefix in two_letter_prefixes() {
        for i in 0..LEXICON_WORDS_PER_PREFIX {
            let letter = |k: usize| char::from(b'a' + (k % 26) as u8);
            let word = format!(
                "{prefix}{}{}{} ",
                letter(i / 676),
                letter(i / 26),
                letter(i)
            );
            let last = texts.last_mut().expect("one text");
            last.push_str(&word);
            if last.len() >= OBJECT_CHARS {
                texts.push(String::new());
            }
        }
    }
    texts.retain(|t| !t.is_empty());
    texts
}

/// A kind of hostile query: `make(n)` grows with `n`, up to the longest the API accepts.
struct Hostile {
    name: &'static str,
    make: Box<dyn Fn(usize) -> String + Send + Sync>,
}

/// The kinds of hostile query, built from the corpus' most common words (`common[0]` the most).
fn hostile_kinds(common: Vec<String>) -> Vec<Hostile> {
    let prefixes = two_letter_prefixes();
    let common = Arc::new(common);
    let word = {
        let common = common.clone();
        move |i: usize| common[i % common.len()].clone()
    };
    let (w1, w2, w3, w4, word5) = (word.clone(), word.clone(), word.clone(), word.clone(), word);
    vec![
        Hostile {
            name: "short prefixes (aa* ab* …)",
            make: Box::new(move |n| {
                prefixes[..n.min(prefixes.len())]
                    .iter()
                    .map(|p| format!("{p}*"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
        },
        Hostile {
            name: "OR list of common words",
            make: Box::new(move |n| (0..n).map(&w1).collect::<Vec<_>>().join(" OR ")),
        },
        Hostile {
            name: "nested ORs of common words (depth ≤ 30)",
            make: Box::new(move |n| {
                let n = n.min(30);
                let mut query = w2(n);
                for i in (0..n).rev() {
                    query = format!("({} OR {query})", w2(i));
                }
                query
            }),
        },
        Hostile {
            name: "alternating OR and AND nesting (depth ≤ 30)",
            make: {
                let word = word5.clone();
                Box::new(move |n| {
                    let n = n.min(30);
                    let mut query = word(n);
                    for i in (0..n).rev() {
                        let op = if i % 2 == 0 { "OR" } else { "AND" };
                        query = format!("({} {op} {query})", word(i));
                    }
                    query
                })
            },
        },
        Hostile {
            name: "OR list of phrases",
            make: Box::new(move |n| {
                (0..n)
                    .map(|i| format!("\"{} {}\"", w3(2 * i), w3(2 * i + 1)))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            }),
        },
        Hostile {
            name: "OR list of negations",
            make: Box::new(move |n| {
                (0..n)
                    .map(|i| format!("(-{})", w4(i)))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            }),
        },
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    ipto::blobs::install_crypto_provider();
    let objects: usize = std::env::var("IPTO_BENCH_SEARCH_OBJECTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let database = std::env::var("IPTO_BENCH_DATABASE_URL").ok();
    let database = match database {
        Some(admin_url) => {
            let name = format!("ipto_bench_{}", uuid::Uuid::new_v4().simple());
            let pool = sqlx::PgPool::connect(&admin_url).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await
                .unwrap();
            let mut url = url::Url::parse(&admin_url).unwrap();
            url.set_path(&name);
            Some(url.to_string())
        }
        None => None,
    };
    let store = if database.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let dir = std::env::temp_dir().join(format!(
        "ipto-bench-search-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let server = start(&dir, database.as_deref());
    ready(&client, &server.base).await;
    let base = server.base.clone();

    let signup = |email: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let body = post(
                &client,
                format!("{base}/v1/auth/signup"),
                None,
                json!({"email": email, "password": PASSWORD, "display_name": "B", "tenant_name": email}),
            )
            .await;
            body["data"]["session_token"].as_str().unwrap().to_owned()
        }
    };
    let seller = signup("seller@example.com").await;
    let buyer = signup("buyer@example.com").await;
    let me = call(
        &client,
        reqwest::Method::GET,
        format!("{base}/v1/me"),
        Some(&seller),
        None,
    )
    .await;
    let tenant = me["data"]["tenant_id"].as_str().unwrap().to_owned();
    let admin = post(
        &client,
        format!("{base}/v1/auth/login"),
        None,
        json!({"email": "admin@example.com", "password": PASSWORD}),
    )
    .await["data"]["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let dataset = post(
        &client,
        format!("{base}/v1/datasets"),
        Some(&seller),
        json!({"name": "Corpus", "visibility": "listed", "price_per_result": "0.01"}),
    )
    .await["data"]["dataset_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // 1. Seeding through the API, indexed live: the generated text, then the lexicon.
    let lexicon = Arc::new(lexicon_texts());
    let total = objects + lexicon.len();
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..16u64 {
        let (client, base, seller, admin, dataset, tenant, next, lexicon) = (
            client.clone(),
            base.clone(),
            seller.clone(),
            admin.clone(),
            dataset.clone(),
            tenant.clone(),
            next.clone(),
            lexicon.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut words = Words::new(0x9e37_79b9_7f4a_7c15 ^ (worker + 1));
            let mut bytes = 0usize;
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    return bytes;
                }
                let text = match n.checked_sub(objects) {
                    None => words.text(OBJECT_CHARS),
                    Some(i) => lexicon[i].clone(),
                };
                bytes += text.len();
                let upload = post(
                    &client,
                    format!("{base}/v1/datasets/{dataset}/objects/upload"),
                    Some(&seller),
                    json!({"filename": format!("doc-{n}.txt"), "content_type": "text/plain", "size_bytes": text.len()}),
                )
                .await;
                let object = upload["data"]["object_id"].as_str().unwrap().to_owned();
                let url = upload["data"]["upload_url"].as_str().unwrap();
                let put = client.put(url).body(text).send().await.unwrap();
                assert!(put.status().is_success());
                post(
                    &client,
                    format!("{base}/v1/objects/{object}/confirm"),
                    Some(&seller),
                    json!({}),
                )
                .await;
                post(
                    &client,
                    format!("{base}/v1/admin/review/objects/{tenant}/{object}/approve"),
                    Some(&admin),
                    json!({}),
                )
                .await;
            }
        }));
    }
    let mut text_bytes = 0;
    for task in tasks {
        text_bytes += task.await.unwrap();
    }
    let seeded = started.elapsed().as_secs_f64();
    println!(
        "store {store}: seeded {objects} objects and {} of lexicon ({:.1} MiB of text) through the API in {seeded:.1}s: {:.0} objects/s, each approval indexed before its response",
        lexicon.len(),
        text_bytes as f64 / 1048576.0,
        total as f64 / seeded
    );
    stop(server);

    // 2. Rebuild: the indexing rate from the log.
    let mut rebuild = Command::new(env!("CARGO_BIN_EXE_ipto"));
    rebuild
        .args(["projections", "rebuild", "search"])
        .env("IPTO_DATA_DIR", &dir)
        .env("IPTO_LOG", "warn");
    if let Some(url) = &database {
        rebuild.env("IPTO_DATABASE_URL", url);
    }
    let started = Instant::now();
    let output = rebuild.output().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let chunks: u64 = stderr
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[1].starts_with("chunks"))
        .and_then(|w| w[0].parse().ok())
        .unwrap_or(0);
    println!(
        "store {store}: rebuild search: {chunks} chunks from {objects} objects in {seconds:.1}s: {:.0} chunks/s, {:.0} objects/s, {:.1} MiB/s of text ({})",
        chunks as f64 / seconds,
        objects as f64 / seconds,
        text_bytes as f64 / 1048576.0 / seconds,
        String::from_utf8_lossy(&output.stdout).trim()
    );
    assert!(chunks >= 100_000 || objects < 10_000, "index too small");

    // 3. Queries as a buyer.
    let server = start(&dir, database.as_deref());
    ready(&client, &server.base).await;
    let base = server.base.clone();
    let search = |client: reqwest::Client, base: String, token: String, query: &'static str| async move {
        let started = Instant::now();
        let body = post(
            &client,
            format!("{base}/v1/search"),
            Some(&token),
            json!({"query": query, "limit": 10}),
        )
        .await;
        (
            started.elapsed(),
            body["data"]["result_count"].as_u64().unwrap_or(0),
        )
    };
    for query in QUERIES {
        search(client.clone(), base.clone(), buyer.clone(), query).await;
    }
    let mut latencies = Vec::new();
    let mut results = 0;
    for i in 0..400 {
        let (took, found) = search(
            client.clone(),
            base.clone(),
            buyer.clone(),
            QUERIES[i % QUERIES.len()],
        )
        .await;
        latencies.push(took);
        results += found;
    }
    latencies.sort();
    println!(
        "store {store}: 1 client, {} searches ({:.1} results each): p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        results as f64 / latencies.len() as f64,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (client, base, buyer) = (client.clone(), base.clone(), buyer.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = worker;
            while Instant::now() < deadline {
                let (took, _) = search(
                    client.clone(),
                    base.clone(),
                    buyer.clone(),
                    QUERIES[i % QUERIES.len()],
                )
                .await;
                latencies.push(took);
                i += 1;
            }
            latencies
        }));
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "store {store}: 8 clients, {} searches in {seconds:.1}s: {:.0} searches/s, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        latencies.len() as f64 / seconds,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );

    // 4. Hostile queries.
    let rounds: usize = std::env::var("IPTO_BENCH_HOSTILE_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let common: Vec<String> = Words::new(1).vocabulary[..64].to_vec();
    let mut all_one = Vec::new();
    let mut all_four = Vec::new();
    for kind in hostile_kinds(common) {
        let longest = (1..=MAX_QUERY_CHARS)
            .take_while(|n| (kind.make)(*n).chars().count() <= MAX_QUERY_CHARS)
            .last()
            .unwrap_or(1);
        // The largest size still accepted, by bisection (acceptance only shrinks as n grows).
        let accepted = |n: usize| {
            let (client, base, buyer) = (client.clone(), base.clone(), buyer.clone());
            let query = (kind.make)(n);
            async move { attempt(&client, &base, &buyer, &query).await.1 == 200 }
        };
        let largest = if !accepted(1).await {
            None
        } else if accepted(longest).await {
            Some(longest)
        } else {
            let (mut ok, mut refused) = (1, longest);
            while refused - ok > 1 {
                let mid = (ok + refused) / 2;
                if accepted(mid).await {
                    ok = mid;
                } else {
                    refused = mid;
                }
            }
            Some(ok)
        };
        let mut cases = Vec::new();
        if let Some(n) = largest {
            cases.push((format!("largest accepted, n = {n}"), (kind.make)(n)));
        }
        if largest != Some(longest) {
            cases.push((format!("refused, n = {longest}"), (kind.make)(longest)));
        }
        for (label, query) in cases {
            let (_, status, message) = attempt(&client, &base, &buyer, &query).await;
            let mut one = Vec::new();
            for _ in 0..rounds {
                one.push(attempt(&client, &base, &buyer, &query).await.0);
            }
            let mut four = Vec::new();
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let (client, base, buyer, query) =
                    (client.clone(), base.clone(), buyer.clone(), query.clone());
                tasks.push(tokio::spawn(async move {
                    let mut took = Vec::new();
                    for _ in 0..rounds {
                        took.push(attempt(&client, &base, &buyer, &query).await.0);
                    }
                    took
                }));
            }
            for task in tasks {
                four.extend(task.await.unwrap());
            }
            one.sort();
            four.sort();
            println!(
                "store {store}: hostile {}, {label} ({} chars, {status}{}): 1 client p50 {:.2} ms, p99 {:.2} ms; 4 clients p50 {:.2} ms, p99 {:.2} ms",
                kind.name,
                query.chars().count(),
                message.map(|m| format!(": {m}")).unwrap_or_default(),
                percentile(&one, 0.5),
                percentile(&one, 0.99),
                percentile(&four, 0.5),
                percentile(&four, 0.99),
            );
            all_one.extend(one);
            all_four.extend(four);
        }
    }
    all_one.sort();
    all_four.sort();
    println!(
        "store {store}: hostile queries, all kinds ({} and {} searches): 1 client p99 {:.2} ms (max {:.2} ms); 4 clients p99 {:.2} ms (max {:.2} ms)",
        all_one.len(),
        all_four.len(),
        percentile(&all_one, 0.99),
        percentile(&all_one, 1.0),
        percentile(&all_four, 0.99),
        percentile(&all_four, 1.0),
    );
    stop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One search that may be refused: its time, status and, for a 422, the message on `query`.
async fn attempt(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    query: &str,
) -> (Duration, u16, Option<String>) {
    let started = Instant::now();
    let response = client
        .post(format!("{base}/v1/search"))
        .bearer_auth(token)
        .json(&json!({"query": query, "limit": 10}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let took = started.elapsed();
    assert!(
        status == 200 || status == 422,
        "hostile query answered {status}: {body}"
    );
    let message = body["error"]["details"]["fields"]["query"]
        .as_str()
        .map(str::to_owned);
    (took, status, message)
}
