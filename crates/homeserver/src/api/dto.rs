//! Wire types of the native v1 API (snake_case) and their conversions from
//! domain types. Nothing else in the crate serialises domain types directly.

use homeserver_domain::{
    ContainerStats, CpuStats, DiskStats, HistoryMetric, HistoryResult, HostInfo, MemoryStats, Metric, NetworkStats,
    Snapshot, SystemStats, UnixMillis,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

/// RFC 3339 UTC text of an instant (`2026-11-21T10:00:00Z`, with fractional
/// seconds when there are any).
pub fn rfc3339(t: UnixMillis) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.as_millis()) * 1_000_000)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Parses RFC 3339 text or Unix milliseconds.
pub fn parse_instant(s: &str) -> Option<UnixMillis> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(UnixMillis(ms));
    }
    let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(dt.unix_timestamp_nanos() / 1_000_000).ok().map(UnixMillis)
}

/// The latest host snapshot.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SnapshotDto {
    /// When it was taken (RFC 3339).
    #[schema(example = "2026-11-21T10:00:00Z")]
    pub timestamp: String,
    /// Processor.
    pub cpu: CpuDto,
    /// Memory and swap.
    pub memory: MemoryDto,
    /// Mounted file systems.
    pub disks: Vec<DiskDto>,
    /// Network interfaces.
    pub networks: Vec<NetworkDto>,
    /// Host-wide figures.
    pub system: SystemDto,
    /// Containers (empty until a runtime is configured).
    pub containers: Vec<ContainerStatsDto>,
}

/// Processor figures.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CpuDto {
    /// Busy share of all cores, 0..100.
    pub usage_percent: f64,
    /// Busy share per logical core, 0..100 each.
    pub per_core_percent: Vec<f64>,
    /// Logical cores.
    pub logical_cores: u32,
    /// Physical cores, when known.
    pub physical_cores: Option<u32>,
    /// Model name.
    pub model: String,
    /// Frequency of the first core in MHz (0 when unknown).
    pub frequency_mhz: u64,
    /// Load averages.
    pub load_average: LoadAverageDto,
    /// Hottest CPU sensor, when the host has one.
    pub temperature_celsius: Option<f64>,
}

/// Load averages.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoadAverageDto {
    /// One minute.
    pub one: f64,
    /// Five minutes.
    pub five: f64,
    /// Fifteen minutes.
    pub fifteen: f64,
}

/// Memory as `/proc/meminfo` accounts it; `used_bytes = MemTotal - MemAvailable`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemoryDto {
    /// `MemTotal`.
    pub total_bytes: u64,
    /// `MemTotal - MemAvailable`.
    pub used_bytes: u64,
    /// `MemAvailable`.
    pub available_bytes: u64,
    /// `used / total * 100`.
    pub usage_percent: f64,
    /// `SwapTotal`.
    pub swap_total_bytes: u64,
    /// `SwapTotal - SwapFree`.
    pub swap_used_bytes: u64,
}

/// A mounted file system (figures from `statvfs`, rates from `/proc/diskstats`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DiskDto {
    /// Device.
    pub name: String,
    /// Mount point.
    pub mount_point: String,
    /// File system type.
    pub file_system: String,
    /// Size.
    pub total_bytes: u64,
    /// Used (`total - free`).
    pub used_bytes: u64,
    /// Available to unprivileged users.
    pub available_bytes: u64,
    /// `used / (used + available) * 100`, as `df`.
    pub usage_percent: f64,
    /// Read rate of the backing device.
    pub read_bytes_per_sec: f64,
    /// Write rate of the backing device.
    pub write_bytes_per_sec: f64,
}

/// A network interface (counters from `/proc/net/dev`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NetworkDto {
    /// Interface name.
    pub interface: String,
    /// Bytes received.
    pub rx_bytes_total: u64,
    /// Bytes sent.
    pub tx_bytes_total: u64,
    /// Receive rate.
    pub rx_bytes_per_sec: f64,
    /// Send rate.
    pub tx_bytes_per_sec: f64,
    /// Packets received.
    pub rx_packets_total: u64,
    /// Packets sent.
    pub tx_packets_total: u64,
    /// Receive errors.
    pub rx_errors_total: u64,
    /// Send errors.
    pub tx_errors_total: u64,
}

/// Host-wide figures.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SystemDto {
    /// Seconds since boot.
    pub uptime_secs: u64,
    /// Processes alive.
    pub process_count: u64,
}

