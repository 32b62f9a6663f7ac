//! Decoding a 12 MP (4000x3000) JPEG: full-size decode vs the DCT-scaled decode the pipeline uses
//! (libjpeg-turbo when `libturbojpeg.so.0` loads, printed at start; `jpeg_decoder_dct_scaled`
//! is the pure-Rust fallback at the same 1/8 scale).
use std::io::Cursor;

use criterion::{Criterion, criterion_group, criterion_main};
use pixdex::decode::{DecodeLimits, decode_bytes, decode_for_embedding};

#[path = "common/photo.rs"]
mod photo;
use photo::photo_like;

fn bench(c: &mut Criterion) {
    let bytes = photo_like(4000, 3000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("12mp.jpg");
    std::fs::write(&path, &bytes).unwrap();
    let limits = DecodeLimits::default();

    let mut g = c.benchmark_group("decode_12mp_jpeg");
    g.sample_size(10);
    g.bench_function("image_full_size", |b| b.iter(|| image::load(Cursor::new(&bytes), image::ImageFormat::Jpeg).unwrap().into_rgb8()));
    g.bench_function("jpeg_decoder_full_size", |b| b.iter(|| jpeg_decoder::Decoder::new(Cursor::new(&bytes)).decode().unwrap()));
    g.bench_function("jpeg_decoder_dct_scaled", |b| {
        b.iter(|| {
            let mut d = jpeg_decoder::Decoder::new(Cursor::new(&bytes));
            d.scale(500, 375).unwrap();
            d.decode().unwrap()
        })
    });
    eprintln!("decode_for_embedding uses {}", pixdex::decode::jpeg_backend());
    g.bench_function("decode_for_embedding_dct_scaled", |b| b.iter(|| decode_for_embedding(&path, &limits).unwrap()));
    g.bench_function("decode_bytes_dct_scaled", |b| b.iter(|| decode_bytes(&bytes, "12mp.jpg", &limits).unwrap()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
