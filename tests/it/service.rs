//! Running as a service: readiness and watchdog notifications to the service manager
//! (`NOTIFY_SOCKET`), JSON logs for log shippers, a control socket shared with a group, and the
//! metrics operators alert on. The Debian package and its unit are tested by
//! `scripts/test-deb` (installs it on the machine; `.ci/run` runs it).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{BIN, Db, TestDaemon, free_port};

/// The next notification whose text satisfies `want`, within `secs`; every one seen on the way
/// is returned too (in order).
fn wait_for(sock: &UnixDatagram, secs: u64, want: impl Fn(&str) -> bool) -> (Option<String>, Vec<String>) {
    let t = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while t.elapsed() < Duration::from_secs(secs) {
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(msg.clone());
        if want(&msg) {
            return (Some(msg), seen);
        }
    }
    (None, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_the_service_manager_ready_reloading_stopping_and_pings_the_watchdog() {
    let mut d = TestDaemon::prepare(Db::Sqlite, "", "", |_| {}).await;
    let path = d.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    d.env.push(("NOTIFY_SOCKET".into(), path.display().to_string()));
    d.env.push(("WATCHDOG_USEC".into(), "400000".into()));
    d.respawn().await;

    let lines = |m: &str| m.lines().map(str::to_string).collect::<Vec<_>>();
    let (ready, seen) = wait_for(&sock, 30, |m| m.lines().any(|l| l == "READY=1"));
    let ready = ready.unwrap_or_else(|| panic!("no READY=1 (saw {seen:?}):\n{}", d.log()));
    assert!(seen.len() == 1, "READY=1 is the first notification: {seen:?}");
    let status = format!("STATUS=ready: control socket {}, pipeline not running (see `pixdex ctl health`)", d.socket.display());
    assert_eq!(lines(&ready), ["READY=1".to_string(), status], "{ready:?}");
    // The socket answers by then (the harness saw it); the watchdog is pinged every half
    // WATCHDOG_USEC (200 ms): several pings in a second.
    let t = Instant::now();
    let (_, pings) = wait_for(&sock, 1, |_| false);
    let n = pings.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!((2..=10).contains(&n), "{n} watchdog pings in {:?}: {pings:?}", t.elapsed());

    // SIGHUP: reloading, then ready again.
    d.sighup();
    let (reloading, seen) = wait_for(&sock, 10, |m| m.starts_with("RELOADING=1"));
    let reloading = reloading.unwrap_or_else(|| panic!("no RELOADING=1 after SIGHUP: {seen:?}\n{}", d.log()));
    let usec: u64 = reloading.lines().find_map(|l| l.strip_prefix("MONOTONIC_USEC=")).and_then(|v| v.parse().ok()).expect("MONOTONIC_USEC");
    assert!(usec > 0, "{reloading:?}");
    let (again, seen) = wait_for(&sock, 10, |m| m.starts_with("READY=1"));
    assert!(again.is_some_and(|m| m.contains("STATUS=reloaded")), "{seen:?}");

    // SIGTERM: the daemon exits 0 (`stop` checks), having said it was stopping.
    d.stop();
    let (stopping, seen) = wait_for(&sock, 5, |m| m.starts_with("STOPPING=1"));
    assert!(stopping.is_some(), "no STOPPING=1 after SIGTERM: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_is_one_object_per_line() {
    let mut d = TestDaemon::prepare(Db::Sqlite, "", "", |_| {}).await;
    // The short variable (`log.format` in the file works the same; see config's unit tests).
    d.env.push(("PIXDEX_LOG_FORMAT".into(), "json".into()));
    d.daemon_extra = format!("listen = \"127.0.0.1:{}\"\n", free_port());
    d.write_config("");
    d.respawn().await;
    d.sighup();
    let log_has = |d: &TestDaemon, s: &str| d.log().contains(s);
    assert!(crate::harness::eventually(10, || async { log_has(&d, "SIGHUP: reconciling config sessions") }).await, "{}", d.log());
    d.stop();
    let log = d.log();
    assert!(!log.contains('\x1b'), "no colour codes:\n{log}");
    let events: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{log}")))
        .collect();
    assert!(events.len() > 5, "{log}");
    for e in &events {
        assert!(e["timestamp"].is_string() && e["level"].is_string() && e["target"].is_string() && e["message"].is_string(), "{e}");
    }
    // Fields sit at the top level, beside the message.
    let bound = events.iter().find(|e| e["message"] == "control socket bound").unwrap_or_else(|| panic!("{log}"));
    assert_eq!(bound["socket"], json!(d.socket.display().to_string()), "{bound}");
    assert_eq!(bound["level"], "INFO");
    // The login link is an event too (the text log prints it as a plain line).
    let link = events.iter().find(|e| e["message"] == "pixdex web app: open the login link").unwrap_or_else(|| panic!("{log}"));
    assert!(link["link"].as_str().unwrap().contains("/?token="), "{link}");
    assert!(events.iter().any(|e| e["message"] == "stopped"), "{log}");
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// `pixdex ctl ARGS` as uid/gid `id` (no supplementary groups): (exit code, stderr).
fn ctl_as(uid: u32, gid: u32, args: &[&str]) -> (i32, String) {
    let out = Command::new("setpriv")
        .args([&format!("--reuid={uid}"), &format!("--regid={gid}"), "--clear-groups", BIN, "ctl"])
        .args(args)
        .env_remove("PIXDEX_CONFIG")
        .output()
        .expect("setpriv");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_group_lets_its_members_in_and_ctl_says_how_to_get_access() {
    if !is_root() {
        eprintln!("SKIPPED service::socket_group_lets_its_members_in_and_ctl_says_how_to_get_access: needs root (other users' processes)");
        return;
    }
    const NOBODY: u32 = 65534;
    let mut d = TestDaemon::prepare(Db::Sqlite, "", "", |_| {}).await;
    d.daemon_extra = "socket_group = \"nogroup\"\n".into();
    d.write_config("");
    d.respawn().await;
    let m = std::fs::metadata(&d.socket).unwrap();
    assert_eq!((m.mode() & 0o777, m.gid()), (0o660, NOBODY), "socket mode and group");
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = d.socket.display().to_string();

    // A member of the group gets in.
    let (code, err) = ctl_as(NOBODY, NOBODY, &["--socket", &sock, "health"]);
    assert_eq!(code, 0, "{err}");
    // Anyone else is told which group to join, or to use sudo.
    let (code, err) = ctl_as(NOBODY, 4242, &["--socket", &sock, "health"]);
    assert_ne!(code, 0);
    assert!(err.contains("Permission denied") && err.contains("group `nogroup`") && err.contains("usermod -aG nogroup") && err.contains("sudo"), "{err}");
    // A config the user may not read says so, with the same advice.
    std::fs::set_permissions(&d.config_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, err) = ctl_as(NOBODY, NOBODY, &["--config", &d.config_path.display().to_string(), "health"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read the config") && err.contains("sudo"), "{err}");
    d.stop();

    // A group that does not exist stops the daemon with the key named.
    d.daemon_extra = "socket_group = \"no-such-group-pixdex\"\n".into();
    d.write_config("");
    let out = Command::new(BIN).args(["daemon", "--config"]).arg(&d.config_path).env_remove("RUST_LOG").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("daemon.socket_group") && err.contains("no such group"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_operators_alert_on_move() {
    let d = TestDaemon::start(Db::Sqlite, "", |root| crate::harness::write_images(root, "a", 2, "png")).await;
    let scrape = || async {
        let m = d.client.raw(hyper::Method::GET, "/metrics", &[], vec![]).await.expect("request");
        assert_eq!(m.status, 200);
        String::from_utf8(m.body.to_vec()).unwrap()
    };
    let sample = |text: &str, series: &str| -> f64 {
        let line = text.lines().find(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series)).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    };
    // The start-up reconcile has run once the watcher knows the two images.
    assert!(crate::harness::eventually(10, || async { sample(&scrape().await, "pixdex_catalog_assets") == 2.0 }).await);
    let before = scrape().await;
    assert!(sample(&before, "pixdex_watcher_reconciles_total") >= 1.0, "{before}");
    assert!(sample(&before, "pixdex_watcher_last_reconcile_seconds") >= 0.0, "{before}");
    assert_eq!(sample(&before, "pixdex_watcher_overflows_total"), 0.0);
    assert_eq!(sample(&before, "pixdex_watcher_unavailable_folders"), 0.0);
    for cause in ["file", "model", "vector_store", "crash", "attempts"] {
        assert_eq!(sample(&before, &format!("pixdex_jobs_failed_total{{cause=\"{cause}\"}}")), 0.0, "{before}");
    }
    for store in ["catalog", "vector_store"] {
        assert_eq!(sample(&before, &format!("pixdex_pipeline_waits_total{{store=\"{store}\"}}")), 0.0, "{before}");
        assert_eq!(sample(&before, &format!("pixdex_pipeline_wait_seconds_total{{store=\"{store}\"}}")), 0.0, "{before}");
    }
    assert_eq!(sample(&before, "pixdex_search_duration_seconds_count{kind=\"words\"}"), 0.0, "{before}");
    assert!(before.contains("# TYPE pixdex_search_duration_seconds histogram\n"), "{before}");

    // A search by words (answered or not: this daemon has no model) moves the histogram.
    let _ = d.post("/api/v1/search", Some(json!({"query": "cat"}))).await;
    let after = scrape().await;
    assert_eq!(sample(&after, "pixdex_search_duration_seconds_count{kind=\"words\"}"), 1.0, "{after}");
    assert_eq!(sample(&after, "pixdex_search_duration_seconds_bucket{kind=\"words\",le=\"+Inf\"}"), 1.0, "{after}");
    assert!(sample(&after, "pixdex_search_duration_seconds_sum{kind=\"words\"}") > 0.0, "{after}");
    assert_eq!(sample(&after, "pixdex_search_duration_seconds_count{kind=\"image\"}"), 0.0, "{after}");
}
