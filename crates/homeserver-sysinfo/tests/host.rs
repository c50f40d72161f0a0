//! Integration tests against the real machine: every figure is compared with
//! an independent reading of the kernel (or `df`) taken around the sample.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers outside #[test] fns panic on a broken host")]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use homeserver_domain::{Snapshot, SnapshotSource, UnixMillis};
use homeserver_sysinfo::{SourceConfig, SysinfoSource};

const MIB: u64 = 1024 * 1024;

fn source() -> SysinfoSource {
    SysinfoSource::new(SourceConfig::default()).expect("the host's /proc is readable")
}

async fn sample(source: &SysinfoSource) -> Snapshot {
    source.sample(UnixMillis(0)).await.expect("sample")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn meminfo_bytes(key: &str) -> u64 {
    let text = read("/proc/meminfo");
    let line = text.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap_or_else(|| panic!("{key} missing"));
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn lo_counters() -> (u64, u64) {
    let text = read("/proc/net/dev");
    let line = text.lines().find(|l| l.trim_start().starts_with("lo:")).expect("lo in /proc/net/dev");
    let fields: Vec<u64> = line.split_once(':').unwrap().1.split_whitespace().map(|f| f.parse().unwrap()).collect();
    (fields[0], fields[8])
}

fn stat_core_lines() -> usize {
    read("/proc/stat")
        .lines()
        .filter(|l| l.strip_prefix("cpu").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit())))
        .count()
}

fn numeric_proc_dirs() -> u64 {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .count() as u64
}

fn within(value: u64, lo: u64, hi: u64, tolerance: u64) -> bool {
    value + tolerance >= lo && value <= hi + tolerance
}

#[tokio::test]
async fn memory_matches_meminfo() {
    let source = source();
    let before = meminfo_bytes("MemAvailable");
    let s = sample(&source).await;
    let after = meminfo_bytes("MemAvailable");

    assert_eq!(s.memory.total_bytes, meminfo_bytes("MemTotal"));
    let (lo, hi) = (before.min(after), before.max(after));
    assert!(
        within(s.memory.available_bytes, lo, hi, 32 * MIB),
        "available {} not near {lo}..{hi}",
        s.memory.available_bytes
    );
    assert_eq!(s.memory.used_bytes, s.memory.total_bytes - s.memory.available_bytes);
    let expected_pct = s.memory.used_bytes as f64 / s.memory.total_bytes as f64 * 100.0;
    assert!((s.memory.usage_percent - expected_pct).abs() < 1e-9);
    let swap_total = meminfo_bytes("SwapTotal");
    assert_eq!(s.memory.swap_total_bytes, swap_total);
    assert!(s.memory.swap_used_bytes <= swap_total);
}

/// `df -B1 --output=size,used,avail,pcent /` → (size, used, avail, pcent).
fn df_root() -> (u64, u64, u64, f64) {
    let out = Command::new("df").args(["-B1", "--output=size,used,avail,pcent", "/"]).output().expect("run df");
    assert!(out.status.success(), "df failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = text.lines().nth(1).expect("df data line").split_whitespace().collect();
    let pcent = fields[3].trim_end_matches('%').parse().unwrap();
    (fields[0].parse().unwrap(), fields[1].parse().unwrap(), fields[2].parse().unwrap(), pcent)
}

#[tokio::test]
async fn root_file_system_matches_df() {
    let source = source();
    let (size, used_before, avail_before, _) = df_root();
    let s = sample(&source).await;
    let (_, used_after, avail_after, pcent) = df_root();

    let root = s.disks.iter().find(|d| d.mount_point == "/").expect("the root file system is listed");
    assert_eq!(root.total_bytes, size);
    let tol = 64 * MIB;
    let (lo, hi) = (avail_before.min(avail_after), avail_before.max(avail_after));
    assert!(within(root.available_bytes, lo, hi, tol), "avail {} not near {lo}..{hi}", root.available_bytes);
    let (lo, hi) = (used_before.min(used_after), used_before.max(used_after));
    assert!(within(root.used_bytes, lo, hi, tol), "used {} not near {lo}..{hi}", root.used_bytes);
    // df rounds the percentage up.
    assert!((root.usage_percent.ceil() - pcent).abs() <= 1.0, "{} vs df {pcent}%", root.usage_percent);
    assert!(!root.file_system.is_empty() && !root.name.is_empty());
}

#[tokio::test]
async fn disks_are_real_file_systems_listed_once() {
    let source = source();
    let s = sample(&source).await;
    let pseudo = ["proc", "sysfs", "tmpfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "squashfs", "mqueue"];
    for d in &s.disks {
        assert!(!pseudo.contains(&d.file_system.as_str()), "pseudo fs listed: {d:?}");
        assert!(d.total_bytes > 0 || d.mount_point == "/", "{d:?}");
        assert!((0.0..=100.0).contains(&d.usage_percent), "{d:?}");
    }
    let points: BTreeSet<_> = s.disks.iter().map(|d| d.mount_point.as_str()).collect();
    assert_eq!(points.len(), s.disks.len(), "a mount point listed twice");
}

#[tokio::test]
async fn block_devices_match_sys_block_and_diskstats() {
    let source = source();
    let s = sample(&source).await;
    let diskstats = read("/proc/diskstats");
    for dev in &s.block_devices {
        let sys = Path::new("/sys/block").join(&dev.name);
        assert!(sys.exists(), "{} is not a whole device", dev.name);
        let sectors: u64 = read(sys.join("size").to_str().unwrap()).trim().parse().unwrap();
        assert_eq!(dev.size_bytes, sectors * 512, "{}", dev.name);
        if let Some(line) = diskstats.lines().find(|l| l.split_whitespace().nth(2) == Some(dev.name.as_str())) {
            let f: Vec<u64> = line.split_whitespace().skip(3).map(|x| x.parse().unwrap()).collect();
            // Read after the sample: the counters can only have grown.
            assert!(dev.read_bytes_total <= f[2] * 512 && dev.write_bytes_total <= f[6] * 512, "{dev:?}");
            assert!(dev.read_bytes_total + 64 * MIB >= f[2] * 512, "{dev:?}");
        }
    }
    let expected: BTreeSet<String> = std::fs::read_dir("/sys/block")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|name| {
            let size: u64 = read(&format!("/sys/block/{name}/size")).trim().parse().unwrap();
            let virtual_kind = ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p));
            !(virtual_kind && size == 0)
        })
        .collect();
    let got: BTreeSet<String> = s.block_devices.iter().map(|d| d.name.clone()).collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn writes_show_up_as_disk_write_rate() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let source = source();
    let first = sample(&source).await;
    let disk = first
        .disks
        .iter()
        .filter(|d| dir.path().starts_with(&d.mount_point))
        .max_by_key(|d| d.mount_point.len())
        .expect("the temp dir's file system is listed")
        .mount_point
        .clone();
    {
        let mut f = std::fs::File::create(dir.path().join("data")).unwrap();
        f.write_all(&vec![7u8; 16 * MIB as usize]).unwrap();
        f.sync_all().unwrap();
    }
    let second = sample(&source).await;
    let d = second.disks.iter().find(|d| d.mount_point == disk).unwrap();
    assert!(d.write_bytes_per_sec > 0.0, "no write rate on {disk} after a 16 MiB fsync: {d:?}");
}

