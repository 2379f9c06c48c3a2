//! One backend call: send, check the status and content type, read the body
//! within its limit, parse it as JSON within its depth. Every way this can
//! fail becomes a [`BackendError`] with a stable [`ErrorKind`].

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::{
    client::legacy::{
        Client as HyperClient,
        connect::{Connected, Connection, HttpConnector},
    },
    rt::{TokioExecutor, TokioIo},
};

use crate::{config::Method, shape::Json};

/// The pooled HTTP client shared by every backend call (keep-alive connections
/// per host and port).
pub type Client = HyperClient<Connector, Empty<Bytes>>;

/// A client with keep-alive pools and `TCP_NODELAY`.
pub fn client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(Connector(connector))
}

/// hyper-util's `HttpConnector`, minus the `HttpInfo` (the connection's
/// addresses) that its client copies into every response's extensions: nine
/// allocations per request of three calls, for a value the gateway never
/// reads (a profile of `bench/run.sh`'s throughput scenario).
#[derive(Clone, Debug)]
pub struct Connector(HttpConnector);

/// A backend connection: a TCP stream that reports no extra information.
#[derive(Debug)]
pub struct Stream(TokioIo<tokio::net::TcpStream>);

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

/// Why a backend call failed. The names are stable: they appear in
/// `_errors`, in metrics and in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// How many kinds there are (`Internal` is the last).
    pub(crate) const COUNT: usize = ErrorKind::Internal as usize + 1;

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

/// A failed backend call.
#[derive(Clone, Debug)]
pub struct BackendError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The backend's status, when it answered.
    pub status: Option<u16>,
    /// What happened, for people.
    pub message: String,
    /// The backend's body, kept for `pass_status`.
    pub body: Option<Bytes>,
}

impl BackendError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> BackendError {
        BackendError {
            kind,
            status: None,
            message: message.into(),
            body: None,
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// Limits on what a backend may send.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_body: u64,
    pub(crate) max_depth: u32,
}

pub(crate) async fn call(
    client: &Client,
    method: Method,
    url: &str,
    headers: HeaderMap,
    limits: Limits,
) -> Result<Json, BackendError> {
    let mut request = Request::builder()
        .method(method.as_str())
        .uri(url)
        .body(Empty::<Bytes>::new())
        .map_err(|e| {
            BackendError::new(
                ErrorKind::Connect,
                format!("cannot build a request for {url}: {e}"),
            )
        })?;
    *request.headers_mut() = headers;
    let response = client.request(request).await.map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        BackendError::new(ErrorKind::Connect, format!("{e}{cause}"))
    })?;
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let too_large = || {
        BackendError::new(
            ErrorKind::BodyTooLarge,
            format!(
                "the body is larger than the {} bytes allowed",
                limits.max_body
            ),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body) {
        return Err(too_large());
    }
    let mut body = Limited::new(body, usize::try_from(limits.max_body).unwrap_or(usize::MAX));
    // Read by hand rather than with `collect`: a body in one frame (the usual
    // case) is kept as it is, with no buffer list allocated for it.
    let (mut bytes, mut joined) = (Bytes::new(), None::<BytesMut>);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                BackendError::new(ErrorKind::Connect, format!("the body was cut off: {e}"))
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match &mut joined {
            Some(buffer) => buffer.extend_from_slice(&data),
            None if bytes.is_empty() => bytes = data,
            None => {
                let mut buffer = BytesMut::with_capacity(bytes.len() + data.len());
                buffer.extend_from_slice(&bytes);
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            }
        }
    }
    let bytes = joined.map_or(bytes, BytesMut::freeze);
    if !status.is_success() {
        return Err(BackendError {
            kind: ErrorKind::Status,
            status: Some(status.as_u16()),
            message: format!("answered {status}"),
            body: Some(bytes),
        });
    }
    if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        let json = essence.eq_ignore_ascii_case("application/json")
            || essence.to_ascii_lowercase().ends_with("+json");
        if !json {
            return Err(BackendError::new(
                ErrorKind::Decode,
                format!("content type `{essence}` is not JSON"),
            ));
        }
    }
    if nesting_exceeds(&bytes, limits.max_depth) {
        return Err(BackendError::new(
            ErrorKind::Decode,
            format!("JSON nested deeper than {} levels", limits.max_depth),
        ));
    }
    Json::parse(bytes)
        .map_err(|e| BackendError::new(ErrorKind::Decode, format!("invalid JSON: {e}")))
}

/// Whether arrays and objects nest deeper than `max`, ignoring brackets inside
/// strings. A linear scan, run before parsing so a hostile body cannot make the
/// parser recurse deeply.
fn nesting_exceeds(bytes: &[u8], max: u32) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_outside_strings() {
        assert!(!nesting_exceeds(br#"{"a":[{"b":"[[[[[[["}]}"#, 3));
        assert!(nesting_exceeds(br#"{"a":[{"b":[1]}]}"#, 3));
        assert!(!nesting_exceeds(br#"{"a":"\"[[[[","b":{}}"#, 2));
    }
}
