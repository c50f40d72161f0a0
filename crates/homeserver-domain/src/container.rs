//! Containers: one model for Docker and LXC, their lifecycle, and the
//! [`ContainerRuntime`] port each engine implements.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;

use crate::error::FieldError;
use crate::snapshot::ContainerStats;
use crate::time::UnixMillis;

/// Which engine runs a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum RuntimeKind {
    /// Docker Engine.
    Docker,
    /// LXC (the `lxc-*` tools).
    Lxc,
}

impl RuntimeKind {
    /// Every runtime.
    pub const ALL: [RuntimeKind; 2] = [RuntimeKind::Docker, RuntimeKind::Lxc];

    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Lxc => "lxc",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuntimeKind {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| FieldError::new("runtime", format!("unknown runtime `{s}` (expected docker or lxc)")))
    }
}

/// A container's real state, as its runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Starting.
    Starting,
    /// Running.
    Running,
    /// Frozen.
    Paused,
    /// Stopping.
    Stopping,
    /// Stopped (exited).
    Stopped,
    /// Restarting.
    Restarting,
    /// Dead or failed.
    Error,
    /// The runtime could not tell.
    Unknown,
}

impl ContainerState {
    /// Every state.
    pub const ALL: [ContainerState; 9] = [
        Self::Created,
        Self::Starting,
        Self::Running,
        Self::Paused,
        Self::Stopping,
        Self::Stopped,
        Self::Restarting,
        Self::Error,
        Self::Unknown,
    ];

    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Restarting => "restarting",
            Self::Error => "error",
            Self::Unknown => "unknown",
        }
    }

    /// `start` makes sense.
    pub fn can_start(self) -> bool {
        matches!(self, Self::Created | Self::Stopped | Self::Error)
    }

    /// `stop` makes sense.
    pub fn can_stop(self) -> bool {
        matches!(self, Self::Running | Self::Starting | Self::Restarting | Self::Paused)
    }

    /// `restart` makes sense.
    pub fn can_restart(self) -> bool {
        matches!(self, Self::Running | Self::Stopped | Self::Created | Self::Error)
    }

    /// `pause` makes sense.
    pub fn can_pause(self) -> bool {
        self == Self::Running
    }

    /// `unpause` makes sense.
    pub fn can_unpause(self) -> bool {
        self == Self::Paused
    }

    /// `exec` makes sense.
    pub fn can_exec(self) -> bool {
        self == Self::Running
    }

    /// Removal without `force` is allowed.
    pub fn can_remove(self) -> bool {
        !matches!(self, Self::Running | Self::Paused | Self::Restarting | Self::Starting | Self::Stopping)
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContainerState {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| FieldError::new("state", format!("unknown state `{s}`")))
    }
}

/// What a runtime does when a container exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum RestartPolicy {
    /// Never restart.
    #[default]
    No,
    /// Restart after a non-zero exit.
    OnFailure,
    /// Always restart.
    Always,
    /// Restart unless stopped by hand.
    UnlessStopped,
}

impl RestartPolicy {
    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::OnFailure => "on-failure",
            Self::Always => "always",
            Self::UnlessStopped => "unless-stopped",
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::No, Self::OnFailure, Self::Always, Self::UnlessStopped]
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| FieldError::new("config.restart_policy", format!("unknown restart policy `{s}`")))
    }
}

/// Smallest memory limit a container may get (6 MiB, Docker's floor).
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;

/// Settings of a container, the same for every runtime.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ContainerConfig {
    /// CPUs (fractional), `None` for no limit.
    pub cpu_limit: Option<f64>,
    /// Memory limit, at least [`MIN_MEMORY_BYTES`].
    pub memory_limit_bytes: Option<u64>,
    /// Most processes and threads.
    pub pids_limit: Option<u64>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Command, `None` for the image's or template's default.
    pub command: Option<Vec<String>>,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// Host device paths passed through (`/dev/ttyUSB0`).
    pub devices: Vec<String>,
}

