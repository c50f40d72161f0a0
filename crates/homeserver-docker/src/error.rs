//! Translating bollard errors into [`RuntimeError`].
//!
//! The translation happens in two steps: [`classify`] is a pure function that
//! sorts a bollard error into a [`Failure`] (unit-tested without a daemon),
//! and the runtime turns a [`Failure`] into a [`RuntimeError`], looking up the
//! container's current state for conflicts (`409`) so the caller learns *why*
//! the engine refused.

use bollard::errors::Error as BollardError;
use homeserver_domain::{RuntimeError, RuntimeKind};

/// A Docker call failed; the message keeps what was attempted on what.
#[derive(Debug, thiserror::Error)]
#[error("docker {op} {target}: {message}")]
pub(crate) struct CallError {
    /// The operation (`inspect`, `create`, ...).
    pub(crate) op: &'static str,
    /// Container id, name or image the call was about.
    pub(crate) target: String,
    /// What bollard or the daemon said.
    pub(crate) message: String,
}

/// Which kind of call failed: decides how a status code is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// A call about an existing container (`404` = no such container).
    Container,
    /// `POST /containers/create` (`404` = no such image, `409` = name taken).
    Create,
    /// A call about the daemon itself (ping, list, events).
    Daemon,
}

/// What a bollard error means for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The daemon could not be reached (socket missing, refused, dropped).
    Unavailable(String),
    /// No such container.
    NotFound,
    /// No such image (create only).
    NoSuchImage,
    /// The container name is in use (create only).
    NameTaken,
    /// `409`: the container's state forbids the call.
    Conflict(String),
    /// Any other refusal by the daemon (`400`, `500`, ...).
    Rejected(String),
    /// bollard's own request timeout fired.
    Timeout,
    /// Anything else (bad JSON, ...).
    Internal(String),
}

/// Sorts a bollard error.
pub(crate) fn classify(kind: CallKind, err: &BollardError) -> Failure {
    match err {
        BollardError::DockerResponseServerError { status_code, message } => {
            classify_status(kind, *status_code, message)
        }
        BollardError::SocketNotFoundError(path) => Failure::Unavailable(format!("socket {path} not found")),
        BollardError::HyperLegacyError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::IOError { .. }
        | BollardError::UnsupportedURISchemeError { .. } => Failure::Unavailable(err.to_string()),
        BollardError::RequestTimeoutError => Failure::Timeout,
        other => Failure::Internal(other.to_string()),
    }
}

/// Sorts an HTTP error status the daemon answered with.
pub(crate) fn classify_status(kind: CallKind, status: u16, message: &str) -> Failure {
    let lower = message.to_ascii_lowercase();
    match (kind, status) {
        (CallKind::Create, 404) if lower.contains("no such image") || lower.contains("not found") => {
            Failure::NoSuchImage
        }
        (CallKind::Create, 409) if lower.contains("already in use") => Failure::NameTaken,
        (CallKind::Create, _) => Failure::Rejected(message.to_owned()),
        (CallKind::Container, 404) => Failure::NotFound,
        (CallKind::Container, 409) => Failure::Conflict(message.to_owned()),
        // Old daemons answer some state conflicts with 500 (e.g. "is not paused").
        (CallKind::Container, 500) if is_state_message(&lower) => Failure::Conflict(message.to_owned()),
        _ => Failure::Rejected(message.to_owned()),
    }
}

/// The daemon's words for "the container's state forbids this".
fn is_state_message(lower: &str) -> bool {
    ["is not running", "is not paused", "is already paused", "is paused", "is restarting", "cannot remove a running"]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// `Unavailable` for the Docker runtime.
pub(crate) fn unavailable(reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Unavailable { runtime: RuntimeKind::Docker, reason: reason.into() }
}

/// `Internal` with the call's context.
pub(crate) fn internal(op: &'static str, target: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Internal(Box::new(CallError { op, target: target.to_owned(), message: message.into() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16, message: &str) -> BollardError {
        BollardError::DockerResponseServerError { status_code, message: message.to_owned() }
    }

    #[test]
    fn create_errors_name_the_cause() {
        assert_eq!(classify(CallKind::Create, &server(404, "No such image: nope:latest")), Failure::NoSuchImage);
        assert_eq!(
            classify(
                CallKind::Create,
                &server(409, "Conflict. The container name \"/web\" is already in use by container \"abc\".")
            ),
            Failure::NameTaken
        );
        assert_eq!(
            classify(CallKind::Create, &server(400, "invalid reference format")),
            Failure::Rejected("invalid reference format".into())
        );
        // A 404 on create that is not about the image is a refusal, not a missing image.
        assert!(matches!(classify(CallKind::Create, &server(404, "network x")), Failure::Rejected(_)));
    }

    #[test]
    fn container_errors_follow_the_status() {
        assert_eq!(classify(CallKind::Container, &server(404, "No such container: x")), Failure::NotFound);
        assert_eq!(
            classify(CallKind::Container, &server(409, "Container abc is not running")),
            Failure::Conflict("Container abc is not running".into())
        );
        assert_eq!(
            classify(CallKind::Container, &server(500, "Container abc is not paused")),
            Failure::Conflict("Container abc is not paused".into())
        );
        assert_eq!(
            classify(CallKind::Container, &server(500, "OCI runtime create failed")),
            Failure::Rejected("OCI runtime create failed".into())
        );
        assert_eq!(
            classify(CallKind::Daemon, &server(404, "page not found")),
            Failure::Rejected("page not found".into())
        );
    }

    #[test]
    fn transport_errors_mean_unavailable() {
        assert!(matches!(
            classify(CallKind::Daemon, &BollardError::SocketNotFoundError("/nope.sock".into())),
            Failure::Unavailable(reason) if reason.contains("/nope.sock")
        ));
        let io = BollardError::IOError { err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused) };
        assert!(matches!(classify(CallKind::Container, &io), Failure::Unavailable(_)));
        assert_eq!(classify(CallKind::Container, &BollardError::RequestTimeoutError), Failure::Timeout);
        let json = BollardError::JsonDataError { message: "bad".into(), column: 1 };
        assert!(matches!(classify(CallKind::Daemon, &json), Failure::Internal(_)));
    }

    #[test]
    fn internal_errors_keep_context() {
        let err = internal("inspect", "abc", "boom");
        assert_eq!(err.to_string(), "docker inspect abc: boom");
        assert_eq!(unavailable("down").to_string(), "docker is unavailable: down");
    }
}
