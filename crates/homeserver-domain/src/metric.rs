//! The host metrics kept in history, and the compact sample that carries them.

use std::fmt;
use std::str::FromStr;

use crate::container_history::ContainerSample;
use crate::snapshot::Snapshot;
use crate::time::UnixMillis;

/// Unit of a metric's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Unit {
    /// 0..=100.
    Percent,
    /// Bytes.
    Bytes,
    /// Bytes per second.
    BytesPerSecond,
    /// Run-queue length (load average).
    Load,
    /// A plain count.
    Count,
}

impl Unit {
    /// The unit's wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Percent => "percent",
            Self::Bytes => "bytes",
            Self::BytesPerSecond => "bytes_per_sec",
            Self::Load => "load",
            Self::Count => "count",
        }
    }
}

/// Something history keeps a series of: the host's [`Metric`]s and the
/// per-container [`ContainerMetric`](crate::container_history::ContainerMetric)s.
///
/// Queries ([`HistoryQuery`](crate::history::HistoryQuery)), tier choice
/// ([`BucketPlan`](crate::history::BucketPlan)) and answers
/// ([`Series`](crate::history::Series)) are generic over it, so both kinds of
/// history are validated, planned and answered the same way.
pub trait HistoryMetric:
    Copy + Eq + Ord + std::hash::Hash + fmt::Debug + fmt::Display + FromStr<Err = UnknownMetric> + Send + Sync + 'static
{
    /// Every metric of the set, in storage order.
    const ALL: &'static [Self];

    /// The wire name.
    fn name(self) -> &'static str;

    /// The unit of its values.
    fn unit(self) -> Unit;

    /// Position in [`HistoryMetric::ALL`] and in a sample's values.
    fn index(self) -> usize;
}

