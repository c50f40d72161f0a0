//! Container resource use.
//!
//! First choice: the container's cgroup files, read through
//! `homeserver-cgroup` from its init pid (microseconds per container, no
//! daemon round trip), with a [`CpuMeter`] per container. Fallback, when
//! the cgroup files cannot be read (homeserver in another cgroup or pid
//! namespace, unusual layout): Docker's stats API (`one_shot`), with CPU
//! deltas taken between our own samples.
//!
//! `GET /containers/{id}/stats?stream=false` makes the daemon sample twice
//! a second apart (~1–2 s per call); `one_shot=true` answers in tens of ms
//! but leaves `precpu_stats` empty, so we keep the previous CPU counters per
//! container and compute the percentage ourselves, the way the docker CLI's
//! `calculateCPUPercentUnix` does.

use std::collections::HashMap;
use std::time::Instant;

use bollard::models::ContainerStatsResponse;
use homeserver_cgroup::CpuMeter;
use homeserver_domain::{ContainerState, ContainerStats};

/// CPU counters of one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CpuSample {
    /// Container CPU time, ns.
    pub(crate) total_ns: u64,
    /// Host CPU time, ns (Docker's `system_cpu_usage`).
    pub(crate) system_ns: u64,
    /// CPUs online.
    pub(crate) online: u32,
    /// When we took it.
    pub(crate) at: Instant,
}

/// The CPU counters of a stats response.
pub(crate) fn cpu_sample(s: &ContainerStatsResponse, at: Instant) -> Option<CpuSample> {
    let cpu = s.cpu_stats.as_ref()?;
    let total_ns = cpu.cpu_usage.as_ref()?.total_usage?;
    let system_ns = cpu.system_cpu_usage?;
    let online = cpu
        .online_cpus
        .filter(|n| *n > 0)
        .or_else(|| {
            cpu.cpu_usage
                .as_ref()
                .and_then(|u| u.percpu_usage.as_ref())
                .and_then(|p| u32::try_from(p.len()).ok())
                .filter(|n| *n > 0)
        })
        .unwrap_or(1);
    Some(CpuSample { total_ns, system_ns, online, at })
}

/// CPU percent between two samples (100 = one full core), 0 when either
/// delta is not positive (first sample, counter reset).
pub(crate) fn cpu_percent(prev: &CpuSample, now: &CpuSample) -> f64 {
    let cpu = now.total_ns.saturating_sub(prev.total_ns);
    let sys = now.system_ns.saturating_sub(prev.system_ns);
    if cpu == 0 || sys == 0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss, reason = "a percentage does not need 53 bits")]
    let pct = cpu as f64 / sys as f64 * f64::from(now.online) * 100.0;
    pct
}

/// Memory in use the way `docker stats` counts it: usage minus the
/// inactive page cache (`total_inactive_file` on cgroup v1, `inactive_file`
/// on v2).
pub(crate) fn memory_used(s: &ContainerStatsResponse) -> u64 {
    let Some(mem) = s.memory_stats.as_ref() else { return 0 };
    let usage = mem.usage.unwrap_or(0);
    let inactive = mem
        .stats
        .as_ref()
        .and_then(|st| st.get("total_inactive_file").or_else(|| st.get("inactive_file")).copied())
        .unwrap_or(0);
    if inactive < usage { usage - inactive } else { usage }
}

/// Everything but CPU from one response; `memory_limit` comes from the
/// container's HostConfig (the stats limit is the host's RAM when unset).
pub(crate) fn to_stats(s: &ContainerStatsResponse, cpu_percent: f64, memory_limit: Option<u64>) -> ContainerStats {
    let (rx, tx) = s
        .networks
        .as_ref()
        .map(|n| n.values().fold((0u64, 0u64), |(r, t), i| (r + i.rx_bytes.unwrap_or(0), t + i.tx_bytes.unwrap_or(0))))
        .unwrap_or_default();
    let (read, write) = s
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref())
        .map(|entries| {
            entries.iter().fold((0u64, 0u64), |(r, w), e| {
                match e.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    Some("read") => (r + e.value.unwrap_or(0), w),
                    Some("write") => (r, w + e.value.unwrap_or(0)),
                    _ => (r, w),
                }
            })
        })
        .unwrap_or_default();
    ContainerStats {
        runtime: "docker".to_owned(),
        cpu_percent,
        memory_bytes: memory_used(s),
        memory_limit_bytes: memory_limit,
        network_rx_bytes: rx,
        network_tx_bytes: tx,
        block_read_bytes: read,
        block_write_bytes: write,
        pids: s.pids_stats.as_ref().and_then(|p| p.current).unwrap_or(0),
        ..ContainerStats::default()
    }
}

