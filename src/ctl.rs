//! `pixdex ctl`: the control-socket client for people (tables) and scripts (`--json`).

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::api::client::{Client, ClientError, Endpoint, Response};
use crate::api::wire::{self, paths};

/// The packaged daemon's config (the Debian package's conffile).
pub const PACKAGED_CONFIG: &str = "/etc/pixdex/pixdex.toml";

/// The config `pixdex ctl` reads to find the daemon: `--config` / `PIXDEX_CONFIG`, else the
/// packaged daemon's when it is installed, else none (the built-in defaults).
pub fn config_file(given: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    given.map(std::path::Path::to_path_buf).or_else(|| Some(std::path::PathBuf::from(PACKAGED_CONFIG)).filter(|p| p.exists()))
}

/// Load the config ctl reads; a file the user may not read says how to get access.
pub fn load_config(file: Option<&std::path::Path>) -> Result<crate::config::Config, String> {
    if let Some(f) = file
        && let Err(e) = std::fs::File::open(f)
        && e.kind() == std::io::ErrorKind::PermissionDenied
    {
        return Err(format!("cannot read the config {}: {e}{}", f.display(), crate::api::client::access_hint(f)));
    }
    crate::config::Config::load(file).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Control socket (default: the configured `daemon.socket`).
    #[arg(long, global = true)]
    pub socket: Option<std::path::PathBuf>,
    /// Talk to the TCP listener instead, e.g. 127.0.0.1:8765.
    #[arg(long, global = true, conflicts_with = "socket")]
    pub tcp: Option<String>,
    /// The TCP listener's token (default: `PIXDEX_TOKEN`, else the configured or generated one).
    #[arg(long, global = true, env = "PIXDEX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the daemon's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Create, list, start, pause, cancel, restart sessions.
    #[command(subcommand)]
    Sessions(SessionsCmd),
    /// A session's subdirectories and their selection.
    #[command(subcommand)]
    Subdirs(SubdirsCmd),
    /// The library itself: folders that are away.
    #[command(subcommand)]
    Library(LibraryCmd),
    /// The embedding model: load it now (after fetching or replacing its weights).
    #[command(subcommand)]
    Model(ModelCmd),
    /// A session's jobs.
    Jobs {
        id: i64,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: i64,
        #[arg(long, default_value_t = 50)]
        page_size: i64,
    },
    /// List a directory's subdirectories with image counts (writes nothing).
    ScanDir {
        path: String,
        /// Count only files directly in each subdirectory.
        #[arg(long)]
        no_recursive: bool,
        /// Extensions to count instead of the configured ones (repeatable).
        #[arg(long = "ext")]
        extensions: Vec<String>,
    },
    /// Is the daemon up, and which catalog does it use?
    Health {
        /// Keep trying for up to this many seconds while the daemon is still starting
        /// (scripts: `pixdex daemon … & pixdex ctl health --wait 60`).
        #[arg(long, value_name = "SECS")]
        wait: Option<f64>,
    },
    /// Reconcile one directory with the catalog now (network mounts without events).
    Scan {
        dir: String,
        /// Also queue jobs for new images in every session that selects them.
        #[arg(long)]
        auto_train: bool,
    },
    /// Watcher state: mode per root, watches, events, last reconcile.
    Watcher,
    /// Pipeline state: device, per-stage counters and busy share, queue depths.
    Pipeline,
    /// Search by example image, by asset, or by words.
    Search {
        /// An image file (read by ctl and uploaded).
        #[arg(long, group = "how")]
        image: Option<std::path::PathBuf>,
        /// An asset id: images similar to it.
        #[arg(long, group = "how")]
        similar: Option<i64>,
        /// Words matched against the labels (e.g. "cat", "espresso").
        #[arg(long, group = "how")]
        text: Option<String>,
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[arg(long)]
        session: Option<i64>,
        #[arg(long)]
        path_prefix: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCmd {
    /// List sessions.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: i64,
        #[arg(long, default_value_t = 20)]
        page_size: i64,
    },
    /// Show one session.
    Show {
        id: i64,
    },
    /// Create a session over a root (subdirectories holding images are discovered and selected
    /// unless --subdir names them).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        root: String,
        /// A subdirectory to select, relative to the root (repeatable).
        #[arg(long = "subdir")]
        subdirs: Vec<String>,
        #[arg(long)]
        category: Option<i64>,
        /// Session config as a JSON object.
        #[arg(long = "session-config")]
        session_config: Option<String>,
    },
    /// Change name, category or live flag.
    Update {
        id: i64,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        category: Option<i64>,
        #[arg(long)]
        live: Option<bool>,
    },
    /// Delete a session with its jobs.
    Delete {
        id: i64,
    },
    /// Start (or resume) a session; explains why when there is nothing to index.
    Start {
        id: i64,
    },
    Pause {
        id: i64,
    },
    Cancel {
        id: i64,
    },
    /// Run a finished session again: every job, or only the failed ones.
    Restart {
        id: i64,
        #[arg(long)]
        failed_only: bool,
    },
    /// Would a start index anything? Changes nothing.
    Validate {
        id: i64,
    },
    /// Progress; --watch redraws a bar until the session stops running.
    Progress {
        id: i64,
        #[arg(long)]
        watch: bool,
        /// Seconds between redraws.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelCmd {
    /// Load the configured model now, without a restart (the daemon also loads it by itself
    /// when its files appear or change).
    Reload,
}

#[derive(Debug, Subcommand)]
pub enum LibraryCmd {
    /// A folder shown as unavailable (a mount point found unmounted and empty) really was
    /// emptied: forget the mount and delete its assets and vectors.
    Emptied { dir: String },
}

#[derive(Debug, Subcommand)]
pub enum SubdirsCmd {
    List {
        id: i64,
    },
    /// Select subdirectories (by their ids) of a session.
    Select {
        id: i64,
        subdir_ids: Vec<i64>,
    },
    /// Unselect subdirectories (by their ids) of a session.
    Unselect {
        id: i64,
        subdir_ids: Vec<i64>,
    },
}

/// `GET /health`, retried while the daemon cannot be reached yet (until `wait` seconds pass).
async fn health(c: &Client, wait: Option<f64>) -> Result<Response, ClientError> {
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(wait.unwrap_or(0.0).max(0.0));
    loop {
        match c.get(paths::HEALTH).await {
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "daemon not reachable yet");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            r => return r,
        }
    }
}

