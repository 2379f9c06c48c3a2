//! One request's shared state: built once when it arrives, then borrowed by
//! every backend task of that request.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use tokio::time::Instant;

use super::deps::Answers;
use crate::{
    auth::Claims,
    client::Transport,
    plan::EndpointPlan,
    resilience::CallReport,
    template::{Found, Values, Var, lookup},
};

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
    /// The client's body, when the endpoint reads it.
    pub(crate) body: Option<ClientBody>,
    /// When the request arrived, if not just now (its body was read
    /// first): the endpoint's deadline counts from then.
    pub(crate) arrived: Option<Instant>,
}

/// A client's body, read once within the endpoint's limit.
#[derive(Debug, Default)]
pub(crate) struct ClientBody {
    /// Its bytes: every backend that forwards it, and every retry or hedge
    /// of that call, sends these (a clone is a reference count).
    pub(crate) bytes: Bytes,
    /// Its `content-type`, sent with it when it is forwarded.
    pub(crate) content_type: Option<HeaderValue>,
    /// Its `content-encoding`, sent with it when it is forwarded.
    pub(crate) content_encoding: Option<HeaderValue>,
    /// Its JSON, when a template reads it.
    pub(crate) json: Option<Value>,
}

impl Inputs {
    /// The value the client's request gives `var` (a route capture, a
    /// forwarded query value, a field of its JSON body, a claim of its
    /// token); `None` for a dependency's field, which the request does not
    /// give.
    pub(crate) fn get(&self, var: &Var) -> Option<Found<'_>> {
        fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<Found<'a>> {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| Found::Text(v.as_str()))
        }
        match var {
            Var::Route(name) => find(&self.params, name),
            Var::Query(name) => find(&self.query, name),
            Var::Body(path) => lookup(self.body.as_ref()?.json.as_ref()?, path).map(Found::Json),
            Var::Jwt(path) => crate::auth::claim(self.claims.as_deref()?, path).map(Found::Json),
            Var::Field { .. } => None,
        }
    }
}

impl Values for Inputs {
    fn get(&self, var: &Var) -> Option<Found<'_>> {
        Inputs::get(self, var)
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
    /// Each backend's response headers that reach the client
    /// (`return_headers`), once it answered; empty when no backend of the
    /// endpoint returns any.
    pub(crate) returned: Box<[OnceLock<HeaderMap>]>,
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
            // Only endpoints that return headers have the slots (an empty
            // slice allocates nothing).
            returned: if endpoint
                .backends
                .iter()
                .any(|b| !b.return_headers.is_empty())
            {
                endpoint.backends.iter().map(|_| OnceLock::new()).collect()
            } else {
                Box::default()
            },
            endpoint,
            inputs,
            transport,
        }
    }
}
