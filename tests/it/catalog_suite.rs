//! The catalog suite: the same assertions against SQLite and PostgreSQL.

use std::path::PathBuf;
use std::time::Duration;

use pixdex::catalog::{Catalog, CatalogError, ChangeSet, NewSession, NewSubdir, SessionPatch, Stamp, Stamps};
use pixdex::library::FileEntry;
use pixdex::model::SessionStatus;

use crate::both_backends;
use crate::harness::{Db, fresh_catalog_url};

async fn open(db: Db) -> (Catalog, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_catalog_url(db, dir.path()).await;
    let c = Catalog::connect(&url, 4).await.unwrap();
    // Migrations are idempotent: a second open of the same catalog is fine.
    Catalog::connect(&url, 2).await.unwrap().close().await;
    (c, dir)
}

fn new_session(name: &str) -> NewSession {
    NewSession {
        name: name.into(),
        root_path: "/lib".into(),
        category_id: None,
        config: serde_json::json!({"a": 1}),
        source: "api".into(),
        auto_start: false,
        live: true,
    }
}

fn sub(path: &str, selected: bool) -> NewSubdir {
    NewSubdir { path: path.into(), name: path.rsplit('/').next().unwrap().into(), selected, is_root: false, image_count: 0 }
}

fn file(path: &str, size: u64, modified_ms: i64) -> FileEntry {
    FileEntry { path: PathBuf::from(path), size, modified_ms }
}

both_backends!(sessions_and_subdirectories, sessions_body);
async fn sessions_body(db: Db) {
    let (c, _d) = open(db).await;
    let s = c.create_session(&new_session("one"), &[sub("/lib/a", true), sub("/lib/b", false)]).await.unwrap();
    assert_eq!(s.status, SessionStatus::Pending);
    assert_eq!(s.config["a"], 1);
    assert!(matches!(c.create_session(&new_session("one"), &[]).await, Err(CatalogError::Conflict(_))));
    let subs = c.subdirectories(s.id).await.unwrap();
    assert_eq!(subs.len(), 2);
    assert!(subs[0].selected && !subs[1].selected);

    // Upsert keeps ids, updates counts; selection changes only when asked.
    c.upsert_subdirectories(s.id, &[NewSubdir { image_count: 5, ..sub("/lib/a", false) }, sub("/lib/c", true)], false).await.unwrap();
    let subs2 = c.subdirectories(s.id).await.unwrap();
    assert_eq!(subs2.len(), 3);
    assert_eq!(subs2[0].id, subs[0].id);
    assert_eq!((subs2[0].image_count, subs2[0].selected), (5, true));
    c.upsert_subdirectories(s.id, &[sub("/lib/a", false)], true).await.unwrap();
    assert!(!c.subdirectories(s.id).await.unwrap()[0].selected);

    // Selection is all-or-nothing.
    let other = c.create_session(&new_session("two"), &[sub("/lib/z", true)]).await.unwrap();
    let foreign = c.subdirectories(other.id).await.unwrap()[0].id;
    let r = c.set_selection(s.id, &[(subs[1].id, true), (foreign, false)]).await;
    assert!(matches!(r, Err(CatalogError::NotFound(_))));
    assert!(!c.subdirectories(s.id).await.unwrap()[1].selected, "rolled back");
    assert!(c.subdirectories(other.id).await.unwrap()[0].selected);

    // Compare-and-set transitions with timestamps.
    assert!(c.transition(s.id, SessionStatus::Pending, SessionStatus::Running, Stamps { started: true, ..Default::default() }).await.unwrap());
    assert!(!c.transition(s.id, SessionStatus::Pending, SessionStatus::Running, Stamps::default()).await.unwrap(), "stale from-status");
    assert!(c.transition(s.id, SessionStatus::Running, SessionStatus::Paused, Stamps { paused: Stamp::Now, ..Default::default() }).await.unwrap());
    let got = c.session(s.id).await.unwrap().unwrap();
    assert!(got.started_at.is_some() && got.paused_at.is_some());
    assert!(c.transition(s.id, SessionStatus::Paused, SessionStatus::Running, Stamps { paused: Stamp::Clear, ..Default::default() }).await.unwrap());
    assert!(c.session(s.id).await.unwrap().unwrap().paused_at.is_none());

    // Listing, filtering, patching, deleting.
    let (items, total) = c.list_sessions(None, 1, 0).await.unwrap();
    assert_eq!((items.len(), total), (1, 2));
    let (items, total) = c.list_sessions(Some(SessionStatus::Running), 10, 0).await.unwrap();
    assert_eq!((items[0].id, total), (s.id, 1));
    c.update_session(s.id, &SessionPatch { category_id: Some(Some(4)), name: Some("uno".into()), ..Default::default() }).await.unwrap();
    let got = c.session(s.id).await.unwrap().unwrap();
    assert_eq!((got.name.as_str(), got.category_id), ("uno", Some(4)));
    assert!(matches!(c.update_session(s.id, &SessionPatch { name: Some("two".into()), ..Default::default() }).await, Err(CatalogError::Conflict(_))));
    assert!(c.delete_session(other.id).await.unwrap());
    assert!(c.session(other.id).await.unwrap().is_none());
    assert!(c.session_by_name("uno").await.unwrap().is_some());
    c.close().await;
}

