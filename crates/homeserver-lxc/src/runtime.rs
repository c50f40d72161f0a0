//! [`LxcRuntime`]: the [`ContainerRuntime`] port on top of the `lxc-*` tools.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use homeserver_domain::{
    ConfigPatch, ContainerConfig, ContainerRuntime, ContainerState, ContainerStats, CreateSpec, ExecRequest,
    ExecResult, FieldError, LogFollower, LogLine, LogQuery, LogStream, RuntimeContainer, RuntimeError, RuntimeKind,
    UnixMillis,
};
use tokio::sync::OnceCell;

use crate::command::{Invocation, Tools, tail_chars};
use crate::config::{self, CgroupVersion, DeviceNode, LxcConfig, ManagedSettings, Meta};
use crate::error::{LxcError, join_error};
use crate::exec::run_exec;
use crate::logs::{ConsoleFollower, MAX_LOG_WINDOW, read_tail, tail_for_follow};
use crate::parse::{self, Info};

/// Where `lxc-start` writes its errors, in the container directory.
const START_LOG: &str = "homeserver-start.log";

/// How to reach LXC. Construction never fails; see [`LxcRuntime::new`].
#[derive(Debug, Clone)]
pub struct LxcOptions {
    /// Where containers live; `None` asks `lxc-config lxc.lxcpath` (once, on first use).
    pub lxcpath: Option<PathBuf>,
    /// Passed as `-f` to `lxc-create` (network and other defaults).
    pub default_config: Option<PathBuf>,
    /// Longest a tool may run before it is killed, on top of a stop's own timeout.
    pub command_timeout: Duration,
    /// Console logs go to `<log_dir>/<name>/console.log`; `None`: `<lxcpath>/<name>/console.log`.
    pub log_dir: Option<PathBuf>,
    /// Longest `lxc-create` (the template) may run.
    pub create_timeout: Duration,
    /// cgroup mount point, to choose `lxc.cgroup.*` or `lxc.cgroup2.*` keys.
    pub cgroup_root: PathBuf,
    /// Where the `lxc-<template>` scripts are.
    pub templates_dir: PathBuf,
    /// Directory holding the `lxc-*` tools; `None`: look them up in `PATH`.
    pub bin_dir: Option<PathBuf>,
}

impl Default for LxcOptions {
    fn default() -> Self {
        Self {
            lxcpath: None,
            default_config: None,
            command_timeout: Duration::from_secs(30),
            log_dir: None,
            create_timeout: Duration::from_secs(600),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            templates_dir: PathBuf::from("/usr/share/lxc/templates"),
            bin_dir: None,
        }
    }
}

/// LXC containers driven through the `lxc-*` command-line tools.
#[derive(Debug)]
pub struct LxcRuntime {
    opts: LxcOptions,
    tools: Tools,
    lxcpath: OnceCell<PathBuf>,
    stats: crate::stats::StatsState,
    /// When `lxc-ls` last listed successfully (see [`LxcRuntime::list`]).
    listed_ok: std::sync::Mutex<Option<Instant>>,
}

/// How long a successful `lxc-ls` vouches for the tools while the store
/// holds no container (lists then start no process).
const TOOLS_VOUCHED: Duration = Duration::from_secs(30);

impl LxcRuntime {
    /// A runtime with these options. Nothing is checked here: when LXC is
    /// missing every call returns [`RuntimeError::Unavailable`], and works
    /// once it is installed.
    pub fn new(opts: LxcOptions) -> Self {
        let tools = Tools::new(opts.bin_dir.clone());
        let lxcpath = match &opts.lxcpath {
            Some(p) => OnceCell::new_with(Some(p.clone())),
            None => OnceCell::new(),
        };
        Self {
            opts,
            tools,
            lxcpath,
            stats: crate::stats::StatsState::default(),
            listed_ok: std::sync::Mutex::new(None),
        }
    }

    /// The options it was built with.
    pub fn options(&self) -> &LxcOptions {
        &self.opts
    }

