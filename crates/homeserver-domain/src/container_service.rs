//! The container use cases over the runtime map and the record repository:
//! one model for every runtime, real state always read from the runtime,
//! stable ids kept across restarts.
//!
//! ## What a list reads
//! A runtime's container list is read from the engine, except while the
//! engine's event stream is known to be connected ([`ContainerService::set_watched`]):
//! then the last list read is reused until something could have changed it,
//! that is until an event arrives ([`ContainerService::invalidate`]), homeserver
//! itself acts on the runtime, the stream drops, or [`LIST_MAX_AGE_MS`]
//! passes. A runtime read by polling only (no event stream, like LXC) may
//! have its last list reused for a short while
//! ([`ContainerService::with_polled_list_reuse`], which the app sets to half
//! the sampling interval), again only until homeserver acts on it; the
//! poll itself always reads afresh ([`ContainerService::refresh_polled`]),
//! so outside changes still show within one interval. Records are always
//! read from the repository. Single containers (`get`, actions, stats) are
//! always inspected live.
//!
//! ## When a runtime is down
//! Every use case about one runtime's containers fails with
//! [`ContainerError::RuntimeUnavailable`] when that runtime does not answer.
//! Those that only queue an operation ([`ContainerService::validate`],
//! [`ContainerService::check_act`], [`ContainerService::check_delete`] with
//! `force`) and [`ContainerService::update`] ping the runtime first, so the
//! caller hears it before anything is queued or changed. The whole list
//! ([`ContainerService::list`]) never fails for one runtime: a runtime that
//! cannot be read shows its known containers as `unknown` and the others
//! carry on; [`ContainerService::list_in`] of that one runtime fails. Records
//! are never forgotten because a runtime could not be read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::container::{
    ConfigPatch, ContainerConfig, ContainerName, ContainerRecord, ContainerRepository, ContainerRuntime,
    ContainerState, CreateSpec, ExecRequest, ExecResult, LogFollower, LogLine, LogQuery, RuntimeContainer,
    RuntimeError, RuntimeKind,
};
use crate::error::{FieldError, RepositoryError};
use crate::ports::Clock;
use crate::snapshot::ContainerStats;
use crate::time::UnixMillis;

/// A container as the API shows it: the record plus the runtime's state.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    /// What homeserver keeps.
    pub record: ContainerRecord,
    /// The runtime's real state (`Unknown` when the runtime is down).
    pub state: ContainerState,
    /// Last start, when running.
    pub started_at: Option<UnixMillis>,
}

/// Why a container use case failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Invalid input.
    #[error("invalid container request")]
    Invalid(Vec<FieldError>),
    /// No such container.
    #[error("no such container")]
    NotFound,
    /// The name is taken in that runtime.
    #[error("the name `{0}` is taken")]
    NameTaken(String),
    /// Deleting a running container needs `force`.
    #[error("the container is running; stop it or use force")]
    Running,
    /// The container's state forbids it.
    #[error("the container is {0}")]
    InvalidState(ContainerState),
    /// The runtime is down or not configured.
    #[error("the {0} runtime is unavailable")]
    RuntimeUnavailable(RuntimeKind),
    /// The image or template does not exist.
    #[error("no such image or template: {0}")]
    SourceNotFound(String),
    /// The runtime failed otherwise.
    #[error(transparent)]
    Runtime(RuntimeError),
    /// The store failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

impl From<RuntimeError> for ContainerError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Unavailable { runtime, .. } => Self::RuntimeUnavailable(runtime),
            RuntimeError::NotFound => Self::NotFound,
            RuntimeError::NameTaken => Self::NameTaken(String::new()),
            RuntimeError::SourceNotFound(s) => Self::SourceNotFound(s),
            RuntimeError::InvalidState(s) => Self::InvalidState(s),
            other => Self::Runtime(other),
        }
    }
}

impl ContainerError {
    /// A stable code for operation failures.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "VALIDATION_FAILED",
            Self::NotFound => "NOT_FOUND",
            Self::NameTaken(_) => "CONFLICT",
            Self::Running => "CONTAINER_RUNNING",
            Self::InvalidState(_) => "CONFLICT",
            Self::RuntimeUnavailable(_) => "RUNTIME_UNAVAILABLE",
            Self::SourceNotFound(_) => "SOURCE_NOT_FOUND",
            Self::Runtime(RuntimeError::Timeout(_)) => "TIMEOUT",
            Self::Runtime(_) => "RUNTIME_ERROR",
            Self::Repository(_) => "INTERNAL",
        }
    }
}

/// A validated creation request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewContainer {
    /// Runtime.
    pub runtime: RuntimeKind,
    /// Name.
    pub name: ContainerName,
    /// Image (Docker) or template (LXC).
    pub source: String,
    /// Template options (LXC).
    pub template_options: Vec<String>,
    /// Profiles applied, in order.
    pub profiles: Vec<String>,
    /// Effective settings.
    pub config: ContainerConfig,
    /// Start once created.
    pub start: bool,
}

/// A lifecycle action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start.
    Start,
    /// Stop, killing after the timeout.
    Stop {
        /// Seconds to wait.
        timeout_secs: u32,
    },
    /// Restart.
    Restart {
        /// Seconds to wait for the stop.
        timeout_secs: u32,
    },
    /// Pause.
    Pause,
    /// Unpause.
    Unpause,
}

/// Longest a watched runtime's list is reused without an event (a safety
/// net should an event ever be lost).
pub const LIST_MAX_AGE_MS: i64 = 30_000;

/// What is known about one runtime's list between reads.
#[derive(Debug, Default)]
struct ListState {
    /// `None`: the runtime has no event stream; `Some(connected)`.
    watched: Option<bool>,
    /// Bumped by anything that may have changed the list.
    epoch: u64,
    /// The last list read while watched, with the epoch it was read in and when.
    cached: Option<(u64, UnixMillis, Arc<Vec<RuntimeContainer>>)>,
    /// Why the last full list could not read this runtime (logged once
    /// per distinct reason, not every sampling interval).
    failing: Option<String>,
}

/// The container use cases.
pub struct ContainerService {
    runtimes: BTreeMap<RuntimeKind, Arc<dyn ContainerRuntime>>,
    repository: Arc<dyn ContainerRepository>,
    clock: Arc<dyn Clock>,
    new_id: Arc<dyn Fn() -> String + Send + Sync>,
    host_cores: u32,
    lists: Mutex<BTreeMap<RuntimeKind, ListState>>,
    /// How long a polled runtime's list is reused (0: never).
    polled_reuse_ms: i64,
}

