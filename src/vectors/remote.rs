//! Remote backend: a Qdrant server over gRPC (`qdrant-client`).

use std::time::Duration;

use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::vector_output::Vector as OutVector;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FieldType, Filter as QFilter,
    GetPointsBuilder, PointId, PointStruct, PointsIdsList, QueryPointsBuilder, Range, ScrollPointsBuilder, SetPayloadPointsBuilder, UpdateCollectionBuilder,
    UpsertPointsBuilder, Value as QValue, VectorParamsBuilder,
};
use qdrant_client::{Payload as QPayload, Qdrant, QdrantError};

use super::{
    Backend, F_CATEGORY, F_DIRS, F_INDEXED_AT, F_LABEL_IDS, F_SESSIONS, Filter, Hit, Payload, Point, Record, VectorError, VectorsConfig, path_fields,
    payload_from_json, payload_to_json, prefix_key, sanitize_name,
};

/// Points per upsert request (1280-d f32 ≈ 5 KiB each → ≈ 1.3 MiB per request).
const UPSERT_CHUNK: usize = 256;

pub(super) struct RemoteStore {
    /// One client per configured node (a single server, or the nodes of a cluster); requests
    /// go to `current`, and move to the next node when it is unreachable.
    nodes: Vec<(Qdrant, String)>,
    current: std::sync::atomic::AtomicUsize,
    url: String,
    collection: String,
    dim: usize,
    has_key: bool,
    replication_factor: Option<u32>,
    shard_number: Option<u32>,
    /// Set once the collection is known to exist with the right shape. A server down when
    /// the daemon starts leaves it unset: every request checks first (and fails Unavailable,
    /// which callers wait out), so the daemon starts and waits instead of exiting.
    ready: tokio::sync::OnceCell<()>,
    /// The catalog these vectors belong to (checked when the collection is first seen).
    pairing: Option<super::Pairing>,
}

/// Collection metadata key holding the id of the catalog the collection belongs to.
const PAIRING_KEY: &str = "pixdex_catalog_id";

/// The catalog id a collection is marked with, if any.
fn mark_of(info: &qdrant_client::qdrant::GetCollectionInfoResponse) -> Option<String> {
    info.result.as_ref().and_then(|r| r.config.as_ref()).and_then(|c| c.metadata.get(PAIRING_KEY)).and_then(|v| match &v.kind {
        Some(qdrant_client::qdrant::value::Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    })
}

fn qerr(e: QdrantError) -> VectorError {
    match e {
        QdrantError::ResponseError { status } => {
            // tonic::Code as i32: 1 Cancelled, 4 DeadlineExceeded, 10 Aborted, 14 Unavailable.
            let code = i32::from(status.code());
            // A refused or broken connection reaches us as Unknown (2) or Internal (13) with the
            // transport's words in the message: that is an outage, not a bad request.
            let transport = matches!(code, 2 | 13) && super::looks_transient(status.message());
            // 8 ResourceExhausted: the server sheds load; retry later.
            if matches!(code, 1 | 4 | 8 | 10 | 14) || transport {
                VectorError::Unavailable { backend: Backend::Qdrant, reason: format!("{:?}: {}", status.code(), status.message()) }
            } else if code == 3 {
                VectorError::Invalid(status.message().to_owned())
            } else {
                VectorError::Backend { backend: Backend::Qdrant, message: format!("{:?}: {}", status.code(), status.message()) }
            }
        }
        e @ (QdrantError::ResourceExhaustedError { .. } | QdrantError::Io(_)) => VectorError::Unavailable { backend: Backend::Qdrant, reason: e.to_string() },
        QdrantError::InvalidUri(e) => VectorError::Config(format!("vectors.url: {e}")),
        e => VectorError::Backend { backend: Backend::Qdrant, message: e.to_string() },
    }
}

fn to_qpayload(m: serde_json::Map<String, serde_json::Value>) -> QPayload {
    QPayload::from(m)
}

fn from_qpayload(id: u64, m: std::collections::HashMap<String, QValue>) -> Result<Payload, VectorError> {
    let json: serde_json::Map<String, serde_json::Value> = QPayload::from(m).into();
    payload_from_json(id, json)
}

fn num_id(id: Option<PointId>) -> Result<u64, VectorError> {
    match id.and_then(|p| p.point_id_options) {
        Some(PointIdOptions::Num(n)) => Ok(n),
        other => Err(VectorError::Corrupt(format!("unexpected point id {other:?}"))),
    }
}

pub(super) fn to_qfilter(f: &Filter) -> Option<QFilter> {
    let mut must = Vec::new();
    if let Some(s) = f.session_id {
        must.push(Condition::matches(F_SESSIONS, s));
    }
    if let Some(c) = f.category_id {
        must.push(Condition::matches(F_CATEGORY, c));
    }
    if let Some(p) = &f.path_prefix {
        must.push(Condition::matches(F_DIRS, prefix_key(p)));
    }
    if f.indexed_from.is_some() || f.indexed_to.is_some() {
        must.push(Condition::range(F_INDEXED_AT, Range { gte: f.indexed_from.map(|v| v as f64), lte: f.indexed_to.map(|v| v as f64), gt: None, lt: None }));
    }
    if let Some(ids) = &f.label_any {
        let ids: Vec<i64> = ids.iter().map(|&c| i64::from(c)).collect();
        must.push(Condition::matches(F_LABEL_IDS, ids));
    }
    if must.is_empty() { None } else { Some(QFilter::must(must)) }
}

/// `http://user:secret@host:6334/` → `http://host:6334` (no credentials in logs).
pub(super) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let rest = match rest.rsplit_once('@') {
        Some((_, host)) => host,
        None => rest,
    };
    let rest = rest.split(['?', '#']).next().unwrap_or(rest).trim_end_matches('/');
    match scheme {
        Some(s) => format!("{s}://{rest}"),
        None => rest.to_owned(),
    }
}

