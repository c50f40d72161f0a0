//! One reading of a container's counters, and its domain form.

use homeserver_domain::ContainerStats;

/// What the kernel accounts for one container at one instant.
///
/// Counters (`cpu_usage_ns`, block and network bytes) are cumulative since
/// the cgroup or the network namespace was created; gauges (`memory_bytes`,
/// `pids`) are current values. A figure whose file does not exist (the
/// controller is not mounted, the cgroup just went away) is 0 or `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupSample {
    /// CPU time used by every task of the cgroup, in nanoseconds
    /// (v1 `cpuacct.usage`; v2 `cpu.stat` `usage_usec` × 1000).
    pub cpu_usage_ns: u64,
    /// Memory in use minus the inactive page cache, as `docker stats` shows
    /// it (v1 `memory.usage_in_bytes - total_inactive_file`; v2
    /// `memory.current - inactive_file`).
    pub memory_bytes: u64,
    /// The memory limit; `None` when there is none (v2 `max`, v1's huge
    /// "unlimited" value) or it is at least the host's `MemTotal`.
    pub memory_limit_bytes: Option<u64>,
    /// Bytes read from block devices (v1 `blkio`, v2 `io.stat` `rbytes`).
    pub block_read_bytes: u64,
    /// Bytes written to block devices (v1 `blkio`, v2 `io.stat` `wbytes`).
    pub block_write_bytes: u64,
    /// Tasks (processes and threads) in the cgroup (`pids.current`).
    pub pids: u64,
    /// Bytes received by every interface but `lo` of the process's network
    /// namespace (`/proc/<pid>/net/dev`).
    pub network_rx_bytes: u64,
    /// Bytes sent, likewise.
    pub network_tx_bytes: u64,
    /// The process shares the network namespace of the host's pid 1 (Docker
    /// `--network host`, LXC `lxc.net.0.type = none`): the network counters
    /// are then the host's, not the container's. `false` when unknown.
    pub host_network: bool,
}

impl CgroupSample {
    /// The domain's figures for this sample, with `cpu_percent` from a
    /// [`CpuMeter`](crate::CpuMeter).
    ///
    /// `id`, `name`, `runtime` and `state` are left empty for the caller,
    /// who knows the container. A container on the host's network reports
    /// 0 network bytes, as `docker stats` does, rather than the host's
    /// traffic.
    pub fn to_stats(&self, cpu_percent: f64) -> ContainerStats {
        let (network_rx_bytes, network_tx_bytes) =
            if self.host_network { (0, 0) } else { (self.network_rx_bytes, self.network_tx_bytes) };
        ContainerStats {
            cpu_percent,
            memory_bytes: self.memory_bytes,
            memory_limit_bytes: self.memory_limit_bytes,
            network_rx_bytes,
            network_tx_bytes,
            block_read_bytes: self.block_read_bytes,
            block_write_bytes: self.block_write_bytes,
            pids: self.pids,
            ..ContainerStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CgroupSample {
        CgroupSample {
            cpu_usage_ns: 1,
            memory_bytes: 2,
            memory_limit_bytes: Some(3),
            block_read_bytes: 4,
            block_write_bytes: 5,
            pids: 6,
            network_rx_bytes: 7,
            network_tx_bytes: 8,
            host_network: false,
        }
    }

    #[test]
    fn to_stats_copies_every_figure_and_leaves_identity_empty() {
        let stats = sample().to_stats(12.5);
        let expected = ContainerStats {
            id: String::new(),
            name: String::new(),
            runtime: String::new(),
            state: String::new(),
            cpu_percent: 12.5,
            memory_bytes: 2,
            memory_limit_bytes: Some(3),
            network_rx_bytes: 7,
            network_tx_bytes: 8,
            block_read_bytes: 4,
            block_write_bytes: 5,
            pids: 6,
        };
        assert_eq!(stats, expected);
    }

    #[test]
    fn to_stats_hides_the_hosts_traffic() {
        let stats = CgroupSample { host_network: true, ..sample() }.to_stats(0.0);
        assert_eq!((stats.network_rx_bytes, stats.network_tx_bytes), (0, 0));
        assert_eq!(stats.block_read_bytes, 4);
    }
}
