//! Configuration: built-in defaults ← TOML file ← `PIXDEX_SECTION__KEY` environment.
//!
//! The raw, serde-shaped structs (`Raw*`) are what figment extracts; [`Config::load`] turns them
//! into the validated [`Config`] the rest of the program uses. This is the only place that knows
//! about figment, and the only place that resolves and checks configured values.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// A configuration problem. The message always names the key and, when it came from a file, the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Figment(String),
    #[error("invalid value for `{key}`{origin}: {reason}")]
    Invalid { key: String, origin: String, reason: String },
    #[error("config file {path} does not exist (pass an existing file to --config, or omit it to use the built-in defaults)")]
    MissingFile { path: PathBuf },
}

// ---------------------------------------------------------------------------------------------
// Raw (as written)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub daemon: RawDaemon,
    pub catalog: RawCatalog,
    pub library: RawLibrary,
    pub model: RawModel,
    pub pipeline: RawPipeline,
    pub vectors: RawVectors,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub sessions: Vec<RawSession>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// "text" (default: human-readable lines, coloured only on a terminal) or "json" (one JSON
    /// object per line, for log shippers). `PIXDEX_LOG_FORMAT` sets it too.
    #[serde(default = "default_log_format")]
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog { format: default_log_format() }
    }
}

fn default_log_format() -> String {
    "text".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// "efficientnet-lite0" (the default: ImageNet labels, words search the labels),
    /// "ViT-B-32" (open_clip CLIP with GELU, e.g. laion2b_s34b_b79k) or "ViT-B-32-quickgelu"
    /// (OpenAI's CLIP): words search the images.
    #[serde(default = "default_model_name")]
    pub name: String,
    /// The checkpoint. Default: `models/efficientnet-lite0.pth` (`scripts/fetch-model`) or, for
    /// CLIP, `models/clip-vit-b-32.safetensors` (`scripts/fetch-clip`).
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// CLIP's tokenizer merges (`scripts/fetch-clip-vocab`).
    #[serde(default = "default_vocab")]
    pub vocab: PathBuf,
    /// "auto" (a hardware GPU through wgpu if there is one, else the CPU), "wgpu", "cpu" (pixdex's
    /// kernels) or "flex" (Burn's CPU backend, the reference).
    pub device: String,
    /// CLIP on pixdex's CPU kernels: "f32" (the default) or "bf16" (opt-in, AVX512-BF16 CPUs:
    /// faster, vectors of a model of their own).
    #[serde(default = "default_precision")]
    pub precision: String,
}

fn default_precision() -> String {
    "f32".into()
}

fn default_model_name() -> String {
    "efficientnet-lite0".into()
}

fn default_vocab() -> PathBuf {
    PathBuf::from(crate::embed::clip::DEFAULT_VOCAB)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    pub decode_workers: usize,
    pub resize_workers: usize,
    pub batch_size: usize,
    pub max_megapixels: f64,
    pub max_file_bytes: u64,
    pub lease_secs: u64,
    /// Claims of one job before it is given up as failed (each ended with its worker dead).
    pub max_attempts: u32,
    /// Decoded pixels in flight across all decoders (pipeline, search, thumbnails), in MB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Jobs created per catalog transaction while a session starts or restarts (its discovery
    /// runs in the background, one short transaction per batch).
    #[serde(default = "default_queue_batch")]
    pub queue_batch: u64,
}

fn default_memory_mb() -> u64 {
    1024
}

