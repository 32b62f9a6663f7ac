//! Raw configuration → validated [`Config`]: one function per section, each naming the key (and
//! where its value came from) in its error.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::model::{ModelKind, ModelSpec, Precision};

/// Errors name the key and where its value came from: the file, or a `PIXDEX_SECTION__KEY`
/// variable (which wins over the file).
struct Keys {
    file: Option<PathBuf>,
}

impl Keys {
    fn origin(&self, key: &str) -> String {
        let long = format!("PIXDEX_{}", key.to_ascii_uppercase().replace('.', "__"));
        let var = if key == "log.format" && std::env::var_os(LOG_FORMAT_ENV).is_some() { LOG_FORMAT_ENV.to_string() } else { long };
        if std::env::var_os(&var).is_some() {
            format!(" (from the environment variable {var})")
        } else {
            self.file.as_ref().map(|f| format!(" in {}", f.display())).unwrap_or_default()
        }
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { key: key.to_string(), origin: self.origin(key), reason: reason.into() }
    }

    /// `Err` naming `key` unless `ok`.
    fn check(&self, ok: bool, key: &str, reason: impl Into<String>) -> Result<(), ConfigError> {
        if ok { Ok(()) } else { Err(self.invalid(key, reason)) }
    }
}

pub(super) fn validate(raw: RawConfig, file: Option<&Path>) -> Result<Config, ConfigError> {
    let keys = Keys { file: file.map(Path::to_path_buf) };
    let daemon = daemon(&raw.daemon, &raw.log, &keys)?;
    let (catalog_url, catalog_max_connections) = catalog(&raw.catalog, &daemon.data_dir, &keys)?;
    let library = library(&raw.library, &keys)?;
    let model = model(&raw.model, &keys)?;
    let pipeline = pipeline(&raw.pipeline, &keys)?;
    let vectors = vectors(&raw.vectors, &daemon.data_dir, &keys)?;
    let sessions = sessions(&raw.sessions, &keys)?;
    Ok(Config {
        source: file.map(|f| f.to_path_buf()),
        data_dir: daemon.data_dir,
        socket: daemon.socket,
        socket_group: daemon.socket_group,
        listen: daemon.listen,
        web: daemon.web,
        admission_retry: daemon.admission_retry,
        log: raw.daemon.log,
        log_format: daemon.log_format,
        catalog_url,
        catalog_max_connections,
        library,
        model,
        pipeline,
        vectors,
        sessions,
    })
}

/// `[daemon]` and `[log]`, validated.
struct Daemon {
    data_dir: PathBuf,
    socket: PathBuf,
    socket_group: Option<String>,
    listen: Option<SocketAddr>,
    web: WebSettings,
    admission_retry: Duration,
    log_format: LogFormat,
}

fn daemon(d: &RawDaemon, log: &RawLog, keys: &Keys) -> Result<Daemon, ConfigError> {
    let data_dir = absolutize(&d.data_dir);
    let socket = d.socket.as_ref().map(|p| absolutize(p)).unwrap_or_else(|| data_dir.join("pixdex.sock"));
    // Unix socket paths are limited to ~107 bytes by sun_path.
    keys.check(
        socket.as_os_str().len() <= 100,
        "daemon.socket",
        format!("{} is longer than 100 bytes, which Unix sockets do not allow; choose a shorter path", socket.display()),
    )?;
    let listen = match &d.listen {
        None => None,
        Some(s) if s.trim().is_empty() => None,
        Some(s) => Some(s.parse::<SocketAddr>().map_err(|e| keys.invalid("daemon.listen", format!("{s:?} is not an address like \"127.0.0.1:8765\" ({e})")))?),
    };
    let web = web(d, listen, &data_dir).map_err(|(k, r)| keys.invalid(k, r))?;
    let socket_group = match d.socket_group.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(g) if g.contains(|c: char| c == ':' || c == '/' || c.is_whitespace()) => {
            return Err(keys.invalid("daemon.socket_group", format!("{g:?} is not a group name (e.g. \"pixdex\")")));
        }
        Some(g) => Some(g.to_string()),
    };
    let log_format = match log.format.trim().to_ascii_lowercase().as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => return Err(keys.invalid("log.format", format!("{other:?} is neither \"text\" nor \"json\""))),
    };
    keys.check(d.admission_retry_secs > 0, "daemon.admission_retry_secs", "must be at least 1")?;
    Ok(Daemon { data_dir, socket, socket_group, listen, web, admission_retry: Duration::from_secs(d.admission_retry_secs), log_format })
}

