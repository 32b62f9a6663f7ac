//! CLIP's text tower on the CPU without Burn: a query is a handful of tokens, so every matmul
//! is a few rows against a large weight matrix — memory-bound — and Burn flex's per-op overhead
//! dominated (38 ms for a short query against 14 ms here on 2 cores, `cargo bench --bench clip`).
//! GEMMs on pixdex's prepacked CPU kernels (`embed/cpu`), columns split over the cores; the same math as the Burn
//! tower (`model.rs`), checked against open_clip's reference embeddings like it
//! (`tests/it/clip.rs`).

use crate::embed::cpu::kernels::{Isa, Pointwise, pointwise};

/// One linear layer: the output columns in `parts` (one per core), each a prepacked
/// [`Pointwise`] GEMM (pixdex's CPU kernels: AVX-512 micro-kernel, or `gemm` elsewhere).
pub(crate) struct HostLinear {
    parts: Vec<(usize, Pointwise)>,
    pub inp: usize,
    pub out: usize,
    isa: Isa,
}

impl HostLinear {
    /// From a `[in, out]` row-major weight and its bias.
    pub(crate) fn new(w: Vec<f32>, b: Vec<f32>, inp: usize, out: usize, threads: usize) -> HostLinear {
        let isa = Isa::detect();
        let parts = threads.clamp(1, 8).min(out / 64).max(1);
        let cols = out.div_ceil(parts);
        let parts = (0..parts)
            .map(|p| {
                let (c0, c1) = (p * cols, ((p + 1) * cols).min(out));
                let mut pw = Vec::with_capacity(inp * (c1 - c0));
                for k in 0..inp {
                    pw.extend_from_slice(&w[k * out + c0..k * out + c1]);
                }
                let mut p = Pointwise::new(pw, b[c0..c1].to_vec(), inp, c1 - c0, false);
                if isa == Isa::Avx512 {
                    // The AVX-512 kernel reads only the prepacked panels: don't keep two copies.
                    p.w = Vec::new();
                }
                (c0, p)
            })
            .collect();
        HostLinear { parts, inp, out, isa }
    }
}

pub(crate) struct HostNorm {
    pub g: Vec<f32>,
    pub b: Vec<f32>,
}

pub(crate) struct HostBlock {
    pub ln_1: HostNorm,
    pub qkv: HostLinear,
    pub out: HostLinear,
    pub ln_2: HostNorm,
    pub fc: HostLinear,
    pub proj: HostLinear,
}

pub(crate) struct HostText {
    pub blocks: Vec<HostBlock>,
    pub heads: usize,
    pub quick_gelu: bool,
    pub ln_final: HostNorm,
    /// `[width, embed]`.
    pub proj: Vec<f32>,
    pub embed: usize,
}

const LN_EPS: f32 = 1e-5;

impl HostNorm {
    fn apply(&self, x: &[f32], out: &mut [f32]) {
        let d = self.g.len();
        for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let mean = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let inv = 1.0 / (var + LN_EPS).sqrt();
            for i in 0..d {
                o[i] = (row[i] - mean) * inv * self.g[i] + self.b[i];
            }
        }
    }
}

impl HostLinear {
    /// `out[m, out] = x[m, inp] · w + b`, each part of the columns on its own core.
    fn apply(&self, x: &[f32], m: usize, out: &mut [f32]) {
        debug_assert_eq!(x.len(), m * self.inp);
        debug_assert_eq!(out.len(), m * self.out);
        let run = |p: &Pointwise| {
            let mut tmp = vec![0f32; m * p.cout];
            pointwise(self.isa, x, m, p, None, &mut tmp);
            tmp
        };
        let results: Vec<Vec<f32>> = if self.parts.len() == 1 {
            vec![run(&self.parts[0].1)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = self.parts[1..].iter().map(|(_, p)| s.spawn(move || run(p))).collect();
                let mut r = vec![run(&self.parts[0].1)];
                r.extend(handles.into_iter().map(|h| h.join().expect("linear part")));
                r
            })
        };
        for ((c0, p), tmp) in self.parts.iter().zip(results) {
            for r in 0..m {
                out[r * self.out + c0..r * self.out + c0 + p.cout].copy_from_slice(&tmp[r * p.cout..(r + 1) * p.cout]);
            }
        }
    }
}

impl HostText {
    /// Features (not normalized) at `pool` of one sequence whose token embeddings plus
    /// positions are `x` (`[len, width]`, `len = pool + 1`: later tokens cannot matter).
    pub(crate) fn forward(&self, mut x: Vec<f32>, len: usize, pool: usize) -> Vec<f32> {
        let d = self.ln_final.g.len();
        let hd = d / self.heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut h = vec![0f32; len * d];
        let mut qkv = vec![0f32; len * 3 * d];
        let mut att = vec![0f32; len * d];
        let mut o = vec![0f32; len * d];
        let mut scores = vec![0f32; len];
        for b in &self.blocks {
            b.ln_1.apply(&x, &mut h);
            b.qkv.apply(&h, len, &mut qkv);
            for head in 0..self.heads {
                for i in 0..len {
                    let q = &qkv[i * 3 * d + head * hd..][..hd];
                    let mut max = f32::NEG_INFINITY;
                    for (j, sc) in scores.iter_mut().enumerate().take(i + 1) {
                        let k = &qkv[j * 3 * d + d + head * hd..][..hd];
                        *sc = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
                        max = max.max(*sc);
                    }
                    let mut sum = 0f32;
                    for sc in &mut scores[..=i] {
                        *sc = (*sc - max).exp();
                        sum += *sc;
                    }
                    let dst = &mut att[i * d + head * hd..][..hd];
                    dst.fill(0.0);
                    for (j, sc) in scores[..=i].iter().enumerate() {
                        let v = &qkv[j * 3 * d + 2 * d + head * hd..][..hd];
                        let w = sc / sum;
                        for (a, vv) in dst.iter_mut().zip(v) {
                            *a += w * vv;
                        }
                    }
                }
            }
            b.out.apply(&att, len, &mut o);
            for (xv, ov) in x.iter_mut().zip(&o) {
                *xv += ov;
            }
            b.ln_2.apply(&x, &mut h);
            let mut f = vec![0f32; len * b.fc.out];
            b.fc.apply(&h, len, &mut f);
            for v in &mut f {
                *v = if self.quick_gelu { *v / (1.0 + (-1.702 * *v).exp()) } else { 0.5 * *v * (1.0 + libm::erff(*v * std::f32::consts::FRAC_1_SQRT_2)) };
            }
            b.proj.apply(&f, len, &mut o);
            for (xv, ov) in x.iter_mut().zip(&o) {
                *xv += ov;
            }
        }
        let mut row = vec![0f32; d];
        self.ln_final.apply(&x[pool * d..(pool + 1) * d], &mut row);
        let mut out = vec![0f32; self.embed];
        for (i, r) in row.iter().enumerate() {
            for (o, w) in out.iter_mut().zip(&self.proj[i * self.embed..(i + 1) * self.embed]) {
                *o += r * w;
            }
        }
        out
    }
}
