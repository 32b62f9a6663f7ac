//! Image embedding: EfficientNet-Lite0 (ImageNet) on the CPU (our fused channels-last kernels,
//! `cpu/`), on a GPU through Burn `wgpu`, or through Burn `flex` (the reference CPU executor). Produces a 1280-d L2-normalized feature vector and the top-5 ImageNet labels.
//!
//! Invariant: no Burn type leaves this module (except `pub(crate)` hooks used by the device-side
//! preprocessing in `preprocess.rs`). Callers pass host `f32` NCHW batches already resized to
//! 224x224 and normalized as `(px - 127) / 128`.
//!
//! Weights are never downloaded here: `scripts/fetch-model` puts them at
//! `models/efficientnet-lite0.pth`.

pub mod clip;
pub(crate) mod cpu;
mod efficientnet;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Instant;

use burn::tensor::{Device, DeviceKind, Tensor, TensorData};
use serde::Serialize;

use efficientnet::{Architecture, CLASSES, EfficientNetLite0, FEATURES};

pub const MODEL_NAME: &str = "efficientnet-lite0-imagenet";
/// Embedding dimension.
pub const DIM: usize = 1280;
/// Input side length (pixels).
pub const INPUT: usize = 224;
/// Floats per input image (3 x 224 x 224).
pub const IMAGE_FLOATS: usize = 3 * INPUT * INPUT;
/// Labels returned per image.
pub const TOP_K: usize = 5;
pub use crate::model::{DEFAULT_EFFICIENTNET_WEIGHTS as DEFAULT_WEIGHTS, ModelKind, ModelSpec, Precision};

const _: () = assert!(DIM == FEATURES);

/// Which device runs the model (config `model.device`: `"auto" | "wgpu" | "cpu" | "flex"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// A hardware GPU through wgpu if one is found, else the CPU kernels.
    #[default]
    Auto,
    /// wgpu, even on a software adapter (llvmpipe / lavapipe).
    Wgpu,
    /// pixdex's fused CPU kernels (`embed/cpu`).
    Cpu,
    /// Burn flex on the CPU: the generic reference executor (about 4–8× slower than `cpu`).
    Flex,
}

impl FromStr for DeviceChoice {
    type Err = EmbedError;
    fn from_str(s: &str) -> Result<Self, EmbedError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            "cpu" => Ok(Self::Cpu),
            "flex" => Ok(Self::Flex),
            other => Err(EmbedError::Device(format!("model device must be \"auto\", \"wgpu\", \"cpu\" or \"flex\", got {other:?}"))),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Wgpu => "wgpu",
            Self::Cpu => "cpu",
            Self::Flex => "flex",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("model weights not found at {path}: run `scripts/fetch-model {path}`")]
    WeightsMissing { path: PathBuf },
    #[error("model weights at {path} are invalid ({reason}); re-run `scripts/fetch-model {path}`")]
    WeightsInvalid { path: PathBuf, reason: String },
    /// A file the model needs is not there (CLIP weights, tokenizer merges).
    #[error("{what} not found at {path}: {fix}")]
    Missing { what: String, path: PathBuf, fix: String },
    /// A file the model needs is there but unusable: what was expected, and how to get it.
    #[error("{path} cannot be used ({reason}); {fix}")]
    Invalid { path: PathBuf, reason: String, fix: String },
    #[error("embedding device: {0}")]
    Device(String),
    #[error("embedding input: {0}")]
    Input(String),
    #[error("embedding backend failed: {0}")]
    Backend(String),
}

/// One ImageNet label with its softmax probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Label {
    pub class_id: u32,
    pub label: String,
    pub probability: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// `DIM` floats, L2-normalized.
    pub vector: Vec<f32>,
    /// Top-5 labels, most probable first.
    pub labels: Vec<Label>,
}

/// The raw network outputs for one image (for tests and diagnostics).
#[derive(Debug, Clone)]
pub struct RawOutput {
    /// Globally pooled features, before L2 normalization (`DIM`).
    pub pooled: Vec<f32>,
    /// Class logits (1000).
    pub logits: Vec<f32>,
}

