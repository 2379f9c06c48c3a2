//! The HTTP side: the listeners (HTTP/1.1 and h2c), one runtime per serving
//! thread, request intake ([`intake`]: routing, limits, forwarding), the
//! admin listener ([`admin`]) and graceful shutdown ([`connections`]).

mod admin;
mod budget;
mod connections;
mod intake;
mod spread;

pub use admin::serve_admin;
pub use connections::{ConnectionLimit, Connections, MAX_CONCURRENT_STREAMS, Peer};
pub(crate) use intake::error;

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
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::{
    client::HttpClient,
    dashboard::Recorder,
    edge::{compress::Compressible, tls::ServerTls},
    plan::Plan,
};

/// A running gateway: its current plan (swapped atomically on reload), the
/// shared backend client, and whether it is ready. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    plan: Arc<ArcSwap<Plan>>,
    client: HttpClient,
    ready: Arc<AtomicBool>,
    recorder: Arc<Recorder>,
    /// Response bytes waiting for clients, shared by every serving thread.
    budget: budget::ResponseBudget,
    /// Open client connections (`server.max_connections`), shared by every
    /// serving thread.
    connections: ConnectionLimit,
    /// The listener's TLS (`server.tls`), swapped when a reload brings new
    /// certificates; `None`: plain TCP.
    tls: Option<Arc<ServerTls>>,
    /// Whether responses are compressed (`server.compression`), for every
    /// connection, open ones included.
    compression: Compressible,
}

impl Gateway {
    /// A gateway serving `plan`. Inside a tokio runtime, the upstreams'
    /// background work (DNS refresh, health checks) starts on it.
    pub fn new(plan: Plan) -> Gateway {
        plan.start();
        let limits = plan.server;
        Gateway {
            compression: Compressible::new(plan.config().server.compression),
            tls: plan
                .listener_tls
                .clone()
                .map(|config| Arc::new(ServerTls::from_config(config))),
            budget: budget::ResponseBudget::new(
                limits.response_buffer_per_connection,
                limits.response_buffer_total,
            ),
            connections: ConnectionLimit::new(limits.max_connections),
            plan: Arc::new(ArcSwap::from_pointee(plan)),
            client: HttpClient::new(),
            ready: Arc::new(AtomicBool::new(false)),
            recorder: Arc::new(Recorder::default()),
        }
    }

    /// Serves `plan` from now on. Requests already in flight finish on the
    /// plan they started with. The listener's own settings (`listen`,
    /// `header_read_timeout`, `shutdown_grace`) keep their first values. An
    /// upstream whose configuration did not change keeps its policies' state
    /// (breaker, retry budget, hedging latencies, cache); a changed one starts
    /// afresh. The listener's certificates (`server.tls`) are the plan's from
    /// now on, for new connections; open ones keep theirs. Turning TLS on or
    /// off takes a restart.
    pub fn reload(&self, mut plan: Plan) {
        plan.keep_state_of(&self.plan.load());
        plan.start();
        if let (Some(tls), Some(config)) = (&self.tls, &plan.listener_tls) {
            tls.install(config.clone());
        }
        self.compression.set(plan.config().server.compression);
        self.plan.store(Arc::new(plan));
    }

    /// Whether the listener serves TLS (`server.tls`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The plan requests start on now.
    pub fn plan(&self) -> Arc<Plan> {
        self.plan.load_full()
    }

    /// Whether the gateway's listener is accepting requests.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Serves `gateway` on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish for up to the plan's grace period,
/// and closes what is left.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_lane(listener, None, gateway, shutdown).await
}

/// [`serve`] as one of several serving threads, spreading connections with
/// the others through `lane`.
async fn serve_lane(
    listener: TcpListener,
    lane: Option<spread::Lane>,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let plan = gateway.plan();
    let ready = gateway.ready.clone();
    ready.store(true, Ordering::Release);
    let limits = plan.server;
    let connections = Connections {
        header_read_timeout: Some(limits.header_read_timeout),
        grace: limits.shutdown_grace,
        max_connections: gateway.connections.clone(),
        idle_timeout: Some(limits.idle_timeout),
        write_timeout: Some(limits.write_timeout),
        tls: gateway.tls.clone(),
    };
    connections
        .serve_lane(
            listener,
            lane,
            move |peer: Peer| {
                let gateway = gateway.clone();
                // Compression wraps the budget: the budget counts the bytes
                // the gateway holds (the uncompressed answer, released as the
                // encoder takes it, as fast as the client reads), the
                // encoder's output is what hyper sends.
                let compression = gateway.compression.clone();
                let answer = move |request| {
                    let (gateway, peer) = (gateway.clone(), peer.clone());
                    async move {
                        let response = gateway.handle(request, &peer).await;
                        Ok::<_, Infallible>(gateway.budget.admit(response, &peer.activity))
                    }
                };
                TowerToHyperService::new(compression.wrap(answer))
            },
            async {
                shutdown.await;
                ready.store(false, Ordering::Release);
            },
        )
        .await
}

/// Binds `threads` listening sockets to `addr`, all with `SO_REUSEPORT`, so
/// the kernel spreads incoming connections over them ([`serve_on_threads`]
/// evens out what it spreads unevenly). With port 0, the first picks the port
/// and the others share it.
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
/// `shutdown` turns `true`; then each stops as [`serve`] does. A thread that
/// accepts a connection while it serves more than another thread hands it to
/// that one, so the threads' shares of connections stay within one of each
/// other whatever the kernel's hash picked.
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
    // One thread needs no spreading.
    let mut lanes = match listeners.len() {
        1 => vec![None],
        threads => spread::lanes(threads).into_iter().map(Some).collect(),
    };
    for ((i, listener), lane) in listeners.into_iter().enumerate().zip(lanes.drain(..)) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gateway = Gateway {
            client: HttpClient::new(),
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
                            serve_lane(listener, lane, gateway, stop).await
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
