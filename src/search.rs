//! Search: by example image (a file on the daemon's machine, or uploaded bytes), by asset
//! (its stored vector), and by words: with CLIP, the words' text embedding against the image
//! vectors; with EfficientNet, the stored ImageNet labels ranked by label probability (and the
//! answer says so). Every answer names the model whose vectors served it: search reads one
//! model's vectors at a time ([`Serving`]), switched only when a new model's re-embed is done.
//! Results carry the catalog's current path: a deleted asset never shows, a moved one shows
//! where it is now.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::decode::DecodeLimits;
use crate::embed::Embedder;
use crate::library::Library;
use crate::vectors::{Filter, LabelPayload, VectorStore};

pub const MAX_LIMIT: usize = 100;

/// Upper bounds (seconds) of the search latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The kinds of search, as `/metrics` labels them.
pub const SEARCH_KINDS: [&str; 3] = ["words", "image", "similar"];

/// One latency histogram: counts per bucket (not cumulative), total count and sum.
#[derive(Default)]
pub struct Histogram {
    buckets: [std::sync::atomic::AtomicU64; LATENCY_BUCKETS.len()],
    count: std::sync::atomic::AtomicU64,
    sum_us: std::sync::atomic::AtomicU64,
}

/// A histogram's numbers as Prometheus wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound, observations at or below it): cumulative.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&le| s <= le) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        use std::sync::atomic::Ordering::Relaxed;
        let mut acc = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&le, n)| {
                acc += n.load(Relaxed);
                (le, acc)
            })
            .collect();
        HistogramSnapshot { buckets, count: self.count.load(Relaxed), sum_seconds: self.sum_us.load(Relaxed) as f64 / 1e6 }
    }
}

/// Search latency per kind (`SEARCH_KINDS` order), answered or refused, since the daemon started.
#[derive(Default)]
pub struct SearchLatency {
    kinds: [Histogram; SEARCH_KINDS.len()],
}

impl SearchLatency {
    /// (kind, histogram) for every kind.
    pub fn snapshot(&self) -> Vec<(&'static str, HistogramSnapshot)> {
        SEARCH_KINDS.iter().zip(&self.kinds).map(|(&k, h)| (k, h.snapshot())).collect()
    }

    /// Time a search of kind `SEARCH_KINDS[i]` until the guard is dropped.
    fn time(&self, i: usize) -> Timed<'_> {
        Timed { h: &self.kinds[i], since: std::time::Instant::now() }
    }
}

struct Timed<'a> {
    h: &'a Histogram,
    since: std::time::Instant,
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        self.h.observe(self.since.elapsed());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// A path outside the library roots (403).
    #[error("{0}")]
    Forbidden(String),
    /// Search by image needs the model; the reason says how to get it.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl crate::error::Classify for SearchError {
    fn cause(&self) -> crate::error::Cause {
        use crate::error::Cause;
        match self {
            SearchError::BadRequest(_) => Cause::UserInput,
            SearchError::NotFound(_) => Cause::NotFound,
            SearchError::Forbidden(_) => Cause::Forbidden,
            SearchError::Unavailable(_) => Cause::Transient,
            SearchError::Internal(_) => Cause::Bug,
        }
    }
}

/// A vector store error by cause: unavailable (retry shortly: 503) or a bug (500).
fn store_err(e: crate::vectors::VectorError) -> SearchError {
    use crate::error::Classify;
    if e.cause().is_transient() {
        SearchError::Unavailable(format!("the vector store is unavailable ({e}); retry shortly"))
    } else {
        SearchError::Internal(e.to_string())
    }
}

/// A catalog error by cause: unavailable (503) or a bug (500).
fn catalog_err(e: crate::catalog::CatalogError) -> SearchError {
    if e.is_transient() { SearchError::Unavailable(format!("the catalog is unavailable ({e}); retry shortly")) } else { SearchError::Internal(e.to_string()) }
}

