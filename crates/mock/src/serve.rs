//! Building a [`Mock`] (from Rust or from a [`MockConfig`]) and serving it.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    ops::Deref,
    path::Path,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use fanout_gateway::{Connections, ServerTls};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use crate::{
    config::{Fault, Latency, MockConfig, MockReply, MockRoute},
    error::MockError,
    record::{InFlight, Seen, State, Stats},
    reply::{Delay, Gate, Kind, RESET_ANNOUNCED, Reply, Script, broken, chunks, drip},
};

/// How long a wait waits unless told otherwise.
const WAIT: Duration = Duration::from_secs(10);

/// Body bytes kept per request unless told otherwise.
const BODY_LIMIT: usize = 1 << 20;

/// A mock: its routes, and what it has seen. Cheap to clone; clones share
/// everything.
///
/// Build one with [`Mock::builder`] (tests and tools) or [`Mock::new`] (a
/// YAML config), then [`start`](Mock::start) it on a port of its own or
/// [`serve`](Mock::serve) it on a listener.
#[derive(Clone, Debug)]
pub struct Mock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    routers: HashMap<Method, matchit::Router<usize>>,
    /// Routes for every method, tried after the method's own.
    any: matchit::Router<usize>,
    routes: Vec<Route>,
    state: Arc<State>,
    /// TLS on its listener, if any.
    tls: Option<Arc<ServerTls>>,
}

#[derive(Debug)]
struct Route {
    replies: Vec<Prepared>,
    /// Calls so far: the next one's place in the script.
    calls: AtomicUsize,
    /// Whether a reply shows the request (its body is then read even when
    /// the mock records nothing).
    echoes: bool,
}

/// A [`Reply`] checked and made ready for its route.
#[derive(Debug)]
struct Prepared {
    answer: Answer,
    status: StatusCode,
    headers: HeaderMap,
    delay: Delay,
    gate: Option<Gate>,
    failure_rate: f64,
}

#[derive(Debug)]
enum Answer {
    Fixed {
        content_type: HeaderValue,
        body: Bytes,
    },
    /// Holds `{capture}` placeholders, filled per call.
    Template {
        content_type: HeaderValue,
        text: String,
    },
    ResetMidBody,
    Hang,
    Drip(Duration),
    Chunks(Vec<Bytes>, Duration),
    Echo,
}

/// Routes and settings for a [`Mock`], checked by [`build`](MockBuilder::build).
///
/// Paths are matched as sent (still percent-encoded), query ignored, with
/// `{name}` capturing one segment and `{*name}` the rest. A request no route
/// matches gets 404 `{"error": "the mock has no route for GET /x"}`, and is
/// recorded and counted like any other.
#[derive(Debug)]
#[must_use]
pub struct MockBuilder {
    routes: Vec<(Option<Method>, String, Script)>,
    record: bool,
    body_limit: usize,
    wait_timeout: Duration,
    tls: Option<Arc<ServerTls>>,
}

impl MockBuilder {
    /// Serves over TLS with these settings (see [`ServerTls::from_pem`]:
    /// certificate, key, and a client CA for mTLS); `url` then starts with
    /// `https://`.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(Arc::new(tls));
        self
    }

    /// Answers `method` on `path` with `replies` (one [`Reply`], or a
    /// [`Script`] for successive calls).
    pub fn route(mut self, method: Method, path: &str, replies: impl Into<Script>) -> Self {
        self.routes
            .push((Some(method), path.to_owned(), replies.into()));
        self
    }

    /// Answers every method on `path` (a route for the method itself is
    /// tried first).
    pub fn any(mut self, path: &str, replies: impl Into<Script>) -> Self {
        self.routes.push((None, path.to_owned(), replies.into()));
        self
    }

    /// Whether to keep each request ([`Mock::seen`]); on by default. The
    /// counters are kept either way.
    pub fn record(mut self, on: bool) -> Self {
        self.record = on;
        self
    }

    /// Body bytes kept per request (1 MiB by default); the rest is read and
    /// counted ([`Seen::body_len`]) but not kept. Echo replies show the kept part.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// How long the `wait_…` methods wait at most (10 s by default).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// Checks the routes and replies: paths that clash or are malformed,
    /// empty scripts, bad statuses and headers are refused, naming the route.
    pub fn build(self) -> Result<Mock, MockError> {
        let mut routers: HashMap<Method, matchit::Router<usize>> = HashMap::new();
        let mut any = matchit::Router::new();
        let mut routes = Vec::with_capacity(self.routes.len());
        for (index, (method, path, Script(replies))) in self.routes.into_iter().enumerate() {
            let bad = |message: String| MockError::Route {
                path: path.clone(),
                message,
            };
            let router = match method {
                Some(method) => routers.entry(method).or_default(),
                None => &mut any,
            };
            router
                .insert(path.clone(), index)
                .map_err(|e| bad(e.to_string()))?;
            if replies.is_empty() {
                return Err(bad("an empty script: give at least one reply".into()));
            }
            let captures = captures(&path);
            let echoes = replies.iter().any(Reply::is_echo);
            let replies = replies
                .into_iter()
                .map(|reply| prepare(reply, &captures).map_err(&bad))
                .collect::<Result<_, _>>()?;
            routes.push(Route {
                replies,
                calls: AtomicUsize::new(0),
                echoes,
            });
        }
        Ok(Mock {
            inner: Arc::new(Inner {
                routers,
                any,
                routes,
                state: Arc::new(State::new(self.record, self.body_limit, self.wait_timeout)),
                tls: self.tls,
            }),
        })
    }

    /// Builds the mock and starts it on a port of its own ([`Mock::start`]).
    pub async fn start(self) -> Result<MockServer, MockError> {
        self.build()?.start().await
    }
}

