//! History storage benchmark: a week of 1 s samples, then the reads and the
//! write the service does all day.
//!
//! Setup (printed to stdout):
//! - one day of plausible 1 s samples saved in flushes of 60, rolled up and
//!   checkpointed: the database growth per day (target ≤ 10 MiB);
//! - seven days (604,800 raw rows, 10,080 minute rows, 168 hour rows) saved
//!   in large transactions and rolled up, in a file under the target dir.
//!
//! Benches:
//! 1. `query_7d_300pts_minute_tier`: 7 days at 300 points, plan chosen by the
//!    domain (`BucketPlan::choose`, tier = minute), 2 metrics (target < 5 ms);
//! 2. `query_1h_2000pts_raw_tier`: the last hour at 2,000 points, raw tier,
//!    2 metrics (target < 5 ms);
//! 3. `flush_60_samples`: `save_samples` of 60 new rows (target < 5 ms);
//! 4. `naive_7d_300pts_raw_group_by`: the same 7-day buckets computed the
//!    naive way, `GROUP BY (ts - from) / step` over the raw rows (no roll-ups,
//!    no bucket walk), for comparison;
//! 5. `query_7d_300pts_minute_tier_all_metrics`: bench 1 with all 13 metrics.
//!
//! Run: `cargo bench -p homeserver-sqlite --bench history`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark fails loudly on setup errors and reports sizes on stdout"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use homeserver_domain::{BucketPlan, HistoryQuery, Metric, RetentionPolicy, SnapshotRepository, Tier, UnixMillis};
use homeserver_sqlite::{SqliteStore, StoreOptions};
use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use support::{HostSim, size_after_close};

/// Hour-aligned start of the data.
const START: i64 = 1_800_000_000_000;
const DAY_SAMPLES: usize = 86_400;
const MIB: f64 = 1_048_576.0;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// One day in flushes of 60, as the service writes it; returns bytes on disk.
async fn one_day_size(dir: &Path) -> u64 {
    let store = SqliteStore::open(StoreOptions::new(dir.join("one-day.db"))).await.unwrap();
    let mut sim = HostSim::new(START, 1_000);
    let started = Instant::now();
    for _ in 0..DAY_SAMPLES / 60 {
        store.save_samples(&sim.take(60)).await.unwrap();
    }
    let write = started.elapsed();
    store.roll_up(UnixMillis(START + UnixMillis::DAY)).await.unwrap();
    let size = size_after_close(store).await;
    println!(
        "one day of 1 s samples in flushes of 60: {size} bytes = {:.2} MiB/day ({:.1} bytes/sample, roll-ups \
         included); written in {write:.2?}",
        size as f64 / MIB,
        size as f64 / DAY_SAMPLES as f64,
    );
    size
}

/// Seven days in transactions of one day, rolled up, then closed and opened
/// again: a running service has folded all but its last ~1000 written pages
/// from the WAL into the database file, so the reads should not all go
/// through the WAL as they would right after the bulk load.
async fn seven_days(dir: &Path) -> SqliteStore {
    let path = dir.join("seven-days.db");
    let store = SqliteStore::open(StoreOptions::new(&path)).await.unwrap();
    let mut sim = HostSim::new(START, 1_000);
    let started = Instant::now();
    for _ in 0..7 {
        store.save_samples(&sim.take(DAY_SAMPLES)).await.unwrap();
    }
    let saved = started.elapsed();
    let report = store.roll_up(UnixMillis(START + 7 * UnixMillis::DAY)).await.unwrap();
    println!(
        "seven days: {} raw rows saved in {saved:.2?}, rolled up into {} minutes and {} hours in {:.2?}",
        7 * DAY_SAMPLES,
        report.minutes,
        report.hours,
        started.elapsed() - saved
    );
    store.close().await.unwrap();
    SqliteStore::open(StoreOptions::new(&path)).await.unwrap()
}

/// What the store would do without roll-ups or the bucket walk: one
/// `GROUP BY (ts - from) / step` over the raw rows, on its own connection
/// with the store's page cache.
async fn naive_pool(path: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new().filename(path).read_only(true).pragma("cache_size", "-2000");
    SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap()
}

const NAIVE_SQL: &str = "SELECT (ts - ?1) / ?2 AS b, \
     avg(cpu_usage_percent), min(cpu_usage_percent), max(cpu_usage_percent), \
     avg(memory_used_bytes), min(memory_used_bytes), max(memory_used_bytes) \
     FROM history_raw WHERE ts >= ?1 AND ts < ?3 GROUP BY b ORDER BY b";

/// CPU time this process has run and waited for a CPU, in ns, summed over
/// its threads (`/proc/self/task/*/schedstat`; zeros where unavailable).
fn sched_ns() -> (u64, u64) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return (0, 0) };
    tasks.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()).fold(
        (0, 0),
        |(run, wait), line| {
            let mut f = line.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
            (run + f.next().unwrap_or(0), wait + f.next().unwrap_or(0))
        },
    )
}

