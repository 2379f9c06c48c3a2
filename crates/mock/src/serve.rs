//! Serving a [`MockConfig`].

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use fanout_gateway::{Connections, config::Method};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use serde::Serialize;
use tokio::{net::TcpListener, time::Interval};

use crate::config::{Fault, Latency, MockConfig};

/// A mock configuration that cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    /// A route's path is malformed or clashes with another.
    #[error("route `{path}`: {message}")]
    Route {
        /// The route's path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A `body_file` cannot be read or is not JSON.
    #[error("body file {}: {message}", path.display())]
    BodyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// What the mock has seen so far (`GET /__mock/stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Calls that arrived.
    pub requests: u64,
    /// Calls being answered now.
    pub in_flight: u64,
    /// The most calls answered at once.
    pub max_in_flight: u64,
    /// Calls the caller dropped before they were answered.
    pub abandoned: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    abandoned: AtomicU64,
}

#[derive(Debug)]
enum Canned {
    /// Serialized once at start.
    Fixed(Bytes),
    /// Holds `{capture}` placeholders, filled per call.
    Template(String),
}

#[derive(Debug)]
struct Route {
    status: StatusCode,
    body: Canned,
    latency: Option<Latency>,
    failure_rate: f64,
    fault: Option<Fault>,
}

#[derive(Debug)]
struct Inner {
    routers: HashMap<Method, matchit::Router<usize>>,
    routes: Vec<Route>,
    counters: Counters,
}

/// A mock server, ready to serve.
#[derive(Clone, Debug)]
pub struct Mock {
    inner: Arc<Inner>,
}

impl Mock {
    /// Prepares `config`; `body_file`s are read relative to `base`.
    pub fn new(config: &MockConfig, base: &Path) -> Result<Mock, MockError> {
        let mut routers: HashMap<Method, matchit::Router<usize>> = HashMap::new();
        let mut routes = Vec::with_capacity(config.routes.len());
        for (index, route) in config.routes.iter().enumerate() {
            let bad = |message: String| MockError::Route {
                path: route.path.clone(),
                message,
            };
            routers
                .entry(route.method)
                .or_default()
                .insert(route.path.clone(), index)
                .map_err(|e| bad(e.to_string()))?;
            let status = StatusCode::from_u16(route.status).map_err(|e| bad(e.to_string()))?;
            let body = match (&route.body, &route.body_file) {
                (Some(_), Some(_)) => {
                    return Err(bad("give `body` or `body_file`, not both".into()));
                }
                (Some(value), None) => serde_json::to_string(value).unwrap_or_default(),
                (None, Some(file)) => {
                    let path = base.join(file);
                    let text = std::fs::read_to_string(&path).map_err(|e| MockError::BodyFile {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                    serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                        MockError::BodyFile {
                            path: path.clone(),
                            message: format!("not JSON: {e}"),
                        }
                    })?;
                    text
                }
                (None, None) => "{}".to_owned(),
            };
            let captures = captures(&route.path);
            let body = if captures.iter().any(|c| body.contains(&format!("{{{c}}}"))) {
                Canned::Template(body)
            } else {
                Canned::Fixed(Bytes::from(body))
            };
            routes.push(Route {
                status,
                body,
                latency: route.latency.clone(),
                failure_rate: route.failure_rate.map_or(0.0, |p| p.fraction()),
                fault: route.fault,
            });
        }
        Ok(Mock {
            inner: Arc::new(Inner {
                routers,
                routes,
                counters: Counters::default(),
            }),
        })
    }

