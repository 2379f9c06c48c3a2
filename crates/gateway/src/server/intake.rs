//! A client's request on its way in: routing, limits, what may be forwarded,
//! then the run, the response, and what is recorded of it.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use percent_encoding::percent_decode_str;
use serde_json::json;
use tracing::Instrument;

use super::Gateway;
use crate::{
    config::Method,
    respond::respond,
    run::{self, Inputs},
};

impl Gateway {
    /// Answers one request from `peer`.
    pub(crate) async fn handle<B>(
        &self,
        request: Request<B>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let plan = self.plan.load_full();
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
        let inputs = Inputs {
            params: params
                .into_iter()
                .map(|(k, v)| (k, percent_decode_str(v).decode_utf8_lossy().into_owned()))
                .collect(),
            query: request
                .uri()
                .query()
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
            headers: forwarded_headers(
                request.headers(),
                &endpoint.forward_headers,
                request.uri().authority(),
                peer,
            ),
        };
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
        let response = respond(endpoint, &outcome);
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
        if is_hop_by_hop(name) {
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

/// Headers that describe one connection, not the message: never forwarded.
pub(crate) fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// A JSON error answer from the gateway itself.
pub(crate) fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&json!({ "error": message })).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
