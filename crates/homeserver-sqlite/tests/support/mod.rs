//! Helpers shared by the integration tests and the `history` benchmark.

#![allow(dead_code, unreachable_pub, reason = "each test binary and the benchmark use a different subset")]
#![allow(clippy::expect_used, reason = "test helpers fail loudly")]

use std::path::Path;

use homeserver_domain::{HistorySample, METRIC_COUNT, Metric, UnixMillis};
use homeserver_sqlite::{SqliteStore, StoreOptions};

/// A store on a fresh file `name` inside `dir`.
pub async fn open_in(dir: &Path, name: &str) -> SqliteStore {
    SqliteStore::open(StoreOptions::new(dir.join(name))).await.expect("open a fresh store")
}

/// A store on the file `path` (created if missing) holding at most
/// `connections` connections: concurrency tests open several on one file,
/// as several processes would.
pub async fn open_shared(path: &Path, connections: u32) -> SqliteStore {
    let mut options = StoreOptions::new(path);
    options.max_connections = connections;
    SqliteStore::open(options).await.expect("open a store")
}

/// A sample at `ts` whose every metric is `f(metric)`.
pub fn sample(ts: i64, f: impl Fn(Metric) -> f64) -> HistorySample {
    let mut values = [0.0; METRIC_COUNT];
    for m in Metric::ALL {
        values[m.index()] = f(*m);
    }
    HistorySample { timestamp: UnixMillis(ts), values, containers: Vec::new() }
}

/// A sample at `ts` with every metric at `v`.
pub fn flat(ts: i64, v: f64) -> HistorySample {
    sample(ts, |_| v)
}

/// Deterministic, plausible 1 s samples of a busy small server: noisy CPU
/// with two decimals, memory wandering between 2 and 8 GiB, bursty network
/// and disk rates, a slowly changing process count.
pub struct HostSim {
    rng: u64,
    ts: i64,
    step_ms: i64,
    cpu: f64,
    load: [f64; 3],
    mem_used: f64,
    swap: f64,
    procs: f64,
}

const GIB: f64 = 1_073_741_824.0;
const MEM_TOTAL: f64 = 16.0 * GIB;

impl HostSim {
    /// Samples every `step_ms` starting at `start_ms`.
    pub fn new(start_ms: i64, step_ms: i64) -> Self {
        Self {
            rng: 0x9e37_79b9_7f4a_7c15,
            ts: start_ms,
            step_ms,
            cpu: 20.0,
            load: [0.8, 0.7, 0.6],
            mem_used: 4.0 * GIB,
            swap: 120.0 * 1_048_576.0,
            procs: 180.0,
        }
    }

    /// A uniform number in [0, 1).
    fn unit(&mut self) -> f64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn hundredths(v: f64) -> f64 {
        (v * 100.0).round() / 100.0
    }

    /// The next sample.
    pub fn next_sample(&mut self) -> HistorySample {
        self.cpu = (self.cpu + (self.unit() - 0.5) * 6.0).clamp(0.0, 100.0);
        let cpu = Self::hundredths((self.cpu + (self.unit() - 0.5) * 20.0).clamp(0.0, 100.0));
        for (i, l) in self.load.iter_mut().enumerate() {
            let target = cpu / 25.0;
            *l += (target - *l) / [60.0, 300.0, 900.0][i];
        }
        let load = self.load.map(Self::hundredths);
        // Memory drifts by up to ±2 MiB a second, within 2..8 GiB.
        self.mem_used = (self.mem_used + (self.unit() - 0.5) * 4.0 * 1_048_576.0).clamp(2.0 * GIB, 8.0 * GIB);
        if self.unit() < 0.001 {
            // Now and then a big allocation or release.
            self.mem_used = (self.mem_used + (self.unit() - 0.5) * 2.0 * GIB).clamp(2.0 * GIB, 8.0 * GIB);
        }
        let used = self.mem_used.round();
        if self.unit() < 0.01 {
            self.swap = (self.swap + (self.unit() - 0.5) * 8.0 * 1_048_576.0).max(0.0).round();
        }
        if self.unit() < 0.05 {
            self.procs = (self.procs + (self.unit() * 4.0).round() - 2.0).clamp(120.0, 400.0);
        }
        let burst = |u: f64, quiet: f64, loud: f64| if u < 0.05 { loud } else { quiet };
        let (u1, u2, u3, u4) = (self.unit(), self.unit(), self.unit(), self.unit());
        let rx = (burst(u1, 2_000.0 + u2 * 60_000.0, 1_000_000.0 + u2 * 20_000_000.0)).round();
        let tx = (burst(u2, 1_000.0 + u3 * 30_000.0, 500_000.0 + u3 * 5_000_000.0)).round();
        let read = if u3 < 0.7 { 0.0 } else { (burst(u4, u1 * 200_000.0, u1 * 80_000_000.0)).round() };
        let write = if u4 < 0.5 { 0.0 } else { (burst(u1, u2 * 400_000.0, u2 * 40_000_000.0)).round() };

        let ts = self.ts;
        self.ts += self.step_ms;
        let mut values = [0.0; METRIC_COUNT];
        for m in Metric::ALL {
            values[m.index()] = match m {
                Metric::CpuUsagePercent => cpu,
                Metric::CpuLoad1 => load[0],
                Metric::CpuLoad5 => load[1],
                Metric::CpuLoad15 => load[2],
                Metric::MemoryUsedBytes => used,
                Metric::MemoryAvailableBytes => MEM_TOTAL - used,
                Metric::MemoryUsagePercent => used / MEM_TOTAL * 100.0,
                Metric::SwapUsedBytes => self.swap,
                Metric::NetworkRxBytesPerSec => rx,
                Metric::NetworkTxBytesPerSec => tx,
                Metric::DiskReadBytesPerSec => read,
                Metric::DiskWriteBytesPerSec => write,
                Metric::ProcessCount => self.procs,
            };
        }
        HistorySample { timestamp: UnixMillis(ts), values, containers: Vec::new() }
    }

    /// The next `n` samples.
    pub fn take(&mut self, n: usize) -> Vec<HistorySample> {
        (0..n).map(|_| self.next_sample()).collect()
    }
}

/// Bytes the database file takes once its WAL is folded in: closes the
/// store (which checkpoints with TRUNCATE) and reads the file size.
pub async fn size_after_close(store: SqliteStore) -> u64 {
    let path = store.path().to_path_buf();
    store.close().await.expect("close");
    std::fs::metadata(&path).expect("database file").len()
}
