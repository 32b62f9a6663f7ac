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
//! `--model clip --weights FILE` runs the same rows with CLIP ViT-B/32 (open_clip keys, e.g. the
//! random full-size checkpoint `clip_export.py` writes) on pixdex's CPU kernels (`model.device =
//! "cpu"`: the host image tower), `--precision bf16` for `model.precision = "bf16"`. With
//! `--check FILE` (`clip_pipeline.py --way check` writes it) it first checks that its embeddings
//! agree with open_clip + torch: the image tower on the very pixels open_clip's preprocessing gave,
//! and end to end from the files (DCT-scaled decode + bilinear here, full decode + bicubic in
//! open_clip, draft + bicubic in the onnxruntime way); cosine >= 0.999 on both or it stops.
//!
//! Prints one JSON line `{"side":"pixdex",...}` on stdout; progress and per-stage counters go to
//! stderr. EfficientNet weights from `PIXDEX_MODEL` or `models/efficientnet-lite0.pth`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use pixdex::decode::{DecodeLimits, decode_for_embedding};
use pixdex::embed::preprocess::{IMAGE_LEN, SIZE, cpu_resize_normalize, normalize};
use pixdex::embed::{DeviceChoice, Embedder, ModelKind, ModelSpec, Precision};

#[path = "../common/indexing.rs"]
mod indexing;
use indexing::Rig;

struct Args {
    corpus: PathBuf,
    threads: usize,
    batch: usize,
    repeat: usize,
    /// `effnet` or `clip`.
    model: String,
    weights: Option<PathBuf>,
    precision: Precision,
    check: Option<PathBuf>,
}

fn args() -> Args {
    let mut a =
        Args { corpus: PathBuf::new(), threads: 2, batch: 16, repeat: 3, model: "effnet".into(), weights: None, precision: Precision::F32, check: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--corpus" => a.corpus = PathBuf::from(value("--corpus")),
            "--threads" => a.threads = value("--threads").parse().expect("--threads N"),
            "--batch" => a.batch = value("--batch").parse().expect("--batch N"),
            "--repeat" => a.repeat = value("--repeat").parse().expect("--repeat N"),
            "--model" => a.model = value("--model"),
            "--weights" => a.weights = Some(PathBuf::from(value("--weights"))),
            "--precision" => a.precision = value("--precision").parse().expect("--precision f32|bf16"),
            "--check" => a.check = Some(PathBuf::from(value("--check"))),
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
    proc_status_mb("VmHWM:")
}

/// A `/proc/self/status` memory line (`VmHWM:`, `VmRSS:`) in MB.
fn proc_status_mb(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// The model as the daemon loads it for the pipeline (`model.device = "cpu"`).
fn load(spec: &ModelSpec, batch: usize) -> Embedder {
    Embedder::load_spec_images(spec, DeviceChoice::Cpu, batch).unwrap_or_else(|e| panic!("load {}: {e}", spec.weights.display()))
}

fn end_to_end(files: &[PathBuf], corpus: &Path, spec: &ModelSpec, a: &Args) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let embedder = load(spec, a.batch);
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

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn rows(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array().expect("rows").iter().map(|r| r.as_array().expect("row").iter().map(|x| x.as_f64().expect("float") as f32).collect()).collect()
}

/// Agreement with open_clip + torch (and the onnxruntime way) on the files `clip_pipeline.py
/// --way check` chose. Returns (tower min cosine, end-to-end min cosine vs torch, vs onnxruntime).
fn check_clip(embedder: &Embedder, check: &Path, corpus: &Path) -> (f64, f64, f64) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(check).unwrap_or_else(|e| panic!("{}: {e}", check.display()))).expect("check JSON");
    let files: Vec<PathBuf> = v["files"].as_array().expect("files").iter().map(|f| corpus.join(f.as_str().expect("file name"))).collect();
    let k = files.len();
    // The u8 pixels open_clip's preprocess gave (resize + centre crop, before ToTensor), HWC.
    let pixels = std::fs::read(check.with_file_name(v["pixels"].as_str().expect("pixels"))).expect("check pixels");
    assert_eq!(pixels.len(), k * SIZE * SIZE * 3, "check pixels: {k} images of 224x224x3");
    let plane = SIZE * SIZE;
    let mut x = vec![0f32; k * IMAGE_LEN];
    for (img, out) in pixels.chunks_exact(plane * 3).zip(x.chunks_exact_mut(IMAGE_LEN)) {
        for (i, px) in img.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = normalize(px[c]);
            }
        }
    }
    let tower: Vec<Vec<f32>> =
        x.chunks(embedder.batch_size() * IMAGE_LEN).flat_map(|c| embedder.embed_normalized(c, c.len() / IMAGE_LEN).unwrap()).map(|e| e.vector).collect();
    let torch_tower = rows(&v["tower"]);
    let tower_min = tower.iter().zip(&torch_tower).map(|(a, b)| cosine(a, b)).fold(1.0, f64::min);
    // End to end: pixdex's own decode + resize, as the pipeline runs them.
    let mine: Vec<Vec<f32>> =
        decode_all(&files, 2).chunks(embedder.batch_size()).flat_map(|c| embedder.embed_normalized(&c.concat(), c.len()).unwrap()).map(|e| e.vector).collect();
    let min_vs = |key: &str| mine.iter().zip(rows(&v["end_to_end"][key])).map(|(a, b)| cosine(a, &b)).fold(1.0, f64::min);
    let (e2e_torch, e2e_ort) = (min_vs("torch"), min_vs("ort"));
    let mut others = Vec::new();
    for i in 0..k {
        for j in i + 1..k {
            others.push(cosine(&tower[i], &tower[j]));
        }
    }
    let mean_other = others.iter().sum::<f64>() / others.len().max(1) as f64;
    eprintln!(
        "check: {k} images; image tower vs open_clip+torch on the same pixels: min cosine {tower_min:.6}; end to end (own decode + resize) vs open_clip+torch: {e2e_torch:.4}, vs PIL draft+onnxruntime: {e2e_ort:.4}; for scale, two different images: mean cosine {mean_other:.4}"
    );
    assert!(tower_min >= 0.999, "pixdex's CLIP image tower disagrees with open_clip + torch: cosine {tower_min:.6} < 0.999");
    assert!(
        e2e_torch.min(e2e_ort) >= 0.999,
        "pixdex's CLIP embeddings of the files disagree with the Python sides': cosine {e2e_torch:.4} / {e2e_ort:.4} < 0.999"
    );
    (tower_min, e2e_torch, e2e_ort)
}

