//! Runs operations: a bounded pool of workers, persisted progress and
//! results, cancellation, and waiting for the end.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use homeserver_domain::{
    Clock, Failure, Operation, OperationKind, OperationOutput, OperationRepository, OperationStatus, RepositoryError,
};
use tokio::sync::{Semaphore, watch};
use tokio::task::AbortHandle;

/// Why a cancel failed.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No such operation.
    #[error("no such operation")]
    NotFound,
    /// It finished, or cannot be stopped half-way.
    #[error("the operation cannot be cancelled")]
    NotCancellable,
    /// The store failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Reports progress from inside an operation's work.
#[derive(Clone)]
pub struct Progress {
    runner: Arc<OperationRunner>,
    id: String,
}

impl Progress {
    /// Sets the percentage and message.
    pub async fn set(&self, percent: u8, message: impl Into<String>) {
        let message = message.into();
        self.runner
            .mutate(&self.id, |op, _| {
                if op.status == OperationStatus::Running {
                    op.progress_percent = percent.min(100);
                    op.message = message;
                }
            })
            .await;
    }
}

/// The operation pool.
pub struct OperationRunner {
    repository: Arc<dyn OperationRepository>,
    clock: Arc<dyn Clock>,
    permits: Arc<Semaphore>,
    tasks: Mutex<HashMap<String, AbortHandle>>,
    // One writer at a time keeps read-modify-write of an operation atomic.
    write: tokio::sync::Mutex<()>,
    changed: watch::Sender<u64>,
}

impl OperationRunner {
    /// A pool of `workers` workers over `repository`.
    pub fn new(repository: Arc<dyn OperationRepository>, clock: Arc<dyn Clock>, workers: usize) -> Arc<Self> {
        Arc::new(Self {
            repository,
            clock,
            permits: Arc::new(Semaphore::new(workers.max(1))),
            tasks: Mutex::new(HashMap::new()),
            write: tokio::sync::Mutex::new(()),
            changed: watch::Sender::new(0),
        })
    }

    /// Operations left pending or running by a previous process end
    /// `failed` with `INTERRUPTED`.
    pub async fn recover(&self) -> Result<u64, RepositoryError> {
        self.repository.interrupt_unfinished(self.clock.now()).await
    }

    /// The store.
    pub fn repository(&self) -> &Arc<dyn OperationRepository> {
        &self.repository
    }

    async fn mutate(
        &self,
        id: &str,
        f: impl FnOnce(&mut Operation, homeserver_domain::UnixMillis),
    ) -> Option<Operation> {
        let _guard = self.write.lock().await;
        let mut op = match self.repository.get(id).await {
            Ok(Some(op)) => op,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, operation = id, "cannot read an operation");
                return None;
            }
        };
        f(&mut op, self.clock.now());
        if let Err(e) = self.repository.update(&op).await {
            tracing::error!(error = %e, operation = id, "cannot record an operation's progress");
        }
        self.changed.send_modify(|n| *n += 1);
        Some(op)
    }

    /// Queues `work`; returns the pending operation at once.
    pub async fn submit<F, Fut>(
        self: &Arc<Self>,
        kind: OperationKind,
        containers: Vec<String>,
        work: F,
    ) -> Result<Operation, RepositoryError>
    where
        F: FnOnce(Progress) -> Fut + Send + 'static,
        Fut: Future<Output = Result<OperationOutput, Failure>> + Send + 'static,
    {
        let op = Operation::pending(uuid::Uuid::new_v4().to_string(), kind, containers, self.clock.now());
        self.repository.insert(&op).await?;
        let runner = Arc::clone(self);
        let id = op.id.clone();
        let span = tracing::info_span!("operation", id = %id, kind = kind.as_str());
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let Ok(_permit) = Arc::clone(&runner.permits).acquire_owned().await else { return };
                let started = runner
                    .mutate(&id, |op, now| {
                        if op.transition(OperationStatus::Running, now).is_ok() {
                            op.message = "running".to_owned();
                        }
                    })
                    .await;
                if started.is_none_or(|op| op.status != OperationStatus::Running) {
                    return;
                }
                let result = work(Progress { runner: Arc::clone(&runner), id: id.clone() }).await;
                runner
                    .mutate(&id, |op, now| match result {
                        Ok(output) => {
                            if op.transition(OperationStatus::Succeeded, now).is_ok() {
                                op.output = output;
                                op.message = "done".to_owned();
                            }
                        }
                        Err(failure) => {
                            if op.transition(OperationStatus::Failed, now).is_ok() {
                                op.message = failure.message.clone();
                                op.error = Some(failure);
                            }
                        }
                    })
                    .await;
                runner.tasks.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
            },
            span,
        ));
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).insert(op.id.clone(), task.abort_handle());
        if task.is_finished() {
            self.tasks.lock().unwrap_or_else(PoisonError::into_inner).remove(&op.id);
        }
        Ok(op)
    }

    /// Cancels a pending or running operation.
    pub async fn cancel(&self, id: &str) -> Result<Operation, CancelError> {
        let op = self.repository.get(id).await?.ok_or(CancelError::NotFound)?;
        if !op.may_cancel || op.status.is_final() {
            return Err(CancelError::NotCancellable);
        }
        if let Some(task) = self.tasks.lock().unwrap_or_else(PoisonError::into_inner).remove(id) {
            task.abort();
        }
        let mut refused = false;
        let op = self
            .mutate(id, |op, now| {
                if op.transition(OperationStatus::Cancelled, now).is_ok() {
                    op.message = "cancelled".to_owned();
                } else {
                    refused = true;
                }
            })
            .await
            .ok_or(CancelError::NotFound)?;
        if refused { Err(CancelError::NotCancellable) } else { Ok(op) }
    }

    /// The operation once final, or as it is when `timeout` runs out.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Option<Operation>, RepositoryError> {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let op = self.repository.get(id).await?;
            match &op {
                None => return Ok(None),
                Some(o) if o.status.is_final() => return Ok(op),
                Some(_) => {}
            }
            if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
                return Ok(op);
            }
        }
    }
}
