//! Sessions: creation and discovery of subdirectories, the state machine's transitions,
//! admission (what a start would index, and why not), progress, and reconciliation of the
//! sessions declared in the config file. Speaks to the catalog for state and to the library
//! for the filesystem; walks run on blocking threads, never on the async runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Mutex;

use crate::catalog::{Catalog, CatalogError, Discovery, JobsSummary, NewSession, NewSubdir, Session, SessionPatch, Stamp, Stamps, Subdirectory};
use crate::config::SessionSpec;
use crate::library::{FileEntry, Library, LibraryError};
use crate::model::{Action, JobStatus, SessionStatus, now_ms};

mod counts;
mod discovery;

pub use counts::CountsFrom;
pub use discovery::ANSWER_WITHIN;

/// Whose fault and what to answer: each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The request is wrong (400).
    #[error("{0}")]
    BadRequest(String),
    /// The path is outside what pixdex may touch (403).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The session's status does not allow the action (409).
    #[error("{detail}")]
    Conflict { detail: String, current: Option<SessionStatus>, allowed: Vec<Action> },
    /// Nothing to index (422), with the diagnostics that say why.
    #[error("{}", .0.detail)]
    NotAdmissible(Box<Admission>),
    /// The catalog failed: a runtime problem, not the user's (500).
    #[error(transparent)]
    Catalog(CatalogError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl crate::error::Classify for SessionError {
    fn cause(&self) -> crate::error::Cause {
        use crate::error::Cause;
        match self {
            SessionError::BadRequest(_) | SessionError::NotAdmissible(_) => Cause::UserInput,
            SessionError::Forbidden(_) => Cause::Forbidden,
            SessionError::NotFound(_) => Cause::NotFound,
            SessionError::Conflict { .. } => Cause::Conflict,
            SessionError::Catalog(e) => e.cause(),
            SessionError::Internal(_) => Cause::Bug,
        }
    }
}

impl From<CatalogError> for SessionError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound(m) => SessionError::NotFound(m),
            CatalogError::Conflict(m) => SessionError::Conflict { detail: m, current: None, allowed: vec![] },
            e => SessionError::Catalog(e),
        }
    }
}

