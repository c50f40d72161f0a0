//! The host's devices: what discovery finds ([`DiscoveredDevice`]), what the
//! registry keeps ([`Device`]), the ports that find and keep them
//! ([`DeviceInventory`], [`DeviceRepository`]) and the pure rules in between
//! (stable ids, scan diffs, patches).
//!
//! Race-freedom is split cleanly: the rules here are pure functions; the
//! repository runs them inside one transaction ([`DeviceRepository::apply_scan`])
//! or guards a write with the revision read before it
//! ([`DeviceRepository::replace`]), so concurrent writers never lose an update.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;

use crate::error::{FieldError, RepositoryError, SourceError};
use crate::time::UnixMillis;

/// Longest alias.
pub const MAX_ALIAS_LEN: usize = 64;
/// Most labels on one device or profile.
pub const MAX_LABELS: usize = 64;
/// Longest label key.
pub const MAX_LABEL_KEY_LEN: usize = 128;
/// Longest label value.
pub const MAX_LABEL_VALUE_LEN: usize = 512;

/// What kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "snake_case"))]
pub enum DeviceKind {
    /// A whole block device (`/dev/sda`, `/dev/nvme0n1`).
    Disk,
    /// A partition of a disk.
    Partition,
    /// A network interface.
    Network,
    /// A USB device.
    Usb,
    /// A GPU (`/sys/class/drm/card*`).
    Gpu,
    /// A serial port (`/dev/ttyS0`, `/dev/ttyUSB0`).
    Serial,
    /// An input device (`/dev/input/event*`).
    Input,
    /// Anything else.
    #[default]
    Other,
}

