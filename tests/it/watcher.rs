//! The watcher against a running daemon on temp directories: exact catalog state after every
//! kind of change, native and poll, and changes made while the daemon was down.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::both_backends;
use crate::harness::{Db, PNG, TestDaemon, eventually, write_images};

const S: &str = "/api/v1/training/sessions";

/// (id, path relative to the root, size) of every catalogued asset.
async fn assets(d: &TestDaemon) -> Vec<(i64, String, i64)> {
    let cat = d.catalog().await;
    let root = format!("{}/", d.root.display());
    let out = cat.all_assets().await.unwrap().into_iter().map(|a| (a.id, a.path.trim_start_matches(&root).to_string(), a.size)).collect();
    cat.close().await;
    out
}

async fn paths(d: &TestDaemon) -> Vec<String> {
    assets(d).await.into_iter().map(|a| a.1).collect()
}

async fn id_of(d: &TestDaemon, rel: &str) -> Option<i64> {
    assets(d).await.into_iter().find(|a| a.1 == rel).map(|a| a.0)
}

async fn until_paths(d: &TestDaemon, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let ok = eventually(15, || async { paths(d).await == want }).await;
    assert!(ok, "catalog {:?} != expected {:?}\n{}", paths(d).await, want, d.log());
}

async fn until_paths_len(d: &TestDaemon, n: usize) {
    assert!(eventually(15, || async { paths(d).await.len() == n }).await, "{:?}", paths(d).await);
}

