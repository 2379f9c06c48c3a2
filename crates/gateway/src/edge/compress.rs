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

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use http::Response;
use tower_http::compression::{
    CompressionLayer,
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

    /// The layer every connection's service is wrapped in: it follows this
    /// switch.
    pub(crate) fn layer(&self) -> CompressionLayer<Compressible> {
        CompressionLayer::new().compress_when(self.clone())
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
        self.on.load(Ordering::Relaxed)
            && SizeAbove::new(MIN_SIZE)
                .and(NotForContentType::IMAGES)
                .and(NotForContentType::GRPC)
                .and(NotForContentType::SSE)
                .should_compress(response)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{Request, header};
    use http_body_util::{BodyExt, Full};
    use tower::{Layer, ServiceExt};

    use super::*;

    async fn answer(
        on: bool,
        accept: &str,
        response: impl Fn() -> Response<Full<Bytes>> + Clone,
    ) -> (http::HeaderMap, Bytes) {
        let service =
            Compressible::new(on)
                .layer()
                .layer(tower::service_fn(move |_: Request<()>| {
                    let response = response.clone();
                    async move { Ok::<_, Infallible>(response()) }
                }));
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
