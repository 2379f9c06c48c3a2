//! The bound on response bytes waiting for clients to read them: per
//! connection (all its HTTP/2 streams) and for the whole gateway. A response
//! that would pass either is replaced by a 503, so a client that never reads
//! cannot make the gateway hold more than its share of memory.
//!
//! A response body is handed to hyper in chunks; each chunk taken counts as
//! progress for the connection's write timeout, and the bytes not taken yet
//! stay counted until the body is dropped (the stream ends or is reset, the
//! connection closes).

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

use super::{connections::Activity, error};

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
    pub(crate) fn admit(&self, response: Response<Bytes>, activity: &Activity) -> Response<Reply> {
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
            });
        }
        activity.hold(n);
        response.map(|body| Reply {
            rest: body,
            held: Some(Held {
                activity: activity.clone(),
                total: self.total.clone(),
            }),
        })
    }
}

/// A response body whose unsent bytes count against the budget.
#[derive(Debug)]
pub(crate) struct Reply {
    rest: Bytes,
    /// Where its bytes are counted (`None`: a small answer of the gateway's
    /// own, not counted).
    held: Option<Held>,
}

#[derive(Debug)]
struct Held {
    activity: Activity,
    total: Arc<AtomicU64>,
}

impl Held {
    fn release(&self, n: usize, taken: bool) {
        self.activity.release(n as u64, taken);
        self.total.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

impl Body for Reply {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.rest.len().min(CHUNK);
        let chunk = self.rest.split_to(n);
        if let Some(held) = &self.held {
            held.release(n, true);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(held) = &self.held {
            held.release(self.rest.len(), false);
        }
    }
}
