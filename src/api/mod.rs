//! The admin API: HTTP/1.1 + JSON, served on the control socket (and on TCP when configured).
//! Routes and shapes follow the service pixdex replaces: JSON bodies camelCase, query
//! parameters snake_case, errors `{"detail": ...}`.

pub mod client;
mod error;
mod extract;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

pub use error::ApiError;
use extract::{Body, Id, Q};

use crate::catalog::SessionPatch;
use crate::model::{JobStatus, SessionStatus};
use crate::sessions::{CreateSession, Sessions};

pub struct AppState {
    pub sessions: Sessions,
    pub watcher: crate::watcher::Watcher,
    pub pipeline: crate::pipeline::Pipeline,
    pub search: crate::search::Search,
    pub version: &'static str,
}

type St = State<Arc<AppState>>;
type ApiResult = Result<Response, ApiError>;

pub fn router(state: Arc<AppState>) -> Router {
    let training = Router::new()
        .route("/sessions", get(list_sessions).post(create_session))
        .route("/sessions/{id}", get(get_session).patch(patch_session).delete(delete_session))
        .route("/sessions/{id}/subdirectories", get(get_subdirs).patch(patch_subdirs))
        .route("/sessions/{id}/start", post(start))
        .route("/sessions/{id}/pause", post(pause))
        .route("/sessions/{id}/cancel", post(cancel))
        .route("/sessions/{id}/restart", post(restart))
        .route("/sessions/{id}/validate", post(validate))
        .route("/sessions/{id}/progress", get(progress))
        .route("/sessions/{id}/jobs", get(jobs))
        .route("/directories/scan", post(scan_directory))
        .route("/scan/incremental", post(scan_incremental))
        .route("/watcher", get(watcher_status))
        .route("/pipeline", get(pipeline_status));
    let search = Router::new()
        .route("/", post(search_words))
        .route("/image", post(search_image).layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024)))
        .route("/similar/{id}", get(search_similar));
    Router::new()
        .nest("/api/v1/training", training)
        .nest("/api/v1/search", search)
        .route("/api/v1/health", get(health))
        .fallback(|req: Request| async move {
            ApiError::NotFound(format!("no route {} {}", req.method(), req.uri().path())).into_response()
        })
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError::MethodNotAllowed(format!("{} is not allowed on {}", req.method(), req.uri().path())).into_response()
        })
        .layer(middleware::from_fn(log_requests))
        .with_state(state)
}

async fn log_requests(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let t = Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed_ms = t.elapsed().as_millis() as u64, "request");
    resp
}

fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

async fn health(State(st): St) -> ApiResult {
    let backend = match st.sessions.catalog().backend() {
        crate::catalog::Backend::Sqlite => "sqlite",
        crate::catalog::Backend::Postgres => "postgres",
    };
    ok(json!({"status": "ok", "version": st.version, "catalog": backend}))
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    page: Option<i64>,
    page_size: Option<i64>,
    status: Option<String>,
}

