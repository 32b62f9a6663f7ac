//! Field conditions (issue 21): mounts that come and go, roots replaced, a catalog disk that
//! fills, a catalog restored beside another catalog's vectors, a full data disk. Real mounts
//! (bind, tmpfs) as root; every mount is undone on every path (`Mounted` unmounts on drop).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Db, PNG, TestDaemon, eventually, model_toml, noise_png};
use crate::pipeline::wait_status;

/// A mount made by the test; lazily unmounted when dropped (a failing test leaves none behind).
struct Mounted(PathBuf);

impl Mounted {
    fn bind(from: &Path, to: &Path) -> Option<Mounted> {
        Command::new("mount").arg("--bind").arg(from).arg(to).status().is_ok_and(|s| s.success()).then(|| Mounted(to.to_path_buf()))
    }
    fn tmpfs(to: &Path, size: &str) -> Option<Mounted> {
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(to)
            .status()
            .is_ok_and(|s| s.success())
            .then(|| Mounted(to.to_path_buf()))
    }
    fn unmount(self) {
        let ok = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        assert!(ok, "umount {}", self.0.display());
        std::mem::forget(self);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn skipped(name: &str) {
    eprintln!("SKIPPED field::{name}: cannot mount here (needs root)");
}

/// (id, path) of every catalogued asset, by path.
async fn assets(d: &TestDaemon) -> Vec<(i64, String)> {
    let cat = d.catalog().await;
    let mut out: Vec<(i64, String)> = cat.all_assets().await.unwrap().into_iter().map(|a| (a.id, a.path)).collect();
    cat.close().await;
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

async fn health(d: &TestDaemon) -> Value {
    d.get("/api/v1/health").await.body
}

async fn points(d: &TestDaemon) -> i64 {
    d.get("/api/v1/training/pipeline").await.body["points"].as_i64().unwrap_or(-1)
}

async fn reconciles(d: &TestDaemon) -> i64 {
    d.get("/api/v1/training/watcher").await.body["reconciles"].as_i64().unwrap_or(0)
}

/// A root that is a mount point (a NAS): unmounted across a restart, its assets and vectors are
/// kept and health says it is away; mounted again, nothing is re-created or re-embedded; the
/// operator's `ctl library emptied` is the one way to say it really was emptied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_away_at_restart_is_not_deleted() {
    let mut d = TestDaemon::prepare(Db::Sqlite, &model_toml(4), "", |_| {}).await;
    let nas = d.dir.path().join("nas");
    for i in 0..6 {
        noise_png(&nas.join(format!("trip/p{i}.png")), 64, 48, i + 1);
    }
    let Some(mount) = Mounted::bind(&nas, &d.root) else { return skipped("mount_away_at_restart_is_not_deleted") };
    d.respawn().await;
    assert!(eventually(20, || async { assets(&d).await.len() == 6 }).await, "{}", d.log());
    let id = d.create(json!({"name": "nas", "rootPath": d.root.display().to_string()})).await;
    assert_eq!(d.action(id, "start").await.status, 200);
    wait_status(&d, id, "completed", 120).await;
    let before = assets(&d).await;
    assert_eq!(points(&d).await, 6);
    d.stop();

    // The NAS is away at the restart: its mount point is an empty folder.
    mount.unmount();
    assert_eq!(std::fs::read_dir(&d.root).unwrap().count(), 0);
    d.respawn().await;
    assert!(eventually(20, || async { reconciles(&d).await >= 1 }).await);
    let h = health(&d).await;
    assert_eq!(h["state"], "degraded", "{h}");
    assert!(h["problems"].to_string().contains("mount that is away"), "{h}");
    assert_eq!(assets(&d).await, before, "an unmounted mount point is not a folder that was emptied");
    assert_eq!(points(&d).await, 6, "its vectors are kept");

    // Mounted again while the daemon runs: the same assets, the same vectors, nothing queued.
    let mount = Mounted::bind(&nas, &d.root).expect("mount again");
    assert!(eventually(20, || async { health(&d).await["watcher"]["unavailable"].as_array().is_some_and(|a| a.is_empty()) }).await, "{}", health(&d).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(assets(&d).await, before);
    assert_eq!(points(&d).await, 6);
    let s = d.session(id).await;
    assert_eq!((s["status"].as_str(), s["processedImages"].as_i64()), (Some("completed"), Some(6)), "{s}");
    let sum = d.catalog().await.jobs_summary(id).await.unwrap();
    assert_eq!(sum.completed + sum.pending + sum.running, 6, "nothing embedded again: {sum:?}");

    // Unmounted while the daemon runs: noticed within seconds, kept.
    mount.unmount();
    assert!(eventually(20, || async { health(&d).await["problems"].to_string().contains("mount that is away") }).await, "{}", d.log());
    assert_eq!(assets(&d).await, before);
    // The operator says it really was emptied: now it is.
    let (code, out, err) = d.ctl(&["library", "emptied", &d.root.display().to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(eventually(10, || async { assets(&d).await.is_empty() }).await, "{:?}", assets(&d).await);
    assert!(eventually(10, || async { points(&d).await == 0 }).await, "vectors follow");
    assert_eq!(health(&d).await["state"], "healthy", "{}", health(&d).await);
    d.stop();
}

/// A root renamed away and made anew, and a root renamed away and back (a restore): the
/// watcher follows the directory now at the root's path within seconds, not the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_root_is_followed() {
    let mut d = TestDaemon::start(Db::Sqlite, "", |root| {
        for i in 0..3 {
            std::fs::write(root.join(format!("old{i}.png")), PNG).unwrap();
        }
    })
    .await;
    let rel = |a: &[(i64, String)]| -> Vec<String> { a.iter().map(|x| Path::new(&x.1).file_name().unwrap().to_string_lossy().into_owned()).collect() };
    assert!(eventually(15, || async { assets(&d).await.len() == 3 }).await);
    let kept = d.dir.path().join("lib-away");
    std::fs::rename(&d.root, &kept).unwrap();
    std::fs::create_dir(&d.root).unwrap();
    std::fs::write(d.root.join("new0.png"), PNG).unwrap();
    std::fs::create_dir(d.root.join("sub")).unwrap();
    std::fs::write(d.root.join("sub/new1.png"), PNG).unwrap();
    let ok = eventually(15, || async { rel(&assets(&d).await) == ["new0.png", "new1.png"] }).await;
    assert!(ok, "the new root's files, and only them: {:?}\n{}", assets(&d).await, d.log());
    // A file added later under the new root is seen by the new watch.
    std::fs::write(d.root.join("sub/new2.png"), PNG).unwrap();
    assert!(eventually(15, || async { assets(&d).await.len() == 3 }).await, "{:?}", assets(&d).await);

    // Renamed away and back (a restore from backup): the old files again.
    let newer = d.dir.path().join("lib-newer");
    std::fs::rename(&d.root, &newer).unwrap();
    std::fs::rename(&kept, &d.root).unwrap();
    let ok = eventually(15, || async { rel(&assets(&d).await) == ["old0.png", "old1.png", "old2.png"] }).await;
    assert!(ok, "{:?}\n{}", assets(&d).await, d.log());
    std::fs::write(d.root.join("old3.png"), PNG).unwrap();
    assert!(eventually(15, || async { assets(&d).await.len() == 4 }).await, "{:?}", assets(&d).await);
    let w = d.get("/api/v1/training/watcher").await.body;
    assert!(w["roots"][0]["watchedDirectories"].as_i64() >= Some(1), "{w}");
    d.stop();
}

/// The catalog's disk fills mid-session and empties again: no write is left wedged inside a
/// failed transaction; the session completes with every image exactly once, and files that
/// arrived while it was full are catalogued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_disk_full_then_freed() {
    const N: usize = 60;
    let toml = model_toml(4);
    let mut d = TestDaemon::prepare(Db::Sqlite, &toml, "", |root| {
        for i in 0..N {
            noise_png(&root.join(format!("f/n{i:02}.png")), 96, 72, i as u32 + 500);
        }
    })
    .await;
    let cat = d.dir.path().join("catdisk");
    std::fs::create_dir_all(&cat).unwrap();
    let Some(_mount) = Mounted::tmpfs(&cat, "16m") else { return skipped("catalog_disk_full_then_freed") };
    d.catalog_url = format!("sqlite://{}/catalog.db", cat.display());
    d.write_config(&toml);
    d.respawn().await;
    let id = d.create(json!({"name": "full", "rootPath": d.root.display().to_string(), "live": true})).await;
    assert_eq!(d.action(id, "start").await.status, 200);
    assert!(eventually(60, || async { d.session(id).await["processedImages"].as_i64().unwrap_or(0) >= 4 }).await, "{}", d.log());
    let filler = cat.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
    }
    // Files arrive while the catalog cannot take them.
    for i in 0..3 {
        noise_png(&d.root.join(format!("f/late{i}.png")), 80, 60, i + 900);
    }
    let said = eventually(15, || async { health(&d).await["problems"].to_string().contains("catalog: writes fail since") }).await;
    assert!(said, "health names the failing catalog writes: {}", health(&d).await);
    assert_eq!(health(&d).await["state"], "degraded");
    std::fs::remove_file(&filler).unwrap();
    let done = eventually(120, || async {
        let s = d.session(id).await;
        s["status"] == "completed" && s["processedImages"].as_i64() == Some(N as i64 + 3)
    })
    .await;
    let s = d.session(id).await;
    assert!(done, "the session completes once space returns: {s}\n{}", d.log());
    assert_eq!(s["failedImages"].as_i64(), Some(0), "{s}");
    assert_eq!(assets(&d).await.len(), N + 3, "files that arrived while the disk was full are catalogued");
    assert_eq!(points(&d).await, N as i64 + 3, "every image stored exactly once");
    assert!(!d.log().contains("non-zero transaction depth"), "{}", d.log());
    assert!(eventually(15, || async { health(&d).await["state"] == "healthy" }).await, "{}", health(&d).await);
    d.stop();
}

/// Run the daemon to its exit (it must refuse to start); returns its log.
fn refused_start(d: &TestDaemon) -> String {
    let out = Command::new(crate::harness::BIN)
        .args(["daemon", "--config"])
        .arg(&d.config_path)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the daemon");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the daemon must refuse to start:\n{text}");
    text
}

/// An empty catalog put beside the vectors of another (a botched restore): refused with the
/// fix, never served; the matching catalog put back serves again. An unmarked store (written
/// before pairing existed) is adopted by its own catalog, refused by an empty one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_and_vectors_are_paired() {
    let mut d = TestDaemon::start(Db::Sqlite, &model_toml(4), |root| {
        for i in 0..4 {
            noise_png(&root.join(format!("a/p{i}.png")), 64, 48, i + 40);
        }
    })
    .await;
    assert!(eventually(20, || async { assets(&d).await.len() == 4 }).await);
    let id = d.create(json!({"name": "pair", "rootPath": d.root.display().to_string()})).await;
    assert_eq!(d.action(id, "start").await.status, 200);
    wait_status(&d, id, "completed", 120).await;
    d.stop();
    let db = d.dir.path().join("catalog.db");
    let saved = d.dir.path().join("catalog.saved");
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    std::fs::rename(&db, &saved).unwrap();
    std::fs::write(&db, b"").unwrap();
    let log = refused_start(&d);
    assert!(log.contains("belong to another catalog") && log.contains("Fix:"), "{log}");

