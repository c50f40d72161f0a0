//! Containers through the API against the real engines: what the API does,
//! `docker inspect` and `lxc-info` see.

use std::process::Command;
use std::time::Duration;

use e2e::{TestApp, spawn_app_with};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame on `ws` that is not a snapshot, as JSON.
async fn next_frame(ws: &mut Ws) -> serde_json::Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if v["topic"] != "snapshots" {
                return v;
            }
        }
    }
}

/// Follows `container_logs:{id}` until `lines` lines came; checks every frame's shape.
async fn follow_lines(ws: &mut Ws, id: &str, lines: usize) -> Vec<serde_json::Value> {
    let topic = format!("container_logs:{id}");
    let op = serde_json::json!({"op": "subscribe", "topics": [topic], "tail": 0});
    ws.send(Message::text(op.to_string())).await.unwrap();
    let ok = next_frame(ws).await;
    assert_eq!(
        (ok["topic"].as_str(), ok["data"]["topics"][0].as_str()),
        (Some("subscribed"), Some(topic.as_str())),
        "{ok}"
    );
    let mut got = Vec::new();
    while got.len() < lines {
        let f = next_frame(ws).await;
        assert_eq!(f["topic"], topic.as_str(), "{f}");
        assert_eq!(f["seq"].as_u64(), Some(got.len() as u64 + 1), "seq counts from 1: {f}");
        got.push(f["data"].clone());
    }
    got
}

/// The engine is reachable, else a visible skip (or a failure in CI).
pub(crate) fn engine_ready(name: &str, probe: &mut Command) -> bool {
    let ok = probe.output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("HOMESERVER_REQUIRE_ENGINES").as_deref() != Ok("1"),
            "{name} is required (HOMESERVER_REQUIRE_ENGINES=1) but not available: run scripts/engines-up"
        );
        eprintln!("SKIPPED: {name} not available (run scripts/engines-up; HOMESERVER_REQUIRE_ENGINES=1 fails instead)");
    }
    ok
}

pub(crate) fn docker() -> Command {
    // Debian's client matches Debian's engine.
    let bin = if std::path::Path::new("/usr/bin/docker").exists() { "/usr/bin/docker" } else { "docker" };
    Command::new(bin)
}

pub(crate) fn image() -> String {
    std::env::var("HOMESERVER_TEST_DOCKER_IMAGE").unwrap_or_else(|_| "homeserver-test/busybox:latest".to_owned())
}

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid_like()[..8])
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:016x}", t ^ u128::from(std::process::id()) << 32)
}

/// Force-removes Docker containers by name when the test ends, pass or fail.
pub(crate) struct DockerGuard(pub(crate) Vec<String>);

impl Drop for DockerGuard {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = docker().args(["rm", "-f", name]).output();
        }
    }
}

pub(crate) async fn wait_op(app: &TestApp, response: reqwest::Response) -> serde_json::Value {
    assert_eq!(response.status(), 202, "operation accepted");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let op: serde_json::Value = response.json().await.unwrap();
    assert_eq!(location, format!("/api/v1/operations/{}", op["id"].as_str().unwrap()));
    let done = app.get_json(&format!("{location}/wait?timeout_secs=25")).await;
    assert!(["succeeded", "failed"].contains(&done["status"].as_str().unwrap()), "finished: {done}");
    done
}

pub(crate) fn inspect(name: &str) -> Option<serde_json::Value> {
    let out = docker().args(["inspect", name]).output().unwrap();
    out.status.success().then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone())
}

