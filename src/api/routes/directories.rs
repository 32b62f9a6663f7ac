//! Directories offered for training (the replaced service's `/api/v1/training/directories…`:
//! scan, listing with training status, preview and preview thumbnails, the ignore list), the
//! admission preview pixdex's web app uses, and the replaced UI's progress and restart shapes.
//! Every path a request names must lie inside the library roots (403 otherwise, the same
//! answer whether it exists or not).

use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::extract::{Body, Id, Q};
use super::super::{ApiError, ApiResult, St, ok, wire};
use crate::catalog::rows_ts;
use crate::library::LibraryError;
use crate::model::SessionStatus;
use crate::sessions::SessionError;

/// pixdex's scan with the original's fields beside (`totalSubdirectories`, per subdirectory
/// `selected`, `trainedCount`, `lastTrainedAt`, `trainingStatus`).
pub(crate) async fn scan_directory(State(st): St, Body(b): Body<wire::ScanDirectory>) -> ApiResult {
    let scan = st.sessions.scan_directory(&b.root_path, b.recursive.unwrap_or(true), b.extensions).await?;
    let mut v = serde_json::to_value(&scan).unwrap_or_default();
    v["totalSubdirectories"] = json!(scan.subdirectories.len());
    if let Some(items) = v["subdirectories"].as_array_mut() {
        for i in items.iter_mut() {
            i["selected"] = json!(false);
            i["trainedCount"] = Value::Null;
            i["lastTrainedAt"] = Value::Null;
            i["trainingStatus"] = Value::Null;
        }
    }
    ok(v)
}