impl ContainerService {
    /// The service over `runtimes` (any subset of the kinds).
    pub fn new(
        runtimes: Vec<Arc<dyn ContainerRuntime>>,
        repository: Arc<dyn ContainerRepository>,
        clock: Arc<dyn Clock>,
        new_id: Arc<dyn Fn() -> String + Send + Sync>,
        host_cores: u32,
    ) -> Self {
        let runtimes = runtimes.into_iter().map(|r| (r.kind(), r)).collect();
        Self { runtimes, repository, clock, new_id, host_cores, lists: Mutex::new(BTreeMap::new()), polled_reuse_ms: 0 }
    }

    /// Lets lists of runtimes without an event stream be reused for
    /// `window` after a read, unless homeserver acted on the runtime since
    /// (by default every list reads them). Keep it under the polling
    /// interval, so a poll never reuses the previous poll's read.
    #[must_use]
    pub fn with_polled_list_reuse(mut self, window: std::time::Duration) -> Self {
        self.polled_reuse_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        self
    }

    fn with_list<T>(&self, kind: RuntimeKind, f: impl FnOnce(&mut ListState) -> T) -> T {
        // Every critical section below is a few assignments: a poisoned
        // lock still guards consistent data.
        let mut lists = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
        f(lists.entry(kind).or_default())
    }

    /// Tells the service whether `kind`'s event stream is connected. While
    /// it is, lists of that runtime are reused until [`Self::invalidate`];
    /// either way the next list reads the engine.
    pub fn set_watched(&self, kind: RuntimeKind, connected: bool) {
        self.with_list(kind, |l| {
            l.watched = Some(connected);
            l.epoch += 1;
            l.cached = None;
        });
    }

    /// `Some(connected)` for a runtime whose event stream is followed,
    /// `None` for one read by polling only.
    pub fn watched(&self, kind: RuntimeKind) -> Option<bool> {
        self.with_list(kind, |l| l.watched)
    }

    /// Something may have changed `kind`'s containers (an engine event, an
    /// action): the next list reads the engine.
    pub fn invalidate(&self, kind: RuntimeKind) {
        self.with_list(kind, |l| {
            l.epoch += 1;
            l.cached = None;
        });
    }

    /// Makes the next list read every runtime without an event stream
    /// afresh: what a poll calls first, so a list reused by API calls never
    /// delays the poll that must see outside changes within its interval.
    pub fn refresh_polled(&self) {
        let mut lists = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
        for kind in self.runtimes.keys() {
            let l = lists.entry(*kind).or_default();
            if l.watched.is_none() {
                l.epoch += 1;
                l.cached = None;
            }
        }
    }

    /// The runtime's containers: the reusable list when there is one, else
    /// a fresh read (kept when the runtime is watched and nothing changed
    /// while it was read).
    async fn runtime_list(&self, kind: RuntimeKind) -> Result<Arc<Vec<RuntimeContainer>>, ContainerError> {
        let runtime = self.runtime(kind)?;
        let now = self.clock.now();
        // How long a read may be reused: while the event stream is
        // connected, until an event; without a stream, a short while.
        let reuse_ms = |l: &ListState| match l.watched {
            Some(true) => LIST_MAX_AGE_MS,
            Some(false) => 0,
            None => self.polled_reuse_ms,
        };
        let epoch = self.with_list(kind, |l| match &l.cached {
            Some((epoch, at, list))
                if *epoch == l.epoch && (0..reuse_ms(l)).contains(&(now.as_millis() - at.as_millis())) =>
            {
                Err(Arc::clone(list))
            }
            _ => Ok(l.epoch),
        });
        let epoch = match epoch {
            Ok(epoch) => epoch,
            Err(cached) => return Ok(cached),
        };
        let live = Arc::new(runtime.list().await?);
        self.with_list(kind, |l| {
            if reuse_ms(l) > 0 && l.epoch == epoch {
                l.cached = Some((epoch, now, Arc::clone(&live)));
            }
        });
        Ok(live)
    }

    /// The runtime of `kind`, if configured.
    pub fn runtime(&self, kind: RuntimeKind) -> Result<&Arc<dyn ContainerRuntime>, ContainerError> {
        self.runtimes.get(&kind).ok_or(ContainerError::RuntimeUnavailable(kind))
    }

    /// Configured runtimes.
    pub fn runtimes(&self) -> impl Iterator<Item = &Arc<dyn ContainerRuntime>> {
        self.runtimes.values()
    }