/// Run one ctl command; returns the process exit code (0 ok, 1 refused by the daemon, 2 daemon
/// unreachable).
/// `pixdex ctl`: find the daemon (`--tcp`, `--socket`, or the config's socket; without
/// `--config`, the packaged daemon's config when it is installed), send the command, print the
/// answer. The exit code.
pub fn main(file: Option<&std::path::Path>, args: &CtlArgs) -> i32 {
    let file = config_file(file);
    let file = file.as_deref();
    let endpoint = if let Some(tcp) = &args.tcp {
        Endpoint::Tcp(tcp.clone())
    } else if let Some(sock) = &args.socket {
        Endpoint::Unix(sock.clone())
    } else {
        match load_config(file) {
            Ok(c) => Endpoint::Unix(c.socket),
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        }
    };
    // Over TCP the daemon wants its token: --token / PIXDEX_TOKEN, else the one the config
    // names (daemon.token, daemon.token_file, or the generated one in data_dir).
    let token = match (&args.tcp, &args.token) {
        (None, _) => None,
        (Some(_), Some(t)) => Some(t.clone()),
        (Some(_), None) => {
            crate::config::Config::load(file).ok().and_then(|c| crate::api::guard::Guard::new(&c.web).ok()).and_then(|g| g.token().map(str::to_string))
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(run(&Client::new(endpoint).with_token(token), args))
}

pub async fn run(client: &Client, args: &CtlArgs) -> i32 {
    match dispatch(client, args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

fn to_json(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("wire types serialize")
}

/// How a command's answer is printed.
type Render = fn(&Value) -> String;

/// What a command came to: the daemon's answer and how to print it, or an exit code it decided
/// on its own (bad local input, a watch that ran to its end).
enum Outcome {
    Answer(Response, Render),
    Exit(i32),
}

/// The subcommands, one line each: the request is built and sent by the function named.
async fn dispatch(c: &Client, a: &CtlArgs) -> Result<i32, ClientError> {
    use Outcome::Answer;
    let outcome = match &a.cmd {
        CtlCommand::Health { wait } => Answer(health(c, *wait).await?, render_health),
        CtlCommand::Sessions(cmd) => sessions(c, cmd, a.json).await?,
        CtlCommand::Subdirs(cmd) => subdirs(c, cmd).await?,
        CtlCommand::Jobs { id, status, page, page_size } => Answer(c.get(&paths::jobs(*id, *page, *page_size, status.as_deref())).await?, render_jobs),
        CtlCommand::Scan { dir, auto_train } => Answer(c.post(&paths::scan_incremental(&absolute(dir), *auto_train), None).await?, render_incremental),
        CtlCommand::Library(LibraryCmd::Emptied { dir }) => Answer(c.post(&paths::library_emptied(&absolute(dir)), None).await?, render_incremental),
        CtlCommand::Model(ModelCmd::Reload) => Answer(c.post(paths::MODEL_RELOAD, None).await?, |v| s(&v["detail"])),
        CtlCommand::Watcher => Answer(c.get(&paths::watcher()).await?, render_watcher),
        CtlCommand::Pipeline => Answer(c.get(&paths::pipeline()).await?, render_pipeline),
        CtlCommand::Search { image, similar, text, limit, session, path_prefix } => {
            search(c, Query { image: image.as_deref(), similar: *similar, text: text.as_deref() }, *limit, *session, path_prefix.as_deref()).await?
        }
        CtlCommand::ScanDir { path, no_recursive, extensions } => scan_dir(c, path, !no_recursive, extensions).await?,
    };
    Ok(match outcome {
        Outcome::Exit(code) => code,
        Outcome::Answer(resp, render) => print_answer(&resp, render, a.json),
    })
}

/// JSON as the daemon sent it (`--json`), or rendered; errors to stderr. The exit code.
fn print_answer(resp: &Response, render: Render, json: bool) -> i32 {
    if json {
        println!("{}", serde_json::to_string_pretty(&resp.body).unwrap_or_default());
        return if resp.is_success() { 0 } else { 1 };
    }
    if resp.is_success() {
        println!("{}", render(&resp.body));
        0
    } else {
        eprintln!("{}", render_error(resp));
        1
    }
}

fn render_health(v: &Value) -> String {
    format!("daemon ok (version {}, catalog {})", s(&v["version"]), s(&v["catalog"]))
}

/// A path given on the command line, absolute against the current directory.
fn absolute(dir: &str) -> String {
    crate::config::absolutize(std::path::Path::new(dir)).to_string_lossy().into_owned()
}

async fn sessions(c: &Client, cmd: &SessionsCmd, json: bool) -> Result<Outcome, ClientError> {
    use Outcome::Answer;
    Ok(match cmd {
        SessionsCmd::List { status, page, page_size } => Answer(c.get(&paths::session_list(*page, *page_size, status.as_deref())).await?, render_session_list),
        SessionsCmd::Show { id } => Answer(c.get(&paths::session(*id)).await?, render_session),
        SessionsCmd::Create { name, root, subdirs, category, session_config } => {
            let config = match session_config.as_deref().map(serde_json::from_str::<Value>).transpose() {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("error: --session-config is not JSON: {e}");
                    return Ok(Outcome::Exit(1));
                }
            };
            let body = wire::CreateSession {
                name: name.clone(),
                root_path: root.clone(),
                category_id: *category,
                subdirectories: (!subdirs.is_empty()).then(|| subdirs.clone()),
                config,
                ..Default::default()
            };
            Answer(c.post(&paths::sessions(), Some(&to_json(&body))).await?, render_session)
        }
        SessionsCmd::Update { id, name, category, live } => {
            let body = wire::PatchSession { name: name.clone(), category_id: category.map(Some), live: *live, ..Default::default() };
            Answer(c.patch(&paths::session(*id), &to_json(&body)).await?, render_session)
        }
        SessionsCmd::Delete { id } => Answer(c.delete(&paths::session(*id)).await?, render_action),
        SessionsCmd::Start { id } => Answer(c.post(&paths::session_part(*id, "start"), None).await?, render_action),
        SessionsCmd::Pause { id } => Answer(c.post(&paths::session_part(*id, "pause"), None).await?, render_action),
        SessionsCmd::Cancel { id } => Answer(c.post(&paths::session_part(*id, "cancel"), None).await?, render_action),
        SessionsCmd::Restart { id, failed_only } => Answer(c.post(&paths::restart(*id, *failed_only), None).await?, render_action),
        SessionsCmd::Validate { id } => Answer(c.post(&paths::session_part(*id, "validate"), None).await?, render_validate),
        SessionsCmd::Progress { id, watch: true, interval } if !json => Outcome::Exit(watch_progress(c, *id, *interval).await?),
        SessionsCmd::Progress { id, .. } => Answer(c.get(&paths::session_part(*id, "progress")).await?, progress_line),
    })
}

async fn subdirs(c: &Client, cmd: &SubdirsCmd) -> Result<Outcome, ClientError> {
    Ok(match cmd {
        SubdirsCmd::List { id } => Outcome::Answer(c.get(&paths::session_part(*id, "subdirectories")).await?, render_subdirs),
        SubdirsCmd::Select { id, subdir_ids } | SubdirsCmd::Unselect { id, subdir_ids } => {
            let selected = matches!(cmd, SubdirsCmd::Select { .. });
            let body: Vec<wire::Selection> = subdir_ids.iter().map(|&id| wire::Selection { id, selected }).collect();
            Outcome::Answer(c.patch(&paths::session_part(*id, "subdirectories"), &to_json(&body)).await?, render_subdirs)
        }
    })
}

/// What `ctl search` searches by (exactly one is expected).
struct Query<'a> {
    image: Option<&'a std::path::Path>,
    similar: Option<i64>,
    text: Option<&'a str>,
}

async fn search(c: &Client, q: Query<'_>, limit: usize, session: Option<i64>, path_prefix: Option<&str>) -> Result<Outcome, ClientError> {
    let resp = if let Some(img) = q.image {
        let bytes = match std::fs::read(img) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", img.display());
                return Ok(Outcome::Exit(1));
            }
        };
        let r = c.raw(hyper::Method::POST, &paths::search_image(limit, session), &[("content-type", "application/octet-stream")], bytes).await?;
        Response { status: r.status, body: r.json() }
    } else if let Some(id) = q.similar {
        c.get(&paths::similar(id, limit, session)).await?
    } else if let Some(t) = q.text {
        let filters = crate::search::Filters { session_id: session, path_prefix: path_prefix.map(absolute), ..Default::default() };
        let body = wire::SearchWords { query: t.to_string(), limit: Some(limit), offset: None, filters };
        c.post(paths::SEARCH, Some(&to_json(&body))).await?
    } else {
        eprintln!("error: say how to search: --image FILE, --similar ASSET_ID or --text WORDS");
        return Ok(Outcome::Exit(1));
    };
    Ok(Outcome::Answer(resp, render_search))
}

