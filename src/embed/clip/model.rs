//! CLIP's two towers (open_clip `CLIP`: ViT image tower, causal text transformer) as Burn tensor
//! programs, built from a checkpoint's tensors. The architecture is read from the shapes (widths,
//! layers, patch, grid, context, vocabulary, embedding size); what the weights do not carry comes
//! from the [`Variant`]: the width of an attention head (64 for every ViT-B model) and the MLP
//! activation (GELU for open_clip's LAION models, QuickGELU for OpenAI's).
//!
//! Two exact shortcuts:
//! * the image tower takes pixdex's pipeline input, `(px - 127) / 128`: CLIP's per-channel mean
//!   and std are folded into the patch convolution (a per-input-channel scale and an output bias);
//! * the text tower only runs the tokens up to the end-of-text token it pools: attention is
//!   causal, so later tokens (padding) cannot change it.

use burn::tensor::activation::{gelu, sigmoid, softmax};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};

use super::host::{HostImage, HostText};
use super::weights::Checkpoint;
use crate::embed::cpu::exec::Pool;
use crate::embed::cpu::kernels::Isa;
use crate::embed::cpu::transformer as host;

const LN_EPS: f64 = 1e-5;
/// OpenAI CLIP's image normalization.
pub(crate) const MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub(crate) const STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// What a checkpoint does not say about its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Variant {
    pub head_width: usize,
    pub quick_gelu: bool,
}

/// The shapes read from a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    pub vision_width: usize,
    pub vision_layers: usize,
    pub patch: usize,
    pub grid: usize,
    pub text_width: usize,
    pub text_layers: usize,
    pub context: usize,
    pub vocab: usize,
    pub embed_dim: usize,
}

struct Linear {
    /// `[in, out]` (PyTorch's `[out, in]` transposed once at load).
    w: Tensor<2>,
    b: Tensor<1>,
}

impl Linear {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [n, l, d] = x.dims();
        let out = self.w.dims()[1];
        let y = x.reshape([n * l, d]).matmul(self.w.clone()) + self.b.clone().unsqueeze();
        y.reshape([n, l, out])
    }
}

struct LayerNorm {
    g: Tensor<1>,
    b: Tensor<1>,
}

impl LayerNorm {
    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mean = x.clone().mean_dim(D - 1);
        let centered = x - mean;
        let var = centered.clone().powi_scalar(2).mean_dim(D - 1);
        let y = centered / (var + LN_EPS).sqrt();
        y * self.g.clone().unsqueeze() + self.b.clone().unsqueeze()
    }
}

struct Block {
    ln_1: LayerNorm,
    qkv: Linear,
    out: Linear,
    ln_2: LayerNorm,
    fc: Linear,
    proj: Linear,
}

struct Transformer {
    blocks: Vec<Block>,
    heads: usize,
    quick_gelu: bool,
}

impl Transformer {
    /// `mask`: `[L, L]` added to the attention logits (the text tower's causal mask).
    fn forward(&self, mut x: Tensor<3>, mask: Option<&Tensor<2>>) -> Tensor<3> {
        for b in &self.blocks {
            x = x.clone() + self.attention(b, b.ln_1.forward(x), mask);
            let h = b.fc.forward(b.ln_2.forward(x.clone()));
            let h = if self.quick_gelu { h.clone() * sigmoid(h * 1.702) } else { gelu(h) };
            x = x + b.proj.forward(h);
        }
        x
    }

    fn attention(&self, b: &Block, x: Tensor<3>, mask: Option<&Tensor<2>>) -> Tensor<3> {
        let [n, l, d] = x.dims();
        let hd = d / self.heads;
        let qkv = b.qkv.forward(x).reshape([n, l, 3, self.heads, hd]);
        let part = |i: usize| qkv.clone().narrow(2, i, 1).reshape([n, l, self.heads, hd]).swap_dims(1, 2);
        let (q, k, v) = (part(0), part(1), part(2));
        let mut logits = q.matmul(k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt());
        if let Some(m) = mask {
            logits = logits + m.clone().unsqueeze::<4>();
        }
        let y = softmax(logits, 3).matmul(v).swap_dims(1, 2).reshape([n, l, d]);
        b.out.forward(y)
    }
}