    /// Brings the records of one runtime in line with what it really has:
    /// containers made outside homeserver get a record (`managed: false`),
    /// records of vanished containers go. Returns the live views.
    #[tracing::instrument(name = "containers.reconcile", skip(self))]
    pub async fn reconcile(&self, kind: RuntimeKind) -> Result<Vec<ContainerView>, ContainerError> {
        let live = self.runtime_list(kind).await?;
        let records = self.repository.list().await?;
        let mut by_runtime_id: BTreeMap<&str, &ContainerRecord> =
            records.iter().filter(|r| r.runtime == kind).map(|r| (r.runtime_id.as_str(), r)).collect();
        let now = self.clock.now();
        let mut views = Vec::with_capacity(live.len());
        for c in live.iter() {
            let record = match by_runtime_id.remove(c.runtime_id.as_str()) {
                Some(r) if r.name == c.name => r.clone(),
                Some(r) => {
                    let mut r = r.clone();
                    r.name = c.name.clone();
                    r.updated_at = now;
                    self.repository.update(&r).await?;
                    r
                }
                None => {
                    let r = ContainerRecord {
                        id: (self.new_id)(),
                        runtime: kind,
                        runtime_id: c.runtime_id.clone(),
                        name: c.name.clone(),
                        image: c.image.clone(),
                        template: None,
                        managed: false,
                        profiles: Vec::new(),
                        config: c.config.clone(),
                        created_at: c.created_at.unwrap_or(now),
                        updated_at: now,
                    };
                    match self.repository.insert(&r).await {
                        Ok(()) => r,
                        // Another reconcile (the collector, a list request)
                        // adopted it a moment ago: use its record and id.
                        Err(RepositoryError::AlreadyExists) => self
                            .repository
                            .list()
                            .await?
                            .into_iter()
                            .find(|x| x.runtime == kind && x.runtime_id == r.runtime_id)
                            .unwrap_or(r),
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            views.push(ContainerView { record, state: c.state, started_at: c.started_at });
        }
        for gone in by_runtime_id.into_values() {
            self.repository.delete(&gone.id).await?;
        }
        Ok(views)
    }

    /// Every container of every runtime. A runtime that cannot be read
    /// (down, or failing) shows its known containers with state `unknown`;
    /// the others carry on. Only the store failing fails the list.
    #[tracing::instrument(name = "containers.list", skip(self))]
    pub async fn list(&self) -> Result<Vec<ContainerView>, ContainerError> {
        let mut all = Vec::new();
        let mut down = Vec::new();
        for kind in self.runtimes.keys().copied() {
            match self.reconcile(kind).await {
                Ok(views) => {
                    all.extend(views);
                    if self.with_list(kind, |l| l.failing.take()).is_some() {
                        tracing::info!(runtime = %kind, "runtime readable again");
                    }
                }
                Err(e @ ContainerError::Repository(_)) => return Err(e),
                Err(e) => {
                    let why = e.to_string();
                    let changed = self.with_list(kind, |l| {
                        let changed = l.failing.as_deref() != Some(why.as_str());
                        l.failing = Some(why.clone());
                        changed
                    });
                    if changed {
                        tracing::warn!(runtime = %kind, error = %why, "cannot list a runtime; its containers are listed as unknown");
                    }
                    down.push(kind);
                }
            }
        }
        if !down.is_empty() {
            for r in self.repository.list().await? {
                if down.contains(&r.runtime) {
                    all.push(ContainerView { record: r, state: ContainerState::Unknown, started_at: None });
                }
            }
        }
        Ok(all)
    }

    /// The containers of one runtime (`Some`), failing when that runtime
    /// is down or not configured; or of every runtime (`None`, see
    /// [`Self::list`]).
    pub async fn list_in(&self, runtime: Option<RuntimeKind>) -> Result<Vec<ContainerView>, ContainerError> {
        match runtime {
            None => self.list().await,
            Some(kind) => self.reconcile(kind).await,
        }
    }

    /// Pings the runtime of `kind`. A failure also drops its reusable list:
    /// no list read before a failure is served after it was seen.
    pub async fn ping(&self, kind: RuntimeKind) -> Result<(), RuntimeError> {
        let result = match self.runtimes.get(&kind) {
            Some(runtime) => runtime.ping().await,
            None => Err(RuntimeError::Unavailable { runtime: kind, reason: "not configured".to_owned() }),
        };
        if result.is_err() {
            self.invalidate(kind);
        }
        result
    }

    /// The runtime of `kind` answers; `RuntimeUnavailable` when it is not
    /// configured or does not answer its [`ping`](Self::ping) (whatever the
    /// reason).
    pub async fn ensure_available(&self, kind: RuntimeKind) -> Result<(), ContainerError> {
        self.runtime(kind)?;
        self.ping(kind).await.map_err(|e| {
            tracing::info!(runtime = %kind, error = %e, "runtime unavailable");
            ContainerError::RuntimeUnavailable(kind)
        })
    }

    /// The record of `id`.
    pub async fn record(&self, id: &str) -> Result<ContainerRecord, ContainerError> {
        self.repository.get(id).await?.ok_or(ContainerError::NotFound)
    }

    async fn live(&self, record: &ContainerRecord) -> Result<RuntimeContainer, ContainerError> {
        Ok(self.runtime(record.runtime)?.inspect(&record.runtime_id).await?)
    }

    /// One container with its real state.
    pub async fn get(&self, id: &str) -> Result<ContainerView, ContainerError> {
        let record = self.record(id).await?;
        let live = self.live(&record).await?;
        Ok(ContainerView { record, state: live.state, started_at: live.started_at })
    }

    /// Validates a creation request; everything a 422 or 409 can say is
    /// said here, before an operation starts.
    pub async fn validate(&self, request: &NewContainer) -> Result<(), ContainerError> {
        let mut errors = request.config.validate(self.host_cores);
        if request.source.trim().is_empty() {
            let field = if request.runtime == RuntimeKind::Docker { "image" } else { "template" };
            errors.push(FieldError::new(field, "is required"));
        }
        if !errors.is_empty() {
            return Err(ContainerError::Invalid(errors));
        }
        self.runtime(request.runtime)?;
        let taken = self
            .repository
            .list()
            .await?
            .into_iter()
            .any(|r| r.runtime == request.runtime && r.name == request.name.as_str());
        if taken {
            return Err(ContainerError::NameTaken(request.name.to_string()));
        }
        self.ensure_available(request.runtime).await
    }

    /// Creates (and maybe starts) a container; its record.
    #[tracing::instrument(name = "containers.create", skip(self, request), fields(name = %request.name, runtime = %request.runtime))]
    pub async fn create(&self, request: &NewContainer) -> Result<ContainerRecord, ContainerError> {
        let runtime = self.runtime(request.runtime)?;
        let spec = CreateSpec {
            name: request.name.clone(),
            source: request.source.clone(),
            template_options: request.template_options.clone(),
            config: request.config.clone(),
        };
        let created = runtime.create(&spec).await;
        self.invalidate(request.runtime);
        let runtime_id = match created {
            Err(RuntimeError::NameTaken) => return Err(ContainerError::NameTaken(request.name.to_string())),
            other => other?,
        };
        let now = self.clock.now();
        let (image, template) = match request.runtime {
            RuntimeKind::Docker => (Some(request.source.clone()), None),
            RuntimeKind::Lxc => (None, Some(request.source.clone())),
        };
        let record = ContainerRecord {
            id: (self.new_id)(),
            runtime: request.runtime,
            runtime_id,
            name: request.name.to_string(),
            image,
            template,
            managed: true,
            profiles: request.profiles.clone(),
            config: request.config.clone(),
            created_at: now,
            updated_at: now,
        };
        let record = match self.repository.insert(&record).await {
            Ok(()) => record,
            // Reconciliation saw the new container first and adopted it as
            // unmanaged: take that record over, keeping its id.
            Err(RepositoryError::AlreadyExists) => {
                let adopted = self
                    .repository
                    .list()
                    .await?
                    .into_iter()
                    .find(|r| r.runtime == record.runtime && r.runtime_id == record.runtime_id)
                    .ok_or(ContainerError::Repository(RepositoryError::AlreadyExists))?;
                let merged = ContainerRecord { id: adopted.id, created_at: adopted.created_at, ..record };
                self.repository.update(&merged).await?;
                merged
            }
            Err(e) => return Err(e.into()),
        };
        if request.start {
            let started = runtime.start(&record.runtime_id).await;
            self.invalidate(request.runtime);
            started?;
        }
        Ok(record)
    }

    /// Runs a lifecycle action.
    #[tracing::instrument(name = "containers.act", skip(self))]
    pub async fn act(&self, id: &str, action: Action) -> Result<(), ContainerError> {
        let record = self.record(id).await?;
        let runtime = self.runtime(record.runtime)?;
        let rid = record.runtime_id.as_str();
        let done = match action {
            Action::Start => runtime.start(rid).await,
            Action::Stop { timeout_secs } => runtime.stop(rid, timeout_secs).await,
            Action::Restart { timeout_secs } => runtime.restart(rid, timeout_secs).await,
            Action::Pause => runtime.pause(rid).await,
            Action::Unpause => runtime.unpause(rid).await,
        };
        self.invalidate(record.runtime);
        Ok(done?)
    }

    /// Checks an action may be queued: the container exists and its
    /// runtime answers. The action's own state checks stay the engine's.
    pub async fn check_act(&self, id: &str) -> Result<ContainerRecord, ContainerError> {
        let record = self.record(id).await?;
        self.ensure_available(record.runtime).await?;
        Ok(record)
    }

    /// Checks a delete may go ahead: its runtime answers, and without
    /// `force` the container is not running (`Running`).
    pub async fn check_delete(&self, id: &str, force: bool) -> Result<ContainerRecord, ContainerError> {
        let record = self.record(id).await?;
        if force {
            self.ensure_available(record.runtime).await?;
        } else {
            let live = self.live(&record).await?;
            if !live.state.can_remove() {
                return Err(ContainerError::Running);
            }
        }
        Ok(record)
    }

    /// Removes a container and its record.
    #[tracing::instrument(name = "containers.delete", skip(self))]
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), ContainerError> {
        let record = self.record(id).await?;
        let removed = self.runtime(record.runtime)?.remove(&record.runtime_id, force).await;
        self.invalidate(record.runtime);
        match removed {
            Ok(()) | Err(RuntimeError::NotFound) => {}
            Err(RuntimeError::InvalidState(_)) => return Err(ContainerError::Running),
            Err(e) => return Err(e.into()),
        }
        self.repository.delete(&record.id).await?;
        Ok(())
    }

    /// Runs a command in a running container.
    #[tracing::instrument(name = "containers.exec", skip(self, request))]
    pub async fn exec(&self, id: &str, request: &ExecRequest) -> Result<ExecResult, ContainerError> {
        if request.command.is_empty() {
            return Err(ContainerError::Invalid(vec![FieldError::new("command", "name a program to run")]));
        }
        let record = self.record(id).await?;
        let live = self.live(&record).await?;
        if !live.state.can_exec() {
            return Err(ContainerError::InvalidState(live.state));
        }
        Ok(self.runtime(record.runtime)?.exec(&record.runtime_id, request).await?)
    }

    /// Log lines.
    pub async fn logs(&self, id: &str, query: LogQuery) -> Result<Vec<LogLine>, ContainerError> {
        let record = self.record(id).await?;
        Ok(self.runtime(record.runtime)?.logs(&record.runtime_id, query).await?)
    }

    /// Follows a container's log (see [`ContainerRuntime::follow_logs`]).
    pub async fn follow_logs(&self, id: &str, query: LogQuery) -> Result<Box<dyn LogFollower>, ContainerError> {
        let record = self.record(id).await?;
        Ok(self.runtime(record.runtime)?.follow_logs(&record.runtime_id, query).await?)
    }

    /// Changes an existing container's settings: limits and restart policy
    /// through its runtime (at once when it runs), labels in the record.
    /// Fields the runtime cannot change are refused (`Invalid`, naming
    /// them) before anything changes. Returns the container as it now is.
    #[tracing::instrument(name = "containers.update", skip(self, patch))]
    pub async fn update(&self, id: &str, patch: &ConfigPatch) -> Result<ContainerView, ContainerError> {
        let mut record = self.record(id).await?;
        let runtime = self.runtime(record.runtime)?;
        let errors = self.update_errors(runtime.as_ref(), patch);
        if !errors.is_empty() {
            return Err(ContainerError::Invalid(errors));
        }
        // Nothing changes, not even the record's labels, while the runtime is down.
        self.ensure_available(record.runtime).await?;
        if !patch.is_empty() {
            let updated = runtime.update(&record.runtime_id, patch).await;
            self.invalidate(record.runtime);
            match updated {
                // The engine refused the values (a memory limit below what
                // the container uses, ...): the caller's to fix.
                Err(RuntimeError::Rejected(why)) => {
                    return Err(ContainerError::Invalid(vec![FieldError::new(
                        "config",
                        format!("the engine refused the change: {why}"),
                    )]));
                }
                other => other?,
            }
            record.config = patch.apply_to(&record.config);
            record.updated_at = self.clock.now();
            self.repository.update(&record).await?;
        }
        let live = self.live(&record).await?;
        Ok(ContainerView { record, state: live.state, started_at: live.started_at })
    }

    fn update_errors(&self, runtime: &dyn ContainerRuntime, patch: &ConfigPatch) -> Vec<FieldError> {
        let mut errors = patch.validate(self.host_cores);
        errors.extend(runtime.check_update(patch));
        errors
    }

    /// What [`Self::update`] would refuse in `patch` for container `id`
    /// (values out of range, fields its runtime cannot change), without
    /// changing anything.
    pub async fn check_update(&self, id: &str, patch: &ConfigPatch) -> Result<Vec<FieldError>, ContainerError> {
        let record = self.record(id).await?;
        Ok(self.update_errors(self.runtime(record.runtime)?.as_ref(), patch))
    }

    /// Resource use, named.
    pub async fn stats(&self, id: &str) -> Result<ContainerStats, ContainerError> {
        let view = self.get(id).await?;
        let mut stats = if view.state == ContainerState::Running || view.state == ContainerState::Paused {
            self.runtime(view.record.runtime)?.stats(&view.record.runtime_id).await?
        } else {
            ContainerStats::default()
        };
        stats.id = view.record.id.clone();
        stats.name = view.record.name.clone();
        stats.runtime = view.record.runtime.as_str().to_owned();
        stats.state = view.state.as_str().to_owned();
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{MockContainerRepository, MockContainerRuntime};
    use crate::ports::MockClock;
    use std::sync::Mutex;

    fn clock() -> Arc<MockClock> {
        let mut c = MockClock::new();
        c.expect_now().return_const(UnixMillis(5_000));
        Arc::new(c)
    }

    fn ids() -> Arc<dyn Fn() -> String + Send + Sync> {
        let n = Arc::new(Mutex::new(0));
        Arc::new(move || {
            let mut n = n.lock().unwrap();
            *n += 1;
            format!("id-{n}")
        })
    }

    fn runtime_with(list: Vec<RuntimeContainer>) -> MockContainerRuntime {
        let mut rt = MockContainerRuntime::new();
        rt.expect_kind().return_const(RuntimeKind::Docker);
        rt.expect_list().returning(move || Ok(list.clone()));
        rt
    }

    fn live(id: &str, name: &str, state: ContainerState) -> RuntimeContainer {
        RuntimeContainer {
            runtime_id: id.into(),
            name: name.into(),
            image: Some("img".into()),
            state,
            config: ContainerConfig::default(),
            created_at: Some(UnixMillis(1)),
            started_at: None,
        }
    }

    fn record(id: &str, runtime_id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            runtime: RuntimeKind::Docker,
            runtime_id: runtime_id.into(),
            name: name.into(),
            image: None,
            template: None,
            managed: true,
            profiles: vec![],
            config: ContainerConfig::default(),
            created_at: UnixMillis(1),
            updated_at: UnixMillis(1),
        }
    }

    #[tokio::test]
    async fn reconcile_adopts_outside_containers_keeps_known_ids_and_forgets_vanished_ones() {
        let rt = runtime_with(vec![
            live("d1", "web", ContainerState::Running),
            live("d2", "outside", ContainerState::Stopped),
        ]);
        let mut repo = MockContainerRepository::new();
        repo.expect_list().returning(|| Ok(vec![record("keep", "d1", "web"), record("gone", "d9", "old")]));
        let inserted = Arc::new(Mutex::new(Vec::new()));
        let ins = inserted.clone();
        repo.expect_insert().returning(move |r| {
            ins.lock().unwrap().push(r.clone());
            Ok(())
        });
        repo.expect_delete().withf(|id| id == "gone").times(1).returning(|_| Ok(()));
        let svc = ContainerService::new(vec![Arc::new(rt)], Arc::new(repo), clock(), ids(), 2);
        let views = svc.reconcile(RuntimeKind::Docker).await.unwrap();
        assert_eq!(views.len(), 2);
        assert_eq!((views[0].record.id.as_str(), views[0].state), ("keep", ContainerState::Running));
        let adopted = &inserted.lock().unwrap()[0];
        assert_eq!((adopted.name.as_str(), adopted.managed), ("outside", false));
    }

    #[tokio::test]
    async fn concurrent_reconciles_agree_on_the_id_of_an_adopted_container() {
        let rt = runtime_with(vec![live("d2", "outside", ContainerState::Stopped)]);
        let mut repo = MockContainerRepository::new();
        let mut calls = 0;
        repo.expect_list().returning(move || {
            calls += 1;
            // First read: not there yet; after the lost insert: the winner's record.
            if calls == 1 { Ok(vec![]) } else { Ok(vec![record("winner", "d2", "outside")]) }
        });
        repo.expect_insert().returning(|_| Err(RepositoryError::AlreadyExists));
        let svc = ContainerService::new(vec![Arc::new(rt)], Arc::new(repo), clock(), ids(), 2);
        let views = svc.reconcile(RuntimeKind::Docker).await.unwrap();
        assert_eq!(views[0].record.id, "winner");
    }

    #[tokio::test]
    async fn a_down_runtime_lists_its_containers_as_unknown() {
        let mut rt = MockContainerRuntime::new();
        rt.expect_kind().return_const(RuntimeKind::Docker);
        rt.expect_list()
            .returning(|| Err(RuntimeError::Unavailable { runtime: RuntimeKind::Docker, reason: "socket".into() }));
        let mut repo = MockContainerRepository::new();
        repo.expect_list().returning(|| Ok(vec![record("a", "d1", "web")]));
        let svc = ContainerService::new(vec![Arc::new(rt)], Arc::new(repo), clock(), ids(), 2);
        let views = svc.list().await.unwrap();
        assert_eq!(views[0].state, ContainerState::Unknown);
    }

    #[tokio::test]
    async fn validation_refuses_bad_configs_taken_names_and_missing_runtimes() {
        let mut repo = MockContainerRepository::new();
        repo.expect_list().returning(|| Ok(vec![record("a", "d1", "web")]));
        let mut rt = runtime_with(vec![]);
        rt.expect_ping().returning(|| Ok(()));
        let svc = ContainerService::new(vec![Arc::new(rt)], Arc::new(repo), clock(), ids(), 2);
        let mut req = NewContainer {
            runtime: RuntimeKind::Docker,
            name: ContainerName::parse("web").unwrap(),
            source: "img".into(),
            template_options: vec![],
            profiles: vec![],
            config: ContainerConfig::default(),
            start: false,
        };
        assert!(matches!(svc.validate(&req).await, Err(ContainerError::NameTaken(_))));
        req.name = ContainerName::parse("api").unwrap();
        assert!(svc.validate(&req).await.is_ok());
        req.config.memory_limit_bytes = Some(10);
        assert!(
            matches!(svc.validate(&req).await, Err(ContainerError::Invalid(ref e)) if e[0].field == "config.memory_limit_bytes")
        );
        req.config.memory_limit_bytes = None;
        req.runtime = RuntimeKind::Lxc;
        assert!(matches!(svc.validate(&req).await, Err(ContainerError::RuntimeUnavailable(RuntimeKind::Lxc))));
    }

    #[tokio::test]
    async fn deleting_a_running_container_needs_force_and_exec_needs_running() {
        let mut rt = runtime_with(vec![]);
        rt.expect_inspect().returning(|_| Ok(live("d1", "web", ContainerState::Running)));
        rt.expect_ping().returning(|| Ok(()));
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|_| Ok(Some(record("a", "d1", "web"))));
        let svc = ContainerService::new(vec![Arc::new(rt)], Arc::new(repo), clock(), ids(), 2);
        assert!(matches!(svc.check_delete("a", false).await, Err(ContainerError::Running)));
        assert!(svc.check_delete("a", true).await.is_ok());

        let mut rt = runtime_with(vec![]);
        rt.expect_inspect().returning(|_| Ok(live("d1", "web", ContainerState::Stopped)));
        rt.expect_exec().never();
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|_| Ok(Some(record("a", "d1", "web"))));
        let svc = ContainerService::new(vec![Arc::new(rt)], Arc::new(repo), clock(), ids(), 2);
        let req = ExecRequest {
            command: vec!["true".into()],
            env: BTreeMap::new(),
            workdir: None,
            stdin: None,
            timeout_ms: 1_000,
            output_cap_bytes: 1_024,
        };
        assert!(matches!(svc.exec("a", &req).await, Err(ContainerError::InvalidState(ContainerState::Stopped))));
    }