/// The ImageNet-1k class names, index = class id (`models/imagenet_classes.txt`).
pub fn labels() -> &'static [String] {
    static LABELS: OnceLock<Vec<String>> = OnceLock::new();
    LABELS.get_or_init(|| include_str!("../../models/imagenet_classes.txt").lines().map(str::to_owned).collect())
}

/// A loaded model on one device (opaque).
pub struct Runtime {
    model: EfficientNetLite0,
    device: Device,
    name: String,
    batch_size: usize,
    /// Pad every batch to `batch_size` so the device sees one input shape (wgpu compiles
    /// kernels per shape).
    pad: bool,
}

/// The model on pixdex's own CPU kernels.
pub struct CpuRuntime {
    net: cpu::CpuNet,
    name: String,
    batch_size: usize,
}

/// The embedding model on a backend (an enum over backends, meilisearch style).
pub enum Embedder {
    /// pixdex's fused channels-last CPU kernels (the default without a GPU).
    Cpu(CpuRuntime),
    /// Burn flex on the CPU (reference executor).
    Flex(Runtime),
    /// Burn wgpu on a GPU (or a software adapter when asked for explicitly).
    Wgpu(Runtime),
    /// CLIP (image and text towers) on pixdex's CPU kernels, Burn flex or wgpu.
    Clip(Box<clip::ClipRuntime>),
}

impl fmt::Debug for Embedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Embedder").field("device", &self.device_name()).field("batch_size", &self.batch_size()).finish()
    }
}