/// Declares a closed set of history metrics: the enum, its `ALL`, `name`,
/// `unit` and `index`, `Display`, `FromStr` and [`HistoryMetric`].
macro_rules! metric_set {
    (
        $(#[$meta:meta])*
        $vis:vis enum $set:ident {
            $( $(#[$doc:meta])* $variant:ident => $name:literal, $unit:ident; )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        $vis enum $set {
            $( $(#[$doc])* $variant, )+
        }

        impl $set {
            /// Every metric, in storage order.
            pub const ALL: &'static [$set] = &[$($set::$variant),+];

            /// The wire name.
            pub const fn name(self) -> &'static str {
                match self { $($set::$variant => $name,)+ }
            }

            /// The unit of its values.
            pub const fn unit(self) -> $crate::metric::Unit {
                match self { $($set::$variant => $crate::metric::Unit::$unit,)+ }
            }

            /// Position of this metric in `ALL` and in a sample's values.
            pub const fn index(self) -> usize {
                // `ALL` lists every variant in declaration order, so the discriminant is the index.
                self as usize
            }
        }

        impl ::std::fmt::Display for $set {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::std::str::FromStr for $set {
            type Err = $crate::metric::UnknownMetric;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $set::ALL
                    .iter()
                    .copied()
                    .find(|m| m.name() == s)
                    .ok_or_else(|| $crate::metric::UnknownMetric(s.to_owned()))
            }
        }

        impl $crate::metric::HistoryMetric for $set {
            const ALL: &'static [Self] = $set::ALL;

            fn name(self) -> &'static str {
                $set::name(self)
            }

            fn unit(self) -> $crate::metric::Unit {
                $set::unit(self)
            }

            fn index(self) -> usize {
                $set::index(self)
            }
        }
    };
}
pub(crate) use metric_set;

metric_set! {
    /// A host metric kept in history.
    ///
    /// The set is closed: adding one means a migration (a column per
    /// metric) and a line here, nothing else.
    pub enum Metric {
        /// Busy share of all cores.
        CpuUsagePercent => "cpu.usage_percent", Percent;
        /// One-minute load average.
        CpuLoad1 => "cpu.load1", Load;
        /// Five-minute load average.
        CpuLoad5 => "cpu.load5", Load;
        /// Fifteen-minute load average.
        CpuLoad15 => "cpu.load15", Load;
        /// Memory in use (`MemTotal - MemAvailable`).
        MemoryUsedBytes => "memory.used_bytes", Bytes;
        /// Memory available (`MemAvailable`).
        MemoryAvailableBytes => "memory.available_bytes", Bytes;
        /// Memory in use as a share of the total.
        MemoryUsagePercent => "memory.usage_percent", Percent;
        /// Swap in use.
        SwapUsedBytes => "swap.used_bytes", Bytes;
        /// Receive rate over every interface but loopback.
        NetworkRxBytesPerSec => "network.rx_bytes_per_sec", BytesPerSecond;
        /// Send rate over every interface but loopback.
        NetworkTxBytesPerSec => "network.tx_bytes_per_sec", BytesPerSecond;
        /// Read rate over every whole block device.
        DiskReadBytesPerSec => "disk.read_bytes_per_sec", BytesPerSecond;
        /// Write rate over every whole block device.
        DiskWriteBytesPerSec => "disk.write_bytes_per_sec", BytesPerSecond;
        /// Processes alive.
        ProcessCount => "system.process_count", Count;
    }
}

impl Metric {
    /// The metric's value in a snapshot.
    pub fn value_in(self, s: &Snapshot) -> f64 {
        let non_loopback = || s.networks.iter().filter(|n| !n.is_loopback);
        match self {
            Self::CpuUsagePercent => s.cpu.usage_percent,
            Self::CpuLoad1 => s.cpu.load_average.one,
            Self::CpuLoad5 => s.cpu.load_average.five,
            Self::CpuLoad15 => s.cpu.load_average.fifteen,
            Self::MemoryUsedBytes => s.memory.used_bytes as f64,
            Self::MemoryAvailableBytes => s.memory.available_bytes as f64,
            Self::MemoryUsagePercent => s.memory.usage_percent,
            Self::SwapUsedBytes => s.memory.swap_used_bytes as f64,
            Self::NetworkRxBytesPerSec => non_loopback().map(|n| n.rx_bytes_per_sec).sum(),
            Self::NetworkTxBytesPerSec => non_loopback().map(|n| n.tx_bytes_per_sec).sum(),
            Self::DiskReadBytesPerSec => s.block_devices.iter().map(|d| d.read_bytes_per_sec).sum(),
            Self::DiskWriteBytesPerSec => s.block_devices.iter().map(|d| d.write_bytes_per_sec).sum(),
            Self::ProcessCount => s.system.process_count as f64,
        }
    }
}

/// A metric name that is not in [`Metric::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric `{0}`")]
pub struct UnknownMetric(pub String);

/// Number of history metrics.
pub const METRIC_COUNT: usize = Metric::ALL.len();

/// The part of a snapshot that history keeps: one value per [`Metric`] for
/// the host, and one [`ContainerSample`] per measured container.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HistorySample {
    /// When the snapshot was taken.
    pub timestamp: UnixMillis,
    /// Values indexed by [`Metric::index`].
    pub values: [f64; METRIC_COUNT],
    /// The containers' rows, saved in the same transaction as the host's.
    pub containers: Vec<ContainerSample>,
}

impl HistorySample {
    /// Extracts the host metrics of a snapshot; `containers` stays empty
    /// (their rates need the previous sample: see
    /// [`ContainerRates::observe`](crate::container_history::ContainerRates::observe)).
    pub fn from_snapshot(s: &Snapshot) -> Self {
        let mut values = [0.0; METRIC_COUNT];
        for m in Metric::ALL {
            values[m.index()] = m.value_in(s);
        }
        Self { timestamp: s.timestamp, values, containers: Vec::new() }
    }

    /// The value of one metric.
    pub fn get(&self, metric: Metric) -> f64 {
        self.values[metric.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{BlockDeviceStats, NetworkStats};

    #[test]
    fn names_round_trip_and_indexes_match_positions() {
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
            assert_eq!(m.name().parse::<Metric>(), Ok(*m));
        }
        assert!("cpu.nope".parse::<Metric>().is_err());
    }

    #[test]
    fn contract_metric_names_exist() {
        for name in [
            "cpu.usage_percent",
            "cpu.load1",
            "memory.used_bytes",
            "memory.usage_percent",
            "swap.used_bytes",
            "network.rx_bytes_per_sec",
            "network.tx_bytes_per_sec",
            "disk.read_bytes_per_sec",
            "disk.write_bytes_per_sec",
        ] {
            assert!(name.parse::<Metric>().is_ok(), "{name}");
        }
    }

    #[test]
    fn network_rates_skip_loopback_and_disks_sum_devices() {
        let s = Snapshot {
            networks: vec![
                NetworkStats {
                    interface: "lo".into(),
                    rx_bytes_per_sec: 1000.0,
                    is_loopback: true,
                    ..Default::default()
                },
                NetworkStats {
                    interface: "eth0".into(),
                    rx_bytes_per_sec: 10.0,
                    tx_bytes_per_sec: 4.0,
                    ..Default::default()
                },
                NetworkStats { interface: "eth1".into(), rx_bytes_per_sec: 5.0, ..Default::default() },
            ],
            block_devices: vec![
                BlockDeviceStats {
                    name: "vda".into(),
                    read_bytes_per_sec: 7.0,
                    write_bytes_per_sec: 1.0,
                    ..Default::default()
                },
                BlockDeviceStats {
                    name: "vdb".into(),
                    read_bytes_per_sec: 3.0,
                    write_bytes_per_sec: 2.0,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let h = HistorySample::from_snapshot(&s);
        assert_eq!(h.get(Metric::NetworkRxBytesPerSec), 15.0);
        assert_eq!(h.get(Metric::NetworkTxBytesPerSec), 4.0);
        assert_eq!(h.get(Metric::DiskReadBytesPerSec), 10.0);
        assert_eq!(h.get(Metric::DiskWriteBytesPerSec), 3.0);
    }
}
