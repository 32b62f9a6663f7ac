//! CLIP on the CPU. Search by words: tokenize + text tower (pixdex's CPU kernels) + ANN over
//! 100 000 512-d vectors in the embedded store — the whole query, and each part. The image
//! tower: ms per image on pixdex's CPU kernels (`model.device = "cpu"`) and on Burn flex, at
//! batch 1 and 16 (printed, median of a few calls after a warm-up call).
//!
//! `cargo bench --bench clip`; `PIXDEX_BENCH_CLIP=image` (or `text`) runs only that part. The model is a full-size ViT-B-32 with open_clip's exact keys
//! and shapes and random values (latency does not depend on the values; no CLIP weights ship
//! with pixdex), written once under the target directory. The store is built once per run
//! (upsert + `optimize()`), its build time printed. Also prints p50/p95 over 200 queries.
//! `PIXDEX_BENCH_SIZES=10000` for a smaller store.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pixdex::embed::{DeviceChoice, Embedder, IMAGE_FLOATS, ModelKind, ModelSpec};
use pixdex::vectors::{Filter, Payload, Point, VectorStore, VectorsConfig};

const DIM: usize = 512;

const QUERIES: [&str; 8] = [
    "a dog on a beach at sunset",
    "cat",
    "two children playing football in the rain",
    "a red car parked in the snow",
    "an aerial view of a city skyline at night with lights",
    "espresso",
    "a black and white photo of an old man reading a newspaper on a bench in the park",
    "mountains",
];

fn spec() -> ModelSpec {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo.join("target"));
    let path = target.join("bench-clip-vit-b-32-random.safetensors");
    if !path.is_file() {
        let json = std::fs::read_to_string(repo.join("tests/fixtures/clip/vit-b-32-shapes.json")).expect("shapes fixture");
        let t = Instant::now();
        pixdex::embed::clip::random::write_safetensors(&path, &pixdex::embed::clip::random::vit_b_32_shapes(&json)).expect("write weights");
        eprintln!("wrote a random full-size ViT-B-32 in {:.1} s", t.elapsed().as_secs_f64());
    }
    let precision = std::env::var("PIXDEX_BENCH_PRECISION").ok().map(|p| p.parse().expect("PIXDEX_BENCH_PRECISION: f32 or bf16")).unwrap_or_default();
    ModelSpec { kind: ModelKind::Clip("ViT-B-32".parse().unwrap()), weights: path, vocab: repo.join(pixdex::embed::clip::DEFAULT_VOCAB), precision }
}

fn model() -> Embedder {
    Embedder::load_spec(&spec(), DeviceChoice::Cpu, 1).expect("load CLIP (scripts/fetch-clip-vocab for the merges)")
}

/// ms per image of the image tower on pixdex's kernels and on Burn flex, batch 1 and 16.
fn image_tower() {
    const BATCH: usize = 16;
    let mut s = 0x1234_5678u32;
    let input: Vec<f32> = (0..BATCH * IMAGE_FLOATS)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 256) as f32 / 128.0 - 1.0
        })
        .collect();
    for choice in [DeviceChoice::Cpu, DeviceChoice::Flex] {
        let e = Embedder::load_spec_images(&spec(), choice, BATCH).expect("load CLIP");
        for (n, calls) in [(1, 9), (BATCH, 5)] {
            let x = &input[..n * IMAGE_FLOATS];
            e.embed_normalized(x, n).unwrap();
            // Wall time, and the process's CPU time: on a machine shared with other work the
            // wall time grows, the CPU time per image much less.
            let mut runs: Vec<(f64, f64)> = (0..calls)
                .map(|_| {
                    let (t, c) = (Instant::now(), cpu_seconds());
                    std::hint::black_box(e.embed_normalized(x, n).unwrap());
                    (t.elapsed().as_secs_f64() * 1000.0 / n as f64, (cpu_seconds() - c) * 1000.0 / n as f64)
                })
                .collect();
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut cpu: Vec<f64> = runs.iter().map(|r| r.1).collect();
            cpu.sort_by(f64::total_cmp);
            eprintln!(
                "CLIP ViT-B/32 image tower, {}, batch {n}: {:.1} ms/img (median of {calls} calls; {:.1}–{:.1}); CPU time {:.1} ms/img",
                e.device_name(),
                runs[calls / 2].0,
                runs[0].0,
                runs[calls - 1].0,
                cpu[calls / 2]
            );
        }
    }
}

