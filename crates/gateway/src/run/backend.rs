//! One backend's task: wait for the answers it depends on, fill its URL,
//! make the call through its upstream's policies (each attempt within its
//! timeout), decode the answer, hand its dependents what they need, shape it.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use futures::TryFutureExt;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use tokio::time::Instant;

use super::{decode::decode, deps::Exported, request::RequestState};
use crate::{
    client::Transport,
    config::Method,
    error::{BackendError, ErrorKind},
    plan::{BackendPlan, CallBody},
    resilience::{Answer, CallReport, with_timeout},
    shape::Body,
    template::{Found, Values, Var, url},
    upstream::{AttemptVerdict, Lease, Scheme},
};

/// Runs backend `index` of the request; `deadline` is the endpoint's.
pub(crate) async fn run<T: Transport>(
    state: &RequestState<T>,
    index: usize,
    deadline: Option<Instant>,
) -> Result<Body, BackendError> {
    let backend = &state.endpoint.backends[index];
    // Dropped unused on any failure (or if the task is stopped): dependents
    // then hear that it failed.
    let publisher = state.answers.publisher(index);
    let Answer { json, headers } = call(state, backend, &state.reports[index], deadline).await?;
    if let Some(slot) = state.returned.get(index).filter(|_| !headers.is_empty()) {
        // Each backend runs once per request: the slot is empty.
        let _ = slot.set(headers);
    }
    if let Some(publisher) = publisher {
        publisher.ready(
            backend
                .exported
                .iter()
                .filter_map(|path| Some((path.clone(), json.lookup(path)?)))
                .collect(),
        );
    }
    if !backend.shape.reshapes() {
        return Ok(Body::Json(json));
    }
    let value = json.to_value().map_err(|e| {
        BackendError::new(ErrorKind::Decode, format!("cannot reshape the body: {e}"))
    })?;
    backend
        .shape
        .apply(value)
        .map(Body::Value)
        .map_err(|e| BackendError::new(ErrorKind::Decode, e.to_string()))
}

async fn call<T: Transport>(
    state: &RequestState<T>,
    backend: &BackendPlan,
    report: &CallReport,
    deadline: Option<Instant>,
) -> Result<Answer, BackendError> {
    let endpoint = &state.endpoint;
    let mut answers: Vec<(&str, Arc<Exported>)> = Vec::with_capacity(backend.after.len());
    for &dep in &backend.after {
        let name = endpoint.backends[dep].name.as_str();
        match state.answers.wait(dep).await {
            Some(fields) => answers.push((name, fields)),
            None => {
                return Err(BackendError::new(
                    ErrorKind::Dependency,
                    format!("`{name}` failed, so this call was not made"),
                ));
            }
        }
    }
    let values = RequestValues { state, answers };
    let upstream = &backend.upstream;
    let path = url::render(
        &upstream.prefix,
        &backend.template,
        &values,
        &state.inputs.query,
    )
    .map_err(|e| BackendError::new(ErrorKind::Dependency, e))?;
    let body = match &backend.body {
        None => Bytes::new(),
        Some(CallBody::Forward) => state
            .inputs
            .body
            .as_ref()
            .map(|b| b.bytes.clone())
            .unwrap_or_default(),
        Some(CallBody::Template(template)) => Bytes::from(
            template
                .render(&values)
                .map_err(|e| BackendError::new(ErrorKind::Dependency, e.to_string()))?,
        ),
    };
    let headers = call_headers(state, backend);
    // A call whose answer sets cookies belongs to its client: it is never
    // answered from the cache nor shared with another.
    let key = upstream.policies.as_ref().and_then(|policies| {
        let private = backend.return_headers.contains(&header::SET_COOKIE);
        (policies.keyed() && !private).then(|| call_key(&path, &headers, &backend.return_headers))
    });
    // The first attempt's request takes these headers; a retry, a hedge or a
    // failover to another target makes its own. (Most calls make one
    // attempt: no copy kept for the attempts that do not come.)
    let made = Mutex::new(Some(headers));
    let headers = || {
        made.lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| call_headers(state, backend))
    };
    let limits = endpoint.limits;
    let targets = &upstream.targets;
    // The targets this call's attempts went to: a retry or a hedge goes to
    // another one whenever there is one.
    let used: Mutex<Vec<SocketAddr>> = Mutex::new(Vec::new());
    let attempt = || async {
        targets.ready().await;
        // The target a first attempt could not send to, and why.
        let mut unsent_to: Option<(String, BackendError)> = None;
        loop {
            let (lease, request) = aim(backend, &used, &path, headers(), body.clone())?;
            let target = lease.target.clone();
            // Chained, not an `async` block: a block would keep the request
            // beside the future it is moved into.
            let sending = state.transport.send(&targets.client, &target.dial, request);
            let result = with_timeout(
                backend.timeout,
                sending.and_then(|response| decode(response, limits, &backend.return_headers)),
            )
            .await;
            targets.finish(lease, verdict(&result));
            match result {
                // Nothing was sent: another target may take it, whatever the
                // method, once per attempt.
                Err(e) if e.unsent && unsent_to.is_none() && targets.all().len() > 1 => {
                    tracing::debug!(target = %target.authority, error = %e, "not sent: trying another target");
                    unsent_to = Some((target.authority.clone(), e));
                }
                // Both failed: the error says both whys (a refused address
                // must not hide the other one's certificate problem).
                Err(mut e) => {
                    if let Some((authority, first)) = unsent_to {
                        e.message =
                            format!("{}; before it, {authority}: {}", e.message, first.message);
                    }
                    return Err(e);
                }
                answer => return answer,
            }
        }
    };
    match &upstream.policies {
        None => {
            report.attempt();
            attempt().await
        }
        Some(policies) => {
            // Boxed: the policies' future (a hedge holds two attempts) is
            // several KiB, and would otherwise make every call's task that
            // big, policies or not; tokio moves a task's future as it spawns.
            Box::pin(policies.call(backend.method, key.as_deref(), deadline, report, attempt))
                .await
                .map(Arc::unwrap_or_clone)
        }
    }
}

