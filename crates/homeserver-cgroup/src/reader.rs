//! The reader: finds a process's cgroups and reads their files.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, TryLockError};

use crate::error::CgroupError;
use crate::parse::{self, Membership};
use crate::sample::CgroupSample;

/// `ESRCH` on Linux: a `/proc/<pid>` file opened before the process exited.
const ESRCH: i32 = 3;
/// `ENODEV` on Linux: a cgroup file opened before its cgroup was removed.
const ENODEV: i32 = 19;
/// v1 reports "no limit" as `i64::MAX` rounded down to a page
/// (9223372036854771712); anything this large is no limit.
const UNLIMITED: u64 = 1 << 62;

/// Where the kernel's files are mounted. Tests and containers point these
/// at other folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRoots {
    /// The procfs mount, normally `/proc`.
    pub proc_root: PathBuf,
    /// The cgroup mount, normally `/sys/fs/cgroup`: the v2 hierarchy itself,
    /// or on v1 and hybrid hosts the folder holding one mount per controller.
    pub cgroup_root: PathBuf,
}

impl Default for CgroupRoots {
    fn default() -> Self {
        Self { proc_root: PathBuf::from("/proc"), cgroup_root: PathBuf::from("/sys/fs/cgroup") }
    }
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v1 ("legacy"), or hybrid (v1 controllers with an empty v2
    /// hierarchy at `unified/`): one mount per controller under the root.
    V1,
    /// cgroup v2 ("unified"): `<cgroup_root>/cgroup.controllers` exists.
    V2,
}

/// Where each v1 controller this crate reads is mounted.
#[derive(Debug, Default)]
struct V1Mounts {
    cpuacct: Option<PathBuf>,
    memory: Option<PathBuf>,
    blkio: Option<PathBuf>,
    pids: Option<PathBuf>,
}

/// Buffers reused from one read to the next.
#[derive(Debug, Default)]
struct Scratch {
    /// `/proc/<pid>/cgroup`, borrowed while the other files are read.
    membership: Vec<u8>,
    /// Every other file.
    text: Vec<u8>,
    path: PathBuf,
    pid: String,
}

/// Reads per-container resource use from cgroup files and
/// `/proc/<pid>/net/dev`, given a process of the container (its init pid).
///
/// Built once; [`read_pid`](Self::read_pid) then costs a handful of small
/// file reads into reused buffers. It takes `&self`, so one reader (in an
/// `Arc`) serves every thread; concurrent calls share one set of buffers,
/// and a call finding them busy uses buffers of its own.
#[derive(Debug)]
pub struct CgroupReader {
    roots: CgroupRoots,
    mode: CgroupMode,
    v1: V1Mounts,
    mem_total: Option<u64>,
    host_netns: Option<PathBuf>,
    scratch: Mutex<Scratch>,
}

impl CgroupReader {
    /// Detects the host's layout under `roots`: v2 when
    /// `<cgroup_root>/cgroup.controllers` exists, else v1/hybrid, whose
    /// controller mounts (`cpuacct` or `cpu,cpuacct`, `memory`, `blkio`,
    /// `pids`) are looked up under `<cgroup_root>` once, here. It also
    /// reads `MemTotal` (limits at least that large are no limit) and the
    /// network namespace of pid 1 (to flag containers on the host network).
    ///
    /// Fails only when a root is not a readable directory.
    pub fn new(roots: CgroupRoots) -> Result<Self, CgroupError> {
        for dir in [&roots.proc_root, &roots.cgroup_root] {
            let meta = fs::metadata(dir).map_err(|e| CgroupError::io(dir, e))?;
            if !meta.is_dir() {
                return Err(CgroupError::io(dir, io::Error::new(io::ErrorKind::NotADirectory, "not a directory")));
            }
        }
        let mode = if roots.cgroup_root.join("cgroup.controllers").is_file() { CgroupMode::V2 } else { CgroupMode::V1 };
        let v1 = match mode {
            CgroupMode::V1 => discover_v1(&roots.cgroup_root)?,
            CgroupMode::V2 => V1Mounts::default(),
        };
        let mem_total = fs::read_to_string(roots.proc_root.join("meminfo")).ok().and_then(|t| parse::mem_total(&t));
        let host_netns = fs::read_link(roots.proc_root.join("1/ns/net")).ok();
        tracing::debug!(
            ?mode,
            cgroup_root = %roots.cgroup_root.display(),
            cpuacct = ?v1.cpuacct,
            memory = ?v1.memory,
            blkio = ?v1.blkio,
            pids = ?v1.pids,
            mem_total,
            "cgroup reader ready"
        );
        Ok(Self { roots, mode, v1, mem_total, host_netns, scratch: Mutex::new(Scratch::default()) })
    }

