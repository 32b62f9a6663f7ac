//! Images and assets: thumbnails (cached, ETag), the original bytes of a catalogued asset
//! (never an arbitrary path: the catalog names the file, and it must still resolve inside the
//! library roots), batch thumbnails as data URLs, and asset listings.

use std::path::Path;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::super::compat;
use super::super::extract::{Body, Id, Page, Q};
use super::super::{ApiError, ApiResult, AppState, St, ok};
use crate::catalog::AssetRow;
use crate::library::LibraryError;
use crate::sessions::SessionError;

/// The SVG placeholder for an image that cannot be shown, with the reason in a header.
pub(crate) fn placeholder(reason: &str) -> Response {
    let one_line: String = reason.chars().filter(|c| !c.is_control()).take(300).collect();
    let mut r = ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")], crate::thumbs::placeholder_svg(reason)).into_response();
    if let Ok(v) = HeaderValue::from_str(&one_line.replace(|c: char| !c.is_ascii(), "?")) {
        r.headers_mut().insert("x-pixdex-image-error", v);
    }
    r
}

async fn asset_or_404(st: &AppState, id: i64) -> Result<AssetRow, ApiError> {
    st.sessions
        .catalog()
        .asset(id)
        .await
        .map_err(SessionError::from)?
        .ok_or_else(|| ApiError::NotFound(format!("Asset {id} not found (it was never catalogued, or its file was deleted)")))
}

/// The asset's file, opened beneath its library root with the check in the same step (a
/// symlink swapped in since cataloguing, or between any check and the read, cannot lead out),
/// with its size and mtime from the open file; the catalogued path names it.
fn open_asset(st: &AppState, a: &AssetRow) -> Result<(std::fs::File, std::path::PathBuf, u64, i64), ApiError> {
    let path = std::path::PathBuf::from(&a.asset.path);
    let file = st.sessions.library().open_file(&path).map_err(|e| match e {
        LibraryError::NotFound { .. } | LibraryError::NotAFile { .. } => {
            ApiError::NotFound(format!("Original image not found: {} (the watcher will drop it from the catalog)", a.asset.path))
        }
        e => SessionError::from(e).into(),
    })?;
    let meta = file.metadata().map_err(|e| ApiError::NotFound(format!("Original image not found: {} ({e})", a.asset.path)))?;
    Ok((file, path, meta.len(), crate::library::mtime_ms(&meta)))
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
}