async fn scan_dir(c: &Client, path: &str, recursive: bool, extensions: &[String]) -> Result<Outcome, ClientError> {
    let body =
        wire::ScanDirectory { root_path: path.to_string(), recursive: Some(recursive), extensions: (!extensions.is_empty()).then(|| extensions.to_vec()) };
    Ok(Outcome::Answer(c.post(&paths::scan_directory(), Some(&to_json(&body))).await?, render_scan))
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Render rows as an aligned text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i + 1 == cells.len() { c.to_string() } else { format!("{c:<w$}", w = widths[i]) })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = vec![line(headers.to_vec())];
    for r in rows {
        out.push(line(r.iter().map(|c| c.as_str()).collect()));
    }
    out.join("\n")
}

fn render_error(r: &Response) -> String {
    let mut out = format!("error ({}): {}", r.status, r.detail());
    if let Some(d) = r.body.get("diagnostics") {
        out.push_str(&format!(
            "\n  subdirectories: {} total, {} selected, {} selected with images\n  images found: {}   unsupported files: {}\n  supported extensions: {}",
            s(&d["totalSubdirectories"]),
            s(&d["selectedSubdirectories"]),
            s(&d["selectedWithImages"]),
            s(&d["imagesFound"]),
            s(&d["unsupportedFilesFound"]),
            d["supportedExtensions"].as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
        ));
        if let Some(sug) = d["suggestion"].as_str().filter(|x| !x.is_empty()) {
            out.push_str(&format!("\n  what to do: {sug}"));
        }
    }
    if let Some(a) = r.body.get("allowedActions").and_then(|a| a.as_array()) {
        out.push_str(&format!("\n  allowed now: {}", a.iter().map(s).collect::<Vec<_>>().join(", ")));
    }
    out
}

