//! How a listener serves its connections: HTTP/1.1 and h2c on one port, and
//! every way a client can hold a connection bounded — a cap on open
//! connections, a time to start the first request, an idle timeout, a write
//! timeout for clients that do not read, HTTP/2 stream limits — then a
//! graceful stop. The gateway, its admin listener and `fanout mock` all serve
//! through this.
//!
//! Each connection has an [`Activity`]: its service calls, its socket's
//! writes and (for the gateway) its response bytes waiting to be sent are
//! recorded there, and a watchdog beside the connection closes it when one
//! of the limits is passed. hyper's own timers cover the rest (headers of a
//! later HTTP/1.1 request, HTTP/2 keep-alive pings).

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinSet,
    time::Instant,
};
use tokio_util::either::Either;

use super::spread::Lane;

/// How a listener serves its connections. Every limit is on by default.
#[derive(Clone, Debug)]
pub struct Connections {
    /// A new connection must start a request within this time, and an
    /// HTTP/1.1 client must send each request's headers within it.
    pub header_read_timeout: Option<Duration>,
    /// On shutdown, how long in-flight requests may take to finish.
    pub grace: Duration,
    /// Connections open at once at most; beyond it a new one is answered 503
    /// and closed. Listeners given clones of one limit share it.
    pub max_connections: ConnectionLimit,
    /// A connection with no request in flight and nothing waiting to be sent
    /// for this long is closed.
    pub idle_timeout: Option<Duration>,
    /// A connection whose client does not take what is sent (response bytes
    /// waiting, or the socket full, with no progress for this long) is closed.
    pub write_timeout: Option<Duration>,
    /// TLS on the listener; `None`: plain TCP.
    pub tls: Option<Arc<crate::edge::tls::ServerTls>>,
}

/// The timers a connection's watchdog keeps.
#[derive(Clone, Copy, Debug)]
struct Timers {
    header_read_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

/// HTTP/2 streams a client may have open on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

impl Default for Connections {
    fn default() -> Self {
        Connections {
            header_read_timeout: Some(Duration::from_secs(10)),
            grace: Duration::from_secs(10),
            max_connections: ConnectionLimit::new(10_000),
            idle_timeout: Some(Duration::from_secs(60)),
            write_timeout: Some(Duration::from_secs(30)),
            tls: None,
        }
    }
}

/// A cap on connections open at once, counted across every listener that
/// holds a clone of it: the serving threads of one gateway share one cap, so
/// `server.max_connections` bounds the process, not each thread.
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    max: usize,
    open: Arc<AtomicUsize>,
}

impl ConnectionLimit {
    /// At most `max` connections open at once.
    pub fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit {
            max,
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Connections open now, on every listener sharing this limit.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A slot for one more connection, or `None` at the cap.
    fn try_open(&self) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()?;
        Some(Slot(self.open.clone()))
    }
}

/// One open connection's place under its [`ConnectionLimit`], given back
/// when the connection ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection being served: who is at the other end, and its activity.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    pub(crate) activity: Activity,
    /// The client's IP address as text, formatted once per connection
    /// rather than for every request's `x-forwarded-for`.
    pub(crate) ip: http::HeaderValue,
}

impl Peer {
    fn new(addr: SocketAddr, activity: Activity) -> Peer {
        let ip = http::HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"));
        Peer { addr, activity, ip }
    }
}

/// What one connection is doing, as its watchdog sees it.
#[derive(Clone, Debug)]
pub(crate) struct Activity(Arc<ActivityState>);