fn default_queue_batch() -> u64 {
    5000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVectors {
    /// "embedded" (qdrant-edge under data_dir) or "qdrant" (a server).
    pub backend: String,
    /// Embedded: where the shard lives (default `<data_dir>/vectors`).
    pub path: Option<PathBuf>,
    /// Qdrant server URL (gRPC), e.g. "http://localhost:6334"; for a cluster, several nodes
    /// separated by commas (requests fail over to the next node when one is unreachable).
    pub url: Option<String>,
    pub api_key: Option<String>,
    pub collection_prefix: String,
    /// Qdrant cluster: copies of each shard, set when pixdex creates the collection (default 1).
    #[serde(default = "one")]
    pub replication_factor: u32,
    /// Qdrant cluster: shards of the collection when pixdex creates it (default: the server's).
    #[serde(default)]
    pub shard_number: Option<u32>,
    /// Embedded: free space kept on the vectors' filesystem, in MB; below it writing pauses.
    #[serde(default = "default_min_free_mb")]
    pub min_free_mb: u64,
}

fn default_min_free_mb() -> u64 {
    256
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    /// Where the daemon keeps its state (catalog, vectors, socket).
    pub data_dir: PathBuf,
    /// Control socket; default `<data_dir>/pixdex.sock`.
    pub socket: Option<PathBuf>,
    /// A group whose members may use the control socket (mode 0660, that group); unset: mode
    /// 0600, the daemon's user only. The packaged config sets "pixdex".
    #[serde(default)]
    pub socket_group: Option<String>,
    /// Optional TCP address serving the same API ("127.0.0.1:8765"). Off when absent.
    pub listen: Option<String>,
    /// How often sessions waiting for images (autoStart) are re-checked, in seconds.
    pub admission_retry_secs: u64,
    /// Log filter (tracing `EnvFilter` syntax), overridden by `RUST_LOG`.
    pub log: String,
    /// TCP listener authentication: "token" (default: every route but `/health` needs the
    /// token) or "none" (only allowed when `listen` is a loopback address; for the replaced
    /// web UI, which sends no credentials).
    pub tcp_auth: String,
    /// The TCP token. When neither this nor `token_file` is set, a token is generated at first
    /// start into `<data_dir>/token` (mode 0600) and the login link is printed.
    pub token: Option<String>,
    /// A file holding the TCP token (first line).
    pub token_file: Option<PathBuf>,
    /// Host names (besides loopback names) the TCP listener answers to; "*" allows any.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call the API cross-origin (CORS), e.g. "http://localhost:5173".
    /// Empty: same origin only.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Largest request body (uploads for search by image), in MiB.
    pub max_upload_mb: u64,
    /// Searches (by words, image or asset) running at once; more are answered 503 +
    /// Retry-After instead of queueing behind them. Default: 2 per core.
    #[serde(default)]
    pub max_concurrent_searches: Option<usize>,
    /// Requests in flight at once across the socket and TCP; more are answered 503.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight_requests: usize,
    /// A request (other than the live event stream) that takes longer is answered 503.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// TCP connections open at once (at most a quarter of the open-file limit): beyond, a
    /// connection is answered 503 and closed at once, so idle clients cannot take the
    /// descriptors the control socket, the catalog and the vector store need.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections to the control socket open at once: their own slots (at most an eighth of
    /// the open-file limit), so `pixdex ctl` gets in even while TCP is flooded.
    #[serde(default = "default_max_socket_connections")]
    pub max_socket_connections: usize,
    /// A request head (request line and headers) not received in this time closes the
    /// connection (slow or idle clients do not hold a connection slot).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// At shutdown, connections get this long to finish their request; then they are dropped.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
}

fn default_max_connections() -> usize {
    1024
}

fn default_max_socket_connections() -> usize {
    64
}

fn default_header_read_timeout() -> u64 {
    10
}

fn default_shutdown_grace() -> u64 {
    5
}

fn default_max_in_flight() -> usize {
    256
}

fn default_request_timeout() -> u64 {
    60
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalog {
    /// `sqlite://<path>` or `postgres://user:pass@host/db`. Default `sqlite://<data_dir>/catalog.db`.
    pub url: Option<String>,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLibrary {
    pub roots: Vec<PathBuf>,
    pub extensions: Vec<String>,
    pub ignored: Vec<String>,
    /// "native" (inotify & co), "poll" (NFS/SMB/FUSE) or "off".
    pub watch: String,
    pub poll_interval_ms: u64,
    /// A file is catalogued only after it has been unchanged this long.
    pub settle_ms: u64,
    /// Full reconcile scan period (also run at start and after an event overflow).
    pub rescan_interval_secs: u64,
}

/// `"all"` or an explicit list of relative paths.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DirSelection {
    Keyword(String),
    List(Vec<String>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RawSession {
    pub name: String,
    pub root: PathBuf,
    #[serde(default = "all_dirs")]
    pub subdirectories: DirSelection,
    #[serde(default = "all_dirs")]
    pub selected: DirSelection,
    #[serde(default, alias = "categoryId")]
    pub category_id: Option<i64>,
    #[serde(default, alias = "autoStart")]
    pub auto_start: bool,
    #[serde(default = "yes")]
    pub live: bool,
}

fn all_dirs() -> DirSelection {
    DirSelection::Keyword("all".into())
}
fn yes() -> bool {
    true
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            daemon: RawDaemon {
                data_dir: default_data_dir(),
                socket: None,
                socket_group: None,
                listen: None,
                admission_retry_secs: 10,
                log: "info".into(),
                tcp_auth: "token".into(),
                token: None,
                token_file: None,
                allowed_hosts: vec![],
                cors_origins: vec![],
                max_upload_mb: 64,
                max_concurrent_searches: None,
                max_in_flight_requests: default_max_in_flight(),
                request_timeout_secs: default_request_timeout(),
                max_connections: default_max_connections(),
                max_socket_connections: default_max_socket_connections(),
                header_read_timeout_secs: default_header_read_timeout(),
                shutdown_grace_secs: default_shutdown_grace(),
            },
            catalog: RawCatalog { url: None, max_connections: 8 },
            library: RawLibrary {
                roots: vec![],
                extensions: ["jpg", "jpeg", "png", "webp"].iter().map(|s| s.to_string()).collect(),
                ignored: ["@eaDir", "node_modules", "$RECYCLE.BIN", "lost+found"].iter().map(|s| s.to_string()).collect(),
                watch: "native".into(),
                poll_interval_ms: 2000,
                settle_ms: 1000,
                rescan_interval_secs: 3600,
            },
            model: RawModel { name: default_model_name(), weights: None, vocab: default_vocab(), device: "auto".into(), precision: default_precision() },
            pipeline: RawPipeline {
                decode_workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8),
                resize_workers: 1,
                batch_size: 16,
                max_megapixels: 100.0,
                max_file_bytes: 200 * 1024 * 1024,
                lease_secs: 600,
                max_attempts: 3,
                memory_mb: default_memory_mb(),
                queue_batch: default_queue_batch(),
            },
            vectors: RawVectors {
                backend: "embedded".into(),
                path: None,
                url: None,
                api_key: None,
                collection_prefix: "pixdex".into(),
                replication_factor: 1,
                shard_number: None,
                min_free_mb: default_min_free_mb(),
            },
            log: RawLog::default(),
            sessions: vec![],
        }
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("pixdex");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".local/share/pixdex");
    }
    PathBuf::from(".pixdex")
}