    #[tokio::test]
    async fn create_takes_over_a_record_reconciliation_made_first() {
        let mut rt = runtime_with(vec![]);
        rt.expect_create().returning(|_| Ok("d1".into()));
        let mut repo = MockContainerRepository::new();
        repo.expect_insert().returning(|_| Err(RepositoryError::AlreadyExists));
        let mut adopted = record("early", "d1", "web");
        adopted.managed = false;
        repo.expect_list().returning(move || Ok(vec![adopted.clone()]));
        repo.expect_update().withf(|r| r.id == "early" && r.managed).times(1).returning(|_| Ok(()));
        let svc = ContainerService::new(vec![Arc::new(rt)], Arc::new(repo), clock(), ids(), 2);
        let req = NewContainer {
            runtime: RuntimeKind::Docker,
            name: ContainerName::parse("web").unwrap(),
            source: "img".into(),
            template_options: vec![],
            profiles: vec![],
            config: ContainerConfig::default(),
            start: false,
        };
        let r = svc.create(&req).await.unwrap();
        assert_eq!((r.id.as_str(), r.managed), ("early", true));
    }

    #[tokio::test]
    async fn a_missing_image_is_reported_as_such() {
        let mut rt = runtime_with(vec![]);
        rt.expect_create().returning(|_| Err(RuntimeError::SourceNotFound("nope:latest".into())));
        let mut repo = MockContainerRepository::new();
        repo.expect_insert().never();
        let svc = ContainerService::new(vec![Arc::new(rt)], Arc::new(repo), clock(), ids(), 2);
        let req = NewContainer {
            runtime: RuntimeKind::Docker,
            name: ContainerName::parse("x").unwrap(),
            source: "nope:latest".into(),
            template_options: vec![],
            profiles: vec![],
            config: ContainerConfig::default(),
            start: true,
        };
        let err = svc.create(&req).await.unwrap_err();
        assert_eq!(err.code(), "SOURCE_NOT_FOUND");
    }

