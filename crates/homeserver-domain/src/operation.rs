//! Operations: long-running work (container create, lifecycle, bulk) that
//! the API answers with `202 Accepted` and a `Location` to follow.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;

use crate::error::{FieldError, RepositoryError};
use crate::page::{Page, Paged};
use crate::time::UnixMillis;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationKind {
    /// Create (and maybe start) a container.
    ContainerCreate,
    /// Start.
    ContainerStart,
    /// Stop.
    ContainerStop,
    /// Restart.
    ContainerRestart,
    /// Pause.
    ContainerPause,
    /// Unpause.
    ContainerUnpause,
    /// Delete.
    ContainerDelete,
    /// One action on many containers.
    ContainerBulk,
}

impl OperationKind {
    /// Every kind.
    pub const ALL: [OperationKind; 8] = [
        Self::ContainerCreate,
        Self::ContainerStart,
        Self::ContainerStop,
        Self::ContainerRestart,
        Self::ContainerPause,
        Self::ContainerUnpause,
        Self::ContainerDelete,
        Self::ContainerBulk,
    ];

    /// Wire name (`container.start`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ContainerCreate => "container.create",
            Self::ContainerStart => "container.start",
            Self::ContainerStop => "container.stop",
            Self::ContainerRestart => "container.restart",
            Self::ContainerPause => "container.pause",
            Self::ContainerUnpause => "container.unpause",
            Self::ContainerDelete => "container.delete",
            Self::ContainerBulk => "container.bulk",
        }
    }
}

impl FromStr for OperationKind {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| FieldError::new("kind", format!("unknown kind `{s}`")))
    }
}

/// Where an operation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationStatus {
    /// Waiting for a worker.
    Pending,
    /// A worker runs it.
    Running,
    /// Done, it worked.
    Succeeded,
    /// Done, it failed.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl OperationStatus {
    /// Every status.
    pub const ALL: [OperationStatus; 5] =
        [Self::Pending, Self::Running, Self::Succeeded, Self::Failed, Self::Cancelled];

    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// It will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// Moving to `next` is allowed: pending → running → final, and pending
    /// or running → cancelled/failed.
    pub fn can_become(self, next: OperationStatus) -> bool {
        use OperationStatus::*;
        matches!(
            (self, next),
            (Pending, Running | Failed | Cancelled) | (Running, Succeeded | Failed | Cancelled) | (Running, Running)
        )
    }
}

impl FromStr for OperationStatus {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| FieldError::new("status", format!("unknown status `{s}`")))
    }
}

impl fmt::Display for OperationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stable failure code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// SCREAMING_SNAKE_CASE code (`IMAGE_NOT_FOUND`, `INTERRUPTED`).
    pub code: String,
    /// What happened.
    pub message: String,
}

impl Failure {
    /// A failure.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), message: message.into() }
    }
}

/// One item of a bulk action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkItem {
    /// The container id asked for.
    pub id: String,
    /// It worked.
    pub succeeded: bool,
    /// Why not.
    pub error: Option<Failure>,
}

/// What a finished operation produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationOutput {
    /// Nothing beyond success.
    None,
    /// The container created.
    Container {
        /// Its id.
        id: String,
    },
    /// One result per bulk item.
    Bulk(Vec<BulkItem>),
}

/// An operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Id.
    pub id: String,
    /// Kind.
    pub kind: OperationKind,
    /// Status.
    pub status: OperationStatus,
    /// 0..=100.
    pub progress_percent: u8,
    /// What it is doing now.
    pub message: String,
    /// Container ids it touches.
    pub containers: Vec<String>,
    /// What it produced.
    pub output: OperationOutput,
    /// Why it failed.
    pub error: Option<Failure>,
    /// It can still be cancelled.
    pub may_cancel: bool,
    /// Created.
    pub created_at: UnixMillis,
    /// Started.
    pub started_at: Option<UnixMillis>,
    /// Finished.
    pub finished_at: Option<UnixMillis>,
}

impl Operation {
    /// A pending operation.
    pub fn pending(id: String, kind: OperationKind, containers: Vec<String>, now: UnixMillis) -> Self {
        Self {
            id,
            kind,
            status: OperationStatus::Pending,
            progress_percent: 0,
            message: "waiting for a worker".to_owned(),
            containers,
            output: OperationOutput::None,
            error: None,
            may_cancel: true,
            created_at: now,
            started_at: None,
            finished_at: None,
        }
    }

    /// Moves to `next`, stamping times; refuses transitions out of a final state.
    pub fn transition(&mut self, next: OperationStatus, now: UnixMillis) -> Result<(), FieldError> {
        if !self.status.can_become(next) {
            return Err(FieldError::new("status", format!("cannot go from {} to {}", self.status, next)));
        }
        if next == OperationStatus::Running && self.started_at.is_none() {
            self.started_at = Some(now);
        }
        if next.is_final() {
            self.finished_at = Some(now);
            self.may_cancel = false;
            if next == OperationStatus::Succeeded {
                self.progress_percent = 100;
            }
        }
        self.status = next;
        Ok(())
    }
}

/// Which operations to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationFilter {
    /// Only this status.
    pub status: Option<OperationStatus>,
    /// Only this kind.
    pub kind: Option<OperationKind>,
}

/// Stores operations.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait OperationRepository: Send + Sync {
    /// Stores a new operation.
    async fn insert(&self, op: &Operation) -> Result<(), RepositoryError>;
    /// Replaces a stored operation.
    async fn update(&self, op: &Operation) -> Result<(), RepositoryError>;
    /// One operation.
    async fn get(&self, id: &str) -> Result<Option<Operation>, RepositoryError>;
    /// Operations, newest first.
    async fn list(&self, filter: &OperationFilter, page: Page) -> Result<Paged<Operation>, RepositoryError>;
    /// Marks every pending or running operation failed with `INTERRUPTED`
    /// (after a restart); how many.
    async fn interrupt_unfinished(&self, now: UnixMillis) -> Result<u64, RepositoryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_transitions_stamp_times_and_refuse_leaving_final_states() {
        let mut op = Operation::pending("o".into(), OperationKind::ContainerStart, vec![], UnixMillis(1));
        assert!(op.may_cancel);
        op.transition(OperationStatus::Running, UnixMillis(2)).unwrap();
        assert_eq!(op.started_at, Some(UnixMillis(2)));
        op.transition(OperationStatus::Succeeded, UnixMillis(3)).unwrap();
        assert_eq!((op.finished_at, op.progress_percent, op.may_cancel), (Some(UnixMillis(3)), 100, false));
        assert!(op.transition(OperationStatus::Running, UnixMillis(4)).is_err());
        assert!(op.transition(OperationStatus::Cancelled, UnixMillis(4)).is_err());
        let mut p = Operation::pending("p".into(), OperationKind::ContainerBulk, vec![], UnixMillis(1));
        assert!(
            p.transition(OperationStatus::Succeeded, UnixMillis(2)).is_err(),
            "pending cannot succeed without running"
        );
        p.transition(OperationStatus::Cancelled, UnixMillis(2)).unwrap();
        assert!(p.status.is_final());
    }

    #[test]
    fn names_round_trip() {
        for k in OperationKind::ALL {
            assert_eq!(k.as_str().parse::<OperationKind>().unwrap(), k);
        }
        for s in OperationStatus::ALL {
            assert_eq!(s.as_str().parse::<OperationStatus>().unwrap(), s);
        }
    }
}
