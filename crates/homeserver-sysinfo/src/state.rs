//! The long-lived sampling state: open kernel files, previous counters and
//! the inventory. One [`State`] lives behind the source's mutex and every
//! sample runs on a blocking thread.

use std::time::Instant;

use homeserver_domain::{
    BlockDeviceStats, CpuStats, DiskStats, MemoryStats, NetworkStats, Snapshot, SourceError, SystemStats, UnixMillis,
};
use rustix::event::{PollFd, PollFlags, Timespec};
use sysinfo::Networks;
use tracing::{debug, info, warn};

use crate::config::SourceConfig;
use crate::error::{ReadError, chain};
use crate::inventory::{self, CpuIdentity, NetMeta};
use crate::parse::{self, CpuTimes, NetCounters, SECTOR_BYTES};
use crate::reader::{PidCounter, ProcFile};

/// Everything a sample needs that outlives one sample.
#[derive(Debug)]
pub(crate) struct State {
    config: SourceConfig,
    files: Files,
    pids: Option<PidCounter>,
    cpu: CpuState,
    storage: StorageState,
    net: NetState,
    /// `(tasks created since boot, tasks alive)` read before the last scan of
    /// `/proc`, and what it counted. See [`State::count_processes`].
    processes: Option<((u64, u64), u64)>,
    /// The `processes` line of the latest `/proc/stat` read.
    forks: Option<u64>,
    last_sample: Option<Instant>,
    /// When the inventory is due again; `None` when the period is too long to represent.
    next_inventory: Option<Instant>,
    inventory_dirty: bool,
    degraded: Degraded,
}

/// Kernel files kept open between samples.
#[derive(Debug)]
struct Files {
    stat: ProcFile,
    meminfo: ProcFile,
    loadavg: ProcFile,
    uptime: ProcFile,
    net_dev: Option<ProcFile>,
    diskstats: Option<ProcFile>,
    /// Also polled: the kernel flags it when the mount table changes.
    mountinfo: Option<ProcFile>,
}

#[derive(Debug, Default)]
struct CpuState {
    prev_total: Option<CpuTimes>,
    prev_cores: Vec<(u32, CpuTimes)>,
    cur_cores: Vec<(u32, CpuTimes)>,
    identity: CpuIdentity,
    cpufreq: Option<ProcFile>,
    sensors: Vec<ProcFile>,
}

#[derive(Debug, Default)]
struct StorageState {
    mounts: Vec<MountSlot>,
    devices: Vec<DeviceSlot>,
    /// Lines of `/proc/diskstats` at the last inventory; a change means a device came or went.
    diskstats_lines: usize,
}

#[derive(Debug)]
struct MountSlot {
    name: String,
    mount_point: String,
    file_system: String,
    /// Index into [`StorageState::devices`].
    device: Option<usize>,
}

/// A device of `/proc/diskstats` the snapshot reports: a whole device, a
/// mount's backing device, or both.
#[derive(Debug, Default)]
struct DeviceSlot {
    name: String,
    /// `(model, size)` when it is a whole device listed in `/sys/block`.
    whole: Option<(Option<String>, u64)>,
    /// `(read, written)` bytes at the previous sample.
    prev: Option<(u64, u64)>,
    totals: (u64, u64),
    rates: (f64, f64),
    seen: bool,
}

impl DeviceSlot {
    fn update(&mut self, read_bytes: u64, write_bytes: u64, elapsed: Option<f64>) {
        self.rates = (
            parse::rate(self.prev.map(|p| p.0), read_bytes, elapsed),
            parse::rate(self.prev.map(|p| p.1), write_bytes, elapsed),
        );
        self.totals = (read_bytes, write_bytes);
        self.prev = Some(self.totals);
        self.seen = true;
    }
}

#[derive(Debug)]
struct NetState {
    slots: Vec<NetSlot>,
    /// Only for interface addresses, refreshed with the inventory.
    networks: Option<Networks>,
}

#[derive(Debug)]
struct NetSlot {
    name: String,
    meta: NetMeta,
    prev: Option<NetCounters>,
}

impl NetState {
    /// Rebuilds the slots in the order of `/proc/net/dev`, re-reading each
    /// interface's metadata and keeping the previous counters of interfaces
    /// seen before.
    fn rebuild(&mut self, net_dev: &str, config: &SourceConfig) {
        let mut old = std::mem::take(&mut self.slots);
        for (name, _) in parse::net_dev_lines(net_dev) {
            let prev = old.iter().position(|s| s.name == name).and_then(|i| old.swap_remove(i).prev);
            let meta = inventory::read_net_meta(&config.sys_root, name, self.networks.as_ref());
            self.slots.push(NetSlot { name: name.to_owned(), meta, prev });
        }
    }
}

