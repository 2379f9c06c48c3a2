//! The production [`Transport`]: one client per serving thread, over TCP or
//! TLS (rustls), HTTP/1.1 with keep-alive pools or HTTP/2 multiplexed over
//! one connection per target ([`pool`](super::pool)).
//!
//! An HTTP/1.1 call drives its own connection: the call's future polls the
//! connection together with the response, and the response body polls it
//! until the body is read, then hands the connection back to the pool. No
//! task per connection and no hop between tasks, where hyper-util's pooled
//! client woke a connection task for every call and back again for its
//! answer and body (two task hops per call, a pool lock and a hashed key).
//! HTTP/2 multiplexes calls of many tasks over one connection, which a task
//! of its own drives.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Uri, uri::Authority};
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    client::conn::{TrySendError, http1, http2},
};
use hyper_util::rt::TokioExecutor;

use super::{
    ClientSettings, OutBody, Request, RequestBody, Transport,
    connect::{self, Opened},
    pool::{Conn, H1, IDLE_TIMEOUT, Pool, Pools, Protocol, Target},
    tls,
};
use crate::{
    config::Http2,
    error::{BackendError, ErrorKind},
};

/// The clients backend calls go through. Cheap to clone (clones share the
/// pools); each serving thread has its own, so a request's calls and their
/// connections stay on its thread.
#[derive(Clone, Debug)]
pub struct HttpClient {
    pools: Arc<Pools<RequestBody>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

impl HttpClient {
    /// Clients with keep-alive pools and `TCP_NODELAY`.
    pub fn new() -> HttpClient {
        HttpClient::with_idle_timeout(IDLE_TIMEOUT)
    }

    /// Clients whose connections close after `idle` unused.
    pub(crate) fn with_idle_timeout(idle: std::time::Duration) -> HttpClient {
        HttpClient {
            pools: Arc::new(Pools::new(idle)),
        }
    }
}

impl Transport for HttpClient {
    type Body = ResponseBody<RequestBody>;

    async fn send(
        &self,
        settings: &Arc<ClientSettings>,
        request: Request,
    ) -> Result<http::Response<Self::Body>, BackendError> {
        let authority = request
            .uri()
            .authority()
            .cloned()
            .ok_or_else(|| BackendError::new(ErrorKind::Connect, "the URL names no host"))?;
        let pool = self.pools.pool(settings);
        let target = pool.target(&authority);
        call(&pool, &target, request).await
    }
}

/// How often a call may find the connection it took closed before sending
/// (each time it takes another, or opens one).
const MAX_UNSENT: usize = 8;

/// One call to `target`: on an idle HTTP/1.1 connection, on the target's
/// HTTP/2 connection, or on a new one. A request that a reused connection
/// gave back unsent (it had closed meanwhile) goes to the next connection.
async fn call<B>(
    pool: &Pool<B>,
    target: &Arc<Target<B>>,
    mut request: http::Request<B>,
) -> Result<http::Response<ResponseBody<B>>, BackendError>
where
    B: OutBody,
{
    for _ in 0..MAX_UNSENT {
        let taken = {
            let mut state = target.lock();
            if state.h2.as_ref().is_some_and(|(send, _)| send.is_closed()) {
                state.h2 = None;
            }
            let now = tokio::time::Instant::now();
            if let Some((send, used)) = state.h2.as_mut() {
                *used = now;
                // Queued at once; the future does not borrow the handle.
                Taken::H2(send.try_send_request(request))
            } else {
                match state.idle.pop(now, target.idle_timeout) {
                    Some(conn) => Taken::H1(conn, request),
                    None => Taken::Nothing(state.protocol, request),
                }
            }
        };
        let (result, reused) = match taken {
            Taken::H2(sent) => (sent.await.map(ResponseBody::h2), true),
            Taken::H1(conn, taken) => (send_h1(target, conn, taken).await, true),
            Taken::Nothing(protocol, taken) => {
                // Boxed: opening a connection (TCP, TLS, the HTTP/2
                // handshake) takes a large future, which would otherwise
                // make every call's future, and its task, that large.
                match Box::pin(open(pool, target, protocol, taken)).await? {
                    Opened2::Retry(back) => {
                        request = back;
                        continue;
                    }
                    Opened2::Sent(result) => (result, false),
                }
            }
        };
        match result {
            Ok(response) => return Ok(response),
            Err(mut e) => match e.take_message() {
                Some(back) if reused => request = back,
                back => {
                    let mut error = failure(&e.into_error(), &target.authority);
                    error.unsent = back.is_some();
                    return Err(error);
                }
            },
        }
    }
    let mut error = BackendError::new(
        ErrorKind::Connect,
        format!(
            "{}: every connection tried had closed before the request could be sent",
            target.authority
        ),
    );
    error.unsent = true;
    Err(error)
}

enum Taken<B: OutBody, F> {
    H2(F),
    H1(Conn<B>, http::Request<B>),
    Nothing(Protocol, http::Request<B>),
}

type Sent<B> = Result<http::Response<ResponseBody<B>>, TrySendError<http::Request<B>>>;

enum Opened2<B: OutBody> {
    /// Another call opened an HTTP/2 connection meanwhile: use it.
    Retry(http::Request<B>),
    Sent(Sent<B>),
}

/// Opens a connection to `target` and sends `request` on it. A connection
/// that may be HTTP/2 is opened by one call at a time; the calls waiting
/// meanwhile then share it.
async fn open<B>(
    pool: &Pool<B>,
    target: &Arc<Target<B>>,
    protocol: Protocol,
    request: http::Request<B>,
) -> Result<Opened2<B>, BackendError>
where
    B: OutBody,
{
    let opening = match protocol {
        Protocol::Http1 => None,
        Protocol::Unknown | Protocol::Http2 => {
            let turn = target.opening.lock().await;
            let state = target.lock();
            if state.h2.as_ref().is_some_and(|(s, _)| !s.is_closed()) {
                return Ok(Opened2::Retry(request));
            }
            // The target turned out to speak HTTP/1.1: every call opens its
            // own connection, at once.
            (state.protocol != Protocol::Http1).then_some(turn)
        }
    };
    let settings = pool
        .settings
        .upgrade()
        .ok_or_else(|| BackendError::new(ErrorKind::Connect, "the upstream was removed"))?;
    let unsent = |message: String| {
        let mut error = BackendError::new(ErrorKind::Connect, message);
        error.unsent = true;
        error
    };
    let tls =
        match request.uri().scheme_str() {
            Some("https") => Some(pool.tls.as_ref().ok_or_else(|| {
                unsent(format!("{}: https without TLS settings", target.authority))
            })?),
            _ => None,
        };
    let Opened { stream, alpn_h2 } = connect::open(&target.authority, tls, &settings)
        .await
        .map_err(unsent)?;
    if alpn_h2 || settings.http2 == Http2::Always {
        let (mut send, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(stream)
            .await
            .map_err(|e| unsent(failure(&e, &target.authority).message))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "backend HTTP/2 connection ended");
            }
        });
        let sent = send.try_send_request(request);
        {
            let mut state = target.lock();
            state.protocol = Protocol::Http2;
            state.h2 = Some((send, tokio::time::Instant::now()));
        }
        drop(opening);
        return Ok(Opened2::Sent(sent.await.map(ResponseBody::h2)));
    }
    let (send, conn) = http1::handshake(stream)
        .await
        .map_err(|e| unsent(failure(&e, &target.authority).message))?;
    target.lock().protocol = Protocol::Http1;
    drop(opening);
    Ok(Opened2::Sent(
        send_h1(target, Box::new(H1 { send, conn }), request).await,
    ))
}

