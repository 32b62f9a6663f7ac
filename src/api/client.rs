//! A small HTTP/1.1 client for the control socket (or the TCP listener): what `pixdex ctl`
//! and the integration tests use.

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "{a}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the pixdex daemon at {endpoint}: {source}{}", connect_hint(.endpoint, .source))]
    Connect { endpoint: String, source: std::io::Error },
    #[error("the daemon at {endpoint} broke the connection: {source}")]
    Http { endpoint: String, source: hyper::Error },
    #[error("the daemon answered {status} with a body that is not JSON: {body}")]
    NotJson { status: u16, body: String },
}

/// What to do when the daemon cannot be reached: get access (permission denied), or point ctl
/// at the right daemon.
fn connect_hint(endpoint: &str, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        return access_hint(std::path::Path::new(endpoint));
    }
    " (is `pixdex daemon` running with this config? pass --socket or --config to point ctl at it)".into()
}

/// How to get access to `path` (the control socket or the daemon's config) after a permission
/// denied: join the group that owns it (or its folder), or use sudo.
pub fn access_hint(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    // The socket itself, or the folder that hides it (`/run/pixdex`, mode 0750).
    let gid = std::fs::metadata(path).or_else(|_| std::fs::metadata(path.parent().unwrap_or(path))).map(|m| m.gid()).ok();
    match gid.filter(|&g| g != 0).and_then(group_name) {
        Some(g) => format!(
            " (only the daemon's user and members of group `{g}` may use it: add yourself to that group with `sudo usermod -aG {g} $USER` and log in again, or run this command with sudo)"
        ),
        None => " (run this command as the daemon's user or with sudo; `daemon.socket_group` in the daemon's config lets a group use the socket)".into(),
    }
}

/// A group's name from `/etc/group`.
fn group_name(gid: u32) -> Option<String> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == gid).then(|| name.to_string())
    })
}

/// A response: status and parsed JSON body (`null` when empty).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `detail` of an error body, or the whole body.
    pub fn detail(&self) -> String {
        self.body.get("detail").and_then(|d| d.as_str()).map(str::to_string).unwrap_or_else(|| self.body.to_string())
    }
}

/// A response with its headers and raw body (images, event streams, non-JSON answers).
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    /// The TCP listener's token (`Authorization: Bearer`).
    token: Option<String>,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Client {
        Client { endpoint, token: None }
    }

    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub async fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<Response, ClientError> {
        self.request(Method::POST, path, body.map(|b| b.to_string().into_bytes())).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Response, ClientError> {
        self.request(Method::PATCH, path, Some(body.to_string().into_bytes())).await
    }

    pub async fn delete(&self, path: &str) -> Result<Response, ClientError> {
        self.request(Method::DELETE, path, None).await
    }

    /// Send raw bytes (tests use it for malformed bodies).
    pub async fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Response, ClientError> {
        let r = self.raw(method, path, &[("content-type", "application/json")], body.unwrap_or_default()).await?;
        let body = if r.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&r.body).map_err(|_| ClientError::NotJson { status: r.status, body: String::from_utf8_lossy(&r.body).into_owned() })?
        };
        Ok(Response { status: r.status, body })
    }

    /// Any request, with the given headers (they replace the defaults: `host`, the token);
    /// the answer as it came.
    pub async fn raw(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Result<RawResponse, ClientError> {
        let endpoint = self.endpoint.to_string();
        let connect_err = |source| ClientError::Connect { endpoint: endpoint.clone(), source };
        let http_err = |source| ClientError::Http { endpoint: endpoint.clone(), source };
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "localhost".to_string(),
            Endpoint::Tcp(a) => a.clone(),
        };
        let mut req = Request::builder().method(method).uri(path);
        let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if !has("host") {
            req = req.header("host", host);
        }
        if let (Some(t), false) = (&self.token, has("authorization")) {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body))).expect("request parts are valid");
        match &self.endpoint {
            Endpoint::Unix(p) => {
                let stream = tokio::net::UnixStream::connect(p).await.map_err(connect_err)?;
                send(TokioIo::new(stream), req).await.map_err(http_err)
            }
            Endpoint::Tcp(a) => {
                let stream = tokio::net::TcpStream::connect(a).await.map_err(connect_err)?;
                send(TokioIo::new(stream), req).await.map_err(http_err)
            }
        }
    }
}

async fn send<IO>(io: IO, req: Request<Full<Bytes>>) -> Result<RawResponse, hyper::Error>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    drop(sender);
    let _ = conn.await;
    Ok(RawResponse { status, headers, body })
}
