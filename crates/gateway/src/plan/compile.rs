//! The compiler: one pass over a parsed configuration that builds every part
//! of the [`Plan`] and collects every problem, each at the path of the
//! document it is about (located to a line and column at the end).
//!
//! Each part is parsed once, here: a route, a template, a field path, a
//! header. A part with a problem is reported and left out, and the pass goes
//! on, so one run of `fanout check` lists everything to fix.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{
    BackendPlan, BodyLimits, CallBody, ClientValue, EndpointPlan, Plan, ReadsBody, ServerLimits,
    UpstreamPlan,
    origin::{Origin, Scheme},
    route::{RouteSpec, Router},
};
use crate::{
    client::{self, ClientSettings},
    config::{
        Backend, BackendBody, Balance, ByteSize, Config, ConfigError, Document, Endpoint, Http2,
        Path, Upstream,
    },
    edge::{
        client_ip::{self, TrustedProxies},
        cors::{self, AllowedOrigins, CorsPolicy},
        ratelimit::{Gcra, KeyRule, Limit},
    },
    metrics::EndpointMeters,
    resilience::{Policies, SharedCache},
    shape::{Body, ERRORS_KEY, FieldPath, Shape},
    store::{Store, StoreSettings, digest},
    template::{
        BodyTemplate, NAMESPACES, Part, Place, Template, Var,
        names::{NAME_RULE, is_name},
    },
    upstream::{EjectRule, Source, TargetSettings, Targets},
};

/// Problems found so far, each with the path of the document it is about.
#[derive(Debug, Default)]
pub(super) struct Problems(Vec<(Path, String)>);

impl Problems {
    pub(super) fn at(&mut self, path: Path, message: impl Into<String>) {
        self.0.push((path, message.into()));
    }

    /// How many so far.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The value, or `None` with its problem recorded.
    pub(super) fn check<T>(&mut self, path: &Path, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|message| self.at(path.clone(), message))
            .ok()
    }
}

/// Compiles a parsed document into a plan, or reports every problem in it.
pub(super) fn compile(doc: &Document) -> Result<Plan, ConfigError> {
    let mut problems = Problems::default();
    let plan = build(&doc.config, doc.dir(), &mut problems);
    match plan {
        Some(plan) if problems.0.is_empty() => Ok(plan),
        _ => Err(doc.error(problems.0)),
    }
}

fn build(config: &Config, dir: &std::path::Path, problems: &mut Problems) -> Option<Plan> {
    let root = Path::root();
    let server = &config.server;
    check_server(&root.key("server"), server, problems);
    let listener_tls = server.tls.as_ref().and_then(|tls| {
        let at = root.key("server").key("tls");
        let built =
            crate::edge::tls::from_files(dir, &tls.cert, &tls.key, tls.client_ca.as_deref());
        match built {
            Ok(config) => Some(Arc::new(config)),
            Err(found) => {
                for (key, message) in found {
                    problems.at(at.key(key), format!("server.tls: {message}"));
                }
                None
            }
        }
    });
    let cors = server
        .cors
        .as_ref()
        .and_then(|cors| cors_policy(&root.key("server").key("cors"), cors, problems));
    let store = store(config, problems);
    let upstreams: BTreeMap<&str, Arc<UpstreamPlan>> = config
        .upstreams
        .iter()
        .filter_map(|(name, upstream)| {
            let path = root.key("upstreams").key(name.as_str());
            let shared = store
                .as_ref()
                .filter(|_| config.cache_shared && upstream.cache.is_some())
                .map(|store| SharedCache {
                    store: store.clone(),
                    namespace: format!(
                        "{}:cache:{name}:{}:",
                        store.settings().prefix,
                        &digest(&serde_json::to_vec(upstream).unwrap_or_default())[..16]
                    ),
                });
            let plan = upstream_plan(&path, name, upstream, shared, dir, problems)?;
            Some((name.as_str(), Arc::new(plan)))
        })
        .collect();
    let schemes = super::auth::schemes(config, dir, problems);
    let shared_limits = store
        .as_ref()
        .filter(|_| config.rate_limits_shared)
        .map(|s| s.settings().clone());
    if config.endpoints.is_empty() {
        problems.at(
            root.key("endpoints"),
            "no endpoints: add at least one under `endpoints`",
        );
    }
    let limits = BodyLimits {
        max_body: server.max_backend_body.0,
        max_depth: server.max_json_depth,
    };
    let mut router = Router::default();
    // One slot per endpoint of the file, so the router's indexes are the
    // file's; an endpoint with problems leaves `None` (and no plan is made).
    let mut endpoints: Vec<Option<Arc<EndpointPlan>>> = Vec::with_capacity(config.endpoints.len());
    for (i, endpoint) in config.endpoints.iter().enumerate() {
        let path = root.key("endpoints").index(i);
        let compiled = problems
            .check(&path.key("route"), RouteSpec::parse(&endpoint.route))
            .and_then(|route| {
                let added = router.add(&route, i, |first| config.endpoints[first].route.clone());
                // A clash is reported, and the endpoint still checked.
                let added = problems.check(&path.key("route"), added);
                let compiled = EndpointCompiler {
                    path: &path,
                    endpoint,
                    route: &route,
                    config,
                    upstreams: &upstreams,
                    schemes: &schemes,
                    shared_limits: shared_limits.as_ref(),
                    dir,
                    names: endpoint
                        .backends
                        .iter()
                        .enumerate()
                        .map(|(i, b)| (b.name.as_str(), i))
                        .collect(),
                }
                .compile(limits, problems);
                added.and(compiled)
            });
        endpoints.push(compiled.map(Arc::new));
    }
    let endpoints = endpoints.into_iter().collect::<Option<Vec<_>>>()?;
    Some(Plan {
        router,
        endpoints,
        upstreams: upstreams.into_values().collect(),
        server: ServerLimits {
            header_read_timeout: server.header_read_timeout.0,
            shutdown_grace: server.shutdown_grace.0,
            max_connections: server.max_connections as usize,
            idle_timeout: server.idle_timeout.0,
            write_timeout: server.write_timeout.0,
            response_buffer_per_connection: server.response_buffer.per_connection.0,
            response_buffer_total: server.response_buffer.total.0,
        },
        listener_tls,
        cors,
        store,
        trusted_proxies: TrustedProxies::new(
            server
                .trusted_proxies
                .iter()
                .enumerate()
                .filter_map(|(i, net)| {
                    problems.check(
                        &root.key("server").key("trusted_proxies").index(i),
                        client_ip::parse_network(net),
                    )
                })
                .collect(),
        ),
        files: config
            .upstreams
            .values()
            .filter_map(|u| u.tls.as_ref())
            .flat_map(|t| [&t.ca, &t.client_cert, &t.client_key])
            .flatten()
            .chain(server.tls.iter().flat_map(|t| {
                [Some(&t.cert), Some(&t.key), t.client_ca.as_ref()]
                    .into_iter()
                    .flatten()
            }))
            .map(|file| dir.join(file))
            .chain(super::auth::files(config, dir))
            .collect(),
        auth: schemes.into_values().collect(),
        config: config.clone(),
    })
}

