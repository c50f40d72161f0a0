//! The container's LXC config file (`<lxcpath>/<name>/config`) and the
//! files homeserver keeps next to it.
//!
//! # What homeserver writes
//! After `lxc-create`, homeserver appends one **managed block** to the
//! config file, between the [`BLOCK_BEGIN`] and [`BLOCK_END`] comment lines,
//! and rewrites only that block later (the template's lines are kept). It
//! sits at the end so that its single-valued keys (`lxc.init.cmd`) win and
//! its list keys (`lxc.environment`, `lxc.mount.entry`, cgroup settings)
//! are applied after the template's.
//!
//! | Setting | cgroup v1 host | cgroup v2 host |
//! |---|---|---|
//! | memory | `lxc.cgroup.memory.limit_in_bytes = N` | `lxc.cgroup2.memory.max = N` |
//! | CPUs | `lxc.cgroup.cpu.cfs_period_us = 100000`, `lxc.cgroup.cpu.cfs_quota_us = cpus × 100000` | `lxc.cgroup2.cpu.max = "Q 100000"` |
//! | pids | `lxc.cgroup.pids.max = N` | `lxc.cgroup2.pids.max = N` |
//! | device | `lxc.cgroup.devices.allow = c MAJ:MIN rwm` | `lxc.cgroup2.devices.allow = c MAJ:MIN rwm` |
//!
//! and, for both: `lxc.environment = K=V` per variable; a device's
//! `lxc.mount.entry = /dev/x dev/x none bind,optional,create=file 0 0`;
//! `lxc.start.auto = 1` for `always`/`unless-stopped`; the console log
//! (`lxc.console.logfile`, `lxc.console.size = 1048576`,
//! `lxc.console.rotate = 1`); and for a command, `lxc.init.cmd =
//! /.homeserver-init` with a read-only bind mount of the wrapper script
//! [`INIT_SCRIPT`] from the container directory.
//!
//! The host is cgroup v2 when `<cgroup root>/cgroup.controllers` exists
//! (a hybrid host, v1 controllers plus `/sys/fs/cgroup/unified`, is v1):
//! LXC ignores `lxc.cgroup2.*` limits on a v1 host and the reverse.
//!
//! # Why a wrapper script for the command
//! LXC 5.0 splits `lxc.init.cmd` at spaces with no quoting, so an argument
//! with a space (`sh -c 'echo hi; sleep 60'`) cannot be written there; and
//! `lxc-start -d` gives init `/dev/null` as stdout/stderr, so its output
//! would never reach the console log. The wrapper (`/bin/sh` is needed in
//! the container) sends its output to `/dev/console` and `exec`s the
//! command with every argument shell-quoted.
//!
//! # `homeserver.json`
//! What LXC has no key for lives in [`META_FILE`] next to the config:
//! labels, the exact command, the restart policy (`on-failure` has no LXC
//! equivalent: `lxc.start.auto` only restarts at boot), the devices as
//! given, the template and the creation time. Containers created outside
//! homeserver have none; their settings are read from the config alone.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use homeserver_domain::{ConfigPatch, ContainerConfig, RestartPolicy};

use crate::error::LxcError;

/// First line of the managed block.
pub const BLOCK_BEGIN: &str = "# >>> homeserver managed settings (rewritten by homeserver; edits here are lost) >>>";
/// Last line of the managed block.
pub const BLOCK_END: &str = "# <<< homeserver managed settings <<<";
/// The metadata file in the container directory.
pub const META_FILE: &str = "homeserver.json";
/// The init wrapper script in the container directory.
pub const INIT_SCRIPT: &str = "homeserver-init";
/// Where the wrapper is mounted in the container (relative to its rootfs).
const INIT_IN_CONTAINER: &str = ".homeserver-init";
/// Console log size limit written to `lxc.console.size`.
pub(crate) const CONSOLE_LOG_SIZE: u64 = 1 << 20;
/// CFS period homeserver uses for CPU limits (100 ms).
pub(crate) const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup layout the host (and so LXC) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy (or hybrid) hierarchies: `lxc.cgroup.*` keys.
    V1,
    /// Unified hierarchy: `lxc.cgroup2.*` keys.
    V2,
}

impl CgroupVersion {
    /// v2 when `<root>/cgroup.controllers` exists, else v1. Blocking.
    pub fn detect(root: &Path) -> Self {
        if root.join("cgroup.controllers").exists() { Self::V2 } else { Self::V1 }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::V1 => "lxc.cgroup.",
            Self::V2 => "lxc.cgroup2.",
        }
    }
}

