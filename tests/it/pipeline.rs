//! The embedding pipeline end to end: a real daemon, the real model (CPU), real qdrant-edge.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::harness::{Db, TestDaemon, eventually, model_toml, noise_png, sample};

const S: &str = "/api/v1/training/sessions";

/// A big-endian CRC-32 (PNG chunks) for the hand-made bomb header.
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

fn bomb_png(path: &Path) {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut f = b"\x89PNG\r\n\x1a\n".to_vec();
    f.extend_from_slice(&13u32.to_be_bytes());
    f.extend_from_slice(&ihdr);
    f.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    std::fs::write(path, f).unwrap();
}

fn photo_library(root: &Path) {
    let photos = root.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "brick.png"] {
        std::fs::copy(sample(name), photos.join(name)).unwrap();
    }
    // A resized copy of the coffee photo: it must rank right after the original.
    let coffee = image::open(sample("coffee.png")).unwrap();
    coffee.resize(300, 200, image::imageops::FilterType::Triangle).save(photos.join("coffee-small.jpg")).unwrap();
    for i in 0..4 {
        noise_png(&root.join(format!("noise/n{i}.png")), 96, 64, i);
    }
    let bad = root.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let rocket = std::fs::read(sample("rocket.jpg")).unwrap();
    std::fs::write(bad.join("truncated.jpg"), &rocket[..rocket.len() / 2]).unwrap();
    std::fs::write(bad.join("empty.jpg"), b"").unwrap();
    std::fs::write(bad.join("text.jpg"), b"this is not an image, just words").unwrap();
    bomb_png(&bad.join("bomb.png"));
}

pub(crate) async fn wait_status(d: &TestDaemon, id: i64, status: &str, secs: u64) -> Value {
    let ok = eventually(secs, || async { d.session(id).await["status"] == status }).await;
    let s = d.session(id).await;
    assert!(ok, "session {id} not {status} after {secs} s: {s:?}\n{:?}", d.get("/api/v1/training/pipeline").await.body);
    s
}

both_backends!(indexes_and_searches, indexes_and_searches_body);
async fn indexes_and_searches_body(db: Db) {
    indexes_and_searches_with(db, "").await;
}

/// The same suite with the vectors on a Qdrant server, when `QDRANT_URL` names one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_and_searches_on_qdrant_server() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!(
            "SKIPPED pipeline::indexes_and_searches_on_qdrant_server: set QDRANT_URL (e.g. http://localhost:6334) to run the search suite on a Qdrant server"
        );
        return;
    };
    let mut toml =
        format!("\n[vectors]\nbackend = \"qdrant\"\nurl = \"{url}\"\ncollection_prefix = \"pixdex_t{}_{}\"\n", std::process::id(), pixdex::model::now_ms());
    if let Ok(key) = std::env::var("QDRANT_API_KEY") {
        toml.push_str(&format!("api_key = \"{key}\"\n"));
    }
    indexes_and_searches_with(Db::Sqlite, &toml).await;
}

