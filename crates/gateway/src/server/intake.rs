//! A client's request on its way in: routing, limits, what may be forwarded,
//! then the run, the response, and what is recorded of it.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header, request::Parts};
use http_body_util::BodyExt;
use hyper::body::Body;
use percent_encoding::percent_decode_str;
use serde_json::json;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Gateway, budget::Outgoing, connections::Peer};
use crate::{
    client::BoxError,
    config::Method,
    edge::{
        cors::{self, CorsRequest},
        ratelimit::{Decision, Limit},
    },
    headers::named_in_connection,
    plan::{Captures, EndpointPlan, Plan, ReadsBody},
    resilience::CallReport,
    respond::{json_response, respond},
    run::{self, ClientBody, Inputs, Outcome, Upload, Verdict},
    shape,
    template::{Found, Var, url},
};

impl Gateway {
    /// Answers one request from `peer`: a CORS preflight here, anything else
    /// by its endpoint, with the CORS headers its origin may have.
    pub(crate) async fn handle<B>(&self, request: Request<B>, peer: &Peer) -> Response<Outgoing>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let plan = self.plan.load_full();
        let Some(policy) = &plan.cors else {
            return self.answer(&plan, request, peer).await;
        };
        match cors::classify(request.method(), request.headers()) {
            CorsRequest::Plain => {
                let mut response = self.answer(&plan, request, peer).await;
                policy.decorate(None, response.headers_mut());
                response
            }
            CorsRequest::Actual { origin } => {
                let mut response = self.answer(&plan, request, peer).await;
                policy.decorate(Some(&origin), response.headers_mut());
                response
            }
            CorsRequest::Preflight {
                origin,
                method,
                requested,
                headers,
            } => {
                // Answered here: a preflight never reaches a backend.
                let served = method.is_some_and(|m| plan.route(m, request.uri().path()).is_some());
                let response =
                    match policy.preflight(&origin, method, &requested, headers.as_ref(), served) {
                        Ok(headers) => {
                            let mut response = Response::new(Bytes::new());
                            *response.status_mut() = StatusCode::NO_CONTENT;
                            *response.headers_mut() = headers;
                            response
                        }
                        Err(why) => {
                            tracing::debug!(
                                path = request.uri().path(),
                                why,
                                "CORS preflight refused"
                            );
                            let mut response = error(StatusCode::FORBIDDEN, why);
                            policy.vary_preflight(response.headers_mut());
                            response
                        }
                    };
                response.map(Outgoing::from)
            }
        }
    }

    /// Answers a request by its endpoint.
    async fn answer<B>(&self, plan: &Plan, request: Request<B>, peer: &Peer) -> Response<Outgoing>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let arrived = Instant::now();
        let (parts, body) = request.into_parts();
        let path = parts.uri.path();
        let Some(method) = Method::parse(parts.method.as_str()) else {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {} is not served", parts.method),
            )
            .map(Outgoing::from);
        };
        let Some((endpoint, params)) = plan.route(method, path) else {
            let answer = if plan.serves_path(path) {
                error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{path} is not served for {}", method.as_str()),
                )
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    format!("no endpoint for {} {path}", method.as_str()),
                )
            };
            return answer.map(Outgoing::from);
        };
        let endpoint = endpoint.clone();
        // Credentials before anything else about the request: a client
        // without them learns nothing of what the endpoint would accept.
        let claims = match self.authenticate(&endpoint, &parts.headers).await {
            Ok(claims) => claims,
            Err(refused) => return refused.map(Outgoing::from),
        };
        let mut inputs = match self.admit(&parts, &endpoint, params, peer, claims) {
            Err(refusal) => return refuse(&endpoint, refusal, arrived).map(Outgoing::from),
            Ok(inputs) => inputs,
        };
        inputs.arrived = Some(arrived);
        // Counted once the client is known (a `claim:` key needs its token),
        // before its body is read or any backend is called; refused, nothing
        // is.
        let limited = match &endpoint.rate_limit {
            None => None,
            Some(limit) => {
                let client_ip = || {
                    plan.trusted_proxies
                        .client_ip(peer.addr.ip(), &parts.headers)
                };
                let key = limit.rule.key(client_ip, &parts.headers, Some(&inputs));
                let decision = limit.check(&key, plan.store.as_deref()).await;
                if !decision.allowed {
                    self.recorder.record_refusal(&endpoint.route, 429);
                    return too_many(&endpoint, limit, &decision, arrived.elapsed())
                        .map(Outgoing::from);
                }
                Some((limit, decision))
            }
        };
        let mut response = if endpoint.proxy {
            // Boxed: a pass-through's future is the largest of this one's,
            // and would otherwise make every request's future (created,
            // and moved, for each request) that size.
            Box::pin(self.pass(&endpoint, inputs, body, method)).await
        } else {
            match read_body(&endpoint, &parts.headers, body, arrived).await {
                Err(refusal) => refuse(&endpoint, refusal, arrived),
                Ok(body) => {
                    inputs.body = body;
                    match check_client_values(&endpoint, &inputs) {
                        Err(message) => {
                            refuse(&endpoint, (StatusCode::BAD_REQUEST, message), arrived)
                        }
                        Ok(()) => self.run(&endpoint, inputs, method).await,
                    }
                }
            }
            .map(Outgoing::from)
        };
        if let Some((limit, decision)) = &limited {
            limit.headers(decision, response.headers_mut());
        }
        response
    }

    /// What the request may bring on, or why it is refused before anything
    /// else: a declared body over the endpoint's limit (413), a broken Host
    /// (400), a route or query value that is not UTF-8 (400).
    fn admit(
        &self,
        parts: &Parts,
        endpoint: &EndpointPlan,
        params: Captures<'_>,
        peer: &Peer,
        claims: Option<std::sync::Arc<crate::auth::Claims>>,
    ) -> Result<Inputs, Refusal> {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > endpoint.max_body) {
            return Err(too_large(endpoint.max_body));
        }
        if parts.version == http::Version::HTTP_11
            && parts.headers.get_all(header::HOST).iter().count() != 1
        {
            return Err((
                StatusCode::BAD_REQUEST,
                "an HTTP/1.1 request needs exactly one Host header (RFC 9112 §3.2)".into(),
            ));
        }
        inputs(parts, endpoint, params, peer, claims)
            .map_err(|message| (StatusCode::BAD_REQUEST, message))
    }

    /// Runs an endpoint's backends for one request, answers, and records
    /// what happened.
    async fn run(
        &self,
        endpoint: &std::sync::Arc<EndpointPlan>,
        inputs: Inputs,
        method: Method,
    ) -> Response<Bytes> {
        // A span per request; each backend call's span (opened by the task
        // group) is its child, and carries the trace to the backend.
        let span = request_span(endpoint, method);
        let _in_flight = crate::metrics::InFlight::start();
        let mut outcome = run::execute(
            endpoint,
            inputs,
            self.client.clone(),
            self.recorder.is_enabled(),
        )
        .instrument(span.clone())
        .await;
        let response = respond(endpoint, &mut outcome);
        self.record(endpoint, &outcome, response.status().as_u16(), &span);
        response
    }

    /// Passes one request of a pass-through endpoint to its upstream: the
    /// body streamed up, the answer streamed back.
    async fn pass<B>(
        &self,
        endpoint: &std::sync::Arc<EndpointPlan>,
        inputs: Inputs,
        body: B,
        method: Method,
    ) -> Response<Outgoing>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        if let Err(message) = check_client_values(endpoint, &inputs) {
            let arrived = inputs.arrived.unwrap_or_else(Instant::now);
            return refuse(endpoint, (StatusCode::BAD_REQUEST, message), arrived)
                .map(Outgoing::from);
        }
        let span = request_span(endpoint, method);
        let _in_flight = crate::metrics::InFlight::start();
        let upload = Upload::new(body, endpoint.max_body);
        let report = CallReport::default();
        let passed = run::pass(endpoint, &inputs, &upload, &self.client, &report)
            .instrument(span.clone())
            .await;
        let (result, response) = match passed {
            Ok(run::Passed(response)) => (
                Ok(shape::Body::Value(serde_json::Value::Null)),
                Ok(response),
            ),
            Err(e) => (Err(e), Err(())),
        };
        let mut outcome = Outcome {
            verdict: if result.is_ok() {
                Verdict::Complete
            } else {
                Verdict::RequiredFailed(0)
            },
            results: vec![result],
            timeline: None,
            reports: Box::new([report]),
            headers: vec![None],
            took: inputs.arrived.map(|a| a.elapsed()).unwrap_or_default(),
        };
        let answer = match response {
            Ok(response) => response.map(Outgoing::Streamed),
            Err(()) if upload.over_limit() => {
                let (status, message) = too_large(endpoint.max_body);
                error(status, message).map(Outgoing::from)
            }
            Err(()) => respond(endpoint, &mut outcome).map(Outgoing::from),
        };
        self.record(endpoint, &outcome, answer.status().as_u16(), &span);
        answer
    }

    /// What is recorded of a request: its span's status, the dashboard's
    /// waterfall, a log line and the metrics.
    fn record(
        &self,
        endpoint: &EndpointPlan,
        outcome: &Outcome,
        status: u16,
        span: &tracing::Span,
    ) {
        span.record("http.response.status_code", status);
        self.recorder.record_run(endpoint, outcome, status);
        tracing::info!(
            endpoint = endpoint.route,
            status,
            ms = outcome.took.as_secs_f64() * 1e3,
            backends = %Outcomes(endpoint, &outcome.results),
            "request"
        );
        endpoint.meters.record(
            status,
            outcome.took,
            outcome
                .results
                .iter()
                .map(|r| r.as_ref().err().map(|e| e.kind)),
        );
    }
}

