//! Remote backend: a Qdrant server over gRPC (`qdrant-client`).

use std::time::Duration;

use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::vector_output::Vector as OutVector;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FieldType, Filter as QFilter,
    GetPointsBuilder, PointId, PointStruct, PointsIdsList, QueryPointsBuilder, Range, ScrollPointsBuilder, SetPayloadPointsBuilder, UpsertPointsBuilder,
    Value as QValue, VectorParamsBuilder,
};
use qdrant_client::{Payload as QPayload, Qdrant, QdrantError};

use super::{
    Backend, F_CATEGORY, F_DIRS, F_INDEXED_AT, F_LABEL_IDS, F_SESSIONS, Filter, Hit, Payload, Point, Record, VectorError, VectorsConfig, path_fields,
    payload_from_json, payload_to_json, prefix_key, sanitize_name,
};

/// Points per upsert request (1280-d f32 ≈ 5 KiB each → ≈ 1.3 MiB per request).
const UPSERT_CHUNK: usize = 256;

pub(super) struct RemoteStore {
    client: Qdrant,
    url: String,
    collection: String,
    dim: usize,
    has_key: bool,
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
        let url = cfg
            .url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| VectorError::Config("vectors.backend = \"qdrant\" needs vectors.url".into()))?;
        let api_key = cfg.api_key.clone().filter(|k| !k.is_empty());
        let has_key = api_key.is_some();
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            // pixdex checks compatibility through its own calls; don't probe at build time.
            .skip_compatibility_check()
            .build()
            .map_err(qerr)?;
        let collection = format!("{}_{}_{}", sanitize_name(&cfg.collection_prefix), sanitize_name(model), dim);
        let store = Self { client, url: redact_url(url), collection, dim, has_key };
        store.ensure_collection().await?;
        Ok(store)
    }

    async fn ensure_collection(&self) -> Result<(), VectorError> {
        let c = &self.collection;
        if self.client.collection_exists(c).await.map_err(qerr)? {
            let info = self.client.collection_info(c).await.map_err(qerr)?;
            let size = info.result.and_then(|r| r.config).and_then(|c| c.params).and_then(|p| p.vectors_config).and_then(|v| v.config).and_then(|c| match c {
                qdrant_client::qdrant::vectors_config::Config::Params(p) => Some((p.size, p.distance)),
                _ => None,
            });
            match size {
                Some((s, d)) if s == self.dim as u64 && d == Distance::Cosine as i32 => Ok(()),
                other => Err(VectorError::Config(format!(
                    "collection {c} exists with an incompatible vector config {other:?} \
                     (expected one unnamed {}-d cosine vector)",
                    self.dim
                ))),
            }
        } else {
            let created = self
                .client
                .create_collection(CreateCollectionBuilder::new(c).vectors_config(VectorParamsBuilder::new(self.dim as u64, Distance::Cosine)))
                .await;
            if let Err(e) = created {
                // Lost a creation race with another pixdex? Fine if it exists now.
                if !self.client.collection_exists(c).await.unwrap_or(false) {
                    return Err(qerr(e));
                }
            }
            for (field, ty) in [
                (F_DIRS, FieldType::Keyword),
                (F_SESSIONS, FieldType::Integer),
                (F_CATEGORY, FieldType::Integer),
                (F_INDEXED_AT, FieldType::Integer),
                (F_LABEL_IDS, FieldType::Integer),
            ] {
                if let Err(e) = self.client.create_field_index(CreateFieldIndexCollectionBuilder::new(c, field, ty).wait(true)).await {
                    tracing::warn!(collection = %c, field, error = %e, "cannot create payload index");
                }
            }
            tracing::info!(collection = %c, dim = self.dim, "created qdrant collection");
            Ok(())
        }
    }

    pub(super) fn dim(&self) -> usize {
        self.dim
    }

    pub(super) fn describe(&self) -> String {
        format!("qdrant at {} collection {}{}", self.url, self.collection, if self.has_key { " (api key ****)" } else { "" })
    }

    #[cfg(test)]
    pub(super) async fn drop_collection(&self) -> Result<(), VectorError> {
        self.client.delete_collection(&self.collection).await.map_err(qerr)?;
        Ok(())
    }

    pub(super) async fn upsert(&self, points: Vec<Point>) -> Result<(), VectorError> {
        let points: Vec<PointStruct> = points.into_iter().map(|p| PointStruct::new(p.id, p.vector, to_qpayload(payload_to_json(&p.payload)))).collect();
        for chunk in points.chunks(UPSERT_CHUNK) {
            self.client.upsert_points(UpsertPointsBuilder::new(&self.collection, chunk.to_vec()).wait(true)).await.map_err(qerr)?;
        }
        Ok(())
    }

    pub(super) async fn delete(&self, ids: &[u64]) -> Result<(), VectorError> {
        let ids: Vec<PointId> = ids.iter().map(|&i| i.into()).collect();
        self.client.delete_points(DeletePointsBuilder::new(&self.collection).points(PointsIdsList { ids }).wait(true)).await.map_err(qerr)?;
        Ok(())
    }

    pub(super) async fn set_path(&self, id: u64, path: &str) -> Result<(), VectorError> {
        // Qdrant rejects set_payload on a missing id; keep the embedded semantics (no-op).
        if self.get_payload(id).await?.is_none() {
            tracing::debug!(id, "set_path on a point that is not in the store");
            return Ok(());
        }
        self.client
            .set_payload(
                SetPayloadPointsBuilder::new(&self.collection, to_qpayload(path_fields(path)))
                    .points_selector(PointsIdsList { ids: vec![id.into()] })
                    .wait(true),
            )
            .await
            .map_err(qerr)?;
        Ok(())
    }

    async fn get_payload(&self, id: u64) -> Result<Option<Payload>, VectorError> {
        let res = self
            .client
            .get_points(GetPointsBuilder::new(&self.collection, vec![PointId::from(id)]).with_payload(true).with_vectors(false))
            .await
            .map_err(qerr)?;
        res.result.into_iter().next().map(|p| from_qpayload(id, p.payload)).transpose()
    }

    pub(super) async fn get(&self, id: u64) -> Result<Option<(Vec<f32>, Payload)>, VectorError> {
        let res = self
            .client
            .get_points(GetPointsBuilder::new(&self.collection, vec![PointId::from(id)]).with_payload(true).with_vectors(true))
            .await
            .map_err(qerr)?;
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
        let mut q = QueryPointsBuilder::new(&self.collection).query(vector.to_vec()).limit(limit as u64).offset(offset as u64).with_payload(true);
        if let Some(f) = to_qfilter(filter) {
            q = q.filter(f);
        }
        let res = self.client.query(q).await.map_err(qerr)?;
        res.result
            .into_iter()
            .map(|p| {
                let id = num_id(p.id)?;
                Ok(Hit { id, score: p.score, payload: from_qpayload(id, p.payload)? })
            })
            .collect()
    }

    pub(super) async fn scroll(&self, filter: &Filter, limit: usize) -> Result<Vec<Record>, VectorError> {
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
            let res = self.client.scroll(req).await.map_err(qerr)?;
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
        let res = self.client.count(CountPointsBuilder::new(&self.collection).exact(true)).await.map_err(qerr)?;
        Ok(res.result.map(|r| r.count).unwrap_or(0))
    }
}