async fn indexes_and_searches_with(db: Db, vectors_toml: &str) {
    let d = TestDaemon::start(db, &(model_toml(4) + vectors_toml), photo_library).await;
    let root = d.root.display().to_string();
    let p = d.get("/api/v1/training/pipeline").await.body;
    assert_eq!(p["running"], true, "{p:?}");

    // Before anything is indexed: an empty result with a hint, not an error.
    let r = d.post("/api/v1/search", Some(json!({"query": "cat"}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["hint"].as_str().unwrap().contains("nothing is indexed"), "{:?}", r.body);

    let cat = d.post("/api/v1/categories", Some(json!({"name": "Seven"}))).await;
    assert_eq!(cat.status, 201, "{:?}", cat.body);
    let cat = cat.body["id"].as_i64().unwrap();
    let id = d.create(json!({"name": "all", "rootPath": root, "categoryId": cat})).await;
    let before_start = chrono::Utc::now();
    assert_eq!(d.action(id, "start").await.status, 200);
    let s = wait_status(&d, id, "completed", 120).await;
    let after_done = chrono::Utc::now();
    // 6 photos + 4 noise images embedded; the 4 bad files failed their own jobs only.
    assert_eq!((s["totalImages"].as_i64(), s["processedImages"].as_i64(), s["failedImages"].as_i64()), (Some(14), Some(10), Some(4)), "{s:?}");
    let failed = d.get(&format!("{S}/{id}/jobs?status=failed")).await.body;
    let reasons: Vec<(String, String)> = failed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string(), j["errorMessage"].as_str().unwrap().to_string()))
        .collect();
    for (file, word) in [("truncated.jpg", "truncated"), ("empty.jpg", "empty"), ("text.jpg", "unsupported"), ("bomb.png", "max_megapixels")] {
        let r = reasons.iter().find(|r| r.0 == file).unwrap_or_else(|| panic!("{file} did not fail: {reasons:?}"));
        assert!(r.1.to_lowercase().contains(word), "{file}: {:?} should say {word}", r.1);
    }
    let p = d.get("/api/v1/training/pipeline").await.body;
    assert_eq!(p["points"], 10, "one point per embedded asset: {p:?}");
    assert_eq!(p["stages"][1]["failures"], 4);

    // The same counters for a Prometheus scraper, in its text format.
    let m = d.client.raw(hyper::Method::GET, "/metrics", &[], vec![]).await.expect("request");
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"), "{:?}", m.headers);
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    let sample = |series: &str| -> f64 {
        let line = text.lines().find(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series)).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    };
    assert_eq!(sample("pixdex_stage_items_total{stage=\"embed\"}"), 10.0);
    assert_eq!(sample("pixdex_stage_failures_total{stage=\"decode\"}"), 4.0);
    // What operators alert on: the 4 jobs failed for their files; the search for "cat" above.
    assert_eq!(sample("pixdex_jobs_failed_total{cause=\"file\"}"), 4.0);
    assert_eq!(sample("pixdex_jobs_failed_total{cause=\"crash\"}"), 0.0);
    assert!(sample("pixdex_search_duration_seconds_count{kind=\"words\"}") >= 1.0);
    assert_eq!(sample("pixdex_vector_points"), 10.0);
    assert!(sample("pixdex_images_completed_total") >= 10.0);
    assert!(sample("pixdex_stage_busy_seconds_total{stage=\"embed\"}") > 0.0);
    assert!(sample("pixdex_stage_queue_capacity{stage=\"embed\"}") > 0.0);
    assert!(sample("process_resident_memory_bytes") > 1e6);
    // Which library decoded the JPEGs, in health (CI requires libjpeg-turbo).
    let h = d.get("/health").await.body;
    if std::env::var_os("PIXDEX_REQUIRE_TURBOJPEG").is_some() {
        assert_eq!(h["jpegDecoder"], "libjpeg-turbo", "{h:?}");
    } else {
        assert!(matches!(h["jpegDecoder"].as_str(), Some("libjpeg-turbo" | "jpeg-decoder")), "{h:?}");
    }

    // Words: the cat photo first for "cat"; espresso for the coffee photos.
    let r = d.post("/api/v1/search", Some(json!({"query": "cat", "limit": 5}))).await.body;
    assert!(r["results"][0]["path"].as_str().unwrap().ends_with("chelsea.png"), "{r:?}");
    let r = d.post("/api/v1/search", Some(json!({"query": "Espresso"}))).await.body;
    // The resized copy is a near-duplicate of the original: folded into its hit.
    let first = &r["results"][0];
    let mut both = vec![first["path"].as_str().unwrap().rsplit('/').next().unwrap()];
    both.extend(first["similarCopies"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap().rsplit('/').next().unwrap()));
    assert!(both.contains(&"coffee.png") && both.contains(&"coffee-small.jpg"), "{r:?}");

    // By image: the exact copy and the resized copy rank first and second.
    let coffee = d.root.join("photos/coffee.png");
    let r = d.post("/api/v1/search/image", Some(json!({"path": coffee, "limit": 3}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The resized copy ranks right after the original: folded into its hit as a near copy.
    let top = &r.body["results"][0];
    assert!(top["path"].as_str().unwrap().ends_with("coffee.png"), "{:?}", r.body);
    assert!(top["similarCopies"][0]["path"].as_str().unwrap().ends_with("coffee-small.jpg"), "{:?}", r.body);
    assert!(r.body["results"][0]["score"].as_f64().unwrap() > 0.99);
    // The same by uploaded bytes.
    let bytes = std::fs::read(&coffee).unwrap();
    let r = d.client.request("POST".parse().unwrap(), "/api/v1/search/image?limit=2", Some(bytes)).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["results"][0]["path"].as_str().unwrap().ends_with("coffee.png"));
    // Similar to an asset, itself excluded.
    let coffee_id = r.body["results"][0]["assetId"].as_i64().unwrap();
    let r = d.get(&format!("/api/v1/search/similar/{coffee_id}?exclude_self=true&limit=3")).await.body;
    assert!(r["results"][0]["path"].as_str().unwrap().ends_with("coffee-small.jpg"), "{r:?}");
    assert!(r["results"].as_array().unwrap().iter().all(|h| h["assetId"] != coffee_id));

    // Filters narrow: path prefix, session.
    let r = d.post("/api/v1/search", Some(json!({"query": "espresso", "filters": {"pathPrefix": format!("{root}/noise")}}))).await.body;
    assert_eq!(r["results"].as_array().unwrap().len(), 0, "{r:?}");
    let r = d.post("/api/v1/search/image", Some(json!({"path": coffee, "limit": 20, "filters": {"pathPrefix": format!("{root}/noise")}}))).await.body;
    assert!(r["results"].as_array().unwrap().iter().all(|h| h["path"].as_str().unwrap().contains("/noise/")), "{r:?}");
    assert_eq!(r["results"].as_array().unwrap().len(), 4);
    let r = d.post("/api/v1/search/image", Some(json!({"path": coffee, "filters": {"sessionId": id + 100}}))).await.body;
    assert_eq!(r["results"].as_array().unwrap().len(), 0);
    // Images answered: each card plus the copies folded into it.
    let hits = |r: &Value| r["results"].as_array().unwrap().iter().map(|h| 1 + h["similarCopies"].as_array().map_or(0, |c| c.len())).sum::<usize>();
    let r = d.post("/api/v1/search/image", Some(json!({"path": coffee, "limit": 20, "filters": {"sessionId": id}}))).await.body;
    assert_eq!(hits(&r), 10, "{r:?}");
    // Category: the session's keeps everything, another none.
    let r = d.post("/api/v1/search/image", Some(json!({"path": coffee, "limit": 20, "filters": {"categoryId": cat}}))).await.body;
    assert_eq!(hits(&r), 10, "{r:?}");
    let r = d.post("/api/v1/search", Some(json!({"query": "espresso", "filters": {"categoryId": cat + 1}}))).await.body;
    assert_eq!(hits(&r), 0, "{r:?}");
    // Indexed date range: everything was indexed between the start and the completion.
    let (from, to) = (before_start.to_rfc3339(), after_done.timestamp_millis());
    let r = d.post("/api/v1/search/image", Some(json!({"path": coffee, "limit": 20, "filters": {"indexedFrom": from, "indexedTo": to}}))).await.body;
    assert_eq!(hits(&r), 10, "{r:?}");
    let r = d.post("/api/v1/search/image", Some(json!({"path": coffee, "limit": 20, "filters": {"indexedTo": before_start.timestamp_millis()}}))).await.body;
    assert_eq!(hits(&r), 0, "{r:?}");
    let r = d.post("/api/v1/search", Some(json!({"query": "espresso", "filters": {"indexedFrom": after_done.timestamp_millis() + 1}}))).await.body;
    assert_eq!(hits(&r), 0, "{r:?}");
    let r = d.post("/api/v1/search", Some(json!({"query": "espresso", "filters": {"indexedFrom": "last week"}}))).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap_or_default().contains("indexedFrom"), "{:?}", r.body);

    // Bad input.
    assert_eq!(d.post("/api/v1/search", Some(json!({"query": "  "}))).await.status, 400);
    assert_eq!(d.post("/api/v1/search", Some(json!({"query": "cat", "limit": 0}))).await.status, 400);
    assert_eq!(d.post("/api/v1/search", Some(json!({"query": "cat", "limit": 1000}))).await.status, 400);
    assert_eq!(d.post("/api/v1/search/image", Some(json!({"path": format!("{root}/missing.jpg")}))).await.status, 404);
    let r = d.post("/api/v1/search/image", Some(json!({"path": d.root.join("bad/text.jpg")}))).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(d.get("/api/v1/search/similar/99999").await.status, 404);

    // A moved file shows its new path; a deleted one disappears.
    std::fs::rename(d.root.join("photos/chelsea.png"), d.root.join("photos/cat.png")).unwrap();
    assert!(
        eventually(10, || async {
            let r = d.post("/api/v1/search", Some(json!({"query": "cat"}))).await.body;
            r["results"][0]["path"].as_str().is_some_and(|p| p.ends_with("photos/cat.png"))
        })
        .await
    );
    std::fs::remove_file(d.root.join("photos/cat.png")).unwrap();
    assert!(
        eventually(10, || async {
            let r = d.post("/api/v1/search", Some(json!({"query": "tabby"}))).await.body;
            r["results"].as_array().unwrap().iter().all(|h| !h["path"].as_str().unwrap().contains("cat.png"))
        })
        .await
    );
    let (code, out, _) = d.ctl(&["search", "--text", "espresso", "--limit", "2"]);
    assert_eq!(code, 0);
    assert!(out.contains("coffee"), "{out}");
    let (code, out, _) = d.ctl(&["pipeline"]);
    assert_eq!(code, 0);
    assert!(out.contains("embed") && out.contains("decode"), "{out}");
}