fn write(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

async fn image_count(d: &TestDaemon, session: i64, name: &str) -> i64 {
    let subs = d.get(&format!("{S}/{session}/subdirectories")).await.body;
    subs.as_array().unwrap().iter().find(|s| s["name"] == name).map(|s| s["imageCount"].as_i64().unwrap()).unwrap_or(-1)
}

both_backends!(follows_every_change, follows_every_change_body);
async fn follows_every_change_body(db: Db) {
    let d = TestDaemon::start(db, "", |root| write_images(root, "a", 2, "png")).await;
    let root = d.root.clone();
    until_paths(&d, &["a/img000.png", "a/img001.png"]).await;

    // A live session, completed: new images re-open it with a job each.
    let sid = d.create(json!({"name": "live", "rootPath": root.display().to_string()})).await;
    assert_eq!(d.action(sid, "start").await.status, 200);
    let cat = d.catalog().await;
    let claimed = cat.claim_jobs("w", 10, Duration::from_secs(60)).await.unwrap();
    cat.complete_jobs("w", &claimed.iter().map(|c| c.lease()).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(d.session(sid).await["status"], "completed");

    // create
    write(&root.join("a/new.png"), PNG);
    until_paths(&d, &["a/img000.png", "a/img001.png", "a/new.png"]).await;
    assert!(eventually(3, || async { image_count(&d, sid, "a").await == 3 }).await, "count follows");
    let s = d.session(sid).await;
    assert_eq!(s["status"], "running", "a completed live session takes the new image: {s:?}");
    assert_eq!(d.get(&format!("{S}/{sid}/progress")).await.body["jobsSummary"]["pending"], 1);

    // modify: same asset, new size
    let id0 = id_of(&d, "a/img000.png").await.unwrap();
    let mut bigger = PNG.to_vec();
    bigger.extend_from_slice(&[0u8; 100]);
    write(&root.join("a/img000.png"), &bigger);
    assert!(eventually(10, || async { assets(&d).await.iter().any(|a| a.0 == id0 && a.2 == bigger.len() as i64) }).await, "{:?}", assets(&d).await);
    // ... and its completed job is queued again, so its vector follows the new content.
    let p = d.get(&format!("{S}/{sid}/progress")).await.body;
    assert_eq!((p["jobsSummary"]["pending"].as_i64(), p["jobsSummary"]["completed"].as_i64()), (Some(2), Some(1)), "{p:?}");

    // rename a file: same id
    let id_new = id_of(&d, "a/new.png").await.unwrap();
    std::fs::rename(root.join("a/new.png"), root.join("a/renamed.png")).unwrap();
    until_paths(&d, &["a/img000.png", "a/img001.png", "a/renamed.png"]).await;
    assert_eq!(id_of(&d, "a/renamed.png").await, Some(id_new), "a rename keeps the asset");

    // rename the directory: every id kept, the session's subdirectory follows
    let before: Vec<i64> = assets(&d).await.iter().map(|a| a.0).collect();
    std::fs::rename(root.join("a"), root.join("b")).unwrap();
    until_paths(&d, &["b/img000.png", "b/img001.png", "b/renamed.png"]).await;
    let after: Vec<i64> = assets(&d).await.iter().map(|a| a.0).collect();
    assert_eq!(before, after);
    assert!(eventually(3, || async { image_count(&d, sid, "b").await == 3 }).await, "{:?}", d.get(&format!("{S}/{sid}/subdirectories")).await.body);

    // delete: gone, count drops, its pending job cancelled
    std::fs::remove_file(root.join("b/renamed.png")).unwrap();
    until_paths(&d, &["b/img000.png", "b/img001.png"]).await;
    assert!(eventually(3, || async { image_count(&d, sid, "b").await == 2 }).await);
    let p = d.get(&format!("{S}/{sid}/progress")).await.body;
    assert_eq!(p["jobsSummary"]["cancelled"], 1, "{p:?}");

    // mkdir -p of a deep tree
    for rel in ["deep/x/y/z/1.jpg", "deep/x/y/z/2.jpg", "deep/x/3.webp"] {
        write(&root.join(rel), PNG);
    }
    until_paths(&d, &["b/img000.png", "b/img001.png", "deep/x/3.webp", "deep/x/y/z/1.jpg", "deep/x/y/z/2.jpg"]).await;

    // ignored: hidden, @eaDir, other extensions
    write(&root.join(".hidden/h.png"), PNG);
    write(&root.join("b/.dot.png"), PNG);
    write(&root.join("b/@eaDir/t.png"), PNG);
    write(&root.join("b/notes.txt"), b"x");

    // out of the root = delete; into the root = create
    let outside = d.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::rename(root.join("deep/x/3.webp"), outside.join("3.webp")).unwrap();
    until_paths(&d, &["b/img000.png", "b/img001.png", "deep/x/y/z/1.jpg", "deep/x/y/z/2.jpg"]).await;
    write(&outside.join("in.png"), PNG);
    std::fs::rename(outside.join("in.png"), root.join("b/in.png")).unwrap();
    until_paths(&d, &["b/img000.png", "b/img001.png", "b/in.png", "deep/x/y/z/1.jpg", "deep/x/y/z/2.jpg"]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(paths(&d).await.len(), 5, "ignored files never catalogued: {:?}", paths(&d).await);

    let st = d.get("/api/v1/training/watcher").await.body;
    assert_eq!(st["roots"][0]["mode"], "native", "{st:?}");
    assert_eq!(st["assetsKnown"], 5);
    assert!(st["eventsSeen"].as_u64().unwrap() > 0);
    cat.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_2000_files() {
    let d = TestDaemon::start(Db::Sqlite, "", |_| {}).await;
    until_paths(&d, &[]).await;
    let dir = d.root.join("burst");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..2000 {
        std::fs::write(dir.join(format!("{i:04}.jpg")), PNG).unwrap();
    }
    let ok = eventually(60, || async { assets(&d).await.len() == 2000 }).await;
    assert!(ok, "{} of 2000 catalogued", assets(&d).await.len());
    let mut want: Vec<String> = (0..2000).map(|i| format!("burst/{i:04}.jpg")).collect();
    want.sort();
    assert_eq!(paths(&d).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_write_is_never_read_half_way() {
    let d = TestDaemon::start(Db::Sqlite, "", |_| {}).await;
    until_paths(&d, &[]).await;
    let path = d.root.join("slow.jpg");
    let chunk = vec![7u8; 4096];
    let chunks = 15;
    let final_size = (chunk.len() * chunks) as i64;
    let writer = {
        let path = path.clone();
        let chunk = chunk.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(&path).unwrap();
            for _ in 0..chunks {
                f.write_all(&chunk).unwrap();
                f.flush().unwrap();
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let t = Instant::now();
    while !writer.is_finished() {
        for a in assets(&d).await {
            assert_eq!(a.2, final_size, "catalogued at {} bytes after {:?}, while still being written", a.2, t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writer.join().unwrap();
    assert!(t.elapsed() >= Duration::from_secs(3));
    assert!(eventually(10, || async { assets(&d).await.iter().any(|a| a.1 == "slow.jpg" && a.2 == final_size) }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_follows_changes() {
    let d = TestDaemon::start_with(Db::Sqlite, "", "watch = \"poll\"\npoll_interval_ms = 200", |root| write_images(root, "p", 1, "png")).await;
    until_paths(&d, &["p/img000.png"]).await;
    let st = d.get("/api/v1/training/watcher").await.body;
    assert_eq!(st["roots"][0]["mode"], "poll", "{st:?}");
    write(&d.root.join("p/two.png"), &[PNG, &[1u8; 10]].concat());
    until_paths(&d, &["p/img000.png", "p/two.png"]).await;
    let id = id_of(&d, "p/two.png").await.unwrap();
    std::fs::rename(d.root.join("p/two.png"), d.root.join("p/deux.png")).unwrap();
    until_paths(&d, &["p/deux.png", "p/img000.png"]).await;
    assert_eq!(id_of(&d, "p/deux.png").await, Some(id), "a polled rename keeps the asset");
    std::fs::rename(d.root.join("p"), d.root.join("q")).unwrap();
    until_paths(&d, &["q/deux.png", "q/img000.png"]).await;
    assert_eq!(id_of(&d, "q/deux.png").await, Some(id), "a polled directory move keeps the assets");
    std::fs::remove_file(d.root.join("q/img000.png")).unwrap();
    until_paths(&d, &["q/deux.png"]).await;
}

/// The kernel refuses an inotify instance (the user's `fs.inotify.max_user_instances` is used up):
/// the root is polled instead, the watcher route says why, and changes are still followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_falls_back_to_polling_when_the_kernel_refuses() {
    // inotify limits are per user: use up those of a user of our own (nobody), not the test's,
    // so that other daemons running beside this test keep theirs.
    const NOBODY: u32 = 65534;
    // The system python (a pyenv shim under /root is not for other users).
    const PYTHON: &str = "/usr/bin/python3";
    if euid() != 0 || Command::new("setpriv").arg("--version").output().is_err() || !Path::new(PYTHON).exists() {
        eprintln!("SKIPPED native_falls_back_to_polling_when_the_kernel_refuses: needs root, setpriv and {PYTHON} to run a daemon as another user");
        return;
    }
    let mut d = TestDaemon::prepare(Db::Sqlite, "", "poll_interval_ms = 200", |root| write_images(root, "f", 1, "png")).await;
    let chown = Command::new("chown").arg("-R").arg(format!("{NOBODY}:{NOBODY}")).arg(d.dir.path()).status().unwrap();
    assert!(chown.success());
    // A process, as nobody, that holds every inotify instance the kernel allows that user.
    let mut hog = Command::new("setpriv")
        .args([&format!("--reuid={NOBODY}"), &format!("--regid={NOBODY}"), "--clear-groups", PYTHON, "-c"])
        .arg(
            "import ctypes,sys\nlibc=ctypes.CDLL(None,use_errno=True)\nfds=[]\nwhile True:\n    fd=libc.inotify_init()\n    \
             if fd<0: break\n    fds.append(fd)\nprint(len(fds),ctypes.get_errno(),flush=True)\nsys.stdin.read()",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(hog.stdout.as_mut().unwrap()), &mut line).unwrap();
    let held: Vec<i64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert!(held.len() == 2 && held[1] == 24, "the hog should end on EMFILE (24), holding every instance: {line:?}");
    d.run_as = Some(NOBODY);
    d.respawn().await;
    // The watcher starts its roots just after the socket answers.
    assert!(eventually(10, || async { d.get("/api/v1/training/watcher").await.body["roots"].as_array().is_some_and(|r| !r.is_empty()) }).await);
    let st = d.get("/api/v1/training/watcher").await.body;
    let _ = hog.kill();
    let _ = hog.wait();
    assert_eq!(st["roots"][0]["mode"], "poll", "{st:?}");
    let note = st["roots"][0]["note"].as_str().unwrap_or_default();
    assert!(note.contains("native") && note.contains("polling instead"), "{st:?}");
    until_paths(&d, &["f/img000.png"]).await;
    write(&d.root.join("f/new.png"), PNG);
    until_paths(&d, &["f/img000.png", "f/new.png"]).await;
    std::fs::remove_file(d.root.join("f/img000.png")).unwrap();
    until_paths(&d, &["f/new.png"]).await;
}

fn euid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

both_backends!(changes_while_down_found_at_start, changes_while_down_body);
async fn changes_while_down_body(db: Db) {
    let mut d = TestDaemon::start(db, "", |root| {
        write_images(root, "a", 3, "png");
    })
    .await;
    until_paths(&d, &["a/img000.png", "a/img001.png", "a/img002.png"]).await;
    let moved_id = id_of(&d, "a/img001.png").await.unwrap();
    d.stop();
    // While the daemon is down: one new, one deleted, one moved (no events for any of it).
    write(&d.root.join("a/later.png"), &[PNG, &[2u8; 5]].concat());
    std::fs::remove_file(d.root.join("a/img000.png")).unwrap();
    std::fs::create_dir_all(d.root.join("c")).unwrap();
    std::fs::rename(d.root.join("a/img001.png"), d.root.join("c/img001.png")).unwrap();
    std::thread::sleep(Duration::from_millis(400)); // older than settle_ms
    d.respawn().await;
    until_paths(&d, &["a/img002.png", "a/later.png", "c/img001.png"]).await;
    assert_eq!(id_of(&d, "c/img001.png").await, Some(moved_id));
    // The status is stamped once the whole reconcile is done, just after its last catalog write.
    let stamped = eventually(10, || async {
        let st = d.get("/api/v1/training/watcher").await.body;
        st["reconciles"].as_u64().unwrap_or(0) >= 1 && st["lastReconcileAt"].is_string()
    })
    .await;
    assert!(stamped, "{:?}", d.get("/api/v1/training/watcher").await.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_scan() {
    let d = TestDaemon::start_with(Db::Sqlite, "", "watch = \"off\"", |root| write_images(root, "a", 1, "png")).await;
    until_paths(&d, &["a/img000.png"]).await;
    let sid = d.create(json!({"name": "s", "rootPath": d.root.display().to_string(), "live": false})).await;
    assert_eq!(d.action(sid, "start").await.status, 200);
    // watch = off: nothing follows by itself
    write_images(&d.root, "a/more", 2, "jpg");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(paths(&d).await.len(), 1);
    std::thread::sleep(Duration::from_millis(400));
    let q = |dir: &Path, auto: bool| format!("/api/v1/training/scan/incremental?directory={}&auto_train={auto}", dir.display());
    let r = d.post(&q(&d.root.join("a"), false), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!((r.body["discovered"].as_i64(), r.body["created"].as_i64(), r.body["skipped"].as_i64()), (Some(3), Some(2), Some(1)), "{:?}", r.body);
    assert_eq!(r.body["jobsQueued"], 0);
    assert_eq!(d.get(&format!("{S}/{sid}/jobs")).await.body["total"], 1, "auto_train=false queues nothing");
    write_images(&d.root, "a", 3, "webp");
    std::thread::sleep(Duration::from_millis(400));
    let r = d.post(&q(&d.root.join("a"), true), None).await;
    assert_eq!((r.body["created"].as_i64(), r.body["jobsQueued"].as_i64()), (Some(3), Some(3)), "{:?}", r.body);
    assert_eq!(d.get(&format!("{S}/{sid}/jobs")).await.body["total"], 4);
    // Files still being written are left to settle, then catalogued (no jobs: the session is not live).
    write_images(&d.root, "a/fresh", 2, "png");
    let r = d.post(&q(&d.root.join("a"), false), None).await;
    assert_eq!((r.body["created"].as_i64(), r.body["settling"].as_i64()), (Some(0), Some(2)), "{:?}", r.body);
    until_paths_len(&d, 8).await;
    assert_eq!(d.get(&format!("{S}/{sid}/jobs")).await.body["total"], 4);
    // errors
    assert_eq!(d.post("/api/v1/training/scan/incremental", None).await.status, 400);
    assert_eq!(d.post(&q(d.dir.path(), false), None).await.status, 403);
    assert_eq!(d.post(&q(&d.root.join("nope"), false), None).await.status, 404);
    let st = d.get("/api/v1/training/watcher").await.body;
    assert_eq!(st["roots"][0]["mode"], "off");
    let (code, out, _) = d.ctl(&["scan", &d.root.display().to_string()]);
    assert_eq!(code, 0);
    assert!(out.contains("8 images found"), "{out}");
    let (code, out, _) = d.ctl(&["watcher"]);
    assert_eq!(code, 0);
    assert!(out.contains("off") && out.contains("assets known: 8"), "{out}");
}

/// A folder that becomes unreadable (chmod 000, daemon not root) is not an emptied one: its
/// assets and vectors stay, health says which folder and why, and when it is readable again
/// nothing is re-created or re-embedded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_folder_is_not_an_empty_one() {
    const NOBODY: u32 = 65534;
    if euid() != 0 || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED unreadable_folder_is_not_an_empty_one: needs root and setpriv to run the daemon as another user (root reads anything)");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mut d = TestDaemon::prepare(Db::Sqlite, &crate::harness::model_toml(4), "", |root| {
        for (i, rel) in ["a/1.png", "a/2.png", "a/deep/3.png", "b/4.png"].iter().enumerate() {
            std::fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
            crate::harness::noise_png(&root.join(rel), 64, 48, i as u32 + 1);
        }
    })
    .await;
    let chown = Command::new("chown").arg("-R").arg(format!("{NOBODY}:{NOBODY}")).arg(d.dir.path()).status().unwrap();
    assert!(chown.success());
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d.run_as = Some(NOBODY);
    d.respawn().await;
    let all = ["a/1.png", "a/2.png", "a/deep/3.png", "b/4.png"];
    until_paths(&d, &all).await;
    // Not live: the file added later is catalogued but not embedded, so counts stay exact.
    let sid = d.create(json!({"name": "s", "rootPath": d.root.display().to_string(), "live": false})).await;
    assert_eq!(d.action(sid, "start").await.status, 200);
    assert!(eventually(60, || async { d.session(sid).await["status"] == "completed" }).await, "{:?}\n{}", d.session(sid).await, d.log());
    let before = assets(&d).await;
    let points = || async { d.get("/api/v1/training/pipeline").await.body["points"].as_i64() };
    assert_eq!(points().await, Some(4));

    let a = d.root.join("a");
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o000)).unwrap();
    let unreadable = || async { d.get("/api/v1/health").await.body["watcher"]["unreadable"].as_array().cloned().unwrap_or_default() };
    assert!(eventually(15, || async { !unreadable().await.is_empty() }).await, "{}", d.log());
    let h = d.get("/api/v1/health").await.body;
    assert_eq!(h["state"], "degraded", "{h:?}");
    let u = &h["watcher"]["unreadable"][0];
    assert_eq!(u["path"], a.display().to_string(), "{h:?}");
    assert!(u["error"].as_str().unwrap().contains("ermission denied"), "{h:?}");
    assert!(h["problems"].to_string().contains("cannot be read"), "{h:?}");
    // A full reconcile (on demand) keeps them too; a new file elsewhere is still followed.
    write(&d.root.join("b/5.png"), PNG);
    std::thread::sleep(Duration::from_millis(400));
    let r = d.post(&format!("/api/v1/training/scan/incremental?directory={}&auto_train=false", d.root.display()), None).await;
    assert_eq!((r.status, r.body["removed"].as_i64()), (200, Some(0)), "{:?}", r.body);
    let mut want: Vec<&str> = all.to_vec();
    want.push("b/5.png");
    until_paths(&d, &want).await;
    assert_eq!(points().await, Some(4), "no vector deleted");

    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(eventually(15, || async { unreadable().await.is_empty() }).await, "{}", d.log());
    assert_eq!(d.get("/api/v1/health").await.body["state"], "healthy");
    let after: Vec<_> = assets(&d).await.into_iter().filter(|a| a.1 != "b/5.png").collect();
    assert_eq!(after, before, "same assets, same ids");
    let s = d.session(sid).await;
    assert_eq!((s["status"].as_str(), s["processedImages"].as_i64()), (Some("completed"), Some(4)), "nothing re-embedded: {s:?}");
    assert_eq!(points().await, Some(4));
}

/// The catalog is locked (another writer holds it) while new files arrive: the apply fails,
/// the watcher keeps those changes and retries them with backoff — they are catalogued once
/// the lock goes, without waiting for a full reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_apply_is_kept_and_retried() {
    use sqlx::Connection;
    let d = TestDaemon::start(Db::Sqlite, "", |root| write_images(root, "a", 1, "png")).await;
    until_paths(&d, &["a/img000.png"]).await;
    let mut lock = sqlx::SqliteConnection::connect(&d.catalog_url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut lock).await.unwrap();
    write(&d.root.join("a/late.png"), &[PNG, &[7u8; 3]].concat());
    // Held past the daemon's busy timeout, so its apply fails.
    assert!(eventually(30, || async { d.log().contains("keeping them to retry") }).await, "{}", d.log());
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    lock.close().await.unwrap();
    until_paths(&d, &["a/img000.png", "a/late.png"]).await;
    assert_eq!(d.get("/api/v1/training/watcher").await.body["reconciles"], 1, "caught up by the retry, not by a full reconcile");
}

/// 60 000 files dropped at once into a watched folder (far more events than the event queue
/// holds: it overflows and a full reconcile catches up): the catalog ends exact — every file,
/// once — and the daemon's memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_thousand_files_at_once() {
    const DIRS: usize = 60;
    const PER: usize = 1000;
    let d = TestDaemon::start(Db::Sqlite, "", |_| {}).await;
    let rss_before = d.rss_mb();
    let t = Instant::now();
    for i in 0..DIRS {
        let dir = d.root.join(format!("drop/d{i:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for j in 0..PER {
            std::fs::write(dir.join(format!("f{j:04}.png")), PNG).unwrap();
        }
    }
    let written = t.elapsed();
    let peak = std::cell::Cell::new(0f64);
    let n = DIRS * PER;
    let ok = eventually(240, || async {
        peak.set(peak.get().max(d.rss_mb()));
        d.catalog().await.count_assets().await.unwrap() == n as i64
    })
    .await;
    let count = d.catalog().await.count_assets().await.unwrap();
    assert!(ok, "catalog has {count} of {n} files after 240 s (written in {written:?})\n{}", &d.log()[d.log().len().saturating_sub(3000)..]);
    // Exact: every path once (paths are unique in the catalog; the count equals the files).
    let all = d.catalog().await.all_assets().await.unwrap();
    assert_eq!(all.len(), n);
    assert!(all.iter().all(|a| a.path.contains("/drop/d")));
    let rss_after = d.rss_mb();
    let peak = peak.get();
    eprintln!("60k files: written in {written:?}, catalogued in {:?}; RSS {rss_before:.0} → peak {peak:.0} → {rss_after:.0} MB", t.elapsed());
    assert!(peak - rss_before < 200.0, "RSS grew from {rss_before:.0} to {peak:.0} MB");
}

/// A request that cannot finish in `daemon.request_timeout_secs` (here a scan stuck behind a
/// catalog another writer holds) is answered 503 + Retry-After in time, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out() {
    use sqlx::Connection;
    let mut d = TestDaemon::prepare(Db::Sqlite, "", "", |root| write_images(root, "a", 1, "png")).await;
    d.daemon_extra = "request_timeout_secs = 1".into();
    d.write_config("");
    d.respawn().await;
    until_paths(&d, &["a/img000.png"]).await;
    let mut lock = sqlx::SqliteConnection::connect(&d.catalog_url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut lock).await.unwrap();
    // A new file the scan must write to the catalog (which the lock holds).
    write(&d.root.join("a/new.png"), &[PNG, &[9u8; 2]].concat());
    std::thread::sleep(Duration::from_millis(400));
    let t = Instant::now();
    let path = format!("/api/v1/training/scan/incremental?directory={}", d.root.join("a").display());
    let r = d.client.raw("POST".parse().unwrap(), &path, &[], vec![]).await.unwrap();
    let took = t.elapsed();
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    lock.close().await.unwrap();
    assert_eq!((r.status, r.header("retry-after")), (503, Some("5")), "{:?}", r.json());
    assert!(r.json()["detail"].as_str().unwrap().contains("request_timeout_secs"), "{:?}", r.json());
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    // The daemon goes on: the scan's change lands once the lock is gone.
    until_paths(&d, &["a/img000.png", "a/new.png"]).await;
}

/// With `daemon.max_in_flight_requests = 1`, a request arriving while another is in flight
/// (a scan held up by a locked catalog) is answered 503 + Retry-After at once, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_capped() {
    use sqlx::Connection;
    let mut d = TestDaemon::prepare(Db::Sqlite, "", "", |root| write_images(root, "a", 1, "png")).await;
    d.daemon_extra = "max_in_flight_requests = 1\nrequest_timeout_secs = 5".into();
    d.write_config("");
    d.respawn().await;
    until_paths(&d, &["a/img000.png"]).await;
    let mut lock = sqlx::SqliteConnection::connect(&d.catalog_url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut lock).await.unwrap();
    write(&d.root.join("a/new.png"), &[PNG, &[5u8; 2]].concat());
    std::thread::sleep(Duration::from_millis(400));
    let path = format!("/api/v1/training/scan/incremental?directory={}", d.root.join("a").display());
    let slow = {
        let c = d.client.clone();
        tokio::spawn(async move { c.raw("POST".parse().unwrap(), &path, &[], vec![]).await.unwrap().status })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = d.client.raw("GET".parse().unwrap(), "/api/v1/training/watcher", &[], vec![]).await.unwrap();
    assert_eq!((r.status, r.header("retry-after")), (503, Some("5")), "{:?}", r.json());
    assert!(r.json()["detail"].as_str().unwrap().contains("max_in_flight_requests"), "{:?}", r.json());
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    lock.close().await.unwrap();
    let _ = slow.await.unwrap();
    assert!(eventually(10, || async { d.client.get("/api/v1/health").await.is_ok_and(|r| r.status == 200) }).await, "answers again");
}
