//! Pure parsers over the text the kernel exposes under `/proc` and `/sys`.
//!
//! Every function here takes `&str` and does no I/O, so each can be tested on
//! fixture text. Malformed lines are skipped, never a panic; the callers
//! decide whether a missing figure is an error.

use homeserver_domain::LoadAverage;

/// Bytes per sector in `/proc/diskstats` and `/sys/block/*/size`: always 512,
/// whatever the device's real sector size.
pub(crate) const SECTOR_BYTES: u64 = 512;

/// `IFF_UP` in `/sys/class/net/*/flags`.
const IFF_UP: u64 = 0x1;
/// `IFF_LOOPBACK` in `/sys/class/net/*/flags`.
const IFF_LOOPBACK: u64 = 0x8;

// ---------------------------------------------------------------- /proc/stat

/// Cumulative time of one `cpu` line of `/proc/stat`, folded into busy and total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CpuTimes {
    /// `user + nice + system + irq + softirq + steal` (guest time is inside user and nice).
    pub(crate) busy: u64,
    /// `busy + idle + iowait`.
    pub(crate) total: u64,
}

/// Parses the `cpu` lines at the top of `/proc/stat`.
///
/// Returns the aggregate `cpu` line and fills `cores` (cleared first) with
/// each `cpuN` line as `(N, times)`. Stops at the first line after the cpu
/// block, so the long `intr` line is never parsed. Malformed lines are skipped.
pub(crate) fn parse_stat_cpus(text: &str, cores: &mut Vec<(u32, CpuTimes)>) -> Option<CpuTimes> {
    cores.clear();
    let mut aggregate = None;
    let mut in_block = false;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            if in_block {
                break;
            }
            continue;
        };
        in_block = true;
        let (label, fields) = rest.split_once(|c: char| c.is_ascii_whitespace()).unwrap_or((rest, ""));
        let Some(times) = parse_cpu_fields(fields) else { continue };
        if label.is_empty() {
            aggregate = Some(times);
        } else if let Ok(id) = label.parse::<u32>() {
            cores.push((id, times));
        }
    }
    aggregate
}

fn parse_cpu_fields(fields: &str) -> Option<CpuTimes> {
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let mut v = [0u64; 8];
    let mut count = 0;
    for (slot, token) in v.iter_mut().zip(fields.split_ascii_whitespace()) {
        *slot = token.parse().ok()?;
        count += 1;
    }
    if count < 4 {
        return None;
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = v;
    let busy = user.saturating_add(nice).saturating_add(system).saturating_add(irq).saturating_add(softirq);
    let busy = busy.saturating_add(steal);
    Some(CpuTimes { busy, total: busy.saturating_add(idle).saturating_add(iowait) })
}

/// Busy share between two readings of the same cpu line, 0..=100.
///
/// A counter that went down (CPU hot-plug, reset) gives 0.
pub(crate) fn busy_percent(prev: CpuTimes, cur: CpuTimes) -> f64 {
    if cur.total <= prev.total || cur.busy < prev.busy {
        return 0.0;
    }
    let total = (cur.total - prev.total) as f64;
    let busy = (cur.busy - prev.busy) as f64;
    (busy / total * 100.0).clamp(0.0, 100.0)
}

/// Counts the `cpuN` lines of `/proc/stat`: the logical cores online.
pub(crate) fn count_stat_cores(text: &str) -> u32 {
    let mut cores = Vec::new();
    parse_stat_cpus(text, &mut cores);
    u32::try_from(cores.len()).unwrap_or(u32::MAX)
}

/// The `btime` line of `/proc/stat`: boot time in seconds since the epoch.
pub(crate) fn parse_boot_time(text: &str) -> Option<i64> {
    text.lines().find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// The `processes` line of `/proc/stat`: tasks (processes and threads)
/// created since boot. It only grows.
pub(crate) fn parse_forks(text: &str) -> Option<u64> {
    let at = if text.starts_with("processes ") { 0 } else { text.find("\nprocesses ")? + 1 };
    text[at + "processes ".len()..].split_ascii_whitespace().next()?.parse().ok()
}

// ------------------------------------------------------------- /proc/meminfo

/// The `/proc/meminfo` figures a snapshot needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct MemInfo {
    pub(crate) total: u64,
    pub(crate) available: u64,
    pub(crate) swap_total: u64,
    pub(crate) swap_free: u64,
}

/// Parses `/proc/meminfo`. `MemTotal` is required; without `MemAvailable`
/// (kernels before 3.14) available is `MemFree + Buffers + Cached`.
pub(crate) fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let (mut total, mut available, mut free, mut buffers, mut cached) = (None, None, None, None, None);
    let (mut swap_total, mut swap_free) = (None, None);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else { continue };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            "MemFree" => &mut free,
            "Buffers" => &mut buffers,
            "Cached" => &mut cached,
            "SwapTotal" => &mut swap_total,
            "SwapFree" => &mut swap_free,
            _ => continue,
        };
        let mut tokens = rest.split_ascii_whitespace();
        let Some(value) = tokens.next().and_then(|t| t.parse::<u64>().ok()) else { continue };
        let multiplier = match tokens.next() {
            Some("kB") => 1024,
            None => 1,
            Some(_) => continue,
        };
        *slot = Some(value.saturating_mul(multiplier));
        if total.is_some() && available.is_some() && swap_total.is_some() && swap_free.is_some() {
            break;
        }
    }
    let total = total?;
    let available = match available {
        Some(a) => a,
        None => free?.saturating_add(buffers.unwrap_or(0)).saturating_add(cached.unwrap_or(0)),
    };
    let swap_total = swap_total.unwrap_or(0);
    Some(MemInfo {
        total,
        available: available.min(total),
        swap_total,
        swap_free: swap_free.unwrap_or(swap_total).min(swap_total),
    })
}

