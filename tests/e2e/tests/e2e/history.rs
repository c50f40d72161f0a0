//! History through the API, and across a restart.

use std::time::Duration;

use e2e::{spawn_app, spawn_in};

#[tokio::test]
async fn samples_reach_history_and_survive_a_restart() {
    let app = spawn_app().await;
    app.wait_for_snapshot().await;
    // 200 ms sampling and 1 s flushes: a few seconds give a dozen points.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let window = format!("from={}&to={}", now - 30_000, now + 1_000);
    let h = app
        .get_json(&format!("/api/v1/system/history?metrics=cpu.usage_percent,memory.used_bytes&points=2000&{window}"))
        .await;
    assert_eq!(h["step_ms"], 200, "raw tier at the sampling interval");
    assert!(h["step_ms"].as_i64().unwrap() >= 200);
    let series = h["series"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    let mem = series.iter().find(|s| s["metric"] == "memory.used_bytes").unwrap();
    assert_eq!(mem["unit"], "bytes");
    let before = mem["points"].as_array().unwrap().len();
    assert!(before >= 5, "{h}");
    for p in mem["points"].as_array().unwrap() {
        let p = p.as_array().unwrap();
        assert_eq!(p.len(), 4);
        let (avg, min, max) = (p[1].as_f64().unwrap(), p[2].as_f64().unwrap(), p[3].as_f64().unwrap());
        assert!(min <= avg && avg <= max && max > 0.0);
    }
    let metrics = app.get_json("/api/v1/system/history/metrics").await;
    assert!(metrics["items"].as_array().unwrap().iter().any(|m| m["name"] == "disk.write_bytes_per_sec"));

    let settings = app.settings.clone();
    let dir = app.stop().await;
    let app = spawn_in(dir, settings).await;
    let h = app.get_json(&format!("/api/v1/system/history?metrics=memory.used_bytes&points=2000&{window}")).await;
    let after = h["series"][0]["points"].as_array().unwrap().len();
    assert!(after >= before, "history kept across restart: {before} then {after}");
    app.stop().await;
}
