//! Vector store tests. Run in release: `cargo test --release --lib vectors`.
//! The remote tests need `QDRANT_URL` (and `QDRANT_API_KEY` if the server wants one).

use std::collections::BTreeSet;

use super::*;

const DIM: usize = 1280;
const N: u64 = 200;
const BASE_ID: u64 = 1000;
const T0: i64 = 1_700_000_000_000;

/// Deterministic PRNG (splitmix64), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit_vector(&mut self, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
}

fn payload_for(id: u64) -> Payload {
    let k = (id - BASE_ID) as i64;
    let mut session_ids = vec![k % 3 + 1];
    if k % 10 == 0 {
        session_ids.push(99);
    }
    Payload {
        asset_id: id as i64,
        path: format!("/lib/s{}/d{}/img{k}.jpg", k % 4, k % 5),
        session_ids,
        category_id: (k % 2 == 0).then_some(7),
        labels: vec![
            LabelPayload { class_id: (k % 20) as u32, label: format!("class{}", k % 20), probability: 0.6 },
            LabelPayload { class_id: ((k + 1) % 20) as u32, label: format!("class{}", (k + 1) % 20), probability: 0.2 },
        ],
        indexed_at: T0 + k * 1000,
        model: "efficientnet-lite0".into(),
        width: Some(640),
        height: Some(480),
    }
}

fn dataset(seed: u64, ids: impl Iterator<Item = u64>) -> Vec<Point> {
    let mut rng = Rng(seed);
    ids.map(|id| Point { id, vector: rng.unit_vector(DIM), payload: payload_for(id) }).collect()
}

/// Ids of `points` that match `f`, computed without the store.
fn expected(points: &[Point], f: &Filter) -> BTreeSet<u64> {
    points
        .iter()
        .filter(|p| {
            let pl = &p.payload;
            f.session_id.is_none_or(|s| pl.session_ids.contains(&s))
                && f.category_id.is_none_or(|c| pl.category_id == Some(c))
                && f.path_prefix.as_ref().is_none_or(|pre| {
                    let pre = pre.trim_end_matches('/');
                    pl.path.starts_with(&format!("{pre}/"))
                })
                && f.indexed_from.is_none_or(|t| pl.indexed_at >= t)
                && f.indexed_to.is_none_or(|t| pl.indexed_at <= t)
                && f.label_any.as_ref().is_none_or(|ids| pl.labels.iter().any(|l| ids.contains(&l.class_id)))
        })
        .map(|p| p.id)
        .collect()
}

fn filters() -> Vec<(&'static str, Filter)> {
    vec![
        ("session 2", Filter { session_id: Some(2), ..Default::default() }),
        ("session 99 (second element of the array)", Filter { session_id: Some(99), ..Default::default() }),
        ("category 7", Filter { category_id: Some(7), ..Default::default() }),
        ("prefix /lib/s1", Filter { path_prefix: Some("/lib/s1".into()), ..Default::default() }),
        ("prefix /lib/s1/ (trailing slash)", Filter { path_prefix: Some("/lib/s1/".into()), ..Default::default() }),
        ("prefix /lib/s1/d2", Filter { path_prefix: Some("/lib/s1/d2".into()), ..Default::default() }),
        ("prefix /lib/s (not a directory)", Filter { path_prefix: Some("/lib/s".into()), ..Default::default() }),
        ("prefix /lib", Filter { path_prefix: Some("/lib".into()), ..Default::default() }),
        ("date range", Filter { indexed_from: Some(T0 + 50_000), indexed_to: Some(T0 + 80_000), ..Default::default() }),
        ("date from", Filter { indexed_from: Some(T0 + 150_000), ..Default::default() }),
        ("labels 3|5", Filter { label_any: Some(vec![3, 5]), ..Default::default() }),
        (
            "session+category+range",
            Filter { session_id: Some(1), category_id: Some(7), indexed_from: Some(T0 + 20_000), indexed_to: Some(T0 + 160_000), ..Default::default() },
        ),
    ]
}

