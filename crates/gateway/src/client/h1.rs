//! HTTP/1.1 calls that drive their own connection: the call's future polls
//! the connection together with the response, and the response body polls it
//! until the body is read, then hands the connection back to its target's
//! idle list ([`pool`](super::pool)). No task per connection and no hop
//! between tasks, where hyper-util's pooled client woke a connection task for
//! every call and back again for its answer and body (two task hops per call,
//! a pool lock and a hashed key).
//!
//! Only for connections that can speak nothing but HTTP/1.1; HTTP/2
//! multiplexes the calls of many tasks over one connection, which a task of
//! its own drives (hyper-util's client, [`pooled`](super::pooled)).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::Uri;
use hyper::{
    body::{Body as _, Frame, Incoming, SizeHint},
    client::conn::{TrySendError, http1},
};

use super::{
    ClientSettings, Dial, Request, connect,
    pool::{Conn, H1, Pools, Target},
    tls,
};
use crate::error::{BackendError, ErrorKind};

/// One call to `dial`'s target: on its newest idle connection, or on a new
/// one. A request that a reused connection gave back unsent (the backend had
/// closed it meanwhile) goes to the next idle connection, and to a new one
/// when none is left: after a backend restarted, a call goes past every
/// connection it left behind instead of failing (the idle list is bounded,
/// so is the walk). A new connection's failure ends the call.
///
/// The same goes for an idempotent request that went out on a connection
/// idle for [`STALE_AFTER`] or more and found it closed before any answer
/// came ([`resendable`]): the backend closed the connection as the request
/// arrived (its keep-alive timeout), a race RFC 9112 §9.3.1 lets a client
/// settle by sending such a request again on another connection.
///
/// Not an `async fn`: the request is made ready before the future, which
/// then holds it once (an `async fn` keeps its argument beside the variable
/// it is moved into, in every backend call's task).
pub(super) fn send<'s, 'd>(
    pools: &Arc<Pools>,
    settings: &'s Arc<ClientSettings>,
    dial: &'d Arc<Dial>,
    mut request: Request,
) -> impl Future<Output = Result<http::Response<ResponseBody>, BackendError>> + Send + use<'s, 'd> {
    let target = pools.target(settings, dial);
    let https = request.uri().scheme_str() == Some("https");
    ensure_host(&mut request);
    origin_form(request.uri_mut());
    async move {
        loop {
            let (result, reused, copy) = match target.take() {
                Some((conn, idle)) => {
                    let copy = (idle >= STALE_AFTER)
                        .then(|| resendable(&request))
                        .flatten();
                    (send_on(&target, conn, request).await, true, copy)
                }
                None => {
                    // Boxed: opening a connection (TCP, TLS) takes a large
                    // future, which would otherwise make every call's future,
                    // and its task, that large.
                    let conn = Box::pin(open(settings, dial, &target, https)).await?;
                    (send_on(&target, conn, request).await, false, None)
                }
            };
            match result {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    Some(back) if reused => request = back,
                    back => {
                        let e = e.into_error();
                        if let Some(copy) = copy
                            && back.is_none()
                            && closed_before_answer(&e)
                        {
                            tracing::debug!(
                                target = %dial.addr,
                                error = %e,
                                "the backend closed an idle connection as a request went out on it: sent again"
                            );
                            request = *copy;
                            continue;
                        }
                        let mut error = failure(&e);
                        error.unsent = back.is_some();
                        return Err(error);
                    }
                },
            }
        }
    }
}

/// How long a connection must have been idle for a call on it to keep a copy
/// of its request ([`resendable`]), in case the backend closes it as the
/// request arrives. Servers close idle keep-alive connections after a second
/// or more (2 s in gunicorn, 5 s in Node.js and Apache httpd, 75 s in nginx,
/// 1 s where someone set it low): a tenth of the shortest of them. Under
/// load, connections are reused within milliseconds and no call pays for a
/// copy; a connection idle this long carries a few calls a second at most,
/// for which a copy costs nothing that shows.
pub(super) const STALE_AFTER: Duration = Duration::from_millis(100);

