//! Typed wire structs: the requests pixdex's own clients send, defined once. Routes deserialize
//! them, `pixdex ctl` serializes them and builds its URLs with [`paths`]. (The replaced
//! service's shapes live in `compat`; responses are the domain types themselves, which
//! serialize as the API shows them.)

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /api/v1/training/sessions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSession {
    pub name: String,
    #[serde(alias = "root_path")]
    pub root_path: String,
    #[serde(alias = "category_id", skip_serializing_if = "Option::is_none")]
    pub category_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subdirectories: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_start: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<bool>,
}

/// `PATCH /api/v1/training/sessions/{id}`: absent fields stay; `categoryId: null` clears.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchSession {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option", skip_serializing_if = "Option::is_none")]
    pub category_id: Option<Option<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_start: Option<bool>,
}

/// `absent` → None, `null` → Some(None), `5` → Some(Some(5)).
fn double_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Ok(Some(Option::<i64>::deserialize(d)?))
}

/// One item of `PATCH /api/v1/training/sessions/{id}/subdirectories` (a JSON array of them).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    pub id: i64,
    pub selected: bool,
}

/// `POST /api/v1/training/directories/scan` (`rootPath` or the replaced UI's `root_path`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScanDirectory {
    #[serde(alias = "root_path")]
    pub root_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recursive: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<String>>,
}

/// `POST /api/v1/search` as pixdex's clients send it (the server also accepts the replaced
/// UI's vocabulary, see `compat::search`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchWords {
    pub query: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    pub filters: crate::search::Filters,
}

/// The URLs of the API, built in one place (query values percent-encoded).
pub mod paths {
    pub const TRAINING: &str = "/api/v1/training";

    pub fn sessions() -> String {
        format!("{TRAINING}/sessions")
    }
    pub fn session_list(page: i64, page_size: i64, status: Option<&str>) -> String {
        let mut q = format!("{TRAINING}/sessions?page={page}&page_size={page_size}");
        if let Some(s) = status {
            q.push_str(&format!("&status={}", encode(s)));
        }
        q
    }
    pub fn session(id: i64) -> String {
        format!("{TRAINING}/sessions/{id}")
    }
    /// `start`, `pause`, `cancel`, `validate`, `progress`, `subdirectories`.
    pub fn session_part(id: i64, part: &str) -> String {
        format!("{TRAINING}/sessions/{id}/{part}")
    }
    pub fn restart(id: i64, failed_only: bool) -> String {
        format!("{TRAINING}/sessions/{id}/restart?failed_only={failed_only}")
    }
    pub fn jobs(id: i64, page: i64, page_size: i64, status: Option<&str>) -> String {
        let mut q = format!("{TRAINING}/sessions/{id}/jobs?page={page}&page_size={page_size}");
        if let Some(s) = status {
            q.push_str(&format!("&status={}", encode(s)));
        }
        q
    }
    pub fn scan_incremental(dir: &str, auto_train: bool) -> String {
        format!("{TRAINING}/scan/incremental?directory={}&auto_train={auto_train}", encode(dir))
    }
    pub fn library_emptied(dir: &str) -> String {
        format!("/api/v1/library/emptied?path={}", encode(dir))
    }
    pub fn scan_directory() -> String {
        format!("{TRAINING}/directories/scan")
    }
    pub fn watcher() -> String {
        format!("{TRAINING}/watcher")
    }
    pub fn pipeline() -> String {
        format!("{TRAINING}/pipeline")
    }
    pub const HEALTH: &str = "/api/v1/health";
    pub const SEARCH: &str = "/api/v1/search";
    pub const MODEL_RELOAD: &str = "/api/v1/model/reload";
    pub fn search_image(limit: usize, session: Option<i64>) -> String {
        let mut q = format!("/api/v1/search/image?limit={limit}");
        if let Some(s) = session {
            q.push_str(&format!("&session_id={s}"));
        }
        q
    }
    pub fn similar(id: i64, limit: usize, session: Option<i64>) -> String {
        let mut q = format!("/api/v1/search/similar/{id}?exclude_self=true&limit={limit}");
        if let Some(s) = session {
            q.push_str(&format!("&session_id={s}"));
        }
        q
    }

    /// Percent-encode a query value.
    pub fn encode(s: &str) -> String {
        s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
    }
}
