//! Response compression (`server.compression`): gzip, br or zstd to clients
//! that accept them, with tower-http's `CompressionLayer` (negotiation by
//! `accept-encoding` q-values, `vary: accept-encoding`, no content-length
//! on a compressed body, brotli at quality 4 as nginx does on the fly).
//!
//! What is compressed is decided here ([`Compressible`]): nothing while
//! the setting is off (a flag a reload flips, so open connections follow
//! it too), never a body under [`MIN_SIZE`] (the framing would outweigh the
//! saving), never one that is already encoded (tower-http leaves a
//! `content-encoding` response alone), never images, gRPC or server-sent
//! events.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{
    TryFutureExt,
    future::{Either, MapOk},
};
use http::{Request, Response};
use tower::{Layer, Service, ServiceExt, util::Oneshot};
use tower_http::compression::{
    Compression, CompressionBody, CompressionLayer,
    predicate::{NotForContentType, Predicate, SizeAbove},
};

/// Bodies smaller than this are sent as they are.
pub(crate) const MIN_SIZE: u16 = 1024;

/// Whether a response is worth compressing.
#[derive(Debug, Clone)]
pub(crate) struct Compressible {
    on: Arc<AtomicBool>,
}

impl Compressible {
    /// A switch, on or off.
    pub(crate) fn new(on: bool) -> Compressible {
        Compressible {
            on: Arc::new(AtomicBool::new(on)),
        }
    }

    /// A connection's service: `answer`, its responses compressed while
    /// this switch is on.
    pub(crate) fn wrap<F>(&self, answer: F) -> Compress<F> {
        Compress {
            switch: self.clone(),
            layer: CompressionLayer::new().compress_when(self.clone()),
            answer,
        }
    }

    fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Compression as `on` says, from now on.
    pub(crate) fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }
}

impl Predicate for Compressible {
    fn should_compress<B>(&self, response: &Response<B>) -> bool
    where
        B: hyper::body::Body,
    {
        self.is_on()
            && SizeAbove::new(MIN_SIZE)
                .and(NotForContentType::IMAGES)
                .and(NotForContentType::GRPC)
                .and(NotForContentType::SSE)
                .should_compress(response)
    }
}

/// A response body to a client: the answer's own, or tower-http's
/// compressing body around it.
pub(crate) type ClientBody<B> = http_body_util::Either<B, Pin<Box<CompressionBody<B>>>>;

/// A connection's service ([`Compressible::wrap`]): `F` answers a request,
/// and while compression is on its response goes through tower-http's
/// `Compression`, whose body is boxed.
///
/// Why not that layer around every response: its body type holds the state
/// of every encoder inline (kilobytes, brotli's above all) even when it
/// encodes nothing, and a response is moved several times on its way to
/// the connection, so every response would pay for copying it. While the
/// switch is off nothing of it is made; while it is on, one allocation per
/// response keeps those moves to a pointer.
#[derive(Clone)]
pub(crate) struct Compress<F> {
    switch: Compressible,
    layer: CompressionLayer<Compressible>,
    answer: F,
}

type Plain<B> = fn(Response<B>) -> Response<ClientBody<B>>;
type Compressed<B> = fn(Response<CompressionBody<B>>) -> Response<ClientBody<B>>;
type Compressing<F> = Compression<tower::util::ServiceFn<F>, Compressible>;

