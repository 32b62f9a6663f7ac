//! Clients that misbehave at the connection level: half-sent heads and bodies that never come
//! at shutdown, heads trickled a byte a second, a flood of idle TCP connections under a low
//! open-file limit. Loopback only; every wait is bounded.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pixdex::api::client::{Client, Endpoint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::harness::{Db, TestDaemon, eventually, model_toml, noise_png, repo_dir, write_images};

const TOKEN: &str = "test-token-conns-0123456789abcdef";

/// SIGTERM with clients attached that never finish (a half-sent request head on TCP and on the
/// socket, POSTs whose declared body never comes, a live event stream nobody reads): the daemon
/// still exits 0 within 10 s (grace 5 s), handing back what it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_slow_clients() {
    let (mut d, addr) = TestDaemon::start_tcp(Db::Sqlite, &format!("token = \"{TOKEN}\""), "", |root| write_images(root, "a", 2, "png")).await;
    let mut held: Vec<Box<dyn AsyncWriteUnpin>> = Vec::new();
    let mut tcp_head = TcpStream::connect(&addr).await.unwrap();
    tcp_head.write_all(format!("GET /api/v1/library HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n").as_bytes()).await.unwrap();
    held.push(Box::new(tcp_head));
    let mut tcp_body = TcpStream::connect(&addr).await.unwrap();
    tcp_body
        .write_all(
            format!(
                "POST /api/v1/training/sessions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    held.push(Box::new(tcp_body));
    let mut unix_head = UnixStream::connect(&d.socket).await.unwrap();
    unix_head.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    held.push(Box::new(unix_head));
    let mut unix_body = UnixStream::connect(&d.socket).await.unwrap();
    unix_body
        .write_all(b"POST /api/v1/training/sessions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"name\":")
        .await
        .unwrap();
    held.push(Box::new(unix_body));
    let mut events = UnixStream::connect(&d.socket).await.unwrap();
    events.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    held.push(Box::new(events));
    // Let the daemon read what was sent (heads, the start of the bodies).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = d.stop_timed();
    eprintln!("shutdown with 5 slow clients attached took {took:?}");
    assert!(took < Duration::from_secs(10), "the daemon took {took:?} to exit after SIGTERM (must be < 10 s):\n{}", d.log());
    assert!(d.log().contains("stopped"), "{}", d.log());
    drop(held);
}

trait AsyncWriteUnpin: AsyncWrite + Unpin + Send {}
impl<T: AsyncWrite + Unpin + Send> AsyncWriteUnpin for T {}

/// Sends `head` one byte a second (never completing it); returns how long until the daemon
/// closed the connection, or None if it was still open after `max_bytes` bytes.
async fn trickle<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, head: &[u8], max_bytes: usize) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    for b in head.iter().take(max_bytes) {
        if s.write_all(&[*b]).await.is_err() {
            return Some(t.elapsed());
        }
        // A read that ends within the second: closed (EOF or reset), or answered and closed.
        // One that times out: still open, one more byte.
        if tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await.is_ok() {
            return Some(t.elapsed());
        }
    }
    None
}

/// A request head trickled at 1 byte/s is cut within `daemon.header_read_timeout_secs`
/// (2 s here), on TCP and on the control socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_headers_are_cut() {
    let (d, addr) = TestDaemon::start_tcp(Db::Sqlite, &format!("token = \"{TOKEN}\"\nheader_read_timeout_secs = 2"), "", |_| {}).await;
    let head = format!("GET /api/v1/health HTTP/1.1\r\nHost: {addr}\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n");
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let unix = UnixStream::connect(&d.socket).await.unwrap();
    let (t_tcp, t_unix) = tokio::join!(trickle(tcp, head.as_bytes(), 8), trickle(unix, head.as_bytes(), 8));
    eprintln!("trickled head cut after: tcp {t_tcp:?}, socket {t_unix:?}");
    for (what, t) in [("tcp", t_tcp), ("socket", t_unix)] {
        let t = t.unwrap_or_else(|| panic!("{what}: a head trickled at 1 byte/s was still open after 8 s (header_read_timeout_secs = 2)"));
        assert!(t >= Duration::from_millis(1500) && t < Duration::from_secs(5), "{what}: cut after {t:?}, expected ~2 s");
    }
    // The daemon still serves.
    assert_eq!(d.get("/api/v1/health").await.status, 200);
}

/// The log without ANSI colour sequences (tracing colours field names).
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Raise this test process's soft open-file limit towards `want`; returns the soft limit.
fn raise_own_nofile(want: u64) -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    if r.rlim_cur < want {
        let n = libc::rlimit { rlim_cur: want.min(r.rlim_max), rlim_max: r.rlim_max };
        // SAFETY: `n` is a valid rlimit no higher than the hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &n) } == 0 {
            r.rlim_cur = n.rlim_cur;
        }
    }
    r.rlim_cur
}

