//! Profiles applied to real containers: what `docker inspect`, the LXC
//! config and the cgroups show; references that follow a rename; a profile
//! in use that cannot be deleted; a disabled device that cannot be given.

use std::process::Command;

use e2e::{TestApp, spawn_app_with};
use serde_json::{Value, json};

use crate::containers::{DockerGuard, LxcGuard, docker, engine_ready, image, inspect, lxc_config, unique, wait_op};

/// A serial port of the registry with a device node (a VM has `ttyS0`).
async fn serial_device(app: &TestApp) -> Option<(String, String)> {
    let page = app.get_json("/api/v1/devices?kind=serial&present=true&per_page=100").await;
    let found = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"].is_string())
        .map(|d| (d["id"].as_str().unwrap().to_owned(), d["path"].as_str().unwrap().to_owned()));
    if found.is_none() {
        eprintln!("SKIPPED (partly): no serial port on this host; device pass-through is not checked");
    }
    found
}

async fn create_profile(app: &TestApp, name: &str, devices: &[String]) {
    let body = json!({
        "name": name,
        "description": "e2e",
        "config": {
            "memory_limit_bytes": 48 << 20,
            "env": {"FROM_PROFILE": "1", "OVERRIDE": "profile"},
            "devices": devices,
        }
    });
    let r = app.client.post(format!("{}/api/v1/profiles", app.address)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn a_profile_applied_to_a_docker_container_is_what_docker_sees() {
    if !engine_ready("docker", docker().arg("info")) {
        return;
    }
    let app = spawn_app_with(|s| s.lxc.enabled = false).await;
    let serial = serial_device(&app).await;
    let profile = unique("e2e-docker").to_lowercase();
    create_profile(&app, &profile, &serial.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>()).await;

    let name = unique("hs-e2e-prof");
    let _guard = DockerGuard(vec![name.clone()]);
    let body = json!({
        "name": name, "runtime": "docker", "image": image(), "start": true, "profiles": [profile],
        "config": {"env": {"OVERRIDE": "request"}, "command": ["sleep", "3600"]}
    });
    let r = app.client.post(format!("{}/api/v1/containers", app.address)).json(&body).send().await.unwrap();
    let done = wait_op(&app, r).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let id = done["result"]["container"].as_str().unwrap().to_owned();

    let c = app.get_json(&format!("/api/v1/containers/{id}")).await;
    assert_eq!(c["profiles"], json!([profile]));
    assert_eq!(c["config"]["memory_limit_bytes"], 48 << 20);
    assert_eq!(
        (c["config"]["env"]["FROM_PROFILE"].as_str(), c["config"]["env"]["OVERRIDE"].as_str()),
        (Some("1"), Some("request"))
    );

    let seen = inspect(&name).expect("docker knows the container");
    assert_eq!(seen["HostConfig"]["Memory"], 48 << 20, "docker applied the profile's limit");
    let env: Vec<&str> = seen["Config"]["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(env.contains(&"FROM_PROFILE=1") && env.contains(&"OVERRIDE=request"), "{env:?}");
    if let Some((_, path)) = &serial {
        assert_eq!(c["config"]["devices"], json!([path]), "the device id became its node");
        assert_eq!(seen["HostConfig"]["Devices"][0]["PathOnHost"], path.as_str(), "docker maps the device");
    }

    // In use: no delete; a rename moves the container's reference.
    let del = app.client.delete(format!("{}/api/v1/profiles/{profile}", app.address)).send().await.unwrap();
    assert_eq!(del.status(), 409);
    assert_eq!(del.json::<Value>().await.unwrap()["code"], "PROFILE_IN_USE");
    let renamed = format!("{profile}-renamed");
    let r = app
        .client
        .post(format!("{}/api/v1/profiles/{profile}/rename", app.address))
        .json(&json!({"new_name": renamed}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = r.json().await.unwrap();
    assert_eq!(r["used_by"], json!([id]));
    assert_eq!(app.get_json(&format!("/api/v1/containers/{id}")).await["profiles"], json!([renamed]));
    let listed = app.get_json(&format!("/api/v1/containers?profile={renamed}")).await;
    assert_eq!(listed["total"], 1);

    // A disabled device cannot be given to a new container.
    if let Some((dev_id, _)) = &serial {
        let r = app
            .client
            .patch(format!("{}/api/v1/devices/{dev_id}", app.address))
            .json(&json!({"enabled": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body = json!({"name": unique("hs-e2e-off"), "runtime": "docker", "image": image(), "profiles": [renamed]});
        let r = app.client.post(format!("{}/api/v1/containers", app.address)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 422);
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "config.devices[0]", "{problem}");
        let r = app
            .client
            .patch(format!("{}/api/v1/devices/{dev_id}", app.address))
            .json(&json!({"enabled": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Unknown profile names are field errors, nothing is created.
    let body = json!({"name": unique("hs-e2e-none"), "runtime": "docker", "image": image(), "profiles": ["nope"]});
    let r = app.client.post(format!("{}/api/v1/containers", app.address)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["errors"][0]["field"], "profiles[0]");

    let r = app.client.delete(format!("{}/api/v1/containers/{id}?force=true", app.address)).send().await.unwrap();
    assert_eq!(wait_op(&app, r).await["status"], "succeeded");
    let del = app.client.delete(format!("{}/api/v1/profiles/{renamed}", app.address)).send().await.unwrap();
    assert_eq!(del.status(), 204, "free once its container is gone");
}

#[tokio::test]
async fn a_profile_applied_to_an_lxc_container_is_in_its_config_and_cgroup() {
    if !engine_ready("lxc", Command::new("lxc-ls").arg("--version")) || !lxc_config().exists() {
        return;
    }
    let app = spawn_app_with(|s| {
        s.docker.enabled = false;
        s.lxc.config = lxc_config();
    })
    .await;
    let serial = serial_device(&app).await;
    let profile = unique("e2e-lxc").to_lowercase();
    create_profile(&app, &profile, &serial.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>()).await;
    // Make it the default: a container naming no profile gets it.
    let r = app.client.post(format!("{}/api/v1/profiles/{profile}/activate", app.address)).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let name = unique("hs-e2e-lxcp");
    let _guard = LxcGuard(vec![name.clone()]);
    let body = json!({"name": name, "runtime": "lxc", "template": "busybox", "start": true});
    let r = app.client.post(format!("{}/api/v1/containers", app.address)).json(&body).send().await.unwrap();
    let done = wait_op(&app, r).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let id = done["result"]["container"].as_str().unwrap().to_owned();
    let c = app.get_json(&format!("/api/v1/containers/{id}")).await;
    assert_eq!(c["profiles"], json!([profile]), "the default profile applied");

    let limit = Command::new("lxc-cgroup").args(["-n", &name, "memory.limit_in_bytes"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&limit.stdout).trim(), (48u64 << 20).to_string(), "lxc applied the limit");
    let lxcpath = Command::new("lxc-config").arg("lxc.lxcpath").output().unwrap();
    let config_file = format!("{}/{name}/config", String::from_utf8_lossy(&lxcpath.stdout).trim());
    let config = std::fs::read_to_string(&config_file).unwrap();
    if let Some((_, path)) = &serial {
        let meta = std::fs::metadata(path).unwrap();
        use std::os::unix::fs::MetadataExt as _;
        let (major, minor) = ((meta.rdev() >> 8) & 0xfff, (meta.rdev() & 0xff) | ((meta.rdev() >> 12) & 0xfff00));
        assert!(config.contains(&format!("devices.allow = c {major}:{minor} rwm")), "{config}");
        assert!(config.contains(&format!("lxc.mount.entry = {path} {}", path.trim_start_matches('/'))), "{config}");
        let inside = json!({"command": ["ls", path]});
        let ex: Value = app
            .client
            .post(format!("{}/api/v1/containers/{id}/exec", app.address))
            .json(&inside)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ex["exit_code"], 0, "the device node is inside: {ex}");
    }
    let env = json!({"command": ["sh", "-c", "echo $FROM_PROFILE"]});
    let ex: Value = app
        .client
        .post(format!("{}/api/v1/containers/{id}/exec", app.address))
        .json(&env)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ex["stdout"], "1\n", "{ex}");
    let r = app.client.delete(format!("{}/api/v1/containers/{id}?force=true", app.address)).send().await.unwrap();
    assert_eq!(wait_op(&app, r).await["status"], "succeeded");
}