both_backends!(assets_and_jobs, jobs_body);
async fn jobs_body(db: Db) {
    let (c, _d) = open(db).await;
    let s = c.create_session(&new_session("s"), &[sub("/lib/a", true)]).await.unwrap();
    let sd = c.subdirectories(s.id).await.unwrap()[0].id;
    let files: Vec<FileEntry> = (0..5).map(|i| file(&format!("/lib/a/{i}.jpg"), 100 + i, 1000)).collect();

    // Discovery is idempotent: same assets, no second job.
    assert_eq!(c.add_discovered(s.id, &[(sd, files.clone())]).await.unwrap(), 5);
    assert_eq!(c.add_discovered(s.id, &[(sd, files.clone())]).await.unwrap(), 0);
    assert_eq!(c.count_assets().await.unwrap(), 5);
    assert_eq!(c.session(s.id).await.unwrap().unwrap().total_images, 5);
    let a0 = c.asset_by_path("/lib/a/0.jpg").await.unwrap().unwrap();
    assert_eq!(c.upsert_assets(&[file("/lib/a/0.jpg", 100, 1000)]).await.unwrap(), vec![a0.id], "same path, same id");

    // Claims only for running sessions; never the same job twice, even concurrently.
    assert!(c.claim_jobs("w1", 10, Duration::from_secs(30)).await.unwrap().is_empty(), "pending session: nothing to claim");
    assert!(c.transition(s.id, SessionStatus::Pending, SessionStatus::Running, Stamps::default()).await.unwrap());
    let (x, y) = tokio::join!(c.claim_jobs("w1", 3, Duration::from_secs(30)), c.claim_jobs("w2", 3, Duration::from_secs(30)));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.len() + y.len(), 5);
    let mut ids: Vec<i64> = x.iter().chain(y.iter()).map(|j| j.job_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "disjoint claims");

    // Completion only by the lease owner; the session completes when nothing is left.
    assert_eq!(c.complete_jobs("intruder", &[x[0].lease()]).await.unwrap(), 0);
    assert_eq!(c.complete_jobs("w1", &x.iter().map(|j| j.lease()).collect::<Vec<_>>()).await.unwrap(), x.len() as u64);
    assert!(c.asset_by_path(&x[0].path).await.unwrap().unwrap().indexed_at.is_some());
    c.fail_job("w2", y[0].lease(), "unreadable").await.unwrap();
    assert_eq!(c.session(s.id).await.unwrap().unwrap().status, SessionStatus::Running);
    c.complete_jobs("w2", &y[1..].iter().map(|j| j.lease()).collect::<Vec<_>>()).await.unwrap();
    let done = c.session(s.id).await.unwrap().unwrap();
    assert_eq!(done.status, SessionStatus::Completed);
    assert_eq!((done.processed_images, done.failed_images), (4, 1));
    assert_eq!(c.subdirectories(s.id).await.unwrap()[0].trained_count, 4);

    // A changed file loses its indexed_at (its vector is stale).
    let p = x[0].path.clone();
    c.upsert_assets(&[file(&p, 999, 2000)]).await.unwrap();
    assert!(c.asset_by_path(&p).await.unwrap().unwrap().indexed_at.is_none());

    // Reset failed only, then everything; cancel.
    assert_eq!(c.reset_jobs(s.id, true).await.unwrap(), 1);
    assert_eq!(c.jobs_summary(s.id).await.unwrap().pending, 1);
    assert_eq!(c.reset_jobs(s.id, false).await.unwrap(), 5);
    assert_eq!(c.cancel_unfinished_jobs(s.id).await.unwrap(), 5);
    let sum = c.jobs_summary(s.id).await.unwrap();
    assert_eq!((sum.cancelled, sum.total()), (5, 5));

    // Claims are fair across running sessions: a second session gets half of a small claim.
    let s2 = c.create_session(&new_session("s2"), &[sub("/lib/b", true)]).await.unwrap();
    let sd2 = c.subdirectories(s2.id).await.unwrap()[0].id;
    let files2: Vec<FileEntry> = (0..5).map(|i| file(&format!("/lib/b/{i}.jpg"), 1, 1)).collect();
    c.add_discovered(s2.id, &[(sd2, files2)]).await.unwrap();
    assert!(c.transition(s2.id, SessionStatus::Pending, SessionStatus::Running, Stamps::default()).await.unwrap());
    c.reset_jobs(s.id, false).await.unwrap();
    assert!(c.transition(s.id, SessionStatus::Completed, SessionStatus::Running, Stamps::default()).await.unwrap());
    let fair = c.claim_jobs("f", 4, Duration::from_secs(30)).await.unwrap();
    let from_s2 = fair.iter().filter(|j| j.session_id == s2.id).count();
    assert_eq!((fair.len(), from_s2), (4, 2), "{fair:?}");
    c.cancel_unfinished_jobs(s2.id).await.unwrap();

    // Recovery: expired leases go back to pending; live leases stay.
    c.reset_jobs(s.id, false).await.unwrap();
    c.claim_jobs("dead", 2, Duration::from_millis(1)).await.unwrap();
    let alive = c.claim_jobs("alive", 2, Duration::from_secs(600)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = c.recover("me", Duration::from_secs(10)).await.unwrap();
    assert_eq!(r.jobs_requeued, 2);
    let sum = c.jobs_summary(s.id).await.unwrap();
    assert_eq!((sum.pending, sum.running), (3, 2));
    let (jobs, total) = c.jobs(s.id, Some(pixdex::model::JobStatus::Running), 10, 0).await.unwrap();
    assert_eq!((jobs.len(), total), (2, 2));
    assert!(jobs[0].path.is_some());

    // A file changed while its job is in flight: the job goes back to pending and the
    // in-flight completion (old bytes) no longer counts; it is embedded again.
    let (inflight, asset) = (jobs[0].id, jobs[0].asset_id.unwrap());
    let path = jobs[0].path.clone().unwrap();
    let changed = ChangeSet { changes: vec![(asset, file(&path, 4242, 9999))], ..ChangeSet::default() };
    let applied = c.apply_changes(&changed).await.unwrap();
    assert_eq!((applied.updated, applied.jobs_requeued), (1, 1));
    let lease = alive.iter().find(|j| j.job_id == inflight).unwrap().lease();
    assert_eq!(
        c.complete_embedded("alive", &[lease], &[pixdex::catalog::AssetMeta { asset_id: asset, width: 7, height: 7, labels: "[]".into(), hashes: None }])
            .await
            .unwrap(),
        0
    );
    let a = c.asset_by_path(&path).await.unwrap().unwrap();
    assert!(a.indexed_at.is_none() && a.width.is_none(), "nothing from the old bytes is kept: {a:?}");
    let sum = c.jobs_summary(s.id).await.unwrap();
    assert_eq!((sum.pending, sum.running), (4, 1));
    c.close().await;
}