impl RemoteStore {
    pub(super) async fn open(cfg: &VectorsConfig, model: &str, dim: usize) -> Result<Self, VectorError> {
        let urls: Vec<&str> = cfg.url.as_deref().unwrap_or("").split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        if urls.is_empty() {
            return Err(VectorError::Config("vectors.backend = \"qdrant\" needs vectors.url".into()));
        }
        let api_key = cfg.api_key.clone().filter(|k| !k.is_empty());
        let has_key = api_key.is_some();
        let mut nodes = Vec::with_capacity(urls.len());
        for url in &urls {
            let client = Qdrant::from_url(url)
                .api_key(api_key.clone())
                .timeout(Duration::from_secs(30))
                .connect_timeout(Duration::from_secs(5))
                // pixdex checks compatibility through its own calls; don't probe at build time.
                .skip_compatibility_check()
                .build()
                .map_err(qerr)?;
            nodes.push((client, redact_url(url)));
        }
        let collection = format!("{}_{}_{}", sanitize_name(&cfg.collection_prefix), sanitize_name(model), dim);
        let url = nodes.iter().map(|n| n.1.as_str()).collect::<Vec<_>>().join(", ");
        let store = Self {
            nodes,
            current: std::sync::atomic::AtomicUsize::new(0),
            url,
            collection,
            dim,
            has_key,
            replication_factor: cfg.replication_factor,
            shard_number: cfg.shard_number,
            ready: tokio::sync::OnceCell::new(),
            pairing: cfg.pairing.clone(),
        };
        match store.ready().await {
            Ok(()) => {}
            Err(e @ VectorError::Unavailable { .. }) => {
                tracing::warn!(url = %store.url, error = %e, "the Qdrant server is unavailable; starting anyway and waiting for it (indexing pauses, search answers 503)")
            }
            Err(e) => return Err(e),
        }
        Ok(store)
    }

    /// Run one request on the current node; when the node is unreachable, try the others in
    /// turn (a cluster keeps serving while a node is down) and stay on the one that answered.
    /// Every node unreachable: the last `Unavailable` error, which callers wait out and retry.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, VectorError>
    where
        F: Fn(Qdrant) -> Fut,
        Fut: std::future::Future<Output = Result<T, QdrantError>>,
    {
        use std::sync::atomic::Ordering;
        let n = self.nodes.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for k in 0..n {
            let i = (start + k) % n;
            match f(self.nodes[i].0.clone()).await.map_err(qerr) {
                Err(e @ VectorError::Unavailable { .. }) if n > 1 => {
                    tracing::warn!(node = %self.nodes[i].1, error = %e, "qdrant node unreachable; trying the next one");
                    last = Some(e);
                }
                r => {
                    if k > 0 {
                        self.current.store(i, Ordering::Relaxed);
                        tracing::info!(node = %self.nodes[i].1, "qdrant requests now go to this node");
                    }
                    return r;
                }
            }
        }
        Err(last.expect("at least one node"))
    }

    /// The collection exists with the right shape (checked, or created, once).
    async fn ready(&self) -> Result<(), VectorError> {
        self.ready.get_or_try_init(|| self.ensure_collection()).await.map(|_| ())
    }

