//! Running one request: every backend on a [`fanout_group::Group`], then the
//! answers shaped, merged and turned into a response.
//!
//! - Backends without `after` start at once; a backend with `after` waits, inside
//!   its task, for exactly the answers it needs (a DAG, not stages).
//! - The endpoint deadline is the group's deadline. A backend's own timeout
//!   covers its call (not the wait for its dependencies).
//! - The group collects every outcome (optional failures give partial answers);
//!   a *required* failure cancels the group with a reason, which stops every
//!   other call at once.
//! - Dropping the future (the client went away) drops the group, which stops
//!   every call, which closes their connections: backends see the disconnect.

pub mod call;
mod respond;

pub use respond::COMPLETE;
pub(crate) mod url;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use fanout_group::{Cause, Group, TaskError};
use http::{HeaderMap, Response};
use http_body_util::Full;
use serde_json::Value;
use tokio::sync::watch;

use self::call::{BackendError, Client, ErrorKind, Limits};
use crate::plan::Plan;
use crate::shape::{Body, Json};
use crate::{
    observe::{BackendRecord, Recorder, RequestRecord},
    resilience::CallReport,
};

/// What one request brings that templates and forwarding may use.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    /// Route captures, percent-decoded.
    pub(crate) params: Vec<(String, String)>,
    /// The client's query parameters, decoded.
    pub(crate) query: Vec<(String, String)>,
    /// Headers to send on: the allow-listed ones and `x-forwarded-*`.
    pub(crate) headers: HeaderMap,
}

/// The fields of a backend's answer that its dependents read, by dot path.
type Exported = Vec<(String, Value)>;

/// A dependency's answer as its dependents see it: not yet, failed, or the
/// fields they need (copied out of the body before it is shaped).
type Answer = Option<Option<Arc<Exported>>>;

/// Runs endpoint `endpoint` of `plan` for one request.
pub(crate) async fn execute(
    plan: Arc<Plan>,
    endpoint: usize,
    inputs: Arc<Inputs>,
    client: Client,
    recorder: &Recorder,
) -> Response<Full<Bytes>> {
    let started = tokio::time::Instant::now();
    let ep = &plan.endpoints[endpoint];
    metrics::gauge!("fanout_in_flight_requests").increment(1.0);
    let _in_flight = InFlight;
    // The timeline feeds the dashboard only.
    let group = Group::<BackendError>::builder()
        .collect_all()
        .deadline(ep.deadline)
        .record_timeline(recorder.is_enabled())
        .build();
    let canceller = group.canceller();
    let forward_query: Arc<Vec<(String, String)>> = Arc::new(
        inputs
            .query
            .iter()
            .filter(|(k, _)| ep.forward_query.iter().any(|f| f == k))
            .cloned()
            .collect(),
    );
    let reports: Arc<[CallReport]> = ep.backends.iter().map(|_| CallReport::default()).collect();
    // A channel only for the backends that others wait for.
    let (senders, receivers): (Vec<_>, Vec<_>) = ep
        .backends
        .iter()
        .map(|backend| match backend.awaited {
            true => {
                let (tx, rx) = watch::channel::<Answer>(None);
                (Some(tx), Some(rx))
            }
            false => (None, None),
        })
        .unzip();

    let handles: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, answer)| {
            let backend = &ep.backends[i];
            let deps: Vec<(usize, watch::Receiver<Answer>)> = backend
                .after
                .iter()
                // Every backend named in an `after` is `awaited`, so has a channel.
                .filter_map(|&d| Some((d, receivers[d].clone()?)))
                .collect();
            let (plan, inputs, client) = (plan.clone(), inputs.clone(), client.clone());
            let reports = reports.clone();
            let (canceller, forward_query) = (canceller.clone(), forward_query.clone());
            group.spawn(backend.task_name.clone(), move |ctx| async move {
                let backend = &plan.endpoints[endpoint].backends[i];
                let call = Call {
                    plan: &plan,
                    endpoint,
                    index: i,
                    deadline: ctx.deadline(),
                    report: &reports[i],
                };
                let result = run_backend(call, deps, &inputs, &forward_query, &client).await;
                match result {
                    Ok(json) => {
                        if let Some(answer) = &answer {
                            let fields = backend
                                .exported
                                .iter()
                                .filter_map(|path| Some((path.clone(), json.lookup(path)?)))
                                .collect();
                            answer.send_replace(Some(Some(Arc::new(fields))));
                        }
                        if !backend.shape.reshapes() {
                            return Ok(Body::Json(json));
                        }
                        backend
                            .shape
                            .apply(json.to_value())
                            .map(Body::Value)
                            .map_err(|e| BackendError::new(ErrorKind::Decode, e.to_string()))
                    }
                    Err(err) => {
                        if let Some(answer) = &answer {
                            answer.send_replace(Some(None));
                        }
                        if backend.required {
                            canceller.cancel(format!("required backend `{}` failed", backend.name));
                        }
                        Err(err)
                    }
                }
            })
        })
        .collect();
    drop(receivers);

    let timeline = group.timeline();
    let outcomes = group.join(handles).await;
    let results: Vec<_> = outcomes
        .into_iter()
        .map(|outcome| outcome.map_err(|e| task_error(e, ep.deadline)))
        .collect();
    // Built only when a dashboard can read it: it copies names and messages.
    let calls = recorder
        .is_enabled()
        .then(|| backend_records(ep, &timeline, &results, &reports));
    let response = respond::respond(ep, &results);
    let took = started.elapsed();
    if let Some(calls) = calls {
        recorder.record(RequestRecord {
            id: 0,
            at_ms: 0,
            endpoint: ep.route.clone(),
            status: response.status().as_u16(),
            complete: response
                .headers()
                .get(COMPLETE)
                .is_some_and(|v| v == "true"),
            duration_ms: took.as_secs_f64() * 1e3,
            backends: calls,
        });
    }
    observe(ep, &results, response.status().as_u16(), started.elapsed());
    response
}