impl DeviceKind {
    /// Every kind, in a stable order.
    pub const ALL: [Self; 8] =
        [Self::Disk, Self::Partition, Self::Network, Self::Usb, Self::Gpu, Self::Serial, Self::Input, Self::Other];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disk => "disk",
            Self::Partition => "partition",
            Self::Network => "network",
            Self::Usb => "usb",
            Self::Gpu => "gpu",
            Self::Serial => "serial",
            Self::Input => "input",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device kind name that is not one of [`DeviceKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device kind `{0}`")]
pub struct UnknownDeviceKind(pub String);

impl FromStr for DeviceKind {
    type Err = UnknownDeviceKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownDeviceKind(s.to_owned()))
    }
}

/// The stable id of a device: `<kind>-<16 hex digits>`, derived from what
/// identifies the hardware (serial, MAC, vendor/product, bus path), never
/// from discovery order. The same identity always gives the same id, on
/// every build and platform (FNV-1a, not `std`'s randomised hasher).
pub fn device_id(kind: DeviceKind, identity: &str) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in kind.as_str().bytes().chain([0]).chain(identity.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    format!("{}-{hash:016x}", kind.as_str())
}

/// A device as one scan of the host found it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiscoveredDevice {
    /// Stable id ([`device_id`]).
    pub id: String,
    /// Kind.
    pub kind: DeviceKind,
    /// Kernel name (`sda`, `eth0`, `card0`, `1-1.2`).
    pub name: String,
    /// Vendor, when the hardware says.
    pub vendor: Option<String>,
    /// Model or product.
    pub model: Option<String>,
    /// Serial number (MAC address for interfaces).
    pub serial: Option<String>,
    /// The device node a container would get (`/dev/sda`), if any.
    pub path: Option<String>,
    /// Further facts (`size_bytes`, `bus_path`, `driver`, `mtu` …).
    pub attributes: BTreeMap<String, String>,
}

/// A device in the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// Stable id.
    pub id: String,
    /// Kind.
    pub kind: DeviceKind,
    /// Kernel name.
    pub name: String,
    /// The operator's name for it.
    pub alias: Option<String>,
    /// Vendor.
    pub vendor: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
    /// Device node.
    pub path: Option<String>,
    /// Monitored and assignable to containers.
    pub enabled: bool,
    /// Seen by the last scan.
    pub present: bool,
    /// The operator's labels.
    pub labels: BTreeMap<String, String>,
    /// Discovery facts.
    pub attributes: BTreeMap<String, String>,
    /// First scan that saw it.
    pub first_seen: UnixMillis,
    /// Last scan that saw it.
    pub last_seen: UnixMillis,
    /// Bumped by every change; the `ETag`.
    pub revision: u64,
}

impl Device {
    /// A new record for a device found at `at`: enabled, present.
    pub fn discovered(found: &DiscoveredDevice, at: UnixMillis) -> Self {
        Self {
            id: found.id.clone(),
            kind: found.kind,
            name: found.name.clone(),
            alias: None,
            vendor: found.vendor.clone(),
            model: found.model.clone(),
            serial: found.serial.clone(),
            path: found.path.clone(),
            enabled: true,
            present: true,
            labels: BTreeMap::new(),
            attributes: found.attributes.clone(),
            first_seen: at,
            last_seen: at,
            revision: 1,
        }
    }

    /// Whether the discovery facts differ from `found`.
    fn differs_from(&self, found: &DiscoveredDevice) -> bool {
        self.kind != found.kind
            || self.name != found.name
            || self.vendor != found.vendor
            || self.model != found.model
            || self.serial != found.serial
            || self.path != found.path
            || self.attributes != found.attributes
    }

    /// This record with the facts of `found` (user fields kept).
    fn refreshed(&self, found: &DiscoveredDevice, at: UnixMillis) -> Self {
        Self {
            kind: found.kind,
            name: found.name.clone(),
            vendor: found.vendor.clone(),
            model: found.model.clone(),
            serial: found.serial.clone(),
            path: found.path.clone(),
            attributes: found.attributes.clone(),
            present: true,
            last_seen: at,
            revision: self.revision + 1,
            ..self.clone()
        }
    }
}

/// What one scan changed, by device id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanReport {
    /// Newly present: never seen, forgotten, or back after being absent.
    pub added: Vec<String>,
    /// Present before, absent now (the record stays, `present: false`).
    pub removed: Vec<String>,
    /// Present both times with changed facts.
    pub updated: Vec<String>,
}

impl ScanReport {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.updated.is_empty()
    }
}

/// The writes one scan needs: records to insert, records to replace, and
/// the report. Pure: [`plan_scan`] computes it, a repository applies it in
/// one transaction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScanPlan {
    /// New records.
    pub insert: Vec<Device>,
    /// Changed records (their `revision` already bumped).
    pub update: Vec<Device>,
    /// What changed.
    pub report: ScanReport,
}

/// Compares the registry (`known`) with what a scan `found` at `at`.
/// Devices still present only get `last_seen` moved when nothing else
/// changed; those are left out of the plan's `update` to spare writes —
/// a repository moves their `last_seen` in one statement (see
/// [`DeviceRepository::apply_scan`]). Duplicated ids in `found` keep the
/// first.
pub fn plan_scan(known: &[Device], found: &[DiscoveredDevice], at: UnixMillis) -> ScanPlan {
    let by_id: BTreeMap<&str, &Device> = known.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut seen = BTreeSet::new();
    let mut plan = ScanPlan::default();
    for f in found {
        if !seen.insert(f.id.as_str()) {
            continue;
        }
        match by_id.get(f.id.as_str()) {
            None => {
                plan.insert.push(Device::discovered(f, at));
                plan.report.added.push(f.id.clone());
            }
            Some(d) if !d.present => {
                plan.update.push(d.refreshed(f, at));
                plan.report.added.push(f.id.clone());
            }
            Some(d) if d.differs_from(f) => {
                plan.update.push(d.refreshed(f, at));
                plan.report.updated.push(f.id.clone());
            }
            Some(_) => {}
        }
    }
    for d in known.iter().filter(|d| d.present && !seen.contains(d.id.as_str())) {
        plan.update.push(Device { present: false, revision: d.revision + 1, ..d.clone() });
        plan.report.removed.push(d.id.clone());
    }
    plan
}

/// A partial change of a device (`PATCH`): `None` leaves a field alone.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DevicePatch {
    /// New alias; `Some(None)` clears it.
    pub alias: Option<Option<String>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// Replaces every label.
    pub labels: Option<BTreeMap<String, String>>,
}

impl DevicePatch {
    /// Field-level problems; empty when valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(Some(alias)) = &self.alias {
            if alias.trim().is_empty() {
                errors.push(FieldError::new("alias", "must not be blank (send null to clear it)"));
            } else if alias.chars().count() > MAX_ALIAS_LEN {
                errors.push(FieldError::new("alias", format!("must be at most {MAX_ALIAS_LEN} characters")));
            } else if alias.chars().any(char::is_control) {
                errors.push(FieldError::new("alias", "must not contain control characters"));
            }
        }
        if let Some(labels) = &self.labels {
            errors.extend(validate_labels("labels", labels));
        }
        errors
    }

    /// `device` with this patch applied and its revision bumped. Every
    /// patch is a write, even one that changes no field: two clients that
    /// send the same `If-Match` can never both succeed.
    pub fn apply(&self, device: &Device) -> Device {
        let mut next = device.clone();
        if let Some(alias) = &self.alias {
            next.alias.clone_from(alias);
        }
        if let Some(enabled) = self.enabled {
            next.enabled = enabled;
        }
        if let Some(labels) = &self.labels {
            next.labels.clone_from(labels);
        }
        next.revision = device.revision + 1;
        next
    }
}

/// Checks a label map against the caps (count, key and value lengths).
pub fn validate_labels(field: &str, labels: &BTreeMap<String, String>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if labels.len() > MAX_LABELS {
        errors.push(FieldError::new(field, format!("at most {MAX_LABELS} labels")));
    }
    for (k, v) in labels {
        if k.is_empty() || k.chars().count() > MAX_LABEL_KEY_LEN || k.chars().any(char::is_control) {
            errors.push(FieldError::new(
                format!("{field}.{k}"),
                format!("keys must be 1 to {MAX_LABEL_KEY_LEN} characters, without control characters"),
            ));
        }
        if v.chars().count() > MAX_LABEL_VALUE_LEN {
            errors.push(FieldError::new(
                format!("{field}.{k}"),
                format!("values must be at most {MAX_LABEL_VALUE_LEN} characters"),
            ));
        }
    }
    errors
}

/// Which devices a list wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceFilter {
    /// Only this kind.
    pub kind: Option<DeviceKind>,
    /// Only present (or absent) ones.
    pub present: Option<bool>,
    /// Only enabled (or disabled) ones.
    pub enabled: Option<bool>,
}

impl DeviceFilter {
    /// Whether `device` passes.
    pub fn matches(&self, device: &Device) -> bool {
        self.kind.is_none_or(|k| k == device.kind)
            && self.present.is_none_or(|p| p == device.present)
            && self.enabled.is_none_or(|e| e == device.enabled)
    }
}

/// The disabled devices monitoring must leave out: block devices by kernel
/// name, mounted file systems by device node, interfaces by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceMask {
    block: BTreeSet<String>,
    nodes: BTreeSet<String>,
    interfaces: BTreeSet<String>,
}

impl DeviceMask {
    /// The mask of every disabled device in `devices`.
    pub fn of(devices: &[Device]) -> Self {
        let mut mask = Self::default();
        for d in devices.iter().filter(|d| !d.enabled) {
            match d.kind {
                DeviceKind::Disk | DeviceKind::Partition => {
                    mask.block.insert(d.name.clone());
                    if let Some(path) = &d.path {
                        mask.nodes.insert(path.clone());
                    }
                }
                DeviceKind::Network => {
                    mask.interfaces.insert(d.name.clone());
                }
                _ => {}
            }
        }
        mask
    }

    /// Nothing is masked.
    pub fn is_empty(&self) -> bool {
        self.block.is_empty() && self.nodes.is_empty() && self.interfaces.is_empty()
    }

    /// Removes the masked disks, block devices and interfaces from a
    /// snapshot (and so from history and metrics, which derive from it).
    pub fn apply(&self, snapshot: &mut crate::snapshot::Snapshot) {
        if self.is_empty() {
            return;
        }
        snapshot.disks.retain(|d| !self.nodes.contains(&d.name));
        snapshot.block_devices.retain(|b| !self.block.contains(&b.name));
        snapshot.networks.retain(|n| !self.interfaces.contains(&n.interface));
    }
}

/// Finds the host's devices.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait DeviceInventory: Send + Sync {
    /// One full scan (off the async runtime in real adapters).
    async fn scan(&self) -> Result<Vec<DiscoveredDevice>, SourceError>;
}

/// Keeps the device registry.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait DeviceRepository: Send + Sync {
    /// Every device, sorted by kind then name.
    async fn list(&self) -> Result<Vec<Device>, RepositoryError>;
    /// One device.
    async fn get(&self, id: &str) -> Result<Option<Device>, RepositoryError>;
    /// In one transaction: reads the registry, runs [`plan_scan`] against
    /// `found`, writes the plan, moves `last_seen` of every other present
    /// device to `at`; returns the report.
    async fn apply_scan(&self, found: &[DiscoveredDevice], at: UnixMillis) -> Result<ScanReport, RepositoryError>;
    /// Replaces `device` only if its stored revision is still `expected`
    /// (`Stale` otherwise, `NotFound` when gone).
    async fn replace(&self, device: &Device, expected: u64) -> Result<(), RepositoryError>;
    /// Forgets a device if its stored revision is `expected` (any revision
    /// when `None`); `NotFound` when absent, `Stale` on a mismatch.
    async fn delete(&self, id: &str, expected: Option<u64>) -> Result<(), RepositoryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(id: &str, name: &str) -> DiscoveredDevice {
        DiscoveredDevice {
            id: id.to_owned(),
            kind: DeviceKind::Disk,
            name: name.to_owned(),
            path: Some(format!("/dev/{name}")),
            ..Default::default()
        }
    }

    #[test]
    fn ids_depend_on_identity_and_kind_only() {
        let a = device_id(DeviceKind::Network, "mac:52:54:00:12:34:56");
        assert_eq!(a, device_id(DeviceKind::Network, "mac:52:54:00:12:34:56"));
        assert_ne!(a, device_id(DeviceKind::Network, "mac:52:54:00:12:34:57"));
        assert_ne!(a, device_id(DeviceKind::Usb, "mac:52:54:00:12:34:56"));
        assert!(a.starts_with("network-") && a.len() == "network-".len() + 16);
        // Fixed forever (FNV-1a 64, checked with an independent implementation):
        // a change here would give every device a new id.
        assert_eq!(device_id(DeviceKind::Disk, "serial:ABC"), "disk-ae88417fc45b27ba");
    }

    #[test]
    fn scan_plan_reports_added_removed_updated_and_returning() {
        let t0 = UnixMillis(1_000);
        let first = plan_scan(&[], &[found("a", "sda"), found("b", "sdb"), found("a", "dup")], t0);
        assert_eq!(first.report.added, ["a", "b"]);
        assert_eq!(first.insert.len(), 2);
        let mut known = first.insert.clone();
        known[1].alias = Some("backup".into());

        let t1 = UnixMillis(2_000);
        let second = plan_scan(&known, &[found("a", "sdc")], t1);
        assert_eq!(second.report, ScanReport { added: vec![], removed: vec!["b".into()], updated: vec!["a".into()] });
        let b = second.update.iter().find(|d| d.id == "b").unwrap();
        assert!(!b.present && b.alias.as_deref() == Some("backup") && b.revision == 2 && b.last_seen == t0);

        let known: Vec<Device> = second.update.clone();
        let third = plan_scan(&known, &[found("a", "sdc"), found("b", "sdb")], UnixMillis(3_000));
        assert_eq!(third.report.added, ["b"]);
        assert!(third.report.updated.is_empty() && third.report.removed.is_empty());
        let b = third.update.iter().find(|d| d.id == "b").unwrap();
        assert!(b.present && b.alias.as_deref() == Some("backup") && b.first_seen == t0);
    }

    #[test]
    fn patches_validate_and_always_bump_the_revision() {
        let d = Device::discovered(&found("a", "sda"), UnixMillis(1));
        let same = DevicePatch { enabled: Some(true), ..Default::default() }.apply(&d);
        assert_eq!((same.enabled, same.revision), (true, 2), "a no-op patch is still a write");
        let off = DevicePatch { enabled: Some(false), alias: Some(Some("root".into())), ..Default::default() };
        let next = off.apply(&same);
        assert_eq!((next.enabled, next.alias.as_deref(), next.revision), (false, Some("root"), 3));
        let cleared = DevicePatch { alias: Some(None), ..Default::default() }.apply(&next);
        assert_eq!(cleared.alias, None);

        let bad = DevicePatch {
            alias: Some(Some("x".repeat(65))),
            labels: Some(BTreeMap::from([(String::new(), "v".into()), ("k".into(), "v".repeat(513))])),
            ..Default::default()
        };
        let fields: Vec<_> = bad.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["alias", "labels.", "labels.k"]);
        assert_eq!(DevicePatch { alias: Some(Some(" ".into())), ..Default::default() }.validate()[0].field, "alias");
    }

    #[test]
    fn the_mask_drops_disabled_disks_partitions_and_interfaces_only() {
        use crate::snapshot::{BlockDeviceStats, DiskStats, NetworkStats, Snapshot};
        let disk = |id: &str, kind, name: &str, enabled| Device {
            enabled,
            kind,
            ..Device::discovered(&found(id, name), UnixMillis(1))
        };
        let devices = [
            disk("a", DeviceKind::Disk, "sda", false),
            disk("b", DeviceKind::Partition, "sdb1", false),
            disk("c", DeviceKind::Network, "eth1", false),
            disk("d", DeviceKind::Network, "eth0", true),
        ];
        let mask = DeviceMask::of(&devices);
        let mut s = Snapshot::default();
        for name in ["sda", "sdb"] {
            s.block_devices.push(BlockDeviceStats { name: name.into(), ..Default::default() });
        }
        for name in ["/dev/sdb1", "/dev/sdc1"] {
            s.disks.push(DiskStats { name: name.into(), ..Default::default() });
        }
        for name in ["eth0", "eth1"] {
            s.networks.push(NetworkStats { interface: name.into(), ..Default::default() });
        }
        mask.apply(&mut s);
        assert_eq!(s.block_devices.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["sdb"]);
        assert_eq!(s.disks.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["/dev/sdc1"]);
        assert_eq!(s.networks.iter().map(|n| n.interface.as_str()).collect::<Vec<_>>(), ["eth0"]);
        assert!(DeviceMask::of(&devices[3..]).is_empty());
    }

    #[test]
    fn filters_and_kinds_round_trip() {
        for k in DeviceKind::ALL {
            assert_eq!(k.as_str().parse::<DeviceKind>().unwrap(), k);
        }
        assert!("tape".parse::<DeviceKind>().is_err());
        let mut d = Device::discovered(&found("a", "sda"), UnixMillis(1));
        d.enabled = false;
        assert!(DeviceFilter { kind: Some(DeviceKind::Disk), enabled: Some(false), ..Default::default() }.matches(&d));
        assert!(!DeviceFilter { present: Some(false), ..Default::default() }.matches(&d));
    }
}
