//! `GET /api/v1/library`: each root with its watcher mode and its tree of folders — those that
//! hold catalogued images, those that hold only other files (as the watcher's last walk found
//! them), and every folder directly under the root, empty ones included (the same folders New
//! session lists) — with image, indexed and other-file counts and the last index time.

use std::collections::BTreeMap;
use std::path::Path;

use axum::extract::State;
use serde::Serialize;

use super::super::{ApiResult, St, ok};
use crate::catalog::rows_ts;
use crate::sessions::SessionError;

#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Dir {
    path: String,
    name: String,
    depth: usize,
    image_count: u64,
    indexed_count: u64,
    /// Files that are not images (not below: this folder's own), as the watcher last walked.
    other_files: u64,
    last_indexed_at: Option<String>,
    #[serde(skip)]
    last_ms: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Root {
    path: String,
    watch_mode: String,
    note: Option<String>,
    image_count: u64,
    indexed_count: u64,
    last_indexed_at: Option<String>,
    directories: Vec<Dir>,
}

pub(crate) async fn overview(State(st): St) -> ApiResult {
    let watcher = st.watcher.status().await;
    let mut roots = Vec::new();
    for root in st.sessions.library().roots() {
        let root_s = root.to_string_lossy().into_owned();
        let (mode, note) = watcher.roots.iter().find(|r| r.path == root_s).map(|r| (r.mode.clone(), r.note.clone())).unwrap_or(("off".into(), None));
        // The catalog's per-folder counts (kept by triggers): O(folders), whatever the images.
        let counts = st.sessions.catalog().dir_counts(&root_s).await.map_err(SessionError::from)?;
        let mut dirs: BTreeMap<String, Dir> = BTreeMap::new();
        // Every folder between the root and `path` (itself included), created on first sight.
        let mut chain = |path: &Path, f: &mut dyn FnMut(&mut Dir)| {
            let Ok(rel) = path.strip_prefix(&root) else { return };
            let mut acc = root.clone();
            for (depth, comp) in rel.components().enumerate() {
                acc.push(comp);
                let d = dirs.entry(acc.to_string_lossy().into_owned()).or_insert_with(|| Dir {
                    path: acc.to_string_lossy().into_owned(),
                    name: comp.as_os_str().to_string_lossy().into_owned(),
                    depth: depth + 1,
                    ..Default::default()
                });
                f(d);
            }
        };
        let (mut images, mut indexed, mut last) = (0u64, 0u64, None::<i64>);
        for c in &counts {
            if !Path::new(&c.path).starts_with(&root) {
                continue;
            }
            let (n, done) = (c.images.max(0) as u64, c.indexed.max(0) as u64);
            images += n;
            indexed += done;
            last = last.max(c.last_indexed_at);
            // Every folder between the root and this one gets its images.
            chain(Path::new(&c.path), &mut |d| {
                d.image_count += n;
                d.indexed_count += done;
                d.last_ms = d.last_ms.max(c.last_indexed_at);
            });
        }
        // Folders without images: those holding other files (one row per such folder), and the
        // root's own subfolders, empty or not (one directory read) — O(folders), as above.
        let other = st.sessions.catalog().other_files(&root_s).await.map_err(SessionError::from)?;
        for (path, n) in &other {
            let p = Path::new(path);
            chain(p, &mut |d| {
                if Path::new(&d.path) == p {
                    d.other_files = (*n).max(0) as u64;
                }
            });
        }
        let (lib, r2) = (st.sessions.library().clone(), root.clone());
        let children = tokio::task::spawn_blocking(move || lib.child_dirs(&r2)).await.unwrap_or_default();
        for child in &children {
            chain(child, &mut |_| {});
        }
        let directories = dirs
            .into_values()
            .map(|mut d| {
                d.last_indexed_at = d.last_ms.map(rows_ts);
                d
            })
            .collect();
        roots.push(Root { path: root_s, watch_mode: mode, note, image_count: images, indexed_count: indexed, last_indexed_at: last.map(rows_ts), directories });
    }
    ok(serde_json::json!({"roots": roots}))
}

/// `GET /api/v1/models`: every model whose vectors exist, with its state (`serving` answers
/// search, `building` is re-embedding the library, `retired` no longer used).
pub(crate) async fn models(State(st): St) -> ApiResult {
    let models = st.sessions.catalog().models().await.map_err(SessionError::from)?;
    ok(serde_json::to_value(models).unwrap_or_default())
}

/// `POST /api/v1/model/reload`: load the configured model now (its files may have appeared
/// or changed; the daemon also follows them by itself): 200 with what was done, or 409 with
/// why it cannot load and the fix (nothing that runs is stopped for it).
pub(crate) async fn reload_model(State(st): St) -> ApiResult {
    match st.model_reload.now().await {
        Ok(done) => ok(serde_json::json!({"loaded": true, "detail": done})),
        Err(why) => Err(crate::api::error::ApiError::Conflict { detail: why, current: None, allowed: vec![] }),
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct DupParams {
    path: Option<String>,
}

/// `GET /api/v1/duplicates[?path=<folder>]`: groups of identical and near-identical images.
pub(crate) async fn duplicates(State(st): St, super::super::extract::Q(p): super::super::extract::Q<DupParams>) -> ApiResult {
    let r = st.search.duplicates(p.path.as_deref()).await?;
    ok(r)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmptiedParams {
    path: Option<String>,
}

/// `POST /api/v1/library/emptied?path=…`: the operator says a folder that is away (a mount
/// point found unmounted and empty) really was emptied. The mount remembered there is
/// forgotten and the folder reconciled: its assets and vectors are deleted.
pub(crate) async fn emptied(State(st): St, super::super::extract::Q(p): super::super::extract::Q<EmptiedParams>) -> ApiResult {
    let dir = p
        .path
        .filter(|d| !d.trim().is_empty())
        .ok_or_else(|| super::super::ApiError::BadRequest("the path query parameter is required, e.g. ?path=/photos/nas".into()))?;
    let canon = st.sessions.library().resolve_dir(Path::new(&dir)).map_err(SessionError::from)?;
    let report = st.watcher.confirm_emptied(canon).await.map_err(|e| super::super::ApiError::by_cause(&e))?;
    ok(report)
}
