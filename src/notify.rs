//! The service manager's notification protocol (systemd's `sd_notify`), without libsystemd:
//! one datagram of `KEY=VALUE` lines to the `AF_UNIX` socket named by `$NOTIFY_SOCKET` (a path,
//! or an abstract name written with a leading `@`). Without that variable (not started by a
//! service manager, or `Type=` other than notify) every call does nothing.
//!
//! The daemon sends `READY=1` once the catalog is open and the sockets are bound,
//! `RELOADING=1` … `READY=1` around a SIGHUP reload, `STOPPING=1` when it starts shutting down,
//! a `STATUS=` line with each, and `WATCHDOG=1` every half `$WATCHDOG_USEC` from a task on the
//! daemon's runtime (`WatchdogSec=` in the unit): a runtime that stops running tasks stops
//! the pings, and the service manager restarts the daemon.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The environment variable naming the service manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Send `state` (newline-separated `KEY=VALUE` assignments) to the service manager. Returns
/// whether it was sent; a failure is logged, never fatal (the daemon works without a manager).
pub fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else { return false };
    match send(&socket, state) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(socket = %socket.to_string_lossy(), error = %e, "cannot notify the service manager");
            false
        }
    }
}

/// `READY=1` with a status line.
pub fn ready(status: &str) -> bool {
    notify(&format!("READY=1\nSTATUS={}", one_line(status)))
}

/// `RELOADING=1` (with the monotonic time systemd wants since v253); `ready` ends the reload.
pub fn reloading(status: &str) -> bool {
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={}", monotonic_usec(), one_line(status)))
}

/// `STOPPING=1` with a status line.
pub fn stopping(status: &str) -> bool {
    notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)))
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when it is set for this process
/// (`$WATCHDOG_PID` absent or this process's id).
pub fn watchdog_interval() -> Option<Duration> {
    interval_from(std::env::var("WATCHDOG_USEC").ok().as_deref(), std::env::var("WATCHDOG_PID").ok().as_deref(), std::process::id())
}

fn interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok()? != me
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// Send `WATCHDOG=1` every `every` until `stop` fires (or its sender is gone).
pub async fn watchdog(every: Duration, mut stop: tokio::sync::broadcast::Receiver<()>) {
    tracing::info!(every_ms = every.as_millis() as u64, "service manager watchdog: pinging");
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.recv() => break,
            _ = tick.tick() => {
                notify("WATCHDOG=1");
            }
        }
    }
}

fn send(socket: &OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?
        }
        None if bytes.starts_with(b"/") => sock.send_to(state.as_bytes(), std::path::Path::new(socket))?,
        None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is neither an absolute path nor an abstract name (@…)")),
    };
    if sent != state.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, format!("sent {sent} of {} bytes", state.len())));
    }
    Ok(())
}

/// A status is one line: a newline would start another assignment.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\nSTATUS=up").unwrap();
        assert_eq!(recv(&listener), "READY=1\nSTATUS=up");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("pixdex-notify-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        send(OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        assert_eq!(recv(&listener), "WATCHDOG=1");

        assert!(send(OsStr::new("relative/path"), "READY=1").is_err());
        assert!(send(dir.path().join("nobody-listens").as_os_str(), "READY=1").is_err());
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_process_only() {
        assert_eq!(interval_from(Some("2000000"), None, 7), Some(Duration::from_secs(1)));
        assert_eq!(interval_from(Some("2000000"), Some("7"), 7), Some(Duration::from_secs(1)));
        assert_eq!(interval_from(Some("2000000"), Some("8"), 7), None);
        assert_eq!(interval_from(Some("0"), None, 7), None);
        assert_eq!(interval_from(Some("soon"), None, 7), None);
        assert_eq!(interval_from(None, None, 7), None);
    }

    #[test]
    fn a_status_stays_on_one_line() {
        assert_eq!(one_line("a\nb\rc"), "a b c");
        assert!(monotonic_usec() > 0);
    }
}
