//! The production [`Transport`]: hyper-util's pooled client over TCP, with
//! keep-alive pools per host and port and `TCP_NODELAY`.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection, HttpConnector},
    },
    rt::{TokioExecutor, TokioIo},
};

use super::{Request, Transport};
use crate::error::{BackendError, ErrorKind};

/// The pooled HTTP client backend calls go through. Cheap to clone (clones
/// share the pool); each serving thread has its own, so a request's calls
/// stay on its thread.
#[derive(Clone, Debug)]
pub struct HttpClient(Client<Connector, Empty<Bytes>>);

impl HttpClient {
    /// A client with keep-alive pools and `TCP_NODELAY`.
    pub fn new() -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        HttpClient(
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .build(Connector(connector)),
        )
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

impl Transport for HttpClient {
    type Body = hyper::body::Incoming;

    async fn send(&self, request: Request) -> Result<http::Response<Self::Body>, BackendError> {
        self.0.request(request).await.map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            BackendError::new(ErrorKind::Connect, format!("{e}{cause}"))
        })
    }
}

/// hyper-util's `HttpConnector`, minus the `HttpInfo` (the connection's
/// addresses) that its client copies into every response's extensions: nine
/// allocations per request of three calls, for a value the gateway never
/// reads (a profile of `bench/run.sh`'s throughput scenario).
#[derive(Clone, Debug)]
pub(crate) struct Connector(HttpConnector);

/// A backend connection: a TCP stream that reports no extra information.
#[derive(Debug)]
pub(crate) struct Stream(TokioIo<tokio::net::TcpStream>);

impl tower::Service<http::Uri> for Connector {
    type Response = Stream;
    type Error = <HttpConnector as tower::Service<http::Uri>>::Error;
    type Future = futures::future::MapOk<
        <HttpConnector as tower::Service<http::Uri>>::Future,
        fn(TokioIo<tokio::net::TcpStream>) -> Stream,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        futures::TryFutureExt::map_ok(self.0.call(uri), Stream as fn(_) -> _)
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
