//! Where the source looks and how often it re-reads the host's inventory.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of a [`crate::SysinfoSource`].
///
/// The roots can point at a copy of the host's `/proc` and `/sys` (a
/// container with `-v /proc:/host/proc:ro`) or at fixture trees in tests.
/// Two things always come from the running kernel whatever the roots say:
/// interface addresses (sysinfo uses `getifaddrs`) and `statvfs` of mount
/// points, whose paths are taken from `mountinfo` as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// procfs mount point, default `/proc`.
    pub proc_root: PathBuf,
    /// sysfs mount point, default `/sys`.
    pub sys_root: PathBuf,
    /// `os-release(5)` file, default `/etc/os-release` (then
    /// `/usr/lib/os-release` when the default is missing).
    pub os_release_path: PathBuf,
    /// How often, in seconds, the lists of mounts, block devices, network
    /// interfaces (with their addresses, MAC, link state and speed), CPU
    /// model, frequency without cpufreq and temperature sensors are re-read.
    /// Counters are read on every sample regardless. Default 30; 0 re-reads
    /// on every sample.
    pub inventory_refresh_secs: u64,
}

impl SourceConfig {
    /// [`Self::inventory_refresh_secs`] as a duration.
    pub fn inventory_refresh(&self) -> Duration {
        Duration::from_secs(self.inventory_refresh_secs)
    }
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
            os_release_path: PathBuf::from(DEFAULT_OS_RELEASE),
            inventory_refresh_secs: 30,
        }
    }
}

pub(crate) const DEFAULT_OS_RELEASE: &str = "/etc/os-release";
pub(crate) const FALLBACK_OS_RELEASE: &str = "/usr/lib/os-release";