/// The longest a request waits for its issuer's keys to be fetched (a token
/// naming a key the gateway has not seen, or a gateway that has not fetched
/// the keys yet), within the endpoint's deadline: then it is refused (401
/// for an unknown key, 503 when there are no keys at all).
const KEY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Gateway {
    /// The claims of the request's verified token (`None` when the endpoint
    /// needs none, or an API key was accepted), or the answer to a request
    /// its endpoint's authentication refused, counted and recorded like any
    /// other answer.
    async fn authenticate(
        &self,
        endpoint: &EndpointPlan,
        headers: &HeaderMap,
    ) -> Result<Option<std::sync::Arc<crate::auth::Claims>>, Response<Bytes>> {
        let Some(auth) = &endpoint.auth else {
            return Ok(None);
        };
        let started = Instant::now();
        let wait = endpoint.deadline.min(KEY_WAIT);
        let refusal = match auth.check(headers, wait).await {
            Ok(claims) => return Ok(claims),
            Err(refusal) => refusal,
        };
        let took = started.elapsed();
        let status = refusal.status;
        let mut response = error(status, refusal.message);
        for challenge in refusal.challenges {
            response
                .headers_mut()
                .append(header::WWW_AUTHENTICATE, challenge);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        endpoint
            .meters
            .record(status.as_u16(), took, std::iter::empty());
        metrics::counter!(
            crate::metrics::AUTH_REFUSED,
            "endpoint" => endpoint.route.clone(),
            "reason" => refusal.reason
        )
        .increment(1);
        self.recorder
            .record_refusal(&endpoint.route, status.as_u16());
        tracing::info!(
            endpoint = endpoint.route,
            status = status.as_u16(),
            reason = refusal.reason,
            "request refused"
        );
        Err(response)
    }
}

fn request_span(endpoint: &EndpointPlan, method: Method) -> tracing::Span {
    tracing::info_span!(
        "request",
        otel.name = %endpoint.route,
        http.request.method = method.as_str(),
        http.route = %endpoint.route,
        http.response.status_code = tracing::field::Empty,
    )
}

/// The client's body, when the endpoint uses it: read whole within the
/// endpoint's limit (413 past it, however it is sent) and its deadline (408:
/// the client did not send it in time), then parsed when a template reads
/// its JSON (400 when it is not JSON the gateway can read). Decided before
/// any call.
async fn read_body<B>(
    endpoint: &EndpointPlan,
    headers: &HeaderMap,
    body: B,
    arrived: Instant,
) -> Result<Option<ClientBody>, Refusal>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    if endpoint.reads_body == ReadsBody::No {
        return Ok(None);
    }
    let max = endpoint.max_body;
    // Into one buffer, sized from the declared length (already checked
    // against the limit): the body is held once, not once in frames and
    // again joined.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0)
        .min(max);
    let read = async {
        let mut body = body;
        let mut buffer = BytesMut::with_capacity(usize::try_from(declared).unwrap_or(0));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                let e: BoxError = e.into();
                (
                    StatusCode::BAD_REQUEST,
                    format!("the request body was cut off: {e}"),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if (buffer.len() + data.len()) as u64 > max {
                    return Err(too_large(max));
                }
                buffer.extend_from_slice(&data);
            }
        }
        Ok(buffer.freeze())
    };
    let bytes = tokio::time::timeout_at(arrived + endpoint.deadline, read)
        .await
        .map_err(|_| {
            (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within the endpoint's deadline of {:?}",
                    endpoint.deadline
                ),
            )
        })??;
    let content_encoding = headers.get(header::CONTENT_ENCODING).cloned();
    let json = if endpoint.reads_body == ReadsBody::Json {
        let first = endpoint
            .client_values
            .iter()
            .find(|v| matches!(v.var, Var::Body(_)))
            .map(|v| v.var.to_string())
            .unwrap_or_default();
        let bad = |why: String| {
            (
                StatusCode::BAD_REQUEST,
                format!("the request body is {why}, and {first} needs its JSON"),
            )
        };
        if let Some(encoding) = content_encoding.as_ref().filter(|e| *e != "identity") {
            return Err(bad(format!(
                "encoded ({})",
                String::from_utf8_lossy(encoding.as_bytes())
            )));
        }
        if shape::nesting_exceeds(&bytes, endpoint.limits.max_depth) {
            return Err(bad(format!(
                "JSON nested deeper than {} levels",
                endpoint.limits.max_depth
            )));
        }
        match serde_json::from_slice(&bytes) {
            Ok(json) => Some(json),
            Err(e) => return Err(bad(format!("not JSON ({e})"))),
        }
    } else {
        None
    };
    Ok(Some(ClientBody {
        bytes,
        content_type: headers.get(header::CONTENT_TYPE).cloned(),
        content_encoding,
        json,
    }))
}

