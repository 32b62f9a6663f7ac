//! The CPU kernels, channels-last (`[h, w, c]` per image, row-major):
//!
//! * [`pointwise`]: a 1×1 convolution is a GEMM `[h·w, cin] × [cin, cout]`. It runs in row tiles
//!   sized to stay in L2: each output tile is prefilled with the bias (and the residual input),
//!   the GEMM accumulates into it and ReLU6 clamps it while it is still in cache — bias,
//!   activation and the residual add never take a pass over memory of their own. On AVX-512 the
//!   GEMM is pixdex's own 8×32 micro-kernel over weights prepacked at load into 32-column panels
//!   (the clamp happens in registers); elsewhere the `gemm` crate's AVX2 / SSE kernels, which
//!   pack their operands on every call.
//! * [`depthwise`]: k×k depthwise convolution + bias + ReLU6 in one pass, vectorized across
//!   channels (the contiguous axis), with TF "SAME" padding.
//! * [`stem_im2col`]: the 3×3 stride-2 stem's patches, read straight from the NCHW input, so the
//!   stem is a GEMM of depth 27 through [`pointwise`].
//!
//! Hot loops are written once, generic over whether fused multiply-add may be used, and compiled
//! three times: with AVX-512F + FMA, with AVX2 + FMA, and for the baseline target. The widest one
//! the running CPU supports is picked at run time (`is_x86_feature_detected!`), so the binary
//! stays portable and needs no `-C target-cpu`.

/// Prepacked 1×1 convolution: weight `[cin, cout]` (row-major), folded BatchNorm bias.
#[derive(Debug, Clone)]
pub(crate) struct Pointwise {
    pub w: Vec<f32>,
    /// The same weight in the AVX-512 micro-kernel's layout: panels of [`NR`] output columns,
    /// each `[cin, NR]` contiguous, the last one zero-padded (no packing per call).
    pub panels: Vec<f32>,
    pub bias: Vec<f32>,
    pub cin: usize,
    pub cout: usize,
    pub relu6: bool,
}

/// Output columns per AVX-512 micro-kernel panel (two 16-lane registers).
const NR: usize = 32;
/// Output rows per AVX-512 micro-kernel call: 8 × 2 accumulators = 16 registers, enough
/// independent FMAs to hide their latency.
const MR: usize = 8;

impl Pointwise {
    pub(crate) fn new(w: Vec<f32>, bias: Vec<f32>, cin: usize, cout: usize, relu6: bool) -> Pointwise {
        assert_eq!(w.len(), cin * cout, "pointwise weight is cin × cout");
        assert_eq!(bias.len(), cout, "pointwise bias is cout");
        let n_panels = cout.div_ceil(NR);
        let mut panels = vec![0f32; n_panels * cin * NR];
        for j in 0..n_panels {
            for k in 0..cin {
                for c in 0..NR.min(cout - j * NR) {
                    panels[(j * cin + k) * NR + c] = w[k * cout + j * NR + c];
                }
            }
        }
        Pointwise { w, panels, bias, cin, cout, relu6 }
    }
}

/// Prepacked depthwise convolution: weight `[k·k, c]`, folded bias, stride, ReLU6.
#[derive(Debug, Clone)]
pub(crate) struct Depthwise {
    pub w: Vec<f32>,
    pub bias: Vec<f32>,
    pub c: usize,
    pub k: usize,
    pub stride: usize,
    pub relu6: bool,
}

/// Bytes of L2 a pointwise tile (its input rows plus its output rows) may use.
const TILE_BYTES: usize = 384 * 1024;

/// Instruction sets the kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

impl Isa {
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "AVX-512",
            Isa::Avx2 => "AVX2",
            Isa::Baseline => "baseline SIMD",
        }
    }
}

/// Flush-to-zero and denormals-are-zero on this thread while alive (restored on drop).
/// Activations of some inputs decay into denormals, which cost x86 FMA units a microcode assist
/// each; the model's outputs do not depend on values below 1e-38.
pub(crate) struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

impl FlushDenormals {
    pub(crate) fn new() -> FlushDenormals {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = mxcsr();
            set_mxcsr(saved | 0x8040); // FTZ (bit 15) | DAZ (bit 6)
            FlushDenormals { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushDenormals {}
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        set_mxcsr(self.saved);
    }
}

#[cfg(target_arch = "x86_64")]
fn mxcsr() -> u32 {
    let mut v: u32 = 0;
    // SAFETY: stmxcsr only stores the SSE control/status register into `v`.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack, preserves_flags)) };
    v
}

#[cfg(target_arch = "x86_64")]
fn set_mxcsr(v: u32) {
    // SAFETY: ldmxcsr loads a value derived from the current register with only the FTZ/DAZ mode
    // bits changed (or the saved value back); it unmasks no exception.
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, readonly, preserves_flags)) };
}

