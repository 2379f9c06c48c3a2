//! Why a mock cannot be built or started.

use std::{io, path::PathBuf};

/// A mock that cannot be built or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    /// A route is malformed: its path, or one of its replies.
    #[error("route `{path}`: {message}")]
    Route {
        /// The route's path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A `body_file` cannot be read or is not JSON.
    #[error("body file {}: {message}", path.display())]
    BodyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A certificate or key of `tls` cannot be read or used, or certificates
    /// cannot be written.
    #[error("TLS: {0}")]
    Tls(String),
    /// No port could be opened on 127.0.0.1.
    #[error("cannot listen on 127.0.0.1: {0}")]
    Listen(#[source] io::Error),
}