// Several claimers at once (many daemons on one PostgreSQL, or one daemon's claim loop racing
// a restart): every round hands out as many jobs as are free, never one twice, and fairness
// across sessions still holds.
both_backends!(concurrent_claims, concurrent_claims_body);
async fn concurrent_claims_body(db: Db) {
    let (c, _d) = open(db).await;
    let mut sessions = Vec::new();
    for (name, dir, n) in [("big", "/lib/big", 30), ("small", "/lib/small", 10)] {
        let s = c.create_session(&new_session(name), &[sub(dir, true)]).await.unwrap();
        let sd = c.subdirectories(s.id).await.unwrap()[0].id;
        let files: Vec<FileEntry> = (0..n).map(|i| file(&format!("{dir}/{i}.jpg"), 1, 1)).collect();
        assert_eq!(c.add_discovered(s.id, &[(sd, files)]).await.unwrap(), n as u64);
        assert!(c.transition(s.id, SessionStatus::Pending, SessionStatus::Running, Stamps::default()).await.unwrap());
        sessions.push(s.id);
    }
    let mut seen = std::collections::HashSet::new();
    let mut remaining = 40usize;
    let mut first_round = true;
    while remaining > 0 {
        let lease = Duration::from_secs(60);
        let (a, b, d, e) = tokio::join!(c.claim_jobs("a", 2, lease), c.claim_jobs("b", 2, lease), c.claim_jobs("d", 2, lease), c.claim_jobs("e", 2, lease));
        let round: Vec<_> = [a, b, d, e].into_iter().flat_map(|r| r.unwrap()).collect();
        assert_eq!(round.len(), remaining.min(8), "a round with {remaining} free jobs handed out {}", round.len());
        if first_round {
            // Both sessions get their turn even when the claims race.
            let small = round.iter().filter(|j| j.session_id == sessions[1]).count();
            assert!(small >= 2, "the small session got {small} of the first 8 claims");
            first_round = false;
        }
        for j in &round {
            assert!(seen.insert(j.job_id), "job {} claimed twice", j.job_id);
        }
        remaining -= round.len();
    }
    assert!(c.claim_jobs("late", 10, Duration::from_secs(60)).await.unwrap().is_empty());
    assert_eq!(seen.len(), 40);
    c.close().await;
}

