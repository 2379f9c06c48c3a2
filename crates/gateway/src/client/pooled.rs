//! The production [`Transport`]: hyper-util's pooled client, one per
//! upstream per serving thread, over TCP or TLS (rustls), HTTP/1.1 with
//! keep-alive pools or HTTP/2 multiplexed over one connection per target.
//!
//! The connector is written here rather than taken from hyper-rustls: the
//! address dialled is a target's (an IP a name resolved to), while the name
//! verified is the upstream's (or `tls.server_name`), and a failed handshake
//! must say why in the gateway's words.

use std::{
    collections::HashMap,
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
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
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tokio::{io::AsyncWrite, net::TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::{ClientSettings, Request, Transport, tls};
use crate::{
    config::Http2,
    error::{BackendError, ErrorKind},
};

/// Idle keep-alive connections kept per target (per serving thread); more
/// are closed as their calls end.
const MAX_IDLE_PER_TARGET: usize = 256;

type Pool = Client<Connector, Empty<Bytes>>;

/// The pools by settings id, each with the settings it was made for.
type Pools = HashMap<u64, Entry>;

/// One upstream's pool on one serving thread.
#[derive(Clone, Debug)]
struct Entry {
    settings: Weak<ClientSettings>,
    pool: Pool,
    /// For `http2: auto` over TLS.
    first: Option<Arc<FirstCalls>>,
}

/// For `http2: auto` over TLS, where only ALPN tells whether a target speaks
/// HTTP/2: the first call to each target goes alone, and the calls that
/// come meanwhile wait for it, so that a burst at start shares the one h2
/// connection it opens instead of each opening a connection of its own.
/// (hyper-util's pool waits for a connection in progress only when it knows
/// beforehand that it will be HTTP/2, as with `http2: always`.) The calls
/// after a first one that succeeded pass straight through; a first call
/// that fails hands the turn to the next.
#[derive(Debug, Default)]
struct FirstCalls(Mutex<HashMap<String, Turn>>);

#[derive(Debug)]
enum Turn {
    /// A first call is in flight, or none has succeeded yet: `true` inside
    /// once one has.
    Waiting(Arc<tokio::sync::Mutex<bool>>),
    Done,
}

/// Targets remembered per pool at most (names re-resolved many times over):
/// past it the record starts afresh, which costs one lone call per target.
const FIRST_CALLS_KEPT: usize = 4096;

impl FirstCalls {
    fn turn(&self, authority: &str) -> Option<Arc<tokio::sync::Mutex<bool>>> {
        let mut turns = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match turns.get(authority) {
            Some(Turn::Done) => None,
            Some(Turn::Waiting(gate)) => Some(gate.clone()),
            None => {
                if turns.len() >= FIRST_CALLS_KEPT {
                    turns.clear();
                }
                let gate = Arc::new(tokio::sync::Mutex::new(false));
                turns.insert(authority.to_owned(), Turn::Waiting(gate.clone()));
                Some(gate)
            }
        }
    }

    fn done(&self, authority: &str) {
        let mut turns = self.0.lock().unwrap_or_else(|e| e.into_inner());
        turns.insert(authority.to_owned(), Turn::Done);
    }
}

/// The pooled HTTP clients backend calls go through. Cheap to clone (clones
/// share the pools); each serving thread has its own, so a request's calls
/// and their connections stay on its thread.
#[derive(Clone, Debug, Default)]
pub struct HttpClient {
    /// One pool per upstream's settings, made on its first call.
    pools: Arc<Mutex<Pools>>,
}

impl HttpClient {
    /// Clients with keep-alive pools and `TCP_NODELAY`.
    pub fn new() -> HttpClient {
        HttpClient::default()
    }

    fn pool(&self, settings: &Arc<ClientSettings>) -> Entry {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = pools.get(&settings.id) {
            return entry.clone();
        }
        // Settings of upstreams a reload removed: their pools go with them.
        pools.retain(|_, entry| entry.settings.strong_count() > 0);
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = Connector {
            http,
            tls: settings
                .tls
                .as_ref()
                .map(|t| tokio_rustls::TlsConnector::from(t.config.clone())),
            settings: Arc::downgrade(settings),
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
            pool,
            first: (settings.tls.is_some() && settings.http2 == Http2::Auto).then(Arc::default),
        };
        pools.insert(settings.id, entry.clone());
        entry
    }
}

impl Transport for HttpClient {
    type Body = hyper::body::Incoming;

    async fn send(
        &self,
        settings: &Arc<ClientSettings>,
        request: Request,
    ) -> Result<http::Response<Self::Body>, BackendError> {
        let entry = self.pool(settings);
        let turn = entry.first.as_ref().and_then(|first| {
            let authority = request.uri().authority()?.as_str();
            let gate = first.turn(authority)?;
            Some((first, authority.to_owned(), gate))
        });
        let Some((first, authority, gate)) = turn else {
            return send(&entry.pool, request).await;
        };
        let mut succeeded = gate.lock().await;
        if *succeeded {
            drop(succeeded);
            return send(&entry.pool, request).await;
        }
        let result = send(&entry.pool, request).await;
        if result.is_ok() {
            *succeeded = true;
            first.done(&authority);
        }
        result
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

/// TCP, then TLS for `https://`, with ALPN telling the pool whether the
/// connection speaks HTTP/2. It reports no `HttpInfo` (the connection's
/// addresses): the gateway never reads it, and copying it into every
/// response cost allocations per call.
#[derive(Clone)]
pub(crate) struct Connector {
    http: HttpConnector,
    tls: Option<tokio_rustls::TlsConnector>,
    settings: Weak<ClientSettings>,
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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tcp = self.http.call(uri.clone());
        let tls = (uri.scheme_str() == Some("https"))
            .then(|| self.tls.clone())
            .flatten();
        let settings = self.settings.clone();
        Box::pin(async move {
            let tcp = tcp.await?.into_inner();
            let Some(tls) = tls else {
                return Ok(Stream(Either::Left(tcp), false));
            };
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
            let host = uri.host().unwrap_or("");
            let name = settings
                .upgrade()
                .and_then(|s| s.server_name(authority, host))
                .ok_or_else(|| io::Error::other(format!("no name to verify for {authority}")))?;
            let stream = tls.connect(name, tcp).await?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            Ok(Stream(Either::Right(Box::new(stream)), h2))
        })
    }
}

/// A backend connection, and whether ALPN chose HTTP/2 on it.
#[derive(Debug)]
pub(crate) struct Stream(Io, bool);

/// Plain TCP (left), or TLS over it (right).
type Io = Either<TcpStream, Box<TlsStream<TcpStream>>>;

impl Connection for Stream {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.1 {
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
        let io = TokioIo::new(&mut self.0);
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
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
