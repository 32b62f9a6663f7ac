//! Resize + center-crop + normalize: decoded RGB8 images → the model's NCHW f32 input.
//!
//! Geometry, identical on CPU and GPU: the crop box is the centered square of side
//! `s = min(width, height)` (its left/top may be fractional); it is resampled to 224×224 with an
//! antialiased bilinear (triangle) filter whose support grows with the downscale factor
//! (`fast_image_resize` `Convolution(Bilinear)`, like PIL's `BILINEAR` resize). This is "resize
//! the shorter side to 224, then center-crop 224×224" done in one step. Each channel value is
//! rounded to u8 and normalized as `(px − 127) / 128`, layout `[3, 224, 224]` per image.
//!
//! - CPU: [`cpu_resize_normalize`] (SIMD via `fast_image_resize`).
//! - GPU: [`gpu_resize_normalize`] runs `kernels/resize_normalize.wgsl` through Burn's template
//!   kernel API on a wgpu device and returns a `Tensor<4>` `[n, 3, 224, 224]` that stays on the
//!   device. CPU and GPU agree within 2/128 (see the tests).

use std::cell::RefCell;

use burn::tensor::{DType, Device, Tensor};
use burn_cubecl::cubecl::prelude::KernelId;
use burn_cubecl::cubecl::server::KernelArguments;
use burn_cubecl::cubecl::{CubeCount, CubeDim};
use burn_cubecl::template::{KernelSource, SourceKernel, SourceTemplate};
use burn_cubecl::{Cube, CubeDevice};
use fast_image_resize as fr;

use crate::decode::RgbImage;

/// Side of the model input.
pub const SIZE: usize = 224;
/// Floats per image in the output (`3 × 224 × 224`).
pub const IMAGE_LEN: usize = 3 * SIZE * SIZE;

/// The centered square crop box `(left, top, side)` in source pixels.
pub fn crop_box(width: u32, height: u32) -> (f64, f64, f64) {
    let side = width.min(height) as f64;
    ((width as f64 - side) / 2.0, (height as f64 - side) / 2.0, side)
}

/// Normalize one u8 channel value.
#[inline]
pub fn normalize(px: u8) -> f32 {
    (px as f32 - 127.0) / 128.0
}

thread_local! {
    static RESIZER: RefCell<(fr::Resizer, fr::images::Image<'static>)> = RefCell::new((
        fr::Resizer::new(),
        fr::images::Image::new(SIZE as u32, SIZE as u32, fr::PixelType::U8x3),
    ));
}

/// Resize + center-crop + normalize one image into `out` (`3 × 224 × 224` floats, CHW).
///
/// # Panics
/// If `out.len() != IMAGE_LEN` or `img.data` is shorter than `width × height × 3`.
pub fn cpu_resize_normalize(img: &RgbImage, out: &mut [f32]) {
    assert_eq!(out.len(), IMAGE_LEN, "output must hold 3x224x224 floats");
    if img.width == 0 || img.height == 0 {
        out.fill(normalize(0));
        return;
    }
    let src = fr::images::ImageRef::new(img.width, img.height, &img.data, fr::PixelType::U8x3).expect("RgbImage buffer too small for its dimensions");
    let (left, top, side) = crop_box(img.width, img.height);
    let options = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear)).crop(left, top, side, side);
    RESIZER.with(|cell| {
        let (resizer, dst) = &mut *cell.borrow_mut();
        resizer.resize(&src, dst, &options).expect("resize with a valid crop box");
        let buf = dst.buffer();
        let plane = SIZE * SIZE;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in buf.chunks_exact(3).enumerate() {
            r[i] = normalize(px[0]);
            g[i] = normalize(px[1]);
            b[i] = normalize(px[2]);
        }
    });
}

/// CPU path for a batch: `n × 3 × 224 × 224` floats, NCHW.
pub fn cpu_resize_normalize_batch(images: &[&RgbImage]) -> Vec<f32> {
    let mut out = vec![0.0; images.len() * IMAGE_LEN];
    for (img, chunk) in images.iter().zip(out.chunks_exact_mut(IMAGE_LEN)) {
        cpu_resize_normalize(img, chunk);
    }
    out
}

/// The WGSL kernel, run through Burn's template kernel API.
struct ResizeNormalizeKernel;

