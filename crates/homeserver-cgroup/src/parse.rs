//! Pure parsers for the kernel files this crate reads: text in, numbers out.
//!
//! No I/O and no allocation here; every function returns `None` when the
//! text does not have the expected shape, and the caller names the file.

/// Where one process sits in the cgroup hierarchies (`/proc/<pid>/cgroup`).
///
/// Paths are as the kernel prints them, relative to the reader's cgroup
/// namespace root (`/docker/<id>`, `/system.slice/docker-<id>.scope`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Membership<'a> {
    /// The v2 path, from the `0::<path>` line.
    pub(crate) unified: Option<&'a str>,
    /// v1 `cpuacct` hierarchy (often co-mounted as `cpu,cpuacct`).
    pub(crate) cpuacct: Option<&'a str>,
    /// v1 `memory` hierarchy.
    pub(crate) memory: Option<&'a str>,
    /// v1 `blkio` hierarchy.
    pub(crate) blkio: Option<&'a str>,
    /// v1 `pids` hierarchy.
    pub(crate) pids: Option<&'a str>,
}

/// Parses `/proc/<pid>/cgroup`: lines `hierarchy-id:controller-list:path`.
///
/// v1 lines name their controllers (`4:memory:/docker/abc`,
/// `3:cpu,cpuacct:/lxc.payload.web`); the v2 line has id 0 and no
/// controllers (`0::/system.slice/docker-abc.scope`). Malformed lines and
/// controllers this crate does not read are skipped.
pub(crate) fn proc_cgroup(text: &str) -> Membership<'_> {
    let mut m = Membership::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            m.unified = Some(path);
            continue;
        }
        for controller in controllers.split(',') {
            match controller {
                "cpuacct" => m.cpuacct = Some(path),
                "memory" => m.memory = Some(path),
                "blkio" => m.blkio = Some(path),
                "pids" => m.pids = Some(path),
                _ => {}
            }
        }
    }
    m
}

/// The container's own cgroup within `path`: the path cut after its
/// deepest component that names a container, or `path` itself.
///
/// A container's init process is not always in the container's top cgroup:
/// systemd inside LXC moves itself to `/lxc.payload.<name>/init.scope`, and
/// so does systemd inside Docker (`.../docker-<id>.scope/init.scope`).
/// Reading the top cgroup counts every process of the container. Known
/// names: `lxc.payload.<name>` (LXC ≥ 4), `lxc/<name>` (older LXC),
/// `docker-<id>.scope` (systemd driver) and `docker/<id>` (cgroupfs driver).
pub(crate) fn container_root(path: &str) -> &str {
    let mut cut = path.len();
    let mut found = false;
    let mut start = 0;
    let mut previous = "";
    for component in path.split('/') {
        let end = start + component.len();
        let names_container = component.starts_with("lxc.payload.")
            || (component.starts_with("docker-") && component.ends_with(".scope"))
            || (!component.is_empty() && matches!(previous, "docker" | "lxc"));
        if names_container {
            cut = end;
            found = true;
        }
        previous = component;
        start = end + 1;
    }
    if found { &path[..cut] } else { path }
}

/// Whether `path` climbs out of the reader's cgroup namespace (`/../..`):
/// the process lives in a cgroup this reader cannot see under its root.
pub(crate) fn escapes_namespace(path: &str) -> bool {
    path.split('/').any(|c| c == "..")
}

/// A file holding one unsigned number (`cpuacct.usage`, `pids.current`,
/// `memory.current`, `memory.usage_in_bytes`, `memory.limit_in_bytes`).
pub(crate) fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// v2 `memory.max`: `max` (no limit, `Some(None)`) or bytes.
pub(crate) fn memory_max(text: &str) -> Option<Option<u64>> {
    let text = text.trim();
    if text == "max" { Some(None) } else { text.parse().ok().map(Some) }
}

/// The value of `key` in a flat keyed file (`memory.stat`, `cpu.stat`):
/// lines `key value`. `None` when the key is absent or not a number.
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        if k == key { v.trim().parse().ok() } else { None }
    })
}

/// v1 `blkio.*io_service_bytes*`: lines `major:minor Op bytes` and a final
/// `Total bytes`. Returns (read, write) summed over devices; other
/// operations (`Sync`, `Async`, `Discard`, `Total`) are skipped.
pub(crate) fn blkio_service_bytes(text: &str) -> Option<(u64, u64)> {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(_device), Some(op), Some(value)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        match op {
            "Read" => read = read.saturating_add(value.parse().ok()?),
            "Write" => write = write.saturating_add(value.parse().ok()?),
            _ => {}
        }
    }
    Some((read, write))
}

