//! The real binary: start-up failures, SIGTERM, restart.

use std::io::Read;
use std::process::Child;
use std::time::{Duration, Instant};

use e2e::{free_port, spawn_binary};

pub(crate) fn env_for(dir: &std::path::Path, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("HOMESERVER__SERVER__PORT", port.to_string()),
        ("HOMESERVER__DATABASE__PATH", dir.join("hs.db").display().to_string()),
        ("HOMESERVER__SAMPLING__INTERVAL_MS", "200".to_owned()),
        // Only the final flush at shutdown writes: a lost buffer would show.
        ("HOMESERVER__HISTORY__FLUSH_INTERVAL_SECS", "3600".to_owned()),
        ("HOMESERVER__LOGGING__LEVEL", "info".to_owned()),
    ]
}

/// `homeserver token create` on the same database: the token (last stdout line).
pub(crate) fn cli_token(env: &[(&str, String)], name: &str, scope: &str) -> String {
    let out = spawn_binary(&["token", "create", "--name", name, "--scope", scope], env).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap().to_owned();
    assert!(token.starts_with("hs_"), "{stdout}");
    token
}

fn authed(token: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder().default_headers(h).build().unwrap()
}

/// Waits until the child serves `GET /api/v1/system`; if it exits first,
/// fails with its stderr (from `drained` when a drain thread holds it).
pub(crate) async fn wait_ready(
    client: &reqwest::Client,
    base: &str,
    child: &mut Child,
    drained: Option<&e2e::Drained>,
) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(r) = client.get(format!("{base}/api/v1/system")).send().await
            && r.status() == 200
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = drained.map(e2e::Drained::so_far).unwrap_or_default();
            if let Some(mut stderr) = child.stderr.take() {
                stderr.read_to_string(&mut err).unwrap();
            }
            let cut = (err.len().saturating_sub(4000)..err.len()).find(|&i| err.is_char_boundary(i)).unwrap_or(0);
            let err = &err[cut..];
            panic!("homeserver exited early ({status}): {err}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("homeserver not serving within 30 s");
}

pub(crate) fn sigterm_and_wait(child: &mut Child) -> std::process::ExitStatus {
    let ok = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no exit within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).unwrap().parse().unwrap()
}

#[tokio::test]
async fn sigterm_flushes_every_sample_and_a_restart_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = authed(&cli_token(&env_for(dir.path(), port), "e2e", "admin"));
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;

    let mut child = spawn_binary(&["serve"], &env_for(dir.path(), port));
    wait_ready(&client, &base, &mut child, None).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // The count first: the sampler publishes a sample before counting it, so
    // every sample counted here is at most as new as the one served next
    // (read the other way round, a tick between the two reads was counted
    // but lay after the served sample).
    let samples_seen = metric(
        &client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap(),
        "homeserver_samples_total",
    );
    let last: serde_json::Value =
        client.get(format!("{base}/api/v1/system")).send().await.unwrap().json().await.unwrap();
    assert!(samples_seen >= 5);
    let status = sigterm_and_wait(&mut child);
    assert!(status.success(), "exit status {status}");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("homeserver stopped"), "{err}");

    let mut child = spawn_binary(&["serve"], &env_for(dir.path(), port));
    wait_ready(&client, &base, &mut child, None).await;
    // The last sample served before SIGTERM is in history, to the byte.
    let t = last["timestamp"].as_str().unwrap();
    let h: serde_json::Value = client
        .get(format!("{base}/api/v1/system/history"))
        .query(&[("metrics", "memory.used_bytes"), ("from", t), ("points", "1")])
        .query(&[("to", &format!("{}", parse_ms(t) + 1))])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let point = &h["series"][0]["points"][0];
    assert_eq!(point[1].as_f64().unwrap() as u64, last["memory"]["used_bytes"].as_u64().unwrap(), "{h}");
    // And so is every sample counted before SIGTERM (one per 200 ms bucket).
    let from = started / 200 * 200;
    let h: serde_json::Value = client
        .get(format!("{base}/api/v1/system/history"))
        .query(&[
            ("metrics", "cpu.usage_percent"),
            ("from", &from.to_string()),
            ("to", &(parse_ms(t) + 1).to_string()),
            ("points", "2000"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["step_ms"], 200, "{h}");
    let stored = h["series"][0]["points"].as_array().unwrap().len() as u64;
    assert!(stored >= samples_seen, "stored {stored} of {samples_seen} samples");
    assert!(sigterm_and_wait(&mut child).success());
}

fn parse_ms(rfc3339: &str) -> i64 {
    homeserver::api::dto::parse_instant(rfc3339).expect("an RFC 3339 time").as_millis()
}

fn run_to_end(env: &[(&str, String)], args: &[&str]) -> (std::process::ExitStatus, String) {
    let child = spawn_binary(args, env);
    let out = child.wait_with_output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn an_invalid_config_value_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = env_for(dir.path(), free_port());
    env.push(("HOMESERVER__SAMPLING__INTERVAL_MS", "5".to_owned()));
    let (status, err) = run_to_end(&env, &["serve"]);
    assert!(!status.success());
    assert!(err.contains("sampling.interval_ms"), "{err}");
    let (status, err) = run_to_end(&[("HOMESERVER__SERVER__PORT", "http".to_owned())], &["config", "check"]);
    assert!(!status.success());
    assert!(err.contains("server.port"), "{err}");
    assert!(!dir.path().join("hs.db").exists(), "nothing created on a config error");
}

#[test]
fn a_corrupt_database_stops_start_up_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hs.db");
    let garbage: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&db, &garbage).unwrap();
    let (status, err) = run_to_end(&env_for(dir.path(), free_port()), &["serve"]);
    assert!(!status.success());
    assert!(err.contains("hs.db"), "names the file: {err}");
    assert_eq!(std::fs::read(&db).unwrap(), garbage, "file unchanged");
}

#[test]
fn an_unwritable_database_path_stops_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let mut env = env_for(dir.path(), free_port());
    env.retain(|(k, _)| *k != "HOMESERVER__DATABASE__PATH");
    env.push(("HOMESERVER__DATABASE__PATH", blocker.join("hs.db").display().to_string()));
    let (status, err) = run_to_end(&env, &["serve"]);
    assert!(!status.success());
    assert!(err.contains("not-a-dir"), "names the path: {err}");
}

#[test]
fn openapi_subcommand_prints_the_served_document() {
    let (status, _) = run_to_end(&[], &["openapi"]);
    assert!(status.success());
    let out = spawn_binary(&["openapi"], &[]).wait_with_output().unwrap();
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, serde_json::to_value(homeserver::api::openapi()).unwrap());
}

#[test]
fn migrate_and_config_check_succeed_on_a_fresh_folder() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(dir.path(), free_port());
    let (status, err) = run_to_end(&env, &["config", "check"]);
    assert!(status.success(), "{err}");
    let (status, err) = run_to_end(&env, &["migrate"]);
    assert!(status.success(), "{err}");
    assert!(dir.path().join("hs.db").exists(), "migrate creates the database");
    // Migrating again is a no-op, not an error.
    let (status, err) = run_to_end(&env, &["migrate"]);
    assert!(status.success(), "{err}");
}