fn render_session_list(v: &Value) -> String {
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            let note = i["pendingReason"].as_str().or(i["lastError"].as_str()).unwrap_or("").to_string();
            vec![
                s(&i["id"]),
                s(&i["name"]),
                s(&i["status"]),
                format!("{}/{}", s(&i["processedImages"]), s(&i["totalImages"])),
                s(&i["failedImages"]),
                s(&i["rootPath"]),
                note,
            ]
        })
        .collect();
    format!(
        "{}\n(page {} of {} sessions{})",
        table(&["ID", "NAME", "STATUS", "DONE", "FAILED", "ROOT", "NOTE"], &rows),
        s(&v["page"]),
        s(&v["total"]),
        if v["hasMore"].as_bool() == Some(true) { ", more with --page" } else { "" }
    )
}

fn render_session(v: &Value) -> String {
    let mut out = format!(
        "session {} {:?}\n  status:   {}\n  root:     {}\n  images:   {} total, {} done, {} failed, {} skipped\n  category: {}   live: {}   autoStart: {}   source: {}\n  created:  {}   started: {}   completed: {}",
        s(&v["id"]),
        s(&v["name"]),
        s(&v["status"]),
        s(&v["rootPath"]),
        s(&v["totalImages"]),
        s(&v["processedImages"]),
        s(&v["failedImages"]),
        s(&v["skippedImages"]),
        s(&v["categoryId"]),
        s(&v["live"]),
        s(&v["autoStart"]),
        s(&v["source"]),
        s(&v["createdAt"]),
        s(&v["startedAt"]),
        s(&v["completedAt"]),
    );
    if let Some(r) = v["pendingReason"].as_str() {
        out.push_str(&format!("\n  waiting:  {r}"));
    }
    if let Some(r) = v["lastError"].as_str() {
        out.push_str(&format!("\n  error:    {r}"));
    }
    out
}

