//! Extractors whose rejections are 400s with a reason, in the API's error shape.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

/// A JSON body: `Content-Type: application/json` (else 415, which also closes the cross-site
/// form POST: a form cannot send that type); a body that does not parse is a 400 naming the
/// problem (field, line, column); one over the size limit a 413.
pub struct Body<T>(pub T);

/// Whether the request says its body is JSON (`application/json`, `application/*+json`).
pub fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .is_some_and(|m| m == "application/json" || (m.starts_with("application/") && m.ends_with("+json")))
}

/// Map a body-read failure: too large → 413, else 400.
pub fn body_error(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("the request body is over the upload limit (daemon.max_upload_mb); send a smaller image or raise the limit".into())
    } else {
        ApiError::BadRequest(format!("cannot read the request body: {}", e.body_text()))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            let got = req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("none").to_string();
            return Err(ApiError::UnsupportedMediaType(format!("this route takes a JSON body: send Content-Type: application/json (got {got})")));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(body_error)?;
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(ApiError::BadRequest("the request body is empty; this route takes a JSON body".into()));
        }
        serde_json::from_slice(&bytes).map(Body).map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
    }
}

/// Query parameters; unknown or mistyped ones are a 400.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|e| ApiError::BadRequest(format!("invalid query parameters: {}", e.body_text())))
    }
}

/// The `{id}` path segment as a number.
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        raw.parse::<i64>().map(Id).map_err(|_| ApiError::BadRequest(format!("{raw:?} is not an id (a number)")))
    }
}

/// The raw body (uploaded image bytes); over the size limit → 413 JSON.
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(req, state).await.map(RawBody).map_err(body_error)
    }
}

/// A validated page of a listing: `page` 1..=10^9 (so `page × page_size` cannot overflow or
/// wrap around), `page_size` 1..=the route's maximum; and the paginated answer every listing
/// gives, `{items, total, page, pageSize, hasMore}`.
pub struct Page {
    pub page: i64,
    pub size: i64,
}

impl Page {
    pub const MAX_PAGE: i64 = 1_000_000_000;

    pub fn new(page: Option<i64>, size: Option<i64>, default_size: i64, max_size: i64) -> Result<Page, ApiError> {
        let (page, size) = (page.unwrap_or(1), size.unwrap_or(default_size));
        if !(1..=Self::MAX_PAGE).contains(&page) || !(1..=max_size).contains(&size) {
            return Err(ApiError::BadRequest(format!(
                "page must be between 1 and {} and page_size between 1 and {max_size} (got {page}, {size})",
                Self::MAX_PAGE
            )));
        }
        Ok(Page { page, size })
    }

    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.size
    }

    pub fn answer(&self, items: impl serde::Serialize, total: i64) -> super::ApiResult {
        super::ok(self.body(items, total))
    }

    /// `answer`, with the fields of `extra` (an object) added.
    pub fn answer_with(&self, items: impl serde::Serialize, total: i64, extra: serde_json::Value) -> super::ApiResult {
        let mut v = self.body(items, total);
        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        super::ok(v)
    }

    fn body(&self, items: impl serde::Serialize, total: i64) -> serde_json::Value {
        serde_json::json!({"items": items, "total": total, "page": self.page, "pageSize": self.size, "hasMore": self.page * self.size < total})
    }
}
