//! Admission: a start with nothing to index is refused with 422 and an explanation of which
//! case it is and what to do; validate gives the same verdict without changing anything.

use serde_json::{Value, json};

use crate::both_backends;
use crate::harness::{Db, TestDaemon, write_images};

const S: &str = "/api/v1/training/sessions";

fn library(root: &std::path::Path) {
    write_images(root, "photos", 3, "jpg");
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::write(root.join("docs/a.pdf"), "x").unwrap();
    std::fs::write(root.join("docs/b.tiff"), "x").unwrap();
    std::fs::create_dir_all(root.join("bare/inner")).unwrap();
}

/// Start must be refused with 422; the session stays pending with the reason, no job exists,
/// and validate reports the same diagnostics.
async fn refused(d: &TestDaemon, id: i64, words: &str) -> Value {
    let r = d.action(id, "start").await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    let detail = r.detail();
    assert!(detail.contains(words), "detail {detail:?} should say {words:?}");
    assert_ne!(detail, format!("No assets found for session {id}"));
    let diag = r.body["diagnostics"].clone();
    for k in
        ["totalSubdirectories", "selectedSubdirectories", "selectedWithImages", "imagesFound", "unsupportedFilesFound", "supportedExtensions", "suggestion"]
    {
        assert!(!diag[k].is_null(), "diagnostics.{k} missing: {diag:?}");
    }
    assert!(!diag["suggestion"].as_str().unwrap().is_empty());
    let s = d.session(id).await;
    assert_eq!(s["status"], "pending");
    assert_eq!(s["pendingReason"].as_str(), Some(detail.as_str()));
    assert_eq!(s["totalImages"], 0);
    let v = d.action(id, "validate").await;
    assert_eq!(v.status, 200);
    assert_eq!(v.body["canStart"], false);
    assert_eq!(v.body["diagnostics"], diag);
    diag
}

both_backends!(four_cases, four_cases_body);
async fn four_cases_body(db: Db) {
    let d = TestDaemon::start(db, "", library).await;
    let root = d.root.display().to_string();

    // 1. No subdirectories: a root whose folders hold no images.
    let id = d.create(json!({"name": "none", "rootPath": format!("{root}/bare")})).await;
    let diag = refused(&d, id, "no subdirectories").await;
    assert_eq!(diag["totalSubdirectories"], 0);

    // 2. None selected.
    let id = d.create(json!({"name": "unselected", "rootPath": root})).await;
    let subs = d.get(&format!("{S}/{id}/subdirectories")).await.body;
    let sel: Vec<Value> = subs.as_array().unwrap().iter().map(|s| json!({"id": s["id"], "selected": false})).collect();
    assert_eq!(d.patch(&format!("{S}/{id}/subdirectories"), json!(sel)).await.status, 200);
    let diag = refused(&d, id, "none is selected").await;
    assert_eq!((diag["totalSubdirectories"].as_i64(), diag["selectedSubdirectories"].as_i64()), (Some(1), Some(0)));

    // 3. Selected ones empty.
    let id = d.create(json!({"name": "empty", "rootPath": root, "subdirectories": ["empty"]})).await;
    let diag = refused(&d, id, "empty").await;
    assert_eq!((diag["selectedSubdirectories"].as_i64(), diag["imagesFound"].as_i64(), diag["unsupportedFilesFound"].as_i64()), (Some(1), Some(0), Some(0)));

    // 4. Only unsupported files.
    let id = d.create(json!({"name": "docs", "rootPath": root, "subdirectories": ["docs"]})).await;
    let diag = refused(&d, id, "supported extension").await;
    assert_eq!(diag["unsupportedFilesFound"], 2);
    assert_eq!(diag["supportedExtensions"], json!(["jpg", "jpeg", "png", "webp"]));
    assert!(diag["suggestion"].as_str().unwrap().contains("library.extensions"));

    // ctl prints the explanation readably and exits non-zero.
    let (code, out, err) = d.ctl(&["sessions", "start", &id.to_string()]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("error (422)") && err.contains("supported extension") && err.contains("what to do"), "{err}");
    assert!(err.contains("unsupported files: 2"), "{err}");
    let (code, out, _) = d.ctl(&["sessions", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("supported extension"), "list shows why sessions wait: {out}");

    // An admissible session: validate says so and changes nothing; start then creates the jobs.
    let ok = d.create(json!({"name": "ok", "rootPath": root})).await;
    let v = d.action(ok, "validate").await;
    assert_eq!(v.body["canStart"], true, "{:?}", v.body);
    assert_eq!(v.body["diagnostics"]["imagesFound"], 3);
    assert_eq!(d.session(ok).await["status"], "pending");
    assert_eq!(d.get(&format!("{S}/{ok}/jobs")).await.body["total"], 0);
    assert_eq!(d.action(ok, "start").await.status, 200);
    assert_eq!(d.get(&format!("{S}/{ok}/jobs")).await.body["total"], 3);

    // Case 1 resolves itself once images appear: a start rediscovers subdirectories.
    write_images(&d.root, "bare/inner", 2, "png");
    let none = d.get(&format!("{S}?status=pending&page_size=100")).await.body["items"].as_array().unwrap().iter().find(|s| s["name"] == "none").unwrap()["id"]
        .as_i64()
        .unwrap();
    let r = d.action(none, "start").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(d.session(none).await["pendingReason"].is_null());
}
