//! How a listener serves its connections: HTTP/1.1 and h2c on one port, a
//! limit on the time to send headers, and a graceful stop. The gateway, its
//! admin listener and `fanout mock` all serve through this.

use std::{future::Future, io, net::SocketAddr};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, task::JoinSet};

/// How a listener serves its connections.
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
