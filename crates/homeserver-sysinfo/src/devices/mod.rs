//! The [`DeviceInventory`] adapter: finds the host's devices in sysfs and
//! their nodes in `/dev`.
//!
//! # What is listed
//!
//! | kind | from | name | path |
//! |---|---|---|---|
//! | `disk` | `class/block` entries without a `partition` file | `sda` | `/dev/sda` |
//! | `partition` | `class/block` entries with a `partition` file | `sda1` | `/dev/sda1` |
//! | `network` | `class/net` | `eth0` | none |
//! | `usb` | `bus/usb/devices` entries with `idVendor` (not interfaces) | `1-1.2` | `/dev/bus/usb/BBB/DDD` |
//! | `gpu` | `class/drm/card<N>` (not connectors, not render nodes) | `card0` | `/dev/dri/card0` |
//! | `serial` | `class/tty` entries with a parent device | `ttyUSB0` | `/dev/ttyUSB0` |
//! | `input` | `class/input/event<N>` | `event3` | `/dev/input/event3` |
//!
//! A `path` is the node's name on the host (what a container runtime is
//! given), and is set only when that node exists below
//! [`DeviceScanConfig::dev_root`].
//!
//! Left out on purpose:
//! - **loop devices with no backing file** (`loop0` … set up but unused;
//!   `lsblk` hides them too), **RAM disks** (major 1, `ram0`…; `lsblk`
//!   excludes them by default) and **hidden block devices** (`hidden` = 1,
//!   such as the per-path devices of NVMe multipath, which have no node).
//!   Attached loop devices, `zram`, device-mapper, md and optical devices are
//!   listed as `disk` with `block_type` saying which.
//! - **virtual terminals and pseudo-terminals** (`tty0`, `ptmx`, `console`:
//!   no parent device, they live in `devices/virtual`), and **UART ports
//!   the kernel found no chip behind** (`type` = 0, "unknown": the 8250
//!   driver registers `ttyS0`–`ttyS31` whether or not a chip answers,
//!   the same test `setserial` and udev's serial probing make).
//! - every `class/input` entry but `event<N>` (`mouse0`, `js0` and the
//!   `input<N>` devices are other views of the same hardware).
//!
//! # Stable ids
//!
//! An id is [`device_id`]`(kind, identity)`; the identity is built from what
//! identifies the hardware, never from the order the kernel found things
//! in (so never from `sdb`, `event3`, `ttyUSB0`, `card1` or `input7`). In
//! order of preference:
//!
//! - **disk**: the block device's `wwid` (NVMe namespaces), else
//!   `device/wwid` (SCSI and SATA: the WWN or the T10 vendor/model/serial),
//!   `dm/uuid` (device-mapper), `md/uuid` (md arrays), `device/cid` (MMC and
//!   SD cards), the serial (`serial` for virtio, `device/serial`, SCSI VPD
//!   page 0x80), the loop device's backing file, the bus path (the resolved
//!   `device` link, `pci0000:00/0000:00:02.0/virtio1`), and last the kernel
//!   name (devices with nothing else, such as `zram0`).
//! - **partition**: the parent disk's identity plus the partition number.
//! - **network**: for a physical interface (one with a `device` link) the
//!   MAC if it is the permanent one (`addr_assign_type` = 0), else the bus
//!   path plus `dev_port`; for a virtual interface (`lo`, bridges, `veth`,
//!   VLANs, whose MACs are random or borrowed) the interface name.
//! - **usb**: `vendor:product:serial` when the device has a serial, else
//!   `vendor:product` plus the port path (`1-1.2`).
//! - **gpu**: the PCI address of the `device` link (`0000:00:02.0`), else
//!   its bus path, else the card name.
//! - **serial**: on a USB adapter, the USB device's identity plus the
//!   interface and port number (the same adapter keeps its id on another
//!   port when it has a serial); otherwise the bus path plus the port name
//!   (`ttyS0` is the fixed I/O port 0x3F8).
//! - **input**: bus type, vendor, product and name, plus `uniq` (the
//!   device's serial, e.g. a Bluetooth address) when set, else `phys` (the
//!   kernel's physical path, `usb-0000:00:14.0-1/input0`).
//!
//! Two devices of one kind that still end up with the same identity (two
//! USB sticks with the same bogus serial, two NICs sharing a MAC) each get
//! their sysfs path appended, so every id in a scan is unique and neither
//! depends on which was found first.
//!
//! # Faults
//!
//! A scan never fails because of one device: an attribute that is missing,
//! unreadable or garbled leaves its field out (`None`, or no attribute);
//! a device whose folder disappears while it is read (unplugged mid-scan)
//! is left out of that scan. Only a sysfs root without `class/` fails the
//! scan ([`SourceError::Unavailable`]).
//!
//! One window remains: the kernel creates a device's class entry before
//! its attribute files, so a scan in the microseconds while a device is
//! being added can see it without them. It is then listed with those
//! fields missing and, if the missing one is what identifies it (a MAC,
//! a serial), under a fallback id, for that one scan only.

