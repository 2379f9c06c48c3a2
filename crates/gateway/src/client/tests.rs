//! The pooled client against real servers on loopback: connection reuse,
//! a connection the server closed while idle, the `unsent` flag, the idle
//! timeout on tokio's paused clock, HTTP/2 multiplexing.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use fanout_mock::{Mock, MockServer, Reply};
use http::Version;
use http_body_util::BodyExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::{Body, ClientSettings, Dial, HttpClient, Request, Transport};
use crate::{config::Http2, error::ErrorKind};

fn settings(http2: Http2) -> Arc<ClientSettings> {
    Arc::new(ClientSettings::new(None, http2))
}

fn request(url: &str) -> Request {
    http::Request::get(url)
        .header(http::header::HOST, "backend")
        .body(Body::empty())
        .unwrap()
}

/// Where calls to `url` go: its address.
fn dial(url: &str) -> Arc<Dial> {
    let uri: http::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap();
    Arc::new(Dial::new(
        authority.as_str().parse().unwrap(),
        authority.host(),
    ))
}

async fn mock() -> MockServer {
    Mock::builder()
        .any("/data", Reply::json(r#"{"ok":true}"#))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

/// One call, its body read to the end: (status, body, version).
async fn call(
    client: &HttpClient,
    settings: &Arc<ClientSettings>,
    dial: &Arc<Dial>,
    url: &str,
) -> (u16, Bytes, Version) {
    let exchange = async {
        let response = client.send(settings, dial, request(url)).await.unwrap();
        let (status, version) = (response.status().as_u16(), response.version());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body, version)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("no answer within 10 s")
}

#[tokio::test]
async fn sequential_calls_share_one_connection_and_concurrent_ones_open_more() {
    let mock = mock().await;
    let (client, settings) = (HttpClient::new(), settings(Http2::Auto));
    let url = mock.url("/data");
    let dial = dial(&url);
    for _ in 0..5 {
        let (status, body, version) = call(&client, &settings, &dial, &url).await;
        assert_eq!(
            (status, &body[..], version),
            (200, &br#"{"ok":true}"#[..], Version::HTTP_11)
        );
    }
    assert_eq!(
        mock.stats().connections,
        1,
        "one keep-alive connection, reused"
    );

    for _ in 0..2 {
        let calls = (0..3).map(|_| call(&client, &settings, &dial, &url));
        for (status, ..) in futures::future::join_all(calls).await {
            assert_eq!(status, 200);
        }
    }
    assert_eq!(
        mock.stats().connections,
        3,
        "three at once: the idle one and two new; the second burst reuses all three"
    );
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_its_connection() {
    let mock = Mock::builder()
        .any("/big", Reply::sized(256 << 10))
        .any("/data", Reply::json("{}"))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let (client, settings) = (HttpClient::new(), settings(Http2::Auto));
    let dial = dial(&mock.url("/big"));
    let response = client
        .send(&settings, &dial, request(&mock.url("/big")))
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    assert_eq!(
        call(&client, &settings, &dial, &mock.url("/data")).await.0,
        200
    );
    assert_eq!(
        mock.stats().connections,
        2,
        "the half-read connection is not reused"
    );
}

/// A request's head read from `socket` (a request without a body), or
/// `None` when the connection ends first.
async fn read_head(socket: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// A server on loopback that runs `connection` for each connection it
/// accepts, in a task of its own: its URL (`/data`) and how many connections
/// it has accepted.
async fn each_connection<F, Fut>(connection: F) -> (String, Arc<std::sync::atomic::AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/data", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(connection(socket));
        }
    });
    (url, accepted)
}

/// A server that answers one request per connection and keeps the
/// connection open (without saying it will close it) until told to close
/// it; it says when it has.
async fn closing_server() -> (
    String,
    tokio::sync::mpsc::UnboundedSender<()>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/data", listener.local_addr().unwrap());
    let (close, mut to_close) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (closed, closes) = tokio::sync::mpsc::unbounded_channel();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        // One connection at a time.
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = read_head(&mut socket).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
                .await;
            if to_close.recv().await.is_none() {
                return;
            }
            drop(socket);
            let _ = closed.send(());
        }
    });
    (url, close, closes, accepted)
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced_without_a_failure() {
    let (url, close, mut closed, accepted) = closing_server().await;
    let dial = dial(&url);
    let (client, settings) = (HttpClient::new(), settings(Http2::Auto));
    for round in 1..=3 {
        let (status, body, _) = call(&client, &settings, &dial, &url).await;
        assert_eq!((status, &body[..]), (200, &b"{}"[..]), "round {round}");
        // The connection is in the pool now; the server closes it.
        close.send(()).unwrap();
        closed.recv().await.unwrap();
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::Relaxed),
        3,
        "each call after the first took the idle connection, found it closed, \
         and went to a new one: the request came back unsent"
    );
}