// ------------------------------------------------- /proc/loadavg, /proc/uptime

/// `/proc/loadavg`: the three load averages and the number of scheduling entities.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct LoadAvg {
    pub(crate) load: LoadAverage,
    /// The `total` of the `running/total` field: threads (tasks) alive.
    pub(crate) threads: u64,
}

/// Parses `/proc/loadavg` (`0.26 0.12 0.04 1/80 4333`).
pub(crate) fn parse_loadavg(text: &str) -> Option<LoadAvg> {
    let mut tokens = text.split_ascii_whitespace();
    let one = finite(tokens.next()?.parse().ok()?)?;
    let five = finite(tokens.next()?.parse().ok()?)?;
    let fifteen = finite(tokens.next()?.parse().ok()?)?;
    let (_, threads) = tokens.next()?.split_once('/')?;
    Some(LoadAvg { load: LoadAverage { one, five, fifteen }, threads: threads.parse().ok()? })
}

/// Parses `/proc/uptime` (`298.01 542.88`): seconds since boot.
pub(crate) fn parse_uptime(text: &str) -> Option<f64> {
    let secs = finite(text.split_ascii_whitespace().next()?.parse().ok()?)?;
    (secs >= 0.0).then_some(secs)
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

// ------------------------------------------------------------- /proc/net/dev

/// The counters of one interface in `/proc/net/dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct NetCounters {
    pub(crate) rx_bytes: u64,
    pub(crate) rx_packets: u64,
    pub(crate) rx_errors: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) tx_packets: u64,
    pub(crate) tx_errors: u64,
}

/// The interfaces of `/proc/net/dev`, in the kernel's order, with their
/// counters. The two header lines and malformed lines are skipped.
pub(crate) fn net_dev_lines(text: &str) -> impl Iterator<Item = (&str, NetCounters)> {
    text.lines().filter_map(|line| {
        // Interface names cannot contain ':' (dev_valid_name), so the first one ends the name.
        let (name, rest) = line.split_once(':')?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return None;
        }
        // rx: bytes packets errs drop fifo frame compressed multicast, tx: bytes packets errs ...
        let mut f = [0u64; 11];
        let mut tokens = rest.split_ascii_whitespace();
        for slot in &mut f {
            *slot = tokens.next()?.parse().ok()?;
        }
        Some((
            name,
            NetCounters {
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
            },
        ))
    })
}

