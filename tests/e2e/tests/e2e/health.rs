use e2e::spawn_app;

#[tokio::test]
async fn live_ready_and_version_answer_without_setup() {
    let app = spawn_app().await;
    assert_eq!(app.get_json("/health/live").await, serde_json::json!({"status": "ok"}));
    app.wait_for_snapshot().await;
    let ready = app.get_json("/health/ready").await;
    // Container engines are optional: without them the service is degraded, still 200.
    let engines_up = ["docker", "lxc"].iter().all(|k| ready["checks"][k]["status"] != "unavailable");
    assert_eq!(ready["status"], if engines_up { "ready" } else { "degraded" }, "{ready}");
    assert_eq!(ready["checks"]["database"]["status"], "ok");
    assert_eq!(ready["checks"]["sampler"]["status"], "ok");
    for key in ["docker", "lxc"] {
        assert!(ready["checks"][key]["status"].is_string());
    }
    let v = app.get_json("/version").await;
    assert_eq!(v["name"], "homeserver");
    assert_eq!(v["api_version"], "v1");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["git_sha"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(v["build_time"].as_str().unwrap().ends_with('Z'));
    app.stop().await;
}