impl ContainerConfig {
    /// Validates limits and keys; `host_cores` bounds `cpu_limit`.
    pub fn validate(&self, host_cores: u32) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(cpu) = self.cpu_limit
            && !(cpu > 0.0 && cpu <= f64::from(host_cores.max(1)))
        {
            errors.push(FieldError::new(
                "config.cpu_limit",
                format!("must be above 0 and at most {host_cores} (the host's cores)"),
            ));
        }
        if let Some(mem) = self.memory_limit_bytes
            && mem < MIN_MEMORY_BYTES
        {
            errors.push(FieldError::new(
                "config.memory_limit_bytes",
                format!("must be at least {MIN_MEMORY_BYTES} (6 MiB)"),
            ));
        }
        if self.pids_limit == Some(0) {
            errors.push(FieldError::new("config.pids_limit", "must be at least 1"));
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                errors
                    .push(FieldError::new(format!("config.env.{key}"), "names must be non-empty, without `=` or NUL"));
            }
        }
        for (key, value) in &self.env {
            if value.contains('\0') {
                errors.push(FieldError::new(format!("config.env.{key}"), "values must not contain NUL"));
            }
        }
        for key in self.labels.keys() {
            if key.is_empty() || key.len() > 128 {
                errors.push(FieldError::new(format!("config.labels.{key}"), "keys must be 1 to 128 characters"));
            }
        }
        if let Some(cmd) = &self.command
            && (cmd.is_empty() || cmd.iter().any(|a| a.contains('\0')))
        {
            errors.push(FieldError::new("config.command", "must name a program, without NUL characters"));
        }
        for (i, d) in self.devices.iter().enumerate() {
            if !d.starts_with("/dev/") || d.contains("..") {
                errors.push(FieldError::new(format!("config.devices[{i}]"), "must be a path under /dev/"));
            }
        }
        errors
    }
}

/// A change to an existing container's settings, field by field: `None`
/// leaves a field as it is; for the limits, `Some(None)` removes the limit
/// and `Some(Some(v))` sets it. Only what can change without recreating the
/// container is here (the environment, command and devices cannot).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigPatch {
    /// CPUs (fractional).
    pub cpu_limit: Option<Option<f64>>,
    /// Memory limit.
    pub memory_limit_bytes: Option<Option<u64>>,
    /// Most processes and threads.
    pub pids_limit: Option<Option<u64>>,
    /// Restart policy.
    pub restart_policy: Option<RestartPolicy>,
    /// Labels (the whole map).
    pub labels: Option<BTreeMap<String, String>>,
}

impl ConfigPatch {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Changes a limit or the restart policy (something the engine applies).
    pub fn touches_limits(&self) -> bool {
        self.cpu_limit.is_some()
            || self.memory_limit_bytes.is_some()
            || self.pids_limit.is_some()
            || self.restart_policy.is_some()
    }

    /// `config` with this patch applied.
    pub fn apply_to(&self, config: &ContainerConfig) -> ContainerConfig {
        let mut out = config.clone();
        if let Some(v) = self.cpu_limit {
            out.cpu_limit = v;
        }
        if let Some(v) = self.memory_limit_bytes {
            out.memory_limit_bytes = v;
        }
        if let Some(v) = self.pids_limit {
            out.pids_limit = v;
        }
        if let Some(v) = self.restart_policy {
            out.restart_policy = v;
        }
        if let Some(v) = &self.labels {
            out.labels = v.clone();
        }
        out
    }

    /// Validates the values being set (the same rules as at creation).
    pub fn validate(&self, host_cores: u32) -> Vec<FieldError> {
        ContainerConfig {
            cpu_limit: self.cpu_limit.flatten(),
            memory_limit_bytes: self.memory_limit_bytes.flatten(),
            pids_limit: self.pids_limit.flatten(),
            labels: self.labels.clone().unwrap_or_default(),
            ..ContainerConfig::default()
        }
        .validate(host_cores)
    }
}

/// A validated container name: `^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerName(String);

impl ContainerName {
    /// Validates a name.
    pub fn parse(name: &str) -> Result<Self, FieldError> {
        let mut chars = name.chars();
        let ok = name.len() <= 63
            && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(FieldError::new("name", "must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$"))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A container as a runtime sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeContainer {
    /// The runtime's own id (Docker id, LXC name).
    pub runtime_id: String,
    /// Name.
    pub name: String,
    /// Image (Docker).
    pub image: Option<String>,
    /// Real state.
    pub state: ContainerState,
    /// Settings as the runtime applied them.
    pub config: ContainerConfig,
    /// When the runtime created it, if it says.
    pub created_at: Option<UnixMillis>,
    /// When it last started, if running.
    pub started_at: Option<UnixMillis>,
}

/// What to create.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSpec {
    /// Name.
    pub name: ContainerName,
    /// Docker image or LXC template.
    pub source: String,
    /// Template options (LXC).
    pub template_options: Vec<String>,
    /// Effective settings.
    pub config: ContainerConfig,
}

/// Which log lines to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogQuery {
    /// Last N lines.
    pub tail: Option<u32>,
    /// Only lines at or after this time.
    pub since: Option<UnixMillis>,
    /// Keep timestamps.
    pub timestamps: bool,
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// The console (LXC).
    Console,
}