/// `[catalog]`: the URL (a SQLite path made absolute) and the pool size.
fn catalog(c: &RawCatalog, data_dir: &Path, keys: &Keys) -> Result<(String, u32), ConfigError> {
    let url = match &c.url {
        None => format!("sqlite://{}", data_dir.join("catalog.db").display()),
        Some(u) => {
            let u = u.trim().to_string();
            if let Some(rest) = u.strip_prefix("sqlite://") {
                let p = rest.split('?').next().unwrap_or_default();
                keys.check(!p.is_empty(), "catalog.url", "sqlite:// needs a file path, e.g. sqlite:///var/lib/pixdex/catalog.db")?;
                format!("sqlite://{}", absolutize(Path::new(p)).display())
            } else if u.starts_with("postgres://") || u.starts_with("postgresql://") {
                u
            } else {
                return Err(keys.invalid("catalog.url", format!("{} is neither sqlite://PATH nor postgres://USER@HOST/DB", mask_url(&u))));
            }
        }
    };
    keys.check(c.max_connections > 0, "catalog.max_connections", "must be at least 1")?;
    Ok((url, c.max_connections))
}

/// `[library]`: extensions normalized, roots absolute (and canonical where they exist).
fn library(l: &RawLibrary, keys: &Keys) -> Result<LibraryConfig, ConfigError> {
    let mut extensions = Vec::new();
    for e in &l.extensions {
        let e = e.trim().trim_start_matches('.').to_ascii_lowercase();
        keys.check(!e.is_empty() && !e.contains('/'), "library.extensions", format!("{e:?} is not a file extension"))?;
        if !extensions.contains(&e) {
            extensions.push(e);
        }
    }
    keys.check(!extensions.is_empty(), "library.extensions", "lists no extension; pixdex would index nothing (e.g. [\"jpg\", \"png\"])")?;
    let mut roots = Vec::new();
    for r in &l.roots {
        keys.check(!r.as_os_str().is_empty(), "library.roots", "contains an empty path")?;
        let abs = absolutize(r);
        roots.push(std::fs::canonicalize(&abs).unwrap_or(abs));
    }
    let watch = match l.watch.as_str() {
        "native" => WatchMode::Native,
        "poll" => WatchMode::Poll,
        "off" => WatchMode::Off,
        other => return Err(keys.invalid("library.watch", format!("{other:?} is not one of \"native\", \"poll\", \"off\""))),
    };
    keys.check(l.poll_interval_ms >= 50, "library.poll_interval_ms", "must be at least 50")?;
    keys.check(l.rescan_interval_secs > 0, "library.rescan_interval_secs", "must be at least 1")?;
    Ok(LibraryConfig {
        watch,
        poll_interval: Duration::from_millis(l.poll_interval_ms),
        settle: Duration::from_millis(l.settle_ms),
        rescan_interval: Duration::from_secs(l.rescan_interval_secs),
        roots,
        extensions,
        ignored: l.ignored.clone(),
    })
}

/// `[model]`: which model (its kind's default weights unless set), its files, device and
/// precision. Names and paths only: the model code reads them (`embed`).
fn model(m: &RawModel, keys: &Keys) -> Result<ModelSettings, ConfigError> {
    let device = m.device.trim().to_ascii_lowercase();
    keys.check(
        ["auto", "wgpu", "cpu", "flex"].contains(&device.as_str()),
        "model.device",
        format!("{:?} is not one of \"auto\", \"wgpu\", \"cpu\", \"flex\"", m.device),
    )?;
    let kind: ModelKind = m.name.parse().map_err(|e: String| keys.invalid("model.name", e))?;
    let weights = m.weights.clone().unwrap_or_else(|| match kind {
        ModelKind::EfficientNetLite0 => PathBuf::from(crate::model::DEFAULT_EFFICIENTNET_WEIGHTS),
        ModelKind::Clip(_) => PathBuf::from(crate::model::DEFAULT_CLIP_WEIGHTS),
    });
    let precision: Precision = m.precision.parse().map_err(|e: String| keys.invalid("model.precision", e))?;
    let spec = ModelSpec { kind, weights: absolutize(&weights), vocab: absolutize(&m.vocab), precision };
    Ok(ModelSettings { weights: spec.weights.clone(), spec, device })
}

