//! Per-container history against the real Docker engine: a container
//! burning CPU, started with the docker CLI, shows its CPU use and the
//! memory its cgroup accounts in `GET /api/v1/containers/{id}/history`
//! once the writer flushed.

use std::time::Duration;

use e2e::{TestApp, spawn_app_with};

use crate::containers::{DockerGuard, docker, engine_ready, image, unique};

/// The container's memory use as its cgroup counts it:
/// `memory.usage_in_bytes` (v1) or `memory.current` (v2), found through its
/// init process's `/proc/<pid>/cgroup`.
fn cgroup_memory_usage(pid: u64) -> u64 {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let file = if controllers.split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory{path}/memory.usage_in_bytes")
        } else if controllers.is_empty() && std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            format!("/sys/fs/cgroup{path}/memory.current")
        } else {
            continue;
        };
        return std::fs::read_to_string(&file).unwrap().trim().parse().unwrap();
    }
    panic!("no memory cgroup for pid {pid}: {cgroups}");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The container's id in homeserver once it is listed as running.
async fn listed_running(app: &TestApp, name: &str) -> String {
    for _ in 0..50 {
        let list = app.get_json(&format!("/api/v1/containers?name={name}")).await;
        if let Some(c) = list["items"].as_array().unwrap().first()
            && c["state"] == "running"
        {
            return c["id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} is not listed as running within 5 s");
}

/// `[avg, min, max]` of every point of `metric` in a history answer.
fn points(history: &serde_json::Value, metric: &str) -> Vec<[f64; 3]> {
    let series = history["series"].as_array().unwrap().iter().find(|s| s["metric"] == metric).unwrap();
    series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| [p[1].as_f64().unwrap(), p[2].as_f64().unwrap(), p[3].as_f64().unwrap()])
        .collect()
}

#[tokio::test]
async fn a_busy_container_shows_its_cpu_and_cgroup_memory_in_its_history() {
    if !engine_ready("docker", docker().arg("info")) {
        return;
    }
    let app = spawn_app_with(|s| {
        s.lxc.enabled = false;
        s.sampling.interval_ms = 250;
        s.history.flush_interval_secs = 1;
    })
    .await;
    let name = unique("hs-e2e-hist");
    let _guard = DockerGuard(vec![name.clone()]);
    let run = docker()
        .args(["run", "-d", "--name", &name, "--memory", "64m", &image(), "sh", "-c", "while :; do :; done"])
        .output()
        .unwrap();
    assert!(run.status.success(), "docker run: {}", String::from_utf8_lossy(&run.stderr));
    let id = listed_running(&app, &name).await;

    // Samples every 250 ms, flushed every second: wait for a few seconds of
    // them with CPU use in them.
    let started = now_ms();
    let query = |from: i64| {
        format!(
            "/api/v1/containers/{id}/history?metrics=cpu_percent,memory_bytes,pids,network_rx_bytes_per_sec\
             &from={from}&to={}&points=2000",
            now_ms() + 1_000
        )
    };
    let mut history = serde_json::Value::Null;
    for _ in 0..60 {
        history = app.get_json(&query(started - 10_000)).await;
        let cpu = points(&history, "cpu_percent");
        if cpu.len() >= 6 && cpu.iter().rev().take(3).all(|p| p[0] > 0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(history["step_ms"], 250, "raw tier at the sampling interval: {history}");
    assert_eq!(history["series"].as_array().unwrap().len(), 4);

    let cpu = points(&history, "cpu_percent");
    assert!(cpu.len() >= 6, "a few seconds of samples: {history}");
    let busy = cpu.iter().rev().take(3).map(|p| p[0]).fold(f64::INFINITY, f64::min);
    assert!(busy > 0.0, "a container spinning in a loop uses CPU: {cpu:?}");
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    for [avg, min, max] in &cpu {
        assert!(min <= avg && avg <= max && *max <= 100.0 * cores + 1.0, "{cpu:?}");
    }

    let pids = points(&history, "pids");
    assert!(pids.iter().all(|p| p[0] >= 1.0), "{pids:?}");

    // Memory: the newest point against what the cgroup says now. A shell
    // spinning in a loop neither allocates nor reads files, so its working
    // set (what homeserver reports: usage minus inactive file pages) and
    // the raw usage stay within a few hundred KiB of each other (equal here).
    // The newest point is up to a flush interval old, and a container that
    // just started may still be settling (slower on a loaded machine): the
    // two must meet within a few seconds, and stay apart if homeserver
    // reported something else.
    let pid = crate::containers::inspect(&name).unwrap()["State"]["Pid"].as_u64().unwrap();
    let mut seen = Vec::new();
    for _ in 0..20 {
        let memory = points(&app.get_json(&query(started - 10_000)).await, "memory_bytes");
        let usage = cgroup_memory_usage(pid) as f64;
        let latest = memory.last().unwrap()[0];
        assert!(latest > 0.0, "{memory:?}");
        seen.push((latest, usage));
        if (latest - usage).abs() <= (usage * 0.1).max(256.0 * 1024.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (latest, usage) = *seen.last().unwrap();
    println!("cpu_percent (lowest of the last 3 points) {busy:.1}, memory_bytes {latest} vs cgroup usage {usage}");
    let tolerance = (usage * 0.1).max(256.0 * 1024.0);
    assert!((latest - usage).abs() <= tolerance, "history vs cgroup (±{tolerance}), newest last: {seen:?}");

    // Rates come from consecutive samples: never negative, and no value on
    // the container's first sample, so at most one sample short of the gauges.
    let rx = points(&history, "network_rx_bytes_per_sec");
    let memory = points(&history, "memory_bytes");
    assert!(rx.iter().all(|p| p[1] >= 0.0), "{rx:?}");
    assert!(rx.len() + 1 >= memory.len(), "rx {} points, memory {}", rx.len(), memory.len());

    // Errors on the real server: an unknown id and a host metric name.
    let r = app.get("/api/v1/containers/00000000-0000-0000-0000-000000000000/history?metrics=pids").await;
    assert_eq!(r.status(), 404);
    let r = app.get(&format!("/api/v1/containers/{id}/history?metrics=cpu.usage_percent")).await;
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "metrics", "{body}");
    app.stop().await;
}
