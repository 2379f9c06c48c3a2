//! Reading a backend's answer: check the status and content type, read the
//! body within its size limit, parse it as JSON within its depth. Every way
//! this can fail becomes a [`BackendError`] with a stable kind.

use bytes::{Bytes, BytesMut};
use http::{Response, header};
use http_body_util::{BodyExt, Limited};

use crate::{
    error::{BackendError, ErrorKind},
    plan::BodyLimits,
    shape::Json,
};

/// The body of `response` as checked JSON, or why not.
pub(crate) async fn decode<B>(
    response: Response<B>,
    limits: BodyLimits,
) -> Result<Json, BackendError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<crate::client::BoxError>,
{
    let (parts, body) = response.into_parts();
    let status = parts.status;
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
    let mut body = Limited::new(body, usize::try_from(limits.max_body).unwrap_or(usize::MAX));
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
    if !status.is_success() {
        return Err(BackendError::status(status, bytes));
    }
    if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
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
    if nesting_exceeds(&bytes, limits.max_depth) {
        return Err(BackendError::new(
            ErrorKind::Decode,
            format!("JSON nested deeper than {} levels", limits.max_depth),
        ));
    }
    Json::parse(bytes)
        .map_err(|e| BackendError::new(ErrorKind::Decode, format!("invalid JSON: {e}")))
}

/// Whether arrays and objects nest deeper than `max`, ignoring brackets inside
/// strings. A linear scan, run before parsing so a hostile body cannot make the
/// parser recurse deeply.
pub(crate) fn nesting_exceeds(bytes: &[u8], max: u32) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_outside_strings() {
        assert!(!nesting_exceeds(br#"{"a":[{"b":"[[[[[[["}]}"#, 3));
        assert!(nesting_exceeds(br#"{"a":[{"b":[1]}]}"#, 3));
        assert!(!nesting_exceeds(br#"{"a":"\"[[[[","b":{}}"#, 2));
    }
}