#[tokio::test]
async fn docker_containers_through_the_api_are_what_docker_sees() {
    if !engine_ready("docker", docker().arg("info")) {
        return;
    }
    let app = spawn_app_with(|s| s.lxc.enabled = false).await;
    let name = unique("hs-e2e");
    let _guard = DockerGuard(vec![name.clone()]);
    let body = serde_json::json!({
        "name": name, "runtime": "docker", "image": image(), "start": true,
        "config": {
            "memory_limit_bytes": 64 << 20, "cpu_limit": 0.5, "pids_limit": 64,
            "env": {"HELLO": "world"}, "labels": {"team": "e2e"},
            "command": ["sh", "-c", "echo started; trap 'exit 0' TERM; while :; do sleep 1; done"],
        }
    });
    let r = app.client.post(format!("{}/api/v1/containers", app.address)).json(&body).send().await.unwrap();
    let op = wait_op(&app, r).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    let id = op["result"]["container"].as_str().unwrap().to_owned();

    let seen = inspect(&name).expect("docker knows the container");
    assert_eq!(seen["HostConfig"]["Memory"], 64 << 20);
    assert_eq!(seen["HostConfig"]["NanoCpus"], 500_000_000);
    assert_eq!(seen["HostConfig"]["PidsLimit"], 64);
    assert!(seen["Config"]["Env"].as_array().unwrap().iter().any(|e| e == "HELLO=world"));
    assert_eq!(seen["Config"]["Labels"]["team"], "e2e");
    assert_eq!(seen["State"]["Running"], true);

    let c = app.get_json(&format!("/api/v1/containers/{id}")).await;
    assert_eq!(
        (c["state"].as_str(), c["managed"].as_bool(), c["runtime"].as_str()),
        (Some("running"), Some(true), Some("docker"))
    );
    assert_eq!(c["runtime_id"], seen["Id"]);

    let r = app
        .client
        .post(format!("{}/api/v1/containers/{id}/exec", app.address))
        .json(&serde_json::json!({"command": ["sh", "-c", "echo $HELLO; echo oops >&2; exit 3"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ex: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (ex["stdout"].as_str(), ex["stderr"].as_str(), ex["exit_code"].as_i64()),
        (Some("world\n"), Some("oops\n"), Some(3))
    );

    let logs = app.get_json(&format!("/api/v1/containers/{id}/logs?tail=10")).await;
    assert!(
        logs["lines"].as_array().unwrap().iter().any(|l| l["line"] == "started" && l["stream"] == "stdout"),
        "{logs}"
    );

    let stats = app.get_json(&format!("/api/v1/containers/{id}/stats")).await;
    assert!(stats["memory_bytes"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["memory_limit_bytes"], 64 << 20);

    // The snapshot carries it too, within a sampling interval or two.
    let mut in_snapshot = false;
    for _ in 0..20 {
        let s = app.get_json("/api/v1/system").await;
        if s["containers"].as_array().unwrap().iter().any(|c| c["id"] == id.as_str() && c["pids"].as_u64() >= Some(1)) {
            in_snapshot = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(in_snapshot, "the container's figures reach the snapshot");

    // Delete without force while running: refused.
    let r = app.client.delete(format!("{}/api/v1/containers/{id}", app.address)).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["code"], "CONTAINER_RUNNING");

    let r =
        app.client.post(format!("{}/api/v1/containers/{id}/stop?timeout_secs=5", app.address)).send().await.unwrap();
    assert_eq!(wait_op(&app, r).await["status"], "succeeded");
    assert_eq!(inspect(&name).unwrap()["State"]["Running"], false, "really stopped");
    assert_eq!(app.get_json(&format!("/api/v1/containers/{id}")).await["state"], "stopped");

    let r = app
        .client
        .post(format!("{}/api/v1/containers/{id}/exec", app.address))
        .json(&serde_json::json!({"command": ["true"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "exec in a stopped container");

    let r = app.client.delete(format!("{}/api/v1/containers/{id}", app.address)).send().await.unwrap();
    assert_eq!(wait_op(&app, r).await["status"], "succeeded");
    assert!(inspect(&name).is_none(), "really removed");
    assert_eq!(app.get(&format!("/api/v1/containers/{id}")).await.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn outside_containers_appear_unmanaged_with_stable_ids_and_bad_images_fail_clearly() {
    if !engine_ready("docker", docker().arg("info")) {
        return;
    }
    let app = spawn_app_with(|s| s.lxc.enabled = false).await;
    let outside = unique("hs-e2e-out");
    let _guard = DockerGuard(vec![outside.clone()]);
    assert!(docker().args(["create", "--name", &outside, &image(), "true"]).output().unwrap().status.success());
    let mut found = None;
    for _ in 0..20 {
        let list = app.get_json(&format!("/api/v1/containers?name={outside}")).await;
        if let Some(c) = list["items"].as_array().unwrap().first() {
            found = Some(c.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = found.expect("the outside container is listed within 2 s");
    assert_eq!((c["managed"].as_bool(), c["state"].as_str()), (Some(false), Some("created")));
    let again = app.get_json(&format!("/api/v1/containers?name={outside}")).await;
    assert_eq!(again["items"][0]["id"], c["id"], "the id is stable");

    let r = app
        .client
        .post(format!("{}/api/v1/containers", app.address))
        .json(&serde_json::json!({"name": unique("hs-e2e-bad"), "runtime": "docker", "image": "homeserver-test/does-not-exist:1"}))
        .send()
        .await
        .unwrap();
    let op = wait_op(&app, r).await;
    assert_eq!(op["status"], "failed");
    assert_eq!(op["error"]["code"], "SOURCE_NOT_FOUND", "{op}");
    assert_eq!(app.get("/health/live").await.status(), 200, "the API stays healthy");

    // Bulk: one real id and one unknown id, a result for each.
    let id = c["id"].as_str().unwrap();
    let r = app
        .client
        .post(format!("{}/api/v1/containers/bulk", app.address))
        .json(&serde_json::json!({"action": "delete", "ids": [id, "no-such-id"], "max_parallel": 2}))
        .send()
        .await
        .unwrap();
    let op = wait_op(&app, r).await;
    let items = op["result"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!((items[0]["id"].as_str(), items[0]["status"].as_str()), (Some(id), Some("succeeded")));
    assert_eq!(items[1]["status"], "failed");
    assert_eq!(items[1]["error"]["code"], "NOT_FOUND");
    assert!(inspect(&outside).is_none(), "bulk delete really removed it");
    app.stop().await;
}

/// Waits until `/health/ready` says Docker's events are `connected`.
async fn docker_events_connected(app: &TestApp) {
    for _ in 0..100 {
        let ready: serde_json::Value = app.get("/health/ready").await.json().await.unwrap();
        if ready["checks"]["docker"]["events"] == "connected" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("docker events not connected within 10 s");
}

/// Polls the list until `name`'s entry satisfies `want` (`None`: absent);
/// how long it took.
async fn listed_within(
    app: &TestApp,
    name: &str,
    limit: Duration,
    want: impl Fn(Option<&serde_json::Value>) -> bool,
) -> Duration {
    let t0 = std::time::Instant::now();
    loop {
        let list = app.get_json(&format!("/api/v1/containers?runtime=docker&name={name}")).await;
        if want(list["items"].as_array().unwrap().iter().find(|c| c["name"] == name)) {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "{name}: not as expected within {limit:?}: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn docker_events_show_outside_changes_within_two_seconds_without_polling() {
    if !engine_ready("docker", docker().arg("info")) {
        return;
    }
    // A minute between collector passes: only Docker's events can explain
    // a change seen within 2 s, since lists reuse the last read while the
    // event stream is connected.
    let app = spawn_app_with(|s| {
        s.lxc.enabled = false;
        s.sampling.interval_ms = 60_000;
    })
    .await;
    docker_events_connected(&app).await;
    let name = unique("hs-e2e-ev");
    let _guard = DockerGuard(vec![name.clone()]);
    // Prime the reusable list: without events it would stay as it is now.
    listed_within(&app, &name, Duration::from_secs(2), |c| c.is_none()).await;

    let limit = Duration::from_secs(2);
    assert!(docker().args(["create", "--name", &name, &image(), "sleep", "3600"]).output().unwrap().status.success());
    let created = listed_within(&app, &name, limit, |c| c.is_some_and(|c| c["state"] == "created")).await;
    let id = app.get_json(&format!("/api/v1/containers?name={name}")).await["items"][0]["id"].clone();
    assert!(docker().args(["start", &name]).output().unwrap().status.success());
    let started = listed_within(&app, &name, limit, |c| c.is_some_and(|c| c["state"] == "running")).await;
    assert!(docker().args(["stop", "-t", "0", &name]).output().unwrap().status.success());
    let stopped = listed_within(&app, &name, limit, |c| c.is_some_and(|c| c["state"] == "stopped")).await;
    let same = app.get_json(&format!("/api/v1/containers?name={name}")).await;
    assert_eq!(same["items"][0]["id"], id, "the id stays across outside changes");
    assert!(docker().args(["rm", &name]).output().unwrap().status.success());
    let removed = listed_within(&app, &name, limit, |c| c.is_none()).await;
    eprintln!("outside changes seen after: create {created:?}, start {started:?}, stop {stopped:?}, rm {removed:?}");
    let ready: serde_json::Value = app.get("/health/ready").await.json().await.unwrap();
    assert_eq!(ready["checks"]["docker"]["events"], "connected");
    app.stop().await;
}

async fn patch(app: &TestApp, id: &str, if_match: Option<&str>, body: serde_json::Value) -> reqwest::Response {
    let mut req = app.client.patch(format!("{}/api/v1/containers/{id}", app.address)).json(&body);
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn patching_a_docker_container_changes_what_docker_applies() {
    if !engine_ready("docker", docker().arg("info")) {
        return;
    }
    let app = spawn_app_with(|s| s.lxc.enabled = false).await;
    let name = unique("hs-e2e-patch");
    let _guard = DockerGuard(vec![name.clone()]);
    let body = serde_json::json!({
        "name": name, "runtime": "docker", "image": image(), "start": true,
        "config": {"memory_limit_bytes": 64 << 20, "command": ["sleep", "3600"]}
    });
    let r = app.client.post(format!("{}/api/v1/containers", app.address)).json(&body).send().await.unwrap();
    let op = wait_op(&app, r).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    let id = op["result"]["container"].as_str().unwrap().to_owned();
    let r = app.get(&format!("/api/v1/containers/{id}")).await;
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();

    let change = serde_json::json!({"config": {
        "memory_limit_bytes": 128 << 20, "cpu_limit": 0.5, "pids_limit": 100,
        "restart_policy": "unless-stopped", "labels": {"tier": "gold"}
    }});
    // Make sure the ETag moves even within the millisecond it was made in.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let r = patch(&app, &id, Some(&etag), change.clone()).await;
    assert_eq!(r.status(), 200);
    let new_etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let c: serde_json::Value = r.json().await.unwrap();
    assert_eq!(c["config"]["memory_limit_bytes"], 128 << 20);
    assert_eq!(c["config"]["labels"]["tier"], "gold");
    assert_eq!(c["state"], "running");
    let seen = inspect(&name).unwrap();
    assert_eq!(seen["HostConfig"]["Memory"], 128 << 20, "docker inspect sees the new memory limit");
    assert_eq!(seen["HostConfig"]["NanoCpus"], 500_000_000);
    assert_eq!(seen["HostConfig"]["PidsLimit"], 100);
    assert_eq!(seen["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    assert_eq!(app.get(&format!("/api/v1/containers/{id}")).await.headers()["etag"], new_etag.as_str());
    let listed = app.get_json("/api/v1/containers?label=tier=gold").await;
    assert_eq!(listed["items"][0]["id"], id.as_str(), "labels homeserver keeps filter the list");

    // The old ETag no longer matches; nothing changes.
    let r = patch(&app, &id, Some(&etag), serde_json::json!({"config": {"pids_limit": 7}})).await;
    assert_eq!(r.status(), 412);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], "PRECONDITION_FAILED");
    assert_eq!(inspect(&name).unwrap()["HostConfig"]["PidsLimit"], 100);
    // Concurrent PATCHes with one ETag: exactly one wins, and Docker holds its value.
    let patches = (0..10).map(|i| {
        let (app, id, tag) = (&app, &id, &new_etag);
        async move {
            let r = patch(app, id, Some(tag), serde_json::json!({"config": {"pids_limit": 200 + i}})).await;
            (r.status().as_u16(), 200 + i)
        }
    });
    let answers = futures_util::future::join_all(patches).await;
    let won: Vec<_> = answers.iter().filter(|(status, _)| *status == 200).collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|(status, _)| *status == 412).count(), 9, "{answers:?}");
    assert_eq!(inspect(&name).unwrap()["HostConfig"]["PidsLimit"], won[0].1, "the winner's value");
    // What docker cannot change on an existing container: 422 naming it.
    let r =
        patch(&app, &id, None, serde_json::json!({"config": {"memory_limit_bytes": null, "env": {"A": "b"}}})).await;
    assert_eq!(r.status(), 422);
    let b: serde_json::Value = r.json().await.unwrap();
    let mut fields: Vec<_> = b["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["config.env", "config.memory_limit_bytes"], "{b}");
    assert_eq!(patch(&app, "no-such-id", None, change).await.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn the_websocket_follows_a_docker_containers_log_as_it_prints() {
    if !engine_ready("docker", docker().arg("info")) {
        return;
    }
    let app = spawn_app_with(|s| s.lxc.enabled = false).await;
    let name = unique("hs-e2e-logs");
    let _guard = DockerGuard(vec![name.clone()]);
    let script = "i=0; while :; do i=$((i+1)); echo line-$i; echo warn-$i >&2; sleep 0.2; done";
    assert!(
        docker().args(["run", "-d", "--name", &name, &image(), "sh", "-c", script]).output().unwrap().status.success()
    );
    listed_within(&app, &name, Duration::from_secs(2), |c| c.is_some()).await;
    let id =
        app.get_json(&format!("/api/v1/containers?name={name}")).await["items"][0]["id"].as_str().unwrap().to_owned();

    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws")).await.unwrap();
    let t0 = std::time::Instant::now();
    let lines = follow_lines(&mut ws, &id, 8).await;
    assert!(t0.elapsed() >= Duration::from_millis(400), "lines came as printed, not a dump of old ones");
    let out: Vec<u64> = lines
        .iter()
        .filter(|l| l["stream"] == "stdout")
        .map(|l| l["line"].as_str().unwrap().strip_prefix("line-").unwrap().parse().unwrap())
        .collect();
    assert!(out.windows(2).all(|w| w[1] == w[0] + 1), "consecutive stdout lines: {lines:?}");
    assert!(lines.iter().any(|l| l["stream"] == "stderr" && l["line"].as_str().unwrap().starts_with("warn-")));
    for l in &lines {
        let ts = l["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.contains('T'), "{l}");
    }

    // Unsubscribing stops the flow.
    let topic = format!("container_logs:{id}");
    ws.send(Message::text(serde_json::json!({"op": "unsubscribe", "topics": [topic]}).to_string())).await.unwrap();
    loop {
        let f = next_frame(&mut ws).await;
        if f["topic"] == "unsubscribed" {
            break;
        }
        assert_eq!(f["topic"], topic.as_str(), "only frames already queued: {f}");
    }
    let quiet = tokio::time::timeout(Duration::from_millis(800), next_frame(&mut ws)).await;
    assert!(quiet.is_err(), "no more log frames after unsubscribe: {quiet:?}");

    // An unknown container: an error frame naming the topic; the socket stays open.
    ws.send(Message::text(r#"{"op":"subscribe","topics":["container_logs:no-such-id"]}"#)).await.unwrap();
    let e = next_frame(&mut ws).await;
    assert_eq!((e["topic"].as_str(), e["data"]["code"].as_str()), (Some("error"), Some("NOT_FOUND")), "{e}");
    assert_eq!(e["data"]["topic"], "container_logs:no-such-id");

    // Stopping the container ends its log: `unsubscribed` with a reason.
    let (mut ws2, _) = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws")).await.unwrap();
    follow_lines(&mut ws2, &id, 1).await;
    assert!(docker().args(["kill", &name]).output().unwrap().status.success());
    let ended = loop {
        let f = next_frame(&mut ws2).await;
        if f["topic"] != topic.as_str() {
            break f;
        }
    };
    assert_eq!(ended["topic"], "unsubscribed", "{ended}");
    assert!(ended["data"]["reason"].as_str().is_some());
    app.stop().await;
}

pub(crate) fn lxc_config() -> std::path::PathBuf {
    std::env::var("HOMESERVER_TEST_LXC_CONFIG").unwrap_or_else(|_| "/etc/homeserver-test/lxc.conf".to_owned()).into()
}

/// Destroys LXC containers by name when the test ends.
pub(crate) struct LxcGuard(pub(crate) Vec<String>);

impl Drop for LxcGuard {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("lxc-destroy").args(["-f", "-n", name]).output();
        }
    }
}

pub(crate) fn lxc_state(name: &str) -> Option<String> {
    let out = Command::new("lxc-info").args(["-n", name, "-s", "-H"]).output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test]
async fn lxc_containers_through_the_api_are_what_lxc_sees() {
    if !engine_ready("lxc", Command::new("lxc-ls").arg("--version")) || !lxc_config().exists() {
        if !lxc_config().exists() {
            assert!(
                std::env::var("HOMESERVER_REQUIRE_ENGINES").as_deref() != Ok("1"),
                "LXC test config {} missing: run scripts/engines-up",
                lxc_config().display()
            );
            eprintln!("SKIPPED: {} missing (run scripts/engines-up)", lxc_config().display());
        }
        return;
    }
    let app = spawn_app_with(|s| {
        s.docker.enabled = false;
        s.lxc.config = lxc_config();
    })
    .await;
    let name = unique("hs-e2e-lxc");
    let _guard = LxcGuard(vec![name.clone()]);
    let body = serde_json::json!({
        "name": name, "runtime": "lxc", "template": "busybox", "start": true,
        "config": {"memory_limit_bytes": 64 << 20, "env": {"HELLO": "lxc"},
                   "command": ["sh", "-c", "trap 'exit 0' TERM PWR; i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.2; done"]}
    });
    let r = app.client.post(format!("{}/api/v1/containers", app.address)).json(&body).send().await.unwrap();
    let op = wait_op(&app, r).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    let id = op["result"]["container"].as_str().unwrap().to_owned();
    assert_eq!(lxc_state(&name).as_deref(), Some("RUNNING"));
    let limit = Command::new("lxc-cgroup").args(["-n", &name, "memory.limit_in_bytes"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&limit.stdout).trim(), (64u64 << 20).to_string(), "lxc applied the limit");

    let c = app.get_json(&format!("/api/v1/containers/{id}")).await;
    assert_eq!(
        (c["state"].as_str(), c["runtime"].as_str(), c["template"].as_str()),
        (Some("running"), Some("lxc"), Some("busybox"))
    );
    let r = app
        .client
        .post(format!("{}/api/v1/containers/{id}/exec", app.address))
        .json(&serde_json::json!({"command": ["sh", "-c", "echo $HELLO; exit 4"]}))
        .send()
        .await
        .unwrap();
    let ex: serde_json::Value = r.json().await.unwrap();
    assert_eq!((ex["stdout"].as_str(), ex["exit_code"].as_i64()), (Some("lxc\n"), Some(4)), "{ex}");

    // The console log, followed over the WebSocket.
    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws")).await.unwrap();
    let lines = follow_lines(&mut ws, &id, 3).await;
    let ticks: Vec<u64> = lines
        .iter()
        .map(|l| {
            assert_eq!((l["stream"].as_str(), l["timestamp"].as_str()), (Some("console"), None), "{l}");
            l["line"].as_str().unwrap().strip_prefix("tick-").unwrap().parse().unwrap()
        })
        .collect();
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
    drop(ws);

    // A new memory limit reaches the running container's cgroup and the config.
    let etag = app.get(&format!("/api/v1/containers/{id}")).await.headers()["etag"].to_str().unwrap().to_owned();
    let r = patch(
        &app,
        &id,
        Some(&etag),
        serde_json::json!({"config": {"memory_limit_bytes": 96 << 20, "pids_limit": null}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let c: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (c["config"]["memory_limit_bytes"].as_u64(), c["config"]["pids_limit"].as_u64()),
        (Some(96 << 20), None)
    );
    let limit = Command::new("lxc-cgroup").args(["-n", &name, "memory.limit_in_bytes"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&limit.stdout).trim(),
        (96u64 << 20).to_string(),
        "lxc-cgroup sees the new limit"
    );
    let config = std::fs::read_to_string(format!("/var/lib/lxc/{name}/config")).unwrap();
    assert!(config.contains(&format!("lxc.cgroup.memory.limit_in_bytes = {}", 96u64 << 20)), "{config}");
    assert_eq!(patch(&app, &id, Some(&etag), serde_json::json!({"config": {}})).await.status(), 412);

    let r =
        app.client.post(format!("{}/api/v1/containers/{id}/stop?timeout_secs=5", app.address)).send().await.unwrap();
    assert_eq!(wait_op(&app, r).await["status"], "succeeded");
    assert_eq!(lxc_state(&name).as_deref(), Some("STOPPED"), "really stopped");
    let r = app.client.delete(format!("{}/api/v1/containers/{id}", app.address)).send().await.unwrap();
    assert_eq!(wait_op(&app, r).await["status"], "succeeded");
    assert_eq!(lxc_state(&name), None, "really destroyed");
    app.stop().await;
}
