//! CLIP's towers on the CPU without Burn, on pixdex's CPU executor (`embed/cpu`: prepacked
//! AVX-512 GEMMs, the shared pre-LN transformer of `cpu/transformer.rs`). The same math as the
//! Burn towers (`model.rs`), checked against open_clip's reference embeddings like them
//! (`tests/it/clip.rs`) and against Burn flex on photos (tests below).
//!
//! * Text: a query is a handful of tokens, so every matmul is a few rows against a large weight
//!   — memory-bound — and Burn flex's per-op overhead dominated (38 ms for a short query against
//!   14 ms here on 2 cores, `cargo bench --bench clip`). Each GEMM's columns are split over the
//!   cores.
//! * Image: a batch's images are spread over the cores in contiguous groups, each group one
//!   forward pass whose GEMMs run over all of its tokens (`images × 50` rows), so a weight is
//!   read from memory once per group and layer, not once per image. Fewer images than cores:
//!   one group, its GEMMs' columns split over the cores instead. The patch embedding is one GEMM
//!   over the images' patches (CLIP's normalization already folded into it, `model.rs`), the
//!   class token and positional embedding its starting value.

use crate::embed::cpu::kernels::{FlushDenormals, Isa, patch_im2col};
use std::sync::OnceLock;

use crate::embed::cpu::exec::{self, Pool};
use crate::embed::cpu::transformer::{LayerNorm, Linear, Scratch, Transformer};

pub(crate) struct HostText {
    pub transformer: Transformer,
    pub ln_final: LayerNorm,
    /// `[width, embed]`, no bias.
    pub proj: Linear,
    pub threads: usize,
    pub isa: Isa,
    pub scratch: Pool<Scratch>,
}

impl HostText {
    /// Features (not normalized) at `pool` of one sequence whose token embeddings plus
    /// positions are `x` (`[len, width]`, `len = pool + 1`: later tokens cannot matter).
    pub(crate) fn forward(&self, mut x: Vec<f32>, len: usize, pool: usize) -> Vec<f32> {
        let _ftz = FlushDenormals::new();
        let d = self.transformer.width;
        let mut s = self.scratch.take();
        self.transformer.forward(&mut x, 1, len, true, self.threads, &mut s);
        self.scratch.give(s);
        let mut row = vec![0f32; d];
        self.ln_final.apply(self.isa, &x[pool * d..(pool + 1) * d], &mut row);
        let mut out = vec![0f32; self.proj.out()];
        self.proj.apply(self.isa, &row, 1, &mut out, 1);
        out
    }
}

pub(crate) struct HostImage {
    /// The patch embedding, `[3·patch², width]` (CLIP's normalization folded in), no bias.
    pub patch: Linear,
    /// The tokens' starting value, `[tokens, width]`: row 0 the class embedding plus position
    /// 0, row `t` position `t` plus the patch embedding's bias.
    pub start: Vec<f32>,
    pub ln_pre: LayerNorm,
    pub transformer: Transformer,
    pub ln_post: LayerNorm,
    /// `[width, embed]`, no bias.
    pub proj: Linear,
    pub patch_px: usize,
    pub size: usize,
    pub threads: usize,
    pub isa: Isa,
    pub scratch: Pool<ImageScratch>,
}

/// One group's buffers (see [`HostImage::forward`]).
#[derive(Default)]
pub(crate) struct ImageScratch {
    cols: Vec<f32>,
    tokens: Vec<f32>,
    x: Vec<f32>,
    cls: Vec<f32>,
    out: Vec<f32>,
    t: Scratch,
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

impl HostImage {
    fn tokens(&self) -> usize {
        let g = self.size / self.patch_px;
        g * g + 1
    }

    /// Image features (not normalized) of `n` NCHW images (`n · 3 · size²` floats, pipeline
    /// input `(px - 127) / 128`).
    pub(crate) fn forward(&self, nchw: &[f32], n: usize) -> Vec<Vec<f32>> {
        let per = 3 * self.size * self.size;
        assert!(nchw.len() >= n * per, "{n} images need {} floats, got {}", n * per, nchw.len());
        let groups = self.threads.min(n).max(1);
        if groups == 1 {
            return self.group(&nchw[..n * per], n, self.threads);
        }
        // Contiguous groups, sizes differing by at most one image, one per thread.
        let outs: Vec<OnceLock<Vec<f32>>> = (0..n).map(|_| OnceLock::new()).collect();
        exec::fan_out(groups, n, |images| {
            let features = self.group(&nchw[images.start * per..images.end * per], images.len(), 1);
            for (i, f) in images.zip(features) {
                let _ = outs[i].set(f);
            }
        });
        outs.into_iter().map(|o| o.into_inner().expect("every image is in a group")).collect()
    }