// ---------------------------------------------------------------------------------------------
// Validated
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Config {
    pub source: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    /// `daemon.socket_group`: the socket is mode 0660 for this group (else 0600).
    pub socket_group: Option<String>,
    pub listen: Option<SocketAddr>,
    pub web: WebSettings,
    pub admission_retry: Duration,
    pub log: String,
    pub log_format: LogFormat,
    pub catalog_url: String,
    pub catalog_max_connections: u32,
    pub library: LibraryConfig,
    pub model: ModelSettings,
    pub pipeline: PipelineSettings,
    pub vectors: VectorSettings,
    pub sessions: Vec<SessionSpec>,
}

/// How the TCP listener admits requests (see `api::guard`).
#[derive(Debug, Clone)]
pub struct WebSettings {
    pub auth: TcpAuth,
    /// Lower-case host names, without port; `*` allows any.
    pub allowed_hosts: Vec<String>,
    /// Exact origins (`scheme://host[:port]`), lower-case, no trailing slash.
    pub cors_origins: Vec<String>,
    pub max_upload_bytes: usize,
    pub max_concurrent_searches: usize,
    pub max_in_flight_requests: usize,
    pub request_timeout: Duration,
    /// `daemon.max_connections` (TCP), before the open-file limit's share is applied.
    pub max_connections: usize,
    /// `daemon.max_socket_connections` (control socket), idem.
    pub max_socket_connections: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpAuth {
    /// A token: configured inline, read from a file, or generated under data_dir.
    Token(TokenSource),
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Inline(String),
    File(PathBuf),
    Generated(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ModelSettings {
    /// Which model and its files (absolute paths).
    pub spec: crate::embed::ModelSpec,
    pub weights: PathBuf,
    /// "auto" | "wgpu" | "cpu" | "flex" (checked here; the embed module maps it to a device).
    pub device: String,
}

#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub decode_workers: usize,
    pub resize_workers: usize,
    pub batch_size: usize,
    pub max_megapixels: f64,
    pub max_file_bytes: u64,
    pub lease: Duration,
    pub max_attempts: u32,
    pub memory_mb: u64,
    pub queue_batch: u64,
}

#[derive(Debug, Clone)]
pub struct VectorSettings {
    /// true: embedded qdrant-edge; false: a Qdrant server at `url`.
    pub embedded: bool,
    pub path: PathBuf,
    pub url: Option<String>,
    pub api_key: Option<String>,
    pub collection_prefix: String,
    pub replication_factor: u32,
    pub shard_number: Option<u32>,
    pub min_free_mb: u64,
}

/// What the scanner needs to know: which trees, which files, which names to skip.
#[derive(Debug, Clone)]
pub struct LibraryConfig {
    pub watch: WatchMode,
    pub poll_interval: Duration,
    pub settle: Duration,
    pub rescan_interval: Duration,
    /// Canonical roots (symlinks resolved). Roots missing at load time are kept as written and
    /// reported by the daemon; they are re-resolved when used.
    pub roots: Vec<PathBuf>,
    /// Lower-case extensions without the dot.
    pub extensions: Vec<String>,
    pub ignored: Vec<String>,
}

/// `log.format`: how the daemon writes its log to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    Text,
    /// One JSON object per line (timestamp, level, target, message and fields at the top level).
    Json,
}

/// The short variable for `log.format` (the long form `PIXDEX_LOG__FORMAT` works too).
pub const LOG_FORMAT_ENV: &str = "PIXDEX_LOG_FORMAT";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    Native,
    Poll,
    Off,
}

/// A session declared in the config file.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSpec {
    pub name: String,
    pub root: PathBuf,
    pub subdirectories: Option<Vec<String>>, // None = all
    pub selected: Option<Vec<String>>,       // None = all listed
    pub category_id: Option<i64>,
    pub auto_start: bool,
    pub live: bool,
}

