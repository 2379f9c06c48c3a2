//! Turning a request's [`Outcome`] into its HTTP response (product.md §2.2,
//! §2.7): the status from the verdict, the merged body in declaration order
//! (arrays appended, fallbacks for failed optional backends, the value at
//! `response.root`), the backends' `return_headers`, and
//! `x-fanout-complete`.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::{
    error::{BackendError, ErrorKind},
    plan::EndpointPlan,
    run::{Outcome, Verdict},
    shape::{ERRORS_KEY, Merged},
};

/// `x-fanout-complete`: whether every backend succeeded.
///
/// A `HeaderName` constant: a name given as text is copied into a new
/// allocation each time a map takes it.
pub(crate) const COMPLETE: HeaderName = HeaderName::from_static("x-fanout-complete");

/// The response for `outcome`, a run of `endpoint`. A backend whose answer
/// fails to merge (`append` onto something that is not an array) fails
/// here: its result and the verdict are updated, so that logs and metrics
/// tell the same story as the response.
pub(crate) fn respond(endpoint: &EndpointPlan, outcome: &mut Outcome) -> Response<Bytes> {
    if matches!(outcome.verdict, Verdict::Complete | Verdict::Partial) {
        let (merged, failed) = merge(endpoint, outcome);
        for (index, error) in failed {
            outcome.failed_in_merge(endpoint, index, error);
        }
        if matches!(outcome.verdict, Verdict::Complete | Verdict::Partial) {
            let complete = outcome.verdict.is_complete();
            let Some(body) = merged else {
                let root = endpoint.root.as_ref().map(ToString::to_string);
                let message = format!(
                    "the merged answer has no `{}` (response.root)",
                    root.unwrap_or_default()
                );
                return failure(endpoint, outcome, StatusCode::BAD_GATEWAY, message);
            };
            let mut response = build(StatusCode::OK, body, complete);
            return_headers(endpoint, outcome, response.headers_mut());
            return response;
        }
    }
    let results = &outcome.results;
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
            let message = format!("required backend `{}` failed", backend.name);
            failure(endpoint, outcome, status, message)
        }
        _ => {
            let timed_out = results
                .iter()
                .all(|r| r.as_ref().is_err_and(|e| e.kind == ErrorKind::Timeout));
            let status = if timed_out {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            failure(endpoint, outcome, status, "every backend failed".into())
        }
    }
}

/// Merges the answers in declaration order: `append`ed arrays concatenate,
/// a failed optional backend's `fallback` stands in for its answer. Returns
/// the body (`None`: `response.root` is not in it) and the backends whose
/// answers could not be appended.
fn merge(
    endpoint: &EndpointPlan,
    outcome: &Outcome,
) -> (Option<Bytes>, Vec<(usize, BackendError)>) {
    let mut merged =
        Merged::with_room_for(endpoint.backends.iter().zip(&outcome.results).filter_map(
            |(backend, result)| {
                let body = result.as_ref().ok().or(backend.fallback.as_ref())?;
                Some((body, backend.shape.into.as_ref()))
            },
        ));
    let mut failed = Vec::new();
    for (index, (backend, result)) in endpoint.backends.iter().zip(&outcome.results).enumerate() {
        let into = backend.shape.into.as_ref();
        let answer = result.as_ref().ok();
        let mut add = |body| match (backend.append, into) {
            (true, Some(into)) => merged.append(body, into),
            _ => {
                merged.add(body, into);
                Ok(())
            }
        };
        if let Some(body) = answer {
            match add(body) {
                Ok(()) => continue,
                Err(e) => failed.push((index, BackendError::new(ErrorKind::Decode, e.to_string()))),
            }
        }
        if let Some(fallback) = &backend.fallback {
            // A fallback that cannot be appended is left out: the answer is
            // partial already.
            let _ = add(fallback);
        }
    }
    let exposed = endpoint
        .expose_errors
        .then(|| errors(endpoint, outcome, &failed))
        .flatten();
    let bytes = match &endpoint.root {
        Some(root) => merged.root_to_vec(root, exposed.as_ref()),
        None => {
            if let Some(exposed) = &exposed {
                merged.insert_errors(exposed);
            }
            Some(merged.to_vec())
        }
    };
    (bytes.map(Bytes::from), failed)
}

/// A failed request's answer: `{"error": message}`, and `_errors` when the
/// endpoint exposes them.
fn failure(
    endpoint: &EndpointPlan,
    outcome: &Outcome,
    status: StatusCode,
    message: String,
) -> Response<Bytes> {
    let mut body = json!({ "error": message });
    if let Some(exposed) = endpoint
        .expose_errors
        .then(|| errors(endpoint, outcome, &[]))
        .flatten()
    {
        body[ERRORS_KEY] = exposed;
    }
    build(status, to_bytes(&body), false)
}

/// `{backend: {kind, status, message}}` for every failed backend (those in
/// `also` too: failures found while merging), or `None`.
fn errors(
    endpoint: &EndpointPlan,
    outcome: &Outcome,
    also: &[(usize, BackendError)],
) -> Option<Value> {
    let failed: Vec<(&str, &BackendError)> = endpoint
        .backends
        .iter()
        .zip(&outcome.results)
        .enumerate()
        .filter_map(|(i, (b, r))| {
            let merge_failure = also.iter().find(|(j, _)| *j == i).map(|(_, e)| e);
            merge_failure
                .or(r.as_ref().err())
                .map(|e| (b.name.as_str(), e))
        })
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

/// The backends' `return_headers`, in declaration order: every backend's
/// `set-cookie` values, any other header from the first backend that sent
/// it. A partial answer never carries `cache-control`: what a backend said
/// about its own answer does not hold for an answer that lacks another's.
fn return_headers(endpoint: &EndpointPlan, outcome: &Outcome, out: &mut HeaderMap) {
    let mut set = Vec::new();
    for ((backend, result), headers) in endpoint
        .backends
        .iter()
        .zip(&outcome.results)
        .zip(&outcome.headers)
    {
        let (Ok(_), Some(headers)) = (result, headers) else {
            continue;
        };
        for name in &backend.return_headers {
            let first = !set.contains(name);
            if *name == header::SET_COOKIE || first {
                for value in headers.get_all(name) {
                    out.append(name.clone(), value.clone());
                }
                if headers.contains_key(name) {
                    set.push(name.clone());
                }
            }
        }
    }
    if !outcome.verdict.is_complete() {
        out.remove(header::CACHE_CONTROL);
    }
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