    /// The container directory root, asking `lxc-config` the first time.
    pub async fn lxcpath(&self) -> Result<PathBuf, RuntimeError> {
        self.lxcpath
            .get_or_try_init(|| async {
                let out = self
                    .tools
                    .run_ok(&Invocation::new("lxc-config").arg("lxc.lxcpath"), self.opts.command_timeout)
                    .await?;
                let path = out.stdout.trim();
                if path.is_empty() {
                    return Err(LxcError::Unexpected(format!("`{}` printed no path", out.command)).into());
                }
                tracing::debug!(lxcpath = path, "resolved lxcpath");
                Ok(PathBuf::from(path))
            })
            .await
            .cloned()
    }

    /// The host's cgroup layout as LXC sees it.
    pub async fn cgroup_version(&self) -> CgroupVersion {
        let root = self.opts.cgroup_root.clone();
        tokio::task::spawn_blocking(move || CgroupVersion::detect(&root)).await.unwrap_or(CgroupVersion::V1)
    }

    /// `tool -P <lxcpath> -n <name>`.
    fn on(&self, tool: &'static str, lxcpath: &Path, name: &str) -> Invocation {
        Invocation::new(tool).arg("-P").arg(lxcpath).arg("-n").arg(name)
    }

    /// The lxcpath, checked to be a directory. LXC has no daemon: its
    /// containers are the folders there, so a store that is missing (a
    /// volume not mounted, a path moved away) makes LXC unavailable, never
    /// an empty list (which would make homeserver forget its records).
    async fn store(&self) -> Result<PathBuf, RuntimeError> {
        let lxcpath = self.lxcpath().await?;
        match tokio::fs::metadata(&lxcpath).await {
            Ok(m) if m.is_dir() => Ok(lxcpath),
            Ok(_) => Err(unavailable(format!("lxcpath {} is not a directory", lxcpath.display()))),
            Err(e) => Err(unavailable(format!("lxcpath {} is not readable: {e}", lxcpath.display()))),
        }
    }

    /// The directory of an existing container; [`RuntimeError::NotFound`]
    /// when there is none, unless the whole store is gone (`Unavailable`).
    async fn existing(&self, runtime_id: &str) -> Result<(PathBuf, PathBuf), RuntimeError> {
        let name = check_name(runtime_id)?;
        let lxcpath = self.lxcpath().await?;
        let dir = lxcpath.join(name);
        match tokio::fs::try_exists(dir.join("config")).await {
            Ok(true) => Ok((lxcpath, dir)),
            Ok(false) => {
                self.store().await?;
                Err(RuntimeError::NotFound)
            }
            Err(e) => Err(LxcError::io(format!("checking {}", dir.display()), e).into()),
        }
    }

    /// `lxc-info -s -p -H`.
    async fn info(&self, lxcpath: &Path, name: &str) -> Result<Info, RuntimeError> {
        let inv = self.on("lxc-info", lxcpath, name).args(["-s", "-p", "-H"]);
        let out = self.tools.run(&inv, self.opts.command_timeout).await?;
        if !out.success() {
            if out.stderr.contains("doesn't exist") || out.stdout.contains("doesn't exist") {
                return Err(RuntimeError::NotFound);
            }
            return Err(out.failure().into());
        }
        Ok(parse::parse_info(&out.stdout)?)
    }

    async fn state(&self, lxcpath: &Path, name: &str) -> Result<ContainerState, RuntimeError> {
        Ok(parse::map_state(&self.info(lxcpath, name).await?.state))
    }

    /// Reads config, metadata and times of one container off the runtime.
    async fn load(&self, dir: PathBuf, name: String, info: Info) -> Result<RuntimeContainer, RuntimeError> {
        let version = self.cgroup_version().await;
        tokio::task::spawn_blocking(move || load_container(&dir, name, &info, version))
            .await
            .map_err(|e| join_error("reading the container config", e))?
    }

    /// Best-effort `lxc-destroy -f` after a failed create.
    async fn destroy_quietly(&self, lxcpath: &Path, name: &str) {
        let inv = self.on("lxc-destroy", lxcpath, name).arg("-f");
        match self.tools.run(&inv, self.opts.command_timeout).await {
            Ok(out) if out.success() => tracing::info!(name, "removed the half-created container"),
            Ok(out) => tracing::warn!(name, error = %out.failure(), "could not remove the half-created container"),
            Err(e) => tracing::warn!(name, error = %e, "could not remove the half-created container"),
        }
    }