/// Each backend call on the request's time axis (from the group's timeline),
/// with its outcome.
fn backend_records(
    ep: &crate::plan::EndpointPlan,
    timeline: &fanout_group::Timeline,
    results: &[Result<Body, BackendError>],
    reports: &[CallReport],
) -> Vec<BackendRecord> {
    let origin = timeline.origin();
    let entries = timeline.entries();
    ep.backends
        .iter()
        .zip(results)
        .enumerate()
        .map(|(i, (backend, result))| {
            let entry = entries.iter().find(|e| e.index == i);
            let ms = |t: tokio::time::Instant| (t - origin).as_secs_f64() * 1e3;
            BackendRecord {
                name: backend.name.clone(),
                required: backend.required,
                start_ms: entry.map_or(0.0, |e| ms(e.started.unwrap_or(e.spawned))),
                end_ms: entry.map_or(0.0, |e| ms(e.finished)),
                outcome: result.as_ref().map_or_else(|e| e.kind.as_str(), |_| "ok"),
                message: result.as_ref().err().map(|e| e.message.clone()),
                attempts: reports[i].attempts(),
                hedged: reports[i].hedged(),
                cached: reports[i].cached(),
            }
        })
        .collect()
}

/// One log line per request, and its metrics.
fn observe(
    ep: &crate::plan::EndpointPlan,
    results: &[Result<Body, BackendError>],
    status: u16,
    took: std::time::Duration,
) {
    tracing::info!(
        endpoint = ep.route,
        status,
        ms = took.as_secs_f64() * 1e3,
        backends = %Outcomes(ep, results),
        "request"
    );
    ep.meters.record(ep, results, status, took);
}

/// `name=outcome` for each backend, written straight into the log line.
struct Outcomes<'a>(
    &'a crate::plan::EndpointPlan,
    &'a [Result<Body, BackendError>],
);

impl std::fmt::Display for Outcomes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (backend, result)) in self.0.backends.iter().zip(self.1).enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{}={}", backend.name, outcome(result))?;
        }
        Ok(())
    }
}

fn outcome(result: &Result<Body, BackendError>) -> &'static str {
    result.as_ref().map_or_else(|e| e.kind.as_str(), |_| "ok")
}

/// An endpoint's metric handles. Each is registered on first use, since the
/// recorder is installed after plans are compiled; from then on a request
/// increments them without building label sets or looking series up.
pub(crate) struct Meters {
    duration: OnceLock<metrics::Histogram>,
    answered_200: OnceLock<metrics::Counter>,
    /// Per backend, per outcome: `ok`, then each [`ErrorKind`].
    calls: Box<[[OnceLock<metrics::Counter>; ErrorKind::COUNT + 1]]>,
}

impl Meters {
    pub(crate) fn new(backends: usize) -> Meters {
        Meters {
            duration: OnceLock::new(),
            answered_200: OnceLock::new(),
            calls: (0..backends)
                .map(|_| std::array::from_fn(|_| OnceLock::new()))
                .collect(),
        }
    }

