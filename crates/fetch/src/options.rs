//! What to fetch and how: options, headers, URL lists.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

/// How [`fetch_all`](crate::fetch_all) calls the URLs.
///
/// ```
/// use std::time::Duration;
/// use fanout_fetch::FetchOptions;
///
/// let options = FetchOptions { limit: 4, ..FetchOptions::default() };
/// assert_eq!(options.timeout, Duration::from_secs(10));
/// assert_eq!(options.method, http::Method::GET);
/// ```
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// How many requests may be in flight at once (default 16; 0 is taken as 1).
    pub limit: usize,
    /// How long each request may take, from its start to the end of its body
    /// (default 10 s). Time spent queued behind the limit does not count.
    pub timeout: Duration,
    /// The request method (default `GET`). Requests are sent without a body.
    pub method: Method,
    /// Headers added to every request, in order (a name may repeat).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl FetchOptions {
    /// The default [`limit`](FetchOptions::limit).
    pub const DEFAULT_LIMIT: usize = 16;
    /// The default [`timeout`](FetchOptions::timeout).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            limit: Self::DEFAULT_LIMIT,
            timeout: Self::DEFAULT_TIMEOUT,
            method: Method::GET,
            headers: Vec::new(),
        }
    }
}

/// Why a header given on the command line was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The header has no `:` between its name and its value.
    #[error("invalid header `{input}`: expected `Name: value`")]
    MissingColon {
        /// The header as given.
        input: String,
    },
    /// Nothing comes before the `:`.
    #[error("invalid header `{input}`: the name is empty")]
    EmptyName {
        /// The header as given.
        input: String,
    },
    /// The name is not a valid HTTP header name.
    #[error("invalid header name `{name}`: letters, digits and !#$%&'*+-.^_`|~ only (no spaces)")]
    InvalidName {
        /// The name as given (trimmed).
        name: String,
        /// What `http` said.
        #[source]
        source: http::header::InvalidHeaderName,
    },
    /// The value is not a valid HTTP header value.
    #[error("invalid value for header `{name}`: control characters other than tab are not allowed")]
    InvalidValue {
        /// The header's name.
        name: String,
        /// What `http` said.
        #[source]
        source: http::header::InvalidHeaderValue,
    },
}

/// Parses a header given as `Name: value`.
///
/// The name is everything before the first `:` and the value everything after
/// it, both trimmed of surrounding whitespace, so the value may itself contain
/// colons (`Host: example.test:8080`) and may be empty (`X-Empty:`). Names
/// are case-insensitive and come back lower-cased.
///
/// ```
/// use fanout_fetch::parse_header;
///
/// let (name, value) = parse_header("Authorization:  Bearer abc ").unwrap();
/// assert_eq!(name, http::header::AUTHORIZATION);
/// assert_eq!(value, "Bearer abc");
///
/// let err = parse_header("X Bad: 1").unwrap_err();
/// assert!(err.to_string().starts_with("invalid header name `X Bad`"));
/// ```
///
/// # Errors
///
/// [`FetchError`] when there is no `:`, the name is empty or not a valid
/// header name, or the value holds characters a header value cannot.
pub fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), FetchError> {
    let Some((name, value)) = s.split_once(':') else {
        return Err(FetchError::MissingColon {
            input: s.to_owned(),
        });
    };
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty() {
        return Err(FetchError::EmptyName {
            input: s.to_owned(),
        });
    }
    let header_name =
        HeaderName::from_bytes(name.as_bytes()).map_err(|source| FetchError::InvalidName {
            name: name.to_owned(),
            source,
        })?;
    let header_value = HeaderValue::from_str(value).map_err(|source| FetchError::InvalidValue {
        name: name.to_owned(),
        source,
    })?;
    Ok((header_name, header_value))
}

/// Reads a list of URLs: one per line, trimmed; blank lines and lines whose
/// first non-blank character is `#` are skipped. A `#` later in a line is kept
/// (it may be part of the URL). A leading byte-order mark is ignored.
///
/// The URLs are not checked here: [`fetch_all`](crate::fetch_all) reports a
/// bad one in its own row.
///
/// ```
/// use fanout_fetch::read_urls;
///
/// let text = "\u{feff}# staging\r\nhttp://a.test/\r\n\r\n\t http://b.test/#top \n   #http://c.test/\n";
/// assert_eq!(read_urls(text), ["http://a.test/", "http://b.test/#top"]);
/// ```
pub fn read_urls(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}
