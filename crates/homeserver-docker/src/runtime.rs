//! [`DockerRuntime`]: the [`ContainerRuntime`] port over the Docker Engine API.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecResults, StartExecOptions, StartExecResults};
use bollard::models::{ContainerInspectResponse, ExecConfig, ExecInspectResponse};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RestartContainerOptionsBuilder, StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use futures_util::{Stream, StreamExt, stream};
use homeserver_domain::{
    ConfigPatch, ContainerRuntime, ContainerStats, CreateSpec, ExecRequest, ExecResult, FieldError, LogFollower,
    LogLine, LogQuery, LogStream, RuntimeContainer, RuntimeError, RuntimeKind,
};
use tokio::io::AsyncWriteExt;
use tracing::{Instrument, debug, info_span, instrument, warn};

use crate::convert::{self, LogAssembler};
use crate::error::{CallKind, Failure, classify, internal, unavailable};
use crate::events::{self, CONTAINER_ACTIONS, DockerEvent};
use crate::exec::{CappedBuffer, kill_exec_tree};
use crate::stats::{self, CpuHistory, Meters, Target, TargetCache};
use homeserver_cgroup::{CgroupError, CgroupReader, CgroupRoots, CgroupSample};

/// bollard's own per-request timeout (it only bounds the wait for response
/// headers). Set far out: every call is bounded by [`DockerOptions::timeout`]
/// (plus the stop grace period for `stop`/`restart`) instead.
const BOLLARD_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long `exec` waits for Docker to record the exit code after the
/// output closed.
const EXEC_EXIT_WAIT: Duration = Duration::from_secs(2);

/// Longest a ping may take, connecting included (see `ping`).
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// CPU samples older than this are not used for a delta.
const CPU_SAMPLE_MAX_AGE: Duration = Duration::from_secs(120);

/// Gap between the two samples taken when a container has no recent one.
const CPU_FIRST_GAP: Duration = Duration::from_millis(250);

/// How long `stats` trusts a container's init pid, state and memory limit
/// from `inspect` (one inspect per running container per TTL is most of
/// what stats cost dockerd). A stale pid or state costs nothing wrong: the
/// cgroup files kept open for the container answer `ENODEV` once it stops
/// or restarts, and the container is inspected again at once. Only a
/// memory limit changed outside homeserver (`docker update`) shows this
/// late; homeserver's own updates drop the entry.
const TARGET_TTL: Duration = Duration::from_secs(10);

/// Where and how patiently to reach the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerOptions {
    /// The daemon's Unix socket (`/var/run/docker.sock`).
    pub socket: PathBuf,
    /// Longest wait for one call (a `stop` gets its grace period on top;
    /// `exec` is bounded by its own `timeout_ms` once started).
    pub timeout: Duration,
}

impl Default for DockerOptions {
    fn default() -> Self {
        Self { socket: PathBuf::from("/var/run/docker.sock"), timeout: Duration::from_secs(30) }
    }
}

/// The Docker Engine as a [`ContainerRuntime`].
///
/// Cheap to clone (shared state behind an `Arc`). Construction never fails:
/// the client is made on first use, and every call while the daemon is down
/// returns [`RuntimeError::Unavailable`]. Connections are per request, so
/// calls succeed again as soon as the daemon is back; after a transport
/// failure the client is rebuilt and the API version negotiated again (so a
/// daemon upgraded underneath is handled).
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: DockerOptions,
    /// The client once connected and version-negotiated.
    client: Mutex<Option<Docker>>,
    /// Previous CPU counters per container (stats fallback).
    cpu: Mutex<CpuHistory>,
    /// Reads container cgroups directly; `None` when the host's cgroup
    /// tree cannot be read (then stats come from Docker's API).
    cgroup: Option<Arc<CgroupReader>>,
    /// Init pid and state per container, for a short while.
    targets: Mutex<TargetCache>,
    /// CPU meters for the cgroup path, per full container id.
    meters: Mutex<Meters>,
    /// Where `/proc` is (pids from Docker are looked up there).
    proc_root: PathBuf,
}

impl DockerRuntime {
    /// A runtime for the daemon at `options.socket`; does not touch the
    /// daemon (see [`DockerRuntime::ping`](ContainerRuntime::ping)).
    pub fn connect(options: DockerOptions) -> Self {
        Self::build(options, true)
    }

    /// The same runtime with stats read from the container's cgroup files
    /// (`true`, the default, falling back on the API when they cannot be
    /// read) or always from Docker's stats API (`false`, e.g. when
    /// homeserver runs in a container without the host's pid namespace).
    /// Starts with fresh caches.
    #[must_use]
    pub fn with_cgroup_stats(self, enabled: bool) -> Self {
        Self::build(self.inner.options.clone(), enabled)
    }

