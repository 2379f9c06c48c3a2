//! Endpoints compiled once, at load: route matcher, URL templates, shaping
//! steps, dependency order, header names. The per-request path does no parsing
//! of the configuration.

pub mod route;
pub mod template;

use std::{collections::HashMap, time::Duration};

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{
    config::{Config, Method},
    resilience::Policies,
    shape::{FieldPath, Shape},
};

use self::{route::RouteSpec, template::Template};

/// A whole configuration, ready to serve requests.
#[derive(Debug)]
pub struct Plan {
    router: HashMap<Method, matchit::Router<usize>>,
    /// Each upstream's policies and their state, by name.
    pub upstreams: Vec<(String, Arc<Policies>)>,
    /// The endpoints, in configuration order.
    pub endpoints: Vec<EndpointPlan>,
    /// Largest response body accepted from a backend, in bytes.
    pub max_backend_body: u64,
    /// Deepest JSON nesting accepted in a backend body.
    pub max_json_depth: u32,
    /// Largest request body accepted from a client, in bytes.
    pub max_request_body: u64,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// The configuration it was compiled from (for the admin API's `/config`).
    pub config: Config,
}

/// One endpoint, compiled.
#[derive(Debug)]
pub struct EndpointPlan {
    /// The route as written, for logs and errors.
    pub route: String,
    /// Whole-endpoint deadline.
    pub deadline: Duration,
    /// Client headers passed on to backends.
    pub forward_headers: Vec<HeaderName>,
    /// Client query parameters passed on to backends.
    pub forward_query: Vec<String>,
    /// Whether `_errors` is added to responses.
    pub expose_errors: bool,
    /// The backends, in declaration (merge) order.
    pub backends: Vec<BackendPlan>,
    /// Its metric handles, registered on first use.
    pub(crate) meters: crate::run::Meters,
}

/// One backend call of an endpoint, compiled.
#[derive(Debug)]
pub struct BackendPlan {
    /// Its name.
    pub name: String,
    /// `http://host:port` plus any base path of its upstream: fixed, never
    /// touched by request values.
    pub origin: String,
    /// The path and query template appended to `origin`.
    pub template: Template,
    /// The call's method.
    pub method: Method,
    /// Whether its failure fails the response.
    pub required: bool,
    /// Its own time limit: the backend's `timeout`, else its upstream's.
    pub timeout: Option<Duration>,
    /// How its answer is shaped.
    pub shape: Shape,
    /// Whether a 4xx of this (required) backend is returned as is.
    pub pass_status: bool,
    /// Indexes (in `EndpointPlan::backends`) of the backends it waits for.
    pub after: Vec<usize>,
    /// The fields of its answer that dependents' templates read (dot paths):
    /// only these are handed on, so its body is never copied.
    pub exported: Vec<String>,
    /// Headers its upstream adds to every call.
    pub headers: HeaderMap,
    /// The `Host` header for its origin, made once (unless its upstream's
    /// headers set one).
    pub host: Option<HeaderValue>,
    /// Its upstream's policies (shared with every backend of that upstream);
    /// none for a backend called by `url`.
    pub policies: Option<Arc<Policies>>,
    /// Its name as a task name, made once (a clone is a reference count).
    pub(crate) task_name: fanout_group::TaskName,
    /// Whether another backend waits for it (`after`): only then is its answer
    /// handed on, through a channel made per request.
    pub(crate) awaited: bool,
}

