//! CPU cost of one `SysinfoSource::sample()` against two peers, at the
//! sampler's real pace (one call per second per reader).
//!
//! `cargo bench -p homeserver-sysinfo --bench sample_cost`
//! (env `SAMPLES`, default 20; `GAP_MS`, default 1000).
//!
//! Each round sleeps `GAP_MS` before each of three readers, in an order that
//! rotates every round, so every reader is called once per round and noise
//! hits all three alike:
//! - **ours**: `SysinfoSource::sample()` awaited on a current-thread tokio
//!   runtime (the work runs on tokio's blocking pool, as in the server);
//! - **sysinfo full**: `System::refresh_all()` + `Networks::refresh(true)` +
//!   `Disks::refresh(true)` on long-lived values;
//! - **direct /proc**: open and read `/proc/stat`, `/proc/meminfo`,
//!   `/proc/net/dev`, `/proc/diskstats`, `/proc/loadavg` and `/proc/uptime`
//!   into one reused buffer, no parsing: the floor of a file-by-file reader.
//!
//! Cost is `CLOCK_PROCESS_CPUTIME_ID` (user + system time of every thread of
//! this process, so the blocking-pool thread counts) around one call, plus
//! wall time. One untimed warm-up call per reader comes first.
//!
//! `sample()` skips its scan of `/proc` (its costliest step) when no task was
//! created or reaped since its previous sample. So that both cases are
//! measured, every other round starts a short child process first, and the
//! rows for ours are also split by what the kernel counters (`processes` in
//! `/proc/stat`, tasks in `/proc/loadavg`) said before each call.
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::error::Error;
use std::fs::File;
use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use homeserver_domain::{SnapshotSource, UnixMillis};
use homeserver_sysinfo::{SourceConfig, SysinfoSource};
use rustix::time::{ClockId, clock_gettime};
use sysinfo::{Disks, Networks, System};

const DIRECT_FILES: [&str; 6] =
    ["/proc/stat", "/proc/meminfo", "/proc/net/dev", "/proc/diskstats", "/proc/loadavg", "/proc/uptime"];

fn process_cpu() -> Duration {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

#[derive(Default, Clone)]
struct Costs {
    cpu: Vec<Duration>,
    wall: Vec<Duration>,
}

impl Costs {
    fn measure<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let cpu0 = process_cpu();
        let wall0 = Instant::now();
        let out = f();
        let wall = wall0.elapsed();
        self.cpu.push(process_cpu().saturating_sub(cpu0));
        self.wall.push(wall);
        out
    }

    fn push_last_of(&mut self, other: &Costs) {
        if let (Some(c), Some(w)) = (other.cpu.last(), other.wall.last()) {
            self.cpu.push(*c);
            self.wall.push(*w);
        }
    }
}

/// Nearest-rank percentile in µs.
fn percentile_us(values: &[Duration], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1].as_secs_f64() * 1e6
}

fn env_number(name: &str, default: u64) -> Result<u64, Box<dyn Error>> {
    match std::env::var(name) {
        Ok(v) => Ok(v.parse().map_err(|e| format!("{name}={v}: {e}"))?),
        Err(_) => Ok(default),
    }
}

fn read_direct(buf: &mut Vec<u8>) -> Result<usize, Box<dyn Error>> {
    let mut total = 0;
    for path in DIRECT_FILES {
        buf.clear();
        total += File::open(path)?.read_to_end(buf)?;
    }
    Ok(total)
}

/// `(processes created since boot, tasks alive)`: what `sample()` compares
/// to decide whether to scan `/proc`.
fn task_counters() -> Result<(u64, u64), Box<dyn Error>> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let forks = stat.lines().find_map(|l| l.strip_prefix("processes ")).ok_or("no processes line")?.trim().parse()?;
    let loadavg = std::fs::read_to_string("/proc/loadavg")?;
    let tasks = loadavg.split_whitespace().nth(3).and_then(|f| f.split_once('/')).ok_or("bad loadavg")?.1.parse()?;
    Ok((forks, tasks))
}