    /// The console log path for a new container.
    fn console_log_path(&self, container_dir: &Path, name: &str) -> PathBuf {
        match &self.opts.log_dir {
            Some(dir) => dir.join(name).join("console.log"),
            None => container_dir.join("console.log"),
        }
    }

    /// State and init pid of an existing container, for stats.
    pub(crate) async fn state_and_pid(&self, runtime_id: &str) -> Result<(ContainerState, Option<u32>), RuntimeError> {
        let (lxcpath, _) = self.existing(runtime_id).await?;
        let info = self.info(&lxcpath, runtime_id).await?;
        Ok((parse::map_state(&info.state), info.pid))
    }

    /// The settings of an existing container as its config file says, for stats.
    pub(crate) async fn inspect_config(&self, runtime_id: &str) -> Result<ContainerConfig, RuntimeError> {
        let (_, dir) = self.existing(runtime_id).await?;
        let info = Info { state: String::new(), pid: None };
        Ok(self.load(dir, runtime_id.to_owned(), info).await?.config)
    }

    /// The stats bookkeeping.
    pub(crate) fn stats_state(&self) -> &crate::stats::StatsState {
        &self.stats
    }
}

/// `Unavailable` for LXC.
fn unavailable(reason: String) -> RuntimeError {
    RuntimeError::Unavailable { runtime: RuntimeKind::Lxc, reason }
}

/// A runtime id is an LXC name: it must stay one path component.
fn check_name(runtime_id: &str) -> Result<&str, RuntimeError> {
    let bad = runtime_id.is_empty()
        || runtime_id == "."
        || runtime_id == ".."
        || runtime_id.len() > 255
        || runtime_id.contains(['/', '\0', '\n']);
    if bad { Err(RuntimeError::NotFound) } else { Ok(runtime_id) }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Builds a [`RuntimeContainer`] from the files in `dir`. Blocking.
fn load_container(
    dir: &Path,
    name: String,
    info: &Info,
    version: CgroupVersion,
) -> Result<RuntimeContainer, RuntimeError> {
    let config_path = dir.join("config");
    let text = match std::fs::read_to_string(&config_path) {
        Ok(t) => t,
        // Destroyed since it was listed: show it with what we know.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(LxcError::io(format!("reading {}", config_path.display()), e).into()),
    };
    let meta = read_meta(dir);
    let config = LxcConfig::parse(&text).container_config(version, meta.as_ref());
    let state = parse::map_state(&info.state);
    let created_at = meta.as_ref().and_then(|m| m.created_at_ms).or_else(|| {
        let t = std::fs::metadata(dir).and_then(|m| m.created()).ok()?;
        Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64)
    });
    let started_at = info.pid.filter(|_| state != ContainerState::Stopped).and_then(process_start_ms);
    Ok(RuntimeContainer {
        runtime_id: name.clone(),
        name,
        image: None,
        state,
        config,
        created_at: created_at.map(UnixMillis),
        started_at: started_at.map(UnixMillis),
    })
}

/// `homeserver.json`, if there is a readable one. Blocking.
fn read_meta(dir: &Path) -> Option<Meta> {
    let path = dir.join(config::META_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    match Meta::from_json(&text) {
        Ok(meta) => Some(meta),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable homeserver metadata");
            None
        }
    }
}

/// When process `pid` started (ms since the epoch), from `/proc`. Blocking.
fn process_start_ms(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime, clock ticks after boot); fields 3.. follow the `)` of the command name.
    let ticks: i64 = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()?;
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // USER_HZ is 100 on every Linux architecture homeserver runs on.
    Some(btime * 1000 + ticks * 10)
}

/// Writes homeserver.json, the init wrapper and the managed config block. Blocking.
fn write_container_files(
    dir: &Path,
    meta: &Meta,
    settings: &ManagedSettings<'_>,
    command: Option<&[String]>,
) -> Result<(), LxcError> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(parent) = settings.console_log.parent() {
        std::fs::create_dir_all(parent).map_err(|e| LxcError::io(format!("creating {}", parent.display()), e))?;
    }
    config::write_atomic(&dir.join(config::META_FILE), &meta.to_json(), 0o644)?;
    if let Some(cmd) = command {
        config::write_atomic(&dir.join(config::INIT_SCRIPT), &config::render_init_script(cmd, "/dev/console"), 0o755)?;
    }
    let path = dir.join("config");
    let old = std::fs::read_to_string(&path).map_err(|e| LxcError::io(format!("reading {}", path.display()), e))?;
    let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o640);
    let new = config::with_managed_block(&old, &config::render_block(settings));
    config::write_atomic(&path, &new, mode)
}