mod classes;
mod sysfs;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use homeserver_domain::{DeviceInventory, DeviceKind, DiscoveredDevice, SourceError, device_id};
use tracing::Instrument;

use crate::error::ReadError;

/// Where a [`SysDeviceInventory`] looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceScanConfig {
    /// sysfs mount point, default `/sys`.
    pub sys_root: PathBuf,
    /// The host's `/dev` as this process sees it, default `/dev`. Only
    /// checked for the nodes' existence: reported paths always read
    /// `/dev/…`, the name on the host.
    pub dev_root: PathBuf,
}

impl Default for DeviceScanConfig {
    fn default() -> Self {
        Self { sys_root: PathBuf::from("/sys"), dev_root: PathBuf::from("/dev") }
    }
}

/// Lists the host's devices from sysfs (see the module docs for what is
/// listed and how ids are made). Holds no state between scans: two
/// inventories on the same tree give the same ids.
#[derive(Debug, Clone)]
pub struct SysDeviceInventory {
    config: Arc<DeviceScanConfig>,
}

impl SysDeviceInventory {
    /// An inventory reading `config`'s trees. Does no I/O.
    pub fn new(config: DeviceScanConfig) -> Self {
        Self { config: Arc::new(config) }
    }

    /// The configuration.
    pub fn config(&self) -> &DeviceScanConfig {
        &self.config
    }

    /// One full scan on the calling thread, sorted by kind, then name. This
    /// is blocking I/O (a few hundred small sysfs reads): async callers use
    /// [`DeviceInventory::scan`], which runs it on the blocking pool.
    ///
    /// # Errors
    /// [`SourceError::Unavailable`] when `sys_root/class` cannot be listed
    /// (sysfs not mounted there).
    pub fn scan_blocking(&self) -> Result<Vec<DiscoveredDevice>, SourceError> {
        let started = Instant::now();
        let devices = scan(&self.config)?;
        tracing::debug!(devices = devices.len(), elapsed_us = started.elapsed().as_micros() as u64, "device scan");
        Ok(devices)
    }
}

#[async_trait]
impl DeviceInventory for SysDeviceInventory {
    async fn scan(&self) -> Result<Vec<DiscoveredDevice>, SourceError> {
        let this = self.clone();
        let span = tracing::debug_span!("device_scan", sys_root = %self.config.sys_root.display());
        let task = tokio::task::spawn_blocking(move || this.scan_blocking());
        task.instrument(span).await.map_err(|source| ReadError::Task { what: "device scan", source })?
    }
}

/// A device found, before its id is fixed.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) device: DiscoveredDevice,
    /// What identifies the hardware (see the module docs).
    pub(crate) identity: String,
    /// The device's sysfs path: unique within one scan, appended to
    /// `identity` when another device of the kind has the same identity.
    pub(crate) sysfs_path: String,
}

/// What the readers share during one scan.
pub(crate) struct Scan<'a> {
    pub(crate) sys_root: &'a Path,
    pub(crate) dev_root: &'a Path,
}

impl Scan<'_> {
    /// `/dev/<rel>` when the node exists below `dev_root`.
    pub(crate) fn node(&self, rel: &str) -> Option<String> {
        sysfs::exists(self.dev_root, rel).then(|| format!("/dev/{rel}"))
    }

    /// Names in sysfs folder `rel`, sorted; empty when it is missing.
    pub(crate) fn entries(&self, rel: &str) -> Vec<std::ffi::OsString> {
        let mut names: Vec<_> = match std::fs::read_dir(self.sys_root.join(rel)) {
            Ok(dir) => dir.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }
}

