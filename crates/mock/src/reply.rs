//! What a route answers: a [`Reply`], a [`Script`] of replies for successive
//! calls, and the [`Gate`] that holds replies until enough calls arrived.
//!
//! A reply is built from one constructor (what kind of answer) and modifiers
//! that apply to every kind (status, delay, extra headers, gate). Nothing is
//! checked here: a bad status or header is refused when the mock is built
//! ([`MockBuilder::build`](crate::MockBuilder::build)), next to the route it
//! belongs to.

use std::{io, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::sync::watch;

/// What a route answers to one call.
///
/// ```
/// use std::time::Duration;
/// use fanout_mock::Reply;
///
/// let slow = Reply::json(r#"{"v":1}"#).delay(Duration::from_millis(80));
/// let down = Reply::json(r#"{"error":"down"}"#).status(503);
/// let page = Reply::raw("text/html", "<html></html>");
/// let cookies = Reply::json("{}")
///     .header("set-cookie", "a=1")
///     .header("set-cookie", "b=2")
///     .header("cache-control", "max-age=60");
/// # let _ = (slow, down, page, cookies);
/// ```
#[derive(Clone, Debug)]
pub struct Reply {
    pub(crate) kind: Kind,
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) delay: Delay,
    pub(crate) gate: Option<Gate>,
    /// Share (0.0 to 1.0) of calls answered 500 instead, after the delay
    /// (the YAML `failure_rate`).
    pub(crate) failure_rate: f64,
}

/// The kinds of answer.
#[derive(Clone, Debug)]
pub(crate) enum Kind {
    /// A whole body. A JSON body may hold `{capture}` placeholders.
    Body {
        content_type: String,
        body: Bytes,
        json: bool,
    },
    /// Announces [`RESET_ANNOUNCED`] bytes, sends a few, breaks the connection.
    ResetMidBody,
    /// Never answers.
    Hang,
    /// Headers, then a byte every period, forever.
    Drip(Duration),
    /// A JSON body in pieces, one frame each, with a pause before each but
    /// the first.
    Chunks(Vec<Bytes>, Duration),
    /// 200 JSON describing the request ([`Seen::to_json`](crate::Seen::to_json)).
    Echo,
}

/// How long a reply waits before answering.
#[derive(Clone, Debug, Default)]
pub(crate) enum Delay {
    #[default]
    None,
    Fixed(Duration),
    /// Shares in percent, each with its delay; the rest of the calls wait nothing.
    Mix(Vec<(f64, Duration)>),
}

impl Delay {
    pub(crate) fn sample(&self) -> Duration {
        match self {
            Delay::None => Duration::ZERO,
            Delay::Fixed(delay) => *delay,
            Delay::Mix(shares) => {
                let mut roll = rand::random::<f64>() * 100.0;
                for (share, delay) in shares {
                    if roll < *share {
                        return *delay;
                    }
                    roll -= share;
                }
                Duration::ZERO
            }
        }
    }
}

/// The length a [`Reply::reset_mid_body`] announces.
pub(crate) const RESET_ANNOUNCED: usize = 100;

impl Reply {
    fn new(kind: Kind) -> Reply {
        Reply {
            kind,
            status: 200,
            headers: Vec::new(),
            delay: Delay::None,
            gate: None,
            failure_rate: 0.0,
        }
    }

    /// 200 with this JSON body (`content-type: application/json`), sent as
    /// given: it need not be valid JSON. `{name}` in it, where `name` is one
    /// of the route's captures, is replaced by the captured value escaped as
    /// the inside of a JSON string.
    pub fn json(body: impl Into<Bytes>) -> Reply {
        Reply::new(Kind::Body {
            content_type: "application/json".to_owned(),
            body: body.into(),
            json: true,
        })
    }

    /// 200 with any body and content type, sent as given.
    pub fn raw(content_type: &str, body: impl Into<Bytes>) -> Reply {
        Reply::new(Kind::Body {
            content_type: content_type.to_owned(),
            body: body.into(),
            json: false,
        })
    }

    /// 200 with a JSON body of exactly `len` bytes, for size limits: a string
    /// `"xx…x"` (from 2 bytes), `0` for 1 byte, nothing for 0. The length is
    /// announced in `content-length`.
    pub fn sized(len: usize) -> Reply {
        let body = match len {
            0 => Vec::new(),
            1 => b"0".to_vec(),
            _ => {
                let mut body = vec![b'x'; len];
                body[0] = b'"';
                body[len - 1] = b'"';
                body
            }
        };
        Reply::json(body)
    }

    /// Announces a 100-byte JSON body, sends its first bytes, then breaks the
    /// connection (after a short pause, so the head and the first bytes reach
    /// the caller first).
    pub fn reset_mid_body() -> Reply {
        Reply::new(Kind::ResetMidBody)
    }

    /// Never answers: the call stays in flight until the caller gives up (it
    /// is then counted as abandoned) or the mock stops.
    pub fn hang() -> Reply {
        Reply::new(Kind::Hang)
    }

    /// Sends the head at once (`content-type: application/json`, no length),
    /// then one byte of body every `every`, forever.
    pub fn drip(every: Duration) -> Reply {
        Reply::new(Kind::Drip(every))
    }

    /// 200 with a JSON body sent in these pieces, one frame each, pausing
    /// `pause` before each but the first (no `content-length`: over HTTP/1.1
    /// the body is chunked). For callers that must join a body that arrives
    /// in parts.
    pub fn chunks<I, P>(pieces: I, pause: Duration) -> Reply
    where
        I: IntoIterator<Item = P>,
        P: Into<Bytes>,
    {
        Reply::new(Kind::Chunks(
            pieces.into_iter().map(Into::into).collect(),
            pause,
        ))
    }

