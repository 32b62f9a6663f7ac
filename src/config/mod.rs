//! Configuration: built-in defaults ← TOML file ← `PIXDEX_SECTION__KEY` environment.
//!
//! The raw, serde-shaped structs (`Raw*`) are what figment extracts; [`Config::load`] turns them
//! into the validated [`Config`] the rest of the program uses. This is the only place that knows
//! about figment, and the only place that resolves and checks configured values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;

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

mod raw;
mod show;
mod validate;

pub use raw::*;

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
    pub spec: crate::model::ModelSpec,
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
        validate::validate(raw, file)
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
        show::toml_string(&raw)
    }
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
        assert_eq!(Config::load(Some(&f)).expect("bf16 is a precision").model.spec.precision, crate::model::Precision::Bf16);
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