    async fn ensure_collection(&self) -> Result<(), VectorError> {
        let c = &self.collection;
        if self.call(|q| async move { q.collection_exists(c).await }).await? {
            let info = self.call(|q| async move { q.collection_info(c).await }).await?;
            let mark = mark_of(&info);
            let size = info.result.and_then(|r| r.config).and_then(|c| c.params).and_then(|p| p.vectors_config).and_then(|v| v.config).and_then(|c| match c {
                qdrant_client::qdrant::vectors_config::Config::Params(p) => Some((p.size, p.distance)),
                _ => None,
            });
            match size {
                Some((s, d)) if s == self.dim as u64 && d == Distance::Cosine as i32 => self.check_pairing(mark).await,
                other => Err(VectorError::Config(format!(
                    "collection {c} exists with an incompatible vector config {other:?} \
                     (expected one unnamed {}-d cosine vector)",
                    self.dim
                ))),
            }
        } else {
            let mut create = CreateCollectionBuilder::new(c).vectors_config(VectorParamsBuilder::new(self.dim as u64, Distance::Cosine));
            if let Some(p) = &self.pairing {
                create = create.metadata(std::collections::HashMap::from([(PAIRING_KEY.to_owned(), serde_json::Value::from(p.catalog_id.clone()))]));
            }
            if let Some(r) = self.replication_factor.filter(|&r| r > 1) {
                create = create.replication_factor(r);
            }
            if let Some(n) = self.shard_number {
                create = create.shard_number(n);
            }
            let create = &create;
            let created = self.call(|q| async move { q.create_collection(create.clone()).await }).await;
            let lost_race = created.is_err();
            if let Err(e) = created {
                // Lost a creation race with another pixdex? Fine if it exists now.
                if !self.call(|q| async move { q.collection_exists(c).await }).await.unwrap_or(false) {
                    return Err(e);
                }
            }
            for (field, ty) in [
                (F_DIRS, FieldType::Keyword),
                (F_SESSIONS, FieldType::Integer),
                (F_CATEGORY, FieldType::Integer),
                (F_INDEXED_AT, FieldType::Integer),
                (F_LABEL_IDS, FieldType::Integer),
            ] {
                if let Err(e) = self.call(|q| async move { q.create_field_index(CreateFieldIndexCollectionBuilder::new(c, field, ty).wait(true)).await }).await
                {
                    tracing::warn!(collection = %c, field, error = %e, "cannot create payload index");
                }
            }
            tracing::info!(collection = %c, dim = self.dim, "created qdrant collection");
            // Lost a creation race: the winner's mark is checked like any other.
            if lost_race { self.check_existing_mark().await } else { Ok(()) }
        }
    }

    /// An existing collection's mark (collection metadata `pixdex_catalog_id`) against this
    /// catalog; an unmarked collection is marked when it is empty or adopted (`Pairing`).
    async fn check_pairing(&self, mark: Option<String>) -> Result<(), VectorError> {
        let Some(p) = &self.pairing else { return Ok(()) };
        let c = &self.collection;
        let points = if mark.is_some() {
            0
        } else {
            let res = self.call(|q| async move { q.count(CountPointsBuilder::new(c).exact(true)).await }).await?;
            res.result.map(|r| r.count).unwrap_or(0)
        };
        if p.check(&format!("Qdrant collection {c}"), mark.as_deref(), points)? {
            let meta = std::collections::HashMap::from([(PAIRING_KEY.to_owned(), serde_json::Value::from(p.catalog_id.clone()))]);
            let update = &UpdateCollectionBuilder::new(c).metadata(meta);
            self.call(|q| async move { q.update_collection(update.clone()).await }).await?;
            tracing::info!(collection = %c, catalog = %p.catalog_id, adopted = points > 0, "vector collection paired with the catalog");
        }
        Ok(())
    }

    async fn check_existing_mark(&self) -> Result<(), VectorError> {
        let c = &self.collection;
        let info = self.call(|q| async move { q.collection_info(c).await }).await?;
        self.check_pairing(mark_of(&info)).await
    }

    pub(super) fn dim(&self) -> usize {
        self.dim
    }

    pub(super) fn describe(&self) -> String {
        format!("qdrant at {} collection {}{}", self.url, self.collection, if self.has_key { " (api key ****)" } else { "" })
    }

    #[cfg(test)]
    pub(super) async fn drop_collection(&self) -> Result<(), VectorError> {
        self.call(|q| async move { q.delete_collection(&self.collection).await }).await?;
        Ok(())
    }

    pub(super) async fn upsert(&self, points: Vec<Point>) -> Result<(), VectorError> {
        self.ready().await?;
        let points: Vec<PointStruct> = points.into_iter().map(|p| PointStruct::new(p.id, p.vector, to_qpayload(payload_to_json(&p.payload)))).collect();
        for chunk in points.chunks(UPSERT_CHUNK) {
            self.call(|q| async move { q.upsert_points(UpsertPointsBuilder::new(&self.collection, chunk.to_vec()).wait(true)).await }).await?;
        }
        Ok(())
    }

