//! The reader: finds a process's cgroups and reads their files.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

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
/// Kept sets not read for this long are closed.
const KEPT_IDLE: Duration = Duration::from_secs(30);
/// How often idle kept sets are looked for.
const KEPT_PRUNE_EVERY: Duration = Duration::from_secs(5);
/// Descriptors one kept container holds, at most (v1: seven files).
const FILES_PER_CONTAINER: u64 = 8;
/// The most containers kept open, whatever the descriptor limit.
const KEPT_MAX: u64 = 1024;
/// First size of the read buffer; it doubles when a read leaves less than
/// [`MIN_READ`] free.
const INITIAL_BUF: usize = 8192;
const MIN_READ: usize = 1024;

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
    /// `/proc/<pid>/cgroup`, borrowed while the other files are opened.
    membership: Vec<u8>,
    /// Every other file, read with `pread` (see [`pread_all`]).
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
    kept: Mutex<Kept>,
    kept_limit: usize,
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
        Ok(Self {
            roots,
            mode,
            v1,
            mem_total,
            host_netns,
            scratch: Mutex::new(Scratch::default()),
            kept: Mutex::new(Kept { sets: HashMap::new(), pruned: Instant::now() }),
            kept_limit: default_kept_limit(),
        })
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
        self.read(pid, None).map(|(sample, _)| sample)
    }

    /// [`read_pid`](Self::read_pid), and the instant its CPU counter was
    /// read: what a CPU percent must divide by. An instant taken by the
    /// caller after the call can be late by the rest of the read, a lock
    /// or a preemption (on a loaded host, enough to turn 100 % into 500 %
    /// over a short interval).
    pub fn read_pid_timed(&self, pid: u32) -> Result<(CgroupSample, Instant), CgroupError> {
        self.read(pid, None)
    }

    /// [`read_pid`](Self::read_pid), for a pid some engine reported as a
    /// container's: its `/proc/<pid>/cgroup` must name `mark` (the
    /// container's id), else [`CgroupError::Parse`]. In another pid
    /// namespace, or after the pid was reused, the pid could name an
    /// unrelated process whose figures must not pass for the container's.
    /// The check costs nothing extra: that file is read anyway.
    pub fn read_pid_in(&self, pid: u32, mark: &str) -> Result<CgroupSample, CgroupError> {
        self.read(pid, Some(mark)).map(|(sample, _)| sample)
    }

    fn read(&self, pid: u32, mark: Option<&str>) -> Result<(CgroupSample, Instant), CgroupError> {
        self.with_scratch(|scratch| {
            let set = self.open(pid, mark, scratch)?;
            self.read_open(&set, &mut scratch.text)
        })
    }

    /// [`read_pid_in`](Self::read_pid_in) that keeps the container's files
    /// open for the next call: a later read of the same `mark` and `pid`
    /// costs one `pread` per file (no path walk, open, close, and no
    /// `/proc/<pid>/cgroup`), about half the CPU of a fresh read.
    ///
    /// The open files stay tied to what they were opened for, whatever
    /// happens to the pid: a cgroup's files answer `ENODEV` once the
    /// cgroup is removed (the container stopped or restarted), which ends
    /// the kept set with [`CgroupError::Gone`] (the next call opens afresh),
    /// and a reused pid cannot redirect them. A different `pid` for the
    /// same `mark` opens afresh too.
    ///
    /// At most [`kept_limit`](Self::kept_limit) containers are kept (about
    /// eight descriptors each); beyond that, reads are fresh ones. Sets not
    /// read for 30 s are closed; [`forget`](Self::forget) closes one now.
    pub fn read_container(&self, pid: u32, mark: &str) -> Result<CgroupSample, CgroupError> {
        self.read_container_timed(pid, mark).map(|(sample, _)| sample)
    }

    /// [`read_container`](Self::read_container), and the instant its CPU
    /// counter was read (see [`read_pid_timed`](Self::read_pid_timed)).
    pub fn read_container_timed(&self, pid: u32, mark: &str) -> Result<(CgroupSample, Instant), CgroupError> {
        let held = self.kept_sets().sets.remove(mark).filter(|set| set.pid == pid);
        let result = self.with_scratch(|scratch| {
            let set = match held {
                Some(set) => set,
                None => self.open(pid, Some(mark), scratch)?,
            };
            self.read_open(&set, &mut scratch.text).map(|read| (read, set))
        });
        let (read, mut set) = result?;
        let mut kept = self.kept_sets();
        let now = Instant::now();
        kept.close_idle(now);
        if kept.sets.len() < self.kept_limit || kept.sets.contains_key(mark) {
            set.used = now;
            kept.sets.insert(mark.to_owned(), set);
        }
        Ok(read)
    }

    /// Closes the files kept for `mark` (its container was removed).
    pub fn forget(&self, mark: &str) {
        self.kept_sets().sets.remove(mark);
    }

    /// Closes the files kept for every mark starting with `prefix` (a
    /// container removed by a short id); an empty prefix closes nothing.
    pub fn forget_prefix(&self, prefix: &str) {
        if !prefix.is_empty() {
            self.kept_sets().sets.retain(|mark, _| !mark.starts_with(prefix));
        }
    }

    /// Closes sets not read for 30 s, at most every 5 s. Every
    /// [`read_container`](Self::read_container) does this; call it when
    /// reads may have stopped altogether (no container running), since a
    /// kept `/proc/<pid>/net/dev` holds its network namespace alive.
    pub fn close_idle(&self) {
        self.kept_sets().close_idle(Instant::now());
    }

    /// How many containers' files [`read_container`](Self::read_container)
    /// keeps open: a quarter of the process's soft `RLIMIT_NOFILE` at
    /// eight descriptors per container, at most 1024 containers, unless
    /// [`with_kept_limit`](Self::with_kept_limit) set it.
    pub fn kept_limit(&self) -> usize {
        self.kept_limit
    }

    /// Sets [`kept_limit`](Self::kept_limit); 0 makes every read a fresh one.
    #[must_use]
    pub fn with_kept_limit(mut self, containers: usize) -> Self {
        self.kept_limit = containers;
        self
    }

    /// How many containers' files are open now.
    pub fn kept(&self) -> usize {
        self.kept_sets().sets.len()
    }

    fn kept_sets(&self) -> std::sync::MutexGuard<'_, Kept> {
        // The map holds no invariant a panic elsewhere could break.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with the shared buffers, or fresh ones when another thread
    /// holds them.
    fn with_scratch<T>(&self, f: impl FnOnce(&mut Scratch) -> T) -> T {
        match self.scratch.try_lock() {
            Ok(mut scratch) => f(&mut scratch),
            // The buffers hold no invariant worth losing a read over.
            Err(TryLockError::Poisoned(poisoned)) => f(&mut poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => f(&mut Scratch::default()),
        }
    }

    /// Finds the cgroups of `pid` (checking `mark` against them) and opens
    /// the files to read. A file that does not exist is left out (its
    /// figure stays 0 or `None`), unless the process itself is gone.
    fn open(&self, pid: u32, mark: Option<&str>, scratch: &mut Scratch) -> Result<OpenSet, CgroupError> {
        let Scratch { membership, path, pid: pid_text, .. } = scratch;
        pid_text.clear();
        // Writing to a String cannot fail.
        let _ = write!(pid_text, "{pid}");
        let proc_root = self.roots.proc_root.as_path();
        let gone = CgroupError::Gone { pid };

        set_path(path, proc_root, pid_text, "cgroup");
        let cgroups = match File::open(&*path).and_then(|mut file| {
            membership.clear();
            file.read_to_end(membership)
        }) {
            Ok(_) => std::str::from_utf8(membership).map_err(|_| CgroupError::parse(path, "not UTF-8"))?,
            Err(e) if absent(&e) => return Err(gone),
            Err(e) => return Err(CgroupError::io(path, e)),
        };
        if cgroups.trim().is_empty() {
            return Err(gone);
        }
        if mark.is_some_and(|m| m.is_empty() || !cgroups.contains(m)) {
            return Err(CgroupError::parse(
                path,
                "the process is not in the container's cgroup (another pid namespace, or a reused pid?)",
            ));
        }
        let m = resolve(parse::proc_cgroup(cgroups)).map_err(|what| CgroupError::parse(path, what))?;

        let mut opener = Opener { files: Vec::with_capacity(8), missing: false };
        match self.mode {
            CgroupMode::V2 => {
                let cgroup = m.unified.ok_or_else(|| CgroupError::parse(path, "no cgroup v2 line (0::)"))?;
                let root = self.roots.cgroup_root.as_path();
                opener.add(root, cgroup, "cpu.stat", Figure::CpuStat)?;
                if opener.add(root, cgroup, "memory.current", Figure::MemoryUsage)? {
                    opener.add(root, cgroup, "memory.stat", Figure::MemoryStat)?;
                }
                opener.add(root, cgroup, "memory.max", Figure::MemoryMax)?;
                opener.add(root, cgroup, "io.stat", Figure::IoStat)?;
                opener.add(root, cgroup, "pids.current", Figure::Pids)?;
            }
            CgroupMode::V1 => {
                if let (Some(dir), Some(cgroup)) = (&self.v1.cpuacct, m.cpuacct) {
                    opener.add(dir, cgroup, "cpuacct.usage", Figure::CpuUsage)?;
                }
                if let (Some(dir), Some(cgroup)) = (&self.v1.memory, m.memory) {
                    if opener.add(dir, cgroup, "memory.usage_in_bytes", Figure::MemoryUsage)? {
                        opener.add(dir, cgroup, "memory.stat", Figure::MemoryStat)?;
                    }
                    opener.add(dir, cgroup, "memory.limit_in_bytes", Figure::MemoryLimit)?;
                }
                if let (Some(dir), Some(cgroup)) = (&self.v1.blkio, m.blkio) {
                    // Recursive files count the container's child cgroups too
                    // (systemd inside LXC); the throttle layer sees every I/O,
                    // the CFQ files only what that scheduler handled.
                    for name in [
                        "blkio.throttle.io_service_bytes_recursive",
                        "blkio.io_service_bytes_recursive",
                        "blkio.throttle.io_service_bytes",
                    ] {
                        if opener.add(dir, cgroup, name, Figure::BlkioServiceBytes)? {
                            break;
                        }
                    }
                }
                if let (Some(dir), Some(cgroup)) = (&self.v1.pids, m.pids) {
                    opener.add(dir, cgroup, "pids.current", Figure::Pids)?;
                }
            }
        }
        opener.add(proc_root, pid_text, "net/dev", Figure::NetDev)?;

        let mut host_network = false;
        if let Some(host) = &self.host_netns {
            set_path(path, proc_root, pid_text, "ns/net");
            // Unreadable without ptrace rights over the process: unknown.
            if let Ok(netns) = fs::read_link(&*path) {
                host_network = &netns == host;
            }
        }
        // A file was missing: was it because the process exited meanwhile?
        if opener.missing {
            set_path(path, proc_root, "", pid_text);
            if !path.exists() {
                return Err(gone);
            }
        }
        Ok(OpenSet { pid, files: opener.files, host_network, used: Instant::now() })
    }

    /// Reads every file of `set` from its start. A cgroup removed or a
    /// process gone since the files were opened is [`CgroupError::Gone`].
    /// Also returns when the CPU counter was read (when there was none, when
    /// the read ended).
    fn read_open(&self, set: &OpenSet, buf: &mut Vec<u8>) -> Result<(CgroupSample, Instant), CgroupError> {
        let v2 = self.mode == CgroupMode::V2;
        let mut sample = CgroupSample { host_network: set.host_network, ..CgroupSample::default() };
        let mut cpu_read_at = None;
        let (mut usage, mut inactive_file) = (None, None);
        for open in &set.files {
            let text = match pread_all(&open.file, buf) {
                Ok(bytes) => std::str::from_utf8(bytes).map_err(|_| CgroupError::parse(&open.path, "not UTF-8"))?,
                Err(e) if absent(&e) => {
                    tracing::trace!(path = %open.path.display(), error = %e, "gone while open");
                    return Err(CgroupError::Gone { pid: set.pid });
                }
                Err(e) => return Err(CgroupError::io(&open.path, e)),
            };
            if matches!(open.figure, Figure::CpuUsage | Figure::CpuStat) {
                cpu_read_at = Some(Instant::now());
            }
            let bad = |what| CgroupError::parse(&open.path, what);
            match open.figure {
                Figure::CpuUsage => sample.cpu_usage_ns = parse::number(text).ok_or_else(|| bad("not a number"))?,
                Figure::CpuStat => {
                    let usec = parse::keyed(text, "usage_usec").ok_or_else(|| bad("no usage_usec"))?;
                    sample.cpu_usage_ns = usec.saturating_mul(1000);
                }
                Figure::MemoryUsage => usage = Some(parse::number(text).ok_or_else(|| bad("not a number"))?),
                // Hierarchical figure first on v1, as `docker stats` does.
                Figure::MemoryStat if v2 => inactive_file = parse::keyed(text, "inactive_file"),
                Figure::MemoryStat => {
                    inactive_file =
                        parse::keyed(text, "total_inactive_file").or_else(|| parse::keyed(text, "inactive_file"));
                }
                Figure::MemoryLimit => {
                    let limit = parse::number(text).ok_or_else(|| bad("not a number"))?;
                    sample.memory_limit_bytes = self.limit(limit);
                }
                Figure::MemoryMax => {
                    let limit = parse::memory_max(text).ok_or_else(|| bad("neither max nor a number"))?;
                    sample.memory_limit_bytes = limit.and_then(|l| self.limit(l));
                }
                Figure::BlkioServiceBytes | Figure::IoStat => {
                    let parser = if v2 { parse::io_stat } else { parse::blkio_service_bytes };
                    (sample.block_read_bytes, sample.block_write_bytes) =
                        parser(text).ok_or_else(|| bad("malformed line"))?;
                }
                Figure::Pids => sample.pids = parse::number(text).ok_or_else(|| bad("not a number"))?,
                Figure::NetDev => {
                    (sample.network_rx_bytes, sample.network_tx_bytes) =
                        parse::net_dev(text).ok_or_else(|| bad("malformed line"))?;
                }
            }
        }
        if let Some(usage) = usage {
            sample.memory_bytes = working_set(usage, inactive_file);
        }
        Ok((sample, cpu_read_at.unwrap_or_else(Instant::now)))
    }

    /// A limit, or `None` when it is v1's "unlimited" or at least the host's
    /// memory (so cannot bind).
    fn limit(&self, bytes: u64) -> Option<u64> {
        let unbounded = bytes >= UNLIMITED || self.mem_total.is_some_and(|total| bytes >= total);
        (!unbounded).then_some(bytes)
    }
}

