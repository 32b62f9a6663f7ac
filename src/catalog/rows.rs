//! Row types the catalog returns, and their decoding. They serialize as the API shows them:
//! camelCase, times as RFC 3339.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::model::{JobStatus, SessionStatus};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: i64,
    pub name: String,
    pub status: SessionStatus,
    pub root_path: String,
    pub category_id: Option<i64>,
    pub config: serde_json::Value,
    pub source: String,
    pub auto_start: bool,
    pub live: bool,
    pub total_images: i64,
    pub processed_images: i64,
    pub failed_images: i64,
    pub skipped_images: i64,
    /// Why an autoStart session still waits in pending (admission's explanation).
    pub pending_reason: Option<String>,
    pub last_error: Option<String>,
    #[serde(serialize_with = "ts::ms")]
    pub created_at: i64,
    #[serde(serialize_with = "ts::ms")]
    pub updated_at: i64,
    #[serde(serialize_with = "ts::opt")]
    pub started_at: Option<i64>,
    #[serde(serialize_with = "ts::opt")]
    pub paused_at: Option<i64>,
    #[serde(serialize_with = "ts::opt")]
    pub completed_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subdirectory {
    pub id: i64,
    pub session_id: i64,
    pub path: String,
    pub name: String,
    pub selected: bool,
    /// The session root itself, listed when it holds images directly (counts only those).
    pub is_root: bool,
    pub image_count: i64,
    pub trained_count: i64,
    /// "pending" (nothing embedded yet), "training" (some), "trained" (all).
    pub status: &'static str,
    #[serde(serialize_with = "ts::ms")]
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: i64,
    pub session_id: i64,
    pub asset_id: Option<i64>,
    pub path: Option<String>,
    pub subdirectory_id: Option<i64>,
    pub status: JobStatus,
    pub error_message: Option<String>,
    pub attempts: i64,
    #[serde(serialize_with = "ts::ms")]
    pub created_at: i64,
    #[serde(serialize_with = "ts::ms")]
    pub updated_at: i64,
    #[serde(serialize_with = "ts::opt")]
    pub started_at: Option<i64>,
    #[serde(serialize_with = "ts::opt")]
    pub completed_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Asset {
    pub id: i64,
    pub path: String,
    pub file_size: i64,
    #[serde(serialize_with = "ts::ms")]
    pub file_modified_at: i64,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub content_hash: Option<String>,
    #[serde(serialize_with = "ts::opt")]
    pub indexed_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobsSummary {
    pub pending: i64,
    pub running: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub skipped: i64,
}

impl JobsSummary {
    pub fn total(&self) -> i64 {
        self.pending + self.running + self.completed + self.failed + self.cancelled + self.skipped
    }
}

fn decode_err(col: &str, msg: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode { index: col.into(), source: msg.into() }
}

pub(super) fn session(r: &AnyRow) -> Result<Session, sqlx::Error> {
    let status: String = r.try_get("status")?;
    let config: String = r.try_get("config")?;
    Ok(Session {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        status: SessionStatus::parse(&status).ok_or_else(|| decode_err("status", format!("unknown session status {status:?}")))?,
        root_path: r.try_get("root_path")?,
        category_id: r.try_get("category_id")?,
        config: serde_json::from_str(&config).map_err(|e| decode_err("config", e.to_string()))?,
        source: r.try_get("source")?,
        auto_start: r.try_get::<i64, _>("auto_start")? != 0,
        live: r.try_get::<i64, _>("live")? != 0,
        total_images: r.try_get("total_images")?,
        processed_images: r.try_get("processed_images")?,
        failed_images: r.try_get("failed_images")?,
        skipped_images: r.try_get("skipped_images")?,
        pending_reason: r.try_get("pending_reason")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        started_at: r.try_get("started_at")?,
        paused_at: r.try_get("paused_at")?,
        completed_at: r.try_get("completed_at")?,
    })
}

pub(super) fn subdirectory(r: &AnyRow) -> Result<Subdirectory, sqlx::Error> {
    Ok(Subdirectory {
        id: r.try_get("id")?,
        session_id: r.try_get("session_id")?,
        path: r.try_get("path")?,
        name: r.try_get("name")?,
        selected: r.try_get::<i64, _>("selected")? != 0,
        is_root: r.try_get::<i64, _>("is_root")? != 0,
        image_count: r.try_get("image_count")?,
        trained_count: r.try_get("trained_count")?,
        status: subdir_status(r.try_get("image_count")?, r.try_get("trained_count")?),
        created_at: r.try_get("created_at")?,
    })
}

fn subdir_status(images: i64, trained: i64) -> &'static str {
    if images > 0 && trained >= images {
        "trained"
    } else if trained > 0 {
        "training"
    } else {
        "pending"
    }
}

pub(super) fn job(r: &AnyRow) -> Result<Job, sqlx::Error> {
    let status: String = r.try_get("status")?;
    Ok(Job {
        id: r.try_get("id")?,
        session_id: r.try_get("session_id")?,
        asset_id: r.try_get("asset_id")?,
        path: r.try_get("path")?,
        subdirectory_id: r.try_get("subdirectory_id")?,
        status: JobStatus::parse(&status).ok_or_else(|| decode_err("status", format!("unknown job status {status:?}")))?,
        error_message: r.try_get("error_message")?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        started_at: r.try_get("started_at")?,
        completed_at: r.try_get("completed_at")?,
    })
}

pub(super) fn asset(r: &AnyRow) -> Result<Asset, sqlx::Error> {
    Ok(Asset {
        id: r.try_get("id")?,
        path: r.try_get("path")?,
        file_size: r.try_get("file_size")?,
        file_modified_at: r.try_get("file_modified_at")?,
        width: r.try_get("width")?,
        height: r.try_get("height")?,
        content_hash: r.try_get("content_hash")?,
        indexed_at: r.try_get("indexed_at")?,
    })
}

/// Millisecond timestamps rendered as RFC 3339 (UTC).
pub mod ts {
    use serde::Serializer;

    pub fn to_rfc3339(ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_default()
    }

    pub fn ms<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_rfc3339(*v))
    }

    pub fn opt<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&to_rfc3339(*v)),
            None => s.serialize_none(),
        }
    }
}