fn many(root: &Path, n: u32) {
    for i in 0..n {
        noise_png(&root.join(format!("many/{:03}/{i:04}.png", i / 50)), 80, 60, i + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_cancel_mid_run() {
    let d = TestDaemon::start(Db::Sqlite, &model_toml(4), |r| many(r, 160)).await;
    let root = d.root.display().to_string();
    let id = d.create(json!({"name": "big", "rootPath": root})).await;
    assert_eq!(d.action(id, "start").await.status, 200);
    assert!(eventually(60, || async { d.session(id).await["processedImages"].as_i64().unwrap() >= 8 }).await);
    assert_eq!(d.action(id, "pause").await.body["status"], "paused");
    // In-flight work finishes; nothing new is claimed.
    assert!(eventually(20, || async { d.get(&format!("{S}/{id}/progress")).await.body["jobsSummary"]["running"] == 0 }).await);
    let done = d.session(id).await["processedImages"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(d.session(id).await["processedImages"].as_i64().unwrap(), done, "paused: no progress");
    assert!(done < 160, "paused mid-run");
    assert_eq!(d.action(id, "start").await.body["status"], "running");
    let s = wait_status(&d, id, "completed", 180).await;
    assert_eq!((s["processedImages"].as_i64(), s["failedImages"].as_i64()), (Some(160), Some(0)));

    // Cancel mid-run: unfinished jobs cancelled, the session stops for good.
    let r = d.action(id, "restart").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(eventually(60, || async { d.session(id).await["processedImages"].as_i64().unwrap() >= 4 }).await);
    assert_eq!(d.action(id, "cancel").await.body["status"], "cancelled");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let p = d.get(&format!("{S}/{id}/progress")).await.body;
    let j = &p["jobsSummary"];
    assert_eq!((j["pending"].as_i64(), j["running"].as_i64()), (Some(0), Some(0)), "{p:?}");
    assert!(j["cancelled"].as_i64().unwrap() > 0, "{p:?}");
    assert_eq!(j["completed"].as_i64().unwrap() + j["cancelled"].as_i64().unwrap(), 160, "{p:?}");
    assert_eq!(d.session(id).await["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_daemon_finishes_without_duplicates() {
    let mut d = TestDaemon::start(Db::Sqlite, &model_toml(4), |r| many(r, 120)).await;
    let id = d.create(json!({"name": "crash", "rootPath": d.root.display().to_string()})).await;
    assert_eq!(d.action(id, "start").await.status, 200);
    assert!(eventually(60, || async { d.session(id).await["processedImages"].as_i64().unwrap() >= 10 }).await);
    d.kill(); // kill -9 mid-run
    d.respawn().await;
    let s = wait_status(&d, id, "completed", 180).await;
    assert_eq!((s["processedImages"].as_i64(), s["totalImages"].as_i64()), (Some(120), Some(120)), "{s:?}");
    let p = d.get("/api/v1/training/pipeline").await.body;
    assert_eq!(p["points"], 120, "one point per asset, no duplicates: {p:?}");
    let cat = d.catalog().await;
    assert!(cat.all_assets().await.unwrap().len() == 120);
    cat.close().await;
}

#[test]
fn embed_command_prints_labels_and_vectors() {
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["embed", "--json"])
        .arg(sample("chelsea.png"))
        .arg(sample("coffee.png"))
        .env("PIXDEX_MODEL__WEIGHTS", crate::harness::weights())
        .env("PIXDEX_MODEL__DEVICE", "cpu")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["dim"], 1280);
    assert_eq!(lines[0]["embedding"].as_array().unwrap().len(), 1280);
    let cat_ids: Vec<i64> = (281..=285).collect();
    assert!(cat_ids.contains(&lines[0]["labels"][0]["classId"].as_i64().unwrap()), "{:?}", lines[0]["labels"]);
    assert!(lines[1]["labels"].as_array().unwrap().iter().any(|l| l["label"].as_str().unwrap().contains("espresso")));
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["embed"])
        .arg("/nonexistent.jpg")
        .env("PIXDEX_MODEL__WEIGHTS", crate::harness::weights())
        .env("PIXDEX_MODEL__DEVICE", "cpu")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// A panic in a stage (injected with the `PIXDEX_FAILPOINT` test hook on one file) fails that
/// image alone, with a reason that says so; the stage keeps running, so every other image —
/// including those in the same batch — is embedded. Resize, embed and write stages in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_stage_fails_only_its_item() {
    let mut d = TestDaemon::start(Db::Sqlite, &model_toml(4), |r| {
        for i in 0..12u32 {
            let name = if i == 5 { "n05-boom.png".to_string() } else { format!("n{i:02}.png") };
            noise_png(&r.join("p").join(name), 96, 72, i + 3);
        }
    })
    .await;
    let id = d.create(json!({"name": "panics", "rootPath": d.root.display().to_string()})).await;
    for (round, stage) in ["resize", "embed", "write"].iter().enumerate() {
        d.stop();
        d.env = vec![("PIXDEX_FAILPOINT".into(), format!("{stage}:boom"))];
        d.respawn().await;
        let action = if round == 0 { "start" } else { "restart" };
        let r = d.action(id, action).await;
        assert_eq!(r.status, 200, "{stage}: {:?}", r.body);
        let s = wait_status(&d, id, "completed", 120).await;
        assert_eq!((s["processedImages"].as_i64(), s["failedImages"].as_i64()), (Some(11), Some(1)), "{stage}: {s}\n{}", d.log());
        let jobs = d.get(&format!("{S}/{id}/jobs?status=failed")).await.body;
        let why = jobs["items"][0]["errorMessage"].as_str().unwrap_or_default().to_string();
        assert!(why.contains("n05-boom.png") && why.contains(&format!("the {stage} stage crashed")), "{stage}: {jobs}");
        let p = d.get("/api/v1/training/pipeline").await.body;
        assert_eq!(p["points"], 11, "{stage}: {p}");
        assert_eq!(d.get("/api/v1/health").await.body["state"], "healthy", "{stage}: the pipeline still runs");
    }
}

/// SIGTERM while indexing: the daemon finishes or hands back what it holds and exits 0 within
/// 10 s; nothing is left leased, and the next start completes the session without duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_promptly() {
    let mut d = TestDaemon::start(Db::Sqlite, &model_toml(4), |r| many(r, 200)).await;
    let id = d.create(json!({"name": "term", "rootPath": d.root.display().to_string()})).await;
    assert_eq!(d.action(id, "start").await.status, 200);
    assert!(eventually(60, || async { d.session(id).await["processedImages"].as_i64().unwrap() >= 10 }).await);
    let t = std::time::Instant::now();
    d.stop(); // asserts exit status 0
    let took = t.elapsed();
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}\n{}", d.log());
    let cat = d.catalog().await;
    let sum = cat.jobs_summary(id).await.unwrap();
    assert_eq!(sum.running, 0, "nothing left leased: {sum:?}\n{}", d.log());
    assert!(sum.pending > 0 && sum.completed + sum.pending == 200, "stopped mid-run: {sum:?}");
    cat.close().await;
    d.respawn().await;
    let s = wait_status(&d, id, "completed", 180).await;
    assert_eq!((s["processedImages"].as_i64(), s["failedImages"].as_i64()), (Some(200), Some(0)), "{s}");
    assert_eq!(d.get("/api/v1/training/pipeline").await.body["points"], 200);
}

// kill -9 at 20 points of one session (delays from a fixed pseudo-random sequence), then a
// last restart: every image indexed, one point per image, nothing failed — on SQLite and on
// PostgreSQL. (`max_attempts` is raised: each kill is a death while holding the jobs in
// flight, which the crash-loop guard would otherwise count against them.)
both_backends!(kill_9_at_20_points, kill_9_body);
async fn kill_9_body(db: Db) {
    const N: i64 = 240;
    let toml = format!("{}max_attempts = 100\n", model_toml(4));
    let mut d = TestDaemon::start(db, &toml, |r| many(r, N as u32)).await;
    let id = d.create(json!({"name": "kills", "rootPath": d.root.display().to_string()})).await;
    assert_eq!(d.action(id, "start").await.status, 200);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut restarts = 0;
    for _ in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let ms = 100 + seed % 500;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        // Every kill lands mid-work: a session that finished between kills is redone.
        if d.session(id).await["status"] == "completed" {
            assert_eq!(d.action(id, "restart").await.status, 200);
            restarts += 1;
        }
        d.kill();
        d.respawn().await;
    }
    let s = wait_status(&d, id, "completed", 240).await;
    assert_eq!(
        (s["processedImages"].as_i64(), s["failedImages"].as_i64(), s["totalImages"].as_i64()),
        (Some(N), Some(0), Some(N)),
        "after 20 kills ({restarts} session restarts): {s}"
    );
    let p = d.get("/api/v1/training/pipeline").await.body;
    assert_eq!(p["points"], N, "no point lost or duplicated after 20 kills: {p}");
    let cat = d.catalog().await;
    assert_eq!(cat.all_assets().await.unwrap().len() as i64, N);
    cat.close().await;
}

