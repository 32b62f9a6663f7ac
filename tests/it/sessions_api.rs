//! Every session route, every transition (allowed and refused), errors.

use std::os::unix::fs::PermissionsExt;

use pixdex::model::JobStatus;
use serde_json::json;

use crate::both_backends;
use crate::harness::{Db, TestDaemon, write_images};

const S: &str = "/api/v1/training/sessions";

fn library(root: &std::path::Path) {
    write_images(root, "a", 2, "png");
    write_images(root, "b/nested", 1, "JPG");
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join("notes")).unwrap();
    std::fs::write(root.join("notes/readme.txt"), "x").unwrap();
}

both_backends!(crud_and_listing, crud_and_listing_body);
async fn crud_and_listing_body(db: Db) {
    let d = TestDaemon::start(db, "", library).await;
    let root = d.root.display().to_string();

    // Created without subdirectories: those holding images are discovered and selected.
    let cat = d.post("/api/v1/categories", Some(json!({"name": "Trips"}))).await.body["id"].as_i64().unwrap();
    let id = d.create(json!({"name": "first", "rootPath": root, "categoryId": cat, "config": {"batch": 8}})).await;
    let s = d.session(id).await;
    assert_eq!(s["status"], "pending");
    assert_eq!(s["categoryId"], cat);
    // An unknown category is refused with the fix; none given → the default category.
    let r = d.post(S, Some(json!({"name": "nocat", "rootPath": root, "categoryId": 999}))).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.detail().contains("categoryId 999") && r.body["message"] == r.body["detail"], "{:?}", r.body);
    assert_eq!(s["config"]["batch"], 8);
    assert_eq!(s["source"], "api");
    let subs = d.get(&format!("{S}/{id}/subdirectories")).await;
    let names: Vec<&str> = subs.body.as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"], "{:?}", subs.body);
    assert!(subs.body.as_array().unwrap().iter().all(|x| x["selected"] == true));
    assert_eq!(subs.body[0]["imageCount"], 2);
    assert_eq!(subs.body[1]["imageCount"], 1, "nested images count recursively");

    // Duplicate names are refused.
    let r = d.post(S, Some(json!({"name": "first", "rootPath": root}))).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.detail().contains("already exists"));

    d.create(json!({"name": "second", "rootPath": root})).await;
    d.create(json!({"name": "third", "rootPath": root, "subdirectories": ["a"]})).await;

    // Pagination and filter.
    let r = d.get(&format!("{S}?page=1&page_size=2")).await;
    assert_eq!(r.status, 200);
    assert_eq!((r.body["total"].as_i64(), r.body["pageSize"].as_i64(), r.body["hasMore"].as_bool()), (Some(3), Some(2), Some(true)));
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let r = d.get(&format!("{S}?page=2&page_size=2")).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["hasMore"], false);
    assert_eq!(r.body["items"][0]["name"], "third");
    assert_eq!(d.action(id, "start").await.status, 200);
    let r = d.get(&format!("{S}?status=running")).await;
    assert_eq!(r.body["total"], 1);
    assert_eq!(r.body["items"][0]["id"], id);
    let r = d.get(&format!("{S}?status=pending")).await;
    assert_eq!(r.body["total"], 2);

    // PATCH: name, category (and clearing it), config.
    let r = d.patch(&format!("{S}/{id}"), json!({"name": "renamed", "categoryId": 9, "config": {"k": 1}})).await;
    assert_eq!(r.status, 400, "category 9 does not exist: {:?}", r.body);
    let nine = d.post("/api/v1/categories", Some(json!({"name": "Nine"}))).await.body["id"].as_i64().unwrap();
    let r = d.patch(&format!("{S}/{id}"), json!({"name": "renamed", "categoryId": nine, "config": {"k": 1}})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!((r.body["name"].as_str(), r.body["categoryId"].as_i64()), (Some("renamed"), Some(nine)));
    let r = d.patch(&format!("{S}/{id}"), json!({"categoryId": null})).await;
    assert!(r.body["categoryId"].is_null());
    assert_eq!(r.body["name"], "renamed", "absent fields are left alone");
    let r = d.patch(&format!("{S}/{id}"), json!({"name": "second"})).await;
    assert_eq!(r.status, 409, "rename onto an existing name: {:?}", r.body);
    let r = d.patch(&format!("{S}/{id}"), json!({"config": [1, 2]})).await;
    assert_eq!(r.status, 400);

    // Subdirectory selection.
    let subs = d.get(&format!("{S}/{id}/subdirectories")).await.body;
    let a_id = subs[0]["id"].as_i64().unwrap();
    let r = d.patch(&format!("{S}/{id}/subdirectories"), json!([{"id": a_id, "selected": false}])).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body[0]["selected"], false);
    assert_eq!(r.body[1]["selected"], true);

    // DELETE: refused while running, allowed once cancelled.
    let r = d.delete(&format!("{S}/{id}")).await;
    assert_eq!(r.status, 409);
    assert_eq!(d.action(id, "cancel").await.status, 200);
    let r = d.delete(&format!("{S}/{id}")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(d.get(&format!("{S}/{id}")).await.status, 404);
    assert_eq!(d.get(&format!("{S}/{id}/subdirectories")).await.status, 404);
}

