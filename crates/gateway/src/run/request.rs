//! One request's shared state: built once when it arrives, then borrowed by
//! every backend task of that request.

use http::HeaderMap;

use super::deps::Answers;
use crate::{auth::Claims, client::Transport, plan::EndpointPlan, resilience::CallReport};
use std::sync::Arc;

/// What a client's request brings that templates and forwarding may use.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    /// Route captures, percent-decoded.
    pub(crate) params: Vec<(String, String)>,
    /// The client's query parameters that the endpoint forwards, decoded
    /// (a template cannot reach the others).
    pub(crate) query: Vec<(String, String)>,
    /// Headers to send on: the allow-listed ones and `x-forwarded-*`.
    pub(crate) headers: HeaderMap,
    /// The claims of the request's verified token (`None`: the endpoint
    /// needs no token, or an API key was accepted). `{jwt.…}` templates and
    /// `claims_to_headers` read them; so may any part that keys on a claim.
    pub(crate) claims: Option<Arc<Claims>>,
}

impl Inputs {
    /// The top-level claim `name` of the verified token, when it is a string.
    #[allow(dead_code)] // for the rate limiter's `key: claim:NAME`
    pub(crate) fn claim(&self, name: &str) -> Option<&str> {
        self.claims.as_deref()?.get(name)?.as_str()
    }
}

/// Everything the backend tasks of one request share.
#[derive(Debug)]
pub(crate) struct RequestState<T> {
    /// The endpoint it runs.
    pub(crate) endpoint: Arc<EndpointPlan>,
    /// What the client sent.
    pub(crate) inputs: Inputs,
    /// The answers dependents wait for.
    pub(crate) answers: Answers,
    /// What the policies did for each backend call, for the dashboard.
    pub(crate) reports: Box<[CallReport]>,
    /// How calls are sent.
    pub(crate) transport: T,
}

impl<T: Transport> RequestState<T> {
    pub(crate) fn new(endpoint: Arc<EndpointPlan>, inputs: Inputs, transport: T) -> Self {
        RequestState {
            answers: Answers::new(&endpoint),
            reports: endpoint
                .backends
                .iter()
                .map(|_| CallReport::default())
                .collect(),
            endpoint,
            inputs,
            transport,
        }
    }
}
