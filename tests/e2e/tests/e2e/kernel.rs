//! The live numbers against the kernel's own accounting.

use e2e::spawn_app;

use crate::meminfo;

#[tokio::test]
async fn snapshot_matches_proc_and_statvfs() {
    let app = spawn_app().await;
    let s = app.wait_for_snapshot().await;

    assert_eq!(s["memory"]["total_bytes"].as_u64().unwrap(), meminfo("MemTotal"));
    let used = s["memory"]["used_bytes"].as_u64().unwrap() as i64;
    let kernel_used = (meminfo("MemTotal") - meminfo("MemAvailable")) as i64;
    assert!((used - kernel_used).abs() < 256 << 20, "used {used} vs kernel {kernel_used}");
    assert_eq!(s["memory"]["swap_total_bytes"].as_u64().unwrap(), meminfo("SwapTotal"));

    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(s["cpu"]["logical_cores"].as_u64().unwrap(), cores);
    assert_eq!(s["cpu"]["per_core_percent"].as_array().unwrap().len() as u64, cores);
    let usage = s["cpu"]["usage_percent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&usage));

    let uptime: f64 =
        std::fs::read_to_string("/proc/uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap();
    let reported = s["system"]["uptime_secs"].as_f64().unwrap();
    assert!((uptime - reported).abs() < 3.0, "uptime {reported} vs {uptime}");

    let root = s["disks"].as_array().unwrap().iter().find(|d| d["mount_point"] == "/").expect("root fs listed");
    let out = std::process::Command::new("df").args(["-B1", "--output=size,avail", "/"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let nums: Vec<u64> = text.lines().nth(1).unwrap().split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert_eq!(root["total_bytes"].as_u64().unwrap(), nums[0]);
    let avail = root["available_bytes"].as_u64().unwrap() as i64;
    assert!((avail - nums[1] as i64).abs() < 64 << 20, "avail {avail} vs df {}", nums[1]);

    let lo = s["networks"].as_array().unwrap().iter().find(|n| n["interface"] == "lo").expect("lo listed");
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap();
    let lo_line = dev.lines().find(|l| l.trim_start().starts_with("lo:")).unwrap();
    let kernel_rx: u64 = lo_line.split(':').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    // The kernel's counter only grows; the snapshot was taken a moment before.
    assert!(lo["rx_bytes_total"].as_u64().unwrap() <= kernel_rx);
    assert!(kernel_rx - lo["rx_bytes_total"].as_u64().unwrap() < 64 << 20);

    let info = app.get_json("/api/v1/system/info").await;
    assert_eq!(info["memory_total_bytes"].as_u64().unwrap(), meminfo("MemTotal"));
    assert_eq!(info["logical_cores"].as_u64().unwrap(), cores);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(info["kernel_version"], release.trim());
    assert!(info["boot_time"].as_str().unwrap().ends_with('Z'));
    app.stop().await;
}

#[tokio::test]
async fn snapshots_are_fresh_and_advance() {
    let app = spawn_app().await;
    let first = app.wait_for_snapshot().await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let second = app.get_json("/api/v1/system").await;
    assert_ne!(first["timestamp"], second["timestamp"], "the sampler keeps sampling");
    assert_eq!(second["containers"], serde_json::json!([]));
    app.stop().await;
}
