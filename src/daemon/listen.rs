//! The daemon's listeners: the open-file limit their connection caps are shares of, the control
//! socket (bound without a window where others could connect), the TCP listener behind its
//! guard, and serving both until shutdown.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::sync::broadcast;

use crate::api;
use crate::config::Config;

/// What was claimed before anything else opened: the control socket (a second daemon on the
/// same config stops here) and the TCP listener's gate (its token read or generated).
pub(super) struct Listeners {
    unix: tokio::net::UnixListener,
    guard: Option<Arc<api::guard::Guard>>,
}

/// Claim the control socket and read the TCP token: once the daemon is up the token file
/// exists, and a bad `token_file` stops it here, before the catalog or the vectors are touched.
pub(super) fn claim(cfg: &Config) -> anyhow::Result<Listeners> {
    let guard = match cfg.listen {
        Some(_) => Some(Arc::new(api::guard::Guard::new(&cfg.web).context("cannot set up the TCP listener's token")?)),
        None => None,
    };
    let unix = bind_unix(&cfg.socket, cfg.socket_group.as_deref())?;
    tracing::info!(socket = %cfg.socket.display(), group = cfg.socket_group.as_deref().unwrap_or("-"), "control socket bound");
    Ok(Listeners { unix, guard })
}

/// Serve the API on the control socket and, when configured, on TCP behind the guard (Host
/// check, CORS, token); each listener stops at the shutdown broadcast and drains.
pub(super) async fn serve(
    cfg: &Config,
    listeners: Listeners,
    app: axum::Router,
    nofile: u64,
    shutdown: &broadcast::Sender<()>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<()> {
    let (tcp_limits, unix_limits) = connection_limits(&cfg.web, nofile);
    tracing::info!(
        nofile,
        tcp_max_connections = tcp_limits.max_connections,
        socket_max_connections = unix_limits.max_connections,
        header_read_timeout_s = tcp_limits.header_read_timeout.as_secs(),
        shutdown_grace_s = tcp_limits.grace.as_secs(),
        "connection limits"
    );
    tasks.spawn(api::serve::serve(listeners.unix, app.clone(), unix_limits, "socket", shutdown.subscribe()));
    let (Some(addr), Some(guard)) = (cfg.listen, listeners.guard) else { return Ok(()) };
    let tcp = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on daemon.listen = {addr}"))?;
    let shown = if addr.ip().is_unspecified() { format!("localhost:{}", addr.port()) } else { addr.to_string() };
    match guard.token() {
        Some(t) => {
            tracing::info!(%addr, "TCP listener serving the API and the web app (token required)");
            // A JSON log stays all JSON: the link is an event there.
            match cfg.log_format {
                crate::config::LogFormat::Json => tracing::info!(link = %format!("http://{shown}/?token={t}"), "pixdex web app: open the login link"),
                crate::config::LogFormat::Text => eprintln!("pixdex web app: open http://{shown}/?token={t}"),
            }
        }
        None => tracing::warn!(%addr, "TCP listener serving the API and the web app WITHOUT authentication (daemon.tcp_auth = \"none\"; loopback only)"),
    }
    let app = app.layer(axum::middleware::from_fn_with_state(guard, api::guard::tcp_guard));
    tasks.spawn(api::serve::serve(tcp, app, tcp_limits, "tcp", shutdown.subscribe()));
    Ok(())
}

/// Raise the soft open-file limit (RLIMIT_NOFILE) to the hard one: the default soft limit
/// (1024) is easily reached by the vector store's segments, the catalog and clients together.
/// Returns the soft limit now in force.
pub(super) fn raise_nofile_limit() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit (RLIMIT_NOFILE); assuming 1024");
        return 1024;
    }
    let before = r.rlim_cur;
    // An unlimited hard limit is not a valid soft one for descriptors (the kernel caps it at
    // fs.nr_open): take 2^20, Linux's default nr_open.
    let target = if r.rlim_max == libc::RLIM_INFINITY { 1 << 20 } else { r.rlim_max };
    if r.rlim_cur < target {
        let want = libc::rlimit { rlim_cur: target, rlim_max: r.rlim_max };
        // SAFETY: `want` is a valid rlimit; raising the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            r.rlim_cur = target;
        } else {
            tracing::warn!(error = %std::io::Error::last_os_error(), soft = before, hard = r.rlim_max, "cannot raise the soft open-file limit");
        }
    }
    tracing::info!(soft_before = before, soft = r.rlim_cur, hard = r.rlim_max, "open-file limit (RLIMIT_NOFILE)");
    r.rlim_cur
}

