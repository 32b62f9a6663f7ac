//! The admin API: HTTP/1.1 + JSON, served on the control socket (and on TCP when configured,
//! behind `guard`). pixdex's own routes and the replaced service's routes (shapes translated in
//! `compat`) share one router; one module per resource under `routes/`. Handlers only parse,
//! call the domain (`sessions`, `search`, `thumbs`…) and render: no policy lives here.
//! JSON bodies are camelCase, query parameters snake_case, errors `{"detail", "message"}`.

pub mod client;
pub mod compat;
mod error;
mod extract;
pub mod guard;
mod routes;
pub mod serve;
pub mod wire;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use error::ApiError;

use crate::sessions::Sessions;

pub struct AppState {
    pub sessions: Sessions,
    pub watcher: crate::watcher::Watcher,
    pub pipeline: crate::pipeline::Pipeline,
    pub search: crate::search::Search,
    /// Loads the configured model now (`POST /api/v1/model/reload`).
    pub model_reload: crate::switch::ModelReload,
    pub thumbs: crate::thumbs::Thumbs,
    pub events: crate::events::Events,
    pub version: &'static str,
    pub max_upload_bytes: usize,
    /// `daemon.max_concurrent_searches`: a search that finds none free is answered 503.
    pub search_slots: Arc<tokio::sync::Semaphore>,
    /// `daemon.max_in_flight_requests` and `daemon.request_timeout_secs`.
    pub requests: Arc<tokio::sync::Semaphore>,
    pub request_timeout: std::time::Duration,
}

impl AppState {
    /// A search slot, or 503 + Retry-After when every one is taken (searches are CPU-heavy:
    /// queueing more behind them would only make every answer late).
    pub(crate) fn search_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.search_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Unavailable("too many searches are running (daemon.max_concurrent_searches); retry in a moment".into()))
    }
}

pub(crate) type St = State<Arc<AppState>>;
pub(crate) type ApiResult = Result<Response, ApiError>;

