//! Helpers for the end-to-end tests: start the real application on port 0
//! with a temporary database, or the real binary as a child process.
//!
//! This crate owns no product code; it must not reach into adapters, only
//! into what a user reaches: the HTTP/WebSocket API, the binary and its
//! files.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail the test loudly")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use homeserver::config::Settings;
use homeserver::startup::Application;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running application on a free port.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// The port.
    pub port: u16,
    /// The settings it runs with.
    pub settings: Settings,
    /// An HTTP client that sends the admin token.
    pub client: reqwest::Client,
    /// An HTTP client that sends no token.
    pub anonymous: reqwest::Client,
    /// The admin token made at first start.
    pub token: String,
    /// Holds the database folder until the test ends.
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Settings for tests: port 0, a database in `dir`, fast sampling.
pub fn test_settings(dir: &Path) -> Settings {
    let mut s = Settings::defaults().expect("built-in defaults are valid");
    s.server.port = 0;
    s.database.path = dir.join("homeserver.db");
    s.sampling.interval_ms = 200;
    s.history.flush_interval_secs = 1;
    s.publishing.cpu_stats_frequency_ms = 200;
    s.publishing.ram_stats_frequency_ms = 200;
    s.logging.level = "warn".to_owned();
    // Tests fire many requests from one address and one token.
    s.rate_limit.per_second = 100_000;
    s.rate_limit.burst = 100_000;
    s
}

/// What survives a stop: the folder with the database and the admin token.
pub struct Saved {
    /// The folder.
    pub dir: TempDir,
    /// The admin token.
    pub token: String,
}

fn client_with(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().expect("header value"));
    reqwest::Client::builder().default_headers(headers).build().expect("client")
}

/// Starts the application with [`test_settings`].
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the application after `tweak` adjusted the test settings.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(dir.path());
    tweak(&mut settings);
    start(dir, settings, None).await
}

/// Starts the application again on a stopped one's folder (a restart).
pub async fn spawn_in(saved: Saved, settings: Settings) -> TestApp {
    start(saved.dir, settings, Some(saved.token)).await
}

async fn start(dir: TempDir, settings: Settings, token: Option<String>) -> TestApp {
    let app = Application::build(settings.clone()).await.expect("application builds");
    let token = match (token, app.initial_token()) {
        (Some(t), None) => t,
        (None, Some(t)) => t.to_owned(),
        (known, fresh) => panic!("expected exactly one admin token: known {known:?}, fresh {fresh:?}"),
    };
    let port = app.port();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        settings,
        client: client_with(&token),
        anonymous: reqwest::Client::new(),
        token,
        dir,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    /// `GET address+path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.address)).send().await.expect("request sent")
    }

    /// `GET` and parse JSON, asserting 200.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.expect("JSON body")
    }

    /// Waits until the sampler has published a snapshot.
    pub async fn wait_for_snapshot(&self) -> serde_json::Value {
        for _ in 0..100 {
            let r = self.get("/api/v1/system").await;
            if r.status() == 200 {
                return r.json().await.expect("JSON body");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no snapshot within 5 s");
    }

    /// `ws://127.0.0.1:PORT` + path, with the admin token in `access_token`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}?access_token={}", self.port, self.token)
    }

    /// A client that sends `token`.
    pub fn client_for(&self, token: &str) -> reqwest::Client {
        client_with(token)
    }

    /// Creates a token through the API; its secret.
    pub async fn create_token(&self, name: &str, scope: &str, expires_at: Option<&str>) -> (String, String) {
        let mut body = serde_json::json!({"name": name, "scopes": [scope]});
        if let Some(t) = expires_at {
            body["expires_at"] = t.into();
        }
        let r = self.client.post(format!("{}/api/v1/tokens", self.address)).json(&body).send().await.expect("sent");
        assert_eq!(r.status(), 201);
        let v: serde_json::Value = r.json().await.expect("JSON");
        (v["id"].as_str().expect("id").to_owned(), v["token"].as_str().expect("token").to_owned())
    }

    /// Stops the application as a signal would and waits for it; returns the
    /// folder and token so it can be started again.
    pub async fn stop(mut self) -> Saved {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("stopped within 20 s")
                .expect("task joined")
                .expect("clean shutdown");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        Saved { dir: std::mem::replace(&mut self.dir, dir), token: std::mem::take(&mut self.token) }
    }
}

/// The `homeserver` binary of this build, built on demand.
pub fn homeserver_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HOMESERVER_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/e2e-<hash> → target/<profile>/homeserver
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = profile_dir.join("homeserver");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // Always ask cargo: it is a no-op when the binary is current, and a stale
    // binary would test old code.
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "homeserver", "--bin", "homeserver"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the homeserver binary failed");
    assert!(bin.exists(), "{} missing after build", bin.display());
    bin
}

/// A child's stderr read to its end on a thread, so a chatty child (trace
/// logging) never blocks on a full pipe. What arrived so far can be read
/// while the child runs (for a failure message); join for the whole text.
pub struct Drained {
    text: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Drained {
    /// Everything the child wrote so far.
    pub fn so_far(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }

    /// Waits for the pipe's end (the child exited) and returns the whole text.
    pub fn join(self) -> String {
        let Self { text, thread } = self;
        thread.join().unwrap();
        String::from_utf8_lossy(&text.lock().unwrap()).into_owned()
    }
}

/// Starts draining a child's stderr (see [`Drained`]).
pub fn drain_stderr(child: &mut Child) -> Drained {
    let stderr = child.stderr.take();
    let text = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = text.clone();
    let thread = std::thread::spawn(move || {
        let Some(mut stderr) = stderr else { return };
        let mut chunk = [0u8; 8192];
        while let Ok(n) = std::io::Read::read(&mut stderr, &mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    Drained { text, thread }
}

/// A `homeserver` child process with its own environment.
pub fn spawn_binary(args: &[&str], env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(homeserver_bin());
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("HOMESERVER__") || k == "HOMESERVER_CONFIG" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("homeserver starts")
}

/// A free TCP port on loopback for a child `homeserver` to listen on.
///
/// Picked below the kernel's ephemeral range (32768..): a port the kernel
/// hands out (port-0 listeners of in-process tests, every client socket's
/// local port) could otherwise take it between this check and the child's
/// bind, and the child would exit with "Address already in use".
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    for _ in 0..1000 {
        let n = seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(2654435761));
        let port = 20_000 + (n % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000")
}