/// Every limit has a number: durations and sizes beyond these are refused,
/// so that no value the checks accept can break serving (a timer that
/// cannot be set, a deadline that never comes, an allocation that cannot be
/// made).
mod bounds {
    use std::time::Duration;

    pub(super) const HOUR: Duration = Duration::from_secs(3600);
    pub(super) const MINUTE: Duration = Duration::from_secs(60);
    pub(super) const DAY: Duration = Duration::from_secs(86_400);
    pub(super) const GIB: u64 = 1 << 30;
    /// serde_json parses at most 127 levels into a value; shaping and merging
    /// recurse as deep as the value, so this bounds them too.
    pub(super) const JSON_DEPTH: u32 = 127;
    pub(super) const COUNT: u64 = 1_000_000;
    pub(super) const ATTEMPTS: u64 = 10;
    /// A pass-through streams its body: the bound is on what a client may
    /// send, not on memory.
    pub(super) const PROXY_BODY: u64 = 64 * GIB;
}

/// `name`'s duration is more than zero and at most `max`.
fn duration_within(
    problems: &mut Problems,
    path: Path,
    name: &str,
    value: crate::config::Duration,
    max: std::time::Duration,
) {
    if value.0.is_zero() {
        problems.at(path, format!("{name} must be more than 0"));
    } else if value.0 > max {
        problems.at(
            path,
            format!(
                "{name} {value} is more than {}",
                crate::config::Duration(max)
            ),
        );
    }
}

/// `name`'s count is at least `min` and at most `max`.
fn count_within(problems: &mut Problems, path: Path, name: &str, value: u64, min: u64, max: u64) {
    if value < min {
        problems.at(path, format!("{name} must be at least {min}"));
    } else if value > max {
        problems.at(path, format!("{name} {value} is more than {max}"));
    }
}

/// `name`'s size is at most `max` bytes.
fn size_within(problems: &mut Problems, path: Path, name: &str, value: ByteSize, max: u64) {
    if value.0 > max {
        problems.at(
            path,
            format!("{name} {value} is more than {}", ByteSize(max)),
        );
    }
}

fn check_server(path: &Path, server: &crate::config::Server, problems: &mut Problems) {
    use bounds::*;
    let p = |key: &str| path.key(key);
    duration_within(
        problems,
        p("request_timeout"),
        "request_timeout",
        server.request_timeout,
        HOUR,
    );
    duration_within(
        problems,
        p("header_read_timeout"),
        "header_read_timeout",
        server.header_read_timeout,
        HOUR,
    );
    if server.shutdown_grace.0 > HOUR {
        problems.at(
            p("shutdown_grace"),
            format!("shutdown_grace {} is more than 1h", server.shutdown_grace),
        );
    }
    duration_within(
        problems,
        p("idle_timeout"),
        "idle_timeout",
        server.idle_timeout,
        DAY,
    );
    duration_within(
        problems,
        p("write_timeout"),
        "write_timeout",
        server.write_timeout,
        HOUR,
    );
    size_within(
        problems,
        p("max_request_body"),
        "max_request_body",
        server.max_request_body,
        GIB,
    );
    size_within(
        problems,
        p("max_backend_body"),
        "max_backend_body",
        server.max_backend_body,
        GIB,
    );
    if server.max_json_depth > JSON_DEPTH {
        problems.at(
            p("max_json_depth"),
            format!(
                "max_json_depth {} is more than {JSON_DEPTH}, the deepest JSON the gateway can parse and merge safely",
                server.max_json_depth
            ),
        );
    } else if server.max_json_depth == 0 {
        problems.at(p("max_json_depth"), "max_json_depth must be at least 1");
    }
    count_within(
        problems,
        p("max_connections"),
        "max_connections",
        server.max_connections.into(),
        1,
        COUNT,
    );
    let buffer = &server.response_buffer;
    let at = p("response_buffer");
    size_within(
        problems,
        at.key("per_connection"),
        "per_connection",
        buffer.per_connection,
        GIB,
    );
    size_within(problems, at.key("total"), "total", buffer.total, 64 * GIB);
    if buffer.total < buffer.per_connection {
        problems.at(
            at.key("total"),
            format!(
                "total {} is less than per_connection {}: one connection could never use its share",
                buffer.total, buffer.per_connection
            ),
        );
    }
}

/// The fleet's store (`store`), and whether what is shared has one.
fn store(config: &Config, problems: &mut Problems) -> Option<Arc<Store>> {
    let root = Path::root();
    for (shared, key) in [
        (config.rate_limits_shared, "rate_limits_shared"),
        (config.cache_shared, "cache_shared"),
    ] {
        if shared && config.store.is_none() {
            problems.at(
                root.key(key),
                format!("{key} needs a store: add `store: {{ redis: redis://host:6379 }}`"),
            );
        }
    }
    let store = config.store.as_ref()?;
    let path = root.key("store");
    let before = problems.0.len();
    let budget = store.timeout.map_or(STORE_BUDGET, |t| t.0);
    if let Some(timeout) = store.timeout {
        duration_within(
            problems,
            path.key("timeout"),
            "timeout",
            timeout,
            STORE_BUDGET,
        );
    }
    let max_value = store.max_value.map_or(1 << 20, |v| v.0);
    if let Some(size) = store.max_value {
        size_within(problems, path.key("max_value"), "max_value", size, 64 << 20);
    }
    if let Some(n) = store.fleet_size {
        count_within(
            problems,
            path.key("fleet_size"),
            "fleet_size",
            n.into(),
            1,
            10_000,
        );
    }
    let prefix = store.prefix.clone().unwrap_or_else(|| "fanout".to_owned());
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if prefix.is_empty() || prefix.len() > 64 || !prefix.chars().all(fits) {
        problems.at(
            path.key("prefix"),
            format!("prefix `{prefix}`: use 1 to 64 letters, digits, `-`, `_`, `.` or `:`"),
        );
    }
    let settings = StoreSettings {
        url: store.redis.clone(),
        budget,
        max_value: max_value as usize,
        prefix,
        fleet_size: store.fleet_size,
    };
    let store = problems.check(&path.key("redis"), Store::new(settings))?;
    (problems.0.len() == before).then(|| Arc::new(store))
}

