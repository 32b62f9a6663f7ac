//! `pixdex embed FILE… [--json]`: the pipeline's decode → resize → model path for single files.

use std::io::Write;
use std::path::PathBuf;

use crate::config::Config;
use crate::decode::DecodeLimits;

use super::{DeviceChoice, Embedder, MODEL_NAME, DIM};

/// Returns the exit code: 0 when every file was embedded, 1 when some could not be.
pub fn run(cfg: &Config, files: &[PathBuf], json: bool) -> Result<u8, String> {
    if files.is_empty() {
        return Err("name at least one image file: pixdex embed photo.jpg".into());
    }
    let device: DeviceChoice = cfg.model.device.parse().map_err(|e: super::EmbedError| e.to_string())?;
    let embedder = Embedder::load(&cfg.model.weights, device, 1).map_err(|e| e.to_string())?;
    let limits = DecodeLimits { max_megapixels: cfg.pipeline.max_megapixels, max_file_bytes: cfg.pipeline.max_file_bytes, target: 224 };
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
                        "path": f, "model": MODEL_NAME, "dim": DIM, "embedding": e.vector, "labels": e.labels,
                    });
                    let _ = writeln!(out, "{v}");
                } else {
                    let labels: Vec<String> = e.labels.iter().map(|l| format!("{} {:.1}%", l.label.split(',').next().unwrap_or(""), l.probability * 100.0)).collect();
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
