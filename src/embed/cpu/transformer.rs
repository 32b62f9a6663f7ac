//! A pre-LayerNorm transformer (CLIP's: both towers) on the CPU kernels.
//!
//! Every matmul is [`gemm_acc`] over weights prepacked once at load into the AVX-512
//! micro-kernel's panels, across all tokens of all sequences in hand (`seqs × len` rows), with
//! the bias and the residual stream as the accumulator's starting value: the attention output
//! projection and the MLP's second layer accumulate straight into the residual stream. LayerNorm,
//! attention (per sequence and head, vectorized across keys, then across the head's width),
//! softmax's exponential and GELU / QuickGELU are written once, generic over whether fused
//! multiply-add may be used, and compiled per instruction set like the rest of `kernels.rs`.
//! Buffers live in a [`Scratch`] the caller keeps between calls (nothing is allocated per
//! forward once it has grown to the largest batch).

use super::kernels::{Isa, PanelsBf16, Pointwise, bf16_supported, gemm_acc, gemm_acc_bf16};

/// A linear layer, `y = x · w + b`, its weight prepacked (on AVX-512 only the panels are kept;
/// in bf16 only the bf16 panels).
pub(crate) struct Linear {
    p: Pointwise,
    bf16: Option<PanelsBf16>,
}

impl Linear {
    /// From a `[in, out]` row-major weight and its bias. `bf16`: products in bf16 (weights
    /// rounded once here, activations per call), sums in f32 — where the CPU has AVX512-BF16
    /// (else f32).
    pub(crate) fn new(w: Vec<f32>, b: Vec<f32>, inp: usize, out: usize, isa: Isa, bf16: bool) -> Linear {
        if bf16 && bf16_supported() {
            let packed = PanelsBf16::new(&w, inp, out);
            let p = Pointwise { w: Vec::new(), panels: Vec::new(), bias: b, cin: inp, cout: out, relu6: false };
            return Linear { p, bf16: Some(packed) };
        }
        let mut p = Pointwise::new(w, b, inp, out, false);
        if isa == Isa::Avx512 {
            // The AVX-512 kernel reads only the prepacked panels: don't keep two copies.
            p.w = Vec::new();
        } else {
            // The `gemm` crate reads the plain weight: don't keep the panels.
            p.panels = Vec::new();
        }
        Linear { p, bf16: None }
    }

    /// From PyTorch's `[out, in]` row-major weight and its bias.
    pub(crate) fn from_torch(w: &[f32], b: Vec<f32>, out: usize, inp: usize, isa: Isa, bf16: bool) -> Linear {
        assert_eq!(w.len(), out * inp, "linear weight is out × in");
        let mut t = vec![0f32; out * inp];
        for o in 0..out {
            for i in 0..inp {
                t[i * out + o] = w[o * inp + i];
            }
        }
        Linear::new(t, b, inp, out, isa, bf16)
    }

    pub(crate) fn inp(&self) -> usize {
        self.p.cin
    }

    pub(crate) fn out(&self) -> usize {
        self.p.cout
    }

    /// `out[m, out] = x[m, in] · w + b`; `threads` split the output columns.
    pub(crate) fn apply(&self, isa: Isa, x: &[f32], m: usize, out: &mut [f32], threads: usize) {
        let out = &mut out[..m * self.p.cout];
        for row in out.chunks_exact_mut(self.p.cout) {
            row.copy_from_slice(&self.p.bias);
        }
        self.accumulate(isa, x, m, out, threads);
    }

    /// `out[m, out] += x[m, in] · w` (the bias left out: the caller's starting value has it).
    pub(crate) fn accumulate(&self, isa: Isa, x: &[f32], m: usize, out: &mut [f32], threads: usize) {
        let out = &mut out[..m * self.p.cout];
        match &self.bf16 {
            Some(b) => gemm_acc_bf16(x, m, b, out, threads),
            None => gemm_acc(isa, x, m, &self.p, out, threads),
        }
    }