/// A parsed LXC config file: `key = value` lines in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LxcConfig {
    entries: Vec<(String, String)>,
}

impl LxcConfig {
    /// Parses config text; comments and lines without `=` are skipped.
    pub(crate) fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Self { entries }
    }

    /// The value of a single-valued key (the last one wins, as in LXC).
    pub(crate) fn last(&self, key: &str) -> Option<&str> {
        self.entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    /// The values of a list key; an empty value clears the list, as in LXC.
    pub(crate) fn list(&self, key: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for (k, v) in &self.entries {
            if k == key {
                if v.is_empty() {
                    out.clear();
                } else {
                    out.push(v.as_str());
                }
            }
        }
        out
    }

    /// Where the console log goes, if anywhere.
    pub(crate) fn console_logfile(&self) -> Option<PathBuf> {
        self.last("lxc.console.logfile").map(PathBuf::from)
    }

    /// The settings this config applies on a `version` host, completed by
    /// homeserver's metadata when there is some.
    pub(crate) fn container_config(&self, version: CgroupVersion, meta: Option<&Meta>) -> ContainerConfig {
        let p = version.prefix();
        let memory_limit_bytes = match version {
            CgroupVersion::V1 => self.last(&format!("{p}memory.limit_in_bytes")),
            CgroupVersion::V2 => self.last(&format!("{p}memory.max")),
        }
        .and_then(parse_limit);
        let cpu_limit = match version {
            CgroupVersion::V1 => {
                let quota = self.last(&format!("{p}cpu.cfs_quota_us")).and_then(|q| q.parse::<i64>().ok());
                let period = self
                    .last(&format!("{p}cpu.cfs_period_us"))
                    .and_then(|q| q.parse::<u64>().ok())
                    .unwrap_or(CPU_PERIOD_US);
                quota.filter(|q| *q > 0).map(|q| q as f64 / period.max(1) as f64)
            }
            CgroupVersion::V2 => self.last(&format!("{p}cpu.max")).and_then(parse_cpu_max),
        };
        let pids_limit = self.last(&format!("{p}pids.max")).and_then(parse_limit);
        let env = self
            .list("lxc.environment")
            .into_iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let command = match meta.and_then(|m| m.command.clone()) {
            Some(cmd) => Some(cmd),
            None => self
                .last("lxc.init.cmd")
                .filter(|c| *c != format!("/{INIT_IN_CONTAINER}"))
                .map(|c| c.split_whitespace().map(str::to_owned).collect()),
        };
        let restart_policy = match meta.and_then(|m| m.restart_policy.as_deref()).and_then(|r| r.parse().ok()) {
            Some(policy) => policy,
            None if self.last("lxc.start.auto") == Some("1") => RestartPolicy::Always,
            None => RestartPolicy::No,
        };
        let devices = match meta {
            Some(m) => m.devices.clone(),
            None => self
                .list("lxc.mount.entry")
                .into_iter()
                .filter_map(|e| {
                    let mut fields = e.split_whitespace();
                    let source = fields.next()?;
                    let options = fields.nth(2)?;
                    (source.starts_with("/dev/") && options.split(',').any(|o| o == "bind"))
                        .then(|| fstab_unescape(source))
                })
                .collect(),
        };
        ContainerConfig {
            cpu_limit,
            memory_limit_bytes,
            pids_limit,
            env,
            labels: meta.map(|m| m.labels.clone()).unwrap_or_default(),
            command,
            restart_policy,
            devices,
        }
    }
}

/// `N`, `N` with a K/M/G/T/P suffix (powers of 1024, as the kernel's
/// memparse reads them), or `max`/`-1` for no limit.
pub(crate) fn parse_limit(value: &str) -> Option<u64> {
    let v = value.trim().trim_matches('"');
    if v.eq_ignore_ascii_case("max") || v.starts_with('-') {
        return None;
    }
    let v = v.strip_suffix(['b', 'B']).unwrap_or(v);
    let (digits, shift) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                'P' => 50,
                _ => return None,
            };
            (&v[..i], shift)
        }
        _ => (v, 0),
    };
    let n = digits.trim().parse::<u64>().ok()?.checked_shl(shift)?;
    // cgroup v1 prints "no limit" as the page-rounded i64::MAX.
    (n < 1 << 62).then_some(n)
}