async fn check_search_and_filters(store: &VectorStore, points: &[Point], stage: &str) {
    // Self-search: every 17th point finds itself first with cosine ≈ 1.
    for p in points.iter().step_by(17) {
        let hits = store.search(&p.vector, 3, 0, &Filter::default()).await.unwrap();
        assert_eq!(hits[0].id, p.id, "{stage}: self-search for {}", p.id);
        assert!((hits[0].score - 1.0).abs() < 1e-3, "{stage}: score {}", hits[0].score);
        assert!(hits[1].score < 0.5, "{stage}: random vectors should be far apart");
        assert_eq!(hits[0].payload, p.payload, "{stage}: payload of {}", p.id);
    }
    // Filters narrow exactly like the brute-force reference.
    let probe = &points[0].vector;
    for (name, f) in filters() {
        let want = expected(points, &f);
        let hits = store.search(probe, points.len() + 10, 0, &f).await.unwrap();
        let got: BTreeSet<u64> = hits.iter().map(|h| h.id).collect();
        assert_eq!(got.len(), hits.len(), "{stage}/{name}: duplicate hits");
        assert_eq!(got, want, "{stage}/{name}");
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "{stage}/{name}: not sorted");
        if let Some(&k) = want.iter().nth(want.len() / 2) {
            let v = &points.iter().find(|p| p.id == k).unwrap().vector;
            let top = store.search(v, 1, 0, &f).await.unwrap();
            assert_eq!(top[0].id, k, "{stage}/{name}: filtered self-search");
        }
    }
    assert!(expected(points, &filters()[6].1).is_empty());
    // Pagination: offset continues where the previous page ended.
    let all = store.search(probe, 10, 0, &Filter::default()).await.unwrap();
    let p1 = store.search(probe, 5, 0, &Filter::default()).await.unwrap();
    let p2 = store.search(probe, 5, 5, &Filter::default()).await.unwrap();
    let paged: Vec<u64> = p1.iter().chain(&p2).map(|h| h.id).collect();
    assert_eq!(paged, all.iter().map(|h| h.id).collect::<Vec<_>>(), "{stage}: offset");
}

