//! The slow-changing part of the host, re-read every
//! `inventory_refresh_secs`: CPU identity, sensors, block devices, mounts and
//! network interface metadata. Nothing here runs on every sample.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use sysinfo::{CpuRefreshKind, Networks, System};

use crate::config::SourceConfig;
use crate::parse::{self, DiskLine, MountEntry, SECTOR_BYTES};
use crate::reader::{ProcFile, read_trimmed};

/// Processor facts that do not change while the host runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct CpuIdentity {
    pub(crate) model: String,
    pub(crate) physical_cores: Option<u32>,
    /// `cpu MHz` of the first processor in `/proc/cpuinfo`, for hosts without cpufreq.
    pub(crate) cpuinfo_mhz: u64,
}

/// Reads `/proc/cpuinfo`; sysinfo fills what it lacks when `proc_root` is the host's own `/proc`.
pub(crate) fn read_cpu_identity(config: &SourceConfig) -> CpuIdentity {
    let info =
        std::fs::read_to_string(config.proc_root.join("cpuinfo")).map(|t| parse::parse_cpuinfo(&t)).unwrap_or_default();
    let is_host = config.proc_root == Path::new("/proc");
    let model = info.model.or_else(|| if is_host { sysinfo_cpu_brand() } else { None });
    let physical_cores = info.physical_cores.or_else(|| {
        if is_host { System::physical_core_count().ok().and_then(|n| u32::try_from(n).ok()) } else { None }
    });
    CpuIdentity {
        model: model.unwrap_or_else(|| "unknown".to_owned()),
        physical_cores,
        cpuinfo_mhz: info.mhz.map_or(0, |m| m.round() as u64),
    }
}

/// sysinfo knows CPU names `/proc/cpuinfo` lacks (ARM part numbers).
fn sysinfo_cpu_brand() -> Option<String> {
    let mut system = System::new().ok()?;
    system.refresh_cpu_list(CpuRefreshKind::nothing());
    let brand = system.cpus().first()?.brand().trim();
    (!brand.is_empty()).then(|| brand.to_owned())
}

/// `scaling_cur_freq` of cpu0 when the host has cpufreq.
pub(crate) fn open_cpufreq(sys_root: &Path) -> Option<ProcFile> {
    ProcFile::open_if_readable(sys_root.join("devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"))
}

/// hwmon drivers that measure the processor itself.
const CPU_HWMON: &[&str] =
    &["coretemp", "k10temp", "k8temp", "zenpower", "cpu_thermal", "cpu-thermal", "soc_thermal", "via_cputemp"];
/// Thermal zones that measure the processor.
const CPU_ZONES: &[&str] = &["x86_pkg_temp", "cpu-thermal", "cpu_thermal", "soc-thermal", "soc_thermal", "cpu"];
/// The ACPI zone is often, not always, the processor: used only when nothing better exists.
const FALLBACK_HWMON: &[&str] = &["acpitz"];
const MAX_SENSORS: usize = 32;

/// Finds the files of CPU temperature sensors: CPU hwmon drivers first, then
/// CPU thermal zones, then the ACPI zone. Empty on hosts without sensors.
pub(crate) fn discover_cpu_sensors(sys_root: &Path) -> Vec<ProcFile> {
    let mut primary = Vec::new();
    let mut fallback = Vec::new();
    for dir in sorted_entries(&sys_root.join("class/hwmon")) {
        let Some(name) = read_trimmed(&dir.join("name")) else { continue };
        let target = if CPU_HWMON.contains(&name.as_str()) {
            &mut primary
        } else if FALLBACK_HWMON.contains(&name.as_str()) {
            &mut fallback
        } else {
            continue;
        };
        for file in sorted_entries(&dir) {
            let is_input = file
                .file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with("temp") && n.ends_with("_input"));
            if is_input && let Some(sensor) = open_sensor(file) {
                target.push(sensor);
            }
        }
    }
    if primary.is_empty() {
        for zone in sorted_entries(&sys_root.join("class/thermal")) {
            let is_zone = zone.file_name().and_then(OsStr::to_str).is_some_and(|n| n.starts_with("thermal_zone"));
            let is_cpu = read_trimmed(&zone.join("type")).is_some_and(|t| CPU_ZONES.contains(&t.as_str()));
            if is_zone
                && is_cpu
                && let Some(sensor) = open_sensor(zone.join("temp"))
            {
                primary.push(sensor);
            }
        }
    }
    let mut sensors = if primary.is_empty() { fallback } else { primary };
    sensors.truncate(MAX_SENSORS);
    sensors
}

