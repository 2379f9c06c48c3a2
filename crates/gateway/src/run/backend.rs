//! One backend's task: wait for the answers it depends on, fill its URL,
//! make the call through its upstream's policies (each attempt within its
//! timeout), decode the answer, hand its dependents what they need, shape it.

use std::sync::Arc;

use std::{net::SocketAddr, sync::Mutex};

use http::{HeaderMap, HeaderValue, header};
use serde_json::Value;
use tokio::time::Instant;

use super::{
    decode::decode,
    deps::Exported,
    request::RequestState,
    url::{self, Values},
};
use crate::{
    client::Transport,
    config::Method,
    error::{BackendError, ErrorKind},
    plan::BackendPlan,
    resilience::{CallReport, with_timeout},
    shape::{Body, FieldPath, Json},
    upstream::{AttemptVerdict, Scheme},
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
    let json = call(state, backend, &state.reports[index], deadline).await?;
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
) -> Result<Json, BackendError> {
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
    // Sized once: the headers of each attempt are these plus `Host`.
    let forwarded = &state.inputs.headers;
    let mut headers = HeaderMap::with_capacity(forwarded.len() + upstream.headers.len() + 2);
    for (name, value) in forwarded {
        headers.append(name.clone(), value.clone());
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
    // The URI's parts, made once per call: each attempt's URI is the
    // target's address and this.
    let path =
        http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(path)).map_err(|e| {
            BackendError::new(
                ErrorKind::Connect,
                format!("cannot build a request for `{}`: {e}", backend.name),
            )
        })?;
    let scheme = match upstream.targets.scheme {
        Scheme::Http => http::uri::Scheme::HTTP,
        Scheme::Https => http::uri::Scheme::HTTPS,
    };
    let method = http_method(backend.method);
    let limits = endpoint.limits;
    let targets = &upstream.targets;
    // The targets this call's attempts went to: a retry or a hedge goes to
    // another one whenever there is one.
    let used: Mutex<Vec<SocketAddr>> = Mutex::new(Vec::new());
    let attempt = || async {
        targets.ready().await;
        let mut failed_over = false;
        loop {
            let avoid = used.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let lease = targets.pick(&avoid)?;
            let target = lease.target.clone();
            if targets.all().len() > 1 {
                used.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(target.addr);
            }
            let mut attempt_headers = HeaderMap::with_capacity(headers.len() + 1);
            for (name, value) in &headers {
                attempt_headers.append(name.clone(), value.clone());
            }
            if !upstream.headers.contains_key(header::HOST) {
                attempt_headers.insert(header::HOST, target.host_header.clone());
            }
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(scheme.clone());
            parts.authority = Some(target.authority.clone());
            parts.path_and_query = Some(path.clone());
            let uri = http::Uri::from_parts(parts).map_err(|e| {
                BackendError::new(
                    ErrorKind::Connect,
                    format!("cannot build a request for `{}`: {e}", backend.name),
                )
            })?;
            let mut request = http::Request::new(http_body_util::Empty::new());
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri;
            *request.headers_mut() = attempt_headers;
            let result = with_timeout(backend.timeout, async {
                let response = state.transport.send(&targets.client, request).await?;
                decode(response, limits).await
            })
            .await;
            targets.finish(lease, verdict(&result));
            match result {
                // Nothing was sent: another target may take it, whatever the
                // method, once per attempt.
                Err(e) if e.unsent && !failed_over && targets.all().len() > 1 => {
                    failed_over = true;
                    tracing::debug!(target = %target.authority, error = %e, "not sent: trying another target");
                }
                result => return result,
            }
        }
    };
    match &upstream.policies {
        None => {
            report.attempt();
            attempt().await
        }
        Some(policies) => {
            let key = if policies.keyed() {
                call_key(path.as_str(), &headers)
            } else {
                String::new()
            };
            // Boxed: the policies' future (a hedge holds two attempts) is
            // several KiB, and would otherwise make every call's task that
            // big, policies or not; tokio moves a task's future as it spawns.
            Box::pin(policies.call(backend.method, &key, deadline, report, attempt))
                .await
                .map(Arc::unwrap_or_clone)
        }
    }
}

/// What an attempt's outcome says about its target.
fn verdict(result: &Result<Json, BackendError>) -> AttemptVerdict {
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

/// The method of a call, as `http` names it.
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
fn inject_trace_context(headers: &mut HeaderMap) {
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
/// path and the headers sent with it (whichever target takes it).
fn call_key(url: &str, headers: &HeaderMap) -> String {
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
    key
}

/// The values a backend's template can draw on.
struct RequestValues<'a, T> {
    state: &'a RequestState<T>,
    answers: Vec<(&'a str, Arc<Exported>)>,
}

impl<T> Values for RequestValues<'_, T> {
    fn route(&self, name: &str) -> Option<&str> {
        self.state
            .inputs
            .params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.state
            .inputs
            .query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn field(&self, backend: &str, path: &FieldPath) -> Option<Value> {
        let (_, fields) = self.answers.iter().find(|(name, _)| *name == backend)?;
        fields
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
    }
}