/// `"QUOTA PERIOD"` or `"max PERIOD"` of cgroup v2's `cpu.max`.
fn parse_cpu_max(value: &str) -> Option<f64> {
    let mut parts = value.trim().trim_matches('"').split_whitespace();
    let quota = parts.next()?.parse::<u64>().ok()?;
    let period = parts.next().map_or(Some(CPU_PERIOD_US), |p| p.parse::<u64>().ok())?;
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

/// CFS quota in µs for `cpus` CPUs per [`CPU_PERIOD_US`] (the kernel's floor is 1 ms).
pub(crate) fn cpu_quota_us(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1_000)
}

/// homeserver's own record of a container, in [`META_FILE`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Meta {
    /// Format version.
    #[serde(default)]
    pub(crate) version: u32,
    /// The template it was created from.
    #[serde(default)]
    pub(crate) template: Option<String>,
    /// The template's options.
    #[serde(default)]
    pub(crate) template_options: Vec<String>,
    /// Creation time, ms since the epoch.
    #[serde(default)]
    pub(crate) created_at_ms: Option<i64>,
    /// Labels.
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    /// The command exactly as given.
    #[serde(default)]
    pub(crate) command: Option<Vec<String>>,
    /// Restart policy wire name.
    #[serde(default)]
    pub(crate) restart_policy: Option<String>,
    /// Device paths as given.
    #[serde(default)]
    pub(crate) devices: Vec<String>,
}

impl Meta {
    /// Parses `homeserver.json`.
    pub(crate) fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Renders `homeserver.json`.
    pub(crate) fn to_json(&self) -> String {
        // Serializing plain strings and maps cannot fail; keep an empty object if it ever did.
        serde_json::to_string_pretty(self).unwrap_or_else(|_| String::from("{}")) + "\n"
    }
}

/// A host device node to pass through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceNode {
    /// Host path (`/dev/ttyUSB0`).
    pub(crate) path: String,
    /// `c` or `b`.
    pub(crate) kind: char,
    /// Major number.
    pub(crate) major: u64,
    /// Minor number.
    pub(crate) minor: u64,
}

impl DeviceNode {
    /// Stats `path` on the host. Blocking.
    pub(crate) fn stat(path: &str) -> Result<Self, String> {
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
        let meta = std::fs::metadata(path).map_err(|e| format!("device {path}: {e}"))?;
        let kind = if meta.file_type().is_char_device() {
            'c'
        } else if meta.file_type().is_block_device() {
            'b'
        } else {
            return Err(format!("device {path}: not a character or block device"));
        };
        let dev = meta.rdev();
        // glibc's gnu_dev_major/gnu_dev_minor.
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        Ok(Self { path: path.to_owned(), kind, major, minor })
    }
}

/// Everything the managed block is made from.
#[derive(Debug, Clone)]
pub(crate) struct ManagedSettings<'a> {
    /// Settings to apply.
    pub(crate) config: &'a ContainerConfig,
    /// Host cgroup layout.
    pub(crate) cgroup: CgroupVersion,
    /// Devices, already stat'ed.
    pub(crate) devices: &'a [DeviceNode],
    /// The container directory (`<lxcpath>/<name>`).
    pub(crate) container_dir: &'a Path,
    /// The console log file.
    pub(crate) console_log: &'a Path,
}

/// The managed block, markers included, ending with a newline.
pub(crate) fn render_block(s: &ManagedSettings<'_>) -> String {
    let p = s.cgroup.prefix();
    let mut lines = vec![BLOCK_BEGIN.to_owned()];
    let c = s.config;
    if let Some(mem) = c.memory_limit_bytes {
        match s.cgroup {
            CgroupVersion::V1 => lines.push(format!("{p}memory.limit_in_bytes = {mem}")),
            CgroupVersion::V2 => lines.push(format!("{p}memory.max = {mem}")),
        }
    }
    if let Some(cpus) = c.cpu_limit {
        let quota = cpu_quota_us(cpus);
        match s.cgroup {
            CgroupVersion::V1 => {
                lines.push(format!("{p}cpu.cfs_period_us = {CPU_PERIOD_US}"));
                lines.push(format!("{p}cpu.cfs_quota_us = {quota}"));
            }
            CgroupVersion::V2 => lines.push(format!("{p}cpu.max = {quota} {CPU_PERIOD_US}")),
        }
    }
    if let Some(pids) = c.pids_limit {
        lines.push(format!("{p}pids.max = {pids}"));
    }
    for (k, v) in &c.env {
        lines.push(format!("lxc.environment = {k}={v}"));
    }
    if matches!(c.restart_policy, RestartPolicy::Always | RestartPolicy::UnlessStopped) {
        lines.push("lxc.start.auto = 1".to_owned());
    }
    if c.command.is_some() {
        let script = s.container_dir.join(INIT_SCRIPT);
        lines.push(format!(
            "lxc.mount.entry = {} {INIT_IN_CONTAINER} none ro,bind,create=file 0 0",
            fstab_escape(&script.to_string_lossy())
        ));
        lines.push(format!("lxc.init.cmd = /{INIT_IN_CONTAINER}"));
    }
    for d in s.devices {
        lines.push(format!("{p}devices.allow = {} {}:{} rwm", d.kind, d.major, d.minor));
        let source = fstab_escape(&d.path);
        let target = fstab_escape(d.path.trim_start_matches('/'));
        lines.push(format!("lxc.mount.entry = {source} {target} none bind,optional,create=file 0 0"));
    }
    lines.push(format!("lxc.console.logfile = {}", s.console_log.display()));
    lines.push(format!("lxc.console.size = {CONSOLE_LOG_SIZE}"));
    lines.push("lxc.console.rotate = 1".to_owned());
    lines.push(BLOCK_END.to_owned());
    lines.join("\n") + "\n"
}

