//! The configuration as written: the serde-shaped structs figment extracts, with their defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    PathBuf::from(crate::model::DEFAULT_CLIP_VOCAB)
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
