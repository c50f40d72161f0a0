//! Cost of one full device rescan (`SysDeviceInventory`) on this host,
//! against the commands a user would run for the same facts.
//!
//! `cargo bench -p homeserver-sysinfo --bench device_scan`
//! (env `ROUNDS`, default 30; `GAP_MS`, default 200; `SYS_ROOT`, default
//! `/sys`: another sysfs mount, e.g. one of a private network namespace
//! filled with interfaces, see docs/BENCHMARKS.md).
//!
//! - **criterion**: `scan_blocking()` on the bench thread, and `scan()`
//!   awaited on a current-thread tokio runtime (the work goes to tokio's
//!   blocking pool, as in the server).
//! - **summary**: `ROUNDS` rounds; in each, after a `GAP_MS` pause before
//!   every reader and in an order that rotates every round (so noise hits
//!   all alike), one `scan_blocking()`, one `lsblk -J -O`, one `ip -j link`
//!   and one `lsusb` (when installed), the commands run to completion with
//!   their output captured, as a script would. Wall time for all; CPU time
//!   for the scan (this thread's run time, `/proc/thread-self/schedstat`)
//!   and, for the commands, the mean over all calls of the children's
//!   user + system time (`/proc/self/stat`, clock ticks).
//!
//! The budget (issue: devices and profiles): a full rescan ≤ 20 ms.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup: a failure must abort the run")]
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use homeserver_domain::DeviceInventory;
use homeserver_sysinfo::{DeviceScanConfig, SysDeviceInventory};

/// CPU time this thread has run, in ns.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User + system time of reaped children, in clock ticks (fields 16, 17).
fn children_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command name may hold spaces: count from the closing parenthesis.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    fields[15 - 2].parse::<u64>().unwrap() + fields[16 - 2].parse::<u64>().unwrap()
}

fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

fn installed(cmd: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Nearest-rank percentile, in ms.
fn percentile_ms(values: &[Duration], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1].as_secs_f64() * 1e3
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Reader {
    name: String,
    command: Option<(&'static str, &'static [&'static str])>,
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
    child_ticks: u64,
}

fn main() {
    let mut c = Criterion::default().warm_up_time(Duration::from_secs(1)).configure_from_args();
    let mut config = DeviceScanConfig::default();
    if let Ok(root) = std::env::var("SYS_ROOT") {
        config.sys_root = root.into();
    }
    let inventory = SysDeviceInventory::new(config);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let mut group = c.benchmark_group("device_rescan");
    group.bench_function("scan_blocking, this host", |b| b.iter(|| black_box(inventory.scan_blocking().unwrap())));
    group.bench_function("scan() on tokio (spawn_blocking), this host", |b| {
        b.to_async(&runtime).iter(|| async { black_box(inventory.scan().await.unwrap()) })
    });
    group.finish();

    let rounds = env_number("ROUNDS", 30).max(1);
    let gap = Duration::from_millis(env_number("GAP_MS", 200));
    let load_before = loadavg();
    let mut readers = vec![Reader {
        name: "`SysDeviceInventory::scan_blocking()`".to_owned(),
        command: None,
        wall: Vec::new(),
        cpu: Vec::new(),
        child_ticks: 0,
    }];
    let commands: [(&str, &[&str]); 3] = [("lsblk", &["-J", "-O"]), ("ip", &["-j", "link"]), ("lsusb", &[])];
    let mut missing = Vec::new();
    for (cmd, args) in commands {
        if installed(cmd) {
            readers.push(Reader {
                name: format!("`{cmd} {}`", args.join(" ")).replace(" `", "`"),
                command: Some((cmd, args)),
                wall: Vec::new(),
                cpu: Vec::new(),
                child_ticks: 0,
            });
        } else {
            missing.push(cmd);
        }
    }
    let n = readers.len();
    let mut commands_total: Vec<Duration> = Vec::new();
    for round in 0..rounds {
        let mut total = Duration::ZERO;
        for k in 0..n {
            let r = &mut readers[(k + round as usize) % n];
            std::thread::sleep(gap);
            match r.command {
                None => {
                    let cpu0 = thread_cpu_ns();
                    let t0 = Instant::now();
                    black_box(inventory.scan_blocking().unwrap());
                    r.wall.push(t0.elapsed());
                    r.cpu.push(Duration::from_nanos(thread_cpu_ns().saturating_sub(cpu0)));
                }
                Some((cmd, args)) => {
                    let ticks0 = children_ticks();
                    let t0 = Instant::now();
                    let out = Command::new(cmd).args(args).output().unwrap();
                    let wall = t0.elapsed();
                    assert!(out.status.success(), "{cmd} failed");
                    black_box(out.stdout);
                    r.child_ticks += children_ticks() - ticks0;
                    r.wall.push(wall);
                    total += wall;
                }
            }
        }
        commands_total.push(total);
    }

    let scan = inventory.scan_blocking().unwrap();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &scan {
        *kinds.entry(d.kind.as_str()).or_default() += 1;
    }
    let ours = percentile_ms(&readers[0].wall, 0.5);
    let tck = ticks_per_second();
    println!(
        "\n{rounds} rounds, {} ms before each call; {} devices ({kinds:?}); load before {load_before}, after {}",
        gap.as_millis(),
        scan.len(),
        loadavg()
    );
    if !missing.is_empty() {
        println!("not installed, left out: {}", missing.join(", "));
    }
    println!("\n| reader | calls | wall median ms | wall p90 ms | CPU ms | wall ÷ scan |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &readers {
        let cpu = if r.command.is_none() {
            format!("{:.2} (median)", percentile_ms(&r.cpu, 0.5))
        } else {
            format!("{:.1} (mean)", r.child_ticks as f64 / tck * 1e3 / r.wall.len() as f64)
        };
        let median = percentile_ms(&r.wall, 0.5);
        println!(
            "| {} | {} | {median:.2} | {:.2} | {cpu} | {:.1} |",
            r.name,
            r.wall.len(),
            percentile_ms(&r.wall, 0.9),
            median / ours
        );
    }
    if n > 1 {
        let median = percentile_ms(&commands_total, 0.5);
        println!(
            "| the {} commands together | {} | {median:.2} | {:.2} | | {:.1} |",
            n - 1,
            commands_total.len(),
            percentile_ms(&commands_total, 0.9),
            median / ours
        );
    }
    println!(
        "\nBudget: a full rescan ≤ 20 ms: median {ours:.2} ms, p90 {:.2} ms → {}.",
        percentile_ms(&readers[0].wall, 0.9),
        if ours <= 20.0 { "met" } else { "MISSED" }
    );
    c.final_summary();
}
