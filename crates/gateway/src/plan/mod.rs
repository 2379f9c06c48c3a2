//! A configuration compiled, once, into what serving needs: the route table,
//! each endpoint's backends with their URL templates, shapes and dependency
//! order, each upstream with its policies. Every problem in the file is found
//! here, in one pass ([`compile`]), each with its line and column; a plan
//! exists only for a configuration without problems, and serving parses
//! nothing.
//!
//! ```
//! use fanout_gateway::{Plan, config::Format};
//!
//! let yaml = r#"
//! upstreams:
//!   users: { url: "http://127.0.0.1:9101", timeout: 500ms }
//! endpoints:
//!   - route: GET /users/{id}
//!     backends:
//!       - { name: profile, upstream: users, path: "/users/{id}", required: true }
//! "#;
//! let plan = Plan::parse(yaml, Format::Yaml, "gateway.yaml", |_| None).unwrap();
//! assert_eq!(plan.config().endpoints[0].backends[0].name, "profile");
//!
//! let err = Plan::parse(&yaml.replace("upstream: users", "upstream: user"), Format::Yaml, "gateway.yaml", |_| None)
//!     .unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "gateway.yaml:7:36: unknown upstream `user` (defined upstreams: users)"
//! );
//! ```

mod auth;
mod compile;
pub(crate) mod origin;
pub(crate) mod route;

use std::{
    path::{Path as FsPath, PathBuf},
    sync::Arc,
    time::Duration,
};

use http::{HeaderMap, HeaderName};

use crate::{
    config::{Config, ConfigError, Document, Format, Method, Upstream},
    metrics::EndpointMeters,
    resilience::Policies,
    shape::{Body, FieldPath, Shape},
    template::{BodyTemplate, Template, Var},
};

use self::route::Router;

/// A route's captured values by name, still percent-encoded.
pub(crate) type Captures<'p> = Vec<(String, &'p str)>;

/// A whole configuration, checked and ready to serve requests.
///
/// Built by [`Plan::load`] or [`Plan::parse`], which report every problem of
/// the configuration with its line and column; `fanout check` is that and
/// nothing more.
#[derive(Debug)]
pub struct Plan {
    router: Router,
    /// The endpoints, in configuration order.
    pub(crate) endpoints: Vec<Arc<EndpointPlan>>,
    /// The named upstreams, in name order.
    pub(crate) upstreams: Vec<Arc<UpstreamPlan>>,
    /// Limits of the listener.
    pub(crate) server: ServerLimits,
    /// TLS of the listener (`server.tls`), built from its files.
    pub(crate) listener_tls: Option<Arc<rustls::ServerConfig>>,
    /// Cross-origin calls from browsers (`server.cors`).
    pub(crate) cors: Option<crate::edge::cors::CorsPolicy>,
    /// The fleet's shared store (`store`), if there is one.
    pub(crate) store: Option<Arc<crate::store::Store>>,
    /// Whose `x-forwarded-for` is believed (`server.trusted_proxies`).
    pub(crate) trusted_proxies: crate::edge::client_ip::TrustedProxies,
    /// The files it read besides the config (certificates, keys, JWKS).
    files: Vec<PathBuf>,
    /// The `auth` map's schemes, in name order.
    pub(crate) auth: Vec<Arc<crate::auth::Scheme>>,
    /// The configuration it was compiled from.
    config: Config,
}

/// What the listener enforces for every request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerLimits {
    /// How long a client may take to send its request headers.
    pub(crate) header_read_timeout: Duration,
    /// How long in-flight requests may take to finish on shutdown.
    pub(crate) shutdown_grace: Duration,
    /// Open connections at most.
    pub(crate) max_connections: usize,
    /// How long a connection may sit idle.
    pub(crate) idle_timeout: Duration,
    /// How long a connection may make no progress sending.
    pub(crate) write_timeout: Duration,
    /// Response bytes one connection may leave unread.
    pub(crate) response_buffer_per_connection: u64,
    /// Response bytes all connections together may leave unread.
    pub(crate) response_buffer_total: u64,
}

/// What a backend may send.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyLimits {
    /// Largest body, in bytes.
    pub(crate) max_body: u64,
    /// Deepest JSON nesting.
    pub(crate) max_depth: u32,
}

/// A downstream service: where it is, what every call to it carries, and the
/// policies (with their state) that its calls share. A backend given by
/// `url` has one of its own, with no policies.
#[derive(Debug)]
pub(crate) struct UpstreamPlan {
    /// Its name (`url:` backends: the backend's `endpoint/backend` path).
    pub(crate) name: String,
    /// The base path every call's path starts with (shared by its URLs).
    pub(crate) prefix: String,
    /// Where calls go: its targets, how they are picked and spoken to.
    pub(crate) targets: Arc<crate::upstream::Targets>,
    /// Whether compressed answers are asked for.
    pub(crate) compression: bool,
    /// A digest of the certificate files it was built from: a reload that
    /// finds them changed builds it afresh.
    pub(crate) files: u64,
    /// Headers sent with every call (configured ones replace a client's).
    pub(crate) headers: HeaderMap,
    /// The limit for each attempt.
    pub(crate) timeout: Option<Duration>,
    /// Its policies, `None` when it has none (every `url:` backend, and an
    /// upstream that configures none).
    pub(crate) policies: Option<Policies>,
    /// The configuration it was built from (`None` for a `url:` backend):
    /// a reload keeps the state of an upstream whose configuration is equal.
    pub(crate) config: Option<Upstream>,
    /// Where its cache is shared in the store (`cache_shared`), if it is.
    pub(crate) shared_cache: Option<String>,
}

