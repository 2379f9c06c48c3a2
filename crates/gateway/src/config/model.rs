//! The configuration file's model. The key names are the product's contract
//! (`shared/design/product.md` §2.1); doc comments become the descriptions of
//! `fanout schema`.

use std::{collections::BTreeMap, net::SocketAddr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::units::{ByteSize, Duration, Percent, Rate};

/// A fanout gateway configuration.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The listeners and the limits that apply to every request.
    #[serde(default)]
    pub server: Server,
    /// Named downstream services, with the pool and policies they share.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    /// The routes the gateway serves, each fanning out to its backends.
    pub endpoints: Vec<Endpoint>,
    /// Named authentication schemes (a JWT issuer, a set of API keys) that
    /// endpoints require with `auth`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auth: BTreeMap<String, AuthScheme>,
    /// The store a fleet of gateways shares (Redis), for fleet-wide rate
    /// limits and shared caches.
    pub store: Option<Store>,
    /// Enforce every `rate_limit` fleet-wide, through `store`.
    #[serde(default)]
    pub rate_limits_shared: bool,
    /// Share the upstreams' caches through `store`.
    #[serde(default)]
    pub cache_shared: bool,
}

/// The fleet's shared store. When it is slow or down, no request waits on
/// it past `timeout`: rate limits fall back to this node's share, caches to
/// the local ones.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS.
    pub redis: String,
    /// Gateways in the fleet: while the store is unreachable each enforces
    /// `1/fleet_size` of every shared limit; absent: each the whole limit.
    pub fleet_size: Option<u32>,
    /// The longest a request waits on the store (at most 50ms; default 50ms).
    pub timeout: Option<Duration>,
    /// The largest answer put in the shared cache (default 1MiB).
    pub max_value: Option<ByteSize>,
    /// What every key starts with, to keep fleets apart in one Redis
    /// (default `fanout`).
    pub prefix: Option<String>,
}

/// One way a client proves who it is: exactly one of `jwt` or `api_key`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthScheme {
    /// Bearer tokens (`authorization: Bearer …`) signed by an issuer whose
    /// public keys are a JWKS.
    pub jwt: Option<Jwt>,
    /// Keys sent in a header, stored as their SHA-256 hashes.
    pub api_key: Option<ApiKey>,
}

/// JWT validation: signature (keys from a JWKS), issuer, audience, time.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// Where the issuer publishes its public keys (`http://` or `https://`):
    /// fetched at start, refreshed every 5 minutes (or the answer's
    /// `cache-control: max-age`, within 1m..1h); a token with an unknown key
    /// id fetches again, at most once a minute. Or give `jwks_file`.
    pub jwks_url: Option<String>,
    /// A JWKS file (relative to the config file), read when the config is
    /// loaded; a change to it reloads the config.
    pub jwks_file: Option<String>,
    /// PEM file of the roots that `jwks_url`'s certificate must chain to;
    /// absent: the system's roots.
    pub jwks_ca: Option<String>,
    /// The only accepted `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values: a token must name at least one.
    pub audience: Audience,
    /// Accepted signature algorithms (default `[RS256]`): RS256/384/512,
    /// PS256/384/512, ES256, ES384, EdDSA. `none` and HMAC (HS*) are refused.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in whole seconds (default 60s).
    pub leeway: Option<Duration>,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned()]
}

/// One audience or several.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Audience {
    /// One.
    One(String),
    /// Any of these.
    Many(Vec<String>),
}

impl Audience {
    /// The audiences, in order.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Audience::One(one) => std::slice::from_ref(one),
            Audience::Many(many) => many,
        }
    }
}

/// API keys in a header, stored as hashes: `sha256:<64 hex digits>` each
/// (`fanout hash-key` prints one).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The header that carries the key (default `x-api-key`).
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// The accepted keys' hashes, `sha256:<hex>`.
    pub keys: Vec<String>,
}

fn default_api_key_header() -> String {
    "x-api-key".to_owned()
}

/// One scheme's name or several (any of them accepts).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum AuthNames {
    /// One scheme.
    One(String),
    /// Any of these schemes.
    Many(Vec<String>),
}

