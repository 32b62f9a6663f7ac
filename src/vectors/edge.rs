//! Embedded backend: an in-process Qdrant Edge shard.
//!
//! qdrant-edge is synchronous and does no background work, so:
//! * every call runs on `spawn_blocking`;
//! * `optimize` (segment merge + HNSW build) only happens when asked.
//!
//! Concurrency: `EdgeShard` synchronises reads, updates and optimisation
//! internally (as the Qdrant server does between its update worker and its
//! optimisers), except `EdgeShard::flush`, which *panics* when the WAL or the
//! segment-holder lock is contended (`try_lock().expect(..)`). So:
//! * searches / gets / counts / scrolls take no lock of ours and never wait;
//! * updates hold `updates` (serialises WAL writers);
//! * `optimize` holds `optimizing` (one at a time; it briefly write-locks the
//!   segment holder when swapping segments);
//! * `flush` holds both, so it may wait for a running optimisation to finish.
//!
//! One process per shard directory: qdrant-edge does not lock its directory, so
//! we hold an exclusive `flock` on `<dir>/.pixdex.lock` for the store's life.

use std::fs::{File, TryLockError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use qdrant_edge::external::serde_json as edge_json;
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, DEFAULT_VECTOR_NAME, Distance, EdgeConfig, EdgeShard, EdgeVectorParamsBuilder, FieldCondition, FieldIndexOperations,
    Filter as EFilter, JsonPath, Match, NamedQuery, OperationError, PayloadFieldSchema, PayloadOps, PayloadSchemaType, PointId, PointInsertOperations,
    PointOperations, PointStruct, PointStructPersisted, QueryEnum, QueryRequest, Range, ScoringQuery, ScrollRequest, SetPayloadOp, UpdateOperation,
    VectorInternal, VectorStructInternal, WithPayloadInterface, WithVector,
};

use super::{
    Backend, F_CATEGORY, F_DIRS, F_INDEXED_AT, F_LABEL_IDS, F_SESSIONS, Filter, Hit, Payload, Point, Record, VectorError, VectorsConfig, path_fields,
    payload_from_json, payload_to_json, prefix_key, sanitize_name,
};

const LOCK_FILE: &str = ".pixdex.lock";
const EDGE_CONFIG_FILE: &str = "edge_config.json";
/// The id of the catalog this shard's vectors belong to (see `super::Pairing`).
const PAIRING_FILE: &str = "catalog-id";

struct Shared {
    // Field order matters: the shard is dropped (and flushed) before the lock is released.
    shard: EdgeShard,
    updates: Mutex<()>,
    optimizing: Mutex<()>,
    _lock: File,
}

pub(super) struct EdgeStore {
    shared: Arc<Shared>,
    dir: PathBuf,
    dim: usize,
    /// `vectors.min_free_mb` in bytes (0: no check).
    min_free: u64,
}

fn op_err(e: OperationError) -> VectorError {
    match e {
        OperationError::InconsistentStorage { description } => VectorError::Corrupt(description),
        e @ (OperationError::WrongVectorDimension { .. } | OperationError::ValidationError { .. }) => VectorError::Invalid(e.to_string()),
        e => VectorError::Backend { backend: Backend::Embedded, message: e.to_string() },
    }
}

/// A qdrant-edge call that panicked: its message is kept (qdrant-edge panics on some I/O
/// errors, "Too many open files" among them, which `is_retryable` must still read as an
/// outage to wait out, not a refusal of the points).
fn join_err(e: tokio::task::JoinError) -> VectorError {
    let message = if e.is_panic() {
        format!("qdrant-edge call panicked: {}", crate::fault::panic_message(&*e.into_panic()))
    } else {
        format!("qdrant-edge call was cancelled: {e}")
    };
    if crate::fault::mentions_fd_exhaustion(&message) {
        tracing::warn!(error = %message, "qdrant-edge ran out of file descriptors; the call is retried");
    }
    VectorError::Backend { backend: Backend::Embedded, message }
}

