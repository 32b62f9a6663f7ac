//! Test harness: a real `pixdex daemon` process on a temp directory, driven through its real
//! control socket, on a real catalog (SQLite file, or a fresh PostgreSQL database).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pixdex::api::client::{Client, Endpoint, Response};
use pixdex::catalog::Catalog;
use serde_json::Value;
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_pixdex");

/// The checkout the tests run from. Read at run time (cargo sets it for test binaries): a build
/// folder shared between clones (`.ci/run` keeps one outside the clone) is not rebuilt when only
/// the clone's path changes, so the compile-time value can name another, older checkout.
pub fn repo_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// A 1×1 PNG.
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02,
    0x00, 0x00, 0x00, 0x90, 0x77, 0x53, 0xDE, 0x00, 0x00, 0x00, 0x0C, 0x49, 0x44, 0x41, 0x54, 0x08, 0xD7, 0x63, 0xF8, 0xCF, 0xC0, 0x00, 0x00, 0x03, 0x01, 0x01,
    0x00, 0x18, 0xDD, 0x8D, 0xB0, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Base URL of a PostgreSQL server for tests (`postgres://user@host:port`, no database), from
/// `PIXDEX_TEST_POSTGRES_URL`. `.ci/run` starts one and sets it.
pub fn pg_base() -> Option<String> {
    match std::env::var("PIXDEX_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u.trim_end_matches('/').to_string()),
        _ => {
            if std::env::var("PIXDEX_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("PIXDEX_REQUIRE_POSTGRES=1 but PIXDEX_TEST_POSTGRES_URL is not set");
            }
            None
        }
    }
}

/// Runs the body for the backend, or says plainly that the PostgreSQL variant was skipped.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::harness::Db::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::harness::pg_base().is_none() {
                    eprintln!("SKIPPED {}::postgres: set PIXDEX_TEST_POSTGRES_URL (e.g. postgres://user@127.0.0.1:5432) to run it", stringify!($name));
                    return;
                }
                super::$body($crate::harness::Db::Postgres).await;
            }
        }
    };
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A catalog URL for a fresh, empty catalog.
pub async fn fresh_catalog_url(db: Db, dir: &Path) -> String {
    match db {
        Db::Sqlite => format!("sqlite://{}", dir.join("catalog.db").display()),
        Db::Postgres => {
            use sqlx::Connection;
            let base = pg_base().expect("postgres configured");
            let name = format!(
                "pixdex_t_{}_{}_{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
            );
            let mut c = sqlx::PgConnection::connect(&format!("{base}/postgres")).await.expect("connect to test postgres");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut c).await.expect("create test database");
            c.close().await.ok();
            format!("{base}/{name}")
        }
    }
}

pub fn write_images(root: &Path, rel: &str, n: usize, ext: &str) {
    let d = root.join(rel);
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..n {
        std::fs::write(d.join(format!("img{i:03}.{ext}")), PNG).unwrap();
    }
}

pub struct TestDaemon {
    pub dir: TempDir,
    pub root: PathBuf,
    pub socket: PathBuf,
    pub config_path: PathBuf,
    pub catalog_url: String,
    pub client: Client,
    extra: String,
    /// Extra lines inside `[daemon]`.
    pub daemon_extra: String,
    /// Extra lines inside `[library]`.
    pub library_extra: String,
    /// Run the daemon as this uid/gid (through `setpriv`), not as the test's user.
    pub run_as: Option<u32>,
    /// Extra environment for the daemon process (e.g. `PIXDEX_FAILPOINT`).
    pub env: Vec<(String, String)>,
    /// A command the daemon runs under (e.g. `["prlimit", "--nofile=256:256", "--"]`).
    pub wrapper: Vec<String>,
    child: Option<Child>,
}

impl TestDaemon {
    /// A daemon over an empty library root `<tmp>/lib`; `setup` fills the root before start.
    pub async fn start(db: Db, extra_toml: &str, setup: impl FnOnce(&Path)) -> TestDaemon {
        Self::start_with(db, extra_toml, "", setup).await
    }

    /// Like `start`, with extra lines inside `[library]` (watch mode, poll interval…).
    pub async fn start_with(db: Db, extra_toml: &str, library_extra: &str, setup: impl FnOnce(&Path)) -> TestDaemon {
        let mut d = Self::prepare(db, extra_toml, library_extra, setup).await;
        d.spawn().await;
        d
    }