both_backends!(bad_requests, bad_requests_body);
async fn bad_requests_body(db: Db) {
    let d = TestDaemon::start(db, "", library).await;
    let root = d.root.display().to_string();
    let id = d.create(json!({"name": "s", "rootPath": root})).await;
    let other = d.create(json!({"name": "t", "rootPath": root})).await;

    // Unknown ids: 404 on every route.
    for (m, p) in [
        ("GET", format!("{S}/999")),
        ("PATCH", format!("{S}/999")),
        ("DELETE", format!("{S}/999")),
        ("GET", format!("{S}/999/subdirectories")),
        ("POST", format!("{S}/999/start")),
        ("POST", format!("{S}/999/pause")),
        ("POST", format!("{S}/999/cancel")),
        ("POST", format!("{S}/999/restart")),
        ("POST", format!("{S}/999/validate")),
        ("GET", format!("{S}/999/progress")),
        ("GET", format!("{S}/999/jobs")),
    ] {
        let body = if m == "PATCH" { Some(b"{}".to_vec()) } else { None };
        let r = d.client.request(m.parse().unwrap(), &p, body).await.unwrap();
        assert_eq!(r.status, 404, "{m} {p}: {:?}", r.body);
        assert!(r.detail().contains("999"), "{m} {p}: {:?}", r.body);
    }

    // Malformed bodies: 400 with a reason.
    let r = d.client.request("POST".parse().unwrap(), S, Some(b"{\"name\": ".to_vec())).await.unwrap();
    assert_eq!(r.status, 400);
    assert!(r.detail().contains("malformed JSON"), "{:?}", r.body);
    let r = d.post(S, Some(json!({"name": "x"}))).await;
    assert_eq!(r.status, 400);
    assert!(r.detail().contains("rootPath"), "names the missing field: {:?}", r.body);
    let r = d.post(S, Some(json!({"name": "x", "rootPath": root, "colour": 1}))).await;
    assert_eq!(r.status, 400);
    assert!(r.detail().contains("colour"), "{:?}", r.body);
    let r = d.client.request("POST".parse().unwrap(), S, None).await.unwrap();
    assert_eq!(r.status, 400);
    assert!(r.detail().contains("empty"), "{:?}", r.body);
    let r = d.post(S, Some(json!({"name": "  ", "rootPath": root}))).await;
    assert_eq!(r.status, 400);
    let r = d.patch(&format!("{S}/{id}/subdirectories"), json!({"id": 1})).await;
    assert_eq!(r.status, 400, "selection body must be a list: {:?}", r.body);

    // Bad path and query parameters.
    assert_eq!(d.get(&format!("{S}/abc")).await.status, 400);
    for q in ["page=0", "page_size=0", "page_size=1000", "page=x", "status=bogus", "colour=red"] {
        let r = d.get(&format!("{S}?{q}")).await;
        assert_eq!(r.status, 400, "{q}: {:?}", r.body);
    }
    let r = d.get(&format!("{S}/{id}/jobs?status=done")).await;
    assert_eq!(r.status, 400);
    assert!(r.detail().contains("pending"), "lists the valid statuses: {:?}", r.body);

    // A subdirectory id of another session changes nothing.
    let theirs = d.get(&format!("{S}/{other}/subdirectories")).await.body[0]["id"].as_i64().unwrap();
    let mine = d.get(&format!("{S}/{id}/subdirectories")).await.body[0]["id"].as_i64().unwrap();
    let r = d.patch(&format!("{S}/{id}/subdirectories"), json!([{"id": mine, "selected": false}, {"id": theirs, "selected": false}])).await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let after = d.get(&format!("{S}/{id}/subdirectories")).await.body;
    assert_eq!(after[0]["selected"], true, "a refused selection is all-or-nothing");

    // Unknown routes and methods.
    assert_eq!(d.get("/api/v1/nope").await.status, 404);
    let r = d.client.request("PUT".parse().unwrap(), S, Some(b"{}".to_vec())).await.unwrap();
    assert_eq!(r.status, 405);
}

