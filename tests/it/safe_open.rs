//! Field hardening against a real daemon: reading a library file is one step with its check (a
//! file swapped for a symlink to a secret outside the roots while a web user browses never
//! serves the secret), and every decode stays within `pipeline.memory_mb`, metadata included
//! (a PNG whose ICC profile inflates to hundreds of MB is refused with the reason, at no more
//! than a few MB a request).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use hyper::Method;
use pixdex::api::client::{Client, Endpoint};
use serde_json::json;

use crate::harness::{Db, TestDaemon};

/// Watch off and no periodic rescan: the initial reconcile catalogues the library once, and a
/// file swapped for a link afterwards stays catalogued (the doors are what is tested).
const STILL_LIBRARY: &str = "watch = \"off\"\nrescan_interval_secs = 3600\n";

fn png_bytes(rgb: [u8; 3]) -> Vec<u8> {
    let mut out = Vec::new();
    image::RgbImage::from_pixel(64, 64, image::Rgb(rgb)).write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

/// Write a file that is already settled (modified a minute ago), so the first reconcile takes it.
fn write_settled(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(60)).unwrap();
}

/// The catalogued asset id of the file whose path ends with `suffix`.
async fn asset_id(d: &TestDaemon, suffix: &str) -> i64 {
    let t = Instant::now();
    loop {
        let cat = d.catalog().await;
        let found = cat.all_assets().await.unwrap().into_iter().find(|a| a.path.ends_with(suffix)).map(|a| a.id);
        cat.close().await;
        if let Some(id) = found {
            return id;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{suffix} never catalogued\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A thread that swaps `target` between the real image (a hard link of `real`, so its size and
/// mtime never change) and a symlink to `secret`, each by rename(2) over it, until stopped.
fn swapper(target: &Path, real: &Path, secret: &Path, stop: Arc<AtomicBool>, swaps: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    let (target, real, secret) = (target.to_path_buf(), real.to_path_buf(), secret.to_path_buf());
    std::thread::spawn(move || {
        let dir = target.parent().unwrap();
        let (link, copy) = (dir.join(".swap-link.png"), dir.join(".swap-copy.png"));
        while !stop.load(Ordering::Relaxed) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&secret, &link).unwrap();
            std::fs::rename(&link, &target).unwrap();
            let _ = std::fs::remove_file(&copy);
            std::fs::hard_link(&real, &copy).unwrap();
            std::fs::rename(&copy, &target).unwrap();
            swaps.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Is this thumbnail (JPEG) the secret's (solid red) rather than the real image's (green)?
fn red_thumbnail(jpeg: &[u8]) -> bool {
    let img = image::load_from_memory(jpeg).unwrap().to_rgb8();
    let p = img.get_pixel(img.width() / 2, img.height() / 2).0;
    p[0] > 150 && p[1] < 100
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn safe_open_swapped_symlink_never_serves_outside_bytes() {
    let real = png_bytes([0, 200, 0]);
    let real2 = real.clone();
    let d = TestDaemon::start_with(Db::Sqlite, "", STILL_LIBRARY, move |root| write_settled(&root.join("photos/a.png"), &real2)).await;
    let secret_png = png_bytes([230, 0, 0]);
    let secret = d.dir.path().join("outside/secret.png");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    std::fs::write(&secret, &secret_png).unwrap();
    let target = d.root.join("photos/a.png");
    let id = asset_id(&d, "/photos/a.png").await;
    let (full, thumb) = (format!("/api/v1/images/{id}/full"), format!("/api/v1/images/{id}/thumbnail"));
    let r = d.client.raw(Method::GET, &thumb, &[], vec![]).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(!red_thumbnail(&r.body), "the real image is green");
    let hidden_real = d.root.join("photos/.real.png");
    std::fs::hard_link(&target, &hidden_real).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swap = swapper(&target, &hidden_real, &secret, stop.clone(), swaps.clone());
    // Four clients, each alternating full images and thumbnails, for at most 8 s / 3000 each.
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut tasks = Vec::new();
    for k in 0..4 {
        let (c, full, thumb, real, secret_png) = (Client::new(Endpoint::Unix(d.socket.clone())), full.clone(), thumb.clone(), real.clone(), secret_png.clone());
        tasks.push(tokio::spawn(async move {
            // (served, refused, leaks, other answers)
            let mut n = (0u64, 0u64, 0u64, Vec::new());
            for i in 0..3000 {
                if Instant::now() > deadline {
                    break;
                }
                let is_full = (i + k) % 2 == 0;
                let r = c.raw(Method::GET, if is_full { &full } else { &thumb }, &[], vec![]).await.unwrap();
                match r.status {
                    200 if is_full => {
                        if r.body.as_ref() == secret_png.as_slice() {
                            n.2 += 1;
                        } else {
                            assert_eq!(r.body.as_ref(), real.as_slice(), "the full image is the real file's bytes");
                            n.0 += 1;
                        }
                    }
                    200 if r.header("content-type") == Some("image/jpeg") => {
                        if red_thumbnail(&r.body) {
                            n.2 += 1;
                        } else {
                            n.0 += 1;
                        }
                    }
                    403 => n.1 += 1,
                    s => n.3.push(format!("{s} {:?} {}", r.header("x-pixdex-image-error"), String::from_utf8_lossy(&r.body))),
                }
            }
            n
        }));
    }
    let (mut served, mut refused, mut leaks, mut other) = (0, 0, 0, Vec::new());
    for t in tasks {
        let n = t.await.unwrap();
        served += n.0;
        refused += n.1;
        leaks += n.2;
        other.extend(n.3);
    }
    stop.store(true, Ordering::Relaxed);
    swap.join().unwrap();
    eprintln!("{served} served, {refused} refused, {leaks} leaked, {} other; {} swaps", other.len(), swaps.load(Ordering::Relaxed));
    assert_eq!(leaks, 0, "answers carried the bytes of a file outside the roots ({served} served, {refused} refused)");
    assert!(other.is_empty(), "only the real image or a 403: {:?}", &other[..other.len().min(5)]);
    assert!(served > 0 && refused > 0, "the race ran both ways: {served} served, {refused} refused");
}

/// A zlib stream of `n` zero bytes.
fn zlib_zeros(n: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    for _ in 0..n >> 20 {
        z.write_all(&block).unwrap();
    }
    z.finish().unwrap()
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A 64x64 PNG (about 1 MB) whose ICC profile and zTXt comment each inflate to `n` bytes.
fn bomb_png(n: usize) -> Vec<u8> {
    let base = png_bytes([10, 20, 30]);
    let z = zlib_zeros(n);
    let mut out = base[..33].to_vec();
    for (ty, head) in [(b"iCCP", &b"bomb\0\0"[..]), (b"zTXt", &b"Comment\0\0"[..])] {
        let mut body = ty.to_vec();
        body.extend_from_slice(head);
        body.extend_from_slice(&z);
        out.extend_from_slice(&((body.len() - 4) as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    out.extend_from_slice(&base[33..]);
    out
}

/// Peak resident memory of a process, MB (`VmHWM`: the daemon's own high-water mark).
fn hwm_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).unwrap() / 1024.0
}

/// Bytes nothing compresses (xorshift).
fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x2545_F491u32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

/// A 64x64 PNG with a tEXt chunk of `n` bytes.
fn fat_png(n: usize) -> Vec<u8> {
    let base = png_bytes([10, 20, 30]);
    let mut body = b"tEXtComment\0".to_vec();
    body.extend_from_slice(&noise(n));
    let mut out = base[..33].to_vec();
    out.extend_from_slice(&((body.len() - 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out.extend_from_slice(&base[33..]);
    out
}

/// Every door that decodes (uploads, search by path, asset and preview thumbnails), 16 requests
/// at once, twice, with two files: a PNG whose iCCP profile and zTXt comment each inflate to
/// 512 MB (decoded; the decoder inflates at most the allowance) and one whose 6 MB of text are
/// more than the allowance (refused naming the file, the limit and `pipeline.memory_mb`). The
/// daemon's peak RSS grows by less than 200 MB (it grew by ~830 MB per request before).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn safe_open_metadata_bombs_stay_within_the_memory_budget() {
    let bomb = Arc::new(bomb_png(512 << 20));
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    let fat = Arc::new(fat_png(6 << 20));
    let (b2, f2) = (bomb.clone(), fat.clone());
    let mut d = TestDaemon::prepare(Db::Sqlite, "", STILL_LIBRARY, move |root| {
        write_settled(&root.join("bombs/bomb.png"), &b2);
        write_settled(&root.join("bombs/fat.png"), &f2);
    })
    .await;
    // Every search at once gets a slot (the default is 2 per core): the bombs are what is tested.
    // A 64 MB budget: 8 MiB for metadata beside the pixels of one decode.
    d.daemon_extra = "max_concurrent_searches = 16\n".into();
    d.write_config("[pipeline]\nmemory_mb = 64\n");
    d.respawn().await;
    let ids = [asset_id(&d, "/bombs/bomb.png").await, asset_id(&d, "/bombs/fat.png").await];
    let files = [bomb, fat];
    let pid = d.pid().unwrap();
    // Warm up the doors once with a small image (thread pools, caches), then take the peak.
    let r = d.client.raw(Method::POST, "/api/v1/search/image", &[("content-type", "image/png")], png_bytes([1, 2, 3])).await.unwrap();
    assert!(r.status == 503 || r.status == 200, "{} {}", r.status, String::from_utf8_lossy(&r.body));
    let before = hwm_mb(pid);

    let enc = |p: &str| -> String {
        p.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
    };
    for _ in 0..2 {
        let mut tasks = Vec::new();
        for k in 0..16usize {
            let (door, which) = (k % 4, (k / 4) % 2);
            let c = Client::new(Endpoint::Unix(d.socket.clone()));
            let body = files[which].clone();
            let name = ["bomb.png", "fat.png"][which];
            let path = d.root.join("bombs").join(name).display().to_string();
            let (id, enc_path) = (ids[which], enc(&path));
            tasks.push(tokio::spawn(async move {
                let r = match door {
                    0 => c.raw(Method::POST, "/api/v1/search/image", &[("content-type", "image/png")], body.to_vec()).await.unwrap(),
                    1 => c
                        .raw(Method::POST, "/api/v1/search/image", &[("content-type", "application/json")], json!({"path": path}).to_string().into_bytes())
                        .await
                        .unwrap(),
                    2 => c.raw(Method::GET, &format!("/api/v1/images/{id}/thumbnail"), &[], vec![]).await.unwrap(),
                    _ => c.raw(Method::GET, &format!("/api/v1/training/directories/preview/thumbnail?path={enc_path}"), &[], vec![]).await.unwrap(),
                };
                (door, which, r)
            }));
        }
        for t in tasks {
            let (door, which, r) = t.await.unwrap();
            let body = String::from_utf8_lossy(&r.body).into_owned();
            if which == 0 {
                // Decoded: searches get as far as the (absent) model, thumbnails are JPEGs.
                match door {
                    0 | 1 => assert!(r.status == 503 || r.status == 200, "door {door}: {} {body}", r.status),
                    _ => assert_eq!((r.status, r.header("content-type")), (200, Some("image/jpeg")), "door {door}: {:?}", r.header("x-pixdex-image-error")),
                }
                continue;
            }
            let reason = if door < 2 {
                assert_eq!(r.status, 400, "door {door}: {body}");
                r.json()["detail"].as_str().unwrap().to_string()
            } else {
                assert_eq!((r.status, r.header("content-type")), (200, Some("image/svg+xml")), "door {door}: a placeholder");
                r.header("x-pixdex-image-error").unwrap_or_default().to_string()
            };
            assert!(reason.contains("pipeline.memory_mb") && reason.contains("8192 KB"), "door {door}: {reason}");
            let named = if door == 0 { "uploaded image" } else { "fat.png" };
            assert!(reason.contains(named), "door {door} names the file: {reason}");
        }
    }
    let after = hwm_mb(pid);
    eprintln!("daemon peak RSS {before:.0} MB -> {after:.0} MB over 32 requests with metadata bombs");
    assert!(after - before < 200.0, "the daemon's peak grew by {:.0} MB (before {before:.0}, after {after:.0})", after - before);
}
