//! Turning the backends' outcomes into one HTTP response (product.md §2.2).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Map, Value, json};

use super::call::{BackendError, ErrorKind};
use crate::{
    plan::EndpointPlan,
    shape::{Body, Merged},
};

/// `x-fanout-complete`: whether every backend succeeded.
pub const COMPLETE: &str = "x-fanout-complete";

pub(crate) fn respond(
    ep: &EndpointPlan,
    results: &[Result<Body, BackendError>],
) -> Response<Full<Bytes>> {
    let complete = results.iter().all(Result::is_ok);
    let errors: Vec<(&str, &BackendError)> = ep
        .backends
        .iter()
        .zip(results)
        .filter_map(|(b, r)| r.as_ref().err().map(|e| (b.name.as_str(), e)))
        .collect();
    let exposed = (ep.expose_errors && !errors.is_empty()).then(|| {
        let map: Map<String, Value> = errors
            .iter()
            .map(|(name, e)| {
                let mut detail = json!({ "kind": e.kind.as_str(), "message": e.message });
                if let Some(status) = e.status {
                    detail["status"] = json!(status);
                }
                ((*name).to_owned(), detail)
            })
            .collect();
        Value::Object(map)
    });

    // The failure that decides the status: a required backend's own failure,
    // not the `cancelled` of the others it brought down.
    let decisive = ep
        .backends
        .iter()
        .zip(results)
        .filter(|(b, _)| b.required)
        .filter_map(|(b, r)| r.as_ref().err().map(|e| (b, e)))
        .min_by_key(|(_, e)| e.kind == ErrorKind::Cancelled);
    if let Some((backend, error)) = decisive {
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
        let mut body = json!({ "error": format!("required backend `{}` failed", backend.name) });
        if let Some(exposed) = exposed {
            body["_errors"] = exposed;
        }
        return build(status, to_bytes(&body), false);
    }

    if !results.is_empty() && results.iter().all(Result::is_err) {
        let timed_out = errors.iter().all(|(_, e)| e.kind == ErrorKind::Timeout);
        let status = if timed_out {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::BAD_GATEWAY
        };
        let mut body = json!({ "error": "every backend failed" });
        if let Some(exposed) = exposed {
            body["_errors"] = exposed;
        }
        return build(status, to_bytes(&body), false);
    }

    let mut merged = Merged::default();
    for (backend, result) in ep.backends.iter().zip(results) {
        if let Ok(body) = result {
            merged.add(body, backend.shape.into.as_ref());
        }
    }
    if let Some(exposed) = &exposed {
        merged.insert_value("_errors", exposed);
    }
    build(StatusCode::OK, Bytes::from(merged.to_vec()), complete)
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn build(status: StatusCode, body: Bytes, complete: bool) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        COMPLETE,
        HeaderValue::from_static(if complete { "true" } else { "false" }),
    );
    response
}