impl Embedder {
    /// Load the weights onto the chosen device and run one warm-up batch.
    pub fn load(weights: &Path, choice: DeviceChoice, batch_size: usize) -> Result<Embedder, EmbedError> {
        if batch_size == 0 {
            return Err(EmbedError::Input("batch size must be at least 1".into()));
        }
        if !weights.is_file() {
            return Err(EmbedError::WeightsMissing { path: weights.to_path_buf() });
        }
        let embedder = match choice {
            DeviceChoice::Cpu => {
                tracing::info!("embedding on the CPU: configured `cpu`");
                Self::cpu(weights, batch_size)?
            }
            DeviceChoice::Flex => {
                tracing::info!("embedding on the CPU (burn flex): configured `flex`");
                Self::flex(weights, batch_size)?
            }
            DeviceChoice::Wgpu => {
                let adapter = pick_adapter(true);
                let Some(adapter) = adapter else {
                    return Err(EmbedError::Device("wgpu found no adapter".into()));
                };
                tracing::info!(adapter = %adapter.describe(), "embedding on wgpu: configured `wgpu`");
                Self::wgpu(weights, batch_size, &adapter)?
            }
            DeviceChoice::Auto => match pick_adapter(false) {
                Some(adapter) => {
                    tracing::info!(adapter = %adapter.describe(), "embedding on wgpu: `auto` found a hardware GPU");
                    match Self::wgpu(weights, batch_size, &adapter) {
                        Ok(e) => e,
                        Err(err @ (EmbedError::WeightsInvalid { .. } | EmbedError::WeightsMissing { .. })) => {
                            return Err(err);
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "wgpu failed, falling back to the CPU kernels");
                            Self::cpu(weights, batch_size)?
                        }
                    }
                }
                None => {
                    tracing::info!("embedding on the CPU: `auto` found no hardware GPU adapter (software adapters are skipped)");
                    Self::cpu(weights, batch_size)?
                }
            },
        };
        let start = Instant::now();
        embedder.warm_up()?;
        tracing::info!(
            device = %embedder.device_name(),
            batch_size,
            warmup_ms = start.elapsed().as_millis() as u64,
            "embedding model {MODEL_NAME} ready"
        );
        Ok(embedder)
    }

    /// Load any model (see [`Embedder::load`]); CLIP runs on Burn wgpu on a GPU, on pixdex's CPU
    /// kernels on the CPU (`cpu`, or `auto` without a GPU), on Burn flex when asked (`flex`,
    /// the reference).
    pub fn load_spec(spec: &ModelSpec, choice: DeviceChoice, batch_size: usize) -> Result<Embedder, EmbedError> {
        Self::load_spec_with(spec, choice, batch_size, true)
    }

    /// Like [`Embedder::load_spec`] for the pipeline: images only (CLIP's text tower, ~150 MB
    /// on the CPU, is left out; queries load their own instance).
    pub fn load_spec_images(spec: &ModelSpec, choice: DeviceChoice, batch_size: usize) -> Result<Embedder, EmbedError> {
        Self::load_spec_with(spec, choice, batch_size, false)
    }

    fn load_spec_with(spec: &ModelSpec, choice: DeviceChoice, batch_size: usize, text: bool) -> Result<Embedder, EmbedError> {
        let ModelKind::Clip(variant) = spec.kind else {
            return Self::load(&spec.weights, choice, batch_size);
        };
        if batch_size == 0 {
            return Err(EmbedError::Input("batch size must be at least 1".into()));
        }
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let adapter = match choice {
            DeviceChoice::Cpu | DeviceChoice::Flex => None,
            DeviceChoice::Wgpu => Some(pick_adapter(true).ok_or_else(|| EmbedError::Device("wgpu found no adapter".into()))?),
            DeviceChoice::Auto => pick_adapter(false),
        };
        let (device, name, pad, host) = match adapter {
            Some(a) => (wgpu_device(&a)?, format!("wgpu: {}", a.describe()), true, false),
            None if choice == DeviceChoice::Flex => (Device::flex(), format!("cpu (burn flex, {threads} threads)"), false, false),
            None => (Device::flex(), format!("cpu (pixdex kernels, {}, {threads} threads)", cpu::kernels::Isa::detect().name()), false, true),
        };
        let start = Instant::now();
        let bf16 = host && spec.precision == Precision::Bf16 && cpu::kernels::bf16_supported();
        if host && spec.precision == Precision::Bf16 && !bf16 {
            tracing::warn!("model.precision = \"bf16\" needs AVX512-BF16, which this CPU lacks: CLIP runs in f32");
        }
        let name = if bf16 { name.replace(" threads)", " threads, bf16)") } else { name };
        let rt = clip::ClipRuntime::load(&spec.weights, &spec.vocab, variant, device, name, batch_size, pad, text, host, bf16)?;
        let embedder = Embedder::Clip(Box::new(rt));
        embedder.warm_up()?;
        tracing::info!(device = %embedder.device_name(), batch_size, ms = start.elapsed().as_millis() as u64, model = %embedder.model_name(), "CLIP ready");
        Ok(embedder)
    }

    fn cpu(weights: &Path, batch_size: usize) -> Result<Embedder, EmbedError> {
        let arch = load_architecture(weights)?;
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let net = cpu::CpuNet::new(&arch, threads).map_err(|reason| EmbedError::WeightsInvalid { path: weights.to_path_buf(), reason })?;
        let name = format!("cpu (pixdex kernels, {})", net.describe());
        Ok(Embedder::Cpu(CpuRuntime { net, name, batch_size }))
    }

    fn flex(weights: &Path, batch_size: usize) -> Result<Embedder, EmbedError> {
        let device = Device::flex();
        let model = load_model(weights, &device)?;
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Ok(Embedder::Flex(Runtime { model, device, name: format!("cpu (burn flex, {threads} threads)"), batch_size, pad: false }))
    }

    fn wgpu(weights: &Path, batch_size: usize, adapter: &AdapterChoice) -> Result<Embedder, EmbedError> {
        let device = wgpu_device(adapter)?;
        let model = load_model(weights, &device)?;
        Ok(Embedder::Wgpu(Runtime { model, device, name: format!("wgpu: {}", adapter.describe()), batch_size, pad: true }))
    }

    /// One batch of the shape the device will see, so its kernels are compiled before work.
    fn warm_up(&self) -> Result<(), EmbedError> {
        let warm = match self {
            Embedder::Cpu(_) => 1,
            Embedder::Flex(r) | Embedder::Wgpu(r) => r.warmup_batch(),
            Embedder::Clip(c) => c.warmup_batch(),
        };
        self.embed_normalized(&vec![0f32; warm * IMAGE_FLOATS], warm)?;
        if let Embedder::Clip(c) = self
            && c.has_text()
        {
            c.embed_texts(&["a photo"])?;
        }
        Ok(())
    }

    /// The Burn runtime (flex or wgpu); `None` on the CPU kernels.
    fn burn(&self) -> Option<&Runtime> {
        match self {
            Embedder::Flex(r) | Embedder::Wgpu(r) => Some(r),
            Embedder::Cpu(_) | Embedder::Clip(_) => None,
        }
    }

    /// The model's identity: names its vectors (one collection per model) and is shown with
    /// every search answer.
    pub fn model_name(&self) -> String {
        match self {
            Embedder::Clip(c) => c.model_name.clone(),
            _ => MODEL_NAME.to_string(),
        }
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        match self {
            Embedder::Clip(c) => c.dim(),
            _ => DIM,
        }
    }

    /// True when the model embeds words into the image space (CLIP).
    pub fn has_text(&self) -> bool {
        matches!(self, Embedder::Clip(c) if c.has_text())
    }

    /// The L2-normalized text embedding of `text` (CLIP only).
    pub fn embed_text(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        match self {
            Embedder::Clip(c) => Ok(c.embed_texts(&[text])?.pop().expect("one text")),
            _ => Err(EmbedError::Input(format!("{MODEL_NAME} has no text tower; configure a CLIP model (model.name) for search by words"))),
        }
    }

    /// Human-readable device, e.g. `cpu (pixdex kernels, AVX-512, 2 threads)` or
    /// `wgpu: NVIDIA ... (Vulkan)`.
    pub fn device_name(&self) -> String {
        match self {
            Embedder::Cpu(c) => c.name.clone(),
            Embedder::Flex(r) | Embedder::Wgpu(r) => r.name.clone(),
            Embedder::Clip(c) => c.name.clone(),
        }
    }

    pub fn batch_size(&self) -> usize {
        match self {
            Embedder::Cpu(c) => c.batch_size,
            Embedder::Flex(r) | Embedder::Wgpu(r) => r.batch_size,
            Embedder::Clip(c) => c.batch_size,
        }
    }

    /// Embed `n` (1..=batch_size) images given as NCHW f32, `n * 3 * 224 * 224` floats,
    /// normalized as `(px - 127) / 128`. On wgpu the batch is padded to `batch_size`.
    pub fn embed_normalized(&self, nchw: &[f32], n: usize) -> Result<Vec<Embedding>, EmbedError> {
        if let Embedder::Clip(c) = self {
            check_n(n, c.batch_size)?;
            if nchw.len() != n * IMAGE_FLOATS {
                return Err(EmbedError::Input(format!("expected {n} x 3 x {INPUT} x {INPUT} floats, got {}", nchw.len())));
            }
            return Ok(c.embed_images_normalized(nchw, n)?.into_iter().map(|vector| Embedding { vector, labels: Vec::new() }).collect());
        }
        Ok(self.forward_raw(nchw, n)?.into_iter().map(finish).collect())
    }

    /// Like [`Embedder::embed_normalized`] but returns the raw pooled features and logits.
    pub fn forward_raw(&self, nchw: &[f32], n: usize) -> Result<Vec<RawOutput>, EmbedError> {
        check_n(n, self.batch_size())?;
        if nchw.len() != n * IMAGE_FLOATS {
            return Err(EmbedError::Input(format!("expected {n} x 3 x {INPUT} x {INPUT} = {} floats, got {}", n * IMAGE_FLOATS, nchw.len())));
        }
        let rt = match self {
            Embedder::Cpu(c) => return Ok(c.net.forward(nchw, n)),
            Embedder::Flex(r) | Embedder::Wgpu(r) => r,
            Embedder::Clip(_) => return Err(EmbedError::Input("CLIP has no class logits".into())),
        };
        let rows = rt.rows(n);
        let mut data = Vec::with_capacity(rows * IMAGE_FLOATS);
        data.extend_from_slice(nchw);
        data.resize(rows * IMAGE_FLOATS, 0.0);
        let x = Tensor::<4>::from_data(TensorData::new(data, [rows, 3, INPUT, INPUT]), &rt.device);
        rt.run(x, n)
    }

    /// The device the model lives on, for device-side preprocessing.
    #[allow(dead_code)]
    pub(crate) fn device(&self) -> Option<&Device> {
        match self {
            Embedder::Clip(c) => Some(c.device()),
            _ => self.burn().map(|r| &r.device),
        }
    }

    /// Embed a batch already on [`Embedder::device`]: `[n, 3, 224, 224]` f32, normalized, with
    /// `n <= batch_size`. Pads to `batch_size` on wgpu like [`Embedder::embed_normalized`].
    #[allow(dead_code)]
    pub(crate) fn embed_device_tensor(&self, x: Tensor<4>) -> Result<Vec<Embedding>, EmbedError> {
        if let Embedder::Clip(c) = self {
            let n = x.dims()[0];
            check_n(n, c.batch_size)?;
            let rows = if self.is_gpu() { c.batch_size } else { n };
            let x = if rows > n { Tensor::cat(vec![x, Tensor::<4>::zeros([rows - n, 3, INPUT, INPUT], c.device())], 0) } else { x };
            return Ok(c.embed_image_tensor(x, n)?.into_iter().map(|vector| Embedding { vector, labels: Vec::new() }).collect());
        }
        let Some(rt) = self.burn() else {
            return Err(EmbedError::Input("the CPU kernels take host batches, not device tensors".into()));
        };
        let [n, c, h, w] = x.dims();
        if (c, h, w) != (3, INPUT, INPUT) {
            return Err(EmbedError::Input(format!("expected [n, 3, {INPUT}, {INPUT}], got [{n}, {c}, {h}, {w}]")));
        }
        check_n(n, rt.batch_size)?;
        if x.device() != rt.device {
            return Err(EmbedError::Input("input tensor is not on the model's device".into()));
        }
        let rows = rt.rows(n);
        let x = if rows > n {
            let pad = Tensor::<4>::zeros([rows - n, 3, INPUT, INPUT], &rt.device);
            Tensor::cat(vec![x, pad], 0)
        } else {
            x
        };
        Ok(rt.run(x, n)?.into_iter().map(finish).collect())
    }
}

