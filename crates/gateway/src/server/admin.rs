//! The admin listener: the dashboard (`/`), its JSON API (`/api/requests`,
//! `/api/stats`), `/healthz`, `/readyz`, `/config` and `/metrics`.
//!
//! It binds where `server.admin` says (loopback in every example; nothing
//! binds it elsewhere unless told to). Metrics are rendered by the
//! `metrics-exporter-prometheus` recorder the binary installs; per-upstream
//! state (breakers, hedges) is read from the live plan at each scrape.

use std::{convert::Infallible, future::Future, io};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::{ConnectionLimit, Connections, Gateway, Peer, error};
use crate::{
    dashboard::KEPT,
    metrics::{
        BREAKER_STATE, HEDGES, STORE_FALLBACKS, STORE_UP, TARGET_CALLS, TARGET_FAILURES,
        TARGET_IN_FLIGHT, TARGET_LATENCY, TARGET_STATE,
    },
    resilience::BreakerState,
    respond::json_response,
    upstream::TargetState,
};

/// The dashboard: one page, no external resources (it works offline).
const DASHBOARD: &str = include_str!("dashboard.html");

/// Serves the admin API for `gateway` until `shutdown` completes.
pub async fn serve_admin(
    listener: TcpListener,
    gateway: Gateway,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    gateway.recorder.enable();
    let connections = Connections {
        grace: std::time::Duration::from_secs(1),
        max_connections: ConnectionLimit::new(256),
        ..Connections::default()
    };
    connections
        .serve(
            listener,
            move |_peer: Peer| {
                let (gateway, metrics) = (gateway.clone(), metrics.clone());
                hyper::service::service_fn(move |request| {
                    let response = answer(&request, &gateway, metrics.as_ref());
                    async move { Ok::<_, Infallible>(response) }
                })
            },
            shutdown,
        )
        .await
}

fn answer(
    request: &Request<Incoming>,
    gateway: &Gateway,
    metrics: Option<&PrometheusHandle>,
) -> Response<Full<Bytes>> {
    if let Some(host) = addressed_by_name(request) {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "the admin API answers requests addressed to an IP address or localhost, not `{host}` (a guard against DNS rebinding)"
            ),
        )
        .map(Full::new);
    }
    match request.uri().path() {
        "/" => {
            let mut response = Response::new(Full::new(Bytes::from_static(DASHBOARD.as_bytes())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        "/api/requests" => {
            let query = request.uri().query().unwrap_or("");
            let param = |name: &str| {
                form_urlencoded::parse(query.as_bytes())
                    .find(|(k, _)| k == name)
                    .and_then(|(_, v)| v.parse::<u64>().ok())
            };
            let since = param("since").unwrap_or(0);
            let limit = param("limit").unwrap_or(50).min(KEPT as u64) as usize;
            json(
                StatusCode::OK,
                &json!({ "requests": gateway.recorder.requests(since, limit) }),
            )
        }
        "/api/stats" => {
            let mut stats = gateway.recorder.stats();
            stats["upstreams"] = upstream_stats(gateway);
            stats["store"] = gateway
                .plan()
                .store
                .as_ref()
                .map_or(Value::Null, |store| json!(store.state()));
            json(StatusCode::OK, &stats)
        }
        "/healthz" => json(StatusCode::OK, &json!({ "status": "ok" })),
        "/readyz" if gateway.is_ready() => json(StatusCode::OK, &json!({ "status": "ready" })),
        "/readyz" => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "starting or stopping" }),
        ),
        "/config" => json(StatusCode::OK, &redacted_config(gateway)),
        "/metrics" => match metrics {
            Some(handle) => {
                record_upstream_state(gateway);
                let mut response = Response::new(Full::new(Bytes::from(handle.render())));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            None => error(
                StatusCode::NOT_FOUND,
                "metrics are not recorded in this process".into(),
            )
            .map(Full::new),
        },
        other => error(
            StatusCode::NOT_FOUND,
            format!(
                "no admin route {other}: try /, /api/requests, /api/stats, /healthz, /readyz, /config or /metrics"
            ),
        )
        .map(Full::new),
    }
}

/// The host a request is addressed to, if it is a name other than
/// `localhost`. A page on another site can point its own name at 127.0.0.1
/// (DNS rebinding) and read the admin API from a browser; its requests then
/// carry that name in `Host`, while probes, scrapers and people use an IP
/// address or `localhost`.
fn addressed_by_name(request: &Request<Incoming>) -> Option<String> {
    let authority = match request.headers().get(header::HOST) {
        Some(host) => host.to_str().unwrap_or("?").to_owned(),
        None => request.uri().authority()?.as_str().to_owned(),
    };
    let host = match authority.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    let allowed =
        host.parse::<std::net::IpAddr>().is_ok() || host.eq_ignore_ascii_case("localhost");
    (!allowed).then_some(authority)
}

