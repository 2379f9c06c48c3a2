//! A pass-through endpoint's one call (`proxy`): the client's body streamed
//! up to one upstream as it arrives, the upstream's answer streamed back as
//! it comes, with its status and end-to-end headers.
//!
//! - Nothing is buffered: a frame is read from one side only when the other
//!   side has taken the last one, so a slow reader at either end slows the
//!   other end down instead of filling the gateway's memory.
//! - The upstream's policies apply to the call: breaker (a 5xx counts as a
//!   failure), bulkhead (the call keeps its place until the answer's body
//!   ends), balancing and ejection. A body that is streamed can be sent
//!   once: retries and hedges apply only to an idempotent request without
//!   a body. Nothing is cached or shared.
//! - The endpoint's deadline covers the whole exchange: the wait for the
//!   answer's head, then its body, which ends with an error (the client's
//!   connection or stream is reset) if the deadline passes mid-body. The
//!   upstream's `timeout` bounds the wait for the head of each attempt.
//! - The upload is cut off past its limit; the caller learns it from the
//!   [`Upload`]'s flag, and answers 413.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::{
    sync::OwnedSemaphorePermit,
    time::{Instant, Sleep},
};

use super::{
    backend::{aim, verdict},
    request::Inputs,
};
use crate::{
    client::{self, BoxError, Transport},
    error::{BackendError, ErrorKind},
    headers::remove_connection_headers,
    plan::EndpointPlan,
    resilience::{Attempted, CallReport, with_timeout},
    template::url,
    upstream::AttemptVerdict,
};

/// The upstream's answer, on its way to the client.
#[derive(Debug)]
pub(crate) struct Passed(pub(crate) Response<Streamed>);

impl Attempted for Passed {
    fn hold(&mut self, slot: OwnedSemaphorePermit) {
        self.0.body_mut().slot = Some(slot);
    }

    fn failure(&self) -> Option<BackendError> {
        let status = self.0.status();
        status
            .is_server_error()
            .then(|| BackendError::status(status, Bytes::new()))
    }
}

/// The body of a passed answer: the upstream's, frame by frame, until the
/// endpoint's deadline.
pub(crate) struct Streamed {
    body: client::Stream,
    deadline: Pin<Box<Sleep>>,
    /// The call's place in its upstream's bulkhead, kept until the body ends.
    slot: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamed").finish_non_exhaustive()
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(
                "the endpoint's deadline passed while the answer was streamed".into(),
            )));
        }
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = polled {
            self.slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client's body on its way up.
#[derive(Debug)]
pub(crate) struct Upload {
    /// The stream, until an attempt takes it; `None` for a request without
    /// a body (which every attempt can send again).
    stream: Option<Mutex<Option<client::Stream>>>,
    /// What became of the client's side of it.
    client: Arc<ClientSide>,
}

/// How the client's side of an upload went wrong, if it did: then a failed
/// call says nothing about the upstream.
#[derive(Debug, Default)]
struct ClientSide {
    /// The client sent more than the limit.
    over: AtomicBool,
    /// The client's body broke off (it went away mid-upload).
    broken: AtomicBool,
}

impl Upload {
    /// The client's `body`, cut off with an error past `max` bytes.
    pub(crate) fn new<B>(body: B, max: u64) -> Upload
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let client = Arc::new(ClientSide::default());
        let stream = (!body.is_end_stream()).then(|| {
            let capped = Capped {
                body,
                left: max,
                client: client.clone(),
            };
            Mutex::new(Some(capped.boxed_unsync()))
        });
        Upload { stream, client }
    }

    /// Whether the client sent more than the limit.
    pub(crate) fn over_limit(&self) -> bool {
        self.client.over.load(Ordering::Relaxed)
    }

    /// Why a failed attempt is the client's doing, if it is: its body was
    /// over the limit or broke off. The call then counts as cancelled, not
    /// against the upstream's breaker or target.
    fn client_failure(&self) -> Option<BackendError> {
        let why = if self.over_limit() {
            "the client's body is over its limit"
        } else if self.client.broken.load(Ordering::Relaxed) {
            "the client's body broke off"
        } else {
            return None;
        };
        Some(BackendError::new(ErrorKind::Cancelled, why))
    }

    /// The body for one attempt.
    fn take(&self) -> Result<client::Body, BackendError> {
        match &self.stream {
            None => Ok(client::Body::empty()),
            Some(cell) => cell
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .map(client::Body::Stream)
                .ok_or_else(|| {
                    BackendError::new(
                        ErrorKind::Internal,
                        "the request's body was streamed once already",
                    )
                }),
        }
    }
}

/// A body that fails once more than `left` bytes came, and records on the
/// client's side why it failed.
struct Capped<B> {
    body: B,
    left: u64,
    client: Arc<ClientSide>,
}

impl<B> Body for Capped<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                self.client.broken.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            match self.left.checked_sub(data.len() as u64) {
                Some(left) => self.left = left,
                None => {
                    self.client.over.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err("the request body is over its limit".into())));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Passes one request of `endpoint` (a pass-through) to its upstream,
/// through the upstream's policies, and returns the answer's head with its
/// body still to stream; or why there is no answer.
pub(crate) async fn pass<T: Transport>(
    endpoint: &EndpointPlan,
    inputs: &Inputs,
    upload: &Upload,
    transport: &T,
    report: &CallReport,
) -> Result<Passed, BackendError> {
    let backend = &endpoint.backends[0];
    let upstream = &backend.upstream;
    let deadline = inputs.arrived.unwrap_or_else(Instant::now) + endpoint.deadline;
    let path = url::render(&upstream.prefix, &backend.template, inputs, &inputs.query)
        .map_err(|e| BackendError::new(ErrorKind::Dependency, e))?;
    let mut headers = inputs.headers.clone();
    for (name, value) in &upstream.headers {
        headers.insert(name.clone(), value.clone());
    }
    #[cfg(feature = "otel")]
    super::backend::inject_trace_context(&mut headers);
    let targets = &upstream.targets;
    // The targets this call's attempts went to: a retry goes to another.
    let used: Mutex<Vec<SocketAddr>> = Mutex::new(Vec::new());
    let attempt = || async {
        targets.ready().await;
        let (lease, request) = aim(backend, &used, &path, headers.clone(), upload.take()?)?;
        let send = transport.send(&targets.client, &lease.target.dial, request);
        let mut result = with_timeout(backend.timeout, send).await;
        if let (Err(_), Some(failure)) = (&result, upload.client_failure()) {
            result = Err(failure);
        }
        let outcome = match &result {
            Ok(response) if response.status().is_server_error() => AttemptVerdict::Failed,
            other => verdict(other),
        };
        targets.finish(lease, outcome);
        let (mut parts, body) = result?.into_parts();
        remove_connection_headers(&mut parts.headers);
        let body = Streamed {
            body: body.map_err(Into::into).boxed_unsync(),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            slot: None,
        };
        Ok(Passed(Response::from_parts(parts, body)))
    };
    let call = async {
        match &upstream.policies {
            None => {
                report.attempt();
                attempt().await
            }
            Some(policies) => {
                let repeatable = backend.method.is_idempotent() && upload.stream.is_none();
                Box::pin(policies.protected(repeatable, Some(deadline), report, &attempt)).await
            }
        }
    };
    tokio::time::timeout_at(deadline, call)
        .await
        .unwrap_or_else(|_| {
            Err(BackendError::new(
                ErrorKind::Timeout,
                format!(
                    "the endpoint's deadline of {:?} expired before the upstream answered",
                    endpoint.deadline
                ),
            ))
        })
}