// A job whose worker dies every time (an image that kills the process): after `max_attempts`
// claims whose leases expired, it ends failed with the reason; the reaper returns expired leases
// without any restart; the session completes; a restart of failed jobs starts counting again.
both_backends!(attempts_and_reaper, attempts_body);
async fn attempts_body(db: Db) {
    let (c, _d) = open(db).await;
    let s = c.create_session(&new_session("crashy"), &[sub("/lib/c", true)]).await.unwrap();
    let sd = c.subdirectories(s.id).await.unwrap()[0].id;
    c.add_discovered(s.id, &[(sd, vec![file("/lib/c/killer.jpg", 1, 1), file("/lib/c/fine.jpg", 2, 2)])]).await.unwrap();
    assert!(c.transition(s.id, SessionStatus::Pending, SessionStatus::Running, Stamps::default()).await.unwrap());
    // Every claim's lease runs out (its worker died); the reaper, not a restart, takes it back.
    let short = Duration::from_millis(1);
    let first = c.claim_jobs_max("w", 10, short, 2).await.unwrap();
    let fine = first.iter().find(|j| j.path.ends_with("fine.jpg")).unwrap().lease();
    assert_eq!(c.complete_jobs("w", &[fine]).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(c.requeue_expired().await.unwrap(), 1, "the reaper returns the expired lease");
    assert_eq!(c.claim_jobs_max("w2", 10, short, 2).await.unwrap().len(), 1, "attempt 2");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(c.requeue_expired().await.unwrap(), 1);
    // A third claim gives up instead, with the reason; the session completes.
    assert!(c.claim_jobs_max("w3", 10, short, 2).await.unwrap().is_empty());
    let (failed, _) = c.jobs(s.id, Some(pixdex::model::JobStatus::Failed), 10, 0).await.unwrap();
    assert_eq!(failed.len(), 1);
    let why = failed[0].error_message.clone().unwrap();
    assert!(why.contains("gave up after 2 attempts"), "{why}");
    let done = c.session(s.id).await.unwrap().unwrap();
    assert_eq!((done.status, done.processed_images, done.failed_images), (SessionStatus::Completed, 1, 1));
    // A file deleted, then the whole session restarted: its job has no asset left, so no
    // claimer could ever take it; it ends skipped with the reason and the session completes.
    let fine_asset = c.asset_by_path("/lib/c/fine.jpg").await.unwrap().unwrap().id;
    c.apply_changes(&ChangeSet { deletes: vec![fine_asset], ..ChangeSet::default() }).await.unwrap();
    c.reset_jobs(s.id, false).await.unwrap();
    let (skipped, _) = c.jobs(s.id, Some(pixdex::model::JobStatus::Skipped), 10, 0).await.unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].error_message.as_deref().unwrap_or("").contains("deleted"), "{skipped:?}");
    // Restart failed only (none failed now: the full reset put the killer back to pending with
    // its attempts counted afresh): it is claimed again.
    assert!(c.transition(s.id, SessionStatus::Completed, SessionStatus::Running, Stamps::default()).await.unwrap());
    assert_eq!(c.claim_jobs_max("w4", 10, Duration::from_secs(600), 2).await.unwrap().len(), 1);
}