fn prepare(reply: Reply, captures: &[&str]) -> Result<Prepared, String> {
    let status = StatusCode::from_u16(reply.status)
        .map_err(|_| format!("status {} is not 100 to 999", reply.status))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &reply.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("`{value}` is not a value for header `{name}`"))?;
        headers.append(name, value);
    }
    let answer = match reply.kind {
        Kind::Body {
            content_type,
            body,
            json,
        } => {
            let content_type = HeaderValue::from_str(&content_type)
                .map_err(|_| format!("`{content_type}` is not a content type"))?;
            let text = std::str::from_utf8(&body).ok();
            match text {
                Some(text)
                    if json && captures.iter().any(|c| text.contains(&format!("{{{c}}}"))) =>
                {
                    Answer::Template {
                        content_type,
                        text: text.to_owned(),
                    }
                }
                _ => Answer::Fixed { content_type, body },
            }
        }
        Kind::ResetMidBody => Answer::ResetMidBody,
        Kind::Hang => Answer::Hang,
        Kind::Drip(every) => Answer::Drip(every),
        Kind::Chunks(pieces, pause) => Answer::Chunks(pieces, pause),
        Kind::Echo => Answer::Echo,
    };
    Ok(Prepared {
        answer,
        status,
        headers,
        delay: reply.delay,
        gate: reply.gate,
        failure_rate: reply.failure_rate,
    })
}

impl Mock {
    /// Routes and settings for a mock, to build.
    ///
    /// ```
    /// use fanout_mock::{Mock, Reply};
    /// use http::Method;
    ///
    /// let mock = Mock::builder()
    ///     .route(Method::GET, "/users/{id}", Reply::json(r#"{"id":"{id}"}"#))
    ///     .any("/echo", Reply::echo())
    ///     .build()
    ///     .unwrap();
    /// # let _ = mock;
    /// ```
    pub fn builder() -> MockBuilder {
        MockBuilder {
            routes: Vec::new(),
            record: true,
            body_limit: BODY_LIMIT,
            wait_timeout: WAIT,
            tls: None,
        }
    }

    /// Prepares `config`; `body_file`s are read relative to `base`. Requests
    /// are counted, not kept (`fanout mock` may serve millions).
    pub fn new(config: &MockConfig, base: &Path) -> Result<Mock, MockError> {
        let mut builder = Mock::builder().record(false);
        for route in &config.routes {
            builder = builder.route(route.method.clone(), &route.path, script_of(route, base)?);
        }
        builder.build()
    }