/// Room in a call's header map beyond the headers it is built from: for the
/// few it adds (`host`, `accept-encoding`, a body's) and, as hyper reads the
/// answer's head into the same map, for a typical answer's headers.
const ROOM: usize = 8;

/// The headers of a call to `backend`: the client's forwarded ones, those
/// that describe the call's body, the upstream's own (replacing the client's
/// of the same name) and `accept-encoding`; its `host` is the attempt's.
fn call_headers<T: Transport>(state: &RequestState<T>, backend: &BackendPlan) -> HeaderMap {
    let upstream = &backend.upstream;
    // Built with room rather than cloned: a clone has no room to spare, so
    // each header added below would grow it, and hyper parses the answer's
    // headers into this same map (it keeps a sent request's map for that),
    // which would grow it again.
    let forwarded = &state.inputs.headers;
    let mut headers = HeaderMap::with_capacity(forwarded.len() + upstream.headers.len() + ROOM);
    for (name, value) in forwarded {
        headers.append(name.clone(), value.clone());
    }
    match &backend.body {
        None => {}
        Some(CallBody::Forward) => {
            let client = state.inputs.body.as_ref();
            for (name, value) in [
                (
                    header::CONTENT_TYPE,
                    client.and_then(|b| b.content_type.clone()),
                ),
                (
                    header::CONTENT_ENCODING,
                    client.and_then(|b| b.content_encoding.clone()),
                ),
            ] {
                match value {
                    Some(value) => headers.insert(name, value),
                    None => headers.remove(name),
                };
            }
        }
        Some(CallBody::Template(_)) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.remove(header::CONTENT_ENCODING);
        }
    }
    // Configured headers replace the client's of the same name, never sit
    // beside them (a backend reading the first value would use the client's).
    for (name, value) in &upstream.headers {
        headers.insert(name.clone(), value.clone());
    }
    if !upstream.headers.contains_key(header::ACCEPT_ENCODING) {
        let accept = if upstream.compression {
            HeaderValue::from_static("gzip, br, zstd")
        } else {
            HeaderValue::from_static("identity")
        };
        headers.insert(header::ACCEPT_ENCODING, accept);
    }
    #[cfg(feature = "otel")]
    inject_trace_context(&mut headers);
    headers
}

/// What an attempt's outcome says about its target.
pub(super) fn verdict<T>(result: &Result<T, BackendError>) -> AttemptVerdict {
    match result {
        Ok(_) => AttemptVerdict::Answered,
        Err(e) => match e.kind {
            ErrorKind::Connect | ErrorKind::Timeout => AttemptVerdict::Failed,
            ErrorKind::Status if e.status.is_some_and(|s| s >= 500) => AttemptVerdict::Failed,
            ErrorKind::Status => AttemptVerdict::Answered,
            _ => AttemptVerdict::Neutral,
        },
    }
}

