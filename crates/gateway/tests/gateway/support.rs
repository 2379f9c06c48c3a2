//! Real servers on loopback for the gateway's black-box tests: backends that
//! record what reached them and notice abandoned calls, and a gateway started
//! from a YAML config.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use fanout_gateway::{Gateway, Plan, config::Format};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::oneshot};

/// What a backend route answers.
#[derive(Clone)]
pub(crate) enum Reply {
    /// JSON with a status, after a delay.
    Json(u16, &'static str, Duration),
    /// Any body and content type, at once.
    Raw(u16, &'static str, &'static str),
    /// Announces 100 bytes, sends a few, then breaks the connection.
    ResetMidBody,
    /// Waits for the gate to open (all `n` calls arrived), then answers JSON.
    Gated(Arc<tokio::sync::Barrier>, &'static str),
    /// Never answers.
    Hang,
    /// Headers at once, then a byte every 50 ms, forever.
    Drip,
    /// Answers 503 to its first `n` calls (counted in the cell), then 200 JSON.
    Flaky(Arc<AtomicUsize>, usize, &'static str),
    /// Its first call (counted in the cell) takes this long; later ones answer at once.
    SlowFirst(Arc<AtomicUsize>, Duration, &'static str),
}

/// Shorthand for an immediate 200 JSON reply.
pub(crate) fn json(body: &'static str) -> Reply {
    Reply::Json(200, body, Duration::ZERO)
}

/// A 200 JSON reply after `ms` milliseconds.
pub(crate) fn slow(ms: u64, body: &'static str) -> Reply {
    Reply::Json(200, body, Duration::from_millis(ms))
}

/// One request as the backend saw it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) path_and_query: String,
    pub(crate) headers: HeaderMap,
}

/// A backend on 127.0.0.1 with fixed routes (by path, query ignored).
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    abandoned: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
}

/// One call in flight: counted until dropped, whether the handler is dropped
/// before answering or the response body is dropped after.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its call counted until it is dropped.
struct Counted<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }
}

struct Abandoned(Arc<AtomicUsize>, bool);