fn wgpu_device(adapter: &AdapterChoice) -> Result<Device, EmbedError> {
    let kind = if adapter.software { DeviceKind::Cpu } else { DeviceKind::DefaultDevice };
    match Device::wgpu_options().device_kind(kind.clone()).init() {
        Ok(device) => Ok(device),
        // Already initialized by an earlier `load` in this process: reuse that runtime.
        Err(burn::tensor::wgpu::WgpuInitError::Registration { .. }) => Ok(Device::wgpu(kind)),
        Err(err) => Err(EmbedError::Device(format!("wgpu init on {}: {err}", adapter.describe()))),
    }
}

fn check_n(n: usize, batch_size: usize) -> Result<(), EmbedError> {
    if n == 0 || n > batch_size {
        return Err(EmbedError::Input(format!("batch of {n} images, expected 1..={batch_size}")));
    }
    Ok(())
}

impl Runtime {
    fn rows(&self, n: usize) -> usize {
        if self.pad { self.batch_size } else { n }
    }

    fn warmup_batch(&self) -> usize {
        if self.pad { self.batch_size } else { 1 }
    }

    /// Forward `x` (`rows` images) and read back the first `n` results in one transfer.
    fn run(&self, x: Tensor<4>, n: usize) -> Result<Vec<RawOutput>, EmbedError> {
        let out = self.model.forward(x);
        let both = Tensor::cat(vec![out.pooled, out.logits], 1);
        let data = both.try_into_data().map_err(|e| EmbedError::Backend(format!("{e:?}")))?;
        let flat: Vec<f32> = data.try_to_vec::<f32>().map_err(|e| EmbedError::Backend(format!("{e:?}")))?;
        let stride = FEATURES + CLASSES;
        Ok(flat.chunks_exact(stride).take(n).map(|row| RawOutput { pooled: row[..FEATURES].to_vec(), logits: row[FEATURES..].to_vec() }).collect())
    }
}