/// Resource use of one container.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContainerStatsDto {
    /// Container id.
    pub id: String,
    /// Name.
    pub name: String,
    /// `docker` or `lxc`.
    pub runtime: String,
    /// State.
    pub state: String,
    /// CPU use; 100 is one full core.
    pub cpu_percent: f64,
    /// Memory in use.
    pub memory_bytes: u64,
    /// Memory limit, when set.
    pub memory_limit_bytes: Option<u64>,
    /// Bytes received.
    pub network_rx_bytes: u64,
    /// Bytes sent.
    pub network_tx_bytes: u64,
    /// Bytes read.
    pub block_read_bytes: u64,
    /// Bytes written.
    pub block_write_bytes: u64,
    /// Processes and threads.
    pub pids: u64,
}

impl From<&Snapshot> for SnapshotDto {
    fn from(s: &Snapshot) -> Self {
        Self {
            timestamp: rfc3339(s.timestamp),
            cpu: (&s.cpu).into(),
            memory: (&s.memory).into(),
            disks: s.disks.iter().map(Into::into).collect(),
            networks: s.networks.iter().map(Into::into).collect(),
            system: (&s.system).into(),
            containers: s.containers.iter().map(Into::into).collect(),
        }
    }
}

impl From<&CpuStats> for CpuDto {
    fn from(c: &CpuStats) -> Self {
        Self {
            usage_percent: c.usage_percent,
            per_core_percent: c.per_core_percent.clone(),
            logical_cores: c.logical_cores,
            physical_cores: c.physical_cores,
            model: c.model.clone(),
            frequency_mhz: c.frequency_mhz,
            load_average: LoadAverageDto {
                one: c.load_average.one,
                five: c.load_average.five,
                fifteen: c.load_average.fifteen,
            },
            temperature_celsius: c.temperature_celsius,
        }
    }
}

impl From<&MemoryStats> for MemoryDto {
    fn from(m: &MemoryStats) -> Self {
        Self {
            total_bytes: m.total_bytes,
            used_bytes: m.used_bytes,
            available_bytes: m.available_bytes,
            usage_percent: m.usage_percent,
            swap_total_bytes: m.swap_total_bytes,
            swap_used_bytes: m.swap_used_bytes,
        }
    }
}

impl From<&DiskStats> for DiskDto {
    fn from(d: &DiskStats) -> Self {
        Self {
            name: d.name.clone(),
            mount_point: d.mount_point.clone(),
            file_system: d.file_system.clone(),
            total_bytes: d.total_bytes,
            used_bytes: d.used_bytes,
            available_bytes: d.available_bytes,
            usage_percent: d.usage_percent,
            read_bytes_per_sec: d.read_bytes_per_sec,
            write_bytes_per_sec: d.write_bytes_per_sec,
        }
    }
}

impl From<&NetworkStats> for NetworkDto {
    fn from(n: &NetworkStats) -> Self {
        Self {
            interface: n.interface.clone(),
            rx_bytes_total: n.rx_bytes_total,
            tx_bytes_total: n.tx_bytes_total,
            rx_bytes_per_sec: n.rx_bytes_per_sec,
            tx_bytes_per_sec: n.tx_bytes_per_sec,
            rx_packets_total: n.rx_packets_total,
            tx_packets_total: n.tx_packets_total,
            rx_errors_total: n.rx_errors_total,
            tx_errors_total: n.tx_errors_total,
        }
    }
}

impl From<&SystemStats> for SystemDto {
    fn from(s: &SystemStats) -> Self {
        Self { uptime_secs: s.uptime_secs, process_count: s.process_count }
    }
}

impl From<&ContainerStats> for ContainerStatsDto {
    fn from(c: &ContainerStats) -> Self {
        Self {
            id: c.id.clone(),
            name: c.name.clone(),
            runtime: c.runtime.clone(),
            state: c.state.clone(),
            cpu_percent: c.cpu_percent,
            memory_bytes: c.memory_bytes,
            memory_limit_bytes: c.memory_limit_bytes,
            network_rx_bytes: c.network_rx_bytes,
            network_tx_bytes: c.network_tx_bytes,
            block_read_bytes: c.block_read_bytes,
            block_write_bytes: c.block_write_bytes,
            pids: c.pids,
        }
    }
}