/// Parts that can fail without failing the sample; each is logged once at
/// `warn` when it breaks and once at `info` when it recovers.
#[derive(Debug, Clone, Copy)]
enum Part {
    NetDev = 1,
    DiskStats = 2,
    Pids = 4,
    Mounts = 8,
    Statvfs = 16,
}

#[derive(Debug, Default)]
struct Degraded(u32);

impl Degraded {
    fn failed(&mut self, part: Part, error: &ReadError) {
        let bit = part as u32;
        if self.0 & bit == 0 {
            warn!(?part, error = %chain(error), "host figure unavailable, reporting without it");
            self.0 |= bit;
        } else {
            debug!(?part, error = %chain(error), "host figure still unavailable");
        }
    }

    fn ok(&mut self, part: Part) {
        let bit = part as u32;
        if self.0 & bit != 0 {
            info!(?part, "host figure available again");
            self.0 &= !bit;
        }
    }
}

fn unavailable(e: ReadError) -> SourceError {
    SourceError::Unavailable(chain(&e))
}

impl State {
    /// Opens the kernel files, reads the inventory and primes the CPU
    /// counters so the first sample's CPU usage means something.
    pub(crate) fn open(config: SourceConfig) -> Result<Self, SourceError> {
        let proc = &config.proc_root;
        let mut degraded = Degraded::default();
        let mut optional = |part: Part, result: Result<ProcFile, ReadError>| match result {
            Ok(f) => Some(f),
            Err(e) => {
                degraded.failed(part, &e);
                None
            }
        };
        let files = Files {
            stat: ProcFile::open(proc.join("stat")).map_err(unavailable)?,
            meminfo: ProcFile::open(proc.join("meminfo")).map_err(unavailable)?,
            loadavg: ProcFile::open(proc.join("loadavg")).map_err(unavailable)?,
            uptime: ProcFile::open(proc.join("uptime")).map_err(unavailable)?,
            net_dev: optional(Part::NetDev, ProcFile::open(proc.join("net/dev"))),
            diskstats: optional(Part::DiskStats, ProcFile::open(proc.join("diskstats"))),
            mountinfo: optional(Part::Mounts, ProcFile::open(proc.join("self/mountinfo"))),
        };
        let pids = match PidCounter::open(proc.clone()) {
            Ok(p) => Some(p),
            Err(e) => {
                degraded.failed(Part::Pids, &e);
                None
            }
        };
        let networks = match Networks::new() {
            Ok(n) => Some(n),
            Err(e) => {
                warn!(error = %chain(&e), "sysinfo cannot list network interfaces: no addresses will be reported");
                None
            }
        };
        let now = Instant::now();
        let mut state = Self {
            config,
            files,
            pids,
            cpu: CpuState::default(),
            storage: StorageState::default(),
            net: NetState { slots: Vec::new(), networks },
            processes: None,
            forks: None,
            last_sample: None,
            next_inventory: Some(now),
            inventory_dirty: false,
            degraded,
        };
        state.refresh_inventory(now);
        // Prime CPU counters and check that the required files parse.
        state.sample_cpu().map_err(unavailable)?;
        state.sample_memory().map_err(unavailable)?;
        state.sample_loadavg().map_err(unavailable)?;
        state.sample_uptime().map_err(unavailable)?;
        Ok(state)
    }

    /// Takes one snapshot stamped `at`; rates are per second of `now - previous now`.
    pub(crate) fn sample(&mut self, at: UnixMillis, now: Instant) -> Result<Snapshot, ReadError> {
        let elapsed = self.last_sample.map(|t| now.saturating_duration_since(t).as_secs_f64());
        self.last_sample = Some(now);
        // Polled every time, so that a change is not reported again after a periodic refresh.
        let mounts_changed = self.mounts_changed();
        let due = self.next_inventory.is_some_and(|t| now >= t);
        if due || mounts_changed || self.inventory_dirty {
            self.refresh_inventory(now);
        }
        let mut cpu = self.sample_cpu()?;
        let memory = self.sample_memory()?;
        let load = self.sample_loadavg()?;
        cpu.load_average = load.load;
        let uptime_secs = self.sample_uptime()?;
        let process_count = self.count_processes(load.threads);
        let networks = self.sample_networks(elapsed);
        let (disks, block_devices) = self.sample_storage(elapsed);
        Ok(Snapshot {
            timestamp: at,
            cpu,
            memory,
            disks,
            block_devices,
            networks,
            system: SystemStats { uptime_secs, process_count, thread_count: load.threads },
            containers: Vec::new(),
        })
    }

    // ------------------------------------------------------------ inventory