/// A quarter of the soft descriptor limit, in containers of
/// [`FILES_PER_CONTAINER`], at most [`KEPT_MAX`].
fn default_kept_limit() -> usize {
    use rustix::process::{Resource, getrlimit};
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let containers = (soft / 4 / FILES_PER_CONTAINER).min(KEPT_MAX);
    usize::try_from(containers).unwrap_or(0)
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

/// Which figure an open file holds, which decides how its text is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Figure {
    /// v1 `cpuacct.usage`.
    CpuUsage,
    /// v2 `cpu.stat`.
    CpuStat,
    /// v1 `memory.usage_in_bytes`, v2 `memory.current`.
    MemoryUsage,
    /// `memory.stat` (its inactive file cache).
    MemoryStat,
    /// v1 `memory.limit_in_bytes`.
    MemoryLimit,
    /// v2 `memory.max`.
    MemoryMax,
    /// v1 `blkio.*io_service_bytes*`.
    BlkioServiceBytes,
    /// v2 `io.stat`.
    IoStat,
    /// `pids.current`.
    Pids,
    /// `/proc/<pid>/net/dev`.
    NetDev,
}

/// One open file of a container.
#[derive(Debug)]
struct OpenFile {
    file: File,
    /// For error messages.
    path: PathBuf,
    figure: Figure,
}

