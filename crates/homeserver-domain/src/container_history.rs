//! Per-container history: the metrics kept for every container, the row a
//! snapshot adds for each one, and the rates computed from the cumulative
//! counters the runtimes report.
//!
//! A snapshot's [`ContainerStats`] carry CPU use, memory and pids as they
//! are, but network and block I/O as byte counters since the container
//! started. History keeps rates instead (bytes per second between two
//! samples), so a query bucket's avg/min/max mean what they say.
//! [`ContainerRates`] remembers each container's previous counters; the
//! [`Sampler`](crate::monitoring::Sampler) runs every snapshot through it
//! and the rows travel in [`HistorySample::containers`](crate::metric::HistorySample)
//! to the store, in the same transaction as the host's values.
//!
//! Only running and paused containers get rows: a stopped one has nothing
//! to measure, and its history shows a gap. A container's first sample
//! (new, restarted, or seen again after a stop) and a counter that went
//! down (the runtime reset it) have no rate: the value is `NaN`, stored as
//! "no value", never a made-up 0 or a huge spike.

use std::collections::HashMap;

use crate::container::ContainerState;
use crate::metric::metric_set;
use crate::snapshot::{ContainerStats, Snapshot};
use crate::time::UnixMillis;

metric_set! {
    /// A per-container metric kept in history
    /// (`GET /api/v1/containers/{id}/history?metrics=`).
    ///
    /// The set is closed: adding one means a migration (a column per
    /// metric), a line here and one in [`ContainerMetric::value`].
    pub enum ContainerMetric {
        /// CPU use; 100 is one full core.
        CpuPercent => "cpu_percent", Percent;
        /// Memory in use (the cgroup's working set).
        MemoryBytes => "memory_bytes", Bytes;
        /// Processes and threads in the container.
        Pids => "pids", Count;
        /// Bytes received per second.
        NetworkRxBytesPerSec => "network_rx_bytes_per_sec", BytesPerSecond;
        /// Bytes sent per second.
        NetworkTxBytesPerSec => "network_tx_bytes_per_sec", BytesPerSecond;
        /// Bytes read from block devices per second.
        BlockReadBytesPerSec => "block_read_bytes_per_sec", BytesPerSecond;
        /// Bytes written to block devices per second.
        BlockWriteBytesPerSec => "block_write_bytes_per_sec", BytesPerSecond;
    }
}

/// Number of per-container history metrics.
pub const CONTAINER_METRIC_COUNT: usize = ContainerMetric::ALL.len();

impl ContainerMetric {
    /// The metric's value for a container whose counters were `now` and,
    /// one sample earlier, `previous` (`None` on its first sample).
    pub fn value(self, stats: &ContainerStats, now: &Counters, previous: Option<&Counters>) -> f64 {
        let rate = |counter: fn(&Counters) -> u64| {
            previous.and_then(|p| counter_rate(counter(p), counter(now), now.at.as_millis() - p.at.as_millis()))
        };
        let value = match self {
            Self::CpuPercent => Some(stats.cpu_percent),
            Self::MemoryBytes => Some(stats.memory_bytes as f64),
            Self::Pids => Some(stats.pids as f64),
            Self::NetworkRxBytesPerSec => rate(|c| c.network_rx_bytes),
            Self::NetworkTxBytesPerSec => rate(|c| c.network_tx_bytes),
            Self::BlockReadBytesPerSec => rate(|c| c.block_read_bytes),
            Self::BlockWriteBytesPerSec => rate(|c| c.block_write_bytes),
        };
        value.unwrap_or(f64::NAN)
    }
}

/// Bytes per second from a cumulative counter read `elapsed_ms` apart.
///
/// `None` when there is no rate to tell: no time passed (or the clock went
/// back), or the counter went down, which means the runtime reset it (the
/// container restarted, its network namespace was recreated).
pub fn counter_rate(previous: u64, now: u64, elapsed_ms: i64) -> Option<f64> {
    if elapsed_ms <= 0 || now < previous {
        return None;
    }
    Some((now - previous) as f64 * 1_000.0 / elapsed_ms as f64)
}

/// One container's row of a history sample.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ContainerSample {
    /// homeserver's stable container id (the same across restarts).
    pub container_id: String,
    /// Values indexed by [`ContainerMetric::index`]; `NaN` where there is
    /// no value (a rate on the container's first sample or after a reset).
    pub values: [f64; CONTAINER_METRIC_COUNT],
}