fn resolve_dir(st: &St, p: &str) -> Result<PathBuf, ApiError> {
    if p.trim().is_empty() {
        return Err(ApiError::BadRequest("the path query parameter is required, e.g. ?path=/photos".into()));
    }
    Ok(st.sessions.library().resolve_dir(Path::new(p)).map_err(SessionError::from)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirParams {
    path: Option<String>,
    include_training_status: Option<bool>,
    include_ignored: Option<bool>,
}

/// The immediate subdirectories of `path` with their direct image counts, as a bare array
/// (the replaced UI's `DirectoryInfo[]`), ignored ones left out unless asked for.
pub(crate) async fn list_directories(st: St, Q(p): Q<DirParams>) -> ApiResult {
    let dir = resolve_dir(&st, p.path.as_deref().unwrap_or(""))?;
    let (subs, _) = st.sessions.list_subdirs(&dir, false, None).await?;
    let ignored: Vec<String> = st.sessions.catalog().ignored_dirs().await.map_err(SessionError::from)?.into_iter().map(|d| d.path).collect();
    let subs: Vec<_> = subs
        .into_iter()
        .filter(|s| !s.is_root)
        .filter(|s| p.include_ignored.unwrap_or(false) || !ignored.contains(&s.path.to_string_lossy().into_owned()))
        .collect();
    let paths: Vec<String> = subs.iter().map(|s| s.path.to_string_lossy().into_owned()).collect();
    let training = if p.include_training_status.unwrap_or(false) {
        st.sessions.catalog().dir_training(&paths).await.map_err(SessionError::from)?
    } else {
        Default::default()
    };
    let out: Vec<Value> = subs
        .iter()
        .zip(&paths)
        .map(|(s, path)| {
            let mut v = json!({"path": path, "name": s.name, "imageCount": s.image_count, "unsupportedFiles": s.unsupported, "selected": false, "trainedCount": Value::Null, "lastTrainedAt": Value::Null, "trainingStatus": Value::Null});
            if p.include_training_status.unwrap_or(false) {
                let t = training.get(path).cloned().unwrap_or_default();
                let status = if t.in_progress {
                    "in_progress"
                } else if t.trained == 0 {
                    "never"
                } else if t.trained >= s.image_count as i64 {
                    "complete"
                } else {
                    "partial"
                };
                v["trainedCount"] = json!(t.trained);
                v["lastTrainedAt"] = json!(if t.trained > 0 || t.in_progress { t.last_ms.map(rows_ts) } else { None });
                v["trainingStatus"] = json!(status);
            }
            v
        })
        .collect();
    ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PathParam {
    path: Option<String>,
}

/// The images directly in a directory (before any session catalogues them).
pub(crate) async fn preview(st: St, Q(p): Q<PathParam>) -> ApiResult {
    let raw = p.path.unwrap_or_default();
    let dir = resolve_dir(&st, &raw)?;
    let lib = st.sessions.library().clone();
    let mut files = tokio::task::spawn_blocking(move || lib.walk(&dir, false, None).images)
        .await
        .map_err(|e| ApiError::Internal(format!("directory walk panicked: {e}")))?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let images: Vec<Value> = files
        .iter()
        .map(|f| {
            json!({
                "filename": f.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                "fullPath": f.path.to_string_lossy(),
                "sizeBytes": f.size,
                "modifiedAt": rows_ts(f.modified_ms),
            })
        })
        .collect();
    ok(json!({"directory": raw, "imageCount": images.len(), "images": images}))
}

/// A thumbnail of a file not catalogued yet: the file must lie inside the roots (resolved,
/// symlinks included) and be an image by name.
pub(crate) async fn preview_thumbnail(st: St, headers: HeaderMap, Q(p): Q<PathParam>) -> ApiResult {
    let raw = p.path.unwrap_or_default();
    if raw.trim().is_empty() {
        return Err(ApiError::BadRequest("the path query parameter is required (an image file inside the library roots)".into()));
    }
    let name = Path::new(&raw).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Opened beneath its root with the check in the same step (no link swapped in between).
    let file = st.sessions.library().open_file(Path::new(&raw)).map_err(|e| match e {
        LibraryError::NotFound { .. } | LibraryError::NotAFile { .. } => ApiError::NotFound(format!("{raw} is not an image file inside the library roots")),
        e => SessionError::from(e).into(),
    })?;
    if !st.sessions.library().is_image_name(&name) {
        return Err(ApiError::BadRequest(format!("{name} does not have an image extension ({})", st.sessions.library().extensions().join(", "))));
    }
    let meta = file.metadata().map_err(|e| ApiError::NotFound(format!("{raw}: {e}")))?;
    let etag = format!("\"p{}-{}\"", meta.len(), crate::library::mtime_ms(&meta));
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let limits = st.search.limits().clone();
    let path = std::path::PathBuf::from(&raw);
    let rendered = tokio::task::spawn_blocking(move || crate::thumbs::render(file, &path, &limits))
        .await
        .map_err(|e| ApiError::Internal(format!("thumbnail panicked: {e}")))?;
    Ok(match rendered {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
                (header::ETAG, HeaderValue::from_str(&etag).expect("ascii")),
                (header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache")),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => super::images::placeholder(&e.to_string()),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IgnoreBody {
    path: String,
    reason: Option<String>,
}

pub(crate) async fn ignore(st: St, Body(b): Body<IgnoreBody>) -> ApiResult {
    let dir = resolve_dir(&st, &b.path)?;
    let d = st.sessions.catalog().ignore_dir(&dir.to_string_lossy(), b.reason.as_deref()).await.map_err(SessionError::from)?;
    ok(json!({"status": "success", "path": d.path, "reason": d.reason, "ignoredAt": rows_ts(d.ignored_at)}))
}

pub(crate) async fn unignore(st: St, Body(b): Body<IgnoreBody>) -> ApiResult {
    // The folder may be gone since it was ignored: inside the roots (checked lexically first),
    // a missing one is named as given.
    let dir = match st.sessions.library().resolve_dir(Path::new(&b.path)) {
        Ok(d) => d.to_string_lossy().into_owned(),
        Err(LibraryError::NotFound { .. }) => b.path.clone(),
        Err(e) => return Err(SessionError::from(e).into()),
    };
    if !st.sessions.catalog().unignore_dir(&dir).await.map_err(SessionError::from)? {
        return Err(ApiError::NotFound(format!("Directory not in ignore list: {dir} (GET /api/v1/training/directories/ignored lists them)")));
    }
    ok(json!({"status": "success", "path": dir, "ignoredAt": Value::Null}))
}

pub(crate) async fn ignored(st: St) -> ApiResult {
    let dirs = st.sessions.catalog().ignored_dirs().await.map_err(SessionError::from)?;
    let items: Vec<Value> =
        dirs.iter().map(|d| json!({"path": d.path, "reason": d.reason, "ignoredAt": rows_ts(d.ignored_at), "ignoredBy": Value::Null})).collect();
    ok(json!({"directories": items}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AdmissionBody {
    root_path: String,
    #[serde(default)]
    subdirectories: Vec<String>,
    listed: Option<u64>,
}

/// What a start would do for a session not created yet: the web app keeps Start disabled with
/// this verdict (the same rules as `POST …/sessions/{id}/validate`).
pub(crate) async fn admission_preview(st: St, Body(b): Body<AdmissionBody>) -> ApiResult {
    let a = st.sessions.preview_admission(&b.root_path, &b.subdirectories, b.listed).await?;
    ok(json!({"canStart": a.can_start, "detail": a.detail, "diagnostics": a.diagnostics}))
}

/// The replaced UI's progress panel: one phase ("training"); a discovering session reports
/// "running" so the UI keeps polling.
pub(crate) async fn progress_unified(st: St, Id(id): Id) -> ApiResult {
    let s = st.sessions.get(id).await?;
    let p = st.sessions.progress_of(&s).await?;
    let overall = match p.status {
        SessionStatus::Discovering | SessionStatus::Running => "running",
        other => other.as_str(),
    };
    let n = &p.progress;
    let phase_status = match p.status {
        SessionStatus::Discovering => "running",
        other => other.as_str(),
    };
    ok(json!({
        "sessionId": id,
        "overallStatus": overall,
        "overallProgress": {
            "percentage": n.percentage,
            "etaSeconds": n.eta_seconds,
            "currentPhase": if p.status == SessionStatus::Completed { "completed" } else { "training" },
        },
        "phases": {
            "training": {
                "name": "training",
                "status": phase_status,
                "progress": {
                    "current": n.current,
                    "total": n.total,
                    "percentage": n.percentage,
                    "etaSeconds": n.eta_seconds,
                    "imagesPerMinute": n.images_per_minute,
                    "skipped": p.jobs_summary.skipped,
                },
                "startedAt": s.started_at.map(rows_ts),
                "completedAt": s.completed_at.map(rows_ts),
            }
        },
        "jobsSummary": p.jobs_summary,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestartParams {
    failed_only: Option<bool>,
}

/// The replaced service's restart (`failed_only` defaults to true there), with its
/// `cleanup_stats` (in both spellings: its UI reads snake_case).
pub(crate) async fn restart_training(st: St, Id(id): Id, Q(p): Q<RestartParams>) -> ApiResult {
    let failed_only = p.failed_only.unwrap_or(true);
    let t = std::time::Instant::now();
    let before = st.sessions.catalog().jobs_summary(id).await.map_err(SessionError::from)?;
    let r = st.sessions.restart(id, failed_only).await?;
    let reset = if failed_only { before.failed } else { before.total() };
    let stats = json!({
        "operation": "training_restart",
        "session_id": id,
        "items_deleted": 0,
        "items_reset": reset,
        "items_preserved": before.total() - reset,
        "duration_ms": t.elapsed().as_millis() as u64,
    });
    ok(json!({"sessionId": id, "session_id": id, "status": r.status, "message": r.message, "cleanupStats": stats, "cleanup_stats": stats}))
}
