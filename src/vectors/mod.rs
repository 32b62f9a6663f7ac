//! Vector store: one point per image asset (id = asset id), holding the
//! L2-normalised embedding and a payload used for filtering and display.
//!
//! Two backends behind one handle, [`VectorStore`]:
//! * `embedded`: an in-process Qdrant Edge shard (`qdrant-edge`), one directory
//!   per model+dimension under `vectors.path`. Its API is synchronous, so every
//!   call runs on `tokio::task::spawn_blocking`. It has no background
//!   optimiser: call [`VectorStore::optimize`] after bulk loads.
//! * `qdrant`: a Qdrant server over gRPC (`qdrant-client`), collection
//!   `<prefix>_<model>_<dim>`.
//!
//! Invariant: this module is the only one that names Qdrant types; the rest of
//! the crate sees only the types defined here.
//!
//! Path-prefix filtering: Qdrant has no prefix match on keywords, so every point
//! also stores `dirs`, the list of all ancestor directories of `path`, and a
//! prefix filter is an exact match on one of them. The prefix is therefore a
//! *directory* prefix (`/photos/2024` matches `/photos/2024/a.jpg`, not
//! `/photos/2024-old/a.jpg`). Class ids of the labels are stored flat in
//! `labelIds` for `label_any` filtering.

mod edge;
mod remote;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Which implementation stores the vectors (`vectors.backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In-process Qdrant Edge shard under `vectors.path`.
    #[default]
    Embedded,
    /// A Qdrant server at `vectors.url`.
    Qdrant,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Qdrant => "qdrant",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Backend {
    type Err = VectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "embedded" => Ok(Backend::Embedded),
            "qdrant" => Ok(Backend::Qdrant),
            other => Err(VectorError::Config(format!("vectors.backend must be \"embedded\" or \"qdrant\", got {other:?}"))),
        }
    }
}

/// The `[vectors]` configuration section.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VectorsConfig {
    #[serde(default)]
    pub backend: Backend,
    /// Embedded: the directory holding the shards (normally `<data_dir>/vectors`).
    #[serde(default)]
    pub path: PathBuf,
    /// Remote: gRPC URL of the Qdrant server, e.g. `http://localhost:6334`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default = "default_prefix")]
    pub collection_prefix: String,
    /// Remote, at collection creation: copies of each shard (a Qdrant cluster), and shards.
    #[serde(default)]
    pub replication_factor: Option<u32>,
    #[serde(default)]
    pub shard_number: Option<u32>,
    /// Embedded: free space (bytes) kept on the store's filesystem. Below it, writes pause
    /// (retried, nothing fails) instead of running the disk full: the store maps its files
    /// into memory, and a full disk under a mapping kills the process (SIGBUS).
    #[serde(default = "default_min_free")]
    pub min_free_bytes: u64,
    /// Which catalog these vectors belong to; set by the daemon from the catalog it opened,
    /// never read from the config file. `None` (tools, benches, tests of the store alone):
    /// no check.
    #[serde(skip)]
    pub pairing: Option<Pairing>,
}

/// Point id = asset id only means something in the catalog that numbered the assets: a store
/// keeps the id of the catalog it was written with and is never served to another one (an
/// empty catalog file over old vectors numbers its assets from 1 again, and "cat" would
/// answer with an unrelated new file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pairing {
    /// The catalog's id (`Catalog::identity`).
    pub catalog_id: String,
    /// A store written before pairing existed carries no mark: it is adopted when the catalog
    /// already holds assets, and refused (when it holds points) by a new, empty catalog.
    pub adopt_unmarked: bool,
}

impl Pairing {
    /// Compare a store's mark (`None`: unmarked) with this catalog. `Ok(true)`: the store must
    /// be marked now (new, or adopted).
    pub(crate) fn check(&self, store: &str, mark: Option<&str>, points: u64) -> Result<bool, VectorError> {
        match mark {
            Some(m) if m == self.catalog_id => Ok(false),
            None if points == 0 || self.adopt_unmarked => Ok(true),
            other => Err(VectorError::Mismatch {
                store: store.to_owned(),
                theirs: other.map(str::to_owned).unwrap_or_else(|| format!("unknown (an unmarked store holding {points} points)")),
                ours: self.catalog_id.clone(),
            }),
        }
    }
}