/// `existing` with its managed block (if any) replaced by `block` at the end.
pub(crate) fn with_managed_block(existing: &str, block: &str) -> String {
    let mut kept = Vec::new();
    let mut inside = false;
    for line in existing.lines() {
        match line.trim() {
            l if l == BLOCK_BEGIN => inside = true,
            l if l == BLOCK_END => inside = false,
            _ if inside => {}
            _ => kept.push(line),
        }
    }
    while kept.last().is_some_and(|l| l.trim().is_empty()) {
        kept.pop();
    }
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(block);
    out
}

/// The init wrapper: output to `console` (`/dev/console` in a container),
/// then `exec` the command.
pub(crate) fn render_init_script(command: &[String], console: &str) -> String {
    let quoted: Vec<String> = command.iter().map(|a| sh_quote(a)).collect();
    let console = sh_quote(console);
    format!(
        "#!/bin/sh\n\
         # Written by homeserver: the container's command (lxc.init.cmd cannot quote\n\
         # arguments), with its output on the console so lxc.console.logfile keeps it.\n\
         if [ -w {console} ]; then exec >{console} 2>&1; fi\n\
         exec {}\n",
        quoted.join(" ")
    )
}

/// Single-quotes `s` for `sh`.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Escapes a path for an fstab field (`lxc.mount.entry`).
fn fstab_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' ' => out.push_str(r"\040"),
            '\t' => out.push_str(r"\011"),
            '\n' => out.push_str(r"\012"),
            '\\' => out.push_str(r"\134"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`fstab_escape`].
fn fstab_unescape(s: &str) -> String {
    s.replace(r"\040", " ").replace(r"\011", "\t").replace(r"\012", "\n").replace(r"\134", "\\")
}

/// The config keys a patch replaces: every line setting them (the
/// template's too) goes, so the new value is the only one.
fn patched_keys(version: CgroupVersion, patch: &ConfigPatch) -> Vec<String> {
    let p = version.prefix();
    let mut keys = Vec::new();
    if patch.memory_limit_bytes.is_some() {
        keys.push(match version {
            CgroupVersion::V1 => format!("{p}memory.limit_in_bytes"),
            CgroupVersion::V2 => format!("{p}memory.max"),
        });
    }
    if patch.cpu_limit.is_some() {
        match version {
            CgroupVersion::V1 => {
                keys.push(format!("{p}cpu.cfs_period_us"));
                keys.push(format!("{p}cpu.cfs_quota_us"));
            }
            CgroupVersion::V2 => keys.push(format!("{p}cpu.max")),
        }
    }
    if patch.pids_limit.is_some() {
        keys.push(format!("{p}pids.max"));
    }
    if patch.restart_policy.is_some() {
        keys.push("lxc.start.auto".to_owned());
    }
    keys
}

/// The config lines that set what `patch` sets (none for a removed limit).
fn patched_lines(version: CgroupVersion, patch: &ConfigPatch) -> Vec<String> {
    let settings = ContainerConfig {
        cpu_limit: patch.cpu_limit.flatten(),
        memory_limit_bytes: patch.memory_limit_bytes.flatten(),
        pids_limit: patch.pids_limit.flatten(),
        restart_policy: patch.restart_policy.unwrap_or_default(),
        ..ContainerConfig::default()
    };
    let block = render_block(&ManagedSettings {
        config: &settings,
        cgroup: version,
        devices: &[],
        container_dir: Path::new("/"),
        console_log: Path::new("/"),
    });
    let keys = patched_keys(version, patch);
    block
        .lines()
        .filter(|l| l.split_once('=').is_some_and(|(k, _)| keys.iter().any(|key| key == k.trim())))
        .map(str::to_owned)
        .collect()
}