/// One attempt of `backend`'s call: a target picked among its upstream's,
/// other than those its earlier attempts went to (`used`, which records this
/// one), and the request to it, with `headers` (and the target's `Host`,
/// unless the upstream sets one) and `body`.
pub(super) fn aim(
    backend: &BackendPlan,
    used: &Mutex<Vec<SocketAddr>>,
    path: &str,
    mut headers: HeaderMap,
    body: impl Into<crate::client::Body>,
) -> Result<(Lease, crate::client::Request), BackendError> {
    let upstream = &backend.upstream;
    let targets = &upstream.targets;
    // With one target there is no other to go to: no list to copy or grow
    // per attempt.
    let several = targets.all().len() > 1;
    let avoid = if several {
        used.lock().unwrap_or_else(|e| e.into_inner()).clone()
    } else {
        Vec::new()
    };
    let lease = targets.pick(&avoid)?;
    let target = &lease.target;
    if several {
        used.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(target.addr);
    }
    // The URI's authority is the host the backend is to see; where the
    // connection goes is the target's (its `Dial`).
    let host = upstream
        .headers
        .get(header::HOST)
        .unwrap_or(&target.host_header);
    targets.client.set_host(&target.dial, &mut headers, host);
    // Put together from parts, the target's authority parsed once: no URL
    // to format and parse again per attempt.
    let bad = |e: &dyn std::fmt::Display| {
        BackendError::new(
            ErrorKind::Connect,
            format!(
                "cannot build a request for {}://{}{path}: {e}",
                targets.scheme.as_str(),
                String::from_utf8_lossy(host.as_bytes())
            ),
        )
    };
    let authority = match (
        upstream.headers.contains_key(header::HOST),
        &target.host_authority,
    ) {
        (false, Some(authority)) => authority.clone(),
        _ => http::uri::Authority::from_maybe_shared(Bytes::copy_from_slice(host.as_bytes()))
            .map_err(|e| bad(&e))?,
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(match targets.scheme {
        Scheme::Http => http::uri::Scheme::HTTP,
        Scheme::Https => http::uri::Scheme::HTTPS,
    });
    parts.authority = Some(authority);
    parts.path_and_query = Some(
        http::uri::PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(path.as_bytes()))
            .map_err(|e| bad(&e))?,
    );
    let uri = http::Uri::from_parts(parts).map_err(|e| bad(&e))?;
    let mut request = http::Request::new(body.into());
    *request.method_mut() = http_method(backend.method);
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok((lease, request))
}

/// The method of a call, as `http` names it (its constant: no name to
/// parse per attempt).
fn http_method(method: Method) -> http::Method {
    match method {
        Method::Get => http::Method::GET,
        Method::Head => http::Method::HEAD,
        Method::Post => http::Method::POST,
        Method::Put => http::Method::PUT,
        Method::Patch => http::Method::PATCH,
        Method::Delete => http::Method::DELETE,
        Method::Options => http::Method::OPTIONS,
    }
}

/// Adds the W3C `traceparent` (and `tracestate`) of the current span, this
/// backend call's, to its headers.
#[cfg(feature = "otel")]
pub(super) fn inject_trace_context(headers: &mut HeaderMap) {
    use opentelemetry::propagation::Injector;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    struct Carrier<'h>(&'h mut HeaderMap);
    impl Injector for Carrier<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(key.as_bytes()),
                http::HeaderValue::from_str(&value),
            ) {
                self.0.insert(name, value);
            }
        }
    }
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut Carrier(headers));
    });
}

/// What makes two calls the same call, for the cache and coalescing: the
/// path, the headers sent with it (whichever target takes it), and the
/// response headers the answer keeps.
fn call_key(url: &str, headers: &HeaderMap, keeps: &[HeaderName]) -> String {
    let mut pairs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    pairs.sort_unstable();
    let mut key = String::from(url);
    for (name, value) in pairs {
        key.push('\n');
        key.push_str(name);
        key.push(':');
        key.push_str(&String::from_utf8_lossy(value));
    }
    for name in keeps {
        key.push_str("\nkeeps:");
        key.push_str(name.as_str());
    }
    key
}

/// The values a backend's templates can draw on: the client's, and the
/// fields of the answers it waited for.
struct RequestValues<'a, T> {
    state: &'a RequestState<T>,
    answers: Vec<(&'a str, Arc<Exported>)>,
}

impl<T> Values for RequestValues<'_, T> {
    fn get(&self, var: &Var) -> Option<Found<'_>> {
        match var {
            Var::Field { backend, path } => {
                let (_, fields) = self.answers.iter().find(|(name, _)| name == backend)?;
                fields
                    .iter()
                    .find(|(p, _)| p == path)
                    .map(|(_, v)| Found::Json(v))
            }
            _ => self.state.inputs.get(var),
        }
    }
}
