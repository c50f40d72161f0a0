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
    /// An HTTP client.
    pub client: reqwest::Client,
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
    s
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
    spawn_in(dir, settings).await
}

/// Starts the application on an existing folder (a restart).
pub async fn spawn_in(dir: TempDir, settings: Settings) -> TestApp {
    let app = Application::build(settings.clone()).await.expect("application builds");
    let port = app.port();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        settings,
        client: reqwest::Client::new(),
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

    /// `ws://127.0.0.1:PORT` + path.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// Stops the application as a signal would and waits for it; returns the
    /// folder so it can be started again.
    pub async fn stop(mut self) -> TempDir {
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
        std::mem::replace(&mut self.dir, dir)
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