    // The catalog these vectors were written with, restored (with no write-ahead log of
    // the other one left beside it): serves again.
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    std::fs::rename(&saved, &db).unwrap();
    d.respawn().await;
    let sim = d.get(&format!("/api/v1/search/similar/{}", assets(&d).await[0].0)).await;
    assert_eq!(sim.status, 200, "{:?}", sim.body);
    d.stop();

    // A store from before pairing (no mark): its own catalog adopts it...
    let marks: Vec<PathBuf> = walk(&d.dir.path().join("data/vectors")).into_iter().filter(|p| p.ends_with("catalog-id")).collect();
    assert!(!marks.is_empty(), "the store keeps its catalog's id");
    for m in &marks {
        std::fs::remove_file(m).unwrap();
    }
    d.respawn().await;
    assert_eq!(points(&d).await, 4);
    d.stop();
    // ...and an empty catalog does not.
    for m in &marks {
        std::fs::remove_file(m).unwrap();
    }
    std::fs::rename(&db, &saved).unwrap();
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    let log = refused_start(&d);
    assert!(log.contains("unmarked store holding 4 points"), "{log}");
}

/// A catalog restored from an older backup beside newer vectors: the vectors of images
/// catalogued after the backup are deleted before their ids are given to other files, so no
/// id answers with another file's vector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_restored_from_an_older_backup() {
    let mut d = TestDaemon::start(Db::Sqlite, &model_toml(4), |root| {
        for i in 0..2 {
            noise_png(&root.join(format!("a/p{i}.png")), 64, 48, i + 60);
        }
    })
    .await;
    let root = d.root.display().to_string();
    assert!(eventually(20, || async { assets(&d).await.len() == 2 }).await);
    let first = d.create(json!({"name": "before", "rootPath": root})).await;
    assert_eq!(d.action(first, "start").await.status, 200);
    wait_status(&d, first, "completed", 120).await;
    d.stop();
    let db = d.dir.path().join("catalog.db");
    let backup = d.dir.path().join("backup.db");
    std::fs::copy(&db, &backup).unwrap();
    d.respawn().await;
    // Two images arrive after the backup, one after the other (found again later in the
    // other order, so each id would name the other file).
    noise_png(&d.root.join("b/z.png"), 64, 48, 71);
    assert!(eventually(20, || async { assets(&d).await.len() == 3 }).await);
    noise_png(&d.root.join("b/y.png"), 64, 48, 72);
    assert!(eventually(20, || async { assets(&d).await.len() == 4 }).await);
    let second = d.create(json!({"name": "after", "rootPath": root})).await;
    assert_eq!(d.action(second, "start").await.status, 200);
    wait_status(&d, second, "completed", 120).await;
    assert_eq!(points(&d).await, 4);
    d.stop();
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    std::fs::copy(&backup, &db).unwrap();
    d.respawn().await;
    assert!(d.log().contains("deleted vectors of assets this catalog never knew"), "{}", d.log());
    assert!(eventually(20, || async { assets(&d).await.len() == 4 }).await);
    // Every vector stored under an asset's id is that file's own: searching by the file finds
    // its id with a perfect score, or not at all (not embedded yet) — never another image's.
    assert_eq!(points(&d).await, 2, "the two vectors the restored catalog never knew are gone");
    for (aid, path) in assets(&d).await {
        let r = d.post("/api/v1/search/image", Some(json!({"path": path, "limit": 10}))).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        for hit in r.body["results"].as_array().unwrap() {
            if hit["path"].as_str() == Some(path.as_str()) {
                assert!(hit["score"].as_f64().unwrap() > 0.999, "asset {aid} ({path}) answers with another image's vector: {hit}");
            }
        }
    }
    d.stop();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A file that is not a SQLite database is named as such (not "pool timed out").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_that_is_not_a_database_is_named() {
    let d = TestDaemon::prepare(Db::Sqlite, "", "", |_| {}).await;
    std::fs::write(d.dir.path().join("catalog.db"), vec![0x42u8; 8192]).unwrap();
    let log = refused_start(&d);
    assert!(log.contains("is not a SQLite database") && log.contains("restore it from a backup"), "{log}");
}