/// A server that answers the first request on each connection and closes
/// the connection when the next one comes, unanswered, as a server whose
/// keep-alive timeout ran out just as the request arrived does: after reading
/// it (the client sees the connection end) or, with `reset`, with an
/// abortive close (the client sees it reset). Counts the connections it
/// accepted, and keeps each request line it read.
async fn closing_on_the_next_request(
    reset: bool,
) -> (
    String,
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = lines.clone();
    let (url, accepted) = each_connection(move |mut socket| {
        let seen = seen.clone();
        async move {
            for answered in [true, false] {
                let Some(head) = read_head(&mut socket).await else {
                    return;
                };
                let line = String::from_utf8_lossy(&head);
                let line = line.lines().next().unwrap_or_default().to_owned();
                seen.lock().unwrap().push(line);
                if answered {
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                        .await;
                } else if reset {
                    socket.set_zero_linger().unwrap();
                }
            }
        }
    })
    .await;
    (url, accepted, lines)
}

/// A backend that closes a keep-alive connection as a request arrives on it
/// (its keep-alive timeout ran out as the gateway reused the connection): an
/// idempotent request on a connection idle for `STALE_AFTER` or more goes again
/// on a new connection, whether the backend's close reads as the end of the
/// stream or as a reset. On tokio's paused clock: the idle time is a timer's.
#[tokio::test(start_paused = true)]
async fn a_get_the_backend_closed_its_idle_connection_on_goes_again_on_a_new_one() {
    use std::sync::atomic::Ordering;
    for reset in [false, true] {
        let (url, accepted, lines) = closing_on_the_next_request(reset).await;
        let dial = dial(&url);
        let (client, settings) = (HttpClient::new(), settings(Http2::Never));
        let (status, ..) = call(&client, &settings, &dial, &url).await;
        assert_eq!(status, 200);
        tokio::time::advance(super::h1::STALE_AFTER).await;
        let (status, body, _) = call(&client, &settings, &dial, &url).await;
        assert_eq!((status, &body[..]), (200, &b"{}"[..]), "reset: {reset}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "reset: {reset}");
        assert_eq!(
            *lines.lock().unwrap(),
            ["GET /data HTTP/1.1"; 3],
            "reset: {reset}: the second call's request went out twice"
        );
    }
}

/// The same race for a POST: it is not sent again (the backend may have
/// acted on it), and fails as sent; nor is a GET on a connection idle for
/// less than `STALE_AFTER` (no server closes keep-alive connections that
/// soon, and under load a copy of every request would cost every call).
#[tokio::test(start_paused = true)]
async fn a_post_or_a_get_on_a_recent_connection_is_not_sent_again() {
    use std::sync::atomic::Ordering;
    let (url, accepted, lines) = closing_on_the_next_request(false).await;
    let dial = dial(&url);
    let (client, settings) = (HttpClient::new(), settings(Http2::Never));
    assert_eq!(call(&client, &settings, &dial, &url).await.0, 200);
    tokio::time::advance(super::h1::STALE_AFTER).await;
    let post = http::Request::post(&url)
        .header(http::header::HOST, "backend")
        .body(Body::from(Bytes::from_static(b"{}")))
        .unwrap();
    let error = client.send(&settings, &dial, post).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Connect);
    assert!(!error.unsent, "the POST went out: {error}");

    assert_eq!(call(&client, &settings, &dial, &url).await.0, 200);
    tokio::time::advance(super::h1::STALE_AFTER / 2).await;
    let error = client
        .send(&settings, &dial, request(&url))
        .await
        .unwrap_err();
    assert!(!error.unsent, "{error}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(
        *lines.lock().unwrap(),
        [
            "GET /data HTTP/1.1",
            "POST /data HTTP/1.1",
            "GET /data HTTP/1.1",
            "GET /data HTTP/1.1"
        ],
        "each request went out once"
    );
}

