//! What went wrong reading the host, with the file it happened on.

use std::io;
use std::path::{Path, PathBuf};

use homeserver_domain::SourceError;

/// A kernel file could not be read or made no sense.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The read itself failed.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The content lacks a figure the snapshot needs.
    #[error("cannot parse {}: {what}", path.display())]
    Parse { path: PathBuf, what: &'static str },
    /// The blocking task running the read did not finish.
    #[error("{what} did not complete")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl ReadError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }

    pub(crate) fn parse(path: &Path, what: &'static str) -> Self {
        Self::Parse { path: path.to_owned(), what }
    }
}

impl From<ReadError> for SourceError {
    fn from(e: ReadError) -> Self {
        SourceError::Internal(Box::new(e))
    }
}

/// Error chains on one line for logs: `a: b: c`.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