    pub(super) async fn delete(&self, ids: &[u64]) -> Result<(), VectorError> {
        self.ready().await?;
        let ids: Vec<PointId> = ids.iter().map(|&i| i.into()).collect();
        let ids = &ids;
        self.call(|q| async move { q.delete_points(DeletePointsBuilder::new(&self.collection).points(PointsIdsList { ids: ids.clone() }).wait(true)).await })
            .await?;
        Ok(())
    }

    pub(super) async fn set_path(&self, id: u64, path: &str) -> Result<(), VectorError> {
        self.ready().await?;
        // Qdrant rejects set_payload on a missing id; keep the embedded semantics (no-op).
        if self.get_payload(id).await?.is_none() {
            tracing::debug!(id, "set_path on a point that is not in the store");
            return Ok(());
        }
        self.call(|q| async move {
            q.set_payload(
                SetPayloadPointsBuilder::new(&self.collection, to_qpayload(path_fields(path)))
                    .points_selector(PointsIdsList { ids: vec![id.into()] })
                    .wait(true),
            )
            .await
        })
        .await?;
        Ok(())
    }

    async fn get_payload(&self, id: u64) -> Result<Option<Payload>, VectorError> {
        self.ready().await?;
        let res = self
            .call(
                |q| async move { q.get_points(GetPointsBuilder::new(&self.collection, vec![PointId::from(id)]).with_payload(true).with_vectors(false)).await },
            )
            .await?;
        res.result.into_iter().next().map(|p| from_qpayload(id, p.payload)).transpose()
    }

    pub(super) async fn get(&self, id: u64) -> Result<Option<(Vec<f32>, Payload)>, VectorError> {
        self.ready().await?;
        let res = self
            .call(|q| async move { q.get_points(GetPointsBuilder::new(&self.collection, vec![PointId::from(id)]).with_payload(true).with_vectors(true)).await })
            .await?;
        let Some(p) = res.result.into_iter().next() else {
            return Ok(None);
        };
        let vector = match p.vectors.and_then(|v| v.get_vector()) {
            Some(OutVector::Dense(d)) => d.data,
            _ => {
                return Err(VectorError::Corrupt(format!("point {id} has no dense vector")));
            }
        };
        Ok(Some((vector, from_qpayload(id, p.payload)?)))
    }

    pub(super) async fn search(&self, vector: &[f32], limit: usize, offset: usize, filter: &Filter) -> Result<Vec<Hit>, VectorError> {
        self.ready().await?;
        let mut q = QueryPointsBuilder::new(&self.collection).query(vector.to_vec()).limit(limit as u64).offset(offset as u64).with_payload(true);
        if let Some(f) = to_qfilter(filter) {
            q = q.filter(f);
        }
        let q = &q;
        let res = self.call(|c| async move { c.query(q.clone()).await }).await?;
        res.result
            .into_iter()
            .map(|p| {
                let id = num_id(p.id)?;
                Ok(Hit { id, score: p.score, payload: from_qpayload(id, p.payload)? })
            })
            .collect()
    }

    pub(super) async fn ids_from(&self, start: u64, limit: usize) -> Result<Vec<u64>, VectorError> {
        self.ready().await?;
        let req = ScrollPointsBuilder::new(&self.collection).limit(limit as u32).with_payload(false).with_vectors(false).offset(PointId::from(start));
        let req = &req;
        let res = self.call(|q| async move { q.scroll(req.clone()).await }).await?;
        res.result.into_iter().map(|p| num_id(p.id)).collect()
    }

    pub(super) async fn scroll(&self, filter: &Filter, limit: usize) -> Result<Vec<Record>, VectorError> {
        self.ready().await?;
        let mut out = Vec::new();
        let mut offset: Option<PointId> = None;
        while out.len() < limit {
            let page = (limit - out.len()).min(1024) as u32;
            let mut req = ScrollPointsBuilder::new(&self.collection).limit(page).with_payload(true).with_vectors(false);
            if let Some(f) = to_qfilter(filter) {
                req = req.filter(f);
            }
            if let Some(o) = offset.take() {
                req = req.offset(o);
            }
            let req = &req;
            let res = self.call(|q| async move { q.scroll(req.clone()).await }).await?;
            for p in res.result {
                let id = num_id(p.id)?;
                out.push(Record { id, payload: from_qpayload(id, p.payload)? });
            }
            match res.next_page_offset {
                Some(next) => offset = Some(next),
                None => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    pub(super) async fn count(&self) -> Result<u64, VectorError> {
        self.ready().await?;
        let res = self.call(|q| async move { q.count(CountPointsBuilder::new(&self.collection).exact(true)).await }).await?;
        Ok(res.result.map(|r| r.count).unwrap_or(0))
    }
}