    /// What the mock has seen so far.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            requests: c.requests.load(Ordering::SeqCst),
            in_flight: c.in_flight.load(Ordering::SeqCst),
            max_in_flight: c.max_in_flight.load(Ordering::SeqCst),
            abandoned: c.abandoned.load(Ordering::SeqCst),
        }
    }

    /// Serves on `listener` until `shutdown` completes; open connections are
    /// then closed at once (a mock has nothing worth waiting for).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let connections = Connections {
            header_read_timeout: None,
            grace: Duration::ZERO,
        };
        connections
            .serve(
                listener,
                move |_peer| {
                    let mock = self.clone();
                    hyper::service::service_fn(move |request| {
                        let mock = mock.clone();
                        async move { Ok::<_, Infallible>(mock.answer(request).await) }
                    })
                },
                shutdown,
            )
            .await
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Reply> {
        let path = request.uri().path();
        if path == "/__mock/stats" {
            return json(
                StatusCode::OK,
                Bytes::from(serde_json::to_vec(&self.stats()).unwrap_or_default()),
            );
        }
        let matched = Method::parse(request.method().as_str())
            .and_then(|m| self.inner.routers.get(&m))
            .and_then(|router| router.at(path).ok());
        let Some(matched) = matched else {
            let body = serde_json::json!({ "error": format!("the mock has no route for {} {path}", request.method()) });
            return json(StatusCode::NOT_FOUND, Bytes::from(body.to_string()));
        };
        let route = &self.inner.routes[*matched.value];
        let params: Vec<(String, String)> = matched
            .params
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();

        let counters = &self.inner.counters;
        counters.requests.fetch_add(1, Ordering::SeqCst);
        let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let mut guard = InFlight {
            counters: &self.inner.counters,
            answered: false,
        };

        if let Some(delay) = route.latency.as_ref().map(sample) {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        let response = if route.failure_rate > 0.0 && rand::random::<f64>() < route.failure_rate {
            json(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(br#"{"error":"injected failure"}"#),
            )
        } else {
            match route.fault {
                Some(Fault::Hang) => std::future::pending().await,
                Some(Fault::Reset) => Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::CONTENT_LENGTH, "1000")
                    .body(Broken(None).boxed())
                    .unwrap_or_default(),
                Some(Fault::Drip) => Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Drip(tokio::time::interval(Duration::from_millis(100))).boxed())
                    .unwrap_or_default(),
                Some(Fault::InvalidJson) => {
                    json(StatusCode::OK, Bytes::from_static(b"{\"truncated\": "))
                }
                Some(Fault::WrongContentType) => Response::builder()
                    .header(header::CONTENT_TYPE, "text/html")
                    .body(full(Bytes::from_static(
                        b"<html><body>not json</body></html>",
                    )))
                    .unwrap_or_default(),
                None => json(route.status, render(&route.body, &params)),
            }
        };
        guard.answered = true;
        response
    }
}

/// Counts a call in flight; a call dropped before it was answered was abandoned.
struct InFlight<'a> {
    counters: &'a Counters,
    answered: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.answered {
            self.counters.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

type Reply = BoxBody<Bytes, io::Error>;

fn full(bytes: Bytes) -> Reply {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn json(status: StatusCode, body: Bytes) -> Response<Reply> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn render(body: &Canned, params: &[(String, String)]) -> Bytes {
    match body {
        Canned::Fixed(bytes) => bytes.clone(),
        Canned::Template(text) => {
            let mut out = text.clone();
            for (name, value) in params {
                // The value goes inside a JSON string: escape it as one, minus the quotes.
                let escaped = serde_json::to_string(value).unwrap_or_default();
                let escaped = &escaped[1..escaped.len().saturating_sub(1).max(1)];
                out = out.replace(&format!("{{{name}}}"), escaped);
            }
            Bytes::from(out)
        }
    }
}

fn captures(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|s| s.trim_start_matches('*'))
        .collect()
}

fn sample(latency: &Latency) -> Duration {
    match latency {
        Latency::Fixed(d) => d.0,
        Latency::Mix(shares) => {
            let mut roll = rand::random::<f64>() * 100.0;
            for share in shares {
                if roll < share.share.0 {
                    return share.delay.0;
                }
                roll -= share.share.0;
            }
            Duration::ZERO
        }
    }
}

/// Sends part of the announced body, then fails: the connection is aborted.
/// The pause between the two lets the headers and the first bytes reach the
/// client, so the fault is a reset *mid-body*, not a missing response.
struct Broken(Option<Pin<Box<tokio::time::Sleep>>>);

impl Body for Broken {
    type Data = Bytes;
    type Error = io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.0.as_mut() {
            None => {
                self.0 = Some(Box::pin(tokio::time::sleep(Duration::from_millis(20))));
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                    b"{\"partial\": \"",
                )))))
            }
            Some(pause) => pause
                .as_mut()
                .poll(cx)
                .map(|()| Some(Err(io::Error::other("mock fault: reset mid-body")))),
        }
    }
}

/// One byte every tick, forever.
struct Drip(Interval);

impl Body for Drip {
    type Data = Bytes;
    type Error = io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0
            .poll_tick(cx)
            .map(|_| Some(Ok(Frame::data(Bytes::from_static(b" ")))))
    }
}