impl AuthNames {
    /// The names, in order.
    pub fn as_slice(&self) -> &[String] {
        match self {
            AuthNames::One(one) => std::slice::from_ref(one),
            AuthNames::Many(many) => many,
        }
    }
}

/// Listeners and request limits.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address the gateway listens on (HTTP/1.1 and h2c).
    pub listen: SocketAddr,
    /// Address of the admin listener (metrics, health, dashboard); absent: off.
    pub admin: Option<SocketAddr>,
    /// The cap for every endpoint's deadline, and the default deadline.
    pub request_timeout: Duration,
    /// Largest request body accepted from a client.
    pub max_request_body: ByteSize,
    /// Largest response body accepted from a backend.
    pub max_backend_body: ByteSize,
    /// Deepest JSON nesting accepted in a backend body (at most 127).
    pub max_json_depth: u32,
    /// How long a client may take to send its request headers; a new
    /// connection must start a request within this time.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Open client connections at most; beyond it a new one is answered 503
    /// and closed.
    pub max_connections: u32,
    /// A connection with nothing in flight and no traffic for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// A connection whose client does not read its responses (no bytes sent
    /// for this long while some wait) is closed.
    pub write_timeout: Duration,
    /// How many response bytes may wait for slow clients to read them.
    pub response_buffer: ResponseBuffer,
    /// TLS on the listener (HTTPS, HTTP/2 by ALPN); absent: plain HTTP/1.1
    /// and h2c. The files are read again when they change.
    pub tls: Option<ListenerTls>,
    /// Compress answers (gzip, br, zstd) for clients that accept it; never
    /// bodies under 1 KiB or already encoded ones.
    pub compression: bool,
    /// Cross-origin calls from browsers (CORS): which origins may call, with
    /// what. Preflights are answered by the gateway; absent: no CORS headers.
    pub cors: Option<Cors>,
    /// Proxies (CIDRs or addresses) whose `x-forwarded-for` is believed when
    /// a rate limit is keyed by `ip`; from anyone else it is ignored.
    pub trusted_proxies: Vec<String>,
}

/// Which web pages may call the gateway from a browser, and how (CORS).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Allowed origins, `scheme://host[:port]` as browsers send them, e.g.
    /// `https://app.example.com`; `["*"]`: any origin (not with `credentials`).
    pub origins: Vec<String>,
    /// Methods a preflight may ask for; default: any an endpoint serves on
    /// the path.
    #[serde(default)]
    pub methods: Vec<Method>,
    /// Request headers a preflight may ask for (`accept`, `accept-language`
    /// and `content-language` always may); `["*"]`: any (not with `credentials`).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Response headers a page may read besides the CORS-safelisted ones
    /// (e.g. `x-fanout-complete`, `ratelimit-remaining`).
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Allow cookies and HTTP authentication on cross-origin calls.
    #[serde(default)]
    pub credentials: bool,
    /// How long a browser may reuse a preflight's answer; absent: the
    /// browser's default (5 s).
    pub max_age: Option<Duration>,
}

/// The listener's certificate, key and (for mTLS) client CA. Paths are
/// relative to the config file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM file of the certificate chain served, leaf first.
    pub cert: String,
    /// PEM file of its private key (PKCS#8, RSA or EC).
    pub key: String,
    /// PEM file of the CA(s) client certificates must chain to; given, a
    /// client without a valid certificate is refused in the handshake.
    pub client_ca: Option<String>,
}

/// Bounds on the response bytes waiting for clients to read them: beyond
/// either, a response is replaced by a 503.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseBuffer {
    /// For one connection (all its HTTP/2 streams together).
    pub per_connection: ByteSize,
    /// For every connection of the gateway together.
    pub total: ByteSize,
}

impl Default for ResponseBuffer {
    fn default() -> Self {
        ResponseBuffer {
            per_connection: ByteSize(16 << 20),
            total: ByteSize(256 << 20),
        }
    }
}

