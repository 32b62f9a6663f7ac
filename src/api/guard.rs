//! The TCP listener's gate, in front of every route (the Unix socket is protected by its file
//! mode and needs none of this):
//!
//! 1. `Host` must be a loopback name or in `daemon.allowed_hosts` (DNS rebinding);
//! 2. CORS: a preflight from an origin in `daemon.cors_origins` is answered, any other is 403; a
//!    mutating request from a foreign origin is 403; allowed origins get the CORS headers;
//! 3. the token (`daemon.tcp_auth = "token"`): `Authorization: Bearer`, or the HttpOnly
//!    SameSite=Strict cookie the login link `/?token=…` sets. `/health` and the web app's static
//!    files need none (they carry no data). Compared in constant time.
//!
//! Refusals are JSON in the API's error shape.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::config::{TcpAuth, TokenSource, WebSettings};

pub const COOKIE: &str = "pixdex_token";

/// What the gate checks, resolved at start (the token read or generated).
pub struct Guard {
    token: Option<String>,
    allowed_hosts: Vec<String>,
    cors_origins: Vec<String>,
    /// Where the token lives, for the 401 message.
    token_hint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read daemon.token_file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("daemon.token_file {0} is empty; put a long random string in it (or remove the setting to have one generated)")]
    Empty(String),
    #[error("cannot write the generated token to {path}: {source} (check daemon.data_dir)")]
    Write { path: String, source: std::io::Error },
}

impl Guard {
    pub fn new(web: &WebSettings) -> Result<Guard, TokenError> {
        let (token, token_hint) = match &web.auth {
            TcpAuth::None => (None, String::new()),
            TcpAuth::Token(TokenSource::Inline(t)) => (Some(t.clone()), "daemon.token in the config".to_string()),
            TcpAuth::Token(TokenSource::File(p)) => (Some(read_token(p)?), format!("{} (daemon.token_file)", p.display())),
            TcpAuth::Token(TokenSource::Generated(p)) => (Some(generated_token(p)?), p.display().to_string()),
        };
        Ok(Guard { token, allowed_hosts: web.allowed_hosts.clone(), cors_origins: web.cors_origins.clone(), token_hint })
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        is_loopback_name(&name) || self.allowed_hosts.iter().any(|h| h == "*" || *h == name)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token else { return true };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        if bearer.is_some_and(|b| ct_eq(b.as_bytes(), expected.as_bytes())) {
            return true;
        }
        cookie(headers, COOKIE).is_some_and(|c| ct_eq(c.as_bytes(), expected.as_bytes()))
    }
}

/// Read the token file's first line.
pub fn read_token(p: &Path) -> Result<String, TokenError> {
    let s = std::fs::read_to_string(p).map_err(|source| TokenError::Read { path: p.display().to_string(), source })?;
    let t = s.lines().next().unwrap_or("").trim().to_string();
    if t.is_empty() {
        return Err(TokenError::Empty(p.display().to_string()));
    }
    Ok(t)
}

/// The generated token: read it if it exists, else create it (0600, never world-readable,
/// not even for an instant: the mode is set at creation).
fn generated_token(p: &Path) -> Result<String, TokenError> {
    if p.exists() {
        return read_token(p);
    }
    let werr = |source| TokenError::Write { path: p.display().to_string(), source };
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).map_err(werr)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(p).map_err(werr)?;
    writeln!(f, "{token}").map_err(werr)?;
    Ok(token)
}

/// Constant-time equality (length is not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// `host:port`, `[::1]:port` or `host` → lower-case host name.
fn host_name(host: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_string(),
        _ => h,
    }
}

fn is_loopback_name(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost") || name == "::1" || name.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Routes that carry no data: the web app's static files and the liveness probe.
fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/" | "/index.html" | "/favicon.svg") || path.starts_with("/app/")
}

fn is_mutating(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware (TCP listener only).
pub async fn tcp_guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if !g.host_allowed(&host) {
        return ApiError::Forbidden(format!(
            "Host {host:?} is not allowed: pixdex answers loopback names and daemon.allowed_hosts (DNS-rebinding protection); add the name to daemon.allowed_hosts"
        ))
        .into_response();
    }
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(|o| o.trim_end_matches('/').to_ascii_lowercase());
    let same_origin = origin.as_deref().is_some_and(|o| o.split_once("://").map(|x| x.1) == Some(host.to_ascii_lowercase().as_str()));
    let cors_allowed = origin.as_deref().is_some_and(|o| g.cors_origins.iter().any(|c| c == o || c == "*"));

    // A CORS preflight carries no credentials: answer it here, before authentication.
    if req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        if !cors_allowed {
            return ApiError::Forbidden(format!("origin {} may not call this API; add it to daemon.cors_origins", origin.as_deref().unwrap_or("(none)")))
                .into_response();
        }
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        cors_headers(h, origin.as_deref().unwrap_or_default());
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"));
        let asked = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned().unwrap_or(HeaderValue::from_static("content-type, authorization"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        return r;
    }
    if origin.is_some() && !same_origin && !cors_allowed && is_mutating(req.method()) {
        return ApiError::Forbidden(format!(
            "cross-origin {} from {} refused: the origin is not in daemon.cors_origins",
            req.method(),
            origin.as_deref().unwrap_or_default()
        ))
        .into_response();
    }

    // The login link: `/?token=…` sets the cookie and sends the browser to the app.
    if let (Some(expected), "/") = (&g.token, req.uri().path())
        && let Some(t) = req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
    {
        let ok = ct_eq(t.as_bytes(), expected.as_bytes());
        let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, if ok { "/" } else { "/?login=failed" })]).into_response();
        if ok {
            let c = format!("{COOKIE}={expected}; HttpOnly; SameSite=Strict; Path=/; Max-Age=31536000");
            r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&c).expect("hex token is a valid header"));
        }
        return r;
    }
    if !is_public(req.uri().path()) && !g.authorized(req.headers()) {
        let mut r = ApiError::Unauthorized(format!(
            "this listener needs the token: send `Authorization: Bearer <token>` or open the login link the daemon printed at start (the token is in {})",
            g.token_hint
        ))
        .into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"pixdex\""));
        if let Some(o) = origin.as_deref().filter(|_| cors_allowed) {
            cors_headers(r.headers_mut(), o);
        }
        return r;
    }
    let mut resp = next.run(req).await;
    if let Some(o) = origin.as_deref().filter(|_| cors_allowed) {
        cors_headers(resp.headers_mut(), o);
    }
    resp
}

fn cors_headers(h: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("ETag, Retry-After"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_name("[::1]:8000"), "::1");
        assert_eq!(host_name("LocalHost:80"), "localhost");
        assert_eq!(host_name("evil.example"), "evil.example");
        assert!(is_loopback_name("127.0.0.2") && is_loopback_name("::1") && is_loopback_name("app.localhost"));
        assert!(!is_loopback_name("evil.example") && !is_loopback_name("10.0.0.1"));
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd") && !ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn cookies() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; pixdex_token=xyz; b=2"));
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
    }

    #[test]
    fn generated_token_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("token");
        let t = generated_token(&p).unwrap();
        assert_eq!(t.len(), 48);
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(generated_token(&p).unwrap(), t);
    }
}