pub(crate) struct ClipModel {
    pub shape: Shape,
    image: ImageTower,
    // Text tower.
    token_embedding: Vec<f32>,
    text_pos: Vec<f32>,
    /// `None`: an instance that embeds images only (the pipeline's).
    text: Option<TextTower>,
    device: Device,
}

/// The image tower through Burn (flex: the reference; wgpu: the GPU path).
struct BurnImage {
    patch_w: Tensor<4>,
    patch_b: Tensor<1>,
    class_embedding: Tensor<3>,
    vision_pos: Tensor<3>,
    ln_pre: LayerNorm,
    visual: Transformer,
    ln_post: LayerNorm,
    visual_proj: Tensor<2>,
}

/// The image tower through Burn, or on the host kernels (`host.rs`, CPU devices).
enum ImageTower {
    Burn(Box<BurnImage>),
    Host(Box<HostImage>),
}

/// Where the text tower runs, if this instance has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextMode {
    /// On the host, pixdex's CPU kernels (CPU devices).
    Host,
    /// Through Burn on the device (wgpu).
    Burn,
    /// Not loaded.
    None,
}

/// The text transformer on the device (wgpu), or on the host for CPU queries (`host.rs`).
enum TextTower {
    Burn(Box<BurnText>),
    Host(Box<HostText>),
}

struct BurnText {
    transformer: Transformer,
    ln_final: LayerNorm,
    proj: Tensor<2>,
}

fn count_blocks(ck: &Checkpoint, prefix: &str) -> usize {
    (0..).take_while(|i| ck.has(&format!("{prefix}.resblocks.{i}.ln_1.weight"))).count()
}

impl Shape {
    pub(crate) fn read(ck: &Checkpoint) -> Result<Shape, String> {
        let conv = ck.shape("visual.conv1.weight")?;
        if conv.len() != 4 || conv[1] != 3 || conv[2] != conv[3] {
            return Err(format!("`visual.conv1.weight` has shape {conv:?}, expected [width, 3, patch, patch] (a ViT image tower)"));
        }
        let (vision_width, patch) = (conv[0], conv[2]);
        let tokens = ck.shape("visual.positional_embedding")?[0];
        let grid = ((tokens.saturating_sub(1)) as f64).sqrt().round() as usize;
        if grid * grid + 1 != tokens {
            return Err(format!("`visual.positional_embedding` has {tokens} rows, expected a square grid plus one class token"));
        }
        let tok = ck.shape("token_embedding.weight")?;
        if tok.len() != 2 {
            return Err(format!("`token_embedding.weight` has shape {tok:?}, expected [vocab, width]"));
        }
        let (vocab, text_width) = (tok[0], tok[1]);
        let context = ck.shape("positional_embedding")?[0];
        let embed_dim = *ck.shape("visual.proj")?.last().unwrap_or(&0);
        let text_embed = *ck.shape("text_projection")?.last().unwrap_or(&0);
        if embed_dim == 0 || embed_dim != text_embed {
            return Err(format!("`visual.proj` gives {embed_dim} dimensions but `text_projection` {text_embed}: not one CLIP model"));
        }
        let shape = Shape {
            vision_width,
            vision_layers: count_blocks(ck, "visual.transformer"),
            patch,
            grid,
            text_width,
            text_layers: count_blocks(ck, "transformer"),
            context,
            vocab,
            embed_dim,
        };
        if shape.vision_layers == 0 || shape.text_layers == 0 {
            return Err("no transformer blocks found (`visual.transformer.resblocks.N.*`, `transformer.resblocks.N.*`)".into());
        }
        Ok(shape)
    }

    pub(crate) fn image_size(&self) -> usize {
        self.grid * self.patch
    }
}

