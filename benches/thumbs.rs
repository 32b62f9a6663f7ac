//! Thumbnails for the web apps: a 12 MP (4000x3000) JPEG to a 256 px JPEG, cold (DCT-scaled
//! decode + resize + encode) and cached (read from `data_dir/thumbs`), the file opened each
//! time as the doors do. One thread.
use criterion::{Criterion, criterion_group, criterion_main};
use pixdex::decode::DecodeLimits;
use pixdex::thumbs::{Thumbs, render};

#[path = "common/photo.rs"]
mod photo;
use photo::photo_like;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("12mp.jpg");
    std::fs::write(&path, photo_like(4000, 3000)).unwrap();
    let limits = DecodeLimits::default();
    let thumbs = Thumbs::new(dir.path(), &limits);
    let open = || std::fs::File::open(&path).unwrap();
    thumbs.get(1, open(), &path, 1, 1).unwrap();

    let mut g = c.benchmark_group("thumbnail_12mp_jpeg");
    g.sample_size(20);
    g.bench_function("cold_render", |b| b.iter(|| render(open(), &path, &limits).unwrap()));
    g.bench_function("cached", |b| b.iter(|| thumbs.get(1, open(), &path, 1, 1).unwrap()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