#[derive(Debug)]
struct ActivityState {
    opened: Instant,
    /// Requests started so far.
    started: AtomicU64,
    /// Requests whose service future is running.
    in_flight: AtomicUsize,
    /// Response bytes not yet taken by the connection.
    pending: AtomicU64,
    /// When (ms since `opened`) a request last started or ended, or response
    /// bytes were last taken: what counts against the idle timeout.
    last_request: AtomicU64,
    /// When response bytes were last taken: progress for the write timeout.
    last_taken: AtomicU64,
    /// Since when (ms since `opened`, plus one; 0: not blocked) the socket
    /// has refused writes.
    blocked_since: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity(Arc::new(ActivityState {
            opened: Instant::now(),
            started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            pending: AtomicU64::new(0),
            last_request: AtomicU64::new(0),
            last_taken: AtomicU64::new(0),
            blocked_since: AtomicU64::new(0),
        }))
    }

    fn now(&self) -> u64 {
        self.0.opened.elapsed().as_millis() as u64
    }

    fn request_started(&self) {
        self.0.started.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        self.0.last_request.store(self.now(), Ordering::Relaxed);
    }

    fn request_ended(&self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.last_request.store(self.now(), Ordering::Relaxed);
    }

    /// Response bytes of this connection's now wait to be sent.
    pub(crate) fn pending(&self) -> u64 {
        self.0.pending.load(Ordering::Relaxed)
    }

    /// `n` more response bytes wait to be sent.
    pub(crate) fn hold(&self, n: u64) {
        self.0.pending.fetch_add(n, Ordering::Relaxed);
        self.0.last_taken.store(self.now(), Ordering::Relaxed);
    }

    /// `n` response bytes were taken by the connection (`progress`), or
    /// dropped unsent.
    pub(crate) fn release(&self, n: u64, progress: bool) {
        self.0.pending.fetch_sub(n, Ordering::Relaxed);
        if progress {
            let now = self.now();
            self.0.last_taken.store(now, Ordering::Relaxed);
            self.0.last_request.store(now, Ordering::Relaxed);
        }
    }

    /// Marks the connection busy while a streamed response body is open: its
    /// upstream may pause between frames, and that is not the client idling.
    pub(crate) fn streaming(&self) -> Streaming {
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        Streaming(self.clone())
    }

    fn write_blocked(&self, blocked: bool) {
        let state = &self.0.blocked_since;
        if !blocked {
            state.store(0, Ordering::Relaxed);
        } else if state.load(Ordering::Relaxed) == 0 {
            state.store(self.now() + 1, Ordering::Relaxed);
        }
    }

    /// Waits until the connection passes one of `limits`, and says which.
    async fn overstayed(&self, limits: Timers) -> &'static str {
        let ms = |d: Duration| d.as_millis() as u64;
        loop {
            let s = &*self.0;
            let now = self.now();
            let mut next = u64::MAX;
            let mut due = |at: u64, why: &'static str| -> Option<&'static str> {
                if now >= at {
                    return Some(why);
                }
                next = next.min(at);
                None
            };
            if let Some(limit) = limits.header_read_timeout {
                if s.started.load(Ordering::Relaxed) == 0 {
                    if let Some(why) = due(ms(limit), "no request within header_read_timeout") {
                        return why;
                    }
                }
            }
            if let Some(limit) = limits.write_timeout {
                if s.pending.load(Ordering::Relaxed) > 0 {
                    let at = s.last_taken.load(Ordering::Relaxed) + ms(limit);
                    if let Some(why) =
                        due(at, "the client took no response bytes within write_timeout")
                    {
                        return why;
                    }
                }
                let blocked = s.blocked_since.load(Ordering::Relaxed);
                if blocked > 0 {
                    if let Some(why) = due(
                        blocked - 1 + ms(limit),
                        "the socket took no bytes within write_timeout",
                    ) {
                        return why;
                    }
                }
            }
            if let Some(limit) = limits.idle_timeout {
                let busy = s.in_flight.load(Ordering::Relaxed) > 0
                    || s.pending.load(Ordering::Relaxed) > 0;
                if !busy {
                    let at = s.last_request.load(Ordering::Relaxed) + ms(limit);
                    if let Some(why) = due(at, "idle for idle_timeout") {
                        return why;
                    }
                }
            }
            // Nothing due: look again at the earliest instant something could
            // be, and at least once a second (activity may have started a
            // limit that was not running when this one was computed).
            let wait = next.saturating_sub(now).clamp(1, 1000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
}

/// A streamed response body open on a connection ([`Activity::streaming`]).
#[derive(Debug)]
pub(crate) struct Streaming(Activity);

impl Drop for Streaming {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

pin_project_lite::pin_project! {
    /// A TCP stream that reports to its connection's [`Activity`] when the
    /// socket refuses writes and when it takes them again.
    struct Watched {
        #[pin]
        stream: TcpStream,
        activity: Activity,
    }
}

/// A connection's stream: plain (left), or TLS over it (right).
type ServerIo = Either<Watched, Box<tokio_rustls::server::TlsStream<Watched>>>;

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().stream.poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.stream.poll_write(cx, buf);
        this.activity.write_blocked(result.is_pending());
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.stream.poll_write_vectored(cx, bufs);
        this.activity.write_blocked(result.is_pending());
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }
}

/// A service whose calls are counted in its connection's [`Activity`].
#[derive(Clone, Debug)]
struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, request: R) -> Self::Future {
        self.activity.request_started();
        TrackedFuture {
            inner: self.inner.call(request),
            _ending: Ending(self.activity.clone()),
        }
    }
}

