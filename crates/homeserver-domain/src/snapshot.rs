//! What one look at the host sees: the snapshot and the static host facts.

use crate::time::UnixMillis;

/// Everything the sampler saw of the host at one instant.
///
/// Rates (`*_per_sec`) are computed from the difference with the previous
/// sample of the same source; the first sample of a source reports them as 0.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Snapshot {
    /// When the sample was taken.
    pub timestamp: UnixMillis,
    /// Processor figures.
    pub cpu: CpuStats,
    /// Memory and swap figures.
    pub memory: MemoryStats,
    /// Mounted file systems backed by a block device.
    pub disks: Vec<DiskStats>,
    /// Whole block devices (not partitions) with their I/O counters.
    pub block_devices: Vec<BlockDeviceStats>,
    /// Network interfaces with their counters.
    pub networks: Vec<NetworkStats>,
    /// Host-wide figures.
    pub system: SystemStats,
    /// Per-container figures (empty until a container runtime is wired).
    pub containers: Vec<ContainerStats>,
}

/// Processor figures.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CpuStats {
    /// Busy share of all logical cores, 0..=100.
    pub usage_percent: f64,
    /// Busy share of each logical core, 0..=100 each.
    pub per_core_percent: Vec<f64>,
    /// Logical cores (hardware threads) online.
    pub logical_cores: u32,
    /// Physical cores, when the kernel tells.
    pub physical_cores: Option<u32>,
    /// Model name of the first processor.
    pub model: String,
    /// Current frequency of the first core in MHz (0 when unknown).
    pub frequency_mhz: u64,
    /// Load averages from `/proc/loadavg`.
    pub load_average: LoadAverage,
    /// Hottest CPU sensor, when the host has one.
    pub temperature_celsius: Option<f64>,
}

/// The kernel's 1, 5 and 15 minute load averages.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LoadAverage {
    /// One-minute load average.
    pub one: f64,
    /// Five-minute load average.
    pub five: f64,
    /// Fifteen-minute load average.
    pub fifteen: f64,
}

/// Memory figures as `/proc/meminfo` accounts them.
///
/// `used_bytes` is `MemTotal - MemAvailable`, the memory that cannot be
/// reclaimed without swapping (what `free` calls used since procps 4 and
/// what sysinfo, Glances and Beszel report).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MemoryStats {
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

/// A mounted file system.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DiskStats {
    /// Device name as mounted (`/dev/vda1`).
    pub name: String,
    /// Mount point.
    pub mount_point: String,
    /// File system type (`ext4`).
    pub file_system: String,
    /// Size from `statvfs` (`f_blocks * f_frsize`).
    pub total_bytes: u64,
    /// `total - free` (`f_bfree`), as `df` counts it.
    pub used_bytes: u64,
    /// Space available to unprivileged users (`f_bavail`).
    pub available_bytes: u64,
    /// `used / (used + available) * 100`, as `df` rounds it.
    pub usage_percent: f64,
    /// Read rate of the backing block device.
    pub read_bytes_per_sec: f64,
    /// Write rate of the backing block device.
    pub write_bytes_per_sec: f64,
}

/// A whole block device (from `/sys/block` and `/proc/diskstats`).
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BlockDeviceStats {
    /// Kernel name (`vda`, `nvme0n1`).
    pub name: String,
    /// Model string, when the device reports one.
    pub model: Option<String>,
    /// Capacity in bytes.
    pub size_bytes: u64,
    /// Bytes read since boot.
    pub read_bytes_total: u64,
    /// Bytes written since boot.
    pub write_bytes_total: u64,
    /// Read rate.
    pub read_bytes_per_sec: f64,
    /// Write rate.
    pub write_bytes_per_sec: f64,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NetworkStats {
    /// Interface name.
    pub interface: String,
    /// Bytes received since the interface came up.
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
    /// Hardware address, when the interface has one.
    pub mac_address: Option<String>,
    /// IPv4 addresses.
    pub ipv4: Vec<String>,
    /// IPv6 addresses.
    pub ipv6: Vec<String>,
    /// Link speed in Mbit/s, when known.
    pub speed_mbps: Option<u64>,
    /// Operational state is up.
    pub is_up: bool,
    /// Loopback interface.
    pub is_loopback: bool,
}

/// Host-wide figures.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SystemStats {
    /// Seconds since boot (`/proc/uptime`).
    pub uptime_secs: u64,
    /// Processes (thread-group leaders) alive.
    pub process_count: u64,
    /// Kernel scheduling entities (threads) alive.
    pub thread_count: u64,
}

/// Resource use of one container, as its cgroup accounts it.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ContainerStats {
    /// homeserver's container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Runtime name (`docker`, `lxc`).
    pub runtime: String,
    /// Runtime state name.
    pub state: String,
    /// CPU use; 100 is one full core.
    pub cpu_percent: f64,
    /// Memory in use.
    pub memory_bytes: u64,
    /// Memory limit, when one is set.
    pub memory_limit_bytes: Option<u64>,
    /// Bytes received.
    pub network_rx_bytes: u64,
    /// Bytes sent.
    pub network_tx_bytes: u64,
    /// Bytes read from block devices.
    pub block_read_bytes: u64,
    /// Bytes written to block devices.
    pub block_write_bytes: u64,
    /// Processes and threads in the container.
    pub pids: u64,
}

/// Facts about the host that change rarely, if ever.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HostInfo {
    /// Host name.
    pub hostname: String,
    /// Kernel family (`Linux`).
    pub os_family: String,
    /// Distribution name (`Debian GNU/Linux`).
    pub os_name: String,
    /// Distribution version (`12`).
    pub os_version: String,
    /// Kernel release (`6.1.0-18-amd64`).
    pub kernel_version: String,
    /// Machine architecture (`x86_64`).
    pub architecture: String,
    /// Processor model name.
    pub cpu_model: String,
    /// Logical cores.
    pub logical_cores: u32,
    /// Physical cores, when known.
    pub physical_cores: Option<u32>,
    /// `MemTotal`.
    pub memory_total_bytes: u64,
    /// When the host booted.
    pub boot_time: UnixMillis,
    /// Seconds since boot when these facts were read.
    pub uptime_secs: u64,
    /// Board or system vendor, when DMI tells.
    pub system_manufacturer: Option<String>,
    /// Board or system model, when DMI tells.
    pub system_model: Option<String>,
}
