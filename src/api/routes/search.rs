//! Search: pixdex's own routes under `/api/v1/search` (the replaced service's `POST
//! /api/v1/search` shape lives in `compat`).

use axum::extract::{Request, State};
use serde::Deserialize;

use super::super::compat;
use super::super::extract::{Id, Q};
use super::super::{ApiError, ApiResult, St};

// ---------------------------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------------------------

impl From<crate::search::SearchError> for ApiError {
    fn from(e: crate::search::SearchError) -> Self {
        ApiError::by_cause(&e)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ImageBody {
    path: String,
    limit: Option<usize>,
    offset: Option<usize>,
    #[serde(default)]
    filters: crate::search::Filters,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageParams {
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

/// Three bodies: JSON `{path, limit, offset, filters}` (a file inside the library roots), the
/// image bytes themselves (`?limit=&offset=` in the query), or the replaced service's multipart
/// form (field `file`).
pub(crate) async fn search_image(State(st): St, Q(p): Q<PageParams>, req: Request) -> ApiResult {
    let _slot = st.search_slot()?;
    if compat::is_multipart(&req) {
        return compat::search_multipart(st, req).await;
    }
    let (declared_json, bytes) = compat::body_bytes(&st, req).await?;
    // No image format starts with `{`: such a body is the JSON form, and must say so (415
    // otherwise, as on every JSON route).
    let looks_json = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if looks_json {
        if !declared_json {
            return Err(ApiError::UnsupportedMediaType(
                "a JSON body needs Content-Type: application/json (to upload an image, send its bytes with its image/* type)".into(),
            ));
        }
        let b: ImageBody = serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))?;
        if b.path.trim().is_empty() {
            return Err(ApiError::BadRequest("path must not be empty".into()));
        }
        let label = format!("<image: {}>", b.path);
        let r = st.search.by_image(crate::search::ImageQuery::Path(b.path), b.limit.unwrap_or(20), b.offset.unwrap_or(0), &b.filters).await?;
        return compat::results(&st, r, label).await;
    }
    let r = st.search.by_image(crate::search::ImageQuery::Bytes(bytes.to_vec()), p.limit.unwrap_or(20), p.offset.unwrap_or(0), &p.filters()).await?;
    compat::results(&st, r, "<image: upload>".into()).await
}

pub(crate) async fn search_similar(State(st): St, Id(id): Id, Q(p): Q<PageParams>) -> ApiResult {
    let _slot = st.search_slot()?;
    let r = st.search.similar(id, p.exclude_self.unwrap_or(true), p.limit.unwrap_or(20), p.offset.unwrap_or(0), &p.filters()).await?;
    compat::results(&st, r, format!("<similar to asset {id}>")).await
}
