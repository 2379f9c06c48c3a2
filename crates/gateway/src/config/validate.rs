//! Checks that need the whole configuration: references, cycles, templates,
//! limits. Every problem is collected, each with the path it is about.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Config, Endpoint, locate::Path, model::Upstream};
use crate::{
    plan::{
        route::RouteSpec,
        template::{Template, Var},
    },
    shape::FieldPath,
};

pub(crate) type Found = Vec<(Path, String)>;

pub(crate) fn validate(config: &Config) -> Found {
    let mut found = Found::new();
    let root = Path::root();
    let cap = config.server.request_timeout;
    if cap.0.is_zero() {
        found.push((
            root.key("server").key("request_timeout"),
            "request_timeout must be more than 0".into(),
        ));
    }
    for (name, upstream) in &config.upstreams {
        check_upstream(
            &root.key("upstreams").key(name.as_str()),
            name,
            upstream,
            &mut found,
        );
    }
    if config.endpoints.is_empty() {
        found.push((
            root.key("endpoints"),
            "no endpoints: add at least one under `endpoints`".into(),
        ));
    }
    let mut routes: HashMap<String, usize> = HashMap::new();
    for (i, endpoint) in config.endpoints.iter().enumerate() {
        let path = root.key("endpoints").index(i);
        match RouteSpec::parse(&endpoint.route) {
            Ok(route) => {
                if let Some(first) = routes.insert(route.shape(), i) {
                    found.push((
                        path.key("route"),
                        format!(
                            "route `{}` matches the same requests as endpoints[{first}] (`{}`)",
                            endpoint.route, config.endpoints[first].route
                        ),
                    ));
                }
                check_endpoint(&path, endpoint, &route, config, &mut found);
            }
            Err(message) => found.push((path.key("route"), message)),
        }
    }
    found
}

fn check_upstream(path: &Path, name: &str, upstream: &Upstream, found: &mut Found) {
    if let Err(message) = check_base_url(&upstream.url) {
        found.push((path.key("url"), format!("upstream `{name}`: {message}")));
    }
    if upstream.max_in_flight == Some(0) {
        found.push((
            path.key("max_in_flight"),
            "max_in_flight must be at least 1".into(),
        ));
    }
    if let Some(retry) = &upstream.retry {
        if retry.attempts == 0 {
            found.push((
                path.key("retry").key("attempts"),
                "attempts counts the first call too: at least 1".into(),
            ));
        }
    }
    if let Some(hedge) = &upstream.hedge {
        match (&hedge.delay, hedge.percentile) {
            (Some(_), Some(_)) | (None, None) => found.push((
                path.key("hedge"),
                "a hedge needs exactly one of `delay` (e.g. 30ms) or `percentile` (e.g. 95)".into(),
            )),
            (None, Some(p)) if !(p > 0.0 && p < 100.0) => found.push((
                path.key("hedge").key("percentile"),
                format!("percentile {p} must be between 0 and 100"),
            )),
            _ => {}
        }
    }
    if upstream.breaker.as_ref().is_some_and(|b| b.failures == 0) {
        found.push((
            path.key("breaker").key("failures"),
            "failures must be at least 1".into(),
        ));
    }
    if upstream.cache.as_ref().is_some_and(|c| c.max_entries == 0) {
        found.push((
            path.key("cache").key("max_entries"),
            "max_entries must be at least 1".into(),
        ));
    }
    for (header, value) in &upstream.headers {
        let at = path.key("headers").key(header.as_str());
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            found.push((at.clone(), format!("`{header}` is not a valid header name")));
        }
        if http::HeaderValue::from_str(value).is_err() {
            found.push((
                at,
                format!("the value of header `{header}` holds characters a header cannot carry"),
            ));
        }
    }
}

/// An upstream's base URL: `http://host[:port][/prefix]`, nothing after the path.
fn check_base_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "`{url}`: https upstreams are not supported yet; use http"
            ));
        }
        _ => return Err(format!("`{url}` must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!(
            "`{url}`: a base URL cannot hold a query or a fragment"
        ));
    }
    Ok(())
}

