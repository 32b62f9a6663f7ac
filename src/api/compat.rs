//! The replaced service's request and response shapes (github MacPhobos/image-search-service,
//! as its SvelteKit UI reads them), translated from and to pixdex's own types. pixdex's types
//! stay pixdex's: this module only adds the original's fields beside them (a search hit keeps
//! `assetId`, `path`, `labels` and gains `asset{…}`, `highlights`), accepts the original's
//! spellings (`root_path`, `filters.dateFrom`, `categoryId` as a string), and answers the
//! original's feature routes pixdex does not have (faces, people, queues, vectors admin) with a
//! 404 naming the feature.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Map, Value, json};

use super::extract::{Body, RawBody, is_json};
use super::{ApiError, ApiResult, AppState, St, ok};
use crate::catalog::{AssetRow, Job, rows_ts};
use crate::model::JobStatus;
use crate::search::{Filters, SearchResults};

/// An asset as the replaced UI reads it (`Asset` in its generated types), plus pixdex's fields.
pub fn asset(a: &AssetRow) -> Value {
    let id = a.asset.id;
    let filename = a.asset.path.rsplit('/').next().unwrap_or_default();
    json!({
        "id": id,
        "path": a.asset.path,
        "filename": filename,
        "url": format!("/api/v1/images/{id}/full"),
        "thumbnailUrl": format!("/api/v1/images/{id}/thumbnail"),
        "createdAt": rows_ts(a.created_at),
        "indexedAt": a.asset.indexed_at.map(rows_ts),
        "takenAt": Value::Null,
        "camera": Value::Null,
        "location": Value::Null,
        "width": a.asset.width,
        "height": a.asset.height,
        "fileSize": a.asset.file_size,
        "fileModifiedAt": rows_ts(a.asset.file_modified_at),
        "categoryId": a.category_id,
        "labels": a.labels,
    })
}

/// A job with the original's required fields (`progress`, `imagePath`, `processingTimeMs`,
/// `skipReason`, `rqJobId`) beside pixdex's.
pub fn job(j: &Job) -> Value {
    let mut v = serde_json::to_value(j).unwrap_or_default();
    let progress = match j.status {
        JobStatus::Completed | JobStatus::Skipped | JobStatus::Failed => 100,
        JobStatus::Running => 50,
        JobStatus::Pending | JobStatus::Cancelled => 0,
    };
    let took = match (j.started_at, j.completed_at) {
        (Some(s), Some(c)) if c >= s => Some(c - s),
        _ => None,
    };
    v["imagePath"] = json!(j.path);
    v["progress"] = json!(progress);
    v["processingTimeMs"] = json!(took);
    v["skipReason"] = json!(if j.status == JobStatus::Skipped { j.error_message.clone() } else { None });
    v["rqJobId"] = Value::Null;
    v
}

/// Search results in both vocabularies: pixdex's hit fields and the original's
/// `{asset, score, highlights}`; `query` echoes what was searched.
pub async fn results(st: &AppState, r: SearchResults, query: String) -> ApiResult {
    let ids: Vec<i64> = r.results.iter().map(|h| h.asset_id).collect();
    let assets = st.sessions.catalog().assets_by_id(&ids).await.map_err(crate::sessions::SessionError::from)?;
    let mut v = serde_json::to_value(&r).unwrap_or_default();
    if let Some(items) = v["results"].as_array_mut() {
        for item in items.iter_mut() {
            let id = item["assetId"].as_i64().unwrap_or_default();
            item["asset"] = assets.get(&id).map(asset).unwrap_or(Value::Null);
            item["highlights"] = json!([]);
        }
        // A hit whose asset vanished between the search and now is dropped.
        items.retain(|i| !i["asset"].is_null());
    }
    v["query"] = json!(query);
    ok(v)
}