impl ClipModel {
    /// `host_image`: the image tower on the host kernels (else through Burn on `device`);
    /// `bf16`: the host towers' GEMMs in bf16 (where the CPU has AVX512-BF16).
    pub(crate) fn load(mut ck: Checkpoint, variant: Variant, device: &Device, text_mode: TextMode, host_image: bool, bf16: bool) -> Result<ClipModel, String> {
        let shape = Shape::read(&ck)?;
        for (what, width) in [("image", shape.vision_width), ("text", shape.text_width)] {
            if width % variant.head_width != 0 {
                return Err(format!("the {what} tower's width {width} is not a multiple of the head width {}", variant.head_width));
            }
        }
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let image = if host_image {
            ImageTower::Host(Box::new(host_image_tower(&mut ck, &shape, variant, threads, bf16)?))
        } else {
            ImageTower::Burn(Box::new(burn_image_tower(&mut ck, &shape, variant, device)?))
        };
        let (tw, e) = (shape.text_width, shape.embed_dim);
        let (token_embedding, text_pos) = if text_mode == TextMode::None {
            (Vec::new(), Vec::new())
        } else {
            (ck.take("token_embedding.weight", &[shape.vocab, tw])?, ck.take("positional_embedding", &[shape.context, tw])?)
        };
        let text = match text_mode {
            TextMode::None => None,
            TextMode::Host => Some(TextTower::Host(Box::new(host_text_tower(&mut ck, shape.text_layers, tw, e, variant, threads, bf16)?))),
            TextMode::Burn => Some(TextTower::Burn(Box::new(BurnText {
                transformer: transformer(&mut ck, "transformer", shape.text_layers, tw, variant, device)?,
                ln_final: layer_norm(&mut ck, "ln_final", tw, device)?,
                proj: Tensor::<2>::from_data(TensorData::new(ck.take("text_projection", &[tw, e])?, [tw, e]), device),
            }))),
        };
        Ok(ClipModel { shape, image, token_embedding, text_pos, text, device: device.clone() })
    }

    pub(crate) fn has_text(&self) -> bool {
        self.text.is_some()
    }

    /// Attention heads of the image and text towers.
    pub(crate) fn heads(&self) -> (usize, usize) {
        let text = match &self.text {
            Some(TextTower::Burn(b)) => b.transformer.heads,
            Some(TextTower::Host(h)) => h.transformer.heads,
            None => self.shape.text_width / 64,
        };
        let image = match &self.image {
            ImageTower::Burn(b) => b.visual.heads,
            ImageTower::Host(h) => h.transformer.heads,
        };
        (image, text)
    }

    /// True when the image tower runs on the host kernels (it takes host batches).
    pub(crate) fn host_image(&self) -> bool {
        matches!(self.image, ImageTower::Host(_))
    }

    /// Image features (not normalized) of `n` NCHW pipeline-normalized images on the host
    /// kernels; `None` when the image tower is Burn's.
    pub(crate) fn encode_image_host(&self, nchw: &[f32], n: usize) -> Option<Vec<Vec<f32>>> {
        match &self.image {
            ImageTower::Host(h) => Some(h.forward(nchw, n)),
            ImageTower::Burn(_) => None,
        }
    }

    /// Image features (not normalized), `[n, embed_dim]`, from `[n, 3, S, S]` pipeline input,
    /// through Burn; `None` when the image tower is on the host ([`Self::encode_image_host`]).
    pub(crate) fn encode_image(&self, x: Tensor<4>) -> Option<Tensor<2>> {
        let ImageTower::Burn(m) = &self.image else { return None };
        let [n, _, _, _] = x.dims();
        let (w, g) = (self.shape.vision_width, self.shape.grid);
        let options = ConvOptions { stride: [self.shape.patch; 2], padding: [(0, 0); 2], dilation: [1, 1], groups: 1 };
        let patches = conv2d(x, m.patch_w.clone(), Some(m.patch_b.clone()), options); // [n, w, g, g]
        let patches = patches.reshape([n, w, g * g]).swap_dims(1, 2);
        let cls = m.class_embedding.clone().expand([n, 1, w]);
        let x = Tensor::cat(vec![cls, patches], 1) + m.vision_pos.clone();
        let x = m.visual.forward(m.ln_pre.forward(x), None);
        let pooled = x.narrow(1, 0, 1).reshape([n, w]);
        Some(m.ln_post.forward(pooled).matmul(m.visual_proj.clone()))
    }

