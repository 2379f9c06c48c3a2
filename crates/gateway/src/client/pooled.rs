//! The production [`Transport`]: hyper-util's pooled client, one per target
//! per serving thread, over TCP or TLS (rustls), HTTP/1.1 with keep-alive
//! pools or HTTP/2 multiplexed over one connection.
//!
//! One pool per target rather than one per upstream keyed by address: the
//! URI's authority is then free to be the name the backend is to see (the
//! `:authority` of HTTP/2, the `Host` of HTTP/1.1), while each pool's
//! connector dials its target's address. The connector is written here
//! rather than taken from hyper-rustls for the same reason (the address
//! dialled is a target's, an IP a name resolved to, while the name verified
//! is the URL's or `tls.server_name`), and so that a failed handshake says
//! why in the gateway's words.

use std::{
    collections::HashMap,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection},
    },
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tokio::{io::AsyncWrite, net::TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::{Body, ClientSettings, Dial, Request, Transport, tls};
use crate::{
    config::Http2,
    error::{BackendError, ErrorKind},
};

/// Idle keep-alive connections kept per target (per serving thread); more
/// are closed as their calls end.
const MAX_IDLE_PER_TARGET: usize = 256;

type Pool = Client<Connector, Body>;

/// How long a TCP connection may take to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The pools by settings id and target (its `Dial`'s address in memory,
/// checked against the `Dial` the entry holds).
type Pools = HashMap<(u64, usize), Entry>;

/// One target's pool on one serving thread.
#[derive(Clone, Debug)]
struct Entry {
    settings: Weak<ClientSettings>,
    dial: Weak<Dial>,
    pool: Pool,
    /// For `http2: auto` over TLS.
    alpn: Option<Arc<Alpn>>,
}

/// For `http2: auto` over TLS, where only ALPN tells whether a target speaks
/// HTTP/2: while the target has no live h2 connection (at the start, or
/// after the one it had closed), a call goes alone and the calls that come
/// meanwhile wait for it, so that a burst shares the one h2 connection it
/// opens instead of each opening one of its own (hyper-util's pool waits
/// for a connection in progress only when it knows beforehand that it will
/// be HTTP/2, as with `http2: always`; otherwise it keeps one and drops the
/// others, each a handshake for nothing). Once ALPN chose HTTP/1.1 for the
/// target, nothing waits.
#[derive(Debug, Default)]
struct Alpn {
    /// Connections to the target that speak h2, alive now.
    h2_live: AtomicUsize,
    /// ALPN chose HTTP/1.1.
    http1: AtomicBool,
    turn: tokio::sync::Mutex<()>,
}

impl Alpn {
    /// Whether calls may go without waiting.
    fn open(&self) -> bool {
        self.http1.load(Ordering::Acquire) || self.h2_live.load(Ordering::Acquire) > 0
    }

    /// Notes what ALPN chose on a new connection: for h2, a guard that
    /// counts the connection live until it is dropped.
    fn connected(self: &Arc<Self>, h2: bool) -> Option<Live> {
        if h2 {
            self.h2_live.fetch_add(1, Ordering::AcqRel);
            Some(Live(self.clone()))
        } else {
            self.http1.store(true, Ordering::Release);
            None
        }
    }
}

/// An h2 connection of a target, counted in its [`Alpn`] while it lives.
#[derive(Debug)]
struct Live(Arc<Alpn>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.h2_live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The pooled HTTP clients backend calls go through. Cheap to clone (clones
/// share the pools); each serving thread has its own, so a request's calls
/// and their connections stay on its thread.
#[derive(Clone, Debug, Default)]
pub struct HttpClient {
    /// One pool per upstream's settings and target, made on its first call.
    pools: Arc<Mutex<Pools>>,
}

impl HttpClient {
    /// Clients with keep-alive pools and `TCP_NODELAY`.
    pub fn new() -> HttpClient {
        HttpClient::default()
    }

    fn pool(&self, settings: &Arc<ClientSettings>, dial: &Arc<Dial>) -> Entry {
        let key = (settings.id, Arc::as_ptr(dial) as usize);
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let live = pools
            .get(&key)
            .filter(|entry| entry.dial.upgrade().is_some_and(|d| Arc::ptr_eq(&d, dial)));
        if let Some(entry) = live {
            return entry.clone();
        }
        // Upstreams a reload removed and targets DNS no longer gives: their
        // pools go with them.
        pools.retain(|_, entry| entry.settings.strong_count() > 0 && entry.dial.strong_count() > 0);
        let alpn = (settings.tls.is_some() && settings.http2 == Http2::Auto).then(Arc::default);
        let connector = Connector {
            tls: settings
                .tls
                .as_ref()
                .map(|t| tokio_rustls::TlsConnector::from(t.config.clone())),
            settings: Arc::downgrade(settings),
            dial: Arc::downgrade(dial),
            alpn: alpn.clone(),
        };
        // Idle connections are closed after 90 s, and at most
        // MAX_IDLE_PER_TARGET wait per target: a burst of concurrent calls
        // (thousands of clients at once) must not leave thousands of
        // connections open behind it. The timer is what runs the idle
        // timeout: without it, hyper-util only drops an expired connection
        // when it is checked out, and a backend that never closes its side
        // keeps every one open.
        let pool = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(MAX_IDLE_PER_TARGET)
            .http2_only(settings.http2 == Http2::Always)
            .build(connector);
        let entry = Entry {
            settings: Arc::downgrade(settings),
            dial: Arc::downgrade(dial),
            pool,
            alpn,
        };
        pools.insert(key, entry.clone());
        entry
    }
}

impl Transport for HttpClient {
    type Body = hyper::body::Incoming;

    async fn send(
        &self,
        settings: &Arc<ClientSettings>,
        dial: &Arc<Dial>,
        request: Request,
    ) -> Result<http::Response<Self::Body>, BackendError> {
        let entry = self.pool(settings, dial);
        let Some(alpn) = entry.alpn.filter(|a| !a.open()) else {
            return send(&entry.pool, request).await;
        };
        let turn = alpn.turn.lock().await;
        if alpn.open() {
            // The call ahead opened the connection while this one waited.
            drop(turn);
            return send(&entry.pool, request).await;
        }
        send(&entry.pool, request).await
    }
}

/// One call through `pool`, its failure in the gateway's words.
async fn send(
    pool: &Pool,
    request: Request,
) -> Result<http::Response<hyper::body::Incoming>, BackendError> {
    pool.request(request).await.map_err(|e| {
        let message = match tls::describe(&e) {
            Some(tls) => tls,
            None => {
                let cause = std::error::Error::source(&e)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                format!("{e}{cause}")
            }
        };
        let mut error = BackendError::new(ErrorKind::Connect, message);
        error.unsent = e.is_connect();
        error
    })
}

/// TCP to one target, then TLS for `https://`, with ALPN telling the pool
/// whether the connection speaks HTTP/2. It reports no `HttpInfo` (the
/// connection's addresses): the gateway never reads it, and copying it into
/// every response cost allocations per call.
#[derive(Clone)]
pub(crate) struct Connector {
    tls: Option<tokio_rustls::TlsConnector>,
    settings: Weak<ClientSettings>,
    dial: Weak<Dial>,
    /// For `http2: auto` over TLS: told what ALPN chose.
    alpn: Option<Arc<Alpn>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = Stream;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = (uri.scheme_str() == Some("https"))
            .then(|| self.tls.clone())
            .flatten();
        let (settings, dial) = (self.settings.upgrade(), self.dial.upgrade());
        let alpn = self.alpn.clone();
        Box::pin(async move {
            let (Some(settings), Some(dial)) = (settings, dial) else {
                return Err(
                    io::Error::other("the upstream was reloaded or the target removed").into(),
                );
            };
            let addr = dial.addr;
            let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => {
                    return Err(
                        io::Error::new(e.kind(), format!("tcp connect to {addr}: {e}")).into(),
                    );
                }
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "tcp connect to {addr}: no answer within {}s",
                            CONNECT_TIMEOUT.as_secs()
                        ),
                    )
                    .into());
                }
            };
            tcp.set_nodelay(true)?;
            let Some(tls) = tls else {
                return Ok(Stream {
                    io: Either::Left(tcp),
                    h2: false,
                    _live: None,
                });
            };
            let name = settings
                .server_name(&dial)
                .ok_or_else(|| io::Error::other(format!("no name to verify for {addr}")))?;
            let stream = tls.connect(name, tcp).await?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            Ok(Stream {
                io: Either::Right(Box::new(stream)),
                h2,
                _live: alpn.and_then(|alpn| alpn.connected(h2)),
            })
        })
    }
}

/// A backend connection, and whether ALPN chose HTTP/2 on it.
#[derive(Debug)]
pub(crate) struct Stream {
    io: Io,
    h2: bool,
    /// Counts it among its target's live h2 connections.
    _live: Option<Live>,
}

/// Plain TCP (left), or TLS over it (right).
type Io = Either<TcpStream, Box<TlsStream<TcpStream>>>;

impl Connection for Stream {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let io = TokioIo::new(&mut self.io);
        let mut io = std::pin::pin!(io);
        // A TLS error is put in words (plain TCP errors carry no rustls
        // cause and pass as they are).
        hyper::rt::Read::poll_read(io.as_mut(), cx, buf).map_err(tls::in_words)
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