/// The longest a request may wait on the store (product.md §2.9).
const STORE_BUDGET: std::time::Duration = std::time::Duration::from_millis(50);

/// `server.cors`, every origin and header name checked where it is written.
fn cors_policy(
    path: &Path,
    cors: &crate::config::Cors,
    problems: &mut Problems,
) -> Option<CorsPolicy> {
    let before = problems.0.len();
    let any = cors.origins.iter().any(|o| o == "*");
    let listed: Vec<String> = cors
        .origins
        .iter()
        .enumerate()
        .filter(|(_, o)| o.as_str() != "*")
        .filter_map(|(i, o)| problems.check(&path.key("origins").index(i), cors::parse_origin(o)))
        .collect();
    let origins = if any {
        if cors.origins.len() > 1 {
            problems.at(
                path.key("origins"),
                "`*` allows every origin: it stands alone, without other origins",
            );
        }
        if cors.credentials {
            problems.at(
                path.key("credentials"),
                "credentials: true with origins: [\"*\"] would let any web page call with the user's cookies and credentials (browsers refuse `*` with credentials): list the origins",
            );
        }
        AllowedOrigins::Any
    } else {
        if cors.origins.is_empty() {
            problems.at(
                path.key("origins"),
                "no origins: list the pages' origins, e.g. https://app.example.com",
            );
        }
        AllowedOrigins::List(listed)
    };
    let names = |key: &str, list: &[String], problems: &mut Problems| -> Vec<HeaderName> {
        list.iter()
            .enumerate()
            .filter(|(_, h)| h.as_str() != "*")
            .filter_map(|(i, h)| {
                problems.check(
                    &path.key(key).index(i),
                    HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("`{h}` is not a valid header name")),
                )
            })
            .collect()
    };
    let any_header = cors.headers.iter().any(|h| h == "*");
    if any_header && cors.credentials {
        problems.at(
            path.key("headers"),
            "headers: [\"*\"] is taken literally by browsers when credentials is true: list the headers",
        );
    }
    let headers = names("headers", &cors.headers, problems);
    let expose = names("expose_headers", &cors.expose_headers, problems);
    if cors.expose_headers.iter().any(|h| h == "*") {
        problems.at(
            path.key("expose_headers"),
            "list the headers to expose: `*` is not supported",
        );
    }
    if let Some(max_age) = cors.max_age {
        duration_within(
            problems,
            path.key("max_age"),
            "max_age",
            max_age,
            bounds::DAY,
        );
    }
    (problems.0.len() == before).then(|| {
        CorsPolicy::new(
            origins,
            (!cors.methods.is_empty()).then(|| cors.methods.clone()),
            (!any_header).then_some(headers),
            &expose,
            cors.credentials,
            cors.max_age.map(|d| d.0),
        )
    })
}

fn upstream_plan(
    path: &Path,
    name: &str,
    upstream: &Upstream,
    shared: Option<SharedCache>,
    dir: &std::path::Path,
    problems: &mut Problems,
) -> Option<UpstreamPlan> {
    use bounds::*;
    let urls = upstream.url.as_slice();
    let url_path = |i: usize| match &upstream.url {
        crate::config::Urls::One(_) => path.key("url"),
        crate::config::Urls::Many(_) => path.key("url").index(i),
    };
    if urls.is_empty() {
        problems.at(
            path.key("url"),
            format!("upstream `{name}` needs at least one URL"),
        );
    }
    let origins: Vec<Option<Origin>> = urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            problems.check(
                &url_path(i),
                Origin::parse(url).map_err(|m| format!("upstream `{name}`: {m}")),
            )
        })
        .collect();
    let reach = origins
        .into_iter()
        .collect::<Option<Vec<Origin>>>()
        .filter(|o| !o.is_empty())
        .and_then(|origins| {
            reach(
                path,
                &url_path,
                name,
                &origins,
                Some(upstream),
                dir,
                problems,
            )
        });
    if let Some(timeout) = upstream.timeout {
        duration_within(problems, path.key("timeout"), "timeout", timeout, HOUR);
    }
    if let Some(n) = upstream.max_in_flight {
        count_within(
            problems,
            path.key("max_in_flight"),
            "max_in_flight",
            n.into(),
            1,
            COUNT,
        );
    }
    if let Some(retry) = &upstream.retry {
        let at = path.key("retry");
        if retry.attempts == 0 {
            problems.at(
                at.key("attempts"),
                "attempts counts the first call too: at least 1",
            );
        } else {
            count_within(
                problems,
                at.key("attempts"),
                "attempts",
                retry.attempts.into(),
                1,
                ATTEMPTS,
            );
        }
        if retry.backoff.0 > MINUTE {
            problems.at(
                at.key("backoff"),
                format!("backoff {} is more than 1m", retry.backoff),
            );
        }
    }
    if let Some(delay) = upstream.hedge.as_ref().and_then(|h| h.delay) {
        duration_within(
            problems,
            path.key("hedge").key("delay"),
            "delay",
            delay,
            MINUTE,
        );
    }
    if let Some(breaker) = &upstream.breaker {
        duration_within(
            problems,
            path.key("breaker").key("cooldown"),
            "cooldown",
            breaker.cooldown,
            HOUR,
        );
    }
    if let Some(cache) = &upstream.cache {
        duration_within(
            problems,
            path.key("cache").key("ttl"),
            "ttl",
            cache.ttl,
            DAY,
        );
    }
    if let Some(hedge) = &upstream.hedge {
        match (&hedge.delay, hedge.percentile) {
            (Some(_), Some(_)) | (None, None) => problems.at(
                path.key("hedge"),
                "a hedge needs exactly one of `delay` (e.g. 30ms) or `percentile` (e.g. 95)",
            ),
            (None, Some(p)) if !(p > 0.0 && p < 100.0) => problems.at(
                path.key("hedge").key("percentile"),
                format!("percentile {p} must be between 0 and 100"),
            ),
            _ => {}
        }
    }
    if let Some(breaker) = &upstream.breaker {
        count_within(
            problems,
            path.key("breaker").key("failures"),
            "failures",
            breaker.failures.into(),
            1,
            COUNT,
        );
    }
    if let Some(cache) = &upstream.cache {
        count_within(
            problems,
            path.key("cache").key("max_entries"),
            "max_entries",
            cache.max_entries.into(),
            1,
            COUNT,
        );
    }
    let headers = header_map(&path.key("headers"), &upstream.headers, problems);
    let reach = reach?;
    Some(UpstreamPlan {
        name: name.to_owned(),
        prefix: reach.prefix,
        targets: reach.targets,
        compression: upstream.compression,
        files: reach.files,
        headers: headers?,
        timeout: upstream.timeout.map(|d| d.0),
        shared_cache: shared.as_ref().map(|s| s.namespace.clone()),
        policies: Policies::configured(name, upstream, shared),
        config: Some(upstream.clone()),
    })
}

