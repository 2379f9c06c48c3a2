//! The HTTP side: the listener (HTTP/1.1 and h2c), request intake (routing,
//! limits, forwarding), and graceful shutdown.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use arc_swap::ArcSwap;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use percent_encoding::percent_decode_str;
use serde_json::json;
use tokio::{net::TcpListener, task::JoinSet};
use tracing::Instrument;

use crate::{
    config::Method,
    observe::Recorder,
    plan::Plan,
    run::{self, Inputs, call::Client},
};

/// A running gateway: its current plan (swapped atomically on reload), the
/// shared backend client, and whether it is ready. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    plan: Arc<ArcSwap<Plan>>,
    client: Client,
    ready: Arc<AtomicBool>,
    recorder: Arc<Recorder>,
}

impl Gateway {
    /// A gateway serving `plan`.
    pub fn new(plan: Plan) -> Gateway {
        Gateway {
            plan: Arc::new(ArcSwap::from_pointee(plan)),
            client: run::call::client(),
            ready: Arc::new(AtomicBool::new(false)),
            recorder: Arc::new(Recorder::default()),
        }
    }

    /// The recent requests, for the dashboard.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Serves `plan` from now on. Requests already in flight finish on the
    /// plan they started with. The listener's own settings (`listen`,
    /// `header_read_timeout`, `shutdown_grace`) keep their first values; the
    /// upstreams' policy state (breakers, budgets, caches) starts afresh.
    pub fn reload(&self, plan: Plan) {
        self.plan.store(Arc::new(plan));
    }

    /// The plan requests start on now.
    pub fn plan(&self) -> Arc<Plan> {
        self.plan.load_full()
    }

    /// Whether the gateway's listener is accepting requests.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Answers one request from `peer`.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let plan = self.plan.load_full();
        let path = request.uri().path();
        let Some(method) = Method::parse(request.method().as_str()) else {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {} is not served", request.method()),
            );
        };
        let Some((endpoint, params)) = plan.route(method, path) else {
            if plan.allows_other_method(path) {
                return error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{path} is not served for {}", method.as_str()),
                );
            }
            return error(
                StatusCode::NOT_FOUND,
                format!("no endpoint for {} {path}", method.as_str()),
            );
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > plan.max_request_body) {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than the {} bytes allowed",
                    plan.max_request_body
                ),
            );
        }
        let ep = &plan.endpoints[endpoint];
        let inputs = Inputs {
            params: params
                .into_iter()
                .map(|(k, v)| (k, percent_decode_str(&v).decode_utf8_lossy().into_owned()))
                .collect(),
            query: request
                .uri()
                .query()
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
            headers: forwarded_headers(
                request.headers(),
                &ep.forward_headers,
                request.uri().authority(),
                peer,
            ),
        };
        // A span per request; each backend call's span (opened by the task
        // group) is its child, and carries the trace to the backend.
        let span = tracing::info_span!(
            "request",
            otel.name = %ep.route,
            http.request.method = method.as_str(),
            http.route = %ep.route,
            http.response.status_code = tracing::field::Empty,
        );
        let response = run::execute(
            plan.clone(),
            endpoint,
            Arc::new(inputs),
            self.client.clone(),
            &self.recorder,
        )
        .instrument(span.clone())
        .await;
        span.record("http.response.status_code", response.status().as_u16());
        response
    }
}

/// The headers a backend gets from the client: the allow-listed ones (never a
/// hop-by-hop one), `x-forwarded-for` with the client's address appended, and
/// `x-forwarded-host`.
fn forwarded_headers(
    incoming: &HeaderMap,
    allowed: &[http::HeaderName],
    authority: Option<&http::uri::Authority>,
    peer: SocketAddr,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in allowed {
        if is_hop_by_hop(name) {
            continue;
        }
        for value in incoming.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let peer_ip = peer.ip().to_string();
    let xff = match incoming.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {peer_ip}"),
        None => peer_ip,
    };
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(xff)) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    let host = incoming
        .get(header::HOST)
        .cloned()
        .or_else(|| authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers
}

const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: http::HeaderName = http::HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, not the message: never forwarded.
pub(crate) fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