/// The assertions shared by both backends. `points` is the current content of the store.
async fn exercise(store: &VectorStore, mut points: Vec<Point>) -> Vec<Point> {
    assert_eq!(store.count().await.unwrap(), 0, "fresh store is empty");
    store.upsert(points.clone()).await.unwrap();
    assert_eq!(store.count().await.unwrap(), N);

    // get returns what was stored.
    let p = &points[42];
    let (v, pl) = store.get(p.id).await.unwrap().expect("point exists");
    assert_eq!(pl, p.payload);
    assert_eq!(v.len(), DIM);
    let dot: f32 = v.iter().zip(&p.vector).map(|(a, b)| a * b).sum();
    assert!((dot - 1.0).abs() < 1e-4, "stored vector differs: dot {dot}");
    assert!(store.get(1).await.unwrap().is_none());

    check_search_and_filters(store, &points, "fresh").await;

    // scroll_by_labels: all points having a label among the ids, filter applied, limit respected.
    let got: BTreeSet<u64> = store.scroll_by_labels(&[3], &Filter::default(), 1000).await.unwrap().iter().map(|r| r.id).collect();
    let want = expected(&points, &Filter { label_any: Some(vec![3]), ..Default::default() });
    assert_eq!(got, want, "scroll_by_labels [3]");
    assert!(!want.is_empty());
    let f = Filter { category_id: Some(7), ..Default::default() };
    let recs = store.scroll_by_labels(&[3, 4], &f, 1000).await.unwrap();
    let want = expected(&points, &Filter { label_any: Some(vec![3, 4]), ..f.clone() });
    assert_eq!(recs.iter().map(|r| r.id).collect::<BTreeSet<_>>(), want, "scroll_by_labels + filter");
    for r in &recs {
        assert_eq!(r.payload.asset_id as u64, r.id);
    }
    assert_eq!(store.scroll_by_labels(&[3, 4], &f, 2).await.unwrap().len(), 2, "limit");
    assert!(store.scroll_by_labels(&[], &f, 10).await.unwrap().is_empty());

    // Idempotent upsert: same ids again (new payload) → count unchanged, payload replaced.
    let mut again: Vec<Point> = points[..20].to_vec();
    for p in &mut again {
        p.payload.width = Some(1);
    }
    store.upsert(again.clone()).await.unwrap();
    store.upsert(again.clone()).await.unwrap();
    assert_eq!(store.count().await.unwrap(), N, "re-upsert must not add points");
    assert_eq!(store.get(again[3].id).await.unwrap().unwrap().1.width, Some(1));
    points[..20].clone_from_slice(&again);

    // Delete.
    let gone: Vec<u64> = points.iter().skip(100).take(10).map(|p| p.id).collect();
    store.delete(&gone).await.unwrap();
    store.delete(&[424_242]).await.unwrap(); // unknown id: no error
    points.retain(|p| !gone.contains(&p.id));
    assert_eq!(store.count().await.unwrap(), N - 10);
    assert!(store.get(gone[0]).await.unwrap().is_none());
    let v = &dataset(7, BASE_ID..BASE_ID + N)[100].vector; // vector of a deleted point
    let hits = store.search(v, 5, 0, &Filter::default()).await.unwrap();
    assert!(hits.iter().all(|h| !gone.contains(&h.id)), "deleted point still found");

    // set_path: payload and prefix filter follow; the vector is kept.
    let moved = points[5].id;
    let old_dir = format!("/lib/s{}", (moved - BASE_ID) % 4);
    let (v_before, _) = store.get(moved).await.unwrap().unwrap();
    store.set_path(moved, "/moved/2025/trip/img.jpg").await.unwrap();
    let (v_after, pl) = store.get(moved).await.unwrap().unwrap();
    assert_eq!(pl.path, "/moved/2025/trip/img.jpg");
    assert_eq!(v_before, v_after, "set_path must not touch the vector");
    assert_eq!(pl.labels, points[5].payload.labels, "other payload fields kept");
    for pre in ["/moved", "/moved/2025/", "/moved/2025/trip"] {
        let f = Filter { path_prefix: Some(pre.into()), ..Default::default() };
        let hits = store.search(&points[0].vector, 50, 0, &f).await.unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![moved], "prefix {pre}");
    }
    let f = Filter { path_prefix: Some(old_dir.clone()), ..Default::default() };
    let hits = store.search(&points[0].vector, 500, 0, &f).await.unwrap();
    assert!(hits.iter().all(|h| h.id != moved), "old prefix {old_dir} still matches");
    points[5].payload.path = "/moved/2025/trip/img.jpg".into();
    store.set_path(777_777, "/nowhere/x.jpg").await.unwrap(); // missing id: no-op
    assert_eq!(store.count().await.unwrap(), N - 10);

    // Bad input is refused, not stored.
    assert!(matches!(store.upsert(vec![Point { id: 5, vector: vec![0.1; 3], payload: payload_for(BASE_ID) }]).await, Err(VectorError::Invalid(_))));
    assert!(matches!(store.search(&[1.0; 7], 3, 0, &Filter::default()).await, Err(VectorError::Invalid(_))));

    check_search_and_filters(store, &points, "after updates").await;
    points
}

/// A renamed folder of a thousand images: one `set_paths` call moves every payload (and the
/// prefix filter follows), vectors untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_set_paths_in_one_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let store = VectorStore::open(&embedded_cfg(tmp.path()), "efficientnet-lite0", DIM).await.unwrap();
    let points = dataset(11, BASE_ID..BASE_ID + 1000);
    store.upsert(points.clone()).await.unwrap();
    let moves: Vec<(u64, String)> = points.iter().map(|p| (p.id, format!("/renamed/{}.jpg", p.id))).collect();
    store.set_paths(&moves).await.unwrap();
    let f = Filter { path_prefix: Some("/renamed".into()), ..Filter::default() };
    assert_eq!(store.search(&points[0].vector, 1000, 0, &f).await.unwrap().len(), 1000);
    let old = Filter { path_prefix: Some("/lib".into()), ..Filter::default() };
    assert!(store.search(&points[0].vector, 10, 0, &old).await.unwrap().is_empty());
    let (v, p) = store.get(BASE_ID + 17).await.unwrap().unwrap();
    assert_eq!((v, p.path.as_str()), (points[17].vector.clone(), format!("/renamed/{}.jpg", BASE_ID + 17).as_str()));
}

