//! The bound on response bytes waiting for clients to read them: per
//! connection (all its HTTP/2 streams) and for the whole gateway. A response
//! that would pass either is replaced by a 503, so a client that never reads
//! cannot make the gateway hold more than its share of memory.
//!
//! A response body is handed to hyper in chunks; each chunk taken counts as
//! progress for the connection's write timeout, and the bytes not taken yet
//! stay counted until the body is dropped (the stream ends or is reset, the
//! connection closes).
//!
//! A streamed body (a pass-through) is read from its upstream only when
//! hyper asks for the next chunk, which it does as the client takes bytes:
//! a client that does not read stops the upstream read (backpressure), and
//! the gateway holds at most one upstream frame of it, counted like any
//! response bytes while it waits. A stream is admitted while its connection
//! and the gateway are within their bounds, and keeps its connection busy
//! (not idle) while it is open, since its upstream may pause between frames.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};

use super::{
    connections::{Activity, Streaming},
    error,
};
use crate::{client::BoxError, run::Streamed};

/// How much a chunk handed to hyper holds at most: small enough that hyper
/// asks for the next one only as the client reads, large enough to cost
/// little.
const CHUNK: usize = 64 << 10;

/// The gateway's response buffer: its total and the share of one connection.
#[derive(Debug, Clone)]
pub(crate) struct ResponseBudget {
    total: Arc<AtomicU64>,
    max_total: u64,
    max_per_connection: u64,
}

impl ResponseBudget {
    pub(crate) fn new(max_per_connection: u64, max_total: u64) -> ResponseBudget {
        ResponseBudget {
            total: Arc::new(AtomicU64::new(0)),
            max_total,
            max_per_connection,
        }
    }

    /// The response to send on a connection: `response` itself if its body
    /// fits in what is left, else a 503 that says why.
    pub(crate) fn admit(
        &self,
        response: Response<Outgoing>,
        activity: &Activity,
    ) -> Response<Reply> {
        let (parts, body) = response.into_parts();
        let (bytes, stream) = match body {
            Outgoing::Full(bytes) => (bytes, None),
            Outgoing::Streamed(stream) => (Bytes::new(), Some(stream)),
        };
        let response = Response::from_parts(parts, bytes);
        let n = response.body().len() as u64;
        let fits_connection = activity.pending() + n <= self.max_per_connection;
        let fits_total = fits_connection
            && self
                .total
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
                    (total + n <= self.max_total).then_some(total + n)
                })
                .is_ok();
        if !fits_total {
            let why = if fits_connection {
                "the gateway holds as many unread response bytes as it may (response_buffer.total): try again later"
            } else {
                "this connection holds as many unread response bytes as it may (response_buffer.per_connection): read them first"
            };
            let shed = error(StatusCode::SERVICE_UNAVAILABLE, why.into());
            return shed.map(|body| Reply {
                rest: body,
                held: None,
                stream: None,
            });
        }
        activity.hold(n);
        let streaming = stream.map(|stream| (stream, activity.streaming()));
        response.map(|body| Reply {
            rest: body,
            held: Some(Held {
                activity: activity.clone(),
                total: self.total.clone(),
            }),
            stream: streaming,
        })
    }
}

/// A response body as the gateway makes it.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Whole: a merged answer, an error.
    Full(Bytes),
    /// Streamed from an upstream: a pass-through's answer.
    Streamed(Streamed),
}

impl From<Bytes> for Outgoing {
    fn from(bytes: Bytes) -> Outgoing {
        Outgoing::Full(bytes)
    }
}

/// A response body whose unsent bytes count against the budget.
#[derive(Debug)]
pub(crate) struct Reply {
    /// Bytes held, not taken yet: a whole body, or the rest of a streamed
    /// frame.
    rest: Bytes,
    /// Where its bytes are counted (`None`: a small answer of the gateway's
    /// own, not counted).
    held: Option<Held>,
    /// The stream the next bytes come from, and the mark that keeps the
    /// connection busy while it is open.
    stream: Option<(Streamed, Streaming)>,
}

#[derive(Debug)]
struct Held {
    activity: Activity,
    total: Arc<AtomicU64>,
}

impl Held {
    fn hold(&self, n: usize) {
        self.activity.hold(n as u64);
        self.total.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn release(&self, n: usize, taken: bool) {
        self.activity.release(n as u64, taken);
        self.total.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

impl Body for Reply {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.rest.is_empty() {
            let Some((stream, _)) = &mut this.stream else {
                return Poll::Ready(None);
            };
            match Pin::new(stream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        // Counted while it waits to be taken, chunk by chunk.
                        if let Some(held) = &this.held {
                            held.hold(data.len());
                        }
                        this.rest = data;
                    }
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                Poll::Ready(None) => {
                    this.stream = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.stream = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.rest.len().min(CHUNK);
        let chunk = this.rest.split_to(n);
        if let Some(held) = &this.held {
            held.release(n, true);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
            && self
                .stream
                .as_ref()
                .is_none_or(|(stream, _)| stream.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.len() as u64;
        match &self.stream {
            None => SizeHint::with_exact(rest),
            Some((stream, _)) => {
                let coming = stream.size_hint();
                let mut hint = SizeHint::new();
                if let Some(upper) = coming.upper() {
                    hint.set_upper(upper + rest);
                }
                hint.set_lower(coming.lower() + rest);
                hint
            }
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(held) = &self.held {
            held.release(self.rest.len(), false);
        }
    }
}
