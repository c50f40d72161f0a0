//! Static facts about the host ([`HostInfo`]), read fresh on each call.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use homeserver_domain::{HostInfo, UnixMillis};

use crate::config::{DEFAULT_OS_RELEASE, FALLBACK_OS_RELEASE, SourceConfig};
use crate::error::ReadError;
use crate::inventory;
use crate::parse;
use crate::reader::read_trimmed;

/// Reads the host's identity: uname, os-release, `/proc` and DMI.
pub(crate) fn read_host_info(config: &SourceConfig) -> Result<HostInfo, ReadError> {
    let proc = &config.proc_root;
    let uname = rustix::system::uname();

    let stat = read_required(&proc.join("stat"))?;
    let meminfo_path = proc.join("meminfo");
    let memory = parse::parse_meminfo(&read_required(&meminfo_path)?)
        .ok_or_else(|| ReadError::parse(&meminfo_path, "no MemTotal"))?;
    let uptime_path = proc.join("uptime");
    let uptime = parse::parse_uptime(&read_required(&uptime_path)?)
        .ok_or_else(|| ReadError::parse(&uptime_path, "expected seconds since boot"))?;
    let boot_time = match parse::parse_boot_time(&stat) {
        Some(secs) => UnixMillis(secs.saturating_mul(1000)),
        None => {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            UnixMillis(now_ms).add_millis(-((uptime * 1000.0) as i64))
        }
    };

    let os = read_os_release(config);
    let cpu = inventory::read_cpu_identity(config);
    let dmi = config.sys_root.join("class/dmi/id");
    Ok(HostInfo {
        hostname: uname.nodename().to_string_lossy().into_owned(),
        os_family: "Linux".to_owned(),
        os_name: os.name.unwrap_or_else(|| "Linux".to_owned()),
        os_version: os.version.unwrap_or_default(),
        kernel_version: read_trimmed(&proc.join("sys/kernel/osrelease"))
            .unwrap_or_else(|| uname.release().to_string_lossy().into_owned()),
        architecture: uname.machine().to_string_lossy().into_owned(),
        cpu_model: cpu.model,
        logical_cores: parse::count_stat_cores(&stat),
        physical_cores: cpu.physical_cores,
        memory_total_bytes: memory.total,
        boot_time,
        uptime_secs: uptime as u64,
        system_manufacturer: read_trimmed(&dmi.join("sys_vendor")),
        system_model: read_trimmed(&dmi.join("product_name")),
    })
}

fn read_required(path: &Path) -> Result<String, ReadError> {
    std::fs::read_to_string(path).map_err(|e| ReadError::io(path, e))
}

fn read_os_release(config: &SourceConfig) -> parse::OsRelease {
    let text = std::fs::read_to_string(&config.os_release_path).or_else(|e| {
        if config.os_release_path == Path::new(DEFAULT_OS_RELEASE) {
            std::fs::read_to_string(FALLBACK_OS_RELEASE)
        } else {
            Err(e)
        }
    });
    match text {
        Ok(text) => parse::parse_os_release(&text),
        Err(e) => {
            tracing::warn!(path = %config.os_release_path.display(), error = %e, "cannot read os-release");
            parse::OsRelease::default()
        }
    }
}
