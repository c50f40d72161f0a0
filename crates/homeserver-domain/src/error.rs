//! Errors the ports and use cases return.

use std::fmt;

/// One failing input field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FieldError {
    /// Dotted path of the field (`points`, `config.memory_limit_bytes`).
    pub field: String,
    /// What is wrong with it, lowercase, no trailing period.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A [`crate::ports::SnapshotSource`] could not read the host.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source cannot work on this host at all.
    #[error("snapshot source unavailable: {0}")]
    Unavailable(String),
    /// Anything else, with its context.
    #[error(transparent)]
    Internal(#[from] Box<dyn std::error::Error + Send + Sync>),
}

/// A repository could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// Nothing with that identity.
    #[error("not found")]
    NotFound,
    /// Something with that identity exists already.
    #[error("already exists")]
    AlreadyExists,
    /// The stored revision is not the one the write expected: someone else
    /// changed it first (optimistic concurrency, `If-Match`).
    #[error("changed since it was read")]
    Stale,
    /// Refused because these records (ids) refer to it.
    #[error("in use by {}", .0.join(", "))]
    InUse(Vec<String>),
    /// Refused because of the record's own state (why, for people).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store is busy or unreachable; trying again may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else, with its context.
    #[error(transparent)]
    Internal(#[from] Box<dyn std::error::Error + Send + Sync>),
}

impl RepositoryError {
    /// Wraps any error as [`RepositoryError::Internal`].
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(e.into())
    }
}

/// A history query failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The query itself is invalid.
    #[error("invalid history query")]
    Invalid(Vec<FieldError>),
    /// The repository failed.
    #[error("history store failed")]
    Repository(#[from] RepositoryError),
}