fn main() -> Result<(), Box<dyn Error>> {
    let samples = env_number("SAMPLES", 20)?.max(1);
    let gap = Duration::from_millis(env_number("GAP_MS", 1000)?);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;

    let ours = SysinfoSource::new(SourceConfig::default())?;
    let mut system = System::new_all()?;
    let mut networks = Networks::new_with_refreshed_list()?;
    let mut disks = Disks::new_with_refreshed_list()?;
    let mut buf = Vec::with_capacity(64 * 1024);

    // Warm-up: first-call paths (thread pool start, first rates) are not timed.
    std::thread::sleep(gap);
    let first = runtime.block_on(ours.sample(UnixMillis(0)))?;
    let mut last_counters = task_counters()?;
    system.refresh_all();
    networks.refresh(true);
    disks.refresh(true);
    read_direct(&mut buf)?;

    let mut costs: [Costs; 3] = Default::default();
    let (mut ours_skip, mut ours_scan) = (Costs::default(), Costs::default());
    for round in 0..samples {
        if round % 2 == 1 {
            Command::new("true").status()?;
        }
        for k in 0..3 {
            let reader = (k + round as usize) % 3;
            std::thread::sleep(gap);
            match reader {
                0 => {
                    let counters = task_counters()?;
                    let snapshot = costs[0].measure(|| runtime.block_on(ours.sample(UnixMillis(0))))?;
                    std::hint::black_box(snapshot);
                    let class = if counters == last_counters { &mut ours_skip } else { &mut ours_scan };
                    class.push_last_of(&costs[0]);
                    last_counters = counters;
                }
                1 => costs[1].measure(|| {
                    system.refresh_all();
                    networks.refresh(true);
                    disks.refresh(true);
                }),
                _ => {
                    let n = costs[2].measure(|| read_direct(&mut buf))?;
                    std::hint::black_box(n);
                }
            }
        }
    }

    let median = |c: &Costs| percentile_us(&c.cpu, 0.5);
    let (sysinfo_median, direct_median) = (median(&costs[1]), median(&costs[2]));
    println!(
        "\n{samples} rounds, {} ms before each call; host: {} logical cores, {} processes, {} interfaces, {} disks\n",
        gap.as_millis(),
        first.cpu.logical_cores,
        first.system.process_count,
        first.networks.len(),
        first.disks.len(),
    );
    println!(
        "| reader | calls | CPU median µs | CPU p90 µs | wall median µs | wall p90 µs | CPU ÷ sysinfo full | CPU ÷ direct /proc |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let rows = [
        ("homeserver-sysinfo `sample()`, all calls", &costs[0]),
        ("… no task created or reaped since its last call (no /proc scan)", &ours_skip),
        ("… tasks created or reaped (scans /proc)", &ours_scan),
        ("sysinfo full refresh", &costs[1]),
        ("direct /proc read (6 files, no parsing)", &costs[2]),
    ];
    for (name, c) in rows {
        if c.cpu.is_empty() {
            println!("| {name} | 0 | – | – | – | – | – | – |");
            continue;
        }
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
            c.cpu.len(),
            median(c),
            percentile_us(&c.cpu, 0.9),
            percentile_us(&c.wall, 0.5),
            percentile_us(&c.wall, 0.9),
            median(c) / sysinfo_median,
            median(c) / direct_median,
        );
    }
    let verdict = |c: &Costs| if median(c) <= 280.0 { "met" } else { "MISSED" };
    println!(
        "\nTarget one sample ≤ 280 µs CPU (median): all calls {}, with a /proc scan {}.",
        verdict(&costs[0]),
        if ours_scan.cpu.is_empty() { "not measured" } else { verdict(&ours_scan) },
    );
    Ok(())
}