#[tokio::test]
async fn uptime_process_and_thread_counts() {
    let source = source();
    let procs_before = numeric_proc_dirs();
    let s = sample(&source).await;
    let proc_uptime: f64 = read("/proc/uptime").split_whitespace().next().unwrap().parse().unwrap();
    assert!((s.system.uptime_secs as f64 - proc_uptime).abs() <= 2.0, "{} vs {proc_uptime}", s.system.uptime_secs);
    assert!(s.system.process_count.abs_diff(procs_before) <= 20, "{} vs {procs_before}", s.system.process_count);
    let threads: u64 =
        read("/proc/loadavg").split_whitespace().nth(3).unwrap().split_once('/').unwrap().1.parse().unwrap();
    assert!(s.system.thread_count.abs_diff(threads) <= 50, "{} vs {threads}", s.system.thread_count);
    assert!(s.system.thread_count >= s.system.process_count);
}

#[tokio::test]
async fn process_count_follows_processes_starting_and_ending() {
    let source = source();
    let before = sample(&source).await.system.process_count;
    let mut children: Vec<_> = (0..30).map(|_| Command::new("sleep").arg("30").spawn().unwrap()).collect();
    let during = sample(&source).await.system.process_count;
    for child in &mut children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let after = sample(&source).await.system.process_count;
    // Other processes on the machine come and go; 30 of ours must show.
    assert!(during >= before + 15, "before {before}, with 30 more children {during}");
    assert!(after + 15 <= during, "with children {during}, after reaping them {after}");
}

#[tokio::test]
async fn cpu_cores_and_bounds() {
    let source = source();
    let first = sample(&source).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = sample(&source).await;
    let lines = stat_core_lines();
    for s in [&first, &second] {
        assert_eq!(s.cpu.logical_cores as usize, lines);
        assert_eq!(s.cpu.per_core_percent.len(), lines);
        assert!((0.0..=100.0).contains(&s.cpu.usage_percent), "{}", s.cpu.usage_percent);
        for core in &s.cpu.per_core_percent {
            assert!((0.0..=100.0).contains(core), "{core}");
        }
        assert!(!s.cpu.model.is_empty());
        assert!(s.cpu.physical_cores.is_none_or(|p| p >= 1 && p <= s.cpu.logical_cores));
    }
    let parallelism = std::thread::available_parallelism().unwrap().get();
    assert!(parallelism <= lines, "available_parallelism {parallelism} > {lines} cores online");
    let load: f64 = read("/proc/loadavg").split_whitespace().next().unwrap().parse().unwrap();
    assert!((second.cpu.load_average.one - load).abs() < 1.0);
    let has_sensor = Path::new("/sys/class/hwmon").exists() || Path::new("/sys/class/thermal/thermal_zone0").exists();
    if !has_sensor {
        assert_eq!(second.cpu.temperature_celsius, None);
    }
}

