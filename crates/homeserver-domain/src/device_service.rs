//! The device registry's use cases: rescans, listing, patches with
//! optimistic concurrency, forgetting, the monitoring mask, and checking
//! the devices a container is about to get.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::device::{Device, DeviceFilter, DeviceInventory, DeviceMask, DevicePatch, DeviceRepository, ScanReport};
use crate::error::{FieldError, RepositoryError, SourceError};
use crate::ports::Clock;

/// How often a patch without `If-Match` retries after losing a race.
const MAX_RETRIES: usize = 8;

/// Why a device use case failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Invalid input.
    #[error("invalid device request")]
    Invalid(Vec<FieldError>),
    /// No such device.
    #[error("no such device")]
    NotFound,
    /// `If-Match` names another revision.
    #[error("the device changed since the given ETag")]
    PreconditionFailed,
    /// The scan failed.
    #[error("device scan failed")]
    Scan(#[source] SourceError),
    /// The store failed.
    #[error("device store failed")]
    Repository(#[source] RepositoryError),
}

impl From<RepositoryError> for DeviceError {
    fn from(e: RepositoryError) -> Self {
        match e {
            RepositoryError::NotFound => Self::NotFound,
            RepositoryError::Stale => Self::PreconditionFailed,
            other => Self::Repository(other),
        }
    }
}

/// The device use cases.
pub struct DeviceService {
    inventory: Arc<dyn DeviceInventory>,
    repository: Arc<dyn DeviceRepository>,
    clock: Arc<dyn Clock>,
    mask: RwLock<(u64, Arc<DeviceMask>)>,
    mask_seq: AtomicU64,
}

impl DeviceService {
    /// The service; call [`DeviceService::refresh_mask`] (or
    /// [`DeviceService::rescan`]) once at start-up.
    pub fn new(
        inventory: Arc<dyn DeviceInventory>,
        repository: Arc<dyn DeviceRepository>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inventory,
            repository,
            clock,
            mask: RwLock::new((0, Arc::new(DeviceMask::default()))),
            mask_seq: AtomicU64::new(0),
        }
    }

    /// What monitoring must leave out now (cheap: one `Arc` clone).
    pub fn mask(&self) -> Arc<DeviceMask> {
        match self.mask.read() {
            Ok(guard) => guard.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    /// Recomputes the mask from the registry. Of concurrent refreshes the
    /// one that read last wins, so a slow refresh never restores an older
    /// mask.
    pub async fn refresh_mask(&self) -> Result<(), DeviceError> {
        let seq = self.mask_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let devices = self.repository.list().await?;
        let mask = Arc::new(DeviceMask::of(&devices));
        let mut guard = match self.mask.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if seq > guard.0 {
            *guard = (seq, mask);
        }
        Ok(())
    }

    /// Scans the host and records what changed.
    #[tracing::instrument(name = "devices.rescan", skip(self))]
    pub async fn rescan(&self) -> Result<ScanReport, DeviceError> {
        let found = self.inventory.scan().await.map_err(DeviceError::Scan)?;
        let report = self.repository.apply_scan(&found, self.clock.now()).await?;
        if !report.is_empty() {
            tracing::info!(
                added = report.added.len(),
                removed = report.removed.len(),
                updated = report.updated.len(),
                "devices changed"
            );
        }
        self.refresh_mask().await?;
        Ok(report)
    }

    /// Devices passing `filter`.
    pub async fn list(&self, filter: DeviceFilter) -> Result<Vec<Device>, DeviceError> {
        Ok(self.repository.list().await?.into_iter().filter(|d| filter.matches(d)).collect())
    }

    /// One device.
    pub async fn get(&self, id: &str) -> Result<Device, DeviceError> {
        self.repository.get(id).await?.ok_or(DeviceError::NotFound)
    }

    /// Applies `patch` (always a write with a new revision). With
    /// `if_match`, the device must still be at that revision
    /// (`PreconditionFailed` otherwise, also when another writer wins the
    /// race); without, a lost race is retried on the new revision, so no
    /// update is ever lost.
    #[tracing::instrument(name = "devices.patch", skip(self, patch))]
    pub async fn patch(&self, id: &str, patch: &DevicePatch, if_match: Option<u64>) -> Result<Device, DeviceError> {
        let errors = patch.validate();
        if !errors.is_empty() {
            return Err(DeviceError::Invalid(errors));
        }
        for _ in 0..MAX_RETRIES {
            let current = self.get(id).await?;
            if if_match.is_some_and(|rev| rev != current.revision) {
                return Err(DeviceError::PreconditionFailed);
            }
            let next = patch.apply(&current);
            match self.repository.replace(&next, current.revision).await {
                Ok(()) => {
                    if next.enabled != current.enabled {
                        self.refresh_mask().await?;
                    }
                    return Ok(next);
                }
                Err(RepositoryError::Stale) if if_match.is_none() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(DeviceError::Repository(RepositoryError::Unavailable("the device kept changing; try again".to_owned())))
    }

    /// Forgets a device (a present one comes back as new on the next scan).
    #[tracing::instrument(name = "devices.forget", skip(self))]
    pub async fn forget(&self, id: &str, if_match: Option<u64>) -> Result<(), DeviceError> {
        self.repository.delete(id, if_match).await?;
        self.refresh_mask().await
    }

    /// Resolves the `devices` of a container's config: `/dev/…` paths stay
    /// (unless the registry knows the node as disabled); anything else is a
    /// registry id that must be known, enabled, present and have a node.
    /// `field` prefixes the errors (`config.devices`).
    pub async fn resolve(&self, entries: &[String], field: &str) -> Result<Vec<String>, DeviceError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let devices = self.repository.list().await?;
        let mut paths = Vec::with_capacity(entries.len());
        let mut errors = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let field = format!("{field}[{i}]");
            if entry.starts_with("/dev/") {
                match devices.iter().find(|d| d.path.as_deref() == Some(entry.as_str())) {
                    Some(d) if !d.enabled => {
                        errors.push(FieldError::new(field, format!("device {} ({entry}) is disabled", d.id)));
                    }
                    _ => paths.push(entry.clone()),
                }
                continue;
            }
            match devices.iter().find(|d| d.id == *entry) {
                None => errors.push(FieldError::new(field, format!("unknown device id `{entry}`"))),
                Some(d) if !d.enabled => errors.push(FieldError::new(field, format!("device `{entry}` is disabled"))),
                Some(d) if !d.present => {
                    errors.push(FieldError::new(field, format!("device `{entry}` is not present")));
                }
                Some(Device { path: Some(path), .. }) => paths.push(path.clone()),
                Some(_) => errors.push(FieldError::new(field, format!("device `{entry}` has no device node"))),
            }
        }
        if errors.is_empty() { Ok(paths) } else { Err(DeviceError::Invalid(errors)) }
    }

    /// Checks that every non-path entry names a known device (what a profile
    /// may store: the device may be disabled or absent for now).
    pub async fn check_known(&self, entries: &[String], field: &str) -> Result<Vec<FieldError>, DeviceError> {
        let ids: Vec<(usize, &String)> = entries.iter().enumerate().filter(|(_, e)| !e.starts_with("/dev/")).collect();
        let mut errors = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            if entry.contains("..") || entry.trim().is_empty() {
                errors.push(FieldError::new(format!("{field}[{i}]"), "must be a path under /dev/ or a device id"));
            }
        }
        if ids.is_empty() {
            return Ok(errors);
        }
        let devices = self.repository.list().await?;
        for (i, entry) in ids {
            if !devices.iter().any(|d| d.id == *entry) {
                errors.push(FieldError::new(format!("{field}[{i}]"), format!("unknown device id `{entry}`")));
            }
        }
        Ok(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceKind, DiscoveredDevice, MockDeviceInventory, MockDeviceRepository};
    use crate::ports::MockClock;
    use crate::time::UnixMillis;

    fn device(id: &str, path: Option<&str>, enabled: bool, present: bool) -> Device {
        let found = DiscoveredDevice {
            id: id.to_owned(),
            kind: DeviceKind::Serial,
            name: id.to_owned(),
            path: path.map(str::to_owned),
            ..Default::default()
        };
        Device { enabled, present, ..Device::discovered(&found, UnixMillis(1)) }
    }

    fn clock() -> Arc<MockClock> {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(UnixMillis(5));
        Arc::new(clock)
    }

    fn service(repo: MockDeviceRepository) -> DeviceService {
        DeviceService::new(Arc::new(MockDeviceInventory::new()), Arc::new(repo), clock())
    }

    #[tokio::test]
    async fn patch_checks_if_match_and_retries_lost_races_only_without_it() {
        let mut repo = MockDeviceRepository::new();
        let mut rev = 1;
        repo.expect_get().returning(move |_| {
            rev += 1;
            Ok(Some(Device { revision: rev, ..device("a", None, true, true) }))
        });
        let mut lost = 0;
        repo.expect_replace().returning(move |_, _| {
            lost += 1;
            if lost < 3 { Err(RepositoryError::Stale) } else { Ok(()) }
        });
        repo.expect_list().returning(|| Ok(vec![]));
        let svc = service(repo);
        let patch = DevicePatch { enabled: Some(false), ..Default::default() };
        // Without If-Match: two lost races, then success on revision 4.
        let d = svc.patch("a", &patch, None).await.unwrap();
        assert_eq!((d.enabled, d.revision), (false, 5));
        // With a revision that is not the current one: 412 before any write.
        assert!(matches!(svc.patch("a", &patch, Some(1)).await, Err(DeviceError::PreconditionFailed)));
    }

    #[tokio::test]
    async fn patch_with_if_match_that_loses_the_race_is_a_precondition_failure() {
        let mut repo = MockDeviceRepository::new();
        repo.expect_get().returning(|_| Ok(Some(device("a", None, true, true))));
        repo.expect_replace().times(1).returning(|_, _| Err(RepositoryError::Stale));
        let svc = service(repo);
        let patch = DevicePatch { alias: Some(Some("x".into())), ..Default::default() };
        assert!(matches!(svc.patch("a", &patch, Some(1)).await, Err(DeviceError::PreconditionFailed)));
        let bad = DevicePatch { alias: Some(Some("x".repeat(100))), ..Default::default() };
        assert!(matches!(svc.patch("a", &bad, None).await, Err(DeviceError::Invalid(e)) if e[0].field == "alias"));
    }

    #[tokio::test]
    async fn resolve_refuses_unknown_disabled_absent_and_nodeless_devices() {
        let mut repo = MockDeviceRepository::new();
        repo.expect_list().returning(|| {
            Ok(vec![
                device("ok", Some("/dev/ttyUSB0"), true, true),
                device("off", Some("/dev/ttyUSB1"), false, true),
                device("gone", Some("/dev/ttyUSB2"), true, false),
                device("eth", None, true, true),
            ])
        });
        let svc = service(repo);
        let good = svc.resolve(&["ok".into(), "/dev/null".into()], "config.devices").await.unwrap();
        assert_eq!(good, ["/dev/ttyUSB0", "/dev/null"]);
        let entries: Vec<String> =
            ["nope", "off", "gone", "eth", "/dev/ttyUSB1"].into_iter().map(str::to_owned).collect();
        let Err(DeviceError::Invalid(errors)) = svc.resolve(&entries, "config.devices").await else {
            panic!("expected field errors")
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["config.devices[0]", "config.devices[1]", "config.devices[2]", "config.devices[3]", "config.devices[4]"]
        );
        assert!(errors[1].message.contains("disabled") && errors[4].message.contains("disabled"));
        let known = svc.check_known(&entries, "config.devices").await.unwrap();
        assert_eq!(known.len(), 1);
        assert!(known[0].message.contains("nope"));
    }

    #[tokio::test]
    async fn rescan_applies_the_scan_and_refreshes_the_mask() {
        let mut inventory = MockDeviceInventory::new();
        inventory.expect_scan().returning(|| Ok(vec![]));
        let mut repo = MockDeviceRepository::new();
        repo.expect_apply_scan()
            .withf(|found, at| found.is_empty() && *at == UnixMillis(5))
            .returning(|_, _| Ok(ScanReport { removed: vec!["eth1".into()], ..Default::default() }));
        repo.expect_list().returning(|| {
            let mut d = device("eth1", None, false, false);
            d.kind = DeviceKind::Network;
            Ok(vec![d])
        });
        let svc = DeviceService::new(Arc::new(inventory), Arc::new(repo), clock());
        assert!(svc.mask().is_empty());
        assert_eq!(svc.rescan().await.unwrap().removed, ["eth1"]);
        assert!(!svc.mask().is_empty());
    }
}
