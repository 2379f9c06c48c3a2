//! The seam between the engine and the network: a [`Transport`] sends one
//! request to a backend and hands back its response, with the body still to
//! be read. The engine (the `run` module) does everything else (picking a
//! target, policies, limits, decoding), so its rules can be tested
//! in-process against a scripted transport on tokio's paused clock, and
//! served over real connection pools ([`HttpClient`]).

mod connect;
mod h1;
mod pool;
mod pooled;
#[cfg(test)]
mod tests;
pub(crate) mod tls;

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header::HOST};
use rustls::pki_types::ServerName;

pub use self::pooled::HttpClient;
use crate::{config::Http2, error::BackendError};

/// A request as the engine sends it. Its URI is absolute, and its authority
/// is the `Host` the backend is to see (the URL's host, or a configured
/// `Host`): where the connection goes is the [`Dial`]'s business.
pub(crate) type Request = ::http::Request<Body>;

/// An error of a body or a connection, as hyper passes them around.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body, as a pass-through sends it.
pub(crate) type Stream = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The body of a call to a backend.
#[derive(Debug)]
pub(crate) enum Body {
    /// Bytes held whole: empty (no body), a client's body read once, a
    /// rendered template. Cloning them is a reference count, so every
    /// attempt (retries, hedges) sends the same bytes.
    Full(Bytes),
    /// A client's body streamed as it arrives (a pass-through): it can be
    /// sent once.
    Stream(Stream),
}

impl Body {
    /// No body.
    pub(crate) fn empty() -> Body {
        Body::Full(Bytes::new())
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body::Full(bytes)
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Full(bytes) if bytes.is_empty() => std::task::Poll::Ready(None),
            Body::Full(bytes) => {
                std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(std::mem::take(bytes)))))
            }
            Body::Stream(stream) => std::pin::Pin::new(stream).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_empty(),
            Body::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Full(bytes) => hyper::body::SizeHint::with_exact(bytes.len() as u64),
            Body::Stream(stream) => stream.size_hint(),
        }
    }
}

/// How one upstream is spoken to: TLS, HTTP/2. Made when the config is
/// compiled; each serving thread keeps a pool of connections per settings
/// and target.
#[derive(Debug)]
pub(crate) struct ClientSettings {
    /// Identifies the pools made for these settings.
    pub(crate) id: u64,
    /// TLS, for `https://` URLs.
    pub(crate) tls: Option<tls::TlsSettings>,
    /// When HTTP/2 is spoken.
    pub(crate) http2: Http2,
}

impl ClientSettings {
    pub(crate) fn new(tls: Option<tls::TlsSettings>, http2: Http2) -> ClientSettings {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ClientSettings {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            tls,
            http2,
        }
    }

    /// The name a TLS connection to `dial` asks for and verifies:
    /// `tls.server_name`, else the URL's host.
    pub(crate) fn server_name(&self, dial: &Dial) -> Option<ServerName<'static>> {
        self.tls
            .as_ref()
            .and_then(|t| t.server_name.clone())
            .or_else(|| dial.name.clone())
    }

    /// Whether connections of these settings speak HTTP/1.1 only:
    /// `http2: never`, or `http2: auto` without TLS (no ALPN to agree on
    /// HTTP/2; h2c is `http2: always`).
    pub(crate) fn http1_only(&self) -> bool {
        self.http2 == Http2::Never || self.tls.is_none() && self.http2 == Http2::Auto
    }

    /// Gives a request to `dial` whose URI's authority is `host` its `Host`
    /// header, where the call goes over HTTP/1.1: connections that speak it
    /// only, or a target ALPN showed to speak it (its calls go over HTTP/1.1
    /// connections of their own, [`Dial::speaks_http1`]). Where a connection
    /// may turn out to speak HTTP/2, none: the URI's authority is sent as
    /// `:authority`, and a `host` header beside it is a duplicate that
    /// servers such as nginx answer with 400 (the HTTP/1.1 client adds the
    /// header from the URI itself when the connection is HTTP/1.1).
    pub(crate) fn set_host(&self, dial: &Dial, headers: &mut HeaderMap, host: &HeaderValue) {
        if self.http1_only() || dial.speaks_http1() {
            headers.insert(HOST, host.clone());
        } else {
            headers.remove(HOST);
        }
    }
}

/// Where a target's connections go: the address dialled, and the name a
/// TLS connection asks for (SNI) and verifies unless `tls.server_name`
/// replaces it: the URL's host, a DNS name or an IP address (an IP sends no
/// SNI and is verified against the certificate's IP names).
#[derive(Debug)]
pub(crate) struct Dial {
    pub(crate) addr: SocketAddr,
    pub(crate) name: Option<ServerName<'static>>,
    /// ALPN chose HTTP/1.1 on a connection to this target (`http2: auto`
    /// over TLS): from then on its calls drive their own HTTP/1.1
    /// connections ([`h1`]) instead of going through hyper-util's pool.
    speaks_http1: std::sync::atomic::AtomicBool,
}

impl Dial {
    /// To `addr`, found from the URL's host `host`.
    pub(crate) fn new(addr: SocketAddr, host: &str) -> Dial {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Dial {
            addr,
            name: ServerName::try_from(host.to_owned()).ok(),
            speaks_http1: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether ALPN chose HTTP/1.1 on a connection to this target.
    pub(crate) fn speaks_http1(&self) -> bool {
        self.speaks_http1.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn learned_http1(&self) {
        self.speaks_http1
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Sends requests to backends.
pub(crate) trait Transport: Clone + Send + Sync + 'static {
    /// The body of a response, read by the engine within its limits.
    type Body: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static;

    /// Sends `request` (an absolute URI) to `dial`, the way `settings` say. A
    /// failure to connect or send is a [`BackendError`] of kind `connect`;
    /// any answer, whatever its status, is `Ok`.
    fn send(
        &self,
        settings: &Arc<ClientSettings>,
        dial: &Arc<Dial>,
        request: Request,
    ) -> impl Future<Output = Result<::http::Response<Self::Body>, BackendError>> + Send;
}
