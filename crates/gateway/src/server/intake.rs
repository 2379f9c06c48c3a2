//! A client's request on its way in: routing, limits, what may be forwarded,
//! then the run, the response, and what is recorded of it.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use percent_encoding::percent_decode_str;
use serde_json::json;
use tracing::Instrument;

use super::Gateway;
use crate::{
    config::Method,
    edge::{
        cors::{self, CorsRequest},
        ratelimit::{Decision, Limit},
    },
    headers::named_in_connection,
    plan::{Captures, EndpointPlan, Plan, template::Var},
    respond::{json_response, respond},
    run::{self, Inputs},
};

impl Gateway {
    /// Answers one request from `peer`: a CORS preflight here, anything else
    /// by its endpoint, with the CORS headers its origin may have.
    pub(crate) async fn handle<B>(&self, request: Request<B>, peer: SocketAddr) -> Response<Bytes> {
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
                match policy.preflight(&origin, method, &requested, headers.as_ref(), served) {
                    Ok(headers) => {
                        let mut response = Response::new(Bytes::new());
                        *response.status_mut() = StatusCode::NO_CONTENT;
                        *response.headers_mut() = headers;
                        response
                    }
                    Err(why) => {
                        tracing::debug!(path = request.uri().path(), why, "CORS preflight refused");
                        let mut response = error(StatusCode::FORBIDDEN, why);
                        policy.vary_preflight(response.headers_mut());
                        response
                    }
                }
            }
        }
    }

    /// Answers a request by its endpoint.
    async fn answer<B>(
        &self,
        plan: &Plan,
        request: Request<B>,
        peer: SocketAddr,
    ) -> Response<Bytes> {
        let path = request.uri().path();
        let Some(method) = Method::parse(request.method().as_str()) else {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {} is not served", request.method()),
            );
        };
        let Some((endpoint, params)) = plan.route(method, path) else {
            if plan.serves_path(path) {
                return error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{path} is not served for {}", method.as_str()),
                );
            }
            return error(
                StatusCode::NOT_FOUND,
                format!("no endpoint for {} {path}", method.as_str()),
            );
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > plan.server.max_request_body) {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than the {} bytes allowed",
                    plan.server.max_request_body
                ),
            );
        }
        if request.version() == http::Version::HTTP_11
            && request.headers().get_all(header::HOST).iter().count() != 1
        {
            return error(
                StatusCode::BAD_REQUEST,
                "an HTTP/1.1 request needs exactly one Host header (RFC 9112 §3.2)".into(),
            );
        }
        let inputs = match inputs(&request, endpoint, params, peer) {
            Ok(inputs) => inputs,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        };
        // Counted before any backend is called; refused, nothing is.
        let limited = match &endpoint.rate_limit {
            None => None,
            Some(limit) => {
                let client_ip = || plan.trusted_proxies.client_ip(peer.ip(), request.headers());
                // No verified claims yet: authentication will hand them here.
                let key = limit.rule.key(client_ip, request.headers(), None);
                Some((limit, limit.check(&key, plan.store.as_deref()).await))
            }
        };
        if let Some((limit, decision)) = &limited {
            if !decision.allowed {
                self.recorder.record_refusal(&endpoint.route, 429);
                return too_many(endpoint, limit, decision);
            }
        }
        // A span per request; each backend call's span (opened by the task
        // group) is its child, and carries the trace to the backend.
        let span = tracing::info_span!(
            "request",
            otel.name = %endpoint.route,
            http.request.method = method.as_str(),
            http.route = %endpoint.route,
            http.response.status_code = tracing::field::Empty,
        );
        let _in_flight = crate::metrics::InFlight::start();
        let outcome = run::execute(
            endpoint,
            inputs,
            self.client.clone(),
            self.recorder.is_enabled(),
        )
        .instrument(span.clone())
        .await;
        let mut response = respond(endpoint, &outcome);
        if let Some((limit, decision)) = &limited {
            limit.headers(decision, response.headers_mut());
        }
        let status = response.status().as_u16();
        span.record("http.response.status_code", status);
        self.recorder.record_run(endpoint, &outcome, status);
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
        response
    }
}

/// The `429` for a request over its endpoint's rate limit.
fn too_many(endpoint: &EndpointPlan, limit: &Limit, decision: &Decision) -> Response<Bytes> {
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
    endpoint
        .meters
        .record(429, std::time::Duration::ZERO, std::iter::empty());
    response
}

/// What the request brings for the endpoint's templates and forwarding, or
/// why it is a 400: a value its templates need is missing, not UTF-8, or
/// empty where it would fill a path segment. Decided before any call.
fn inputs<B>(
    request: &Request<B>,
    endpoint: &EndpointPlan,
    params: Captures<'_>,
    peer: SocketAddr,
) -> Result<Inputs, String> {
    let params = params
        .into_iter()
        .map(|(name, raw)| match percent_decode_str(raw).decode_utf8() {
            Ok(value) => Ok((name, value.into_owned())),
            Err(_) => Err(format!("{{{name}}} is not valid UTF-8")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut query = Vec::new();
    for pair in request.uri().query().unwrap_or("").split('&') {
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
    for needed in &endpoint.client_values {
        let value = match &needed.var {
            Var::Route(name) => params.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            Var::Query(name) => query.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            Var::Field { .. } => continue,
        };
        match value {
            None => return Err(format!("no value for {}: the request lacks it", needed.var)),
            Some(v) if v.is_empty() && needed.in_path => {
                return Err(format!(
                    "{} is empty, and would leave an empty path segment",
                    needed.var
                ));
            }
            Some(_) => {}
        }
    }
    Ok(Inputs {
        params,
        query,
        headers: forwarded_headers(
            request.headers(),
            &endpoint.forward_headers,
            request.uri().authority(),
            peer,
        ),
    })
}

/// `name=outcome` for each backend, written straight into the log line.
struct Outcomes<'a>(&'a crate::plan::EndpointPlan, &'a [run::BackendResult]);

impl std::fmt::Display for Outcomes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (backend, result)) in self.0.backends.iter().zip(self.1).enumerate() {
            let sep = if i == 0 { "" } else { " " };
            let outcome = result.as_ref().map_or_else(|e| e.kind.as_str(), |_| "ok");
            write!(f, "{sep}{}={outcome}", backend.name)?;
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
    peer: SocketAddr,
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
    let peer_ip = peer.ip().to_string();
    let xff = match incoming.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {peer_ip}"),
        None => peer_ip,
    };
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(xff)) {
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
