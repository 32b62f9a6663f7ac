//! Resize + crop + normalize a batch of 8 DCT-scaled photos (500x375, what a 12 MP JPEG decodes
//! to): CPU (fast_image_resize) vs the WGSL kernel on whatever wgpu adapter exists.
//! The GPU figure includes packing, upload and reading the result back.
use criterion::{Criterion, criterion_group, criterion_main};
use pixdex::decode::{DecodeLimits, RgbImage, decode_bytes};
use pixdex::embed::preprocess::{IMAGE_LEN, cpu_resize_normalize, gpu_resize_normalize_to_vec, init_wgpu_device};

fn scaled_photo(seed: u32) -> RgbImage {
    let (w, h) = (4000u32, 3000u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let t = ((x ^ seed).wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) >> 28;
        image::Rgb([(x * 255 / w) as u8 ^ t as u8, (y * 255 / h) as u8, seed as u8 ^ t as u8])
    });
    let mut out = Vec::new();
    img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)).unwrap();
    decode_bytes(&out, "bench.jpg", &DecodeLimits::default()).unwrap().image
}

fn bench(c: &mut Criterion) {
    let first = scaled_photo(1);
    // Eight distinct images without encoding eight 12 MP JPEGs: shift the decoded one.
    let images: Vec<RgbImage> =
        (0..8u8).map(|k| RgbImage { width: first.width, height: first.height, data: first.data.iter().map(|&v| v.wrapping_add(k * 17)).collect() }).collect();
    let refs: Vec<&RgbImage> = images.iter().collect();
    eprintln!("batch: 8 x {}x{}", first.width, first.height);

    let mut g = c.benchmark_group("resize_normalize_batch8");
    g.sample_size(10);
    let mut out = vec![0f32; 8 * IMAGE_LEN];
    g.bench_function("cpu_fast_image_resize", |b| {
        b.iter(|| {
            for (img, o) in refs.iter().zip(out.chunks_exact_mut(IMAGE_LEN)) {
                cpu_resize_normalize(img, o);
            }
        })
    });
    match init_wgpu_device() {
        Ok(device) => {
            // Warm up (the first launch compiles the shader) and check against the CPU path.
            let t = std::time::Instant::now();
            let gpu = gpu_resize_normalize_to_vec(&device, &refs).unwrap();
            eprintln!("gpu first batch (incl. shader compile): {:?}", t.elapsed());
            for (img, o) in refs.iter().zip(out.chunks_exact_mut(IMAGE_LEN)) {
                cpu_resize_normalize(img, o);
            }
            let diff = gpu.iter().zip(&out).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            eprintln!("max |gpu - cpu| over the batch: {diff} ({} u8 steps)", diff * 128.0);
            assert!(diff <= 2.0 / 128.0 + 1e-6, "gpu and cpu disagree: {diff}");
            g.bench_function("gpu_wgsl_incl_upload_readback", |b| b.iter(|| gpu_resize_normalize_to_vec(&device, &refs).unwrap()));
        }
        Err(why) => eprintln!("SKIPPED gpu bench: {why}"),
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