both_backends!(fencing_renewal_and_heartbeats, fencing_body);
async fn fencing_body(db: Db) {
    let (c, _d) = open(db).await;
    let s = c.create_session(&new_session("fenced"), &[sub("/lib/f", true)]).await.unwrap();
    let sd = c.subdirectories(s.id).await.unwrap()[0].id;
    c.add_discovered(s.id, &[(sd, vec![file("/lib/f/a.jpg", 1, 1), file("/lib/f/b.jpg", 2, 2)])]).await.unwrap();
    assert!(c.transition(s.id, SessionStatus::Pending, SessionStatus::Running, Stamps::default()).await.unwrap());

    // A worker stalls past its lease; the reaper takes the job back and the same daemon claims
    // it again. The stalled claim's completion (same owner, old token) changes nothing.
    let short = Duration::from_millis(200);
    let mut first = c.claim_jobs("d1", 1, short).await.unwrap();
    let stale = first.pop().unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(c.requeue_expired().await.unwrap(), 1);
    let again = c.claim_jobs("d1", 1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(again[0].job_id, stale.job_id);
    assert!(again[0].token > stale.token, "each claim has a new fencing token");
    assert_eq!(c.complete_jobs("d1", &[stale.lease()]).await.unwrap(), 0, "a stale claim cannot complete");
    c.fail_job("d1", stale.lease(), "stale").await.unwrap();
    assert_eq!(c.jobs_summary(s.id).await.unwrap().running, 1, "nor fail");
    assert_eq!(c.renew_leases("d1", &[stale.lease()], Duration::from_secs(60)).await.unwrap(), vec![stale.lease()], "nor renew");

    // Renewal keeps a lease alive past its first expiry.
    let b = c.claim_jobs("d1", 1, short).await.unwrap().pop().unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(c.renew_leases("d1", &[b.lease(), again[0].lease()], short).await.unwrap().is_empty());
        assert_eq!(c.requeue_expired().await.unwrap(), 0, "renewed leases are not reaped");
    }
    assert_eq!(c.complete_jobs("d1", &[b.lease(), again[0].lease()]).await.unwrap(), 2);
    assert_eq!(c.session(s.id).await.unwrap().unwrap().status, SessionStatus::Completed);

    // Starts in progress: a live peer's is left alone; a dead peer's (no heartbeat for longer
    // than `stale`) and this daemon's own (after its restart) are taken over and resumed. A start
    // that did not record what it was doing (an older daemon's) goes back to pending.
    use pixdex::catalog::Discovery;
    let stale_after = Duration::from_millis(300);
    let live = c.create_session(&new_session("live-peer"), &[]).await.unwrap();
    let dead = c.create_session(&new_session("dead-peer"), &[]).await.unwrap();
    let mine = c.create_session(&new_session("mine"), &[]).await.unwrap();
    let legacy = c.create_session(&new_session("legacy"), &[]).await.unwrap();
    let t0 = pixdex::model::now_ms();
    c.heartbeat("dead", t0, "test", stale_after).await.unwrap();
    assert!(c.begin_discovery(live.id, SessionStatus::Pending, "live", Discovery::Start, 10).await.unwrap());
    assert!(c.begin_discovery(dead.id, SessionStatus::Pending, "dead", Discovery::Restart, 10).await.unwrap());
    assert!(c.begin_discovery(mine.id, SessionStatus::Pending, "me", Discovery::Start, 10).await.unwrap());
    assert!(!c.begin_discovery(mine.id, SessionStatus::Pending, "me", Discovery::Start, 10).await.unwrap(), "compare-and-set");
    assert!(c.transition(legacy.id, SessionStatus::Pending, SessionStatus::Discovering, Default::default()).await.unwrap());
    tokio::time::sleep(Duration::from_millis(350)).await;
    let alive = c.heartbeat("live", t0, "test", stale_after).await.unwrap();
    c.heartbeat("me", t0, "test", stale_after).await.unwrap();
    assert_eq!(alive, vec!["live".to_string()], "dead stopped beating");
    let status = |id| {
        let c = c.clone();
        async move { c.session(id).await.unwrap().unwrap().status }
    };
    assert_eq!(c.recover("me", stale_after).await.unwrap().sessions_rediscover, 1, "only the start that recorded nothing");
    assert_eq!(status(legacy.id).await, SessionStatus::Pending);
    let mut adopted = c.adopt_discoveries("me", stale_after).await.unwrap();
    adopted.sort_by_key(|a| a.0);
    assert_eq!(adopted, vec![(dead.id, Discovery::Restart), (mine.id, Discovery::Start)]);
    for id in [live.id, dead.id, mine.id] {
        assert_eq!(status(id).await, SessionStatus::Discovering);
    }
    // Adopted: the dead peer can no longer write a batch of it; this daemon can.
    assert_eq!(c.reset_jobs_batch(dead.id, "dead", 0, 10).await.unwrap(), None, "fenced out");
    assert_eq!(c.reset_jobs_batch(dead.id, "me", 0, 10).await.unwrap(), Some((0, None)));
    assert_eq!(c.finish_discovery(dead.id, "me", &[]).await.unwrap(), Some(0));
    assert_eq!(status(dead.id).await, SessionStatus::Completed, "nothing to do: completed at once");
    c.heartbeat("live", t0, "test", stale_after).await.unwrap();
    assert_eq!(c.adopt_discoveries("me", stale_after).await.unwrap(), vec![(mine.id, Discovery::Start)], "the live peer's stays its own");
}