fn default_min_free() -> u64 {
    256 * 1024 * 1024
}

fn default_prefix() -> String {
    "pixdex".to_owned()
}

impl VectorsConfig {
    /// Embedded store under `<data_dir>/vectors`.
    pub fn embedded(data_dir: &Path) -> Self {
        Self {
            backend: Backend::Embedded,
            path: data_dir.join("vectors"),
            url: None,
            api_key: None,
            collection_prefix: default_prefix(),
            replication_factor: None,
            shard_number: None,
            min_free_bytes: default_min_free(),
            pairing: None,
        }
    }
}

/// One classifier label attached to an asset.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LabelPayload {
    pub class_id: u32,
    pub label: String,
    pub probability: f32,
}

/// What is stored next to each vector.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub asset_id: i64,
    pub path: String,
    #[serde(default)]
    pub session_ids: Vec<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_id: Option<i64>,
    #[serde(default)]
    pub labels: Vec<LabelPayload>,
    /// Unix milliseconds.
    pub indexed_at: i64,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct Point {
    pub id: u64,
    pub vector: Vec<f32>,
    pub payload: Payload,
}

/// Conditions are ANDed; `None` means "no constraint".
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// The asset belongs to this session.
    pub session_id: Option<i64>,
    pub category_id: Option<i64>,
    /// Directory prefix (see the module docs).
    pub path_prefix: Option<String>,
    /// `indexed_at >= indexed_from` (unix ms, inclusive).
    pub indexed_from: Option<i64>,
    /// `indexed_at <= indexed_to` (unix ms, inclusive).
    pub indexed_to: Option<i64>,
    /// At least one label with one of these class ids.
    pub label_any: Option<Vec<u32>>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.session_id.is_none()
            && self.category_id.is_none()
            && self.path_prefix.is_none()
            && self.indexed_from.is_none()
            && self.indexed_to.is_none()
            && self.label_any.is_none()
    }
}

#[derive(Clone, Debug)]
pub struct Hit {
    pub id: u64,
    pub score: f32,
    pub payload: Payload,
}

/// A point without its vector (result of [`VectorStore::scroll_by_labels`]).
#[derive(Clone, Debug)]
pub struct Record {
    pub id: u64,
    pub payload: Payload,
}

#[derive(thiserror::Error, Debug)]
pub enum VectorError {
    /// The store cannot be reached or is temporarily unable to serve: retry with backoff.
    #[error("vector store ({backend}) unavailable: {reason}")]
    Unavailable { backend: Backend, reason: String },
    #[error("vector store configuration: {0}")]
    Config(String),
    /// Stored data does not match what pixdex expects (bad payload, wrong dimension on disk...).
    #[error("vector store data corrupt: {0}")]
    Corrupt(String),
    /// Another process holds the embedded shard directory.
    #[error("embedded vector store {0} is locked by another process")]
    Locked(PathBuf),
    /// The caller passed something the store refuses (e.g. wrong vector dimension).
    #[error("invalid vector store request: {0}")]
    Invalid(String),
    /// Any other error reported by the backend.
    #[error("vector store ({backend}) error: {message}")]
    Backend { backend: Backend, message: String },
    /// The store was written with another catalog (see `Pairing`): its point ids name other
    /// assets. Nothing is read from it or written to it until the operator fixes the pairing.
    #[error(
        "the vectors in {store} belong to another catalog (catalog id {theirs}; the catalog in use is {ours}): they were not written with this catalog, \
         so their ids would name other images. Fix: point catalog.url at the catalog these vectors were written with (restore the matching backup), \
         or move the vectors aside (embedded: the directory named; Qdrant: delete or rename the collection) to start them afresh — sessions then embed again"
    )]
    Mismatch { store: String, theirs: String, ours: String },
    #[error("vector store I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl VectorError {
    /// True when the caller should retry later.
    /// Transient: the store is down, overloaded, or out of disk space — wait and retry; no job
    /// fails for it. Everything else is permanent for the request at hand.
    pub fn is_retryable(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            // A mismatched store is unusable until the operator acts: writes wait (nothing
            // fails for it), search and health say why.
            VectorError::Unavailable { .. } | VectorError::Mismatch { .. } => true,
            // Out of file descriptors (EMFILE/ENFILE), whatever error carries it: qdrant-edge
            // opening a segment or its WAL reports it as a storage error (or panics; the
            // caught panic's message says it): descriptors come back, the write waits.
            VectorError::Invalid(m) | VectorError::Corrupt(m) | VectorError::Config(m) if crate::fault::mentions_fd_exhaustion(m) => true,
            VectorError::Io { source, .. } => {
                crate::fault::is_fd_exhaustion(source)
                    || matches!(source.kind(), K::StorageFull | K::TimedOut | K::Interrupted | K::WouldBlock | K::ResourceBusy | K::QuotaExceeded)
            }
            VectorError::Backend { message, .. } => looks_transient(message),
            _ => false,
        }
    }
}