/// Writes a patch to the config file and `homeserver.json`. Blocking.
fn write_patch(dir: &Path, version: CgroupVersion, patch: &ConfigPatch) -> Result<(), LxcError> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("config");
    let old = std::fs::read_to_string(&path).map_err(|e| LxcError::io(format!("reading {}", path.display()), e))?;
    let new = config::with_patch(&old, version, patch);
    if new != old {
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o640);
        config::write_atomic(&path, &new, mode)?;
    }
    if patch.labels.is_some() || patch.restart_policy.is_some() {
        let meta = read_meta(dir);
        // A container made outside homeserver gets a metadata file that
        // keeps what its config says (command and devices read from it).
        let current = LxcConfig::parse(&old).container_config(version, meta.as_ref());
        let mut meta = meta.unwrap_or_else(|| Meta {
            version: 1,
            restart_policy: Some(current.restart_policy.as_str().to_owned()),
            devices: current.devices.clone(),
            labels: current.labels.clone(),
            ..Meta::default()
        });
        if let Some(labels) = &patch.labels {
            meta.labels = labels.clone();
        }
        if let Some(policy) = patch.restart_policy {
            meta.restart_policy = Some(policy.as_str().to_owned());
        }
        config::write_atomic(&dir.join(config::META_FILE), &meta.to_json(), 0o644)?;
    }
    Ok(())
}

/// Before a start: the console log's directory exists and the start log is empty. Blocking.
fn prepare_start(dir: &Path) -> Result<(), LxcError> {
    let text = std::fs::read_to_string(dir.join("config")).unwrap_or_default();
    if let Some(parent) = LxcConfig::parse(&text).console_logfile().as_deref().and_then(Path::parent) {
        std::fs::create_dir_all(parent).map_err(|e| LxcError::io(format!("creating {}", parent.display()), e))?;
    }
    let log = dir.join(START_LOG);
    std::fs::write(&log, b"").map_err(|e| LxcError::io(format!("truncating {}", log.display()), e))
}

/// The `ERROR` lines `lxc-start` logged, for an error message. Blocking.
fn start_errors(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join(START_LOG)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    tail_chars(&lines.join("\n"), 2_000)
}

/// Whether `lxcpath` holds a container: a folder with a `config` file,
/// which is what `lxc-ls` lists.
fn any_container(lxcpath: &Path) -> std::io::Result<bool> {
    for entry in std::fs::read_dir(lxcpath)? {
        if entry?.path().join("config").is_file() {
            return Ok(true);
        }
    }
    Ok(false)
}