// ----------------------------------------------------------- /proc/diskstats

/// One line of `/proc/diskstats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskLine<'a> {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) name: &'a str,
    pub(crate) read_sectors: u64,
    pub(crate) write_sectors: u64,
}

/// The devices of `/proc/diskstats` (whole devices and partitions).
/// Malformed lines are skipped.
pub(crate) fn diskstats_lines(text: &str) -> impl Iterator<Item = DiskLine<'_>> {
    text.lines().filter_map(|line| {
        let mut t = line.split_ascii_whitespace();
        let major = t.next()?.parse().ok()?;
        let minor = t.next()?.parse().ok()?;
        let name = t.next()?;
        // reads, reads merged, sectors read, ms reading, writes, writes merged, sectors written
        let mut f = [0u64; 7];
        for slot in &mut f {
            *slot = t.next()?.parse().ok()?;
        }
        Some(DiskLine { major, minor, name, read_sectors: f[2], write_sectors: f[6] })
    })
}

// ------------------------------------------------------- /proc/self/mountinfo

/// One mount of `/proc/self/mountinfo`, octal escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    /// The directory of the file system mounted here (`/` unless a bind mount of a subtree).
    pub(crate) root: String,
    pub(crate) mount_point: String,
    pub(crate) fs_type: String,
    pub(crate) source: String,
}

/// Parses `/proc/self/mountinfo`; malformed lines are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    // 27 1 254:0 / / rw,relatime [optional fields] - ext4 /dev/vda rw,discard
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let _mount_id = l.next()?;
    let _parent_id = l.next()?;
    let (major, minor) = l.next()?.split_once(':')?;
    let root = l.next()?;
    let mount_point = l.next()?;
    let mut r = right.split(' ');
    let fs_type = r.next()?;
    let source = r.next()?;
    if fs_type.is_empty() || !mount_point.starts_with('/') {
        return None;
    }
    Some(MountEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        root: unescape_octal(root),
        mount_point: unescape_octal(mount_point),
        fs_type: fs_type.to_owned(),
        source: unescape_octal(source),
    })
}

/// Decodes the `\040`-style escapes the kernel uses for space, tab, newline and backslash.
fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// File systems that hold no user data of their own: kernel interfaces,
/// memory-backed, container layers and images.
const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nfsd",
    "nsfs",
    "overlay",
    "pipefs",
    "proc",
    "pstore",
    "ramfs",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "sockfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// Whether `fs_type` is a pseudo file system to leave out of the disk list.
pub(crate) fn is_pseudo_fs(fs_type: &str) -> bool {
    PSEUDO_FS.contains(&fs_type)
}

/// Picks the mounts to report: real file systems, one per device and file
/// system type (bind mounts collapse into the mount of the file system's
/// root), a mount shadowed by a later mount on the same point left out.
/// The root file system `/` is always kept, whatever its type.
pub(crate) fn select_disks(entries: Vec<MountEntry>) -> Vec<MountEntry> {
    let mut out: Vec<MountEntry> = Vec::new();
    for entry in entries {
        if entry.mount_point != "/" && is_pseudo_fs(&entry.fs_type) {
            continue;
        }
        // A later mount on the same point hides the earlier one from statvfs.
        out.retain(|o| o.mount_point != entry.mount_point);
        let same_fs =
            out.iter_mut().find(|o| o.major == entry.major && o.minor == entry.minor && o.fs_type == entry.fs_type);
        match same_fs {
            Some(existing) => {
                if mount_rank(&entry) < mount_rank(existing) {
                    *existing = entry;
                }
            }
            None => out.push(entry),
        }
    }
    out
}

/// Lower is better: `/` first, then mounts of the file system's own root, then shorter paths.
fn mount_rank(m: &MountEntry) -> (bool, bool, usize) {
    (m.mount_point != "/", m.root != "/", m.mount_point.len())
}

// ------------------------------------------------------------- /proc/cpuinfo