impl From<LibraryError> for SessionError {
    fn from(e: LibraryError) -> Self {
        match e {
            LibraryError::OutsideRoots { .. } => SessionError::Forbidden(e.to_string()),
            LibraryError::NotFound { .. } => SessionError::NotFound(e.to_string()),
            LibraryError::NotADirectory { .. } | LibraryError::NotAFile { .. } | LibraryError::Io { .. } => SessionError::BadRequest(e.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, SessionError>;

/// What a start or restart does once the session's state allows it.
enum Next {
    /// Done now (a resume, a restart of the failed jobs).
    Done(ActionResult),
    /// Discovering: the work goes on in the background.
    Discover { kind: Discovery, expected: i64 },
}

/// Why a session can or cannot start, in numbers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostics {
    pub total_subdirectories: u64,
    pub selected_subdirectories: u64,
    pub selected_with_images: u64,
    pub images_found: u64,
    pub unsupported_files_found: u64,
    pub supported_extensions: Vec<String>,
    pub suggestion: String,
}

/// The outcome of admission: a one-sentence verdict, the diagnostics, and what was found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Admission {
    pub detail: String,
    pub can_start: bool,
    pub diagnostics: Diagnostics,
    #[serde(skip)]
    pub found: Vec<(i64, Vec<FileEntry>)>,
    #[serde(skip)]
    pub counts: Vec<(i64, i64)>,
}

/// The answer to start / pause / cancel / restart.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionResult {
    pub session_id: i64,
    pub status: SessionStatus,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub session_id: i64,
    pub status: SessionStatus,
    pub progress: ProgressNumbers,
    pub jobs_summary: JobsSummary,
    /// What the pipeline is waiting for, when it waits (e.g. "vector store unavailable…", or
    /// the model when it cannot load, with the fix): nothing fails meanwhile, the work resumes
    /// by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// While discovering: the jobs queued so far, of the images admission expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryProgress>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryProgress {
    pub queued: i64,
    pub expected: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressNumbers {
    pub current: i64,
    pub total: i64,
    pub percentage: f64,
    pub eta_seconds: Option<i64>,
    pub images_per_minute: f64,
}

/// A session creation request, already deserialized.
#[derive(Debug, Clone, Default)]
pub struct CreateSession {
    pub name: String,
    pub root_path: String,
    pub category_id: Option<i64>,
    pub subdirectories: Option<Vec<String>>,
    pub config: Option<serde_json::Value>,
    pub auto_start: bool,
    pub live: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScannedSubdir {
    pub path: String,
    pub name: String,
    pub image_count: u64,
    pub unsupported_files: u64,
    pub is_root: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryScan {
    pub root_path: String,
    pub recursive: bool,
    pub extensions: Vec<String>,
    pub subdirectories: Vec<ScannedSubdir>,
    pub total_images: u64,
    /// Where the numbers came from: the catalog (the watcher follows the folder) or a walk.
    pub counts_from: CountsFrom,
}

/// What reconciling one `[[sessions]]` entry did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reconciled {
    pub name: String,
    pub session_id: Option<i64>,
    pub outcome: String,
}

#[derive(Clone)]
pub struct Sessions {
    catalog: Catalog,
    library: Arc<Library>,
    /// Starts (discovery + job creation) run one at a time in this daemon; across daemons the
    /// catalog's compare-and-set status change keeps a session from being started twice.
    start_lock: Arc<Mutex<()>>,
    /// The pipeline, once it runs: a start, resume or restart wakes it for the session; a
    /// cancel tells it to drop the session's work in flight. Transitions decide that here, so
    /// the API only translates HTTP.
    pipeline: Arc<std::sync::OnceLock<crate::pipeline::Pipeline>>,
    /// This daemon's id among the peers sharing the catalog: a start in progress is recorded
    /// under it, so only this daemon's restart (or its death) resets it.
    owner: String,
    /// Sessions whose discovery runs on a task of this daemon now (never two tasks for one).
    discovering: Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    /// Discoveries run one at a time per daemon (they share the disk and the catalog writer).
    discovery_slot: Arc<tokio::sync::Semaphore>,
    /// Jobs created per catalog transaction while discovering (`sessions.queue_batch`).
    queue_batch: i64,
}

/// Jobs per discovery transaction unless configured: large enough that a million jobs take a
/// few hundred transactions, small enough that each holds the catalog writer for milliseconds.
pub const DEFAULT_QUEUE_BATCH: i64 = 5_000;

impl Sessions {
    pub fn new(catalog: Catalog, library: Library, owner: String) -> Sessions {
        Sessions {
            catalog,
            library: Arc::new(library),
            start_lock: Arc::new(Mutex::new(())),
            pipeline: Arc::new(std::sync::OnceLock::new()),
            owner,
            discovering: Default::default(),
            discovery_slot: Arc::new(tokio::sync::Semaphore::new(1)),
            queue_batch: DEFAULT_QUEUE_BATCH,
        }
    }

    /// Jobs created per catalog transaction while a session discovers.
    pub fn with_queue_batch(mut self, n: i64) -> Sessions {
        self.queue_batch = n.max(1);
        self
    }

    /// Connect the running pipeline (once, at daemon start).
    pub fn attach_pipeline(&self, p: crate::pipeline::Pipeline) {
        let _ = self.pipeline.set(p);
    }

    fn wake_pipeline(&self, id: i64) {
        if let Some(p) = self.pipeline.get() {
            p.resume_session(id);
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn library(&self) -> &Library {
        &self.library
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Library) -> T + Send + 'static) -> Result<T> {
        let lib = self.library.clone();
        tokio::task::spawn_blocking(move || f(&lib)).await.map_err(|e| SessionError::Internal(format!("filesystem walk panicked: {e}")))
    }

    pub async fn get(&self, id: i64) -> Result<Session> {
        self.catalog.session(id).await?.ok_or_else(|| not_found(id))
    }

    // -----------------------------------------------------------------------------------------
    // Create, update, delete
    // -----------------------------------------------------------------------------------------

    pub async fn create(&self, req: CreateSession, source: &str) -> Result<Session> {
        let name = req.name.trim().to_string();
        check_name(&name)?;
        if req.root_path.trim().is_empty() {
            return Err(SessionError::BadRequest("rootPath must not be empty".into()));
        }
        if let Some(c) = &req.config
            && !c.is_object()
        {
            return Err(SessionError::BadRequest("config must be a JSON object".into()));
        }
        let root = self.library.resolve_dir(Path::new(&req.root_path))?;
        let category_id = self.category_or_default(req.category_id).await?;
        let subdirs = self.plan_subdirs(&root, req.subdirectories.as_deref(), None).await?;
        let new = NewSession {
            name,
            root_path: root.to_string_lossy().into_owned(),
            category_id,
            config: req.config.unwrap_or_else(|| serde_json::json!({})),
            source: source.to_string(),
            auto_start: req.auto_start,
            live: req.live,
        };
        Ok(self.catalog.create_session(&new, &subdirs).await?)
    }

    /// Subdirectory rows for a root. `listed`: which to track (None = discover: every child
    /// holding images, plus the root itself when it holds images directly; given paths are
    /// resolved against the root and must stay inside it). `selected`: which of those are
    /// selected (None = all).
    async fn plan_subdirs(&self, root: &Path, listed: Option<&[String]>, selected: Option<&[String]>) -> Result<Vec<NewSubdir>> {
        let mut out = Vec::new();
        match listed {
            None => {
                let (scan, _) = self.list_subdirs(root, true, None).await?;
                self.rows_with_images(&scan, &mut out);
            }
            Some(paths) => {
                let counts = self.catalog_counts(root).await?;
                for p in paths {
                    let dir = self.resolve_subdir(root, p)?;
                    let is_root = dir == root;
                    let count = match &counts {
                        Some(c) => c.images(&dir, !is_root),
                        None => {
                            let (d2, r2) = (dir.clone(), root.to_path_buf());
                            self.blocking(move |lib| lib.subdirectory_images(&r2, &d2).images.len()).await? as u64
                        }
                    };
                    let name = if is_root { ".".to_string() } else { rel_name(root, &dir) };
                    if !out.iter().any(|o: &NewSubdir| o.path == dir.to_string_lossy()) {
                        out.push(NewSubdir { path: dir.to_string_lossy().into_owned(), name, selected: true, is_root, image_count: count as i64 });
                    }
                }
            }
        }
        if let Some(sel) = selected {
            let mut wanted = Vec::new();
            for p in sel {
                wanted.push(self.resolve_subdir(root, p)?.to_string_lossy().into_owned());
            }
            for o in out.iter_mut() {
                o.selected = wanted.contains(&o.path);
            }
        }
        Ok(out)
    }

    /// Subdirectory rows for the listed folders that hold images (all selected).
    fn rows_with_images(&self, scan: &[crate::library::SubdirScan], out: &mut Vec<NewSubdir>) {
        for s in scan.iter().filter(|s| s.image_count > 0) {
            out.push(NewSubdir {
                path: s.path.to_string_lossy().into_owned(),
                name: s.name.clone(),
                selected: true,
                is_root: s.is_root,
                image_count: s.image_count as i64,
            });
        }
    }

    fn resolve_subdir(&self, root: &Path, p: &str) -> Result<PathBuf> {
        let candidate = if Path::new(p).is_absolute() { PathBuf::from(p) } else { root.join(p) };
        let dir = self.library.resolve_dir(&candidate).map_err(|e| match e {
            LibraryError::NotFound { .. } => SessionError::BadRequest(format!("subdirectory {p:?} does not exist under {}", root.display())),
            e => e.into(),
        })?;
        if !dir.starts_with(root) {
            return Err(SessionError::Forbidden(format!("subdirectory {p:?} resolves outside the session root {}", root.display())));
        }
        Ok(dir)
    }

    /// A category the request names must exist; none named → the default category.
    async fn category_or_default(&self, id: Option<i64>) -> Result<Option<i64>> {
        match id {
            Some(c) => match self.catalog.category(c).await? {
                Some(_) => Ok(Some(c)),
                None => Err(SessionError::BadRequest(format!(
                    "categoryId {c} does not exist; GET /api/v1/categories lists the categories (or omit it for the default one)"
                ))),
            },
            None => Ok(self.catalog.default_category().await?.map(|c| c.id)),
        }
    }

    pub async fn update(&self, id: i64, patch: SessionPatch) -> Result<Session> {
        self.get(id).await?;
        if let Some(Some(c)) = patch.category_id {
            self.category_or_default(Some(c)).await?;
        }
        if let Some(n) = &patch.name {
            check_name(n.trim())?;
        }
        if let Some(c) = &patch.config
            && !c.is_object()
        {
            return Err(SessionError::BadRequest("config must be a JSON object".into()));
        }
        self.catalog.update_session(id, &patch).await?;
        self.get(id).await
    }

    pub async fn delete(&self, id: i64) -> Result<ActionResult> {
        let s = self.get(id).await?;
        check(&s, Action::Delete)?;
        self.catalog.delete_session(id).await?;
        Ok(ActionResult { session_id: id, status: s.status, message: format!("session {id} ({}) deleted with its jobs", s.name) })
    }

    pub async fn subdirectories(&self, id: i64) -> Result<Vec<Subdirectory>> {
        self.get(id).await?;
        Ok(self.catalog.subdirectories(id).await?)
    }

    pub async fn select(&self, id: i64, changes: &[(i64, bool)]) -> Result<Vec<Subdirectory>> {
        self.get(id).await?;
        if changes.is_empty() {
            return Err(SessionError::BadRequest("the body lists no subdirectories; send [{\"id\": N, \"selected\": true}]".into()));
        }
        self.catalog.set_selection(id, changes).await?;
        Ok(self.catalog.subdirectories(id).await?)
    }

    // -----------------------------------------------------------------------------------------
    // Admission
    // -----------------------------------------------------------------------------------------

    /// Walk the selected subdirectories and decide whether a start would index anything.
    pub async fn admission(&self, s: &Session) -> Result<Admission> {
        let subdirs = self.catalog.subdirectories(s.id).await?;
        let selected: Vec<(i64, PathBuf)> = subdirs.iter().filter(|d| d.selected).map(|d| (d.id, PathBuf::from(&d.path))).collect();
        self.assess(&format!("Session {}", s.id), Some(s.id), PathBuf::from(&s.root_path), subdirs.len() as u64, selected).await
    }

    /// Admission for a session not created yet (the web app's "New session" page keeps Start
    /// disabled with this verdict): `root` and the chosen subdirectories (paths under it), of
    /// `listed` offered ones. The same rules and wording as for a stored session.
    pub async fn preview_admission(&self, root_path: &str, selected: &[String], listed: Option<u64>) -> Result<Admission> {
        if root_path.trim().is_empty() {
            return Err(SessionError::BadRequest("rootPath must not be empty".into()));
        }
        let root = self.library.resolve_dir(Path::new(root_path))?;
        let mut dirs = Vec::new();
        for (i, p) in selected.iter().enumerate() {
            dirs.push((i as i64, self.resolve_subdir(&root, p)?));
        }
        let total = listed.unwrap_or(dirs.len() as u64).max(dirs.len() as u64);
        self.assess("This session", None, root, total, dirs).await
    }

    async fn assess(&self, subject: &str, id: Option<i64>, root: PathBuf, total: u64, selected: Vec<(i64, PathBuf)>) -> Result<Admission> {
        // From the catalog's counts where it follows the folders (a nested selection counted
        // once); a walk where it does not, or where the counts say there is nothing to index
        // (to tell the user exactly why: files still settling, unsupported files…).
        if let Some(c) = self.catalog_counts(&root).await? {
            let counts: Vec<(i64, i64)> = selected.iter().map(|(sid, p)| (*sid, c.images(p, *p != root) as i64)).collect();
            let with_images = counts.iter().filter(|(_, n)| *n > 0).count() as u64;
            let mut images = 0u64;
            let mut covered: Vec<&PathBuf> = Vec::new();
            let mut sorted: Vec<&(i64, PathBuf)> = selected.iter().collect();
            sorted.sort_by(|a, b| a.1.cmp(&b.1));
            for (_, p) in sorted {
                if *p != root {
                    if covered.iter().any(|q| p.starts_with(q)) {
                        continue;
                    }
                    covered.push(p);
                }
                images += c.images(p, *p != root);
            }
            if images > 0 {
                let unsupported = selected.iter().map(|(_, p)| c.other(p, *p != root)).sum();
                let n_selected = selected.len() as u64;
                return Ok(self.verdict(subject, id, &root, total, n_selected, with_images, images, unsupported, vec![], counts));
            }
        }
        let r2 = root.clone();
        let walked = self.blocking(move |lib| selected.into_iter().map(|(id, p)| (id, lib.subdirectory_images(&r2, &p))).collect::<Vec<_>>()).await?;
        let n_selected = walked.len() as u64;
        let with_images = walked.iter().filter(|(_, w)| !w.images.is_empty()).count() as u64;
        // The same image can sit under two selected rows (a folder and its parent): count once.
        let mut uniq = std::collections::HashSet::new();
        for (_, w) in &walked {
            for f in &w.images {
                uniq.insert(f.path.clone());
            }
        }
        let images = uniq.len() as u64;
        let unsupported: u64 = walked.iter().map(|(_, w)| w.unsupported).sum();
        let counts = walked.iter().map(|(id, w)| (*id, w.images.len() as i64)).collect();
        let found = walked.into_iter().map(|(id, w)| (id, w.images)).collect();
        Ok(self.verdict(subject, id, &root, total, n_selected, with_images, images, unsupported, found, counts))
    }

    /// The verdict and its wording from the numbers (the same whichever way they were counted).
    #[allow(clippy::too_many_arguments)]
    fn verdict(
        &self,
        subject: &str,
        id: Option<i64>,
        root: &Path,
        total: u64,
        n_selected: u64,
        with_images: u64,
        images: u64,
        unsupported: u64,
        found: Vec<(i64, Vec<FileEntry>)>,
        counts: Vec<(i64, i64)>,
    ) -> Admission {
        let exts = self.library.extensions().to_vec();
        let ext_list = exts.join(", ");
        let root_s = root.display();
        let (select_hint, list_hint) = match id {
            Some(id) => (
                format!(
                    "`pixdex ctl subdirs select {id} SUBDIR_ID`, or PATCH /api/v1/training/sessions/{id}/subdirectories with [{{\"id\": SUBDIR_ID, \"selected\": true}}]"
                ),
                format!("see `pixdex ctl subdirs list {id}`"),
            ),
            None => ("tick a subdirectory in the list".to_string(), "the list shows each folder's image count".to_string()),
        };
        let (detail, suggestion) = if total == 0 {
            (
                format!("{subject} has no subdirectories: no folder under {root_s} holds images."),
                format!(
                    "Put images ({ext_list}) in folders under {root_s}, then start again: a start of a session without subdirectories discovers them anew."
                ),
            )
        } else if n_selected == 0 {
            (format!("{subject} has {} but none is selected.", count(total, "subdirectory", "subdirectories")), format!("Select at least one: {select_hint}."))
        } else if images == 0 && unsupported > 0 {
            (
                format!(
                    "{} of {} {} {}, but none with a supported extension ({ext_list}).",
                    selected_subdirs(n_selected),
                    subject.to_lowercase(),
                    if n_selected == 1 { "holds" } else { "hold" },
                    count(unsupported, "file", "files"),
                ),
                "Convert the files to a supported format, or add their extension to `library.extensions` in the config and restart the daemon.".to_string(),
            )
        } else if images == 0 {
            (
                if n_selected == 1 {
                    format!("The selected subdirectory of {} is empty: it holds no images.", subject.to_lowercase())
                } else {
                    format!("The {n_selected} selected subdirectories of {} are empty: they hold no images.", subject.to_lowercase())
                },
                format!("Copy images ({ext_list}) into them, or select subdirectories that hold images ({list_hint})."),
            )
        } else {
            (
                format!(
                    "{subject} can start: {} in {with_images} of {n_selected} selected {}.",
                    count(images, "image", "images"),
                    if n_selected == 1 { "subdirectory" } else { "subdirectories" }
                ),
                String::new(),
            )
        };
        Admission {
            detail,
            can_start: images > 0,
            diagnostics: Diagnostics {
                total_subdirectories: total,
                selected_subdirectories: n_selected,
                selected_with_images: with_images,
                images_found: images,
                unsupported_files_found: unsupported,
                supported_extensions: exts,
                suggestion,
            },
            found,
            counts,
        }
    }

    pub async fn validate(&self, id: i64) -> Result<Admission> {
        let s = self.get(id).await?;
        self.admission(&s).await
    }

    // -----------------------------------------------------------------------------------------
    // Transitions
    // -----------------------------------------------------------------------------------------

    pub async fn start(&self, id: i64) -> Result<ActionResult> {
        match self.start_inner(id).await? {
            Next::Done(r) => {
                self.wake_pipeline(id);
                Ok(r)
            }
            // Outside the start lock: other sessions' starts are not held up by this one's work.
            Next::Discover { kind, expected } => self.discover_in_background(id, kind, expected).await,
        }
    }

    async fn start_inner(&self, id: i64) -> Result<Next> {
        let _guard = self.start_lock.lock().await;
        let s = self.get(id).await?;
        check(&s, Action::Start)?;
        match s.status {
            SessionStatus::Pending => self.start_pending(s).await,
            SessionStatus::Paused | SessionStatus::Failed => match self.catalog.resume_session(id, s.status).await? {
                None => Err(self.changed(id).await),
                Some(true) => Ok(Next::Done(self.result(id, "resumed with no unfinished jobs left: session completed".into()).await?)),
                Some(false) => {
                    let summary = self.catalog.jobs_summary(id).await?;
                    Ok(Next::Done(
                        self.result(id, format!("session {id} resumed: {}", count(summary.pending + summary.running, "unfinished job", "unfinished jobs")))
                            .await?,
                    ))
                }
            },
            _ => Err(conflict(&s, Action::Start)),
        }
    }

    /// Pending → discovering, then the discovery runs in the background (see
    /// `sessions::discovery`). Where the catalog's counts answer at once, a start that would
    /// index nothing is refused here, without passing through discovering.
    async fn start_pending(&self, s: Session) -> Result<Next> {
        let id = s.id;
        let mut expected = 0;
        if self.library.is_catalogued(Path::new(&s.root_path)) && !self.catalog.subdirectories(id).await?.is_empty() {
            let adm = self.admission(&s).await?;
            if !adm.can_start {
                self.catalog.set_image_counts(&adm.counts).await?;
                self.catalog.set_pending_reason(id, Some(&adm.detail)).await?;
                return Err(SessionError::NotAdmissible(Box::new(adm)));
            }
            expected = adm.diagnostics.images_found as i64;
        }
        if !self.catalog.begin_discovery(id, s.status, &self.owner, Discovery::Start, expected).await? {
            return Err(self.changed(id).await);
        }
        Ok(Next::Discover { kind: Discovery::Start, expected })
    }

    /// The conflict answer when a compare-and-set found the session in another state.
    async fn changed(&self, id: i64) -> SessionError {
        match self.get(id).await {
            Ok(now) => SessionError::Conflict {
                detail: format!("session {id} changed to {} meanwhile; try again", now.status),
                current: Some(now.status),
                allowed: now.status.allowed_actions().to_vec(),
            },
            Err(e) => e,
        }
    }

    pub async fn pause(&self, id: i64) -> Result<ActionResult> {
        let s = self.get(id).await?;
        check(&s, Action::Pause)?;
        self.cas(&s, SessionStatus::Paused, Stamps { paused: Stamp::Now, ..Default::default() }).await?;
        self.result(id, format!("session {id} paused: no new jobs are claimed; jobs in flight finish")).await
    }

    pub async fn cancel(&self, id: i64) -> Result<ActionResult> {
        let s = self.get(id).await?;
        check(&s, Action::Cancel)?;
        if let Some(p) = self.pipeline.get() {
            p.cancel_session(id);
        }
        let Some(n) = self.catalog.cancel_session(id, s.status).await? else {
            if let Some(p) = self.pipeline.get() {
                p.resume_session(id);
            }
            return Err(self.changed(id).await);
        };
        self.result(id, format!("session {id} cancelled: {} cancelled", count(n, "unfinished job", "unfinished jobs"))).await
    }

    pub async fn restart(&self, id: i64, failed_only: bool) -> Result<ActionResult> {
        match self.restart_inner(id, failed_only).await? {
            Next::Done(r) => {
                self.wake_pipeline(id);
                Ok(r)
            }
            Next::Discover { kind, expected } => self.discover_in_background(id, kind, expected).await,
        }
    }

    async fn restart_inner(&self, id: i64, failed_only: bool) -> Result<Next> {
        let _guard = self.start_lock.lock().await;
        let s = self.get(id).await?;
        check(&s, Action::Restart)?;
        let summary = self.catalog.jobs_summary(id).await?;
        if failed_only {
            if summary.failed == 0 {
                return Err(SessionError::Conflict {
                    detail: format!("session {id} has no failed jobs to restart; restart without failed_only to redo every job"),
                    current: Some(s.status),
                    allowed: s.status.allowed_actions().to_vec(),
                });
            }
            let Some(n) = self.catalog.restart_session(id, s.status, true, &[]).await? else { return Err(self.changed(id).await) };
            return Ok(Next::Done(self.result(id, format!("session {id} restarted: {} queued again", count(n, "failed job", "failed jobs"))).await?));
        }
        // Everything again, including images added since the last start: in the background.
        // A session without a single job must have something to index now.
        if summary.total() == 0 {
            let adm = self.admission(&s).await?;
            if !adm.can_start {
                return Err(SessionError::NotAdmissible(Box::new(adm)));
            }
        }
        let expected = summary.total() - summary.cancelled;
        if !self.catalog.begin_discovery(id, s.status, &self.owner, Discovery::Restart, expected).await? {
            return Err(self.changed(id).await);
        }
        Ok(Next::Discover { kind: Discovery::Restart, expected })
    }

    async fn cas(&self, s: &Session, to: SessionStatus, stamps: Stamps) -> Result<()> {
        if self.catalog.transition(s.id, s.status, to, stamps).await? {
            return Ok(());
        }
        let now = self.get(s.id).await?;
        Err(SessionError::Conflict {
            detail: format!("session {} changed to {} meanwhile; try again", s.id, now.status),
            current: Some(now.status),
            allowed: now.status.allowed_actions().to_vec(),
        })
    }

    async fn result(&self, id: i64, message: String) -> Result<ActionResult> {
        let s = self.get(id).await?;
        Ok(ActionResult { session_id: id, status: s.status, message })
    }

    // -----------------------------------------------------------------------------------------
    // Reading
    // -----------------------------------------------------------------------------------------

    pub async fn progress(&self, id: i64) -> Result<Progress> {
        let s = self.get(id).await?;
        self.progress_of(&s).await
    }

    /// Progress of a session already read (the live snapshot reads a page of sessions at once).
    pub async fn progress_of(&self, s: &Session) -> Result<Progress> {
        let id = s.id;
        let summary = self.catalog.jobs_summary(id).await?;
        let current = summary.completed + summary.failed + summary.skipped;
        let total = summary.total() - summary.cancelled;
        let percentage = if total > 0 { ((current as f64 / total as f64) * 1000.0).round() / 10.0 } else { 0.0 };
        // Over the run: a finished session's rate stops at its completion, not at "now".
        let end = s.completed_at.filter(|_| !matches!(s.status, SessionStatus::Running | SessionStatus::Discovering)).unwrap_or_else(now_ms);
        let elapsed_min = s.started_at.map(|t| (end - t).max(1) as f64 / 60_000.0).unwrap_or(0.0);
        let images_per_minute = if elapsed_min > 0.0 { ((current as f64 / elapsed_min) * 10.0).round() / 10.0 } else { 0.0 };
        let remaining = total - current;
        let eta_seconds = if s.status == SessionStatus::Running && images_per_minute > 0.0 && remaining > 0 {
            Some((remaining as f64 / images_per_minute * 60.0).ceil() as i64)
        } else if remaining == 0 {
            Some(0)
        } else {
            None
        };
        let discovery = (s.status == SessionStatus::Discovering).then(|| DiscoveryProgress { queued: summary.total(), expected: s.total_images });
        Ok(Progress {
            session_id: id,
            status: s.status,
            progress: ProgressNumbers { current, total, percentage, eta_seconds, images_per_minute },
            jobs_summary: summary,
            waiting_for: if s.status == SessionStatus::Running { self.pipeline.get().and_then(|p| waits_for(&p.status())) } else { None },
            discovery,
        })
    }

    pub async fn jobs(&self, id: i64, status: Option<JobStatus>, limit: i64, offset: i64) -> Result<(Vec<crate::catalog::Job>, i64)> {
        self.get(id).await?;
        Ok(self.catalog.jobs(id, status, limit, offset).await?)
    }

    /// List a directory's subdirectories with image counts; writes nothing.
    pub async fn scan_directory(&self, root_path: &str, recursive: bool, extensions: Option<Vec<String>>) -> Result<DirectoryScan> {
        if root_path.trim().is_empty() {
            return Err(SessionError::BadRequest("rootPath must not be empty".into()));
        }
        let root = self.library.resolve_dir(Path::new(root_path))?;
        let exts: Vec<String> = match extensions {
            Some(e) if !e.is_empty() => e.iter().map(|x| x.trim().trim_start_matches('.').to_ascii_lowercase()).collect(),
            _ => self.library.extensions().to_vec(),
        };
        let (subs, counts_from) = self.list_subdirs(&root, recursive, Some(&exts)).await?;
        let total_images = subs.iter().map(|s| s.image_count).sum();
        Ok(DirectoryScan {
            root_path: root.to_string_lossy().into_owned(),
            recursive,
            extensions: exts,
            counts_from,
            subdirectories: subs
                .into_iter()
                .map(|s| ScannedSubdir {
                    path: s.path.to_string_lossy().into_owned(),
                    name: s.name,
                    image_count: s.image_count,
                    unsupported_files: s.unsupported,
                    is_root: s.is_root,
                })
                .collect(),
            total_images,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Config-declared sessions
    // -----------------------------------------------------------------------------------------

    /// Bring the catalog in line with the `[[sessions]]` of the config, matched by name:
    /// create what is missing, update selection and settings of what exists, never duplicate.
    /// autoStart sessions still pending are started when admissible.
    pub async fn reconcile(&self, specs: &[SessionSpec]) -> Vec<Reconciled> {
        let mut out = Vec::new();
        for spec in specs {
            let r = self.reconcile_one(spec).await;
            let (session_id, outcome) = match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(session = %spec.name, error = %e, "config session not reconciled");
                    (None, format!("error: {e}"))
                }
            };
            out.push(Reconciled { name: spec.name.clone(), session_id, outcome });
        }
        out
    }

    async fn reconcile_one(&self, spec: &SessionSpec) -> Result<(Option<i64>, String)> {
        let root = self.library.resolve_dir(&spec.root)?;
        let listed: Option<Vec<String>> = match &spec.subdirectories {
            Some(l) => Some(l.clone()),
            None => {
                // "all": every child directory (empty ones too, so images added later count),
                // plus the root itself when it holds images directly.
                let (scan, _) = self.list_subdirs(&root, true, None).await?;
                Some(scan.into_iter().map(|s| s.path.to_string_lossy().into_owned()).collect())
            }
        };
        let rows = self.plan_subdirs(&root, listed.as_deref(), spec.selected.as_deref()).await?;
        let (id, outcome) = match self.catalog.session_by_name(&spec.name).await? {
            None => {
                let new = NewSession {
                    name: spec.name.clone(),
                    root_path: root.to_string_lossy().into_owned(),
                    category_id: spec.category_id,
                    config: serde_json::json!({}),
                    source: "config".into(),
                    auto_start: spec.auto_start,
                    live: spec.live,
                };
                let s = self.catalog.create_session(&new, &rows).await?;
                tracing::info!(session = s.id, name = %s.name, "config session created");
                (s.id, "created".to_string())
            }
            Some(s) => {
                if s.root_path != root.to_string_lossy() {
                    tracing::warn!(session = s.id, configured = %root.display(), stored = %s.root_path,
                        "config session root differs from the catalog's; the root of an existing session is not changed (rename the session to start afresh)");
                }
                self.catalog.upsert_subdirectories(s.id, &rows, true).await?;
                self.catalog
                    .update_session(
                        s.id,
                        &SessionPatch { category_id: Some(spec.category_id), live: Some(spec.live), auto_start: Some(spec.auto_start), ..Default::default() },
                    )
                    .await?;
                (s.id, "updated".to_string())
            }
        };
        if spec.auto_start {
            let s = self.get(id).await?;
            if s.status == SessionStatus::Pending {
                return Ok((Some(id), format!("{outcome}; {}", self.try_autostart(id).await)));
            }
        }
        Ok((Some(id), outcome))
    }

    /// Start a waiting autoStart session if it is admissible now; the reason it is not is kept
    /// on the session (`pendingReason`).
    pub async fn try_autostart(&self, id: i64) -> String {
        // Look before starting, so a waiting session does not flap through `discovering`.
        let adm = match self.validate(id).await {
            Ok(a) => a,
            Err(e) => return format!("not started: {e}"),
        };
        // (A session with no subdirectory rows goes through start, which rediscovers them.)
        if !adm.can_start && adm.diagnostics.total_subdirectories > 0 {
            if let Ok(s) = self.get(id).await
                && s.pending_reason.as_deref() != Some(adm.detail.as_str())
            {
                let _ = self.catalog.set_pending_reason(id, Some(&adm.detail)).await;
            }
            return format!("waiting for images: {}", adm.detail);
        }
        match self.start(id).await {
            Ok(r) => {
                tracing::info!(session = id, "autoStart session started");
                r.message
            }
            Err(SessionError::NotAdmissible(a)) => format!("waiting for images: {}", a.detail),
            Err(e) => format!("not started: {e}"),
        }
    }

    /// Retry every autoStart session that waits for images.
    pub async fn retry_waiting(&self) -> Result<()> {
        for s in self.catalog.sessions_waiting().await? {
            self.try_autostart(s.id).await;
        }
        Ok(())
    }
}

/// "1 file", "2 files": a count with its noun in the right number.
fn count(n: impl Into<i128> + Copy, one: &str, many: &str) -> String {
    let v: i128 = n.into();
    format!("{v} {}", if v == 1 { one } else { many })
}

/// "The selected subdirectory", "The 3 selected subdirectories".
fn selected_subdirs(n: u64) -> String {
    if n == 1 { "The selected subdirectory".into() } else { format!("The {n} selected subdirectories") }
}

fn rel_name(root: &Path, dir: &Path) -> String {
    dir.strip_prefix(root).map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|_| dir.to_string_lossy().into_owned())
}

/// Longest session name accepted (characters): a name is a label in lists, not a document.
pub const MAX_NAME_CHARS: usize = 200;

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(SessionError::BadRequest("name must not be empty".into()));
    }
    let n = name.chars().count();
    if n > MAX_NAME_CHARS {
        return Err(SessionError::BadRequest(format!("name is {n} characters long; at most {MAX_NAME_CHARS} are allowed")));
    }
    Ok(())
}

fn not_found(id: i64) -> SessionError {
    SessionError::NotFound(format!("session {id} does not exist (GET /api/v1/training/sessions lists sessions)"))
}

fn check(s: &Session, a: Action) -> Result<()> {
    if s.status.allows(a) { Ok(()) } else { Err(conflict(s, a)) }
}

fn conflict(s: &Session, a: Action) -> SessionError {
    let allowed = s.status.allowed_actions();
    let list = allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ");
    SessionError::Conflict {
        detail: format!("cannot {} session {}: it is {}; allowed actions: {list}", a.as_str(), s.id, s.status),
        current: Some(s.status),
        allowed: allowed.to_vec(),
    }
}

/// Why a running session's jobs do not move, if they do not: the pipeline waits for a store,
/// or does not run at all (the model cannot load: the reason says which file and the fix; the
/// daemon loads it once its files appear, see `switch::Reloader`).
fn waits_for(p: &crate::pipeline::PipelineStatus) -> Option<String> {
    if p.running {
        return p.waiting_for.clone();
    }
    let reason = p.reason.as_deref().unwrap_or("the pipeline is not running");
    Some(match p.model.as_str() {
        "" => format!("the model: {reason}"),
        model => format!("the model {model}: {reason}"),
    })
}