/// `GET /api/v1/images/{id}/thumbnail`: 256 px JPEG; a file that cannot be decoded gets a
/// placeholder (200, `x-pixdex-image-error` says why, with the job's failure when there is one).
pub(crate) async fn thumbnail(State(st): St, Id(id): Id, headers: HeaderMap) -> ApiResult {
    let a = asset_or_404(&st, id).await?;
    let (file, path, size, mtime) = open_asset(&st, &a)?;
    let size = size as i64;
    let etag = format!("\"{id}-{size}-{mtime}\"");
    if not_modified(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let thumbs = st.thumbs.clone();
    let got = tokio::task::spawn_blocking(move || thumbs.get(id, file, &path, size, mtime))
        .await
        .map_err(|e| ApiError::Internal(format!("thumbnail panicked: {e}")))?;
    match got {
        Ok(t) => {
            Ok(([(header::CONTENT_TYPE, "image/jpeg".to_string()), (header::ETAG, t.etag), (header::CACHE_CONTROL, "private, no-cache".to_string())], t.bytes)
                .into_response())
        }
        Err(crate::thumbs::ThumbError::Decode(e)) => {
            let job = st.sessions.catalog().asset_failure(id).await.ok().flatten();
            let reason = match job {
                Some(j) => format!("{e} (indexing failed: {j})"),
                None => e.to_string(),
            };
            Ok(placeholder(&reason))
        }
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// `GET /api/v1/images/{id}/full`: the catalogued file's bytes.
pub(crate) async fn full(State(st): St, Id(id): Id, headers: HeaderMap) -> ApiResult {
    let a = asset_or_404(&st, id).await?;
    let (file, _, size, mtime) = open_asset(&st, &a)?;
    let limit = st.search.limits().max_file_bytes;
    let etag = format!("\"f{id}-{size}-{mtime}\"");
    if not_modified(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    if size > limit {
        return Err(ApiError::PayloadTooLarge(format!("{} is {size} bytes, over pipeline.max_file_bytes ({limit})", a.asset.path)));
    }
    // The very file that was opened (and checked) is read, at most the limit.
    let bytes = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::with_capacity(size as usize);
        std::io::Read::read_to_end(&mut std::io::Read::take(file, limit), &mut bytes).map(|_| bytes)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::NotFound(format!("Original image not readable: {} ({e})", a.asset.path)))?;
    let ct = crate::decode::content_type(&bytes).unwrap_or("application/octet-stream");
    Ok(([(header::CONTENT_TYPE, ct.to_string()), (header::ETAG, etag), (header::CACHE_CONTROL, "private, no-cache".to_string())], bytes).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct BatchBody {
    asset_ids: Vec<i64>,
}

/// `POST /api/v1/images/thumbnails/batch`: `{assetIds}` (1–100) → data URLs.
pub(crate) async fn thumbnails_batch(State(st): St, Body(b): Body<BatchBody>) -> ApiResult {
    if b.asset_ids.is_empty() || b.asset_ids.len() > 100 {
        return Err(ApiError::Unprocessable(json!({"detail": format!("assetIds must list 1 to 100 ids, got {}", b.asset_ids.len())})));
    }
    let mut thumbs = Map::new();
    let mut not_found = Vec::new();
    for id in b.asset_ids {
        let got = match st.sessions.catalog().asset(id).await.map_err(SessionError::from)? {
            Some(a) => match open_asset(&st, &a) {
                Ok((file, path, size, mtime)) => {
                    let t = st.thumbs.clone();
                    tokio::task::spawn_blocking(move || t.get(id, file, &path, size as i64, mtime).ok()).await.ok().flatten()
                }
                Err(_) => None,
            },
            None => None,
        };
        match got {
            Some(t) => {
                thumbs.insert(id.to_string(), json!(format!("data:image/jpeg;base64,{}", base64(&t.bytes))));
            }
            None => {
                thumbs.insert(id.to_string(), Value::Null);
                not_found.push(id);
            }
        }
    }
    ok(json!({"thumbnails": thumbs, "found": thumbs.len() - not_found.len(), "notFound": not_found}))
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if c.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AssetParams {
    page: Option<i64>,
    page_size: Option<i64>,
    path_prefix: Option<String>,
    /// Keyset paging: the `nextCursor` of the previous page (deep pages cost what the first does).
    cursor: Option<i64>,
}

pub(crate) async fn list_assets(State(st): St, Q(p): Q<AssetParams>) -> ApiResult {
    let page = Page::new(p.page, p.page_size, 50, 1000)?;
    let under = match p.path_prefix.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(d) => Some(st.sessions.library().resolve_dir(Path::new(d)).map_err(SessionError::from)?.to_string_lossy().into_owned()),
        None => None,
    };
    let (items, total) = st.sessions.catalog().list_assets(under.as_deref(), page.size, page.offset(), p.cursor).await.map_err(SessionError::from)?;
    // The cursor for the next page (`?cursor=`), while there may be one.
    let next = (items.len() as i64 == page.size).then(|| items.last().map(|a| a.asset.id)).flatten();
    let items: Vec<Value> = items.iter().map(compat::asset).collect();
    page.answer_with(items, total, serde_json::json!({"nextCursor": next}))
}

pub(crate) async fn get_asset(State(st): St, Id(id): Id) -> ApiResult {
    ok(compat::asset(&asset_or_404(&st, id).await?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }
}
