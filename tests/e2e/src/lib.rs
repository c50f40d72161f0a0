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

/// Reads a child's stderr to its end on a thread, so a chatty child (trace
/// logging) never blocks on a full pipe; join the handle for the text.
pub fn drain_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        }
        text
    })
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

/// A free TCP port on loopback (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}
