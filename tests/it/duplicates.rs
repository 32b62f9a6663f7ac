//! Duplicates through the real daemon: byte-identical files are embedded once (the copy's job
//! is skipped with the reason, its asset shares the first copy's vector), near-duplicates
//! (a resized, re-encoded copy) are grouped in search results and listed per folder.

use std::path::Path;

use serde_json::{Value, json};

use crate::harness::{Db, TestDaemon, model_toml, sample};

fn library(root: &Path) {
    let photos = root.join("photos");
    let copies = root.join("copies");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::create_dir_all(&copies).unwrap();
    for name in ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"] {
        std::fs::copy(sample(name), photos.join(name)).unwrap();
    }
    // Byte-identical copies under another name and folder.
    std::fs::copy(sample("chelsea.png"), copies.join("cat-copy.png")).unwrap();
    std::fs::copy(sample("chelsea.png"), copies.join("cat-copy-2.png")).unwrap();
    // A near-duplicate: resized and re-encoded as JPEG.
    let coffee = image::open(sample("coffee.png")).unwrap();
    coffee.resize(320, 213, image::imageops::FilterType::Triangle).save(photos.join("coffee-small.jpg")).unwrap();
}

crate::both_backends!(identical_content_is_embedded_once, identical_content_body);
async fn identical_content_body(db: Db) {
    let d = TestDaemon::start(db, &model_toml(8), library).await;
    let root = d.root.display().to_string();
    let id = d.create(json!({"name": "dups", "rootPath": root})).await;
    assert_eq!(d.action(id, "start").await.status, 200);
    let s = crate::pipeline::wait_status(&d, id, "completed", 180).await;
    assert_eq!(s["totalImages"], 7, "{s}");

    // Exactly one copy of the cat's bytes was embedded; the two others say whose vector they share.
    let jobs = d.get(&format!("/api/v1/training/sessions/{id}/jobs?page_size=50")).await.body;
    let jobs = jobs["jobs"].as_array().or_else(|| jobs["items"].as_array()).cloned().unwrap_or_default();
    let skipped: Vec<&Value> = jobs.iter().filter(|j| j["status"] == "skipped").collect();
    assert_eq!(skipped.len(), 2, "{}", serde_json::to_string_pretty(&jobs).unwrap());
    let cats = ["photos/chelsea.png", "copies/cat-copy.png", "copies/cat-copy-2.png"];
    for j in &skipped {
        let reason = j["skipReason"].as_str().unwrap_or_default();
        assert!(reason.contains("identical to") && cats.iter().any(|c| reason.contains(c)), "{j}");
    }
    let completed = jobs.iter().filter(|j| j["status"] == "completed").count();
    assert_eq!(completed, 5, "{jobs:?}");

    // Every copy is searchable under its own path (one vector each), folded into one card.
    let r = d.post("/api/v1/search/image", Some(json!({"path": format!("{root}/photos/chelsea.png"), "limit": 10}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let top = &r.body["results"][0];
    let folded: Vec<&str> = top["similarCopies"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(folded.len(), 2, "{top}");
    assert!(top["similarCopies"].as_array().unwrap().iter().all(|c| c["identical"] == true), "{top}");
    let mut all: Vec<String> = folded.iter().map(|s| s.to_string()).collect();
    all.push(top["path"].as_str().unwrap().to_string());
    for c in cats {
        assert!(all.iter().any(|p| p.ends_with(c)), "{c} missing from {all:?}");
    }
    // The resized coffee is folded into the original as a near copy.
    let r = d.post("/api/v1/search/image", Some(json!({"path": format!("{root}/photos/coffee.png"), "limit": 10}))).await.body;
    let top = &r["results"][0];
    assert!(top["path"].as_str().unwrap().ends_with("coffee.png"), "{r}");
    let near = top["similarCopies"].as_array().unwrap();
    assert!(near.iter().any(|c| c["path"].as_str().unwrap().ends_with("coffee-small.jpg") && c["identical"] == false), "{r}");

    // The library's duplicate listing: two groups, threshold stated; per folder too.
    let dup = d.get("/api/v1/duplicates").await;
    assert_eq!(dup.status, 200, "{:?}", dup.body);
    assert_eq!(dup.body["nearThresholdBits"], 6);
    let groups = dup.body["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{:?}", dup.body);
    assert_eq!(dup.body["copies"], 3);
    let under = d.get(&format!("/api/v1/duplicates?path={root}/photos")).await.body;
    assert_eq!(under["groups"].as_array().unwrap().len(), 1, "{under}");
    let outside = d.get("/api/v1/duplicates?path=/etc").await;
    assert_eq!(outside.status, 403, "{:?}", outside.body);

    // A copy that arrives later finds the indexed one through the catalog: not embedded either.
    std::fs::create_dir_all(d.root.join("later")).unwrap();
    std::fs::copy(sample("coffee.png"), d.root.join("later/espresso-again.png")).unwrap();
    let later = d.create(json!({"name": "later", "rootPath": format!("{root}/later")})).await;
    let ok = crate::harness::eventually(30, || async { d.action(later, "start").await.status == 200 }).await;
    assert!(ok, "the later session never started");
    crate::pipeline::wait_status(&d, later, "completed", 60).await;
    let jobs = d.get(&format!("/api/v1/training/sessions/{later}/jobs")).await.body;
    let j = &jobs["items"][0];
    assert_eq!(j["status"], "skipped", "{jobs}");
    assert!(j["skipReason"].as_str().unwrap().contains("photos/coffee.png"), "{jobs}");
}