fn load_architecture(weights: &Path) -> Result<Architecture, EmbedError> {
    let start = Instant::now();
    let arch = Architecture::load(weights).map_err(|reason| EmbedError::WeightsInvalid { path: weights.to_path_buf(), reason })?;
    tracing::debug!(path = %weights.display(), ms = start.elapsed().as_millis() as u64, "loaded weights");
    Ok(arch)
}

fn load_model(weights: &Path, device: &Device) -> Result<EfficientNetLite0, EmbedError> {
    Ok(EfficientNetLite0::from_arch(&load_architecture(weights)?, device))
}

/// L2-normalize the pooled features and take the softmax top-5.
fn finish(raw: RawOutput) -> Embedding {
    let norm = raw.pooled.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>().sqrt();
    let vector = if norm > 0.0 { raw.pooled.iter().map(|v| (*v as f64 / norm) as f32).collect() } else { raw.pooled };
    Embedding { vector, labels: top_k(&raw.logits, TOP_K) }
}

/// Softmax over `logits`, then the `k` most probable classes.
pub fn top_k(logits: &[f32], k: usize) -> Vec<Label> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|l| (*l as f64 - max).exp()).sum();
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b)));
    let names = labels();
    idx.into_iter()
        .take(k)
        .map(|i| Label {
            class_id: i as u32,
            label: names.get(i).cloned().unwrap_or_else(|| format!("class {i}")),
            probability: ((logits[i] as f64 - max).exp() / sum) as f32,
        })
        .collect()
}

