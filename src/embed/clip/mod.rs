//! CLIP (ViT-B/32 family): image and text towers in Burn (flex or wgpu) from user-supplied
//! weights, and open_clip's tokenizer. Weights never ship with pixdex and are never downloaded
//! by it: `scripts/fetch-clip` fetches a checkpoint when the machine is online, and
//! `scripts/fetch-clip-vocab` the tokenizer's merges.

mod host;
mod model;
pub mod tokenizer;
mod weights;

use std::path::Path;
use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

use super::{EmbedError, INPUT};
use model::{ClipModel, TextMode, Variant};
pub use tokenizer::Tokenizer;

pub use crate::model::{ClipVariant, DEFAULT_CLIP_VOCAB as DEFAULT_VOCAB, DEFAULT_CLIP_WEIGHTS as DEFAULT_WEIGHTS};

/// What the checkpoint does not say about a CLIP: its head width and activation, from its name.
fn variant_of(which: ClipVariant) -> Variant {
    Variant { head_width: 64, quick_gelu: which == ClipVariant::VitB32QuickGelu }
}

/// A loaded CLIP on one device.
pub struct ClipRuntime {
    model: ClipModel,
    tokenizer: Arc<Tokenizer>,
    device: Device,
    pub(crate) name: String,
    pub(crate) batch_size: usize,
    /// wgpu: pad image batches to `batch_size` and token sequences to a multiple of 16 so the
    /// device sees few shapes.
    pad: bool,
    pub(crate) model_name: String,
}

/// Head width / activation for the tiny test models (open_clip lets a config choose them).
#[derive(Debug, Clone, Copy)]
pub struct Custom {
    pub head_width: usize,
    pub quick_gelu: bool,
}