fn embedded_cfg(dir: &Path) -> VectorsConfig {
    VectorsConfig::embedded(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = embedded_cfg(tmp.path());
    let store = VectorStore::open(&cfg, "efficientnet-lite0", DIM).await.unwrap();
    assert!(store.describe().starts_with("embedded qdrant-edge at "), "{}", store.describe());
    assert!(tmp.path().join("vectors/pixdex-efficientnet-lite0-1280").is_dir());

    // A second open of the same shard while the first is alive is refused.
    match VectorStore::open(&cfg, "efficientnet-lite0", DIM).await {
        Err(VectorError::Locked(_)) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    // Another model/dimension is a separate shard.
    let other = VectorStore::open(&cfg, "efficientnet-lite0", 8).await.unwrap();
    assert_eq!(other.count().await.unwrap(), 0);
    drop(other);

    let points = exercise(&store, dataset(7, BASE_ID..BASE_ID + N)).await;
    store.flush().await.unwrap();
    let clone = store.clone();
    drop(store);
    drop(clone);

    // Reopen (EdgeShard::load): everything is still there.
    let store = VectorStore::open(&cfg, "efficientnet-lite0", DIM).await.unwrap();
    assert_eq!(store.count().await.unwrap(), points.len() as u64);
    assert_eq!(store.get(points[5].id).await.unwrap().unwrap().1, points[5].payload);
    check_search_and_filters(&store, &points, "reopened").await;

    // Build an HNSW index even on this small shard, then search again.
    store.set_indexing_threshold_kb_for_tests(10);
    store.optimize().await.unwrap();
    check_search_and_filters(&store, &points, "optimized").await;
    assert_eq!(store.count().await.unwrap(), points.len() as u64);
    drop(store);

    // And the optimised shard loads too. No flush before the drop: Drop flushes.
    let store = VectorStore::open(&cfg, "efficientnet-lite0", DIM).await.unwrap();
    check_search_and_filters(&store, &points, "optimized+reopened").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_reopen_without_flush_replays_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = embedded_cfg(tmp.path());
    let points = dataset(11, BASE_ID..BASE_ID + 50);
    {
        let store = VectorStore::open(&cfg, "m", DIM).await.unwrap();
        store.upsert(points.clone()).await.unwrap();
        store.delete(&[BASE_ID]).await.unwrap();
    }
    let store = VectorStore::open(&cfg, "m", DIM).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 49);
    let hits = store.search(&points[3].vector, 1, 0, &Filter::default()).await.unwrap();
    assert_eq!(hits[0].id, points[3].id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_wrong_dimension_on_disk_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = embedded_cfg(tmp.path());
    drop(VectorStore::open(&cfg, "m", 16).await.unwrap());
    // Same directory name, different dimension recorded inside: rename the dir to fake it.
    std::fs::rename(tmp.path().join("vectors/pixdex-m-16"), tmp.path().join("vectors/pixdex-m-32")).unwrap();
    match VectorStore::open(&cfg, "m", 32).await {
        Err(VectorError::Corrupt(msg)) => assert!(msg.contains("16"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_optimize_while_writing_and_searching() {
    let tmp = tempfile::tempdir().unwrap();
    let store = VectorStore::open(&embedded_cfg(tmp.path()), "m", DIM).await.unwrap();
    store.set_indexing_threshold_kb_for_tests(100);
    let first = dataset(21, 0..1500);
    for chunk in first.chunks(250) {
        store.upsert(chunk.to_vec()).await.unwrap();
    }
    let extra = dataset(22, 10_000..10_300);
    let opt = {
        let s = store.clone();
        tokio::spawn(async move { s.optimize().await })
    };
    let writer = {
        let s = store.clone();
        let extra = extra.clone();
        tokio::spawn(async move {
            for chunk in extra.chunks(50) {
                s.upsert(chunk.to_vec()).await?;
                s.flush().await?;
            }
            Ok::<_, VectorError>(())
        })
    };
    for p in first.iter().step_by(100) {
        let hits = store.search(&p.vector, 1, 0, &Filter::default()).await.unwrap();
        assert_eq!(hits[0].id, p.id, "search during optimize");
    }
    opt.await.unwrap().unwrap();
    writer.await.unwrap().unwrap();
    assert_eq!(store.count().await.unwrap(), 1800);
    for p in first.iter().step_by(97).chain(extra.iter().step_by(29)) {
        let hits = store.search(&p.vector, 1, 0, &Filter::default()).await.unwrap();
        assert_eq!(hits[0].id, p.id);
        assert!((hits[0].score - 1.0).abs() < 1e-3);
    }
    store.optimize().await.unwrap();
    store.flush().await.unwrap();
}

#[tokio::test]
async fn embedded_config_errors() {
    let cfg = VectorsConfig { path: PathBuf::new(), ..VectorsConfig::embedded(Path::new("/x")) };
    assert!(matches!(VectorStore::open(&cfg, "m", 4).await, Err(VectorError::Config(_))));
    let cfg = VectorsConfig { backend: Backend::Qdrant, url: None, ..VectorsConfig::embedded(Path::new("/x")) };
    assert!(matches!(VectorStore::open(&cfg, "m", 4).await, Err(VectorError::Config(_))));
    assert_eq!("Qdrant".parse::<Backend>().unwrap(), Backend::Qdrant);
    assert!("sqlite".parse::<Backend>().is_err());
}

#[test]
fn dirs_and_prefixes() {
    assert_eq!(ancestor_dirs("/a/b/c.jpg"), vec!["/a/b", "/a", "/"]);
    assert_eq!(ancestor_dirs("/a//b/./c.jpg"), vec!["/a/b", "/a", "/"]);
    assert_eq!(ancestor_dirs("rel/x.jpg"), vec!["rel"]);
    assert_eq!(prefix_key("/a/b/"), "/a/b");
    assert_eq!(prefix_key("/"), "/");
    let p = payload_for(BASE_ID + 3);
    let j = payload_to_json(&p);
    assert_eq!(j["dirs"], serde_json::json!(["/lib/s3/d3", "/lib/s3", "/lib", "/"]));
    assert_eq!(j["labelIds"], serde_json::json!([3, 4]));
    assert_eq!(j["sessionIds"], serde_json::json!([1]));
    assert_eq!(payload_from_json(1, j).unwrap(), p);
    assert_eq!(sanitize_name("efficientnet lite/0"), "efficientnet_lite_0");
    assert_eq!(remote::redact_url("http://u:secret@host:6334/?k=v"), "http://host:6334");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_store_end_to_end() {
    let Some(url) = std::env::var("QDRANT_URL").ok().filter(|u| !u.is_empty()) else {
        println!("SKIPPED vectors remote tests: set QDRANT_URL to run them");
        return;
    };
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let cfg = VectorsConfig {
        backend: Backend::Qdrant,
        path: PathBuf::new(),
        url: Some(url),
        api_key: std::env::var("QDRANT_API_KEY").ok(),
        collection_prefix: format!("pixdextest{}x{nonce}", std::process::id()),
        replication_factor: None,
        shard_number: None,
        min_free_bytes: 0,
        pairing: None,
    };
    // Pairing: a new collection is marked with its catalog; another catalog is refused.
    let paired = |id: &str| VectorsConfig { pairing: Some(Pairing { catalog_id: id.into(), adopt_unmarked: false }), ..cfg.clone() };
    VectorStore::open(&paired("cat-a"), "pairing", DIM).await.unwrap().count().await.unwrap();
    VectorStore::open(&paired("cat-a"), "pairing", DIM).await.expect("the same catalog opens its own vectors");
    match VectorStore::open(&paired("cat-b"), "pairing", DIM).await {
        Err(VectorError::Mismatch { theirs, ours, .. }) => assert_eq!((theirs.as_str(), ours.as_str()), ("cat-a", "cat-b")),
        other => panic!("another catalog's collection must be refused: {:?}", other.map(|s| s.describe())),
    }
    let store = VectorStore::open(&cfg, "efficientnet-lite0", DIM).await.unwrap();
    println!("remote tests against {}", store.describe());
    let result = tokio::spawn({
        let store = store.clone();
        let cfg = cfg.clone();
        async move {
            let points = exercise(&store, dataset(7, BASE_ID..BASE_ID + N)).await;
            store.optimize().await.unwrap();
            store.flush().await.unwrap();
            // "Reopen": a new client on the existing collection sees the same data.
            let again = VectorStore::open(&cfg, "efficientnet-lite0", DIM).await.unwrap();
            assert_eq!(again.count().await.unwrap(), points.len() as u64);
            check_search_and_filters(&again, &points, "remote reopened").await;
        }
    })
    .await;
    store.drop_remote_collection_for_tests().await.unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[test]
fn transient_errors_are_retried_permanent_ones_not() {
    let refused = VectorError::Backend {
        backend: Backend::Qdrant,
        message: "Internal: error trying to connect: tcp connect error: Connection refused (os error 111)".into(),
    };
    assert!(refused.is_retryable());
    let full = VectorError::Io { path: "/x".into(), source: std::io::Error::from(std::io::ErrorKind::StorageFull) };
    assert!(full.is_retryable());
    let full_msg = VectorError::Backend { backend: Backend::Embedded, message: "failed to write segment: No space left on device (os error 28)".into() };
    assert!(full_msg.is_retryable());
    assert!(!VectorError::Invalid("wrong vector dimension".into()).is_retryable());
    assert!(!VectorError::Backend { backend: Backend::Qdrant, message: "InvalidArgument: bad payload".into() }.is_retryable());
    let denied = VectorError::Io { path: "/x".into(), source: std::io::Error::from(std::io::ErrorKind::PermissionDenied) };
    assert!(!denied.is_retryable());
}

#[tokio::test]
async fn embedded_store_is_paired_with_its_catalog() {
    let tmp = tempfile::tempdir().unwrap();
    let paired = |id: &str, adopt: bool| VectorsConfig { pairing: Some(Pairing { catalog_id: id.into(), adopt_unmarked: adopt }), ..embedded_cfg(tmp.path()) };
    {
        let s = VectorStore::open(&paired("a", false), "m", DIM).await.unwrap();
        s.upsert(dataset(1, BASE_ID..BASE_ID + 1)).await.unwrap();
        s.flush().await.unwrap();
    }
    drop(VectorStore::open(&paired("a", false), "m", DIM).await.unwrap());
    match VectorStore::open(&paired("b", true), "m", DIM).await {
        Err(e @ VectorError::Mismatch { .. }) => {
            assert!(e.to_string().contains("Fix:"), "{e}");
            assert!(e.is_retryable(), "a mismatch makes writes wait, it fails no job");
        }
        other => panic!("{:?}", other.map(|s| s.describe())),
    }
    // Unmarked (a store from before pairing) with a point: refused by an empty catalog,
    // adopted by one that holds assets.
    let mark = tmp.path().join("vectors").read_dir().unwrap().flatten().map(|e| e.path().join("catalog-id")).find(|p| p.exists()).unwrap();
    std::fs::remove_file(&mark).unwrap();
    assert!(matches!(VectorStore::open(&paired("c", false), "m", DIM).await, Err(VectorError::Mismatch { .. })));
    drop(VectorStore::open(&paired("c", true), "m", DIM).await.unwrap());
    assert_eq!(std::fs::read_to_string(&mark).unwrap().trim(), "c");
    // Vectors above the catalog's highest id go; the rest stay.
    let s = VectorStore::open(&paired("c", false), "m", DIM).await.unwrap();
    s.upsert(dataset(2, [BASE_ID + 2, BASE_ID + 3, BASE_ID + 7].into_iter())).await.unwrap();
    assert_eq!(s.delete_above(BASE_ID + 2).await.unwrap(), 2);
    assert_eq!(s.count().await.unwrap(), 2);
    assert_eq!(s.delete_above(BASE_ID + 2).await.unwrap(), 0);
}

/// Outages, full disks and out-of-descriptors are transient wherever they show; refusals of the
/// request are the request's fault.
#[test]
fn causes() {
    use crate::error::{Cause, Classify};
    assert_eq!(VectorError::Unavailable { backend: Backend::Qdrant, reason: "down".into() }.cause(), Cause::Transient);
    let full = VectorError::Io { path: "/v".into(), source: std::io::Error::from(std::io::ErrorKind::StorageFull) };
    assert!(full.is_transient());
    assert_eq!(VectorError::Invalid("dim".into()).cause(), Cause::UserInput);
    for code in [libc::EMFILE, libc::ENFILE] {
        let v = VectorError::Io { path: "/v".into(), source: std::io::Error::from_raw_os_error(code) };
        assert!(v.is_retryable() && v.is_transient());
    }
    // qdrant-edge panics on EMFILE ("Too many open files"): the caught panic's message is
    // all that is left, and it still says "retry".
    for message in ["qdrant-edge call panicked: failed to open segment: Too many open files (os error 24)", "Too many open files in system (os error 23)"] {
        let e = VectorError::Backend { backend: Backend::Embedded, message: message.into() };
        assert!(e.is_retryable(), "{message}");
    }
    for message in ["Too many open files (os error 24)", "os error 23"] {
        assert!(VectorError::Invalid(message.into()).is_retryable(), "{message}");
        assert!(VectorError::Corrupt(message.into()).is_retryable(), "{message}");
    }
    assert!(!VectorError::Invalid("wrong vector dimension".into()).is_retryable());
}