impl crate::error::Classify for VectorError {
    fn cause(&self) -> crate::error::Cause {
        use crate::error::Cause;
        match self {
            e if e.is_retryable() => Cause::Transient,
            VectorError::Invalid(_) => Cause::UserInput,
            _ => Cause::Bug,
        }
    }
}

/// Words of an error message that mean "try again later": a connection refused, reset or
/// broken, a transport failure, a full disk.
pub(crate) fn looks_transient(message: &str) -> bool {
    if crate::fault::mentions_fd_exhaustion(message) {
        return true;
    }
    let m = message.to_ascii_lowercase();
    [
        "connection refused",
        "connection reset",
        "broken pipe",
        "error trying to connect",
        "tcp connect error",
        "transport error",
        "connection closed",
        "no space left on device",
        "os error 28",
        "disk quota exceeded",
        "timed out",
        "service unavailable",
    ]
    .iter()
    .any(|w| m.contains(w))
}

/// Handle on the vector store; cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct VectorStore {
    inner: Arc<Inner>,
    /// The model whose vectors these are (one collection per model).
    model: Arc<str>,
}

enum Inner {
    Embedded(edge::EdgeStore),
    Remote(remote::RemoteStore),
}

impl VectorStore {
    /// Open (or create) the store for vectors of `model` with dimension `dim`.
    pub async fn open(cfg: &VectorsConfig, model: &str, dim: usize) -> Result<Self, VectorError> {
        if dim == 0 {
            return Err(VectorError::Config("vector dimension must be > 0".into()));
        }
        if model.trim().is_empty() {
            return Err(VectorError::Config("model name must not be empty".into()));
        }
        let inner = match cfg.backend {
            Backend::Embedded => {
                let store = edge::EdgeStore::open(cfg, model, dim).await?;
                if let Some(p) = &cfg.pairing {
                    store.check_pairing(p).await?;
                }
                Inner::Embedded(store)
            }
            Backend::Qdrant => Inner::Remote(remote::RemoteStore::open(cfg, model, dim).await?),
        };
        Ok(Self { inner: Arc::new(inner), model: model.into() })
    }

    /// The model whose vectors these are.
    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn backend(&self) -> Backend {
        match &*self.inner {
            Inner::Embedded(_) => Backend::Embedded,
            Inner::Remote(_) => Backend::Qdrant,
        }
    }

    pub fn dim(&self) -> usize {
        match &*self.inner {
            Inner::Embedded(s) => s.dim(),
            Inner::Remote(s) => s.dim(),
        }
    }

    /// Insert or replace points (idempotent by id).
    pub async fn upsert(&self, points: Vec<Point>) -> Result<(), VectorError> {
        if points.is_empty() {
            return Ok(());
        }
        let dim = self.dim();
        for p in &points {
            check_vector(dim, &p.vector)?;
        }
        match &*self.inner {
            Inner::Embedded(s) => s.upsert(points).await,
            Inner::Remote(s) => s.upsert(points).await,
        }
    }