/// A backend that says it keeps idle connections for 2 s
/// (`Keep-Alive: timeout=2`) has a connection reused within a second of its
/// last answer, and not after (a new one is opened): the call never races
/// the backend's own close, whatever its method.
#[tokio::test(start_paused = true)]
async fn a_connection_is_not_kept_past_the_keep_alive_timeout_the_backend_gave() {
    use std::sync::atomic::Ordering;
    let (url, accepted) = each_connection(|mut socket| async move {
        while read_head(&mut socket).await.is_some() {
            let answer = b"HTTP/1.1 200 OK\r\nkeep-alive: timeout=2\r\ncontent-length: 2\r\n\r\n{}";
            if socket.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let dial = dial(&url);
    let (client, settings) = (HttpClient::new(), settings(Http2::Never));
    assert_eq!(call(&client, &settings, &dial, &url).await.0, 200);
    tokio::time::advance(Duration::from_millis(900)).await;
    assert_eq!(call(&client, &settings, &dial, &url).await.0, 200);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "reused within the second"
    );
    tokio::time::advance(Duration::from_millis(1_100)).await;
    assert_eq!(call(&client, &settings, &dial, &url).await.0, 200);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "idle for 1.1 s of the backend's 2: a new connection"
    );
}

/// A backend that ends a connection with `Connection: close` on its last
/// answer (nginx after `keepalive_requests`, 1 000 by default) costs no call:
/// every call succeeds, each connection carrying the answers the backend
/// allowed it, then a new one.
#[tokio::test]
async fn a_connection_the_backend_closes_after_an_answer_is_not_reused() {
    use std::sync::atomic::Ordering;
    const PER_CONNECTION: usize = 3;
    let (url, accepted) = each_connection(|mut socket| async move {
        for answered in 1..=PER_CONNECTION {
            if read_head(&mut socket).await.is_none() {
                return;
            }
            let close = if answered == PER_CONNECTION {
                "connection: close\r\n"
            } else {
                ""
            };
            let answer = format!("HTTP/1.1 200 OK\r\n{close}content-length: 2\r\n\r\n{{}}");
            if socket.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
        // The backend closes its side after the last answer.
    })
    .await;
    let dial = dial(&url);
    let (client, settings) = (HttpClient::new(), settings(Http2::Never));
    for i in 0..10 {
        let (status, body, _) = call(&client, &settings, &dial, &url).await;
        assert_eq!((status, &body[..]), (200, &b"{}"[..]), "call {i}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 4, "3 + 3 + 3 + 1 calls");
}

/// A call to `url` that must fail.
async fn fail(
    client: &HttpClient,
    settings: &Arc<ClientSettings>,
    url: &str,
) -> crate::error::BackendError {
    client
        .send(settings, &dial(url), request(url))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn unsent_says_whether_the_request_never_left() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let (client, settings) = (HttpClient::new(), settings(Http2::Auto));
    let refused = fail(&client, &settings, &format!("http://{addr}/x")).await;
    assert_eq!(refused.kind, ErrorKind::Connect);
    assert!(
        refused.unsent,
        "a refused connection sent nothing: {refused}"
    );
    assert!(refused.message.contains("tcp connect to"), "{refused}");

    // A server that reads the request, then closes without an answer: it
    // was sent, so it must not be taken for unsent (a POST would be
    // repeated).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = socket.read(&mut buf).await;
    });
    let cut = fail(&client, &settings, &format!("http://{addr}/x")).await;
    assert_eq!(cut.kind, ErrorKind::Connect);
    assert!(!cut.unsent, "the request was sent: {cut}");
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_reused_within_the_idle_timeout_and_closed_after_it() {
    let mock = mock().await;
    let client = HttpClient::with_idle_timeout(Duration::from_secs(10));
    let settings = settings(Http2::Auto);
    let url = mock.url("/data");
    let dial = dial(&url);
    call(&client, &settings, &dial, &url).await;
    tokio::time::advance(Duration::from_secs(9)).await;
    call(&client, &settings, &dial, &url).await;
    assert_eq!(mock.stats().connections, 1, "idle for 9 s: reused");
    tokio::time::advance(Duration::from_secs(10)).await;
    call(&client, &settings, &dial, &url).await;
    assert_eq!(
        mock.stats().connections,
        2,
        "idle for 10 s: closed, a new one"
    );
}

/// A backend that answers one request and keeps the connection, then
/// (with `fin_after`) closes its side that long after answering; it reports
/// what it reads next (0: the client closed) and how long after answering
/// (or after its own FIN) that came.
async fn one_answer_backend(
    fin_after: Option<Duration>,
) -> (String, tokio::sync::oneshot::Receiver<(usize, Duration)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/data", listener.local_addr().unwrap());
    let (eof_tx, eof) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = socket.read(&mut buf).await;
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        if let Some(after) = fin_after {
            tokio::time::sleep(after).await;
            socket.shutdown().await.unwrap();
        }
        // Now idle: the next read ends when the client closes.
        let since = tokio::time::Instant::now();
        let n = socket.read(&mut buf).await.unwrap_or(0);
        let _ = eof_tx.send((n, since.elapsed()));
    });
    (url, eof)
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_after_the_idle_timeout_without_any_call() {
    let (url, eof) = one_answer_backend(None).await;
    let dial = dial(&url);
    let client = HttpClient::with_idle_timeout(Duration::from_secs(10));
    let settings = settings(Http2::Auto);
    call(&client, &settings, &dial, &url).await;
    let (n, after) = tokio::time::timeout(Duration::from_secs(60), eof)
        .await
        .expect("the client never closed its idle connection")
        .unwrap();
    assert_eq!(n, 0, "closed, nothing sent");
    assert!(
        after >= Duration::from_secs(10) && after <= Duration::from_secs(15),
        "closed after {after:?} idle, for an idle timeout of 10 s"
    );
}

/// A backend that closes an idle connection (its own keep-alive timeout)
/// gets the gateway's side closed at the next sweep, a quarter of the idle
/// timeout later at most, not at the idle timeout: no socket is left in
/// CLOSE_WAIT for long.
#[tokio::test(start_paused = true)]
async fn an_idle_connection_the_backend_closed_is_closed_at_the_next_sweep() {
    // A second after answering (the connection is idle in the pool by then),
    // the backend is done with it: its FIN, then a wait for the gateway's.
    let (url, eof) = one_answer_backend(Some(Duration::from_secs(1))).await;
    let dial = dial(&url);
    let client = HttpClient::with_idle_timeout(Duration::from_secs(40));
    let settings = settings(Http2::Auto);
    call(&client, &settings, &dial, &url).await;
    let (n, after) = tokio::time::timeout(Duration::from_secs(60), eof)
        .await
        .expect("the client never closed the connection the backend closed")
        .unwrap();
    assert_eq!(n, 0, "closed, nothing sent");
    assert!(
        after <= Duration::from_secs(12),
        "closed {after:?} after the backend's FIN: not before the idle timeout (40 s)"
    );
}

#[tokio::test]
async fn http2_always_multiplexes_a_burst_on_one_connection() {
    let mock = mock().await;
    let (client, settings) = (HttpClient::new(), settings(Http2::Always));
    let url = mock.url("/data");
    let dial = dial(&url);
    for _ in 0..2 {
        let calls = (0..10).map(|_| call(&client, &settings, &dial, &url));
        for (status, _, version) in futures::future::join_all(calls).await {
            assert_eq!((status, version), (200, Version::HTTP_2));
        }
    }
    assert_eq!(mock.stats().connections, 1);
}

/// A server that keeps every connection open, answering each request on it,
/// until told to close the connections it has (those it accepts later stay
/// open); the first `hold` requests are answered only once all of them have
/// come (so that they hold `hold` connections).
async fn restarting_server(
    hold: usize,
) -> (
    String,
    tokio::sync::watch::Sender<bool>,
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/data", listener.local_addr().unwrap());
    let (close, closing) = tokio::sync::watch::channel(false);
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(hold));
    let (count, gone) = (accepted.clone(), closed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let first = count.fetch_add(1, Ordering::SeqCst) < hold;
            let (mut closing, barrier, gone) = (closing.clone(), barrier.clone(), gone.clone());
            let doomed = !*closing.borrow();
            tokio::spawn(async move {
                let mut waited = !first;
                let mut buf = [0u8; 1024];
                loop {
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        tokio::select! {
                            read = socket.read(&mut buf) => match read {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            },
                            _ = closing.wait_for(|c| *c), if doomed => {
                                drop(socket);
                                gone.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                    if !waited {
                        barrier.wait().await;
                        waited = true;
                    }
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                        .await;
                }
            });
        }
    });
    (url, close, accepted, closed)
}

/// After a backend restarted (every idle connection closed at once, more
/// than any small bound on retries), a call goes past them all to a new
/// connection instead of failing.
#[tokio::test]
async fn after_a_backend_closed_every_idle_connection_a_call_goes_past_them_all() {
    use std::sync::atomic::Ordering;
    let (url, close, accepted, closed) = restarting_server(12).await;
    let dial = dial(&url);
    let (client, settings) = (HttpClient::new(), settings(Http2::Auto));
    let calls = (0..12).map(|_| call(&client, &settings, &dial, &url));
    for (status, ..) in futures::future::join_all(calls).await {
        assert_eq!(status, 200);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        12,
        "twelve idle connections"
    );
    close.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while closed.load(Ordering::SeqCst) < 12 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the server closed its connections");
    // The server runs on this runtime: its last close may be a moment ago,
    // before the I/O driver (which runs when the runtime parks) has seen the
    // FINs. A gateway's later call comes after that, as this one does.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body, _) = call(&client, &settings, &dial, &url).await;
    assert_eq!((status, &body[..]), (200, &b"{}"[..]));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        13,
        "every closed connection was tried and given up, then one new one"
    );
}