/// A copy of `request` to send again if the connection it goes out on turns
/// out closed, when that is safe: an idempotent method (RFC 9110 §9.2.2:
/// sending it twice does what sending it once does) and a body held whole.
/// A POST or PATCH, or a streamed body, is never repeated by the client.
/// Boxed: it sits in every call's future while the answer is awaited.
fn resendable(request: &Request) -> Option<Box<Request>> {
    use http::Method;
    let idempotent = [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(request.method());
    let super::Body::Full(body) = request.body() else {
        return None;
    };
    if !idempotent {
        return None;
    }
    let mut copy = http::Request::new(super::Body::Full(body.clone()));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(Box::new(copy))
}

/// Whether a call's connection ended before its answer's head came: end of
/// stream, or the connection reset or aborted (a backend that closes with
/// the request unread in its socket resets the connection).
fn closed_before_answer(error: &hyper::Error) -> bool {
    use std::io::ErrorKind as Io;
    if error.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe | Io::UnexpectedEof
            );
        }
        source = cause.source();
    }
    false
}

type Sent = Result<http::Response<ResponseBody>, TrySendError<Request>>;

/// A new connection to `target`; a failure is a connect error with nothing
/// sent.
async fn open(
    settings: &ClientSettings,
    dial: &Dial,
    target: &Target,
    https: bool,
) -> Result<Conn, BackendError> {
    let unsent = |message: String| {
        let mut error = BackendError::new(ErrorKind::Connect, message);
        error.unsent = true;
        error
    };
    let tls = if https {
        Some(
            target
                .tls
                .as_ref()
                .ok_or_else(|| unsent(format!("{}: https without TLS settings", dial.addr)))?,
        )
    } else {
        None
    };
    let stream = connect::open(settings, dial, tls, None)
        .await
        .map_err(|e| unsent(tls::describe(&e).unwrap_or_else(|| e.to_string())))?;
    let (send, conn) = http1::handshake(stream)
        .await
        .map_err(|e| unsent(failure(&e).message))?;
    Ok(Box::new(H1 { send, conn }))
}

/// Sends `request` on `conn`, driving the connection until the response's
/// head is in; the body then drives it on. Not an `async fn`, which would
/// keep the request (queued at once) for as long as the answer takes.
fn send_on(target: &Arc<Target>, mut conn: Conn, request: Request) -> impl Future<Output = Sent> {
    // Queued at once; the future does not borrow the handle. Boxed so that
    // an abandoned exchange can hand it to a task of its own ([`drain`]).
    let exchange = Exchange(Some((
        Box::pin(conn.send.try_send_request(request)),
        Driver {
            conn: Some(conn),
            target: target.clone(),
            keep_for: None,
        },
    )));
    answer(exchange)
}

/// The answer's head of `exchange`, with the rest of the exchange in its
/// body.
async fn answer(mut exchange: Exchange) -> Sent {
    let response = std::future::poll_fn(|cx| {
        let Some((sent, driver)) = exchange.0.as_mut() else {
            // Taken only below, once this has completed.
            return Poll::Pending;
        };
        // The connection first: it writes the request, reads the answer and
        // completes `sent`, all within this poll.
        driver.drive(cx);
        sent.as_mut().poll(cx)
    })
    .await;
    let response = response?;
    let driver = exchange.0.take().map(|(_, mut driver)| {
        driver.keep_for = keep_alive_hint(response.headers());
        driver
    });
    Ok(response.map(|incoming| ResponseBody { incoming, driver }))
}

/// How long a connection may be kept idle after an answer whose
/// `Keep-Alive: timeout=N` says the backend closes idle connections after N
/// seconds (Node.js sends `timeout=5` by default, Apache httpd too): a second
/// less (half of it below 2 s), since the backend counts from its last byte
/// and the pool from the answer's end. Keeping the connection for longer
/// would race the backend's close for every call after a pause, a `POST` as
/// well, which no one may send again. `None` without a usable hint.
fn keep_alive_hint(headers: &http::HeaderMap) -> Option<Duration> {
    const KEEP_ALIVE: http::HeaderName = http::HeaderName::from_static("keep-alive");
    let value = headers.get(KEEP_ALIVE)?.to_str().ok()?;
    let seconds = value.split(',').find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("timeout")
            .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
            .flatten()
    })?;
    let timeout = Duration::from_secs(seconds.min(1 << 32));
    Some(timeout.saturating_sub(Duration::from_secs(1).min(timeout / 2)))
}

/// The answer to a request queued on a connection.
type Answer =
    Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, TrySendError<Request>>> + Send>>;

/// A call waiting for its answer's head: if it is dropped before (the call
/// was abandoned), the exchange goes on in a task of its own ([`drain`]).
struct Exchange(Option<(Answer, Driver)>);

impl Drop for Exchange {
    fn drop(&mut self) {
        let Some((sent, driver)) = self.0.take() else {
            return;
        };
        if driver.conn.is_some() && tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(drain(sent, driver));
        }
    }
}

