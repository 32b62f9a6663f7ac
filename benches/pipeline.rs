//! End-to-end pipeline throughput: a generated corpus of photo-sized PNGs (640×480), claimed,
//! decoded, resized, embedded and written to embedded qdrant-edge, with each stage's busy
//! share printed after the run.
//!
//! `cargo bench --bench pipeline` (needs `scripts/fetch-model`). Defaults: 64 images, CPU
//! (pixdex's kernels), batch 8, 2 decoders. On a GPU machine: `PIXDEX_BENCH_DEVICE=wgpu`
//! (`cpu`/`wgpu`/`auto`), `PIXDEX_BENCH_BATCH`, `PIXDEX_BENCH_IMAGES`, `PIXDEX_BENCH_DECODERS`;
//! weights from `PIXDEX_MODEL` or `models/efficientnet-lite0.pth`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pixdex::embed::{DeviceChoice, Embedder};

#[path = "common/indexing.rs"]
mod indexing;
use indexing::Rig;

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
    let embedder = Embedder::load(&weights, device, batch).unwrap();
    let device_name = embedder.device_name();
    eprintln!("pipeline bench on {device_name}: {images} images, batch {batch}, {decoders} decoders");
    let mut rig = Rig::new(rt, &root, &["png"], embedder, decoders, batch);
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    let kind = if device_name.starts_with("wgpu") { "wgpu" } else { "cpu" };
    g.bench_function(format!("end_to_end_{images}_png_640x480_{kind}_batch{batch}"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let (processed, _) = rig.index_once();
                assert_eq!(processed, images as i64);
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
    let st = rig.pipeline.status();
    eprintln!("pipeline: {:.1} images/s over the last minute", st.images_per_second);
    for s in &st.stages {
        eprintln!("  {:<7} items {:>5}  busy {:>5.1}% of {} worker(s)", s.name, s.items, s.busy_share * 100.0, s.workers);
    }
    rig.pipeline.shutdown();
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