/// How an upstream is reached: its targets and base path.
struct Reach {
    targets: Arc<Targets>,
    prefix: String,
    files: u64,
}

/// The targets of `origins` (an upstream's URLs, or a backend's one `url`)
/// with the upstream's TLS, HTTP/2, balancing, ejection and health settings
/// (defaults for a `url:` backend), each checked where it is written.
fn reach(
    path: &Path,
    url_path: &dyn Fn(usize) -> Path,
    name: &str,
    origins: &[Origin],
    upstream: Option<&Upstream>,
    dir: &std::path::Path,
    problems: &mut Problems,
) -> Option<Reach> {
    use bounds::*;
    let first = &origins[0];
    let mut ok = true;
    for (i, origin) in origins.iter().enumerate().skip(1) {
        if origin.scheme != first.scheme || origin.prefix != first.prefix {
            problems.at(
                url_path(i),
                format!(
                    "the URLs of upstream `{name}` share their scheme and base path: this one differs from the first (`{}://…{}`)",
                    first.scheme.as_str(),
                    first.prefix
                ),
            );
            ok = false;
        }
    }
    let tls_config = upstream.and_then(|u| u.tls.as_ref());
    let http2 = upstream.map_or(Http2::Auto, |u| u.http2);
    let mut files = 0u64;
    let tls = match first.scheme {
        Scheme::Http => {
            if tls_config.is_some() {
                problems.at(
                    path.key("tls"),
                    "tls applies to https:// URLs: this upstream's are http://",
                );
                ok = false;
            }
            None
        }
        Scheme::Https => {
            let alpn: &[&[u8]] = match http2 {
                Http2::Auto => &[b"h2", b"http/1.1"],
                Http2::Always => &[b"h2"],
                Http2::Never => &[b"http/1.1"],
            };
            files = digest_files(tls_config, dir);
            match client::tls::settings(tls_config, dir, alpn) {
                Ok(settings) => Some(settings),
                Err(found) => {
                    for (key, message) in found {
                        problems.at(
                            path.key("tls").key(key),
                            format!("upstream `{name}`: {message}"),
                        );
                    }
                    ok = false;
                    None
                }
            }
        }
    };
    let eject = match upstream.map(|u| u.eject.clone().unwrap_or_default()) {
        Some(eject) if eject.failures > 0 => {
            let at = path.key("eject");
            count_within(
                problems,
                at.key("failures"),
                "failures",
                eject.failures.into(),
                1,
                COUNT,
            );
            duration_within(problems, at.key("base"), "base", eject.base, HOUR);
            Some(EjectRule {
                failures: eject.failures,
                base: eject.base.0,
                max_share: eject.max_percent.fraction(),
            })
        }
        _ => None,
    };
    let health = upstream.and_then(|u| u.health.clone());
    if let Some(h) = &health {
        let at = path.key("health");
        if !h.path.starts_with('/') {
            problems.at(
                at.key("path"),
                format!("path `{}` must start with /", h.path),
            );
        } else if h.path.parse::<http::uri::PathAndQuery>().is_err() {
            problems.at(
                at.key("path"),
                format!(
                    "path `{}` is not a valid URL path (escape spaces and the like as %XX)",
                    h.path
                ),
            );
        }
        if h.interval.0 < std::time::Duration::from_millis(100) {
            problems.at(
                at.key("interval"),
                format!(
                    "interval {} is less than 100ms: every target would be checked without pause",
                    h.interval
                ),
            );
        } else {
            duration_within(problems, at.key("interval"), "interval", h.interval, HOUR);
        }
        if let Some(timeout) = h.timeout {
            duration_within(
                problems,
                at.key("timeout"),
                "timeout",
                timeout,
                h.interval.0,
            );
        }
    }
    let dns_refresh = upstream
        .and_then(|u| u.dns_refresh)
        .unwrap_or(crate::config::Duration(
            30 * std::time::Duration::from_secs(1),
        ));
    if let Some(refresh) = upstream.and_then(|u| u.dns_refresh) {
        if refresh.0 < std::time::Duration::from_secs(1) {
            problems.at(
                path.key("dns_refresh"),
                format!("dns_refresh {refresh} is less than 1s: the resolver would be asked without pause"),
            );
        } else {
            duration_within(
                problems,
                path.key("dns_refresh"),
                "dns_refresh",
                refresh,
                HOUR,
            );
        }
    }
    if !ok {
        return None;
    }
    let sources = origins
        .iter()
        .map(|o| Source {
            host: o.host.clone(),
            port: o.port,
            host_header: o.host_header.clone(),
            ip: o.ip(),
        })
        .collect();
    let targets = Targets::new(
        name,
        TargetSettings {
            scheme: first.scheme,
            sources,
            client: Arc::new(ClientSettings::new(tls, http2)),
            balance: upstream.map_or(Balance::P2c, |u| u.balance),
            eject,
            health,
            dns_refresh: dns_refresh.0,
        },
    );
    Some(Reach {
        targets: Arc::new(targets),
        prefix: first.prefix.clone(),
        files,
    })
}

/// A digest of the TLS files' contents (unreadable ones count as empty): a
/// reload that finds them changed rebuilds the upstream.
fn digest_files(tls: Option<&crate::config::Tls>, dir: &std::path::Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in tls
        .into_iter()
        .flat_map(|t| [&t.ca, &t.client_cert, &t.client_key])
        .flatten()
    {
        std::fs::read(dir.join(file))
            .unwrap_or_default()
            .hash(&mut hasher);
    }
    hasher.finish()
}

/// Configured headers, each name and value checked where it is written.
fn header_map(
    path: &Path,
    headers: &BTreeMap<String, String>,
    problems: &mut Problems,
) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    let mut ok = true;
    for (name, value) in headers {
        let at = path.key(name.as_str());
        let parsed_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid header name"));
        let parsed_value = HeaderValue::from_str(value).map_err(|_| {
            format!("the value of header `{name}` holds characters a header cannot carry")
        });
        match (
            problems.check(&at, parsed_name),
            problems.check(&at, parsed_value),
        ) {
            // A `Host` is sent as the URI's authority (HTTP/2's `:authority`).
            (Some(name), Some(_))
                if name == http::header::HOST && value.parse::<http::uri::Authority>().is_err() =>
            {
                problems.at(
                    at,
                    format!("a Host header is a host and an optional port: `{value}` is not"),
                );
                ok = false;
            }
            (Some(name), Some(value)) => {
                map.insert(name, value);
            }
            _ => ok = false,
        }
    }
    ok.then_some(map)
}