/// The effective configuration, with every upstream header value (API keys,
/// tokens: often from `${env.…}`) and the store's credentials replaced.
fn redacted_config(gateway: &Gateway) -> Value {
    let mut config = serde_json::to_value(gateway.plan().config()).unwrap_or_default();
    if let Some(url) = config.pointer_mut("/store/redis") {
        *url = Value::from(crate::store::redacted(url.as_str().unwrap_or_default()));
    }
    if let Some(upstreams) = config.get_mut("upstreams").and_then(Value::as_object_mut) {
        for upstream in upstreams.values_mut() {
            if let Some(headers) = upstream.get_mut("headers").and_then(Value::as_object_mut) {
                for value in headers.values_mut() {
                    *value = Value::from("<redacted>");
                }
            }
        }
    }
    // Hashes, but of keys that may be short enough to guess from them.
    if let Some(schemes) = config.get_mut("auth").and_then(Value::as_object_mut) {
        for scheme in schemes.values_mut() {
            if let Some(keys) = scheme
                .pointer_mut("/api_key/keys")
                .and_then(Value::as_array_mut)
            {
                for key in keys {
                    *key = Value::from("<redacted>");
                }
            }
        }
    }
    config
}

/// Each upstream's targets: state, calls (and their share), failures, calls
/// in flight, latency estimate.
fn upstream_stats(gateway: &Gateway) -> Value {
    let now = tokio::time::Instant::now();
    let upstreams: Vec<Value> = gateway
        .plan()
        .upstreams
        .iter()
        .map(|upstream| {
            let targets = upstream.targets.all();
            let total: u64 = targets.iter().map(|t| t.counts().1).sum();
            let targets: Vec<Value> = targets
                .iter()
                .map(|t| {
                    let (in_flight, calls, failed) = t.counts();
                    json!({
                        "target": t.authority,
                        "state": t.state(now).as_str(),
                        "calls": calls,
                        "share": calls as f64 / total.max(1) as f64,
                        "failures": failed,
                        "in_flight": in_flight,
                        "latency_ms": t.rtt(now).as_secs_f64() * 1e3,
                    })
                })
                .collect();
            json!({ "name": upstream.name, "targets": targets })
        })
        .collect();
    Value::Array(upstreams)
}

/// Per-upstream state that lives in the plan rather than in counters.
fn record_upstream_state(gateway: &Gateway) {
    if let Some(store) = &gateway.plan().store {
        let state = store.state();
        metrics::gauge!(STORE_UP).set(if state.up { 1.0 } else { 0.0 });
        metrics::counter!(STORE_FALLBACKS, "use" => "rate_limit")
            .absolute(state.rate_limit_fallbacks);
        metrics::counter!(STORE_FALLBACKS, "use" => "cache").absolute(state.cache_fallbacks);
    }
    let now = tokio::time::Instant::now();
    for upstream in &gateway.plan().upstreams {
        for target in upstream.targets.all().iter() {
            let labels = [
                ("upstream", upstream.name.clone()),
                ("target", target.authority.clone()),
            ];
            let (in_flight, calls, failed) = target.counts();
            let state = match target.state(now) {
                TargetState::Up => 0.0,
                TargetState::Ejected => 1.0,
                TargetState::Unhealthy => 2.0,
            };
            metrics::gauge!(TARGET_STATE, &labels).set(state);
            metrics::gauge!(TARGET_IN_FLIGHT, &labels).set(f64::from(in_flight));
            metrics::counter!(TARGET_CALLS, &labels).absolute(calls);
            metrics::counter!(TARGET_FAILURES, &labels).absolute(failed);
            metrics::gauge!(TARGET_LATENCY, &labels).set(target.rtt(now).as_secs_f64());
        }
        let (name, Some(policies)) = (&upstream.name, &upstream.policies) else {
            continue;
        };
        if let Some(state) = policies.breaker_state() {
            let value = match state {
                BreakerState::Closed => 0.0,
                BreakerState::HalfOpen => 1.0,
                BreakerState::Open => 2.0,
            };
            metrics::gauge!(BREAKER_STATE, "upstream" => name.clone()).set(value);
        }
        if let Some((extra, _)) = policies.hedge_counts() {
            metrics::counter!(HEDGES, "upstream" => name.clone()).absolute(extra);
        }
    }
}

fn json(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    json_response(status, Bytes::from(body.to_string())).map(Full::new)
}