impl Config {
    /// Load defaults ← `file` ← environment, then validate.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let raw = Self::load_raw(file)?;
        Self::validate(raw, file)
    }

    pub fn load_raw(file: Option<&Path>) -> Result<RawConfig, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile { path: path.to_path_buf() });
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        // Only `PIXDEX_SECTION__KEY` variables configure; `PIXDEX_CONFIG` and others are not keys.
        fig = fig.merge(Env::prefixed("PIXDEX_").filter(|k| k.as_str().contains("__")).split("__"));
        // `PIXDEX_LOG_FORMAT=json`, the form log shippers' docs use, is `log.format`.
        fig = fig.merge(Env::raw().only(&[LOG_FORMAT_ENV]).map(|_| "log.format".into()));
        fig.extract::<RawConfig>().map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            ConfigError::Figment(msgs.join("; "))
        })
    }

    pub fn validate(raw: RawConfig, file: Option<&Path>) -> Result<Config, ConfigError> {
        let origin = match file {
            Some(f) => format!(" in {}", f.display()),
            None => String::new(),
        };
        // A key set by a `PIXDEX_SECTION__KEY` variable is reported as coming from it (it wins
        // over the file), not from the file.
        let origin_of = |key: &str| {
            let long = format!("PIXDEX_{}", key.to_ascii_uppercase().replace('.', "__"));
            let var = if key == "log.format" && std::env::var_os(LOG_FORMAT_ENV).is_some() { LOG_FORMAT_ENV.to_string() } else { long };
            if std::env::var_os(&var).is_some() { format!(" (from the environment variable {var})") } else { origin.clone() }
        };
        let invalid = |key: &str, reason: String| ConfigError::Invalid { key: key.to_string(), origin: origin_of(key), reason };

        let data_dir = absolutize(&raw.daemon.data_dir);
        let socket = raw.daemon.socket.as_ref().map(|p| absolutize(p)).unwrap_or_else(|| data_dir.join("pixdex.sock"));
        // Unix socket paths are limited to ~107 bytes by sun_path.
        if socket.as_os_str().len() > 100 {
            return Err(invalid(
                "daemon.socket",
                format!("{} is longer than 100 bytes, which Unix sockets do not allow; choose a shorter path", socket.display()),
            ));
        }
        let listen = match &raw.daemon.listen {
            None => None,
            Some(s) if s.trim().is_empty() => None,
            Some(s) => Some(s.parse::<SocketAddr>().map_err(|e| invalid("daemon.listen", format!("{s:?} is not an address like \"127.0.0.1:8765\" ({e})")))?),
        };
        let web = validate_web(&raw.daemon, listen, &data_dir).map_err(|(k, r)| invalid(k, r))?;
        let socket_group = match raw.daemon.socket_group.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(g) if g.contains(|c: char| c == ':' || c == '/' || c.is_whitespace()) => {
                return Err(invalid("daemon.socket_group", format!("{g:?} is not a group name (e.g. \"pixdex\")")));
            }
            Some(g) => Some(g.to_string()),
        };
        let log_format = match raw.log.format.trim().to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("log.format", format!("{other:?} is neither \"text\" nor \"json\""))),
        };
        if raw.daemon.admission_retry_secs == 0 {
            return Err(invalid("daemon.admission_retry_secs", "must be at least 1".into()));
        }

        let catalog_url = match &raw.catalog.url {
            None => format!("sqlite://{}", data_dir.join("catalog.db").display()),
            Some(u) => {
                let u = u.trim().to_string();
                if let Some(rest) = u.strip_prefix("sqlite://") {
                    let p = rest.split('?').next().unwrap_or_default();
                    if p.is_empty() {
                        return Err(invalid("catalog.url", "sqlite:// needs a file path, e.g. sqlite:///var/lib/pixdex/catalog.db".into()));
                    }
                    let abs = absolutize(Path::new(p));
                    format!("sqlite://{}", abs.display())
                } else if u.starts_with("postgres://") || u.starts_with("postgresql://") {
                    u
                } else {
                    return Err(invalid("catalog.url", format!("{} is neither sqlite://PATH nor postgres://USER@HOST/DB", mask_url(&u))));
                }
            }
        };
        if raw.catalog.max_connections == 0 {
            return Err(invalid("catalog.max_connections", "must be at least 1".into()));
        }

        let mut extensions = Vec::new();
        for e in &raw.library.extensions {
            let e = e.trim().trim_start_matches('.').to_ascii_lowercase();
            if e.is_empty() || e.contains('/') {
                return Err(invalid("library.extensions", format!("{e:?} is not a file extension")));
            }
            if !extensions.contains(&e) {
                extensions.push(e);
            }
        }
        if extensions.is_empty() {
            return Err(invalid("library.extensions", "lists no extension; pixdex would index nothing (e.g. [\"jpg\", \"png\"])".into()));
        }
        let mut roots = Vec::new();
        for r in &raw.library.roots {
            if r.as_os_str().is_empty() {
                return Err(invalid("library.roots", "contains an empty path".into()));
            }
            let abs = absolutize(r);
            roots.push(std::fs::canonicalize(&abs).unwrap_or(abs));
        }

        let watch = match raw.library.watch.as_str() {
            "native" => WatchMode::Native,
            "poll" => WatchMode::Poll,
            "off" => WatchMode::Off,
            other => return Err(invalid("library.watch", format!("{other:?} is not one of \"native\", \"poll\", \"off\""))),
        };
        if raw.library.poll_interval_ms < 50 {
            return Err(invalid("library.poll_interval_ms", "must be at least 50".into()));
        }
        if raw.library.rescan_interval_secs == 0 {
            return Err(invalid("library.rescan_interval_secs", "must be at least 1".into()));
        }

        let device = raw.model.device.trim().to_ascii_lowercase();
        if !["auto", "wgpu", "cpu", "flex"].contains(&device.as_str()) {
            return Err(invalid("model.device", format!("{:?} is not one of \"auto\", \"wgpu\", \"cpu\", \"flex\"", raw.model.device)));
        }
        let kind: crate::embed::ModelKind = raw.model.name.parse().map_err(|e: String| invalid("model.name", e))?;
        let weights = raw.model.weights.clone().unwrap_or_else(|| match kind {
            crate::embed::ModelKind::EfficientNetLite0 => PathBuf::from(crate::embed::DEFAULT_WEIGHTS),
            crate::embed::ModelKind::Clip(_) => PathBuf::from(crate::embed::clip::DEFAULT_WEIGHTS),
        });
        let precision: crate::embed::Precision = raw.model.precision.parse().map_err(|e: String| invalid("model.precision", e))?;
        let spec = crate::embed::ModelSpec { kind, weights: absolutize(&weights), vocab: absolutize(&raw.model.vocab), precision };
        let p = &raw.pipeline;
        for (key, v) in [("pipeline.decode_workers", p.decode_workers), ("pipeline.resize_workers", p.resize_workers), ("pipeline.batch_size", p.batch_size)] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if p.memory_mb < 16 {
            return Err(invalid("pipeline.memory_mb", format!("{} MB cannot hold even one decoded photo; use at least 16 (default 1024)", p.memory_mb)));
        }
        if p.queue_batch == 0 || p.queue_batch > 1_000_000 {
            return Err(invalid("pipeline.queue_batch", format!("must be between 1 and 1000000, not {}", p.queue_batch)));
        }
        if p.max_attempts == 0 {
            return Err(invalid("pipeline.max_attempts", "must be at least 1".into()));
        }
        if p.batch_size > 256 {
            return Err(invalid("pipeline.batch_size", format!("{} is more than 256", p.batch_size)));
        }
        if p.max_megapixels.is_nan() || p.max_megapixels <= 0.0 {
            return Err(invalid("pipeline.max_megapixels", "must be above 0".into()));
        }
        if p.max_file_bytes == 0 || p.lease_secs == 0 {
            return Err(invalid(if p.lease_secs == 0 { "pipeline.lease_secs" } else { "pipeline.max_file_bytes" }, "must be above 0".into()));
        }
        let v = &raw.vectors;
        let embedded = match v.backend.as_str() {
            "embedded" => true,
            "qdrant" => {
                if v.url.as_deref().unwrap_or("").split(',').all(|u| u.trim().is_empty()) {
                    return Err(invalid("vectors.url", "is required with backend = \"qdrant\" (e.g. \"http://localhost:6334\")".into()));
                }
                false
            }
            other => return Err(invalid("vectors.backend", format!("{other:?} is neither \"embedded\" nor \"qdrant\""))),
        };
        if v.replication_factor == 0 || v.shard_number == Some(0) {
            let key = if v.replication_factor == 0 { "vectors.replication_factor" } else { "vectors.shard_number" };
            return Err(invalid(key, "must be at least 1".into()));
        }
        if v.collection_prefix.trim().is_empty() {
            return Err(invalid("vectors.collection_prefix", "must not be empty".into()));
        }

        let vectors_path = v.path.as_ref().map(|p| absolutize(p)).unwrap_or_else(|| data_dir.join("vectors"));

        let mut sessions = Vec::new();
        let mut names = HashSet::new();
        for (i, s) in raw.sessions.iter().enumerate() {
            let key = format!("sessions[{i}]");
            if s.name.trim().is_empty() {
                return Err(invalid(&format!("{key}.name"), "must not be empty".into()));
            }
            if !names.insert(s.name.clone()) {
                return Err(invalid(&format!("{key}.name"), format!("session name {:?} is declared twice", s.name)));
            }
            let sel = |field: &str, d: &DirSelection| -> Result<Option<Vec<String>>, ConfigError> {
                match d {
                    DirSelection::Keyword(k) if k == "all" => Ok(None),
                    DirSelection::Keyword(k) => Err(invalid(&format!("{key}.{field}"), format!("{k:?} is neither \"all\" nor a list of subdirectory paths"))),
                    DirSelection::List(l) => Ok(Some(l.clone())),
                }
            };
            sessions.push(SessionSpec {
                name: s.name.clone(),
                root: absolutize(&s.root),
                subdirectories: sel("subdirectories", &s.subdirectories)?,
                selected: sel("selected", &s.selected)?,
                category_id: s.category_id,
                auto_start: s.auto_start,
                live: s.live,
            });
        }

        Ok(Config {
            source: file.map(|f| f.to_path_buf()),
            data_dir,
            socket,
            socket_group,
            listen,
            web,
            admission_retry: Duration::from_secs(raw.daemon.admission_retry_secs),
            log: raw.daemon.log,
            log_format,
            catalog_url,
            catalog_max_connections: raw.catalog.max_connections,
            library: LibraryConfig {
                watch,
                poll_interval: Duration::from_millis(raw.library.poll_interval_ms),
                settle: Duration::from_millis(raw.library.settle_ms),
                rescan_interval: Duration::from_secs(raw.library.rescan_interval_secs),
                roots,
                extensions,
                ignored: raw.library.ignored,
            },
            model: ModelSettings { weights: spec.weights.clone(), spec, device },
            pipeline: PipelineSettings {
                decode_workers: p.decode_workers,
                resize_workers: p.resize_workers,
                batch_size: p.batch_size,
                max_megapixels: p.max_megapixels,
                max_file_bytes: p.max_file_bytes,
                lease: Duration::from_secs(p.lease_secs),
                max_attempts: p.max_attempts,
                memory_mb: p.memory_mb,
                queue_batch: p.queue_batch,
            },
            vectors: VectorSettings {
                embedded,
                path: vectors_path,
                url: v.url.clone(),
                api_key: v.api_key.clone(),
                collection_prefix: v.collection_prefix.clone(),
                replication_factor: v.replication_factor,
                shard_number: v.shard_number,
                min_free_mb: v.min_free_mb,
            },
            sessions,
        })
    }

    /// The effective configuration as TOML, secrets masked (`pixdex config show`).
    pub fn show(raw: &RawConfig, validated: &Config) -> String {
        let mut raw = raw.clone();
        raw.catalog.url = Some(mask_url(&validated.catalog_url));
        if raw.vectors.api_key.is_some() {
            raw.vectors.api_key = Some("***".into());
        }
        if raw.daemon.token.is_some() {
            raw.daemon.token = Some("***".into());
        }
        raw.model.weights = Some(validated.model.weights.clone());
        raw.daemon.data_dir = validated.data_dir.clone();
        raw.daemon.socket = Some(validated.socket.clone());
        toml_string(&raw)
    }
}