    /// Text features (not normalized), one row per token sequence (each from the tokenizer:
    /// start, ..., end; at most `context`). `pad_to` rounds the Burn tower's sequence length up
    /// (wgpu compiles kernels per shape).
    pub(crate) fn encode_text(&self, seqs: &[Vec<u32>], pad_to: usize) -> Result<Vec<Vec<f32>>, String> {
        let (tw, ctx) = (self.shape.text_width, self.shape.context);
        let mut pool_at = Vec::with_capacity(seqs.len());
        for (i, s) in seqs.iter().enumerate() {
            if s.is_empty() || s.len() > ctx {
                return Err(format!("text {i} has {} tokens, expected 1..={ctx}", s.len()));
            }
            if let Some(bad) = s.iter().find(|t| **t as usize >= self.shape.vocab) {
                return Err(format!("token {bad} is outside the vocabulary of {}", self.shape.vocab));
            }
            // open_clip pools at argmax(tokens): the first end-of-text (the largest id).
            let max = *s.iter().max().expect("non-empty");
            pool_at.push(s.iter().position(|t| *t == max).expect("present"));
        }
        // Token embeddings plus positions for the first `len` tokens of a sequence.
        let embed = |s: &[u32], len: usize, out: &mut [f32]| {
            for j in 0..len {
                let tok = s.get(j).copied().unwrap_or(0) as usize;
                let row = &mut out[j * tw..(j + 1) * tw];
                row.copy_from_slice(&self.token_embedding[tok * tw..(tok + 1) * tw]);
                for (r, p) in row.iter_mut().zip(&self.text_pos[j * tw..(j + 1) * tw]) {
                    *r += p;
                }
            }
        };
        let (transformer, ln_final, proj) = match &self.text {
            None => return Err("this instance embeds images only (the pipeline's); queries use their own".into()),
            Some(TextTower::Host(h)) => {
                return Ok(seqs
                    .iter()
                    .zip(&pool_at)
                    .map(|(s, &p)| {
                        let mut x = vec![0f32; (p + 1) * tw];
                        embed(s, p + 1, &mut x);
                        h.forward(x, p + 1, p)
                    })
                    .collect());
            }
            Some(TextTower::Burn(b)) => (&b.transformer, &b.ln_final, &b.proj),
        };
        let need = pool_at.iter().max().map(|p| p + 1).unwrap_or(1);
        let len = need.div_ceil(pad_to.max(1)).saturating_mul(pad_to.max(1)).min(ctx);
        let n = seqs.len();
        let mut data = vec![0f32; n * len * tw];
        for (i, s) in seqs.iter().enumerate() {
            embed(s, len, &mut data[i * len * tw..(i + 1) * len * tw]);
        }
        let x = Tensor::<3>::from_data(TensorData::new(data, [n, len, tw]), &self.device);
        let mut mask = vec![0f32; len * len];
        for r in 0..len {
            for c in r + 1..len {
                mask[r * len + c] = f32::NEG_INFINITY;
            }
        }
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [len, len]), &self.device);
        let x = transformer.forward(x, Some(&mask));
        let rows: Vec<Tensor<2>> = pool_at.iter().enumerate().map(|(i, &p)| x.clone().narrow(0, i, 1).narrow(1, p, 1).reshape([1, tw])).collect();
        let pooled = Tensor::cat(rows, 0);
        let out = ln_final.forward(pooled).matmul(proj.clone());
        let e = self.shape.embed_dim;
        let data = out.try_into_data().map_err(|e| format!("{e:?}"))?;
        let flat: Vec<f32> = data.try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
        Ok(flat.chunks_exact(e).map(<[f32]>::to_vec).collect())
    }
}

/// The patch convolution `[width, 3, p, p]` with CLIP's normalization folded in, and its bias:
/// the input is pixdex's `v = (px - 127) / 128`, CLIP wants `(px / 255 - mean) / std`, which is
/// `a v + b` per channel.
fn folded_patch_embedding(ck: &mut Checkpoint, vw: usize, p: usize) -> Result<(Vec<f32>, Vec<f32>), String> {
    let mut conv = ck.take("visual.conv1.weight", &[vw, 3, p, p])?;
    let mut bias = vec![0f32; vw];
    for (o, bias_o) in bias.iter_mut().enumerate() {
        for c in 0..3 {
            let a = 128.0 / (255.0 * STD[c]);
            let b = (127.0 / 255.0 - MEAN[c]) / STD[c];
            let base = (o * 3 + c) * p * p;
            let mut sum = 0f64;
            for w in &mut conv[base..base + p * p] {
                sum += *w as f64 * b;
                *w = (*w as f64 * a) as f32;
            }
            *bias_o += sum as f32;
        }
    }
    Ok((conv, bias))
}

