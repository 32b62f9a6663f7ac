//! Extractors whose rejections are 400s with a reason, in the API's error shape.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

/// A JSON body, whatever the Content-Type says; a body that does not parse is a 400 naming the
/// problem (field, line, column).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {}", e.body_text())))?;
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
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        raw.parse::<i64>().map(Id).map_err(|_| ApiError::BadRequest(format!("{raw:?} is not an id (a number)")))
    }
}