fn toml_string(raw: &RawConfig) -> String {
    // figment ships the `toml` crate's serializer through its value type; serde_json → toml via
    // figment's own Value keeps us from depending on toml directly.
    let v = figment::value::Value::serialize(raw).expect("config serializes");
    let mut out = String::new();
    render_toml(&mut out, "", &v);
    out
}

fn render_toml(out: &mut String, prefix: &str, v: &figment::value::Value) {
    use figment::value::Value;
    let Value::Dict(_, dict) = v else { return };
    // scalars first, then tables, then arrays of tables
    for (k, val) in dict {
        match val {
            Value::Dict(..) => {}
            Value::Array(_, items) if items.iter().all(|i| matches!(i, Value::Dict(..))) && !items.is_empty() => {}
            Value::Empty(..) => {} // unset optional: leave the key out
            _ => out.push_str(&format!("{k} = {}\n", scalar(val))),
        }
    }
    for (k, val) in dict {
        if let Value::Dict(..) = val {
            let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            out.push_str(&format!("\n[{name}]\n"));
            render_toml(out, &name, val);
        }
    }
    for (k, val) in dict {
        if let Value::Array(_, items) = val
            && !items.is_empty()
            && items.iter().all(|i| matches!(i, Value::Dict(..)))
        {
            for item in items {
                out.push_str(&format!("\n[[{k}]]\n"));
                render_toml(out, k, item);
            }
        }
    }
}