/// How long the connection of a call abandoned before its answer came (the
/// client left, a sibling failed, a deadline) may take to finish that
/// exchange in the background and go back to the pool. hyper closes a
/// connection whose caller went away before the answer's head, so without
/// this each abandoned call cost a connection (over TLS, a handshake for the
/// next call). A backend that answers within it keeps its connection; one
/// that does not sees the connection closed, so a slow call is still seen
/// abandoned, this much later.
const DRAIN_GRACE: Duration = Duration::from_millis(100);

/// Finishes an abandoned exchange within [`DRAIN_GRACE`]: its answer is read
/// and dropped, and the connection goes back to the pool if it can take
/// another request; otherwise (too slow, or the connection ended) it is
/// closed.
async fn drain(mut sent: Answer, mut driver: Driver) {
    let finished = tokio::time::timeout(DRAIN_GRACE, async {
        let response = std::future::poll_fn(|cx| {
            driver.drive(cx);
            sent.as_mut().poll(cx)
        })
        .await
        .ok()?;
        let mut body = response.into_body();
        loop {
            let frame = std::future::poll_fn(|cx| {
                driver.drive(cx);
                Pin::new(&mut body).poll_frame(cx)
            })
            .await;
            match frame {
                Some(Ok(_)) => {}
                Some(Err(_)) => return None,
                None => return Some(()),
            }
        }
    })
    .await;
    if let Ok(Some(())) = finished {
        driver.finish();
    }
}

/// Gives `request` the `Host` HTTP/1.1 requires (RFC 9112 §3.2) when its
/// caller set none: its URI's authority, without user info or a default
/// port. hyper's connection-level client adds none (hyper-util's pooled
/// client did), and callers other than a backend call (a JWKS fetch, say)
/// rely on the URI alone.
fn ensure_host(request: &mut Request) {
    if request.headers().contains_key(http::header::HOST) {
        return;
    }
    let Some(authority) = request.uri().authority() else {
        return;
    };
    let default_port = match request.uri().scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    let text = authority.as_str();
    let text = text.rsplit_once('@').map_or(text, |(_, host)| host);
    let text = match authority.port_u16() {
        Some(port) if Some(port) == default_port => {
            text.rsplit_once(':').map_or(text, |(host, _)| host)
        }
        _ => text,
    };
    if let Ok(value) = http::HeaderValue::from_str(text) {
        request.headers_mut().insert(http::header::HOST, value);
    }
}

/// The URI as HTTP/1.1 sends it to an origin: `http://host/path?q` as
/// `/path?q` (the host goes in `Host`, which the request carries already),
/// moved out rather than cloned (a clone of bytes not yet shared allocates
/// their shared header).
fn origin_form(uri: &mut Uri) {
    *uri = match std::mem::take(uri).into_parts().path_and_query {
        Some(path) => Uri::from(path),
        None => Uri::from_static("/"),
    };
}

/// A failure of a call, in the gateway's words (a TLS reason says why).
fn failure(error: &hyper::Error) -> BackendError {
    let message = match tls::describe(error) {
        Some(tls) => tls,
        None => {
            let cause = std::error::Error::source(error)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            format!("{error}{cause}")
        }
    };
    BackendError::new(ErrorKind::Connect, message)
}

/// An HTTP/1.1 connection being driven by the call using it.
struct Driver {
    /// `None` once the connection has ended (closed or failed).
    conn: Option<Conn>,
    target: Arc<Target>,
    /// How long the backend said it keeps the connection idle (once the
    /// answer's head is in): [`keep_alive_hint`].
    keep_for: Option<Duration>,
}

impl Driver {
    fn drive(&mut self, cx: &mut Context<'_>) {
        let Some(h1) = self.conn.as_mut() else { return };
        if let Poll::Ready(result) = Pin::new(&mut h1.conn).poll(cx) {
            if let Err(e) = result {
                tracing::debug!(error = %e, "backend connection ended");
            }
            // Dropped at once: a request still queued on it (the backend
            // closed the connection while it was idle) comes back unsent.
            self.conn = None;
        }
    }

    /// The exchange ended cleanly: the connection goes back to the pool if
    /// it can take another request. If it cannot say yet, it is polled once
    /// more, without a waker (so that a later event on the idle connection
    /// wakes no task), to settle into its idle state.
    fn finish(&mut self) {
        if !self.conn.as_ref().is_some_and(|h1| h1.send.is_ready()) {
            self.drive(&mut Context::from_waker(std::task::Waker::noop()));
        }
        match self.conn.take() {
            Some(h1) if h1.send.is_ready() => self.target.check_in(h1, self.keep_for),
            _ => {}
        }
    }
}