/// What compiling one endpoint needs to know.
struct EndpointCompiler<'a> {
    path: &'a Path,
    endpoint: &'a Endpoint,
    route: &'a RouteSpec,
    config: &'a Config,
    upstreams: &'a BTreeMap<&'a str, Arc<UpstreamPlan>>,
    /// The `auth` map's schemes that compiled.
    schemes: &'a BTreeMap<String, Arc<crate::auth::Scheme>>,
    /// The store's settings when rate limits are enforced fleet-wide.
    shared_limits: Option<&'a StoreSettings>,
    /// The config file's folder, where relative paths start.
    dir: &'a std::path::Path,
    /// Backend name → index, built once for every check that needs it.
    names: HashMap<&'a str, usize>,
}

impl EndpointCompiler<'_> {
    fn compile(&self, limits: BodyLimits, problems: &mut Problems) -> Option<EndpointPlan> {
        let (path, endpoint) = (self.path, self.endpoint);
        let cap = self.config.server.request_timeout;
        let deadline = endpoint.timeout.unwrap_or(cap);
        if let Some(timeout) = endpoint.timeout {
            if timeout > cap {
                problems.at(
                    path.key("timeout"),
                    format!("timeout {timeout} is longer than server.request_timeout ({cap}), which caps every endpoint"),
                );
            }
        }
        let forward_headers: Vec<HeaderName> = endpoint
            .forward_headers
            .iter()
            .enumerate()
            .filter_map(|(i, header)| {
                let name = HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| format!("`{header}` is not a valid header name"))
                    .and_then(|name| match crate::headers::is_hop_by_hop(&name) {
                        true => Err(format!("`{header}` describes the client's connection, not the request: hop-by-hop headers are never forwarded")),
                        false => Ok(name),
                    });
                problems.check(&path.key("forward_headers").index(i), name)
            })
            .collect();
        let server = &self.config.server;
        let root = endpoint.response.as_ref().and_then(|response| {
            let at = path.key("response").key("root");
            if endpoint.proxy.is_some() {
                problems.at(
                    path.key("response"),
                    "a pass-through answers with the upstream's own answer: `response` shapes merged backends",
                );
            }
            problems.check(&at, FieldPath::parse(&response.root).map_err(|e| e.to_string()))
        });
        let auth = super::auth::endpoint(path, endpoint, self.config, self.schemes, problems);
        let (backends, proxy, max_body) = match (&endpoint.proxy, endpoint.backends.is_empty()) {
            (Some(proxy), true) => {
                let max_body = match proxy.max_body {
                    Some(max) => {
                        size_within(
                            problems,
                            path.key("proxy").key("max_body"),
                            "max_body",
                            max,
                            bounds::PROXY_BODY,
                        );
                        max.0
                    }
                    None => server.max_request_body.0,
                };
                (vec![self.proxy(proxy, problems)], true, max_body)
            }
            (proxy, none) => {
                if proxy.is_some() {
                    problems.at(
                        path.key("proxy"),
                        "an endpoint either calls `backends` or passes requests through with `proxy`, not both",
                    );
                } else if none {
                    problems.at(
                        path.key("backends"),
                        "no backends: an endpoint calls at least one, or passes requests through with `proxy`",
                    );
                }
                self.check_names(problems);
                let backends = endpoint
                    .backends
                    .iter()
                    .enumerate()
                    .map(|(i, backend)| self.backend(i, backend, deadline.0, problems))
                    .collect();
                check_cycles(path, endpoint, &self.names, problems);
                (backends, false, server.max_request_body.0)
            }
        };
        if let Some(limit) = &endpoint.rate_limit {
            // Requests without the claim would all share one bucket.
            if limit.key.trim_start().starts_with("claim:") {
                super::auth::check_token_reader(
                    &path.key("rate_limit").key("key"),
                    &format_args!("key `{}`", limit.key),
                    endpoint,
                    self.config,
                    problems,
                );
            }
        }
        let rate_limit = match &endpoint.rate_limit {
            None => Some(None),
            Some(limit) => rate_limit(
                &path.key("rate_limit"),
                &endpoint.route,
                limit,
                self.shared_limits,
                problems,
            )
            .map(Some),
        };
        let mut backends: Vec<BackendPlan> = backends.into_iter().collect::<Option<_>>()?;
        export_fields(&mut backends, &self.names);
        let client_values = client_values(&backends);
        let reads_body = backends
            .iter()
            .map(|b| match b.body {
                Some(CallBody::Forward) => ReadsBody::Bytes,
                _ => ReadsBody::No,
            })
            .chain(
                client_values
                    .iter()
                    .filter(|v| matches!(v.var, Var::Body(_)))
                    .map(|_| ReadsBody::Json),
            )
            .max()
            .unwrap_or(ReadsBody::No);
        let auth = auth?;
        Some(EndpointPlan {
            route: endpoint.route.clone(),
            deadline: deadline.0,
            forward_headers,
            forward_query: endpoint.forward_query.clone(),
            expose_errors: endpoint.expose_errors,
            rate_limit: rate_limit?,
            client_values,
            reads_body,
            max_body,
            meters: EndpointMeters::new(
                &endpoint.route,
                backends.iter().map(|b| b.name.clone()).collect(),
            ),
            backends,
            proxy,
            root,
            limits,
            auth,
        })
    }

    /// A pass-through's one call: its upstream, and its path (the route's
    /// own by default), which may use the route's captures, forwarded query
    /// values and the token's claims, nothing else.
    fn proxy(&self, proxy: &crate::config::Proxy, problems: &mut Problems) -> Option<BackendPlan> {
        let at = self.path.key("proxy");
        let upstream = self.upstreams.get(proxy.upstream.as_str()).cloned();
        if upstream.is_none() && !self.config.upstreams.contains_key(&proxy.upstream) {
            problems.at(
                at.key("upstream"),
                unknown_upstream(&proxy.upstream, &self.config.upstreams),
            );
        }
        let (text, text_at) = match &proxy.path {
            Some(text) => (text.as_str(), at.key("path")),
            None => (self.route.path.as_str(), self.path.key("route")),
        };
        if !text.starts_with('/') {
            problems.at(text_at.clone(), format!("path `{text}` must start with /"));
        }
        let template = problems.check(&text_at, Template::parse(text));
        for var in template.iter().flat_map(Template::vars) {
            self.check_var(&text_at, var, None, problems);
        }
        let upstream = upstream?;
        Some(BackendPlan {
            name: upstream.name.clone(),
            timeout: upstream.timeout,
            task_name: upstream.name.clone().into(),
            upstream,
            template: template?,
            method: self.route.method,
            required: true,
            shape: Shape::default(),
            pass_status: false,
            after: Vec::new(),
            exported: Vec::new(),
            awaited: false,
            body: None,
            append: false,
            fallback: None,
            return_headers: Vec::new(),
        })
    }

    fn check_names(&self, problems: &mut Problems) {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, backend) in self.endpoint.backends.iter().enumerate() {
            let at = self.path.key("backends").index(i).key("name");
            let name = backend.name.as_str();
            if !is_name(name) {
                problems.at(
                    at.clone(),
                    format!("backend name `{name}`: use {NAME_RULE}"),
                );
            } else if NAMESPACES.contains(&name) {
                let what = match name {
                    "jwt" => "claim",
                    "body" => "field",
                    _ => "name",
                };
                problems.at(
                    at.clone(),
                    format!(
                        "`{name}` is reserved for {{{name}.{what}}} in templates: pick another name"
                    ),
                );
            }
            if let Some(earlier) = first.insert(name, i) {
                problems.at(
                    at,
                    format!("two backends are named `{name}` (also backends[{earlier}])"),
                );
            }
        }
    }

    fn backend(
        &self,
        index: usize,
        backend: &Backend,
        deadline: std::time::Duration,
        problems: &mut Problems,
    ) -> Option<BackendPlan> {
        let at = self.path.key("backends").index(index);
        let (upstream, template) = self.target(&at, backend, problems);
        let after: Vec<usize> = backend
            .after
            .iter()
            .enumerate()
            .filter_map(|(j, dep)| {
                let result = if dep == &backend.name {
                    Err(format!("backend `{dep}` cannot come after itself"))
                } else {
                    self.names
                        .get(dep.as_str())
                        .copied()
                        .ok_or_else(|| unknown_backend(dep, &self.names))
                };
                problems.check(&at.key("after").index(j), result)
            })
            .collect();
        let timeout = backend
            .timeout
            .map(|d| d.0)
            .or(upstream.as_ref().and_then(|u| u.timeout));
        if let Some(own) = backend.timeout {
            if own.0 > deadline {
                problems.at(
                    at.key("timeout"),
                    format!(
                        "timeout {own} is longer than the endpoint's deadline ({})",
                        crate::config::Duration(deadline)
                    ),
                );
            }
        }
        if backend.pass_status && !backend.required {
            problems.at(
                at.key("pass_status"),
                "pass_status applies to required backends: add `required: true`",
            );
        }
        let shape = shape(&at, backend, problems);
        let body = backend
            .body
            .as_ref()
            .and_then(|body| self.call_body(&at, backend, body, problems));
        if backend.append && backend.into.is_none() {
            problems.at(
                at.key("append"),
                "append concatenates onto the array at the backend's `into`: give it an `into`",
            );
        }
        let fallback = self.fallback(&at, backend, shape.as_ref(), problems);
        let return_headers = return_headers(&at.key("return_headers"), backend, problems);
        Some(BackendPlan {
            name: backend.name.clone(),
            upstream: upstream?,
            template: template?,
            method: backend.method,
            body: match (&backend.body, body) {
                (None, _) => None,
                (Some(_), body) => Some(body?),
            },
            append: backend.append,
            fallback: match (&backend.fallback, fallback) {
                (None, _) => None,
                (Some(_), fallback) => Some(fallback?),
            },
            return_headers: return_headers?,
            required: backend.required,
            timeout,
            shape: shape?,
            pass_status: backend.pass_status,
            after,
            exported: Vec::new(),
            awaited: self
                .endpoint
                .backends
                .iter()
                .any(|other| other.after.contains(&backend.name)),
            task_name: backend.name.clone().into(),
        })
    }

    /// Where the backend's calls go, and its path template (checked against
    /// the route, the query allow-list and the dependencies).
    fn target(
        &self,
        at: &Path,
        backend: &Backend,
        problems: &mut Problems,
    ) -> (Option<Arc<UpstreamPlan>>, Option<Template>) {
        let (upstream, text, text_at) = match (&backend.upstream, &backend.url) {
            (Some(name), None) => {
                let upstream = self.upstreams.get(name.as_str()).cloned();
                if upstream.is_none() && !self.config.upstreams.contains_key(name) {
                    problems.at(
                        at.key("upstream"),
                        unknown_upstream(name, &self.config.upstreams),
                    );
                }
                (
                    upstream,
                    backend.path.as_deref().unwrap_or(""),
                    at.key("path"),
                )
            }
            (None, Some(url)) => {
                if backend.path.is_some() {
                    problems.at(
                        at.key("path"),
                        "`path` goes with `upstream`; with `url`, put the path in the URL",
                    );
                }
                match Origin::split(url) {
                    Ok((origin, path)) => {
                        let name = format!("{}/{}", self.endpoint.route, backend.name);
                        let url_at = at.key("url");
                        let upstream = reach(
                            at,
                            &|_| url_at.clone(),
                            &name,
                            &[origin],
                            None,
                            self.dir,
                            problems,
                        )
                        .map(|reach| {
                            Arc::new(UpstreamPlan {
                                name: name.clone(),
                                prefix: reach.prefix,
                                targets: reach.targets,
                                compression: false,
                                files: reach.files,
                                headers: HeaderMap::new(),
                                timeout: None,
                                policies: None,
                                config: None,
                                shared_cache: None,
                            })
                        });
                        (upstream, path, at.key("url"))
                    }
                    Err(message) => {
                        problems.at(at.key("url"), message);
                        (None, "", at.key("url"))
                    }
                }
            }
            _ => {
                problems.at(
                    at.clone(),
                    format!(
                        "backend `{}` needs exactly one of `upstream` (with `path`) or `url`",
                        backend.name
                    ),
                );
                return (None, None);
            }
        };
        if !text.is_empty() && !text.starts_with('/') {
            problems.at(text_at.clone(), format!("path `{text}` must start with /"));
        }
        let template = problems.check(&text_at, Template::parse(text));
        for var in template.iter().flat_map(Template::vars) {
            self.check_var(&text_at, var, Some(&backend.after), problems);
        }
        (upstream, template)
    }

    /// A backend's body: on a call whose method carries one; `forward` and
    /// `{body.…}` on a route whose requests carry one; the template parsed
    /// and its placeholders checked, each where it is written.
    fn call_body(
        &self,
        at: &Path,
        backend: &Backend,
        body: &BackendBody,
        problems: &mut Problems,
    ) -> Option<CallBody> {
        let at = at.key("body");
        let before = problems.0.len();
        if !backend.method.carries_body() {
            problems.at(
                at.clone(),
                format!(
                    "a {} call sends no body: give the backend `method: POST` (or PUT, PATCH)",
                    backend.method.as_str()
                ),
            );
        }
        let body = match body {
            BackendBody::Forward(_) => {
                let method = self.route.method;
                if !method.carries_body() {
                    problems.at(
                        at.clone(),
                        format!(
                            "`body: forward` sends the client's body, and a {} request has none: use it on a POST, PUT or PATCH route",
                            method.as_str()
                        ),
                    );
                }
                CallBody::Forward
            }
            BackendBody::Template(value) => {
                let (template, found) = BodyTemplate::compile_all(value);
                for (string, message) in found {
                    problems.at(at.join(&string), message);
                }
                for (hole, var) in template.holes() {
                    self.check_var(&at.join(hole), var, Some(&backend.after), problems);
                }
                CallBody::Template(template)
            }
        };
        (problems.0.len() == before).then_some(body)
    }

    /// What stands in for a failed optional backend, shaped by its `into`.
    fn fallback(
        &self,
        at: &Path,
        backend: &Backend,
        shape: Option<&Shape>,
        problems: &mut Problems,
    ) -> Option<Body> {
        let value = backend.fallback.as_ref()?;
        let before = problems.0.len();
        if backend.required {
            problems.at(
                at.key("fallback"),
                "a fallback stands in for an optional backend that failed, and a required one fails the response: remove `required: true` or the fallback",
            );
        }
        if backend.append && !value.is_array() {
            problems.at(
                at.key("fallback"),
                "with `append: true` the fallback is appended too: make it an array (`[]` adds nothing)",
            );
        }
        let into = Shape {
            into: shape?.into.clone(),
            ..Shape::default()
        };
        let shaped = into.apply(value.clone()).ok()?;
        (problems.0.len() == before).then_some(Body::Value(shaped))
    }

    /// Whether `var` can have a value where it is written: a capture of the
    /// route, an allow-listed query parameter, a field of a body the route's
    /// requests carry, a claim of a token the endpoint verifies, a
    /// dependency in `after` (`None`: a pass-through, which
    /// has none and never reads the body it streams).
    fn check_var(&self, at: &Path, var: &Var, after: Option<&[String]>, problems: &mut Problems) {
        let route = self.route;
        match var {
            Var::Route(param) if !route.params.contains(param) => problems.at(
                at.clone(),
                format!(
                    "{var} is not captured by route `{} {}` (it captures: {})",
                    route.method.as_str(),
                    route.path,
                    list_or_none(route.params.iter().map(String::as_str))
                ),
            ),
            Var::Query(name) if !self.endpoint.forward_query.contains(name) => problems.at(
                at.clone(),
                format!("{var} would send the client's `{name}` on: add `{name}` to the endpoint's forward_query"),
            ),
            Var::Jwt(_) => {
                super::auth::check_jwt_var(at, var, self.endpoint, self.config, problems);
            }
            Var::Body(_) if after.is_none() => problems.at(
                at.clone(),
                format!("{var}: a pass-through streams the client's body without reading it"),
            ),
            Var::Body(_) if !route.method.carries_body() => problems.at(
                at.clone(),
                format!(
                    "{var} reads the client's body, and a {} request has none: use it on a POST, PUT or PATCH route",
                    route.method.as_str()
                ),
            ),
            Var::Field { backend: dep, .. } => match after {
                None => problems.at(
                    at.clone(),
                    format!("{var}: a pass-through calls no other backend to take it from"),
                ),
                Some(_) if !self.names.contains_key(dep.as_str()) => {
                    problems.at(at.clone(), format!("{var}: {}", unknown_backend(dep, &self.names)));
                }
                Some(after) if !after.contains(dep) => problems.at(
                    at.clone(),
                    format!("{var} uses `{dep}`'s answer, so `{dep}` must be listed in `after`"),
                ),
                Some(_) => {}
            },
            _ => {}
        }
    }
}

