//! pixdex's side of the comparison with the Python pipeline (`benches/compare/run`).
//!
//! `cargo bench --bench compare -- --corpus DIR [--threads 2] [--batch 16] [--repeat 3]`
//!
//! Rows, each the best of `--repeat` timed runs after one warm-up run (as the Python side):
//! - `decode_img_s`: `decode_for_embedding` (libjpeg-turbo DCT-scaled decode for JPEG) + the
//!   resize/normalize step to the 224×224 model input, over `--threads` threads, no model;
//! - `model_img_s`: the model alone (pixdex CPU kernels) on preprocessed batches of `--batch`;
//! - `end_to_end_img_s`: the real daemon pipeline — a session over the corpus on an SQLite
//!   catalog, claimed, decoded by `--threads` decoders, resized, embedded, L2-normalized and
//!   written to embedded qdrant-edge, until the session reads `completed`. (The Python side
//!   writes nothing anywhere; pixdex's row includes its catalog and vector-store writes.)
//!
//! Prints one JSON line `{"side":"pixdex",...}` on stdout; progress and per-stage counters go to
//! stderr. Weights from `PIXDEX_MODEL` or `models/efficientnet-lite0.pth`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use pixdex::decode::{DecodeLimits, decode_for_embedding};
use pixdex::embed::preprocess::{IMAGE_LEN, cpu_resize_normalize};
use pixdex::embed::{DeviceChoice, Embedder};

#[path = "../common/indexing.rs"]
mod indexing;
use indexing::Rig;

struct Args {
    corpus: PathBuf,
    threads: usize,
    batch: usize,
    repeat: usize,
}

fn args() -> Args {
    let mut a = Args { corpus: PathBuf::new(), threads: 2, batch: 16, repeat: 3 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--corpus" => a.corpus = PathBuf::from(value("--corpus")),
            "--threads" => a.threads = value("--threads").parse().expect("--threads N"),
            "--batch" => a.batch = value("--batch").parse().expect("--batch N"),
            "--repeat" => a.repeat = value("--repeat").parse().expect("--repeat N"),
            _ => {} // cargo's own `--bench`
        }
    }
    a
}

/// `images / best time` over one warm-up run and `repeat` timed runs.
fn best_of(name: &str, images: usize, repeat: usize, mut run: impl FnMut()) -> f64 {
    run();
    let mut best = f64::INFINITY;
    for i in 0..repeat.max(1) {
        let t = Instant::now();
        run();
        let s = t.elapsed().as_secs_f64();
        eprintln!("  {name} run {}/{repeat}: {s:.3}s ({:.1} img/s)", i + 1, images as f64 / s);
        best = best.min(s);
    }
    images as f64 / best
}

/// Decode + resize/normalize every file over `threads` threads; returns the model inputs.
fn decode_all(files: &[PathBuf], threads: usize) -> Vec<Vec<f32>> {
    let limits = DecodeLimits::default();
    let next = AtomicUsize::new(0);
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); files.len()];
    let slots: Vec<std::sync::Mutex<&mut Vec<f32>>> = out.iter_mut().map(std::sync::Mutex::new).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    let d = decode_for_embedding(path, &limits).unwrap_or_else(|e| panic!("{e}"));
                    let mut buf = vec![0f32; IMAGE_LEN];
                    cpu_resize_normalize(&d.image, &mut buf);
                    **slots[i].lock().unwrap() = buf;
                }
            });
        }
    });
    drop(slots);
    out
}

/// Peak resident set (VmHWM) of this process in MB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn end_to_end(files: &[PathBuf], corpus: &Path, weights: &Path, a: &Args) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let embedder = Embedder::load(weights, DeviceChoice::Cpu, a.batch).unwrap();
    let mut rig = Rig::new(rt, corpus, &["jpg", "jpeg", "png"], embedder, a.threads, a.batch);
    let rate = best_of("end-to-end", files.len(), a.repeat, || {
        let (processed, failed) = rig.index_once();
        assert_eq!(processed, files.len() as i64, "every file embedded");
        assert_eq!(failed, 0, "no file failed");
    });
    let st = rig.pipeline.status();
    for s in &st.stages {
        eprintln!("  {:<7} items {:>5}  busy {:>5.1}% of {} worker(s)", s.name, s.items, s.busy_share * 100.0, s.workers);
    }
    rig.pipeline.shutdown();
    rate
}

fn main() {
    let a = args();
    if a.corpus.as_os_str().is_empty() {
        eprintln!("compare: --corpus DIR is required (benches/compare/run makes one)");
        return;
    }
    let weights =
        std::env::var_os("PIXDEX_MODEL").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/efficientnet-lite0.pth"));
    if !weights.is_file() {
        eprintln!("SKIPPED compare: run scripts/fetch-model {}", weights.display());
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&a.corpus)
        .unwrap_or_else(|e| panic!("{}: {e}", a.corpus.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|x| x.to_str()).is_some_and(|x| ["jpg", "jpeg", "png"].contains(&x.to_ascii_lowercase().as_str())))
        .collect();
    files.sort();
    let n = files.len();
    assert!(n > 0, "no images in {}", a.corpus.display());
    eprintln!("pixdex compare: {n} files in {}, threads {}, batch {}, jpeg via {}", a.corpus.display(), a.threads, a.batch, pixdex::decode::jpeg_backend());

    eprintln!("decode:");
    let decode = best_of("decode", n, a.repeat, || {
        decode_all(&files, a.threads);
    });

    eprintln!("model:");
    let inputs = decode_all(&files, a.threads);
    let batches: Vec<(Vec<f32>, usize)> = inputs.chunks(a.batch).map(|c| (c.concat(), c.len())).collect();
    drop(inputs);
    let embedder = Embedder::load(&weights, DeviceChoice::Cpu, a.batch).unwrap();
    eprintln!("  on {}", embedder.device_name());
    let model = best_of("model", n, a.repeat, || {
        for (x, k) in &batches {
            embedder.embed_normalized(x, *k).unwrap();
        }
    });
    drop((batches, embedder));

    eprintln!("end-to-end:");
    let e2e = end_to_end(&files, &a.corpus, &weights, &a);

    let corpus = a.corpus.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    println!(
        "{{\"side\":\"pixdex\",\"corpus\":\"{corpus}\",\"images\":{n},\"threads\":{},\"batch\":{},\"decode_img_s\":{:.2},\"model_img_s\":{:.2},\"end_to_end_img_s\":{:.2},\"rss_mb\":{:.1}}}",
        a.threads,
        a.batch,
        decode,
        model,
        e2e,
        peak_rss_mb()
    );
}
