//! Opening a connection to one target: TCP (within the connect timeout, with
//! `TCP_NODELAY`), then TLS for `https://` with the name the upstream's
//! settings say, and whether ALPN chose HTTP/2. A failure comes back in the
//! gateway's words, and always means that nothing was sent.
//!
//! Written here rather than taken from hyper-rustls: the address dialled is a
//! target's (an IP a name resolved to), while the name verified is the
//! upstream's (or `tls.server_name`), and a failed handshake must say why.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::uri::Authority;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::client::TlsStream;

use super::{ClientSettings, tls};

/// How long a TCP connection may take to open.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection just opened, and whether ALPN chose HTTP/2 on it.
#[derive(Debug)]
pub(super) struct Opened {
    pub(super) stream: Stream,
    pub(super) alpn_h2: bool,
}

/// Opens a connection to `authority` (an address, or a name to resolve), with
/// TLS when `tls` is given.
pub(super) async fn open(
    authority: &Authority,
    tls: Option<&tokio_rustls::TlsConnector>,
    settings: &ClientSettings,
) -> Result<Opened, String> {
    let connect = async {
        match authority.as_str().parse::<SocketAddr>() {
            Ok(addr) => TcpStream::connect(addr).await,
            // Targets are addresses; a name (a client built by hand) is
            // resolved here, off the runtime's threads.
            Err(_) => TcpStream::connect(authority.as_str()).await,
        }
    };
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(format!("cannot connect to {authority}: {e}")),
        Err(_) => {
            return Err(format!(
                "cannot connect to {authority}: no connection within {CONNECT_TIMEOUT:?}"
            ));
        }
    };
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Opened {
            stream: Stream(Io::Plain(tcp)),
            alpn_h2: false,
        });
    };
    let name = settings
        .server_name(authority.as_str(), authority.host())
        .ok_or_else(|| format!("no name to verify for {authority}"))?;
    let stream = tls.connect(name, tcp).await.map_err(|e| {
        tls::describe(&e).unwrap_or_else(|| format!("TLS handshake with {authority} failed: {e}"))
    })?;
    let alpn_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    Ok(Opened {
        stream: Stream(Io::Tls(Box::new(stream))),
        alpn_h2,
    })
}

/// A backend connection: TCP, or TLS over it.
#[derive(Debug)]
pub(crate) struct Stream(Io);

#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut())
                .poll_read(cx, buf)
                .map_err(tls::in_words),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let io = TokioIo::new(&mut self.0);
        let mut io = std::pin::pin!(io);
        hyper::rt::Read::poll_read(io.as_mut(), cx, buf)
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