fn burn_image_tower(ck: &mut Checkpoint, shape: &Shape, variant: Variant, device: &Device) -> Result<BurnImage, String> {
    let (vw, p, e) = (shape.vision_width, shape.patch, shape.embed_dim);
    let (conv, bias) = folded_patch_embedding(ck, vw, p)?;
    let tokens = shape.grid * shape.grid + 1;
    Ok(BurnImage {
        patch_w: Tensor::<4>::from_data(TensorData::new(conv, [vw, 3, p, p]), device),
        patch_b: Tensor::<1>::from_data(TensorData::new(bias, [vw]), device),
        class_embedding: Tensor::<3>::from_data(TensorData::new(ck.take("visual.class_embedding", &[vw])?, [1, 1, vw]), device),
        vision_pos: Tensor::<3>::from_data(TensorData::new(ck.take("visual.positional_embedding", &[tokens, vw])?, [1, tokens, vw]), device),
        ln_pre: layer_norm(ck, "visual.ln_pre", vw, device)?,
        visual: transformer(ck, "visual.transformer", shape.vision_layers, vw, variant, device)?,
        ln_post: layer_norm(ck, "visual.ln_post", vw, device)?,
        visual_proj: Tensor::<2>::from_data(TensorData::new(ck.take("visual.proj", &[vw, e])?, [vw, e]), device),
    })
}

fn host_image_tower(ck: &mut Checkpoint, shape: &Shape, variant: Variant, threads: usize, bf16: bool) -> Result<HostImage, String> {
    let isa = Isa::detect();
    let (vw, p, e) = (shape.vision_width, shape.patch, shape.embed_dim);
    let (conv, bias) = folded_patch_embedding(ck, vw, p)?;
    let tokens = shape.grid * shape.grid + 1;
    let class = ck.take("visual.class_embedding", &[vw])?;
    let mut start = ck.take("visual.positional_embedding", &[tokens, vw])?;
    for (t, row) in start.chunks_exact_mut(vw).enumerate() {
        let add = if t == 0 { &class } else { &bias };
        for (s, a) in row.iter_mut().zip(add) {
            *s += a;
        }
    }
    Ok(HostImage {
        patch: host::Linear::from_torch(&conv, vec![0.0; vw], vw, 3 * p * p, isa, bf16),
        start,
        ln_pre: host_norm(ck, "visual.ln_pre", vw)?,
        transformer: host_transformer(ck, "visual.transformer", shape.vision_layers, vw, variant, isa, bf16)?,
        ln_post: host_norm(ck, "visual.ln_post", vw)?,
        proj: host::Linear::new(ck.take("visual.proj", &[vw, e])?, vec![0.0; e], vw, e, isa, bf16),
        patch_px: p,
        size: shape.image_size(),
        threads: threads.max(1),
        isa,
        scratch: Pool::new(threads),
    })
}

fn host_norm(ck: &mut Checkpoint, prefix: &str, width: usize) -> Result<host::LayerNorm, String> {
    Ok(host::LayerNorm { g: ck.take(&format!("{prefix}.weight"), &[width])?, b: ck.take(&format!("{prefix}.bias"), &[width])? })
}

#[allow(clippy::too_many_arguments)]
fn host_linear(ck: &mut Checkpoint, w_key: &str, b_key: &str, out: usize, inp: usize, isa: Isa, bf16: bool) -> Result<host::Linear, String> {
    let (w, b) = transposed(ck, w_key, b_key, out, inp)?;
    Ok(host::Linear::new(w, b, inp, out, isa, bf16))
}