/// Bytes available to this (unprivileged) process on the filesystem holding `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (r == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

fn io_err(path: PathBuf) -> impl FnOnce(std::io::Error) -> VectorError {
    move |source| VectorError::Io { path, source }
}

fn to_edge_json(m: serde_json::Map<String, serde_json::Value>) -> edge_json::Value {
    // Same crate in practice; the round trip only matters if the versions ever diverge.
    edge_json::to_value(m).expect("JSON map converts")
}

fn from_edge_payload(id: u64, p: Option<qdrant_edge::Payload>) -> Result<Payload, VectorError> {
    let p = p.ok_or_else(|| VectorError::Corrupt(format!("point {id} has no payload")))?;
    let v = serde_json::to_value(&p.0).map_err(|e| VectorError::Corrupt(format!("payload of point {id}: {e}")))?;
    match v {
        serde_json::Value::Object(m) => payload_from_json(id, m),
        _ => Err(VectorError::Corrupt(format!("payload of point {id} is not an object"))),
    }
}

fn num_id(id: PointId) -> Result<u64, VectorError> {
    match id {
        PointId::NumId(n) => Ok(n),
        other => Err(VectorError::Corrupt(format!("unexpected non-numeric point id {other:?}"))),
    }
}

fn dense_of(v: Option<VectorStructInternal>) -> Option<Vec<f32>> {
    match v? {
        VectorStructInternal::Single(d) => Some(d),
        VectorStructInternal::Named(mut m) => match m.remove(DEFAULT_VECTOR_NAME)? {
            VectorInternal::Dense(d) => Some(d),
            _ => None,
        },
        VectorStructInternal::MultiDense(_) => None,
    }
}

/// Our mutexes guard no data, so a poisoned one is still usable.
fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn key(k: &str) -> JsonPath {
    k.parse().unwrap_or_else(|()| panic!("payload key {k:?} is not a valid JSON path"))
}

pub(super) fn to_edge_filter(f: &Filter) -> Option<EFilter> {
    let mut must = Vec::new();
    if let Some(s) = f.session_id {
        must.push(Condition::Field(FieldCondition::new_match(key(F_SESSIONS), Match::from(s))));
    }
    if let Some(c) = f.category_id {
        must.push(Condition::Field(FieldCondition::new_match(key(F_CATEGORY), Match::from(c))));
    }
    if let Some(p) = &f.path_prefix {
        must.push(Condition::Field(FieldCondition::new_match(key(F_DIRS), Match::from(prefix_key(p)))));
    }
    if f.indexed_from.is_some() || f.indexed_to.is_some() {
        let range = Range { gte: f.indexed_from.map(|v| (v as f64).into()), lte: f.indexed_to.map(|v| (v as f64).into()), gt: None, lt: None };
        must.push(Condition::Field(FieldCondition::new_range(key(F_INDEXED_AT), range)));
    }
    if let Some(ids) = &f.label_any {
        let ids: Vec<i64> = ids.iter().map(|&c| i64::from(c)).collect();
        must.push(Condition::Field(FieldCondition::new_match(key(F_LABEL_IDS), Match::from(ids))));
    }
    if must.is_empty() { None } else { Some(EFilter { should: None, min_should: None, must: Some(must), must_not: None }) }
}

/// Payload fields that get an index when the shard is created.
const INDEXED_FIELDS: &[(&str, PayloadSchemaType)] = &[
    (F_DIRS, PayloadSchemaType::Keyword),
    (F_SESSIONS, PayloadSchemaType::Integer),
    (F_CATEGORY, PayloadSchemaType::Integer),
    (F_INDEXED_AT, PayloadSchemaType::Integer),
    (F_LABEL_IDS, PayloadSchemaType::Integer),
];