    /// The layout detected by [`new`](Self::new).
    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// The roots this reader reads under.
    pub fn roots(&self) -> &CgroupRoots {
        &self.roots
    }

    /// Reads the resource use of the container that process `pid` belongs
    /// to. Plain blocking file reads: call it from `spawn_blocking`.
    ///
    /// The cgroup comes from `/proc/<pid>/cgroup`, cut back to the
    /// container's own cgroup when the process sits in a child of it
    /// (systemd in a container moves itself to `.../init.scope`). Network
    /// bytes come from the process's network namespace.
    ///
    /// # Errors
    /// - [`CgroupError::Gone`] when the process does not exist (or exited
    ///   during the read).
    /// - [`CgroupError::Parse`] when a file has an unexpected format, or
    ///   when the process's cgroup lies outside this reader's cgroup
    ///   namespace (homeserver must run in the host's cgroup namespace).
    /// - [`CgroupError::Io`] when a file exists but cannot be read.
    ///
    /// A missing file is not an error: that figure is 0 or `None`.
    pub fn read_pid(&self, pid: u32) -> Result<CgroupSample, CgroupError> {
        self.read(pid, None)
    }

    /// [`read_pid`](Self::read_pid), for a pid some engine reported as a
    /// container's: its `/proc/<pid>/cgroup` must name `mark` (the
    /// container's id), else [`CgroupError::Parse`]. In another pid
    /// namespace, or after the pid was reused, the pid could name an
    /// unrelated process whose figures must not pass for the container's.
    /// The check costs nothing extra: that file is read anyway.
    pub fn read_pid_in(&self, pid: u32, mark: &str) -> Result<CgroupSample, CgroupError> {
        self.read(pid, Some(mark))
    }