/// `existing` with the limits and restart policy `patch` changes replaced:
/// every line setting those keys goes (wherever it is), the new lines join
/// the managed block (made if there is none; the rest of the block stays).
pub(crate) fn with_patch(existing: &str, version: CgroupVersion, patch: &ConfigPatch) -> String {
    let keys = patched_keys(version, patch);
    if keys.is_empty() {
        return existing.to_owned();
    }
    let replaced = |line: &str| {
        let l = line.trim();
        !l.starts_with('#') && l.split_once('=').is_some_and(|(k, _)| keys.iter().any(|key| key == k.trim()))
    };
    let mut outside = Vec::new();
    let mut block = Vec::new();
    let mut inside = false;
    for line in existing.lines() {
        match line.trim() {
            l if l == BLOCK_BEGIN => inside = true,
            l if l == BLOCK_END => inside = false,
            _ if replaced(line) => {}
            _ if inside => block.push(line.to_owned()),
            _ => outside.push(line),
        }
    }
    block.extend(patched_lines(version, patch));
    let mut rendered = vec![BLOCK_BEGIN.to_owned()];
    rendered.extend(block);
    rendered.push(BLOCK_END.to_owned());
    with_managed_block(&outside.join("\n"), &(rendered.join("\n") + "\n"))
}