    /// One forward pass over `k` images; `threads` split the GEMMs' columns.
    fn group(&self, nchw: &[f32], k: usize, threads: usize) -> Vec<Vec<f32>> {
        let _ftz = FlushDenormals::new();
        let isa = self.isa;
        let (w, tokens, depth) = (self.transformer.width, self.tokens(), self.patch.inp());
        let m = k * tokens;
        let per = 3 * self.size * self.size;
        let mut s = self.scratch.take();
        grow(&mut s.cols, m * depth);
        grow(&mut s.tokens, m * w);
        grow(&mut s.x, m * w);
        grow(&mut s.cls, k * w);
        grow(&mut s.out, k * self.proj.out());
        for i in 0..k {
            // The class token's row of patches is zero: its GEMM row adds nothing.
            let rows = &mut s.cols[i * tokens * depth..(i + 1) * tokens * depth];
            rows[..depth].fill(0.0);
            patch_im2col(&nchw[i * per..(i + 1) * per], self.size, self.patch_px, &mut rows[depth..]);
            s.tokens[i * tokens * w..(i + 1) * tokens * w].copy_from_slice(&self.start);
        }
        self.patch.accumulate(isa, &s.cols[..m * depth], m, &mut s.tokens[..m * w], threads);
        self.ln_pre.apply(isa, &s.tokens[..m * w], &mut s.x[..m * w]);
        self.transformer.forward(&mut s.x, k, tokens, false, threads, &mut s.t);
        for i in 0..k {
            self.ln_post.apply(isa, &s.x[i * tokens * w..i * tokens * w + w], &mut s.cls[i * w..(i + 1) * w]);
        }
        let e = self.proj.out();
        self.proj.apply(isa, &s.cls[..k * w], k, &mut s.out, 1);
        let out = s.out[..k * e].chunks_exact(e).map(<[f32]>::to_vec).collect();
        self.scratch.give(s);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::{ClipRuntime, model::Variant};
    use crate::embed::{IMAGE_FLOATS, INPUT};
    use burn::tensor::Device;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn vocab() -> PathBuf {
        let p = repo().join(super::super::DEFAULT_VOCAB);
        assert!(p.is_file(), "CLIP merges missing at {}: run `scripts/fetch-clip-vocab`", p.display());
        p
    }

    fn cosine(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    fn load(weights: &Path, v: Variant, host: bool, bf16: bool) -> ClipRuntime {
        ClipRuntime::load_custom(weights, &vocab(), v, "test", Device::flex(), "test".into(), 16, false, false, host, bf16).expect("CLIP loads")
    }

    /// The image tower on the host kernels and on Burn flex, from the same checkpoint.
    fn both(weights: &Path, v: Variant) -> (ClipRuntime, ClipRuntime) {
        (load(weights, v, true, false), load(weights, v, false, false))
    }

    /// The fixture's test image `k` (as `tests/it/clip.rs` and `scripts/make-clip-fixtures.py`).
    fn fixture_images(count: usize) -> Vec<f32> {
        let mut out = vec![0f32; count * IMAGE_FLOATS];
        for k in 0..count {
            for c in 0..3 {
                for y in 0..INPUT {
                    for x in 0..INPUT {
                        let px = (x * (3 + k) + y * (5 + 2 * k) + c * 77 + k * 31 + (x * y) % 7 + ((x / 16 + y / 16 + k) % 2) * 90) % 256;
                        out[k * IMAGE_FLOATS + c * INPUT * INPUT + y * INPUT + x] = (px as f32 - 127.0) / 128.0;
                    }
                }
            }
        }
        out
    }

    /// The host image tower gives open_clip's own embeddings (`tests/fixtures/clip/tiny.json`)
    /// for both activations, from safetensors and from the PyTorch state dict, in batches that
    /// go through both the column-split (fewer images than cores) and image-split paths.
    #[test]
    fn host_image_tower_matches_open_clip() {
        let refs: serde_json::Value = serde_json::from_slice(&std::fs::read(repo().join("tests/fixtures/clip/tiny.json")).unwrap()).unwrap();
        let n = refs["images"].as_u64().unwrap() as usize;
        let input = fixture_images(n);
        for (file, which, quick) in [("tiny.safetensors", "gelu", false), ("tiny.safetensors", "quick_gelu", true), ("tiny.pt", "gelu", false)] {
            let (path, v) = (repo().join("tests/fixtures/clip").join(file), Variant { head_width: 16, quick_gelu: quick });
            let host = load(&path, v, true, false);
            let want: Vec<Vec<f32>> =
                refs[which]["image"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()).collect();
            let mut least = 1f64;
            for batch in [1, 3, n] {
                let mut got = Vec::new();
                for a in (0..n).step_by(batch) {
                    let b = (a + batch).min(n);
                    got.extend(host.embed_images_normalized(&input[a * IMAGE_FLOATS..b * IMAGE_FLOATS], b - a).unwrap());
                }
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    let cos = cosine(g, w);
                    assert!(cos >= 0.9999, "{file} {which} batch {batch}: image {k}: cosine {cos}");
                    least = least.min(cos);
                }
            }
            eprintln!("{file} {which}: {n} images in batches of 1, 3 and {n}: least cosine to open_clip {least:.7}");
            // The opt-in bf16 GEMMs (model.precision), where the CPU has them: the bar.
            if crate::embed::cpu::kernels::bf16_supported() {
                let got = load(&path, v, true, true).embed_images_normalized(&input, n).unwrap();
                let least = got.iter().zip(&want).map(|(g, w)| cosine(g, w)).fold(1f64, f64::min);
                eprintln!("{file} {which}: bf16: least cosine to open_clip {least:.6}");
                assert!(least >= 0.999, "bf16 {file} {which}: cosine {least}");
            }
        }
    }

    /// On photos (`samples/`, `scripts/fetch-samples`) a full-size ViT-B/32 (open_clip's exact
    /// shapes, random values) gives the same embeddings on the host kernels as on Burn flex,
    /// while the photos' embeddings differ from each other by far more than that.
    #[test]
    fn host_image_tower_matches_flex_on_photos() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("vit-b-32-random.safetensors");
        let json = std::fs::read_to_string(repo().join("tests/fixtures/clip/vit-b-32-shapes.json")).unwrap();
        super::super::random::write_safetensors(&weights, &super::super::random::vit_b_32_shapes(&json)).unwrap();
        let (host, flex) = both(&weights, Variant { head_width: 64, quick_gelu: false });
        let names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "brick.png"];
        let images: Vec<crate::decode::RgbImage> = names
            .iter()
            .map(|name| {
                let p = repo().join("samples").join(name);
                assert!(p.is_file(), "sample photo missing at {}: run `scripts/fetch-samples`", p.display());
                crate::decode::decode_for_embedding(&p, &crate::decode::DecodeLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}")).image
            })
            .collect();
        let refs: Vec<&crate::decode::RgbImage> = images.iter().collect();
        let input = crate::embed::preprocess::cpu_resize_normalize_batch(&refs);
        let n = names.len();
        let got = host.embed_images_normalized(&input, n).unwrap();
        let want = flex.embed_images_normalized(&input, n).unwrap();
        let (mut least_apart, mut least) = (1f64, 1f64);
        for i in 0..n {
            let cos = cosine(&got[i], &want[i]);
            assert!(cos >= 0.9999, "{}: host vs flex cosine {cos}", names[i]);
            least = least.min(cos);
            for j in 0..i {
                least_apart = least_apart.min(1.0 - cosine(&want[i], &want[j]));
            }
        }
        eprintln!("{n} photos: least cosine host vs flex {least:.7}; the closest two photos are {least_apart:.4} apart (1 - cosine)");
        if crate::embed::cpu::kernels::bf16_supported() {
            drop(flex);
            let bf = load(&weights, Variant { head_width: 64, quick_gelu: false }, true, true).embed_images_normalized(&input, n).unwrap();
            let least_bf = bf.iter().zip(&got).map(|(b, f)| cosine(b, f)).fold(1f64, f64::min);
            eprintln!("{n} photos: bf16 vs f32 on the host kernels: least cosine {least_bf:.6}");
            assert!(least_bf >= 0.999, "bf16 vs f32 on photos: cosine {least_bf}");
        }
        assert!(least_apart > 1e-3, "the photos' embeddings are too alike ({least_apart}) for the parity to mean anything");
    }
}