/// Every value of the client's request that the endpoint's templates use is
/// there and fits where it goes, or the request is a 400 naming it, before
/// any call.
fn check_client_values(endpoint: &EndpointPlan, inputs: &Inputs) -> Result<(), String> {
    for needed in &endpoint.client_values {
        let var = &needed.var;
        let found: Option<Found<'_>> = inputs.get(var);
        if found.is_none() {
            return Err(match var {
                Var::Body(path) => format!("the request body has no `{path}` ({var})"),
                Var::Jwt(_) => format!("no value for {var}: the token has no such claim"),
                _ => format!("no value for {var}: the request lacks it"),
            });
        }
        if let Some(place) = needed.in_url {
            url::fill(var, found, place)?;
        }
    }
    Ok(())
}

/// A `claim:NAME` rate limit keys on the request's verified token.
impl crate::edge::ratelimit::Claims for Inputs {
    fn claim(&self, path: &crate::shape::FieldPath) -> Option<std::borrow::Cow<'_, str>> {
        crate::auth::claim(self.claims.as_deref()?, path).and_then(crate::auth::text)
    }
}

/// The `429` for a request over its endpoint's rate limit.
fn too_many(
    endpoint: &EndpointPlan,
    limit: &Limit,
    decision: &Decision,
    took: std::time::Duration,
) -> Response<Bytes> {
    let gcra = limit.gcra;
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "too many requests: {} at once and {} per {} per client ({}) on this endpoint; retry in {} ms",
            gcra.burst,
            limit.config.rate.count,
            crate::config::Duration(limit.config.rate.per),
            limit.config.key,
            decision.retry_after.as_millis()
        ),
    );
    limit.headers(decision, response.headers_mut());
    tracing::debug!(
        endpoint = endpoint.route,
        key = limit.config.key,
        "rate limited"
    );
    endpoint.meters.record(429, took, std::iter::empty());
    response
}