    fn svc_over(rt: MockContainerRuntime, repo: MockContainerRepository) -> ContainerService {
        ContainerService::new(vec![Arc::new(rt)], Arc::new(repo), clock(), ids(), 2)
    }

    #[tokio::test]
    async fn a_watched_runtime_list_is_reused_until_something_changes() {
        let reads = Arc::new(Mutex::new(0));
        let mut rt = MockContainerRuntime::new();
        rt.expect_kind().return_const(RuntimeKind::Docker);
        let r = reads.clone();
        rt.expect_list().returning(move || {
            *r.lock().unwrap() += 1;
            Ok(vec![live("d1", "web", ContainerState::Running)])
        });
        let mut repo = MockContainerRepository::new();
        repo.expect_list().returning(|| Ok(vec![record("a", "d1", "web")]));
        let svc = svc_over(rt, repo);
        let reads_now = || *reads.lock().unwrap();

        // Not watched (no event stream): every list reads the engine.
        svc.list().await.unwrap();
        svc.list().await.unwrap();
        assert_eq!((reads_now(), svc.watched(RuntimeKind::Docker)), (2, None));

        // Watched: one read, then reuse until an event or an action.
        svc.set_watched(RuntimeKind::Docker, true);
        svc.list().await.unwrap();
        svc.list().await.unwrap();
        assert_eq!(reads_now(), 3);
        svc.invalidate(RuntimeKind::Docker);
        svc.list().await.unwrap();
        svc.list().await.unwrap();
        assert_eq!(reads_now(), 4);

        // The stream dropped: back to reading every time.
        svc.set_watched(RuntimeKind::Docker, false);
        svc.list().await.unwrap();
        svc.list().await.unwrap();
        assert_eq!((reads_now(), svc.watched(RuntimeKind::Docker)), (6, Some(false)));
    }

