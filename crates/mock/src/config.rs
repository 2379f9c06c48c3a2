//! The mock's configuration file.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use fanout_gateway::config::{Duration, Percent, Problem, yaml_problem};
use http::Method;
use serde::{Deserialize, Deserializer, de::Error as _};

/// A mock server: where it listens and what it answers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockConfig {
    /// Where `fanout mock` listens: an address, or a list of them (several
    /// ports, each like a replica); tests and the demo bind their own.
    #[serde(default = "default_listen", deserialize_with = "addresses")]
    pub listen: Vec<SocketAddr>,
    /// Serve the same routes over HTTPS as well.
    pub tls: Option<MockTls>,
    /// The routes, matched by method and path.
    pub routes: Vec<MockRoute>,
}

/// The HTTPS side of a mock: where, and with which certificate.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockTls {
    /// Where it listens for HTTPS.
    pub listen: SocketAddr,
    /// The certificate chain, PEM (relative to the config file).
    pub cert: PathBuf,
    /// Its private key, PEM (relative to the config file).
    pub key: PathBuf,
    /// A CA client certificates must chain to (mTLS); none: no client
    /// certificate is asked for.
    pub client_ca: Option<PathBuf>,
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 9101))]
}

fn addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(SocketAddr),
        Many(Vec<SocketAddr>),
    }
    match OneOrMany::deserialize(d)? {
        OneOrMany::One(addr) => Ok(vec![addr]),
        OneOrMany::Many(addrs) if addrs.is_empty() => Err(D::Error::custom(
            "`listen` is an empty list: give at least one address",
        )),
        OneOrMany::Many(addrs) => Ok(addrs),
    }
}

/// One route: what it matches, and its answer, given either by the keys of
/// one reply beside `path` or as a `replies` list for successive calls.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockRoute {
    /// Path, with `{name}` captures (usable as `{name}` in string values of the body).
    pub path: String,
    /// Method it answers (upper case).
    #[serde(default = "get", deserialize_with = "method")]
    pub method: Method,
    /// Successive calls get successive replies; the last one repeats.
    pub replies: Option<Vec<MockReply>>,
    /// Status of a normal answer (200 if not given).
    pub status: Option<u16>,
    /// Inline JSON body.
    pub body: Option<serde_json::Value>,
    /// A JSON file to serve instead of `body` (relative to the config file).
    pub body_file: Option<PathBuf>,
    /// Answer with what was received, as JSON, instead of a body.
    #[serde(default)]
    pub echo: bool,
    /// Extra response headers: a value, or a list of values for a header
    /// sent several times.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValues>,
    /// Delay before answering: `100ms`, or a mix of shares.
    pub latency: Option<Latency>,
    /// Share of calls that answer 500 instead.
    pub failure_rate: Option<Percent>,
    /// Misbehave on purpose.
    pub fault: Option<Fault>,
}

/// One reply of a route's `replies`: the same keys as a route's own reply.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockReply {
    /// Status of a normal answer (200 if not given).
    pub status: Option<u16>,
    /// Inline JSON body.
    pub body: Option<serde_json::Value>,
    /// A JSON file to serve instead of `body` (relative to the config file).
    pub body_file: Option<PathBuf>,
    /// Answer with what was received, as JSON, instead of a body.
    #[serde(default)]
    pub echo: bool,
    /// Extra response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValues>,
    /// Delay before answering: `100ms`, or a mix of shares.
    pub latency: Option<Latency>,
    /// Share of calls that answer 500 instead.
    pub failure_rate: Option<Percent>,
    /// Misbehave on purpose.
    pub fault: Option<Fault>,
}

impl MockRoute {
    /// The route's own reply keys, as one reply.
    pub(crate) fn own_reply(&self) -> MockReply {
        MockReply {
            status: self.status,
            body: self.body.clone(),
            body_file: self.body_file.clone(),
            echo: self.echo,
            headers: self.headers.clone(),
            latency: self.latency.clone(),
            failure_rate: self.failure_rate,
            fault: self.fault,
        }
    }

    /// Whether any reply key is given beside `path` and `method`.
    pub(crate) fn has_own_reply(&self) -> bool {
        self.status.is_some()
            || self.body.is_some()
            || self.body_file.is_some()
            || self.echo
            || !self.headers.is_empty()
            || self.latency.is_some()
            || self.failure_rate.is_some()
            || self.fault.is_some()
    }
}

/// The value or values of one response header.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum HeaderValues {
    /// Sent once.
    One(String),
    /// Sent once per value, in order.
    Many(Vec<String>),
}

impl HeaderValues {
    /// The values, in order.
    pub fn values(&self) -> &[String] {
        match self {
            HeaderValues::One(value) => std::slice::from_ref(value),
            HeaderValues::Many(values) => values,
        }
    }
}

fn get() -> Method {
    Method::GET
}

/// An upper-case method name: `get` would be a method of its own that no
/// client sends.
fn method<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Method, D::Error> {
    let name = String::deserialize(deserializer)?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(D::Error::custom(format!(
            "`{name}` is not a method: use upper-case letters, e.g. GET or POST"
        )));
    }
    Method::from_bytes(name.as_bytes()).map_err(D::Error::custom)
}

/// A fixed delay, or a distribution: each share of calls gets its delay.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Latency {
    /// Every call waits this long.
    Fixed(Duration),
    /// `[{share: 97%, delay: 1ms}, {share: 3%, delay: 100ms}]`.
    Mix(Vec<LatencyShare>),
}

/// One part of a latency distribution.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyShare {
    /// Share of calls.
    pub share: Percent,
    /// Their delay.
    pub delay: Duration,
}

/// Ways to misbehave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Announce a body, send part of it, then break the connection.
    Reset,
    /// Never answer.
    Hang,
    /// Send the headers, then one byte of body every 100 ms, forever.
    Drip,
    /// Answer with a body that is not JSON (`content-type: application/json`).
    InvalidJson,
    /// Answer with an HTML page.
    WrongContentType,
}

impl MockConfig {
    /// Parses a YAML (or JSON) mock configuration; an error says where
    /// (`line:column: message`).
    pub fn parse(text: &str) -> Result<MockConfig, Problem> {
        serde_saphyr::from_str(text).map_err(|e| yaml_problem(&e))
    }
}