/// One endpoint, compiled.
#[derive(Debug)]
pub(crate) struct EndpointPlan {
    /// The route as written, for logs, metrics and errors.
    pub(crate) route: String,
    /// Whole-endpoint deadline.
    pub(crate) deadline: Duration,
    /// Client headers passed on to backends.
    pub(crate) forward_headers: Vec<HeaderName>,
    /// Client query parameters passed on to backends.
    pub(crate) forward_query: Vec<String>,
    /// Whether `_errors` is added to responses.
    pub(crate) expose_errors: bool,
    /// Its rate limit (`rate_limit`).
    pub(crate) rate_limit: Option<crate::edge::ratelimit::Limit>,
    /// The client's values (route captures, query parameters, fields of its
    /// body, claims of its token) its templates use: each must be there,
    /// valid UTF-8, and fit where it goes, or the request is a 400 before
    /// any call.
    pub(crate) client_values: Vec<ClientValue>,
    /// What it does with the client's body.
    pub(crate) reads_body: ReadsBody,
    /// The largest client body it accepts, in bytes.
    pub(crate) max_body: u64,
    /// The backends, in declaration (merge) order; a pass-through endpoint
    /// has one, its upstream.
    pub(crate) backends: Vec<BackendPlan>,
    /// Whether requests pass through to `backends[0]`, streamed both ways.
    pub(crate) proxy: bool,
    /// Answer with the value at this path of the merged object.
    pub(crate) root: Option<FieldPath>,
    /// What a backend may send.
    pub(crate) limits: BodyLimits,
    /// Its metric handles.
    pub(crate) meters: EndpointMeters,
    /// The credentials it requires (`None`: none).
    pub(crate) auth: Option<crate::auth::EndpointAuth>,
}

/// A value of the client's request that a template fills in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientValue {
    /// `{name}`, `{query.name}`, `{body.path}` or `{jwt.claim}`.
    pub(crate) var: Var,
    /// Where in a URL it goes, if it does: a path segment somewhere (then it
    /// cannot be empty) or only a query. A value in a URL is a scalar.
    pub(crate) in_url: Option<crate::template::Place>,
}

/// What an endpoint does with the client's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ReadsBody {
    /// Nothing: it is never read.
    No,
    /// Its bytes, sent on as they are (`body: forward`).
    Bytes,
    /// Its JSON (`{body.…}` in a template), and its bytes if forwarded.
    Json,
}

/// What a backend call sends as its body.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum CallBody {
    /// The client's body and its content type, as received.
    Forward,
    /// A JSON template, sent as `application/json`.
    Template(BodyTemplate),
}

/// One backend call of an endpoint, compiled.
#[derive(Debug)]
pub(crate) struct BackendPlan {
    /// Its name.
    pub(crate) name: String,
    /// Where it goes, and the policies on the way.
    pub(crate) upstream: Arc<UpstreamPlan>,
    /// The path and query template appended to the upstream's origin.
    pub(crate) template: Template,
    /// The call's method.
    pub(crate) method: Method,
    /// Its body, if it sends one.
    pub(crate) body: Option<CallBody>,
    /// Whether its array is concatenated onto the one at its `into`.
    pub(crate) append: bool,
    /// What stands in for its answer when it fails (`into` still applies).
    pub(crate) fallback: Option<Body>,
    /// Its response headers that reach the client.
    pub(crate) return_headers: Vec<HeaderName>,
    /// Whether its failure fails the response.
    pub(crate) required: bool,
    /// Its own time limit for each attempt: the backend's `timeout`, else its
    /// upstream's.
    pub(crate) timeout: Option<Duration>,
    /// How its answer is shaped.
    pub(crate) shape: Shape,
    /// Whether a 4xx of this (required) backend is returned as is.
    pub(crate) pass_status: bool,
    /// Indexes (in [`EndpointPlan::backends`]) of the backends it waits for.
    pub(crate) after: Vec<usize>,
    /// The fields of its answer that its dependents' templates read: only
    /// these are handed on, so its body is never copied. Empty when nothing
    /// waits for it.
    pub(crate) exported: Vec<FieldPath>,
    /// Whether another backend waits for it (`after`).
    pub(crate) awaited: bool,
    /// Its name as a task name, made once (a clone is a reference count).
    pub(crate) task_name: fanout_group::TaskName,
}