/// A container's files, open; reading them again costs a `pread` each.
#[derive(Debug)]
struct OpenSet {
    pid: u32,
    files: Vec<OpenFile>,
    host_network: bool,
    /// Last read (kept sets idle for [`KEPT_IDLE`] are closed).
    used: Instant,
}

/// The sets [`CgroupReader::read_container`] keeps, by mark.
#[derive(Debug)]
struct Kept {
    sets: HashMap<String, OpenSet>,
    pruned: Instant,
}

impl Kept {
    fn close_idle(&mut self, now: Instant) {
        if now.duration_since(self.pruned) >= KEPT_PRUNE_EVERY {
            self.sets.retain(|_, s| now.duration_since(s.used) < KEPT_IDLE);
            self.pruned = now;
        }
    }
}

/// Collects the files of one container as they are opened.
struct Opener {
    files: Vec<OpenFile>,
    /// A file did not exist.
    missing: bool,
}

impl Opener {
    /// Opens `<dir>/<rel>/<name>`; `false` (and `missing` set) when it does
    /// not exist, an error for any other failure.
    fn add(&mut self, dir: &Path, rel: &str, name: &str, figure: Figure) -> Result<bool, CgroupError> {
        let mut path = PathBuf::new();
        set_path(&mut path, dir, rel, name);
        match File::open(&path) {
            Ok(file) => {
                self.files.push(OpenFile { file, path, figure });
                Ok(true)
            }
            Err(e) if absent(&e) => {
                tracing::trace!(path = %path.display(), error = %e, "absent");
                self.missing = true;
                Ok(false)
            }
            Err(e) => Err(CgroupError::io(&path, e)),
        }
    }
}

/// The file does not exist, or what it showed is gone (`ESRCH`: the
/// process exited; `ENODEV`: the cgroup was removed).
fn absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || matches!(e.raw_os_error(), Some(ESRCH | ENODEV))
}

/// Reads `file` whole from offset 0 into `buf` (grown as needed, never
/// shrunk or cleared: only the filled part is returned).
fn pread_all<'b>(file: &File, buf: &'b mut Vec<u8>) -> io::Result<&'b [u8]> {
    let mut filled = 0;
    loop {
        if buf.len() - filled < MIN_READ {
            let grown = (buf.len() * 2).max(INITIAL_BUF);
            buf.resize(grown, 0);
        }
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => return Ok(&buf[..filled]),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
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
