//! Cost of `CgroupReader::read_pid` per container.
//!
//! `cargo bench -p homeserver-cgroup --bench read`
//!
//! - **v1 fixture, 50 containers**: a fake v1/hybrid host in a temp folder
//!   (Docker `cgroupfs` layout), every container read once per iteration;
//!   criterion's throughput line gives containers per second, and the
//!   summary printed at the end the µs per container, in wall time and in
//!   CPU time of the reading thread (the figure the budget is about; wall
//!   time grows when other processes hold the cores).
//! - **v2 fixture, 50 containers**: the same on a fake v2 host.
//! - **real host, this process**: the kernel's own `/proc` and
//!   `/sys/fs/cgroup` (generated files cost more than tmpfs ones).
//!
//! The budget: 50 containers every second must stay well under 1% of a core,
//! i.e. under 200 µs per container.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup: a failure must abort the run")]
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use homeserver_cgroup::{CgroupReader, CgroupRoots};
use support::Container;

const CONTAINERS: u32 = 50;

/// CPU time this thread has run, in ns (`/proc/thread-self/schedstat`):
/// unlike wall time, it leaves out the time other processes held the cores.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

/// Mean (wall µs, CPU µs) per container over `rounds` passes over `pids`.
fn per_container_us(reader: &CgroupReader, pids: &[u32], rounds: u32) -> (f64, Option<f64>) {
    let calls = f64::from(rounds) * pids.len() as f64;
    let cpu_start = thread_cpu_ns();
    let start = Instant::now();
    for _ in 0..rounds {
        for &pid in pids {
            black_box(reader.read_pid(pid).unwrap());
        }
    }
    let wall = start.elapsed().as_secs_f64() * 1e6 / calls;
    let cpu = thread_cpu_ns().zip(cpu_start).map(|(end, start)| (end - start) as f64 / 1e3 / calls);
    (wall, cpu)
}

fn main() {
    let mut c = Criterion::default().warm_up_time(Duration::from_secs(1)).configure_from_args();
    let dir = tempfile::tempdir().unwrap();

    let v1: Vec<Container> = (0..CONTAINERS).map(Container::docker_v1).collect();
    let v1_reader = CgroupReader::new(support::v1_host(&dir.path().join("v1"), &v1)).unwrap();
    let v1_pids: Vec<u32> = v1.iter().map(|c| c.pid).collect();
    let v2: Vec<Container> = (0..CONTAINERS).map(Container::docker_v2).collect();
    let v2_reader = CgroupReader::new(support::v2_host(&dir.path().join("v2"), &v2)).unwrap();
    let v2_pids: Vec<u32> = v2.iter().map(|c| c.pid).collect();
    let real = CgroupReader::new(CgroupRoots::default()).unwrap();
    let own = [std::process::id()];

    let mut group = c.benchmark_group("read_pid");
    group.throughput(Throughput::Elements(u64::from(CONTAINERS)));
    group.bench_function("v1 fixture, 50 containers", |b| {
        b.iter(|| {
            for &pid in &v1_pids {
                black_box(v1_reader.read_pid(pid).unwrap());
            }
        })
    });
    group.bench_function("v2 fixture, 50 containers", |b| {
        b.iter(|| {
            for &pid in &v2_pids {
                black_box(v2_reader.read_pid(pid).unwrap());
            }
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("real host, this process", |b| b.iter(|| black_box(real.read_pid(own[0]).unwrap())));
    group.finish();

    // Plain summary, in the unit the budget is written in.
    let rows = [
        ("v1 fixture", per_container_us(&v1_reader, &v1_pids, 200)),
        ("v2 fixture", per_container_us(&v2_reader, &v2_pids, 200)),
        ("real host, own pid", per_container_us(&real, &own, 5000)),
    ];
    println!("\nper container, timed loop after criterion (CPU = this thread's run time):");
    for (name, (wall, cpu)) in rows {
        // 50 containers once a second: share of one core.
        let core_percent = cpu.unwrap_or(wall) * f64::from(CONTAINERS) / 1e6 * 100.0;
        let cpu = cpu.map_or("-".to_owned(), |us| format!("{us:.1}"));
        println!("  {name:<20} wall {wall:>6.1} µs  CPU {cpu:>6} µs  → 50 containers/s = {core_percent:.2}% of a core");
    }
    c.final_summary();
}
