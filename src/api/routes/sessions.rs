//! Sessions, their subdirectories and jobs, directory scans, the watcher and the pipeline:
//! pixdex's own routes under `/api/v1/training`.

use axum::Json;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::extract::{Body, Id, Page, Q};
use super::super::{ApiError, ApiResult, St, ok, wire};
use crate::catalog::SessionPatch;
use crate::model::{JobStatus, SessionStatus};
use crate::sessions::CreateSession;
use axum::extract::State;

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    page: Option<i64>,
    page_size: Option<i64>,
    status: Option<String>,
}

pub(crate) async fn list_sessions(State(st): St, Q(p): Q<ListParams>) -> ApiResult {
    let page = Page::new(p.page, p.page_size, 20, 100)?;
    let status = match p.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(SessionStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status {s:?} is not a session status; use one of {}",
                SessionStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?),
    };
    let (items, total) = st.sessions.catalog().list_sessions(status, page.size, page.offset()).await.map_err(crate::sessions::SessionError::from)?;
    page.answer(items, total)
}

pub(crate) async fn create_session(State(st): St, Body(b): Body<wire::CreateSession>) -> ApiResult {
    let s = st
        .sessions
        .create(
            CreateSession {
                name: b.name,
                root_path: b.root_path,
                category_id: b.category_id,
                subdirectories: b.subdirectories,
                config: b.config,
                auto_start: b.auto_start.unwrap_or(false),
                live: b.live.unwrap_or(true),
            },
            "api",
        )
        .await?;
    Ok((axum::http::StatusCode::CREATED, Json(s)).into_response())
}

pub(crate) async fn get_session(State(st): St, Id(id): Id) -> ApiResult {
    ok(st.sessions.get(id).await?)
}

pub(crate) async fn patch_session(State(st): St, Id(id): Id, Body(b): Body<wire::PatchSession>) -> ApiResult {
    let patch = SessionPatch { name: b.name, category_id: b.category_id, config: b.config, live: b.live, auto_start: b.auto_start };
    ok(st.sessions.update(id, patch).await?)
}

pub(crate) async fn delete_session(State(st): St, Id(id): Id) -> ApiResult {
    ok(st.sessions.delete(id).await?)
}

pub(crate) async fn get_subdirs(State(st): St, Id(id): Id) -> ApiResult {
    ok(st.sessions.subdirectories(id).await?)
}

pub(crate) async fn patch_subdirs(State(st): St, Id(id): Id, Body(items): Body<Vec<wire::Selection>>) -> ApiResult {
    let changes: Vec<(i64, bool)> = items.iter().map(|i| (i.id, i.selected)).collect();
    ok(st.sessions.select(id, &changes).await?)
}

pub(crate) async fn start(State(st): St, Id(id): Id) -> ApiResult {
    ok(st.sessions.start(id).await?)
}

pub(crate) async fn pause(State(st): St, Id(id): Id) -> ApiResult {
    ok(st.sessions.pause(id).await?)
}

pub(crate) async fn cancel(State(st): St, Id(id): Id) -> ApiResult {
    ok(st.sessions.cancel(id).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestartParams {
    failed_only: Option<bool>,
}

pub(crate) async fn restart(State(st): St, Id(id): Id, Q(p): Q<RestartParams>) -> ApiResult {
    ok(st.sessions.restart(id, p.failed_only.unwrap_or(false)).await?)
}

pub(crate) async fn validate(State(st): St, Id(id): Id) -> ApiResult {
    let a = st.sessions.validate(id).await?;
    ok(json!({"sessionId": id, "canStart": a.can_start, "detail": a.detail, "diagnostics": a.diagnostics}))
}

pub(crate) async fn progress(State(st): St, Id(id): Id) -> ApiResult {
    ok(st.sessions.progress(id).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobParams {
    status: Option<String>,
    page: Option<i64>,
    page_size: Option<i64>,
}

pub(crate) async fn jobs(State(st): St, Id(id): Id, Q(p): Q<JobParams>) -> ApiResult {
    let page = Page::new(p.page, p.page_size, 50, 1000)?;
    let status = match p.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status {s:?} is not a job status; use one of {}",
                JobStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?),
    };
    let (items, total) = st.sessions.jobs(id, status, page.size, page.offset()).await?;
    let items: Vec<Value> = items.iter().map(super::super::compat::job).collect();
    page.answer(items, total)
}

// ---------------------------------------------------------------------------------------------
// Watcher
// ---------------------------------------------------------------------------------------------

pub(crate) async fn watcher_status(State(st): St) -> ApiResult {
    ok(st.watcher.status().await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IncrementalParams {
    directory: Option<String>,
    auto_train: Option<bool>,
}

pub(crate) async fn scan_incremental(State(st): St, Q(p): Q<IncrementalParams>) -> ApiResult {
    let dir = p
        .directory
        .filter(|d| !d.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest("the directory query parameter is required, e.g. ?directory=/photos/2024&auto_train=false".into()))?;
    let canon = st.sessions.library().resolve_dir(std::path::Path::new(&dir)).map_err(crate::sessions::SessionError::from)?;
    let report = st.watcher.scan(canon, p.auto_train.unwrap_or(false)).await.map_err(|e| ApiError::by_cause(&e))?;
    ok(report)
}

pub(crate) async fn pipeline_status(State(st): St) -> ApiResult {
    let mut v = serde_json::to_value(st.pipeline.status()).unwrap_or_default();
    v["points"] = json!(st.pipeline.points().await);
    ok(v)
}