fn open_sensor(path: PathBuf) -> Option<ProcFile> {
    let mut file = ProcFile::open(path).ok()?;
    let valid = parse::parse_millicelsius(&file.read().ok()?).is_some();
    valid.then_some(file)
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    entries.sort();
    entries
}

/// A whole block device from `/sys/block`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockDevice {
    pub(crate) name: String,
    pub(crate) model: Option<String>,
    pub(crate) size_bytes: u64,
}

/// Lists `/sys/block` (whole devices only: partitions live below their
/// disk), leaving out unused `loop`, `ram` and `zram` devices (size 0).
pub(crate) fn read_block_devices(sys_root: &Path) -> Vec<BlockDevice> {
    let mut out = Vec::new();
    for dir in sorted_entries(&sys_root.join("block")) {
        let Some(name) = dir.file_name().and_then(OsStr::to_str).map(str::to_owned) else { continue };
        let sectors = read_trimmed(&dir.join("size")).and_then(|s| parse::parse_u64(&s)).unwrap_or(0);
        let size_bytes = sectors.saturating_mul(SECTOR_BYTES);
        let virtual_kind = ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p));
        if virtual_kind && size_bytes == 0 {
            continue;
        }
        let model = read_trimmed(&dir.join("device/model"));
        out.push(BlockDevice { name, model, size_bytes });
    }
    out
}

/// A mounted file system to report, with the kernel name of its block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    pub(crate) entry: MountEntry,
    /// Name in `/proc/diskstats` (`vda1`, `dm-0`), when the file system has one.
    pub(crate) device: Option<String>,
}

