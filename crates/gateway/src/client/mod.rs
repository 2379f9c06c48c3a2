//! The seam between the engine and the network: a [`Transport`] sends one
//! request to a backend and hands back its response, with the body still to
//! be read. The engine (the `run` module) does everything else (picking a
//! target, policies, limits, decoding), so its rules can be tested
//! in-process against a scripted transport on tokio's paused clock, and
//! served over real connection pools ([`HttpClient`]).

mod connect;
mod pool;
mod pooled;
#[cfg(test)]
mod tests;
pub(crate) mod tls;

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use rustls::pki_types::ServerName;

pub use self::pooled::HttpClient;
use crate::{config::Http2, error::BackendError};

/// The body of a request as the engine sends it (none yet: backends are
/// called with `GET`-style requests).
pub(crate) type RequestBody = http_body_util::Empty<Bytes>;

/// A request as the engine sends it. Its URI is absolute: the target's
/// address.
pub(crate) type Request = ::http::Request<RequestBody>;

/// What the client can send as a request body.
pub(crate) trait OutBody:
    hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

impl<B> OutBody for B where
    B: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

/// An error of a body or a connection, as hyper passes them around.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How one upstream is spoken to: TLS, HTTP/2, the names its addresses came
/// from. Made when the config is compiled; each serving thread keeps a pool
/// of connections per settings.
#[derive(Debug)]
pub(crate) struct ClientSettings {
    /// Identifies the pools made for these settings.
    pub(crate) id: u64,
    /// TLS, for `https://` URLs.
    pub(crate) tls: Option<tls::TlsSettings>,
    /// When HTTP/2 is spoken.
    pub(crate) http2: Http2,
    /// Targets reached by an address that a name resolved to: the name, for
    /// SNI and certificate verification (by authority, `10.0.0.5:8443`).
    names: RwLock<HashMap<String, ServerName<'static>>>,
}

impl ClientSettings {
    pub(crate) fn new(tls: Option<tls::TlsSettings>, http2: Http2) -> ClientSettings {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ClientSettings {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            tls,
            http2,
            names: RwLock::default(),
        }
    }

    /// Records that `authority` was resolved from `name`.
    pub(crate) fn name_authority(&self, authority: &str, name: &str) {
        if let Ok(name) = ServerName::try_from(name.to_owned()) {
            let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
            names.insert(authority.to_owned(), name);
        }
    }

    /// The name a TLS connection to `authority` asks for and verifies:
    /// `tls.server_name`, else the name the address came from, else the
    /// address itself (no SNI, the certificate must name the IP).
    pub(crate) fn server_name(&self, authority: &str, host: &str) -> Option<ServerName<'static>> {
        if let Some(name) = self.tls.as_ref().and_then(|t| t.server_name.clone()) {
            return Some(name);
        }
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = names.get(authority) {
            return Some(name.clone());
        }
        ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
        .ok()
    }
}

/// Sends requests to backends.
pub(crate) trait Transport: Clone + Send + Sync + 'static {
    /// The body of a response, read by the engine within its limits.
    type Body: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static;

    /// Sends `request` (an absolute URI) the way `settings` say. A failure
    /// to connect or send is a [`BackendError`] of kind `connect`; any answer,
    /// whatever its status, is `Ok`.
    fn send(
        &self,
        settings: &Arc<ClientSettings>,
        request: Request,
    ) -> impl Future<Output = Result<::http::Response<Self::Body>, BackendError>> + Send;
}
