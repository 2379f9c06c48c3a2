//! Reading a backend's answer: check the status and content type, read the
//! body within its size limit, parse it as JSON within its depth. Every way
//! this can fail becomes a [`BackendError`] with a stable kind.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, Response, header};
use http_body_util::{BodyExt, Limited};

use crate::{
    error::{BackendError, ErrorKind},
    plan::BodyLimits,
    resilience::Answer,
    shape::{Json, JsonError},
};

/// The body of `response` as checked JSON, with the response headers named
/// in `keep`; or why not.
pub(crate) async fn decode<B>(
    response: Response<B>,
    limits: BodyLimits,
    keep: &[HeaderName],
) -> Result<Answer, BackendError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<crate::client::BoxError>,
{
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let mut headers = HeaderMap::new();
    for name in keep {
        for value in parts.headers.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let too_large = || {
        BackendError::new(
            ErrorKind::BodyTooLarge,
            format!(
                "the body is larger than the {} bytes allowed",
                limits.max_body
            ),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body) {
        return Err(too_large());
    }
    let encoding = match parts.headers.get(header::CONTENT_ENCODING) {
        None => Encoding::Identity,
        Some(value) => Encoding::parse(value.to_str().unwrap_or("?")).ok_or_else(|| {
            BackendError::new(
                ErrorKind::Decode,
                format!(
                    "content encoding `{}` is not one the gateway decodes (gzip, br, zstd)",
                    String::from_utf8_lossy(value.as_bytes())
                ),
            )
        })?,
    };
    let mut body = Limited::new(body, usize::try_from(limits.max_body).unwrap_or(usize::MAX));
    if encoding != Encoding::Identity {
        let bytes = decompress(body, encoding, limits.max_body).await?;
        let json = finish(status, &parts.headers, bytes, limits)?;
        return Ok(Answer { json, headers });
    }
    // Read by hand rather than with `collect`: a body in one frame (the usual
    // case) is kept as it is, with no buffer list allocated for it.
    let (mut bytes, mut joined) = (Bytes::new(), None::<BytesMut>);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                BackendError::new(ErrorKind::Connect, format!("the body was cut off: {e}"))
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match &mut joined {
            Some(buffer) => buffer.extend_from_slice(&data),
            None if bytes.is_empty() => bytes = data,
            None => {
                let mut buffer = BytesMut::with_capacity(bytes.len() + data.len());
                buffer.extend_from_slice(&bytes);
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            }
        }
    }
    let bytes = joined.map_or(bytes, BytesMut::freeze);
    let json = finish(status, &parts.headers, bytes, limits)?;
    Ok(Answer { json, headers })
}

/// Checks a whole body: its status, content type and nesting, then parses it.
fn finish(
    status: http::StatusCode,
    headers: &http::HeaderMap,
    bytes: Bytes,
    limits: BodyLimits,
) -> Result<Json, BackendError> {
    if !status.is_success() {
        return Err(BackendError::status(status, bytes));
    }
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        let json = essence.eq_ignore_ascii_case("application/json")
            || essence.to_ascii_lowercase().ends_with("+json");
        if !json {
            return Err(BackendError::new(
                ErrorKind::Decode,
                format!("content type `{essence}` is not JSON"),
            ));
        }
    }
    Json::parse_within(bytes, limits.max_depth).map_err(|e| match e {
        JsonError::TooDeep(max) => BackendError::new(
            ErrorKind::Decode,
            format!("JSON nested deeper than {max} levels"),
        ),
        e => BackendError::new(ErrorKind::Decode, format!("invalid JSON: {e}")),
    })
}

/// The largest zstd window (as a power of two) a body within `max` bytes may
/// ask for: the smallest power of two at or above `max`, within zstd's
/// bounds (1 KiB to 128 MiB).
fn zstd_window_log(max: u64) -> u32 {
    (64 - max.saturating_sub(1).leading_zeros()).clamp(10, 27)
}

/// How a body is encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Brotli,
    Zstd,
}

impl Encoding {
    fn parse(value: &str) -> Option<Encoding> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Some(Encoding::Identity),
            "gzip" | "x-gzip" => Some(Encoding::Gzip),
            "br" => Some(Encoding::Brotli),
            "zstd" => Some(Encoding::Zstd),
            _ => None,
        }
    }
}

/// Decodes a compressed body while it streams in, stopping as soon as the
/// decoded size passes `max`: a bomb costs at most the limit in memory,
/// never its expanded size. (The compressed bytes are bounded by the same
/// limit upstream of this, and never all held at once.)
async fn decompress<B>(
    body: Limited<B>,
    encoding: Encoding,
    max: u64,
) -> Result<Bytes, BackendError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<crate::client::BoxError>,
{
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
    use tokio::io::{AsyncRead, AsyncReadExt};

    let stream = http_body_util::BodyDataStream::new(body);
    let stream = futures::TryStreamExt::map_err(stream, |e| {
        let too_large = e
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some();
        std::io::Error::other(if too_large {
            "compressed body over the limit".to_owned()
        } else {
            e.to_string()
        })
    });
    let reader = tokio_util::io::StreamReader::new(stream);
    let mut decoder: std::pin::Pin<Box<dyn AsyncRead + Send>> = match encoding {
        Encoding::Gzip => Box::pin(GzipDecoder::new(reader)),
        Encoding::Brotli => Box::pin(BrotliDecoder::new(reader)),
        // A zstd frame says how large a window its decoder must hold (up to
        // 2 GiB), whatever its size: without a bound, a few bytes could make
        // the gateway allocate 128 MiB (zstd's own default cap) per call.
        // The window is held to the power of two at or above the body limit,
        // so under twice the limit. (gzip's window is 32 KiB, brotli's at
        // most 16 MiB.)
        Encoding::Zstd => Box::pin(ZstdDecoder::with_params(
            reader,
            &[async_compression::zstd::DParameter::window_log_max(
                zstd_window_log(max),
            )],
        )),
        Encoding::Identity => Box::pin(reader),
    };
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        let n = decoder.read(&mut chunk).await.map_err(|e| {
            let text = e.to_string();
            if text.contains("over the limit") {
                too_large(max)
            } else if text.contains("too much memory") {
                BackendError::new(
                    ErrorKind::BodyTooLarge,
                    format!(
                        "the zstd body needs a window of more than {} bytes to decode (the limit is {max} bytes)",
                        1u64 << zstd_window_log(max)
                    ),
                )
            } else {
                BackendError::new(
                    ErrorKind::Decode,
                    format!("the compressed body cannot be decoded: {e}"),
                )
            }
        })?;
        if n == 0 {
            return Ok(Bytes::from(out));
        }
        if (out.len() + n) as u64 > max {
            return Err(BackendError::new(
                ErrorKind::BodyTooLarge,
                format!("the body decodes to more than the {max} bytes allowed"),
            ));
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

fn too_large(max: u64) -> BackendError {
    BackendError::new(
        ErrorKind::BodyTooLarge,
        format!("the body is larger than the {max} bytes allowed"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zstd_window_is_held_under_twice_the_body_limit() {
        for max in [1, 100, 1 << 10, (1 << 10) + 1, 10 << 20, 1 << 30, u64::MAX] {
            let window = 1u64 << zstd_window_log(max);
            let floor = 1 << 10;
            let cap = 1 << 27;
            assert!((floor..=cap).contains(&window), "{max}: {window}");
            assert!(window >= max.min(cap), "{max}: {window}");
            assert!(
                window == floor || window < max.saturating_mul(2),
                "{max}: {window}"
            );
        }
        assert_eq!(1u64 << zstd_window_log(10 << 20), 16 << 20);
    }
}