/// `POST /api/v1/search`: pixdex's `{query, limit, offset, filters}` and the original's
/// (`filters` as strings: `dateFrom`, `dateTo` as YYYY-MM-DD, `categoryId` "3"; top-level
/// `categoryId`).
pub async fn search(State(st): St, Body(body): Body<Value>) -> ApiResult {
    let _slot = st.search_slot()?;
    let obj = body.as_object().ok_or_else(|| ApiError::BadRequest("the body must be a JSON object like {\"query\": \"cat\"}".into()))?;
    let mut query = None;
    let (mut limit, mut offset) = (20usize, 0usize);
    let mut filters = Filters::default();
    for (k, v) in obj {
        match k.as_str() {
            "query" => query = Some(v.as_str().ok_or_else(|| ApiError::BadRequest("query must be a string".into()))?.to_string()),
            "limit" => limit = uint(v, "limit")?,
            "offset" => offset = uint(v, "offset")?,
            "filters" => {
                if !v.is_null() {
                    translate_filters(v, &mut filters)?;
                }
            }
            "categoryId" | "category_id" => filters.category_id = id_value(v, k)?,
            other => return Err(ApiError::BadRequest(format!("unknown field {other:?}; the body takes query, limit, offset, filters, categoryId"))),
        }
    }
    let query = query.ok_or_else(|| ApiError::BadRequest("query is required, e.g. {\"query\": \"cat\"}".into()))?;
    let r = st.search.by_words(&query, limit, offset, &filters).await?;
    results(&st, r, query).await
}

fn uint(v: &Value, key: &str) -> Result<usize, ApiError> {
    v.as_u64().map(|n| n as usize).ok_or_else(|| ApiError::BadRequest(format!("{key} must be a whole number ≥ 0")))
}

/// A number, or a string holding one (the replaced UI sends `categoryId: "3"`).
fn id_value(v: &Value, key: &str) -> Result<Option<i64>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_i64().map(Some).ok_or_else(|| ApiError::BadRequest(format!("{key} must be an id"))),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s.trim().parse::<i64>().map(Some).map_err(|_| ApiError::BadRequest(format!("{key} {s:?} is not an id (a number)"))),
        _ => Err(ApiError::BadRequest(format!("{key} must be an id (a number)"))),
    }
}

/// `YYYY-MM-DD` (start or end of that UTC day), RFC 3339, or Unix milliseconds.
fn date_value(v: &Value, key: &str, end_of_day: bool) -> Result<Option<Value>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) if s.len() == 10 => {
            let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|e| ApiError::BadRequest(format!("filters.{key}: {s:?} is not a date like 2024-05-31 ({e})")))?;
            let t = if end_of_day { d.and_hms_milli_opt(23, 59, 59, 999) } else { d.and_hms_opt(0, 0, 0) }.expect("valid time");
            Ok(Some(json!(t.and_utc().timestamp_millis())))
        }
        Value::String(_) => Ok(Some(v.clone())),
        Value::Number(n) if n.is_i64() => Ok(Some(v.clone())),
        other => Err(ApiError::BadRequest(format!(
            "filters.{key}: {other} is not a date; give a date like \"2024-05-31\", an RFC 3339 time, or Unix milliseconds (an integer)"
        ))),
    }
}

fn translate_filters(v: &Value, f: &mut Filters) -> Result<(), ApiError> {
    let obj: &Map<String, Value> = v.as_object().ok_or_else(|| ApiError::BadRequest("filters must be an object".into()))?;
    for (k, v) in obj {
        match k.as_str() {
            "categoryId" | "category_id" => f.category_id = id_value(v, "filters.categoryId")?,
            "sessionId" | "session_id" => f.session_id = id_value(v, "filters.sessionId")?,
            "pathPrefix" | "path_prefix" => {
                f.path_prefix = match v {
                    Value::Null => None,
                    Value::String(p) => Some(p.clone()),
                    other => {
                        return Err(ApiError::BadRequest(format!(
                            "filters.{k}: {other} is not a path; give a folder inside the library as a string, e.g. \"/photos/2024\""
                        )));
                    }
                }
            }
            // The replaced service's photo-date filters: pixdex dates images by when they were
            // indexed (README: search filters).
            "dateFrom" | "from_date" | "indexedFrom" => f.indexed_from = date_value(v, k, false)?,
            "dateTo" | "to_date" | "indexedTo" => f.indexed_to = date_value(v, k, true)?,
            "personId" | "person_id" => {
                if !(v.is_null() || v.as_str() == Some("")) {
                    return Err(ApiError::BadRequest(
                        "filters.personId: pixdex has no face recognition, so it cannot filter by person; remove the filter".into(),
                    ));
                }
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown filter {other:?}; filters are categoryId, sessionId, pathPrefix, dateFrom/indexedFrom, dateTo/indexedTo"
                )));
            }
        }
    }
    Ok(())
}

