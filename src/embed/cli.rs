//! `pixdex embed FILE… [--json]`: the pipeline's decode → resize → model path for single files.

use std::io::Write;
use std::path::PathBuf;

use crate::config::Config;
use crate::decode::DecodeLimits;

use super::{DeviceChoice, Embedder};

/// Returns the exit code: 0 when every file was embedded, 1 when some could not be.
pub fn run(cfg: &Config, files: &[PathBuf], json: bool) -> Result<u8, String> {
    if files.is_empty() {
        return Err("name at least one image file: pixdex embed photo.jpg".into());
    }
    let device: DeviceChoice = cfg.model.device.parse().map_err(|e: super::EmbedError| e.to_string())?;
    let embedder = Embedder::load_spec(&cfg.model.spec, device, 1).map_err(|e| e.to_string())?;
    let limits = DecodeLimits {
        max_megapixels: cfg.pipeline.max_megapixels,
        max_file_bytes: cfg.pipeline.max_file_bytes,
        target: 224,
        memory: crate::decode::Budget(Some(crate::decode::MemoryBudget::new(cfg.pipeline.memory_mb * 1024 * 1024))),
    };
    // The model actually loaded (CLIP's name carries its weights' fingerprint) and its width.
    let (model, dim) = (embedder.model_name(), embedder.dim());
    let mut failed = false;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for f in files {
        let r = crate::decode::decode_for_embedding(f, &limits)
            .map_err(|e| e.to_string())
            .and_then(|d| embedder.embed_images(&[&d.image]).map_err(|e| e.to_string()));
        match r {
            Ok(mut embs) => {
                let e = embs.remove(0);
                if json {
                    let v = serde_json::json!({
                        "path": f, "model": model, "dim": dim, "embedding": e.vector, "labels": e.labels,
                    });
                    let _ = writeln!(out, "{v}");
                } else if e.labels.is_empty() {
                    // CLIP has no classes: say what was computed.
                    let _ = writeln!(out, "{}: {}-d vector ({model})", f.display(), e.vector.len());
                } else {
                    let labels: Vec<String> =
                        e.labels.iter().map(|l| format!("{} {:.1}%", l.label.split(',').next().unwrap_or(""), l.probability * 100.0)).collect();
                    let _ = writeln!(out, "{}: {}", f.display(), labels.join(", "));
                }
            }
            Err(e) => {
                failed = true;
                if json {
                    let _ = writeln!(out, "{}", serde_json::json!({"path": f, "error": e}));
                } else {
                    eprintln!("{}: {e}", f.display());
                }
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `pixdex embed --bench-batches 1,8,32`: device throughput by batch size on synthetic 500×375
/// images, through the pipeline's resize + model path (`embed_images`) and the model alone
/// (`embed_normalized`). One JSON line per batch size. For measuring a GPU the quickest way.
pub fn bench(cfg: &Config, batches: &[usize], iters: usize) -> Result<(), String> {
    let device: DeviceChoice = cfg.model.device.parse().map_err(|e: super::EmbedError| e.to_string())?;
    for &b in batches {
        let embedder = Embedder::load_spec(&cfg.model.spec, device, b).map_err(|e| e.to_string())?;
        let images: Vec<crate::decode::RgbImage> = (0..b)
            .map(|i| {
                let (w, h) = (500u32, 375u32);
                let data = (0..(w * h * 3) as usize).map(|k| ((k as u32).wrapping_mul(2654435761).wrapping_add(i as u32 * 97) >> 13) as u8).collect();
                crate::decode::RgbImage { width: w, height: h, data }
            })
            .collect();
        let refs: Vec<&crate::decode::RgbImage> = images.iter().collect();
        let nchw = super::preprocess::cpu_resize_normalize_batch(&refs);
        // Warm both paths (shader compilation, Burn's autotune) before timing either.
        for _ in 0..3 {
            embedder.embed_images(&refs).map_err(|e| e.to_string())?;
            embedder.embed_normalized(&nchw, b).map_err(|e| e.to_string())?;
        }
        let t = std::time::Instant::now();
        for _ in 0..iters {
            embedder.embed_images(&refs).map_err(|e| e.to_string())?;
        }
        let with_resize = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        for _ in 0..iters {
            embedder.embed_normalized(&nchw, b).map_err(|e| e.to_string())?;
        }
        let model_only = t.elapsed().as_secs_f64();
        let n = (b * iters) as f64;
        println!(
            "{}",
            serde_json::json!({
                "device": embedder.device_name(), "batch": b, "iters": iters,
                "imgPerSecResizeAndModel": (n / with_resize * 10.0).round() / 10.0,
                "imgPerSecModelOnly": (n / model_only * 10.0).round() / 10.0,
                "msPerBatch": (with_resize / iters as f64 * 1000.0 * 100.0).round() / 100.0,
            })
        );
    }
    Ok(())
}