impl LogStream {
    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Console => "console",
        }
    }
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When, if known.
    pub timestamp: Option<UnixMillis>,
    /// Which stream.
    pub stream: LogStream,
    /// The text, without its newline.
    pub line: String,
}

/// A container's log as it grows: the lines asked for at the start, then
/// each new one as the container prints it. Dropping it stops following
/// (the adapter closes its stream or file; nothing keeps running).
#[async_trait]
pub trait LogFollower: Send {
    /// The next line, waiting for it; `None` once the log has ended (the
    /// container stopped, for engines whose log stream ends then, or was
    /// removed). After an error the follower ends.
    async fn next_line(&mut self) -> Option<Result<LogLine, RuntimeError>>;
}

/// A command to run in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// Standard input.
    pub stdin: Option<String>,
    /// Longest run in milliseconds.
    pub timeout_ms: u64,
    /// Most bytes kept per stream.
    pub output_cap_bytes: usize,
}

/// What an exec produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// Exit code (`None` when killed at the timeout).
    pub exit_code: Option<i64>,
    /// Standard output, up to the cap.
    pub stdout: String,
    /// Standard error, up to the cap.
    pub stderr: String,
    /// Wall time.
    pub duration_ms: u64,
    /// Some output was dropped at the cap, or the timeout hit.
    pub truncated: bool,
}

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine is not reachable.
    #[error("{runtime} is unavailable: {reason}")]
    Unavailable {
        /// Which engine.
        runtime: RuntimeKind,
        /// Why.
        reason: String,
    },
    /// No such container in the engine.
    #[error("no such container")]
    NotFound,
    /// The name is taken in this runtime.
    #[error("the name is taken")]
    NameTaken,
    /// The image or template does not exist.
    #[error("no such image or template: {0}")]
    SourceNotFound(String),
    /// The container's state forbids it.
    #[error("the container is {0}")]
    InvalidState(ContainerState),
    /// The engine refused the request.
    #[error("the engine refused: {0}")]
    Rejected(String),
    /// Gave up waiting.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Anything else, with context.
    #[error(transparent)]
    Internal(#[from] Box<dyn std::error::Error + Send + Sync>),
}

/// A container engine.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Which engine this is.
    fn kind(&self) -> RuntimeKind;

    /// The engine answers.
    async fn ping(&self) -> Result<(), RuntimeError>;

    /// Every container the engine has.
    async fn list(&self) -> Result<Vec<RuntimeContainer>, RuntimeError>;

    /// One container.
    async fn inspect(&self, runtime_id: &str) -> Result<RuntimeContainer, RuntimeError>;

    /// Creates a container; its runtime id.
    async fn create(&self, spec: &CreateSpec) -> Result<String, RuntimeError>;

    /// Starts it.
    async fn start(&self, runtime_id: &str) -> Result<(), RuntimeError>;

    /// Stops it, killing after `timeout_secs`.
    async fn stop(&self, runtime_id: &str, timeout_secs: u32) -> Result<(), RuntimeError>;

    /// Restarts it.
    async fn restart(&self, runtime_id: &str, timeout_secs: u32) -> Result<(), RuntimeError>;

    /// Freezes it.
    async fn pause(&self, runtime_id: &str) -> Result<(), RuntimeError>;

    /// Thaws it.
    async fn unpause(&self, runtime_id: &str) -> Result<(), RuntimeError>;

    /// Removes it (`force`: even when running).
    async fn remove(&self, runtime_id: &str, force: bool) -> Result<(), RuntimeError>;

    /// Reads its logs.
    async fn logs(&self, runtime_id: &str, query: LogQuery) -> Result<Vec<LogLine>, RuntimeError>;

    /// Follows its log: the last `query.tail` lines, then new ones as they
    /// come (`since` and `timestamps` as for [`ContainerRuntime::logs`]).
    /// `NotFound` at once for an unknown container.
    async fn follow_logs(&self, runtime_id: &str, query: LogQuery) -> Result<Box<dyn LogFollower>, RuntimeError>;

    /// The fields of `patch` this engine cannot change on an existing
    /// container, as field errors (`config.<field>`); empty when it can
    /// apply all of it. Called before [`ContainerRuntime::update`].
    fn check_update(&self, patch: &ConfigPatch) -> Vec<FieldError>;

    /// Applies `patch` to an existing container: limits and restart policy
    /// at once when it runs, and kept for its next start; labels where the
    /// engine keeps them (engines that cannot change them leave them to
    /// homeserver's record).
    async fn update(&self, runtime_id: &str, patch: &ConfigPatch) -> Result<(), RuntimeError>;

    /// Runs a command in it.
    async fn exec(&self, runtime_id: &str, request: &ExecRequest) -> Result<ExecResult, RuntimeError>;

    /// Resource use (ids and names left for the caller to fill).
    async fn stats(&self, runtime_id: &str) -> Result<ContainerStats, RuntimeError>;
}