/// What `/proc/cpuinfo` tells about the processor.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct CpuInfo {
    pub(crate) model: Option<String>,
    /// `cpu MHz` of the first processor.
    pub(crate) mhz: Option<f64>,
    /// Distinct `(physical id, core id)` pairs, when the kernel lists them.
    pub(crate) physical_cores: Option<u32>,
}

/// Parses `/proc/cpuinfo`. The model comes from `model name` (x86), else
/// `Processor` (older ARM), `cpu model` (MIPS) or `cpu` (POWER).
pub(crate) fn parse_cpuinfo(text: &str) -> CpuInfo {
    const MODEL_KEYS: [&str; 4] = ["model name", "Processor", "cpu model", "cpu"];
    let mut models: [Option<&str>; 4] = [None; 4];
    let mut mhz = None;
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    let (mut physical_id, mut core_id): (Option<u32>, Option<u32>) = (None, None);
    let mut flush = |physical_id: &mut Option<u32>, core_id: &mut Option<u32>| {
        if let Some(core) = core_id.take() {
            pairs.push((physical_id.unwrap_or(0), core));
        }
        *physical_id = None;
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            if line.trim().is_empty() {
                flush(&mut physical_id, &mut core_id);
            }
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => flush(&mut physical_id, &mut core_id),
            "cpu MHz" if mhz.is_none() => mhz = value.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0),
            "physical id" => physical_id = value.parse().ok(),
            "core id" => core_id = value.parse().ok(),
            _ => {}
        }
        if let Some(i) = MODEL_KEYS.iter().position(|k| *k == key)
            && models[i].is_none()
            && !value.is_empty()
        {
            models[i] = Some(value);
        }
    }
    flush(&mut physical_id, &mut core_id);
    pairs.sort_unstable();
    pairs.dedup();
    CpuInfo {
        model: models.iter().flatten().next().map(|m| (*m).to_owned()),
        mhz,
        physical_cores: u32::try_from(pairs.len()).ok().filter(|n| *n > 0),
    }
}

// ------------------------------------------------------------ /etc/os-release

/// Distribution name and version from `os-release`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct OsRelease {
    pub(crate) name: Option<String>,
    pub(crate) version: Option<String>,
}

/// Parses `os-release(5)`: the name is `NAME`, else `PRETTY_NAME`; the
/// version `VERSION_ID`, else `VERSION`, else `BUILD_ID` (rolling releases).
pub(crate) fn parse_os_release(text: &str) -> OsRelease {
    let (mut name, mut pretty, mut version_id, mut version, mut build_id) = (None, None, None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let slot = match key.trim() {
            "NAME" => &mut name,
            "PRETTY_NAME" => &mut pretty,
            "VERSION_ID" => &mut version_id,
            "VERSION" => &mut version,
            "BUILD_ID" => &mut build_id,
            _ => continue,
        };
        let value = unquote_shell(value);
        if !value.is_empty() {
            *slot = Some(value);
        }
    }
    OsRelease { name: name.or(pretty), version: version_id.or(version).or(build_id) }
}

/// Removes one level of shell quoting from an os-release value.
fn unquote_shell(value: &str) -> String {
    let value = value.trim();
    let quoted = |q: char| value.len() >= 2 && value.starts_with(q) && value.ends_with(q);
    if quoted('\'') {
        return value[1..value.len() - 1].to_owned();
    }
    let inner = if quoted('"') { &value[1..value.len() - 1] } else { value };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(next) = chars.next()
        {
            out.push(next);
            continue;
        }
        out.push(c);
    }
    out
}

// --------------------------------------------------------------------- /sys

/// `/sys/class/net/*/flags` (`0x1003`).
pub(crate) fn parse_hex_flags(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    u64::from_str_radix(digits, 16).ok()
}

/// Whether an interface is up: `operstate` `up`, or `unknown` (loopback,
/// tunnels) with `IFF_UP` set.
pub(crate) fn interface_is_up(operstate: Option<&str>, flags: Option<u64>) -> bool {
    match operstate.map(str::trim) {
        Some("up") => true,
        Some("unknown") | Some("") | None => flags.is_some_and(|f| f & IFF_UP != 0),
        Some(_) => false,
    }
}

