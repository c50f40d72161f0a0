//! Pure conversions between Docker Engine API models and domain types.
//!
//! Nothing here talks to the daemon, so every mapping is unit-tested.
//! bollard models enter and leave this module only as function arguments
//! and results inside the crate.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, ContainerUpdateBody, DeviceMapping, HostConfig,
    RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
};
use homeserver_domain::{
    ConfigPatch, ContainerConfig, ContainerState, CreateSpec, LogLine, LogStream, RestartPolicy, RuntimeContainer,
    UnixMillis,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Docker's state word → the domain's state.
///
/// `exited` is [`ContainerState::Stopped`], `dead` is [`ContainerState::Error`],
/// `removing` (and the newer `stopping`) are [`ContainerState::Stopping`];
/// anything unknown or empty is [`ContainerState::Unknown`].
pub(crate) fn state_from_docker(status: &str) -> ContainerState {
    match status {
        "created" => ContainerState::Created,
        "running" => ContainerState::Running,
        "paused" => ContainerState::Paused,
        "restarting" => ContainerState::Restarting,
        "removing" | "stopping" => ContainerState::Stopping,
        "exited" => ContainerState::Stopped,
        "dead" => ContainerState::Error,
        _ => ContainerState::Unknown,
    }
}

/// Parses an RFC 3339 time (Docker writes nanoseconds); Docker's zero time
/// (`0001-01-01T00:00:00Z`, "never") and garbage are `None`.
pub(crate) fn parse_docker_time(text: &str) -> Option<UnixMillis> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    if t.year() <= 1970 {
        return None;
    }
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok().map(UnixMillis)
}

/// `["K=V", "FLAG"]` → `{K: V, FLAG: ""}`.
pub(crate) fn env_from_docker(env: &[String]) -> BTreeMap<String, String> {
    env.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.clone(), String::new()),
        })
        .collect()
}

/// `{K: V}` → `["K=V"]`.
pub(crate) fn env_to_docker(env: &BTreeMap<String, String>) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn labels_from_docker(labels: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    labels.map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
}

fn restart_from_docker(policy: Option<&DockerRestartPolicy>) -> RestartPolicy {
    match policy.and_then(|p| p.name) {
        Some(RestartPolicyNameEnum::ALWAYS) => RestartPolicy::Always,
        Some(RestartPolicyNameEnum::UNLESS_STOPPED) => RestartPolicy::UnlessStopped,
        Some(RestartPolicyNameEnum::ON_FAILURE) => RestartPolicy::OnFailure,
        Some(RestartPolicyNameEnum::NO | RestartPolicyNameEnum::EMPTY) | None => RestartPolicy::No,
    }
}

pub(crate) fn restart_to_docker(policy: RestartPolicy) -> DockerRestartPolicy {
    let name = match policy {
        RestartPolicy::No => RestartPolicyNameEnum::NO,
        RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
        RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
    };
    DockerRestartPolicy { name: Some(name), maximum_retry_count: None }
}

/// Positive numbers only: Docker uses 0 (and -1 for pids) for "no limit".
fn positive(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0)
}

/// CPUs from `NanoCpus`, or from `CpuQuota / CpuPeriod` (how `--cpu-quota` sets it).
fn cpu_from_host(host: &HostConfig) -> Option<f64> {
    if let Some(nano) = positive(host.nano_cpus) {
        #[allow(clippy::cast_precision_loss, reason = "CPU counts are far below 2^52 nanoCPUs")]
        return Some(nano as f64 / 1e9);
    }
    match (positive(host.cpu_quota), positive(host.cpu_period)) {
        #[allow(clippy::cast_precision_loss, reason = "quota and period are microseconds, far below 2^52")]
        (Some(quota), Some(period)) => Some(quota as f64 / period as f64),
        _ => None,
    }
}

