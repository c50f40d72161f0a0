//! Per-container history benchmark: what 50 running containers add to the
//! history writer's work.
//!
//! Setup (printed to stdout):
//! - one container for one day at 1 s, saved in flushes of 60 and rolled
//!   up: the database growth per container and day;
//! - one hour of 50 containers at 1 s (180,000 rows) with the host's
//!   samples, as the service writes them.
//!
//! Measured (mean wall and CPU time per call):
//! 1. `flush_60_samples_50_containers`: `save_samples` of 60 host samples
//!    carrying 50 container rows each (3,000 rows), one transaction;
//! 2. `flush_60_samples_host_only`: the same flush without containers, for
//!    comparison;
//! 3. `roll_up_1_minute_50_containers`: the roll-up pass after a flush;
//! 4. `query_container_1h_300pts_raw`: one container's last hour at 300
//!    points, two metrics.
//!
//! Run: `cargo bench -p homeserver-sqlite --bench container_history`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark fails loudly on setup errors and reports on stdout"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use homeserver_domain::{
    BucketPlan, CONTAINER_METRIC_COUNT, ContainerMetric, ContainerSample, HistoryQuery, HistorySample, RetentionPolicy,
    SnapshotRepository, UnixMillis,
};
use homeserver_sqlite::{SqliteStore, StoreOptions};
use support::{HostSim, size_after_close};

/// Hour-aligned start of the data.
const START: i64 = 1_800_000_000_000;
const MIB: f64 = 1_048_576.0;
const CONTAINERS: usize = 50;

/// Plausible figures of container `k` at second `s`: a few percent of CPU,
/// tens of MiB of memory, bursty network and disk rates.
fn row(id: &str, k: usize, s: i64) -> ContainerSample {
    let noise = |salt: i64| ((s * 7_919 + k as i64 * 104_729 + salt * 15_485_863) % 1_000_003) as f64 / 1_000_003.0;
    let mut values = [0.0; CONTAINER_METRIC_COUNT];
    for m in ContainerMetric::ALL {
        values[m.index()] = match m {
            ContainerMetric::CpuPercent => (noise(1) * 800.0).round() / 100.0,
            ContainerMetric::MemoryBytes => ((32 + k as i64 * 3) << 20) as f64 + (noise(2) * 4_194_304.0).round(),
            ContainerMetric::Pids => 4.0 + (noise(3) * 3.0).round(),
            ContainerMetric::NetworkRxBytesPerSec => (noise(4) * 50_000.0).round(),
            ContainerMetric::NetworkTxBytesPerSec => (noise(5) * 20_000.0).round(),
            ContainerMetric::BlockReadBytesPerSec => {
                if noise(6) < 0.8 {
                    0.0
                } else {
                    (noise(7) * 1e6).round()
                }
            }
            ContainerMetric::BlockWriteBytesPerSec => {
                if noise(8) < 0.6 {
                    0.0
                } else {
                    (noise(9) * 2e6).round()
                }
            }
        };
    }
    ContainerSample { container_id: id.to_owned(), values }
}

/// Host samples from `sim`, each carrying a row per id.
fn flush(sim: &mut HostSim, ids: &[String], n: usize) -> Vec<HistorySample> {
    (0..n)
        .map(|_| {
            let mut sample = sim.next_sample();
            let s = (sample.timestamp.as_millis() - START) / 1_000;
            sample.containers = ids.iter().enumerate().map(|(k, id)| row(id, k, s)).collect();
            sample
        })
        .collect()
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|k| format!("6f1c2a9e-0000-4000-8000-{k:012}")).collect()
}

/// Mean wall and CPU time (`/proc/self/schedstat` of every thread) per call.
fn profile<F: Future>(rt: &tokio::runtime::Runtime, name: &str, n: u32, mut call: impl FnMut() -> F) {
    let cpu_ns = || {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
                    .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .unwrap_or(0)
    };
    rt.block_on(async {
        let cpu0 = cpu_ns();
        let started = Instant::now();
        for _ in 0..n {
            call().await;
        }
        let wall = started.elapsed() / n;
        let cpu = Duration::from_nanos((cpu_ns() - cpu0) / u64::from(n));
        println!("{name}: wall {wall:.2?}, CPU {cpu:.2?} per call (mean of {n})");
    });
}