impl EdgeStore {
    pub(super) async fn open(cfg: &VectorsConfig, model: &str, dim: usize) -> Result<Self, VectorError> {
        if cfg.path.as_os_str().is_empty() {
            return Err(VectorError::Config("vectors.path is empty".into()));
        }
        let dir = cfg.path.join(format!("{}-{}-{}", sanitize_name(&cfg.collection_prefix), sanitize_name(model), dim));
        let d = dir.clone();
        let shared = tokio::task::spawn_blocking(move || open_blocking(d, dim)).await.map_err(join_err)??;
        Ok(Self { shared: Arc::new(shared), dir, dim, min_free: cfg.min_free_bytes })
    }

    pub(super) fn dim(&self) -> usize {
        self.dim
    }

    #[cfg(test)]
    pub(super) fn set_indexing_threshold_kb(&self, kb: usize) {
        let mut opt = self.shared.shard.config().optimizers.clone();
        opt.indexing_threshold = Some(kb);
        self.shared.shard.set_optimizers_config(opt).expect("optimizer config saved");
    }

    pub(super) fn describe(&self) -> String {
        format!("embedded qdrant-edge at {} (dim {}, cosine)", self.dir.display(), self.dim)
    }

    /// Run `f` against the shard on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T, VectorError>
    where
        T: Send + 'static,
        F: FnOnce(&EdgeShard) -> Result<T, VectorError> + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared.shard)).await.map_err(join_err)?
    }

    /// Run `f` on a blocking thread while holding the update lock.
    async fn write<T, F>(&self, f: F) -> Result<T, VectorError>
    where
        T: Send + 'static,
        F: FnOnce(&EdgeShard) -> Result<T, VectorError> + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = lock(&shared.updates);
            f(&shared.shard)
        })
        .await
        .map_err(join_err)?
    }

    async fn update(&self, op: UpdateOperation) -> Result<(), VectorError> {
        self.check_space()?;
        self.write(move |s| s.update(op).map_err(op_err)).await
    }

    /// Refuse to write (a retryable "storage full") while the filesystem holding the shard has
    /// less than `vectors.min_free_mb` free: the shard's files are memory-mapped, and a write
    /// through a mapping onto a full disk is a SIGBUS that kills the daemon, not an error.
    fn check_space(&self) -> Result<(), VectorError> {
        if self.min_free == 0 {
            return Ok(());
        }
        let Some(free) = free_bytes(&self.dir) else { return Ok(()) };
        if free >= self.min_free {
            return Ok(());
        }
        let msg = format!(
            "disk almost full: {} MB free, below the {} MB kept free (vectors.min_free_mb); writing pauses until space is freed",
            free / (1024 * 1024),
            self.min_free / (1024 * 1024)
        );
        Err(VectorError::Io { path: self.dir.clone(), source: std::io::Error::new(std::io::ErrorKind::StorageFull, msg) })
    }

    pub(super) async fn upsert(&self, points: Vec<Point>) -> Result<(), VectorError> {
        let points: Vec<PointStructPersisted> =
            points.into_iter().map(|p| PointStruct::new(p.id, p.vector, to_edge_json(payload_to_json(&p.payload))).into()).collect();
        self.update(UpdateOperation::PointOperation(PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)))).await
    }

    pub(super) async fn delete(&self, ids: Vec<u64>) -> Result<(), VectorError> {
        let ids = ids.into_iter().map(PointId::NumId).collect();
        self.update(UpdateOperation::PointOperation(PointOperations::DeletePoints { ids })).await
    }

    pub(super) async fn set_path(&self, id: u64, path: String) -> Result<(), VectorError> {
        self.set_paths(vec![(id, path)]).await
    }

    /// Many path updates under one hold of the update lock, on one blocking thread.
    pub(super) async fn set_paths(&self, moves: Vec<(u64, String)>) -> Result<(), VectorError> {
        self.check_space()?;
        self.write(move |s| {
            for (id, path) in moves {
                let payload = match to_edge_json(path_fields(&path)) {
                    edge_json::Value::Object(m) => qdrant_edge::Payload(m),
                    _ => unreachable!(),
                };
                let op = UpdateOperation::PayloadOperation(PayloadOps::SetPayload(SetPayloadOp {
                    payload,
                    points: Some(vec![PointId::NumId(id)]),
                    filter: None,
                    key: None,
                }));
                match s.update(op) {
                    Ok(()) => {}
                    Err(OperationError::PointIdError { .. }) => tracing::debug!(id, "set_path on a point that is not in the store"),
                    Err(e) => return Err(op_err(e)),
                }
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn get(&self, id: u64) -> Result<Option<(Vec<f32>, Payload)>, VectorError> {
        self.read(move |s| {
            let mut recs = s.retrieve(&[PointId::NumId(id)], Some(WithPayloadInterface::Bool(true)), Some(WithVector::Bool(true))).map_err(op_err)?;
            let Some(rec) = recs.pop() else {
                return Ok(None);
            };
            let vector = dense_of(rec.vector).ok_or_else(|| VectorError::Corrupt(format!("point {id} has no dense vector")))?;
            Ok(Some((vector, from_edge_payload(id, rec.payload)?)))
        })
        .await
    }

    pub(super) async fn search(&self, vector: Vec<f32>, limit: usize, offset: usize, filter: Filter) -> Result<Vec<Hit>, VectorError> {
        let request = QueryRequest {
            prefetches: Vec::new(),
            query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::default_dense(vector)))),
            filter: to_edge_filter(&filter),
            score_threshold: None,
            // qdrant-edge 0.7 quirk: `offset` is not applied to the final result (it returns
            // the top `limit + offset`), so ask for the whole head and skip here.
            limit: limit.saturating_add(offset),
            offset: 0,
            params: None,
            with_vector: WithVector::Bool(false),
            with_payload: WithPayloadInterface::Bool(true),
        };
        self.read(move |s| {
            s.query(request)
                .map_err(op_err)?
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|p| {
                    let id = num_id(p.id)?;
                    Ok(Hit { id, score: p.score, payload: from_edge_payload(id, p.payload)? })
                })
                .collect()
        })
        .await
    }

    pub(super) async fn scroll(&self, filter: Filter, limit: usize) -> Result<Vec<Record>, VectorError> {
        let request = ScrollRequest {
            offset: None,
            limit: Some(limit),
            filter: to_edge_filter(&filter),
            with_payload: Some(WithPayloadInterface::Bool(true)),
            with_vector: WithVector::Bool(false),
            order_by: None,
        };
        self.read(move |s| {
            let (records, _next) = s.scroll(request).map_err(op_err)?;
            records
                .into_iter()
                .map(|r| {
                    let id = num_id(r.id)?;
                    Ok(Record { id, payload: from_edge_payload(id, r.payload)? })
                })
                .collect()
        })
        .await
    }

    /// Point ids from `start` on, in id order, at most `limit`.
    pub(super) async fn ids_from(&self, start: u64, limit: usize) -> Result<Vec<u64>, VectorError> {
        let request = ScrollRequest {
            offset: Some(PointId::NumId(start)),
            limit: Some(limit),
            filter: None,
            with_payload: Some(WithPayloadInterface::Bool(false)),
            with_vector: WithVector::Bool(false),
            order_by: None,
        };
        self.read(move |s| {
            let (records, _next) = s.scroll(request).map_err(op_err)?;
            records.into_iter().map(|r| num_id(r.id)).collect()
        })
        .await
    }

    /// Check (and on first use write) the mark naming the catalog these vectors belong to:
    /// `<dir>/catalog-id`, written to a temporary file, synced and renamed into place.
    pub(super) async fn check_pairing(&self, pairing: &super::Pairing) -> Result<(), VectorError> {
        let mark_path = self.dir.join(PAIRING_FILE);
        let mark = match std::fs::read_to_string(&mark_path) {
            Ok(m) => Some(m.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(VectorError::Io { path: mark_path, source: e }),
        };
        let points = if mark.is_some() { 0 } else { self.count().await? };
        if pairing.check(&self.dir.display().to_string(), mark.as_deref(), points)? {
            let tmp = self.dir.join(format!(".{PAIRING_FILE}.tmp"));
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = File::create(&tmp)?;
                f.write_all(format!("{}\n", pairing.catalog_id).as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &mark_path)?;
                File::open(&self.dir)?.sync_all()
            };
            write().map_err(|e| VectorError::Io { path: mark_path.clone(), source: e })?;
            tracing::info!(store = %self.dir.display(), catalog = %pairing.catalog_id, adopted = points > 0, "vector store paired with the catalog");
        }
        Ok(())
    }

    pub(super) async fn count(&self) -> Result<u64, VectorError> {
        self.read(|s| s.count(CountRequest { filter: None, exact: true }).map(|n| n as u64).map_err(op_err)).await
    }

    pub(super) async fn optimize(&self) -> Result<(), VectorError> {
        let shared = self.shared.clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let _one_at_a_time = lock(&shared.optimizing);
            let started = std::time::Instant::now();
            let changed = shared.shard.optimize().map_err(op_err)?;
            tracing::info!(
                dir = %dir.display(),
                changed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "vector shard optimised"
            );
            Ok(())
        })
        .await
        .map_err(join_err)?
    }

    pub(super) async fn flush(&self) -> Result<(), VectorError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            // EdgeShard::flush panics if an update or an optimisation holds its locks.
            let _no_optimize = lock(&shared.optimizing);
            let _no_update = lock(&shared.updates);
            shared.shard.flush();
            Ok(())
        })
        .await
        .map_err(join_err)?
    }
}