impl KernelSource for ResizeNormalizeKernel {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(include_str!("../../kernels/resize_normalize.wgsl"))
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>()
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Largest packed batch uploaded at once (wgpu's default storage-binding limit is 128 MiB).
pub(crate) const MAX_BATCH_BYTES: usize = 128 << 20;

/// Bytes one image takes in a packed upload.
fn packed_len(img: &RgbImage) -> usize {
    img.data.len().next_multiple_of(4)
}

/// Split a batch into consecutive runs whose packed pixels fit in `max` bytes (an image too
/// big on its own gets a run of its own, and its upload says why it fails).
pub(crate) fn upload_groups(images: &[&RgbImage], max: usize) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, img) in images.iter().enumerate() {
        let len = packed_len(img);
        if i > start && bytes + len > max {
            groups.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < images.len() {
        groups.push(start..images.len());
    }
    groups
}

/// Pack the batch: the pixel bytes as the kernel reads them (little-endian u32 words, each
/// image starting on a word boundary) and the per-image table. One copy per image: this runs
/// on the embed stage's thread, which bounds the pipeline on a GPU.
fn pack_batch(images: &[&RgbImage]) -> Result<(Vec<u8>, Vec<u32>), String> {
    let total: usize = images.iter().copied().map(packed_len).sum();
    if total > MAX_BATCH_BYTES {
        return Err(format!("batch of {} images is {} bytes of pixels, over the {} byte upload limit; split it", images.len(), total, MAX_BATCH_BYTES));
    }
    let mut bytes = Vec::with_capacity(total.max(4));
    let mut table = vec![0u32; 4 + 8 * images.len()];
    table[0] = images.len() as u32;
    for (k, img) in images.iter().enumerate() {
        let need = img.width as usize * img.height as usize * 3;
        if img.width == 0 || img.height == 0 || img.data.len() < need {
            return Err(format!("image {k} is {}x{} with {} bytes of data", img.width, img.height, img.data.len()));
        }
        let (left, top, side) = crop_box(img.width, img.height);
        let e = 4 + 8 * k;
        table[e] = (bytes.len() / 4) as u32;
        table[e + 1] = img.width;
        table[e + 2] = img.height;
        table[e + 4] = (left as f32).to_bits();
        table[e + 5] = (top as f32).to_bits();
        table[e + 6] = (side as f32).to_bits();
        bytes.extend_from_slice(&img.data[..need]);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
    }
    if bytes.is_empty() {
        bytes.resize(4, 0);
    }
    Ok((bytes, table))
}

/// Resize + center-crop + normalize a batch on a wgpu device. The result `[n, 3, 224, 224]`
/// (f32) stays on `device`, ready for the model.
///
/// Errors when `device` is not a wgpu device, when the batch is empty or too large, or when an
/// image is malformed. Requires Burn's `fusion` feature to be off (the output is built from a
/// raw CubeCL tensor).
pub(crate) fn gpu_resize_normalize(device: &Device, images: &[&RgbImage]) -> Result<Tensor<4>, String> {
    if images.is_empty() {
        return Err("empty batch".into());
    }
    let n = images.len();
    let (pixels, table) = pack_batch(images)?;
    let out =
        Tensor::<4>::empty([n, 3, SIZE, SIZE], (device, DType::F32)).try_into_primitive::<Cube>().map_err(|e| format!("not a CubeCL (wgpu) device: {e:?}"))?;
    if !matches!(out.device, CubeDevice::Wgpu(_)) {
        return Err(format!("the WGSL kernel needs a wgpu device, got {:?}", out.device));
    }
    if out.dtype != DType::F32 || !out.is_contiguous() {
        return Err(format!("unexpected output tensor: {:?}, contiguous {}", out.dtype, out.is_contiguous()));
    }
    let client = out.client.clone();
    let pixels = client.create_from_slice(&pixels);
    let table: Vec<u8> = table.iter().flat_map(|w| w.to_le_bytes()).collect();
    let table = client.create_from_slice(&table);
    let groups = (SIZE as u32).div_ceil(16);
    client.launch(
        Box::new(SourceKernel::new(ResizeNormalizeKernel, CubeDim::new_2d(16, 16))),
        CubeCount::Static(groups, groups, n as u32),
        KernelArguments::new().with_buffer(pixels.binding()).with_buffer(table.binding()).with_buffer(out.handle.clone().binding()),
    );
    Ok(Tensor::<4>::from_primitive::<Cube>(out))
}

/// Read a `[n, 3, 224, 224]` tensor back to the host (tests, benches, CPU fallbacks).
pub(crate) fn tensor_to_vec(t: Tensor<4>) -> Result<Vec<f32>, String> {
    t.try_into_data().map_err(|e| format!("reading the tensor back: {e:?}"))?.try_into_vec::<f32>().map_err(|e| format!("tensor data is not f32: {e:?}"))
}

/// For benches: run the GPU path and read the result back.
#[doc(hidden)]
pub fn gpu_resize_normalize_to_vec(device: &Device, images: &[&RgbImage]) -> Result<Vec<f32>, String> {
    tensor_to_vec(gpu_resize_normalize(device, images)?)
}

/// For tests and benches: initialize the default wgpu device, or say why there is none.
/// Without a GPU, wgpu finds Mesa llvmpipe through GL (run with `XDG_RUNTIME_DIR` set, e.g.
/// `/tmp`, to keep the GL loader quiet).
#[doc(hidden)]
pub fn init_wgpu_device() -> Result<Device, String> {
    use std::sync::OnceLock;
    static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let init = std::panic::catch_unwind(|| Device::wgpu_options().init_with_setup());
            match init {
                Ok(Ok((device, setup))) => {
                    let info = setup.adapter.get_info();
                    eprintln!("wgpu adapter: {} ({:?}, {:?})", info.name, info.backend, info.device_type);
                    Ok(device)
                }
                // Someone in this process (the embedder, another test) initialized the
                // default wgpu runtime first: share it.
                Ok(Err(burn::tensor::wgpu::WgpuInitError::Registration { .. })) => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
                Ok(Err(e)) => Err(format!("no wgpu adapter: {e}")),
                Err(_) => Err("wgpu initialization panicked (no adapter?)".into()),
            }
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic test images: a smooth gradient and hash noise (worst case for rounding).
    fn gradient(w: u32, h: u32) -> RgbImage {
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                data.extend([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x + y) * 255 / (w + h)) as u8]);
            }
        }
        RgbImage { width: w, height: h, data }
    }

    fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
        let mut s = seed.wrapping_mul(2654435761).max(1);
        let data = (0..w * h * 3)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 24) as u8
            })
            .collect();
        RgbImage { width: w, height: h, data }
    }

    /// Direct f64 reference of the geometry (separable triangle filter over the crop box,
    /// exactly as fast_image_resize computes its coefficients), rounded to u8.
    fn reference(img: &RgbImage) -> Vec<f32> {
        let (left, top, side) = crop_box(img.width, img.height);
        let taps = |start: f64, len: u32| -> Vec<Vec<(usize, f64)>> {
            let scale = side / SIZE as f64;
            let support = scale.max(1.0);
            (0..SIZE)
                .map(|o| {
                    let c = start + (o as f64 + 0.5) * scale;
                    let lo = (c - support).floor().max(0.0) as usize;
                    let hi = ((c + support).ceil() as usize).min(len as usize);
                    let ws: Vec<(usize, f64)> = (lo..hi).map(|i| (i, (1.0 - ((i as f64 + 0.5 - c) / support).abs()).max(0.0))).collect();
                    let sum: f64 = ws.iter().map(|w| w.1).sum();
                    ws.into_iter().map(|(i, w)| (i, w / sum)).collect()
                })
                .collect()
        };
        let tx = taps(left, img.width);
        let ty = taps(top, img.height);
        let mut out = vec![0.0; IMAGE_LEN];
        for (oy, wy) in ty.iter().enumerate() {
            for (ox, wx) in tx.iter().enumerate() {
                for c in 0..3 {
                    let mut acc = 0.0;
                    for &(y, a) in wy {
                        for &(x, b) in wx {
                            acc += a * b * img.data[(y * img.width as usize + x) * 3 + c] as f64;
                        }
                    }
                    let v = (acc + 0.5).floor().clamp(0.0, 255.0) as u8;
                    out[c * SIZE * SIZE + oy * SIZE + ox] = normalize(v);
                }
            }
        }
        out
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn crop_box_is_centered_square() {
        assert_eq!(crop_box(300, 200), (50.0, 0.0, 200.0));
        assert_eq!(crop_box(200, 301), (0.0, 50.5, 200.0));
        assert_eq!(crop_box(224, 224), (0.0, 0.0, 224.0));
    }

    #[test]
    fn cpu_identity_on_224_square() {
        let img = noise(224, 224, 7);
        let mut out = vec![0.0; IMAGE_LEN];
        cpu_resize_normalize(&img, &mut out);
        for (i, px) in img.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                assert_eq!(out[c * SIZE * SIZE + i], normalize(px[c]));
            }
        }
    }

    #[test]
    fn cpu_matches_reference_geometry() {
        // 1 LSB = 1/128: fast_image_resize works in fixed point with an 8-bit intermediate
        // row pass, so it may differ from the exact f64 result by one step of rounding.
        for img in [gradient(300, 200), noise(640, 480, 3), gradient(500, 375), noise(201, 333, 9)] {
            let mut out = vec![0.0; IMAGE_LEN];
            cpu_resize_normalize(&img, &mut out);
            let d = max_abs_diff(&out, &reference(&img));
            assert!(d <= 2.0 / 128.0 + 1e-6, "{}x{}: max diff {d}", img.width, img.height);
        }
    }

    #[test]
    fn cpu_normalization_range() {
        let white = RgbImage { width: 300, height: 300, data: vec![255; 300 * 300 * 3] };
        let black = RgbImage { width: 300, height: 300, data: vec![0; 300 * 300 * 3] };
        let out = cpu_resize_normalize_batch(&[&white, &black]);
        assert!(out[..IMAGE_LEN].iter().all(|&v| v == 1.0));
        assert!(out[IMAGE_LEN..].iter().all(|&v| v == -127.0 / 128.0));
    }

    #[test]
    fn oversize_batches_go_up_in_parts() {
        let img = |bytes: usize| RgbImage { width: 1, height: (bytes / 3) as u32, data: vec![0; bytes] };
        let (a, b, c, big) = (img(24), img(24), img(42), img(300));
        // 24 + 24 + 42 (→ 44, word-aligned) = 92: over 90 the third image starts a second upload.
        assert_eq!(upload_groups(&[&a, &b, &c], 90), vec![0..2, 2..3]);
        assert_eq!(upload_groups(&[&a, &b, &c], 92), vec![0..3]);
        assert_eq!(upload_groups(&[&a, &big, &b], 100), vec![0..1, 1..2, 2..3]);
        assert!(upload_groups(&[], 100).is_empty());
        // Every default-size batch of pipeline-sized images is one upload.
        let photo = img(500 * 375 * 3);
        assert_eq!(upload_groups(&vec![&photo; 64], MAX_BATCH_BYTES), vec![0..64]);
    }

    #[test]
    fn pack_batch_layout() {
        let a = RgbImage { width: 1, height: 1, data: vec![1, 2, 3] };
        let b = RgbImage { width: 2, height: 1, data: vec![4, 5, 6, 7, 8, 9] };
        let (bytes, table) = pack_batch(&[&a, &b]).unwrap();
        let words: Vec<u32> = bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(words, vec![0x0003_0201, 0x0706_0504, 0x0000_0908]);
        assert_eq!(table[0], 2);
        assert_eq!(&table[4..7], &[0, 1, 1]);
        assert_eq!(&table[12..15], &[1, 2, 1]);
        assert_eq!(f32::from_bits(table[12 + 4]), 0.5);
        assert_eq!(f32::from_bits(table[12 + 6]), 1.0);
    }

    /// GPU vs CPU on the wgpu adapter (llvmpipe here). Tolerance: 2/128 in normalized units,
    /// i.e. two u8 steps. Both paths round to u8; the CPU goes through fast_image_resize's
    /// fixed-point coefficients and a rounded 8-bit intermediate (≤ 1 step from exact) and the
    /// GPU accumulates in f32 (≤ 1 step from exact, in practice ≤ 1 from CPU overall).
    #[test]
    fn gpu_matches_cpu() {
        let device = match init_wgpu_device() {
            Ok(d) => d,
            Err(why) => {
                eprintln!("SKIPPED gpu_matches_cpu: {why}");
                return;
            }
        };
        let images = [gradient(300, 200), noise(640, 480, 11), noise(201, 333, 5)];
        let refs: Vec<&RgbImage> = images.iter().collect();
        let t = std::time::Instant::now();
        let gpu = gpu_resize_normalize_to_vec(&device, &refs).expect("gpu path");
        eprintln!("gpu batch of {} (first run, includes shader compile): {:?}", refs.len(), t.elapsed());
        let cpu = cpu_resize_normalize_batch(&refs);
        assert_eq!(gpu.len(), cpu.len());
        for (k, img) in images.iter().enumerate() {
            let s = k * IMAGE_LEN..(k + 1) * IMAGE_LEN;
            let d = max_abs_diff(&gpu[s.clone()], &cpu[s.clone()]);
            let exact = max_abs_diff(&gpu[s], &reference(img));
            eprintln!("{}x{}: max |gpu-cpu| = {d} ({} LSB), |gpu-ref| = {exact}", img.width, img.height, d * 128.0);
            assert!(d <= 2.0 / 128.0 + 1e-6, "image {k}: max diff {d}");
        }
    }
}
