//! Peak memory while indexing huge images, with and without the decode memory budget
//! (`pipeline.memory_mb`): a corpus of 40 MP PNGs (full-size decodes: ~280 MB each in flight)
//! through the real pipeline (SQLite + qdrant-edge, pixdex's CPU model, 2 decoders), peak RSS
//! (VmHWM, reset between runs through /proc/self/clear_refs) and wall time per budget.
//!
//! `cargo bench --bench huge` (needs `scripts/fetch-model`). Knobs: `PIXDEX_BENCH_IMAGES`
//! (default 4), `PIXDEX_BENCH_MEGAPIXELS` (default 40).

#[path = "common/indexing.rs"]
mod indexing;

use std::path::PathBuf;
use std::time::Instant;

use pixdex::decode::{Budget, DecodeLimits, MemoryBudget};
use pixdex::embed::{DeviceChoice, Embedder};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(default)
}

fn status_kb(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` / `--list`: nothing to run
    }
    let weights = std::env::var_os("PIXDEX_MODEL").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("models/efficientnet-lite0.pth")
    });
    let images = knob("PIXDEX_BENCH_IMAGES", 4);
    let mp = knob("PIXDEX_BENCH_MEGAPIXELS", 40);
    let (w, h) = ((mp as f64 * 1e6 * 4.0 / 3.0).sqrt() as u32, (mp as f64 * 1e6 * 3.0 / 4.0).sqrt() as u32);
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    for i in 0..images {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x / 7 + i as u32) as u8, (y / 5) as u8, ((x + y) / 11) as u8]));
        let p = dir.path().join(format!("huge/{i:02}.png"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        img.save(&p).unwrap();
    }
    eprintln!("{images} PNGs of {w}x{h} ({mp} MP) written in {:.1} s", t.elapsed().as_secs_f64());
    println!("| decode memory budget | peak RSS | indexing wall time | decodes that waited |");
    println!("|---|---|---|---|");
    for budget_mb in [None, Some(1024u64), Some(320)] {
        let budget = budget_mb.map(|mb| MemoryBudget::new(mb * 1024 * 1024));
        let limits = DecodeLimits { max_megapixels: 100.0, memory: Budget(budget.clone()), ..DecodeLimits::default() };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let embedder = Embedder::load(&weights, "cpu".parse::<DeviceChoice>().unwrap(), 8).expect("model weights (scripts/fetch-model)");
        let mut rig = indexing::Rig::with_limits(rt, dir.path(), &["png"], embedder, 2, 8, limits);
        // Reset the peak (VmHWM) so each run reports its own.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let base = status_kb("VmRSS:");
        let t = Instant::now();
        let (done, failed) = rig.index_once();
        let wall = t.elapsed().as_secs_f64();
        let peak = status_kb("VmHWM:");
        assert_eq!((done, failed), (images as i64, 0));
        let label = budget_mb.map(|m| format!("{m} MB")).unwrap_or_else(|| "none".into());
        let waits = budget.as_ref().map(|b| b.waits().to_string()).unwrap_or_else(|| "—".into());
        println!(
            "| {label} | {:.0} MB (+{:.0} over the idle rig) | {wall:.1} s | {waits} |",
            peak as f64 / 1024.0,
            (peak.saturating_sub(base)) as f64 / 1024.0
        );
        rig.pipeline.shutdown();
    }
}