/// CPUs → `NanoCpus`.
pub(crate) fn nano_cpus(cpu: f64) -> i64 {
    #[allow(clippy::cast_possible_truncation, reason = "validated CPU counts fit an i64 of nanoCPUs")]
    let nano = (cpu * 1e9).round() as i64;
    nano
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The name Docker reports, without its leading `/`.
pub(crate) fn strip_slash(name: &str) -> String {
    name.strip_prefix('/').unwrap_or(name).to_owned()
}

/// A `/containers/json` entry → a [`RuntimeContainer`].
///
/// The list endpoint carries no limits, env or restart policy, so those stay
/// at their defaults (`None`, empty, `no`); `command` is Docker's summary
/// string split at whitespace (entrypoint and arguments; quoting is lost).
/// Call `inspect` for the exact settings.
pub(crate) fn from_summary(s: ContainerSummary) -> RuntimeContainer {
    let name = s.names.as_ref().and_then(|n| n.first()).map(|n| strip_slash(n)).unwrap_or_default();
    let state = s.state.map(|st| state_from_docker(st.as_ref())).unwrap_or(ContainerState::Unknown);
    let command = s
        .command
        .as_deref()
        .map(|c| c.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|c| !c.is_empty());
    RuntimeContainer {
        runtime_id: s.id.unwrap_or_default(),
        name,
        image: s.image.filter(|i| !i.is_empty()),
        state,
        config: ContainerConfig {
            labels: labels_from_docker(s.labels.as_ref()),
            command,
            ..ContainerConfig::default()
        },
        created_at: s.created.filter(|c| *c > 0).map(|c| UnixMillis(c.saturating_mul(1_000))),
        started_at: None,
    }
}

/// The state of an inspected container.
pub(crate) fn state_of(c: &ContainerInspectResponse) -> ContainerState {
    let Some(st) = c.state.as_ref() else { return ContainerState::Unknown };
    if let Some(status) = st.status {
        let mapped = state_from_docker(status.as_ref());
        if mapped != ContainerState::Unknown {
            return mapped;
        }
    }
    // No status word: fall back on the flags.
    match (st.restarting, st.paused, st.running, st.dead) {
        (Some(true), ..) => ContainerState::Restarting,
        (_, Some(true), ..) => ContainerState::Paused,
        (_, _, Some(true), _) => ContainerState::Running,
        (_, _, _, Some(true)) => ContainerState::Error,
        _ => ContainerState::Unknown,
    }
}

/// `GET /containers/{id}/json` → a full [`RuntimeContainer`].
pub(crate) fn from_inspect(c: ContainerInspectResponse) -> RuntimeContainer {
    let state = state_of(&c);
    let host = c.host_config.clone().unwrap_or_default();
    let cfg = c.config.clone().unwrap_or_default();
    let config = ContainerConfig {
        cpu_limit: cpu_from_host(&host),
        memory_limit_bytes: positive(host.memory),
        pids_limit: positive(host.pids_limit),
        env: env_from_docker(cfg.env.as_deref().unwrap_or_default()),
        labels: labels_from_docker(cfg.labels.as_ref()),
        command: cfg.cmd.clone().filter(|c| !c.is_empty()),
        restart_policy: restart_from_docker(host.restart_policy.as_ref()),
        devices: host.devices.unwrap_or_default().into_iter().filter_map(|d| d.path_on_host).collect(),
    };
    let started_at = match state {
        ContainerState::Running | ContainerState::Paused | ContainerState::Restarting => {
            c.state.as_ref().and_then(|s| s.started_at.as_deref()).and_then(parse_docker_time)
        }
        _ => None,
    };
    RuntimeContainer {
        runtime_id: c.id.unwrap_or_default(),
        name: c.name.as_deref().map(strip_slash).unwrap_or_default(),
        // Config.Image is what the user asked for (`busybox:latest`); the top-level Image is the digest.
        image: cfg.image.clone().or(c.image).filter(|i| !i.is_empty()),
        state,
        config,
        created_at: c.created.as_deref().and_then(parse_docker_time),
        started_at,
    }
}

/// A [`CreateSpec`] → the body of `POST /containers/create`.
pub(crate) fn create_body(spec: &CreateSpec) -> ContainerCreateBody {
    let cfg = &spec.config;
    let devices = cfg
        .devices
        .iter()
        .map(|d| DeviceMapping {
            path_on_host: Some(d.clone()),
            path_in_container: Some(d.clone()),
            cgroup_permissions: Some("rwm".to_owned()),
        })
        .collect::<Vec<_>>();
    let host_config = HostConfig {
        memory: cfg.memory_limit_bytes.map(to_i64),
        nano_cpus: cfg.cpu_limit.map(nano_cpus),
        pids_limit: cfg.pids_limit.map(to_i64),
        restart_policy: Some(restart_to_docker(cfg.restart_policy)),
        devices: (!devices.is_empty()).then_some(devices),
        ..HostConfig::default()
    };
    ContainerCreateBody {
        image: Some(spec.source.clone()),
        cmd: cfg.command.clone(),
        env: (!cfg.env.is_empty()).then(|| env_to_docker(&cfg.env)),
        labels: (!cfg.labels.is_empty()).then(|| cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    }
}

/// A [`ConfigPatch`] → the body of `POST /containers/{id}/update`.
/// `current_swap` is the container's `MemorySwap`: a new memory limit
/// keeps unlimited swap (`-1`), else gets Docker's default of as much swap
/// as memory (`MemorySwap` = 2 × memory), as at creation. Removing a CPU or
/// memory limit is not possible (Docker reads 0 as "unchanged"); callers
/// refuse it first (`check_update`).
pub(crate) fn update_body(patch: &ConfigPatch, current_swap: Option<i64>) -> ContainerUpdateBody {
    let memory = patch.memory_limit_bytes.flatten().map(to_i64);
    ContainerUpdateBody {
        nano_cpus: patch.cpu_limit.flatten().map(nano_cpus),
        memory,
        memory_swap: memory.map(|m| if current_swap == Some(-1) { -1 } else { m.saturating_mul(2) }),
        // -1: no limit.
        pids_limit: patch.pids_limit.map(|p| p.map_or(-1, to_i64)),
        restart_policy: patch.restart_policy.map(restart_to_docker),
        ..ContainerUpdateBody::default()
    }
}

/// Splits Docker's `timestamps=true` prefix (`2024-01-02T03:04:05.123456789Z `)
/// off a log frame. Frames without a parseable prefix keep all their bytes.
pub(crate) fn split_timestamp(frame: &[u8]) -> (Option<UnixMillis>, &[u8]) {
    // RFC 3339 with nanoseconds is 30 bytes; allow offsets and shorter fractions.
    let Some(space) = frame.iter().take(40).position(|b| *b == b' ') else { return (None, frame) };
    let parsed = std::str::from_utf8(&frame[..space]).ok().and_then(parse_docker_time);
    match parsed {
        Some(ts) => (Some(ts), &frame[space + 1..]),
        None => (None, frame),
    }
}

/// Builds [`LogLine`]s from Docker's log frames.
///
/// Docker sends one frame per line (or per 16 KiB piece of a longer line,
/// each piece with its own timestamp); a frame may also hold several lines
/// (TTY containers). Pieces are joined per stream until a newline; the line
/// keeps the timestamp of its first piece. `\r\n` endings lose the `\r`.
#[derive(Debug)]
pub(crate) struct LogAssembler {
    keep_timestamps: bool,
    since: Option<UnixMillis>,
    /// Unfinished line per stream: stdout, stderr, console.
    pending: [Option<(Option<UnixMillis>, Vec<u8>)>; 3],
    lines: Vec<LogLine>,
}

impl LogAssembler {
    /// `since`: lines stamped earlier are dropped (Docker's own `since` has
    /// whole-second precision).
    pub(crate) fn new(keep_timestamps: bool, since: Option<UnixMillis>) -> Self {
        Self { keep_timestamps, since, pending: [None, None, None], lines: Vec::new() }
    }

    fn slot(stream: LogStream) -> usize {
        match stream {
            LogStream::Stdout => 0,
            LogStream::Stderr => 1,
            LogStream::Console => 2,
        }
    }

    /// Feeds one frame.
    pub(crate) fn push(&mut self, stream: LogStream, frame: &[u8]) {
        let slot = Self::slot(stream);
        let mut rest = frame;
        // Every log entry starts with its own stamp, also after a newline inside one frame.
        while !rest.is_empty() {
            let (ts, body) = split_timestamp(rest);
            let Some(nl) = body.iter().position(|b| *b == b'\n') else {
                if body.is_empty() {
                    return;
                }
                let entry = self.pending[slot].get_or_insert_with(|| (ts, Vec::new()));
                entry.1.extend_from_slice(body);
                return;
            };
            let (first_ts, mut bytes) = self.pending[slot].take().unwrap_or((ts, Vec::new()));
            bytes.extend_from_slice(&body[..nl]);
            self.emit(stream, first_ts, bytes);
            rest = &body[nl + 1..];
        }
    }

    fn emit(&mut self, stream: LogStream, ts: Option<UnixMillis>, mut bytes: Vec<u8>) {
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if let (Some(since), Some(ts)) = (self.since, ts)
            && ts < since
        {
            return;
        }
        self.lines.push(LogLine {
            timestamp: if self.keep_timestamps { ts } else { None },
            stream,
            line: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }

    /// The lines finished so far (for following a log).
    pub(crate) fn take_lines(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.lines)
    }

    /// Ends unfinished lines (the stream ended) and takes every line.
    pub(crate) fn flush(&mut self) -> Vec<LogLine> {
        for (slot, stream) in [LogStream::Stdout, LogStream::Stderr, LogStream::Console].into_iter().enumerate() {
            if let Some((ts, bytes)) = self.pending[slot].take() {
                self.emit(stream, ts, bytes);
            }
        }
        self.take_lines()
    }

    /// The lines, unfinished ones (no trailing newline) included.
    pub(crate) fn finish(mut self) -> Vec<LogLine> {
        for (slot, stream) in [LogStream::Stdout, LogStream::Stderr, LogStream::Console].into_iter().enumerate() {
            if let Some((ts, bytes)) = self.pending[slot].take() {
                self.emit(stream, ts, bytes);
            }
        }
        self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerConfig as DockerConfig, ContainerState as DockerState, ContainerStateStatusEnum};
    use homeserver_domain::ContainerName;

    #[test]
    fn every_docker_state_maps() {
        let cases = [
            ("created", ContainerState::Created),
            ("running", ContainerState::Running),
            ("paused", ContainerState::Paused),
            ("restarting", ContainerState::Restarting),
            ("removing", ContainerState::Stopping),
            ("stopping", ContainerState::Stopping),
            ("exited", ContainerState::Stopped),
            ("dead", ContainerState::Error),
            ("", ContainerState::Unknown),
            ("weird", ContainerState::Unknown),
        ];
        for (docker, ours) in cases {
            assert_eq!(state_from_docker(docker), ours, "{docker}");
        }
    }

    #[test]
    fn inspect_state_falls_back_on_flags() {
        let mut c = ContainerInspectResponse {
            state: Some(DockerState { status: Some(ContainerStateStatusEnum::EXITED), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(state_of(&c), ContainerState::Stopped);
        c.state = Some(DockerState { running: Some(true), paused: Some(true), ..Default::default() });
        assert_eq!(state_of(&c), ContainerState::Paused);
        c.state = None;
        assert_eq!(state_of(&c), ContainerState::Unknown);
    }

    #[test]
    fn docker_times_parse_with_nanoseconds_and_zero_is_none() {
        assert_eq!(parse_docker_time("2024-01-02T03:04:05.123456789Z"), Some(UnixMillis(1_704_164_645_123)));
        assert_eq!(parse_docker_time("2024-01-02T03:04:05Z"), Some(UnixMillis(1_704_164_645_000)));
        assert_eq!(parse_docker_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_docker_time("yesterday"), None);
    }

    #[test]
    fn env_round_trips() {
        let env = env_from_docker(&["A=1".into(), "B=x=y".into(), "FLAG".into()]);
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "x=y");
        assert_eq!(env["FLAG"], "");
        assert_eq!(env_to_docker(&BTreeMap::from([("K".to_owned(), "v".to_owned())])), ["K=v"]);
    }

    #[test]
    fn create_body_carries_every_setting() {
        let spec = CreateSpec {
            name: ContainerName::parse("web").unwrap(),
            source: "busybox:latest".into(),
            template_options: vec![],
            config: ContainerConfig {
                cpu_limit: Some(0.5),
                memory_limit_bytes: Some(64 << 20),
                pids_limit: Some(50),
                env: BTreeMap::from([("A".into(), "1".into())]),
                labels: BTreeMap::from([("app".into(), "web".into())]),
                command: Some(vec!["sleep".into(), "60".into()]),
                restart_policy: RestartPolicy::UnlessStopped,
                devices: vec!["/dev/null".into()],
            },
        };
        let body = create_body(&spec);
        let host = body.host_config.clone().unwrap();
        assert_eq!(body.image.as_deref(), Some("busybox:latest"));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.pids_limit, Some(50));
        assert_eq!(host.restart_policy.unwrap().name, Some(RestartPolicyNameEnum::UNLESS_STOPPED));
        let dev = &host.devices.unwrap()[0];
        assert_eq!(
            (dev.path_on_host.as_deref(), dev.path_in_container.as_deref(), dev.cgroup_permissions.as_deref()),
            (Some("/dev/null"), Some("/dev/null"), Some("rwm"))
        );
        assert_eq!(body.env, Some(vec!["A=1".into()]));
        assert_eq!(body.cmd, Some(vec!["sleep".into(), "60".into()]));
        assert_eq!(body.labels.unwrap()["app"], "web");

        // Defaults send no limits at all.
        let plain = CreateSpec { config: ContainerConfig::default(), ..spec };
        let host = create_body(&plain).host_config.unwrap();
        assert_eq!((host.memory, host.nano_cpus, host.pids_limit, host.devices), (None, None, None, None));
    }

    #[test]
    fn inspect_reads_limits_back() {
        let c = ContainerInspectResponse {
            id: Some("abc".into()),
            name: Some("/web".into()),
            created: Some("2024-01-02T03:04:05.5Z".into()),
            state: Some(DockerState {
                status: Some(ContainerStateStatusEnum::RUNNING),
                started_at: Some("2024-01-02T03:04:06Z".into()),
                ..Default::default()
            }),
            config: Some(DockerConfig {
                image: Some("busybox:latest".into()),
                env: Some(vec!["PATH=/bin".into()]),
                cmd: Some(vec!["sh".into()]),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                memory: Some(0),
                cpu_quota: Some(150_000),
                cpu_period: Some(100_000),
                pids_limit: Some(-1),
                restart_policy: Some(restart_to_docker(RestartPolicy::OnFailure)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let rc = from_inspect(c);
        assert_eq!(rc.name, "web");
        assert_eq!(rc.state, ContainerState::Running);
        assert_eq!(rc.config.cpu_limit, Some(1.5));
        assert_eq!((rc.config.memory_limit_bytes, rc.config.pids_limit), (None, None));
        assert_eq!(rc.config.restart_policy, RestartPolicy::OnFailure);
        assert_eq!(rc.config.env["PATH"], "/bin");
        assert_eq!(rc.created_at, Some(UnixMillis(1_704_164_645_500)));
        assert_eq!(rc.started_at, Some(UnixMillis(1_704_164_646_000)));
    }

    #[test]
    fn summary_leaves_unknown_limits_empty() {
        let s = ContainerSummary {
            id: Some("abc".into()),
            names: Some(vec!["/db".into()]),
            image: Some("postgres".into()),
            command: Some("docker-entrypoint.sh postgres".into()),
            created: Some(1_700_000_000),
            state: Some(bollard::models::ContainerSummaryStateEnum::EXITED),
            labels: Some(HashMap::from([("a".into(), "b".into())])),
            ..Default::default()
        };
        let rc = from_summary(s);
        assert_eq!((rc.name.as_str(), rc.state), ("db", ContainerState::Stopped));
        assert_eq!(rc.config.command, Some(vec!["docker-entrypoint.sh".into(), "postgres".into()]));
        assert_eq!(rc.created_at, Some(UnixMillis(1_700_000_000_000)));
        assert_eq!(rc.config.labels["a"], "b");
        assert_eq!((rc.config.memory_limit_bytes, rc.config.cpu_limit, rc.config.pids_limit), (None, None, None));
    }

    #[test]
    fn log_frames_become_lines() {
        let mut a = LogAssembler::new(true, None);
        a.push(LogStream::Stdout, b"2024-01-02T03:04:05.000000001Z out\n");
        a.push(LogStream::Stderr, b"2024-01-02T03:04:06Z err\r\n");
        // A long line split in two pieces, each with its own stamp.
        a.push(LogStream::Stdout, b"2024-01-02T03:04:07Z part-");
        a.push(LogStream::Stdout, b"2024-01-02T03:04:08Z two\n");
        a.push(LogStream::Stdout, b"2024-01-02T03:04:09Z no newline");
        let lines = a.finish();
        let text: Vec<_> = lines.iter().map(|l| (l.stream, l.line.as_str(), l.timestamp)).collect();
        assert_eq!(
            text,
            [
                (LogStream::Stdout, "out", Some(UnixMillis(1_704_164_645_000))),
                (LogStream::Stderr, "err", Some(UnixMillis(1_704_164_646_000))),
                (LogStream::Stdout, "part-two", Some(UnixMillis(1_704_164_647_000))),
                (LogStream::Stdout, "no newline", Some(UnixMillis(1_704_164_649_000))),
            ]
        );
    }

    #[test]
    fn log_since_and_timestamps_flag_apply() {
        let mut a = LogAssembler::new(false, Some(UnixMillis(1_704_164_645_500)));
        a.push(LogStream::Stdout, b"2024-01-02T03:04:05Z old\n2024-01-02T03:04:06Z new\n");
        a.push(LogStream::Console, b"no stamp at all\n");
        let lines: Vec<_> = a.finish().into_iter().map(|l| (l.line, l.timestamp)).collect();
        assert_eq!(lines, [("new".to_owned(), None), ("no stamp at all".to_owned(), None)]);
    }

    #[test]
    fn update_bodies_set_only_what_the_patch_changes() {
        let patch = ConfigPatch {
            cpu_limit: Some(Some(1.5)),
            memory_limit_bytes: Some(Some(256 << 20)),
            pids_limit: Some(None),
            restart_policy: Some(RestartPolicy::Always),
            labels: Some(BTreeMap::new()),
        };
        let body = update_body(&patch, Some(128 << 20));
        assert_eq!(body.nano_cpus, Some(1_500_000_000));
        assert_eq!((body.memory, body.memory_swap), (Some(256 << 20), Some(512 << 20)));
        assert_eq!(body.pids_limit, Some(-1), "no limit");
        assert_eq!(body.restart_policy.unwrap().name, Some(RestartPolicyNameEnum::ALWAYS));
        // Unlimited swap stays unlimited.
        assert_eq!(update_body(&patch, Some(-1)).memory_swap, Some(-1));
        let only_pids = update_body(&ConfigPatch { pids_limit: Some(Some(9)), ..Default::default() }, None);
        assert_eq!(
            (only_pids.memory, only_pids.memory_swap, only_pids.nano_cpus, only_pids.pids_limit),
            (None, None, None, Some(9))
        );
        assert!(only_pids.restart_policy.is_none());
    }
}