impl Default for Server {
    fn default() -> Self {
        let secs = |s| Duration(std::time::Duration::from_secs(s));
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: None,
            request_timeout: secs(5),
            max_request_body: ByteSize(1 << 20),
            max_backend_body: ByteSize(10 << 20),
            max_json_depth: 64,
            header_read_timeout: secs(10),
            shutdown_grace: secs(10),
            max_connections: 10_000,
            idle_timeout: secs(60),
            write_timeout: secs(30),
            response_buffer: ResponseBuffer::default(),
            tls: None,
            compression: false,
            cors: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A downstream service: its address, and the policies its calls share.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Base URL, `http://host:port` or `https://host:port` (a path prefix is
    /// allowed); or a list of them, which share scheme and base path. A
    /// hostname gives one target per address it resolves to.
    pub url: Urls,
    /// TLS to this upstream (`https://` URLs): roots, client certificate,
    /// server name. Certificates are always verified.
    pub tls: Option<Tls>,
    /// HTTP/2: `auto` (when TLS ALPN offers it), `always` (h2c prior
    /// knowledge on `http://`), `never`.
    #[serde(default)]
    pub http2: Http2,
    /// How a target is picked for each attempt.
    #[serde(default)]
    pub balance: Balance,
    /// How often a hostname is resolved again.
    pub dns_refresh: Option<Duration>,
    /// Passive outlier ejection per target (on by default).
    pub eject: Option<Eject>,
    /// Active health checks per target (off by default).
    pub health: Option<Health>,
    /// Ask for compressed bodies (`accept-encoding: gzip, br, zstd`); the
    /// decoded size counts against `max_backend_body`. A backend that
    /// compresses anyway is decoded either way.
    #[serde(default)]
    pub compression: bool,
    /// Limit for each attempt of a call.
    pub timeout: Option<Duration>,
    /// Bulkhead: calls beyond this many in flight fail at once as `overloaded`.
    pub max_in_flight: Option<u32>,
    /// Retries of idempotent calls.
    pub retry: Option<Retry>,
    /// Hedged calls: a second attempt when the first is slow.
    pub hedge: Option<Hedge>,
    /// Circuit breaker.
    pub breaker: Option<Breaker>,
    /// Response cache for GET calls.
    pub cache: Option<Cache>,
    /// Identical in-flight GETs share one backend call.
    #[serde(default)]
    pub coalesce: bool,
    /// Headers sent with every call to this upstream (values may use `${env.NAME}`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// One URL or several.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Urls {
    /// One URL.
    One(String),
    /// Several, sharing scheme and base path.
    Many(Vec<String>),
}

impl Urls {
    /// The URLs, in order.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Urls::One(url) => std::slice::from_ref(url),
            Urls::Many(urls) => urls,
        }
    }
}

impl From<&str> for Urls {
    fn from(url: &str) -> Urls {
        Urls::One(url.to_owned())
    }
}

/// TLS settings of an upstream. Paths are relative to the config file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM file of the roots to trust; absent: the system's roots.
    pub ca: Option<String>,
    /// PEM file of the gateway's certificate chain, for mTLS (with `client_key`).
    pub client_cert: Option<String>,
    /// PEM file of the gateway's private key (PKCS#8, RSA or EC).
    pub client_key: Option<String>,
    /// The name sent as SNI and verified in the certificate; default: the
    /// URL's host.
    pub server_name: Option<String>,
}

/// When calls to an upstream use HTTP/2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Http2 {
    /// HTTP/2 where TLS ALPN offers it, else HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/2 only: over TLS, or h2c with prior knowledge on `http://`.
    Always,
    /// HTTP/1.1 only.
    Never,
}

/// How a target is picked for each attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Power of two choices on in-flight calls weighted by a peak-EWMA of latency.
    #[default]
    P2c,
    /// Each target in turn.
    RoundRobin,
}

/// Passive outlier ejection: a target that fails `failures` times in a row
/// is left out for `base` × the times it was ejected.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Eject {
    /// Consecutive failures (connection, timeout, 5xx) that eject a target; 0 turns ejection off.
    pub failures: u32,
    /// How long the first ejection lasts; each next one lasts longer by as much.
    pub base: Duration,
    /// Most targets out at once (rounded down, but one may always be out when
    /// there are two or more).
    pub max_percent: Percent,
}

impl Default for Eject {
    fn default() -> Self {
        Eject {
            failures: 5,
            base: Duration(std::time::Duration::from_secs(30)),
            max_percent: Percent(50.0),
        }
    }
}

