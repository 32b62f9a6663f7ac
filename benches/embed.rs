//! Embedding throughput by batch size: CPU (pixdex kernels) by default, `PIXDEX_BENCH_DEVICE=flex` for Burn flex, `PIXDEX_BENCH_DEVICE=wgpu`
//! (or `auto`) on a GPU machine. `cargo bench --bench embed`; weights from `PIXDEX_MODEL` or
//! `models/efficientnet-lite0.pth`.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pixdex::embed::{DeviceChoice, Embedder, IMAGE_FLOATS};

fn embed(c: &mut Criterion) {
    let weights = std::env::var_os("PIXDEX_MODEL").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(pixdex::embed::DEFAULT_WEIGHTS));
    if !weights.is_file() {
        println!("embed bench skipped: no weights at {} (run `scripts/fetch-model`)", weights.display());
        return;
    }
    let sizes = [1usize, 8, 32];
    let device: DeviceChoice = std::env::var("PIXDEX_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into()).parse().expect("PIXDEX_BENCH_DEVICE");
    let embedder = Embedder::load(&weights, device, 32).expect("load embedder");
    // A deterministic, non-constant input.
    let input: Vec<f32> = (0..32 * IMAGE_FLOATS).map(|i| ((i % 251) as f32 / 125.0) - 1.0).collect();
    let mut group = c.benchmark_group(format!("embed/{}", embedder.device_name()));
    group.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(15));
    for n in sizes {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("batch", n), &n, |b, &n| b.iter(|| embedder.embed_normalized(&input[..n * IMAGE_FLOATS], n).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, embed);
criterion_main!(benches);