/// A wgpu adapter as seen by our own enumeration (wgpu 30).
#[derive(Debug, Clone)]
struct AdapterChoice {
    name: String,
    backend: String,
    device_type: String,
    software: bool,
}

impl AdapterChoice {
    fn describe(&self) -> String {
        format!("{} ({}, {})", self.name, self.backend, self.device_type)
    }
}

/// Software rasterizers that wgpu may not flag as `DeviceType::Cpu`.
fn is_software(info: &wgpu::AdapterInfo) -> bool {
    let name = info.name.to_ascii_lowercase();
    info.device_type == wgpu::DeviceType::Cpu || ["llvmpipe", "lavapipe", "softpipe", "swiftshader", "basic render"].iter().any(|s| name.contains(s))
}

/// Enumerate adapters; the best hardware GPU, or (when `allow_software`) a software adapter.
fn pick_adapter(allow_software: bool) -> Option<AdapterChoice> {
    let instance = wgpu::Instance::default();
    let adapters = block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let mut infos: Vec<wgpu::AdapterInfo> = adapters.iter().map(|a| a.get_info()).collect();
    for info in &infos {
        tracing::debug!(name = %info.name, backend = ?info.backend, device_type = ?info.device_type, "wgpu adapter");
    }
    let rank = |info: &wgpu::AdapterInfo| match info.device_type {
        _ if is_software(info) => 9,
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 9,
    };
    infos.sort_by_key(|i| rank(i));
    let best = infos.into_iter().next()?;
    let software = is_software(&best);
    if software && !allow_software {
        tracing::debug!(name = %best.name, "only a software wgpu adapter is available");
        return None;
    }
    Some(AdapterChoice { name: best.name.clone(), backend: format!("{:?}", best.backend), device_type: format!("{:?}", best.device_type), software })
}

