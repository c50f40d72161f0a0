//! Devices in the running service: disabled devices leave the snapshots
//! (and so history, `/metrics` and every live stream, which all derive from
//! them) from the next sample, and the registry is rescanned on a timer.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use homeserver_domain::{DeviceService, HostInfo, Snapshot, SnapshotSource, SourceError, UnixMillis};
use tokio::sync::watch;

use crate::config::Settings;

/// A snapshot source without the disabled devices.
pub struct Masked {
    host: Arc<dyn SnapshotSource>,
    devices: Arc<DeviceService>,
}

impl Masked {
    /// Wraps `host`.
    pub fn new(host: Arc<dyn SnapshotSource>, devices: Arc<DeviceService>) -> Self {
        Self { host, devices }
    }
}

#[async_trait]
impl SnapshotSource for Masked {
    async fn sample(&self, at: UnixMillis) -> Result<Snapshot, SourceError> {
        let mut snapshot = self.host.sample(at).await?;
        self.devices.mask().apply(&mut snapshot);
        Ok(snapshot)
    }

    async fn host_info(&self) -> Result<HostInfo, SourceError> {
        self.host.host_info().await
    }
}

/// Rescans every `interval` until `shutdown` flips; a failed scan is
/// logged and retried at the next tick.
pub async fn rescan_loop(devices: Arc<DeviceService>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: start-up scanned already
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = devices.rescan().await {
                    tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "device rescan failed");
                }
            }
            _ = shutdown.changed() => break,
        }
    }
}

/// The host's device inventory as the settings place it.
pub fn inventory(settings: &Settings) -> homeserver_sysinfo::SysDeviceInventory {
    homeserver_sysinfo::SysDeviceInventory::new(homeserver_sysinfo::DeviceScanConfig {
        sys_root: settings.host.sys_root.clone(),
        dev_root: settings.devices.dev_root.clone(),
    })
}