    fn read(&self, pid: u32, mark: Option<&str>) -> Result<CgroupSample, CgroupError> {
        match self.scratch.try_lock() {
            Ok(mut scratch) => self.read_with(pid, mark, &mut scratch),
            // The buffers hold no invariant worth losing a read over.
            Err(TryLockError::Poisoned(poisoned)) => self.read_with(pid, mark, &mut poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => self.read_with(pid, mark, &mut Scratch::default()),
        }
    }

    fn read_with(&self, pid: u32, mark: Option<&str>, scratch: &mut Scratch) -> Result<CgroupSample, CgroupError> {
        let Scratch { membership, text, path, pid: pid_text } = scratch;
        pid_text.clear();
        // Writing to a String cannot fail.
        let _ = write!(pid_text, "{pid}");
        let proc_root = self.roots.proc_root.as_path();
        let mut files = Files { path, text, missing: false };

        set_path(files.path, proc_root, pid_text, "cgroup");
        let gone = CgroupError::Gone { pid };
        let mut ignored = false;
        let Some(cgroups) = read_text(files.path, membership, &mut ignored)? else {
            return Err(gone);
        };
        if cgroups.trim().is_empty() {
            return Err(gone);
        }
        if mark.is_some_and(|m| m.is_empty() || !cgroups.contains(m)) {
            return Err(CgroupError::parse(
                files.path,
                "the process is not in the container's cgroup (another pid namespace, or a reused pid?)",
            ));
        }
        let m = resolve(parse::proc_cgroup(cgroups)).map_err(|what| CgroupError::parse(files.path, what))?;

        let mut sample = CgroupSample::default();
        match self.mode {
            CgroupMode::V2 => {
                let cgroup = m.unified.ok_or_else(|| CgroupError::parse(files.path, "no cgroup v2 line (0::)"))?;
                self.read_v2(cgroup, &mut files, &mut sample)?;
            }
            CgroupMode::V1 => self.read_v1(&m, &mut files, &mut sample)?,
        }

        if let Some((rx, tx)) = files.parsed(proc_root, pid_text, "net/dev", parse::net_dev, "malformed line")? {
            sample.network_rx_bytes = rx;
            sample.network_tx_bytes = tx;
        }
        if let Some(host) = &self.host_netns {
            set_path(files.path, proc_root, pid_text, "ns/net");
            // Unreadable without ptrace rights over the process: unknown.
            if let Ok(netns) = fs::read_link(&*files.path) {
                sample.host_network = &netns == host;
            }
        }

        // A file was missing: was it because the process exited meanwhile?
        if files.missing {
            set_path(files.path, proc_root, "", pid_text);
            if !files.path.exists() {
                return Err(gone);
            }
        }
        Ok(sample)
    }

    fn read_v2(&self, cgroup: &str, files: &mut Files<'_>, out: &mut CgroupSample) -> Result<(), CgroupError> {
        let root = self.roots.cgroup_root.as_path();
        let usage_usec = |t: &str| parse::keyed(t, "usage_usec");
        if let Some(usec) = files.parsed(root, cgroup, "cpu.stat", usage_usec, "no usage_usec")? {
            out.cpu_usage_ns = usec.saturating_mul(1000);
        }
        if let Some(current) = files.number(root, cgroup, "memory.current")? {
            let inactive = |t: &str| Some(parse::keyed(t, "inactive_file"));
            let inactive_file = files.parsed(root, cgroup, "memory.stat", inactive, "")?.flatten();
            out.memory_bytes = working_set(current, inactive_file);
        }
        out.memory_limit_bytes = files
            .parsed(root, cgroup, "memory.max", parse::memory_max, "neither max nor a number")?
            .flatten()
            .and_then(|limit| self.limit(limit));
        if let Some((read, write)) = files.parsed(root, cgroup, "io.stat", parse::io_stat, "malformed line")? {
            out.block_read_bytes = read;
            out.block_write_bytes = write;
        }
        out.pids = files.number(root, cgroup, "pids.current")?.unwrap_or(0);
        Ok(())
    }

    fn read_v1(&self, m: &Membership<'_>, files: &mut Files<'_>, out: &mut CgroupSample) -> Result<(), CgroupError> {
        if let (Some(dir), Some(cgroup)) = (&self.v1.cpuacct, m.cpuacct) {
            out.cpu_usage_ns = files.number(dir, cgroup, "cpuacct.usage")?.unwrap_or(0);
        }
        if let (Some(dir), Some(cgroup)) = (&self.v1.memory, m.memory) {
            if let Some(usage) = files.number(dir, cgroup, "memory.usage_in_bytes")? {
                // Hierarchical figure first, as `docker stats` does.
                let inactive =
                    |t: &str| Some(parse::keyed(t, "total_inactive_file").or_else(|| parse::keyed(t, "inactive_file")));
                let inactive_file = files.parsed(dir, cgroup, "memory.stat", inactive, "")?.flatten();
                out.memory_bytes = working_set(usage, inactive_file);
            }
            out.memory_limit_bytes =
                files.number(dir, cgroup, "memory.limit_in_bytes")?.and_then(|limit| self.limit(limit));
        }
        if let (Some(dir), Some(cgroup)) = (&self.v1.blkio, m.blkio) {
            // Recursive files count the container's child cgroups too
            // (systemd inside LXC); the throttle layer sees every I/O, the
            // CFQ files only what that scheduler handled.
            for name in [
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes",
            ] {
                if let Some((read, write)) =
                    files.parsed(dir, cgroup, name, parse::blkio_service_bytes, "malformed line")?
                {
                    out.block_read_bytes = read;
                    out.block_write_bytes = write;
                    break;
                }
            }
        }
        if let (Some(dir), Some(cgroup)) = (&self.v1.pids, m.pids) {
            out.pids = files.number(dir, cgroup, "pids.current")?.unwrap_or(0);
        }
        Ok(())
    }

    /// A limit, or `None` when it is v1's "unlimited" or at least the host's
    /// memory (so cannot bind).
    fn limit(&self, bytes: u64) -> Option<u64> {
        let unbounded = bytes >= UNLIMITED || self.mem_total.is_some_and(|total| bytes >= total);
        (!unbounded).then_some(bytes)
    }
}

/// Memory in use without the inactive page cache (the docker CLI's rule:
/// subtract only when it is smaller).
fn working_set(usage: u64, inactive_file: Option<u64>) -> u64 {
    match inactive_file {
        Some(inactive) if inactive < usage => usage - inactive,
        _ => usage,
    }
}

/// Each path cut to the container's own cgroup; an error for a path outside
/// the reader's cgroup namespace.
fn resolve(m: Membership<'_>) -> Result<Membership<'_>, &'static str> {
    Ok(Membership {
        unified: container_path(m.unified)?,
        cpuacct: container_path(m.cpuacct)?,
        memory: container_path(m.memory)?,
        blkio: container_path(m.blkio)?,
        pids: container_path(m.pids)?,
    })
}

fn container_path(path: Option<&str>) -> Result<Option<&str>, &'static str> {
    match path {
        Some(p) if parse::escapes_namespace(p) => Err("cgroup path outside this cgroup namespace"),
        other => Ok(other.map(parse::container_root)),
    }
}

/// Finds the mount of each v1 controller: `<root>/<controller>` (a mount or
/// the usual symlink to `cpu,cpuacct`), else a `<root>/a,b` co-mount.
fn discover_v1(root: &Path) -> Result<V1Mounts, CgroupError> {
    let entries: Vec<String> = fs::read_dir(root)
        .map_err(|e| CgroupError::io(root, e))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    let find = |controller: &str| -> Option<PathBuf> {
        if entries.iter().any(|name| name == controller) {
            return Some(root.join(controller));
        }
        entries.iter().find(|name| name.split(',').any(|c| c == controller)).map(|name| root.join(name))
    };
    Ok(V1Mounts { cpuacct: find("cpuacct"), memory: find("memory"), blkio: find("blkio"), pids: find("pids") })
}

/// The path buffer and the text buffer of one read, and whether any file
/// was missing.
struct Files<'s> {
    path: &'s mut PathBuf,
    text: &'s mut Vec<u8>,
    missing: bool,
}

