//! Fake hosts in a folder: a procfs and a cgroup mount, v1/hybrid or v2,
//! with containers whose expected readings are known. Shared by the tests
//! and `benches/read.rs` (through `#[path]`).
#![allow(dead_code, reason = "each test binary and the bench use a different part")]
#![allow(clippy::unwrap_used, reason = "fixture setup fails the test loudly")]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use homeserver_cgroup::{CgroupRoots, CgroupSample};

/// `MemTotal` of every fake host: 16 GiB.
pub(crate) const MEM_TOTAL: u64 = 16 << 30;
/// The network namespace of the fake host's pid 1.
pub(crate) const HOST_NETNS: &str = "net:[4026531833]";
/// v1's "unlimited" memory limit, as the kernel prints it.
pub(crate) const V1_UNLIMITED: &str = "9223372036854771712";

const MIB: u64 = 1 << 20;

/// One container of a fake host.
#[derive(Debug, Clone)]
pub(crate) struct Container {
    pub(crate) pid: u32,
    /// The init process's cgroup as `/proc/<pid>/cgroup` shows it.
    pub(crate) proc_cgroup: String,
    /// The container's own cgroup, where the figures are written.
    pub(crate) cgroup: String,
    /// Whole microseconds, so that v2 (`usage_usec`) loses nothing.
    pub(crate) cpu_ns: u64,
    pub(crate) memory_usage: u64,
    /// The hierarchical figure (`total_inactive_file` on v1).
    pub(crate) inactive_file: u64,
    pub(crate) limit: Option<u64>,
    pub(crate) read_bytes: u64,
    pub(crate) write_bytes: u64,
    pub(crate) pids: u64,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) host_network: bool,
}

impl Container {
    /// Container number `i`, with figures derived from `i`; even ones have
    /// a 512 MiB limit. The cgroup is the init's (`proc_cgroup`).
    pub(crate) fn numbered(i: u32, cgroup: &str) -> Self {
        let n = u64::from(i) + 1;
        Self {
            pid: 1000 + i,
            proc_cgroup: cgroup.to_owned(),
            cgroup: cgroup.to_owned(),
            cpu_ns: n * 1_000_000_000 + 123_000,
            memory_usage: (100 + n) * MIB,
            inactive_file: 10 * MIB,
            limit: i.is_multiple_of(2).then_some(512 * MIB),
            read_bytes: 4096 * n,
            write_bytes: 8192 * n,
            pids: n,
            rx_bytes: 1000 * n,
            tx_bytes: 500 * n,
            host_network: false,
        }
    }

    /// A Docker container (`/docker/<id>` on v1).
    pub(crate) fn docker_v1(i: u32) -> Self {
        Self::numbered(i, &format!("/docker/{:064x}", u64::from(i) + 0xabc0))
    }

    /// A Docker container with the systemd driver (v2).
    pub(crate) fn docker_v2(i: u32) -> Self {
        Self::numbered(i, &format!("/system.slice/docker-{:064x}.scope", u64::from(i) + 0xabc0))
    }

    /// An LXC container whose init (systemd) sits in `init.scope` below the
    /// container's cgroup `/lxc.payload.<name>`.
    pub(crate) fn lxc(i: u32, name: &str) -> Self {
        let mut c = Self::numbered(i, &format!("/lxc.payload.{name}"));
        c.proc_cgroup = format!("/lxc.payload.{name}/init.scope");
        c
    }

    /// What the reader must return for this container.
    pub(crate) fn expected(&self) -> CgroupSample {
        CgroupSample {
            cpu_usage_ns: self.cpu_ns,
            memory_bytes: self.memory_usage - self.inactive_file,
            memory_limit_bytes: self.limit,
            block_read_bytes: self.read_bytes,
            block_write_bytes: self.write_bytes,
            pids: self.pids,
            network_rx_bytes: self.rx_bytes,
            network_tx_bytes: self.tx_bytes,
            host_network: self.host_network,
        }
    }
}

/// Writes `content` to `root/rel`, creating folders.
pub(crate) fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
}

