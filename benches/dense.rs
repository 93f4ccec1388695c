//! Benchmark: the dense leg's costs, in process.
//!
//! 1. Embedding throughput of the default encoder (the bundled weights on 8-bit integers) and of
//!    the f32 reference (`pocket-f32`), alternated, on real passages: CISI abstracts (from
//!    `IPTO_BENCH_QUALITY_DIR`, default `../shared/data/cisi`) cut into passages as the index cuts
//!    them and embedded after their title as the indexer does, through the indexer's path; and
//!    the two encoders' agreement (cosine).
//! 2. Query embedding latency (a short question), p50/p99.
//! 3. The exact scan over 100,000 and 200,000 passage vectors (an index of 100,000 chunks holds
//!    about 200,000 passages), objects by their best passage, top 100: p50/p99, and the memory the
//!    vectors take per 100,000 passages.
//!
//! Run: `cargo bench --bench dense`. `IPTO_BENCH_DENSE_PASSAGES` (default 512) sets how many
//! passages are embedded.

use std::time::Instant;

/// The server's allocator (`src/main.rs`), so that the encoder's buffers cost what they cost there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ipto::search::dense::{DenseStore, ObjectVectors, PassageVector, Quantized};
use ipto::search::embed::{Embedder, Pocket, PocketF32};
use ipto::search::embedding::embed_parallel;
use ipto::search::extract;

fn main() {
    let count: usize = std::env::var("IPTO_BENCH_DENSE_PASSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let encoder = Pocket::new().expect("the bundled encoder loads");
    let reference = PocketF32::new().expect("the reference encoder loads");
    let passages = cisi_passages(count);
    println!(
        "== embedding: {} passages of CISI as the indexer embeds them (after the title), mean {:.0} characters",
        passages.len(),
        passages.iter().map(|p| p.chars().count()).sum::<usize>() as f64
            / passages.len().max(1) as f64
    );
    let texts: Vec<&str> = passages.iter().map(String::as_str).collect();
    encoder.embed(&["warm up"]).unwrap();
    reference.embed(&["warm up"]).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Alternated, so that both see the same machine.
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        for (i, e) in [&encoder as &dyn Embedder, &reference]
            .into_iter()
            .enumerate()
        {
            let started = Instant::now();
            embed_parallel(e, &texts).unwrap();
            rates[i].push(texts.len() as f64 / started.elapsed().as_secs_f64());
        }
    }
    let best = |r: &[f64]| r.iter().copied().fold(0.0, f64::max);
    println!(
        "  pocket (int8, the default), indexer path, {cores} cores: {:>7.1} passages/s (runs: {:.1?})",
        best(&rates[0]),
        rates[0]
    );
    println!(
        "  pocket-f32 (the reference), indexer path, {cores} cores: {:>7.1} passages/s (runs: {:.1?})",
        best(&rates[1]),
        rates[1]
    );
    let vectors = encoder.embed(&texts[..texts.len().min(64)]).unwrap();
    let expected = reference.embed(&texts[..texts.len().min(64)]).unwrap();
    let cosines: Vec<f32> = vectors
        .iter()
        .zip(&expected)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum())
        .collect();
    println!(
        "  agreement with the reference: cosine min {:.5}, mean {:.5}",
        cosines.iter().copied().fold(1.0, f32::min),
        cosines.iter().sum::<f32>() / cosines.len().max(1) as f32
    );

    let question = "why are shipments from the port delayed this month";
    let mut times = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        encoder.embed(&[question]).unwrap();
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let (p50, p99) = percentiles(&mut times);
    println!("== query embedding: p50 {p50:.2} ms, p99 {p99:.2} ms");

    let dimensions = encoder.embed(&["width"]).unwrap()[0].len();
    for total in [100_000usize, 200_000] {
        let (store, datasets) = synthetic(total, dimensions);
        let bytes = store.vector_bytes();
        let mut rng = Lcg(7);
        let mut times = Vec::new();
        for _ in 0..200 {
            let q = unit(&mut rng, dimensions);
            let started = Instant::now();
            let found = store.nearest(&q, &datasets, 100, true);
            times.push(started.elapsed().as_secs_f64() * 1e3);
            assert_eq!(found.len(), 100);
        }
        let (p50, p99) = percentiles(&mut times);
        println!(
            "== exact scan of {total} passages (objects by best passage, top 100): p50 {p50:.2} ms, p99 {p99:.2} ms; vectors {:.1} MiB ({:.1} MiB per 100,000 passages)",
            bytes as f64 / 1048576.0,
            bytes as f64 / 1048576.0 * 100_000.0 / total as f64
        );
    }
}

/// Passages of CISI's abstracts as the index cuts them, or generated prose if it is absent.
fn cisi_passages(count: usize) -> Vec<String> {
    let dir = std::env::var("IPTO_BENCH_QUALITY_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/cisi").to_owned());
    let all = std::fs::read(format!("{dir}/CISI.ALL"))
        .map(|b| b.into_iter().map(char::from).collect::<String>())
        .unwrap_or_else(|_| {
            "The library catalogue lists every holding by author and subject. ".repeat(2000)
        });
    let mut out = Vec::new();
    for document in all.split("\n.I ") {
        let field = |name: &str| {
            document
                .split(&format!("\n.{name}\n"))
                .nth(1)
                .map(|w| w.split("\n.").next().unwrap_or(w).trim().to_owned())
                .unwrap_or_default()
        };
        let title = field("T").split_whitespace().collect::<Vec<_>>().join(" ");
        let text = format!("{title}\n\n{}", field("W"));
        for chunk in extract::chunks(&text) {
            for passage in extract::passages(chunk.text) {
                if passage.text.trim().is_empty() {
                    continue;
                }
                out.push(if chunk.start + passage.start > 0 && !title.is_empty() {
                    format!("{title}. {}", passage.text)
                } else {
                    passage.text.to_owned()
                });
            }
        }
        if out.len() >= count {
            break;
        }
    }
    out.truncate(count);
    out
}

/// `total` random unit vectors, ten passages an object, over 50 datasets.
fn synthetic(total: usize, dimensions: usize) -> (DenseStore, Vec<String>) {
    let mut rng = Lcg(1);
    let mut store = DenseStore::default();
    let datasets: Vec<String> = (0..50).map(|d| format!("dset_{d}")).collect();
    for object in 0..total / 10 {
        let passages = (0..10)
            .map(|p| PassageVector {
                chunk_start: 0,
                start: p * 500,
                end: p * 500 + 500,
                vector: Quantized::of(&unit(&mut rng, dimensions)),
            })
            .collect();
        store.insert(
            format!("obj_{object}"),
            ObjectVectors {
                dataset_id: datasets[object % datasets.len()].as_str().into(),
                passages,
            },
        );
    }
    (store, datasets)
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
}

fn unit(rng: &mut Lcg, dimensions: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dimensions).map(|_| rng.next()).collect();
    ipto::search::embed::normalised(v).expect("a random vector is not zero")
}

fn percentiles(times: &mut [f64]) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (at(0.5), at(0.99))
}