impl ClipRuntime {
    /// Load the checkpoint and the tokenizer onto `device`. `text`: the text tower too (query
    /// instances; the pipeline's embeds images only). `host_image`: the image tower on pixdex's
    /// CPU kernels (`host.rs`) instead of Burn on `device`; `bf16`: the host towers' GEMMs in
    /// bf16 where the CPU has AVX512-BF16 (`model.precision`; its vectors are another model's).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load(
        weights: &Path,
        vocab: &Path,
        which: ClipVariant,
        device: Device,
        name: String,
        batch_size: usize,
        pad: bool,
        text: bool,
        host_image: bool,
        bf16: bool,
    ) -> Result<ClipRuntime, EmbedError> {
        Self::load_custom(weights, vocab, variant_of(which), which.as_str(), device, name, batch_size, pad, text, host_image, bf16)
    }

    #[allow(clippy::too_many_arguments)]
    fn load_custom(
        weights: &Path,
        vocab: &Path,
        v: Variant,
        label: &str,
        device: Device,
        name: String,
        batch_size: usize,
        pad: bool,
        text: bool,
        host_image: bool,
        bf16: bool,
    ) -> Result<ClipRuntime, EmbedError> {
        let fetch = "run `scripts/fetch-clip` (or point model.weights at an open_clip ViT-B-32 checkpoint: safetensors or a PyTorch state dict)";
        if !weights.is_file() {
            return Err(EmbedError::Missing { what: "CLIP weights".into(), path: weights.to_path_buf(), fix: fetch.into() });
        }
        if !vocab.is_file() {
            return Err(EmbedError::Missing {
                what: "the CLIP tokenizer's merges".into(),
                path: vocab.to_path_buf(),
                fix: "run `scripts/fetch-clip-vocab`".into(),
            });
        }
        let invalid = |path: &Path, reason: String, fix: &str| EmbedError::Invalid { path: path.to_path_buf(), reason, fix: fix.into() };
        let tokenizer = Tokenizer::load(vocab).map_err(|r| invalid(vocab, r, "re-run `scripts/fetch-clip-vocab`"))?;
        let ck = weights::Checkpoint::load(weights).map_err(|r| invalid(weights, r, fetch))?;
        // On the CPU the text tower runs on the host (`host.rs`); on wgpu through Burn.
        let mode = match (text, pad) {
            (false, _) => TextMode::None,
            (true, false) => TextMode::Host,
            (true, true) => TextMode::Burn,
        };
        let bf16 = bf16 && host_image && crate::embed::cpu::kernels::bf16_supported();
        let model =
            ClipModel::load(ck, v, &device, mode, host_image, bf16).map_err(|r| invalid(weights, format!("not a CLIP {label} checkpoint: {r}"), fetch))?;
        if model.shape.image_size() != INPUT {
            return Err(invalid(weights, format!("the image tower takes {0}x{0} px; pixdex feeds {INPUT}x{INPUT}", model.shape.image_size()), fetch));
        }
        if model.shape.vocab != tokenizer.vocab_size() {
            return Err(invalid(weights, format!("the text tower has {} tokens, the tokenizer {}", model.shape.vocab, tokenizer.vocab_size()), fetch));
        }
        tracing::info!(weights = %weights.display(), model = label, shape = ?model.shape, "CLIP loaded");
        let precision = if bf16 { "-bf16" } else { "" };
        let model_name = format!("clip-{}-{}{precision}", label.to_ascii_lowercase(), fingerprint(weights).map_err(|r| invalid(weights, r, fetch))?);
        Ok(ClipRuntime { model, tokenizer: Arc::new(tokenizer), device, name, batch_size, pad, model_name })
    }

    /// A tiny model for tests (head width and activation given, not implied by a name), on Burn
    /// flex (the text tower on the host kernels, as on every CPU device).
    pub fn load_for_tests(weights: &Path, vocab: &Path, custom: Custom) -> Result<ClipRuntime, EmbedError> {
        let v = Variant { head_width: custom.head_width, quick_gelu: custom.quick_gelu };
        Self::load_custom(weights, vocab, v, "test", Device::flex(), "cpu (burn flex)".into(), 8, false, true, false, false)
    }

    /// The same with both towers on pixdex's CPU kernels (what `model.device = "cpu"` runs).
    pub fn load_for_tests_on_host(weights: &Path, vocab: &Path, custom: Custom) -> Result<ClipRuntime, EmbedError> {
        let v = Variant { head_width: custom.head_width, quick_gelu: custom.quick_gelu };
        Self::load_custom(weights, vocab, v, "test", Device::flex(), "cpu (pixdex kernels)".into(), 8, false, true, true, false)
    }

    /// The same on a wgpu device (tests).
    pub fn load_for_tests_on_wgpu(weights: &Path, vocab: &Path, custom: Custom) -> Result<ClipRuntime, EmbedError> {
        let device = super::preprocess::init_wgpu_device().map_err(EmbedError::Device)?;
        let v = Variant { head_width: custom.head_width, quick_gelu: custom.quick_gelu };
        Self::load_custom(weights, vocab, v, "test", device, "wgpu".into(), 4, true, true, false, false)
    }

    /// The architecture as read from the checkpoint.
    pub fn describe(&self) -> String {
        let s = &self.model.shape;
        let (vh, th) = self.model.heads();
        format!(
            "image: ViT width {}, {} layers, {vh} heads, {} px patches on a {}x{} grid; text: width {}, {} layers, {th} heads, {} tokens, {}-token vocabulary; {}-d",
            s.vision_width, s.vision_layers, s.patch, s.grid, s.grid, s.text_width, s.text_layers, s.context, s.vocab, s.embed_dim
        )
    }

    pub fn dim(&self) -> usize {
        self.model.shape.embed_dim
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// True when this instance has the text tower (query instances).
    pub fn has_text(&self) -> bool {
        self.model.has_text()
    }

    pub(crate) fn is_wgpu(&self) -> bool {
        self.pad
    }

    pub(crate) fn warmup_batch(&self) -> usize {
        if self.pad { self.batch_size } else { 1 }
    }

    /// L2-normalized image embeddings of `n` pipeline-normalized images (NCHW, 224 px).
    pub fn embed_images_normalized(&self, nchw: &[f32], n: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        if let Some(rows) = self.model.encode_image_host(&nchw[..n * super::IMAGE_FLOATS], n) {
            return Ok(rows.iter().map(|r| l2_normalize(r)).collect());
        }
        let rows = if self.pad { self.batch_size.max(n) } else { n };
        let mut data = Vec::with_capacity(rows * super::IMAGE_FLOATS);
        data.extend_from_slice(nchw);
        data.resize(rows * super::IMAGE_FLOATS, 0.0);
        let x = Tensor::<4>::from_data(TensorData::new(data, [rows, 3, INPUT, INPUT]), &self.device);
        self.embed_image_tensor(x, n)
    }

    /// Like [`Self::embed_images_normalized`] for a batch already on the device (`rows >= n`).
    pub(crate) fn embed_image_tensor(&self, x: Tensor<4>, n: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        if self.model.host_image() {
            let data = x.narrow(0, 0, n).try_into_data().map_err(|e| EmbedError::Backend(format!("{e:?}")))?;
            let flat: Vec<f32> = data.try_to_vec::<f32>().map_err(|e| EmbedError::Backend(format!("{e:?}")))?;
            return self.embed_images_normalized(&flat, n);
        }
        let out = self.model.encode_image(x).expect("a Burn image tower");
        read_rows(out, n)
    }

    /// L2-normalized text embeddings.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let seqs: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenizer.tokenize(t)).collect();
        self.embed_tokens(&seqs)
    }

    /// L2-normalized text embeddings of token sequences (tests feed open_clip's).
    pub fn embed_tokens(&self, seqs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let pad = if self.pad { 16 } else { 1 };
        let rows = self.model.encode_text(seqs, pad).map_err(EmbedError::Input)?;
        Ok(rows.iter().map(|r| l2_normalize(r)).collect())
    }
}