impl Files<'_> {
    /// `<dir>/<cgroup>/<name>` as a number; `None` when absent.
    fn number(&mut self, dir: &Path, cgroup: &str, name: &str) -> Result<Option<u64>, CgroupError> {
        self.parsed(dir, cgroup, name, parse::number, "not a number")
    }

    /// `<dir>/<cgroup>/<name>` through `parser`; `None` when absent, an
    /// error naming the file and `what` when the parser rejects it.
    fn parsed<T>(
        &mut self,
        dir: &Path,
        cgroup: &str,
        name: &str,
        parser: impl FnOnce(&str) -> Option<T>,
        what: &'static str,
    ) -> Result<Option<T>, CgroupError> {
        set_path(self.path, dir, cgroup, name);
        let Some(text) = read_text(self.path, self.text, &mut self.missing)? else {
            return Ok(None);
        };
        parser(text).map(Some).ok_or_else(|| CgroupError::parse(self.path, what))
    }
}

/// Sets `path` to `<base>/<rel>/<name>` without allocating once it has
/// grown; `rel` is a cgroup path (`/docker/abc`, `/`) or a pid.
fn set_path(path: &mut PathBuf, base: &Path, rel: &str, name: &str) {
    let s = path.as_mut_os_string();
    s.clear();
    s.push(base.as_os_str());
    let rel = rel.trim_matches('/');
    if !rel.is_empty() {
        s.push("/");
        s.push(rel);
    }
    s.push("/");
    s.push(name);
}

/// Reads `path` into `buf`. `Ok(None)` (and `missing` set) when it does not
/// exist or vanished while open; an error for any other failure.
fn read_text<'b>(path: &Path, buf: &'b mut Vec<u8>, missing: &mut bool) -> Result<Option<&'b str>, CgroupError> {
    buf.clear();
    match File::open(path).and_then(|mut file| file.read_to_end(buf)) {
        Ok(_) => {
            let buf: &'b Vec<u8> = buf;
            std::str::from_utf8(buf).map(Some).map_err(|_| CgroupError::parse(path, "not UTF-8"))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound || matches!(e.raw_os_error(), Some(ESRCH | ENODEV)) => {
            tracing::trace!(path = %path.display(), error = %e, "absent");
            *missing = true;
            Ok(None)
        }
        Err(e) => Err(CgroupError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_path_joins_without_doubling_slashes() {
        let mut path = PathBuf::new();
        set_path(&mut path, Path::new("/sys/fs/cgroup/memory"), "/docker/abc", "memory.stat");
        assert_eq!(path, Path::new("/sys/fs/cgroup/memory/docker/abc/memory.stat"));
        set_path(&mut path, Path::new("/sys/fs/cgroup/cpuacct"), "/", "cpuacct.usage");
        assert_eq!(path, Path::new("/sys/fs/cgroup/cpuacct/cpuacct.usage"));
        set_path(&mut path, Path::new("/proc"), "42", "net/dev");
        assert_eq!(path, Path::new("/proc/42/net/dev"));
    }

    #[test]
    fn working_set_subtracts_only_a_smaller_inactive_file() {
        assert_eq!(working_set(1000, Some(300)), 700);
        assert_eq!(working_set(1000, Some(1000)), 1000);
        assert_eq!(working_set(1000, Some(5000)), 1000);
        assert_eq!(working_set(1000, None), 1000);
    }

    #[test]
    fn resolve_cuts_to_the_container_and_rejects_foreign_namespaces() {
        let m = Membership {
            unified: Some("/lxc.payload.web/init.scope"),
            memory: Some("/docker/abc"),
            ..Default::default()
        };
        let r = resolve(m).unwrap();
        assert_eq!(r.unified, Some("/lxc.payload.web"));
        assert_eq!(r.memory, Some("/docker/abc"));
        let outside = Membership { unified: Some("/../system.slice/docker-abc.scope"), ..Default::default() };
        assert!(resolve(outside).is_err());
    }
}
