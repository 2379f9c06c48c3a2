//! Real servers on loopback for the gateway's black-box tests: backends
//! (`fanout-mock`, which records what reached them and notices abandoned
//! calls), a gateway started from a YAML config, and a client.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use bytes::Bytes;
use fanout_gateway::{Gateway, Plan, config::Format};
use fanout_mock::{Mock, MockServer, Reply};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{net::TcpListener, sync::oneshot};

/// A mock backend on 127.0.0.1 answering each path (any method, query
/// ignored) with its reply; it records every request and counts calls in
/// flight and abandoned ones (see [`fanout_mock`]).
pub(crate) async fn backend(routes: &[(&str, Reply)]) -> MockServer {
    routes
        .iter()
        .fold(Mock::builder(), |mock, (path, reply)| {
            mock.any(path, reply.clone())
        })
        .start()
        .await
        .unwrap()
}

/// A 200 JSON reply after `ms` milliseconds.
pub(crate) fn slow(ms: u64, body: &'static str) -> Reply {
    Reply::json(body).delay(Duration::from_millis(ms))
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

    /// Starts its admin API on a port of its own, until the test ends
    /// (rendering `metrics` at `/metrics` if given); returns where.
    pub(crate) async fn admin(&self, metrics: Option<PrometheusHandle>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(fanout_gateway::serve_admin(
            listener,
            self.gateway.clone(),
            metrics,
            std::future::pending(),
        ));
        addr
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
    send("GET", url, headers).await
}

/// A request with `method` and extra headers, and no body.
pub(crate) async fn send(method: &str, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut request = Request::builder().method(method).uri(url);
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

/// The problems `fanout check` finds in a YAML config named `t.yaml`
/// (one per line, `t.yaml:LINE:COLUMN: message`), or "" when it has none.
pub(crate) fn problems(yaml: &str) -> String {
    match Plan::parse(yaml, Format::Yaml, "t.yaml", |_| None) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
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