    fn record(
        &self,
        ep: &crate::plan::EndpointPlan,
        results: &[Result<Body, BackendError>],
        status: u16,
        took: std::time::Duration,
    ) {
        let route = || ep.route.clone();
        let requests = |status: u16| metrics::counter!("fanout_requests_total", "endpoint" => route(), "status" => status.to_string());
        if status == 200 {
            self.answered_200.get_or_init(|| requests(200)).increment(1);
        } else {
            requests(status).increment(1);
        }
        self.duration
            .get_or_init(
                || metrics::histogram!("fanout_request_duration_seconds", "endpoint" => route()),
            )
            .record(took.as_secs_f64());
        for ((backend, result), counters) in ep.backends.iter().zip(results).zip(&self.calls) {
            let slot = result.as_ref().map_or_else(|e| e.kind as usize + 1, |_| 0);
            counters[slot]
                .get_or_init(|| {
                    metrics::counter!(
                        "fanout_backend_calls_total",
                        "endpoint" => route(),
                        "backend" => backend.name.clone(),
                        "outcome" => outcome(result)
                    )
                })
                .increment(1);
        }
    }
}

impl std::fmt::Debug for Meters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meters").finish_non_exhaustive()
    }
}

/// Counts a request in flight until it ends, however it ends (the client may leave).
struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("fanout_in_flight_requests").decrement(1.0);
    }
}

/// Which backend call this is, and by when the request must be answered.
struct Call<'p> {
    plan: &'p Plan,
    endpoint: usize,
    index: usize,
    deadline: Option<tokio::time::Instant>,
    report: &'p CallReport,
}

/// Waits for the dependencies, then makes the call through its upstream's
/// policies, each attempt within its timeout.
async fn run_backend(
    Call {
        plan,
        endpoint,
        index,
        deadline,
        report,
    }: Call<'_>,
    deps: Vec<(usize, watch::Receiver<Answer>)>,
    inputs: &Inputs,
    forward_query: &[(String, String)],
    client: &Client,
) -> Result<Json, BackendError> {
    let ep = &plan.endpoints[endpoint];
    let backend = &ep.backends[index];
    let mut answers: Vec<(&str, Arc<Exported>)> = Vec::with_capacity(deps.len());
    for (dep, mut rx) in deps {
        let name = ep.backends[dep].name.as_str();
        let answer = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|a| a.clone().flatten());
        match answer {
            Some(value) => answers.push((name, value)),
            None => {
                return Err(BackendError::new(
                    ErrorKind::Dependency,
                    format!("`{name}` failed, so this call was not made"),
                ));
            }
        }
    }
    let values = RequestValues {
        inputs,
        forward_query,
        answers,
    };
    let url = url::render(&backend.origin, &backend.template, &values, forward_query)
        .map_err(|e| BackendError::new(ErrorKind::Dependency, e))?;
    let mut headers = inputs.headers.clone();
    if let Some(host) = &backend.host {
        headers.insert(http::header::HOST, host.clone());
    }
    headers.extend(backend.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    #[cfg(feature = "otel")]
    inject_trace_context(&mut headers);
    let limits = Limits {
        max_body: plan.max_backend_body,
        max_depth: plan.max_json_depth,
    };
    let attempt = |headers| {
        crate::resilience::with_timeout(
            backend.timeout,
            call::call(client, backend.method, &url, headers, limits),
        )
    };
    match &backend.policies {
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

struct RequestValues<'a> {
    inputs: &'a Inputs,
    /// Only the allow-listed query parameters: a template cannot reach others.
    forward_query: &'a [(String, String)],
    answers: Vec<(&'a str, Arc<Exported>)>,
}

impl url::Values for RequestValues<'_> {
    fn route(&self, name: &str) -> Option<&str> {
        self.inputs
            .params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.forward_query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn field(&self, backend: &str, path: &str) -> Option<Value> {
        let (_, fields) = self.answers.iter().find(|(name, _)| *name == backend)?;
        fields
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
    }
}

/// What a task that did not return its own result means for the response.
fn task_error(error: TaskError<BackendError>, deadline: std::time::Duration) -> BackendError {
    match error {
        TaskError::Failed(e) => e,
        TaskError::Cancelled(cause) | TaskError::NotStarted(cause) => match cause.root() {
            Cause::DeadlineExpired { .. } => BackendError::new(
                ErrorKind::Timeout,
                format!("the endpoint's deadline of {deadline:?} expired first"),
            ),
            Cause::Requested { reason } => {
                BackendError::new(ErrorKind::Cancelled, reason.to_string())
            }
            other => BackendError::new(ErrorKind::Cancelled, other.to_string()),
        },
        TaskError::TimedOut { after } => {
            BackendError::new(ErrorKind::Timeout, format!("no answer within {after:?}"))
        }
        TaskError::Panicked { message } => BackendError::new(ErrorKind::Internal, message),
        other => BackendError::new(ErrorKind::Internal, other.to_string()),
    }
}