/// Ends its request in the [`Activity`] however the call ends.
struct Ending(Activity);

impl Drop for Ending {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

pin_project_lite::pin_project! {
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        _ending: Ending,
    }
}

impl<F: Future> Future for TrackedFuture<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// What a connection over the cap is told before it is closed.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 63\r\n\r\n{\"error\":\"too many connections: try again later (max_connections)\"}";

impl Connections {
    /// Accepts connections on `listener`, serving each with the service
    /// `make_service` builds for it, until `shutdown` completes; then stops
    /// accepting, waits up to the grace period for in-flight requests, and
    /// closes what is left.
    ///
    /// # Errors
    ///
    /// None today: failed accepts (out of file descriptors and the like) are
    /// logged and serving goes on.
    pub async fn serve<M, S, B>(
        self,
        listener: TcpListener,
        make_service: M,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()>
    where
        M: Fn(Peer) -> S,
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.serve_lane(listener, None, make_service, shutdown)
            .await
    }

    /// [`Connections::serve`] as one of several serving threads: with a
    /// `lane`, connections this thread should not keep go to another thread
    /// ([`spread`](super::spread)), and the ones handed to it are served too.
    pub(crate) async fn serve_lane<M, S, B>(
        self,
        listener: TcpListener,
        mut lane: Option<Lane>,
        make_service: M,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()>
    where
        M: Fn(Peer) -> S,
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        if let Some(timeout) = self.header_read_timeout {
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout);
        }
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20));
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, addr, assigned) = tokio::select! {
                accepted = listener.accept() => {
                    let (stream, addr) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of file descriptors and the like: keep serving.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    match &lane {
                        None => (stream, addr, None),
                        Some(lane) => match lane.place(stream, addr) {
                            Some((stream, assigned)) => (stream, addr, Some(assigned)),
                            None => continue,
                        },
                    }
                }
                Some((stream, addr, assigned)) = async {
                    match lane.as_mut() {
                        Some(lane) => lane.handed().await,
                        None => std::future::pending().await,
                    }
                } => (stream, addr, Some(assigned)),
                () = &mut shutdown => break,
            };
            while connections.try_join_next().is_some() {}
            let Some(slot) = self.max_connections.try_open() else {
                // Shed: say why, then close (a blocked write is not waited
                // for). Sent on the socket itself: tokio's `try_write` does
                // not try before its reactor has seen the socket writable,
                // which a connection handed over from another thread a
                // moment ago has not.
                let _ = socket2::SockRef::from(&stream).send(TOO_MANY);
                tracing::debug!(%addr, max = self.max_connections.max, "connection refused: too many");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let activity = Activity::new();
            let service = Tracked {
                inner: make_service(Peer::new(addr, activity.clone())),
                activity: activity.clone(),
            };
            let watched = Watched {
                stream,
                activity: activity.clone(),
            };
            let tls = self
                .tls
                .as_ref()
                .map(|tls| tokio_rustls::TlsAcceptor::from(tls.current()));
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let timers = Timers {
                header_read_timeout: self.header_read_timeout,
                idle_timeout: self.idle_timeout,
                write_timeout: self.write_timeout,
            };
            connections.spawn(async move {
                let _slot = (slot, assigned);
                let io: ServerIo = match tls {
                    None => Either::Left(watched),
                    Some(acceptor) => {
                        // The handshake is part of the time to start a request.
                        let limit = timers
                            .header_read_timeout
                            .unwrap_or(Duration::from_secs(10));
                        match tokio::time::timeout(limit, acceptor.accept(watched)).await {
                            Ok(Ok(stream)) => Either::Right(Box::new(stream)),
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, %addr, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%addr, "TLS handshake took too long");
                                return;
                            }
                        }
                    }
                };
                let connection = watcher.watch(
                    builder
                        .serve_connection(TokioIo::new(io), service)
                        .into_owned(),
                );
                tokio::select! {
                    served = connection => if let Err(e) = served {
                        tracing::debug!(error = %e, %addr, "connection ended with an error");
                    },
                    why = activity.overstayed(timers) => {
                        tracing::debug!(%addr, why, "connection closed");
                    }
                }
            });
        }
        drop(listener);
        drop(lane);
        tracing::info!(in_flight = connections.len(), grace = ?self.grace, "shutting down");
        if tokio::time::timeout(self.grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                left = connections.len(),
                "grace period over: closing the remaining connections"
            );
        }
        connections.shutdown().await;
        Ok(())
    }
}