    /// Delete points; unknown ids are ignored.
    pub async fn delete(&self, ids: &[u64]) -> Result<(), VectorError> {
        if ids.is_empty() {
            return Ok(());
        }
        match &*self.inner {
            Inner::Embedded(s) => s.delete(ids.to_vec()).await,
            Inner::Remote(s) => s.delete(ids).await,
        }
    }

    /// Delete every point whose id is above `max_id` (the highest asset id the catalog holds):
    /// vectors of assets a catalog restored from an older backup never knew. Their ids will
    /// be given to other files by that catalog, so they must go before anything is
    /// catalogued. Returns how many were deleted.
    pub async fn delete_above(&self, max_id: u64) -> Result<u64, VectorError> {
        let mut deleted = 0;
        loop {
            let ids = match &*self.inner {
                Inner::Embedded(s) => s.ids_from(max_id + 1, 1024).await?,
                Inner::Remote(s) => s.ids_from(max_id + 1, 1024).await?,
            };
            let ids: Vec<u64> = ids.into_iter().filter(|&i| i > max_id).collect();
            if ids.is_empty() {
                return Ok(deleted);
            }
            self.delete(&ids).await?;
            deleted += ids.len() as u64;
        }
    }

    /// Update `path` (and the derived `dirs`) after a rename, keeping the vector.
    /// A missing id is a no-op.
    pub async fn set_path(&self, id: u64, path: &str) -> Result<(), VectorError> {
        match &*self.inner {
            Inner::Embedded(s) => s.set_path(id, path.to_owned()).await,
            Inner::Remote(s) => s.set_path(id, path).await,
        }
    }

    /// `set_path` for many points at once (a renamed folder): one blocking task on the
    /// embedded store, one request per point on a server. Missing ids are no-ops.
    pub async fn set_paths(&self, moves: &[(u64, String)]) -> Result<(), VectorError> {
        if moves.is_empty() {
            return Ok(());
        }
        match &*self.inner {
            Inner::Embedded(s) => s.set_paths(moves.to_vec()).await,
            Inner::Remote(s) => {
                for (id, path) in moves {
                    s.set_path(*id, path).await?;
                }
                Ok(())
            }
        }
    }

    /// Vector and payload of one point.
    pub async fn get(&self, id: u64) -> Result<Option<(Vec<f32>, Payload)>, VectorError> {
        match &*self.inner {
            Inner::Embedded(s) => s.get(id).await,
            Inner::Remote(s) => s.get(id).await,
        }
    }

    /// Nearest neighbours by cosine similarity (higher score = closer).
    pub async fn search(&self, vector: &[f32], limit: usize, offset: usize, filter: &Filter) -> Result<Vec<Hit>, VectorError> {
        check_vector(self.dim(), vector)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        match &*self.inner {
            Inner::Embedded(s) => s.search(vector.to_vec(), limit, offset, filter.clone()).await,
            Inner::Remote(s) => s.search(vector, limit, offset, filter).await,
        }
    }

    /// Up to `limit` points whose labels contain any of `class_ids` and that
    /// match `filter`, in id order (ranking is the caller's job).
    pub async fn scroll_by_labels(&self, class_ids: &[u32], filter: &Filter, limit: usize) -> Result<Vec<Record>, VectorError> {
        if class_ids.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut f = filter.clone();
        f.label_any = Some(match f.label_any.take() {
            // Both constraints: the intersection of the two id sets.
            Some(existing) => class_ids.iter().copied().filter(|c| existing.contains(c)).collect(),
            None => class_ids.to_vec(),
        });
        if f.label_any.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        match &*self.inner {
            Inner::Embedded(s) => s.scroll(f, limit).await,
            Inner::Remote(s) => s.scroll(&f, limit).await,
        }
    }

    /// Exact number of points.
    pub async fn count(&self) -> Result<u64, VectorError> {
        match &*self.inner {
            Inner::Embedded(s) => s.count().await,
            Inner::Remote(s) => s.count().await,
        }
    }

    /// Embedded: build indexes / merge segments (blocking work, can take
    /// minutes on large shards; searches keep working meanwhile). Remote: no-op.
    pub async fn optimize(&self) -> Result<(), VectorError> {
        match &*self.inner {
            Inner::Embedded(s) => s.optimize().await,
            Inner::Remote(_) => Ok(()),
        }
    }

