//! The mock's configuration file.

use std::{net::SocketAddr, path::PathBuf};

use fanout_gateway::config::{Duration, Method, Percent, Problem, yaml_problem};
use serde::Deserialize;

/// A mock server: where it listens and what it answers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockConfig {
    /// Address to listen on (`fanout mock`); tests and the demo bind their own.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The routes, matched by method and path.
    pub routes: Vec<MockRoute>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9101))
}

/// One canned answer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockRoute {
    /// Path, with `{name}` captures (usable as `{name}` in string values of the body).
    pub path: String,
    /// Method it answers.
    #[serde(default)]
    pub method: Method,
    /// Status of a normal answer.
    #[serde(default = "ok")]
    pub status: u16,
    /// Inline JSON body.
    pub body: Option<serde_json::Value>,
    /// A JSON file to serve instead of `body` (relative to the config file).
    pub body_file: Option<PathBuf>,
    /// Delay before answering: `100ms`, or a mix of shares.
    pub latency: Option<Latency>,
    /// Share of calls that answer 500 instead.
    pub failure_rate: Option<Percent>,
    /// Misbehave on purpose.
    pub fault: Option<Fault>,
}

fn ok() -> u16 {
    200
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
    /// Answer 200 with a body that is not JSON.
    InvalidJson,
    /// Answer 200 with an HTML page.
    WrongContentType,
}

impl MockConfig {
    /// Parses a YAML (or JSON) mock configuration; an error says where
    /// (`line:column: message`).
    pub fn parse(text: &str) -> Result<MockConfig, Problem> {
        serde_saphyr::from_str(text).map_err(|e| yaml_problem(&e))
    }
}