fn render_action(v: &Value) -> String {
    format!("{} (session {} is now {})", s(&v["message"]), s(&v["sessionId"]), s(&v["status"]))
}

fn render_validate(v: &Value) -> String {
    let r = Response { status: 200, body: v.clone() };
    let text = render_error(&r);
    let text = text.trim_start_matches("error (200): ");
    format!("{}{}", if v["canStart"].as_bool() == Some(true) { "can start: " } else { "cannot start: " }, text)
}

fn render_subdirs(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| {
            vec![
                s(&d["id"]),
                if d["selected"].as_bool() == Some(true) { "yes".into() } else { "no".into() },
                s(&d["imageCount"]),
                s(&d["trainedCount"]),
                s(&d["name"]),
                s(&d["path"]),
            ]
        })
        .collect();
    table(&["ID", "SELECTED", "IMAGES", "TRAINED", "NAME", "PATH"], &rows)
}

fn render_jobs(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|j| vec![s(&j["id"]), s(&j["status"]), s(&j["attempts"]), s(&j["path"]), j["errorMessage"].as_str().unwrap_or("").to_string()])
        .collect();
    format!("{}\n({} jobs)", table(&["ID", "STATUS", "ATTEMPTS", "PATH", "ERROR"], &rows), s(&v["total"]))
}

fn render_scan(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["subdirectories"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| vec![s(&d["imageCount"]), s(&d["unsupportedFiles"]), s(&d["name"]), s(&d["path"])])
        .collect();
    format!("{}\n{} images under {}", table(&["IMAGES", "OTHER FILES", "NAME", "PATH"], &rows), s(&v["totalImages"]), s(&v["rootPath"]))
}

fn progress_line(v: &Value) -> String {
    let p = &v["progress"];
    let pct = p["percentage"].as_f64().unwrap_or(0.0);
    let filled = ((pct / 100.0) * 30.0).round() as usize;
    let eta = match p["etaSeconds"].as_i64() {
        Some(e) if e >= 3600 => format!("{}h{:02}m", e / 3600, (e % 3600) / 60),
        Some(e) if e >= 60 => format!("{}m{:02}s", e / 60, e % 60),
        Some(e) => format!("{e}s"),
        None => "-".into(),
    };
    let j = &v["jobsSummary"];
    format!(
        "[{}{}] {:5.1}% {}/{}  {} img/min  ETA {}  {}  (pending {}, running {}, failed {})",
        "#".repeat(filled.min(30)),
        "-".repeat(30 - filled.min(30)),
        pct,
        s(&p["current"]),
        s(&p["total"]),
        s(&p["imagesPerMinute"]),
        eta,
        s(&v["status"]),
        s(&j["pending"]),
        s(&j["running"]),
        s(&j["failed"]),
    ) + &v["waitingFor"].as_str().map(|w| format!("\n  waiting for: {w}")).unwrap_or_default()
}

