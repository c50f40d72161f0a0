//! The container use cases over the runtime map and the record repository:
//! one model for every runtime, real state always read from the runtime,
//! stable ids kept across restarts.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::container::{
    ContainerConfig, ContainerName, ContainerRecord, ContainerRepository, ContainerRuntime, ContainerState, CreateSpec,
    ExecRequest, ExecResult, LogLine, LogQuery, RuntimeContainer, RuntimeError, RuntimeKind,
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

/// The container use cases.
pub struct ContainerService {
    runtimes: BTreeMap<RuntimeKind, Arc<dyn ContainerRuntime>>,
    repository: Arc<dyn ContainerRepository>,
    clock: Arc<dyn Clock>,
    new_id: Arc<dyn Fn() -> String + Send + Sync>,
    host_cores: u32,
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
        Self { runtimes, repository, clock, new_id, host_cores }
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
        let runtime = self.runtime(kind)?;
        let live = runtime.list().await?;
        let records = self.repository.list().await?;
        let mut by_runtime_id: BTreeMap<&str, &ContainerRecord> =
            records.iter().filter(|r| r.runtime == kind).map(|r| (r.runtime_id.as_str(), r)).collect();
        let now = self.clock.now();
        let mut views = Vec::with_capacity(live.len());
        for c in live {
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

    /// Every container of every runtime; a runtime that is down shows its
    /// known containers with state `unknown`.
    pub async fn list(&self) -> Result<Vec<ContainerView>, ContainerError> {
        let mut all = Vec::new();
        let mut down = Vec::new();
        for kind in self.runtimes.keys() {
            match self.reconcile(*kind).await {
                Ok(views) => all.extend(views),
                Err(ContainerError::RuntimeUnavailable(k)) => down.push(k),
                Err(e) => return Err(e),
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
        Ok(())
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
        let runtime_id = match runtime.create(&spec).await {
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
            runtime.start(&record.runtime_id).await?;
        }
        Ok(record)
    }

    /// Runs a lifecycle action.
    #[tracing::instrument(name = "containers.act", skip(self))]
    pub async fn act(&self, id: &str, action: Action) -> Result<(), ContainerError> {
        let record = self.record(id).await?;
        let runtime = self.runtime(record.runtime)?;
        let rid = record.runtime_id.as_str();
        match action {
            Action::Start => runtime.start(rid).await?,
            Action::Stop { timeout_secs } => runtime.stop(rid, timeout_secs).await?,
            Action::Restart { timeout_secs } => runtime.restart(rid, timeout_secs).await?,
            Action::Pause => runtime.pause(rid).await?,
            Action::Unpause => runtime.unpause(rid).await?,
        }
        Ok(())
    }

    /// Checks a delete may go ahead (`Running` without `force`).
    pub async fn check_delete(&self, id: &str, force: bool) -> Result<ContainerRecord, ContainerError> {
        let record = self.record(id).await?;
        if !force {
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
        match self.runtime(record.runtime)?.remove(&record.runtime_id, force).await {
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
        let svc = ContainerService::new(vec![Arc::new(runtime_with(vec![]))], Arc::new(repo), clock(), ids(), 2);
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
}