/// A backend's `return_headers`, each a header name that describes its
/// answer to the client (not the connection, nor the backend's own body).
fn return_headers(
    at: &Path,
    backend: &Backend,
    problems: &mut Problems,
) -> Option<Vec<HeaderName>> {
    let before = problems.0.len();
    let names = backend
        .return_headers
        .iter()
        .enumerate()
        .filter_map(|(i, header)| {
            let name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("`{header}` is not a valid header name"))
                .and_then(|name| {
                    if crate::headers::is_hop_by_hop(&name) {
                        Err(format!("`{header}` describes a connection, not the answer: hop-by-hop headers are never passed on"))
                    } else if crate::headers::describes_merged_body(&name) {
                        Err(format!("`{header}` is the gateway's own: it describes the merged answer, not this backend's"))
                    } else {
                        Ok(name)
                    }
                });
            problems.check(&at.index(i), name)
        })
        .collect();
    (problems.0.len() == before).then_some(names)
}

/// An endpoint's `rate_limit`, its numbers within their bounds.
fn rate_limit(
    path: &Path,
    route: &str,
    limit: &crate::config::RateLimit,
    shared: Option<&StoreSettings>,
    problems: &mut Problems,
) -> Option<Limit> {
    let before = problems.0.len();
    let rule = problems.check(&path.key("key"), KeyRule::parse(&limit.key));
    let rate = limit.rate;
    count_within(
        problems,
        path.key("rate"),
        "the rate's count",
        rate.count.into(),
        1,
        bounds::COUNT,
    );
    let interval = rate.per / rate.count.max(1);
    if rate.per > bounds::DAY {
        problems.at(
            path.key("rate"),
            format!("rate {rate}: the unit is at most a day"),
        );
    } else if interval < std::time::Duration::from_micros(1) {
        problems.at(
            path.key("rate"),
            format!("rate {rate} is more than a million a second"),
        );
    }
    let burst = limit.burst.unwrap_or(rate.count);
    count_within(
        problems,
        path.key("burst"),
        "burst",
        burst.into(),
        1,
        bounds::COUNT,
    );
    let gcra = Gcra::new(rate, burst);
    if let Some(gcra) = gcra {
        // The whole burst comes back within a year: the limiter counts time
        // in nanoseconds, and no client waits longer.
        if gcra.window() > 366 * bounds::DAY {
            problems.at(
                path.key("burst"),
                format!("burst {burst} at {rate} takes more than a year to come back"),
            );
        }
    }
    let (rule, gcra) = (rule?, gcra?);
    // Shared, this node enforces its share by itself while the store is
    // unreachable; the buckets in the store are named after the route.
    let (local, shared) = match shared {
        None => (gcra, None),
        Some(store) => (
            gcra.share(store.fleet_size.unwrap_or(1)),
            Some(format!(
                "{}:rl:{}:",
                store.prefix,
                &digest(route.as_bytes())[..16]
            )),
        ),
    };
    (problems.0.len() == before).then(|| Limit::new(rule, gcra, local, shared, limit.clone()))
}