    fn build(options: DockerOptions, cgroup_stats: bool) -> Self {
        let cgroup = if cgroup_stats {
            match CgroupReader::new(CgroupRoots::default()) {
                Ok(reader) => Some(Arc::new(reader)),
                Err(e) => {
                    debug!(error = %e, "cgroup files unreadable; docker stats will use the stats API");
                    None
                }
            }
        } else {
            None
        };
        Self {
            inner: Arc::new(Inner {
                options,
                client: Mutex::new(None),
                cpu: Mutex::new(CpuHistory::default()),
                cgroup,
                targets: Mutex::new(TargetCache::default()),
                meters: Mutex::new(Meters::default()),
                proc_root: PathBuf::from("/proc"),
            }),
        }
    }

    /// The options it was built with.
    pub fn options(&self) -> &DockerOptions {
        &self.inner.options
    }

    /// Container events (create, start, die, stop, pause, unpause, destroy,
    /// oom, rename) as they happen, for the app to trigger reconciliation.
    ///
    /// The stream is endless while the daemon runs. It ends after yielding
    /// an error (daemon down or restarted, connection dropped): reconnecting
    /// is the caller's job: call `events()` again after a back-off and
    /// reconcile with `list`, since events during the gap are lost.
    ///
    /// Events are asked for from the second `events()` is called (Docker's
    /// `since`, whole seconds), not from the first poll, so nothing is missed
    /// between the two; events from up to a second earlier may show up too.
    pub fn events(&self) -> impl Stream<Item = Result<DockerEvent, RuntimeError>> + Send + 'static {
        let this = self.clone();
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default();
        stream::once(async move { this.client().await.map(|d| (this, d)) })
            .map(move |connected| match connected {
                Ok((this, docker)) => {
                    let filters = std::collections::HashMap::from([
                        ("type", vec!["container"]),
                        ("event", CONTAINER_ACTIONS.to_vec()),
                    ]);
                    let mut options = EventsOptionsBuilder::new().filters(&filters);
                    if !since.is_empty() {
                        options = options.since(&since);
                    }
                    let options = options.build();
                    docker
                        .events(Some(options))
                        .filter_map(move |item| {
                            let out = match item {
                                Ok(msg) => events::from_message(msg).map(Ok),
                                Err(e) => Some(Err(this.to_runtime_error_sync("events", "", CallKind::Daemon, &e))),
                            };
                            std::future::ready(out)
                        })
                        .scan(false, |failed, item| {
                            // Stop after the first error: the caller reconnects.
                            if *failed {
                                return std::future::ready(None);
                            }
                            *failed = item.is_err();
                            std::future::ready(Some(item))
                        })
                        .left_stream()
                }
                Err(e) => stream::iter([Err(e)]).right_stream(),
            })
            .flatten()
    }

    /// The connected client, connecting and negotiating on first use.
    async fn client(&self) -> Result<Docker, RuntimeError> {
        if let Some(d) = self.inner.client.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            return Ok(d.clone());
        }
        let socket =
            self.inner.options.socket.to_str().ok_or_else(|| {
                unavailable(format!("socket path {} is not UTF-8", self.inner.options.socket.display()))
            })?;
        let docker = Docker::connect_with_unix(socket, BOLLARD_TIMEOUT.as_secs(), API_DEFAULT_VERSION)
            .map_err(|e| self.to_runtime_error_sync("connect", socket, CallKind::Daemon, &e))?;
        // Our client speaks API 1.53; older daemons reject newer paths, so
        // settle on the daemon's version when it is lower.
        let docker = tokio::time::timeout(self.inner.options.timeout, docker.negotiate_version())
            .await
            .map_err(|_| RuntimeError::Timeout(format!("docker version negotiation on {socket}")))?
            .map_err(|e| self.to_runtime_error_sync("negotiate version", socket, CallKind::Daemon, &e))?;
        debug!(version = ?docker.client_version(), "docker client ready");
        *self.inner.client.lock().unwrap_or_else(PoisonError::into_inner) = Some(docker.clone());
        Ok(docker)
    }

    /// Drops the client after a transport failure.
    fn invalidate(&self) {
        self.inner.client.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// Maps an error that needs no state lookup (conflicts become `Rejected`).
    fn to_runtime_error_sync(&self, op: &'static str, target: &str, kind: CallKind, e: &BollardError) -> RuntimeError {
        match classify(kind, e) {
            Failure::Unavailable(reason) => {
                self.invalidate();
                if target.is_empty() {
                    unavailable(format!("{op}: {reason}"))
                } else {
                    unavailable(format!("{op} {target}: {reason}"))
                }
            }
            Failure::NotFound => RuntimeError::NotFound,
            Failure::NoSuchImage => RuntimeError::SourceNotFound(target.to_owned()),
            Failure::NameTaken => RuntimeError::NameTaken,
            Failure::Conflict(msg) | Failure::Rejected(msg) => RuntimeError::Rejected(msg),
            Failure::Timeout => RuntimeError::Timeout(format!("docker {op} {target}")),
            Failure::Internal(msg) => internal(op, target, msg),
        }
    }

    /// Maps an error; a conflict (`409`) becomes `InvalidState` with the
    /// container's current state, or `Rejected` if that cannot be read.
    async fn to_runtime_error(&self, op: &'static str, target: &str, kind: CallKind, e: BollardError) -> RuntimeError {
        if let Failure::Conflict(msg) = classify(kind, &e) {
            return match self.inspect_raw(target).await {
                Ok(c) => RuntimeError::InvalidState(convert::state_of(&c)),
                Err(_) => RuntimeError::Rejected(msg),
            };
        }
        self.to_runtime_error_sync(op, target, kind, &e)
    }

    /// Runs one daemon call with the call timeout (plus `extra`) and error mapping.
    async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        target: &str,
        kind: CallKind,
        extra: Duration,
        f: F,
    ) -> Result<T, RuntimeError>
    where
        F: FnOnce(Docker) -> Fut,
        Fut: Future<Output = Result<T, BollardError>>,
    {
        let docker = self.client().await?;
        let limit = self.inner.options.timeout + extra;
        match tokio::time::timeout(limit, f(docker)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.to_runtime_error(op, target, kind, e).await),
            Err(_) => Err(RuntimeError::Timeout(format!("docker {op} {target} took longer than {limit:?}"))),
        }
    }

    async fn inspect_raw(&self, runtime_id: &str) -> Result<ContainerInspectResponse, RuntimeError> {
        // Not `call`: a conflict cannot happen here, and `call` may come back to us.
        let docker = self.client().await?;
        let limit = self.inner.options.timeout;
        match tokio::time::timeout(limit, docker.inspect_container(runtime_id, None)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(self.to_runtime_error_sync("inspect", runtime_id, CallKind::Container, &e)),
            Err(_) => Err(RuntimeError::Timeout(format!("docker inspect {runtime_id} took longer than {limit:?}"))),
        }
    }

    async fn inspect_exec(&self, exec_id: &str) -> Result<ExecInspectResponse, RuntimeError> {
        self.call("inspect exec", exec_id, CallKind::Container, Duration::ZERO, |d| async move {
            d.inspect_exec(exec_id).await
        })
        .await
    }

    /// Kills a timed-out exec's process tree, best effort.
    async fn kill_exec(&self, exec_id: &str) {
        let info = match self.inspect_exec(exec_id).await {
            Ok(info) => info,
            Err(e) => {
                warn!(exec_id, error = %e, "exec timed out; cannot inspect it to kill it");
                return;
            }
        };
        let (Some(pid), Some(container_id)) = (info.pid.filter(|p| *p > 0), info.container_id) else {
            return;
        };
        if info.running == Some(false) {
            return;
        }
        let proc_root = self.inner.proc_root.clone();
        let killed = tokio::task::spawn_blocking(move || kill_exec_tree(&proc_root, pid, &container_id)).await;
        match killed {
            Ok(Ok(n)) => debug!(exec_id, pid, killed = n, "killed timed-out exec"),
            Ok(Err(why)) => warn!(exec_id, pid, why, "exec timed out and could not be killed; it keeps running"),
            Err(e) => warn!(exec_id, error = %e, "kill task failed"),
        }
    }

    /// A container's full id, init pid, state and memory limit, from the
    /// cache when `fresh` is false and the entry is recent; `true` in the
    /// result means it came from the cache.
    async fn target(&self, runtime_id: &str, fresh: bool) -> Result<(Target, bool), RuntimeError> {
        if !fresh
            && let Some(t) =
                self.inner.targets.lock().unwrap_or_else(PoisonError::into_inner).get(runtime_id, TARGET_TTL)
        {
            return Ok((t, true));
        }
        let c = self.inspect_raw(runtime_id).await?;
        let target = Target {
            full_id: c.id.clone().unwrap_or_else(|| runtime_id.to_owned()),
            pid: c.state.as_ref().and_then(|s| s.pid).and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
            state: convert::state_of(&c),
            memory_limit: convert::from_inspect(c).config.memory_limit_bytes,
            at: Instant::now(),
        };
        self.inner.targets.lock().unwrap_or_else(PoisonError::into_inner).put(runtime_id, target.clone(), TARGET_TTL);
        Ok((target, false))
    }

    /// A container without processes: nothing to measure (Docker's API
    /// would report zeros too).
    fn idle_stats(&self, target: &Target) -> ContainerStats {
        self.inner.meters.lock().unwrap_or_else(PoisonError::into_inner).forget(&target.full_id);
        ContainerStats {
            runtime: "docker".to_owned(),
            state: target.state.as_str().to_owned(),
            memory_limit_bytes: target.memory_limit,
            ..ContainerStats::default()
        }
    }

    /// Stats from the container's cgroup files (microseconds, no daemon).
    async fn stats_from_cgroup(
        &self,
        reader: &Arc<CgroupReader>,
        target: &Target,
    ) -> Result<ContainerStats, CgroupError> {
        let (mut sample, mut at) = read_cgroup(reader, target).await?;
        let first =
            self.inner.meters.lock().unwrap_or_else(PoisonError::into_inner).is_new(&target.full_id, target.pid);
        let mut cpu = self.inner.meters.lock().unwrap_or_else(PoisonError::into_inner).update(
            &target.full_id,
            target.pid,
            sample.cpu_usage_ns,
            at,
        );
        if first {
            // No baseline yet: a second reading shortly after gives a real figure.
            tokio::time::sleep(CPU_FIRST_GAP).await;
            (sample, at) = read_cgroup(reader, target).await?;
            cpu = self.inner.meters.lock().unwrap_or_else(PoisonError::into_inner).update(
                &target.full_id,
                target.pid,
                sample.cpu_usage_ns,
                at,
            );
        }
        let mut stats = sample.to_stats(cpu);
        stats.runtime = "docker".to_owned();
        stats.state = target.state.as_str().to_owned();
        // The limit the user set wins over the kernel's view (which hides limits above MemTotal).
        stats.memory_limit_bytes = target.memory_limit.or(stats.memory_limit_bytes);
        Ok(stats)
    }

    /// One `one_shot` stats sample.
    async fn stats_sample(&self, runtime_id: &str) -> Result<bollard::models::ContainerStatsResponse, RuntimeError> {
        let options = StatsOptionsBuilder::new().stream(false).one_shot(true).build();
        self.call("stats", runtime_id, CallKind::Container, Duration::ZERO, |d| async move {
            let mut s = std::pin::pin!(d.stats(runtime_id, Some(options)));
            match s.next().await {
                Some(r) => r,
                None => Err(BollardError::DockerStreamError { error: "empty stats stream".to_owned() }),
            }
        })
        .await
    }

    /// Stats from Docker's API with CPU deltas between our own samples.
    async fn stats_from_api(
        &self,
        runtime_id: &str,
        memory_limit: Option<u64>,
    ) -> Result<ContainerStats, RuntimeError> {
        let mut sample = self.stats_sample(runtime_id).await?;
        let mut now = stats::cpu_sample(&sample, Instant::now());
        let mut prev = {
            let mut hist = self.inner.cpu.lock().unwrap_or_else(PoisonError::into_inner);
            hist.prune(CPU_SAMPLE_MAX_AGE);
            now.and_then(|n| hist.swap(runtime_id, n))
        };
        if prev.is_none() && now.is_some() {
            // No earlier sample: take a second one shortly after.
            tokio::time::sleep(CPU_FIRST_GAP).await;
            prev = now;
            sample = self.stats_sample(runtime_id).await?;
            now = stats::cpu_sample(&sample, Instant::now());
            if let Some(n) = now {
                self.inner.cpu.lock().unwrap_or_else(PoisonError::into_inner).swap(runtime_id, n);
            }
        }
        let cpu = match (prev, now) {
            (Some(p), Some(n)) => stats::cpu_percent(&p, &n),
            _ => 0.0,
        };
        Ok(stats::to_stats(&sample, cpu, memory_limit))
    }
}

