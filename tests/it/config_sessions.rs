//! Sessions declared in the config: reconciled at start and on SIGHUP, matched by name, never
//! duplicated; an autoStart session waits with its reason until images appear.

use serde_json::Value;

use crate::both_backends;
use crate::harness::{Db, TestDaemon, eventually, write_images};

const S: &str = "/api/v1/training/sessions";

const SESSIONS: &str = r#"
[[sessions]]
name = "everything"
root = "$ROOT"
autoStart = true
categoryId = 3

[[sessions]]
name = "picked"
root = "$ROOT"
subdirectories = ["cats", "dogs", "later"]
selected = ["later"]
auto_start = true
"#;

async fn by_name(d: &TestDaemon) -> Vec<(String, i64, String)> {
    let r = d.get(&format!("{S}?page_size=100")).await;
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["id"].as_i64().unwrap(), s["status"].as_str().unwrap().to_string()))
        .collect()
}

async fn subdirs(d: &TestDaemon, id: i64) -> Vec<(String, bool)> {
    let r = d.get(&format!("{S}/{id}/subdirectories")).await;
    r.body.as_array().unwrap().iter().map(|s| (s["name"].as_str().unwrap().to_string(), s["selected"].as_bool().unwrap())).collect()
}

both_backends!(reconciliation, reconciliation_body);
async fn reconciliation_body(db: Db) {
    let mut d = TestDaemon::start(db, SESSIONS, |root| {
        write_images(root, "cats", 2, "jpg");
        write_images(root, "dogs", 1, "png");
        std::fs::create_dir_all(root.join("later")).unwrap();
    })
    .await;

    let sessions = by_name(&d).await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let (_, every, st) = sessions.iter().find(|s| s.0 == "everything").unwrap().clone();
    assert_eq!(st, "running", "autoStart with images starts at once");
    let s = d.session(every).await;
    assert_eq!((s["source"].as_str(), s["categoryId"].as_i64(), s["totalImages"].as_i64()), (Some("config"), Some(3), Some(3)));
    let (_, picked, st) = sessions.iter().find(|s| s.0 == "picked").unwrap().clone();
    assert_eq!(st, "pending", "its only selected subdirectory is empty");
    let s = d.session(picked).await;
    assert!(s["pendingReason"].as_str().unwrap().contains("empty"), "{s:?}");
    assert_eq!(subdirs(&d, picked).await, [("cats".into(), false), ("dogs".into(), false), ("later".into(), true)]);

    // Restart: same sessions, same ids, no duplicated subdirectories.
    d.restart().await;
    let again = by_name(&d).await;
    assert_eq!(again.iter().map(|s| (s.0.clone(), s.1)).collect::<Vec<_>>(), sessions.iter().map(|s| (s.0.clone(), s.1)).collect::<Vec<_>>());
    assert_eq!(subdirs(&d, picked).await.len(), 3);
    assert_eq!(d.session(every).await["totalImages"], 3, "a restart does not queue jobs twice");

    // SIGHUP: the selection follows the file; a new session appears.
    d.write_config(&(SESSIONS.replace("selected = [\"later\"]", "selected = [\"later\", \"dogs\"]") + "\n[[sessions]]\nname = \"third\"\nroot = \"$ROOT\"\n"));
    d.sighup();
    assert!(eventually(10, || async { by_name(&d).await.len() == 3 }).await, "SIGHUP adds the new session: {:?}", by_name(&d).await);
    assert!(eventually(10, || async { subdirs(&d, picked).await.contains(&("dogs".into(), true)) }).await);
    // With dogs selected, the waiting session became admissible and the retry loop starts it.
    assert!(eventually(10, || async { d.session(picked).await["status"] == "running" }).await, "{:?}", d.session(picked).await);
    let third: Value = d.get(&format!("{S}?page_size=100")).await.body["items"][2].clone();
    assert_eq!((third["name"].as_str(), third["status"].as_str()), (Some("third"), Some("pending")), "not autoStart: waits for a start");
}

both_backends!(autostart_waits_for_images, autostart_waits_body);
async fn autostart_waits_body(db: Db) {
    let d = TestDaemon::start(db, "[[sessions]]\nname = \"inbox\"\nroot = \"$ROOT\"\nsubdirectories = [\"inbox\"]\nautoStart = true\n", |root| {
        std::fs::create_dir_all(root.join("inbox")).unwrap();
    })
    .await;
    let id = by_name(&d).await[0].1;
    let s = d.session(id).await;
    assert_eq!(s["status"], "pending");
    assert!(s["pendingReason"].as_str().unwrap().contains("empty"));
    write_images(&d.root, "inbox", 2, "jpg");
    assert!(eventually(15, || async { d.session(id).await["status"] == "running" }).await, "{:?}", d.session(id).await);
    let s = d.session(id).await;
    assert_eq!(s["totalImages"], 2);
    assert!(s["pendingReason"].is_null());
}

#[test]
fn config_errors_name_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, "[library]\nroots = [\"/x\"]\nextentions = [\"jpg\"]\n").unwrap();
    let out = std::process::Command::new(crate::harness::BIN).arg("daemon").arg("--config").arg(&f).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("extentions") && err.contains("bad.toml"), "{err}");

    // Environment overrides the file; `config show` masks secrets.
    std::fs::write(&f, "[catalog]\nurl = \"postgres://u:hunter2@db/pixdex\"\n").unwrap();
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["config", "show", "--config"])
        .arg(&f)
        .env("PIXDEX_DAEMON__DATA_DIR", "/srv/pixdex")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("hunter2") && text.contains("u:***@db"), "{text}");
    assert!(text.contains("data_dir = \"/srv/pixdex\""), "{text}");
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["config", "show", "--config"])
        .arg(&f)
        .env("PIXDEX_DAEMON__ADMISSION_RETRY_SECS", "often")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).to_lowercase().contains("daemon.admission_retry_secs"));
}