fn scalar(v: &figment::value::Value) -> String {
    use figment::value::Value;
    match v {
        Value::String(_, s) => format!("{s:?}"),
        Value::Char(_, c) => format!("\"{c}\""),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => {
            if let Some(i) = n.to_u128() {
                i.to_string()
            } else if let Some(i) = n.to_i128() {
                i.to_string()
            } else {
                n.to_f64().map(|f| f.to_string()).unwrap_or_default()
            }
        }
        Value::Empty(..) => "\"\"".into(),
        Value::Array(_, items) => format!("[{}]", items.iter().map(scalar).collect::<Vec<_>>().join(", ")),
        Value::Dict(_, d) => format!("{{ {} }}", d.iter().map(|(k, v)| format!("{k} = {}", scalar(v))).collect::<Vec<_>>().join(", ")),
    }
}

/// `daemon.tcp_auth`, `token*`, `allowed_hosts`, `cors_origins`, `max_upload_mb`.
fn validate_web(d: &RawDaemon, listen: Option<SocketAddr>, data_dir: &Path) -> Result<WebSettings, (&'static str, String)> {
    let auth = match d.tcp_auth.trim() {
        "token" => {
            let token = d.token.as_deref().map(str::trim).filter(|t| !t.is_empty());
            match (token, &d.token_file) {
                (Some(_), Some(_)) => return Err(("daemon.token", "set either daemon.token or daemon.token_file, not both".into())),
                (Some(t), None) => {
                    if t.len() < 16 {
                        return Err((
                            "daemon.token",
                            "is shorter than 16 characters; use a long random string (or leave it unset to have one generated)".into(),
                        ));
                    }
                    TcpAuth::Token(TokenSource::Inline(t.to_string()))
                }
                (None, Some(f)) => TcpAuth::Token(TokenSource::File(absolutize(f))),
                (None, None) => TcpAuth::Token(TokenSource::Generated(data_dir.join("token"))),
            }
        }
        "none" => {
            if let Some(addr) = listen
                && !addr.ip().is_loopback()
            {
                return Err((
                    "daemon.tcp_auth",
                    format!("\"none\" is only allowed on a loopback listener, but daemon.listen is {addr}; bind 127.0.0.1 or keep tcp_auth = \"token\""),
                ));
            }
            TcpAuth::None
        }
        other => return Err(("daemon.tcp_auth", format!("{other:?} is neither \"token\" nor \"none\""))),
    };
    let mut allowed_hosts = Vec::new();
    for h in &d.allowed_hosts {
        let h = h.trim().to_ascii_lowercase();
        if h.is_empty() || h.contains('/') || h.contains(' ') {
            return Err(("daemon.allowed_hosts", format!("{h:?} is not a host name (e.g. \"photos.example.lan\")")));
        }
        allowed_hosts.push(h);
    }
    let mut cors_origins = Vec::new();
    for o in &d.cors_origins {
        let o = o.trim().trim_end_matches('/').to_ascii_lowercase();
        if o == "*" {
            cors_origins.push(o);
            continue;
        }
        let ok = (o.starts_with("http://") || o.starts_with("https://")) && !o.split_once("://").map(|x| x.1).unwrap_or("").contains('/');
        if !ok {
            return Err(("daemon.cors_origins", format!("{o:?} is not an origin like \"http://localhost:5173\" (scheme, host, optional port; no path)")));
        }
        cors_origins.push(o);
    }
    if d.max_upload_mb == 0 || d.max_upload_mb > 1024 {
        return Err(("daemon.max_upload_mb", format!("{} is not between 1 and 1024", d.max_upload_mb)));
    }
    for (key, zero) in [
        ("daemon.max_concurrent_searches", d.max_concurrent_searches == Some(0)),
        ("daemon.max_in_flight_requests", d.max_in_flight_requests == 0),
        ("daemon.request_timeout_secs", d.request_timeout_secs == 0),
        ("daemon.max_connections", d.max_connections == 0),
        ("daemon.max_socket_connections", d.max_socket_connections == 0),
    ] {
        if zero {
            return Err((key, "must be at least 1".into()));
        }
    }
    if !(1..=300).contains(&d.header_read_timeout_secs) {
        return Err(("daemon.header_read_timeout_secs", format!("{} is not between 1 and 300", d.header_read_timeout_secs)));
    }
    // systemd's stop timeout is 90 s by default: the whole shutdown must fit well inside it.
    if !(1..=60).contains(&d.shutdown_grace_secs) {
        return Err(("daemon.shutdown_grace_secs", format!("{} is not between 1 and 60", d.shutdown_grace_secs)));
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    Ok(WebSettings {
        auth,
        allowed_hosts,
        cors_origins,
        max_upload_bytes: (d.max_upload_mb * 1024 * 1024) as usize,
        max_concurrent_searches: d.max_concurrent_searches.unwrap_or(2 * cores),
        max_in_flight_requests: d.max_in_flight_requests,
        request_timeout: Duration::from_secs(d.request_timeout_secs),
        max_connections: d.max_connections,
        max_socket_connections: d.max_socket_connections,
        header_read_timeout: Duration::from_secs(d.header_read_timeout_secs),
        shutdown_grace: Duration::from_secs(d.shutdown_grace_secs),
    })
}

/// Replace a URL's password with `***`.
pub fn mask_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _pw)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_string()
}