/// A response body. Over a connection the call drives, it drives the
/// connection while it is read and hands it back to the pool once read to
/// the end; dropped before that, it closes the connection (the backend sees
/// the call abandoned). Over hyper-util's pools, hyper's body as it is.
pub(crate) struct ResponseBody {
    incoming: Incoming,
    driver: Option<Driver>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("driven", &self.driver.is_some())
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// The body of an answer that came through hyper-util's pools.
    pub(super) fn pooled(incoming: Incoming) -> ResponseBody {
        ResponseBody {
            incoming,
            driver: None,
        }
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        // What the connection has read already comes first; it is driven
        // only when that is all.
        let mut frame = Pin::new(&mut this.incoming).poll_frame(cx);
        if frame.is_pending()
            && let Some(driver) = this.driver.as_mut()
        {
            driver.drive(cx);
            frame = Pin::new(&mut this.incoming).poll_frame(cx);
        }
        match &frame {
            // The last byte is in (its length said so), or the end: the
            // connection can take the next call.
            Poll::Ready(None) => {
                if let Some(mut driver) = this.driver.take() {
                    driver.finish();
                }
            }
            Poll::Ready(Some(Ok(_))) if this.incoming.is_end_stream() => {
                if let Some(mut driver) = this.driver.take() {
                    driver.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => this.driver = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body whose last byte is in (no content, or a reader that stopped
        // at its declared length) still gives its connection back.
        if self.driver.is_none() || !self.incoming.is_end_stream() {
            return;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..2 {
            if let Some(driver) = self.driver.as_mut() {
                driver.drive(&mut cx);
            }
            match Pin::new(&mut self.incoming).poll_frame(&mut cx) {
                Poll::Ready(None) => {
                    if let Some(mut driver) = self.driver.take() {
                        driver.finish();
                    }
                    return;
                }
                Poll::Ready(Some(Ok(_))) => {}
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keep_alive_timeout_is_read_and_kept_short_of() {
        let hint = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("keep-alive", value.parse().unwrap());
            keep_alive_hint(&headers)
        };
        let s = Duration::from_secs;
        assert_eq!(hint("timeout=5"), Some(s(4)));
        assert_eq!(hint("max=100, Timeout = 75"), Some(s(74)));
        assert_eq!(hint("timeout=1"), Some(Duration::from_millis(500)));
        assert_eq!(hint("timeout=0"), Some(Duration::ZERO));
        assert_eq!(hint("timeout=\"2\""), Some(s(1)));
        assert_eq!(
            hint("timeout=99999999999999999999"),
            None,
            "not a number we take"
        );
        assert!(hint("timeout=18446744073709551615").is_some_and(|d| d > s(1 << 31)));
        for ignored in ["max=5", "timeout=", "timeout=-3", "timeout=2.5", "5", ""] {
            assert_eq!(hint(ignored), None, "{ignored:?}");
        }
        assert_eq!(keep_alive_hint(&http::HeaderMap::new()), None);
    }

    fn host_of(uri: &str, set: Option<&str>) -> Option<String> {
        let mut request = http::Request::get(uri)
            .body(crate::client::Body::empty())
            .unwrap();
        if let Some(host) = set {
            request
                .headers_mut()
                .insert(http::header::HOST, host.parse().unwrap());
        }
        ensure_host(&mut request);
        request
            .headers()
            .get(http::header::HOST)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn a_request_without_host_gets_its_uris_authority() {
        assert_eq!(
            host_of("https://idp.test/keys", None).as_deref(),
            Some("idp.test")
        );
        assert_eq!(
            host_of("https://idp.test:443/keys", None).as_deref(),
            Some("idp.test"),
            "a default port is left out"
        );
        assert_eq!(
            host_of("http://127.0.0.1:9101/x", None).as_deref(),
            Some("127.0.0.1:9101")
        );
        assert_eq!(host_of("http://[::1]:80/x", None).as_deref(), Some("[::1]"));
        assert_eq!(
            host_of("http://user:pw@h.test:8080/x", None).as_deref(),
            Some("h.test:8080"),
            "user info never reaches the Host"
        );
        assert_eq!(
            host_of("http://h.test/x", Some("configured.test")).as_deref(),
            Some("configured.test"),
            "a Host the caller set is kept"
        );
    }
}