/// Whether an interface is a loopback, from its flags, else its name.
pub(crate) fn interface_is_loopback(name: &str, flags: Option<u64>) -> bool {
    flags.map_or(name == "lo", |f| f & IFF_LOOPBACK != 0)
}

/// A hardware address worth showing: not empty, not all zeros.
pub(crate) fn normalize_mac(text: &str) -> Option<String> {
    let t = text.trim();
    if t.is_empty() || t.chars().all(|c| c == '0' || c == ':') {
        return None;
    }
    Some(t.to_ascii_lowercase())
}

/// `/sys/class/net/*/speed` in Mbit/s; `-1` and `0` mean unknown.
pub(crate) fn parse_link_speed(text: &str) -> Option<u64> {
    text.trim().parse::<i64>().ok().and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0)
}

/// A decimal integer file (`/sys/block/*/size`, `scaling_cur_freq`).
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A temperature file in millidegrees Celsius; implausible readings are dropped.
pub(crate) fn parse_millicelsius(text: &str) -> Option<f64> {
    let milli: i64 = text.trim().parse().ok()?;
    let celsius = milli as f64 / 1000.0;
    (-60.0..=200.0).contains(&celsius).then_some(celsius)
}

/// Bytes per second between two readings of a counter; 0 on the first
/// reading, for a zero interval, or when the counter went down (reset, wrap).
pub(crate) fn rate(prev: Option<u64>, cur: u64, elapsed_secs: Option<f64>) -> f64 {
    match (prev, elapsed_secs) {
        (Some(prev), Some(secs)) if cur >= prev && secs > 0.0 => (cur - prev) as f64 / secs,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  3969 0 887 54288 309 0 26 2 0 0
cpu0 2391 0 461 26632 235 0 7 1 0 0
cpu1 1578 0 425 27656 73 0 19 1 0 0
intr 142881 0 0 0 0 0 0 0 0 0 0
ctxt 223952
btime 1795309422
processes 4400
procs_running 1
procs_blocked 0
softirq 86209 1 14190 0 3283 3069 0 50 38596 0 27020
";

    #[test]
    fn stat_cpu_lines_fold_into_busy_and_total() {
        let mut cores = Vec::new();
        let agg = parse_stat_cpus(STAT, &mut cores).unwrap();
        // busy = user+nice+system+irq+softirq+steal
        assert_eq!(agg.busy, 3969 + 887 + 26 + 2);
        assert_eq!(agg.total, agg.busy + 54288 + 309);
        assert_eq!(cores.len(), 2);
        assert_eq!(cores[0].0, 0);
        assert_eq!(cores[1], (1, CpuTimes { busy: 1578 + 425 + 19 + 1, total: 1578 + 425 + 19 + 1 + 27656 + 73 }));
        assert_eq!(count_stat_cores(STAT), 2);
        assert_eq!(parse_boot_time(STAT), Some(1_795_309_422));
        assert_eq!(parse_forks(STAT), Some(4400));
    }

    #[test]
    fn forks_line_edge_cases() {
        assert_eq!(parse_forks("processes 7\n"), Some(7));
        assert_eq!(parse_forks("cpu 1 2 3 4\nprocesses_x 9\nprocesses x\n"), None);
        assert_eq!(parse_forks("cpu 1 2 3 4\nprocs_running 1\n"), None);
        assert_eq!(parse_forks(""), None);
    }

    #[test]
    fn stat_skips_malformed_cpu_lines_and_old_short_lines() {
        let text =
            "cpu  10 0 10 80\ncpu0 x y z w\ncpu1 5 0 5\ncpu2 10 0 10 80 0 0 0 0\ncpuX 1 2 3 4\nintr 1\ncpu3 1 1 1 1\n";
        let mut cores = Vec::new();
        let agg = parse_stat_cpus(text, &mut cores).unwrap();
        assert_eq!(agg, CpuTimes { busy: 20, total: 100 });
        // cpu0 (not numbers) and cpu1 (3 fields) skipped, cpuX not a core, cpu3 after the block ignored
        assert_eq!(cores, vec![(2, CpuTimes { busy: 20, total: 100 })]);
        assert_eq!(parse_stat_cpus("intr 1 2\nctxt 3\n", &mut cores), None);
        assert!(cores.is_empty());
        assert_eq!(parse_stat_cpus("", &mut cores), None);
    }

    #[test]
    fn busy_percent_is_bounded_and_zero_on_reset() {
        let a = CpuTimes { busy: 100, total: 1000 };
        let b = CpuTimes { busy: 150, total: 1100 };
        assert!((busy_percent(a, b) - 50.0).abs() < 1e-9);
        assert_eq!(busy_percent(b, a), 0.0, "counters went down");
        assert_eq!(busy_percent(a, a), 0.0, "no time passed");
        let weird = CpuTimes { busy: 400, total: 1100 };
        assert_eq!(busy_percent(a, weird), 100.0, "clamped");
    }

    const MEMINFO: &str = "MemTotal:       24731708 kB
MemFree:        23093388 kB
MemAvailable:   24399104 kB
Buffers:           39576 kB
Cached:          1452672 kB
SwapCached:            0 kB
SwapTotal:       2097148 kB
SwapFree:        1048576 kB
HugePages_Total:       0
";

    #[test]
    fn meminfo_in_bytes() {
        let m = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(m.total, 24_731_708 * 1024);
        assert_eq!(m.available, 24_399_104 * 1024);
        assert_eq!(m.swap_total, 2_097_148 * 1024);
        assert_eq!(m.swap_free, 1_048_576 * 1024);
    }

    #[test]
    fn meminfo_without_memavailable_and_malformed_lines() {
        let text = "garbage\nMemTotal: lots kB\nMemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 20 MB\n";
        let m = parse_meminfo(text).unwrap();
        assert_eq!(m.total, 1000 * 1024);
        assert_eq!(m.available, 110 * 1024, "Cached with an unknown unit is skipped");
        assert_eq!((m.swap_total, m.swap_free), (0, 0));
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo(""), None);
    }

    #[test]
    fn loadavg_and_uptime() {
        let l = parse_loadavg("0.26 0.12 0.04 1/80 4333\n").unwrap();
        assert_eq!(l.load, LoadAverage { one: 0.26, five: 0.12, fifteen: 0.04 });
        assert_eq!(l.threads, 80);
        assert_eq!(parse_loadavg("0.26 0.12\n"), None);
        assert_eq!(parse_loadavg("0.26 0.12 0.04 80 1\n"), None);
        assert_eq!(parse_loadavg("nan 0.12 0.04 1/80 1\n"), None);
        assert_eq!(parse_uptime("298.01 542.88\n"), Some(298.01));
        assert_eq!(parse_uptime("-1 2\n"), None);
        assert_eq!(parse_uptime(""), None);
    }

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0
  eth0: 27438102    1391    3    0    0     0          0         0   104176    1316    7    0    0     0       0          0
  bad0: 1 2 3
 weird: a b c d e f g h i j k l m n o p
";

    #[test]
    fn net_dev_lines_parse_counters_and_skip_junk() {
        let lines: Vec<_> = net_dev_lines(NET_DEV).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].0, "lo");
        assert_eq!(lines[1].0, "eth0");
        assert_eq!(
            lines[1].1,
            NetCounters {
                rx_bytes: 27_438_102,
                rx_packets: 1391,
                rx_errors: 3,
                tx_bytes: 104_176,
                tx_packets: 1316,
                tx_errors: 7
            }
        );
    }

    const DISKSTATS: &str = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 254       0 vda 25623 4634 2049458 10982 1678 8696 961224 1911 0 3156 13046 3340 35 119360 150 141 2
 254       1 vda1 100 0 2000 10 50 0 4000 5 0 10 15
   8       0 sdb 1 2
 253       0 zram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