/// One container for a day in flushes of 60; returns bytes per day.
async fn one_container_day(dir: &Path) -> u64 {
    let bare = SqliteStore::open(StoreOptions::new(dir.join("bare.db"))).await.unwrap();
    let with = SqliteStore::open(StoreOptions::new(dir.join("one-container.db"))).await.unwrap();
    let (mut a, mut b) = (HostSim::new(START, 1_000), HostSim::new(START, 1_000));
    let id = ids(1);
    for _ in 0..86_400 / 60 {
        bare.save_samples(&flush(&mut a, &[], 60)).await.unwrap();
        with.save_samples(&flush(&mut b, &id, 60)).await.unwrap();
    }
    let end = UnixMillis(START + UnixMillis::DAY);
    bare.roll_up(end).await.unwrap();
    with.roll_up(end).await.unwrap();
    let (bare, with) = (size_after_close(bare).await, size_after_close(with).await);
    let per_container = with.saturating_sub(bare);
    println!(
        "one container, one day at 1 s in flushes of 60, rolled up: {per_container} bytes = {:.2} MiB per \
         container-day ({:.1} bytes/row; host alone {:.2} MiB/day)",
        per_container as f64 / MIB,
        per_container as f64 / 86_400.0,
        bare as f64 / MIB
    );
    per_container
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    rt.block_on(one_container_day(dir.path()));

    let store = rt.block_on(SqliteStore::open(StoreOptions::new(dir.path().join("fifty.db")))).unwrap();
    let ids = ids(CONTAINERS);
    let mut sim = HostSim::new(START, 1_000);
    let started = Instant::now();
    for _ in 0..60 {
        rt.block_on(store.save_samples(&flush(&mut sim, &ids, 60))).unwrap();
    }
    rt.block_on(store.roll_up(UnixMillis(START + UnixMillis::HOUR))).unwrap();
    println!(
        "setup: one hour of {CONTAINERS} containers ({} rows) saved and rolled in {:.2?}",
        3_600 * CONTAINERS,
        started.elapsed()
    );
    println!(
        "load average before the measurements: {}",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );

    // For comparison, the host's flush alone (a pause of the containers).
    let host_only: Vec<_> = (0..30).map(|_| flush(&mut sim, &[], 60)).collect();
    let mut next = host_only.iter();
    profile(&rt, "flush_60_samples_host_only", 30, || store.save_samples(next.next().unwrap()));

    // Flushes and roll-ups alternate as the writer does them.
    let batches: Vec<_> = (0..60).map(|_| flush(&mut sim, &ids, 60)).collect();
    let mut next = batches.iter();
    let mut rolled = Vec::new();
    let mut times = Vec::new();
    rt.block_on(async {
        for batch in &mut next {
            let t = Instant::now();
            store.save_samples(batch).await.unwrap();
            times.push(t.elapsed());
            let t = Instant::now();
            store.roll_up(batch.last().unwrap().timestamp.floor_to(UnixMillis::MINUTE)).await.unwrap();
            rolled.push(t.elapsed());
        }
    });
    times.sort();
    rolled.sort();
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    println!(
        "flush_60_samples_50_containers: mean {:.2?}, median {:.2?}, max {:.2?} (60 flushes of 3,000 container rows + 60 host rows)",
        mean(&times),
        times[times.len() / 2],
        times[times.len() - 1]
    );
    println!(
        "roll_up_1_minute_50_containers: mean {:.2?}, median {:.2?}, max {:.2?}",
        mean(&rolled),
        rolled[rolled.len() / 2],
        rolled[rolled.len() - 1]
    );
    let more: Vec<_> = (0..30).map(|_| flush(&mut sim, &ids, 60)).collect();
    let mut next = more.iter();
    profile(&rt, "flush_60_samples_50_containers (CPU)", 30, || store.save_samples(next.next().unwrap()));

    // The last hour holds one sample of every container per second.
    let end = rt.block_on(store.latest_sample_time()).unwrap().unwrap().add_millis(1_000);
    let query = HistoryQuery::new(
        vec![ContainerMetric::CpuPercent, ContainerMetric::MemoryBytes],
        end.add_millis(-UnixMillis::HOUR),
        end,
        300,
    )
    .unwrap();
    let plan = BucketPlan::choose(&query, end, &RetentionPolicy::DEFAULT, 1_000);
    let id = ids[CONTAINERS / 2].clone();
    let points = rt.block_on(store.query_container(&id, &plan, query.metrics())).unwrap()[0].points.len();
    println!("plan: tier {} step {} ms, {points} points", plan.tier.as_str(), plan.step_ms);
    profile(&rt, "query_container_1h_300pts_raw", 200, || store.query_container(&id, &plan, query.metrics()));
    let size = rt.block_on(size_after_close(store));
    println!("database after the run: {:.1} MiB", size as f64 / MIB);
}