    /// `out[m, out] += x[m, in] · w + b` (a residual connection).
    pub(crate) fn apply_add(&self, isa: Isa, x: &[f32], m: usize, out: &mut [f32], threads: usize) {
        let out = &mut out[..m * self.p.cout];
        for row in out.chunks_exact_mut(self.p.cout) {
            for (o, b) in row.iter_mut().zip(&self.p.bias) {
                *o += b;
            }
        }
        self.accumulate(isa, x, m, out, threads);
    }
}

const LN_EPS: f32 = 1e-5;

/// LayerNorm over the last axis (gain, bias).
pub(crate) struct LayerNorm {
    pub g: Vec<f32>,
    pub b: Vec<f32>,
}

impl LayerNorm {
    /// Normalize each row of `x` (rows of `g.len()`) into `out`.
    pub(crate) fn apply(&self, isa: Isa, x: &[f32], out: &mut [f32]) {
        let d = self.g.len();
        let out = &mut out[..x.len()];
        debug_assert_eq!(x.len() % d, 0);
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `detect` saw AVX-512F and FMA on this CPU.
            Isa::Avx512 => unsafe { layer_norm_avx512(x, &self.g, &self.b, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `detect` saw AVX2 and FMA on this CPU.
            Isa::Avx2 => unsafe { layer_norm_avx2(x, &self.g, &self.b, out) },
            _ => layer_norm_generic::<false>(x, &self.g, &self.b, out),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn layer_norm_avx512(x: &[f32], g: &[f32], b: &[f32], out: &mut [f32]) {
    layer_norm_generic::<true>(x, g, b, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn layer_norm_avx2(x: &[f32], g: &[f32], b: &[f32], out: &mut [f32]) {
    layer_norm_generic::<true>(x, g, b, out)
}

/// Sum in 16 independent lanes (so the compiler may vectorize it), then across the lanes.
#[inline(always)]
fn sum_lanes(v: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max_lanes(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = v.chunks_exact(16);
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for i in 0..16 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter().copied().fold(tail, f32::max)
}

#[inline(always)]
fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
fn layer_norm_generic<const FMA: bool>(x: &[f32], g: &[f32], b: &[f32], out: &mut [f32]) {
    let d = g.len();
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = sum_lanes(row) / d as f32;
        let mut sq = [0f32; 16];
        let chunks = row.chunks_exact(16);
        let mut tail = 0f32;
        for v in chunks.remainder() {
            tail += (v - mean) * (v - mean);
        }
        for c in chunks {
            for i in 0..16 {
                let t = c[i] - mean;
                sq[i] = fmadd::<FMA>(t, t, sq[i]);
            }
        }
        let var = (sq.iter().sum::<f32>() + tail) / d as f32;
        let inv = 1.0 / (var + LN_EPS).sqrt();
        for i in 0..d {
            o[i] = fmadd::<FMA>((row[i] - mean) * inv, g[i], b[i]);
        }
    }
}

/// `e^x` to about 1e-7 relative (Cephes' `expf` polynomial after `x = n ln2 + r`), written so
/// that a loop over it vectorizes. Inputs below -87 give ~1e-38 (softmax weights that small do
/// not matter).
#[inline(always)]
pub(crate) fn exp_approx<const FMA: bool>(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = fmadd::<FMA>(x, std::f32::consts::LOG2_E, 0.5).floor();
    let r = fmadd::<FMA>(n, -0.693_359_4, x);
    let r = fmadd::<FMA>(n, 2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4;
    p = fmadd::<FMA>(p, r, 1.398_199_9e-3);
    p = fmadd::<FMA>(p, r, 8.333_452e-3);
    p = fmadd::<FMA>(p, r, 4.166_579_6e-2);
    p = fmadd::<FMA>(p, r, 0.166_666_65);
    p = fmadd::<FMA>(p, r, 0.5);
    let y = fmadd::<FMA>(p, r * r, r) + 1.0;
    y * f32::from_bits((((n as i32) + 127) as u32) << 23)
}

/// `erf(x)` to a few ulp: a rational approximation on [-4, 4] (beyond, ±1 in f32), the one
/// Eigen and XLA use, written so that a loop over it vectorizes.
#[inline(always)]
pub(crate) fn erf_approx<const FMA: bool>(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10;
    p = fmadd::<FMA>(x2, p, 2.770_681_4e-8);
    p = fmadd::<FMA>(x2, p, -2.101_024e-6);
    p = fmadd::<FMA>(x2, p, -5.692_506_4e-5);
    p = fmadd::<FMA>(x2, p, -7.349_906e-4);
    p = fmadd::<FMA>(x2, p, -2.954_6e-3);
    p = fmadd::<FMA>(x2, p, -1.609_603_3e-2);
    let mut q = -1.456_607_2e-5;
    q = fmadd::<FMA>(x2, q, -2.133_740_6e-4);
    q = fmadd::<FMA>(x2, q, -1.682_827e-3);
    q = fmadd::<FMA>(x2, q, -7.373_329e-3);
    q = fmadd::<FMA>(x2, q, -1.426_474e-2);
    x * p / q
}

/// In place: GELU (`x Φ(x)`, with erf) or QuickGELU (`x σ(1.702 x)`, OpenAI's CLIP).
pub(crate) fn gelu(isa: Isa, quick: bool, v: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` saw AVX-512F and FMA on this CPU.
        Isa::Avx512 => unsafe { gelu_avx512(quick, v) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` saw AVX2 and FMA on this CPU.
        Isa::Avx2 => unsafe { gelu_avx2(quick, v) },
        _ => gelu_generic::<false>(quick, v),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn gelu_avx512(quick: bool, v: &mut [f32]) {
    gelu_generic::<true>(quick, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gelu_avx2(quick: bool, v: &mut [f32]) {
    gelu_generic::<true>(quick, v)
}

#[inline(always)]
fn gelu_generic<const FMA: bool>(quick: bool, v: &mut [f32]) {
    if quick {
        for x in v {
            *x /= 1.0 + exp_approx::<FMA>(-1.702 * *x);
        }
    } else {
        for x in v {
            *x = 0.5 * *x * (1.0 + erf_approx::<FMA>(*x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// Geometry of one attention call: `seqs` sequences of `len` tokens, `heads` heads over `width`.
#[derive(Clone, Copy)]
struct Attn {
    seqs: usize,
    len: usize,
    width: usize,
    heads: usize,
    causal: bool,
}

/// `att[s·len + i, head] = softmax(q kᵀ / √hd (causal: keys ≤ i)) v` from the fused
/// `qkv[rows, 3·width]` (q | k | v, heads side by side in each).
fn attention(isa: Isa, a: Attn, qkv: &[f32], att: &mut [f32], kt: &mut [f32], scores: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` saw AVX-512F and FMA on this CPU.
        Isa::Avx512 => unsafe { attention_avx512(a, qkv, att, kt, scores) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` saw AVX2 and FMA on this CPU.
        Isa::Avx2 => unsafe { attention_avx2(a, qkv, att, kt, scores) },
        _ => attention_generic::<false>(a, qkv, att, kt, scores),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn attention_avx512(a: Attn, qkv: &[f32], att: &mut [f32], kt: &mut [f32], scores: &mut [f32]) {
    attention_generic::<true>(a, qkv, att, kt, scores)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn attention_avx2(a: Attn, qkv: &[f32], att: &mut [f32], kt: &mut [f32], scores: &mut [f32]) {
    attention_generic::<true>(a, qkv, att, kt, scores)
}

#[inline(always)]
fn attention_generic<const FMA: bool>(a: Attn, qkv: &[f32], att: &mut [f32], kt: &mut [f32], scores: &mut [f32]) {
    let (len, w) = (a.len, a.width);
    let hd = w / a.heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let kt = &mut kt[..hd * len];
    let scores = &mut scores[..len];
    for s in 0..a.seqs {
        let base = s * len;
        for h in 0..a.heads {
            // Keys transposed, `[hd, len]`: scores then vectorize across keys.
            for j in 0..len {
                let k = &qkv[(base + j) * 3 * w + w + h * hd..][..hd];
                for (d, kv) in k.iter().enumerate() {
                    kt[d * len + j] = *kv;
                }
            }
            for i in 0..len {
                let n = if a.causal { i + 1 } else { len };
                let sc = &mut scores[..n];
                sc.fill(0.0);
                let q = &qkv[(base + i) * 3 * w + h * hd..][..hd];
                for (d, qv) in q.iter().enumerate() {
                    let qd = qv * scale;
                    let krow = &kt[d * len..d * len + n];
                    for (sj, kj) in sc.iter_mut().zip(krow) {
                        *sj = fmadd::<FMA>(qd, *kj, *sj);
                    }
                }
                let max = max_lanes(sc);
                for sj in sc.iter_mut() {
                    *sj = exp_approx::<FMA>(*sj - max);
                }
                let inv = 1.0 / sum_lanes(sc);
                let dst = &mut att[(base + i) * w + h * hd..][..hd];
                dst.fill(0.0);
                for (j, sj) in sc.iter().enumerate() {
                    let p = sj * inv;
                    let v = &qkv[(base + j) * 3 * w + 2 * w + h * hd..][..hd];
                    for (o, vv) in dst.iter_mut().zip(v) {
                        *o = fmadd::<FMA>(p, *vv, *o);
                    }
                }
            }
        }
    }
}

/// One residual block: `x += attn(ln_1(x))`, `x += mlp(ln_2(x))`.
pub(crate) struct Block {
    pub ln_1: LayerNorm,
    pub qkv: Linear,
    pub out: Linear,
    pub ln_2: LayerNorm,
    pub fc: Linear,
    pub proj: Linear,
}

pub(crate) struct Transformer {
    pub blocks: Vec<Block>,
    pub heads: usize,
    pub width: usize,
    pub quick_gelu: bool,
    /// The instruction set its kernels run with (the one the weights were packed for).
    pub isa: Isa,
}

/// A forward pass's buffers, grown to the largest call and kept between calls.
#[derive(Default)]
pub(crate) struct Scratch {
    h: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    f: Vec<f32>,
    kt: Vec<f32>,
    scores: Vec<f32>,
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

impl Transformer {
    fn hidden(&self) -> usize {
        self.blocks.first().map(|b| b.fc.out()).unwrap_or(0)
    }

    /// Run every block over `x` (`[seqs · len, width]`, the residual stream, updated in place).
    /// `causal`: token `i` attends to tokens `0..=i` only (the text tower). `threads` split each
    /// GEMM's output columns (for few rows; a caller with many sequences splits those instead).
    pub(crate) fn forward(&self, x: &mut [f32], seqs: usize, len: usize, causal: bool, threads: usize, s: &mut Scratch) {
        let (isa, w, m) = (self.isa, self.width, seqs * len);
        let x = &mut x[..m * w];
        let hd = w / self.heads;
        grow(&mut s.h, m * w);
        grow(&mut s.qkv, m * 3 * w);
        grow(&mut s.att, m * w);
        grow(&mut s.f, m * self.hidden());
        grow(&mut s.kt, hd * len);
        grow(&mut s.scores, len);
        let geom = Attn { seqs, len, width: w, heads: self.heads, causal };
        for b in &self.blocks {
            let h = &mut s.h[..m * w];
            b.ln_1.apply(isa, x, h);
            b.qkv.apply(isa, h, m, &mut s.qkv, threads);
            attention(isa, geom, &s.qkv[..m * 3 * w], &mut s.att[..m * w], &mut s.kt, &mut s.scores);
            b.out.apply_add(isa, &s.att[..m * w], m, x, threads);
            b.ln_2.apply(isa, x, h);
            let f = &mut s.f[..m * b.fc.out()];
            b.fc.apply(isa, h, m, f, threads);
            gelu(isa, self.quick_gelu, f);
            b.proj.apply_add(isa, f, m, x, threads);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn exp_and_erf_match_libm() {
        let mut worst = (0f64, 0f64);
        for i in -20000..=20000 {
            let x = i as f32 / 1000.0; // -20 .. 20
            let e = exp_approx::<true>(x) as f64;
            let want = (x as f64).exp();
            worst.0 = worst.0.max((e - want).abs() / want);
            let erf = erf_approx::<false>(x / 4.0) as f64;
            worst.1 = worst.1.max((erf - libm::erf(x as f64 / 4.0)).abs());
        }
        assert!(worst.0 < 3e-7, "exp relative error {}", worst.0);
        assert!(worst.1 < 1e-6, "erf absolute error {}", worst.1); // a few ulp of 1.0
        assert!(exp_approx::<true>(-200.0) < 1e-37 && exp_approx::<true>(-200.0) >= 0.0);
    }

    #[test]
    fn layer_norm_and_gelu_match_the_formulas_on_every_isa() {
        let d = 40; // not a multiple of 16: the lanes' tail counts
        let x = pseudo(3 * d, 3).iter().map(|v| v * 3.0 + 0.5).collect::<Vec<_>>();
        let ln = LayerNorm { g: pseudo(d, 5), b: pseudo(d, 7) };
        for isa in [Isa::detect(), Isa::Baseline] {
            let mut out = vec![0f32; 3 * d];
            ln.apply(isa, &x, &mut out);
            for r in 0..3 {
                let row = &x[r * d..(r + 1) * d];
                let mean = row.iter().map(|v| *v as f64).sum::<f64>() / d as f64;
                let var = row.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
                for i in 0..d {
                    let want = (row[i] as f64 - mean) / (var + 1e-5).sqrt() * ln.g[i] as f64 + ln.b[i] as f64;
                    assert!((out[r * d + i] as f64 - want).abs() < 1e-5, "{isa:?} row {r} col {i}");
                }
            }
            for quick in [false, true] {
                let mut v: Vec<f32> = (-60..60).map(|i| i as f32 / 8.0).collect();
                let orig = v.clone();
                gelu(isa, quick, &mut v);
                for (g, x) in v.iter().zip(&orig) {
                    let x = *x as f64;
                    let want = if quick { x / (1.0 + (-1.702 * x).exp()) } else { 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)) };
                    assert!((*g as f64 - want).abs() < 1e-6 * (1.0 + want.abs()), "{isa:?} quick={quick} x={x}: {g} vs {want}");
                }
            }
        }
    }

    /// Naive attention in f64 over the same fused layout.
    fn naive_attention(qkv: &[f32], seqs: usize, len: usize, w: usize, heads: usize, causal: bool) -> Vec<f64> {
        let hd = w / heads;
        let mut out = vec![0f64; seqs * len * w];
        let at = |r: usize, c: usize| qkv[r * 3 * w + c] as f64;
        for s in 0..seqs {
            for h in 0..heads {
                for i in 0..len {
                    let n = if causal { i + 1 } else { len };
                    let logits: Vec<f64> = (0..n)
                        .map(|j| (0..hd).map(|d| at(s * len + i, h * hd + d) * at(s * len + j, w + h * hd + d)).sum::<f64>() / (hd as f64).sqrt())
                        .collect();
                    let max = logits.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
                    for d in 0..hd {
                        out[(s * len + i) * w + h * hd + d] = (0..n).map(|j| (logits[j] - max).exp() / z * at(s * len + j, 2 * w + h * hd + d)).sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn attention_matches_naive_causal_or_not() {
        let (seqs, len, w, heads) = (2, 19, 48, 3);
        let qkv: Vec<f32> = pseudo(seqs * len * 3 * w, 11).iter().map(|v| v * 2.0).collect();
        for isa in [Isa::detect(), Isa::Baseline] {
            for causal in [false, true] {
                let want = naive_attention(&qkv, seqs, len, w, heads, causal);
                let mut att = vec![f32::NAN; seqs * len * w];
                let (mut kt, mut scores) = (vec![0f32; w / heads * len], vec![0f32; len]);
                attention(isa, Attn { seqs, len, width: w, heads, causal }, &qkv, &mut att, &mut kt, &mut scores);
                for (i, (g, w)) in att.iter().zip(&want).enumerate() {
                    assert!((*g as f64 - w).abs() < 1e-5, "{isa:?} causal={causal} at {i}: {g} vs {w}");
                }
            }
        }
    }
}
