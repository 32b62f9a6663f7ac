//! The accept loops of the control socket and the TCP listener: hyper's HTTP/1 server on each
//! connection, with
//! * a header-read timeout (`daemon.header_read_timeout_secs`): a client that does not send a
//!   whole request head in time (idle, or trickling bytes) is cut;
//! * a cap on open connections per listener (`daemon.max_connections` for TCP,
//!   `daemon.max_socket_connections` for the socket: separate slots, so a TCP flood never
//!   locks the operator out of the socket). Over the cap a connection is answered 503 (JSON)
//!   and closed at once: its descriptor is freed, nothing waits;
//! * a bounded shutdown: on the daemon's shutdown broadcast the loop stops accepting, every
//!   connection is told to close after the request in flight (hyper's `graceful_shutdown`), and
//!   whatever is still open after `daemon.shutdown_grace_secs` is dropped, whatever the client
//!   does (half-sent head, a body that never comes).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinSet;

/// How one listener serves.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// The config key that sets `max_connections` (named in the 503's message).
    pub setting: &'static str,
    pub header_read_timeout: Duration,
    /// How long connections may finish their request once shutdown begins.
    pub grace: Duration,
}

/// A listening socket: accepted streams, and what is done with a stream refused over the cap.
pub trait Accept: Send + 'static {
    type Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;

    fn accept_io(&mut self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;

    /// Write what fits at once (a short answer fits the socket buffer; nothing waits on a
    /// client that does not read) and take what already arrived, so the close is clean.
    fn refuse(io: &Self::Io, answer: &[u8]);
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept_io(&mut self) -> std::io::Result<Self::Io> {
        tokio::net::TcpListener::accept(self).await.map(|(s, _)| s)
    }

    fn refuse(io: &Self::Io, answer: &[u8]) {
        let _ = io.try_write(answer);
        let _ = io.try_read(&mut [0u8; 4096]);
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;

    async fn accept_io(&mut self) -> std::io::Result<Self::Io> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }

    fn refuse(io: &Self::Io, answer: &[u8]) {
        let _ = io.try_write(answer);
        let _ = io.try_read(&mut [0u8; 4096]);
    }
}

/// The 503 a connection over the cap gets, in the API's error shape.
fn busy_answer(setting: &str) -> Vec<u8> {
    let detail = format!("too many open connections ({setting}); retry in a moment");
    let body = serde_json::json!({"detail": detail, "message": detail}).to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An accept error that concerns one connection only (it went away before it was accepted):
/// accept the next at once. Anything else (out of descriptors, out of memory) is waited on.
fn connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(e.kind(), K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused | K::Interrupted)
}

/// Serve `app` on `listener` until `shutdown` fires; returns once every connection is closed,
/// at most `limits.grace` (plus a second) after the shutdown.
pub async fn serve<L: Accept>(mut listener: L, app: Router, limits: Limits, what: &'static str, mut shutdown: broadcast::Receiver<()>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let busy = busy_answer(limits.setting);
    // Tells every connection that shutdown began (one value, latest wins: not a queue).
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let mut refused: u64 = 0;
    loop {
        tokio::select! {
            // Shutdown: stop accepting (the listener is closed below).
            _ = shutdown.recv() => break,
            // A connection ended: reap its task, so the set holds only open connections.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            // A client connects.
            accepted = listener.accept_io() => {
                let io = match accepted {
                    Ok(io) => io,
                    Err(e) if connection_error(&e) => continue,
                    Err(e) => {
                        // Out of descriptors (EMFILE/ENFILE) or memory: transient; accepting
                        // again at once would only spin. Connections closing free them.
                        tracing::warn!(listener = what, error = %e, transient = crate::fault::is_fd_exhaustion(&e), "accept failed; retrying in 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    L::refuse(&io, &busy);
                    drop(io);
                    refused += 1;
                    if refused.is_power_of_two() {
                        tracing::warn!(listener = what, max_connections = limits.max_connections, refused, "connection cap reached: connections answered 503 and closed");
                    }
                    continue;
                };
                let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app.clone()));
                let mut stop = stop_rx.clone();
                let grace = limits.grace;
                conns.spawn(async move {
                    let _slot = permit;
                    let mut conn = std::pin::pin!(conn);
                    tokio::select! {
                        // The connection ended: the client closed, an error, the header timeout.
                        r = conn.as_mut() => {
                            if let Err(e) = r {
                                tracing::debug!(listener = what, error = %e, "connection closed with an error");
                            }
                            return;
                        }
                        // Shutdown: answer the request in flight, then close.
                        _ = stop.changed() => conn.as_mut().graceful_shutdown(),
                    }
                    // Past the grace period the connection is dropped, whatever the client does.
                    if tokio::time::timeout(grace, conn).await.is_err() {
                        tracing::debug!(listener = what, grace_s = grace.as_secs(), "connection still open after the shutdown grace; dropped");
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = conns.len();
    if open > 0 {
        tracing::info!(listener = what, open, grace_s = limits.grace.as_secs(), "closing connections");
    }
    // Each connection has its own deadline; this one only bounds the wait a second later.
    let deadline = tokio::time::sleep(limits.grace + Duration::from_secs(1));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            // One more connection closed; none left ends the wait.
            r = conns.join_next() => {
                if r.is_none() {
                    break;
                }
            }
            // Past the deadline: whatever is left is aborted.
            _ = &mut deadline => {
                tracing::warn!(listener = what, left = conns.len(), "connections left after the shutdown deadline; aborted");
                conns.abort_all();
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_answer_is_json_503() {
        let a = String::from_utf8(busy_answer("daemon.max_connections")).unwrap();
        let (head, body) = a.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["detail"].as_str().unwrap().contains("daemon.max_connections"), "{v}");
    }

    #[test]
    fn connection_errors_are_not_waited_on() {
        assert!(connection_error(&std::io::Error::from(std::io::ErrorKind::ConnectionAborted)));
        assert!(!connection_error(&std::io::Error::from_raw_os_error(libc::EMFILE)));
    }
}