    /// The same routes over HTTPS, if `config` has a `tls` block: where to
    /// listen, and the mock (counting its own calls). Files are read
    /// relative to `base`.
    pub fn new_tls(
        config: &MockConfig,
        base: &Path,
    ) -> Result<Option<(SocketAddr, Mock)>, MockError> {
        let Some(tls) = &config.tls else {
            return Ok(None);
        };
        let read = |file: &Path| {
            let path = base.join(file);
            std::fs::read(&path).map_err(|e| {
                MockError::Tls(format!(
                    "cannot read {}: {e} (`fanout mock --make-certs DIR` writes a test CA, certificate and key)",
                    path.display()
                ))
            })
        };
        let client_ca = tls.client_ca.as_deref().map(read).transpose()?;
        let server = ServerTls::from_pem(&read(&tls.cert)?, &read(&tls.key)?, client_ca.as_deref())
            .map_err(|e| MockError::Tls(e.to_string()))?;
        let mut builder = Mock::builder().record(false).tls(server);
        for route in &config.routes {
            builder = builder.route(route.method.clone(), &route.path, script_of(route, base)?);
        }
        Ok(Some((tls.listen, builder.build()?)))
    }

    /// What the mock has counted so far.
    pub fn stats(&self) -> Stats {
        self.inner.state.stats()
    }

    /// Every request received (head and body in), in that order; empty if
    /// the mock does not record ([`MockBuilder::record`]).
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.state.seen()
    }

    /// Waits until `n` requests have been received, or the wait timeout
    /// ([`MockBuilder::wait_timeout`]) passes; returns how many have then.
    ///
    /// Like every wait here it never polls: it is woken by each change of the
    /// counters. It works on tokio's paused clock too, where the timeout is
    /// virtual time: tokio moves the clock only when no task can run and no
    /// I/O is ready, so a request already sent over loopback by a task of
    /// the same runtime is counted before the timeout, and a wait for
    /// something that never comes returns at once in real time. A request
    /// sent from another runtime or thread can be beaten by the timeout there.
    pub async fn wait_requests(&self, n: u64) -> u64 {
        self.inner
            .state
            .wait_until(|s| s.requests >= n)
            .await
            .requests
    }

    /// Waits until `n` calls have been abandoned by their callers, or the
    /// wait timeout passes; returns how many have then. Woken by each change,
    /// as [`wait_requests`](Mock::wait_requests) is.
    pub async fn wait_abandoned(&self, n: u64) -> u64 {
        self.inner
            .state
            .wait_until(|s| s.abandoned >= n)
            .await
            .abandoned
    }

    /// Waits until no call is in flight (every response body dropped), or
    /// the wait timeout passes; returns how many still are. Woken by each
    /// change, as [`wait_requests`](Mock::wait_requests) is.
    pub async fn wait_idle(&self) -> u64 {
        self.inner
            .state
            .wait_until(|s| s.in_flight == 0)
            .await
            .in_flight
    }

    /// Starts serving on a port of its own on 127.0.0.1, in a task of the
    /// current runtime, until the returned server is dropped or shut down.
    pub async fn start(self) -> Result<MockServer, MockError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(MockError::Listen)?;
        let addr = listener.local_addr().map_err(MockError::Listen)?;
        let (stop, stopped) = oneshot::channel::<()>();
        // A dropped sender ends the wait as a sent one does.
        let task = tokio::spawn(self.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        Ok(MockServer {
            mock: self,
            addr,
            stop,
            task,
        })
    }

    /// Serves on `listener` until `shutdown` completes; open connections are
    /// then closed at once (a mock has nothing worth waiting for).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        // No timers: a mock hangs and drips on purpose, and its callers are
        // tests and tools on loopback.
        let connections = Connections {
            header_read_timeout: None,
            grace: Duration::ZERO,
            max_connections: fanout_gateway::ConnectionLimit::new(usize::MAX),
            idle_timeout: None,
            write_timeout: None,
            tls: self.inner.tls.clone(),
        };
        connections
            .serve(
                listener,
                move |_peer: fanout_gateway::Peer| {
                    let mock = self.clone();
                    let connection = mock.inner.state.connection();
                    hyper::service::service_fn(move |request| {
                        let mock = mock.clone();
                        async move { Ok::<_, Infallible>(mock.answer(request, connection).await) }
                    })
                },
                shutdown,
            )
            .await
    }

    async fn answer(&self, request: Request<Incoming>, connection: u64) -> Response<Counted> {
        if request.uri().path() == "/__mock/stats" {
            let stats = serde_json::to_vec(&self.stats()).unwrap_or_default();
            return json(StatusCode::OK, Bytes::from(stats)).map(Counted::bare);
        }
        let state = &self.inner.state;
        let mut in_flight = InFlight::new(state.clone());
        let (parts, body) = request.into_parts();
        let target = self.find(&parts.method, parts.uri.path());
        let echoes = target.as_ref().is_some_and(|(route, _)| route.echoes);
        let keep = if state.record || echoes {
            state.body_limit
        } else {
            0
        };
        let (body, body_len) = read_body(body, keep).await;
        let seen = Seen {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            body,
            body_len,
            connection,
        };
        let Some((route, params)) = target else {
            let message = format!("the mock has no route for {} {}", seen.method, seen.path());
            state.received(seen);
            let body = serde_json::json!({ "error": message }).to_string();
            in_flight.answered();
            return json(StatusCode::NOT_FOUND, Bytes::from(body))
                .map(|body| Counted::new(body, in_flight));
        };
        let step = route.calls.fetch_add(1, Ordering::Relaxed);
        let reply = &route.replies[step.min(route.replies.len() - 1)];
        let echo = matches!(reply.answer, Answer::Echo).then(|| seen.to_json().to_string());
        state.received(seen);

        if let Some(gate) = &reply.gate {
            gate.pass().await;
        }
        let delay = reply.delay.sample();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if reply.failure_rate > 0.0 && rand::random::<f64>() < reply.failure_rate {
            in_flight.answered();
            return json(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(br#"{"error":"injected failure"}"#),
            )
            .map(|body| Counted::new(body, in_flight));
        }
        let (content_type, body) = match &reply.answer {
            Answer::Fixed { content_type, body } => (content_type.clone(), full(body.clone())),
            Answer::Template { content_type, text } => {
                (content_type.clone(), full(render(text, &params)))
            }
            Answer::Echo => (JSON, full(Bytes::from(echo.unwrap_or_default()))),
            Answer::ResetMidBody => (JSON, broken().boxed_unsync()),
            Answer::Drip(every) => (JSON, drip(*every).boxed_unsync()),
            Answer::Chunks(pieces, pause) => (JSON, chunks(pieces.clone(), *pause).boxed_unsync()),
            Answer::Hang => std::future::pending().await,
        };
        let mut response = response(reply.status, content_type, body);
        let headers = response.headers_mut();
        if matches!(reply.answer, Answer::ResetMidBody) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(RESET_ANNOUNCED));
        }
        for (name, value) in &reply.headers {
            headers.append(name, value.clone());
        }
        in_flight.answered();
        response.map(|body| Counted::new(body, in_flight))
    }

    fn find(&self, method: &Method, path: &str) -> Option<(&Route, Vec<(String, String)>)> {
        let inner = &*self.inner;
        let matched = inner
            .routers
            .get(method)
            .and_then(|router| router.at(path).ok())
            .or_else(|| inner.any.at(path).ok())?;
        let params = matched
            .params
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Some((&inner.routes[*matched.value], params))
    }
}