    /// Everything `start_with` does except starting the daemon (`respawn` starts it).
    pub async fn prepare(db: Db, extra_toml: &str, library_extra: &str, setup: impl FnOnce(&Path)) -> TestDaemon {
        let dir = tempfile::Builder::new().prefix("pxd").tempdir_in("/tmp").unwrap();
        let root = dir.path().join("lib");
        std::fs::create_dir_all(&root).unwrap();
        setup(&root);
        let catalog_url = fresh_catalog_url(db, dir.path()).await;
        let socket = dir.path().join("ctl.sock");
        let config_path = dir.path().join("pixdex.toml");
        let mut d = TestDaemon {
            client: Client::new(Endpoint::Unix(socket.clone())),
            root,
            socket,
            config_path,
            catalog_url,
            extra: extra_toml.to_string(),
            daemon_extra: String::new(),
            library_extra: String::new(),
            run_as: None,
            env: vec![],
            wrapper: vec![],
            dir,
            child: None,
        };
        d.library_extra = library_extra.to_string();
        d.write_config(extra_toml);
        d
    }

    /// A second daemon on the same library root and the same catalog (many daemons, one
    /// PostgreSQL), with its own data directory and socket; started.
    pub async fn peer(&self, extra_toml: &str) -> TestDaemon {
        let dir = tempfile::Builder::new().prefix("pxd").tempdir_in("/tmp").unwrap();
        let socket = dir.path().join("ctl.sock");
        let config_path = dir.path().join("pixdex.toml");
        let mut d = TestDaemon {
            client: Client::new(Endpoint::Unix(socket.clone())),
            root: self.root.clone(),
            socket,
            config_path,
            catalog_url: self.catalog_url.clone(),
            extra: String::new(),
            daemon_extra: self.daemon_extra.clone(),
            library_extra: self.library_extra.clone(),
            run_as: None,
            env: vec![],
            wrapper: vec![],
            dir,
            child: None,
        };
        d.write_config(extra_toml);
        d.spawn().await;
        d
    }