/// Active health checks: a GET of `path` on every target every `interval`;
/// a 2xx within `timeout` keeps it in, anything else takes it out until a
/// check passes.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Path to GET, e.g. `/healthz`.
    pub path: String,
    /// How often (default 5s).
    #[serde(default = "Health::default_interval")]
    pub interval: Duration,
    /// How long a check may take (default 1s, or `interval` if that is
    /// shorter).
    pub timeout: Option<Duration>,
}

impl Health {
    fn default_interval() -> Duration {
        Duration(std::time::Duration::from_secs(5))
    }

    /// How long a check may take: `timeout`, or its default.
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout.map_or(
            std::time::Duration::from_secs(1).min(self.interval.0),
            |t| t.0,
        )
    }
}

/// Retries with a budget.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Base delay before a retry; grows exponentially, with jitter.
    pub backoff: Duration,
    /// Retries may add at most this share of the live traffic.
    pub budget: Percent,
}

/// Hedging: after `delay`, or the `percentile` latency of recent calls, send a
/// second attempt; the first answer wins.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hedge {
    /// Fixed delay before the extra attempt.
    pub delay: Option<Duration>,
    /// Latency percentile of recent calls after which to hedge (e.g. 95).
    pub percentile: Option<f64>,
    /// Extra attempts may add at most this share of the traffic.
    pub max_extra: Option<Percent>,
}

/// Circuit breaker: consecutive failures open it; after the cooldown a probe decides.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    /// Consecutive failures that open the circuit.
    pub failures: u32,
    /// How long it stays open before a probe.
    pub cooldown: Duration,
}

/// Response cache for GET calls.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// How long an answer is reused.
    pub ttl: Duration,
    /// Most answers kept.
    pub max_entries: u32,
}

/// One route of the gateway and the backends it fans out to.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Method and path, e.g. `GET /users/{id}`; `{name}` captures a path segment.
    pub route: String,
    /// Whole-endpoint deadline (default and cap: `server.request_timeout`).
    pub timeout: Option<Duration>,
    /// Client headers passed on to backends; nothing else is.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Client query parameters passed on to backends; nothing else is.
    #[serde(default)]
    pub forward_query: Vec<String>,
    /// Add `"_errors": {backend: {kind, status, message}}` to the response.
    #[serde(default)]
    pub expose_errors: bool,
    /// The scheme (a name from `auth`) a request must satisfy, or a list of
    /// them: any one accepting is enough. Absent: no credentials needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthNames>,
    /// Scopes a token must grant, all of them (from its `scope` claim, a
    /// space-separated string, or `scp`, a string or an array).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Headers set on every backend call from the token's claims,
    /// `{ header: claim }` (the claim may be a dot path); a client's header
    /// of that name is never passed on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims_to_headers: BTreeMap<String, String>,
    /// At most this many requests per client; beyond it, `429` and no
    /// backend is called.
    pub rate_limit: Option<RateLimit>,
    /// The calls this endpoint makes, merged in this order (give these or a
    /// `proxy`).
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// Pass requests through to one upstream instead of calling backends:
    /// the body is streamed up and the answer streamed back, with its status
    /// and end-to-end headers.
    pub proxy: Option<Proxy>,
    /// How the answer is made from the merged backends.
    pub response: Option<ResponseShape>,
}

/// A pass-through endpoint's upstream.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// The named upstream that takes the requests (its policies apply:
    /// breaker, bulkhead, balancing, ejection; no retries or hedges of a
    /// streamed body, no cache, no coalescing).
    pub upstream: String,
    /// Path template appended to the upstream's URL: `{id}` route values,
    /// `{query.name}` client query values, `{jwt.claim}` claims of the
    /// request's token. Default: the route's own path.
    pub path: Option<String>,
    /// Largest request body streamed up (default: `server.max_request_body`);
    /// beyond it the request is answered 413.
    pub max_body: Option<ByteSize>,
}

/// How an endpoint's answer is made from the merged object.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseShape {
    /// Answer with the value at this dot path of the merged object (a
    /// top-level array, say) instead of the whole object. A merged object
    /// without it is a 502.
    pub root: String,
}