fn open_blocking(dir: PathBuf, dim: usize) -> Result<Shared, VectorError> {
    std::fs::create_dir_all(&dir).map_err(io_err(dir.clone()))?;

    let lock_path = dir.join(LOCK_FILE);
    let lock = File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err(lock_path.clone()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(VectorError::Locked(dir)),
        Err(TryLockError::Error(e)) => {
            return Err(VectorError::Io { path: lock_path, source: e });
        }
    }

    let existing = dir.join(EDGE_CONFIG_FILE).exists();
    let shard = if existing {
        let shard = EdgeShard::load(&dir, None).map_err(|e| VectorError::Corrupt(format!("cannot load vector shard {}: {e}", dir.display())))?;
        check_config(&shard, &dir, dim)?;
        shard
    } else {
        let config = EdgeConfig::builder()
            .vector(DEFAULT_VECTOR_NAME, EdgeVectorParamsBuilder::new(dim, Distance::Cosine).build())
            // Payloads are small; keep them in memory for fast filtering.
            .on_disk_payload(false)
            .build();
        let shard = EdgeShard::new(&dir, config)
            .map_err(|e| VectorError::Backend { backend: Backend::Embedded, message: format!("cannot create vector shard {}: {e}", dir.display()) })?;
        for (field, ty) in INDEXED_FIELDS {
            let op = UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(CreateIndex {
                field_name: key(field),
                field_schema: Some(PayloadFieldSchema::FieldType(*ty)),
            }));
            if let Err(e) = shard.update(op) {
                tracing::warn!(field, error = %e, "cannot create payload index (filters still work)");
            }
        }
        shard.flush();
        tracing::info!(dir = %dir.display(), dim, "created vector shard");
        shard
    };

    Ok(Shared { shard, updates: Mutex::new(()), optimizing: Mutex::new(()), _lock: lock })
}

fn check_config(shard: &EdgeShard, dir: &std::path::Path, dim: usize) -> Result<(), VectorError> {
    let cfg = shard.config();
    let Some(v) = cfg.vectors.get(DEFAULT_VECTOR_NAME) else {
        return Err(VectorError::Corrupt(format!("vector shard {} has no default dense vector", dir.display())));
    };
    if v.size != dim || v.distance != Distance::Cosine {
        return Err(VectorError::Corrupt(format!("vector shard {} holds {}-d {:?} vectors, expected {dim}-d Cosine", dir.display(), v.size, v.distance)));
    }
    Ok(())
}