/// Sends `request` on `conn`, driving the connection until the response's
/// head is in; the body then drives it on.
async fn send_h1<B>(
    target: &Arc<Target<B>>,
    conn: Conn<B>,
    mut request: http::Request<B>,
) -> Sent<B>
where
    B: OutBody,
{
    let mut conn = conn;
    origin_form(request.uri_mut());
    // Queued at once; the future does not borrow the handle.
    let mut sent = std::pin::pin!(conn.send.try_send_request(request));
    let mut driver = Driver {
        conn: Some(conn),
        target: target.clone(),
    };
    let response = std::future::poll_fn(|cx| {
        // The connection first: it writes the request, reads the answer and
        // completes `sent`, all within this poll.
        driver.drive(cx);
        sent.as_mut().poll(cx)
    })
    .await?;
    Ok(response.map(|incoming| ResponseBody {
        incoming,
        driver: Some(driver),
    }))
}

/// `http://host/path?q` as `/path?q`, the form HTTP/1.1 sends to an origin.
fn origin_form(uri: &mut Uri) {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = uri.path_and_query().cloned();
    if parts.path_and_query.is_some() {
        if let Ok(origin) = Uri::from_parts(parts) {
            *uri = origin;
        }
    } else {
        *uri = Uri::from_static("/");
    }
}

/// A failure of a call, in the gateway's words (a TLS reason says why).
fn failure(error: &hyper::Error, authority: &Authority) -> BackendError {
    let message = match tls::describe(error) {
        Some(tls) => tls,
        None => {
            let cause = std::error::Error::source(error)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            format!("{authority}: {error}{cause}")
        }
    };
    BackendError::new(ErrorKind::Connect, message)
}

/// An HTTP/1.1 connection being driven by the call using it.
struct Driver<B: OutBody> {
    /// `None` once the connection has ended (closed or failed).
    conn: Option<Conn<B>>,
    target: Arc<Target<B>>,
}

impl<B> Driver<B>
where
    B: OutBody,
{
    fn drive(&mut self, cx: &mut Context<'_>) {
        let Some(h1) = self.conn.as_mut() else { return };
        if let Poll::Ready(result) = Pin::new(&mut h1.conn).poll(cx) {
            if let Err(e) = result {
                tracing::debug!(error = %e, target = %self.target.authority, "backend connection ended");
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
            Some(h1) if h1.send.is_ready() => self.target.check_in(h1),
            _ => {}
        }
    }
}

/// A response body. Over HTTP/1.1 it drives its connection while it is read
/// and hands the connection back to the pool once read to the end; dropped
/// before that, it closes the connection (the backend sees the call
/// abandoned).
pub(crate) struct ResponseBody<B: OutBody> {
    incoming: Incoming,
    driver: Option<Driver<B>>,
}

impl<B: OutBody> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("http1", &self.driver.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: OutBody> ResponseBody<B> {
    fn h2(response: http::Response<Incoming>) -> http::Response<ResponseBody<B>> {
        response.map(|incoming| ResponseBody {
            incoming,
            driver: None,
        })
    }
}

impl<B> Body for ResponseBody<B>
where
    B: OutBody,
{
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
        if frame.is_pending() {
            if let Some(driver) = this.driver.as_mut() {
                driver.drive(cx);
                frame = Pin::new(&mut this.incoming).poll_frame(cx);
            }
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

impl<B: OutBody> Drop for ResponseBody<B> {
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
