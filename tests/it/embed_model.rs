//! The EfficientNet-Lite0 embedder on real weights: numerics against the independent numpy
//! reference (`scripts/make-reference.py`), labels on real photos, wgpu against flex.
//!
//! Needs `scripts/fetch-model` (weights, or `PIXDEX_MODEL`) and `scripts/fetch-samples`
//! (photos, or `PIXDEX_SAMPLES`); fails with the command to run when they are missing.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pixdex::embed::{DIM, DeviceChoice, Embedder, IMAGE_FLOATS, INPUT};
use serde_json::Value;

fn weights() -> PathBuf {
    let p = std::env::var_os("PIXDEX_MODEL").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(pixdex::embed::DEFAULT_WEIGHTS));
    assert!(p.is_file(), "model weights missing at {}: run `scripts/fetch-model {}`", p.display(), p.display());
    p
}

fn sample(name: &str) -> PathBuf {
    let dir = std::env::var_os("PIXDEX_SAMPLES").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("samples"));
    let p = dir.join(name);
    assert!(p.is_file(), "sample photo missing at {}: run `scripts/fetch-samples {}`", p.display(), dir.display());
    p
}

/// One embedder on pixdex's CPU kernels for the whole test binary (batch 8).
fn cpu() -> &'static Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| Embedder::load(&weights(), DeviceChoice::Cpu, 8).expect("load cpu embedder"))
}

/// The same model on Burn flex (the reference executor), batch 8.
fn flex() -> &'static Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| Embedder::load(&weights(), DeviceChoice::Flex, 8).expect("load flex embedder"))
}

fn fixture(name: &str) -> PathBuf {
    crate::harness::repo_dir().join("tests/fixtures").join(name)
}

fn reference_input() -> Vec<f32> {
    let bytes = std::fs::read(fixture("effnet-input.bin")).unwrap();
    assert_eq!(bytes.len(), IMAGE_FLOATS * 4);
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Simple preprocessing for tests: RGB, bilinear resize to 224x224, `(px - 127) / 128`, NCHW.
fn preprocess(path: &Path) -> Vec<f32> {
    let img = image::open(path).unwrap().to_rgb8();
    let img = image::imageops::resize(&img, INPUT as u32, INPUT as u32, image::imageops::FilterType::Triangle);
    let mut out = vec![0f32; IMAGE_FLOATS];
    for (x, y, px) in img.enumerate_pixels() {
        for c in 0..3 {
            out[c * INPUT * INPUT + y as usize * INPUT + x as usize] = (px[c] as f32 - 127.0) / 128.0;
        }
    }
    out
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    assert!((got - want).abs() <= tol, "{what}: got {got}, reference {want} (tolerance {tol})");
}

#[test]
fn cpu_kernels_match_the_numpy_reference() {
    matches_the_numpy_reference(cpu());
}

#[test]
fn flex_matches_the_numpy_reference() {
    matches_the_numpy_reference(flex());
}

/// The fused CPU kernels and Burn flex agree on real photos in one batch: cosine ≥ 0.9999 for
/// every image, the same top-1 label.
#[test]
fn cpu_kernels_match_flex_on_photos() {
    let images = [preprocess(&sample("chelsea.png")), preprocess(&sample("coffee.png")), reference_input()];
    let batch = images.concat();
    let a = cpu().embed_normalized(&batch, images.len()).unwrap();
    let b = flex().embed_normalized(&batch, images.len()).unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let cosine: f64 = x.vector.iter().zip(&y.vector).map(|(p, q)| *p as f64 * *q as f64).sum();
        assert!(cosine >= 0.9999, "image {i}: cpu kernels vs flex cosine {cosine}");
        assert_eq!(x.labels[0].class_id, y.labels[0].class_id, "image {i}: top-1 differs");
    }
}

fn matches_the_numpy_reference(embedder: &Embedder) {
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(fixture("effnet-reference.json")).unwrap()).unwrap();
    let raw = embedder.forward_raw(&reference_input(), 1).unwrap().remove(0);
    assert_eq!(raw.pooled.len(), DIM);
    for (i, want) in reference["pooled_first16"].as_array().unwrap().iter().enumerate() {
        close(&format!("pooled[{i}]"), raw.pooled[i] as f64, want.as_f64().unwrap(), 1e-4);
    }
    for pair in reference["pooled_max16"].as_array().unwrap() {
        let i = pair[0].as_u64().unwrap() as usize;
        close(&format!("pooled[{i}]"), raw.pooled[i] as f64, pair[1].as_f64().unwrap(), 1e-4);
    }
    let sum: f64 = raw.pooled.iter().map(|v| *v as f64).sum();
    let norm: f64 = raw.pooled.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    close("pooled sum", sum, reference["pooled_sum"].as_f64().unwrap(), 1e-3);
    close("pooled norm", norm, reference["pooled_norm"].as_f64().unwrap(), 1e-4);

    let mut order: Vec<usize> = (0..raw.logits.len()).collect();
    order.sort_by(|a, b| raw.logits[*b].total_cmp(&raw.logits[*a]));
    for (rank, want) in reference["top5"].as_array().unwrap().iter().enumerate() {
        let class = want["class_id"].as_u64().unwrap() as usize;
        close(&format!("logit[{class}]"), raw.logits[class] as f64, want["logit"].as_f64().unwrap(), 1e-4);
        assert_eq!(order[rank], class, "top-5 rank {rank}");
    }
}