fn main() {
    let a = args();
    if a.corpus.as_os_str().is_empty() {
        eprintln!("compare: --corpus DIR is required (benches/compare/run makes one)");
        return;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let spec = match a.model.as_str() {
        "effnet" => {
            let weights =
                a.weights.clone().or_else(|| std::env::var_os("PIXDEX_MODEL").map(PathBuf::from)).unwrap_or_else(|| repo.join("models/efficientnet-lite0.pth"));
            if !weights.is_file() {
                eprintln!("SKIPPED compare: run scripts/fetch-model {}", weights.display());
                return;
            }
            ModelSpec::efficientnet(&weights)
        }
        "clip" => {
            let weights = a.weights.clone().expect("--model clip needs --weights FILE (benches/compare/clip_export.py writes one)");
            ModelSpec {
                kind: ModelKind::Clip("ViT-B-32".parse().unwrap()),
                weights,
                vocab: repo.join(pixdex::embed::clip::DEFAULT_VOCAB),
                precision: a.precision,
            }
        }
        other => panic!("--model {other}: expected effnet or clip"),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&a.corpus)
        .unwrap_or_else(|e| panic!("{}: {e}", a.corpus.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|x| x.to_str()).is_some_and(|x| ["jpg", "jpeg", "png"].contains(&x.to_ascii_lowercase().as_str())))
        .collect();
    files.sort();
    let n = files.len();
    assert!(n > 0, "no images in {}", a.corpus.display());
    eprintln!(
        "pixdex compare: {} on {n} files in {}, threads {}, batch {}, jpeg via {}",
        a.model,
        a.corpus.display(),
        a.threads,
        a.batch,
        pixdex::decode::jpeg_backend()
    );

    let embedder = load(&spec, a.batch);
    eprintln!(
        "  {} on {}; RSS after loading it: {:.0} MB (peak so far {:.0} MB)",
        embedder.model_name(),
        embedder.device_name(),
        proc_status_mb("VmRSS:"),
        peak_rss_mb()
    );
    let check = a.check.as_ref().map(|c| check_clip(&embedder, c, &a.corpus));

    eprintln!("decode:");
    let decode = best_of("decode", n, a.repeat, || {
        decode_all(&files, a.threads);
    });

    eprintln!("model:");
    let inputs = decode_all(&files, a.threads);
    let batches: Vec<(Vec<f32>, usize)> = inputs.chunks(a.batch).map(|c| (c.concat(), c.len())).collect();
    drop(inputs);
    let model = best_of("model", n, a.repeat, || {
        for (x, k) in &batches {
            embedder.embed_normalized(x, *k).unwrap();
        }
    });
    drop((batches, embedder));

    eprintln!("end-to-end:");
    let e2e = end_to_end(&files, &a.corpus, &spec, &a);

    let corpus = a.corpus.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let checked = check.map(|(t, e, o)| format!(",\"check_tower_cos\":{t:.6},\"check_e2e_cos_torch\":{e:.5},\"check_e2e_cos_ort\":{o:.5}")).unwrap_or_default();
    println!(
        "{{\"side\":\"pixdex\",\"model\":\"{}\",\"corpus\":\"{corpus}\",\"images\":{n},\"threads\":{},\"batch\":{},\"decode_img_s\":{:.2},\"model_img_s\":{:.2},\"end_to_end_img_s\":{:.2},\"rss_mb\":{:.1}{checked}}}",
        a.model,
        a.threads,
        a.batch,
        decode,
        model,
        e2e,
        peak_rss_mb()
    );
}