impl Plan {
    /// Takes over every auth scheme of `previous` whose configuration and
    /// files are the same: the keys it fetched stay, and no reload makes
    /// the gateway fetch every issuer's keys again.
    fn keep_schemes_of(&mut self, previous: &Plan) {
        for scheme in &mut self.auth {
            let kept = previous.auth.iter().find(|old| {
                old.name == scheme.name && old.config == scheme.config && old.files == scheme.files
            });
            let Some(kept) = kept else { continue };
            let replaced = std::mem::replace(scheme, kept.clone());
            for endpoint in &mut self.endpoints {
                let Some(endpoint) = Arc::get_mut(endpoint) else {
                    continue;
                };
                for used in endpoint.auth.iter_mut().flat_map(|a| a.schemes.iter_mut()) {
                    if Arc::ptr_eq(used, &replaced) {
                        *used = kept.clone();
                    }
                }
            }
        }
    }

    /// Reads, expands (from the process environment), checks and compiles a
    /// configuration file.
    ///
    /// # Errors
    ///
    /// Every problem found, each with its line and column.
    pub fn load(path: &FsPath) -> Result<Plan, ConfigError> {
        compile::compile(&Document::load(path)?)
    }

    /// Expands, checks and compiles configuration text. `file` names it in
    /// errors (and relative paths in it start from its folder); `env` looks up
    /// `${env.NAME}` variables.
    ///
    /// # Errors
    ///
    /// Every problem found, each with its line and column.
    pub fn parse(
        source: &str,
        format: Format,
        file: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Plan, ConfigError> {
        compile::compile(&Document::parse(source, format, file, env)?)
    }

    /// The files the plan was made from besides the config itself
    /// (certificates and keys), as found from the config's folder: a change
    /// to one of them calls for a reload as a change of the config does.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The configuration it was compiled from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The endpoint for a request, with its route captures (still
    /// percent-encoded, as they were in the request path).
    pub(crate) fn route<'p>(
        &self,
        method: Method,
        path: &'p str,
    ) -> Option<(&Arc<EndpointPlan>, Captures<'p>)> {
        let (index, params) = self.router.find(method, path)?;
        Some((&self.endpoints[index], params))
    }

    /// Whether any endpoint serves this path with another method (for 405).
    pub(crate) fn serves_path(&self, path: &str) -> bool {
        self.router.serves_path(path)
    }

    /// Starts what the upstreams do in the background (DNS refresh, health
    /// checks) on the current runtime; those of a replaced plan stop with it.
    pub(crate) fn start(&self) {
        if let Some(store) = &self.store {
            store.start();
        }
        for limit in self.endpoints.iter().filter_map(|e| e.rate_limit.as_ref()) {
            limit.local.start();
        }
        for upstream in &self.upstreams {
            upstream.targets.start();
        }
        for endpoint in &self.endpoints {
            for backend in &endpoint.backends {
                backend.upstream.targets.start();
            }
        }
        for scheme in &self.auth {
            scheme.start();
        }
    }

    /// Takes over the state (breakers, budgets, hedging latencies, caches) of
    /// every upstream of `previous` whose configuration is the same in this
    /// plan, so that a reload does not forget what the gateway learned about
    /// an upstream it did not change.
    pub(crate) fn keep_state_of(&mut self, previous: &Plan) {
        self.keep_schemes_of(previous);
        // The same store keeps its connection and what it knows of Redis.
        if let (Some(store), Some(old)) = (&self.store, &previous.store) {
            store.adopt(old);
        }
        let same_store = self.store.as_ref().map(|s| s.settings())
            == previous.store.as_ref().map(|s| s.settings());
        // A rate limit that did not change keeps its buckets.
        for endpoint in &mut self.endpoints {
            let Some(endpoint) = Arc::get_mut(endpoint) else {
                continue;
            };
            let Some(limit) = endpoint.rate_limit.as_mut() else {
                continue;
            };
            let kept = previous
                .endpoints
                .iter()
                .filter(|old| old.route == endpoint.route)
                .filter_map(|old| old.rate_limit.as_ref())
                .find(|old| old.config == limit.config && old.local.gcra() == limit.local.gcra());
            if let Some(old) = kept {
                limit.local = old.local.clone();
            }
        }
        for upstream in &mut self.upstreams {
            let kept = previous.upstreams.iter().find(|old| {
                old.name == upstream.name
                    && old.config == upstream.config
                    && old.files == upstream.files
                    && old.shared_cache == upstream.shared_cache
                    && (same_store || upstream.shared_cache.is_none())
            });
            let Some(kept) = kept else { continue };
            let replaced = std::mem::replace(upstream, kept.clone());
            for endpoint in &mut self.endpoints {
                // A plan being installed is not shared yet.
                let Some(endpoint) = Arc::get_mut(endpoint) else {
                    continue;
                };
                for backend in &mut endpoint.backends {
                    if Arc::ptr_eq(&backend.upstream, &replaced) {
                        backend.upstream = kept.clone();
                    }
                }
            }
        }
    }
}