/// The replies of a configured route: its `replies`, or its own keys.
fn script_of(route: &MockRoute, base: &Path) -> Result<Script, MockError> {
    let bad = |message: &str| MockError::Route {
        path: route.path.clone(),
        message: message.to_owned(),
    };
    match &route.replies {
        Some(_) if route.has_own_reply() => Err(bad(
            "give `replies` or the keys of one reply (`body`, `status`, `fault`…), not both",
        )),
        Some(replies) if replies.is_empty() => Err(bad("`replies` is empty")),
        Some(replies) => replies
            .iter()
            .map(|reply| reply_of(reply, &route.path, base))
            .collect(),
        None => Ok(reply_of(&route.own_reply(), &route.path, base)?.into()),
    }
}

fn reply_of(config: &MockReply, path: &str, base: &Path) -> Result<Reply, MockError> {
    let bad = |message: &str| MockError::Route {
        path: path.to_owned(),
        message: message.to_owned(),
    };
    let body = match (&config.body, &config.body_file) {
        (Some(_), Some(_)) => return Err(bad("give `body` or `body_file`, not both")),
        (Some(value), None) => Some(serde_json::to_string(value).unwrap_or_default()),
        (None, Some(file)) => {
            let path = base.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| MockError::BodyFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| MockError::BodyFile {
                path: path.clone(),
                message: format!("not JSON: {e}"),
            })?;
            Some(text)
        }
        (None, None) => None,
    };
    let reply = match (config.fault, config.echo, body) {
        (Some(_), true, _) => return Err(bad("give `fault` or `echo`, not both")),
        (Some(_), false, Some(_)) => return Err(bad("give `fault` or a body, not both")),
        (None, true, Some(_)) => return Err(bad("give `echo` or a body, not both")),
        (Some(Fault::Reset), ..) => Reply::reset_mid_body(),
        (Some(Fault::Hang), ..) => Reply::hang(),
        (Some(Fault::Drip), ..) => Reply::drip(Duration::from_millis(100)),
        (Some(Fault::InvalidJson), ..) => Reply::json(&b"{\"truncated\": "[..]),
        (Some(Fault::WrongContentType), ..) => {
            Reply::raw("text/html", &b"<html><body>not json</body></html>"[..])
        }
        (None, true, None) => Reply::echo(),
        (None, false, body) => Reply::json(body.unwrap_or_else(|| "{}".to_owned())),
    };
    let mut reply = reply.status(config.status.unwrap_or(200));
    for (name, values) in &config.headers {
        for value in values.values() {
            reply = reply.header(name, value);
        }
    }
    let delay = match &config.latency {
        None => Delay::None,
        Some(Latency::Fixed(delay)) => Delay::Fixed(delay.0),
        Some(Latency::Mix(shares)) => {
            Delay::Mix(shares.iter().map(|s| (s.share.0, s.delay.0)).collect())
        }
    };
    Ok(reply
        .with_delay(delay)
        .with_failure_rate(config.failure_rate.map_or(0.0, |p| p.fraction())))
}