/// The previous CPU sample of each container.
#[derive(Debug, Default)]
pub(crate) struct CpuHistory(HashMap<String, CpuSample>);

impl CpuHistory {
    /// Stores `now` and returns the sample it replaces.
    pub(crate) fn swap(&mut self, id: &str, now: CpuSample) -> Option<CpuSample> {
        self.0.insert(id.to_owned(), now)
    }

    /// Forgets containers not sampled for `max_age`.
    pub(crate) fn prune(&mut self, max_age: std::time::Duration) {
        self.0.retain(|_, s| s.at.elapsed() <= max_age);
    }
}

/// What `stats` needs to know about a container, from `inspect`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Target {
    /// Docker's full id (cgroup paths and meters use it).
    pub(crate) full_id: String,
    /// Host pid of its init process, 0 when not running.
    pub(crate) pid: u32,
    /// Its state.
    pub(crate) state: ContainerState,
    /// Memory limit from HostConfig.
    pub(crate) memory_limit: Option<u64>,
    /// When it was inspected.
    pub(crate) at: Instant,
}

impl Target {
    /// There are processes to measure.
    pub(crate) fn has_processes(&self) -> bool {
        self.pid > 0
            && matches!(self.state, ContainerState::Running | ContainerState::Paused | ContainerState::Restarting)
    }
}

/// Recently inspected containers, by the id or name the caller used.
#[derive(Debug, Default)]
pub(crate) struct TargetCache(HashMap<String, Target>);

impl TargetCache {
    /// A running container's entry younger than `ttl` (stopped ones are
    /// always inspected again, so a start is seen at once).
    pub(crate) fn get(&self, key: &str, ttl: std::time::Duration) -> Option<Target> {
        self.0.get(key).filter(|t| t.at.elapsed() < ttl && t.has_processes()).cloned()
    }

    /// Stores an entry and drops stale ones.
    pub(crate) fn put(&mut self, key: &str, target: Target, ttl: std::time::Duration) {
        self.0.retain(|_, t| t.at.elapsed() < ttl);
        self.0.insert(key.to_owned(), target);
    }

    /// Drops a container's entry (its settings changed).
    pub(crate) fn forget(&mut self, key: &str) {
        self.0.remove(key);
    }
}

/// One [`CpuMeter`] per container, reset when its init pid changes (a
/// restart means a new cgroup whose counter starts again).
#[derive(Debug, Default)]
pub(crate) struct Meters(HashMap<String, (u32, CpuMeter, Instant)>);

impl Meters {
    /// No baseline yet for this container and pid (or a stale one).
    pub(crate) fn is_new(&self, id: &str, pid: u32) -> bool {
        self.0.get(id).is_none_or(|(p, _, last)| *p != pid || last.elapsed() > CPU_METER_MAX_AGE)
    }

    /// Feeds a reading; the CPU percent since the previous one.
    pub(crate) fn update(&mut self, id: &str, pid: u32, cpu_ns: u64, at: Instant) -> f64 {
        self.0.retain(|_, (_, _, last)| last.elapsed() <= CPU_METER_MAX_AGE);
        let entry = self.0.entry(id.to_owned()).or_insert_with(|| (pid, CpuMeter::new(), at));
        if entry.0 != pid {
            entry.0 = pid;
            entry.1.reset();
        }
        entry.2 = at;
        entry.1.update(cpu_ns, at)
    }

    /// Drops a container's meter.
    pub(crate) fn forget(&mut self, id: &str) {
        self.0.remove(id);
    }
}

