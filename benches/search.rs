//! Embedded (qdrant-edge) search latency on random 1280-d unit vectors.
//!
//! `cargo bench --bench search` builds each store once in a temp dir (upsert in
//! batches, `optimize()` to build the HNSW index), then measures
//! `VectorStore::search` with limit 10, unfiltered and with a path-prefix filter.
//! Sizes default to 10000 and 100000; override with
//! `PIXDEX_BENCH_SIZES=10000,50000`. Build/optimize times are printed.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pixdex::vectors::{Filter, Payload, Point, VectorStore, VectorsConfig};

const DIM: usize = 1280;
const BATCH: usize = 1000;

struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit_vector(&mut self) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIM).map(|_| (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
}

fn payload(id: u64) -> Payload {
    Payload {
        asset_id: id as i64,
        path: format!("/photos/{}/{}/img{id}.jpg", 2000 + id % 25, id % 12),
        session_ids: vec![(id % 7) as i64],
        category_id: Some((id % 5) as i64),
        labels: Vec::new(),
        indexed_at: 1_700_000_000_000 + id as i64,
        model: "efficientnet-lite0".into(),
        width: Some(640),
        height: Some(480),
    }
}

fn sizes() -> Vec<usize> {
    std::env::var("PIXDEX_BENCH_SIZES").ok().map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect()).unwrap_or_else(|| vec![10_000, 100_000])
}

async fn build(dir: &Path, n: usize) -> VectorStore {
    let cfg = VectorsConfig::embedded(dir);
    let store = VectorStore::open(&cfg, "bench", DIM).await.expect("open");
    let mut rng = Rng(n as u64);
    let t = Instant::now();
    let mut id = 0u64;
    while (id as usize) < n {
        let batch: Vec<Point> = (0..BATCH.min(n - id as usize))
            .map(|_| {
                id += 1;
                Point { id, vector: rng.unit_vector(), payload: payload(id) }
            })
            .collect();
        store.upsert(batch).await.expect("upsert");
    }
    store.flush().await.expect("flush");
    let upsert = t.elapsed();
    let t = Instant::now();
    store.optimize().await.expect("optimize");
    let optimize = t.elapsed();
    let count = store.count().await.expect("count");
    eprintln!(
        "[bench search] n={n}: count={count} upsert {:.1}s ({:.0} points/s), optimize {:.1}s",
        upsert.as_secs_f64(),
        n as f64 / upsert.as_secs_f64(),
        optimize.as_secs_f64()
    );
    assert_eq!(count, n as u64);
    store
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("embedded_search_limit10");
    group.sample_size(50).measurement_time(Duration::from_secs(8));
    for n in sizes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = rt.block_on(build(tmp.path(), n));
        let mut rng = Rng(0xBEEF);
        let queries: Vec<Vec<f32>> = (0..64).map(|_| rng.unit_vector()).collect();
        let prefix = Filter { path_prefix: Some("/photos/2003".into()), ..Default::default() };

        // Sanity: a stored vector finds itself.
        let mut again = Rng(n as u64);
        let v0 = again.unit_vector();
        let hit = rt.block_on(store.search(&v0, 1, 0, &Filter::default())).unwrap();
        assert_eq!(hit[0].id, 1, "self-search");

        // Latency percentiles over 1000 searches (criterion reports means).
        for (name, f) in [("unfiltered", Filter::default()), ("path_prefix_4pct", prefix.clone())] {
            let mut lat: Vec<f64> = (0..1000)
                .map(|k| {
                    let t = std::time::Instant::now();
                    rt.block_on(store.search(&queries[k % queries.len()], 10, 0, &f)).unwrap();
                    t.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            lat.sort_by(|a, b| a.total_cmp(b));
            eprintln!("[bench search] n={n} {name}: p50 {:.2} ms, p99 {:.2} ms (1000 searches, limit 10)", lat[499], lat[989]);
        }

        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("unfiltered", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                rt.block_on(store.search(&queries[i], 10, 0, &Filter::default())).unwrap()
            })
        });
        group.bench_with_input(BenchmarkId::new("path_prefix_4pct", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                rt.block_on(store.search(&queries[i], 10, 0, &prefix)).unwrap()
            })
        });
        drop(store);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
