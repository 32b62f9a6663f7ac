//! Faults injected for real (no mocks): a Qdrant server killed mid-session and brought back.
//! Needs the Qdrant binary (`../shared/bin/qdrant`, or `QDRANT_BIN`); `.ci/run` sets
//! `PIXDEX_REQUIRE_QDRANT=1` so the test cannot skip there.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::harness::{Db, TestDaemon, eventually, model_toml, noise_png, repo_dir};

struct Qdrant {
    dir: tempfile::TempDir,
    pid: u32,
    http: String,
    grpc: String,
}

impl Qdrant {
    fn start(dir: tempfile::TempDir, ports: Option<(&str, &str)>) -> Qdrant {
        let mut cmd = Command::new(repo_dir().join("scripts/qdrant-local"));
        cmd.arg(dir.path());
        if let Some((h, g)) = ports {
            cmd.env("QDRANT_HTTP_PORT", h).env("QDRANT_GRPC_PORT", g);
        }
        let out = cmd.output().expect("run scripts/qdrant-local");
        assert!(out.status.success(), "qdrant did not start: {}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let f: Vec<&str> = line.split_whitespace().collect();
        Qdrant { pid: f[0].parse().unwrap(), http: f[1].to_string(), grpc: f[2].to_string(), dir }
    }

    fn kill(&self) {
        let _ = Command::new("kill").args(["-9", &self.pid.to_string()]).status();
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn qdrant_available() -> bool {
    let bin = std::env::var("QDRANT_BIN").map(std::path::PathBuf::from).unwrap_or_else(|_| repo_dir().join("../shared/bin/qdrant"));
    if bin.exists() {
        return true;
    }
    if std::env::var("PIXDEX_REQUIRE_QDRANT").is_ok_and(|v| v == "1") {
        panic!("PIXDEX_REQUIRE_QDRANT=1 but there is no Qdrant server binary at {}", bin.display());
    }
    eprintln!("SKIPPED faults::qdrant_outage: no Qdrant server binary at {} (set QDRANT_BIN)", bin.display());
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_outage_mid_session_loses_nothing() {
    if !qdrant_available() {
        return;
    }
    let q = Qdrant::start(tempfile::tempdir().unwrap(), None);
    let vectors = format!("\n[vectors]\nbackend = \"qdrant\"\nurl = \"http://127.0.0.1:{}\"\n", q.grpc);
    const N: usize = 48;
    let d = TestDaemon::start(Db::Sqlite, &(model_toml(4) + &vectors), |root| {
        for i in 0..N {
            noise_png(&root.join(format!("shots/n{i:02}.png")), 128, 96, i as u32);
        }
    })
    .await;
    let id = d.create(json!({"name": "outage", "rootPath": d.root.display().to_string()})).await;
    assert_eq!(d.action(id, "start").await.status, 200);
    // Cut the store once the first vectors are written.
    assert!(eventually(60, || async { d.session(id).await["processedImages"].as_i64().unwrap_or(0) >= 4 }).await, "{}", d.log());
    q.kill();
    let during = d.session(id).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let s = d.session(id).await;
    assert_eq!(s["status"], "running", "an outage must not end the session: {s}");
    assert_eq!(s["failedImages"], 0, "an outage must fail no job: {s}");
    assert!(s["processedImages"].as_i64() < Some(N as i64), "nothing completes while the store is down: before {during}, now {s}");
    assert!(d.log().contains("vector store unavailable; retrying"), "{}", d.log());
    // Back on the same ports and storage: the session completes, nothing lost, nothing failed.
    let q2 = Qdrant::start(q.dir, Some((&q.http, &q.grpc)));
    let done = eventually(120, || async { d.session(id).await["status"] == "completed" }).await;
    let s = d.session(id).await;
    assert!(done, "session did not complete after the store came back: {s}\n{}", d.log());
    assert_eq!((s["processedImages"].as_i64(), s["failedImages"].as_i64()), (Some(N as i64), Some(0)), "{s}");
    let p = d.get("/api/v1/training/pipeline").await.body;
    assert_eq!(p["points"], N, "every image's vector is in the store, once: {p}");
    q2.kill();
}
