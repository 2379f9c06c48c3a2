//! Keeps the serving threads' shares of client connections even.
//!
//! Each serving thread accepts on its own `SO_REUSEPORT` socket, and the
//! kernel picks the socket from a hash of the client's address and port, not
//! from how busy each thread is: 64 connections land 36 and 28 about as often
//! as 32 and 32. A thread with more connections has more requests in flight,
//! so it is the busier core, and its backend pools (one per thread, so that a
//! call never wakes another thread) grow to match; when the next batch of
//! connections lands the other way, the other thread opens connections of
//! its own, which over TLS means handshakes in the middle of a steady load.
//!
//! So a thread that accepts a connection while it already serves more
//! connections than the least loaded thread hands the socket to that thread
//! instead: the socket leaves this thread's reactor, crosses a bounded
//! channel, and joins the other's. That is Envoy's "exact balance" of
//! connections over workers: the shares stay within one of each other. (With
//! a slack of one more, 64 connections split 33 and 31 about as often as 32
//! and 32, and the thread with 33 opened one more connection to each backend
//! in the middle of the run: over TLS, a handshake per backend and thread in
//! most runs.) A connection crosses at most once, before anything is read
//! from it (a TLS handshake happens on the thread that serves it); it costs
//! the crossing thread a channel send and the other a registration, once per
//! connection.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{net::TcpStream, sync::mpsc};

/// Connections handed to one thread and not yet taken by it, at most; past
/// it, the accepting thread keeps the connection.
const INBOX: usize = 256;

/// One lane per serving thread, all sharing one count of connections each.
pub(crate) fn lanes(threads: usize) -> Vec<Lane> {
    lanes_with_inbox(threads, INBOX)
}

fn lanes_with_inbox(threads: usize, inbox: usize) -> Vec<Lane> {
    let (handoff, inboxes): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel(inbox)).unzip();
    let shared = Arc::new(Shared {
        assigned: (0..threads).map(|_| AtomicUsize::new(0)).collect(),
        handoff,
    });
    inboxes
        .into_iter()
        .enumerate()
        .map(|(me, inbox)| Lane {
            shared: shared.clone(),
            me,
            inbox,
        })
        .collect()
}

struct Shared {
    /// Connections each thread serves, or has been handed and not yet taken.
    assigned: Box<[AtomicUsize]>,
    handoff: Vec<mpsc::Sender<Handed>>,
}

/// A connection on its way to another thread.
struct Handed {
    stream: std::net::TcpStream,
    addr: SocketAddr,
    assigned: Assigned,
}

/// One serving thread's place among the others: where it sends connections
/// it should not keep, and where it receives the ones handed to it.
pub(crate) struct Lane {
    shared: Arc<Shared>,
    me: usize,
    inbox: mpsc::Receiver<Handed>,
}

/// A connection's place in its thread's count, given back when the
/// connection ends.
pub(crate) struct Assigned {
    shared: Arc<Shared>,
    lane: usize,
}

impl Assigned {
    fn new(shared: &Arc<Shared>, lane: usize) -> Assigned {
        shared.assigned[lane].fetch_add(1, Ordering::Relaxed);
        Assigned {
            shared: shared.clone(),
            lane,
        }
    }
}

impl Drop for Assigned {
    fn drop(&mut self) {
        self.shared.assigned[self.lane].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lane {
    /// Where a connection this thread accepted is served: here (returned,
    /// with its place in this thread's count) or, when this thread has more
    /// connections than the least loaded one, on that thread (`None`). A connection that cannot be handed over (that thread's inbox
    /// is full or it has stopped) stays here.
    pub(crate) fn place(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
    ) -> Option<(TcpStream, Assigned)> {
        let counts = &self.shared.assigned;
        let mine = counts[self.me].load(Ordering::Relaxed);
        let (least, fewest) = counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .enumerate()
            .min_by_key(|&(_, count)| count)
            .unwrap_or((self.me, mine));
        if mine <= fewest {
            return Some((stream, Assigned::new(&self.shared, self.me)));
        }
        // Out of this thread's reactor first: the other thread registers it
        // in its own, so its I/O never wakes this thread.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, %addr, "connection lost on its way to another thread");
                return None;
            }
        };
        let handed = Handed {
            stream,
            addr,
            assigned: Assigned::new(&self.shared, least),
        };
        match self.shared.handoff[least].try_send(handed) {
            Ok(()) => None,
            Err(refused) => {
                let Handed { stream, addr, .. } = refused.into_inner();
                match TcpStream::from_std(stream) {
                    Ok(stream) => Some((stream, Assigned::new(&self.shared, self.me))),
                    Err(e) => {
                        tracing::debug!(error = %e, %addr, "connection lost taking it back");
                        None
                    }
                }
            }
        }
    }

