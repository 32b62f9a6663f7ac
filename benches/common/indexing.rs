//! A real indexing setup shared by the end-to-end benches (`pipeline`, `compare`): a SQLite
//! catalog and a qdrant-edge store in a temporary directory, one live session over a corpus, and
//! a running [`Pipeline`]. [`Rig::index_once`] (re)starts the session and waits until it is done.

use std::path::Path;
use std::time::Duration;

use pixdex::catalog::Catalog;
use pixdex::config::{LibraryConfig, WatchMode};
use pixdex::embed::Embedder;
use pixdex::library::Library;
use pixdex::pipeline::{Pipeline, PipelineConfig};
use pixdex::sessions::{CreateSession, Sessions};
use pixdex::vectors::{VectorStore, VectorsConfig};

pub struct Rig {
    pub rt: tokio::runtime::Runtime,
    pub pipeline: Pipeline,
    catalog: Catalog,
    sessions: Sessions,
    session: i64,
    started: bool,
    _state: tempfile::TempDir,
}

// Each bench binary includes this file and uses its own part of it.
#[allow(dead_code)]
impl Rig {
    /// `root` holds the corpus (files with `extensions`); `decoders` decode threads, `batch`
    /// images per model call.
    pub fn new(rt: tokio::runtime::Runtime, root: &Path, extensions: &[&str], embedder: Embedder, decoders: usize, batch: usize) -> Rig {
        Self::with_limits(rt, root, extensions, embedder, decoders, batch, pixdex::decode::DecodeLimits::default())
    }

    /// `new`, with these decode limits (e.g. a memory budget).
    pub fn with_limits(
        rt: tokio::runtime::Runtime,
        root: &Path,
        extensions: &[&str],
        embedder: Embedder,
        decoders: usize,
        batch: usize,
        limits: pixdex::decode::DecodeLimits,
    ) -> Rig {
        let state = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root).unwrap();
        let lib = Library::new(LibraryConfig {
            watch: WatchMode::Off,
            poll_interval: Duration::from_secs(1),
            settle: Duration::from_millis(100),
            rescan_interval: Duration::from_secs(3600),
            roots: vec![root.clone()],
            extensions: extensions.iter().map(|e| e.to_string()).collect(),
            ignored: vec![],
        });
        let url = format!("sqlite://{}", state.path().join("catalog.db").display());
        let catalog = rt.block_on(Catalog::connect(&url, 4)).unwrap();
        let store = rt.block_on(VectorStore::open(&VectorsConfig::embedded(state.path()), &embedder.model_name(), embedder.dim())).unwrap();
        let sessions = Sessions::new(catalog.clone(), lib, "bench".into());
        let s = rt
            .block_on(sessions.create(CreateSession { name: "bench".into(), root_path: root.display().to_string(), live: true, ..Default::default() }, "api"))
            .unwrap();
        let cfg = PipelineConfig {
            decode_workers: decoders,
            resize_workers: 1,
            claim_batch: (2 * batch).max(16),
            lease: Duration::from_secs(600),
            limits,
            owner: "bench".into(),
            max_attempts: pixdex::catalog::DEFAULT_MAX_ATTEMPTS,
            library: None,
        };
        let pipeline = Pipeline::start(cfg, embedder, store, catalog.clone(), rt.handle().clone());
        Rig { rt, pipeline, catalog, sessions, session: s.id, started: false, _state: state }
    }

    /// Start the session (restart it after the first time) and wait until it completes;
    /// returns its (processed, failed) image counts.
    pub fn index_once(&mut self) -> (i64, i64) {
        if self.started {
            self.rt.block_on(self.sessions.restart(self.session, false)).unwrap();
        } else {
            self.rt.block_on(self.sessions.start(self.session)).unwrap();
            self.started = true;
        }
        self.pipeline.wake();
        loop {
            let st = self.rt.block_on(self.catalog.session(self.session)).unwrap().unwrap();
            if st.status == pixdex::model::SessionStatus::Completed {
                return (st.processed_images, st.failed_images);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