    /// The daemon's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Resident memory of the daemon process, in MB (Linux `/proc`).
    pub fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid().unwrap())).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
    }

    /// This daemon's lease owner id (`<data_dir>/daemon-id`).
    pub fn owner(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/daemon-id")).unwrap_or_default().trim().to_string()
    }

    pub fn write_config(&mut self, extra_toml: &str) {
        self.extra = extra_toml.to_string();
        let body = format!(
            "[daemon]\ndata_dir = \"{}\"\nsocket = \"{}\"\nadmission_retry_secs = 1\nlog = \"info,pixdex=debug\"\n{}\n\n[catalog]\nurl = \"{}\"\n\n[library]\nroots = [\"{}\"]\nsettle_ms = 300\n{}\n\n{}\n",
            self.dir.path().join("data").display(),
            self.socket.display(),
            self.daemon_extra,
            self.catalog_url,
            self.root.display(),
            self.library_extra,
            extra_toml.replace("$ROOT", &self.root.display().to_string())
        );
        // Daemons run without the model unless a test asks for it ([model] in its extra TOML):
        // loading EfficientNet in every test daemon would only cost time.
        let body =
            if extra_toml.contains("[model]") { body } else { format!("{body}\n[model]\nweights = \"{}\"\n", self.dir.path().join("no-model.pth").display()) };
        std::fs::write(&self.config_path, body).unwrap();
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("daemon.log")).unwrap();
        let mut cmd = match self.run_as {
            None if !self.wrapper.is_empty() => {
                let mut c = Command::new(&self.wrapper[0]);
                c.args(&self.wrapper[1..]).arg(BIN);
                c
            }
            None => Command::new(BIN),
            Some(id) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={id}")).arg(format!("--regid={id}")).arg("--clear-groups").arg(BIN);
                c
            }
        };
        let child = cmd
            .args(["daemon", "--config"])
            .arg(&self.config_path)
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn pixdex daemon");
        self.child = Some(child);
        let t = Instant::now();
        loop {
            if let Ok(r) = self.client.get("/api/v1/health").await
                && r.status == 200
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("daemon exited with {status}:\n{}", self.log());
            }
            if t.elapsed() > Duration::from_secs(30) {
                panic!("daemon did not answer within 30 s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGTERM and wait: the daemon drains and exits 0.
    pub fn stop(&mut self) {
        self.stop_timed();
    }

    /// `stop`, returning how long the daemon took to exit after the SIGTERM.
    pub fn stop_timed(&mut self) -> Duration {
        if let Some(mut c) = self.child.take() {
            unsafe_kill(c.id(), "TERM");
            let t = Instant::now();
            loop {
                if let Ok(Some(st)) = c.try_wait() {
                    let took = t.elapsed();
                    assert!(st.success(), "daemon exited with {st}:\n{}", self.log());
                    return took;
                }
                if t.elapsed() > Duration::from_secs(20) {
                    let _ = c.kill();
                    panic!("daemon did not stop on SIGTERM:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Duration::ZERO
    }

    /// Whether the daemon process is still running (not exited).
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// kill -9: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    pub async fn respawn(&mut self) {
        self.spawn().await;
    }

    pub fn sighup(&self) {
        unsafe_kill(self.child.as_ref().unwrap().id(), "HUP");
    }

    /// The same catalog the daemon uses, opened from the test (as a pipeline worker would).
    pub async fn catalog(&self) -> Catalog {
        Catalog::connect(&self.catalog_url, 2).await.expect("open catalog")
    }

    // --- API shorthands -----------------------------------------------------------------------

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(path).await.expect("request")
    }
    pub async fn post(&self, path: &str, body: Option<Value>) -> Response {
        self.client.post(path, body.as_ref()).await.expect("request")
    }
    pub async fn patch(&self, path: &str, body: Value) -> Response {
        self.client.patch(path, &body).await.expect("request")
    }
    pub async fn delete(&self, path: &str) -> Response {
        self.client.delete(path).await.expect("request")
    }

    /// Create a session and return its id (asserting 201).
    pub async fn create(&self, body: Value) -> i64 {
        let r = self.post("/api/v1/training/sessions", Some(body)).await;
        assert_eq!(r.status, 201, "create failed: {:?}", r.body);
        r.body["id"].as_i64().unwrap()
    }

    pub async fn session(&self, id: i64) -> Value {
        let r = self.get(&format!("/api/v1/training/sessions/{id}")).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }

    pub async fn action(&self, id: i64, action: &str) -> Response {
        self.post(&format!("/api/v1/training/sessions/{id}/{action}"), None).await
    }

    /// Run `pixdex ctl --socket S ARGS…`; returns (exit code, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN).arg("ctl").arg("--socket").arg(&self.socket).args(args).output().expect("run ctl");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log());
        }
        self.kill();
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

/// Poll `check` until it returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The repository's model weights (`scripts/fetch-model`), or a panic saying how to get them.
pub fn weights() -> PathBuf {
    let p = std::env::var("PIXDEX_MODEL").map(PathBuf::from).unwrap_or_else(|_| repo_dir().join("models/efficientnet-lite0.pth"));
    assert!(p.is_file(), "model weights missing at {}: run `scripts/fetch-model {}`", p.display(), p.display());
    p
}

/// A sample photo (`scripts/fetch-samples`), or a panic saying how to get it.
pub fn sample(name: &str) -> PathBuf {
    let p = repo_dir().join("samples").join(name);
    assert!(p.is_file(), "sample photo missing at {}: run `scripts/fetch-samples`", p.display());
    p
}

/// `[model]` + `[pipeline]` TOML for a daemon that embeds on the CPU.
pub fn model_toml(batch: usize) -> String {
    format!("[model]\nweights = \"{}\"\ndevice = \"cpu\"\n\n[pipeline]\nbatch_size = {batch}\ndecode_workers = 2\n", weights().display())
}

/// A noisy RGB PNG of the given size (deterministic per seed).
pub fn noise_png(path: &Path, w: u32, h: u32, seed: u32) {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    let img = image::RgbImage::from_fn(w, h, |_, _| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        image::Rgb([(x & 255) as u8, ((x >> 8) & 255) as u8, ((x >> 16) & 255) as u8])
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// A free TCP port on loopback (bound and released; the daemon binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl TestDaemon {
    /// A daemon that also listens on TCP (`daemon_lines` go into `[daemon]`, e.g. tcp_auth);
    /// returns it and the listener's address.
    pub async fn start_tcp(db: Db, daemon_lines: &str, extra_toml: &str, setup: impl FnOnce(&Path)) -> (TestDaemon, String) {
        Self::start_tcp_under(&[], db, daemon_lines, extra_toml, setup).await
    }

    /// `start_tcp` with the daemon run under `wrapper` (e.g. `prlimit --nofile=256:256 --`).
    pub async fn start_tcp_under(wrapper: &[&str], db: Db, daemon_lines: &str, extra_toml: &str, setup: impl FnOnce(&Path)) -> (TestDaemon, String) {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut d = Self::prepare(db, extra_toml, "", setup).await;
        d.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        d.daemon_extra = format!("listen = \"{addr}\"\n{daemon_lines}");
        d.write_config(extra_toml);
        d.spawn().await;
        // The socket answers first; wait until the TCP listener accepts too.
        let t = Instant::now();
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "TCP listener {addr} not up:\n{}", d.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (d, addr)
    }
}