/// What homeserver keeps about a container: its stable id and metadata.
/// The state is never stored: it is always the runtime's.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRecord {
    /// Stable id (a UUID), kept across restarts.
    pub id: String,
    /// Runtime.
    pub runtime: RuntimeKind,
    /// The runtime's id (Docker id, LXC name).
    pub runtime_id: String,
    /// Name.
    pub name: String,
    /// Docker image.
    pub image: Option<String>,
    /// LXC template.
    pub template: Option<String>,
    /// Created through homeserver.
    pub managed: bool,
    /// Profiles applied at creation, in order.
    pub profiles: Vec<String>,
    /// Effective settings.
    pub config: ContainerConfig,
    /// First seen or created.
    pub created_at: UnixMillis,
    /// Last changed.
    pub updated_at: UnixMillis,
}

/// Stores container records.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ContainerRepository: Send + Sync {
    /// Stores a new record (`AlreadyExists` for a taken id or runtime id).
    async fn insert(&self, record: &ContainerRecord) -> Result<(), crate::RepositoryError>;
    /// Replaces a record.
    async fn update(&self, record: &ContainerRecord) -> Result<(), crate::RepositoryError>;
    /// One record by id.
    async fn get(&self, id: &str) -> Result<Option<ContainerRecord>, crate::RepositoryError>;
    /// Every record.
    async fn list(&self) -> Result<Vec<ContainerRecord>, crate::RepositoryError>;
    /// Removes a record (no error when absent).
    async fn delete(&self, id: &str) -> Result<(), crate::RepositoryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        for ok in ["a", "web-1", "db_2.prod", &"x".repeat(63)] {
            assert!(ContainerName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "ä", &"x".repeat(64)] {
            assert_eq!(ContainerName::parse(bad).unwrap_err().field, "name", "{bad}");
        }
    }

    #[test]
    fn predicates_match_what_engines_allow() {
        use ContainerState::*;
        assert!(Stopped.can_start() && Created.can_start() && !Running.can_start());
        assert!(Running.can_stop() && Paused.can_stop() && !Stopped.can_stop());
        assert!(Running.can_pause() && !Paused.can_pause() && Paused.can_unpause());
        assert!(Running.can_exec() && !Stopped.can_exec() && !Paused.can_exec());
        assert!(Stopped.can_remove() && Created.can_remove() && !Running.can_remove() && !Paused.can_remove());
        for s in ContainerState::ALL {
            assert_eq!(s.as_str().parse::<ContainerState>().unwrap(), s);
        }
    }

    #[test]
    fn config_validation_names_every_bad_field() {
        let cfg = ContainerConfig {
            cpu_limit: Some(3.0),
            memory_limit_bytes: Some(1024),
            pids_limit: Some(0),
            env: BTreeMap::from([("A=B".to_owned(), "x".to_owned())]),
            command: Some(vec![]),
            devices: vec!["/etc/passwd".to_owned()],
            ..Default::default()
        };
        let fields: Vec<_> = cfg.validate(2).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "config.cpu_limit",
                "config.memory_limit_bytes",
                "config.pids_limit",
                "config.env.A=B",
                "config.command",
                "config.devices[0]"
            ]
        );
        let ok =
            ContainerConfig { cpu_limit: Some(0.5), memory_limit_bytes: Some(MIN_MEMORY_BYTES), ..Default::default() };
        assert!(ok.validate(2).is_empty());
        assert!(!ContainerConfig { cpu_limit: Some(0.0), ..Default::default() }.validate(2).is_empty());
    }
}