    #[tokio::test]
    async fn a_polled_runtime_list_is_reused_only_within_its_window_and_until_an_action() {
        let reads = Arc::new(Mutex::new(0));
        let mut rt = MockContainerRuntime::new();
        rt.expect_kind().return_const(RuntimeKind::Lxc);
        let r = reads.clone();
        rt.expect_list().returning(move || {
            *r.lock().unwrap() += 1;
            Ok(vec![live("web", "web", ContainerState::Stopped)])
        });
        rt.expect_start().returning(|_| Ok(()));
        rt.expect_ping()
            .returning(|| Err(RuntimeError::Unavailable { runtime: RuntimeKind::Lxc, reason: "lxcpath gone".into() }));
        let mut repo = MockContainerRepository::new();
        let mut rec = record("a", "web", "web");
        rec.runtime = RuntimeKind::Lxc;
        let listed = rec.clone();
        repo.expect_list().returning(move || Ok(vec![listed.clone()]));
        repo.expect_get().returning(move |_| Ok(Some(rec.clone())));
        let now = Arc::new(Mutex::new(10_000i64));
        let mut clock = MockClock::new();
        let n = now.clone();
        clock.expect_now().returning(move || UnixMillis(*n.lock().unwrap()));
        let svc = ContainerService::new(vec![Arc::new(rt)], Arc::new(repo), Arc::new(clock), ids(), 2)
            .with_polled_list_reuse(std::time::Duration::from_millis(500));
        let reads_now = || *reads.lock().unwrap();

        svc.list().await.unwrap();
        *now.lock().unwrap() += 499;
        svc.list().await.unwrap();
        assert_eq!((reads_now(), svc.watched(RuntimeKind::Lxc)), (1, None), "reused within the window");
        *now.lock().unwrap() += 1;
        svc.list().await.unwrap();
        assert_eq!(reads_now(), 2, "read again once the window passed");
        svc.act("a", Action::Start).await.unwrap();
        svc.list().await.unwrap();
        assert_eq!(reads_now(), 3, "an action makes the next list read the runtime");
        svc.list().await.unwrap();
        assert_eq!(reads_now(), 3);
        // A poll reads afresh, and its read serves the lists after it.
        svc.refresh_polled();
        svc.list().await.unwrap();
        svc.list().await.unwrap();
        assert_eq!(reads_now(), 4);
        // A runtime found down no longer serves the list read before.
        assert!(matches!(svc.ensure_available(RuntimeKind::Lxc).await, Err(ContainerError::RuntimeUnavailable(_))));
        svc.list().await.unwrap();
        assert_eq!(reads_now(), 5, "a failed ping drops the reusable list");
    }