impl ContainerSample {
    /// The value of one metric.
    pub fn get(&self, metric: ContainerMetric) -> f64 {
        self.values[metric.index()]
    }
}

/// The cumulative counters of a container at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// When they were read (the snapshot's time).
    pub at: UnixMillis,
    /// Bytes received.
    pub network_rx_bytes: u64,
    /// Bytes sent.
    pub network_tx_bytes: u64,
    /// Bytes read from block devices.
    pub block_read_bytes: u64,
    /// Bytes written to block devices.
    pub block_write_bytes: u64,
}

impl Counters {
    /// The counters of `stats`, read at `at`.
    pub fn of(stats: &ContainerStats, at: UnixMillis) -> Self {
        Self {
            at,
            network_rx_bytes: stats.network_rx_bytes,
            network_tx_bytes: stats.network_tx_bytes,
            block_read_bytes: stats.block_read_bytes,
            block_write_bytes: stats.block_write_bytes,
        }
    }
}

/// Turns the containers of successive snapshots into history rows,
/// remembering each measured container's previous counters.
///
/// Containers not measured in a snapshot (gone, stopped) are forgotten, so
/// the memory held is bounded by the containers of the last snapshot, and a
/// container that comes back starts afresh (no rate across the gap).
#[derive(Debug, Default)]
pub struct ContainerRates {
    previous: HashMap<String, Counters>,
}

impl ContainerRates {
    /// A tracker that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only these states are measured; a stopped container's figures are
    /// all zero and say nothing.
    fn measured(state: &str) -> bool {
        state == ContainerState::Running.as_str() || state == ContainerState::Paused.as_str()
    }

    /// The history rows of `snapshot`'s running and paused containers.
    pub fn observe(&mut self, snapshot: &Snapshot) -> Vec<ContainerSample> {
        let mut rows = Vec::with_capacity(snapshot.containers.len());
        let mut seen = HashMap::with_capacity(snapshot.containers.len());
        for stats in &snapshot.containers {
            if stats.id.is_empty() || !Self::measured(&stats.state) || seen.contains_key(&stats.id) {
                continue;
            }
            let now = Counters::of(stats, snapshot.timestamp);
            let previous = self.previous.get(&stats.id);
            let mut values = [f64::NAN; CONTAINER_METRIC_COUNT];
            for m in ContainerMetric::ALL {
                values[m.index()] = m.value(stats, &now, previous);
            }
            rows.push(ContainerSample { container_id: stats.id.clone(), values });
            seen.insert(stats.id.clone(), now);
        }
        self.previous = seen;
        rows
    }

    /// Containers whose counters are remembered.
    pub fn tracked(&self) -> usize {
        self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(id: &str, state: &str, rx: u64, write: u64) -> ContainerStats {
        ContainerStats {
            id: id.into(),
            state: state.into(),
            cpu_percent: 12.5,
            memory_bytes: 4 << 20,
            pids: 3,
            network_rx_bytes: rx,
            network_tx_bytes: rx / 2,
            block_read_bytes: 0,
            block_write_bytes: write,
            ..Default::default()
        }
    }

    fn snapshot(at: i64, containers: Vec<ContainerStats>) -> Snapshot {
        Snapshot { timestamp: UnixMillis(at), containers, ..Default::default() }
    }

    #[test]
    fn names_round_trip_indexes_match_and_contract_names_exist() {
        for (i, m) in ContainerMetric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
            assert_eq!(m.name().parse::<ContainerMetric>(), Ok(*m));
        }
        for name in ["cpu_percent", "memory_bytes", "pids"] {
            assert!(name.parse::<ContainerMetric>().is_ok(), "{name}");
        }
        // The host's names are not container metrics, and the other way round.
        assert!("cpu.usage_percent".parse::<ContainerMetric>().is_err());
        assert!("cpu_percent".parse::<crate::Metric>().is_err());
    }

    #[test]
    fn counter_rate_is_bytes_per_second_and_refuses_resets_and_stuck_clocks() {
        assert_eq!(counter_rate(1_000, 3_000, 1_000), Some(2_000.0));
        assert_eq!(counter_rate(1_000, 2_000, 250), Some(4_000.0));
        assert_eq!(counter_rate(5, 5, 1_000), Some(0.0));
        assert_eq!(counter_rate(3_000, 1_000, 1_000), None, "a counter that went down was reset");
        assert_eq!(counter_rate(1_000, 3_000, 0), None);
        assert_eq!(counter_rate(1_000, 3_000, -1_000), None, "the clock stepped back");
        // Near the top of the range: no overflow.
        assert_eq!(counter_rate(u64::MAX - 1_000, u64::MAX, 1_000), Some(1_000.0));
    }