/// `(cgroup file, value)` pairs that apply `patch`'s limits to a running
/// container (`lxc-cgroup`); a removed limit is written as "no limit".
pub(crate) fn live_cgroup_values(version: CgroupVersion, patch: &ConfigPatch) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match version {
        CgroupVersion::V1 => {
            if let Some(mem) = patch.memory_limit_bytes {
                out.push(("memory.limit_in_bytes", mem.map_or_else(|| "-1".to_owned(), |m| m.to_string())));
            }
            if let Some(cpu) = patch.cpu_limit {
                out.push(("cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
                out.push(("cpu.cfs_quota_us", cpu.map_or_else(|| "-1".to_owned(), |c| cpu_quota_us(c).to_string())));
            }
        }
        CgroupVersion::V2 => {
            if let Some(mem) = patch.memory_limit_bytes {
                out.push(("memory.max", mem.map_or_else(|| "max".to_owned(), |m| m.to_string())));
            }
            if let Some(cpu) = patch.cpu_limit {
                let quota = cpu.map_or_else(|| "max".to_owned(), |c| cpu_quota_us(c).to_string());
                out.push(("cpu.max", format!("{quota} {CPU_PERIOD_US}")));
            }
        }
    }
    if let Some(pids) = patch.pids_limit {
        out.push(("pids.max", pids.map_or_else(|| "max".to_owned(), |p| p.to_string())));
    }
    out
}

/// Checks what LXC's line-based config cannot hold.
pub(crate) fn check_config_for_lxc(config: &ContainerConfig) -> Result<(), String> {
    for (k, v) in &config.env {
        if k.contains(['\n', '\r']) || v.contains(['\n', '\r']) {
            return Err(format!("env {k}: LXC config lines cannot hold a newline"));
        }
        if k.trim() != k || v.trim() != v {
            return Err(format!("env {k}: LXC config values lose leading and trailing whitespace"));
        }
    }
    for d in &config.devices {
        if d.contains(['\n', '\r']) {
            return Err(format!("device {d:?}: newline in path"));
        }
    }
    Ok(())
}

/// Writes `contents` to `path` atomically (temporary file, fsync, rename),
/// with `mode` permissions. Blocking.
pub(crate) fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<(), LxcError> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.homeserver-tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        LxcError::io(format!("writing {}", path.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_config() -> ContainerConfig {
        ContainerConfig {
            cpu_limit: Some(0.5),
            memory_limit_bytes: Some(64 << 20),
            pids_limit: Some(100),
            env: BTreeMap::from([("GREETING".into(), "hello world".into()), ("A".into(), "x=y".into())]),
            labels: BTreeMap::from([("team".into(), "infra".into())]),
            command: Some(vec!["sh".into(), "-c".into(), "echo 'hi'; sleep 60".into()]),
            restart_policy: RestartPolicy::UnlessStopped,
            devices: vec!["/dev/null".into()],
        }
    }

    fn meta_for(config: &ContainerConfig) -> Meta {
        Meta {
            version: 1,
            labels: config.labels.clone(),
            command: config.command.clone(),
            restart_policy: Some(config.restart_policy.as_str().into()),
            devices: config.devices.clone(),
            ..Meta::default()
        }
    }

    const TEMPLATE: &str = "# Template used to create this container: /usr/share/lxc/templates/lxc-busybox\n\
        lxc.net.0.type = empty\nlxc.rootfs.path = dir:/var/lib/lxc/t/rootfs\nlxc.signal.halt = SIGUSR1\n\
        lxc.mount.entry = /lib lib none ro,bind 0 0\n";

    fn written(cgroup: CgroupVersion) -> (String, ContainerConfig) {
        let config = sample_config();
        let devices = vec![DeviceNode::stat("/dev/null").unwrap()];
        let block = render_block(&ManagedSettings {
            config: &config,
            cgroup,
            devices: &devices,
            container_dir: Path::new("/var/lib/lxc/my box"),
            console_log: Path::new("/var/lib/lxc/my box/console.log"),
        });
        (with_managed_block(TEMPLATE, &block), config)
    }

    #[test]
    fn v1_keys_round_trip() {
        let root = tempfile::tempdir().unwrap();
        let version = CgroupVersion::detect(root.path());
        assert_eq!(version, CgroupVersion::V1);
        let (text, config) = written(version);
        for line in [
            "lxc.cgroup.memory.limit_in_bytes = 67108864",
            "lxc.cgroup.cpu.cfs_period_us = 100000",
            "lxc.cgroup.cpu.cfs_quota_us = 50000",
            "lxc.cgroup.pids.max = 100",
            "lxc.environment = GREETING=hello world",
            "lxc.environment = A=x=y",
            "lxc.start.auto = 1",
            "lxc.init.cmd = /.homeserver-init",
            r"lxc.mount.entry = /var/lib/lxc/my\040box/homeserver-init .homeserver-init none ro,bind,create=file 0 0",
            "lxc.cgroup.devices.allow = c 1:3 rwm",
            "lxc.mount.entry = /dev/null dev/null none bind,optional,create=file 0 0",
            "lxc.console.logfile = /var/lib/lxc/my box/console.log",
            "lxc.console.size = 1048576",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("cgroup2"), "{text}");
        assert!(text.starts_with(TEMPLATE), "template lines kept first:\n{text}");
        let parsed = LxcConfig::parse(&text);
        assert_eq!(parsed.container_config(version, Some(&meta_for(&config))), config);
        // Without homeserver.json: what the config alone says.
        let bare = parsed.container_config(version, None);
        assert_eq!(bare.memory_limit_bytes, Some(64 << 20));
        assert_eq!(bare.cpu_limit, Some(0.5));
        assert_eq!(bare.pids_limit, Some(100));
        assert_eq!(bare.env, config.env);
        assert_eq!(bare.restart_policy, RestartPolicy::Always);
        assert_eq!(bare.devices, ["/dev/null"]);
        assert_eq!(bare.command, None, "the wrapper is not the command");
        assert!(bare.labels.is_empty());
        // Read as if the host were v2: the v1 keys do not apply there.
        assert_eq!(parsed.container_config(CgroupVersion::V2, None).memory_limit_bytes, None);
    }

    #[test]
    fn v2_keys_round_trip() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        let version = CgroupVersion::detect(root.path());
        assert_eq!(version, CgroupVersion::V2);
        let (text, config) = written(version);
        for line in [
            "lxc.cgroup2.memory.max = 67108864",
            "lxc.cgroup2.cpu.max = 50000 100000",
            "lxc.cgroup2.pids.max = 100",
            "lxc.cgroup2.devices.allow = c 1:3 rwm",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("lxc.cgroup.memory"), "{text}");
        let parsed = LxcConfig::parse(&text);
        assert_eq!(parsed.container_config(version, Some(&meta_for(&config))), config);
    }

    #[test]
    fn rewriting_replaces_only_the_managed_block() {
        let (first, _) = written(CgroupVersion::V1);
        let smaller = ContainerConfig { memory_limit_bytes: Some(32 << 20), ..ContainerConfig::default() };
        let block = render_block(&ManagedSettings {
            config: &smaller,
            cgroup: CgroupVersion::V1,
            devices: &[],
            container_dir: Path::new("/c"),
            console_log: Path::new("/c/console.log"),
        });
        let second = with_managed_block(&first, &block);
        assert_eq!(second.matches(BLOCK_BEGIN).count(), 1);
        assert!(second.starts_with(TEMPLATE));
        let parsed = LxcConfig::parse(&second);
        let cfg = parsed.container_config(CgroupVersion::V1, None);
        assert_eq!(cfg.memory_limit_bytes, Some(32 << 20));
        assert_eq!(cfg.cpu_limit, None);
        assert!(cfg.env.is_empty());
        assert_eq!(cfg.command, None);
        assert_eq!(with_managed_block("", &block), block);
    }

    #[test]
    fn foreign_configs_are_read_as_lxc_reads_them() {
        let text = "lxc.cgroup.memory.limit_in_bytes = 32M\nlxc.cgroup.memory.limit_in_bytes = 64M\n\
            lxc.environment = OLD=1\nlxc.environment =\nlxc.environment = NEW=2\nlxc.environment = PASSTHROUGH\n\
            lxc.init.cmd = /sbin/init --verbose\nlxc.cgroup.cpu.cfs_quota_us = -1\nlxc.cgroup.pids.max = max\n\
            # lxc.cgroup.pids.max = 5\n";
        let cfg = LxcConfig::parse(text).container_config(CgroupVersion::V1, None);
        assert_eq!(cfg.memory_limit_bytes, Some(64 << 20));
        assert_eq!(cfg.env, BTreeMap::from([("NEW".into(), "2".into())]));
        assert_eq!(cfg.command, Some(vec!["/sbin/init".into(), "--verbose".into()]));
        assert_eq!(cfg.cpu_limit, None);
        assert_eq!(cfg.pids_limit, None);
        assert_eq!(cfg.restart_policy, RestartPolicy::No);
        let v2 = LxcConfig::parse("lxc.cgroup2.cpu.max = max 100000\nlxc.cgroup2.memory.max = 1G\n")
            .container_config(CgroupVersion::V2, None);
        assert_eq!((v2.cpu_limit, v2.memory_limit_bytes), (None, Some(1 << 30)));
        let v2 = LxcConfig::parse("lxc.cgroup2.cpu.max = 150000 100000\n").container_config(CgroupVersion::V2, None);
        assert_eq!(v2.cpu_limit, Some(1.5));
    }

    #[test]
    fn limits_parse_like_the_kernel() {
        assert_eq!(parse_limit("67108864"), Some(67108864));
        assert_eq!(parse_limit("64M"), Some(64 << 20));
        assert_eq!(parse_limit("64m"), Some(64 << 20));
        assert_eq!(parse_limit("2G"), Some(2 << 30));
        assert_eq!(parse_limit("512KB"), Some(512 << 10));
        assert_eq!(parse_limit("max"), None);
        assert_eq!(parse_limit("-1"), None);
        assert_eq!(parse_limit("9223372036854771712"), None);
        assert_eq!(parse_limit("12X"), None);
        assert_eq!(cpu_quota_us(0.5), 50_000);
        assert_eq!(cpu_quota_us(2.0), 200_000);
        assert_eq!(cpu_quota_us(0.001), 1_000);
    }

    #[test]
    fn init_script_quotes_every_argument() {
        let script = render_init_script(
            &["sh".into(), "-c".into(), "echo 'hi' $HOME; exit 3".into(), String::new()],
            "/dev/console",
        );
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("if [ -w '/dev/console' ]; then exec >'/dev/console' 2>&1; fi\n"), "{script}");
        assert!(script.ends_with("exec 'sh' '-c' 'echo '\\''hi'\\'' $HOME; exit 3' ''\n"), "{script}");
    }

    #[test]
    fn init_script_runs_the_command_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("init");
        let cmd = vec!["printf".to_owned(), "%s|".to_owned(), "a b".to_owned(), "it's".to_owned(), "$X".to_owned()];
        let console = dir.path().join("console");
        std::fs::write(&console, "").unwrap();
        write_atomic(&script, &render_init_script(&cmd, &console.to_string_lossy()), 0o755).unwrap();
        let out = std::process::Command::new(&script).output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "the output went to the console");
        assert_eq!(std::fs::read_to_string(&console).unwrap(), "a b|it's|$X|");
    }

    #[test]
    fn meta_json_round_trips_and_tolerates_missing_fields() {
        let meta = meta_for(&sample_config());
        assert_eq!(Meta::from_json(&meta.to_json()).unwrap(), meta);
        assert_eq!(Meta::from_json("{}").unwrap(), Meta::default());
        assert!(Meta::from_json("not json").is_err());
    }

    #[test]
    fn lxc_line_limits_are_checked() {
        let mut cfg = ContainerConfig::default();
        assert!(check_config_for_lxc(&cfg).is_ok());
        cfg.env.insert("A".into(), "line\nbreak".into());
        assert!(check_config_for_lxc(&cfg).unwrap_err().contains("newline"));
        cfg.env = BTreeMap::from([("A".into(), " padded".into())]);
        assert!(check_config_for_lxc(&cfg).unwrap_err().contains("whitespace"));
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        write_atomic(&path, "one\n", 0o644).unwrap();
        write_atomic(&path, "two\n", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_atomic(&dir.path().join("missing/config"), "x", 0o644).is_err());
    }

    #[test]
    fn device_numbers_come_from_the_host() {
        let null = DeviceNode::stat("/dev/null").unwrap();
        assert_eq!((null.kind, null.major, null.minor), ('c', 1, 3));
        assert!(DeviceNode::stat("/etc/hostname").is_err());
        assert!(DeviceNode::stat("/dev/does-not-exist").is_err());
    }

    #[test]
    fn a_patch_replaces_its_keys_everywhere_and_keeps_the_rest() {
        let existing = "lxc.uts.name = web\nlxc.cgroup.memory.limit_in_bytes = 1G\n# lxc.cgroup.pids.max = 5\n\n\
            # >>> homeserver managed settings (rewritten by homeserver; edits here are lost) >>>\n\
            lxc.cgroup.memory.limit_in_bytes = 67108864\nlxc.cgroup.pids.max = 50\nlxc.environment = A=b\n\
            lxc.start.auto = 1\nlxc.console.logfile = /var/log/x.log\n\
            # <<< homeserver managed settings <<<\n";
        let patch = ConfigPatch {
            memory_limit_bytes: Some(Some(128 << 20)),
            cpu_limit: Some(Some(1.5)),
            pids_limit: Some(None),
            restart_policy: Some(RestartPolicy::No),
            labels: None,
        };
        let out = with_patch(existing, CgroupVersion::V1, &patch);
        let cfg = LxcConfig::parse(&out);
        assert_eq!(cfg.list("lxc.cgroup.memory.limit_in_bytes"), ["134217728"], "{out}");
        assert_eq!(cfg.last("lxc.cgroup.cpu.cfs_quota_us"), Some("150000"));
        assert_eq!(cfg.last("lxc.cgroup.cpu.cfs_period_us"), Some("100000"));
        assert_eq!(cfg.last("lxc.cgroup.pids.max"), None, "a removed limit has no line");
        assert_eq!(cfg.last("lxc.start.auto"), None);
        assert_eq!(cfg.last("lxc.environment"), Some("A=b"));
        assert_eq!(cfg.console_logfile(), Some(PathBuf::from("/var/log/x.log")));
        assert!(out.starts_with("lxc.uts.name = web\n# lxc.cgroup.pids.max = 5\n"), "comments stay: {out}");
        assert_eq!(out.matches(BLOCK_BEGIN).count(), 1);
        let read = cfg.container_config(CgroupVersion::V1, None);
        assert_eq!((read.memory_limit_bytes, read.cpu_limit, read.pids_limit), (Some(128 << 20), Some(1.5), None));

        // No block yet (a container made outside homeserver): one is added with just the new lines.
        let bare = with_patch("lxc.uts.name = x\n", CgroupVersion::V2, &patch);
        assert!(
            bare.ends_with(&format!(
                "{BLOCK_BEGIN}\nlxc.cgroup2.memory.max = 134217728\nlxc.cgroup2.cpu.max = 150000 100000\n{BLOCK_END}\n"
            )),
            "{bare}"
        );
        assert_eq!(with_patch("a = b\n", CgroupVersion::V1, &ConfigPatch::default()), "a = b\n");
    }

    #[test]
    fn live_values_use_the_hosts_cgroup_files() {
        let patch = ConfigPatch {
            memory_limit_bytes: Some(None),
            cpu_limit: Some(Some(0.5)),
            pids_limit: Some(Some(20)),
            ..Default::default()
        };
        let v1: Vec<_> =
            live_cgroup_values(CgroupVersion::V1, &patch).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            v1,
            ["memory.limit_in_bytes=-1", "cpu.cfs_period_us=100000", "cpu.cfs_quota_us=50000", "pids.max=20"]
        );
        let v2: Vec<_> =
            live_cgroup_values(CgroupVersion::V2, &patch).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(v2, ["memory.max=max", "cpu.max=50000 100000", "pids.max=20"]);
    }
}