impl Drop for Abandoned {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Backend {
    pub(crate) async fn start(routes: &[(&str, Reply)]) -> Backend {
        let routes: Arc<HashMap<String, Reply>> = Arc::new(
            routes
                .iter()
                .map(|(p, r)| (p.to_string(), r.clone()))
                .collect(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let abandoned = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (seen2, abandoned2, in_flight2) = (seen.clone(), abandoned.clone(), in_flight.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (routes, seen, abandoned) = (routes.clone(), seen2.clone(), abandoned2.clone());
                let in_flight = in_flight2.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (routes, seen, abandoned) =
                        (routes.clone(), seen.clone(), abandoned.clone());
                    let counted = InFlight(in_flight.clone());
                    counted.0.fetch_add(1, Ordering::SeqCst);
                    async move {
                        seen.lock().unwrap().push(Seen {
                            path_and_query: req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            headers: req.headers().clone(),
                        });
                        let mut guard = Abandoned(abandoned, false);
                        let reply = routes.get(req.uri().path()).cloned();
                        let response = answer(reply).await;
                        guard.1 = true;
                        let (parts, body) = response.into_parts();
                        let body = Counted {
                            body,
                            _in_flight: counted,
                        };
                        Ok::<_, Infallible>(Response::from_parts(parts, body))
                    }
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            addr,
            seen,
            abandoned,
            in_flight,
        }
    }

    /// Every request that reached this backend, in arrival order.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Calls being answered now (a response counts until its body is dropped).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits (up to 5 s) until no call is in flight; returns how many still are.
    pub(crate) async fn wait_idle(&self) -> usize {
        for _ in 0..500 {
            if self.in_flight() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.in_flight()
    }

    /// How many calls were dropped by the caller before they were answered.
    pub(crate) fn abandoned(&self) -> usize {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// Waits (up to 5 s) until `n` calls have been abandoned.
    pub(crate) async fn wait_abandoned(&self, n: usize) -> usize {
        for _ in 0..500 {
            if self.abandoned() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.abandoned()
    }
}

type Boxed = BoxBody<Bytes, std::io::Error>;

async fn answer(reply: Option<Reply>) -> Response<Boxed> {
    let full = |status: u16, content_type: &'static str, body: &'static str| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(
                Full::new(Bytes::from_static(body.as_bytes()))
                    .map_err(|e| match e {})
                    .boxed(),
            )
            .unwrap()
    };
    match reply {
        None => full(404, "application/json", r#"{"error":"no such route"}"#),
        Some(Reply::Json(status, body, delay)) => {
            tokio::time::sleep(delay).await;
            full(status, "application/json", body)
        }
        Some(Reply::Raw(status, content_type, body)) => full(status, content_type, body),
        Some(Reply::Gated(gate, body)) => {
            gate.wait().await;
            full(200, "application/json", body)
        }
        Some(Reply::Hang) => std::future::pending().await,
        Some(Reply::Drip) => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Drip(tokio::time::interval(Duration::from_millis(50))).boxed())
            .unwrap(),
        Some(Reply::Flaky(calls, fail_first, body)) => {
            if calls.fetch_add(1, Ordering::SeqCst) < fail_first {
                full(503, "application/json", r#"{"error":"flaky"}"#)
            } else {
                full(200, "application/json", body)
            }
        }
        Some(Reply::SlowFirst(calls, delay, body)) => {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::time::sleep(delay).await;
            }
            full(200, "application/json", body)
        }
        Some(Reply::ResetMidBody) => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("content-length", "100")
            .body(BrokenBody(false).boxed())
            .unwrap(),
    }
}

/// A byte every tick, forever.
struct Drip(tokio::time::Interval);

impl Body for Drip {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_tick(cx)
            .map(|_| Some(Ok(Frame::data(Bytes::from_static(b" ")))))
    }
}

/// Sends a few bytes, then fails: the server aborts the connection.
struct BrokenBody(bool);

impl Body for BrokenBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.0 {
            return Poll::Ready(Some(Err(std::io::Error::other("reset mid-body"))));
        }
        self.0 = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{\"partial\":")))))
    }
}

/// A gateway on 127.0.0.1 serving a YAML config; `${env.NAME}` in it is
/// looked up in `vars` (backend addresses, usually).
pub(crate) struct TestGateway {
    pub(crate) addr: SocketAddr,
    pub(crate) gateway: Gateway,
    stop: Option<oneshot::Sender<()>>,
    pub(crate) stopped: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestGateway {
    pub(crate) async fn start(yaml: &str, vars: &[(&str, String)]) -> TestGateway {
        let gateway = Gateway::new(compile(yaml, vars));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(fanout_gateway::serve(listener, gateway.clone(), async {
            let _ = stopped.await;
        }));
        TestGateway {
            addr,
            gateway,
            stop: Some(stop),
            stopped: Some(task),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts a graceful shutdown.
    pub(crate) fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `http://ADDR` of a test backend.
pub(crate) fn base(b: &Backend) -> String {
    format!("http://{}", b.addr)
}

/// Compiles a YAML config; `${env.NAME}` is looked up in `vars`.
pub(crate) fn compile(yaml: &str, vars: &[(&str, String)]) -> Plan {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Plan::parse(yaml, Format::Yaml, "test.yaml", |name| {
        vars.get(name).cloned()
    })
    .unwrap_or_else(|e| panic!("test config refused:\n{e}"))
}

/// A response, read to the end.
#[derive(Debug)]
pub(crate) struct Got {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Got {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub(crate) fn complete(&self) -> Option<&str> {
        self.headers
            .get("x-fanout-complete")
            .and_then(|v| v.to_str().ok())
    }
}

pub(crate) fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// GET `url` with extra headers.
pub(crate) async fn get_with(url: &str, headers: &[(&str, &str)]) -> Got {
    let mut request = Request::get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client()
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub(crate) async fn get(url: &str) -> Got {
    get_with(url, &[]).await
}

/// Sends raw request bytes and returns the raw response (the connection is
/// closed by the server or after 5 s). For paths a client would normalise.
pub(crate) async fn raw(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
