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
        Self::start_env(dir, ports, &[])
    }

    /// With extra environment for scripts/qdrant-local (cluster mode: QDRANT_P2P_PORT,
    /// QDRANT_BOOTSTRAP).
    fn start_env(dir: tempfile::TempDir, ports: Option<(&str, &str)>, env: &[(&str, String)]) -> Qdrant {
        let mut cmd = Command::new(repo_dir().join("scripts/qdrant-local"));
        cmd.arg(dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
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

/// Leases held per daemon right now (`lease_owner` → running jobs), read straight from the
/// shared PostgreSQL catalog.
async fn leases_by_owner(url: &str) -> std::collections::HashMap<String, i64> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let rows: Vec<(Option<String>, i64)> =
        sqlx::query_as("SELECT lease_owner, COUNT(*) FROM training_jobs WHERE status = 'running' GROUP BY lease_owner").fetch_all(&mut c).await.unwrap();
    c.close().await.ok();
    rows.into_iter().filter_map(|(o, n)| o.map(|o| (o, n))).collect()
}

/// Two (and three) daemons on one PostgreSQL catalog and one Qdrant server share a session;
/// one is killed (kill -9) while it holds leases. The survivors take its jobs back once the
/// leases run out (their reaper, no restart of anyone) and finish: every image embedded and
/// stored exactly once, none failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_fail_over() {
    daemons_fail_over(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_fail_over() {
    daemons_fail_over(3).await;
}

async fn daemons_fail_over(n: usize) {
    if !qdrant_available() || crate::harness::pg_base().is_none() {
        eprintln!("SKIPPED faults::daemons_fail_over({n}): needs a Qdrant server binary and PIXDEX_TEST_POSTGRES_URL");
        return;
    }
    let q = Qdrant::start(tempfile::tempdir().unwrap(), None);
    // Short leases so the failover is quick: renewed every second while held, reaped a
    // quarter lease after they run out.
    let toml = format!("{}lease_secs = 3\n\n[vectors]\nbackend = \"qdrant\"\nurl = \"http://127.0.0.1:{}\"\n", model_toml(4), q.grpc);
    // Enough work that no two daemons can lease it all at once (each holds up to ~35 jobs in
    // its queues), so every daemon gets some whatever the machine's load.
    const N: usize = 300;
    let mut a = TestDaemon::start(Db::Postgres, &toml, |root| {
        for i in 0..N {
            noise_png(&root.join(format!("shared/n{i:03}.png")), 160, 120, i as u32 + 7);
        }
    })
    .await;
    let mut peers = Vec::new();
    for _ in 1..n {
        peers.push(a.peer(&toml).await);
    }
    let ida = a.owner();
    let ids: Vec<String> = peers.iter().map(|p| p.owner()).collect();
    assert!(!ida.is_empty() && !ids.contains(&ida), "one owner id per daemon: {ida:?} {ids:?}");
    let id = a.create(json!({"name": "shared", "rootPath": a.root.display().to_string()})).await;
    assert_eq!(a.action(id, "start").await.status, 200);
    // All work on it; kill A while it holds leases, once every peer has claimed some.
    let mut seen = std::collections::HashSet::new();
    let mut held_by_a = 0;
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(90) {
        let l = leases_by_owner(&a.catalog_url).await;
        seen.extend(ids.iter().filter(|i| l.contains_key(*i)).cloned());
        held_by_a = l.get(&ida).copied().unwrap_or(0);
        let done = a.session(id).await["processedImages"].as_i64().unwrap_or(0);
        if held_by_a > 0 && seen.len() == ids.len() && done >= 12 {
            break;
        }
        if done >= N as i64 {
            break; // finished before every daemon was seen: the assertion below says so
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let b = &peers[0];
    assert!(
        held_by_a > 0 && seen.len() == ids.len(),
        "every daemon should hold leases mid-session (A: {held_by_a}, peers seen: {seen:?})\n{}\n--- B ---\n{}",
        a.log(),
        b.log()
    );
    a.kill();
    let at_kill = b.session(id).await;
    // The survivors finish alone, within lease + reaper time of A's leftovers.
    let done = eventually(120, || async { b.session(id).await["status"] == "completed" }).await;
    let s = b.session(id).await;
    assert!(done, "the survivors did not finish: {s}\n{}", b.log());
    assert_eq!((s["processedImages"].as_i64(), s["failedImages"].as_i64(), s["totalImages"].as_i64()), (Some(N as i64), Some(0), Some(N as i64)), "{s}");
    assert!(peers.iter().any(|p| p.log().contains("expired leases returned to pending")), "a survivor's reaper took A's jobs back:\n{}", b.log());
    let p = b.get("/api/v1/training/pipeline").await.body;
    assert_eq!(p["points"], N, "each image stored once: {p}");
    // Exactly once: no job completed twice (a completion needs the claim's fencing token), and
    // only what A held was claimed a second time.
    let cat = b.catalog().await;
    let (jobs, total) = cat.jobs(id, None, 1000, 0).await.unwrap();
    assert_eq!(total, N as i64);
    assert!(jobs.iter().all(|j| j.status == pixdex::model::JobStatus::Completed));
    let retried = jobs.iter().filter(|j| j.attempts > 1).count() as i64;
    assert!(retried >= 1 && retried <= held_by_a + 8, "A's {held_by_a} leased jobs were redone ({retried} retried); at kill: {at_kill}");
    cat.close().await;
    q.kill();
}

/// A 3-node Qdrant cluster on loopback (cluster mode, 3 shards, replication factor 2); the node
/// pixdex talks to — the first one, the Raft leader — is killed (kill -9) mid-session. pixdex
/// moves its requests to the next node, the cluster keeps a replica of every shard, and the
/// session completes: nothing lost, nothing failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_cluster_node_lost_mid_session() {
    if !qdrant_available() {
        return;
    }
    let p2p: Vec<u16> = (0..3).map(|_| crate::harness::free_port()).collect();
    let mut nodes = Vec::new();
    for (i, port) in p2p.iter().enumerate() {
        let mut env = vec![("QDRANT_P2P_PORT", port.to_string())];
        if i > 0 {
            env.push(("QDRANT_BOOTSTRAP", format!("http://127.0.0.1:{}", p2p[0])));
        }
        nodes.push(Qdrant::start_env(tempfile::tempdir().unwrap(), None, &env));
    }
    let cluster_url = format!("http://127.0.0.1:{}/cluster", nodes[0].http);
    let peers = || async {
        let out = Command::new("curl").args(["-sf", &cluster_url]).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok().and_then(|v| v["result"]["peers"].as_object().map(|p| p.len())).unwrap_or(0)
    };
    assert!(eventually(30, || async { peers().await == 3 }).await, "the cluster did not form");
    let urls: Vec<String> = nodes.iter().map(|n| format!("http://127.0.0.1:{}", n.grpc)).collect();
    let toml = format!("{}\n[vectors]\nbackend = \"qdrant\"\nurl = \"{}\"\nreplication_factor = 2\nshard_number = 3\n", model_toml(4), urls.join(", "));
    const N: usize = 48;
    let d = TestDaemon::start(Db::Sqlite, &toml, |root| {
        for i in 0..N {
            noise_png(&root.join(format!("c/n{i:02}.png")), 256, 192, i as u32 + 100);
        }
    })
    .await;
    let id = d.create(json!({"name": "cluster", "rootPath": d.root.display().to_string()})).await;
    assert_eq!(d.action(id, "start").await.status, 200);
    assert!(eventually(60, || async { d.session(id).await["processedImages"].as_i64().unwrap_or(0) >= 8 }).await, "{}", d.log());
    nodes[0].kill();
    let done = eventually(180, || async { d.session(id).await["status"] == "completed" }).await;
    let s = d.session(id).await;
    assert!(done, "session did not complete after losing a node: {s}\n{}", d.log());
    assert_eq!((s["processedImages"].as_i64(), s["failedImages"].as_i64()), (Some(N as i64), Some(0)), "{s}\n{}", d.log());
    assert!(d.log().contains("trying the next one"), "requests moved to another node:\n{}", d.log());
    let p = d.get("/api/v1/training/pipeline").await.body;
    assert_eq!(p["points"], N, "every vector is in the cluster, once: {p}");
    // Search still answers from the surviving nodes.
    let r = d.get("/api/v1/search/similar/1?limit=5").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["results"].as_array().is_some_and(|a| !a.is_empty()), "{:?}", r.body);
    for n in &nodes[1..] {
        n.kill();
    }
}

/// The Qdrant server is down when the daemon starts: the daemon starts anyway and says so
/// (health degraded, naming the store; a session's progress says what it waits for; search
/// answers 503), nothing fails meanwhile, and when the server comes up the session completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_store_down_at_start_waits() {
    if !qdrant_available() {
        return;
    }
    let (http, grpc) = (crate::harness::free_port().to_string(), crate::harness::free_port().to_string());
    let toml = format!("{}\n[vectors]\nbackend = \"qdrant\"\nurl = \"http://127.0.0.1:{grpc}\"\n", model_toml(4));
    const N: usize = 8;
    let d = TestDaemon::start(Db::Sqlite, &toml, |root| {
        for i in 0..N {
            noise_png(&root.join(format!("w/n{i:02}.png")), 96, 72, i as u32 + 40);
        }
    })
    .await;
    let h = d.get("/api/v1/health").await.body;
    assert_eq!(h["state"], "degraded", "{h}");
    assert!(h["problems"].to_string().contains("vector store"), "{h}");
    let id = d.create(json!({"name": "waits", "rootPath": d.root.display().to_string()})).await;
    assert_eq!(d.action(id, "start").await.status, 200);
    let progress = || async { d.get(&format!("/api/v1/training/sessions/{id}/progress")).await.body };
    assert!(
        eventually(30, || async { progress().await["waitingFor"].as_str().is_some_and(|w| w.contains("vector store")) }).await,
        "{}\n{}",
        progress().await,
        d.log()
    );
    let r = d.client.raw("GET".parse().unwrap(), "/api/v1/search/similar/1", &[], vec![]).await.unwrap();
    assert_eq!((r.status, r.header("retry-after")), (503, Some("5")), "transient: 503 + Retry-After: {:?}", r.json());
    let s = d.session(id).await;
    assert_eq!((s["status"].as_str(), s["failedImages"].as_i64()), (Some("running"), Some(0)), "{s}");
    // The server comes up on the configured port: the waiting writes go through.
    let q = Qdrant::start(tempfile::tempdir().unwrap(), Some((&http, &grpc)));
    let done = eventually(120, || async { d.session(id).await["status"] == "completed" }).await;
    let s = d.session(id).await;
    assert!(done, "{s}\n{}", d.log());
    assert_eq!((s["processedImages"].as_i64(), s["failedImages"].as_i64()), (Some(N as i64), Some(0)), "{s}");
    assert_eq!(d.get("/api/v1/training/pipeline").await.body["points"], N);
    assert_eq!(d.get("/api/v1/health").await.body["state"], "healthy");
    assert!(progress().await.get("waitingFor").is_none());
    q.kill();
}

/// The data directory fills up (ENOSPC, on a small tmpfs) mid-session: writing pauses and
/// retries — no job fails — and once space returns the session completes with every vector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_pauses_then_resumes() {
    const N: usize = 120;
    // 16 MB kept free on a 64 MB disk.
    let toml = format!("{}\n[vectors]\nmin_free_mb = 16\n", model_toml(4));
    let mut d = TestDaemon::prepare(Db::Sqlite, &toml, "", |root| {
        for i in 0..N {
            noise_png(&root.join(format!("f/n{i:02}.png")), 96, 72, i as u32 + 200);
        }
    })
    .await;
    let data = d.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"]).arg(&data).status().is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED faults::disk_full_pauses_then_resumes: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(data.clone());
    d.respawn().await;
    let id = d.create(json!({"name": "full", "rootPath": d.root.display().to_string()})).await;
    assert_eq!(d.action(id, "start").await.status, 200);
    assert!(eventually(60, || async { d.session(id).await["processedImages"].as_i64().unwrap_or(0) >= 4 }).await, "{}", d.log());
    // Fill the disk to the last byte.
    let filler = data.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(d.client.get("/api/v1/health").await.is_ok(), "the daemon died on a full disk:\n{}", d.log());
    let stuck = d.session(id).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = d.session(id).await;
    assert_eq!((s["status"].as_str(), s["failedImages"].as_i64()), (Some("running"), Some(0)), "a full disk must fail nothing: {s}\n{}", d.log());
    assert!(s["processedImages"].as_i64() < Some(N as i64), "stopped mid-run by the full disk: {s}");
    assert_eq!(s["processedImages"], stuck["processedImages"], "nothing completes while the disk is full");
    assert!(d.log().contains("disk almost full") && d.log().contains("vectors.min_free_mb"), "the wait names the cause:\n{}", d.log());
    let w = d.get(&format!("/api/v1/training/sessions/{id}/progress")).await.body;
    assert!(w["waitingFor"].as_str().is_some_and(|w| w.contains("disk almost full")), "{w}");
    std::fs::remove_file(&filler).unwrap();
    let done = eventually(120, || async { d.session(id).await["status"] == "completed" }).await;
    let s = d.session(id).await;
    assert!(done, "{s}\n{}", d.log());
    assert_eq!((s["processedImages"].as_i64(), s["failedImages"].as_i64()), (Some(N as i64), Some(0)), "{s}");
    assert_eq!(d.get("/api/v1/training/pipeline").await.body["points"], N);
    d.stop();
}
