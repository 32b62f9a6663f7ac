//! Categories (`/api/v1/categories`), as the replaced service serves them: paginated list,
//! create (201), get, patch, delete (204; 400 for the default one, 409 while sessions use it).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::super::extract::{Body, Id, Page, Q};
use super::super::{ApiError, ApiResult, St, ok};
use crate::catalog::CategoryPatch;
use crate::sessions::SessionError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageParams {
    page: Option<i64>,
    page_size: Option<i64>,
}

pub(crate) async fn list(State(st): St, Q(p): Q<PageParams>) -> ApiResult {
    let page = Page::new(p.page, p.page_size, 50, 100)?;
    let (items, total) = st.sessions.catalog().list_categories(page.size, page.offset()).await.map_err(SessionError::from)?;
    page.answer(items, total)
}

fn check_name(name: &str) -> Result<String, ApiError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 {
        return Err(ApiError::Unprocessable(json!({"detail": "name must be 1 to 100 characters"})));
    }
    Ok(n.to_string())
}

fn check_color(c: &Option<String>) -> Result<(), ApiError> {
    if let Some(c) = c {
        let ok = c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|x| x.is_ascii_hexdigit());
        if !ok {
            return Err(ApiError::Unprocessable(json!({"detail": format!("color {c:?} is not a colour like \"#3B82F6\"")})));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    name: String,
    description: Option<String>,
    color: Option<String>,
}

pub(crate) async fn create(State(st): St, Body(b): Body<CreateBody>) -> ApiResult {
    let name = check_name(&b.name)?;
    check_color(&b.color)?;
    let c = st.sessions.catalog().create_category(&name, b.description.as_deref(), b.color.as_deref()).await.map_err(SessionError::from)?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("Category {id} not found (GET /api/v1/categories lists them)"))
}

pub(crate) async fn get_one(State(st): St, Id(id): Id) -> ApiResult {
    ok(st.sessions.catalog().category(id).await.map_err(SessionError::from)?.ok_or_else(|| not_found(id))?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchBody {
    name: Option<String>,
    #[serde(default, deserialize_with = "some")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    color: Option<Option<String>>,
}

/// `absent` → None, `null` → Some(None).
fn some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::<String>::deserialize(d)?))
}

pub(crate) async fn patch(State(st): St, Id(id): Id, Body(b): Body<PatchBody>) -> ApiResult {
    let name = b.name.as_deref().map(check_name).transpose()?;
    if let Some(c) = &b.color {
        check_color(c)?;
    }
    let p = CategoryPatch { name, description: b.description, color: b.color };
    ok(st.sessions.catalog().update_category(id, &p).await.map_err(SessionError::from)?.ok_or_else(|| not_found(id))?)
}

pub(crate) async fn delete(State(st): St, Id(id): Id) -> ApiResult {
    let cat = st.sessions.catalog();
    let c = cat.category(id).await.map_err(SessionError::from)?.ok_or_else(|| not_found(id))?;
    if c.is_default {
        return Err(ApiError::BadRequest(format!("Cannot delete default category ({}); it holds sessions created without a category", c.name)));
    }
    if !cat.delete_category(id).await.map_err(SessionError::from)? {
        return Err(not_found(id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