#[tokio::test]
async fn cpu_usage_rises_when_a_core_spins() {
    let source = source();
    let _ = sample(&source).await;
    let spinner = std::thread::spawn(|| {
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(500) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        x
    });
    spinner.join().unwrap();
    let s = sample(&source).await;
    let cores = s.cpu.logical_cores as f64;
    // One of N cores fully busy for the whole interval is 100/N %; allow for scheduling slack.
    let expected = 100.0 / cores * 0.6;
    assert!(s.cpu.usage_percent > expected, "usage {} after spinning one core of {cores}", s.cpu.usage_percent);
    let busiest = s.cpu.per_core_percent.iter().copied().fold(0.0, f64::max);
    assert!(busiest > 30.0, "no core looks busy: {:?}", s.cpu.per_core_percent);
}

#[tokio::test]
async fn loopback_counters_and_rates() {
    let source = source();
    let (rx_before, tx_before) = lo_counters();
    let first = sample(&source).await;
    let lo = first.networks.iter().find(|n| n.interface == "lo").expect("lo listed");
    assert!(lo.is_loopback && lo.is_up);
    assert!(lo.rx_bytes_total >= rx_before && lo.tx_bytes_total >= tx_before);
    assert_eq!((lo.rx_bytes_per_sec, lo.tx_bytes_per_sec), (0.0, 0.0), "first sample has no rates");
    assert!(lo.ipv4.iter().any(|a| a == "127.0.0.1"), "{:?}", lo.ipv4);

    // Push 8 MiB through a loopback TCP connection.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).unwrap();
        buf.len()
    });
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(&vec![1u8; 8 * MIB as usize]).unwrap();
    drop(client);
    assert_eq!(receiver.join().unwrap(), 8 * MIB as usize);

    let second = sample(&source).await;
    let lo2 = second.networks.iter().find(|n| n.interface == "lo").unwrap();
    assert!(lo2.rx_bytes_total - lo.rx_bytes_total >= 8 * MIB, "{} -> {}", lo.rx_bytes_total, lo2.rx_bytes_total);
    assert!(lo2.rx_bytes_per_sec > 0.0 && lo2.tx_bytes_per_sec > 0.0, "{lo2:?}");
    assert!(lo2.rx_packets_total > lo.rx_packets_total);

    let names: Vec<String> =
        read("/proc/net/dev").lines().filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_owned())).collect();
    let got: Vec<String> = second.networks.iter().map(|n| n.interface.clone()).collect();
    assert_eq!(got, names);
    for n in &second.networks {
        let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", n.interface)).unwrap_or_default();
        let mac = mac.trim();
        if !mac.is_empty() && mac != "00:00:00:00:00:00" {
            assert_eq!(n.mac_address.as_deref(), Some(mac));
        }
    }
}

#[tokio::test]
async fn host_info_matches_the_kernel() {
    let source = source();
    let info = source.host_info().await.unwrap();
    assert_eq!(info.os_family, "Linux");
    assert_eq!(info.kernel_version, read("/proc/sys/kernel/osrelease").trim());
    assert_eq!(info.hostname, read("/proc/sys/kernel/hostname").trim());
    let machine = Command::new("uname").arg("-m").output().unwrap();
    assert_eq!(info.architecture, String::from_utf8_lossy(&machine.stdout).trim());
    assert_eq!(info.memory_total_bytes, meminfo_bytes("MemTotal"));
    assert_eq!(info.logical_cores as usize, stat_core_lines());
    let btime: i64 = read("/proc/stat").lines().find_map(|l| l.strip_prefix("btime ")).unwrap().parse().unwrap();
    assert_eq!(info.boot_time, UnixMillis(btime * 1000));
    let uptime: f64 = read("/proc/uptime").split_whitespace().next().unwrap().parse().unwrap();
    assert!((info.uptime_secs as f64 - uptime).abs() <= 2.0);
    if let Ok(os_release) = std::fs::read_to_string("/etc/os-release") {
        let name = os_release.lines().find_map(|l| l.strip_prefix("NAME=")).unwrap().trim_matches('"');
        assert_eq!(info.os_name, name);
        if let Some(v) = os_release.lines().find_map(|l| l.strip_prefix("VERSION_ID=")) {
            assert_eq!(info.os_version, v.trim_matches('"'));
        }
    }
    assert!(!info.cpu_model.is_empty());
    let vendor = std::fs::read_to_string("/sys/class/dmi/id/sys_vendor").ok().map(|v| v.trim().to_owned());
    assert_eq!(info.system_manufacturer, vendor.filter(|v| !v.is_empty()));
}

#[tokio::test]
async fn new_fails_cleanly_without_proc() {
    let config = SourceConfig { proc_root: "/nonexistent-proc".into(), ..SourceConfig::default() };
    let err = SysinfoSource::new(config).unwrap_err();
    assert!(err.to_string().contains("/nonexistent-proc/stat"), "{err}");
}