fn check_endpoint(
    path: &Path,
    endpoint: &Endpoint,
    route: &RouteSpec,
    config: &Config,
    found: &mut Found,
) {
    let cap = config.server.request_timeout;
    let deadline = endpoint.timeout.unwrap_or(cap);
    if let Some(timeout) = endpoint.timeout {
        if timeout > cap {
            found.push((
                path.key("timeout"),
                format!("timeout {timeout} is longer than server.request_timeout ({cap}), which caps every endpoint"),
            ));
        }
    }
    for (i, header) in endpoint.forward_headers.iter().enumerate() {
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            found.push((
                path.key("forward_headers").index(i),
                format!("`{header}` is not a valid header name"),
            ));
        }
    }
    if endpoint.backends.is_empty() {
        found.push((
            path.key("backends"),
            "no backends: an endpoint calls at least one".into(),
        ));
    }

    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, backend) in endpoint.backends.iter().enumerate() {
        let at = path.key("backends").index(i);
        let name = backend.name.as_str();
        if !is_backend_name(name) {
            found.push((
                at.key("name"),
                format!(
                    "backend name `{name}`: use letters, digits, _ and -, not starting with a digit"
                ),
            ));
        } else if name == "query" {
            found.push((
                at.key("name"),
                "`query` is reserved for {query.name} in templates: pick another name".into(),
            ));
        }
        if let Some(first) = names.insert(name, i) {
            found.push((
                at.key("name"),
                format!("two backends are named `{name}` (also backends[{first}])"),
            ));
        }
    }

    for (i, backend) in endpoint.backends.iter().enumerate() {
        let at = path.key("backends").index(i);
        let template = match (&backend.upstream, &backend.url) {
            (Some(upstream), None) => {
                if !config.upstreams.contains_key(upstream) {
                    found.push((
                        at.key("upstream"),
                        unknown_upstream(upstream, &config.upstreams),
                    ));
                }
                backend
                    .path
                    .as_deref()
                    .map(|p| (at.key("path"), p.to_owned()))
            }
            (None, Some(url)) => {
                if backend.path.is_some() {
                    found.push((
                        at.key("path"),
                        "`path` goes with `upstream`; with `url`, put the path in the URL".into(),
                    ));
                }
                match split_url(url) {
                    Ok(path_part) => Some((at.key("url"), path_part)),
                    Err(message) => {
                        found.push((at.key("url"), message));
                        None
                    }
                }
            }
            _ => {
                found.push((
                    at.clone(),
                    format!(
                        "backend `{}` needs exactly one of `upstream` (with `path`) or `url`",
                        backend.name
                    ),
                ));
                None
            }
        };
        if let Some((template_at, text)) = template {
            if !text.is_empty() && !text.starts_with('/') {
                found.push((
                    template_at.clone(),
                    format!("path `{text}` must start with /"),
                ));
            }
            match Template::parse(&text) {
                Ok(template) => check_vars(
                    &template_at,
                    &template,
                    backend,
                    endpoint,
                    route,
                    &names,
                    found,
                ),
                Err(message) => found.push((template_at, message)),
            }
        }
        for (j, dep) in backend.after.iter().enumerate() {
            if dep == &backend.name {
                found.push((
                    at.key("after").index(j),
                    format!("backend `{dep}` cannot come after itself"),
                ));
            } else if !names.contains_key(dep.as_str()) {
                found.push((at.key("after").index(j), unknown_backend(dep, &names)));
            }
        }
        if let Some(timeout) = backend.timeout {
            if timeout > deadline {
                found.push((
                    at.key("timeout"),
                    format!(
                        "timeout {timeout} is longer than the endpoint's deadline ({deadline})"
                    ),
                ));
            }
        }
        if backend.pass_status && !backend.required {
            found.push((
                at.key("pass_status"),
                "pass_status applies to required backends: add `required: true`".into(),
            ));
        }
        check_field_paths(&at, backend, found);
    }
    check_cycles(path, endpoint, found);
}