/// Filters as clients send them (a wire type too: `pixdex ctl` serializes it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category_id: Option<i64>,
    /// A directory inside the library roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// RFC 3339 or Unix milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indexed_from: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indexed_to: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchHit {
    pub asset_id: i64,
    pub path: String,
    pub score: f32,
    pub labels: Vec<LabelPayload>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub indexed_at: String,
    /// Copies of this image among the hits (identical bytes or a near-identical dHash),
    /// folded into this one (shown as "+N similar copies").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub similar_copies: Vec<CopyHit>,
}

/// A hit folded into a better-scoring copy of itself.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyHit {
    pub asset_id: i64,
    pub path: String,
    pub score: f32,
    /// Same bytes (else a near-duplicate by dHash).
    pub identical: bool,
}

/// `GET /api/v1/duplicates`: copies in the library (or under one folder).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DuplicateReport {
    pub path: Option<String>,
    /// dHash bits two images may differ in and still count as near-duplicates.
    pub near_threshold_bits: u32,
    pub groups: Vec<crate::duplicates::Group>,
    /// Assets that are a copy of an earlier one (all members but the first of each group).
    pub copies: usize,
    /// Assets compared (those already decoded once by the pipeline).
    pub hashed_assets: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchResults {
    pub results: Vec<SearchHit>,
    pub total: usize,
    /// Why the result is empty, when there is an obvious reason (nothing indexed yet…).
    pub hint: Option<String>,
    /// For word search: the labels the words matched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matched_labels: Vec<String>,
    /// The model whose vectors answered.
    pub model: String,
    /// For word search: `"clip"` (text embedding against the images) or `"labels"` (ImageNet
    /// labels, when the serving model has no text tower).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words_via: Option<&'static str>,
    /// How the answer was made when it is not the obvious way (e.g. words through labels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What search reads: one model's vectors, and that model (batch 1) for query images and words.
#[derive(Clone)]
pub struct Serving {
    pub model: String,
    pub store: VectorStore,
    /// The model for queries, or why there is none.
    pub embedder: Result<Arc<Mutex<Embedder>>, String>,
}

/// What to search with, for search by image.
pub enum ImageQuery {
    Path(String),
    Bytes(Vec<u8>),
}

#[derive(Clone)]
pub struct Search {
    serving: Arc<RwLock<Serving>>,
    catalog: Catalog,
    library: Arc<Library>,
    limits: DecodeLimits,
    /// The configured model when it has a text tower but cannot run: (model, why). Word
    /// searches then say so instead of asking for a model that is already configured.
    configured_failure: Arc<RwLock<Option<(String, String)>>>,
    latency: Arc<SearchLatency>,
}

impl Search {
    pub fn new(serving: Serving, catalog: Catalog, library: Arc<Library>, limits: DecodeLimits) -> Search {
        Search { serving: Arc::new(RwLock::new(serving)), catalog, library, limits, configured_failure: Arc::default(), latency: Arc::default() }
    }

    /// How long searches took (`/metrics`).
    pub fn latency(&self) -> &SearchLatency {
        &self.latency
    }

    /// The configured model cannot run (model, why): word searches say so instead of asking
    /// for a model that is already configured. `None` once it runs.
    pub fn set_configured_failure(&self, failure: Option<(String, String)>) {
        *self.configured_failure.write().expect("configured failure lock") = failure;
    }

    /// What answers now (a request keeps the one it started with).
    pub fn serving(&self) -> Serving {
        self.serving.read().expect("serving lock").clone()
    }

    /// Switch to another model's vectors (its re-embed is complete).
    pub fn set_serving(&self, s: Serving) {
        tracing::info!(model = %s.model, "search now reads this model's vectors");
        *self.serving.write().expect("serving lock") = s;
    }

    /// The decode limits (thumbnails of uncatalogued files use them too).
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    fn check_limit(limit: usize) -> Result<(), SearchError> {
        if limit == 0 || limit > MAX_LIMIT {
            return Err(SearchError::BadRequest(format!("limit must be between 1 and {MAX_LIMIT}, got {limit}")));
        }
        Ok(())
    }

    fn filter(&self, f: &Filters) -> Result<Filter, SearchError> {
        let path_prefix = match &f.path_prefix {
            None => None,
            Some(p) if p.trim().is_empty() => None,
            Some(p) => {
                let dir = self.library.resolve_dir(Path::new(p)).map_err(|e| match e {
                    crate::library::LibraryError::NotFound { .. } => SearchError::NotFound(format!("filters.pathPrefix: {e}")),
                    e => SearchError::BadRequest(format!("filters.pathPrefix: {e}")),
                })?;
                Some(dir.to_string_lossy().into_owned())
            }
        };
        let time = |v: &Option<serde_json::Value>, key: &str| -> Result<Option<i64>, SearchError> {
            match v {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::Number(n)) => {
                    n.as_i64().map(Some).ok_or_else(|| SearchError::BadRequest(format!("filters.{key} must be Unix milliseconds or RFC 3339")))
                }
                Some(serde_json::Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                    .map(|d| Some(d.timestamp_millis()))
                    .map_err(|e| SearchError::BadRequest(format!("filters.{key}: {s:?} is not RFC 3339 ({e})"))),
                Some(_) => Err(SearchError::BadRequest(format!("filters.{key} must be Unix milliseconds or RFC 3339"))),
            }
        };
        Ok(Filter {
            session_id: f.session_id,
            category_id: f.category_id,
            path_prefix,
            indexed_from: time(&f.indexed_from, "indexedFrom")?,
            indexed_to: time(&f.indexed_to, "indexedTo")?,
            label_any: None,
        })
    }

    async fn empty_hint(&self, store: &VectorStore) -> Option<String> {
        match store.count().await {
            Ok(0) => Some("nothing is indexed yet: create a session, start it, and search again once it has made progress".into()),
            _ => None,
        }
    }

    /// Replace payload paths by the catalog's current ones; drop assets that are gone.
    async fn finish(
        &self,
        sv: &Serving,
        hits: Vec<(i64, f32, crate::vectors::Payload)>,
        total: usize,
        matched: Vec<String>,
    ) -> Result<SearchResults, SearchError> {
        let ids: Vec<i64> = hits.iter().map(|h| h.0).collect();
        let paths = self.catalog.asset_paths(&ids).await.map_err(catalog_err)?;
        let results: Vec<SearchHit> = hits
            .into_iter()
            .filter_map(|(id, score, p)| {
                paths.get(&id).map(|path| SearchHit {
                    asset_id: id,
                    path: path.clone(),
                    score,
                    labels: p.labels,
                    width: p.width,
                    height: p.height,
                    indexed_at: crate::catalog::rows_ts(p.indexed_at),
                    similar_copies: Vec::new(),
                })
            })
            .collect();
        let results = self.fold_copies(results).await?;
        let hint = if results.is_empty() { self.empty_hint(&sv.store).await } else { None };
        Ok(SearchResults { total: total.max(results.len()), results, hint, matched_labels: matched, model: sv.model.clone(), words_via: None, note: None })
    }

    /// Fold hits that are copies of a better-scoring hit into it (hits come best first).
    async fn fold_copies(&self, hits: Vec<SearchHit>) -> Result<Vec<SearchHit>, SearchError> {
        if hits.len() < 2 {
            return Ok(hits);
        }
        let ids: Vec<i64> = hits.iter().map(|h| h.asset_id).collect();
        let hashes = self.catalog.asset_hashes(&ids).await.map_err(catalog_err)?;
        let mut kept: Vec<SearchHit> = Vec::with_capacity(hits.len());
        for hit in hits {
            // The first better hit this one is a copy of, and whether its bytes are the same.
            let copy_of = hashes.get(&hit.asset_id).and_then(|mine| {
                kept.iter()
                    .enumerate()
                    .find_map(|(k, better)| hashes.get(&better.asset_id).and_then(|o| crate::duplicates::copy_kind(o, mine)).map(|same| (k, same)))
            });
            match copy_of {
                Some((k, identical)) => kept[k].similar_copies.push(CopyHit { asset_id: hit.asset_id, path: hit.path, score: hit.score, identical }),
                None => kept.push(hit),
            }
        }
        Ok(kept)
    }

    /// Groups of copies (identical bytes, or dHash within [`crate::duplicates::NEAR_BITS`])
    /// in the library or under `dir` (a folder inside the roots).
    pub async fn duplicates(&self, dir: Option<&str>) -> Result<DuplicateReport, SearchError> {
        let dir = match dir.map(str::trim).filter(|d| !d.is_empty()) {
            None => None,
            Some(d) => Some(
                self.library
                    .resolve_dir(Path::new(d))
                    .map_err(|e| match e {
                        crate::library::LibraryError::OutsideRoots { .. } => SearchError::Forbidden(e.to_string()),
                        crate::library::LibraryError::NotFound { .. } => SearchError::NotFound(format!("path: {e}")),
                        e => SearchError::BadRequest(format!("path: {e}")),
                    })?
                    .to_string_lossy()
                    .into_owned(),
            ),
        };
        let assets = self.catalog.hashed_assets(dir.as_deref()).await.map_err(catalog_err)?;
        let groups = crate::duplicates::groups(&assets);
        let copies = groups.iter().map(|g| g.members.len() - 1).sum();
        Ok(DuplicateReport { path: dir, near_threshold_bits: crate::duplicates::NEAR_BITS, groups, copies, hashed_assets: assets.len() })
    }

    pub async fn by_image(&self, q: ImageQuery, limit: usize, offset: usize, filters: &Filters) -> Result<SearchResults, SearchError> {
        let _timed = self.latency.time(1);
        Self::check_limit(limit)?;
        let filter = self.filter(filters)?;
        // Containment first, model or not: only files inside the library roots, checked
        // lexically before anything is opened, then opened beneath their root with the check
        // in the same step (a symlink leading out, even one swapped in meanwhile, is never
        // followed). The answer is the same whether an outside path exists or not.
        enum Input {
            File(std::fs::File, PathBuf),
            Bytes(Vec<u8>),
        }
        let input = match q {
            ImageQuery::Path(p) => {
                let library = self.library.clone();
                let path = PathBuf::from(&p);
                let p2 = path.clone();
                let opened = tokio::task::spawn_blocking(move || library.open_file(&p2)).await.map_err(|e| SearchError::Internal(e.to_string()))?;
                let file = opened.map_err(|e| match e {
                    crate::library::LibraryError::OutsideRoots { .. } => {
                        SearchError::Forbidden(format!("{e}; to search with an image from elsewhere, upload its bytes instead of naming a path"))
                    }
                    crate::library::LibraryError::NotFound { .. } | crate::library::LibraryError::NotAFile { .. } => {
                        SearchError::NotFound(format!("{p} is not an image file inside the library roots (upload the image bytes instead)"))
                    }
                    e => SearchError::BadRequest(e.to_string()),
                })?;
                Input::File(file, path)
            }
            ImageQuery::Bytes(b) => {
                if b.is_empty() {
                    return Err(SearchError::BadRequest("the uploaded image is empty".into()));
                }
                Input::Bytes(b)
            }
        };
        let sv = self.serving();
        let embedder = sv.embedder.clone();
        let limits = self.limits.clone();
        let vector = tokio::task::spawn_blocking(move || -> Result<Vec<f32>, SearchError> {
            // The input first: a bad image is the client's to fix whatever else is wrong.
            let decoded = match input {
                Input::File(file, path) => crate::decode::decode_file(file, &path, &limits),
                Input::Bytes(b) => crate::decode::decode_bytes(&b, "uploaded image", &limits),
            }
            .map_err(|e| SearchError::BadRequest(e.to_string()))?;
            let embedder = embedder.map_err(SearchError::Unavailable)?;
            let e = embedder.lock().unwrap();
            let out = e.embed_images(&[&decoded.image]).map_err(|e| SearchError::Internal(e.to_string()))?;
            Ok(out.into_iter().next().map(|e| e.vector).unwrap_or_default())
        })
        .await
        .map_err(|e| SearchError::Internal(e.to_string()))??;
        let hits = sv.store.search(&vector, limit, offset, &filter).await.map_err(store_err)?;
        let n = hits.len();
        self.finish(&sv, hits.into_iter().map(|h| (h.id as i64, h.score, h.payload)).collect(), n, vec![]).await
    }

    pub async fn similar(&self, asset_id: i64, exclude_self: bool, limit: usize, offset: usize, filters: &Filters) -> Result<SearchResults, SearchError> {
        let _timed = self.latency.time(2);
        Self::check_limit(limit)?;
        let filter = self.filter(filters)?;
        let sv = self.serving();
        let (vector, _) = sv
            .store
            .get(asset_id as u64)
            .await
            .map_err(store_err)?
            .ok_or_else(|| SearchError::NotFound(format!("asset {asset_id} has no vector (it does not exist, or no session has indexed it yet)")))?;
        let extra = usize::from(exclude_self);
        let hits = sv.store.search(&vector, limit + extra, offset, &filter).await.map_err(store_err)?;
        let mut hits: Vec<_> = hits.into_iter().filter(|h| !(exclude_self && h.id as i64 == asset_id)).collect();
        hits.truncate(limit);
        let n = hits.len();
        self.finish(&sv, hits.into_iter().map(|h| (h.id as i64, h.score, h.payload)).collect(), n, vec![]).await
    }

    pub async fn by_words(&self, query: &str, limit: usize, offset: usize, filters: &Filters) -> Result<SearchResults, SearchError> {
        let _timed = self.latency.time(0);
        Self::check_limit(limit)?;
        let q = query.trim();
        if q.is_empty() {
            return Err(SearchError::BadRequest("query must not be empty (e.g. \"cat\", \"espresso\")".into()));
        }
        let filter = self.filter(filters)?;
        let sv = self.serving();
        if sv.model.starts_with("clip-") {
            // As typed: CLIP's tokenizer cleans text as open_clip does, which is not Rust's trim
            // (a trailing U+0085 is an ellipsis there).
            return self.by_clip_text(&sv, query, limit, offset, &filter).await;
        }
        let failure = self.configured_failure.read().expect("configured failure lock").clone();
        let note = Some(match &failure {
            Some((model, why)) => format!(
                "words matched ImageNet labels: the configured model {model} is not running ({why}); {} answers meanwhile and has no text tower",
                sv.model
            ),
            None => format!(
                "words matched ImageNet labels: {} has no text tower; for search by meaning configure a CLIP model (model.name = \"ViT-B-32\", scripts/fetch-clip)",
                sv.model
            ),
        });
        let classes = classes_for(q);
        if classes.is_empty() {
            return Ok(SearchResults {
                results: vec![],
                total: 0,
                hint: Some(format!(
                    "no ImageNet label matches {q:?}; the default model searches by its 1000 ImageNet labels (e.g. \"cat\", \"espresso\", \"sports car\")"
                )),
                matched_labels: vec![],
                model: sv.model.clone(),
                words_via: Some("labels"),
                note,
            });
        }
        let ids: Vec<u32> = classes.iter().map(|c| c.0).collect();
        let matched: Vec<String> = classes.iter().map(|c| c.1.clone()).collect();
        let records = sv.store.scroll_by_labels(&ids, &filter, 10_000).await.map_err(store_err)?;
        let mut scored: Vec<(i64, f32, crate::vectors::Payload)> = records
            .into_iter()
            .map(|r| {
                let score = r.payload.labels.iter().filter(|l| ids.contains(&l.class_id)).map(|l| l.probability).fold(0f32, f32::max);
                (r.id as i64, score, r.payload)
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let total = scored.len();
        let page: Vec<_> = scored.into_iter().skip(offset).take(limit).collect();
        let mut out = self.finish(&sv, page, total, matched).await?;
        out.words_via = Some("labels");
        out.note = note;
        Ok(out)
    }

    /// Words through CLIP's text tower, against the image vectors.
    async fn by_clip_text(&self, sv: &Serving, q: &str, limit: usize, offset: usize, filter: &Filter) -> Result<SearchResults, SearchError> {
        let embedder = sv.embedder.clone().map_err(|reason| SearchError::Unavailable(format!("search by words needs {}: {reason}", sv.model)))?;
        let text = q.to_string();
        let vector = tokio::task::spawn_blocking(move || embedder.lock().unwrap().embed_text(&text))
            .await
            .map_err(|e| SearchError::Internal(e.to_string()))?
            .map_err(|e| SearchError::Internal(e.to_string()))?;
        let hits = sv.store.search(&vector, limit, offset, filter).await.map_err(store_err)?;
        let n = hits.len();
        let mut out = self.finish(sv, hits.into_iter().map(|h| (h.id as i64, h.score, h.payload)).collect(), n, vec![]).await?;
        out.words_via = Some("clip");
        Ok(out)
    }
}

/// ImageNet classes whose names match the words: a synonym equal to the query, or containing
/// every query word as a whole word ("cat" → "tabby cat", "tiger cat", …), case-insensitive.
pub fn classes_for(query: &str) -> Vec<(u32, String)> {
    let q = query.to_lowercase();
    let words: Vec<&str> = q.split(|c: char| !c.is_alphanumeric() && c != '-' && c != '\'').filter(|w| !w.is_empty()).collect();
    let mut out = Vec::new();
    for (id, line) in crate::embed::labels().iter().enumerate() {
        let hit = line.split(',').map(|s| s.trim().to_lowercase()).any(|syn| {
            if syn == q {
                return true;
            }
            let syn_words: Vec<&str> = syn.split(|c: char| !c.is_alphanumeric() && c != '-' && c != '\'').filter(|w| !w.is_empty()).collect();
            !words.is_empty() && words.iter().all(|w| syn_words.contains(w) || syn_words.iter().any(|s| s.strip_suffix('s') == Some(w)))
        });
        if hit {
            out.push((id as u32, line.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_histogram_is_cumulative() {
        use std::time::Duration;
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(20));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert!((s.sum_seconds - 20.033).abs() < 1e-9, "{s:?}");
        assert_eq!(s.buckets[0], (0.005, 1));
        assert_eq!(s.buckets[3], (0.05, 2));
        // Above the last bound: only in the count (+Inf).
        assert_eq!(s.buckets.last(), Some(&(10.0, 2)));
        let l = SearchLatency::default();
        drop(l.time(2));
        let snap = l.snapshot();
        assert_eq!(snap.iter().map(|(k, s)| (*k, s.count)).collect::<Vec<_>>(), [("words", 0), ("image", 0), ("similar", 1)]);
    }

    #[test]
    fn words_match_label_synonyms() {
        let cat: Vec<String> = classes_for("cat").into_iter().map(|c| c.1).collect();
        assert!(cat.iter().any(|l| l.contains("tabby")), "{cat:?}");
        assert!(cat.iter().any(|l| l.contains("tiger cat")), "{cat:?}");
        assert!(!classes_for("Espresso").is_empty());
        assert_eq!(classes_for("TABBY").len(), 1);
        assert!(classes_for("zzzqqq").is_empty());
    }
}
