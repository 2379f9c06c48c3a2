//! Turning a request's [`Outcome`] into its HTTP response (product.md §2.2):
//! the status from the verdict, the merged body in declaration order, and
//! `x-fanout-complete`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::{
    error::{BackendError, ErrorKind},
    plan::EndpointPlan,
    run::{Outcome, Verdict},
    shape::{ERRORS_KEY, Merged},
};

/// `x-fanout-complete`: whether every backend succeeded.
pub(crate) const COMPLETE: &str = "x-fanout-complete";

/// The response for `outcome`, a run of `endpoint`.
pub(crate) fn respond(endpoint: &EndpointPlan, outcome: &Outcome) -> Response<Bytes> {
    let results = &outcome.results;
    let exposed = endpoint
        .expose_errors
        .then(|| errors(endpoint, outcome))
        .flatten();
    match outcome.verdict {
        Verdict::RequiredFailed(index) => {
            let backend = &endpoint.backends[index];
            let Some(Err(error)) = results.get(index) else {
                return build(StatusCode::BAD_GATEWAY, Bytes::new(), false);
            };
            if backend.pass_status && error.kind == ErrorKind::Status {
                if let Some(status) = error.status.and_then(|s| StatusCode::from_u16(s).ok()) {
                    if status.is_client_error() {
                        let body = error.body.clone().unwrap_or_default();
                        return build(status, body, false);
                    }
                }
            }
            let status = match error.kind {
                ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
                // Shed by the gateway's own protection: come back later.
                ErrorKind::Overloaded | ErrorKind::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            let mut body =
                json!({ "error": format!("required backend `{}` failed", backend.name) });
            if let Some(exposed) = exposed {
                body[ERRORS_KEY] = exposed;
            }
            build(status, to_bytes(&body), false)
        }
        Verdict::AllFailed => {
            let timed_out = results
                .iter()
                .all(|r| r.as_ref().is_err_and(|e| e.kind == ErrorKind::Timeout));
            let status = if timed_out {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            let mut body = json!({ "error": "every backend failed" });
            if let Some(exposed) = exposed {
                body[ERRORS_KEY] = exposed;
            }
            build(status, to_bytes(&body), false)
        }
        Verdict::Complete | Verdict::Partial => {
            let mut merged = Merged::default();
            for (backend, result) in endpoint.backends.iter().zip(results) {
                if let Ok(body) = result {
                    merged.add(body, backend.shape.into.as_ref());
                }
            }
            if let Some(exposed) = &exposed {
                merged.insert_errors(exposed);
            }
            build(
                StatusCode::OK,
                Bytes::from(merged.to_vec()),
                outcome.verdict.is_complete(),
            )
        }
    }
}

/// `{backend: {kind, status, message}}` for every failed backend, or `None`.
fn errors(endpoint: &EndpointPlan, outcome: &Outcome) -> Option<Value> {
    let failed: Vec<(&str, &BackendError)> = endpoint
        .backends
        .iter()
        .zip(&outcome.results)
        .filter_map(|(b, r)| r.as_ref().err().map(|e| (b.name.as_str(), e)))
        .collect();
    if failed.is_empty() {
        return None;
    }
    let map: Map<String, Value> = failed
        .into_iter()
        .map(|(name, e)| {
            let mut detail = json!({ "kind": e.kind.as_str(), "message": e.message });
            if let Some(status) = e.status {
                detail["status"] = json!(status);
            }
            (name.to_owned(), detail)
        })
        .collect();
    Some(Value::Object(map))
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn build(status: StatusCode, body: Bytes, complete: bool) -> Response<Bytes> {
    let mut response = json_response(status, body);
    response.headers_mut().insert(
        COMPLETE,
        HeaderValue::from_static(if complete { "true" } else { "false" }),
    );
    response
}

/// A JSON answer: the status, `content-type: application/json` and the
/// body. Every JSON answer of the gateway, aggregated or its own (errors,
/// the admin API), is made here.
pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