    #[tokio::test]
    async fn actions_invalidate_the_reused_list() {
        let mut rt = runtime_with(vec![live("d1", "web", ContainerState::Stopped)]);
        rt.expect_start().returning(|_| Ok(()));
        let mut repo = MockContainerRepository::new();
        repo.expect_list().returning(|| Ok(vec![record("a", "d1", "web")]));
        repo.expect_get().returning(|_| Ok(Some(record("a", "d1", "web"))));
        let svc = svc_over(rt, repo);
        svc.set_watched(RuntimeKind::Docker, true);
        svc.list().await.unwrap();
        let cached = |svc: &ContainerService| svc.with_list(RuntimeKind::Docker, |l| l.cached.is_some());
        assert!(cached(&svc));
        svc.act("a", Action::Start).await.unwrap();
        assert!(!cached(&svc), "an action makes the next list read the engine");
    }

    #[tokio::test]
    async fn a_list_read_while_an_event_arrived_is_not_kept() {
        let svc = Arc::new(Mutex::new(None::<Arc<ContainerService>>));
        let hook = svc.clone();
        let mut rt = MockContainerRuntime::new();
        rt.expect_kind().return_const(RuntimeKind::Docker);
        rt.expect_list().returning(move || {
            // An event lands while the engine is being read.
            if let Some(s) = hook.lock().unwrap().as_ref() {
                s.invalidate(RuntimeKind::Docker);
            }
            Ok(vec![])
        });
        let mut repo = MockContainerRepository::new();
        repo.expect_list().returning(|| Ok(vec![]));
        let service = Arc::new(svc_over(rt, repo));
        *svc.lock().unwrap() = Some(service.clone());
        service.set_watched(RuntimeKind::Docker, true);
        service.list().await.unwrap();
        assert!(service.with_list(RuntimeKind::Docker, |l| l.cached.is_none()), "a possibly stale read is not reused");
        *svc.lock().unwrap() = None;
    }

    #[tokio::test]
    async fn update_refuses_what_the_runtime_cannot_change_before_touching_anything() {
        let mut rt = runtime_with(vec![]);
        rt.expect_check_update().returning(|_| vec![FieldError::new("config.memory_limit_bytes", "cannot be removed")]);
        rt.expect_update().never();
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|_| Ok(Some(record("a", "d1", "web"))));
        repo.expect_update().never();
        let svc = svc_over(rt, repo);
        let patch = ConfigPatch { memory_limit_bytes: Some(None), pids_limit: Some(Some(0)), ..Default::default() };
        match svc.update("a", &patch).await {
            Err(ContainerError::Invalid(errors)) => {
                let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
                assert_eq!(fields, ["config.pids_limit", "config.memory_limit_bytes"]);
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn update_applies_through_the_runtime_then_keeps_the_new_config() {
        let mut rt = runtime_with(vec![]);
        rt.expect_check_update().returning(|_| vec![]);
        rt.expect_ping().returning(|| Ok(()));
        rt.expect_update()
            .withf(|id, p| id == "d1" && p.memory_limit_bytes == Some(Some(128 << 20)))
            .times(1)
            .returning(|_, _| Ok(()));
        rt.expect_inspect().returning(|_| Ok(live("d1", "web", ContainerState::Running)));
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|_| Ok(Some(record("a", "d1", "web"))));
        repo.expect_update()
            .withf(|r| {
                r.config.memory_limit_bytes == Some(128 << 20)
                    && r.config.labels.get("tier").map(String::as_str) == Some("gold")
                    && r.updated_at == UnixMillis(5_000)
            })
            .times(1)
            .returning(|_| Ok(()));
        let svc = svc_over(rt, repo);
        let patch = ConfigPatch {
            memory_limit_bytes: Some(Some(128 << 20)),
            labels: Some(BTreeMap::from([("tier".to_owned(), "gold".to_owned())])),
            ..Default::default()
        };
        let view = svc.update("a", &patch).await.unwrap();
        assert_eq!((view.state, view.record.config.memory_limit_bytes), (ContainerState::Running, Some(128 << 20)));
    }

    #[tokio::test]
    async fn an_unknown_runtime_failure_of_update_is_reported() {
        let mut rt = runtime_with(vec![]);
        rt.expect_check_update().returning(|_| vec![]);
        // The ping answers, then the engine goes away before the update.
        rt.expect_ping().returning(|| Ok(()));
        rt.expect_update()
            .returning(|_, _| Err(RuntimeError::Unavailable { runtime: RuntimeKind::Docker, reason: "down".into() }));
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|id| Ok((id == "a").then(|| record("a", "d1", "web"))));
        repo.expect_update().never();
        let svc = svc_over(rt, repo);
        let patch = ConfigPatch { pids_limit: Some(Some(10)), ..Default::default() };
        assert!(matches!(svc.update("zz", &patch).await, Err(ContainerError::NotFound)));
        assert!(matches!(svc.update("a", &patch).await, Err(ContainerError::RuntimeUnavailable(RuntimeKind::Docker))));
    }

    fn down(kind: RuntimeKind) -> RuntimeError {
        RuntimeError::Unavailable { runtime: kind, reason: "socket /var/run/docker.sock not found".into() }
    }

    /// A runtime of `kind` whose every call would fail as unavailable;
    /// nothing but `kind`, `ping` and `list` may be called.
    fn dead(kind: RuntimeKind) -> MockContainerRuntime {
        let mut rt = MockContainerRuntime::new();
        rt.expect_kind().return_const(kind);
        rt.expect_ping().returning(move || Err(down(kind)));
        rt.expect_list().returning(move || Err(down(kind)));
        rt.expect_check_update().returning(|_| vec![]);
        rt.expect_create().never();
        rt.expect_start().never();
        rt.expect_stop().never();
        rt.expect_remove().never();
        rt.expect_update().never();
        rt
    }

    fn lxc_record(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord { runtime: RuntimeKind::Lxc, template: Some("busybox".into()), ..record(id, name, name) }
    }