/// The backend's shape, every path parsed where it is written.
fn shape(at: &Path, backend: &Backend, problems: &mut Problems) -> Option<Shape> {
    let before = problems.0.len();
    let path = |problems: &mut Problems, at: Path, text: &str| {
        problems.check(&at, FieldPath::parse(text).map_err(|e| e.to_string()))
    };
    let extract = backend
        .extract
        .as_ref()
        .and_then(|p| path(problems, at.key("extract"), p));
    let into = backend
        .into
        .as_ref()
        .and_then(|p| path(problems, at.key("into"), p));
    if into.as_ref().is_some_and(|p| p.segments()[0] == ERRORS_KEY) {
        problems.at(
            at.key("into"),
            format!(
                "`{ERRORS_KEY}` belongs to the gateway (expose_errors): nest the answer elsewhere"
            ),
        );
    }
    let select = backend.select.as_ref().map(|paths| {
        paths
            .iter()
            .enumerate()
            .filter_map(|(i, p)| path(problems, at.key("select").index(i), p))
            .collect()
    });
    let drop = backend
        .drop
        .iter()
        .enumerate()
        .filter_map(|(i, p)| path(problems, at.key("drop").index(i), p))
        .collect();
    let mut rename = Vec::with_capacity(backend.rename.len());
    for (from, to) in &backend.rename {
        let here = at.key("rename").key(from.as_str());
        let parsed = path(problems, here.clone(), from);
        if to.is_empty() || to.contains('.') {
            problems.at(
                here,
                format!(
                    "rename `{from}` to `{to}`: the new name is one key, not empty and without dots"
                ),
            );
        } else if let Some(from) = parsed {
            rename.push((from, to.clone()));
        }
    }
    (problems.0.len() == before).then_some(Shape {
        extract,
        select,
        drop,
        rename,
        into,
    })
}