/// What the request brings for the endpoint's templates and forwarding, or
/// why it is a 400: a route capture or query value that is not UTF-8.
fn inputs(
    parts: &Parts,
    endpoint: &EndpointPlan,
    params: Captures<'_>,
    peer: &Peer,
    claims: Option<std::sync::Arc<crate::auth::Claims>>,
) -> Result<Inputs, String> {
    let params = params
        .into_iter()
        .map(|(name, raw)| match percent_decode_str(raw).decode_utf8() {
            Ok(value) => Ok((name, value.into_owned())),
            Err(_) => Err(format!("{{{name}}} is not valid UTF-8")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut query = Vec::new();
    for pair in parts.uri.query().unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            percent_decode_str(&s).decode_utf8().map(|v| v.into_owned())
        };
        // A name that is not UTF-8 cannot be one the endpoint forwards.
        let Ok(key) = decode(key) else { continue };
        if !endpoint.forward_query.contains(&key) {
            continue;
        }
        let value =
            decode(value).map_err(|_| format!("query parameter `{key}` is not valid UTF-8"))?;
        query.push((key, value));
    }
    let mut headers = forwarded_headers(
        &parts.headers,
        &endpoint.forward_headers,
        parts.uri.authority(),
        &peer.ip,
    );
    if endpoint.proxy {
        // What a pass-through needs to describe the body it streams and the
        // answer the client can take.
        for name in PASSED_REPRESENTATION {
            if named_in_connection(&parts.headers, &name) {
                continue;
            }
            for value in parts.headers.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    if let Some(auth) = &endpoint.auth {
        auth.set_claim_headers(claims.as_deref(), &mut headers);
    }
    Ok(Inputs {
        params,
        query,
        headers,
        claims,
        body: None,
        arrived: None,
    })
}

/// The client's headers a pass-through sends on besides `forward_headers`.
const PASSED_REPRESENTATION: [header::HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::ACCEPT,
    header::ACCEPT_ENCODING,
];

/// Why a request is answered by the gateway itself, before any call.
type Refusal = (StatusCode, String);

/// The answer to a request its endpoint refused before any call (a body
/// over the limit, a broken head, a value its templates need that is
/// missing), counted and logged like every answer.
fn refuse(
    endpoint: &EndpointPlan,
    (status, message): Refusal,
    arrived: Instant,
) -> Response<Bytes> {
    endpoint
        .meters
        .record(status.as_u16(), arrived.elapsed(), std::iter::empty());
    tracing::info!(
        endpoint = endpoint.route,
        status = status.as_u16(),
        reason = message,
        "request refused"
    );
    error(status, message)
}

fn too_large(max: u64) -> Refusal {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than the {max} bytes allowed"),
    )
}

/// `name=outcome` for each backend, written straight into the log line.
struct Outcomes<'a>(&'a crate::plan::EndpointPlan, &'a [run::BackendResult]);

impl std::fmt::Display for Outcomes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Piece by piece rather than `write!`: this runs for every request
        // logged, and the formatting machinery cost more than the pieces.
        for (i, (backend, result)) in self.0.backends.iter().zip(self.1).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(&backend.name)?;
            f.write_str("=")?;
            f.write_str(result.as_ref().map_or_else(|e| e.kind.as_str(), |_| "ok"))?;
        }
        Ok(())
    }
}