/// `out[m, cout] = relu6?(x[m, cin] · w + bias (+ residual))`.
pub(crate) fn pointwise(isa: Isa, x: &[f32], m: usize, p: &Pointwise, residual: Option<&[f32]>, out: &mut [f32]) {
    debug_assert_eq!(x.len(), m * p.cin);
    debug_assert_eq!(out.len(), m * p.cout);
    let rows = (TILE_BYTES / 4 / (p.cin + p.cout)).clamp(16, 1024);
    let mut r0 = 0;
    while r0 < m {
        let r1 = (r0 + rows).min(m);
        let tile = &mut out[r0 * p.cout..r1 * p.cout];
        match residual {
            Some(res) => prefill_residual(isa, tile, &p.bias, &res[r0 * p.cout..r1 * p.cout]),
            None => {
                for row in tile.chunks_exact_mut(p.cout) {
                    row.copy_from_slice(&p.bias);
                }
            }
        }
        let xs = &x[r0 * p.cin..r1 * p.cin];
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512 {
            // SAFETY: `detect` saw AVX-512F on this CPU.
            unsafe { pointwise_tile_avx512(xs, r1 - r0, p, tile) };
            r0 = r1;
            continue;
        }
        gemm_tile(xs, r1 - r0, p, tile);
        if p.relu6 {
            relu6(isa, tile);
        }
        r0 = r1;
    }
}