/// Runs `call` `n` times and prints the mean wall time, CPU time (both
/// threads: tokio's and the SQLite worker's) and time spent waiting for a CPU
/// per call. Other processes on the machine inflate wall time but barely CPU
/// time, which bounds the wall time on an idle machine from above.
fn cpu_profile<F: Future>(rt: &tokio::runtime::Runtime, name: &str, n: u32, mut call: impl FnMut() -> F) {
    rt.block_on(async {
        let (run0, wait0) = sched_ns();
        let started = Instant::now();
        for _ in 0..n {
            call().await;
        }
        let wall = started.elapsed() / n;
        let (run1, wait1) = sched_ns();
        let per = |ns: u64| Duration::from_nanos(ns / u64::from(n));
        println!(
            "{name}: wall {wall:.2?}, CPU {:.2?}, waiting for a CPU {:.2?} per call (mean of {n})",
            per(run1 - run0),
            per(wait1 - wait0)
        );
    });
}

fn history(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let day = rt.block_on(one_day_size(dir.path()));
    assert!(day as f64 <= 10.0 * MIB, "database grows {day} bytes per day");
    let store = rt.block_on(seven_days(dir.path()));

    let end = UnixMillis(START + 7 * UnixMillis::DAY);
    let metrics = [Metric::CpuUsagePercent, Metric::MemoryUsedBytes];
    let choose = |from: UnixMillis, points: u32| {
        let query = HistoryQuery::new(metrics.to_vec(), from, end, points).unwrap();
        BucketPlan::choose(&query, end, &RetentionPolicy::DEFAULT, 1_000)
    };
    let week = choose(UnixMillis(START), 300);
    assert_eq!(week.tier, Tier::Minute);
    let hour = choose(end.add_millis(-UnixMillis::HOUR), 2_000);
    assert_eq!(hour.tier, Tier::Raw);
    let naive = BucketPlan { tier: Tier::Raw, ..week };
    let naive_pool = rt.block_on(naive_pool(store.path()));
    let naive_query =
        || sqlx::query(NAIVE_SQL).bind(naive.from.as_millis()).bind(naive.step_ms).bind(naive.to.as_millis());
    println!(
        "plans: 7 d → tier {} step {} ms; 1 h → tier {} step {} ms",
        week.tier.as_str(),
        week.step_ms,
        hour.tier.as_str(),
        hour.step_ms
    );
    // The roll-ups must answer like the raw rows they summarise.
    let (fast, slow) = rt.block_on(async {
        (store.query(&week, &metrics).await.unwrap(), naive_query().fetch_all(&naive_pool).await.unwrap())
    });
    assert_eq!(fast[0].points.len(), slow.len());
    for (f, s) in fast[1].points.iter().zip(&slow) {
        let (avg, min, max): (f64, i64, i64) = (s.get(4), s.get(5), s.get(6));
        assert_eq!((f.min, f.max), (min as f64, max as f64));
        assert!((f.avg - avg).abs() < 1e-6 * avg);
    }

    println!(
        "load average before the benches: {}",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    cpu_profile(&rt, "query_7d_300pts_minute_tier", 200, || store.query(&week, &metrics));
    cpu_profile(&rt, "query_7d_300pts_minute_tier_all_metrics", 50, || store.query(&week, Metric::ALL));
    cpu_profile(&rt, "query_1h_2000pts_raw_tier", 200, || store.query(&hour, &metrics));
    cpu_profile(&rt, "naive_7d_300pts_raw_group_by", 5, || naive_query().fetch_all(&naive_pool));

    let mut group = c.benchmark_group("history");
    group.sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.bench_function("query_7d_300pts_minute_tier", |b| {
        b.to_async(&rt).iter(|| async { store.query(&week, &metrics).await.unwrap() });
    });
    group.bench_function("query_7d_300pts_minute_tier_all_metrics", |b| {
        b.to_async(&rt).iter(|| async { store.query(&week, Metric::ALL).await.unwrap() });
    });
    group.bench_function("query_1h_2000pts_raw_tier", |b| {
        b.to_async(&rt).iter(|| async { store.query(&hour, &metrics).await.unwrap() });
    });
    let mut sim = HostSim::new(end.0, 1_000);
    group.bench_function("flush_60_samples", |b| {
        b.to_async(&rt).iter_batched(
            || sim.take(60),
            |samples| {
                let store = &store;
                async move { store.save_samples(&samples).await.unwrap() }
            },
            BatchSize::SmallInput,
        );
    });
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.bench_function("naive_7d_300pts_raw_group_by", |b| {
        b.to_async(&rt).iter(|| async { naive_query().fetch_all(&naive_pool).await.unwrap() });
    });
    group.finish();
    let batches: Vec<_> = (0..500).map(|_| sim.take(60)).collect();
    let mut batch = batches.iter();
    cpu_profile(&rt, "flush_60_samples", 500, || store.save_samples(batch.next().unwrap()));

    rt.block_on(naive_pool.close());
    let newest = rt.block_on(store.latest_sample_time()).unwrap().unwrap();
    let samples = (newest.as_millis() - START) / 1_000 + 1;
    let size = rt.block_on(size_after_close(store));
    println!(
        "seven days plus the flushes benched: {samples} samples, {size} bytes = {:.1} bytes/sample = {:.2} MiB/day \
         (minute and hour roll-ups of the first seven days included)",
        size as f64 / samples as f64,
        size as f64 / samples as f64 * DAY_SAMPLES as f64 / MIB
    );
}

criterion_group!(benches, history);
criterion_main!(benches);