pub fn router(state: Arc<AppState>) -> Router {
    use routes::{categories, directories, events, images, library, metrics, search, sessions, web};
    let upload = DefaultBodyLimit::max(state.max_upload_bytes);
    let training = Router::new()
        .route("/sessions", get(sessions::list_sessions).post(sessions::create_session))
        .route("/sessions/{id}", get(sessions::get_session).patch(sessions::patch_session).delete(sessions::delete_session))
        .route("/sessions/{id}/subdirectories", get(sessions::get_subdirs).patch(sessions::patch_subdirs))
        .route("/sessions/{id}/start", post(sessions::start))
        .route("/sessions/{id}/pause", post(sessions::pause))
        .route("/sessions/{id}/resume", post(sessions::start))
        .route("/sessions/{id}/cancel", post(sessions::cancel))
        .route("/sessions/{id}/restart", post(sessions::restart))
        .route("/sessions/{id}/restart-training", post(directories::restart_training))
        .route("/sessions/{id}/restart-faces", post(compat::no_faces))
        .route("/sessions/{id}/restart-clustering", post(compat::no_faces))
        .route("/sessions/{id}/validate", post(sessions::validate))
        .route("/sessions/{id}/progress", get(sessions::progress))
        .route("/sessions/{id}/progress-unified", get(directories::progress_unified))
        .route("/sessions/{id}/jobs", get(sessions::jobs))
        .route("/admission", post(directories::admission_preview))
        .route("/directories", get(directories::list_directories))
        .route("/directories/scan", post(directories::scan_directory))
        .route("/directories/preview", get(directories::preview))
        .route("/directories/preview/thumbnail", get(directories::preview_thumbnail))
        .route("/directories/unignore", post(directories::unignore))
        .route("/directories/ignore", post(directories::ignore).delete(directories::unignore))
        .route("/directories/ignored", get(directories::ignored))
        .route("/scan/incremental", post(sessions::scan_incremental))
        .route("/watcher", get(sessions::watcher_status))
        .route("/pipeline", get(sessions::pipeline_status));
    let search_routes = Router::new()
        .route("/", post(compat::search))
        .route("/image", post(search::search_image).layer(upload))
        .route("/similar/{id}", get(search::search_similar));
    Router::new()
        .nest("/api/v1/training", training)
        .nest("/api/v1/search", search_routes)
        .route("/api/v1/categories", get(categories::list).post(categories::create))
        .route("/api/v1/categories/{id}", get(categories::get_one).patch(categories::patch).put(categories::patch).delete(categories::delete))
        .route("/api/v1/images/{id}/thumbnail", get(images::thumbnail))
        .route("/api/v1/images/{id}/full", get(images::full))
        .route("/api/v1/images/thumbnails/batch", post(images::thumbnails_batch))
        .route("/api/v1/assets", get(images::list_assets))
        .route("/api/v1/assets/{id}", get(images::get_asset))
        .route("/api/v1/library", get(library::overview))
        .route("/api/v1/library/emptied", post(library::emptied))
        .route("/api/v1/models", get(library::models))
        .route("/api/v1/model/reload", post(library::reload_model))
        .route("/api/v1/duplicates", get(library::duplicates))
        .route("/api/v1/events", get(events::stream))
        .route("/api/v1/health", get(health))
        .route("/health", get(health))
        .route("/metrics", get(metrics::metrics))
        .route("/", get(web::index))
        .route("/index.html", get(web::index))
        .route("/app/{file}", get(web::asset))
        .route("/favicon.svg", get(web::favicon))
        .nest("/api/v1", compat::absent_features())
        .fallback(|req: Request| async move {
            ApiError::NotFound(format!("no route {} {}: see README's API table for what pixdex serves", req.method(), req.uri().path())).into_response()
        })
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError::MethodNotAllowed(format!("{} is not allowed on {}", req.method(), req.uri().path())).into_response()
        })
        .layer(middleware::from_fn_with_state(state.clone(), bounds))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// Bounds on every request: at most `daemon.max_in_flight_requests` at once (503 beyond, never
/// a queue), and an answer within `daemon.request_timeout_secs` (503 past it; the live event
/// stream is exempt: it is meant to stay open).
async fn bounds(State(st): St, req: Request, next: Next) -> Response {
    let Ok(_permit) = st.requests.clone().try_acquire_owned() else {
        return ApiError::Unavailable("too many requests in flight (daemon.max_in_flight_requests); retry in a moment".into()).into_response();
    };
    if req.uri().path() == "/api/v1/events" {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    match tokio::time::timeout(st.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(%path, timeout_s = st.request_timeout.as_secs(), "request timed out");
            ApiError::Unavailable(format!("{path} took longer than daemon.request_timeout_secs ({} s); retry later", st.request_timeout.as_secs()))
                .into_response()
        }
    }
}

/// Logs every request, and turns any error answer that is not JSON yet (a framework rejection,
/// a body over the limit…) into the API's error shape: JSON everywhere.
async fn json_errors(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let t = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    tracing::debug!(%method, %path, status = status.as_u16(), elapsed_ms = t.elapsed().as_millis() as u64, "request");
    let is_json = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let detail = if text.trim().is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text.trim().to_string() };
    let mut out = (parts.status, Json(json!({"detail": detail, "message": detail}))).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

pub(crate) fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

/// Liveness and what serves: see [`crate::events::health`] (the live snapshot carries the
/// same report).
async fn health(State(st): St) -> ApiResult {
    let assets = st.sessions.catalog().library_version().await.map(|v| v.assets).map_err(|e| e.to_string());
    let p = st.pipeline.status();
    let store = st.pipeline.store_points().await.map(|r| r.map_err(|e| e.to_string()));
    let w = st.watcher.status().await;
    let models = crate::events::models_report(st.sessions.catalog(), &p).await;
    let mut h = crate::events::health(st.sessions.catalog(), assets, &p, store, &w, models);
    h["version"] = json!(st.version);
    ok(h)
}