fn top5(emb: &pixdex::embed::Embedding) -> Vec<(u32, String)> {
    emb.labels.iter().map(|l| (l.class_id, l.label.clone())).collect()
}

#[test]
fn real_photos_get_the_right_labels() {
    let cat = preprocess(&sample("chelsea.png"));
    let coffee = preprocess(&sample("coffee.png"));
    let both = [cat.clone(), coffee.clone()].concat();
    let out = cpu().embed_normalized(&both, 2).unwrap();
    assert_eq!(out.len(), 2);

    // ImageNet domestic/wild cats: tabby 281, tiger cat 282, Persian 283, Siamese 284, Egyptian 285.
    let cats = 281..=285u32;
    assert!(cats.contains(&out[0].labels[0].class_id), "chelsea.png top-5: {:?}", top5(&out[0]));
    // espresso 967, cup 968, coffee mug 504.
    assert!([967u32, 968, 504].contains(&out[1].labels[0].class_id), "coffee.png top-5: {:?}", top5(&out[1]));
    assert!(out[1].labels.iter().any(|l| l.label == "espresso"), "coffee.png top-5: {:?}", top5(&out[1]));

    for e in &out {
        assert_eq!(e.vector.len(), DIM);
        let norm: f32 = e.vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        assert_eq!(e.labels.len(), 5);
        assert!(e.labels.windows(2).all(|w| w[0].probability >= w[1].probability));
        assert!(e.labels[0].probability > 0.2 && e.labels.iter().map(|l| l.probability).sum::<f32>() <= 1.0 + 1e-5);
    }
    let cosine: f32 = out[0].vector.iter().zip(&out[1].vector).map(|(a, b)| a * b).sum();
    assert!(cosine < 0.8, "a cat and a coffee cup embed too close: cosine {cosine}");

    // Batching does not change the result.
    let alone = cpu().embed_normalized(&coffee, 1).unwrap().remove(0);
    let diff = alone.vector.iter().zip(&out[1].vector).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-5, "batch of 2 vs batch of 1 differ by {diff}");
}

#[test]
fn bad_batches_are_refused() {
    let e = cpu();
    assert!(e.embed_normalized(&[], 0).is_err());
    assert!(e.embed_normalized(&vec![0.0; IMAGE_FLOATS], 2).is_err());
    assert!(e.embed_normalized(&vec![0.0; 9 * IMAGE_FLOATS], 9).is_err());
}

/// wgpu on whatever adapter it finds (llvmpipe here), batch 1: same as the CPU kernels within 1e-3.
/// Set `PIXDEX_SKIP_WGPU=1` on machines where wgpu finds no adapter at all.
#[test]
fn wgpu_matches_cpu() {
    if std::env::var_os("PIXDEX_SKIP_WGPU").is_some() {
        eprintln!("PIXDEX_SKIP_WGPU set: skipping the wgpu test");
        return;
    }
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: set before any wgpu/GL initialization; no other test reads it.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", "/tmp") };
    }
    let input = reference_input();
    let gpu = Embedder::load(&weights(), DeviceChoice::Wgpu, 1).expect("load wgpu embedder");
    eprintln!("wgpu device: {}", gpu.device_name());
    let g = gpu.forward_raw(&input, 1).unwrap().remove(0);
    let c = cpu().forward_raw(&input, 1).unwrap().remove(0);
    let max_pooled = g.pooled.iter().zip(&c.pooled).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let max_logit = g.logits.iter().zip(&c.logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_pooled < 1e-3, "pooled features differ by {max_pooled}");
    assert!(max_logit < 1e-3, "logits differ by {max_logit}");
    let ge = gpu.embed_normalized(&input, 1).unwrap().remove(0);
    let ce = cpu().embed_normalized(&input, 1).unwrap().remove(0);
    let max_vec = ge.vector.iter().zip(&ce.vector).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_vec < 1e-3, "embeddings differ by {max_vec}");
    assert_eq!(ge.labels[0].class_id, ce.labels[0].class_id);
}