/// A full data disk: thumbnails are served uncached, never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_data_disk_serves_thumbnails_uncached() {
    let mut d = TestDaemon::prepare(Db::Sqlite, "", "", |root| {
        for i in 0..3 {
            noise_png(&root.join(format!("t{i}.png")), 120, 90, i + 70);
        }
    })
    .await;
    let data = d.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let Some(_mount) = Mounted::tmpfs(&data, "64m") else { return skipped("full_data_disk_serves_thumbnails_uncached") };
    d.respawn().await;
    assert!(eventually(20, || async { assets(&d).await.len() == 3 }).await);
    let filler = data.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
    }
    for (id, _) in assets(&d).await {
        let r = d.client.raw(hyper::Method::GET, &format!("/api/v1/images/{id}/thumbnail"), &[], vec![]).await.expect("request");
        assert_eq!((r.status, r.header("content-type")), (200, Some("image/jpeg")), "thumbnail {id} on a full data disk: {}", String::from_utf8_lossy(&r.body));
    }
    assert!(d.log().contains("thumbnail served uncached"), "{}", d.log());
    std::fs::remove_file(&filler).unwrap();
    d.stop();
}

/// Filters of the wrong type are a 400 naming the field and the type wanted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_of_the_wrong_type_are_refused() {
    let mut d = TestDaemon::start(Db::Sqlite, "", |_| {}).await;
    for (filters, field) in [
        (json!({"pathPrefix": 123}), "pathPrefix"),
        (json!({"pathPrefix": ["/a"]}), "pathPrefix"),
        (json!({"dateFrom": true}), "dateFrom"),
        (json!({"indexedTo": {"y": 1}}), "indexedTo"),
        (json!({"categoryId": [1]}), "categoryId"),
    ] {
        let r = d.post("/api/v1/search", Some(json!({"query": "cat", "filters": filters}))).await;
        assert_eq!(r.status, 400, "{filters}: {:?}", r.body);
        assert!(r.body["detail"].as_str().is_some_and(|m| m.contains(field)), "{filters}: {:?}", r.body);
    }
    d.stop();
}