/// The headers a backend gets from the client: the allow-listed ones (never a
/// hop-by-hop one), `x-forwarded-for` with the client's address appended, and
/// `x-forwarded-host`.
fn forwarded_headers(
    incoming: &HeaderMap,
    allowed: &[http::HeaderName],
    authority: Option<&http::uri::Authority>,
    peer_ip: &HeaderValue,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in allowed {
        // The compiler refuses hop-by-hop names; the client may make any
        // other one hop-by-hop by naming it in `Connection`.
        if named_in_connection(incoming, name) {
            continue;
        }
        for value in incoming.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let xff = match incoming.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(previous) => {
            let peer_ip = String::from_utf8_lossy(peer_ip.as_bytes());
            HeaderValue::from_maybe_shared(Bytes::from(format!("{previous}, {peer_ip}"))).ok()
        }
        None => Some(peer_ip.clone()),
    };
    if let Some(value) = xff {
        headers.insert(X_FORWARDED_FOR, value);
    }
    let host = incoming
        .get(header::HOST)
        .cloned()
        .or_else(|| authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers
}

const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: http::HeaderName = http::HeaderName::from_static("x-forwarded-host");

/// A JSON error answer from the gateway itself.
pub(crate) fn error(status: StatusCode, message: String) -> Response<Bytes> {
    let body = serde_json::to_vec(&json!({ "error": message })).unwrap_or_default();
    json_response(status, Bytes::from(body))
}