/// Static facts about the host.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SystemInfoDto {
    /// Host name.
    pub hostname: String,
    /// Distribution name.
    pub os_name: String,
    /// Distribution version.
    pub os_version: String,
    /// Kernel release.
    pub kernel_version: String,
    /// Machine architecture.
    pub architecture: String,
    /// Processor model.
    pub cpu_model: String,
    /// Logical cores.
    pub logical_cores: u32,
    /// Physical cores, when known.
    pub physical_cores: Option<u32>,
    /// `MemTotal`.
    pub memory_total_bytes: u64,
    /// Boot time (RFC 3339).
    pub boot_time: String,
    /// Seconds since boot, now.
    pub uptime_secs: u64,
}

impl SystemInfoDto {
    /// The DTO of `info`, with the uptime as of `now`.
    pub fn new(info: &HostInfo, now: UnixMillis) -> Self {
        let uptime = if info.boot_time.as_millis() > 0 {
            u64::try_from((now.as_millis() - info.boot_time.as_millis()) / 1000).unwrap_or(info.uptime_secs)
        } else {
            info.uptime_secs
        };
        Self {
            hostname: info.hostname.clone(),
            os_name: info.os_name.clone(),
            os_version: info.os_version.clone(),
            kernel_version: info.kernel_version.clone(),
            architecture: info.architecture.clone(),
            cpu_model: info.cpu_model.clone(),
            logical_cores: info.logical_cores,
            physical_cores: info.physical_cores,
            memory_total_bytes: info.memory_total_bytes,
            boot_time: rfc3339(info.boot_time),
            uptime_secs: uptime,
        }
    }
}

/// Aggregated history of host metrics (`/system/history`) or of one
/// container's (`/containers/{id}/history`): the same shape for both.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryDto {
    /// Start of the range (RFC 3339).
    pub from: String,
    /// End of the range (RFC 3339, exclusive).
    pub to: String,
    /// Width of one point's bucket in milliseconds.
    pub step_ms: i64,
    /// One series per metric asked for.
    pub series: Vec<SeriesDto>,
}

/// The points of one metric.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SeriesDto {
    /// Metric name.
    pub metric: String,
    /// Unit of the values.
    pub unit: String,
    /// `[t_ms, avg, min, max]` per non-empty bucket, oldest first.
    #[schema(value_type = Vec<Vec<f64>>, example = json!([[1763719200000_i64, 12.5, 3.0, 40.25]]))]
    pub points: Vec<(i64, f64, f64, f64)>,
}

impl<M: HistoryMetric> From<&HistoryResult<M>> for HistoryDto {
    fn from(r: &HistoryResult<M>) -> Self {
        Self {
            from: rfc3339(r.plan.from),
            to: rfc3339(r.plan.to),
            step_ms: r.plan.step_ms,
            series: r
                .series
                .iter()
                .map(|s| SeriesDto {
                    metric: s.metric.name().to_owned(),
                    unit: s.metric.unit().as_str().to_owned(),
                    points: s.points.iter().map(|p| (p.t.as_millis(), p.avg, p.min, p.max)).collect(),
                })
                .collect(),
        }
    }
}

/// A metric history can be asked for.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MetricDto {
    /// Name to pass in `metrics=`.
    pub name: String,
    /// Unit of its values.
    pub unit: String,
}

impl From<Metric> for MetricDto {
    fn from(m: Metric) -> Self {
        Self { name: m.name().to_owned(), unit: m.unit().as_str().to_owned() }
    }
}

/// The metrics history keeps.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MetricListDto {
    /// Every metric.
    pub items: Vec<MetricDto>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_format_and_parse_both_ways() {
        assert_eq!(rfc3339(UnixMillis(1_763_719_200_000)), "2025-11-21T10:00:00Z");
        assert_eq!(rfc3339(UnixMillis(1_763_719_200_250)), "2025-11-21T10:00:00.25Z");
        assert_eq!(parse_instant("2025-11-21T10:00:00Z"), Some(UnixMillis(1_763_719_200_000)));
        assert_eq!(parse_instant("2025-11-21T11:00:00+01:00"), Some(UnixMillis(1_763_719_200_000)));
        assert_eq!(parse_instant("1763719200000"), Some(UnixMillis(1_763_719_200_000)));
        assert_eq!(parse_instant("yesterday"), None);
        assert_eq!(parse_instant("2025-13-01T00:00:00Z"), None);
    }
}
