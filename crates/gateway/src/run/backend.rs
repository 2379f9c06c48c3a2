//! One backend's task: wait for the answers it depends on, fill its URL,
//! make the call through its upstream's policies (each attempt within its
//! timeout), decode the answer, hand its dependents what they need, shape it.

use std::sync::Arc;

use http::HeaderMap;
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
    error::{BackendError, ErrorKind},
    plan::BackendPlan,
    resilience::{CallReport, with_timeout},
    shape::{Body, FieldPath, Json},
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
    let url = url::render(
        &upstream.origin.base,
        &backend.template,
        &values,
        &state.inputs.query,
    )
    .map_err(|e| BackendError::new(ErrorKind::Dependency, e))?;
    let mut headers = state.inputs.headers.clone();
    if !upstream.headers.contains_key(http::header::HOST) {
        headers.insert(http::header::HOST, upstream.origin.host.clone());
    }
    // Configured headers replace the client's of the same name, never sit
    // beside them (a backend reading the first value would use the client's).
    for (name, value) in &upstream.headers {
        headers.insert(name.clone(), value.clone());
    }
    #[cfg(feature = "otel")]
    inject_trace_context(&mut headers);
    let limits = endpoint.limits;
    let attempt = |headers: HeaderMap| {
        let request = build_request(backend, &url, headers);
        with_timeout(backend.timeout, async move {
            let response = state.transport.send(request?).await?;
            decode(response, limits).await
        })
    };
    match &upstream.policies {
        None => {
            report.attempt();
            attempt(headers).await
        }
        Some(policies) => {
            let key = if policies.keyed() {
                call_key(&url, &headers)
            } else {
                String::new()
            };
            // Boxed: the policies' future (a hedge holds two attempts) is
            // several KiB, and would otherwise make every call's task that
            // big, policies or not; tokio moves a task's future as it spawns.
            Box::pin(policies.call(backend.method, &key, deadline, report, || {
                attempt(headers.clone())
            }))
            .await
            .map(Arc::unwrap_or_clone)
        }
    }
}

fn build_request(
    backend: &BackendPlan,
    url: &str,
    headers: HeaderMap,
) -> Result<crate::client::Request, BackendError> {
    let mut request = http::Request::builder()
        .method(backend.method.as_str())
        .uri(url)
        .body(http_body_util::Empty::new())
        .map_err(|e| {
            BackendError::new(
                ErrorKind::Connect,
                format!("cannot build a request for {url}: {e}"),
            )
        })?;
    *request.headers_mut() = headers;
    Ok(request)
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

/// What makes two calls the same call, for the cache and coalescing: the URL
/// and the headers sent with it.
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
