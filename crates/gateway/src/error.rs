//! The gateway's error vocabulary: how a backend call can fail, with a stable
//! kind that `_errors`, metrics, logs and the dashboard all name the same way.

use bytes::Bytes;

/// Why a backend call failed. The names ([`ErrorKind::as_str`]) are stable:
/// they appear in `_errors`, in metrics and in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Its own timeout, or the endpoint's deadline, expired.
    Timeout,
    /// No connection, or the connection broke (also mid-body).
    Connect,
    /// It answered with a non-2xx status.
    Status,
    /// Its body is not JSON, not of a JSON content type, too deeply nested, or
    /// lacks the `extract` path.
    Decode,
    /// Its upstream's bulkhead is full.
    Overloaded,
    /// Its upstream's circuit breaker is open.
    CircuitOpen,
    /// It was stopped because the request failed or went away.
    Cancelled,
    /// Its body is larger than `server.max_backend_body`.
    BodyTooLarge,
    /// A backend it depends on (`after`) failed or lacks the value it needs.
    Dependency,
    /// A bug in the gateway (a panic); reported, never a crash.
    Internal,
}

impl ErrorKind {
    /// Every kind, in the order of their discriminants.
    pub(crate) const ALL: [ErrorKind; 10] = [
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Status,
        ErrorKind::Decode,
        ErrorKind::Overloaded,
        ErrorKind::CircuitOpen,
        ErrorKind::Cancelled,
        ErrorKind::BodyTooLarge,
        ErrorKind::Dependency,
        ErrorKind::Internal,
    ];

    /// How many kinds there are.
    pub(crate) const COUNT: usize = ErrorKind::ALL.len();

    /// The stable name, e.g. `body_too_large`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Status => "status",
            ErrorKind::Decode => "decode",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::Dependency => "dependency",
            ErrorKind::Internal => "internal",
        }
    }
}

/// A failed backend call: its kind, the backend's status when it answered,
/// and what happened, for people.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct BackendError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The backend's status, when it answered.
    pub status: Option<u16>,
    /// What happened, for people.
    pub message: String,
    /// The backend's body when it answered with an error status, kept for
    /// `pass_status`.
    pub(crate) body: Option<Bytes>,
    /// Whether the request never left the gateway (no connection could be
    /// made): another target may take it whatever its method.
    pub(crate) unsent: bool,
}

impl BackendError {
    /// A failure of `kind`, described by `message`.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> BackendError {
        BackendError {
            kind,
            status: None,
            message: message.into(),
            body: None,
            unsent: false,
        }
    }

    /// The backend answered `status` (not 2xx), with `body`.
    pub(crate) fn status(status: http::StatusCode, body: Bytes) -> BackendError {
        BackendError {
            kind: ErrorKind::Status,
            status: Some(status.as_u16()),
            message: format!("answered {status}"),
            body: Some(body),
            unsent: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_listed_in_discriminant_order() {
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{}", kind.as_str());
        }
    }

    #[test]
    fn an_error_shows_its_kind_and_message() {
        let e = BackendError::new(ErrorKind::BodyTooLarge, "the body is larger than 10 bytes");
        assert_eq!(
            e.to_string(),
            "body_too_large: the body is larger than 10 bytes"
        );
        let e: &dyn std::error::Error = &e;
        assert!(e.source().is_none());
    }
}