/// Log options: stdout and stderr, always with timestamps (they date each
/// line and let `since` filter below Docker's whole-second precision).
fn logs_options(query: &LogQuery, follow: bool) -> bollard::query_parameters::LogsOptions {
    let tail = query.tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
    let mut builder = LogsOptionsBuilder::new().stdout(true).stderr(true).timestamps(true).tail(&tail).follow(follow);
    if let Some(since) = query.since {
        let secs = since.as_millis().div_euclid(1_000).clamp(0, i64::from(i32::MAX));
        builder = builder.since(i32::try_from(secs).unwrap_or(i32::MAX));
    }
    builder.build()
}

type LogFrames =
    std::pin::Pin<Box<dyn Stream<Item = Result<bollard::container::LogOutput, BollardError>> + Send + 'static>>;

/// A followed Docker log: bollard's `follow=true` stream, assembled into
/// lines. Dropping it closes the connection, which ends Docker's side.
/// Docker ends the stream when the container stops.
struct DockerLogFollower {
    runtime: DockerRuntime,
    runtime_id: String,
    frames: LogFrames,
    assembler: LogAssembler,
    ready: std::collections::VecDeque<LogLine>,
    ended: bool,
}

#[async_trait]
impl LogFollower for DockerLogFollower {
    async fn next_line(&mut self) -> Option<Result<LogLine, RuntimeError>> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Some(Ok(line));
            }
            if self.ended {
                return None;
            }
            match self.frames.next().await {
                Some(Ok(frame)) => {
                    match frame {
                        bollard::container::LogOutput::StdOut { message } => {
                            self.assembler.push(LogStream::Stdout, &message);
                        }
                        bollard::container::LogOutput::StdErr { message } => {
                            self.assembler.push(LogStream::Stderr, &message);
                        }
                        bollard::container::LogOutput::Console { message } => {
                            self.assembler.push(LogStream::Console, &message);
                        }
                        bollard::container::LogOutput::StdIn { .. } => {}
                    }
                    self.ready.extend(self.assembler.take_lines());
                }
                Some(Err(e)) => {
                    self.ended = true;
                    let e =
                        self.runtime.to_runtime_error_sync("follow logs", &self.runtime_id, CallKind::Container, &e);
                    return Some(Err(e));
                }
                None => {
                    self.ended = true;
                    self.ready.extend(self.assembler.flush());
                }
            }
        }
    }
}