    /// The next connection another thread handed to this one, registered
    /// with this thread's reactor. Cancel-safe. Never ends while the lanes
    /// exist (each keeps every thread's sender).
    pub(crate) async fn handed(&mut self) -> Option<(TcpStream, SocketAddr, Assigned)> {
        loop {
            let Handed {
                stream,
                addr,
                assigned,
            } = self.inbox.recv().await?;
            match TcpStream::from_std(stream) {
                Ok(stream) => return Some((stream, addr, assigned)),
                Err(e) => {
                    tracing::debug!(error = %e, %addr, "a handed connection could not be registered")
                }
            }
        }
    }
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, time::Duration};

    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::server::{Connections, bind_reuseport};

    /// Two listeners on one port, each serving as one lane and answering
    /// with its lane's number; returns the port's address and the counts.
    async fn two_lanes() -> (SocketAddr, Arc<Shared>) {
        let listeners = bind_reuseport("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let lanes = lanes(2);
        let shared = lanes[0].shared.clone();
        for (me, (listener, lane)) in listeners.into_iter().zip(lanes).enumerate() {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let service = move |_| {
                hyper::service::service_fn(move |_| async move {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(me.to_string()))))
                })
            };
            tokio::spawn(Connections::default().serve_lane(
                listener,
                Some(lane),
                service,
                std::future::pending(),
            ));
        }
        (addr, shared)
    }

    /// Which lane answers a request on `stream`.
    async fn served_by(stream: &mut tokio::net::TcpStream) -> usize {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = [0; 512];
        while !answer.ends_with(b"\r\n\r\n0") && !answer.ends_with(b"\r\n\r\n1") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        usize::from(answer.last() == Some(&b'1'))
    }

    fn counts(shared: &Shared) -> Vec<usize> {
        shared
            .assigned
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect()
    }

    /// The kernel picks a listener by a hash of the client's port, so 200
    /// connections land unevenly (99–101 about one time in six); spread, the
    /// two threads serve within one connection of each other, each
    /// connection answered by the thread that counts it, and every count is
    /// given back when the clients leave.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_served_evenly_and_counted_until_they_close() {
        let (addr, shared) = two_lanes().await;
        let mut clients = Vec::new();
        let mut served = [0usize; 2];
        for _ in 0..200 {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            served[served_by(&mut stream).await] += 1;
            clients.push(stream);
        }
        assert!(served[0].abs_diff(served[1]) <= 1, "served {served:?}");
        assert_eq!(counts(&shared), served.to_vec());
        // Every connection keeps being served where it was counted.
        for stream in &mut clients {
            served_by(stream).await;
        }
        drop(clients);
        tokio::time::timeout(Duration::from_secs(10), async {
            while counts(&shared) != [0, 0] {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("each closed connection gives its count back");
    }

    /// A thread whose inbox is full keeps the connection it accepted.
    #[tokio::test]
    async fn a_full_inbox_leaves_the_connection_with_the_thread_that_accepted_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut lanes = lanes_with_inbox(2, 4);
        let (one, other) = (lanes.remove(0), lanes.remove(0));
        let mut kept = Vec::new();
        let mut handed = 0;
        for _ in 0..20 {
            let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (stream, peer) = listener.accept().await.unwrap();
            match one.place(stream, peer) {
                Some(placed) => kept.push(placed),
                None => handed += 1,
            }
        }
        // `other` never takes its inbox: once it holds 4 connections, `one`
        // keeps the rest.
        assert_eq!(handed, 4);
        assert_eq!(kept.len(), 16);
        assert_eq!(counts(&one.shared), vec![16, 4]);
        drop(other);
        drop(kept);
        assert_eq!(counts(&one.shared)[0], 0);
    }
}
