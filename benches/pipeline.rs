//! End-to-end pipeline throughput: a generated corpus of photo-sized PNGs (640×480), claimed,
//! decoded, resized, embedded and written to embedded qdrant-edge, with each stage's busy
//! share printed after the run.
//!
//! `cargo bench --bench pipeline` (needs `scripts/fetch-model`). Defaults: 64 images, CPU
//! (Burn flex), batch 8, 2 decoders. On a GPU machine: `PIXDEX_BENCH_DEVICE=wgpu`
//! (`cpu`/`wgpu`/`auto`), `PIXDEX_BENCH_BATCH`, `PIXDEX_BENCH_IMAGES`, `PIXDEX_BENCH_DECODERS`;
//! weights from `PIXDEX_MODEL` or `models/efficientnet-lite0.pth`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pixdex::catalog::Catalog;
use pixdex::config::{LibraryConfig, WatchMode};
use pixdex::embed::{DeviceChoice, Embedder};
use pixdex::library::Library;
use pixdex::pipeline::{Pipeline, PipelineConfig};
use pixdex::sessions::{CreateSession, Sessions};
use pixdex::vectors::{VectorStore, VectorsConfig};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(default)
}

fn corpus(root: &Path, images: u32) {
    for i in 0..images {
        let img = image::RgbImage::from_fn(640, 480, |x, y| image::Rgb([(x ^ i) as u8, (y.wrapping_mul(i + 1)) as u8, ((x + y) / 5) as u8]));
        let p = root.join(format!("set/{i:03}.png"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        img.save(p).unwrap();
    }
}

fn end_to_end(c: &mut Criterion) {
    let weights = std::env::var_os("PIXDEX_MODEL").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("models/efficientnet-lite0.pth")
    });
    let device: DeviceChoice = std::env::var("PIXDEX_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into()).parse().expect("PIXDEX_BENCH_DEVICE");
    let images = knob("PIXDEX_BENCH_IMAGES", 64) as u32;
    let batch = knob("PIXDEX_BENCH_BATCH", 8);
    let decoders = knob("PIXDEX_BENCH_DECODERS", 2);
    if !weights.is_file() {
        eprintln!("SKIPPED pipeline bench: run scripts/fetch-model {}", weights.display());
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lib");
    corpus(&root, images);
    let root = std::fs::canonicalize(&root).unwrap();
    let lib = || {
        Library::new(LibraryConfig {
            watch: WatchMode::Off,
            poll_interval: Duration::from_secs(1),
            settle: Duration::from_millis(100),
            rescan_interval: Duration::from_secs(3600),
            roots: vec![root.clone()],
            extensions: vec!["png".into()],
            ignored: vec![],
        })
    };
    let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let catalog = rt.block_on(Catalog::connect(&url, 4)).unwrap();
    let store = rt.block_on(VectorStore::open(&VectorsConfig::embedded(dir.path()), pixdex::embed::MODEL_NAME, pixdex::embed::DIM)).unwrap();
    let embedder = Embedder::load(&weights, device, batch).unwrap();
    let device_name = embedder.device_name();
    eprintln!("pipeline bench on {device_name}: {images} images, batch {batch}, {decoders} decoders");
    let sessions = Sessions::new(catalog.clone(), lib());
    let s = rt
        .block_on(sessions.create(CreateSession { name: "bench".into(), root_path: root.display().to_string(), live: true, ..Default::default() }, "api"))
        .unwrap();
    let cfg = PipelineConfig {
        decode_workers: decoders,
        resize_workers: 1,
        claim_batch: (2 * batch).max(16),
        lease: Duration::from_secs(600),
        limits: pixdex::decode::DecodeLimits::default(),
        owner: "bench".into(),
        max_attempts: pixdex::catalog::DEFAULT_MAX_ATTEMPTS,
    };
    let pipeline = Pipeline::start(cfg, embedder, store, catalog.clone(), rt.handle().clone());
    let mut first = true;
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    let kind = if device_name.starts_with("wgpu") { "wgpu" } else { "cpu" };
    g.bench_function(format!("end_to_end_{images}_png_640x480_{kind}_batch{batch}"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                if first {
                    rt.block_on(sessions.start(s.id)).unwrap();
                    first = false;
                } else {
                    rt.block_on(sessions.restart(s.id, false)).unwrap();
                }
                pipeline.wake();
                loop {
                    let st = rt.block_on(catalog.session(s.id)).unwrap().unwrap();
                    if st.status == pixdex::model::SessionStatus::Completed {
                        assert_eq!(st.processed_images, images as i64);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
    let st = pipeline.status();
    eprintln!("pipeline: {:.1} images/s over the last minute", st.images_per_second);
    for s in &st.stages {
        eprintln!("  {:<7} items {:>5}  busy {:>5.1}% of {} worker(s)", s.name, s.items, s.busy_share * 100.0, s.workers);
    }
    pipeline.shutdown();
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