#[async_trait]
impl ContainerRuntime for LxcRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Lxc
    }

    #[tracing::instrument(level = "debug", skip(self), fields(runtime = "lxc"))]
    async fn ping(&self) -> Result<(), RuntimeError> {
        let version = Invocation::new("lxc-ls").arg("--version");
        let out = self.tools.run(&version, self.opts.command_timeout).await?;
        if !out.success() {
            return Err(unavailable(out.failure().to_string()));
        }
        let lxcpath = self.store().await?;
        match tokio::fs::read_dir(&lxcpath).await {
            Ok(_) => Ok(()),
            Err(e) => Err(unavailable(format!("lxcpath {} is not readable: {e}", lxcpath.display()))),
        }
    }

    #[tracing::instrument(level = "debug", skip(self), fields(runtime = "lxc"))]
    async fn list(&self) -> Result<Vec<RuntimeContainer>, RuntimeError> {
        let lxcpath = self.store().await?;
        // Listed every sampling interval: with no container defined there
        // is nothing for `lxc-ls` to say, and no need to start a process,
        // as long as it ran well lately and is still there to start (a
        // broken install is still found: at once by `ping`, by the next
        // list within `TOOLS_VOUCHED`).
        let vouched = self
            .listed_ok
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < TOOLS_VOUCHED);
        if vouched {
            let (dir, tools) = (lxcpath.clone(), self.tools.clone());
            let none = tokio::task::spawn_blocking(move || {
                matches!(any_container(&dir), Ok(false)) && tools.installed("lxc-ls")
            })
            .await
            .map_err(|e| join_error("looking into the lxcpath", e))?;
            if none {
                return Ok(Vec::new());
            }
        }
        let inv = Invocation::new("lxc-ls").arg("-P").arg(&lxcpath).args(["-f", "-F", "NAME,STATE,PID"]);
        let out = self.tools.run(&inv, self.opts.command_timeout).await?;
        // No list, no LXC: a failing lxc-ls is the engine being unavailable.
        if !out.success() {
            return Err(unavailable(out.failure().to_string()));
        }
        let entries = parse::parse_ls_fancy(&out.stdout)?;
        *self.listed_ok.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        let version = self.cgroup_version().await;
        tokio::task::spawn_blocking(move || {
            entries
                .into_iter()
                .filter(|e| check_name(&e.name).is_ok())
                .map(|e| {
                    let info = Info { state: e.state, pid: e.pid };
                    load_container(&lxcpath.join(&e.name), e.name, &info, version)
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| join_error("reading container configs", e))?
    }

    #[tracing::instrument(level = "debug", skip(self), fields(runtime = "lxc"))]
    async fn inspect(&self, runtime_id: &str) -> Result<RuntimeContainer, RuntimeError> {
        let (lxcpath, dir) = self.existing(runtime_id).await?;
        let info = self.info(&lxcpath, runtime_id).await?;
        self.load(dir, runtime_id.to_owned(), info).await
    }

    #[tracing::instrument(level = "debug", skip(self, spec), fields(runtime = "lxc", name = %spec.name, template = %spec.source))]
    async fn create(&self, spec: &CreateSpec) -> Result<String, RuntimeError> {
        let name = spec.name.as_str();
        let template = spec.source.as_str();
        if template.is_empty() || template.contains(['/', '\0']) || template.trim() != template {
            return Err(RuntimeError::SourceNotFound(spec.source.clone()));
        }
        let template_path = self.opts.templates_dir.join(format!("lxc-{template}"));
        if !tokio::fs::try_exists(&template_path).await.unwrap_or(false) {
            return Err(RuntimeError::SourceNotFound(template.to_owned()));
        }
        config::check_config_for_lxc(&spec.config).map_err(RuntimeError::Rejected)?;
        let paths = spec.config.devices.clone();
        let devices = tokio::task::spawn_blocking(move || {
            paths.iter().map(|p| DeviceNode::stat(p)).collect::<Result<Vec<_>, String>>()
        })
        .await
        .map_err(|e| join_error("checking devices", e))?
        .map_err(RuntimeError::Rejected)?;

        // Never let lxc-create make a store where a missing one should be.
        let lxcpath = self.store().await?;
        let dir = lxcpath.join(name);
        if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
            return Err(RuntimeError::NameTaken);
        }
        let mut inv = self.on("lxc-create", &lxcpath, name).arg("-t").arg(template);
        if let Some(cfg) = &self.opts.default_config {
            inv = inv.arg("-f").arg(cfg);
        }
        if !spec.template_options.is_empty() {
            inv = inv.arg("--").args(&spec.template_options);
        }
        let out = match self.tools.run(&inv, self.opts.create_timeout).await {
            Ok(out) => out,
            Err(e @ RuntimeError::Timeout(_)) => {
                self.destroy_quietly(&lxcpath, name).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if !out.success() {
            if out.stderr.contains("already exists") {
                return Err(RuntimeError::NameTaken);
            }
            return Err(out.failure().into());
        }

        let version = self.cgroup_version().await;
        let console_log = self.console_log_path(&dir, name);
        let config = spec.config.clone();
        let meta = Meta {
            version: 1,
            template: Some(template.to_owned()),
            template_options: spec.template_options.clone(),
            created_at_ms: Some(now_ms()),
            labels: config.labels.clone(),
            command: config.command.clone(),
            restart_policy: Some(config.restart_policy.as_str().to_owned()),
            devices: config.devices.clone(),
        };
        let container_dir = dir.clone();
        let written = tokio::task::spawn_blocking(move || {
            let settings = ManagedSettings {
                config: &config,
                cgroup: version,
                devices: &devices,
                container_dir: &container_dir,
                console_log: &console_log,
            };
            write_container_files(&container_dir, &meta, &settings, config.command.as_deref())
        })
        .await
        .map_err(|e| join_error("writing the container config", e));
        match written {
            Ok(Ok(())) => {
                tracing::info!(name, template, "created LXC container");
                Ok(name.to_owned())
            }
            Ok(Err(e)) => {
                self.destroy_quietly(&lxcpath, name).await;
                Err(e.into())
            }
            Err(e) => {
                self.destroy_quietly(&lxcpath, name).await;
                Err(e)
            }
        }
    }

    #[tracing::instrument(level = "debug", skip(self), fields(runtime = "lxc"))]
    async fn start(&self, runtime_id: &str) -> Result<(), RuntimeError> {
        let (lxcpath, dir) = self.existing(runtime_id).await?;
        match self.state(&lxcpath, runtime_id).await? {
            ContainerState::Running | ContainerState::Starting => return Ok(()),
            ContainerState::Paused => return Err(RuntimeError::InvalidState(ContainerState::Paused)),
            _ => {}
        }
        let prep_dir = dir.clone();
        tokio::task::spawn_blocking(move || prepare_start(&prep_dir))
            .await
            .map_err(|e| join_error("preparing the start", e))??;
        let inv = self
            .on("lxc-start", &lxcpath, runtime_id)
            .arg("-d")
            .arg("-o")
            .arg(dir.join(START_LOG))
            .args(["-l", "ERROR"]);
        let out = self.tools.run(&inv, self.opts.command_timeout).await?;
        if !out.success() {
            if out.stderr.contains("already running") {
                return Ok(());
            }
            let log_dir = dir.clone();
            let logged = tokio::task::spawn_blocking(move || start_errors(&log_dir)).await.unwrap_or_default();
            let detail = if logged.is_empty() { tail_chars(out.stderr.trim(), 2_000) } else { logged };
            return Err(RuntimeError::Rejected(format!("`{}` failed ({}): {detail}", out.command, out.status)));
        }
        // lxc-start -d already waits for RUNNING; this also covers a
        // command that finished at once (STOPPED) without waiting the timeout.
        let secs = self.opts.command_timeout.as_secs().max(1);
        let wait =
            self.on("lxc-wait", &lxcpath, runtime_id).args(["-s", "RUNNING|STOPPED", "-t"]).arg(secs.to_string());
        let out = self.tools.run(&wait, self.opts.command_timeout + Duration::from_secs(5)).await?;
        if !out.success() {
            return Err(RuntimeError::Timeout(format!("`{}`: the container did not reach RUNNING", out.command)));
        }
        tracing::info!(name = runtime_id, "started LXC container");
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self), fields(runtime = "lxc"))]
    async fn stop(&self, runtime_id: &str, timeout_secs: u32) -> Result<(), RuntimeError> {
        let (lxcpath, _) = self.existing(runtime_id).await?;
        if self.state(&lxcpath, runtime_id).await? == ContainerState::Stopped {
            return Ok(());
        }
        let mut inv = self.on("lxc-stop", &lxcpath, runtime_id);
        inv = if timeout_secs == 0 { inv.arg("-k") } else { inv.arg("-t").arg(timeout_secs.to_string()) };
        let out =
            self.tools.run(&inv, Duration::from_secs(u64::from(timeout_secs)) + self.opts.command_timeout).await?;
        if !(out.success() || out.code() == Some(2) || out.stderr.contains("is not running")) {
            return Err(out.failure().into());
        }
        tracing::info!(name = runtime_id, timeout_secs, "stopped LXC container");
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self), fields(runtime = "lxc"))]
    async fn restart(&self, runtime_id: &str, timeout_secs: u32) -> Result<(), RuntimeError> {
        self.stop(runtime_id, timeout_secs).await?;
        self.start(runtime_id).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(runtime = "lxc"))]
    async fn pause(&self, runtime_id: &str) -> Result<(), RuntimeError> {
        let (lxcpath, _) = self.existing(runtime_id).await?;
        match self.state(&lxcpath, runtime_id).await? {
            ContainerState::Paused => Ok(()),
            ContainerState::Running => {
                self.tools.run_ok(&self.on("lxc-freeze", &lxcpath, runtime_id), self.opts.command_timeout).await?;
                Ok(())
            }
            other => Err(RuntimeError::InvalidState(other)),
        }
    }

    #[tracing::instrument(level = "debug", skip(self), fields(runtime = "lxc"))]
    async fn unpause(&self, runtime_id: &str) -> Result<(), RuntimeError> {
        let (lxcpath, _) = self.existing(runtime_id).await?;
        match self.state(&lxcpath, runtime_id).await? {
            ContainerState::Running => Ok(()),
            ContainerState::Paused => {
                self.tools.run_ok(&self.on("lxc-unfreeze", &lxcpath, runtime_id), self.opts.command_timeout).await?;
                Ok(())
            }
            other => Err(RuntimeError::InvalidState(other)),
        }
    }

    #[tracing::instrument(level = "debug", skip(self), fields(runtime = "lxc"))]
    async fn remove(&self, runtime_id: &str, force: bool) -> Result<(), RuntimeError> {
        let (lxcpath, _) = self.existing(runtime_id).await?;
        let state = self.state(&lxcpath, runtime_id).await?;
        if !force && !state.can_remove() {
            return Err(RuntimeError::InvalidState(state));
        }
        let mut inv = self.on("lxc-destroy", &lxcpath, runtime_id);
        if force {
            inv = inv.arg("-f");
        }
        let out = self.tools.run(&inv, self.opts.command_timeout).await?;
        if !out.success() {
            if out.stderr.contains("is running") {
                return Err(RuntimeError::InvalidState(ContainerState::Running));
            }
            return Err(out.failure().into());
        }
        if let Some(log_dir) = &self.opts.log_dir {
            let dir = log_dir.join(runtime_id);
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove the console log directory");
            }
        }
        self.stats.forget(runtime_id);
        tracing::info!(name = runtime_id, force, "removed LXC container");
        Ok(())
    }

    /// The console log (`lxc.console.logfile`): no timestamps, stream
    /// `console`. `since` cannot be honoured (the file has no times) and is
    /// ignored; `tail` is. A container without a console log file has no lines.
    #[tracing::instrument(level = "debug", skip(self), fields(runtime = "lxc"))]
    async fn logs(&self, runtime_id: &str, query: LogQuery) -> Result<Vec<LogLine>, RuntimeError> {
        let (_, dir) = self.existing(runtime_id).await?;
        let lines = tokio::task::spawn_blocking(move || -> Result<Vec<String>, LxcError> {
            let path = dir.join("config");
            let text =
                std::fs::read_to_string(&path).map_err(|e| LxcError::io(format!("reading {}", path.display()), e))?;
            match LxcConfig::parse(&text).console_logfile() {
                Some(log) => read_tail(&log, query.tail, MAX_LOG_WINDOW),
                None => Ok(Vec::new()),
            }
        })
        .await
        .map_err(|e| join_error("reading the console log", e))??;
        Ok(lines.into_iter().map(|line| LogLine { timestamp: None, stream: LogStream::Console, line }).collect())
    }

    /// Follows the console log file (see [`LxcRuntime::logs`]): appended
    /// lines as they come, across rotations, until the container is
    /// destroyed (a stop does not end it: the file stays and a restart
    /// writes on). A container without a console log file never yields.
    #[tracing::instrument(level = "debug", skip(self), fields(runtime = "lxc"))]
    async fn follow_logs(&self, runtime_id: &str, query: LogQuery) -> Result<Box<dyn LogFollower>, RuntimeError> {
        let (_, dir) = self.existing(runtime_id).await?;
        let config = dir.join("config");
        let log_dir = dir.clone();
        let (path, first, pos, inode) =
            tokio::task::spawn_blocking(move || -> Result<(PathBuf, Vec<String>, u64, Option<u64>), LxcError> {
                let path = log_dir.join("config");
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| LxcError::io(format!("reading {}", path.display()), e))?;
                // No console log configured: follow a file that never appears.
                let log = LxcConfig::parse(&text).console_logfile().unwrap_or_else(|| log_dir.join("console.log"));
                let (first, pos, inode) = tail_for_follow(&log, query.tail, MAX_LOG_WINDOW)?;
                Ok((log, first, pos, inode))
            })
            .await
            .map_err(|e| join_error("reading the console log", e))??;
        Ok(Box::new(ConsoleFollower::new(path, config, first, pos, inode)))
    }

    /// LXC can change every limit and the restart policy, also removing a
    /// limit: nothing is refused.
    fn check_update(&self, _patch: &ConfigPatch) -> Vec<FieldError> {
        Vec::new()
    }

    /// Limits go to the running container's cgroup with `lxc-cgroup` (when
    /// it runs or is frozen) and to the config file's managed block for the
    /// next start; labels and the restart policy to `homeserver.json`.
    #[tracing::instrument(level = "debug", skip(self, patch), fields(runtime = "lxc"))]
    async fn update(&self, runtime_id: &str, patch: &ConfigPatch) -> Result<(), RuntimeError> {
        let (lxcpath, dir) = self.existing(runtime_id).await?;
        let version = self.cgroup_version().await;
        let live = config::live_cgroup_values(version, patch);
        if !live.is_empty()
            && matches!(self.state(&lxcpath, runtime_id).await?, ContainerState::Running | ContainerState::Paused)
        {
            for (key, value) in live {
                let inv = self.on("lxc-cgroup", &lxcpath, runtime_id).arg(key).arg(&value);
                let out = self.tools.run(&inv, self.opts.command_timeout).await?;
                if !out.success() {
                    return Err(RuntimeError::Rejected(format!(
                        "setting {key} to {value} failed: {}",
                        tail_chars(out.stderr.trim(), 500)
                    )));
                }
            }
        }
        let patch = patch.clone();
        tokio::task::spawn_blocking(move || write_patch(&dir, version, &patch))
            .await
            .map_err(|e| join_error("writing the container config", e))??;
        tracing::info!(name = runtime_id, "updated LXC container settings");
        Ok(())
    }

    /// `lxc-attach --clear-env`: the container sees its own `lxc.environment`,
    /// LXC's default `PATH` and the request's variables, never the server's
    /// environment. Runs in `/` unless `workdir` is given (through `sh -c
    /// 'cd …'`, since lxc-attach has no working-directory option).
    #[tracing::instrument(level = "debug", skip(self, request), fields(runtime = "lxc", command = ?request.command))]
    async fn exec(&self, runtime_id: &str, request: &ExecRequest) -> Result<ExecResult, RuntimeError> {
        let (lxcpath, _) = self.existing(runtime_id).await?;
        let state = self.state(&lxcpath, runtime_id).await?;
        if !state.can_exec() {
            return Err(RuntimeError::InvalidState(state));
        }
        if request.command.is_empty() {
            return Err(RuntimeError::Rejected("exec needs a command".to_owned()));
        }
        let mut inv = self.on("lxc-attach", &lxcpath, runtime_id).arg("--clear-env");
        for (k, v) in &request.env {
            inv = inv.arg("-v").arg(format!("{k}={v}"));
        }
        inv = inv.arg("--");
        if let Some(dir) = &request.workdir {
            inv = inv.args(["/bin/sh", "-c", r#"cd "$1" && shift && exec "$@""#, "homeserver-exec"]).arg(dir);
        }
        inv = inv.args(&request.command);
        let timeout =
            if request.timeout_ms == 0 { self.opts.command_timeout } else { Duration::from_millis(request.timeout_ms) };
        let stdin = request.stdin.as_deref();
        run_exec(&self.tools, &inv, stdin, timeout, request.output_cap_bytes).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(runtime = "lxc"))]
    async fn stats(&self, runtime_id: &str) -> Result<ContainerStats, RuntimeError> {
        crate::stats::stats(self, runtime_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_ids_stay_one_path_component() {
        for bad in ["", ".", "..", "a/b", "../etc", "a\nb"] {
            assert!(matches!(check_name(bad), Err(RuntimeError::NotFound)), "{bad:?}");
        }
        for ok in ["web", "hs-test-1", "db_2.prod", "my box"] {
            assert_eq!(check_name(ok).unwrap(), ok);
        }
    }

    #[test]
    fn this_process_start_time_is_recent() {
        let ms = process_start_ms(std::process::id()).unwrap();
        let age = now_ms() - ms;
        assert!((-2_000..600_000).contains(&age), "started {age} ms ago?");
    }
}
