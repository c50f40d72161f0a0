//! The adapter's own failures, carried inside [`RuntimeError::Internal`].

use homeserver_domain::RuntimeError;

/// Something went wrong driving LXC; always names what was being done.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LxcError {
    /// A tool exited with an error.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A tool printed something we cannot read.
    #[error("{0}")]
    Unexpected(String),
}

impl LxcError {
    /// An I/O error with context.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}

impl From<LxcError> for RuntimeError {
    fn from(e: LxcError) -> Self {
        RuntimeError::Internal(Box::new(e))
    }
}

/// A failed blocking task (panic or cancellation) as an internal error.
pub(crate) fn join_error(what: &str, e: tokio::task::JoinError) -> RuntimeError {
    LxcError::Unexpected(format!("{what}: background task failed: {e}")).into()
}