/// `tile += x · w` through the `gemm` crate (AVX2 / SSE micro-kernels; packs per call).
fn gemm_tile(x: &[f32], m: usize, p: &Pointwise, tile: &mut [f32]) {
    // SAFETY: `tile` is `(m) × cout` row-major, `x`'s rows r0..r1 are `cin` wide and
    // `w` is `cin × cout` row-major; the strides below describe exactly those buffers.
    unsafe {
        gemm::gemm(
            m,
            p.cout,
            p.cin,
            tile.as_mut_ptr(),
            1,
            p.cout as isize,
            true,
            x.as_ptr(),
            1,
            p.cin as isize,
            p.w.as_ptr(),
            1,
            p.cout as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `tile = relu6?(tile + x · w)` for `m` rows: the tile arrives prefilled with bias (and
/// residual), is loaded into registers once per 8×32 block, accumulated over all of `cin`, clamped
/// and stored once. Weights come from the prepacked panels, so nothing is copied per call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn pointwise_tile_avx512(x: &[f32], m: usize, p: &Pointwise, tile: &mut [f32]) {
    assert!(x.len() >= m * p.cin && tile.len() >= m * p.cout && p.panels.len() >= p.cout.div_ceil(NR) * p.cin * NR);
    for j in 0..p.cout.div_ceil(NR) {
        let c0 = j * NR;
        let (mask0, mask1) = panel_masks(p.cout - c0);
        let panel = &p.panels[j * p.cin * NR..(j + 1) * p.cin * NR];
        // SAFETY: rows 0..m exist in `x` (`cin` wide) and `tile` (`cout` wide), asserted above;
        // the panel holds `cin` rows of NR; columns beyond `cout` are masked off.
        unsafe {
            let block =
                Block { x: x.as_ptr(), xs: p.cin, kc: p.cin, w: panel.as_ptr(), out: tile.as_mut_ptr().add(c0), os: p.cout, mask0, mask1, relu6: p.relu6 };
            micro_rows(&block, 0, m);
        }
    }
}

/// Masks of a panel's two 16-lane halves when `valid` of its columns exist.
fn panel_masks(valid: usize) -> (u16, u16) {
    let valid = valid.min(NR);
    let mask0: u16 = if valid >= 16 { 0xffff } else { ((1u32 << valid) - 1) as u16 };
    let mask1: u16 = if valid >= NR {
        0xffff
    } else if valid > 16 {
        ((1u32 << (valid - 16)) - 1) as u16
    } else {
        0
    };
    (mask0, mask1)
}

/// One panel's worth of a GEMM for the micro-kernel: `out[r, 0..32] (+)= x[r, 0..kc] · w`.
#[cfg(target_arch = "x86_64")]
struct Block {
    /// Row 0 of the left operand, at its first `k`.
    x: *const f32,
    /// Row stride of `x`.
    xs: usize,
    /// Depth of this block.
    kc: usize,
    /// The panel's row at the first `k` (`[kc, NR]` contiguous).
    w: *const f32,
    /// Row 0 of the output, at the panel's first column.
    out: *mut f32,
    /// Row stride of `out`.
    os: usize,
    mask0: u16,
    mask1: u16,
    relu6: bool,
}

/// Rows `r0..r1` of a [`Block`]: [`MR`] rows per micro-kernel call, then the tail.
///
/// # Safety
/// AVX-512F must be available; rows `r0..r1` of `x` (`kc` values from the block's start) and of
/// `out` (the masked columns) must be valid; the panel must hold `kc` rows of [`NR`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn micro_rows(b: &Block, r0: usize, r1: usize) {
    let mut r = r0;
    // SAFETY: the caller's guarantee, row by row.
    unsafe {
        while r + MR <= r1 {
            micro_avx512::<MR>(b, r);
            r += MR;
        }
        match r1 - r {
            0 => {}
            1 => micro_avx512::<1>(b, r),
            2 => micro_avx512::<2>(b, r),
            3 => micro_avx512::<3>(b, r),
            4 => micro_avx512::<4>(b, r),
            5 => micro_avx512::<5>(b, r),
            6 => micro_avx512::<6>(b, r),
            7 => micro_avx512::<7>(b, r),
            _ => unreachable!("fewer than MR rows remain"),
        }
    }
}

/// One `R × 32` output block at rows `r..r+R` of a [`Block`] (columns masked): loaded into
/// registers, accumulated over the block's depth, clamped if asked, stored once.
///
/// # Safety
/// As [`micro_rows`], for rows `r..r+R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn micro_avx512<const R: usize>(b: &Block, r: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees the rows and the feature (see `# Safety`).
    unsafe {
        let xp = b.x.add(r * b.xs);
        let op = b.out.add(r * b.os);
        let wp = b.w;
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for (i, a) in acc.iter_mut().enumerate() {
            a[0] = _mm512_maskz_loadu_ps(b.mask0, op.add(i * b.os));
            a[1] = _mm512_maskz_loadu_ps(b.mask1, op.add(i * b.os + 16));
        }
        for k in 0..b.kc {
            let w0 = _mm512_loadu_ps(wp.add(k * NR));
            let w1 = _mm512_loadu_ps(wp.add(k * NR + 16));
            for (i, a) in acc.iter_mut().enumerate() {
                let v = _mm512_set1_ps(*xp.add(i * b.xs + k));
                a[0] = _mm512_fmadd_ps(v, w0, a[0]);
                a[1] = _mm512_fmadd_ps(v, w1, a[1]);
            }
        }
        if b.relu6 {
            let (lo, hi) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
            for a in acc.iter_mut() {
                a[0] = _mm512_min_ps(_mm512_max_ps(a[0], lo), hi);
                a[1] = _mm512_min_ps(_mm512_max_ps(a[1], lo), hi);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(op.add(i * b.os), b.mask0, a[0]);
            _mm512_mask_storeu_ps(op.add(i * b.os + 16), b.mask1, a[1]);
        }
    }
}

/// Rows of the left operand per cache block of [`gemm_acc`]: `MC × KC` floats (384 KiB) stay in
/// L2 while every panel of the weight passes over them.
const MC: usize = 512;
/// Depth per cache block of [`gemm_acc`]: a panel's `KC × 32` floats (24 KiB) stay in L1 while
/// the micro-kernel sweeps the block's rows.
const KC: usize = 192;
/// At most this many rows, [`gemm_acc`] does not block the depth (see `gemm_acc_avx512`).
const FEW_ROWS: usize = 32;

/// `out[m, cout] += x[m, cin] · w` — the transformer GEMM (no bias, no activation: the caller
/// prefills `out` with the bias, or the residual stream plus bias, and applies activations).
/// Unlike [`pointwise`], whose row tiles sweep all of a (small) weight per tile, this is blocked
/// for weights far bigger than the caches (ViT-B/32: 2.4–9.4 MB per matrix): `MC` rows × `KC`
/// depth of `x` in L2, one `KC × 32` panel block in L1, so each weight is read from memory once
/// per `MC` rows. `threads > 1` splits the panels (output columns) over scoped threads.
pub(crate) fn gemm_acc(isa: Isa, x: &[f32], m: usize, p: &Pointwise, out: &mut [f32], threads: usize) {
    assert!(x.len() >= m * p.cin && out.len() >= m * p.cout, "gemm_acc: {m} rows of {} -> {}", p.cin, p.cout);
    let out_ptr = SendPtr(out.as_mut_ptr());
    super::exec::fan_out(threads, p.cout.div_ceil(NR), |panels| {
        // SAFETY: `out` holds `m × cout` floats (asserted) and stays mutably borrowed until every
        // range is done; each range writes only the columns of its own panels.
        unsafe { gemm_acc_panels(isa, x, m, p, panels, out_ptr) }
    });
}

/// A raw output pointer handed to the threads of [`gemm_acc`], each writing its own columns.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the pointer is only written through in disjoint column ranges (see `gemm_acc`).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so a closure captures the whole `Sync` wrapper, not its field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// [`gemm_acc`] for the output columns of `panels` (32 each; the last may be partial).
///
/// # Safety
/// `out.0` points to `m × cout` floats that nothing else touches in these columns meanwhile.
unsafe fn gemm_acc_panels(isa: Isa, x: &[f32], m: usize, p: &Pointwise, panels: std::ops::Range<usize>, out: SendPtr) {
    if panels.is_empty() || m == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && !p.panels.is_empty() {
        // SAFETY: `detect` saw AVX-512F; the caller vouches for `out`.
        unsafe { gemm_acc_avx512(x, m, p, panels, out.0) };
        return;
    }
    let _ = isa;
    let (c0, c1) = (panels.start * NR, (panels.end * NR).min(p.cout));
    assert_eq!(p.w.len(), p.cin * p.cout, "the unpacked weight is kept off AVX-512");
    // SAFETY: `dst` is `m × (c1 - c0)` at row stride `cout` inside `out` (the caller's rows and
    // columns); `x` is `m × cin` row-major; `w`'s columns c0..c1 at row stride `cout`.
    unsafe {
        gemm::gemm(
            m,
            c1 - c0,
            p.cin,
            out.0.add(c0),
            1,
            p.cout as isize,
            true,
            x.as_ptr(),
            1,
            p.cin as isize,
            p.w.as_ptr().add(c0),
            1,
            p.cout as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gemm_acc_avx512(x: &[f32], m: usize, p: &Pointwise, panels: std::ops::Range<usize>, out: *mut f32) {
    let (cin, cout) = (p.cin, p.cout);
    // A few rows (a query's tokens) reuse a panel too little for L1 blocking to pay: stream
    // each panel whole, in the order it lies in memory.
    let kc_max = if m <= FEW_ROWS { cin } else { KC };
    for m0 in (0..m).step_by(MC) {
        let m1 = (m0 + MC).min(m);
        for k0 in (0..cin).step_by(kc_max) {
            let kc = kc_max.min(cin - k0);
            for j in panels.clone() {
                let c0 = j * NR;
                let (mask0, mask1) = panel_masks(cout - c0);
                // SAFETY: rows m0..m1 and depth k0..k0+kc lie inside `x` (asserted by
                // `gemm_acc`), the panel block inside `panels`, the masked columns inside `out`.
                unsafe {
                    let block = Block {
                        x: x.as_ptr().add(k0),
                        xs: cin,
                        kc,
                        w: p.panels.as_ptr().add((j * cin + k0) * NR),
                        out: out.add(c0),
                        os: cout,
                        mask0,
                        mask1,
                        relu6: false,
                    };
                    micro_rows(&block, m0, m1);
                }
            }
        }
    }
}

/// True when the CPU has AVX512-BF16 (`vdpbf16ps`: two bf16 products per f32 lane and
/// instruction, twice the multiply-adds of an f32 FMA).
pub(crate) fn bf16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// f32 → bf16 bits, rounded to nearest even (NaN stays NaN).
#[inline(always)]
pub(crate) fn to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    if v.is_nan() { ((b >> 16) | 0x40) as u16 } else { rounded }
}

/// A `[cin, cout]` weight in bf16 for [`gemm_acc_bf16`]: per panel of [`NR`] columns, `k` in
/// pairs, `[cin / 2, NR, 2]` (each pair of rows interleaved, as `vdpbf16ps` takes them); an odd
/// `cin` gets a zero row, missing columns are zero.
#[derive(Debug, Clone)]
pub(crate) struct PanelsBf16 {
    data: Vec<u16>,
    pub cin: usize,
    pub cout: usize,
}

impl PanelsBf16 {
    pub(crate) fn new(w: &[f32], cin: usize, cout: usize) -> PanelsBf16 {
        assert_eq!(w.len(), cin * cout, "bf16 weight is cin × cout");
        let pairs = cin.div_ceil(2);
        let n_panels = cout.div_ceil(NR);
        let mut data = vec![0u16; n_panels * pairs * NR * 2];
        for j in 0..n_panels {
            for k in 0..cin {
                for c in 0..NR.min(cout - j * NR) {
                    data[((j * pairs + k / 2) * NR + c) * 2 + k % 2] = to_bf16(w[k * cout + j * NR + c]);
                }
            }
        }
        PanelsBf16 { data, cin, cout }
    }
}

/// Buffers for the left operand of [`gemm_acc_bf16`] in bf16, taken and given back per call
/// (the calling threads are scoped, so a thread-local buffer would be allocated per forward).
static BF16_ROWS: super::exec::Pool<Vec<u16>> = super::exec::Pool::new(8);

/// `out[m, cout] += bf16(x[m, cin]) · w` with f32 accumulation (AVX512-BF16 only: check
/// [`bf16_supported`] before packing a [`PanelsBf16`]). Blocked like [`gemm_acc`]; `threads`
/// split the panels.
pub(crate) fn gemm_acc_bf16(x: &[f32], m: usize, p: &PanelsBf16, out: &mut [f32], threads: usize) {
    assert!(bf16_supported(), "gemm_acc_bf16 needs AVX512-BF16");
    assert!(x.len() >= m * p.cin && out.len() >= m * p.cout, "gemm_acc_bf16: {m} rows of {} -> {}", p.cin, p.cout);
    let xs = p.cin.div_ceil(2) * 2;
    let mut rows = BF16_ROWS.take();
    if rows.len() < m * xs {
        rows.resize(m * xs, 0);
    }
    for (r, dst) in x[..m * p.cin].chunks_exact(p.cin).zip(rows.chunks_exact_mut(xs)) {
        for (d, v) in dst.iter_mut().zip(r) {
            *d = to_bf16(*v);
        }
        if xs > p.cin {
            dst[p.cin] = 0;
        }
    }
    let xb = &rows[..m * xs];
    let out_ptr = SendPtr(out.as_mut_ptr());
    super::exec::fan_out(threads, p.cout.div_ceil(NR), |panels| {
        // SAFETY: disjoint columns per range (see `gemm_acc`); AVX512-BF16 checked above.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            gemm_acc_bf16_avx512(xb, xs, m, p, panels, out_ptr.get())
        }
    });
    BF16_ROWS.give(rows);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn gemm_acc_bf16_avx512(xb: &[u16], xs: usize, m: usize, p: &PanelsBf16, panels: std::ops::Range<usize>, out: *mut f32) {
    let pairs = xs / 2;
    for m0 in (0..m).step_by(MC) {
        let m1 = (m0 + MC).min(m);
        for k0 in (0..pairs).step_by(KC / 2) {
            let kp = (KC / 2).min(pairs - k0);
            for j in panels.clone() {
                let c0 = j * NR;
                let (mask0, mask1) = panel_masks(p.cout - c0);
                // SAFETY: rows m0..m1 and pairs k0..k0+kp lie inside `xb`, the panel block inside
                // the packed data, the masked columns inside `out` (the caller's guarantee).
                unsafe {
                    let b = BlockBf16 {
                        x: xb.as_ptr().add(2 * k0),
                        xs,
                        kp,
                        w: p.data.as_ptr().add((j * pairs + k0) * NR * 2),
                        out: out.add(c0),
                        os: p.cout,
                        mask0,
                        mask1,
                    };
                    let mut r = m0;
                    while r + MR <= m1 {
                        micro_bf16::<MR>(&b, r);
                        r += MR;
                    }
                    match m1 - r {
                        0 => {}
                        1 => micro_bf16::<1>(&b, r),
                        2 => micro_bf16::<2>(&b, r),
                        3 => micro_bf16::<3>(&b, r),
                        4 => micro_bf16::<4>(&b, r),
                        5 => micro_bf16::<5>(&b, r),
                        6 => micro_bf16::<6>(&b, r),
                        7 => micro_bf16::<7>(&b, r),
                        _ => unreachable!("fewer than MR rows remain"),
                    }
                }
            }
        }
    }
}

/// [`Block`] for bf16 operands: `kp` pairs of `k`.
#[cfg(target_arch = "x86_64")]
struct BlockBf16 {
    x: *const u16,
    xs: usize,
    kp: usize,
    w: *const u16,
    out: *mut f32,
    os: usize,
    mask0: u16,
    mask1: u16,
}

/// One `R × 32` block: `vdpbf16ps` per pair of `k` (a broadcast pair of `x` against the
/// panel's interleaved pair of rows).
///
/// # Safety
/// AVX-512F and AVX512-BF16; rows `r..r+R` of `x` (`2·kp` values) and of `out` (masked) valid.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn micro_bf16<const R: usize>(b: &BlockBf16, r: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees the rows and the features; `__m512i` and `__m512bh` are
    // both 64 bytes of packed lanes (a bit cast).
    unsafe {
        let xp = b.x.add(r * b.xs);
        let op = b.out.add(r * b.os);
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for (i, a) in acc.iter_mut().enumerate() {
            a[0] = _mm512_maskz_loadu_ps(b.mask0, op.add(i * b.os));
            a[1] = _mm512_maskz_loadu_ps(b.mask1, op.add(i * b.os + 16));
        }
        for k in 0..b.kp {
            let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.w.add(k * NR * 2) as *const _));
            let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.w.add(k * NR * 2 + NR) as *const _));
            for (i, a) in acc.iter_mut().enumerate() {
                let pair = (xp.add(i * b.xs + 2 * k) as *const i32).read_unaligned();
                let v: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                a[0] = _mm512_dpbf16_ps(a[0], v, w0);
                a[1] = _mm512_dpbf16_ps(a[1], v, w1);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(op.add(i * b.os), b.mask0, a[0]);
            _mm512_mask_storeu_ps(op.add(i * b.os + 16), b.mask1, a[1]);
        }
    }
}