pub(crate) fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&json!({ "error": message })).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves `gateway` on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish for up to the plan's grace period,
/// and closes what is left.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let plan = gateway.plan();
    let ready = gateway.ready.clone();
    ready.store(true, Ordering::Release);
    let connections = Connections {
        header_read_timeout: Some(plan.header_read_timeout),
        grace: plan.shutdown_grace,
    };
    connections
        .serve(
            listener,
            move |peer| {
                let gateway = gateway.clone();
                service_fn(move |request| {
                    let gateway = gateway.clone();
                    async move { Ok::<_, Infallible>(gateway.handle(request, peer).await) }
                })
            },
            async {
                shutdown.await;
                ready.store(false, Ordering::Release);
            },
        )
        .await
}

/// Binds `threads` listening sockets to `addr`, all with `SO_REUSEPORT`, so
/// the kernel spreads incoming connections over them. With port 0, the first
/// picks the port and the others share it.
///
/// # Errors
///
/// When `addr` cannot be bound (in use, not local, no permission).
pub fn bind_reuseport(addr: SocketAddr, threads: usize) -> io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut listeners = Vec::with_capacity(threads.max(1));
    let mut addr = addr;
    for _ in 0..threads.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let listener = std::net::TcpListener::from(socket);
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Serves `gateway` on one thread per listener (from [`bind_reuseport`]),
/// each with its own current-thread runtime and its own backend client, until
/// `shutdown` turns `true`; then each stops as [`serve`] does.
///
/// Why: on the shared work-stealing runtime, a request's backend calls, their
/// connections and the request itself wake each other across threads (futex
/// calls, cache traffic). Kept on one thread, a request's CPU time in
/// `bench/run.sh`'s throughput scenario went from 110 to 80 µs (BENCHMARKS.md). Backend
/// calls still run concurrently; the threads share the plan (reloads reach
/// all of them), the policies' state and the dashboard.
///
/// # Errors
///
/// The first error of any thread (a runtime that cannot start, a listener
/// that cannot be registered).
pub async fn serve_on_threads(
    listeners: Vec<std::net::TcpListener>,
    gateway: Gateway,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> io::Result<()> {
    let mut done = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gateway = Gateway {
            client: run::call::client(),
            ..gateway.clone()
        };
        let mut shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name(format!("fanout-serve-{i}"))
            .spawn(move || {
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|runtime| {
                        runtime.block_on(async move {
                            let listener = TcpListener::from_std(listener)?;
                            let stop = async move {
                                let _ = shutdown.wait_for(|stop| *stop).await;
                            };
                            serve(listener, gateway, stop).await
                        })
                    });
                let _ = tx.send(served);
            })?;
        done.push(rx);
    }
    let mut result = Ok(());
    for rx in done {
        let served = rx
            .await
            .unwrap_or_else(|_| Err(io::Error::other("a serving thread panicked")));
        if result.is_ok() {
            result = served;
        }
    }
    result
}

/// How a listener serves its connections: HTTP/1.1 and h2c on one port, a
/// limit on the time to send headers, and a graceful stop. The gateway, its
/// admin listener and `fanout mock` all serve through this.
#[derive(Clone, Copy, Debug)]
pub struct Connections {
    /// Clients slower than this to send their request headers are disconnected.
    pub header_read_timeout: Option<std::time::Duration>,
    /// On shutdown, how long in-flight requests may take to finish.
    pub grace: std::time::Duration,
}

impl Connections {
    /// Accepts connections on `listener`, serving each with the service
    /// `make_service` builds for its peer, until `shutdown` completes; then
    /// stops accepting, waits up to the grace period for in-flight requests,
    /// and closes what is left.
    pub async fn serve<M, S, B>(
        self,
        listener: TcpListener,
        make_service: M,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()>
    where
        M: Fn(SocketAddr) -> S,
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
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of file descriptors and the like: keep serving.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let service = make_service(peer);
                    let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned());
                    connections.spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, %peer, "connection ended with an error");
                        }
                    });
                    while connections.try_join_next().is_some() {}
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
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
