//! Devices and profiles through the API against the real host: the device
//! list against `ip -o link` and `/sys`, ids across rescans and restarts,
//! a disabled interface leaving the snapshots, If-Match under contention,
//! and profiles' rules.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use e2e::{TestApp, spawn_app_with, spawn_in};
use serde_json::{Value, json};

fn quiet(s: &mut homeserver::config::Settings) {
    // Device and profile tests need no container runtime.
    s.docker.enabled = false;
    s.lxc.enabled = false;
}

async fn all_devices(app: &TestApp, query: &str) -> Vec<Value> {
    let sep = if query.is_empty() { "?" } else { "&" };
    let page = app.get_json(&format!("/api/v1/devices{query}{sep}per_page=100")).await;
    assert!(page["total"].as_u64().unwrap() <= 100, "one page holds them all");
    page["items"].as_array().unwrap().clone()
}

fn interfaces_from_ip() -> BTreeSet<String> {
    let out = Command::new("ip").args(["-o", "link"]).output().expect("ip runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

#[tokio::test]
async fn the_device_list_matches_the_kernel_and_ids_survive_rescans_and_restarts() {
    let app = spawn_app_with(quiet).await;
    let devices = all_devices(&app, "").await;

    let nets: BTreeSet<String> =
        devices.iter().filter(|d| d["kind"] == "network").map(|d| d["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(nets, interfaces_from_ip(), "network devices are what `ip -o link` lists");
    for d in devices.iter().filter(|d| d["kind"] == "disk") {
        let name = d["name"].as_str().unwrap();
        let sectors: u64 = std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
            .unwrap_or_else(|_| panic!("{name} is in /sys/class/block"))
            .trim()
            .parse()
            .unwrap();
        assert_eq!(d["attributes"]["size_bytes"].as_str().map(|s| s.parse::<u64>().unwrap()), Some(sectors * 512));
        assert_eq!(d["path"], format!("/dev/{name}"));
        assert!(d["present"].as_bool().unwrap() && d["enabled"].as_bool().unwrap());
    }
    let ids: BTreeSet<String> = devices.iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), devices.len(), "ids are unique");

    let rescan = app.client.post(format!("{}/api/v1/devices/rescan", app.address)).send().await.unwrap();
    assert_eq!(rescan.status(), 200);
    let report: Value = rescan.json().await.unwrap();
    assert_eq!(report["added"], json!([]), "nothing new on a second scan: {report}");
    assert_eq!(report["removed"], json!([]), "{report}");
    let again: BTreeSet<String> =
        all_devices(&app, "").await.iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(again, ids, "same ids after a rescan");

    // Restart on the same database: same ids, first_seen kept.
    let first_seen = devices[0]["first_seen"].clone();
    let id0 = devices[0]["id"].as_str().unwrap().to_owned();
    let settings = app.settings.clone();
    let app = spawn_in(app.stop().await, settings).await;
    let after: BTreeSet<String> =
        all_devices(&app, "").await.iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(after, ids, "same ids after a restart");
    assert_eq!(app.get_json(&format!("/api/v1/devices/{id0}")).await["first_seen"], first_seen);
}

#[tokio::test]
async fn a_disabled_interface_leaves_snapshots_and_metrics_and_comes_back() {
    let app = spawn_app_with(quiet).await;
    app.wait_for_snapshot().await;
    let lo = all_devices(&app, "?kind=network")
        .await
        .into_iter()
        .find(|d| d["name"] == "lo")
        .expect("the loopback interface is a device");
    let id = lo["id"].as_str().unwrap();
    let in_snapshot = |s: &Value| s["networks"].as_array().unwrap().iter().any(|n| n["interface"] == "lo");
    assert!(in_snapshot(&app.get_json("/api/v1/system").await));

    let url = format!("{}/api/v1/devices/{id}", app.address);
    let r = app.client.patch(&url).json(&json!({"enabled": false, "alias": "loopback"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let tag = r.headers()["etag"].to_str().unwrap().to_owned();
    let patched: Value = r.json().await.unwrap();
    assert_eq!((patched["enabled"].as_bool(), patched["alias"].as_str()), (Some(false), Some("loopback")));
    assert_eq!(all_devices(&app, "?enabled=false").await.len(), 1);

    // Within one sampling interval (200 ms here), with margin for a slow box.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!in_snapshot(&app.get_json("/api/v1/system").await), "lo left the snapshot");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(!metrics.contains("interface=\"lo\""), "lo left /metrics");

    // Bad input changes nothing.
    for (body, field) in [
        (json!({"alias": "x".repeat(65)}), "alias"),
        (json!({"labels": {"": "v"}}), "labels."),
        (json!({"enabled": "yes"}), "enabled"),
    ] {
        let r = app.client.patch(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["code"], "VALIDATION_FAILED");
        assert!(problem["errors"][0]["field"].as_str().unwrap().starts_with(field), "{problem}");
    }
    let stale = app.client.patch(&url).header("if-match", "\"1\"").json(&json!({"enabled": true})).send().await;
    assert_eq!(stale.unwrap().status(), 412);
    let missing = app.client.patch(format!("{}/api/v1/devices/disk-0000000000000000", app.address));
    assert_eq!(missing.json(&json!({"enabled": true})).send().await.unwrap().status(), 404);
    assert_eq!(app.get_json(&format!("/api/v1/devices/{id}")).await["alias"], "loopback");

    let r = app.client.patch(&url).header("if-match", &tag).json(&json!({"enabled": true, "alias": null}));
    let back: Value = r.send().await.unwrap().json().await.unwrap();
    assert_eq!((back["enabled"].as_bool(), &back["alias"]), (Some(true), &Value::Null));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(in_snapshot(&app.get_json("/api/v1/system").await), "lo is back");
}

#[tokio::test]
async fn forgetting_a_present_device_brings_it_back_as_new_on_the_next_scan() {
    let app = spawn_app_with(quiet).await;
    let dev = all_devices(&app, "?kind=network").await.remove(0);
    let id = dev["id"].as_str().unwrap();
    let url = format!("{}/api/v1/devices/{id}", app.address);
    assert_eq!(app.client.delete(&url).header("if-match", "\"999\"").send().await.unwrap().status(), 412);
    assert_eq!(app.client.delete(&url).send().await.unwrap().status(), 204);
    assert_eq!(app.get(&format!("/api/v1/devices/{id}")).await.status(), 404);
    assert_eq!(app.client.delete(&url).send().await.unwrap().status(), 404);
    let report: Value =
        app.client.post(format!("{}/api/v1/devices/rescan", app.address)).send().await.unwrap().json().await.unwrap();
    assert_eq!(report["added"], json!([id]));
    assert_eq!(app.get_json(&format!("/api/v1/devices/{id}")).await["name"], dev["name"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_conflicting_patches_with_one_etag_give_one_200_and_forty_nine_412s() {
    let app = spawn_app_with(quiet).await;
    let id = all_devices(&app, "?kind=network").await[0]["id"].as_str().unwrap().to_owned();
    let url = format!("{}/api/v1/devices/{id}", app.address);
    for round in 0..5 {
        let tag = app.get(&format!("/api/v1/devices/{id}")).await.headers()["etag"].to_str().unwrap().to_owned();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                // Odd rounds: 50 different values; even rounds: the same body
                // every time, equal to the stored value from round 2 on (a
                // no-op patch is still a write, so it still conflicts).
                let body = if round % 2 == 0 { json!({"alias": "same"}) } else { json!({"alias": format!("w{i}")}) };
                let request = app.client.patch(&url).header("if-match", &tag).json(&body);
                tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
            })
            .collect();
        let mut codes = Vec::new();
        for t in tasks {
            codes.push(t.await.unwrap());
        }
        let ok = codes.iter().filter(|c| **c == 200).count();
        let failed = codes.iter().filter(|c| **c == 412).count();
        assert_eq!((ok, failed), (1, 49), "round {round}: {codes:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_default_concurrent_creation_rename_activate_and_validation() {
    let app = spawn_app_with(quiet).await;
    let list = app.get_json("/api/v1/profiles").await;
    assert_eq!(list["total"], 1, "first start creates one profile: {list}");
    assert_eq!(
        (list["items"][0]["name"].as_str(), list["items"][0]["is_default"].as_bool()),
        (Some("default"), Some(true))
    );

    // 50 concurrent creations with distinct names: 50 × 201.
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let body = json!({"name": format!("p{i:02}"), "config": {"memory_limit_bytes": 64 << 20}});
            let request = app.client.post(format!("{}/api/v1/profiles", app.address)).json(&body);
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    assert_eq!(app.get_json("/api/v1/profiles?per_page=100").await["total"], 51);

    let post = |path: &str, body: Value| app.client.post(format!("{}/api/v1/profiles{path}", app.address)).json(&body);
    // Taken, invalid, unknown device ids.
    assert_eq!(post("", json!({"name": "p00"})).send().await.unwrap().status(), 409);
    let r = post("", json!({"name": "Bad", "config": {"cpu_limit": 0, "devices": ["usb-0000000000000000"]}}));
    let problem: Value = r.send().await.unwrap().json().await.unwrap();
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["name", "config.cpu_limit", "config.devices[0]"], "{problem}");
    let dry: Value = post("/validate", json!({"name": "ok", "config": {"memory_limit_bytes": 1}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dry["valid"], false);
    assert_eq!(dry["errors"][0]["field"], "config.memory_limit_bytes");
    assert_eq!(app.get("/api/v1/profiles/ok").await.status(), 404, "validate stores nothing");

    // Activate: exactly one default.
    let r = post("/p07/activate", json!({})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let defaults: Vec<String> = app.get_json("/api/v1/profiles?per_page=100").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["is_default"] == true)
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(defaults, ["p07"]);
    // The default cannot be deleted; another can, with If-Match.
    let del = |name: &str| app.client.delete(format!("{}/api/v1/profiles/{name}", app.address));
    assert_eq!(del("p07").send().await.unwrap().status(), 409);
    assert_eq!(del("p01").header("if-match", "\"9\"").send().await.unwrap().status(), 412);
    assert_eq!(del("p01").send().await.unwrap().status(), 204);
    assert_eq!(del("p01").send().await.unwrap().status(), 404);

    // Rename keeps the default flag; the old name is gone; a taken name is 409.
    let r = post("/p07/rename", json!({"new_name": "web"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.get_json("/api/v1/profiles/web").await["is_default"], true);
    assert_eq!(app.get("/api/v1/profiles/p07").await.status(), 404);
    assert_eq!(post("/web/rename", json!({"new_name": "p02"})).send().await.unwrap().status(), 409);
    assert_eq!(post("/web/rename", json!({"new_name": "Nope!"})).send().await.unwrap().status(), 422);

    // Duplicate, then PATCH with the ETag merges settings.
    let r = post("/web/duplicate", json!({"new_name": "web2"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], "/api/v1/profiles/web2");
    let tag = r.headers()["etag"].to_str().unwrap().to_owned();
    let url = format!("{}/api/v1/profiles/web2", app.address);
    let patch = json!({"config": {"env": {"A": "1"}, "restart_policy": "always"}});
    let r = app.client.patch(&url).header("if-match", &tag).json(&patch).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["config"]["memory_limit_bytes"], 64 << 20, "kept: {p}");
    assert_eq!((p["config"]["env"]["A"].as_str(), p["config"]["restart_policy"].as_str()), (Some("1"), Some("always")));
    assert_eq!(app.client.patch(&url).header("if-match", &tag).json(&patch).send().await.unwrap().status(), 412);
    let bad = json!({"config": {"restart_policy": "sometimes"}});
    assert_eq!(app.client.put(&url).json(&bad).send().await.unwrap().status(), 422);
    assert_eq!(app.client.put(&url).json(&json!({"config": {}})).send().await.unwrap().status(), 200);
    assert_eq!(app.get_json("/api/v1/profiles/web2").await["config"]["env"], json!({}), "PUT replaced it");
    let renaming = json!({"name": "other", "config": {}});
    assert_eq!(app.client.put(&url).json(&renaming).send().await.unwrap().status(), 422, "PUT does not rename");

    // Missing profiles are 404 on every route; bad bodies are 400/415/422.
    let gone = format!("{}/api/v1/profiles/gone", app.address);
    assert_eq!(app.client.put(&gone).json(&json!({})).send().await.unwrap().status(), 404);
    assert_eq!(app.client.patch(&gone).json(&json!({})).send().await.unwrap().status(), 404);
    assert_eq!(post("/gone/duplicate", json!({"new_name": "x"})).send().await.unwrap().status(), 404);
    assert_eq!(post("/gone/rename", json!({"new_name": "x"})).send().await.unwrap().status(), 404);
    assert_eq!(post("/gone/activate", json!({})).send().await.unwrap().status(), 404);
    assert_eq!(post("/web/duplicate", json!({"new_name": "web2"})).send().await.unwrap().status(), 409);
    assert_eq!(post("/web/duplicate", json!({"new_name": "Web 3"})).send().await.unwrap().status(), 422);
    let raw = |body: &'static str, content_type: &'static str| {
        app.client.post(format!("{}/api/v1/profiles", app.address)).header("content-type", content_type).body(body)
    };
    assert_eq!(raw("{\"name\":", "application/json").send().await.unwrap().status(), 400);
    assert_eq!(raw("name=x", "application/x-www-form-urlencoded").send().await.unwrap().status(), 415);
    assert_eq!(raw("{\"name\":\"x\",\"colour\":1}", "application/json").send().await.unwrap().status(), 422);
    assert_eq!(app.get_json("/api/v1/profiles?per_page=100").await["total"], 51, "no failed write stored anything");
}