    #[tokio::test]
    async fn a_runtime_that_does_not_answer_refuses_work_before_anything_is_queued_or_changed() {
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|_| Ok(Some(record("a", "d1", "web"))));
        repo.expect_list().returning(|| Ok(vec![record("a", "d1", "web")]));
        repo.expect_update().never();
        repo.expect_insert().never();
        repo.expect_delete().never();
        let svc = svc_over(dead(RuntimeKind::Docker), repo);
        fn unavailable<T>(r: Result<T, ContainerError>) -> bool {
            matches!(r, Err(ContainerError::RuntimeUnavailable(RuntimeKind::Docker)))
        }
        let req = NewContainer {
            runtime: RuntimeKind::Docker,
            name: ContainerName::parse("api").unwrap(),
            source: "img".into(),
            template_options: vec![],
            profiles: vec![],
            config: ContainerConfig::default(),
            start: true,
        };
        assert!(unavailable(svc.validate(&req).await), "create");
        assert!(unavailable(svc.check_act("a").await), "actions");
        assert!(unavailable(svc.check_delete("a", true).await), "forced delete");
        let patch = ConfigPatch { labels: Some(BTreeMap::new()), ..Default::default() };
        assert!(unavailable(svc.update("a", &patch).await), "update, labels included");
        // The code every operation failure and 503 carries.
        assert_eq!(ContainerError::RuntimeUnavailable(RuntimeKind::Docker).code(), "RUNTIME_UNAVAILABLE");
        // Invalid input is still 422 first, and an unknown id still 404.
        let mut bad = req.clone();
        bad.config.memory_limit_bytes = Some(1);
        assert!(matches!(svc.validate(&bad).await, Err(ContainerError::Invalid(_))));
    }

    #[tokio::test]
    async fn a_ping_that_times_out_or_fails_otherwise_is_unavailable_too() {
        let mut rt = MockContainerRuntime::new();
        rt.expect_kind().return_const(RuntimeKind::Lxc);
        let mut calls = 0;
        rt.expect_ping().returning(move || {
            calls += 1;
            if calls == 1 {
                Err(RuntimeError::Timeout("`lxc-ls --version` did not finish".into()))
            } else {
                Err(RuntimeError::Internal("lxc-ls exited with 1".into()))
            }
        });
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|_| Ok(Some(lxc_record("x", "box"))));
        let svc = svc_over(rt, repo);
        for _ in 0..2 {
            assert!(matches!(svc.check_act("x").await, Err(ContainerError::RuntimeUnavailable(RuntimeKind::Lxc))));
        }
    }

    #[tokio::test]
    async fn one_runtime_down_leaves_the_other_listed_and_forgets_no_record() {
        let mut lxc = MockContainerRuntime::new();
        lxc.expect_kind().return_const(RuntimeKind::Lxc);
        lxc.expect_list()
            .returning(|| Ok(vec![RuntimeContainer { image: None, ..live("box", "box", ContainerState::Running) }]));
        let mut repo = MockContainerRepository::new();
        repo.expect_list().returning(|| Ok(vec![record("a", "d1", "web"), lxc_record("b", "box")]));
        repo.expect_delete().never();
        repo.expect_insert().never();
        let svc = ContainerService::new(
            vec![Arc::new(dead(RuntimeKind::Docker)), Arc::new(lxc)],
            Arc::new(repo),
            clock(),
            ids(),
            2,
        );
        let mut all = svc.list().await.unwrap();
        all.sort_by(|x, y| x.record.id.cmp(&y.record.id));
        let states: Vec<_> = all.iter().map(|v| (v.record.id.as_str(), v.state)).collect();
        assert_eq!(states, [("a", ContainerState::Unknown), ("b", ContainerState::Running)]);
        assert!(matches!(
            svc.list_in(Some(RuntimeKind::Docker)).await,
            Err(ContainerError::RuntimeUnavailable(RuntimeKind::Docker))
        ));
        let lxc_only = svc.list_in(Some(RuntimeKind::Lxc)).await.unwrap();
        assert_eq!(lxc_only.len(), 1);
        assert_eq!(lxc_only[0].record.id, "b");
        assert_eq!(svc.list_in(None).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_runtime_failing_otherwise_does_not_fail_the_whole_list() {
        let mut rt = MockContainerRuntime::new();
        rt.expect_kind().return_const(RuntimeKind::Docker);
        rt.expect_list().returning(|| Err(RuntimeError::Rejected("500 Internal Server Error".into())));
        let mut repo = MockContainerRepository::new();
        repo.expect_list().returning(|| Ok(vec![record("a", "d1", "web")]));
        repo.expect_delete().never();
        let svc = svc_over(rt, repo);
        let all = svc.list().await.unwrap();
        assert_eq!((all.len(), all[0].state), (1, ContainerState::Unknown));
        assert!(matches!(svc.list_in(Some(RuntimeKind::Docker)).await, Err(ContainerError::Runtime(_))));
        // The store failing still fails the list.
        let mut repo = MockContainerRepository::new();
        repo.expect_list().returning(|| Err(RepositoryError::internal("disk I/O error")));
        let svc = svc_over(runtime_with(vec![]), repo);
        assert!(matches!(svc.list().await, Err(ContainerError::Repository(_))));
    }

    #[tokio::test]
    async fn a_failing_runtime_is_remembered_once_per_reason_and_forgotten_when_it_reads_again() {
        let mut rt = MockContainerRuntime::new();
        rt.expect_kind().return_const(RuntimeKind::Docker);
        let mut calls = 0;
        rt.expect_list().returning(move || {
            calls += 1;
            if calls <= 2 {
                Err(down(RuntimeKind::Docker))
            } else {
                Ok(vec![live("d1", "web", ContainerState::Running)])
            }
        });
        let mut repo = MockContainerRepository::new();
        repo.expect_list().returning(|| Ok(vec![record("a", "d1", "web")]));
        let svc = svc_over(rt, repo);
        let failing = |svc: &ContainerService| svc.with_list(RuntimeKind::Docker, |l| l.failing.clone());
        svc.list().await.unwrap();
        assert_eq!(failing(&svc).as_deref(), Some("the docker runtime is unavailable"));
        svc.list().await.unwrap();
        assert!(failing(&svc).is_some(), "still failing, same reason: nothing new to log");
        let views = svc.list().await.unwrap();
        assert_eq!((views[0].record.id.as_str(), views[0].state), ("a", ContainerState::Running), "same id after");
        assert_eq!(failing(&svc), None);
    }

    #[tokio::test]
    async fn an_unconfigured_runtime_is_unavailable() {
        let svc = svc_over(runtime_with(vec![]), MockContainerRepository::new());
        assert!(matches!(
            svc.ensure_available(RuntimeKind::Lxc).await,
            Err(ContainerError::RuntimeUnavailable(RuntimeKind::Lxc))
        ));
        assert!(matches!(
            svc.list_in(Some(RuntimeKind::Lxc)).await,
            Err(ContainerError::RuntimeUnavailable(RuntimeKind::Lxc))
        ));
    }
}