/// TF "SAME" padding `(begin, end)` for one dimension (same rule as the Burn model).
fn same_padding(n: usize, k: usize, s: usize) -> usize {
    super::super::efficientnet::same_padding(n, k, s).0
}

/// Depthwise k×k convolution over `[h, w, c]` → `[ho, wo, c]`, bias and ReLU6 fused.
/// Returns `(ho, wo)`.
pub(crate) fn depthwise(isa: Isa, x: &[f32], h: usize, w: usize, d: &Depthwise, out: &mut [f32]) -> (usize, usize) {
    let (ho, wo) = (h.div_ceil(d.stride), w.div_ceil(d.stride));
    debug_assert_eq!(x.len(), h * w * d.c);
    let (pt, pl) = (same_padding(h, d.k, d.stride), same_padding(w, d.k, d.stride));
    let out = &mut out[..ho * wo * d.c];
    let geom = DwGeom { h, w, ho, wo, pt, pl };
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` saw AVX-512F and FMA on this CPU.
        Isa::Avx512 => unsafe { depthwise_avx512(x, d, geom, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` saw AVX2 and FMA on this CPU.
        Isa::Avx2 => unsafe { depthwise_avx2(x, d, geom, out) },
        _ => depthwise_generic::<false>(x, d, geom, out),
    }
    (ho, wo)
}