/// The procfs part common to both layouts; `cgroup_lines` gives the
/// `/proc/<pid>/cgroup` content of a container.
fn write_proc(proc_root: &Path, containers: &[Container], cgroup_lines: impl Fn(&Container) -> String) {
    write(proc_root, "meminfo", &format!("MemTotal:       {} kB\nMemFree:         1024 kB\n", MEM_TOTAL / 1024));
    fs::create_dir_all(proc_root.join("1/ns")).unwrap();
    symlink(HOST_NETNS, proc_root.join("1/ns/net")).unwrap();
    for (i, c) in containers.iter().enumerate() {
        let pid = c.pid;
        write(proc_root, &format!("{pid}/cgroup"), &cgroup_lines(c));
        write(proc_root, &format!("{pid}/net/dev"), &net_dev(c.rx_bytes, c.tx_bytes));
        let netns = if c.host_network { HOST_NETNS.to_owned() } else { format!("net:[40265320{i:02}]") };
        fs::create_dir_all(proc_root.join(format!("{pid}/ns"))).unwrap();
        symlink(netns, proc_root.join(format!("{pid}/ns/net"))).unwrap();
    }
}

/// A `/proc/<pid>/net/dev` with busy loopback and one `eth0`.
pub(crate) fn net_dev(rx: u64, tx: u64) -> String {
    format!(
        "Inter-|   Receive                                                |  Transmit\n \
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
         lo: 99999999      77    0    0    0     0          0         0 99999999      77    0    0    0     0       0          0\n  \
         eth0: {rx:>8}      12    0    0    0     0          0         0 {tx:>8}       9    0    0    0     0       0          0\n"
    )
}

/// A v1/hybrid host as Docker on Debian 11 or Ubuntu 20.04 lays it out:
/// `cpu,cpuacct` co-mounted with `cpu` and `cpuacct` symlinks, an empty
/// v2 hierarchy at `unified/`. Returns the roots under `dir`.
pub(crate) fn v1_host(dir: &Path, containers: &[Container]) -> CgroupRoots {
    let proc_root = dir.join("proc");
    let cgroup_root = dir.join("cgroup");
    write_proc(&proc_root, containers, |c| {
        let p = &c.proc_cgroup;
        format!(
            "12:pids:{p}\n11:cpu,cpuacct:{p}\n10:blkio:{p}\n9:memory:{p}\n8:devices:{p}\n7:freezer:{p}\n\
             6:net_cls,net_prio:{p}\n5:perf_event:{p}\n4:cpuset:{p}\n1:name=systemd:{p}\n0::/system.slice/containerd.service\n"
        )
    });
    for controller in ["cpu,cpuacct", "memory", "blkio", "pids", "devices", "net_cls,net_prio", "systemd", "unified"] {
        fs::create_dir_all(cgroup_root.join(controller)).unwrap();
    }
    symlink("cpu,cpuacct", cgroup_root.join("cpu")).unwrap();
    symlink("cpu,cpuacct", cgroup_root.join("cpuacct")).unwrap();
    write(&cgroup_root, "unified/cgroup.controllers", "");
    for c in containers {
        write_v1_cgroup(&cgroup_root, "cpu,cpuacct", "memory", c);
    }
    CgroupRoots { proc_root, cgroup_root }
}