    #[test]
    fn first_sample_has_no_rates_but_every_gauge() {
        let mut rates = ContainerRates::new();
        let rows = rates.observe(&snapshot(10_000, vec![stats("a", "running", 5_000, 100)]));
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.container_id, "a");
        assert_eq!(r.get(ContainerMetric::CpuPercent), 12.5);
        assert_eq!(r.get(ContainerMetric::MemoryBytes), (4 << 20) as f64);
        assert_eq!(r.get(ContainerMetric::Pids), 3.0);
        for m in [
            ContainerMetric::NetworkRxBytesPerSec,
            ContainerMetric::NetworkTxBytesPerSec,
            ContainerMetric::BlockReadBytesPerSec,
            ContainerMetric::BlockWriteBytesPerSec,
        ] {
            assert!(r.get(m).is_nan(), "{m} has no rate on the first sample");
        }
    }

    #[test]
    fn rates_follow_consecutive_samples_and_a_reset_gives_no_value_once() {
        let mut rates = ContainerRates::new();
        rates.observe(&snapshot(10_000, vec![stats("a", "running", 5_000, 100)]));
        // 500 ms later: 2,000 more bytes received, 50 more written.
        let r = rates.observe(&snapshot(10_500, vec![stats("a", "running", 7_000, 150)])).remove(0);
        assert_eq!(r.get(ContainerMetric::NetworkRxBytesPerSec), 4_000.0);
        assert_eq!(r.get(ContainerMetric::NetworkTxBytesPerSec), 2_000.0);
        assert_eq!(r.get(ContainerMetric::BlockReadBytesPerSec), 0.0);
        assert_eq!(r.get(ContainerMetric::BlockWriteBytesPerSec), 100.0);
        // The runtime reset its counters (restart inside one interval).
        let r = rates.observe(&snapshot(11_500, vec![stats("a", "running", 300, 150)])).remove(0);
        assert!(r.get(ContainerMetric::NetworkRxBytesPerSec).is_nan());
        assert!(r.get(ContainerMetric::NetworkTxBytesPerSec).is_nan());
        assert_eq!(r.get(ContainerMetric::BlockWriteBytesPerSec), 0.0, "counters that did not reset keep their rate");
        // The next sample rates from the reset value again.
        let r = rates.observe(&snapshot(12_500, vec![stats("a", "running", 1_300, 150)])).remove(0);
        assert_eq!(r.get(ContainerMetric::NetworkRxBytesPerSec), 1_000.0);
    }

    #[test]
    fn only_running_and_paused_containers_are_measured_and_gone_ones_are_forgotten() {
        let mut rates = ContainerRates::new();
        let rows = rates.observe(&snapshot(
            1_000,
            vec![
                stats("run", "running", 0, 0),
                stats("pause", "paused", 0, 0),
                stats("stop", "stopped", 0, 0),
                stats("", "running", 0, 0),
                stats("run", "running", 9, 9),
            ],
        ));
        let ids: Vec<_> = rows.iter().map(|r| r.container_id.as_str()).collect();
        assert_eq!(ids, ["run", "pause"], "stopped, id-less and repeated entries get no row");
        assert_eq!(rates.tracked(), 2);
        // "run" stops for a sample, then runs again: no rate across the gap.
        rates.observe(&snapshot(2_000, vec![stats("run", "stopped", 0, 0)]));
        assert_eq!(rates.tracked(), 0);
        let r = rates.observe(&snapshot(3_000, vec![stats("run", "running", 1_000_000, 0)])).remove(0);
        assert!(r.get(ContainerMetric::NetworkRxBytesPerSec).is_nan());
    }

    #[test]
    fn a_snapshot_at_the_same_instant_gives_no_rate() {
        let mut rates = ContainerRates::new();
        rates.observe(&snapshot(1_000, vec![stats("a", "running", 0, 0)]));
        let r = rates.observe(&snapshot(1_000, vec![stats("a", "running", 10, 0)])).remove(0);
        assert!(r.get(ContainerMetric::NetworkRxBytesPerSec).is_nan());
    }
}