    /// 200 JSON describing the request as received: method, path, query,
    /// headers and body ([`Seen::to_json`](crate::Seen::to_json) gives the
    /// format).
    pub fn echo() -> Reply {
        Reply::new(Kind::Echo)
    }

    /// Answers with this status instead of 200 (checked when the mock is
    /// built: 100 to 999).
    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    /// Waits this long before answering (after the gate, if any).
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = if delay.is_zero() {
            Delay::None
        } else {
            Delay::Fixed(delay)
        };
        self
    }

    /// Adds a response header, after the reply's own (`content-type`): call
    /// it again with the same name for several values (`set-cookie`).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Holds the answer until the gate opens: the call counts as arrived at
    /// the gate, then waits for the others.
    pub fn gated(mut self, gate: &Gate) -> Reply {
        self.gate = Some(gate.clone());
        self
    }

    pub(crate) fn with_delay(mut self, delay: Delay) -> Reply {
        self.delay = delay;
        self
    }

    pub(crate) fn with_failure_rate(mut self, share: f64) -> Reply {
        self.failure_rate = share;
        self
    }

    pub(crate) fn is_echo(&self) -> bool {
        matches!(self.kind, Kind::Echo)
    }
}

/// The replies of one route: successive calls get successive replies, and
/// the last one repeats. One reply is a script of one.
///
/// ```
/// use std::time::Duration;
/// use fanout_mock::{Reply, Script};
///
/// // Fails twice, then succeeds (a retry test).
/// let flaky = Script::from([
///     Reply::json("{}").status(503),
///     Reply::json("{}").status(503),
///     Reply::json(r#"{"ok":1}"#),
/// ]);
/// // Slow the first time only (a hedging test).
/// let slow_first: Script = vec![
///     Reply::json("{}").delay(Duration::from_secs(30)),
///     Reply::json("{}"),
/// ].into();
/// # let _ = (flaky, slow_first);
/// ```
///
/// Calls take their place in the script in the order they are received
/// (head and body in). An empty script is refused when the mock is built.
#[derive(Clone, Debug)]
pub struct Script(pub(crate) Vec<Reply>);

impl From<Reply> for Script {
    fn from(reply: Reply) -> Script {
        Script(vec![reply])
    }
}

impl From<Vec<Reply>> for Script {
    fn from(replies: Vec<Reply>) -> Script {
        Script(replies)
    }
}

impl<const N: usize> From<[Reply; N]> for Script {
    fn from(replies: [Reply; N]) -> Script {
        Script(replies.into())
    }
}

impl FromIterator<Reply> for Script {
    fn from_iter<I: IntoIterator<Item = Reply>>(replies: I) -> Script {
        Script(replies.into_iter().collect())
    }
}

/// Holds gated replies until `calls` calls have arrived at the gate, from
/// any of the routes that share it; it then stays open. A call that arrived
/// counts even if its caller went away while it waited.
///
/// ```
/// use fanout_mock::{Gate, Reply};
///
/// // Each answers only once all three calls have arrived: proof that they
/// // were made at the same time.
/// let gate = Gate::new(3);
/// let replies = ["a", "b", "c"].map(|_| Reply::json("{}").gated(&gate));
/// # let _ = replies;
/// ```
#[derive(Clone, Debug)]
pub struct Gate {
    needed: usize,
    arrived: Arc<watch::Sender<usize>>,
}

impl Gate {
    /// A gate that opens at the `calls`-th arrival (at once if 0).
    pub fn new(calls: usize) -> Gate {
        Gate {
            needed: calls,
            arrived: Arc::new(watch::channel(0).0),
        }
    }

    /// How many calls have arrived so far.
    pub fn arrived(&self) -> usize {
        *self.arrived.borrow()
    }

    /// Counts one arrival, then waits until the gate is open.
    pub(crate) async fn pass(&self) {
        self.arrived.send_modify(|n| *n += 1);
        let mut open = self.arrived.subscribe();
        // The sender lives in `self`: waiting cannot fail.
        let _ = open.wait_for(|n| *n >= self.needed).await;
    }
}

/// A response body sent over time: the faults, and bodies in pieces.
pub(crate) type Timed = StreamBody<BoxStream<'static, Result<Frame<Bytes>, io::Error>>>;

fn data(bytes: Bytes) -> Result<Frame<Bytes>, io::Error> {
    Ok(Frame::data(bytes))
}

/// Sends part of the announced body, then fails: hyper aborts the connection.
/// The pause between the two lets the head and the first bytes reach the
/// caller, so the fault is a reset *mid-body*, not a missing response.
pub(crate) fn broken() -> Timed {
    let start = stream::once(async { data(Bytes::from_static(b"{\"partial\": \"")) });
    let reset = stream::once(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err(io::Error::other("mock fault: reset mid-body"))
    });
    StreamBody::new(start.chain(reset).boxed())
}

/// One byte every `every`, forever.
pub(crate) fn drip(every: Duration) -> Timed {
    // A zero period would spin; a millisecond is as fast as a drip needs.
    let ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
    let bytes = stream::unfold(ticks, |mut ticks| async move {
        ticks.tick().await;
        Some((data(Bytes::from_static(b" ")), ticks))
    });
    StreamBody::new(bytes.boxed())
}

/// The pieces, one frame each, with a pause before each but the first.
pub(crate) fn chunks(pieces: Vec<Bytes>, pause: Duration) -> Timed {
    let frames = stream::iter(pieces.into_iter().enumerate()).then(move |(i, piece)| async move {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        data(piece)
    });
    StreamBody::new(frames.boxed())
}
