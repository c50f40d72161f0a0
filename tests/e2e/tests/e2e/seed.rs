//! The seed-compatible routes, read by an ordinary WebSocket client.

use std::time::Duration;

use e2e::spawn_app;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::meminfo;

async fn text_frames(url: String, n: usize) -> Vec<serde_json::Value> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let msg =
            tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("frame in 5 s").unwrap().unwrap();
        if let Message::Text(t) = msg {
            out.push(serde_json::from_str(t.as_str()).unwrap());
        }
    }
    out
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn cpu_ram_and_system_streams_use_the_seed_names() {
    let app = spawn_app().await;
    app.wait_for_snapshot().await;
    let cpu = text_frames(app.ws_url("/ws/cpu"), 2).await;
    assert_eq!(keys(&cpu[1]), ["coreUsages", "logicalCores", "model", "physicalCores", "temperature", "usagePercent"]);
    let ram = text_frames(app.ws_url("/ws/ram"), 2).await;
    assert_eq!(keys(&ram[0]), ["available", "swapFree", "swapTotal", "swapUsed", "total", "usagePercent", "used"]);
    assert_eq!(ram[0]["total"].as_u64().unwrap(), meminfo("MemTotal"));

    let sys = text_frames(app.ws_url("/ws/system"), 2).await;
    assert_eq!(sys[0]["type"], "info");
    assert_eq!(
        keys(&sys[0]["systemInfo"]),
        ["osFamily", "osManufacturer", "osVersion", "processorName", "systemManufacturer", "systemModel"]
    );
    let snap = &sys[1];
    assert_eq!(keys(snap), ["containers", "cpu", "network", "ram", "storage", "system", "timestamp"]);
    assert!(snap["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    let iface = &snap["network"]["interfaces"][0];
    for k in [
        "name",
        "displayName",
        "macAddress",
        "ipv4",
        "ipv6",
        "bytesSent",
        "bytesRecv",
        "packetsSent",
        "packetsRecv",
        "speed",
        "receivedBytesPerSec",
        "transmittedBytesPerSec",
        "isUp",
    ] {
        assert!(iface.get(k).is_some(), "interface lacks {k}: {iface}");
    }
    let part = &snap["storage"]["partitions"][0];
    for k in ["mount", "name", "type", "totalSpace", "usedSpace", "availableSpace", "usagePercent"] {
        assert!(part.get(k).is_some(), "partition lacks {k}");
    }
    assert_eq!(
        keys(&snap["system"]),
        ["loadAvg1", "loadAvg15", "loadAvg5", "processCount", "threadCount", "uptimeSecs"]
    );
    app.stop().await;
}

#[tokio::test]
async fn api_info_and_api_history() {
    let app = spawn_app().await;
    let info = app.get_json("/api/info").await;
    assert_eq!(info["osFamily"], "Linux");
    app.wait_for_snapshot().await;
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let h = app.get_json(&format!("/api/history?from={}&to={now}&resolution=1s", now - 60_000)).await;
    let arr = h.as_array().unwrap();
    assert!(!arr.is_empty(), "history has snapshots");
    assert!(arr[0]["ram"]["used"].as_u64().unwrap() > 0);
    assert!(arr.windows(2).all(|w| w[0]["timestamp"].as_i64() < w[1]["timestamp"].as_i64()));
    app.stop().await;
}