/// v2 `io.stat`: lines `major:minor rbytes=N wbytes=N rios=N ...`.
/// Returns (read, write) bytes summed over devices.
pub(crate) fn io_stat(text: &str) -> Option<(u64, u64)> {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        for field in line.split_ascii_whitespace().skip(1) {
            let Some((key, value)) = field.split_once('=') else { continue };
            match key {
                "rbytes" => read = read.saturating_add(value.parse().ok()?),
                "wbytes" => write = write.saturating_add(value.parse().ok()?),
                _ => {}
            }
        }
    }
    Some((read, write))
}

/// `/proc/<pid>/net/dev`: two header lines, then `name: rx_bytes rx_packets
/// ... (8 receive fields) tx_bytes ...`. Returns (rx, tx) bytes summed over
/// every interface but `lo`. The name may touch the first number
/// (`eth0:123`), so lines are split at the colon.
pub(crate) fn net_dev(text: &str) -> Option<(u64, u64)> {
    let (mut rx, mut tx) = (0u64, 0u64);
    for line in text.lines().skip(2) {
        let (name, counters) = line.split_once(':')?;
        if name.trim() == "lo" {
            continue;
        }
        let mut fields = counters.split_ascii_whitespace();
        let received: u64 = fields.next()?.parse().ok()?;
        let sent: u64 = fields.nth(7)?.parse().ok()?;
        rx = rx.saturating_add(received);
        tx = tx.saturating_add(sent);
    }
    Some((rx, tx))
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub(crate) fn mem_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.trim_start_matches("MemTotal:").trim().trim_end_matches("kB").trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_v1_docker_with_co_mounted_cpu_cpuacct() {
        let text = "12:pids:/docker/abc\n11:cpu,cpuacct:/docker/abc\n9:blkio:/docker/abc\n\
                    8:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/system.slice/containerd.service\n";
        let m = proc_cgroup(text);
        assert_eq!(m.cpuacct, Some("/docker/abc"));
        assert_eq!(m.memory, Some("/docker/abc"));
        assert_eq!(m.blkio, Some("/docker/abc"));
        assert_eq!(m.pids, Some("/docker/abc"));
        assert_eq!(m.unified, Some("/system.slice/containerd.service"));
    }

    #[test]
    fn proc_cgroup_v1_separate_mounts_as_on_this_host() {
        let text = "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n\
                    4:memory:/process_api/4451\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";
        let m = proc_cgroup(text);
        assert_eq!(m.cpuacct, Some("/"));
        assert_eq!(m.memory, Some("/process_api/4451"));
        assert_eq!(m.pids, Some("/"));
        assert_eq!(m.unified, Some("/"));
    }

    #[test]
    fn proc_cgroup_v2_only() {
        let m = proc_cgroup("0::/system.slice/docker-0123abcd.scope\n");
        assert_eq!(m.unified, Some("/system.slice/docker-0123abcd.scope"));
        assert_eq!(m.memory, None);
        assert_eq!(m.cpuacct, None);
    }

    #[test]
    fn proc_cgroup_keeps_colons_in_paths_and_skips_garbage() {
        let m = proc_cgroup("garbage\n4:memory:/a:b\n\n");
        assert_eq!(m.memory, Some("/a:b"));
        assert_eq!(proc_cgroup(""), Membership::default());
    }

    #[test]
    fn container_root_cuts_after_the_container_component() {
        assert_eq!(container_root("/lxc.payload.web/init.scope"), "/lxc.payload.web");
        assert_eq!(container_root("/lxc.payload.web"), "/lxc.payload.web");
        assert_eq!(container_root("/lxc/web/system.slice/cron.service"), "/lxc/web");
        assert_eq!(container_root("/docker/abc"), "/docker/abc");
        assert_eq!(container_root("/docker/abc/init.scope"), "/docker/abc");
        assert_eq!(container_root("/system.slice/docker-abc.scope/init.scope"), "/system.slice/docker-abc.scope");
        assert_eq!(container_root("/system.slice/docker-abc.scope"), "/system.slice/docker-abc.scope");
        // The deepest container wins: a container inside a container.
        assert_eq!(container_root("/docker/outer/docker/inner"), "/docker/outer/docker/inner");
        // Nothing container-like: unchanged.
        assert_eq!(container_root("/process_api/4451"), "/process_api/4451");
        assert_eq!(container_root("/"), "/");
        assert_eq!(container_root("/docker"), "/docker");
        assert_eq!(container_root("/system.slice/docker.service"), "/system.slice/docker.service");
        assert_eq!(container_root("/lxc.monitor.web"), "/lxc.monitor.web");
    }

    #[test]
    fn escapes_namespace_spots_parent_components() {
        assert!(escapes_namespace("/../../system.slice/docker-abc.scope"));
        assert!(!escapes_namespace("/docker/abc"));
        assert!(!escapes_namespace("/a..b"));
    }

    #[test]
    fn number_files() {
        assert_eq!(number("3948763528795\n"), Some(3_948_763_528_795));
        assert_eq!(number("0"), Some(0));
        assert_eq!(number("max\n"), None);
        assert_eq!(number(""), None);
    }

    #[test]
    fn memory_max_file() {
        assert_eq!(memory_max("max\n"), Some(None));
        assert_eq!(memory_max("536870912\n"), Some(Some(536_870_912)));
        assert_eq!(memory_max("lots"), None);
    }

    #[test]
    fn keyed_files() {
        let v1 = "cache 28672\nrss 1667072\ninactive_file 4096\ntotal_cache 28672\ntotal_inactive_file 28672\n";
        assert_eq!(keyed(v1, "total_inactive_file"), Some(28_672));
        assert_eq!(keyed(v1, "inactive_file"), Some(4096));
        assert_eq!(keyed(v1, "total_rss_huge"), None);
        let cpu_stat = "usage_usec 8233421\nuser_usec 5128339\nsystem_usec 3105082\nnr_periods 0\n";
        assert_eq!(keyed(cpu_stat, "usage_usec"), Some(8_233_421));
        assert_eq!(keyed("usage_usec lots\n", "usage_usec"), None);
    }

    #[test]
    fn blkio_sums_read_and_write_over_devices() {
        let text = "8:0 Read 1000\n8:0 Write 200\n8:0 Sync 1200\n8:0 Async 0\n8:0 Discard 0\n8:0 Total 1200\n\
                    8:16 Read 5\n8:16 Write 7\n8:16 Total 12\nTotal 1212\n";
        assert_eq!(blkio_service_bytes(text), Some((1005, 207)));
        assert_eq!(blkio_service_bytes("Total 0\n"), Some((0, 0)));
        assert_eq!(blkio_service_bytes(""), Some((0, 0)));
        assert_eq!(blkio_service_bytes("8:0 Read x\n"), None);
    }

    #[test]
    fn io_stat_sums_rbytes_and_wbytes() {
        let text = "259:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
                    8:0 rbytes=100 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n";
        assert_eq!(io_stat(text), Some((4196, 8192)));
        assert_eq!(io_stat(""), Some((0, 0)));
        assert_eq!(io_stat("8:0 rbytes=x\n"), None);
    }

    #[test]
    fn net_dev_sums_all_but_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo: 11052619233 3695705    0    0    0     0          0         0 11052619233 3695705    0    0    0     0       0          0\n  \
             eth0: 542260316   26717    0    0    0     0          0         0  1816619   22280    0    0    0     0       0          0\n\
             docker0:       0       0    0    0    0     0          0         0      636       6    0    7    0     0       0          0\n";
        assert_eq!(net_dev(text), Some((542_260_316, 1_817_255)));
    }

    #[test]
    fn net_dev_name_touching_the_counter_and_empty_namespaces() {
        let header = "Inter-| Receive | Transmit\n face |bytes packets|bytes packets\n";
        let glued = format!("{header}eth0:1234567890 1 0 0 0 0 0 0 42 1 0 0 0 0 0 0\n");
        assert_eq!(net_dev(&glued), Some((1_234_567_890, 42)));
        let only_lo = format!("{header}    lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n");
        assert_eq!(net_dev(&only_lo), Some((0, 0)));
        assert_eq!(net_dev(&format!("{header}eth0: 1 2 3\n")), None);
    }

    #[test]
    fn mem_total_in_bytes() {
        assert_eq!(mem_total("MemTotal:       24731708 kB\nMemFree: 1 kB\n"), Some(24_731_708 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
    }
}