#[derive(Clone, Copy)]
struct DwGeom {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    pt: usize,
    pl: usize,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn depthwise_avx512(x: &[f32], d: &Depthwise, g: DwGeom, out: &mut [f32]) {
    depthwise_generic::<true>(x, d, g, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn depthwise_avx2(x: &[f32], d: &Depthwise, g: DwGeom, out: &mut [f32]) {
    depthwise_generic::<true>(x, d, g, out)
}

#[inline(always)]
fn depthwise_generic<const FMA: bool>(x: &[f32], d: &Depthwise, g: DwGeom, out: &mut [f32]) {
    let c = d.c;
    for oy in 0..g.ho {
        // Taps that fall inside the image for this output row.
        let y0 = (oy * d.stride) as isize - g.pt as isize;
        let ky_lo = (-y0).max(0) as usize;
        let ky_hi = ((g.h as isize - y0).min(d.k as isize)).max(0) as usize;
        for ox in 0..g.wo {
            let x0 = (ox * d.stride) as isize - g.pl as isize;
            let kx_lo = (-x0).max(0) as usize;
            let kx_hi = ((g.w as isize - x0).min(d.k as isize)).max(0) as usize;
            let taps = Taps { y0, x0, ky: ky_lo..ky_hi, kx: kx_lo..kx_hi };
            let o = &mut out[(oy * g.wo + ox) * c..][..c];
            // Channel blocks whose accumulators stay in registers across all taps: 64 wide, then
            // 16 wide, then one by one (EfficientNet-Lite0's channel counts are multiples of 16).
            let mut c0 = 0;
            while c0 + 64 <= c {
                dw_block::<FMA, 64>(x, d, &g, &taps, c0, o);
                c0 += 64;
            }
            while c0 + 16 <= c {
                dw_block::<FMA, 16>(x, d, &g, &taps, c0, o);
                c0 += 16;
            }
            while c0 < c {
                dw_block::<FMA, 1>(x, d, &g, &taps, c0, o);
                c0 += 1;
            }
        }
    }
}

/// The taps of one output pixel that fall inside the image.
struct Taps {
    y0: isize,
    x0: isize,
    ky: std::ops::Range<usize>,
    kx: std::ops::Range<usize>,
}

/// Channels `c0..c0 + B` of one output pixel: bias, every in-image tap, ReLU6, one store.
#[inline(always)]
fn dw_block<const FMA: bool, const B: usize>(x: &[f32], d: &Depthwise, g: &DwGeom, t: &Taps, c0: usize, o: &mut [f32]) {
    let c = d.c;
    let mut acc: [f32; B] = d.bias[c0..c0 + B].try_into().expect("block inside the channels");
    for ky in t.ky.clone() {
        let iy = (t.y0 + ky as isize) as usize;
        for kx in t.kx.clone() {
            let ix = (t.x0 + kx as isize) as usize;
            let xi: &[f32; B] = x[(iy * g.w + ix) * c + c0..][..B].try_into().expect("B channels");
            let wi: &[f32; B] = d.w[(ky * d.k + kx) * c + c0..][..B].try_into().expect("B channels");
            for j in 0..B {
                acc[j] = if FMA { xi[j].mul_add(wi[j], acc[j]) } else { xi[j] * wi[j] + acc[j] };
            }
        }
    }
    if d.relu6 {
        for v in acc.iter_mut() {
            *v = v.clamp(0.0, 6.0);
        }
    }
    o[c0..c0 + B].copy_from_slice(&acc);
}

/// Clamp to [0, 6] in place.
fn relu6(isa: Isa, v: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` saw AVX-512F on this CPU.
        Isa::Avx512 => unsafe { relu6_avx512(v) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` saw AVX2 on this CPU.
        Isa::Avx2 => unsafe { relu6_avx2(v) },
        _ => relu6_generic(v),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn relu6_avx512(v: &mut [f32]) {
    relu6_generic(v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn relu6_avx2(v: &mut [f32]) {
    relu6_generic(v)
}

#[inline(always)]
fn relu6_generic(v: &mut [f32]) {
    for x in v {
        *x = x.clamp(0.0, 6.0);
    }
}

/// `tile[r, :] = bias + res[r, :]`.
fn prefill_residual(isa: Isa, tile: &mut [f32], bias: &[f32], res: &[f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` saw AVX-512F on this CPU.
        Isa::Avx512 => unsafe { prefill_residual_avx512(tile, bias, res) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` saw AVX2 on this CPU.
        Isa::Avx2 => unsafe { prefill_residual_avx2(tile, bias, res) },
        _ => prefill_residual_generic(tile, bias, res),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn prefill_residual_avx512(tile: &mut [f32], bias: &[f32], res: &[f32]) {
    prefill_residual_generic(tile, bias, res)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn prefill_residual_avx2(tile: &mut [f32], bias: &[f32], res: &[f32]) {
    prefill_residual_generic(tile, bias, res)
}

#[inline(always)]
fn prefill_residual_generic(tile: &mut [f32], bias: &[f32], res: &[f32]) {
    let c = bias.len();
    for (row, r) in tile.chunks_exact_mut(c).zip(res.chunks_exact(c)) {
        for ((o, &b), &x) in row.iter_mut().zip(bias).zip(r) {
            *o = b + x;
        }
    }
}

/// Patches of a 3-channel NCHW image for a k×k stride-s convolution with TF "SAME" padding:
/// `cols[(oy·wo + ox), (ky·k + kx)·3 + ci]`, zeros outside the image. Returns `(ho, wo)`.
pub(crate) fn stem_im2col(x: &[f32], h: usize, w: usize, k: usize, s: usize, cols: &mut [f32]) -> (usize, usize) {
    let (ho, wo) = (h.div_ceil(s), w.div_ceil(s));
    let (pt, pl) = (same_padding(h, k, s), same_padding(w, k, s));
    let depth = k * k * 3;
    let plane = h * w;
    for oy in 0..ho {
        for ox in 0..wo {
            let row = &mut cols[(oy * wo + ox) * depth..][..depth];
            for ky in 0..k {
                let iy = (oy * s + ky) as isize - pt as isize;
                for kx in 0..k {
                    let ix = (ox * s + kx) as isize - pl as isize;
                    let inside = iy >= 0 && (iy as usize) < h && ix >= 0 && (ix as usize) < w;
                    for ci in 0..3 {
                        row[(ky * k + kx) * 3 + ci] = if inside { x[ci * plane + iy as usize * w + ix as usize] } else { 0.0 };
                    }
                }
            }
        }
    }
    (ho, wo)
}

/// Non-overlapping `p×p` patches of one NCHW image of side `size` (a ViT's patch embedding, a
/// convolution with stride = kernel): `rows[(gy·g + gx), (c·p + ky)·p + kx]`, PyTorch's
/// `[out, c, ky, kx]` weight order, so the embedding is one GEMM. `rows` holds `g² × 3p²`.
pub(crate) fn patch_im2col(x: &[f32], size: usize, p: usize, rows: &mut [f32]) {
    let g = size / p;
    let depth = 3 * p * p;
    let plane = size * size;
    for gy in 0..g {
        for gx in 0..g {
            let row = &mut rows[(gy * g + gx) * depth..][..depth];
            for c in 0..3 {
                for ky in 0..p {
                    let src = &x[c * plane + (gy * p + ky) * size + gx * p..][..p];
                    row[(c * p + ky) * p..][..p].copy_from_slice(src);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct (naive) depthwise conv over `[h, w, c]` with explicit padding, for reference.
    fn naive_dw(x: &[f32], h: usize, w: usize, d: &Depthwise) -> Vec<f32> {
        let (ho, wo) = (h.div_ceil(d.stride), w.div_ceil(d.stride));
        let (pt, pl) = (same_padding(h, d.k, d.stride), same_padding(w, d.k, d.stride));
        let mut out = vec![0f32; ho * wo * d.c];
        for oy in 0..ho {
            for ox in 0..wo {
                for ch in 0..d.c {
                    let mut acc = d.bias[ch] as f64;
                    for ky in 0..d.k {
                        for kx in 0..d.k {
                            let iy = (oy * d.stride + ky) as isize - pt as isize;
                            let ix = (ox * d.stride + kx) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                continue;
                            }
                            acc += x[(iy as usize * w + ix as usize) * d.c + ch] as f64 * d.w[(ky * d.k + kx) * d.c + ch] as f64;
                        }
                    }
                    out[(oy * wo + ox) * d.c + ch] = if d.relu6 { acc.clamp(0.0, 6.0) as f32 } else { acc as f32 };
                }
            }
        }
        out
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2000) as f32 / 500.0 - 2.0
            })
            .collect()
    }

    #[test]
    fn depthwise_matches_naive_on_every_isa_shape_and_stride() {
        let isas = [Isa::detect(), Isa::Baseline];
        for &(h, w, c, k, stride) in &[(7, 9, 19, 3, 1), (8, 8, 32, 3, 2), (10, 6, 48, 5, 2), (5, 5, 16, 5, 1), (1, 1, 3, 3, 1)] {
            let x = pseudo(h * w * c, (h * 31 + c) as u32);
            let d = Depthwise { w: pseudo(k * k * c, 7), bias: pseudo(c, 9), c, k, stride, relu6: stride == 2 };
            let want = naive_dw(&x, h, w, &d);
            for isa in isas {
                let mut out = vec![f32::NAN; want.len() + 5];
                let (ho, wo) = depthwise(isa, &x, h, w, &d, &mut out);
                assert_eq!(ho * wo * c, want.len());
                for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() < 1e-4, "{isa:?} {h}x{w}x{c} k{k} s{stride} at {i}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn pointwise_matches_naive_with_bias_relu6_and_residual() {
        for isa in [Isa::detect(), Isa::Baseline] {
            // m spans several tiles (cin + cout small → big tiles, so use a large m).
            for &(m, cin, cout, relu6, res) in &[(3000, 16, 24, true, false), (50, 320, 1280, true, false), (777, 40, 40, false, true)] {
                let x = pseudo(m * cin, 3);
                let p = Pointwise::new(pseudo(cin * cout, 5), pseudo(cout, 11), cin, cout, relu6);
                let r = pseudo(m * cout, 13);
                let mut out = vec![0f32; m * cout];
                pointwise(isa, &x, m, &p, res.then_some(&r[..]), &mut out);
                for row in [0, m / 2, m - 1] {
                    for o in 0..cout {
                        let mut acc = p.bias[o] as f64 + if res { r[row * cout + o] as f64 } else { 0.0 };
                        for i in 0..cin {
                            acc += x[row * cin + i] as f64 * p.w[i * cout + o] as f64;
                        }
                        let want = if relu6 { acc.clamp(0.0, 6.0) } else { acc };
                        let got = out[row * cout + o] as f64;
                        assert!((got - want).abs() < 1e-3 * (1.0 + want.abs()), "{isa:?} m{m} {cin}->{cout} row {row} col {o}: {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn stem_patches_pad_like_tensorflow() {
        // 4x4 image, 3 channels, value = channel*100 + y*10 + x; k3 s2 pads (0, 1).
        let (h, w) = (4, 4);
        let x: Vec<f32> = (0..3).flat_map(|c| (0..h).flat_map(move |y| (0..w).map(move |xx| (c * 100 + y * 10 + xx) as f32))).collect();
        let mut cols = vec![f32::NAN; 2 * 2 * 27];
        assert_eq!(stem_im2col(&x, h, w, 3, 2, &mut cols), (2, 2));
        // Output (0,0): taps start at (0,0), no top/left padding.
        assert_eq!(&cols[0..3], &[0.0, 100.0, 200.0]);
        // Output (1,1), tap (2,2) reads (4,4): outside → 0. Tap (0,0) reads (2,2).
        let last = &cols[3 * 27..4 * 27];
        assert_eq!(&last[0..3], &[22.0, 122.0, 222.0]);
        assert_eq!(&last[24..27], &[0.0, 0.0, 0.0]);
    }

    #[test]
    fn gemm_acc_matches_naive_over_blocks_tails_and_thread_splits() {
        // Shapes cross the MC/KC cache blocks, partial panels and 1..7-row tails.
        for isa in [Isa::detect(), Isa::Baseline] {
            for &(m, cin, cout, threads) in &[(50, 64, 192, 1), (601, 200, 72, 2), (3, 768, 40, 3), (517, 400, 33, 2)] {
                let x = pseudo(m * cin, 21);
                let mut p = Pointwise::new(pseudo(cin * cout, 23), vec![0.0; cout], cin, cout, false);
                if isa == Isa::Avx512 {
                    p.w = Vec::new(); // the packed panels alone must do
                }
                let prefill = pseudo(m * cout, 29);
                let mut out = prefill.clone();
                gemm_acc(isa, &x, m, &p, &mut out, threads);
                let w = pseudo(cin * cout, 23);
                for row in [0, 1, m / 2, m - 1] {
                    for o in 0..cout {
                        let mut acc = prefill[row * cout + o] as f64;
                        for i in 0..cin {
                            acc += x[row * cin + i] as f64 * w[i * cout + o] as f64;
                        }
                        let got = out[row * cout + o] as f64;
                        assert!((got - acc).abs() < 1e-3 * (1.0 + acc.abs()), "{isa:?} m{m} {cin}->{cout} t{threads} row {row} col {o}: {got} vs {acc}");
                    }
                }
            }
        }
    }

    #[test]
    fn patch_rows_follow_the_conv_weight_order() {
        // 3 channels of 4x4, patch 2: value = c*100 + y*10 + x.
        let x: Vec<f32> = (0..3).flat_map(|c| (0..4).flat_map(move |y| (0..4).map(move |xx| (c * 100 + y * 10 + xx) as f32))).collect();
        let mut rows = vec![f32::NAN; 4 * 12];
        patch_im2col(&x, 4, 2, &mut rows);
        // Patch (gy 1, gx 0) = row 2: channel 0 rows y=2,3 at x=0,1, then channel 1, 2.
        assert_eq!(&rows[24..36], &[20.0, 21.0, 30.0, 31.0, 120.0, 121.0, 130.0, 131.0, 220.0, 221.0, 230.0, 231.0]);
        assert!(rows.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn gemm_acc_bf16_matches_naive_on_bf16_rounded_operands() {
        if !bf16_supported() {
            eprintln!("no AVX512-BF16 on this CPU: nothing to test");
            return;
        }
        let bf = |v: f32| f32::from_bits((to_bf16(v) as u32) << 16) as f64;
        assert_eq!(bf(1.0), 1.0);
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), to_bf16(1.0), "ties round to even");
        for &(m, cin, cout, threads) in &[(50, 64, 192, 1), (601, 201, 72, 2), (3, 768, 40, 3)] {
            let x = pseudo(m * cin, 31);
            let w = pseudo(cin * cout, 37);
            let p = PanelsBf16::new(&w, cin, cout);
            let prefill = pseudo(m * cout, 41);
            let mut out = prefill.clone();
            gemm_acc_bf16(&x, m, &p, &mut out, threads);
            for row in [0, 1, m / 2, m - 1] {
                for o in 0..cout {
                    let mut acc = prefill[row * cout + o] as f64;
                    for i in 0..cin {
                        acc += bf(x[row * cin + i]) * bf(w[i * cout + o]);
                    }
                    let got = out[row * cout + o] as f64;
                    assert!((got - acc).abs() < 1e-3 * (1.0 + acc.abs()), "m{m} {cin}->{cout} t{threads} row {row} col {o}: {got} vs {acc}");
                }
            }
        }
    }
}
