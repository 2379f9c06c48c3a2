//! Opening a connection to one target: TCP to its address (within the
//! connect timeout, with `TCP_NODELAY`), then TLS for `https://` with the
//! name its settings say, and whether ALPN chose HTTP/2 on it. Both clients
//! open their connections here: hyper-util's pools (through
//! [`Connector`](super::pooled)) and the HTTP/1.1 connections calls drive
//! themselves ([`h1`](super::h1)).
//!
//! Written here rather than taken from hyper-rustls: the address dialled is
//! a target's (an IP a name resolved to), while the name verified is the
//! URL's or `tls.server_name`, and a failed handshake must say why.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::{
    client::legacy::connect::{Connected, Connection},
    rt::TokioIo,
};
use tokio::{io::AsyncWrite, net::TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::{ClientSettings, Dial, tls};

/// How long a TCP connection may take to be made.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a connection to `dial`'s address, with TLS when `tls` is given,
/// telling `alpn` (if any) what ALPN chose.
pub(super) async fn open(
    settings: &ClientSettings,
    dial: &Dial,
    tls: Option<&tokio_rustls::TlsConnector>,
    alpn: Option<&Arc<Alpn>>,
) -> io::Result<Stream> {
    let addr = dial.addr;
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(io::Error::new(
                e.kind(),
                format!("tcp connect to {addr}: {e}"),
            ));
        }
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "tcp connect to {addr}: no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    tcp.set_nodelay(true)?;
    let Some(tls) = tls else {
        return Ok(Stream {
            io: Either::Left(tcp),
            h2: false,
            _live: None,
        });
    };
    let name = settings
        .server_name(dial)
        .ok_or_else(|| io::Error::other(format!("no name to verify for {addr}")))?;
    let stream = tls.connect(name, tcp).await?;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    if alpn.is_some() && !h2 {
        dial.learned_http1();
    }
    Ok(Stream {
        io: Either::Right(Box::new(stream)),
        h2,
        _live: alpn.and_then(|alpn| alpn.connected(h2)),
    })
}

/// For `http2: auto` over TLS, where only ALPN tells whether a target speaks
/// HTTP/2: while the target has no live h2 connection (at the start, or
/// after the one it had closed), a call goes alone and the calls that come
/// meanwhile wait for it, so that a burst shares the one h2 connection it
/// opens instead of each opening one of its own (hyper-util's pool waits
/// for a connection in progress only when it knows beforehand that it will
/// be HTTP/2, as with `http2: always`; otherwise it keeps one and drops the
/// others, each a handshake for nothing). Once ALPN chose HTTP/1.1 for the
/// target, nothing waits.
#[derive(Debug, Default)]
pub(super) struct Alpn {
    /// Connections to the target that speak h2, alive now.
    h2_live: AtomicUsize,
    /// ALPN chose HTTP/1.1.
    http1: AtomicBool,
    pub(super) turn: tokio::sync::Mutex<()>,
}

impl Alpn {
    /// Whether calls may go without waiting.
    pub(super) fn open(&self) -> bool {
        self.http1.load(Ordering::Acquire) || self.h2_live.load(Ordering::Acquire) > 0
    }

    /// Notes what ALPN chose on a new connection: for h2, a guard that
    /// counts the connection live until it is dropped.
    fn connected(self: &Arc<Self>, h2: bool) -> Option<Live> {
        if h2 {
            self.h2_live.fetch_add(1, Ordering::AcqRel);
            Some(Live(self.clone()))
        } else {
            self.http1.store(true, Ordering::Release);
            None
        }
    }
}

/// An h2 connection of a target, counted in its [`Alpn`] while it lives.
#[derive(Debug)]
struct Live(Arc<Alpn>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.h2_live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A backend connection, and whether ALPN chose HTTP/2 on it.
#[derive(Debug)]
pub(crate) struct Stream {
    io: Io,
    h2: bool,
    /// Counts it among its target's live h2 connections.
    _live: Option<Live>,
}

/// Plain TCP (left), or TLS over it (right).
type Io = Either<TcpStream, Box<TlsStream<TcpStream>>>;

impl Connection for Stream {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let io = TokioIo::new(&mut self.io);
        let mut io = std::pin::pin!(io);
        // A TLS error is put in words (plain TCP errors carry no rustls
        // cause and pass as they are).
        hyper::rt::Read::poll_read(io.as_mut(), cx, buf).map_err(tls::in_words)
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
