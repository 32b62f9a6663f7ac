//! The CPU executor: EfficientNet-Lite0 run with our own fused, channels-last kernels
//! (`kernels.rs`) instead of Burn flex's generic conv2d.
//!
//! It is built from the same [`Architecture`] the Burn module is built from (one model
//! definition, BatchNorm already folded at load); here the weights are additionally prepacked:
//! 1×1 convolutions to `[cin, cout]` GEMM operands, depthwise ones to `[k·k, c]`, the stem to
//! `[27, 32]`. A forward pass per image is: stem patches → GEMM; per block expand GEMM (+ReLU6),
//! depthwise (+bias+ReLU6), project GEMM (+bias+residual); head GEMM (+ReLU6); mean pool;
//! classifier. Parity with the Burn module and the numpy reference is tested in
//! `tests/it/embed_model.rs`.
//!
//! Parallelism: images of a batch are spread over `threads` scoped threads, one image per thread
//! at a time (no synchronisation inside a forward pass; throughput does not fall with batch).
//! Activation buffers are reused across calls from a small pool (no page faults per image).

pub(crate) mod exec;
pub(crate) mod kernels;
pub(crate) mod transformer;

use std::sync::OnceLock;

use super::efficientnet::{Architecture, CLASSES, ConvSpec, FEATURES};
use super::{INPUT, RawOutput};
use kernels::{Depthwise, Isa, Pointwise};

struct CpuBlock {
    expand: Option<Pointwise>,
    depthwise: Depthwise,
    project: Pointwise,
    residual: bool,
}

pub(crate) struct CpuNet {
    stem: Pointwise,
    stem_kernel: usize,
    stem_stride: usize,
    blocks: Vec<CpuBlock>,
    head: Pointwise,
    fc: Pointwise,
    isa: Isa,
    threads: usize,
    /// Largest activation (floats) of one image, for the scratch buffers.
    max_activation: usize,
    scratch: exec::Pool<Scratch>,
}

/// Three activation buffers of one image in flight.
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl Scratch {
    fn new(floats: usize) -> Scratch {
        Scratch { a: vec![0.0; floats], b: vec![0.0; floats], c: vec![0.0; floats] }
    }
}

fn pack_pointwise(s: &ConvSpec) -> Pointwise {
    let (cout, cin) = (s.out_ch, s.in_per_group);
    let mut w = vec![0f32; cin * cout];
    for o in 0..cout {
        for i in 0..cin {
            w[i * cout + o] = s.weight[o * cin + i];
        }
    }
    Pointwise::new(w, s.bias.clone(), cin, cout, s.relu6)
}

fn pack_depthwise(s: &ConvSpec) -> Depthwise {
    let (c, k) = (s.out_ch, s.kernel);
    let mut w = vec![0f32; k * k * c];
    for ch in 0..c {
        for t in 0..k * k {
            w[t * c + ch] = s.weight[ch * k * k + t];
        }
    }
    Depthwise { w, bias: s.bias.clone(), c, k, stride: s.stride, relu6: s.relu6 }
}

/// Stem weight `[32, 3, k, k]` → `[(ky·k + kx)·3 + ci, 32]`, matching `stem_im2col`.
fn pack_stem(s: &ConvSpec) -> Pointwise {
    let (cout, k) = (s.out_ch, s.kernel);
    let depth = k * k * 3;
    let mut w = vec![0f32; depth * cout];
    for o in 0..cout {
        for ci in 0..3 {
            for t in 0..k * k {
                w[(t * 3 + ci) * cout + o] = s.weight[((o * 3) + ci) * k * k + t];
            }
        }
    }
    Pointwise::new(w, s.bias.clone(), depth, cout, s.relu6)
}