/// A meter unused this long starts over (its average would span the gap).
const CPU_METER_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerBlkioStatEntry, ContainerBlkioStats, ContainerCpuStats, ContainerCpuUsage, ContainerMemoryStats,
        ContainerNetworkStats, ContainerPidsStats,
    };

    fn response(total: u64, system: u64) -> ContainerStatsResponse {
        ContainerStatsResponse {
            cpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage {
                    total_usage: Some(total),
                    percpu_usage: Some(vec![0, 0]),
                    ..Default::default()
                }),
                system_cpu_usage: Some(system),
                online_cpus: None,
                ..Default::default()
            }),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(10_000),
                stats: Some(HashMap::from([("total_inactive_file".into(), 4_000)])),
                limit: Some(1 << 40),
                ..Default::default()
            }),
            networks: Some(HashMap::from([
                ("eth0".into(), ContainerNetworkStats { rx_bytes: Some(5), tx_bytes: Some(7), ..Default::default() }),
                ("eth1".into(), ContainerNetworkStats { rx_bytes: Some(1), tx_bytes: Some(1), ..Default::default() }),
            ])),
            pids_stats: Some(ContainerPidsStats { current: Some(3), limit: None }),
            blkio_stats: Some(ContainerBlkioStats {
                io_service_bytes_recursive: Some(vec![
                    ContainerBlkioStatEntry { op: Some("Read".into()), value: Some(100), ..Default::default() },
                    ContainerBlkioStatEntry { op: Some("write".into()), value: Some(50), ..Default::default() },
                    ContainerBlkioStatEntry { op: Some("Total".into()), value: Some(150), ..Default::default() },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn cpu_percent_follows_the_docker_cli() {
        let t0 = Instant::now();
        let a = cpu_sample(&response(1_000, 10_000), t0).unwrap();
        let b = cpu_sample(&response(2_000, 12_000), t0).unwrap();
        assert_eq!(b.online, 2, "falls back on percpu_usage length");
        // 1000 / 2000 * 2 CPUs * 100
        assert!((cpu_percent(&a, &b) - 100.0).abs() < 1e-9);
        assert_eq!(cpu_percent(&b, &a), 0.0, "counters going back give 0");
    }

    #[test]
    fn the_rest_is_summed_and_cache_subtracted() {
        let s = to_stats(&response(0, 0), 12.5, Some(64 << 20));
        assert_eq!(s.memory_bytes, 6_000);
        assert_eq!(s.memory_limit_bytes, Some(64 << 20));
        assert_eq!((s.network_rx_bytes, s.network_tx_bytes), (6, 8));
        assert_eq!((s.block_read_bytes, s.block_write_bytes), (100, 50));
        assert_eq!(s.pids, 3);
        assert_eq!(s.runtime, "docker");
        assert_eq!(s.cpu_percent, 12.5);
    }

    #[test]
    fn meters_reset_when_the_pid_changes() {
        let mut m = Meters::default();
        let t0 = Instant::now();
        assert!(m.is_new("c", 10));
        assert_eq!(m.update("c", 10, 1_000_000_000, t0), 0.0);
        assert!(!m.is_new("c", 10));
        let pct = m.update("c", 10, 1_500_000_000, t0 + std::time::Duration::from_secs(1));
        assert!((pct - 50.0).abs() < 1e-9, "{pct}");
        assert!(m.is_new("c", 11), "restarted: new pid, new cgroup counter");
        assert_eq!(m.update("c", 11, 10, t0 + std::time::Duration::from_secs(2)), 0.0);
        m.forget("c");
        assert!(m.is_new("c", 11));
    }

    #[test]
    fn only_running_targets_are_cached() {
        let mut cache = TargetCache::default();
        let ttl = std::time::Duration::from_secs(60);
        let running = Target {
            full_id: "abc".into(),
            pid: 42,
            state: ContainerState::Running,
            memory_limit: None,
            at: Instant::now(),
        };
        cache.put("web", running.clone(), ttl);
        assert_eq!(cache.get("web", ttl), Some(running.clone()));
        assert_eq!(cache.get("web", std::time::Duration::ZERO), None, "expired");
        cache.put("db", Target { pid: 0, state: ContainerState::Stopped, ..running }, ttl);
        assert_eq!(cache.get("db", ttl), None);
    }
}