fn host_transformer(
    ck: &mut Checkpoint,
    prefix: &str,
    layers: usize,
    width: usize,
    variant: Variant,
    isa: Isa,
    bf16: bool,
) -> Result<host::Transformer, String> {
    let mut blocks = Vec::with_capacity(layers);
    for i in 0..layers {
        let p = format!("{prefix}.resblocks.{i}");
        let hidden = ck.shape(&format!("{p}.mlp.c_fc.weight"))?[0];
        blocks.push(host::Block {
            ln_1: host_norm(ck, &format!("{p}.ln_1"), width)?,
            qkv: host_linear(ck, &format!("{p}.attn.in_proj_weight"), &format!("{p}.attn.in_proj_bias"), 3 * width, width, isa, bf16)?,
            out: host_linear(ck, &format!("{p}.attn.out_proj.weight"), &format!("{p}.attn.out_proj.bias"), width, width, isa, bf16)?,
            ln_2: host_norm(ck, &format!("{p}.ln_2"), width)?,
            fc: host_linear(ck, &format!("{p}.mlp.c_fc.weight"), &format!("{p}.mlp.c_fc.bias"), hidden, width, isa, bf16)?,
            proj: host_linear(ck, &format!("{p}.mlp.c_proj.weight"), &format!("{p}.mlp.c_proj.bias"), width, hidden, isa, bf16)?,
        });
    }
    Ok(host::Transformer { blocks, heads: width / variant.head_width, width, quick_gelu: variant.quick_gelu, isa })
}

fn host_text_tower(ck: &mut Checkpoint, layers: usize, width: usize, embed: usize, variant: Variant, threads: usize, bf16: bool) -> Result<HostText, String> {
    let isa = Isa::detect();
    Ok(HostText {
        transformer: host_transformer(ck, "transformer", layers, width, variant, isa, bf16)?,
        ln_final: host_norm(ck, "ln_final", width)?,
        proj: host::Linear::new(ck.take("text_projection", &[width, embed])?, vec![0.0; embed], width, embed, isa, bf16),
        threads: threads.max(1),
        isa,
        scratch: Pool::new(1),
    })
}

fn layer_norm(ck: &mut Checkpoint, prefix: &str, width: usize, device: &Device) -> Result<LayerNorm, String> {
    let g = ck.take(&format!("{prefix}.weight"), &[width])?;
    let b = ck.take(&format!("{prefix}.bias"), &[width])?;
    Ok(LayerNorm { g: Tensor::from_data(TensorData::new(g, [width]), device), b: Tensor::from_data(TensorData::new(b, [width]), device) })
}

/// PyTorch `[out, in]` weight + bias, the weight transposed to `[in, out]`.
fn transposed(ck: &mut Checkpoint, w_key: &str, b_key: &str, out: usize, inp: usize) -> Result<(Vec<f32>, Vec<f32>), String> {
    let w = ck.take(w_key, &[out, inp])?;
    let mut t = vec![0f32; out * inp];
    for o in 0..out {
        for i in 0..inp {
            t[i * out + o] = w[o * inp + i];
        }
    }
    Ok((t, ck.take(b_key, &[out])?))
}

/// PyTorch `[out, in]` weight + bias → [`Linear`].
fn linear(ck: &mut Checkpoint, w_key: &str, b_key: &str, out: usize, inp: usize, device: &Device) -> Result<Linear, String> {
    let (t, b) = transposed(ck, w_key, b_key, out, inp)?;
    Ok(Linear { w: Tensor::from_data(TensorData::new(t, [inp, out]), device), b: Tensor::from_data(TensorData::new(b, [out]), device) })
}

fn transformer(ck: &mut Checkpoint, prefix: &str, layers: usize, width: usize, variant: Variant, device: &Device) -> Result<Transformer, String> {
    let mut blocks = Vec::with_capacity(layers);
    for i in 0..layers {
        let p = format!("{prefix}.resblocks.{i}");
        let hidden = ck.shape(&format!("{p}.mlp.c_fc.weight"))?[0];
        blocks.push(Block {
            ln_1: layer_norm(ck, &format!("{p}.ln_1"), width, device)?,
            qkv: linear(ck, &format!("{p}.attn.in_proj_weight"), &format!("{p}.attn.in_proj_bias"), 3 * width, width, device)?,
            out: linear(ck, &format!("{p}.attn.out_proj.weight"), &format!("{p}.attn.out_proj.bias"), width, width, device)?,
            ln_2: layer_norm(ck, &format!("{p}.ln_2"), width, device)?,
            fc: linear(ck, &format!("{p}.mlp.c_fc.weight"), &format!("{p}.mlp.c_fc.bias"), hidden, width, device)?,
            proj: linear(ck, &format!("{p}.mlp.c_proj.weight"), &format!("{p}.mlp.c_proj.bias"), width, hidden, device)?,
        });
    }
    Ok(Transformer { blocks, heads: width / variant.head_width, quick_gelu: variant.quick_gelu })
}