async fn list_sessions(State(st): St, Q(p): Q<ListParams>) -> ApiResult {
    let page = p.page.unwrap_or(1);
    let page_size = p.page_size.unwrap_or(20);
    if page < 1 {
        return Err(ApiError::BadRequest(format!("page must be 1 or more, got {page}")));
    }
    if !(1..=100).contains(&page_size) {
        return Err(ApiError::BadRequest(format!("page_size must be between 1 and 100, got {page_size}")));
    }
    let status = match p.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(SessionStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status {s:?} is not a session status; use one of {}",
                SessionStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?),
    };
    let (items, total) = st.sessions.catalog().list_sessions(status, page_size, (page - 1) * page_size).await.map_err(crate::sessions::SessionError::from)?;
    ok(json!({
        "items": items,
        "total": total,
        "page": page,
        "pageSize": page_size,
        "hasMore": page * page_size < total,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    name: String,
    root_path: String,
    category_id: Option<i64>,
    subdirectories: Option<Vec<String>>,
    config: Option<Value>,
    auto_start: Option<bool>,
    live: Option<bool>,
}

async fn create_session(State(st): St, Body(b): Body<CreateBody>) -> ApiResult {
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

async fn get_session(State(st): St, Id(id): Id) -> ApiResult {
    ok(st.sessions.get(id).await?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchBody {
    name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    category_id: Option<Option<i64>>,
    config: Option<Value>,
    live: Option<bool>,
    auto_start: Option<bool>,
}

/// `absent` → None, `null` → Some(None), `5` → Some(Some(5)).
fn double_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Ok(Some(Option::<i64>::deserialize(d)?))
}

async fn patch_session(State(st): St, Id(id): Id, Body(b): Body<PatchBody>) -> ApiResult {
    let patch = SessionPatch { name: b.name, category_id: b.category_id, config: b.config, live: b.live, auto_start: b.auto_start };
    ok(st.sessions.update(id, patch).await?)
}

async fn delete_session(State(st): St, Id(id): Id) -> ApiResult {
    ok(st.sessions.delete(id).await?)
}

async fn get_subdirs(State(st): St, Id(id): Id) -> ApiResult {
    ok(st.sessions.subdirectories(id).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectionItem {
    id: i64,
    selected: bool,
}

async fn patch_subdirs(State(st): St, Id(id): Id, Body(items): Body<Vec<SelectionItem>>) -> ApiResult {
    let changes: Vec<(i64, bool)> = items.iter().map(|i| (i.id, i.selected)).collect();
    ok(st.sessions.select(id, &changes).await?)
}

async fn start(State(st): St, Id(id): Id) -> ApiResult {
    let r = st.sessions.start(id).await?;
    st.pipeline.resume_session(id);
    ok(r)
}

async fn pause(State(st): St, Id(id): Id) -> ApiResult {
    ok(st.sessions.pause(id).await?)
}

async fn cancel(State(st): St, Id(id): Id) -> ApiResult {
    let r = st.sessions.cancel(id).await?;
    st.pipeline.cancel_session(id);
    ok(r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartParams {
    failed_only: Option<bool>,
}

async fn restart(State(st): St, Id(id): Id, Q(p): Q<RestartParams>) -> ApiResult {
    let r = st.sessions.restart(id, p.failed_only.unwrap_or(false)).await?;
    st.pipeline.resume_session(id);
    ok(r)
}

async fn validate(State(st): St, Id(id): Id) -> ApiResult {
    let a = st.sessions.validate(id).await?;
    ok(json!({"sessionId": id, "canStart": a.can_start, "detail": a.detail, "diagnostics": a.diagnostics}))
}

async fn progress(State(st): St, Id(id): Id) -> ApiResult {
    ok(st.sessions.progress(id).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobParams {
    status: Option<String>,
    page: Option<i64>,
    page_size: Option<i64>,
}

async fn jobs(State(st): St, Id(id): Id, Q(p): Q<JobParams>) -> ApiResult {
    let page = p.page.unwrap_or(1);
    let page_size = p.page_size.unwrap_or(50);
    if page < 1 || !(1..=1000).contains(&page_size) {
        return Err(ApiError::BadRequest(format!("page must be ≥ 1 and page_size between 1 and 1000 (got {page}, {page_size})")));
    }
    let status = match p.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status {s:?} is not a job status; use one of {}",
                JobStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?),
    };
    let (items, total) = st.sessions.jobs(id, status, page_size, (page - 1) * page_size).await?;
    ok(json!({"items": items, "total": total, "page": page, "pageSize": page_size, "hasMore": page * page_size < total}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScanBody {
    root_path: String,
    recursive: Option<bool>,
    extensions: Option<Vec<String>>,
}

async fn scan_directory(State(st): St, Body(b): Body<ScanBody>) -> ApiResult {
    ok(st.sessions.scan_directory(&b.root_path, b.recursive.unwrap_or(true), b.extensions).await?)
}

// ---------------------------------------------------------------------------------------------
// Watcher
// ---------------------------------------------------------------------------------------------

async fn watcher_status(State(st): St) -> ApiResult {
    ok(st.watcher.status().await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrementalParams {
    directory: Option<String>,
    auto_train: Option<bool>,
}

async fn scan_incremental(State(st): St, Q(p): Q<IncrementalParams>) -> ApiResult {
    let dir = p.directory.filter(|d| !d.trim().is_empty()).ok_or_else(|| {
        ApiError::BadRequest("the directory query parameter is required, e.g. ?directory=/photos/2024&auto_train=false".into())
    })?;
    let canon = st.sessions.library().resolve_dir(std::path::Path::new(&dir)).map_err(crate::sessions::SessionError::from)?;
    let report = st.watcher.scan(canon, p.auto_train.unwrap_or(false)).await.map_err(ApiError::Internal)?;
    ok(report)
}

async fn pipeline_status(State(st): St) -> ApiResult {
    let mut v = serde_json::to_value(st.pipeline.status()).unwrap_or_default();
    v["points"] = json!(st.pipeline.points().await);
    ok(v)
}

// ---------------------------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------------------------

impl From<crate::search::SearchError> for ApiError {
    fn from(e: crate::search::SearchError) -> Self {
        use crate::search::SearchError as E;
        match e {
            E::BadRequest(m) => ApiError::BadRequest(m),
            E::NotFound(m) => ApiError::NotFound(m),
            E::Unavailable(m) => ApiError::Unavailable(m),
            E::Internal(m) => ApiError::Internal(m),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WordsBody {
    query: String,
    limit: Option<usize>,
    offset: Option<usize>,
    #[serde(default)]
    filters: crate::search::Filters,
}

async fn search_words(State(st): St, Body(b): Body<WordsBody>) -> ApiResult {
    ok(st.search.by_words(&b.query, b.limit.unwrap_or(20), b.offset.unwrap_or(0), &b.filters).await?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImageBody {
    path: String,
    limit: Option<usize>,
    offset: Option<usize>,
    #[serde(default)]
    filters: crate::search::Filters,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PageParams {
    limit: Option<usize>,
    offset: Option<usize>,
    exclude_self: Option<bool>,
    session_id: Option<i64>,
    category_id: Option<i64>,
    path_prefix: Option<String>,
}

impl PageParams {
    fn filters(&self) -> crate::search::Filters {
        crate::search::Filters { session_id: self.session_id, category_id: self.category_id, path_prefix: self.path_prefix.clone(), ..Default::default() }
    }
}

/// JSON `{path, limit, offset, filters}`, or the image bytes themselves with
/// `?limit=&offset=` in the query.
async fn search_image(State(st): St, Q(p): Q<PageParams>, bytes: axum::body::Bytes) -> ApiResult {
    // JSON `{path…}` or raw image bytes: decided by the body itself (no image format starts
    // with `{`), so clients that send no or a wrong Content-Type still work.
    let is_json = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if is_json {
        let b: ImageBody = serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))?;
        if b.path.trim().is_empty() {
            return Err(ApiError::BadRequest("path must not be empty".into()));
        }
        let r = st.search.by_image(crate::search::ImageQuery::Path(b.path), b.limit.unwrap_or(20), b.offset.unwrap_or(0), &b.filters).await?;
        return ok(r);
    }
    let r = st.search.by_image(crate::search::ImageQuery::Bytes(bytes.to_vec()), p.limit.unwrap_or(20), p.offset.unwrap_or(0), &p.filters()).await?;
    ok(r)
}

async fn search_similar(State(st): St, Id(id): Id, Q(p): Q<PageParams>) -> ApiResult {
    ok(st.search.similar(id, p.exclude_self.unwrap_or(true), p.limit.unwrap_or(20), p.offset.unwrap_or(0), &p.filters()).await?)
}