    fn refresh_inventory(&mut self, now: Instant) {
        let started = Instant::now();
        self.next_inventory = now.checked_add(self.config.inventory_refresh());
        self.inventory_dirty = false;
        self.cpu.identity = inventory::read_cpu_identity(&self.config);
        self.cpu.cpufreq = inventory::open_cpufreq(&self.config.sys_root);
        self.cpu.sensors = inventory::discover_cpu_sensors(&self.config.sys_root);
        if let Some(pids) = self.pids.as_mut() {
            pids.calibrate();
        }
        self.refresh_storage();
        if let Some(networks) = self.net.networks.as_mut() {
            networks.refresh(true);
        }
        if let Some(file) = self.files.net_dev.as_mut() {
            match file.read() {
                Ok(text) => self.net.rebuild(&text, &self.config),
                Err(e) => self.degraded.failed(Part::NetDev, &e),
            }
        }
        debug!(
            elapsed_us = started.elapsed().as_micros(),
            mounts = self.storage.mounts.len(),
            devices = self.storage.devices.len(),
            interfaces = self.net.slots.len(),
            sensors = self.cpu.sensors.len(),
            "host inventory refreshed"
        );
    }

    fn refresh_storage(&mut self) {
        let diskstats = match self.files.diskstats.as_mut().map(|f| f.read().map(|t| t.into_owned())) {
            Some(Ok(text)) => text,
            Some(Err(e)) => {
                self.degraded.failed(Part::DiskStats, &e);
                String::new()
            }
            None => String::new(),
        };
        let lines: Vec<_> = parse::diskstats_lines(&diskstats).collect();
        let mountinfo = match self.files.mountinfo.as_mut().map(|f| f.read().map(|t| t.into_owned())) {
            Some(Ok(text)) => {
                self.degraded.ok(Part::Mounts);
                text
            }
            Some(Err(e)) => {
                self.degraded.failed(Part::Mounts, &e);
                String::new()
            }
            None => String::new(),
        };

        let mut old = std::mem::take(&mut self.storage.devices);
        let mut devices: Vec<DeviceSlot> = Vec::new();
        let mut slot_for = |name: &str| -> usize {
            if let Some(i) = devices.iter().position(|d| d.name == name) {
                return i;
            }
            let prev = old.iter().position(|d| d.name == name).and_then(|i| old.swap_remove(i).prev);
            devices.push(DeviceSlot { name: name.to_owned(), prev, ..DeviceSlot::default() });
            devices.len() - 1
        };
        let mut whole = Vec::new();
        for device in inventory::read_block_devices(&self.config.sys_root) {
            whole.push((slot_for(&device.name), device.model, device.size_bytes));
        }
        let mounts: Vec<MountSlot> = inventory::resolve_mounts(&mountinfo, &lines)
            .into_iter()
            .map(|m| MountSlot {
                device: m.device.as_deref().map(&mut slot_for),
                name: m.entry.source,
                mount_point: m.entry.mount_point,
                file_system: m.entry.fs_type,
            })
            .collect();
        for (i, model, size) in whole {
            if let Some(slot) = devices.get_mut(i) {
                slot.whole = Some((model, size));
            }
        }
        self.storage = StorageState { mounts, devices, diskstats_lines: lines.len() };
    }