/// A call abandoned while its backend is about to answer (the client left,
/// a sibling failed) keeps its connection: the answer is read in the
/// background and the connection goes back to the pool, so the next call
/// opens none (over TLS: no handshake). A call abandoned on a slow backend
/// has its connection closed once the grace is over, so the backend still
/// sees it abandoned, long before its answer was due. On tokio's paused
/// clock: the mock's delays and the grace are timers of the same clock.
#[tokio::test(start_paused = true)]
async fn an_abandoned_call_keeps_its_connection_only_if_the_answer_comes_within_the_grace() {
    let mock = Mock::builder()
        .any(
            "/soon",
            Reply::json(r#"{"ok":true}"#).delay(Duration::from_millis(30)),
        )
        .any(
            "/late",
            Reply::json(r#"{"ok":true}"#).delay(Duration::from_secs(5)),
        )
        .any("/data", Reply::json(r#"{"ok":true}"#))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let (client, settings) = (HttpClient::new(), settings(Http2::Never));
    let dial = dial(&mock.url(""));
    let abandon = |path: &str| {
        let send = client.send(&settings, &dial, request(&mock.url(path)));
        async move {
            assert!(
                tokio::time::timeout(Duration::from_millis(5), send)
                    .await
                    .is_err(),
                "abandoned before the answer"
            );
        }
    };
    abandon("/soon").await;
    // The answer comes 30 ms after the request, within the grace.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, ..) = call(&client, &settings, &dial, &mock.url("/data")).await;
    assert_eq!(status, 200);
    assert_eq!(
        mock.stats().connections,
        1,
        "the abandoned call's connection was reused"
    );
    assert_eq!(mock.stats().abandoned, 0);

    abandon("/late").await;
    tokio::time::timeout(Duration::from_secs(3), async {
        while mock.stats().abandoned == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the slow backend sees the call abandoned once the grace is over");
    let (status, ..) = call(&client, &settings, &dial, &mock.url("/data")).await;
    assert_eq!(status, 200);
    assert_eq!(
        mock.stats().connections,
        2,
        "a new connection after the closed one"
    );
}