    /// Make everything written so far durable.
    pub async fn flush(&self) -> Result<(), VectorError> {
        match &*self.inner {
            Inner::Embedded(s) => s.flush().await,
            Inner::Remote(_) => Ok(()),
        }
    }

    /// Human-readable description for logs and `pixdex status` (no secrets).
    pub fn describe(&self) -> String {
        match &*self.inner {
            Inner::Embedded(s) => s.describe(),
            Inner::Remote(s) => s.describe(),
        }
    }
}

#[cfg(test)]
impl VectorStore {
    /// Embedded: lower the indexing threshold so small test shards get an HNSW index.
    pub(crate) fn set_indexing_threshold_kb_for_tests(&self, kb: usize) {
        if let Inner::Embedded(s) = &*self.inner {
            s.set_indexing_threshold_kb(kb);
        }
    }

    /// Remote: delete the collection (test cleanup).
    pub(crate) async fn drop_remote_collection_for_tests(&self) -> Result<(), VectorError> {
        match &*self.inner {
            Inner::Remote(s) => s.drop_collection().await,
            Inner::Embedded(_) => Ok(()),
        }
    }
}

impl fmt::Debug for VectorStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VectorStore").field("store", &self.describe()).finish()
    }
}

// ---------------------------------------------------------------------------
// Helpers shared by both backends.

pub(crate) const F_PATH: &str = "path";
pub(crate) const F_DIRS: &str = "dirs";
pub(crate) const F_SESSIONS: &str = "sessionIds";
pub(crate) const F_CATEGORY: &str = "categoryId";
pub(crate) const F_INDEXED_AT: &str = "indexedAt";
pub(crate) const F_LABEL_IDS: &str = "labelIds";

fn check_vector(dim: usize, v: &[f32]) -> Result<(), VectorError> {
    if v.len() != dim {
        return Err(VectorError::Invalid(format!("vector has {} dimensions, the store expects {dim}", v.len())));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(VectorError::Invalid("vector contains NaN or infinity".into()));
    }
    Ok(())
}

/// Normalised form of a path: no trailing slash, no `.` components, no `//`.
fn normalize_path(p: &str) -> String {
    let norm: PathBuf = Path::new(p).components().collect();
    norm.to_string_lossy().into_owned()
}

/// Every ancestor directory of `path` (root included), normalised.
pub(crate) fn ancestor_dirs(path: &str) -> Vec<String> {
    let norm: PathBuf = Path::new(path).components().collect();
    norm.ancestors().skip(1).map(|a| a.to_string_lossy().into_owned()).filter(|s| !s.is_empty()).collect()
}

/// The `dirs` value a path-prefix filter must match.
pub(crate) fn prefix_key(prefix: &str) -> String {
    normalize_path(prefix)
}

/// Payload as stored: the public fields plus the derived `dirs` and `labelIds`.
pub(crate) fn payload_to_json(p: &Payload) -> serde_json::Map<String, serde_json::Value> {
    let mut v = match serde_json::to_value(p) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => unreachable!("Payload serialises to a JSON object"),
    };
    v.insert(F_DIRS.into(), serde_json::json!(ancestor_dirs(&p.path)));
    let mut ids: Vec<u32> = p.labels.iter().map(|l| l.class_id).collect();
    ids.sort_unstable();
    ids.dedup();
    v.insert(F_LABEL_IDS.into(), serde_json::json!(ids));
    v
}

/// The payload fields `set_path` overwrites.
pub(crate) fn path_fields(path: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert(F_PATH.into(), serde_json::Value::String(path.to_owned()));
    m.insert(F_DIRS.into(), serde_json::json!(ancestor_dirs(path)));
    m
}

pub(crate) fn payload_from_json(id: u64, m: serde_json::Map<String, serde_json::Value>) -> Result<Payload, VectorError> {
    serde_json::from_value(serde_json::Value::Object(m)).map_err(|e| VectorError::Corrupt(format!("payload of point {id}: {e}")))
}

/// Directory-safe / collection-safe form of a model name.
pub(crate) fn sanitize_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests;