    /// Whether the mount table changed since the last look (`POLLPRI` on mountinfo).
    fn mounts_changed(&self) -> bool {
        let Some(file) = &self.files.mountinfo else { return false };
        let mut fds = [PollFd::new(file.file(), PollFlags::PRI)];
        let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(n) if n > 0 => fds[0].revents().intersects(PollFlags::PRI | PollFlags::ERR),
            _ => false,
        }
    }

    // --------------------------------------------------------- per sample

    fn sample_cpu(&mut self) -> Result<CpuStats, ReadError> {
        let total = {
            let text = self.files.stat.read()?;
            self.forks = parse::parse_forks(&text);
            parse::parse_stat_cpus(&text, &mut self.cpu.cur_cores)
        };
        let Some(total) = total else {
            return Err(ReadError::parse(self.files.stat.path(), "no aggregate cpu line"));
        };
        let cpu = &mut self.cpu;
        let usage_percent = cpu.prev_total.map_or(0.0, |p| parse::busy_percent(p, total));
        let mut per_core_percent = Vec::with_capacity(cpu.cur_cores.len());
        for (i, (id, times)) in cpu.cur_cores.iter().enumerate() {
            let prev = match cpu.prev_cores.get(i) {
                Some((prev_id, p)) if prev_id == id => Some(*p),
                _ => cpu.prev_cores.iter().find(|(prev_id, _)| prev_id == id).map(|(_, p)| *p),
            };
            per_core_percent.push(prev.map_or(0.0, |p| parse::busy_percent(p, *times)));
        }
        std::mem::swap(&mut cpu.prev_cores, &mut cpu.cur_cores);
        cpu.prev_total = Some(total);

        let mut frequency_mhz = cpu.identity.cpuinfo_mhz;
        if let Some(file) = cpu.cpufreq.as_mut() {
            match file.read().ok().and_then(|t| parse::parse_u64(&t)) {
                Some(khz) => frequency_mhz = khz / 1000,
                None => cpu.cpufreq = None,
            }
        }
        let temperature_celsius = cpu
            .sensors
            .iter_mut()
            .filter_map(|s| s.read().ok().and_then(|t| parse::parse_millicelsius(&t)))
            .reduce(f64::max);
        Ok(CpuStats {
            usage_percent,
            logical_cores: u32::try_from(per_core_percent.len()).unwrap_or(u32::MAX),
            per_core_percent,
            physical_cores: cpu.identity.physical_cores,
            model: cpu.identity.model.clone(),
            frequency_mhz,
            load_average: Default::default(),
            temperature_celsius,
        })
    }

    fn sample_memory(&mut self) -> Result<MemoryStats, ReadError> {
        let info = {
            let text = self.files.meminfo.read()?;
            parse::parse_meminfo(&text)
        };
        let Some(m) = info else {
            return Err(ReadError::parse(self.files.meminfo.path(), "no MemTotal"));
        };
        let used = m.total.saturating_sub(m.available);
        Ok(MemoryStats {
            total_bytes: m.total,
            used_bytes: used,
            available_bytes: m.available,
            usage_percent: if m.total > 0 { used as f64 / m.total as f64 * 100.0 } else { 0.0 },
            swap_total_bytes: m.swap_total,
            swap_used_bytes: m.swap_total.saturating_sub(m.swap_free),
        })
    }

    fn sample_loadavg(&mut self) -> Result<parse::LoadAvg, ReadError> {
        let load = {
            let text = self.files.loadavg.read()?;
            parse::parse_loadavg(&text)
        };
        load.ok_or_else(|| ReadError::parse(self.files.loadavg.path(), "expected `1 5 15 running/total pid`"))
    }

    fn sample_uptime(&mut self) -> Result<u64, ReadError> {
        let uptime = {
            let text = self.files.uptime.read()?;
            parse::parse_uptime(&text)
        };
        let secs = uptime.ok_or_else(|| ReadError::parse(self.files.uptime.path(), "expected seconds since boot"))?;
        Ok(secs as u64)
    }

    /// Processes alive: the numeric directories of `/proc`.
    ///
    /// Scanning `/proc` is the most expensive part of a sample (~100 µs of
    /// cold-cache kernel work for ~80 processes on the reference VM), so it
    /// is skipped when nothing can have changed: a process can only appear
    /// through a fork, which bumps the `processes` line of `/proc/stat`, and
    /// only disappear when its last task is reaped, which lowers the task
    /// count of `/proc/loadavg` (with no fork to make up for it). When both
    /// equal what they were before the last scan, the set of processes is
    /// the same and so is the count. Both counters are host-wide, so inside
    /// a PID namespace the check is only more cautious.
    fn count_processes(&mut self, threads: u64) -> u64 {
        let Some(pids) = self.pids.as_mut() else { return 0 };
        let key = self.forks.map(|forks| (forks, threads));
        if let (Some(key), Some((last_key, count))) = (key, self.processes)
            && key == last_key
        {
            return count;
        }
        match pids.count() {
            Ok(n) => {
                self.degraded.ok(Part::Pids);
                self.processes = key.map(|k| (k, n));
                n
            }
            Err(e) => {
                self.degraded.failed(Part::Pids, &e);
                self.processes = None;
                0
            }
        }
    }

    fn sample_networks(&mut self, elapsed: Option<f64>) -> Vec<NetworkStats> {
        let Some(file) = self.files.net_dev.as_mut() else { return Vec::new() };
        let text = match file.read() {
            Ok(text) => {
                self.degraded.ok(Part::NetDev);
                text
            }
            Err(e) => {
                self.degraded.failed(Part::NetDev, &e);
                return Vec::new();
            }
        };
        let same = parse::net_dev_lines(&text).map(|(name, _)| name).eq(self.net.slots.iter().map(|s| s.name.as_str()));
        if !same {
            // An interface came or went: its addresses and metadata now, not at the next inventory.
            if let Some(networks) = self.net.networks.as_mut() {
                networks.refresh(true);
            }
            self.net.rebuild(&text, &self.config);
        }
        let mut out = Vec::with_capacity(self.net.slots.len());
        for ((_, c), slot) in parse::net_dev_lines(&text).zip(self.net.slots.iter_mut()) {
            let prev = slot.prev;
            out.push(NetworkStats {
                interface: slot.name.clone(),
                rx_bytes_total: c.rx_bytes,
                tx_bytes_total: c.tx_bytes,
                rx_bytes_per_sec: parse::rate(prev.map(|p| p.rx_bytes), c.rx_bytes, elapsed),
                tx_bytes_per_sec: parse::rate(prev.map(|p| p.tx_bytes), c.tx_bytes, elapsed),
                rx_packets_total: c.rx_packets,
                tx_packets_total: c.tx_packets,
                rx_errors_total: c.rx_errors,
                tx_errors_total: c.tx_errors,
                mac_address: slot.meta.mac.clone(),
                ipv4: slot.meta.ipv4.clone(),
                ipv6: slot.meta.ipv6.clone(),
                speed_mbps: slot.meta.speed_mbps,
                is_up: slot.meta.is_up,
                is_loopback: slot.meta.is_loopback,
            });
            slot.prev = Some(c);
        }
        out
    }

    fn sample_storage(&mut self, elapsed: Option<f64>) -> (Vec<DiskStats>, Vec<BlockDeviceStats>) {
        let storage = &mut self.storage;
        for device in &mut storage.devices {
            device.seen = false;
        }
        if let Some(file) = self.files.diskstats.as_mut() {
            match file.read() {
                Ok(text) => {
                    self.degraded.ok(Part::DiskStats);
                    let mut lines = 0;
                    for line in parse::diskstats_lines(&text) {
                        lines += 1;
                        if let Some(d) = storage.devices.iter_mut().find(|d| d.name == line.name) {
                            let read = line.read_sectors.saturating_mul(SECTOR_BYTES);
                            let written = line.write_sectors.saturating_mul(SECTOR_BYTES);
                            d.update(read, written, elapsed);
                        }
                    }
                    if lines != storage.diskstats_lines {
                        // A block device came or went: re-read the inventory next time.
                        self.inventory_dirty = true;
                    }
                }
                Err(e) => self.degraded.failed(Part::DiskStats, &e),
            }
        }
        for device in &mut storage.devices {
            if !device.seen {
                // Gone from diskstats: no totals, and no stale counter to diff against later.
                device.prev = None;
                device.totals = (0, 0);
                device.rates = (0.0, 0.0);
            }
        }

        let block_devices = storage
            .devices
            .iter()
            .filter_map(|d| {
                let (model, size_bytes) = d.whole.as_ref()?;
                Some(BlockDeviceStats {
                    name: d.name.clone(),
                    model: model.clone(),
                    size_bytes: *size_bytes,
                    read_bytes_total: d.totals.0,
                    write_bytes_total: d.totals.1,
                    read_bytes_per_sec: d.rates.0,
                    write_bytes_per_sec: d.rates.1,
                })
            })
            .collect();

        let mut disks = Vec::with_capacity(storage.mounts.len());
        let mut statvfs_failed = None;
        for mount in &storage.mounts {
            let st = match rustix::fs::statvfs(mount.mount_point.as_str()) {
                Ok(st) => st,
                Err(e) => {
                    statvfs_failed = Some(ReadError::io(mount.mount_point.as_ref(), e.into()));
                    continue;
                }
            };
            let unit = if st.f_frsize > 0 { st.f_frsize } else { st.f_bsize };
            let total = st.f_blocks.saturating_mul(unit);
            let used = st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(unit);
            let available = st.f_bavail.saturating_mul(unit);
            let denominator = used.saturating_add(available);
            let rates = mount.device.and_then(|i| storage.devices.get(i)).map_or((0.0, 0.0), |d| d.rates);
            disks.push(DiskStats {
                name: mount.name.clone(),
                mount_point: mount.mount_point.clone(),
                file_system: mount.file_system.clone(),
                total_bytes: total,
                used_bytes: used,
                available_bytes: available,
                usage_percent: if denominator > 0 { used as f64 / denominator as f64 * 100.0 } else { 0.0 },
                read_bytes_per_sec: rates.0,
                write_bytes_per_sec: rates.1,
            });
        }
        match statvfs_failed {
            Some(e) => {
                self.degraded.failed(Part::Statvfs, &e);
                // A vanished mount point: re-read the mount list next time.
                self.inventory_dirty = true;
            }
            None => self.degraded.ok(Part::Statvfs),
        }
        (disks, block_devices)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    const NET_HEADER: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
";

    fn net_dev(lines: &[(&str, u64, u64)]) -> String {
        let mut s = NET_HEADER.to_owned();
        for (name, rx, tx) in lines {
            s.push_str(&format!("{name:>6}: {rx} 10 0 0 0 0 0 0 {tx} 20 0 0 0 0 0 0\n"));
        }
        s
    }

    fn diskstats(read_sectors: u64, write_sectors: u64) -> String {
        format!("   7 0 loop0 0 0 0 0 0 0 0 0 0 0 0\n 254 0 vdz 5 0 {read_sectors} 0 5 0 {write_sectors} 0 0 0 0\n")
    }

    /// A fake host: `/` is mounted from `vdz` (254:0), one interface `eth0`.
    fn fixture() -> (tempfile::TempDir, SourceConfig) {
        let root = tempfile::tempdir().unwrap();
        let proc = root.path().join("proc");
        let sys = root.path().join("sys");
        write(
            &proc,
            "stat",
            "cpu  100 0 100 800 0 0 0 0\ncpu0 50 0 50 400\ncpu1 50 0 50 400\nintr 1\nbtime 1700000000\n",
        );
        write(
            &proc,
            "meminfo",
            "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 250 kB\nSwapTotal: 100 kB\nSwapFree: 40 kB\n",
        );
        write(&proc, "loadavg", "1.50 0.75 0.25 3/123 999\n");
        write(&proc, "uptime", "4242.42 100.00\n");
        write(&proc, "net/dev", &net_dev(&[("lo", 0, 0), ("eth0", 1_000, 2_000)]));
        write(&proc, "diskstats", &diskstats(100, 200));
        write(
            &proc,
            "self/mountinfo",
            "1 0 254:0 / / rw - ext4 /dev/fixture-vdz rw\n2 1 0:5 / /proc rw - proc proc rw\n",
        );
        write(
            &proc,
            "cpuinfo",
            "processor\t: 0\nmodel name\t: Fixture CPU\ncpu MHz\t\t: 1234.5\nphysical id\t: 0\ncore id\t\t: 0\n\nprocessor\t: 1\nmodel name\t: Fixture CPU\nphysical id\t: 0\ncore id\t\t: 0\n",
        );
        for pid in ["1", "2", "300"] {
            std::fs::create_dir_all(proc.join(pid)).unwrap();
        }
        write(&sys, "block/vdz/size", "2048\n");
        write(&sys, "block/vdz/device/model", "Fixture Disk\n");
        write(&sys, "block/loop0/size", "0\n");
        write(&sys, "class/net/eth0/address", "02:00:00:00:00:01\n");
        write(&sys, "class/net/eth0/operstate", "up\n");
        write(&sys, "class/net/eth0/flags", "0x1003\n");
        write(&sys, "class/net/eth0/speed", "1000\n");
        write(&sys, "class/net/lo/operstate", "unknown\n");
        write(&sys, "class/net/lo/flags", "0x9\n");
        write(&sys, "class/hwmon/hwmon0/name", "k10temp\n");
        write(&sys, "class/hwmon/hwmon0/temp1_input", "61000\n");
        write(&sys, "class/hwmon/hwmon0/temp2_input", "58000\n");
        let config = SourceConfig {
            proc_root: proc,
            sys_root: sys,
            os_release_path: root.path().join("os-release"),
            inventory_refresh_secs: 3600,
        };
        (root, config)
    }

    #[test]
    fn fixture_host_samples_every_figure() {
        let (root, config) = fixture();
        let proc = config.proc_root.clone();
        let mut state = State::open(config).unwrap();
        let t0 = Instant::now();

        // CPU moved since the priming read in `open`: 60 busy of 100 on the aggregate.
        write(&proc, "stat", "cpu  150 0 110 840 0 0 0 0\ncpu0 100 0 50 400\ncpu1 50 0 60 440\nintr 1\n");
        let s = state.sample(UnixMillis(1), t0).unwrap();
        assert_eq!(s.timestamp, UnixMillis(1));
        assert!((s.cpu.usage_percent - 60.0).abs() < 1e-9, "{}", s.cpu.usage_percent);
        assert_eq!(s.cpu.per_core_percent, vec![100.0, 20.0]);
        assert_eq!(s.cpu.logical_cores, 2);
        assert_eq!(s.cpu.physical_cores, Some(1));
        assert_eq!(s.cpu.model, "Fixture CPU");
        assert_eq!(s.cpu.frequency_mhz, 1235);
        assert_eq!(s.cpu.temperature_celsius, Some(61.0));
        assert_eq!(s.cpu.load_average.one, 1.5);

        assert_eq!(s.memory.total_bytes, 1000 * 1024);
        assert_eq!(s.memory.available_bytes, 250 * 1024);
        assert_eq!(s.memory.used_bytes, 750 * 1024);
        assert!((s.memory.usage_percent - 75.0).abs() < 1e-9);
        assert_eq!((s.memory.swap_total_bytes, s.memory.swap_used_bytes), (100 * 1024, 60 * 1024));

        assert_eq!(s.system, SystemStats { uptime_secs: 4242, process_count: 3, thread_count: 123 });

        // First sample: totals, no rates.
        let names: Vec<_> = s.networks.iter().map(|n| n.interface.as_str()).collect();
        assert_eq!(names, ["lo", "eth0"]);
        let eth0 = &s.networks[1];
        assert_eq!((eth0.rx_bytes_total, eth0.tx_bytes_total, eth0.rx_bytes_per_sec), (1_000, 2_000, 0.0));
        assert_eq!((eth0.rx_packets_total, eth0.tx_packets_total), (10, 20));
        assert_eq!(eth0.mac_address.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(eth0.speed_mbps, Some(1000));
        assert!(eth0.is_up && !eth0.is_loopback);
        assert!(s.networks[0].is_loopback && s.networks[0].is_up);

        assert_eq!(s.block_devices.len(), 1, "loop0 of size 0 is left out");
        let vdz = &s.block_devices[0];
        assert_eq!(
            (vdz.name.as_str(), vdz.model.as_deref(), vdz.size_bytes),
            ("vdz", Some("Fixture Disk"), 2048 * 512)
        );
        assert_eq!((vdz.read_bytes_total, vdz.write_bytes_total), (100 * 512, 200 * 512));
        assert_eq!(vdz.read_bytes_per_sec, 0.0);
        assert_eq!(s.disks.len(), 1);
        assert_eq!((s.disks[0].mount_point.as_str(), s.disks[0].file_system.as_str()), ("/", "ext4"));
        assert_eq!(s.disks[0].name, "/dev/fixture-vdz");
        assert!(s.disks[0].total_bytes > 0);
        assert!(s.containers.is_empty());

        // Two seconds later: rates are deltas over two seconds.
        write(&proc, "net/dev", &net_dev(&[("lo", 0, 0), ("eth0", 3_000, 2_500)]));
        write(&proc, "diskstats", &diskstats(110, 240));
        let s = state.sample(UnixMillis(2), t0 + Duration::from_secs(2)).unwrap();
        let eth0 = &s.networks[1];
        assert_eq!((eth0.rx_bytes_per_sec, eth0.tx_bytes_per_sec), (1_000.0, 250.0));
        let vdz = &s.block_devices[0];
        assert_eq!((vdz.read_bytes_per_sec, vdz.write_bytes_per_sec), (10.0 * 512.0 / 2.0, 40.0 * 512.0 / 2.0));
        assert_eq!((s.disks[0].read_bytes_per_sec, s.disks[0].write_bytes_per_sec), (2560.0, 10240.0));
        assert_eq!(s.cpu.usage_percent, 0.0, "no CPU time passed");

        // Counters reset (interface re-created, device re-attached): 0, never negative or huge.
        write(&proc, "net/dev", &net_dev(&[("lo", 0, 0), ("eth0", 10, 20)]));
        write(&proc, "diskstats", &diskstats(1, 2));
        write(&proc, "stat", "cpu  10 0 10 80 0 0 0 0\ncpu0 5 0 5 40\ncpu1 5 0 5 40\n");
        let s = state.sample(UnixMillis(3), t0 + Duration::from_secs(3)).unwrap();
        assert_eq!((s.networks[1].rx_bytes_per_sec, s.networks[1].tx_bytes_per_sec), (0.0, 0.0));
        assert_eq!((s.block_devices[0].read_bytes_per_sec, s.block_devices[0].write_bytes_per_sec), (0.0, 0.0));
        assert_eq!(s.cpu.usage_percent, 0.0);
        assert_eq!(s.cpu.per_core_percent, vec![0.0, 0.0]);

        // A new interface shows up at once, with its metadata; known ones keep their counters.
        write(&root.path().join("sys"), "class/net/wg0/operstate", "unknown\n");
        write(&root.path().join("sys"), "class/net/wg0/flags", "0x91\n");
        write(&proc, "net/dev", &net_dev(&[("lo", 0, 0), ("eth0", 110, 20), ("wg0", 5, 5)]));
        let s = state.sample(UnixMillis(4), t0 + Duration::from_secs(4)).unwrap();
        assert_eq!(s.networks.len(), 3);
        assert_eq!(s.networks[1].rx_bytes_per_sec, 100.0, "eth0's previous counters survived the rebuild");
        assert_eq!(s.networks[2].interface, "wg0");
        assert!(s.networks[2].is_up);
        assert_eq!(s.networks[2].rx_bytes_per_sec, 0.0);

        // The device leaves diskstats: no totals, no rate, and the inventory is re-read next time.
        write(&proc, "diskstats", "   7 0 loop0 0 0 0 0 0 0 0 0 0 0 0\n");
        let s = state.sample(UnixMillis(5), t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(s.block_devices[0].read_bytes_total, 0);
        assert!(state.inventory_dirty);
        let s = state.sample(UnixMillis(6), t0 + Duration::from_secs(6)).unwrap();
        assert!(!state.inventory_dirty);
        assert_eq!(s.block_devices.len(), 1, "still listed in /sys/block");
        assert_eq!(s.disks.len(), 1);
    }

    #[test]
    fn the_proc_scan_is_skipped_only_while_no_task_was_created_or_reaped() {
        let (_root, config) = fixture();
        let proc = config.proc_root.clone();
        let stat =
            |forks: u64| format!("cpu  100 0 100 800 0 0 0 0\ncpu0 50 0 50 400\nintr 1 2 3\nprocesses {forks}\n");
        let loadavg = |threads: u64| format!("0.00 0.00 0.00 1/{threads} 999\n");
        write(&proc, "stat", &stat(500));
        let mut state = State::open(config).unwrap();
        let t0 = Instant::now();
        assert_eq!(state.sample(UnixMillis(1), t0).unwrap().system.process_count, 3);

        // A directory appears but neither counter moved: the scan is skipped
        // (impossible on a real procfs, which is what makes the shortcut sound).
        std::fs::create_dir(proc.join("4000")).unwrap();
        assert_eq!(state.sample(UnixMillis(2), t0).unwrap().system.process_count, 3, "scan skipped");

        // A fork: scanned again.
        write(&proc, "stat", &stat(501));
        assert_eq!(state.sample(UnixMillis(3), t0).unwrap().system.process_count, 4);

        // A task reaped (fewer tasks alive, no fork): scanned again.
        std::fs::remove_dir(proc.join("4000")).unwrap();
        write(&proc, "loadavg", &loadavg(122));
        assert_eq!(state.sample(UnixMillis(4), t0).unwrap().system.process_count, 3);

        // Without a `processes` line there is nothing to compare: always scanned.
        write(&proc, "stat", "cpu  100 0 100 800 0 0 0 0\ncpu0 50 0 50 400\n");
        std::fs::create_dir(proc.join("4001")).unwrap();
        assert_eq!(state.sample(UnixMillis(5), t0).unwrap().system.process_count, 4);
        std::fs::create_dir(proc.join("4002")).unwrap();
        assert_eq!(state.sample(UnixMillis(6), t0).unwrap().system.process_count, 5);
    }

    #[test]
    fn inventory_is_reread_on_its_period() {
        let (_root, mut config) = fixture();
        config.inventory_refresh_secs = 30;
        let sys = config.sys_root.clone();
        let mut state = State::open(config).unwrap();
        let t0 = Instant::now();
        state.sample(UnixMillis(1), t0).unwrap();
        // A device without diskstats lines: only the periodic refresh finds it.
        write(&sys, "block/vdy/size", "8\n");
        let s = state.sample(UnixMillis(2), t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(s.block_devices.len(), 1, "not due yet");
        let s = state.sample(UnixMillis(3), t0 + Duration::from_secs(31)).unwrap();
        assert_eq!(s.block_devices.len(), 2);
        let names: Vec<_> = s.block_devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["vdy", "vdz"]);
        assert_eq!(s.block_devices[1].read_bytes_total, 100 * 512, "vdz kept its counters");
    }

    #[test]
    fn an_endless_inventory_period_does_not_overflow() {
        let (_root, mut config) = fixture();
        config.inventory_refresh_secs = u64::MAX;
        let mut state = State::open(config).unwrap();
        assert!(state.next_inventory.is_none());
        state.sample(UnixMillis(1), Instant::now()).unwrap();
    }

    #[test]
    fn malformed_required_files_fail_open_and_sample_with_context() {
        let (_root, config) = fixture();
        let proc = config.proc_root.clone();

        write(&proc, "meminfo", "nonsense\n");
        let err = State::open(config.clone()).unwrap_err();
        assert!(matches!(&err, SourceError::Unavailable(m) if m.contains("meminfo")), "{err}");

        write(&proc, "meminfo", "MemTotal: 1000 kB\nMemAvailable: 250 kB\n");
        let mut state = State::open(config.clone()).unwrap();
        write(&proc, "loadavg", "garbage");
        let err = state.sample(UnixMillis(1), Instant::now()).unwrap_err();
        assert!(err.to_string().contains("loadavg"), "{err}");

        std::fs::remove_file(proc.join("stat")).unwrap();
        let err = State::open(config).unwrap_err();
        assert!(matches!(&err, SourceError::Unavailable(m) if m.contains("stat")), "{err}");
    }

    #[test]
    fn optional_files_missing_leave_their_figures_empty() {
        let (_root, config) = fixture();
        let proc = config.proc_root.clone();
        std::fs::remove_file(proc.join("net/dev")).unwrap();
        std::fs::remove_file(proc.join("diskstats")).unwrap();
        std::fs::remove_file(proc.join("self/mountinfo")).unwrap();
        let mut state = State::open(config).unwrap();
        let s = state.sample(UnixMillis(1), Instant::now()).unwrap();
        assert!(s.networks.is_empty());
        assert!(s.disks.is_empty());
        assert_eq!(s.block_devices.len(), 1, "from /sys/block, without counters");
        assert_eq!(s.block_devices[0].read_bytes_total, 0);
        assert_eq!(s.memory.total_bytes, 1000 * 1024);
    }
}