/// Chooses the mounts to report (see [`parse::select_disks`]) that `statvfs`
/// can read, and finds each one's block device: the mount source with
/// symlinks resolved (`/dev/mapper/x` → `dm-0`), else the device number.
pub(crate) fn resolve_mounts(mountinfo: &str, diskstats: &[DiskLine<'_>]) -> Vec<Mount> {
    parse::select_disks(parse::parse_mountinfo(mountinfo))
        .into_iter()
        .filter(|m| match rustix::fs::statvfs(m.mount_point.as_str()) {
            Ok(st) => st.f_blocks > 0 || m.mount_point == "/",
            Err(_) => false,
        })
        .map(|entry| {
            let device = backing_device(&entry, diskstats);
            Mount { entry, device }
        })
        .collect()
}

fn backing_device(entry: &MountEntry, diskstats: &[DiskLine<'_>]) -> Option<String> {
    if entry.source.starts_with('/')
        && let Ok(real) = std::fs::canonicalize(&entry.source)
        && let Some(name) = real.file_name().and_then(OsStr::to_str)
        && diskstats.iter().any(|l| l.name == name)
    {
        return Some(name.to_owned());
    }
    diskstats.iter().find(|l| l.major == entry.major && l.minor == entry.minor).map(|l| l.name.to_owned())
}

/// What a sample reports of an interface besides its counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct NetMeta {
    pub(crate) mac: Option<String>,
    pub(crate) ipv4: Vec<String>,
    pub(crate) ipv6: Vec<String>,
    pub(crate) speed_mbps: Option<u64>,
    pub(crate) is_up: bool,
    pub(crate) is_loopback: bool,
}

/// Reads `/sys/class/net/<name>` and the addresses sysinfo last listed.
pub(crate) fn read_net_meta(sys_root: &Path, name: &str, networks: Option<&Networks>) -> NetMeta {
    let dir = sys_root.join("class/net").join(name);
    let flags = read_trimmed(&dir.join("flags")).and_then(|f| parse::parse_hex_flags(&f));
    let operstate = read_trimmed(&dir.join("operstate"));
    let (mut ipv4, mut ipv6) = (Vec::new(), Vec::new());
    if let Some(data) = networks.and_then(|n| n.get(OsStr::new(name))) {
        for net in data.ip_networks() {
            let list = if net.addr.is_ipv4() { &mut ipv4 } else { &mut ipv6 };
            list.push(net.addr.to_string());
        }
    }
    ipv4.sort();
    ipv6.sort();
    NetMeta {
        mac: read_trimmed(&dir.join("address")).and_then(|a| parse::normalize_mac(&a)),
        ipv4,
        ipv6,
        speed_mbps: read_trimmed(&dir.join("speed")).and_then(|s| parse::parse_link_speed(&s)),
        is_up: parse::interface_is_up(operstate.as_deref(), flags),
        is_loopback: parse::interface_is_loopback(name, flags),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn block_devices_skip_unused_virtual_devices() {
        let sys = tempfile::tempdir().unwrap();
        write(sys.path(), "block/vda/size", "536870912\n");
        write(sys.path(), "block/nvme0n1/size", "1000\n");
        write(sys.path(), "block/nvme0n1/device/model", "Samsung SSD 980   \n");
        write(sys.path(), "block/loop0/size", "0\n");
        write(sys.path(), "block/loop1/size", "8\n");
        write(sys.path(), "block/zram0/size", "0\n");
        write(sys.path(), "block/sr0/size", "0\n");
        let devices = read_block_devices(sys.path());
        let names: Vec<_> = devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["loop1", "nvme0n1", "sr0", "vda"]);
        assert_eq!(devices[1].model.as_deref(), Some("Samsung SSD 980"));
        assert_eq!(devices[1].size_bytes, 1000 * 512);
        assert_eq!(devices[3].model, None);
        assert_eq!(devices[3].size_bytes, 536_870_912 * 512);
    }

    #[test]
    fn sensors_prefer_cpu_hwmon_then_zones_then_acpi() {
        let sys = tempfile::tempdir().unwrap();
        assert!(discover_cpu_sensors(sys.path()).is_empty(), "no hwmon, no thermal");

        write(sys.path(), "class/hwmon/hwmon0/name", "acpitz\n");
        write(sys.path(), "class/hwmon/hwmon0/temp1_input", "30000\n");
        write(sys.path(), "class/hwmon/hwmon1/name", "nvme\n");
        write(sys.path(), "class/hwmon/hwmon1/temp1_input", "40000\n");
        let found = discover_cpu_sensors(sys.path());
        assert_eq!(found.len(), 1);
        assert!(found[0].path().starts_with(sys.path().join("class/hwmon/hwmon0")));

        write(sys.path(), "class/thermal/thermal_zone0/type", "x86_pkg_temp\n");
        write(sys.path(), "class/thermal/thermal_zone0/temp", "50000\n");
        write(sys.path(), "class/thermal/thermal_zone1/type", "iwlwifi_1\n");
        write(sys.path(), "class/thermal/thermal_zone1/temp", "45000\n");
        let found = discover_cpu_sensors(sys.path());
        assert_eq!(found.len(), 1);
        assert!(found[0].path().ends_with("thermal_zone0/temp"));

        write(sys.path(), "class/hwmon/hwmon2/name", "coretemp\n");
        write(sys.path(), "class/hwmon/hwmon2/temp1_input", "55000\n");
        write(sys.path(), "class/hwmon/hwmon2/temp2_input", "57000\n");
        write(sys.path(), "class/hwmon/hwmon2/temp2_label", "Core 0\n");
        write(sys.path(), "class/hwmon/hwmon2/temp3_input", "garbage\n");
        let found = discover_cpu_sensors(sys.path());
        assert_eq!(found.len(), 2, "coretemp inputs only, the unreadable one skipped");
    }

    #[test]
    fn net_meta_from_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        write(sys.path(), "class/net/eth9/address", "02:FC:00:00:00:01\n");
        write(sys.path(), "class/net/eth9/operstate", "up\n");
        write(sys.path(), "class/net/eth9/flags", "0x1003\n");
        write(sys.path(), "class/net/eth9/speed", "1000\n");
        let m = read_net_meta(sys.path(), "eth9", None);
        assert_eq!(m.mac.as_deref(), Some("02:fc:00:00:00:01"));
        assert_eq!(m.speed_mbps, Some(1000));
        assert!(m.is_up);
        assert!(!m.is_loopback);

        write(sys.path(), "class/net/lo/address", "00:00:00:00:00:00\n");
        write(sys.path(), "class/net/lo/operstate", "unknown\n");
        write(sys.path(), "class/net/lo/flags", "0x9\n");
        let m = read_net_meta(sys.path(), "lo", None);
        assert_eq!((m.mac, m.speed_mbps, m.is_up, m.is_loopback), (None, None, true, true));

        let gone = read_net_meta(sys.path(), "missing0", None);
        assert_eq!(gone, NetMeta::default());
    }

    #[test]
    fn mounts_resolve_their_block_device_by_number() {
        let diskstats = " 254 0 vdz 1 0 8 0 1 0 8 0 0 0 0\n 254 1 vdz1 1 0 8 0 1 0 8 0 0 0 0\n";
        let lines: Vec<_> = parse::diskstats_lines(diskstats).collect();
        let mountinfo = "1 0 254:1 / / rw - ext4 /dev/does-not-exist rw\n2 1 0:5 / /proc rw - proc proc rw\n";
        let mounts = resolve_mounts(mountinfo, &lines);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].device.as_deref(), Some("vdz1"));
        let unknown = "1 0 9:9 / / rw - ext4 /dev/nothing rw\n";
        assert_eq!(resolve_mounts(unknown, &lines)[0].device, None);
    }
}
