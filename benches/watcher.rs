//! Watcher benches: a reconcile of 100,000 unchanged files (the cost of the periodic and
//! start-up scan), and event → catalogued latency (settle time + the work after it).
//!
//! `cargo bench --bench watcher`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pixdex::catalog::Catalog;
use pixdex::config::{LibraryConfig, WatchMode};
use pixdex::library::Library;
use pixdex::watcher::{NoVectors, Watcher};

const FILES: usize = 100_000;

fn library(root: &Path, watch: WatchMode, settle_ms: u64) -> Library {
    Library::new(LibraryConfig {
        watch,
        poll_interval: Duration::from_secs(1),
        settle: Duration::from_millis(settle_ms),
        rescan_interval: Duration::from_secs(86_400),
        roots: vec![std::fs::canonicalize(root).unwrap()],
        extensions: vec!["jpg".into()],
        ignored: vec![],
    })
}

fn start(rt: &tokio::runtime::Runtime, dir: &Path, root: &Path, watch: WatchMode, settle_ms: u64) -> (Watcher, Catalog) {
    let url = format!("sqlite://{}", dir.join("catalog.db").display());
    let catalog = rt.block_on(Catalog::connect(&url, 4)).unwrap();
    let w = Watcher::start(Arc::new(library(root, watch, settle_ms)), catalog.clone(), Arc::new(NoVectors), rt.handle().clone(), Box::new(|| {}));
    (w, catalog)
}

fn wait_for(rt: &tokio::runtime::Runtime, catalog: &Catalog, n: i64, limit: Duration) {
    let t = Instant::now();
    while rt.block_on(catalog.count_assets()).unwrap() < n {
        assert!(t.elapsed() < limit, "catalogued {} of {n}", rt.block_on(catalog.count_assets()).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reconcile_unchanged(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lib");
    for d in 0..FILES / 100 {
        let sub = root.join(format!("{:03}/{:03}", d / 100, d % 100));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..100 {
            std::fs::write(sub.join(format!("{f:03}.jpg")), b"").unwrap();
        }
    }
    // Old enough to be settled.
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (w, catalog) = start(&rt, dir.path(), &root, WatchMode::Off, 100);
    wait_for(&rt, &catalog, FILES as i64, Duration::from_secs(600));
    eprintln!("first reconcile (catalogues {FILES} new files): {:?}", t.elapsed());
    let canon = std::fs::canonicalize(&root).unwrap();
    let mut g = c.benchmark_group("watcher");
    g.sample_size(10);
    g.bench_function("reconcile_100k_unchanged", |b| {
        b.iter(|| {
            let r = rt.block_on(w.scan(canon.clone(), false)).unwrap();
            assert_eq!((r.discovered, r.created, r.updated, r.removed), (FILES as u64, 0, 0, 0));
        })
    });
    g.finish();
    w.shutdown();
}

fn event_latency(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lib");
    std::fs::create_dir_all(&root).unwrap();
    let settle_ms = 200;
    let (w, catalog) = start(&rt, dir.path(), &root, WatchMode::Native, settle_ms);
    std::thread::sleep(Duration::from_millis(500));
    let canon: PathBuf = std::fs::canonicalize(&root).unwrap();
    let mut i = 0u64;
    let mut g = c.benchmark_group("watcher");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function(format!("event_to_catalogued_settle_{settle_ms}ms"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                i += 1;
                let p = canon.join(format!("e{i}.jpg"));
                let t = Instant::now();
                std::fs::write(&p, b"x").unwrap();
                let key = p.to_string_lossy().into_owned();
                while rt.block_on(catalog.asset_by_path(&key)).unwrap().is_none() {
                    std::thread::sleep(Duration::from_millis(2));
                }
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
    w.shutdown();
}

criterion_group!(benches, reconcile_unchanged, event_latency);
criterion_main!(benches);