/// A scan without `auto_train` still gives live sessions their jobs (as the watcher would):
/// an image it catalogues is never left unembedded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_without_auto_train_feeds_live_sessions() {
    let mut d = TestDaemon::start_with(Db::Sqlite, "", "watch = \"poll\"\npoll_interval_ms = 600000\n", |root| {
        std::fs::create_dir_all(root.join("in")).unwrap();
        std::fs::write(root.join("in/a.png"), PNG).unwrap();
    })
    .await;
    assert!(eventually(15, || async { assets(&d).await.len() == 1 }).await);
    let id = d.create(json!({"name": "live", "rootPath": d.root.display().to_string(), "live": true})).await;
    assert_eq!(d.action(id, "start").await.status, 200);
    std::fs::write(d.root.join("in/b.png"), PNG).unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let dir = d.root.join("in").display().to_string();
    let (code, out, err) = d.ctl(&["scan", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    let sum = d.catalog().await.jobs_summary(id).await.unwrap();
    assert_eq!(sum.completed + sum.pending + sum.running + sum.failed + sum.cancelled, 2, "the scanned image got its job: {sum:?}\n{out}");
    d.stop();
    // A log written to a file carries no terminal colour codes.
    assert!(!d.log().contains('\u{1b}'), "ANSI escapes in a redirected log:\n{}", d.log());
    assert_eq!(d.log().matches(" watching root=").count(), 1, "logged once at start:\n{}", d.log());
}

/// A bad value from a `PIXDEX_*` variable is reported as coming from that variable, not from
/// the file.
#[test]
fn an_invalid_environment_value_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pixdex.toml");
    std::fs::write(&cfg, "[pipeline]\nbatch_size = 8\n").unwrap();
    let out = Command::new(crate::harness::BIN).args(["config", "show", "--config"]).arg(&cfg).env("PIXDEX_PIPELINE__BATCH_SIZE", "0").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("pipeline.batch_size") && err.contains("PIXDEX_PIPELINE__BATCH_SIZE"), "{err}");
    assert!(!err.contains(&cfg.display().to_string()), "the file did not set it: {err}");
}

/// CLIP configured but unable to run (its weights missing): word search says the configured
/// model is not running and why, never "configure a CLIP model".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_clip_that_cannot_run_says_so() {
    let vocab = crate::harness::repo_dir().join("models/clip-bpe-vocab.txt.gz");
    let toml = format!("[model]\nname = \"ViT-B-32\"\nweights = \"$ROOT/../missing-clip.safetensors\"\nvocab = \"{}\"\n", vocab.display());
    let mut d = TestDaemon::start(Db::Sqlite, &toml, |_| {}).await;
    let r = d.post("/api/v1/search", Some(json!({"query": "a cat"}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let note = r.body["note"].as_str().unwrap_or_default().to_string();
    assert!(note.contains("the configured model ViT-B-32 is not running") && note.contains("missing-clip.safetensors"), "{}", r.body);
    assert!(!note.contains("configure a CLIP model"), "{}", r.body);
    d.stop();
}
