//! Issue 22 (a million images): listings, admission and the library tree answer from the
//! catalog's per-folder counts (kept by triggers, followed by the watcher), not from walks;
//! session starts and restarts run in the background in batches and survive a crash.

use serde_json::{Value, json};

use crate::both_backends;
use crate::harness::{Db, TestDaemon, eventually, write_images};

const S: &str = "/api/v1/training/sessions";

async fn scan(d: &TestDaemon) -> Value {
    let r = d.post("/api/v1/training/directories/scan", Some(json!({"rootPath": d.root.display().to_string(), "recursive": true}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

fn count_of(scan: &Value, name: &str) -> (i64, i64) {
    let row = scan["subdirectories"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{name} not in {scan}"));
    (row["imageCount"].as_i64().unwrap(), row["unsupportedFiles"].as_i64().unwrap())
}

async fn tree_count(d: &TestDaemon, rel: &str) -> Option<i64> {
    let lib = d.get("/api/v1/library").await.body;
    let path = d.root.join(rel).display().to_string();
    lib["roots"][0]["directories"].as_array().unwrap().iter().find(|x| x["path"] == path.as_str()).and_then(|x| x["imageCount"].as_i64())
}

both_backends!(listings_read_the_catalog_counts, listings_body);
/// The catalog answers: a folder's counts include its subfolders but never its namesakes
/// ("a-b", "a b"); non-image files are counted per folder; files added and removed while the
/// daemon runs move the counts; nested selections are counted once by admission.
async fn listings_body(db: Db) {
    let d = TestDaemon::start(db, "", |r| {
        write_images(r, "a", 5, "png");
        write_images(r, "a/deep", 3, "png");
        write_images(r, "a-b", 2, "png");
        write_images(r, "a b", 4, "png");
        write_images(r, "b", 4, "png");
        write_images(r, ".", 1, "png");
        std::fs::write(r.join("a/notes.txt"), b"x").unwrap();
        std::fs::write(r.join("a/deep/raw.cr2"), b"x").unwrap();
        std::fs::create_dir_all(r.join("empty")).unwrap();
    })
    .await;
    // Once the watcher has reconciled the root, the numbers come from the catalog.
    assert!(eventually(20, || async { scan(&d).await["countsFrom"] == "catalog" }).await, "{}", d.log());
    let s = scan(&d).await;
    assert_eq!(count_of(&s, "a"), (8, 2), "{s}");
    assert_eq!(count_of(&s, "a-b"), (2, 0));
    assert_eq!(count_of(&s, "a b"), (4, 0));
    assert_eq!(count_of(&s, "b"), (4, 0));
    assert_eq!(count_of(&s, "empty"), (0, 0), "an empty folder is listed, as empty");
    assert_eq!(count_of(&s, "."), (1, 0), "the root's own images");
    assert_eq!(s["totalImages"], 19);
    assert_eq!((tree_count(&d, "a").await, tree_count(&d, "a/deep").await, tree_count(&d, "a-b").await), (Some(8), Some(3), Some(2)));
    assert_eq!(d.get("/api/v1/library").await.body["roots"][0]["imageCount"], 19);
    // The non-recursive listing: direct counts.
    let l = d.get(&format!("/api/v1/training/directories?path={}", d.root.display())).await.body;
    let a = l.as_array().unwrap().iter().find(|x| x["name"] == "a").unwrap().clone();
    assert_eq!((a["imageCount"].as_i64(), a["unsupportedFiles"].as_i64()), (Some(5), Some(1)), "{l}");

    // Admission over a folder and its own subfolder counts each image once.
    let r = d.post("/api/v1/training/admission", Some(json!({"rootPath": d.root.display().to_string(), "subdirectories": ["a", "a/deep", "a-b"]}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["diagnostics"]["imagesFound"], 10, "{:?}", r.body);
    assert_eq!(r.body["diagnostics"]["selectedWithImages"], 3);
    assert_eq!(r.body["diagnostics"]["unsupportedFilesFound"], 3, "a (2 below it) + a/deep (1)");

    // Live: two images arrive in b, a/deep goes away.
    write_images(&d.root, "b/new", 2, "png");
    std::fs::remove_dir_all(d.root.join("a/deep")).unwrap();
    assert!(
        eventually(20, || async {
            let s = scan(&d).await;
            count_of(&s, "b").0 == 6 && count_of(&s, "a") == (5, 1)
        })
        .await,
        "{}",
        scan(&d).await
    );
    assert!(eventually(10, || async { tree_count(&d, "a/deep").await.is_none() && tree_count(&d, "b/new").await == Some(2) }).await);

    // Deep pages by keyset cursor: every asset once, in id order, the total from the counts.
    let total = d.get("/api/v1/library").await.body["roots"][0]["imageCount"].as_i64().unwrap();
    let mut ids: Vec<i64> = Vec::new();
    let mut url = "/api/v1/assets?page_size=4".to_string();
    loop {
        let page = d.get(&url).await.body;
        assert_eq!(page["total"].as_i64(), Some(total), "{page}");
        ids.extend(page["items"].as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()));
        match page["nextCursor"].as_i64() {
            Some(c) => url = format!("/api/v1/assets?page_size=4&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(ids.len() as i64, total, "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending, none twice: {ids:?}");
    let under_b = d.get(&format!("/api/v1/assets?path_prefix={}&page_size=100", d.root.join("b").display())).await.body;
    assert_eq!((under_b["total"].as_i64(), under_b["items"].as_array().unwrap().len()), (Some(6), 6), "{under_b}");

    // A session over the whole root is created from the counts (no walk) with the same rows.
    let id = d.create(json!({"name": "all", "rootPath": d.root.display().to_string()})).await;
    let subs = d.get(&format!("{S}/{id}/subdirectories")).await.body;
    let mut rows: Vec<(String, i64)> =
        subs.as_array().unwrap().iter().map(|x| (x["name"].as_str().unwrap().to_string(), x["imageCount"].as_i64().unwrap())).collect();
    rows.sort();
    assert_eq!(rows, vec![(".".into(), 1), ("a".into(), 5), ("a b".into(), 4), ("a-b".into(), 2), ("b".into(), 6)], "{subs}");
}

both_backends!(a_start_killed_midway_resumes, resume_body);
/// A start runs in the background in batches (`pipeline.queue_batch`); killed in the middle
/// (the process aborts after a batch, as a crash or `kill -9` would), the next daemon resumes it:
/// the session runs with exactly one job per image, none twice. A full restart also goes
/// through discovery and ends with every job pending again.
async fn resume_body(db: Db) {
    let mut d = TestDaemon::start(db, "[pipeline]\nqueue_batch = 7\n", |r| {
        for f in ["f1", "f2", "f3", "f4"] {
            write_images(r, f, 30, "png");
        }
    })
    .await;
    assert!(eventually(20, || async { scan(&d).await["countsFrom"] == "catalog" }).await, "{}", d.log());
    let id = d.create(json!({"name": "big", "rootPath": d.root.display().to_string()})).await;
    d.stop();
    d.env = vec![("PIXDEX_FAILPOINT".into(), format!("discovery:{}", d.root.join("f3").display()))];
    d.respawn().await;
    assert!(eventually(20, || async { scan(&d).await["countsFrom"] == "catalog" }).await, "{}", d.log());
    // The daemon dies while answering (the connection drops): the start was under way.
    let _ = d.client.post(&format!("{S}/{id}/start"), None).await;
    let t = std::time::Instant::now();
    while d.running() && t.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!d.running(), "the failpoint aborts the daemon");
    let cat = d.catalog().await;
    let s = cat.session(id).await.unwrap().unwrap();
    assert_eq!(s.status.as_str(), "discovering", "{s:?}");
    let queued = cat.jobs_summary(id).await.unwrap().total();
    assert!(queued > 0 && queued < 120, "half-way: {queued} jobs");
    cat.close().await;

    d.env.clear();
    d.respawn().await;
    assert!(eventually(20, || async { d.session(id).await["status"] == "running" }).await, "resumed and running: {}\n{}", d.session(id).await, d.log());
    let p = d.get(&format!("{S}/{id}/progress")).await.body;
    assert_eq!((p["jobsSummary"]["pending"].as_i64(), p["progress"]["total"].as_i64()), (Some(120), Some(120)), "{p}");
    assert!(d.log().contains("resuming an interrupted session discovery"));

    // A full restart (of a paused session): discovering in the background, then every job
    // pending again.
    assert_eq!(d.action(id, "pause").await.status, 200);
    let r = d.action(id, "restart").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(matches!(r.body["status"].as_str(), Some("running" | "discovering")), "{:?}", r.body);
    assert!(eventually(20, || async { d.session(id).await["status"] == "running" }).await);
    let p = d.get(&format!("{S}/{id}/progress")).await.body;
    assert_eq!(p["jobsSummary"]["pending"].as_i64(), Some(120), "{p}");
}