/// `[pipeline]`: workers, batch, limits, lease.
fn pipeline(p: &RawPipeline, keys: &Keys) -> Result<PipelineSettings, ConfigError> {
    for (key, v) in [("pipeline.decode_workers", p.decode_workers), ("pipeline.resize_workers", p.resize_workers), ("pipeline.batch_size", p.batch_size)] {
        keys.check(v > 0, key, "must be at least 1")?;
    }
    keys.check(p.memory_mb >= 16, "pipeline.memory_mb", format!("{} MB cannot hold even one decoded photo; use at least 16 (default 1024)", p.memory_mb))?;
    keys.check((1..=1_000_000).contains(&p.queue_batch), "pipeline.queue_batch", format!("must be between 1 and 1000000, not {}", p.queue_batch))?;
    keys.check(p.max_attempts > 0, "pipeline.max_attempts", "must be at least 1")?;
    keys.check(p.batch_size <= 256, "pipeline.batch_size", format!("{} is more than 256", p.batch_size))?;
    keys.check(p.max_megapixels > 0.0, "pipeline.max_megapixels", "must be above 0")?;
    keys.check(p.lease_secs > 0, "pipeline.lease_secs", "must be above 0")?;
    keys.check(p.max_file_bytes > 0, "pipeline.max_file_bytes", "must be above 0")?;
    Ok(PipelineSettings {
        decode_workers: p.decode_workers,
        resize_workers: p.resize_workers,
        batch_size: p.batch_size,
        max_megapixels: p.max_megapixels,
        max_file_bytes: p.max_file_bytes,
        lease: Duration::from_secs(p.lease_secs),
        max_attempts: p.max_attempts,
        memory_mb: p.memory_mb,
        queue_batch: p.queue_batch,
    })
}

/// `[vectors]`: embedded (under `data_dir` unless a path is set) or a Qdrant server.
fn vectors(v: &RawVectors, data_dir: &Path, keys: &Keys) -> Result<VectorSettings, ConfigError> {
    let embedded = match v.backend.as_str() {
        "embedded" => true,
        "qdrant" => {
            let has_url = !v.url.as_deref().unwrap_or("").split(',').all(|u| u.trim().is_empty());
            keys.check(has_url, "vectors.url", "is required with backend = \"qdrant\" (e.g. \"http://localhost:6334\")")?;
            false
        }
        other => return Err(keys.invalid("vectors.backend", format!("{other:?} is neither \"embedded\" nor \"qdrant\""))),
    };
    keys.check(v.replication_factor > 0, "vectors.replication_factor", "must be at least 1")?;
    keys.check(v.shard_number != Some(0), "vectors.shard_number", "must be at least 1")?;
    keys.check(!v.collection_prefix.trim().is_empty(), "vectors.collection_prefix", "must not be empty")?;
    Ok(VectorSettings {
        embedded,
        path: v.path.as_ref().map(|p| absolutize(p)).unwrap_or_else(|| data_dir.join("vectors")),
        url: v.url.clone(),
        api_key: v.api_key.clone(),
        collection_prefix: v.collection_prefix.clone(),
        replication_factor: v.replication_factor,
        shard_number: v.shard_number,
        min_free_mb: v.min_free_mb,
    })
}

/// `[[sessions]]`: unique names, `"all"` or a list of subdirectories.
fn sessions(raw: &[RawSession], keys: &Keys) -> Result<Vec<SessionSpec>, ConfigError> {
    let mut sessions = Vec::new();
    let mut names = HashSet::new();
    for (i, s) in raw.iter().enumerate() {
        let key = format!("sessions[{i}]");
        keys.check(!s.name.trim().is_empty(), &format!("{key}.name"), "must not be empty")?;
        keys.check(names.insert(s.name.clone()), &format!("{key}.name"), format!("session name {:?} is declared twice", s.name))?;
        let sel = |field: &str, d: &DirSelection| -> Result<Option<Vec<String>>, ConfigError> {
            match d {
                DirSelection::Keyword(k) if k == "all" => Ok(None),
                DirSelection::Keyword(k) => Err(keys.invalid(&format!("{key}.{field}"), format!("{k:?} is neither \"all\" nor a list of subdirectory paths"))),
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
    Ok(sessions)
}

/// `daemon.tcp_auth`, `token*`, `allowed_hosts`, `cors_origins`, `max_upload_mb`.
fn web(d: &RawDaemon, listen: Option<SocketAddr>, data_dir: &Path) -> Result<WebSettings, (&'static str, String)> {
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