/// CPU seconds used by this process so far (all threads).
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn unit(seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..DIM)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

async fn store(dir: &std::path::Path, n: usize) -> VectorStore {
    let store = VectorStore::open(&VectorsConfig::embedded(dir), "bench-clip", DIM).await.expect("open store");
    let t = Instant::now();
    for start in (0..n).step_by(1000) {
        let points: Vec<Point> = (start..(start + 1000).min(n))
            .map(|i| Point {
                id: i as u64 + 1,
                vector: unit(i as u64),
                payload: Payload {
                    asset_id: i as i64 + 1,
                    path: format!("/photos/{}/img{i}.jpg", i % 50),
                    session_ids: vec![1],
                    category_id: None,
                    labels: Vec::new(),
                    indexed_at: 1_700_000_000_000,
                    model: "clip".into(),
                    width: Some(640),
                    height: Some(480),
                },
            })
            .collect();
        store.upsert(points).await.expect("upsert");
    }
    let upsert = t.elapsed();
    store.optimize().await.expect("optimize");
    eprintln!("{n} vectors: upsert {:.1} s, optimize {:.1} s", upsert.as_secs_f64(), (t.elapsed() - upsert).as_secs_f64());
    store
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(v[v.len() / 2]), ms(v[v.len() * 95 / 100]))
}

fn bench(c: &mut Criterion) {
    let part = std::env::var("PIXDEX_BENCH_CLIP").unwrap_or_default();
    if part != "text" {
        image_tower();
    }
    if part == "image" {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = model();
    let n = std::env::var("PIXDEX_BENCH_SIZES").ok().and_then(|s| s.split(',').next().and_then(|x| x.trim().parse().ok())).unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(store(dir.path(), n));
    let Embedder::Clip(clip) = &e else { unreachable!() };
    let filter = Filter::default();

    // p50/p95 of the whole query, as the search path runs it (tokenize inside embed_text).
    let mut times = Vec::new();
    // Text tower alone, CPU time per query (all threads; robust to a shared machine).
    let cpu0 = cpu_seconds();
    for i in 0..50 {
        std::hint::black_box(e.embed_text(QUERIES[i % QUERIES.len()]).unwrap());
    }
    eprintln!("text tower: CPU time {:.1} ms per query (mean of 50, queries of 1–17 words)", (cpu_seconds() - cpu0) * 1000.0 / 50.0);
    for i in 0..200 {
        let q = QUERIES[i % QUERIES.len()];
        let t = Instant::now();
        let v = e.embed_text(q).unwrap();
        let hits = rt.block_on(store.search(&v, 20, 0, &filter)).unwrap();
        times.push(t.elapsed());
        assert_eq!(hits.len(), 20);
    }
    let (p50, p95) = percentiles(times);
    eprintln!("text query at {n} vectors (tokenize + text tower + ANN, limit 20): p50 {p50:.1} ms, p95 {p95:.1} ms over 200 queries");

    let mut g = c.benchmark_group("clip_text_query");
    g.sample_size(30);
    g.bench_function("tokenize", |b| b.iter(|| clip.tokenizer().tokenize(QUERIES[6])));
    g.bench_function("text_tower_short", |b| b.iter(|| e.embed_text(QUERIES[0]).unwrap()));
    g.bench_function("text_tower_long", |b| b.iter(|| e.embed_text(QUERIES[6]).unwrap()));
    let v = e.embed_text(QUERIES[0]).unwrap();
    g.bench_function(format!("ann_{n}"), |b| b.iter(|| rt.block_on(store.search(&v, 20, 0, &filter)).unwrap()));
    g.bench_function(format!("whole_query_{n}"), |b| {
        b.iter(|| {
            let v = e.embed_text(QUERIES[0]).unwrap();
            rt.block_on(store.search(&v, 20, 0, &filter)).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