fn scan(config: &DeviceScanConfig) -> Result<Vec<DiscoveredDevice>, SourceError> {
    let class = config.sys_root.join("class");
    if let Err(e) = std::fs::read_dir(&class) {
        return Err(SourceError::Unavailable(format!("cannot list {}: {e}", class.display())));
    }
    let scan = Scan { sys_root: &config.sys_root, dev_root: &config.dev_root };

    let (mut disks, partitions) = classes::block(&scan);
    assign_ids(DeviceKind::Disk, &mut disks);
    let mut partitions = classes::partitions(partitions, &disks);
    assign_ids(DeviceKind::Partition, &mut partitions);

    let mut networks = classes::network(&scan);
    assign_ids(DeviceKind::Network, &mut networks);

    let mut usb = classes::usb(&scan);
    assign_ids(DeviceKind::Usb, &mut usb);
    let usb_by_path: BTreeMap<String, classes::UsbAnchor> = usb.iter().map(classes::UsbAnchor::of).collect();

    let mut serial = classes::serial(&scan, &usb_by_path);
    assign_ids(DeviceKind::Serial, &mut serial);
    let mut input = classes::input(&scan, &usb_by_path);
    assign_ids(DeviceKind::Input, &mut input);
    let mut gpus = classes::gpu(&scan);
    assign_ids(DeviceKind::Gpu, &mut gpus);

    let mut out: Vec<DiscoveredDevice> =
        [disks, partitions, networks, usb, gpus, serial, input].into_iter().flatten().map(|f| f.device).collect();
    out.sort_by(|a, b| (a.kind, &a.name, &a.id).cmp(&(b.kind, &b.name, &b.id)));
    Ok(out)
}

/// Fixes the ids of one kind's devices: the identity, with the sysfs path
/// appended for identities that more than one device has.
fn assign_ids(kind: DeviceKind, found: &mut [Found]) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for f in found.iter() {
        *counts.entry(f.identity.as_str()).or_default() += 1;
    }
    let shared: Vec<bool> = found.iter().map(|f| counts[f.identity.as_str()] > 1).collect();
    for (f, shared) in found.iter_mut().zip(shared) {
        if shared {
            f.identity = format!("{}@{}", f.identity, f.sysfs_path);
        }
        f.device.id = device_id(kind, &f.identity);
        f.device.kind = kind;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(identity: &str, path: &str) -> Found {
        Found { device: DiscoveredDevice::default(), identity: identity.to_owned(), sysfs_path: path.to_owned() }
    }

    #[test]
    fn shared_identities_get_their_path_whatever_the_order() {
        let mut a = vec![found("usb:1:2:0001", "p/1-1"), found("usb:1:2:0001", "p/1-2"), found("usb:3:4:x", "p/2-1")];
        let mut b = vec![found("usb:3:4:x", "p/2-1"), found("usb:1:2:0001", "p/1-2"), found("usb:1:2:0001", "p/1-1")];
        assign_ids(DeviceKind::Usb, &mut a);
        assign_ids(DeviceKind::Usb, &mut b);
        let ids = |v: &[Found]| {
            let mut ids: Vec<(String, String)> =
                v.iter().map(|f| (f.sysfs_path.clone(), f.device.id.clone())).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&a), ids(&b));
        assert_eq!(a[2].device.id, device_id(DeviceKind::Usb, "usb:3:4:x"));
        assert_eq!(a[0].identity, "usb:1:2:0001@p/1-1");
        assert_ne!(a[0].device.id, a[1].device.id);
    }

    #[tokio::test]
    async fn a_missing_sysfs_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let inventory = SysDeviceInventory::new(DeviceScanConfig {
            sys_root: dir.path().join("nope"),
            dev_root: dir.path().to_owned(),
        });
        assert!(matches!(inventory.scan().await, Err(SourceError::Unavailable(_))));
        std::fs::create_dir(dir.path().join("nope")).unwrap();
        std::fs::create_dir(dir.path().join("nope/class")).unwrap();
        assert_eq!(inventory.scan().await.unwrap(), []);
    }
}
