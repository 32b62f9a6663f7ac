//! API errors: one HTTP status per kind of fault, body `{"detail": ..., "message": ...}` plus
//! context.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::{Cause, Classify};
use crate::model::{Action, SessionStatus};
use crate::sessions::SessionError;

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    /// The TCP listener's token is missing or wrong (401).
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed(String),
    Conflict {
        detail: String,
        current: Option<SessionStatus>,
        allowed: Vec<Action>,
    },
    Unprocessable(Value),
    /// The body is bigger than `daemon.max_upload_mb` (413).
    PayloadTooLarge(String),
    /// A JSON route got a body of another type (415).
    UnsupportedMediaType(String),
    /// A capability is not available (e.g. the model weights are missing): 503.
    Unavailable(String),
    Internal(String),
}

impl ApiError {
    /// The one place a cause becomes a status: 400 / 403 / 404 / 409 / 503 (+ Retry-After) /
    /// 500. Errors with more to say (a conflict's allowed actions, admission diagnostics) are
    /// answered by their own `From` first.
    pub fn by_cause<E: Classify + std::fmt::Display>(e: &E) -> ApiError {
        let detail = e.to_string();
        match e.cause() {
            Cause::UserInput => ApiError::BadRequest(detail),
            Cause::Forbidden => ApiError::Forbidden(detail),
            Cause::NotFound => ApiError::NotFound(detail),
            Cause::Conflict => ApiError::Conflict { detail, current: None, allowed: vec![] },
            Cause::Transient => {
                tracing::warn!(error = %detail, "request refused for now: a dependency is unavailable");
                ApiError::Unavailable(detail)
            }
            Cause::Bug => {
                tracing::error!(error = %detail, "request failed");
                ApiError::Internal(detail)
            }
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Conflict { detail, current, allowed } => ApiError::Conflict { detail, current, allowed },
            SessionError::NotAdmissible(a) => ApiError::Unprocessable(json!({"detail": a.detail, "canStart": false, "diagnostics": a.diagnostics})),
            e => ApiError::by_cause(&e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, mut body) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, json!({"detail": m})),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, json!({"detail": m})),
            ApiError::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, json!({"detail": m})),
            ApiError::UnsupportedMediaType(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, json!({"detail": m})),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, json!({"detail": m})),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, json!({"detail": m})),
            ApiError::MethodNotAllowed(m) => (StatusCode::METHOD_NOT_ALLOWED, json!({"detail": m})),
            ApiError::Conflict { detail, current, allowed } => {
                (StatusCode::CONFLICT, json!({"detail": detail, "currentStatus": current, "allowedActions": allowed}))
            }
            ApiError::Unprocessable(v) => (StatusCode::UNPROCESSABLE_ENTITY, v),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, json!({"detail": m})),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, json!({"detail": m})),
        };
        // The replaced service's clients read `detail`; others read `message`: both are there.
        if let Some(d) = body.get("detail").and_then(|d| d.as_str()).map(str::to_string) {
            body["message"] = Value::String(d);
        }
        let mut resp = (code, Json(body)).into_response();
        if code == StatusCode::SERVICE_UNAVAILABLE {
            // Transient: worth retrying soon.
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        }
        resp
    }
}
