//! The security layer as a user meets it: tokens, scopes, limits, audit, TLS.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use e2e::{free_port, spawn_app_with, spawn_binary};
use futures_util::StreamExt;

use crate::lifecycle::{cli_token, env_for, sigterm_and_wait, wait_ready};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn bearer(token: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder().default_headers(h).build().unwrap()
}

fn db_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("hs.db") {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn first_start_prints_a_working_admin_token_once_and_only_its_hash_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = env_for(dir.path(), port);
    let mut child = spawn_binary(&["serve"], &env);
    // Read stderr on a thread until the token line shows up.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.starts_with("hs_") {
                tx.send(line.clone()).unwrap();
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let token = rx.recv_timeout(Duration::from_secs(30)).expect("an admin token on stderr");
    let base = format!("http://127.0.0.1:{port}");
    let client = bearer(&token);
    wait_ready(&client, &base, &mut child, None).await;
    let r = client.get(format!("{base}/api/v1/tokens")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the printed token is an admin token");
    let list: serde_json::Value = r.json().await.unwrap();
    assert_eq!(list["items"][0]["name"], "initial-admin");
    assert!(list.to_string().find(&token[3..]).is_none(), "the list never shows a secret");
    assert!(sigterm_and_wait(&mut child).success());
    let log = reader.join().unwrap();
    assert_eq!(log.matches(&token).count(), 1, "printed exactly once: {log}");
    assert!(!contains(&db_bytes(dir.path()), &token[3..]), "the database holds a hash, not the secret");

    // A second start finds a token and prints none.
    let mut child = spawn_binary(&["serve"], &env);
    wait_ready(&client, &base, &mut child, None).await;
    assert!(sigterm_and_wait(&mut child).success());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!err.contains("hs_"), "{err}");
}

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut env = env_for(dir.path(), port);
    env.retain(|(k, _)| *k != "HOMESERVER__LOGGING__LEVEL");
    env.push(("HOMESERVER__LOGGING__LEVEL", "trace".to_owned()));
    env.push(("HOMESERVER__LOGGING__FORMAT", "json".to_owned()));
    let token = cli_token(&env, "logs", "read");
    let mut child = spawn_binary(&["serve"], &env);
    // Trace logging fills a pipe fast: read it while the server runs.
    let stderr = e2e::drain_stderr(&mut child);
    let base = format!("http://127.0.0.1:{port}");
    let client = bearer(&token);
    wait_ready(&client, &base, &mut child, Some(&stderr)).await;
    client.get(format!("{base}/api/v1/system")).send().await.unwrap();
    // In a query string on a plain GET (refused) and on a WebSocket upgrade (accepted).
    let r = reqwest::get(format!("{base}/api/v1/system?access_token={token}")).await.unwrap();
    assert_eq!(r.status(), 401, "access_token only counts on WebSocket upgrades");
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/api/v1/ws?access_token={token}"))
        .await
        .unwrap();
    drop(ws);
    let wrong = format!("hs_{}", "d".repeat(64));
    let r = bearer(&wrong).get(format!("{base}/api/v1/system")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body = r.text().await.unwrap();
    assert!(!body.contains(&wrong[3..]), "error bodies never echo a token");
    assert!(sigterm_and_wait(&mut child).success());
    let log = stderr.join();
    assert!(log.contains("request"), "trace logging was on: {log}");
    // Every line logged for a request names it.
    let answered: Vec<&str> = log.lines().filter(|l| l.contains(r#""message":"answered""#)).collect();
    assert!(answered.len() >= 3, "{log}");
    for line in answered {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["request_id"].as_str().is_some_and(|id| id.len() == 36), "{line}");
    }
    for secret in [&token[3..], &wrong[3..]] {
        assert!(!log.contains(secret), "a token reached the log");
    }
    assert!(!contains(&db_bytes(dir.path()), &token[3..]));
}

#[tokio::test]
async fn every_operation_refuses_missing_revoked_expired_and_too_small_tokens() {
    let app = spawn_app_with(|s| s.auth.max_failures_per_minute = 10_000).await;
    let (_, reader) = app.create_token("reader", "read", None).await;
    let (revoked_id, revoked) = app.create_token("gone", "admin", None).await;
    let r = app.client.delete(format!("{}/api/v1/tokens/{revoked_id}", app.address)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let soon = homeserver::api::dto::rfc3339(homeserver_domain::UnixMillis(now_ms() + 1_500));
    let (_, expired) = app.create_token("brief", "admin", Some(&soon)).await;
    assert_eq!(
        app.client_for(&expired).get(format!("{}/api/v1/tokens", app.address)).send().await.unwrap().status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1_700)).await;

    let doc = serde_json::to_value(homeserver::api::openapi()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(scope) = op.get("x-required-scope").and_then(|s| s.as_str()) else { continue };
            let url = format!("{}{}", app.address, path.replace("{id}", "does-not-exist"));
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let call = |token: Option<&str>| {
                let mut req = app.anonymous.request(method.clone(), &url);
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                req.header("content-type", "application/json").body("{}").send()
            };
            for (who, token, want) in [
                ("none", None, 401),
                ("revoked", Some(revoked.as_str()), 401),
                ("expired", Some(expired.as_str()), 401),
            ] {
                let r = call(token).await.unwrap();
                assert_eq!(r.status(), want, "{method} {path} with {who} token");
                assert_eq!(r.headers()["www-authenticate"], "Bearer");
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["code"], "UNAUTHORIZED");
            }
            if scope != "read" {
                let r = call(Some(&reader)).await.unwrap();
                assert_eq!(r.status(), 403, "{method} {path} with a read token");
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "walked {checked} operations");
    app.stop().await;
}

#[tokio::test]
async fn a_flood_of_bad_tokens_gets_401_or_429_and_good_clients_carry_on() {
    let app = spawn_app_with(|s| s.auth.max_failures_per_minute = 20).await;
    let url = format!("{}/api/v1/system", app.address);
    app.wait_for_snapshot().await;
    let bad = ["Bearer nope", "Bearer hs_short", "Basic Zm9vOmJhcg==", "Bearer", "bearer hs_zzzz"];
    let mut tasks = Vec::new();
    for i in 0..400 {
        let client = app.anonymous.clone();
        let url = url.clone();
        let header = if i % 7 == 0 { format!("Bearer hs_{}", "0".repeat(64)) } else { bad[i % bad.len()].to_owned() };
        tasks.push(tokio::spawn(async move {
            client.get(&url).header("authorization", header).send().await.unwrap().status().as_u16()
        }));
    }
    let good = app.client.get(&url).send().await.unwrap().status();
    let mut seen = std::collections::BTreeMap::new();
    for t in tasks {
        *seen.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    assert!(seen.keys().all(|s| *s == 401 || *s == 429), "{seen:?}");
    assert!(seen.get(&429).copied().unwrap_or(0) > 300, "failures are throttled: {seen:?}");
    assert_eq!(good, 200);
    // Still 200 for the good token after the flood (its own budget).
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn websocket_connections_per_token_are_capped() {
    let app = spawn_app_with(|s| s.websocket.max_connections_per_token = 2).await;
    let (a, _) = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws")).await.unwrap();
    let (_b, _) = tokio_tungstenite::connect_async(app.ws_url("/ws/cpu")).await.unwrap();
    match tokio_tungstenite::connect_async(app.ws_url("/ws/ram")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("third connection accepted: {:?}", other.map(|_| ())),
    }
    drop(a);
    // The freed place comes back once the server has seen the close.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(app.ws_url("/ws/ram")).await {
            assert!(tokio::time::timeout(Duration::from_secs(5), ws.next()).await.is_ok());
            ok = true;
            break;
        }
    }
    assert!(ok, "a slot was freed");
    app.stop().await;
}

#[tokio::test]
async fn cors_answers_only_listed_origins() {
    let app = spawn_app_with(|s| s.server.cors_origins = vec!["https://dash.example".to_owned()]).await;
    let preflight = |origin: &'static str| {
        app.anonymous
            .request(reqwest::Method::OPTIONS, format!("{}/api/v1/system", app.address))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight("https://dash.example").await.unwrap();
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://dash.example");
    let evil = preflight("https://evil.example").await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_never_arrives_times_out_with_408() {
    let app = spawn_app_with(|s| s.server.request_timeout_secs = 1).await;
    let token = app.token.clone();
    let port = app.port;
    let response = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "POST /api/v1/tokens HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\":"
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("application/problem+json"));
    app.stop().await;
}

#[tokio::test]
async fn metrics_need_a_token_unless_public() {
    let app = e2e::spawn_app().await;
    assert_eq!(app.anonymous.get(format!("{}/metrics", app.address)).send().await.unwrap().status(), 401);
    app.stop().await;
    let app = spawn_app_with(|s| s.metrics.public = true).await;
    assert_eq!(app.anonymous.get(format!("{}/metrics", app.address)).send().await.unwrap().status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn the_audit_log_names_who_did_what() {
    let app = e2e::spawn_app().await;
    let (id, _) = app.create_token("temp", "read", None).await;
    assert_eq!(app.client.delete(format!("{}/api/v1/tokens/{id}", app.address)).send().await.unwrap().status(), 204);
    let r = app.client.delete(format!("{}/api/v1/tokens/nope", app.address)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let log = app.get_json("/api/v1/audit").await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(log["total"], 3);
    assert_eq!(items[0]["action"], "DELETE /api/v1/tokens/{id}");
    assert_eq!((items[0]["status"].as_u64(), items[0]["outcome"].as_str()), (Some(404), Some("failure")));
    assert_eq!(items[1]["target"], format!("/api/v1/tokens/{id}"));
    assert_eq!(items[2]["action"], "POST /api/v1/tokens");
    assert_eq!(items[2]["status"], 201);
    assert!(items[2]["actor"].as_str().unwrap().starts_with("initial-admin ("));
    assert_eq!(items[2]["client_ip"], "127.0.0.1");
    assert!(items[2]["request_id"].as_str().unwrap().len() >= 32);
    let only = app.get_json("/api/v1/audit?action=POST").await;
    assert_eq!(only["total"], 1);
    let r = app.get("/api/v1/audit?per_page=101").await;
    assert_eq!(r.status(), 422);
    app.stop().await;
}

#[tokio::test]
async fn tls_is_served_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let app = spawn_app_with(|s| {
        s.server.tls_cert = cert.clone();
        s.server.tls_key = key.clone();
    })
    .await;
    // tokio's Command: the server runs on this test's runtime and must keep serving.
    let out = tokio::process::Command::new("curl")
        .args(["-sk", "--max-time", "10", &format!("https://127.0.0.1:{}/health/live", app.port)])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), r#"{"status":"ok"}"#);
    let plain = tokio::process::Command::new("curl")
        .args(["-s", "--max-time", "5", &format!("http://127.0.0.1:{}/health/live", app.port)])
        .output()
        .await
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout), r#"{"status":"ok"}"#, "no plain HTTP on a TLS port");
    app.stop().await;
}