/// Make a path absolute against the current directory (without touching the filesystem).
pub fn absolutize(p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("pixdex.toml");
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn defaults_validate() {
        let c = Config::validate(RawConfig::default(), None).unwrap();
        assert!(c.catalog_url.starts_with("sqlite://"));
        assert_eq!(c.library.extensions, ["jpg", "jpeg", "png", "webp"]);
        assert!(c.listen.is_none());
    }

    #[test]
    fn connection_settings() {
        let c = Config::validate(RawConfig::default(), None).unwrap();
        assert_eq!((c.web.max_connections, c.web.max_socket_connections), (1024, 64));
        assert_eq!((c.web.header_read_timeout, c.web.shutdown_grace), (Duration::from_secs(10), Duration::from_secs(5)));
        let d = tempfile::tempdir().unwrap();
        let f = write(d.path(), "[daemon]\nmax_connections = 100\nmax_socket_connections = 8\nheader_read_timeout_secs = 3\nshutdown_grace_secs = 2\n");
        let c = Config::load(Some(&f)).unwrap();
        assert_eq!((c.web.max_connections, c.web.max_socket_connections), (100, 8));
        assert_eq!((c.web.header_read_timeout, c.web.shutdown_grace), (Duration::from_secs(3), Duration::from_secs(2)));
        for (body, key) in [
            ("max_connections = 0", "daemon.max_connections"),
            ("max_socket_connections = 0", "daemon.max_socket_connections"),
            ("header_read_timeout_secs = 0", "daemon.header_read_timeout_secs"),
            ("shutdown_grace_secs = 61", "daemon.shutdown_grace_secs"),
        ] {
            let f = write(d.path(), &format!("[daemon]\n{body}\n"));
            let e = Config::load(Some(&f)).unwrap_err().to_string();
            assert!(e.contains(key), "{body}: {e}");
        }
    }

    #[test]
    fn log_format_and_socket_group() {
        let c = Config::validate(RawConfig::default(), None).unwrap();
        assert_eq!((c.log_format, c.socket_group.as_deref()), (LogFormat::Text, None));
        let d = tempfile::tempdir().unwrap();
        let f = write(d.path(), "[daemon]\nsocket_group = \"pixdex\"\n\n[log]\nformat = \"json\"\n");
        let c = Config::load(Some(&f)).unwrap();
        assert_eq!((c.log_format, c.socket_group.as_deref()), (LogFormat::Json, Some("pixdex")));
        let f = write(d.path(), "[log]\nformat = \"xml\"\n");
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("log.format") && e.contains("pixdex.toml"), "{e}");
        let f = write(d.path(), "[daemon]\nsocket_group = \"a b\"\n");
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("daemon.socket_group"), "{e}");
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let d = tempfile::tempdir().unwrap();
        let f = write(d.path(), "[daemon]\nsockett = \"/tmp/x.sock\"\n");
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("sockett"), "{e}");
        assert!(e.contains("pixdex.toml"), "{e}");
    }

    #[test]
    fn bad_value_names_key_and_file() {
        let d = tempfile::tempdir().unwrap();
        let f = write(d.path(), "[daemon]\nlisten = \"not an address\"\n");
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("daemon.listen") && e.contains("pixdex.toml"), "{e}");
        let f = write(d.path(), "[catalog]\nurl = \"mysql://x\"\n");
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("catalog.url"), "{e}");
        let f = write(d.path(), "[library]\nextensions = []\n");
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("library.extensions"), "{e}");
        let f = write(d.path(), "[model]\ndevice = \"tpu\"\n");
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("model.device") && e.contains("\"flex\""), "{e}");
        let f = write(d.path(), "[model]\nprecision = \"fp8\"\n");
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("model.precision") && e.contains("\"bf16\""), "{e}");
        let f = write(d.path(), "[model]\nprecision = \"bf16\"\n");
        assert_eq!(Config::load(Some(&f)).expect("bf16 is a precision").model.spec.precision, crate::embed::Precision::Bf16);
        let f = write(d.path(), "[model]\ndevice = \"flex\"\n");
        assert_eq!(Config::load(Some(&f)).expect("flex is a device").model.device, "flex");
        let f = write(d.path(), "[vectors]\nbackend = \"qdrant\"\n");
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("vectors.url"), "{e}");
        let f = write(d.path(), "[pipeline]\nbatch_size = 0\n");
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("pipeline.batch_size"), "{e}");
        let f = write(d.path(), "[daemon]\nadmission_retry_secs = \"soon\"\n");
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("admission_retry_secs") && e.contains("pixdex.toml"), "{e}");
    }

    #[test]
    fn sessions_parse_all_or_list() {
        let d = tempfile::tempdir().unwrap();
        let f = write(
            d.path(),
            "[[sessions]]\nname = \"a\"\nroot = \"/x\"\n\n[[sessions]]\nname = \"b\"\nroot = \"/x\"\nsubdirectories = [\"p\", \"q\"]\nselected = [\"p\"]\nautoStart = true\ncategoryId = 4\n",
        );
        let c = Config::load(Some(&f)).unwrap();
        assert_eq!(c.sessions[0].subdirectories, None);
        assert_eq!(c.sessions[1].subdirectories, Some(vec!["p".into(), "q".into()]));
        assert_eq!(c.sessions[1].selected, Some(vec!["p".into()]));
        assert!(c.sessions[1].auto_start);
        assert_eq!(c.sessions[1].category_id, Some(4));
        let f = write(d.path(), "[[sessions]]\nname = \"a\"\nroot = \"/x\"\n[[sessions]]\nname = \"a\"\nroot = \"/y\"\n");
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("sessions[1].name"), "{e}");
        let f = write(d.path(), "[[sessions]]\nname = \"a\"\nroot = \"/x\"\nsubdirectories = \"some\"\n");
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("sessions[0].subdirectories"), "{e}");
    }

    #[test]
    fn tcp_security_settings() {
        let d = tempfile::tempdir().unwrap();
        let f = write(d.path(), "[daemon]\nlisten = \"0.0.0.0:8000\"\ntcp_auth = \"none\"\n");
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("daemon.tcp_auth") && e.contains("loopback"), "{e}");
        let f = write(d.path(), "[daemon]\nlisten = \"127.0.0.1:8000\"\ntcp_auth = \"none\"\ncors_origins = [\"http://localhost:5173/\"]\n");
        let c = Config::load(Some(&f)).unwrap();
        assert_eq!(c.web.auth, TcpAuth::None);
        assert_eq!(c.web.cors_origins, ["http://localhost:5173"]);
        let f = write(d.path(), "[daemon]\ncors_origins = [\"localhost:5173\"]\n");
        assert!(Config::load(Some(&f)).unwrap_err().to_string().contains("daemon.cors_origins"));
        let f = write(d.path(), "[daemon]\ntoken = \"short\"\n");
        assert!(Config::load(Some(&f)).unwrap_err().to_string().contains("daemon.token"));
        let c = Config::validate(RawConfig::default(), None).unwrap();
        assert!(matches!(c.web.auth, TcpAuth::Token(TokenSource::Generated(_))));
    }

    #[test]
    fn masks_passwords() {
        assert_eq!(mask_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(mask_url("sqlite:///x.db"), "sqlite:///x.db");
        let mut raw = RawConfig::default();
        raw.catalog.url = Some("postgres://u:secret@h/db".into());
        let c = Config::validate(raw.clone(), None).unwrap();
        let shown = Config::show(&raw, &c);
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("[catalog]"), "{shown}");
    }
}