/// `read_container` off the async threads, with the container's files kept
/// open between calls: the pid Docker gave must be in the container's
/// cgroup when they are opened (in another pid namespace, or after pid
/// reuse, it could name an unrelated process, whose figures must not pass
/// for the container's).
///
/// Returns the instant the CPU counter was read too, taken by the reader
/// right at that read: the CPU figure divides by the time between two
/// reads, and any later instant can be late (seen: a task resuming 0.9 s
/// after the read under CI load made a first figure of 467 %; an instant
/// taken after the whole read, behind the reader's lock, 524 %).
async fn read_cgroup(reader: &Arc<CgroupReader>, target: &Target) -> Result<(CgroupSample, Instant), CgroupError> {
    let reader = Arc::clone(reader);
    let (pid, full_id) = (target.pid, target.full_id.clone());
    if full_id.len() < 12 {
        return Err(CgroupError::Parse {
            path: PathBuf::from("/proc"),
            what: "no full container id to check the pid against",
        });
    }
    tokio::task::spawn_blocking(move || reader.read_container_timed(pid, &full_id))
        .await
        .unwrap_or_else(|e| Err(CgroupError::Io { path: PathBuf::from("/proc"), source: std::io::Error::other(e) }))
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    /// Answers within [`PING_TIMEOUT`] (connecting included), whatever the
    /// call timeout: a daemon that cannot answer a ping that fast is
    /// unavailable for the caller's purposes.
    #[instrument(skip_all, fields(runtime = "docker"))]
    async fn ping(&self) -> Result<(), RuntimeError> {
        let limit = PING_TIMEOUT.min(self.inner.options.timeout);
        let ping = self.call("ping", "", CallKind::Daemon, Duration::ZERO, |d| async move { d.ping().await });
        match tokio::time::timeout(limit, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RuntimeError::Timeout(what))) => Err(unavailable(what)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(unavailable(format!("ping: no answer within {limit:?}"))),
        }
    }

    #[instrument(skip_all, fields(runtime = "docker"))]
    async fn list(&self) -> Result<Vec<RuntimeContainer>, RuntimeError> {
        let options = ListContainersOptionsBuilder::new().all(true).build();
        let list =
            self.call("list", "", CallKind::Daemon, Duration::ZERO, |d| async move {
                d.list_containers(Some(options)).await
            })
            .await?;
        // Stats may have stopped (nothing running): close what they kept.
        if let Some(reader) = &self.inner.cgroup {
            reader.close_idle();
        }
        Ok(list.into_iter().map(convert::from_summary).collect())
    }

    #[instrument(skip(self), fields(runtime = "docker"))]
    async fn inspect(&self, runtime_id: &str) -> Result<RuntimeContainer, RuntimeError> {
        self.inspect_raw(runtime_id).await.map(convert::from_inspect)
    }

    #[instrument(skip_all, fields(runtime = "docker", name = %spec.name, image = %spec.source))]
    async fn create(&self, spec: &CreateSpec) -> Result<String, RuntimeError> {
        let body = convert::create_body(spec);
        let options = CreateContainerOptionsBuilder::new().name(spec.name.as_str()).build();
        // No pull: there is no registry here, a missing image fails at once.
        let created = self
            .call("create", &spec.source, CallKind::Create, Duration::ZERO, |d| async move {
                d.create_container(Some(options), body).await
            })
            .await?;
        for w in created.warnings.iter().filter(|w| !w.is_empty()) {
            warn!(name = %spec.name, warning = %w, "docker create warning");
        }
        Ok(created.id)
    }

    #[instrument(skip(self), fields(runtime = "docker"))]
    async fn start(&self, runtime_id: &str) -> Result<(), RuntimeError> {
        // 304 (already started) is a success in bollard.
        self.call("start", runtime_id, CallKind::Container, Duration::ZERO, |d| async move {
            d.start_container(runtime_id, None).await
        })
        .await
    }

    #[instrument(skip(self), fields(runtime = "docker"))]
    async fn stop(&self, runtime_id: &str, timeout_secs: u32) -> Result<(), RuntimeError> {
        let options = StopContainerOptionsBuilder::new().t(i32::try_from(timeout_secs).unwrap_or(i32::MAX)).build();
        self.call("stop", runtime_id, CallKind::Container, Duration::from_secs(timeout_secs.into()), |d| async move {
            d.stop_container(runtime_id, Some(options)).await
        })
        .await
    }

    #[instrument(skip(self), fields(runtime = "docker"))]
    async fn restart(&self, runtime_id: &str, timeout_secs: u32) -> Result<(), RuntimeError> {
        let options = RestartContainerOptionsBuilder::new().t(i32::try_from(timeout_secs).unwrap_or(i32::MAX)).build();
        self.call(
            "restart",
            runtime_id,
            CallKind::Container,
            Duration::from_secs(timeout_secs.into()),
            |d| async move { d.restart_container(runtime_id, Some(options)).await },
        )
        .await
    }

    #[instrument(skip(self), fields(runtime = "docker"))]
    async fn pause(&self, runtime_id: &str) -> Result<(), RuntimeError> {
        self.call("pause", runtime_id, CallKind::Container, Duration::ZERO, |d| async move {
            d.pause_container(runtime_id).await
        })
        .await
    }

    #[instrument(skip(self), fields(runtime = "docker"))]
    async fn unpause(&self, runtime_id: &str) -> Result<(), RuntimeError> {
        self.call("unpause", runtime_id, CallKind::Container, Duration::ZERO, |d| async move {
            d.unpause_container(runtime_id).await
        })
        .await
    }

    #[instrument(skip(self), fields(runtime = "docker"))]
    async fn remove(&self, runtime_id: &str, force: bool) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::new().force(force).build();
        self.call("remove", runtime_id, CallKind::Container, Duration::ZERO, |d| async move {
            d.remove_container(runtime_id, Some(options)).await
        })
        .await?;
        if let Some(reader) = &self.inner.cgroup {
            reader.forget_prefix(runtime_id);
        }
        Ok(())
    }

    #[instrument(skip(self), fields(runtime = "docker"))]
    async fn logs(&self, runtime_id: &str, query: LogQuery) -> Result<Vec<LogLine>, RuntimeError> {
        let options = logs_options(&query, false);
        self.call("logs", runtime_id, CallKind::Container, Duration::ZERO, |d| async move {
            let mut assembler = LogAssembler::new(query.timestamps, query.since);
            let mut frames = std::pin::pin!(d.logs(runtime_id, Some(options)));
            while let Some(frame) = frames.next().await {
                match frame? {
                    bollard::container::LogOutput::StdOut { message } => assembler.push(LogStream::Stdout, &message),
                    bollard::container::LogOutput::StdErr { message } => assembler.push(LogStream::Stderr, &message),
                    bollard::container::LogOutput::Console { message } => {
                        assembler.push(LogStream::Console, &message);
                    }
                    bollard::container::LogOutput::StdIn { .. } => {}
                }
            }
            Ok(assembler.finish())
        })
        .await
    }

    #[instrument(skip(self), fields(runtime = "docker"))]
    async fn follow_logs(&self, runtime_id: &str, query: LogQuery) -> Result<Box<dyn LogFollower>, RuntimeError> {
        // The log stream only fails once polled: check the container first.
        self.inspect_raw(runtime_id).await?;
        let docker = self.client().await?;
        let frames = docker.logs(runtime_id, Some(logs_options(&query, true)));
        Ok(Box::new(DockerLogFollower {
            runtime: self.clone(),
            runtime_id: runtime_id.to_owned(),
            frames: Box::pin(frames),
            assembler: LogAssembler::new(query.timestamps, query.since),
            ready: std::collections::VecDeque::new(),
            ended: false,
        }))
    }

    /// Docker can change limits and the restart policy of an existing
    /// container, but not remove a CPU or memory limit (its update API
    /// reads 0 as "unchanged"). Labels are homeserver's to keep.
    fn check_update(&self, patch: &ConfigPatch) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if patch.cpu_limit == Some(None) {
            errors.push(FieldError::new(
                "config.cpu_limit",
                "docker cannot remove the CPU limit of an existing container; set a new value or recreate it",
            ));
        }
        if patch.memory_limit_bytes == Some(None) {
            errors.push(FieldError::new(
                "config.memory_limit_bytes",
                "docker cannot remove the memory limit of an existing container; set a new value or recreate it",
            ));
        }
        errors
    }

    #[instrument(skip(self, patch), fields(runtime = "docker"))]
    async fn update(&self, runtime_id: &str, patch: &ConfigPatch) -> Result<(), RuntimeError> {
        // Also proves the container exists when only labels change.
        let current = self.inspect_raw(runtime_id).await?;
        if !patch.touches_limits() {
            return Ok(());
        }
        let swap = current.host_config.as_ref().and_then(|h| h.memory_swap);
        let body = convert::update_body(patch, swap);
        let result = self
            .call("update", runtime_id, CallKind::Container, Duration::ZERO, |d| async move {
                d.update_container(runtime_id, body).await
            })
            .await;
        self.inner.targets.lock().unwrap_or_else(PoisonError::into_inner).forget(runtime_id);
        result
    }

    #[instrument(skip(self, request), fields(runtime = "docker", command = ?request.command))]
    async fn exec(&self, runtime_id: &str, request: &ExecRequest) -> Result<ExecResult, RuntimeError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(request.timeout_ms);
        let config = ExecConfig {
            attach_stdin: Some(request.stdin.is_some()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            env: (!request.env.is_empty()).then(|| convert::env_to_docker(&request.env)),
            cmd: Some(request.command.clone()),
            working_dir: request.workdir.clone(),
            ..ExecConfig::default()
        };
        let CreateExecResults { id: exec_id } = self
            .call("exec", runtime_id, CallKind::Container, Duration::ZERO, |d| async move {
                d.create_exec(runtime_id, config).await
            })
            .await?;
        let start = StartExecOptions { detach: false, tty: false, output_capacity: None };
        let attached = self
            .call("exec start", runtime_id, CallKind::Container, Duration::ZERO, |d| {
                let exec_id = exec_id.clone();
                async move { d.start_exec(&exec_id, Some(start)).await }
            })
            .await?;
        let StartExecResults::Attached { mut output, mut input } = attached else {
            return Err(internal("exec start", runtime_id, "the daemon detached an attached exec"));
        };

        // Feed stdin from its own task so a process that does not read it
        // cannot block the output loop; closing our side sends EOF.
        let stdin = request.stdin.clone();
        let writer = tokio::spawn(
            async move {
                if let Some(text) = stdin {
                    let _ = input.write_all(text.as_bytes()).await;
                    let _ = input.shutdown().await;
                }
                // Keep `input` alive until the exec ends: dropping it early is harmless,
                // but shutting down without stdin would be pointless.
                input
            }
            .instrument(info_span!("exec_stdin")),
        );

        let mut stdout = CappedBuffer::new(request.output_cap_bytes);
        let mut stderr = CappedBuffer::new(request.output_cap_bytes);
        let read = tokio::time::timeout_at(deadline, async {
            while let Some(chunk) = output.next().await {
                match chunk {
                    Ok(bollard::container::LogOutput::StdErr { message }) => stderr.push(&message),
                    Ok(other) => stdout.push(&other.into_bytes()),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await;
        writer.abort();
        drop(output);

        let timed_out = match read {
            Ok(Ok(())) => false,
            Ok(Err(e)) => return Err(self.to_runtime_error("exec read", runtime_id, CallKind::Container, e).await),
            Err(_) => true,
        };
        let truncated = timed_out || stdout.dropped() || stderr.dropped();
        let exit_code = if timed_out {
            self.kill_exec(&exec_id).await;
            None
        } else {
            // The output closes when the process exits; Docker may record the code a moment later.
            let wait_until = Instant::now() + EXEC_EXIT_WAIT;
            loop {
                let info = self.inspect_exec(&exec_id).await?;
                if info.running != Some(true) || Instant::now() >= wait_until {
                    break info.exit_code;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        Ok(ExecResult {
            exit_code,
            stdout: stdout.into_string(),
            stderr: stderr.into_string(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            truncated,
        })
    }

    #[instrument(skip(self), fields(runtime = "docker"))]
    async fn stats(&self, runtime_id: &str) -> Result<ContainerStats, RuntimeError> {
        let reader = self.inner.cgroup.clone();
        // The pid cache only serves the cgroup path, where a stale pid shows up as `Gone`.
        let (mut target, mut cached) = self.target(runtime_id, reader.is_none()).await?;
        if !target.has_processes() {
            return Ok(self.idle_stats(&target));
        }
        if let Some(reader) = reader {
            loop {
                match self.stats_from_cgroup(&reader, &target).await {
                    Ok(stats) => return Ok(stats),
                    // A cached pid may be stale (restarted): look again once.
                    Err(CgroupError::Gone { .. }) if cached => {
                        (target, cached) = self.target(runtime_id, true).await?;
                        if !target.has_processes() {
                            return Ok(self.idle_stats(&target));
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "cgroup read failed; using docker's stats API");
                        if cached {
                            (target, _) = self.target(runtime_id, true).await?;
                            if !target.has_processes() {
                                return Ok(self.idle_stats(&target));
                            }
                        }
                        break;
                    }
                }
            }
        }
        let mut stats = self.stats_from_api(runtime_id, target.memory_limit).await?;
        stats.state = target.state.as_str().to_owned();
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn runtime_at(path: &Path) -> DockerRuntime {
        DockerRuntime::connect(DockerOptions { socket: path.to_owned(), timeout: Duration::from_secs(2) })
    }

    #[tokio::test]
    async fn a_missing_socket_is_unavailable_not_a_panic() {
        let rt = runtime_at(Path::new("/nonexistent/homeserver/docker.sock"));
        for result in [rt.ping().await.map(drop), rt.list().await.map(drop), rt.start("x").await] {
            match result {
                Err(RuntimeError::Unavailable { runtime: RuntimeKind::Docker, reason }) => {
                    assert!(reason.contains("/nonexistent/homeserver/docker.sock"), "{reason}");
                }
                other => panic!("expected Unavailable, got {other:?}"),
            }
        }
        let mut events = std::pin::pin!(rt.events());
        assert!(matches!(events.next().await, Some(Err(RuntimeError::Unavailable { .. }))));
        assert!(events.next().await.is_none(), "the stream ends after the error");
    }

    #[tokio::test]
    async fn cgroup_reads_refuse_a_pid_outside_the_container() {
        let dir = std::env::temp_dir().join(format!("hs-docker-pidns-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("77")).unwrap();
        std::fs::write(dir.join("77/cgroup"), "12:memory:/user.slice\n").unwrap();
        let roots = CgroupRoots { proc_root: dir.clone(), ..CgroupRoots::default() };
        let Ok(reader) = CgroupReader::new(roots) else { return };
        let reader = Arc::new(reader);
        let target = Target {
            full_id: "0123456789abcdef0123456789abcdef".into(),
            pid: 77,
            state: homeserver_domain::ContainerState::Running,
            memory_limit: None,
            at: Instant::now(),
        };
        assert!(matches!(read_cgroup(&reader, &target).await, Err(CgroupError::Parse { .. })));
        let gone = Target { pid: 78, ..target };
        assert!(matches!(read_cgroup(&reader, &gone).await, Err(CgroupError::Gone { pid: 78 })));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_daemon_that_accepts_but_never_answers_fails_its_ping_quickly() {
        // A socket that accepts connections and then says nothing (a hung daemon).
        let dir = std::env::temp_dir().join(format!("hs-docker-hung-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("docker.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                open.push(conn);
            }
        });
        let rt = DockerRuntime::connect(DockerOptions { socket: path.clone(), timeout: Duration::from_secs(1) });
        let t = Instant::now();
        let result = rt.ping().await;
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(matches!(result, Err(RuntimeError::Unavailable { .. })), "{result:?}");
        hold.abort();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_dead_socket_is_unavailable() {
        // A socket file nobody listens on: connect() is refused.
        let dir = std::env::temp_dir().join(format!("hs-docker-dead-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("docker.sock");
        let _ = std::fs::remove_file(&path);
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let rt = runtime_at(&path);
        assert!(matches!(rt.ping().await, Err(RuntimeError::Unavailable { .. })), "{:?}", rt.ping().await);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
