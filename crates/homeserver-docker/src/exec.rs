//! Helpers for `exec`: capped output buffers and killing a timed-out process.

use std::path::Path;

/// One output stream, kept up to `cap` bytes; the rest is read and dropped
/// so the process never blocks on a full pipe.
#[derive(Debug)]
pub(crate) struct CappedBuffer {
    bytes: Vec<u8>,
    cap: usize,
    dropped: bool,
}

impl CappedBuffer {
    pub(crate) fn new(cap: usize) -> Self {
        Self { bytes: Vec::with_capacity(cap.min(64 * 1024)), cap, dropped: false }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        let room = self.cap.saturating_sub(self.bytes.len());
        if chunk.len() > room {
            self.dropped = true;
        }
        self.bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// Some bytes were dropped at the cap.
    pub(crate) fn dropped(&self) -> bool {
        self.dropped
    }

    /// The text: a character cut in half at the cap is dropped, other
    /// invalid UTF-8 becomes U+FFFD.
    pub(crate) fn into_string(mut self) -> String {
        if let Err(e) = std::str::from_utf8(&self.bytes)
            && e.error_len().is_none()
        {
            self.bytes.truncate(e.valid_up_to());
        }
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Kills a timed-out exec'd process and its descendants (SIGKILL).
///
/// Docker has no API to kill an exec, so this signals the host pid that
/// `inspect_exec` reports. That only works when homeserver shares the
/// daemon's pid namespace and may signal the process (root on the host).
/// As a guard against signalling an unrelated process (another pid
/// namespace, a reused pid), each pid is signalled only if its
/// `/proc/<pid>/cgroup` names the container's full id. Returns how many
/// processes were signalled.
pub(crate) fn kill_exec_tree(proc_root: &Path, pid: i64, container_id: &str) -> Result<usize, String> {
    if container_id.len() < 12 {
        return Err(format!("container id `{container_id}` too short to check cgroups against"));
    }
    let root = i32::try_from(pid).ok().filter(|p| *p > 1).ok_or_else(|| format!("bad exec pid {pid}"))?;
    let mut pids = vec![root];
    let mut i = 0;
    while i < pids.len() {
        pids.extend(children(proc_root, pids[i]));
        i += 1;
    }
    let mut killed = 0;
    for p in pids {
        let cgroup = std::fs::read_to_string(proc_root.join(p.to_string()).join("cgroup")).unwrap_or_default();
        if !cgroup.contains(container_id) {
            continue;
        }
        let Some(pid) = rustix::process::Pid::from_raw(p) else { continue };
        if rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok() {
            killed += 1;
        }
    }
    if killed == 0 {
        return Err(format!("no process of container {container_id} found at pid {pid} (other pid namespace?)"));
    }
    Ok(killed)
}

/// Direct children of `pid`, from `/proc/<pid>/task/*/children`.
fn children(proc_root: &Path, pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(proc_root.join(pid.to_string()).join("task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_stop_at_the_cap_and_say_so() {
        let mut b = CappedBuffer::new(5);
        b.push(b"abc");
        assert!(!b.dropped());
        b.push(b"defgh");
        b.push(b"ijk");
        assert!(b.dropped());
        assert_eq!(b.into_string(), "abcde");
    }

    #[test]
    fn a_character_cut_at_the_cap_is_dropped() {
        let mut b = CappedBuffer::new(4);
        b.push("abcé".as_bytes()); // é is two bytes: one fits
        assert!(b.dropped());
        assert_eq!(b.into_string(), "abc");
        let mut exact = CappedBuffer::new(10);
        exact.push(b"0123456789");
        assert!(!exact.dropped());
    }

    #[test]
    fn kill_refuses_processes_of_other_cgroups() {
        let dir = std::env::temp_dir().join(format!("hs-docker-proc-{}", std::process::id()));
        let me = dir.join("4242");
        std::fs::create_dir_all(me.join("task/4242")).unwrap();
        std::fs::write(me.join("cgroup"), "0::/user.slice/other\n").unwrap();
        std::fs::write(me.join("task/4242/children"), "").unwrap();
        let err = kill_exec_tree(&dir, 4242, "0123456789abcdef").unwrap_err();
        assert!(err.contains("no process"), "{err}");
        assert!(kill_exec_tree(&dir, 1, "0123456789abcdef").is_err());
        assert!(kill_exec_tree(&dir, 4242, "short").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