impl Plan {
    /// Compiles a configuration that [`Config::parse`] accepted.
    ///
    /// # Errors
    ///
    /// Only on inputs the checks would have refused (a message saying which).
    pub fn compile(config: &Config) -> Result<Plan, String> {
        let mut router: HashMap<Method, matchit::Router<usize>> = HashMap::new();
        let upstreams: Vec<(String, Arc<Policies>)> = config
            .upstreams
            .iter()
            .map(|(name, upstream)| (name.clone(), Arc::new(Policies::new(name, upstream))))
            .collect();
        let mut endpoints = Vec::with_capacity(config.endpoints.len());
        for (index, endpoint) in config.endpoints.iter().enumerate() {
            let spec = RouteSpec::parse(&endpoint.route)?;
            router
                .entry(spec.method)
                .or_default()
                .insert(spec.path.clone(), index)
                .map_err(|e| format!("route `{}`: {e}", endpoint.route))?;
            let names: HashMap<&str, usize> = endpoint
                .backends
                .iter()
                .enumerate()
                .map(|(i, b)| (b.name.as_str(), i))
                .collect();
            let backends = endpoint
                .backends
                .iter()
                .map(|backend| {
                    let upstream = backend
                        .upstream
                        .as_ref()
                        .and_then(|u| config.upstreams.get(u));
                    let (origin, path) = match (&backend.url, upstream) {
                        (Some(url), _) => split_origin(url),
                        (None, Some(upstream)) => (
                            upstream.url.trim_end_matches('/').to_owned(),
                            backend.path.clone().unwrap_or_default(),
                        ),
                        (None, None) => {
                            return Err(format!(
                                "backend `{}` has no upstream or url",
                                backend.name
                            ));
                        }
                    };
                    let mut headers = HeaderMap::new();
                    for (name, value) in upstream.map(|u| &u.headers).into_iter().flatten() {
                        let name =
                            HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
                        let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
                        headers.insert(name, value);
                    }
                    let host = if headers.contains_key(http::header::HOST) {
                        None
                    } else {
                        host_header(&origin)
                    };
                    Ok(BackendPlan {
                        name: backend.name.clone(),
                        origin,
                        template: Template::parse(&path)?,
                        method: backend.method,
                        required: backend.required,
                        timeout: backend
                            .timeout
                            .or(upstream.and_then(|u| u.timeout))
                            .map(|d| d.0),
                        shape: shape_of(backend)?,
                        pass_status: backend.pass_status,
                        after: backend
                            .after
                            .iter()
                            .filter_map(|d| names.get(d.as_str()).copied())
                            .collect(),
                        exported: Vec::new(),
                        host,
                        headers,
                        policies: backend
                            .upstream
                            .as_ref()
                            .and_then(|u| upstreams.iter().find(|(name, _)| name == u))
                            .map(|(_, p)| p.clone()),
                        task_name: backend.name.clone().into(),
                        awaited: false,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            let mut backends = backends;
            export_fields(&mut backends, &names);
            let awaited: Vec<usize> = backends.iter().flat_map(|b| b.after.clone()).collect();
            for index in awaited {
                backends[index].awaited = true;
            }
            endpoints.push(EndpointPlan {
                route: endpoint.route.clone(),
                deadline: endpoint.timeout.unwrap_or(config.server.request_timeout).0,
                forward_headers: endpoint
                    .forward_headers
                    .iter()
                    .map(|h| HeaderName::from_bytes(h.as_bytes()).map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()?,
                forward_query: endpoint.forward_query.clone(),
                expose_errors: endpoint.expose_errors,
                meters: crate::run::Meters::new(backends.len()),
                backends,
            });
        }
        Ok(Plan {
            router,
            upstreams,
            endpoints,
            max_backend_body: config.server.max_backend_body.0,
            max_json_depth: config.server.max_json_depth,
            max_request_body: config.server.max_request_body.0,
            header_read_timeout: config.server.header_read_timeout.0,
            shutdown_grace: config.server.shutdown_grace.0,
            config: config.clone(),
        })
    }

    /// The index of the endpoint for a request, with its route captures
    /// (still percent-encoded, as they were in the request path).
    pub fn route(&self, method: Method, path: &str) -> Option<(usize, Vec<(String, String)>)> {
        let matched = self.router.get(&method)?.at(path).ok()?;
        let params = matched
            .params
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Some((*matched.value, params))
    }

    /// Whether any endpoint serves this path with another method (for 405).
    pub fn allows_other_method(&self, path: &str) -> bool {
        self.router.values().any(|r| r.at(path).is_ok())
    }
}

/// Records, on each backend, which of its fields its dependents' templates read.
fn export_fields(backends: &mut [BackendPlan], names: &HashMap<&str, usize>) {
    let wanted: Vec<(usize, String)> = backends
        .iter()
        .flat_map(|b| b.template.vars())
        .filter_map(|var| match var {
            template::Var::Field { backend, path } => {
                names.get(backend.as_str()).map(|&i| (i, path.clone()))
            }
            _ => None,
        })
        .collect();
    for (index, path) in wanted {
        if !backends[index].exported.contains(&path) {
            backends[index].exported.push(path);
        }
    }
}

/// `Host` as the HTTP client would write it: the host, and the port unless
/// it is 80.
fn host_header(origin: &str) -> Option<HeaderValue> {
    let uri: http::Uri = origin.parse().ok()?;
    let host = uri.host()?;
    let value = match uri.port_u16() {
        Some(port) if port != 80 => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok()
}

/// Splits a full backend URL into its origin and its path template.
fn split_origin(url: &str) -> (String, String) {
    let after_scheme = url.strip_prefix("http://").unwrap_or(url);
    let at = after_scheme.find('/').unwrap_or(after_scheme.len());
    (
        format!("http://{}", &after_scheme[..at]),
        after_scheme[at..].to_owned(),
    )
}

fn shape_of(backend: &crate::config::Backend) -> Result<Shape, String> {
    let path = |s: &String| FieldPath::parse(s).map_err(|e| e.to_string());
    Ok(Shape {
        extract: backend.extract.as_ref().map(path).transpose()?,
        select: backend
            .select
            .as_ref()
            .map(|s| s.iter().map(path).collect())
            .transpose()?,
        drop: backend.drop.iter().map(path).collect::<Result<_, _>>()?,
        rename: backend
            .rename
            .iter()
            .map(|(from, to)| Ok((path(from)?, to.clone())))
            .collect::<Result<_, String>>()?,
        into: backend.into.as_ref().map(path).transpose()?,
    })
}
