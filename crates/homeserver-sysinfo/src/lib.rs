//! # homeserver-sysinfo
//!
//! The [`SnapshotSource`] adapter for Linux: [`SysinfoSource`] reads the
//! host from `/proc`, `/sys` and the `sysinfo` crate and turns it into the
//! domain's [`Snapshot`] and [`HostInfo`]. And the [`DeviceInventory`]
//! adapter: [`SysDeviceInventory`] lists the host's devices from `/sys` and
//! `/dev` as the domain's [`DiscoveredDevice`]s.
//!
//! ## What this crate owns
//! - Reading the kernel's own accounting: `/proc/stat` (CPU), `/proc/meminfo`,
//!   `/proc/loadavg`, `/proc/uptime`, `/proc/net/dev`, `/proc/diskstats`,
//!   `/proc/self/mountinfo` with `statvfs`, the process directories of
//!   `/proc`, and `/sys` for block devices, interfaces, cpufreq, sensors and
//!   DMI. sysinfo supplies interface addresses and, where `/proc/cpuinfo`
//!   lacks them, the CPU name and physical core count.
//! - The state rates need: previous counters, kept behind one mutex, with
//!   the kernel files held open and re-read into reused buffers.
//! - The inventory (mounts, block devices, interfaces and their addresses,
//!   CPU model, sensors), re-read every
//!   [`SourceConfig::inventory_refresh_secs`], or at once when the mount
//!   table, the interface list or the block device list changes.
//! - Device discovery (`devices/`): disks and partitions, network
//!   interfaces, USB devices, GPUs, serial ports and input devices, each
//!   with an id derived from what identifies the hardware (serial, WWN,
//!   permanent MAC, vendor/product, bus path), never from discovery order.
//!   The rules, and what is left out on purpose, are in the `devices`
//!   module's docs. A scan keeps no state: it reads sysfs through directory
//!   descriptors, tolerates missing or garbled attributes and devices that
//!   vanish while being read, and runs on a blocking thread.
//!
//! ## What it must not know
//! No HTTP, SQL, Docker or LXC: it fills the domain types and nothing
//! else (`containers` stays empty; container runtimes have their own
//! adapters). It neither schedules samples nor stores them; the domain's
//! `Sampler` calls [`SnapshotSource::sample`]. Likewise it neither
//! schedules device scans nor keeps the device registry (aliases, labels,
//! `enabled`, `present`): the registry's repository applies the domain's
//! `plan_scan` to what [`DeviceInventory::scan`] returns.
//!
//! ## Cost
//! A sample reads six `/proc` files (kept open, re-read with `pread` into
//! reused buffers), lists the `/proc` directory to count processes and calls
//! `statvfs` per mount, all on a blocking thread (`spawn_blocking`). It reads
//! no per-process file and uses none of sysinfo's per-sample refreshes, which
//! cost more for the same figures. The `/proc` listing, the costliest step,
//! is skipped when the kernel's task counters show that no task was created
//! or reaped since the previous listing. See `benches/sample_cost.rs`.
//!
//! A device scan opens each device's sysfs folder once and reads a handful
//! of attributes relative to it (`openat`), about 5 per device: ~1 ms on
//! this VM's dozen devices, ~9 ms for 200 interfaces
//! (`benches/device_scan.rs`).
//!
//! ```no_run
//! use homeserver_domain::{SnapshotSource, UnixMillis};
//! use homeserver_sysinfo::{SourceConfig, SysinfoSource};
//!
//! # async fn demo() -> Result<(), homeserver_domain::SourceError> {
//! let source = SysinfoSource::new(SourceConfig::default())?;
//! let snapshot = source.sample(UnixMillis(1_700_000_000_000)).await?;
//! println!("cpu {:.1}%", snapshot.cpu.usage_percent);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod devices;
mod error;
mod host;
mod inventory;
mod parse;
mod reader;
mod state;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
#[cfg(doc)]
use homeserver_domain::{DeviceInventory, DiscoveredDevice};
use homeserver_domain::{HostInfo, Snapshot, SnapshotSource, SourceError, UnixMillis};

pub use crate::config::SourceConfig;
pub use crate::devices::{DeviceScanConfig, SysDeviceInventory};
use crate::error::ReadError;
use crate::state::State;

/// Reads the Linux host this process runs on (or the one whose `/proc` and
/// `/sys` the [`SourceConfig`] points at).
///
/// Cheap to share: wrap it in an `Arc` and hand it to the sampler. Samples
/// are serialised by an internal mutex; rates are computed over the time
/// between two samples on a monotonic clock, so the `at` stamps (wall clock)
/// may jump without distorting them.
#[derive(Debug)]
pub struct SysinfoSource {
    state: Arc<Mutex<State>>,
    config: Arc<SourceConfig>,
}

impl SysinfoSource {
    /// Opens the kernel files, reads the inventory and primes the CPU
    /// counters (so the first sample's CPU usage covers the time since
    /// `new`). Network and disk rates of the first sample are 0.
    ///
    /// This does blocking I/O for a millisecond or so: call it at start-up
    /// or from a blocking context.
    ///
    /// # Errors
    /// [`SourceError::Unavailable`] when `/proc/stat`, `/proc/meminfo`,
    /// `/proc/loadavg` or `/proc/uptime` under `proc_root` cannot be read or
    /// parsed. Other missing files only leave their figures out (with a
    /// warning).
    pub fn new(config: SourceConfig) -> Result<Self, SourceError> {
        let state = State::open(config.clone())?;
        Ok(Self { state: Arc::new(Mutex::new(state)), config: Arc::new(config) })
    }

    /// The configuration this source was built with.
    pub fn config(&self) -> &SourceConfig {
        &self.config
    }
}

#[async_trait]
impl SnapshotSource for SysinfoSource {
    async fn sample(&self, at: UnixMillis) -> Result<Snapshot, SourceError> {
        let state = Arc::clone(&self.state);
        let task = tokio::task::spawn_blocking(move || {
            // A panic in an earlier sample leaves only counters behind; carry on with them.
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            state.sample(at, Instant::now())
        });
        let snapshot = task.await.map_err(|source| ReadError::Task { what: "host sample", source })??;
        Ok(snapshot)
    }

    async fn host_info(&self) -> Result<HostInfo, SourceError> {
        let config = Arc::clone(&self.config);
        let task = tokio::task::spawn_blocking(move || host::read_host_info(&config));
        let info = task.await.map_err(|source| ReadError::Task { what: "host info read", source })??;
        Ok(info)
    }
}
