//! The seam between the engine and the network: a [`Transport`] sends one
//! request to a backend and hands back its response, with the body still to
//! be read. The engine (the `run` module) does everything else (policies,
//! limits, decoding), so its rules can be tested in-process against a
//! scripted transport on tokio's paused clock, and served over a real
//! connection pool ([`HttpClient`]).

mod pooled;

use std::future::Future;

use bytes::Bytes;

pub use self::pooled::HttpClient;
use crate::error::BackendError;

/// A request as the engine sends it (no body yet: backends are called with
/// `GET`-style requests).
pub(crate) type Request = ::http::Request<http_body_util::Empty<Bytes>>;

/// An error of a body or a connection, as hyper passes them around.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends requests to backends.
pub(crate) trait Transport: Clone + Send + Sync + 'static {
    /// The body of a response, read by the engine within its limits.
    type Body: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static;

    /// Sends `request` (an absolute URI). A failure to connect or send is a
    /// [`BackendError`] of kind `connect`; any answer, whatever its status,
    /// is `Ok`.
    fn send(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<::http::Response<Self::Body>, BackendError>> + Send;
}