/// A started [`Mock`], serving on its own port on 127.0.0.1. It derefs to
/// the mock, for its record and waits. Dropping it stops it: it accepts no
/// more and its connections are closed (from its task, soon after).
#[derive(Debug)]
pub struct MockServer {
    mock: Mock,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl MockServer {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` (`https://` with TLS) followed by `path` (`/a?b=c`,
    /// or empty for the base).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.mock.inner.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Stops it and waits until it has: the port is closed and so is every
    /// connection, answered or not.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

impl Deref for MockServer {
    type Target = Mock;
    fn deref(&self) -> &Mock {
        &self.mock
    }
}

type Out = UnsyncBoxBody<Bytes, io::Error>;

/// A response body that keeps its call in flight until it is dropped.
#[derive(Debug)]
pub(crate) struct Counted {
    body: Out,
    _in_flight: Option<InFlight>,
}

impl Counted {
    fn new(body: Out, in_flight: InFlight) -> Counted {
        Counted {
            body,
            _in_flight: Some(in_flight),
        }
    }

    /// A body of no call (the stats).
    fn bare(body: Out) -> Counted {
        Counted {
            body,
            _in_flight: None,
        }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Reads the whole body, keeping its first `keep` bytes; a body that breaks
/// off is kept as far as it came.
async fn read_body(mut body: Incoming, keep: usize) -> (Bytes, u64) {
    let mut kept = Vec::new();
    let mut len = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            len += data.len() as u64;
            let room = keep.saturating_sub(kept.len()).min(data.len());
            kept.extend_from_slice(&data[..room]);
        }
    }
    (Bytes::from(kept), len)
}

fn full(bytes: Bytes) -> Out {
    if bytes.len() <= CHUNK {
        return Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync();
    }
    Framed(bytes).boxed_unsync()
}

/// Frames a large body is sent in, at most.
const CHUNK: usize = 64 << 10;

/// A whole body sent in frames of [`CHUNK`] bytes, each taken when the
/// connection asks for it: like a real server writing a large body, the
/// mock's sending waits on the caller's reading (its call stays in flight
/// until the last frame is taken).
struct Framed(Bytes);

impl Body for Framed {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.0.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.0.len().min(CHUNK);
        Poll::Ready(Some(Ok(Frame::data(self.0.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.len() as u64)
    }
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

fn response(status: StatusCode, content_type: HeaderValue, body: Out) -> Response<Out> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

/// The mock's own answers (stats, no route, an injected failure).
fn json(status: StatusCode, body: Bytes) -> Response<Out> {
    response(status, JSON, full(body))
}

fn render(text: &str, params: &[(String, String)]) -> Bytes {
    let mut out = text.to_owned();
    for (name, value) in params {
        // The value goes inside a JSON string: escape it as one, minus the quotes.
        let escaped = serde_json::to_string(value).unwrap_or_default();
        let escaped = &escaped[1..escaped.len().saturating_sub(1).max(1)];
        out = out.replace(&format!("{{{name}}}"), escaped);
    }
    Bytes::from(out)
}

fn captures(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|s| s.trim_start_matches('*'))
        .collect()
}