/// ~1,100 idle TCP connections (loopback, no token needed to connect) against a daemon whose
/// open-file limit is 256: the TCP cap (a quarter of it) answers the excess 503 and closes it,
/// so the control socket still answers, an authenticated TCP request is answered (200, or 503
/// JSON at once, never a hang), the daemon keeps running, and once the header timeout has cut
/// the idle connections TCP serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_leaves_room_for_the_socket() {
    let soft = raise_own_nofile(1500);
    let flood_n = 1100.min(soft.saturating_sub(300) as usize);
    assert!(flood_n >= 600, "this test needs ~1,400 open files (soft limit {soft})");
    let lines = format!("token = \"{TOKEN}\"\nheader_read_timeout_secs = 6");
    // With the model's weights at hand, an indexing session runs through the flood and must
    // lose no job; without them the rest of the test still runs.
    let weights = std::env::var("PIXDEX_MODEL").map(PathBuf::from).unwrap_or_else(|_| repo_dir().join("models/efficientnet-lite0.pth"));
    let indexing = weights.is_file();
    let extra = if indexing { model_toml(4) } else { String::new() };
    if !indexing {
        eprintln!("SKIPPED the indexing part of connection_flood_leaves_room_for_the_socket: no model weights at {}", weights.display());
    }
    const IMAGES: u32 = 60;
    let (mut d, addr) = TestDaemon::start_tcp_under(&["prlimit", "--nofile=256:256", "--"], Db::Sqlite, &lines, &extra, |root| {
        if indexing {
            for i in 0..IMAGES {
                noise_png(&root.join(format!("many/{i:04}.png")), 80, 60, i + 1);
            }
        } else {
            write_images(root, "a", 3, "png");
        }
    })
    .await;
    let session = if indexing {
        let id = d.create(serde_json::json!({"name": "flooded", "rootPath": d.root.display().to_string()})).await;
        assert_eq!(d.action(id, "start").await.status, 200);
        Some(id)
    } else {
        None
    };
    // The soft limit (256, the hard one too) and the caps taken from it: 256/4 TCP, 256/8 socket.
    let log = plain(&d.log());
    assert!(log.contains("open-file limit") && log.contains("soft=256"), "{log}");
    assert!(log.contains("tcp_max_connections=64") && log.contains("socket_max_connections=32"), "{log}");
    let auth = Client::new(Endpoint::Tcp(addr.clone())).with_token(Some(TOKEN.into()));

    let t = Instant::now();
    let mut flood = Vec::with_capacity(flood_n);
    let mut failed = 0usize;
    for _ in 0..flood_n {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => flood.push(s),
            _ => failed += 1,
        }
    }
    eprintln!("flood: {} connections open, {failed} failed, in {:?}", flood.len(), t.elapsed());
    assert!(flood.len() > 1000.min(flood_n - 50), "only {} connections could be opened", flood.len());

    // Over the cap: the last ones were answered 503 JSON and closed.
    let mut last = flood.pop().unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), last.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(read.is_ok() && answer.starts_with("HTTP/1.1 503") && answer.contains("max_connections"), "over the cap: {read:?} {answer:?}");

    // The control socket still answers, at once.
    let t = Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(5), d.client.get("/api/v1/health")).await;
    let health = health.expect("the control socket hangs under a TCP flood").expect("the control socket refuses under a TCP flood");
    assert_eq!(health.status, 200, "{:?}", health.body);
    eprintln!("socket health during the flood: {:?}", t.elapsed());
    // `pixdex ctl` too.
    let (code, out, err) = d.ctl(&["health"]);
    assert_eq!(code, 0, "ctl health during a TCP flood: {out} {err}");

    // Authenticated TCP: answered quickly, 200 or 503 JSON naming the setting, never a hang.
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), auth.get("/api/v1/library")).await.expect("an authenticated TCP request hangs under a flood");
    match r {
        Ok(r) if r.status == 200 => {}
        Ok(r) if r.status == 503 => assert!(r.body["detail"].as_str().unwrap_or("").contains("max_connections"), "{:?}", r.body),
        Ok(r) => panic!("authenticated TCP during the flood: {} {:?}", r.status, r.body),
        // Closed at once over the cap before the request went out: answered, not hung.
        Err(e) => eprintln!("authenticated TCP during the flood: {e}"),
    }
    eprintln!("authenticated TCP during the flood answered in {:?}", t.elapsed());
    assert!(d.running(), "the daemon died under the flood:\n{}", d.log());

    // The header timeout (6 s) cuts the idle connections: TCP serves again while they are open.
    let back = eventually(15, || async { auth.get("/api/v1/library").await.is_ok_and(|r| r.status == 200) }).await;
    assert!(back, "TCP did not serve again after the idle connections' header timeout:\n{}", d.log());
    assert_eq!(d.get("/api/v1/health").await.status, 200);
    drop(flood);
    if let Some(id) = session {
        let s = crate::pipeline::wait_status(&d, id, "completed", 240).await;
        assert_eq!((s["processedImages"].as_i64(), s["failedImages"].as_i64()), (Some(IMAGES as i64), Some(0)), "{s:?}");
    }
    d.stop();
}