/// A rate limit (GCRA): `rate` requests per unit of time, `burst` at once,
/// per value of `key`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// The sustained rate, e.g. `10/s`, `600/m`, `1000/h`.
    pub rate: Rate,
    /// Requests allowed at once; default: the rate's count.
    pub burst: Option<u32>,
    /// Who a limit is for: `ip` (the client's address; default),
    /// `header:NAME`, `claim:NAME` (a verified JWT claim) or `endpoint` (one
    /// limit shared by every client). Requests without a value share one
    /// limit.
    #[serde(default = "RateLimit::default_key")]
    pub key: String,
}

impl RateLimit {
    fn default_key() -> String {
        "ip".to_owned()
    }
}

/// HTTP methods a route or a backend call can use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl Method {
    /// Whether a request with this method carries a body the gateway reads
    /// or sends: POST, PUT and PATCH. (GET, HEAD, DELETE and OPTIONS bodies
    /// have no defined meaning, RFC 9110 §9.3.)
    pub fn carries_body(self) -> bool {
        matches!(self, Method::Post | Method::Put | Method::Patch)
    }

    /// Whether a call with this method may be retried or hedged.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Method::Post | Method::Patch)
    }

    /// The method's name, e.g. `GET`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }

    /// Parses an upper-case method name.
    pub fn parse(s: &str) -> Option<Method> {
        [
            Method::Get,
            Method::Head,
            Method::Post,
            Method::Put,
            Method::Patch,
            Method::Delete,
            Method::Options,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// One call of an endpoint, and how its answer is shaped.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Unique within the endpoint; used by `after`, in templates and in errors.
    pub name: String,
    /// A named upstream to call (with `path`); or give a `url`.
    pub upstream: Option<String>,
    /// A full URL template, `http://host:port/path/{id}`, instead of an upstream.
    pub url: Option<String>,
    /// Path (and query) template appended to the upstream's URL: `{id}` route
    /// values, `{query.lang}` client query values, `{profile.field}` values from a
    /// dependency's body. Every value is percent-encoded.
    pub path: Option<String>,
    /// Method of the call.
    #[serde(default)]
    pub method: Method,
    /// Whether this call's failure fails the response (default: partial allowed).
    #[serde(default)]
    pub required: bool,
    /// This call's own limit, inside the endpoint's deadline.
    pub timeout: Option<Duration>,
    /// Take this sub-object of the body (dot path).
    pub extract: Option<String>,
    /// Keep only these dot paths.
    pub select: Option<Vec<String>>,
    /// Remove these dot paths.
    #[serde(default)]
    pub drop: Vec<String>,
    /// Rename keys: `{ old: new }` (the key may be a dot path).
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Nest the result under this key (dot path).
    pub into: Option<String>,
    /// Return this required backend's 4xx to the client as is.
    #[serde(default)]
    pub pass_status: bool,
    /// Backends whose answers this one needs; it starts as soon as they answered.
    #[serde(default)]
    pub after: Vec<String>,
    /// The call's body (POST, PUT and PATCH calls): `forward`, the client's
    /// body and content type as received; or a JSON template whose string
    /// values may hold `{body.path}` (the client's JSON body), `{id}`,
    /// `{query.name}` and `{backend.field}`: a value that is one placeholder
    /// keeps its JSON type, one inside text becomes text. Sent as
    /// `application/json`.
    pub body: Option<BackendBody>,
    /// Concatenate this backend's array onto the array already at its `into`
    /// key (or start it), in declaration order.
    #[serde(default)]
    pub append: bool,
    /// Data used, through `into`, when this optional backend fails (the
    /// answer is still partial).
    pub fallback: Option<serde_json::Value>,
    /// Response headers of this backend passed to the client: `set-cookie`
    /// from every backend, any other from the first backend in declaration
    /// order that sends it.
    #[serde(default)]
    pub return_headers: Vec<String>,
}

/// A backend call's body.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum BackendBody {
    /// `forward`: the client's body, as received, with its content type.
    Forward(Forward),
    /// A JSON template.
    Template(serde_json::Value),
}

/// The word `forward`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Forward {
    /// The client's body as received.
    Forward,
}
