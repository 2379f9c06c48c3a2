//! The production [`Transport`]: pools of connections per target per
//! serving thread, over TCP or TLS (rustls). Where a connection can only
//! speak HTTP/1.1 (`http2: never`, or plain `http://` with `http2: auto`), a
//! call drives its own connection from the thread's own pools
//! ([`h1`](super::h1)); where it may speak HTTP/2 (`http2: always`, h2c, or
//! TLS with `http2: auto` and ALPN), hyper-util's pooled client, HTTP/2
//! multiplexed over one connection.
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
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll},
};

use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioTimer},
};

use super::{
    Body, ClientSettings, Dial, Request, Transport,
    connect::{self, Alpn, Stream},
    h1::{self, ResponseBody},
    pool::{self, IDLE_TIMEOUT, MAX_IDLE_PER_TARGET},
    tls,
};
use crate::{
    config::Http2,
    error::{BackendError, ErrorKind},
};

type Pool = Client<Connector, Body>;

/// The pools by settings id and target (its `Dial`'s address in memory,
/// checked against the `Dial` the entry holds).
type Entries = HashMap<(u64, usize), Entry>;

/// One target's pool on one serving thread.
#[derive(Clone, Debug)]
struct Entry {
    settings: Weak<ClientSettings>,
    dial: Weak<Dial>,
    pool: Pool,
    /// For `http2: auto` over TLS.
    alpn: Option<Arc<Alpn>>,
}

/// The pooled HTTP clients backend calls go through. Cheap to clone (clones
/// share the pools); each serving thread has its own, so a request's calls
/// and their connections stay on its thread.
#[derive(Clone, Debug, Default)]
pub struct HttpClient {
    /// One pool per upstream's settings and target, made on its first call,
    /// for connections that may speak HTTP/2.
    pools: Arc<Mutex<Entries>>,
    /// The same, for connections that speak HTTP/1.1 only.
    h1: Arc<pool::Pools>,
}

impl HttpClient {
    /// Clients with keep-alive pools and `TCP_NODELAY`.
    pub fn new() -> HttpClient {
        HttpClient::default()
    }

    /// Clients whose HTTP/1.1-only connections close after `idle` unused.
    #[cfg(test)]
    pub(crate) fn with_idle_timeout(idle: std::time::Duration) -> HttpClient {
        HttpClient {
            pools: Arc::default(),
            h1: Arc::new(pool::Pools::new(idle)),
        }
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
            .pool_idle_timeout(IDLE_TIMEOUT)
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
    type Body = ResponseBody;

    fn send(
        &self,
        settings: &Arc<ClientSettings>,
        dial: &Arc<Dial>,
        request: Request,
    ) -> impl Future<Output = Result<http::Response<Self::Body>, BackendError>> + Send {
        use futures::future::{Either, TryFutureExt};
        // A target that ALPN showed to speak HTTP/1.1 only (`http2: auto`
        // over TLS) is called as `http2: never` would: the call drives its
        // own connection, with no task hop and no pool key to hash.
        //
        // Chosen before any future is made, and not an `async fn`: that would
        // keep its own copy of the request beside the one in the future it
        // awaits, in every backend call's task. The pool's future is boxed
        // for the same reason: it is the larger, and most calls skip it.
        if settings.http1_only() || dial.speaks_http1() {
            Either::Left(h1::send(&self.h1, settings, dial, request))
        } else {
            Either::Right(
                Box::pin(self.send_pooled(settings, dial, request))
                    .map_ok(|response| response.map(ResponseBody::pooled)),
            )
        }
    }
}

impl HttpClient {
    /// A call through hyper-util's pool of `dial`'s target.
    async fn send_pooled(
        &self,
        settings: &Arc<ClientSettings>,
        dial: &Arc<Dial>,
        request: Request,
    ) -> Result<http::Response<hyper::body::Incoming>, BackendError> {
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
                return Err(std::io::Error::other(
                    "the upstream was reloaded or the target removed",
                )
                .into());
            };
            Ok(connect::open(&settings, &dial, tls.as_ref(), alpn.as_ref()).await?)
        })
    }
}