both_backends!(models_serve_build_retire, models_body);
/// The configured model serves on a fresh catalog; another one builds until promoted (one
/// transaction: it serves, the previous one is retired); going back builds again.
async fn models_body(db: Db) {
    use pixdex::catalog::{ModelRow, ModelState};
    let (c, _d) = open(db).await;
    let row = |name: &str, dim: i64| ModelRow {
        name: name.into(),
        kind: "k".into(),
        dim,
        weights: format!("/m/{name}"),
        vocab: "/m/vocab".into(),
        state: ModelState::Serving,
        updated_at: 0,
    };
    assert!(c.serving_model().await.unwrap().is_none());
    assert_eq!(c.register_model(&row("effnet", 1280)).await.unwrap(), ModelState::Serving);
    assert_eq!(c.register_model(&row("effnet", 1280)).await.unwrap(), ModelState::Serving, "a restart keeps it serving");
    assert_eq!(c.register_model(&row("clip-a", 512)).await.unwrap(), ModelState::Building);
    assert_eq!(c.serving_model().await.unwrap().unwrap().name, "effnet", "the old model serves while the new builds");
    assert!(!c.promote_model("nope").await.unwrap());
    assert!(c.promote_model("clip-a").await.unwrap());
    assert!(!c.promote_model("clip-a").await.unwrap(), "promoting twice changes nothing");
    let m = c.models().await.unwrap();
    let state = |n: &str| m.iter().find(|r| r.name == n).unwrap().state;
    assert_eq!((state("clip-a"), state("effnet")), (ModelState::Serving, ModelState::Retired));
    assert_eq!(c.serving_model().await.unwrap().unwrap().dim, 512);
    assert_eq!(c.register_model(&row("effnet", 1280)).await.unwrap(), ModelState::Building, "switching back re-embeds too");
}