/// The v1 files of one container; `cpuacct_dir` and `memory_dir` name the
/// mounts (tests vary them).
pub(crate) fn write_v1_cgroup(cgroup_root: &Path, cpuacct_dir: &str, memory_dir: &str, c: &Container) {
    let cg = c.cgroup.trim_start_matches('/');
    write(cgroup_root, &format!("{cpuacct_dir}/{cg}/cpuacct.usage"), &format!("{}\n", c.cpu_ns));
    write(cgroup_root, &format!("{memory_dir}/{cg}/memory.usage_in_bytes"), &format!("{}\n", c.memory_usage));
    let limit = c.limit.map_or(V1_UNLIMITED.to_owned(), |l| l.to_string());
    write(cgroup_root, &format!("{memory_dir}/{cg}/memory.limit_in_bytes"), &format!("{limit}\n"));
    // `inactive_file` is the cgroup's own share, `total_inactive_file` the
    // hierarchical one the reader must use.
    write(
        cgroup_root,
        &format!("{memory_dir}/{cg}/memory.stat"),
        &format!(
            "cache {cache}\nrss {rss}\nrss_huge 0\nshmem 0\nmapped_file 0\ndirty 0\nwriteback 0\nswap 0\n\
             pgpgin 11559\npgpgout 11146\npgfault 28277\npgmajfault 0\ninactive_anon {rss}\nactive_anon 0\n\
             inactive_file 4096\nactive_file 0\nunevictable 0\nhierarchical_memory_limit {limit}\n\
             total_cache {cache}\ntotal_rss {rss}\ntotal_inactive_anon {rss}\ntotal_active_anon 0\n\
             total_inactive_file {inactive}\ntotal_active_file 0\ntotal_unevictable 0\n",
            cache = c.inactive_file,
            rss = c.memory_usage - c.inactive_file,
            inactive = c.inactive_file,
        ),
    );
    write(
        cgroup_root,
        &format!("blkio/{cg}/blkio.throttle.io_service_bytes_recursive"),
        &format!(
            "8:0 Read {r}\n8:0 Write {w}\n8:0 Sync {w}\n8:0 Async {r}\n8:0 Discard 0\n8:0 Total {t}\n\
             253:0 Read 0\n253:0 Write 0\n253:0 Total 0\nTotal {t}\n",
            r = c.read_bytes,
            w = c.write_bytes,
            t = c.read_bytes + c.write_bytes,
        ),
    );
    // The non-recursive file differs, to prove the recursive one is used.
    write(cgroup_root, &format!("blkio/{cg}/blkio.throttle.io_service_bytes"), "8:0 Read 1\n8:0 Write 1\nTotal 2\n");
    write(cgroup_root, &format!("pids/{cg}/pids.current"), &format!("{}\n", c.pids));
}

/// A v2 host (Debian 12, systemd driver). Returns the roots under `dir`.
pub(crate) fn v2_host(dir: &Path, containers: &[Container]) -> CgroupRoots {
    let proc_root = dir.join("proc");
    let cgroup_root = dir.join("cgroup");
    write_proc(&proc_root, containers, |c| format!("0::{}\n", c.proc_cgroup));
    write(&cgroup_root, "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
    for c in containers {
        write_v2_cgroup(&cgroup_root, c);
    }
    CgroupRoots { proc_root, cgroup_root }
}

/// The v2 files of one container.
pub(crate) fn write_v2_cgroup(cgroup_root: &Path, c: &Container) {
    let cg = c.cgroup.trim_start_matches('/');
    write(
        cgroup_root,
        &format!("{cg}/cpu.stat"),
        &format!(
            "usage_usec {}\nuser_usec 1\nsystem_usec 2\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
            c.cpu_ns / 1000
        ),
    );
    write(cgroup_root, &format!("{cg}/memory.current"), &format!("{}\n", c.memory_usage));
    write(
        cgroup_root,
        &format!("{cg}/memory.stat"),
        &format!(
            "anon {anon}\nfile {file}\nkernel 0\nsock 0\nshmem 0\nfile_mapped 0\nfile_dirty 0\n\
             inactive_anon {anon}\nactive_anon 0\ninactive_file {file}\nactive_file 0\nunevictable 0\n",
            anon = c.memory_usage - c.inactive_file,
            file = c.inactive_file,
        ),
    );
    let max = c.limit.map_or("max".to_owned(), |l| l.to_string());
    write(cgroup_root, &format!("{cg}/memory.max"), &format!("{max}\n"));
    let half_r = c.read_bytes / 2;
    let half_w = c.write_bytes / 2;
    write(
        cgroup_root,
        &format!("{cg}/io.stat"),
        &format!(
            "259:0 rbytes={half_r} wbytes={half_w} rios=3 wios=4 dbytes=0 dios=0\n\
             8:0 rbytes={} wbytes={} rios=1 wios=1 dbytes=0 dios=0\n",
            c.read_bytes - half_r,
            c.write_bytes - half_w,
        ),
    );
    write(cgroup_root, &format!("{cg}/pids.current"), &format!("{}\n", c.pids));
}