/// `POST /api/v1/search/image` as the original: multipart with the image in field `file`
/// (and `limit`, `offset`, `categoryId` fields). Called by `routes::search` for multipart bodies.
pub async fn search_multipart(st: Arc<AppState>, req: Request) -> ApiResult {
    let mut mp =
        axum::extract::Multipart::from_request(req, &st).await.map_err(|e| ApiError::BadRequest(format!("malformed multipart body: {}", e.body_text())))?;
    let (mut file, mut name) = (None, String::from("upload"));
    let (mut limit, mut offset) = (20usize, 0usize);
    let mut filters = Filters::default();
    while let Some(field) = mp.next_field().await.map_err(multipart_error)? {
        let key = field.name().unwrap_or_default().to_string();
        match key.as_str() {
            "file" => {
                if let Some(ct) = field.content_type()
                    && !ct.starts_with("image/")
                    && ct != "application/octet-stream"
                {
                    return Err(ApiError::BadRequest(format!("field file has type {ct}; upload a JPEG, PNG or WebP image")));
                }
                name = field.file_name().unwrap_or("upload").to_string();
                file = Some(field.bytes().await.map_err(multipart_error)?);
            }
            "limit" | "offset" | "categoryId" | "category_id" => {
                let text = field.text().await.map_err(multipart_error)?;
                let n = text.trim().parse::<i64>().map_err(|_| ApiError::BadRequest(format!("field {key} must be a number, got {text:?}")))?;
                match key.as_str() {
                    "limit" => limit = n.max(0) as usize,
                    "offset" => offset = n.max(0) as usize,
                    _ => filters.category_id = Some(n),
                }
            }
            other => return Err(ApiError::BadRequest(format!("unknown form field {other:?}; send file (the image), limit, offset, categoryId"))),
        }
    }
    let bytes = file.ok_or_else(|| ApiError::BadRequest("the form has no field file: send the image as multipart field \"file\"".into()))?;
    let r = st.search.by_image(crate::search::ImageQuery::Bytes(bytes.to_vec()), limit, offset, &filters).await?;
    results(&st, r, format!("<image: {name}>")).await
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("the upload is over the limit (daemon.max_upload_mb); send a smaller image or raise the limit".into())
    } else {
        ApiError::BadRequest(format!("malformed multipart body: {}", e.body_text()))
    }
}

/// Whether the request carries a multipart form.
pub fn is_multipart(req: &Request) -> bool {
    req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("multipart/form-data"))
}

/// Raw bytes or JSON, for `routes::search`.
pub async fn body_bytes(st: &Arc<AppState>, req: Request) -> Result<(bool, axum::body::Bytes), ApiError> {
    let json = is_json(req.headers());
    let RawBody(b) = RawBody::from_request(req, st).await?;
    Ok((json, b))
}

/// Routes of the replaced service's features pixdex does not have: 404 naming the feature
/// (and the two empty lists its search page reads on load, so that page renders cleanly).
pub fn absent_features() -> Router<Arc<AppState>> {
    Router::new()
        .route("/faces/persons", get(|| async { ok(json!({"items": [], "total": 0, "page": 1, "pageSize": 1000, "hasMore": false})) }))
        .route("/faces/assets/{id}", get(|| async { ok(json!({"items": [], "total": 0, "page": 1, "pageSize": 0, "hasMore": false})) }))
        .route("/faces/{*rest}", any(|| absent("face detection and recognition (faces, persons, clusters, suggestions)")))
        .route("/people", any(|| absent("people (face recognition)")))
        .route("/people/{*rest}", any(|| absent("people (face recognition)")))
        .route("/queues", any(|| absent("job queues (pixdex has no RQ: its pipeline runs in the daemon; see GET /api/v1/training/pipeline)")))
        .route("/queues/{*rest}", any(|| absent("job queues (see GET /api/v1/training/pipeline)")))
        .route("/workers", any(|| absent("RQ workers (see GET /api/v1/training/pipeline)")))
        .route("/vectors/{*rest}", any(|| absent("vector administration")))
        .route("/config/{*rest}", any(|| absent("face-matching configuration")))
        .route("/admin/{*rest}", any(|| absent("administration")))
}

/// `restart-faces`, `restart-clustering` of a training session.
pub async fn no_faces() -> Response {
    absent("face detection and clustering").await
}

async fn absent(feature: &str) -> Response {
    ApiError::NotFound(format!("pixdex does not have {feature}; this route of the replaced service is not served")).into_response()
}
