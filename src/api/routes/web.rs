//! pixdex's own web app, shipped inside the binary (sources in `web/`, no build step): the
//! page at `/`, its script and style under `/app/`. These carry no data, so the TCP guard lets
//! them through without the token; the page signs in through the login link.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::super::ApiError;

const INDEX: &str = include_str!("../../../web/index.html");
const APP_JS: &str = include_str!("../../../web/app.js");
const APP_CSS: &str = include_str!("../../../web/app.css");
const FAVICON: &str = include_str!("../../../web/favicon.svg");

/// Strict CSP: only our own script, style and images (thumbnails, data URLs).
const CSP: &str =
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

pub(crate) async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache"), (header::CONTENT_SECURITY_POLICY, CSP)], INDEX).into_response()
}

pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    let (ct, body) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "app.css" => ("text/css; charset=utf-8", APP_CSS),
        _ => return ApiError::NotFound(format!("no web asset {file:?}")).into_response(),
    };
    ([(header::CONTENT_TYPE, ct), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

pub(crate) async fn favicon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "max-age=86400")], FAVICON).into_response()
}
