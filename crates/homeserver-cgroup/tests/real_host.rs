//! The real `/proc` and `/sys/fs/cgroup` of the machine running the tests,
//! read for this test process.
//!
//! On the dev machine (cgroup v1/hybrid) this process sits in `cpuacct:/`
//! (the root, so CPU is the whole host's), `memory:/process_api/<id>`
//! and `pids:/` (the root, which has no `pids.current`). Each check looks
//! at what `/proc/self/cgroup` says and asserts what the files there imply;
//! a file that is absent (a controller not mounted, or a cgroup namespace
//! hiding the path) must read as 0 / `None`.
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] fns fail the test loudly")]

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use homeserver_cgroup::{CgroupError, CgroupMode, CgroupReader, CgroupRoots, CpuMeter};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The folder of this process's cgroup for `controller` (`None` on v2),
/// as `/proc/self/cgroup` places it.
fn own_cgroup_dir(mode: CgroupMode, controller: Option<&str>) -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        match (mode, controller) {
            (CgroupMode::V2, _) if controllers.is_empty() => Some(path),
            (CgroupMode::V1, Some(c)) if controllers.split(',').any(|x| x == c) => Some(path),
            _ => None,
        }
    })?;
    let mount = match (mode, controller) {
        (CgroupMode::V1, Some(c)) => Path::new(CGROUP_ROOT).join(c),
        _ => PathBuf::from(CGROUP_ROOT),
    };
    Some(mount.join(path.trim_start_matches('/')))
}

fn read_number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// CPU time this thread has run, in ns (`/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> Option<u64> {
    fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

/// Spins until this thread has used `cpu` of CPU time (or 5 s passed);
/// returns the CPU time used, when the kernel tells.
fn burn_cpu(cpu: Duration) -> Option<u64> {
    let start_cpu = thread_cpu_ns();
    let start = Instant::now();
    let mut x = 0u64;
    loop {
        for i in 0..100_000u64 {
            x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
        }
        let used = thread_cpu_ns().zip(start_cpu).map(|(now, then)| now - then);
        let done = match used {
            Some(ns) => ns >= cpu.as_nanos() as u64,
            None => start.elapsed() >= cpu,
        };
        if done || start.elapsed() > Duration::from_secs(5) {
            return used;
        }
    }
}

/// Non-`lo` receive bytes of `/proc/self/net/dev`.
fn own_rx_bytes() -> u64 {
    fs::read_to_string("/proc/self/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim() != "lo")
        .map(|(_, rest)| rest.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn reads_this_process_through_the_real_proc_and_sys() {
    let reader = CgroupReader::new(CgroupRoots::default()).unwrap();
    let mode = reader.mode();
    assert_eq!(mode == CgroupMode::V2, Path::new(CGROUP_ROOT).join("cgroup.controllers").exists());
    eprintln!("mode {mode:?}; /proc/self/cgroup:\n{}", fs::read_to_string("/proc/self/cgroup").unwrap());
    let pid = std::process::id();

    // CPU: grows by at least (about) what this thread burns in between.
    let cpu_file = match mode {
        CgroupMode::V1 => own_cgroup_dir(mode, Some("cpuacct")).map(|d| d.join("cpuacct.usage")),
        CgroupMode::V2 => own_cgroup_dir(mode, None).map(|d| d.join("cpu.stat")),
    };
    let rx_before = own_rx_bytes();
    let t0 = Instant::now();
    let before = reader.read_pid(pid).unwrap();
    let burned = burn_cpu(Duration::from_millis(200));
    let t1 = Instant::now();
    let after = reader.read_pid(pid).unwrap();
    eprintln!("before {before:?}\nafter  {after:?}\nburned {burned:?} ns");
    if cpu_file.as_deref().is_some_and(Path::exists) {
        assert!(before.cpu_usage_ns > 0);
        let grown = after.cpu_usage_ns - before.cpu_usage_ns;
        let floor = burned.map_or(1, |ns| ns / 2);
        assert!(grown >= floor, "cgroup CPU grew {grown} ns, this thread burned {burned:?} ns");
        let mut meter = CpuMeter::new();
        meter.update(before.cpu_usage_ns, t0);
        let pct = meter.update(after.cpu_usage_ns, t1);
        eprintln!("cpu {pct:.1}% over {:?}", t1 - t0);
        assert!(pct > 0.0);
    } else {
        eprintln!("no CPU file for this process's cgroup ({cpu_file:?}): CPU must read 0");
        assert_eq!(after.cpu_usage_ns, 0);
    }

    // Memory: on this host `memory:/process_api/<id>`, whose usage covers
    // at least this test binary.
    let memory_dir = own_cgroup_dir(mode, (mode == CgroupMode::V1).then_some("memory"));
    let (usage_file, limit_file) = match mode {
        CgroupMode::V1 => ("memory.usage_in_bytes", "memory.limit_in_bytes"),
        CgroupMode::V2 => ("memory.current", "memory.max"),
    };
    let usage = memory_dir.as_ref().and_then(|d| read_number(&d.join(usage_file)));
    match usage {
        Some(usage) => {
            assert!(after.memory_bytes > 0, "{usage_file} is {usage}");
            let total = fs::read_to_string("/proc/meminfo").unwrap();
            let total_kib: u64 = total.lines().next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
            assert!(after.memory_bytes < total_kib * 1024);
            let limit = memory_dir.as_ref().and_then(|d| read_number(&d.join(limit_file)));
            match limit {
                Some(l) if l < 1 << 62 && l < total_kib * 1024 => assert_eq!(after.memory_limit_bytes, Some(l)),
                _ => assert_eq!(after.memory_limit_bytes, None, "limit file says {limit:?}"),
            }
        }
        None => assert_eq!(after.memory_bytes, 0),
    }

    // Tasks: the root cgroup has no pids.current (this host's `pids:/`).
    let pids_dir = own_cgroup_dir(mode, (mode == CgroupMode::V1).then_some("pids"));
    if pids_dir.as_ref().is_some_and(|d| d.join("pids.current").exists()) {
        assert!(after.pids >= 1);
    } else {
        eprintln!("no pids.current at {pids_dir:?}: pids must read 0");
        assert_eq!(after.pids, 0);
    }

    // Network: counters only grow; the namespace flag matches the links.
    assert!(after.network_rx_bytes >= rx_before);
    if let (Ok(host), Ok(own)) = (fs::read_link("/proc/1/ns/net"), fs::read_link("/proc/self/ns/net")) {
        assert_eq!(after.host_network, host == own);
    }
}

#[test]
fn unknown_and_dead_pids_are_gone() {
    let reader = CgroupReader::new(CgroupRoots::default()).unwrap();
    assert!(matches!(reader.read_pid(u32::MAX), Err(CgroupError::Gone { pid: u32::MAX })));
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    assert!(matches!(reader.read_pid(dead), Err(CgroupError::Gone { .. })));
}