fn check_vars(
    at: &Path,
    template: &Template,
    backend: &super::Backend,
    endpoint: &Endpoint,
    route: &RouteSpec,
    names: &HashMap<&str, usize>,
    found: &mut Found,
) {
    for var in template.vars() {
        match var {
            Var::Route(param) if !route.params.contains(param) => found.push((
                at.clone(),
                format!(
                    "{var} is not captured by route `{} {}` (it captures: {})",
                    route.method.as_str(),
                    route.path,
                    list_or_none(route.params.iter().map(String::as_str))
                ),
            )),
            Var::Query(name) if !endpoint.forward_query.contains(name) => found.push((
                at.clone(),
                format!("{var} would send the client's `{name}` on: add `{name}` to the endpoint's forward_query"),
            )),
            Var::Field { backend: dep, path } => {
                if !names.contains_key(dep.as_str()) {
                    found.push((
                        at.clone(),
                        format!("{var}: {}", unknown_backend(dep, names)),
                    ));
                } else if !backend.after.contains(dep) {
                    found.push((
                        at.clone(),
                        format!(
                            "{var} uses `{dep}`'s answer, so `{dep}` must be listed in `after`"
                        ),
                    ));
                }
                if let Err(e) = FieldPath::parse(path) {
                    found.push((at.clone(), format!("{var}: {e}")));
                }
            }
            _ => {}
        }
    }
}

fn check_field_paths(at: &Path, backend: &super::Backend, found: &mut Found) {
    fn check(at: Path, text: &str, found: &mut Found) {
        if let Err(e) = FieldPath::parse(text) {
            found.push((at, e.to_string()));
        }
    }
    if let Some(extract) = &backend.extract {
        check(at.key("extract"), extract, found);
    }
    if let Some(into) = &backend.into {
        check(at.key("into"), into, found);
    }
    for (i, p) in backend.select.iter().flatten().enumerate() {
        check(at.key("select").index(i), p, found);
    }
    for (i, p) in backend.drop.iter().enumerate() {
        check(at.key("drop").index(i), p, found);
    }
    for (from, to) in &backend.rename {
        check(at.key("rename").key(from.as_str()), from, found);
        if to.is_empty() || to.contains('.') {
            found.push((
                at.key("rename").key(from.as_str()),
                format!(
                    "rename `{from}` to `{to}`: the new name is one key, not empty and without dots"
                ),
            ));
        }
    }
}

/// Reports each cycle of `after` once, naming its members in order.
fn check_cycles(path: &Path, endpoint: &Endpoint, found: &mut Found) {
    let index: HashMap<&str, usize> = endpoint
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| (b.name.as_str(), i))
        .collect();
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
    // Colour-marking depth-first search: 0 unvisited, 1 on the stack, 2 done.
    let mut state = vec![0u8; deps.len()];
    let mut reported: HashSet<Vec<usize>> = HashSet::new();
    fn visit(
        node: usize,
        deps: &[Vec<usize>],
        state: &mut [u8],
        stack: &mut Vec<usize>,
        cycles: &mut Vec<Vec<usize>>,
    ) {
        state[node] = 1;
        stack.push(node);
        for &next in &deps[node] {
            match state[next] {
                0 => visit(next, deps, state, stack, cycles),
                1 => {
                    let from = stack.iter().position(|&n| n == next).unwrap_or(0);
                    cycles.push(stack[from..].to_vec());
                }
                _ => {}
            }
        }
        stack.pop();
        state[node] = 2;
    }
    let mut cycles = Vec::new();
    for start in 0..deps.len() {
        if state[start] == 0 {
            visit(start, &deps, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    for cycle in cycles {
        let mut key = cycle.clone();
        key.sort_unstable();
        if !reported.insert(key) {
            continue;
        }
        let first = *cycle.iter().min().unwrap_or(&0);
        let mut names: Vec<&str> = cycle
            .iter()
            .map(|&i| endpoint.backends[i].name.as_str())
            .collect();
        names.push(names[0]);
        found.push((
            path.key("backends").index(first).key("after"),
            format!("`after` makes a cycle: {}", names.join(" → ")),
        ));
    }
}

/// Splits a backend's full URL into its fixed origin (checked) and its path
/// template; holes are only allowed in the path, so no value can change the host.
fn split_url(url: &str) -> Result<String, String> {
    let after_scheme = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            format!("`{url}`: https backends are not supported yet; use http")
        } else {
            format!("`{url}` must start with http://")
        }
    })?;
    let path_start = after_scheme.find('/').unwrap_or(after_scheme.len());
    let origin = &url[..7 + path_start];
    if origin.contains(['{', '}']) {
        return Err(format!(
            "`{url}`: the host and port cannot hold {{…}} values, only the path can"
        ));
    }
    check_base_url(origin)?;
    Ok(after_scheme[path_start..].to_owned())
}

fn is_backend_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
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