/// The listeners' limits: TCP gets at most a quarter of the open-file limit, the control socket
/// its own slots (at most an eighth), so together they leave well over half of the descriptors
/// to the vector store, the catalog, the watcher and decoding.
fn connection_limits(web: &crate::config::WebSettings, nofile: u64) -> (api::serve::Limits, api::serve::Limits) {
    let share = |n: u64| usize::try_from(n).unwrap_or(usize::MAX).max(1);
    let tcp = api::serve::Limits {
        max_connections: web.max_connections.min(share(nofile / 4)),
        setting: "daemon.max_connections",
        header_read_timeout: web.header_read_timeout,
        grace: web.shutdown_grace,
    };
    let unix =
        api::serve::Limits { max_connections: web.max_socket_connections.min(share(nofile / 8)), setting: "daemon.max_socket_connections", ..tcp.clone() };
    (tcp, unix)
}

/// Bind the control socket, refusing to steal it from a live daemon and replacing a stale one
/// (never anything that is not a socket). Mode 0600 (0660 and `group`'s, with
/// `daemon.socket_group`) from the first instant: the socket is bound inside a fresh 0700
/// directory, given its group and mode, then renamed into place, so no one else can connect in
/// between whatever the umask.
fn bind_unix(path: &Path, group: Option<&str>) -> anyhow::Result<tokio::net::UnixListener> {
    let gid = group.map(group_id).transpose()?;
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    let restrict = |p: &Path| -> anyhow::Result<()> {
        if let Some(gid) = gid {
            std::os::unix::fs::chown(p, None, Some(gid)).with_context(|| {
                format!("cannot give {} to group {:?} (daemon.socket_group; the daemon's user must be a member)", path.display(), group.unwrap_or(""))
            })?;
        }
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).with_context(|| format!("cannot set mode {mode:o} on {}", path.display()))
    };
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket; pixdex does not delete it (remove it yourself, or set daemon.socket to another path)", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another pixdex daemon is already listening on {} (stop it, or set daemon.socket to another path)", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let private = parent.join(format!(".pxs{}", std::process::id()));
    let staged = private.join("s");
    // sun_path holds ~107 bytes: a socket path near the limit is bound in place instead.
    if staged.as_os_str().len() < 100 && std::fs::DirBuilder::new().mode(0o700).create(&private).is_ok() {
        let bound = (|| -> anyhow::Result<tokio::net::UnixListener> {
            let l = tokio::net::UnixListener::bind(&staged).with_context(|| format!("cannot bind daemon.socket {}", path.display()))?;
            restrict(&staged)?;
            std::fs::rename(&staged, path).with_context(|| format!("cannot move the socket into place at {}", path.display()))?;
            Ok(l)
        })();
        let _ = std::fs::remove_file(&staged);
        let _ = std::fs::remove_dir(&private);
        return bound;
    }
    let l = tokio::net::UnixListener::bind(path).with_context(|| format!("cannot bind daemon.socket {}", path.display()))?;
    restrict(path)?;
    Ok(l)
}

/// A group's id by name (through NSS, as `ls` and `chgrp` see it).
fn group_id(name: &str) -> anyhow::Result<u32> {
    let cname = std::ffi::CString::new(name).map_err(|_| anyhow::anyhow!("daemon.socket_group {name:?} is not a group name"))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: all-zero is a valid `group` (null pointers, zero gid) for getgrnam_r to fill.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of `grp` (only gr_gid is read).
    let rc = unsafe { libc::getgrnam_r(cname.as_ptr(), &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        bail!("daemon.socket_group {name:?}: no such group (create it, or leave the key unset for a socket only the daemon's user may use)");
    }
    Ok(grp.gr_gid)
}