/// Reports each cycle of `after` once, naming its members in order.
fn check_cycles(
    path: &Path,
    endpoint: &Endpoint,
    index: &HashMap<&str, usize>,
    problems: &mut Problems,
) {
    let deps: Vec<Vec<usize>> = endpoint
        .backends
        .iter()
        .map(|b| {
            b.after
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    // Colour-marking depth-first search, with an explicit stack (a long
    // chain of `after` cannot overflow the thread's): 0 unvisited, 1 on the
    // path, 2 done.
    let mut state = vec![0u8; deps.len()];
    let mut cycles: Vec<Vec<usize>> = Vec::new();
    for start in 0..deps.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            match deps[node].get(*next) {
                None => {
                    state[node] = 2;
                    stack.pop();
                }
                Some(&dep) => {
                    *next += 1;
                    match state[dep] {
                        0 => {
                            state[dep] = 1;
                            stack.push((dep, 0));
                        }
                        1 => {
                            let from = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                            cycles.push(stack[from..].iter().map(|&(n, _)| n).collect());
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    let mut reported: HashSet<Vec<usize>> = HashSet::new();
    for cycle in cycles {
        let mut key = cycle.clone();
        key.sort_unstable();
        if !reported.insert(key) {
            continue;
        }
        let first = cycle.iter().copied().min().unwrap_or(0);
        let mut names: Vec<&str> = cycle
            .iter()
            .map(|&i| endpoint.backends[i].name.as_str())
            .collect();
        names.push(names[0]);
        problems.at(
            path.key("backends").index(first).key("after"),
            format!("`after` makes a cycle: {}", names.join(" → ")),
        );
    }
}

/// The client's values the backends' templates use, each once, with the
/// strictest place it goes in a URL.
fn client_values(backends: &[BackendPlan]) -> Vec<ClientValue> {
    let mut values: Vec<ClientValue> = Vec::new();
    let in_url = backends
        .iter()
        .flat_map(|b| b.template.parts())
        .filter_map(|part| match part {
            Part::Var(var, place) => Some((var, Some(*place))),
            Part::Literal(_) => None,
        });
    let in_body = backends
        .iter()
        .filter_map(|b| match &b.body {
            Some(CallBody::Template(template)) => Some(template),
            _ => None,
        })
        .flat_map(BodyTemplate::vars)
        .map(|var| (var, None));
    for (var, place) in in_url.chain(in_body) {
        if !var.given_by_client() {
            continue;
        }
        match values.iter_mut().find(|v| &v.var == var) {
            Some(known) => {
                known.in_url = match (known.in_url, place) {
                    (Some(Place::Path), _) | (_, Some(Place::Path)) => Some(Place::Path),
                    (known, place) => known.or(place),
                }
            }
            None => values.push(ClientValue {
                var: var.clone(),
                in_url: place,
            }),
        }
    }
    values
}

/// Records, on each backend, which of its fields its dependents' templates read.
fn export_fields(backends: &mut [BackendPlan], names: &HashMap<&str, usize>) {
    let wanted: Vec<(usize, FieldPath)> = backends
        .iter()
        .flat_map(|b| {
            let body = match &b.body {
                Some(CallBody::Template(template)) => template.vars().collect(),
                _ => Vec::new(),
            };
            b.template.vars().chain(body)
        })
        .filter_map(|var| match var {
            Var::Field { backend, path } => names.get(backend.as_str()).map(|&i| (i, path.clone())),
            _ => None,
        })
        .collect();
    for (index, path) in wanted {
        if !backends[index].exported.contains(&path) {
            backends[index].exported.push(path);
        }
    }
}

fn unknown_upstream(name: &str, upstreams: &BTreeMap<String, Upstream>) -> String {
    format!(
        "unknown upstream `{name}` (defined upstreams: {})",
        list_or_none(upstreams.keys().map(String::as_str))
    )
}

fn unknown_backend(name: &str, names: &HashMap<&str, usize>) -> String {
    let mut known: Vec<&str> = names.keys().copied().collect();
    known.sort_unstable();
    format!(
        "no backend named `{name}` in this endpoint (backends: {})",
        list_or_none(known.into_iter())
    )
}

fn list_or_none<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<_> = items.collect();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}