/// A short, stable identity of a checkpoint file (FNV-1a over its length and its first and last
/// 64 KiB): two different checkpoints of one architecture get different vectors.
fn fingerprint(path: &Path) -> Result<String, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    };
    eat(&len.to_le_bytes());
    let mut buf = vec![0u8; 64 * 1024];
    let n = f.read(&mut buf).map_err(|e| e.to_string())?;
    eat(&buf[..n]);
    f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024))).map_err(|e| e.to_string())?;
    let n = f.read(&mut buf).map_err(|e| e.to_string())?;
    eat(&buf[..n]);
    Ok(format!("{:08x}", (h >> 32) as u32 ^ h as u32))
}

/// Read `[rows, dim]` back, keep the first `n`, L2-normalize each.
fn read_rows(t: Tensor<2>, n: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
    let [_, dim] = t.dims();
    let data = t.try_into_data().map_err(|e| EmbedError::Backend(format!("{e:?}")))?;
    let flat: Vec<f32> = data.try_to_vec::<f32>().map_err(|e| EmbedError::Backend(format!("{e:?}")))?;
    Ok(flat.chunks_exact(dim).take(n).map(l2_normalize).collect())
}

pub(crate) fn l2_normalize(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
    if norm > 0.0 { v.iter().map(|x| (*x as f64 / norm) as f32).collect() } else { v.to_vec() }
}

/// Checkpoints with random values for tests and benchmarks (sizes are what matter there).
pub mod random {
    use std::path::Path;

    /// Write a safetensors file holding `shapes` (name, dims) as f16 values in ±0.02 from a
    /// fixed generator (LayerNorm gains 1).
    pub fn write_safetensors(path: &Path, shapes: &[(String, Vec<usize>)]) -> std::io::Result<()> {
        let mut header = serde_json::Map::new();
        let mut data: Vec<u8> = Vec::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for (key, dims) in shapes {
            let n: usize = dims.iter().product();
            let start = data.len();
            data.reserve(n * 2);
            for _ in 0..n {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = ((state >> 40) as f32) / (1u64 << 24) as f32;
                let v = if key.contains("ln") && key.ends_with("weight") { 1.0 } else { (u - 0.5) * 0.04 };
                data.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
            header.insert(key.clone(), serde_json::json!({"dtype": "F16", "shape": dims, "data_offsets": [start, data.len()]}));
        }
        let mut h = serde_json::to_vec(&serde_json::Value::Object(header))?;
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        use std::io::Write;
        f.write_all(&(h.len() as u64).to_le_bytes())?;
        f.write_all(&h)?;
        f.write_all(&data)?;
        f.flush()
    }

    /// open_clip's ViT-B-32 keys and shapes (`tests/fixtures/clip/vit-b-32-shapes.json`,
    /// dumped from `open_clip.create_model("ViT-B-32")`).
    pub fn vit_b_32_shapes(json: &str) -> Vec<(String, Vec<usize>)> {
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).expect("shapes JSON");
        v.into_iter().map(|(k, d)| (k, d.as_array().expect("dims").iter().map(|x| x.as_u64().expect("dim") as usize).collect())).collect()
    }
}
