//! Resource use of one container, read from the kernel's cgroup files
//! through `homeserver-cgroup`, given the init pid `lxc-info -p` reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use homeserver_cgroup::{CgroupError, CgroupReader, CgroupRoots, CpuMeter};
use homeserver_domain::{ContainerState, ContainerStats, RuntimeError, RuntimeKind};
use tokio::sync::OnceCell;

use crate::error::{LxcError, join_error};
use crate::runtime::LxcRuntime;

/// Gap between the two samples of a container seen for the first time, so
/// its first CPU figure is a real one rather than 0.
const FIRST_CPU_GAP: Duration = Duration::from_millis(250);

/// One container's CPU meter, tied to the init pid it measured.
#[derive(Debug)]
struct Meter {
    pid: u32,
    cpu: CpuMeter,
}

/// State kept between stats calls: one cgroup reader, one CPU meter per
/// container.
#[derive(Debug, Default)]
pub(crate) struct StatsState {
    reader: OnceCell<Arc<CgroupReader>>,
    meters: Mutex<HashMap<String, Meter>>,
}

impl StatsState {
    /// Drops the CPU meter of a removed container.
    pub(crate) fn forget(&self, name: &str) {
        self.meters.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
    }

    /// Feeds a CPU reading; `None` when this is the first reading for this
    /// container and init pid (the figure would be meaningless).
    fn cpu(&self, name: &str, pid: u32, usage_ns: u64, at: Instant) -> Option<f64> {
        let mut meters = self.meters.lock().unwrap_or_else(PoisonError::into_inner);
        match meters.get_mut(name) {
            Some(m) if m.pid == pid => Some(m.cpu.update(usage_ns, at)),
            _ => {
                let mut cpu = CpuMeter::new();
                cpu.update(usage_ns, at);
                meters.insert(name.to_owned(), Meter { pid, cpu });
                None
            }
        }
    }

    async fn reader(&self, cgroup_root: std::path::PathBuf) -> Result<Arc<CgroupReader>, RuntimeError> {
        self.reader
            .get_or_try_init(|| async move {
                let roots = CgroupRoots { cgroup_root, ..CgroupRoots::default() };
                tokio::task::spawn_blocking(move || CgroupReader::new(roots))
                    .await
                    .map_err(|e| join_error("opening the cgroup reader", e))?
                    .map(Arc::new)
                    .map_err(|e| LxcError::Unexpected(format!("cannot read cgroups: {e}")).into())
            })
            .await
            .cloned()
    }
}

/// Reads the container of `pid`, with the instant of the read (taken on the
/// blocking thread: a starved runtime may resume the task much later, and
/// the CPU figure divides by the time between reads); a vanished process
/// means the container stopped.
async fn sample(
    reader: &Arc<CgroupReader>,
    pid: u32,
) -> Result<(homeserver_cgroup::CgroupSample, Instant), RuntimeError> {
    let reader = Arc::clone(reader);
    // The instant of the CPU counter's read, from the reader itself.
    match tokio::task::spawn_blocking(move || reader.read_pid_timed(pid)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(CgroupError::Gone { .. })) => Err(RuntimeError::InvalidState(ContainerState::Stopped)),
        Ok(Err(e)) => Err(LxcError::Unexpected(format!("reading the cgroup of pid {pid}: {e}")).into()),
        Err(e) => Err(join_error("reading cgroup files", e)),
    }
}

/// Stats of one container: `runtime` and `state` filled in, `id` and
/// `name` left to the caller. A container that is not running reports
/// zeros (with its configured memory limit).
pub(crate) async fn stats(rt: &LxcRuntime, runtime_id: &str) -> Result<ContainerStats, RuntimeError> {
    let (state, pid) = rt.state_and_pid(runtime_id).await?;
    let pid = match (state, pid) {
        (ContainerState::Running | ContainerState::Paused, Some(pid)) => pid,
        _ => {
            let limit = rt.inspect_config(runtime_id).await?.memory_limit_bytes;
            return Ok(ContainerStats {
                runtime: RuntimeKind::Lxc.as_str().to_owned(),
                state: state.as_str().to_owned(),
                memory_limit_bytes: limit,
                ..ContainerStats::default()
            });
        }
    };
    let reader = rt.stats_state().reader(rt.options().cgroup_root.clone()).await?;
    let (mut s, at) = sample(&reader, pid).await?;
    let mut cpu = rt.stats_state().cpu(runtime_id, pid, s.cpu_usage_ns, at);
    if cpu.is_none() {
        tokio::time::sleep(FIRST_CPU_GAP).await;
        let at;
        (s, at) = sample(&reader, pid).await?;
        cpu = rt.stats_state().cpu(runtime_id, pid, s.cpu_usage_ns, at);
    }
    let mut stats = s.to_stats(cpu.unwrap_or(0.0));
    stats.runtime = RuntimeKind::Lxc.as_str().to_owned();
    stats.state = state.as_str().to_owned();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_pid_restarts_the_cpu_meter() {
        let state = StatsState::default();
        let t0 = Instant::now();
        assert_eq!(state.cpu("web", 10, 0, t0), None);
        let pct = state.cpu("web", 10, 500_000_000, t0 + Duration::from_secs(1)).unwrap();
        assert!((pct - 50.0).abs() < 1e-9, "{pct}");
        // Restarted: a new init pid, and a counter from a new cgroup.
        assert_eq!(state.cpu("web", 11, 10, t0 + Duration::from_secs(2)), None);
        state.forget("web");
        assert_eq!(state.cpu("web", 11, 10, t0 + Duration::from_secs(3)), None);
    }
}