impl<F, Fut, R, B, E> Service<Request<R>> for Compress<F>
where
    F: FnMut(Request<R>) -> Fut + Clone,
    Fut: Future<Output = Result<Response<B>, E>>,
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<tower_http::BoxError>,
{
    type Response = Response<ClientBody<B>>;
    type Error = E;
    type Future =
        Either<MapOk<Fut, Plain<B>>, MapOk<Oneshot<Compressing<F>, Request<R>>, Compressed<B>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), E>> {
        // `F` is a function: always ready (the compressing path, a service
        // of its own, is readied by `oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<R>) -> Self::Future {
        if self.switch.is_on() {
            let compressing = self.layer.layer(tower::service_fn(self.answer.clone()));
            Either::Right(compressing.oneshot(request).map_ok(
                (|response| response.map(|body| http_body_util::Either::Right(Box::pin(body))))
                    as Compressed<B>,
            ))
        } else {
            Either::Left(
                (self.answer)(request)
                    .map_ok((|response| response.map(http_body_util::Either::Left)) as Plain<B>),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{Request, header};
    use http_body_util::{BodyExt, Full};
    use tower::ServiceExt;

    use super::*;

    async fn answer(
        on: bool,
        accept: &str,
        response: impl Fn() -> Response<Full<Bytes>> + Clone,
    ) -> (http::HeaderMap, Bytes) {
        let service = Compressible::new(on).wrap(move |_: Request<()>| {
            let response = response.clone();
            async move { Ok::<_, Infallible>(response()) }
        });
        let request = Request::get("/")
            .header(header::ACCEPT_ENCODING, accept)
            .body(())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        (parts.headers, body.collect().await.unwrap().to_bytes())
    }

    fn json(size: usize) -> impl Fn() -> Response<Full<Bytes>> + Clone {
        move || {
            let mut response = Response::new(Full::new(Bytes::from(
                format!("[{}0]", "0,".repeat(size / 2)).into_bytes(),
            )));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
    }

    #[tokio::test]
    async fn only_bodies_worth_it_are_compressed() {
        let (headers, body) = answer(true, "gzip", json(4096)).await;
        assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
        assert_eq!(headers[header::VARY], "accept-encoding");
        assert!(body.len() < 200, "{}", body.len());

        let (headers, _) = answer(true, "gzip", json(100)).await;
        assert!(headers.get(header::CONTENT_ENCODING).is_none(), "tiny");
        assert!(headers.get(header::VARY).is_none());

        let (headers, _) = answer(false, "gzip", json(4096)).await;
        assert!(headers.get(header::CONTENT_ENCODING).is_none(), "off");

        let (headers, _) = answer(true, "identity", json(4096)).await;
        assert!(headers.get(header::CONTENT_ENCODING).is_none());
        assert_eq!(
            headers[header::VARY],
            "accept-encoding",
            "the answer would differ with another accept-encoding"
        );
    }

    #[tokio::test]
    async fn a_connection_s_service_follows_the_switch_from_its_next_request() {
        let switch = Compressible::new(false);
        let mut service = switch.wrap(|_: Request<()>| async { Ok::<_, Infallible>(json(4096)()) });
        let call = |service: &mut Compress<_>| {
            let request = Request::get("/")
                .header(header::ACCEPT_ENCODING, "gzip")
                .body(())
                .unwrap();
            let response = service.call(request);
            async move {
                let (parts, body) = response.await.unwrap().into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                (
                    parts.headers.get(header::CONTENT_ENCODING).cloned(),
                    body.len(),
                )
            }
        };
        assert_eq!(call(&mut service).await, (None, 4099));
        switch.set(true);
        let (encoding, len) = call(&mut service).await;
        assert_eq!(encoding.unwrap(), "gzip");
        assert!(len < 200, "{len}");
        switch.set(false);
        assert_eq!(call(&mut service).await, (None, 4099));
    }

    #[tokio::test]
    async fn an_encoded_body_is_never_encoded_again() {
        let encoded = || {
            let mut response = json(4096)();
            response.headers_mut().insert(
                header::CONTENT_ENCODING,
                header::HeaderValue::from_static("br"),
            );
            response
        };
        let (headers, body) = answer(true, "gzip, br, zstd", encoded).await;
        assert_eq!(headers[header::CONTENT_ENCODING], "br");
        assert_eq!(
            body.len(),
            json(4096)()
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .len()
        );
    }

    #[tokio::test]
    async fn images_are_left_alone() {
        let png = || {
            let mut response = json(4096)();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("image/png"),
            );
            response
        };
        let (headers, _) = answer(true, "gzip", png).await;
        assert!(headers.get(header::CONTENT_ENCODING).is_none());
    }
}