both_backends!(path_escapes, path_escapes_body);
async fn path_escapes_body(db: Db) {
    let d = TestDaemon::start(db, "", library).await;
    let outside = d.dir.path().join("outside");
    write_images(&outside, "x", 1, "png");
    std::os::unix::fs::symlink(&outside, d.root.join("link-out")).unwrap();
    let root = d.root.display().to_string();

    for bad in [outside.display().to_string(), format!("{root}/../outside"), format!("{root}/link-out"), "/etc".into()] {
        let r = d.post(S, Some(json!({"name": "esc", "rootPath": bad}))).await;
        assert_eq!(r.status, 403, "{bad}: {:?}", r.body);
        assert!(r.detail().contains("library.roots"), "says how to fix: {:?}", r.body);
        let r = d.post("/api/v1/training/directories/scan", Some(json!({"rootPath": bad}))).await;
        assert_eq!(r.status, 403, "scan {bad}: {:?}", r.body);
    }
    let r = d.post(S, Some(json!({"name": "esc", "rootPath": root, "subdirectories": ["../outside"]}))).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = d.post(S, Some(json!({"name": "esc", "rootPath": root, "subdirectories": ["link-out"]}))).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = d.post(S, Some(json!({"name": "esc", "rootPath": format!("{root}/missing")}))).await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    // Outside the roots, a missing folder gets the same 403 as an existing one (no probing).
    let r = d.post("/api/v1/training/directories/scan", Some(json!({"rootPath": outside.join("no-such-dir")}))).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = d.post(S, Some(json!({"name": "esc", "rootPath": root, "subdirectories": ["missing"]}))).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(d.get(S).await.body["total"], 0, "nothing was created");

    // A symlink that stays inside the roots is fine.
    std::os::unix::fs::symlink(d.root.join("a"), d.root.join("link-in")).unwrap();
    let r = d.post(S, Some(json!({"name": "ok", "rootPath": format!("{root}/link-in")}))).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

both_backends!(transitions, transitions_body);
async fn transitions_body(db: Db) {
    let d = TestDaemon::start(db, "", library).await;
    let root = d.root.display().to_string();
    let id = d.create(json!({"name": "t", "rootPath": root})).await;
    let refused = |r: &pixdex::api::client::Response, current: &str| {
        assert_eq!(r.status, 409, "{:?}", r.body);
        assert_eq!(r.body["currentStatus"], current, "{:?}", r.body);
        assert!(r.detail().contains(current), "{:?}", r.body);
        assert!(r.body["allowedActions"].is_array());
    };

    // pending: pause and restart refused
    refused(&d.action(id, "pause").await, "pending");
    refused(&d.action(id, "restart").await, "pending");

    // pending → running (through discovering), one job per image
    let r = d.action(id, "start").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!((r.body["sessionId"].as_i64(), r.body["status"].as_str()), (Some(id), Some("running")));
    assert!(r.body["message"].as_str().unwrap().contains("3 jobs"), "{:?}", r.body);
    let s = d.session(id).await;
    assert_eq!(s["totalImages"], 3);
    assert!(s["startedAt"].is_string());
    refused(&d.action(id, "start").await, "running");
    refused(&d.action(id, "restart").await, "running");
    refused(&d.delete(&format!("{S}/{id}")).await, "running");

    // running ⇄ paused
    let r = d.action(id, "pause").await;
    assert_eq!(r.body["status"], "paused");
    assert!(d.session(id).await["pausedAt"].is_string());
    refused(&d.action(id, "pause").await, "paused");
    let r = d.action(id, "start").await;
    assert_eq!(r.body["status"], "running", "{:?}", r.body);
    assert!(d.session(id).await["pausedAt"].is_null());

    // cancel: unfinished jobs cancelled; start refused; restart runs everything again
    let r = d.action(id, "cancel").await;
    assert_eq!(r.body["status"], "cancelled");
    let p = d.get(&format!("{S}/{id}/progress")).await.body;
    assert_eq!(p["jobsSummary"]["cancelled"], 3);
    refused(&d.action(id, "start").await, "cancelled");
    refused(&d.action(id, "cancel").await, "cancelled");
    let r = d.action(id, "restart").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "running");
    let p = d.get(&format!("{S}/{id}/progress")).await.body;
    assert_eq!(p["jobsSummary"]["pending"], 3, "{p:?}");
    assert_eq!(p["progress"]["total"], 3);

    // Work the jobs as the pipeline does (claim → complete / fail) through the catalog.
    let cat = d.catalog().await;
    let claimed = cat.claim_jobs("test-worker", 10, std::time::Duration::from_secs(60)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(cat.claim_jobs("other", 10, std::time::Duration::from_secs(60)).await.unwrap().is_empty(), "no job is claimed twice");
    let p = d.get(&format!("{S}/{id}/progress")).await.body;
    assert_eq!(p["jobsSummary"]["running"], 3);
    cat.fail_job("test-worker", claimed[0].lease(), "truncated JPEG").await.unwrap();
    cat.complete_jobs("test-worker", &[claimed[1].lease(), claimed[2].lease()]).await.unwrap();
    let s = d.session(id).await;
    assert_eq!(s["status"], "completed", "{s:?}");
    assert_eq!((s["processedImages"].as_i64(), s["failedImages"].as_i64()), (Some(2), Some(1)));
    assert!(s["completedAt"].is_string());
    let p = d.get(&format!("{S}/{id}/progress")).await.body;
    assert_eq!((p["progress"]["current"].as_i64(), p["progress"]["percentage"].as_f64()), (Some(3), Some(100.0)));
    let failed = d.get(&format!("{S}/{id}/jobs?status=failed")).await.body;
    assert_eq!(failed["total"], 1);
    assert_eq!(failed["items"][0]["errorMessage"], "truncated JPEG");
    assert!(failed["items"][0]["path"].as_str().unwrap().starts_with(&root));
    let subs = d.get(&format!("{S}/{id}/subdirectories")).await.body;
    let trained: i64 = subs.as_array().unwrap().iter().map(|s| s["trainedCount"].as_i64().unwrap()).sum();
    assert_eq!(trained, 2);

    // completed: only restart and delete
    refused(&d.action(id, "start").await, "completed");
    refused(&d.action(id, "pause").await, "completed");
    refused(&d.action(id, "cancel").await, "completed");
    let r = d.post(&format!("{S}/{id}/restart?failed_only=true"), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let p = d.get(&format!("{S}/{id}/progress")).await.body;
    assert_eq!((p["jobsSummary"]["pending"].as_i64(), p["jobsSummary"]["completed"].as_i64()), (Some(1), Some(2)), "only the failed job runs again");

    // failed_only with nothing failed is refused
    let claimed = cat.claim_jobs("w", 10, std::time::Duration::from_secs(60)).await.unwrap();
    cat.complete_jobs("w", &[claimed[0].lease()]).await.unwrap();
    assert_eq!(d.session(id).await["status"], "completed");
    let r = d.post(&format!("{S}/{id}/restart?failed_only=true"), None).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    let r = d.post(&format!("{S}/{id}/restart?failed_only=maybe"), None).await;
    assert_eq!(r.status, 400, "{:?}", r.body);

    // Jobs listing: one per image, paged.
    let r = d.get(&format!("{S}/{id}/jobs?page_size=2")).await.body;
    assert_eq!((r["total"].as_i64(), r["hasMore"].as_bool()), (Some(3), Some(true)));
    assert_eq!(r["items"][0]["status"], JobStatus::Completed.as_str());
    cat.close().await;
}

both_backends!(restart_never_leaves_a_session_stuck, restart_recovery_body);
async fn restart_recovery_body(db: Db) {
    let mut d = TestDaemon::start(db, "", library).await;
    let root = d.root.display().to_string();
    let a = d.create(json!({"name": "a", "rootPath": root})).await;
    let b = d.create(json!({"name": "b", "rootPath": root})).await;
    assert_eq!(d.action(a, "start").await.status, 200);
    let cat = d.catalog().await;
    // A worker claims with a short lease and dies.
    let claimed = cat.claim_jobs("dead-worker", 2, std::time::Duration::from_millis(1)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    // Session b was interrupted mid-discovery.
    use pixdex::model::SessionStatus;
    assert!(cat.transition(b, SessionStatus::Pending, SessionStatus::Discovering, Default::default()).await.unwrap());
    cat.close().await;
    d.kill();
    d.respawn().await;

    let p = d.get(&format!("{S}/{a}/progress")).await.body;
    assert_eq!((p["status"].as_str(), p["jobsSummary"]["pending"].as_i64(), p["jobsSummary"]["running"].as_i64()), (Some("running"), Some(3), Some(0)));
    assert_eq!(d.session(b).await["status"], "pending", "discovering → pending at restart");
    assert_eq!(d.action(b, "start").await.status, 200, "and it can start again");

    // Statuses and timestamps persist across a clean restart too.
    assert_eq!(d.action(a, "pause").await.status, 200);
    let before = d.session(a).await;
    d.restart().await;
    let after = d.session(a).await;
    assert_eq!(after["status"], "paused");
    assert_eq!(before["pausedAt"], after["pausedAt"]);
    assert_eq!(before["startedAt"], after["startedAt"]);
}

both_backends!(scan_directory, scan_directory_body);
async fn scan_directory_body(db: Db) {
    let d = TestDaemon::start(db, "", library).await;
    let root = d.root.display().to_string();
    write_images(&d.root, ".", 1, "webp");
    // Listings read the catalog the watcher keeps: the new image counts once it has settled.
    let scan_all = || d.post("/api/v1/training/directories/scan", Some(json!({"rootPath": root.clone(), "recursive": true})));
    assert!(crate::harness::eventually(10, || async { scan_all().await.body["totalImages"] == 4 }).await);
    let r = scan_all().await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let names: Vec<(String, i64)> =
        r.body["subdirectories"].as_array().unwrap().iter().map(|s| (s["name"].as_str().unwrap().to_string(), s["imageCount"].as_i64().unwrap())).collect();
    assert_eq!(names, [(".".into(), 1), ("a".into(), 2), ("b".into(), 1), ("empty".into(), 0), ("notes".into(), 0)]);
    assert_eq!(r.body["totalImages"], 4);
    let r = d.post("/api/v1/training/directories/scan", Some(json!({"rootPath": root, "recursive": false}))).await;
    let b = r.body["subdirectories"].as_array().unwrap().iter().find(|s| s["name"] == "b").unwrap().clone();
    assert_eq!(b["imageCount"], 0, "not recursive: b holds its image one level down");
    let r = d.post("/api/v1/training/directories/scan", Some(json!({"rootPath": root, "extensions": ["txt"]}))).await;
    let notes = r.body["subdirectories"].as_array().unwrap().iter().find(|s| s["name"] == "notes").unwrap().clone();
    assert_eq!(notes["imageCount"], 1);
    assert_eq!(d.get(S).await.body["total"], 0, "a scan writes nothing");
    let (code, out, _) = d.ctl(&["scan-dir", &root]);
    assert_eq!(code, 0);
    assert!(out.contains("4 images under"), "{out}");
}

both_backends!(socket_and_tcp, socket_and_tcp_body);
async fn socket_and_tcp_body(db: Db) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut d = TestDaemon::start(db, "", library).await;
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode");
    // A second daemon on the same socket is refused, and leaves the first one serving.
    let out = std::process::Command::new(crate::harness::BIN).args(["daemon", "--config"]).arg(&d.config_path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listening"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(d.get("/api/v1/health").await.status, 200);

    // The TCP listener, when enabled, serves the same routes.
    d.stop();
    // `ctl health --wait` gives up with exit 2 when nothing answers in time, and otherwise
    // waits for a daemon that is still starting.
    let (code, _, err) = d.ctl(&["health", "--wait", "0.3"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
    let waiter = std::process::Command::new(crate::harness::BIN)
        .args(["ctl", "--socket"])
        .arg(&d.socket)
        .args(["health", "--wait", "30"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    d.daemon_extra = format!("listen = \"127.0.0.1:{port}\"");
    d.write_config("");
    d.respawn().await;
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("daemon ok"), "{out:?}");
    let tcp = pixdex::api::client::Client::new(pixdex::api::client::Endpoint::Tcp(format!("127.0.0.1:{port}")));
    let id = d.create(json!({"name": "over-socket", "rootPath": d.root.display().to_string()})).await;
    // TCP is token-protected by default: the token generated at first start is in data_dir.
    assert_eq!(tcp.get(&format!("{S}/{id}")).await.unwrap().status, 401);
    let token = std::fs::read_to_string(d.dir.path().join("data/token")).unwrap().trim().to_string();
    let tcp = tcp.with_token(Some(token));
    let r = tcp.get(&format!("{S}/{id}")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body["name"], "over-socket");
    let (code, out, err) =
        d.ctl(&["sessions", "create", "--name", "by-ctl", "--root", &d.root.display().to_string(), "--subdir", "a", "--session-config", "{\"k\": 1}"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("by-ctl") && out.contains("pending"), "{out}");
    let (code, out, _) = d.ctl(&["subdirs", "list", &(id + 1).to_string()]);
    assert_eq!(code, 0);
    assert!(out.contains("SELECTED") && out.contains(" a "), "{out}");
    let (code, out, _) = d.ctl(&["--json", "sessions", "show", &id.to_string()]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["id"], id);
}

/// Malformed requests of every kind, as a fuzzer or a confused client sends them: every answer
/// is a 4xx with a JSON body naming what was wrong — never a 5xx, never a hang — and the daemon
/// is healthy afterwards, with nothing created or changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_json() {
    let d = TestDaemon::start(Db::Sqlite, "", library).await;
    let root = d.root.display().to_string();
    let id = d.create(json!({"name": "keep", "rootPath": root})).await;
    let before = d.get(&format!("/api/v1/training/sessions/{id}")).await.body;
    // (This daemon runs without the model, so health is "degraded" for that one reason.)
    let health_before = d.get("/api/v1/health").await.body;
    let huge = "9".repeat(400);
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let long_name = "n".repeat(100_000);
    let cases: Vec<(&str, String, Option<Vec<u8>>)> = vec![
        // bodies that are not JSON, or not the JSON expected
        ("POST", "/api/v1/training/sessions".into(), Some(b"{".to_vec())),
        ("POST", "/api/v1/training/sessions".into(), Some(b"not json".to_vec())),
        ("POST", "/api/v1/training/sessions".into(), Some(b"[]".to_vec())),
        ("POST", "/api/v1/training/sessions".into(), Some(b"null".to_vec())),
        ("POST", "/api/v1/training/sessions".into(), Some(b"42".to_vec())),
        ("POST", "/api/v1/training/sessions".into(), Some(vec![0xff, 0xfe, 0x00, 0x7b])),
        ("POST", "/api/v1/training/sessions".into(), Some(deep.clone().into_bytes())),
        ("POST", "/api/v1/training/sessions".into(), Some(json!({"name": 5, "rootPath": root}).to_string().into_bytes())),
        ("POST", "/api/v1/training/sessions".into(), Some(json!({"name": "x"}).to_string().into_bytes())),
        ("POST", "/api/v1/training/sessions".into(), Some(json!({"name": "x", "rootPath": ""}).to_string().into_bytes())),
        ("POST", "/api/v1/training/sessions".into(), Some(json!({"name": "x", "rootPath": "relative/dir"}).to_string().into_bytes())),
        ("POST", "/api/v1/training/sessions".into(), Some(json!({"name": "x", "rootPath": "/etc"}).to_string().into_bytes())),
        ("POST", "/api/v1/training/sessions".into(), Some(json!({"name": "x", "rootPath": format!("{root}/\u{0}")}).to_string().into_bytes())),
        ("POST", "/api/v1/training/sessions".into(), Some(json!({"name": "", "rootPath": root}).to_string().into_bytes())),
        ("POST", "/api/v1/training/sessions".into(), Some(json!({"name": long_name, "rootPath": root}).to_string().into_bytes())),
        ("POST", "/api/v1/training/sessions".into(), Some(json!({"name": "x", "rootPath": root, "categoryId": "seven"}).to_string().into_bytes())),
        ("POST", "/api/v1/training/sessions".into(), Some(json!({"name": "x", "rootPath": root, "categoryId": 987654}).to_string().into_bytes())),
        ("POST", "/api/v1/training/sessions".into(), Some(json!({"name": "x", "rootPath": root, "subdirectories": [1, 2]}).to_string().into_bytes())),
        ("POST", "/api/v1/training/sessions".into(), Some(json!({"name": "x", "rootPath": root, "subdirectories": ["../../etc"]}).to_string().into_bytes())),
        ("POST", "/api/v1/training/sessions".into(), Some(json!({"name": "keep", "rootPath": root}).to_string().into_bytes())),
        // ids and numbers out of range
        ("GET", "/api/v1/training/sessions/abc".into(), None),
        ("GET", "/api/v1/training/sessions/-1".into(), None),
        ("GET", format!("/api/v1/training/sessions/{huge}"), None),
        ("GET", "/api/v1/training/sessions/99999999".into(), None),
        ("GET", "/api/v1/training/sessions?page=0".into(), None),
        ("GET", "/api/v1/training/sessions?page=-5".into(), None),
        ("GET", "/api/v1/training/sessions?page=9223372036854775807".into(), None),
        ("GET", "/api/v1/training/sessions?page_size=0".into(), None),
        ("GET", "/api/v1/training/sessions?page_size=1e9".into(), None),
        ("GET", format!("/api/v1/training/sessions?page={huge}"), None),
        ("GET", "/api/v1/training/sessions?status=bogus".into(), None),
        ("GET", format!("/api/v1/training/sessions/{id}/jobs?status=nope"), None),
        ("GET", format!("/api/v1/training/sessions/{id}/jobs?limit=-1"), None),
        ("GET", format!("/api/v1/training/sessions/{id}/jobs?offset=99999999999999999999"), None),
        // patches and actions that make no sense
        ("PATCH", format!("/api/v1/training/sessions/{id}"), Some(b"{\"name\": [}".to_vec())),
        ("PATCH", format!("/api/v1/training/sessions/{id}"), Some(json!({"live": "yes"}).to_string().into_bytes())),
        ("PATCH", format!("/api/v1/training/sessions/{id}/subdirectories"), Some(json!({"selections": "all"}).to_string().into_bytes())),
        ("PATCH", format!("/api/v1/training/sessions/{id}/subdirectories"), Some(json!([{"id": 424242, "selected": true}]).to_string().into_bytes())),
        ("POST", format!("/api/v1/training/sessions/{id}/pause"), None),
        ("POST", format!("/api/v1/training/sessions/{id}/restart?failed_only=maybe"), None),
        ("POST", "/api/v1/training/sessions/99999999/start".into(), None),
        // directories, scans, search, images
        ("GET", "/api/v1/training/directories?path=/etc".into(), None),
        ("GET", "/api/v1/training/directories?path=".into(), None),
        ("GET", format!("/api/v1/training/directories?path={root}/../../"), None),
        ("POST", "/api/v1/training/directories/scan".into(), Some(json!({"rootPath": 7}).to_string().into_bytes())),
        ("POST", "/api/v1/training/scan/incremental?directory=/proc".into(), None),
        ("GET", "/api/v1/training/directories/preview?path=%ZZ".into(), None),
        ("POST", "/api/v1/search".into(), Some(json!({"limit": 5}).to_string().into_bytes())),
        ("POST", "/api/v1/search".into(), Some(json!({"query": "cat", "limit": -3}).to_string().into_bytes())),
        ("POST", "/api/v1/search".into(), Some(json!({"query": "cat", "offset": 1e300}).to_string().into_bytes())),
        ("POST", "/api/v1/search/image".into(), Some(json!({"path": "/etc/passwd"}).to_string().into_bytes())),
        ("POST", "/api/v1/search/image".into(), Some(b"\x89PNG garbage".to_vec())),
        ("GET", "/api/v1/search/similar/notanumber".into(), None),
        ("GET", "/api/v1/images/0/thumbnail".into(), None),
        ("GET", "/api/v1/images/x/full".into(), None),
        ("POST", "/api/v1/images/thumbnails/batch".into(), Some(json!({"assetIds": "1,2"}).to_string().into_bytes())),
        ("GET", "/api/v1/assets?limit=abc".into(), None),
        ("POST", "/api/v1/categories".into(), Some(json!({"name": null}).to_string().into_bytes())),
        ("PATCH", "/api/v1/categories/1".into(), Some(json!({"color": 12}).to_string().into_bytes())),
        ("DELETE", "/api/v1/categories/1".into(), None),
        // no such route or method
        ("GET", "/api/v1/nope".into(), None),
        ("PUT", "/api/v1/training/sessions".into(), None),
        ("DELETE", "/api/v1/health".into(), None),
        ("GET", "/app/../../etc/passwd".into(), None),
    ];
    assert!(cases.len() >= 40, "the issue asks for at least 40 kinds");
    let mut bad = Vec::new();
    for (method, path, body) in &cases {
        let r = d.client.raw(method.parse().unwrap(), path, &[("content-type", "application/json")], body.clone().unwrap_or_default()).await.unwrap();
        let json_body = r.header("content-type").is_some_and(|c| c.starts_with("application/json")) && r.json().get("detail").is_some_and(|v| v.is_string());
        if !(400..500).contains(&r.status) || !json_body {
            bad.push(format!("{method} {} → {} {}", &path[..path.len().min(120)], r.status, String::from_utf8_lossy(&r.body[..r.body.len().min(200)])));
        }
    }
    assert!(bad.is_empty(), "{} of {} malformed requests were not answered 4xx + JSON detail:\n{}", bad.len(), cases.len(), bad.join("\n"));
    let h = d.get("/api/v1/health").await.body;
    assert_eq!((&h["status"], &h["catalogOk"], &h["problems"]), (&json!("ok"), &json!(true), &health_before["problems"]), "no new problem: {h}");
    let (sessions, _) = d.catalog().await.list_sessions(None, 100, 0).await.unwrap();
    assert_eq!(sessions.len(), 1, "nothing created: {sessions:?}");
    assert_eq!(d.get(&format!("/api/v1/training/sessions/{id}")).await.body, before, "nothing changed");
}