async fn watch_progress(c: &Client, id: i64, interval: f64) -> Result<i32, ClientError> {
    use std::io::Write;
    loop {
        let r = c.get(&paths::session_part(id, "progress")).await?;
        if !r.is_success() {
            eprintln!("{}", render_error(&r));
            return Ok(1);
        }
        print!("\r\x1b[2K{}", progress_line(&r.body));
        let _ = std::io::stdout().flush();
        let status = r.body["status"].as_str().unwrap_or("");
        if !matches!(status, "running" | "discovering") {
            println!();
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs_f64(interval.max(0.1))).await;
    }
}

fn render_incremental(v: &Value) -> String {
    format!(
        "{}: {} images found; {} new, {} changed, {} moved, {} removed, {} unchanged, {} still being written; {} jobs queued",
        s(&v["directory"]),
        s(&v["discovered"]),
        s(&v["created"]),
        s(&v["updated"]),
        s(&v["renamed"]),
        s(&v["removed"]),
        s(&v["skipped"]),
        s(&v["settling"]),
        s(&v["jobsQueued"]),
    )
}

fn render_watcher(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["roots"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| vec![s(&r["mode"]), s(&r["watchedDirectories"]), s(&r["path"]), r["note"].as_str().unwrap_or("").to_string()])
        .collect();
    format!(
        "{}\nassets known: {}   events seen: {}   overflows: {}   pending: {}\nlast reconcile: {} ({} ms), {} so far",
        table(&["MODE", "DIRS", "ROOT", "NOTE"], &rows),
        s(&v["assetsKnown"]),
        s(&v["eventsSeen"]),
        s(&v["overflows"]),
        s(&v["pendingPaths"]),
        s(&v["lastReconcileAt"]),
        s(&v["lastReconcileMs"]),
        s(&v["reconciles"]),
    ) + &away_lines(v)
}

/// Unreadable and unavailable folders, one line each (nothing when there are none).
fn away_lines(v: &Value) -> String {
    let mut out = String::new();
    for (key, what) in [("unreadable", "unreadable"), ("unavailable", "unavailable")] {
        for u in v[key].as_array().cloned().unwrap_or_default() {
            out.push_str(&format!("\n{what}: {} since {}: {}", s(&u["path"]), s(&u["since"]), s(&u["error"])));
        }
    }
    out
}

fn render_pipeline(v: &Value) -> String {
    if v["running"].as_bool() != Some(true) {
        return format!("pipeline not running: {}", s(&v["reason"]));
    }
    let rows: Vec<Vec<String>> = v["stages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|st| {
            vec![
                s(&st["name"]),
                s(&st["workers"]),
                s(&st["items"]),
                s(&st["failures"]),
                format!("{:.0}%", st["busyShare"].as_f64().unwrap_or(0.0) * 100.0),
                format!("{}/{}", s(&st["queueDepth"]), s(&st["queueCapacity"])),
            ]
        })
        .collect();
    format!(
        "device: {}   model: {}   batch: {}   jpeg: {}\nvectors: {}\n{:.2} images/s, {} completed\n{}",
        s(&v["device"]),
        s(&v["model"]),
        s(&v["batchSize"]),
        s(&v["jpegDecoder"]),
        s(&v["vectorStore"]),
        v["imagesPerSecond"].as_f64().unwrap_or(0.0),
        s(&v["completed"]),
        table(&["STAGE", "WORKERS", "ITEMS", "FAILED", "BUSY", "QUEUE"], &rows)
    )
}

fn render_search(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|h| {
            let label = h["labels"][0]["label"].as_str().unwrap_or("").split(',').next().unwrap_or("").to_string();
            let copies = h["similarCopies"].as_array().map_or(0, |c| c.len());
            let path =
                if copies > 0 { format!("{} (+{copies} similar {})", s(&h["path"]), if copies == 1 { "copy" } else { "copies" }) } else { s(&h["path"]) };
            vec![format!("{:.3}", h["score"].as_f64().unwrap_or(0.0)), s(&h["assetId"]), label, path]
        })
        .collect();
    let mut out = table(&["SCORE", "ASSET", "LABEL", "PATH"], &rows);
    if let Some(h) = v["hint"].as_str() {
        out.push_str(&format!("\n{h}"));
    }
    if let Some(m) = v["model"].as_str() {
        let via = match v["wordsVia"].as_str() {
            Some("clip") => " (words through CLIP's text tower)",
            Some("labels") => " (words matched ImageNet labels)",
            _ => "",
        };
        out.push_str(&format!("\nmodel: {m}{via}"));
    }
    out
}