/// Minimal executor for wgpu's adapter enumeration future (ready at once on native).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_imagenet_1k_list() {
        let l = labels();
        assert_eq!(l.len(), CLASSES);
        assert_eq!(l[0], "tench, Tinca tinca");
        assert_eq!(l[281], "tabby, tabby cat");
        assert_eq!(l[967], "espresso");
        assert_eq!(l[999], "toilet tissue, toilet paper, bathroom tissue");
    }

    #[test]
    fn device_choice_parses() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!(" WGPU ".parse::<DeviceChoice>().unwrap(), DeviceChoice::Wgpu);
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("flex".parse::<DeviceChoice>().unwrap(), DeviceChoice::Flex);
        assert!("cuda".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn top_k_is_a_sorted_softmax() {
        let mut logits = vec![0.0f32; CLASSES];
        logits[7] = 3.0;
        logits[3] = 2.0;
        logits[500] = 2.0;
        let top = top_k(&logits, 5);
        assert_eq!(top.iter().map(|l| l.class_id).collect::<Vec<_>>()[..3], [7, 3, 500]);
        let z = 3f64.exp() + 2.0 * 2f64.exp() + 997.0;
        assert!((top[0].probability as f64 - 3f64.exp() / z).abs() < 1e-6);
        assert!(top.windows(2).all(|w| w[0].probability >= w[1].probability));
        let json = serde_json::to_value(&top[0]).unwrap();
        assert_eq!(json["classId"], 7);
    }

    #[test]
    fn missing_weights_name_the_fetch_command() {
        let err = Embedder::load(Path::new("/nonexistent/lite0.pth"), DeviceChoice::Cpu, 1).unwrap_err();
        assert!(matches!(err, EmbedError::WeightsMissing { .. }));
        assert!(err.to_string().contains("scripts/fetch-model /nonexistent/lite0.pth"), "{err}");
    }

    #[test]
    fn garbage_weights_are_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.pth");
        std::fs::write(&p, b"not a checkpoint").unwrap();
        let err = Embedder::load(&p, DeviceChoice::Cpu, 1).unwrap_err();
        assert!(matches!(err, EmbedError::WeightsInvalid { .. }), "{err}");
    }

    #[test]
    fn embedder_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Embedder>();
    }
}

pub mod preprocess;

pub mod cli;

impl Embedder {
    /// Embed decoded images through the pipeline's own path: on wgpu the WGSL kernel resizes
    /// and normalizes on the device (no host round-trip); on the CPU the SIMD resize does.
    pub fn embed_images(&self, images: &[&crate::decode::RgbImage]) -> Result<Vec<Embedding>, EmbedError> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch_size().max(1)) {
            match self {
                Embedder::Wgpu(_) | Embedder::Clip(_) if self.is_gpu() => {
                    let device = self.device().expect("wgpu has a device");
                    // Big images (panoramas, huge PNGs only box-reduced) can make a full batch
                    // exceed one upload; such a batch goes up in parts rather than failing.
                    for part in preprocess::upload_groups(chunk, preprocess::MAX_BATCH_BYTES) {
                        let x = preprocess::gpu_resize_normalize(device, &chunk[part]).map_err(EmbedError::Device)?;
                        out.extend(self.embed_device_tensor(x)?);
                    }
                }
                _ => {
                    let data = preprocess::cpu_resize_normalize_batch(chunk);
                    out.extend(self.embed_normalized(&data, chunk.len())?);
                }
            }
        }
        Ok(out)
    }
}

impl Embedder {
    /// True on wgpu: the pipeline then resizes on the device.
    pub fn is_gpu(&self) -> bool {
        match self {
            Embedder::Wgpu(_) => true,
            Embedder::Clip(c) => c.is_wgpu(),
            _ => false,
        }
    }
}