/// More searches at once than `daemon.max_concurrent_searches`: the extra ones are answered
/// 503 with Retry-After and a JSON reason at once (not queued), the others succeed, and the
/// daemon answers normally afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_searches_are_bounded() {
    let mut d = TestDaemon::prepare(Db::Sqlite, &model_toml(4), "", |_| {}).await;
    d.daemon_extra = "max_concurrent_searches = 1".into();
    let extra = model_toml(4);
    d.write_config(&extra);
    d.respawn().await;
    let img = d.dir.path().join("query.png");
    noise_png(&img, 2400, 1800, 5);
    let bytes = std::fs::read(&img).unwrap();
    let one = || {
        let c = d.client.clone();
        let b = bytes.clone();
        async move { c.raw("POST".parse().unwrap(), "/api/v1/search/image?limit=3", &[("content-type", "image/png")], b).await }
    };
    let results = futures_util::future::join_all((0..8).map(|_| one())).await;
    // A refusal can arrive while the client is still sending its 2 MB body: the daemon answers
    // 503 without reading it and closes, and the client sees a broken pipe instead of the 503.
    let cut = results.iter().filter(|r| r.as_ref().is_err_and(|e| format!("{e:?}").contains("BrokenPipe"))).count();
    assert!(results.iter().all(|r| r.is_ok() || format!("{:?}", r.as_ref().err()).contains("BrokenPipe")), "{results:?}");
    let answers: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
    let busy: Vec<_> = answers.iter().filter(|r| r.status == 503).collect();
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert!(ok >= 1 && busy.len() + cut >= 1, "statuses: {:?}, {cut} cut off while uploading", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in &busy {
        assert_eq!(r.header("retry-after"), Some("5"));
        assert!(r.json()["detail"].as_str().unwrap().contains("max_concurrent_searches"), "{:?}", r.json());
    }
    assert_eq!(one().await.unwrap().status, 200, "free again");
}