";

    #[test]
    fn diskstats_lines_take_sectors() {
        let lines: Vec<_> = diskstats_lines(DISKSTATS).collect();
        assert_eq!(lines.len(), 4, "the short sdb line is skipped");
        assert_eq!(
            lines[1],
            DiskLine { major: 254, minor: 0, name: "vda", read_sectors: 2_049_458, write_sectors: 961_224 }
        );
        assert_eq!(lines[2].name, "vda1");
        assert_eq!(lines[2].read_sectors * SECTOR_BYTES, 2000 * 512);
    }

    #[test]
    fn rate_is_zero_on_first_reading_reset_or_zero_interval() {
        assert_eq!(rate(None, 100, Some(1.0)), 0.0);
        assert_eq!(rate(Some(100), 300, None), 0.0);
        assert_eq!(rate(Some(100), 300, Some(2.0)), 100.0);
        assert_eq!(rate(Some(300), 100, Some(1.0)), 0.0, "counter reset");
        assert_eq!(rate(Some(u64::MAX), 5, Some(1.0)), 0.0, "wrap");
        assert_eq!(rate(Some(100), 300, Some(0.0)), 0.0);
    }

    const MOUNTINFO: &str = r"22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12358300k
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
28 27 0:25 / /mnt/tools ro,nosuid - tmpfs model_tools_unavailable ro,size=4k
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 27 254:1 / /data rw,relatime shared:1 - xfs /dev/vda1 rw
51 27 254:1 /sub /srv/bind rw,relatime shared:1 - xfs /dev/vda1 rw
52 27 254:0 /var/lib/x /var/lib/x rw - ext4 /dev/vda rw
53 27 8:17 / /mnt/my\040disk rw - ext4 /dev/sdb1 rw
54 27 8:33 / /mnt/over rw - ext4 /dev/sdc1 rw
55 27 8:49 / /mnt/over rw - vfat /dev/sdd1 rw
garbage line
60 27 x:y / /bad rw - ext4 /dev/bad rw
";

    #[test]
    fn mountinfo_selects_real_filesystems_once() {
        let entries = parse_mountinfo(MOUNTINFO);
        assert_eq!(entries.len(), 11, "two malformed lines skipped");
        assert_eq!(entries[8].mount_point, "/mnt/my disk");
        let disks = select_disks(entries);
        let points: Vec<_> = disks.iter().map(|d| d.mount_point.as_str()).collect();
        assert_eq!(points, ["/", "/data", "/mnt/my disk", "/mnt/over"]);
        assert_eq!(disks[0].source, "/dev/vda");
        assert_eq!((disks[0].major, disks[0].minor), (254, 0));
        assert_eq!(disks[3].fs_type, "vfat", "the later mount on the same point wins");
    }

    #[test]
    fn mountinfo_prefers_the_root_of_the_fs_over_a_bind_mount_seen_first() {
        let text = "1 0 8:1 /sub /bind rw - ext4 /dev/sda1 rw\n2 0 8:1 / /real rw - ext4 /dev/sda1 rw\n";
        let disks = select_disks(parse_mountinfo(text));
        assert_eq!(disks.len(), 1);
        assert_eq!(disks[0].mount_point, "/real");
    }

    #[test]
    fn mountinfo_keeps_an_overlay_root() {
        let text = "1 0 0:50 / / rw - overlay overlay rw,lowerdir=/a\n2 1 0:51 / /proc rw - proc proc rw\n";
        let disks = select_disks(parse_mountinfo(text));
        assert_eq!(disks.len(), 1);
        assert_eq!(disks[0].fs_type, "overlay");
    }

    #[test]
    fn octal_unescape() {
        assert_eq!(unescape_octal(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape_octal(r"/trailing\04"), r"/trailing\04");
        assert_eq!(unescape_octal(r"/big\777"), r"/big\777");
    }

    const CPUINFO: &str = "processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
cpu MHz\t\t: 2100.000
physical id\t: 0
core id\t\t: 0

processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
cpu MHz\t\t: 2200.000
physical id\t: 0
core id\t\t: 1

processor\t: 2
physical id\t: 0
core id\t\t: 1
";

    #[test]
    fn cpuinfo_model_frequency_and_physical_cores() {
        let c = parse_cpuinfo(CPUINFO);
        assert_eq!(c.model.as_deref(), Some("Intel(R) Xeon(R) Processor"));
        assert_eq!(c.mhz, Some(2100.0));
        assert_eq!(c.physical_cores, Some(2), "cpu2 is a hyper-thread of core 1");
    }

    #[test]
    fn cpuinfo_arm_style_and_empty() {
        let arm = "Processor\t: ARMv7 Processor rev 4 (v7l)\nprocessor\t: 0\nBogoMIPS\t: 38.40\n\nprocessor\t: 1\n";
        let c = parse_cpuinfo(arm);
        assert_eq!(c.model.as_deref(), Some("ARMv7 Processor rev 4 (v7l)"));
        assert_eq!((c.mhz, c.physical_cores), (None, None));
        assert_eq!(parse_cpuinfo(""), CpuInfo::default());
        assert_eq!(parse_cpuinfo("cpu MHz : fast\n").mhz, None);
    }

    #[test]
    fn os_release_variants() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\n";
        let d = parse_os_release(debian);
        assert_eq!(d.name.as_deref(), Some("Debian GNU/Linux"));
        assert_eq!(d.version.as_deref(), Some("12"));

        let arch = "NAME=\"Arch Linux\"\nPRETTY_NAME='Arch Linux'\nBUILD_ID=rolling\n";
        let a = parse_os_release(arch);
        assert_eq!(a.name.as_deref(), Some("Arch Linux"));
        assert_eq!(a.version.as_deref(), Some("rolling"));

        let pretty_only = "# comment\nPRETTY_NAME=\"My \\\"Quoted\\\" OS\"\nnot a pair\n";
        let p = parse_os_release(pretty_only);
        assert_eq!(p.name.as_deref(), Some("My \"Quoted\" OS"));
        assert_eq!(p.version, None);
        assert_eq!(parse_os_release(""), OsRelease::default());
    }

    #[test]
    fn sysfs_network_values() {
        assert_eq!(parse_hex_flags("0x1003\n"), Some(0x1003));
        assert_eq!(parse_hex_flags("zz"), None);
        assert!(interface_is_up(Some("up\n"), None));
        assert!(interface_is_up(Some("unknown"), Some(0x9)), "loopback reports unknown");
        assert!(!interface_is_up(Some("unknown"), Some(0x1002)));
        assert!(!interface_is_up(Some("down"), Some(0x1003)));
        assert!(!interface_is_up(None, None));
        assert!(interface_is_loopback("lo", None));
        assert!(interface_is_loopback("anything", Some(0x9)));
        assert!(!interface_is_loopback("lo", Some(0x1003)));
        assert_eq!(normalize_mac("02:FC:00:00:00:01\n").as_deref(), Some("02:fc:00:00:00:01"));
        assert_eq!(normalize_mac("00:00:00:00:00:00\n"), None);
        assert_eq!(normalize_mac(""), None);
        assert_eq!(parse_link_speed("1000\n"), Some(1000));
        assert_eq!(parse_link_speed("-1\n"), None);
        assert_eq!(parse_link_speed("0"), None);
        assert_eq!(parse_link_speed("Invalid argument"), None);
    }

    #[test]
    fn sysfs_numbers() {
        assert_eq!(parse_u64("536870912\n"), Some(536_870_912));
        assert_eq!(parse_u64("x"), None);
        assert_eq!(parse_millicelsius("45500\n"), Some(45.5));
        assert_eq!(parse_millicelsius("-273000"), None);
        assert_eq!(parse_millicelsius("junk"), None);
    }

    #[test]
    fn pseudo_fs_list() {
        for fs in ["proc", "sysfs", "tmpfs", "devtmpfs", "overlay", "squashfs", "cgroup", "cgroup2"] {
            assert!(is_pseudo_fs(fs), "{fs}");
        }
        for fs in ["ext4", "xfs", "btrfs", "zfs", "vfat", "nfs4"] {
            assert!(!is_pseudo_fs(fs), "{fs}");
        }
    }
}