impl CpuNet {
    pub(crate) fn new(arch: &Architecture, threads: usize) -> Result<CpuNet, String> {
        if arch.stem.in_per_group != 3 || arch.stem.groups != 1 {
            return Err(format!("the stem takes {} channels, expected 3", arch.stem.in_per_group));
        }
        let mut blocks = Vec::with_capacity(arch.blocks.len());
        // Walk the shapes once to size the scratch buffers.
        let mut side = INPUT.div_ceil(arch.stem.stride);
        let mut max_activation = side * side * arch.stem.out_ch.max(arch.stem.kernel * arch.stem.kernel * 3);
        for b in &arch.blocks {
            let expand = b.expand.as_ref().map(pack_pointwise);
            if let Some(e) = &expand {
                max_activation = max_activation.max(side * side * e.cout);
            }
            let depthwise = pack_depthwise(&b.depthwise);
            side = side.div_ceil(depthwise.stride);
            max_activation = max_activation.max(side * side * depthwise.c);
            blocks.push(CpuBlock { expand, depthwise, project: pack_pointwise(&b.project), residual: b.residual });
        }
        let head = pack_pointwise(&arch.head);
        max_activation = max_activation.max(side * side * head.cout);
        if head.cout != FEATURES {
            return Err(format!("the head has {} features, expected {FEATURES}", head.cout));
        }
        let fc = Pointwise::new(arch.fc_weight_t.clone(), arch.fc_bias.clone(), FEATURES, CLASSES, false);
        Ok(CpuNet {
            stem: pack_stem(&arch.stem),
            stem_kernel: arch.stem.kernel,
            stem_stride: arch.stem.stride,
            blocks,
            head,
            fc,
            isa: Isa::detect(),
            threads: threads.max(1),
            max_activation,
            scratch: exec::Pool::new(threads.max(1)),
        })
    }

    /// E.g. `AVX-512, 2 threads`.
    pub(crate) fn describe(&self) -> String {
        format!("{}, {} threads", self.isa.name(), self.threads)
    }

    /// Forward `n` NCHW images (`n · 3 · 224 · 224` floats): contiguous runs of images over
    /// the threads, one image at a time per thread.
    pub(crate) fn forward(&self, nchw: &[f32], n: usize) -> Vec<RawOutput> {
        let per = 3 * INPUT * INPUT;
        let outs: Vec<OnceLock<RawOutput>> = (0..n).map(|_| OnceLock::new()).collect();
        exec::fan_out(self.threads, n, |images| {
            let mut s = self.scratch.take_or(|| Scratch::new(self.max_activation));
            for i in images {
                let _ = outs[i].set(self.forward_one(&nchw[i * per..(i + 1) * per], &mut s));
            }
            self.scratch.give(s);
        });
        outs.into_iter().map(|o| o.into_inner().expect("every image is forwarded")).collect()
    }

    fn forward_one(&self, x: &[f32], s: &mut Scratch) -> RawOutput {
        let isa = self.isa;
        let Scratch { a, b, c } = s;
        let (mut cur, mut t1, t2) = (a, b, c);
        // Stem: patches into t2, GEMM into cur.
        let (mut h, mut w) = kernels::stem_im2col(x, INPUT, INPUT, self.stem_kernel, self.stem_stride, t2);
        let m = h * w;
        kernels::pointwise(isa, &t2[..m * self.stem.cin], m, &self.stem, None, &mut cur[..m * self.stem.cout]);
        let mut ch = self.stem.cout;
        for blk in &self.blocks {
            let m = h * w;
            // Expand (or the input itself) → depthwise into t2.
            let (ho, wo) = match &blk.expand {
                Some(e) => {
                    kernels::pointwise(isa, &cur[..m * ch], m, e, None, &mut t1[..m * e.cout]);
                    kernels::depthwise(isa, &t1[..m * e.cout], h, w, &blk.depthwise, t2)
                }
                None => kernels::depthwise(isa, &cur[..m * ch], h, w, &blk.depthwise, t2),
            };
            let mo = ho * wo;
            let p = &blk.project;
            let residual = blk.residual.then(|| &cur[..mo * p.cout]);
            kernels::pointwise(isa, &t2[..mo * p.cin], mo, p, residual, &mut t1[..mo * p.cout]);
            std::mem::swap(&mut cur, &mut t1);
            (h, w, ch) = (ho, wo, p.cout);
        }
        let m = h * w;
        kernels::pointwise(isa, &cur[..m * ch], m, &self.head, None, &mut t1[..m * self.head.cout]);
        let mut pooled = vec![0f32; FEATURES];
        for row in t1[..m * FEATURES].chunks_exact(FEATURES) {
            for (p, v) in pooled.iter_mut().zip(row) {
                *p += v;
            }
        }
        let inv = 1.0 / m as f32;
        pooled.iter_mut().for_each(|p| *p *= inv);
        let mut logits = vec![0f32; CLASSES];
        kernels::pointwise(isa, &pooled, 1, &self.fc, None, &mut logits);
        RawOutput { pooled, logits }
    }
}
