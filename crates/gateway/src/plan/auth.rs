//! The compiler's part for authentication: the `auth` map's schemes, and
//! what each endpoint requires (`auth`, `scopes`, `claims_to_headers`, and
//! `{jwt.…}` in its templates). Called from [`super::compile`], in its one
//! pass, with its problem list.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path as FsPath, PathBuf},
    sync::Arc,
    time::Duration,
};

use http::HeaderName;

use super::compile::Problems;
use crate::template::{Var, names};
use crate::{
    auth::{
        self, ApiKeys, EndpointAuth, JwtScheme, Kind, Scheme,
        jwks::{Jwks, KeySet},
        jwt,
    },
    client::{self, ClientSettings},
    config::{ApiKey, AuthNames, AuthScheme, Config, Endpoint, Http2, Jwt, Path, Tls},
    shape::FieldPath,
};

/// The default `leeway`.
const LEEWAY: Duration = Duration::from_secs(60);
/// The largest `leeway` accepted.
const MAX_LEEWAY: Duration = Duration::from_secs(600);
/// The most keys one `api_key` scheme may list.
const MAX_KEYS: usize = 10_000;

/// Every scheme of the `auth` map that compiles, by name.
pub(super) fn schemes(
    config: &Config,
    dir: &FsPath,
    problems: &mut Problems,
) -> BTreeMap<String, Arc<Scheme>> {
    config
        .auth
        .iter()
        .filter_map(|(name, scheme)| {
            let path = Path::root().key("auth").key(name.as_str());
            let compiled = compile_scheme(&path, name, scheme, dir, problems)?;
            Some((name.clone(), Arc::new(compiled)))
        })
        .collect()
}

fn compile_scheme(
    path: &Path,
    name: &str,
    scheme: &AuthScheme,
    dir: &FsPath,
    problems: &mut Problems,
) -> Option<Scheme> {
    if !names::is_name(name) {
        problems.at(
            path.clone(),
            format!("scheme name `{name}`: use {}", names::NAME_RULE),
        );
    }
    let kind = match (&scheme.jwt, &scheme.api_key) {
        (Some(jwt), None) => Kind::Jwt(compile_jwt(&path.key("jwt"), name, jwt, dir, problems)?),
        (None, Some(keys)) => Kind::ApiKey(compile_api_key(&path.key("api_key"), keys, problems)?),
        _ => {
            problems.at(
                path.clone(),
                format!("scheme `{name}` needs exactly one of `jwt` or `api_key`"),
            );
            return None;
        }
    };
    Some(Scheme {
        name: name.to_owned(),
        kind,
        config: scheme.clone(),
        files: digest(scheme, dir),
    })
}

fn compile_jwt(
    path: &Path,
    name: &str,
    config: &Jwt,
    dir: &FsPath,
    problems: &mut Problems,
) -> Option<JwtScheme> {
    let before = problems.len();
    if !auth::install_crypto() {
        problems.at(
            path.clone(),
            "no signature provider is available for JWT validation",
        );
    }
    let algorithms: Vec<jsonwebtoken::Algorithm> = config
        .algorithms
        .iter()
        .enumerate()
        .filter_map(|(i, alg)| {
            problems.check(&path.key("algorithms").index(i), jwt::parse_algorithm(alg))
        })
        .collect();
    if config.algorithms.is_empty() {
        problems.at(
            path.key("algorithms"),
            format!(
                "algorithms is empty: name at least one of {}",
                jwt::ACCEPTABLE.join(", ")
            ),
        );
    }
    if config.issuer.trim().is_empty() {
        problems.at(path.key("issuer"), "issuer must not be empty");
    }
    let audience = config.audience.as_slice();
    if audience.is_empty() || audience.iter().any(|a| a.trim().is_empty()) {
        problems.at(
            path.key("audience"),
            "audience must name at least one audience, none of them empty",
        );
    }
    let leeway = config.leeway.map_or(LEEWAY, |l| l.0);
    if leeway > MAX_LEEWAY {
        problems.at(
            path.key("leeway"),
            format!(
                "leeway {} is more than {}",
                crate::config::Duration(leeway),
                crate::config::Duration(MAX_LEEWAY)
            ),
        );
    }
    let keys = match (&config.jwks_url, &config.jwks_file) {
        (Some(url), None) => remote_keys(path, name, url, config.jwks_ca.as_deref(), dir, problems),
        (None, Some(file)) => {
            if config.jwks_ca.is_some() {
                problems.at(
                    path.key("jwks_ca"),
                    "jwks_ca goes with an https:// jwks_url; a jwks_file is read, not fetched",
                );
            }
            let keys = problems.check(
                &path.key("jwks_file"),
                std::fs::read(dir.join(file))
                    .map_err(|e| format!("cannot read `{file}`: {e}"))
                    .and_then(|bytes| KeySet::parse(&bytes).map_err(|e| format!("`{file}`: {e}"))),
            );
            if let Some(keys) = &keys {
                if !algorithms.is_empty() && !keys.fits_any(&algorithms) {
                    problems.at(
                        path.key("jwks_file"),
                        format!(
                            "`{file}` holds no key for the scheme's algorithms ({})",
                            config.algorithms.join(", ")
                        ),
                    );
                }
            }
            keys.map(Jwks::fixed)
        }
        _ => {
            problems.at(
                path.clone(),
                format!("scheme `{name}` needs exactly one of `jwks_url` or `jwks_file`"),
            );
            None
        }
    };
    let keys = keys?;
    (problems.len() == before).then(|| {
        JwtScheme::new(
            Arc::new(keys),
            &config.issuer,
            audience,
            &algorithms,
            leeway,
        )
    })
}

/// Keys fetched from `url`, over TLS with `ca` (or the system's roots) for
/// an `https://` URL.
fn remote_keys(
    path: &Path,
    name: &str,
    url: &str,
    ca: Option<&str>,
    dir: &FsPath,
    problems: &mut Problems,
) -> Option<Jwks> {
    let at = path.key("jwks_url");
    let uri: http::Uri = problems.check(
        &at,
        url.parse()
            .map_err(|e| format!("jwks_url `{url}` is not a URL: {e}")),
    )?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            problems.at(
                at,
                format!("jwks_url `{url}` must start with http:// or https://"),
            );
            return None;
        }
    };
    if uri.host().is_none_or(str::is_empty) {
        problems.at(at, format!("jwks_url `{url}` names no host"));
        return None;
    }
    let tls = if https {
        let tls = Tls {
            ca: ca.map(str::to_owned),
            client_cert: None,
            client_key: None,
            server_name: None,
        };
        match client::tls::settings(Some(&tls), dir, &[b"http/1.1"]) {
            Ok(settings) => Some(settings),
            Err(found) => {
                for (_, message) in found {
                    problems.at(path.key("jwks_ca"), message);
                }
                return None;
            }
        }
    } else {
        if ca.is_some() {
            problems.at(
                path.key("jwks_ca"),
                "jwks_ca applies to an https:// jwks_url: this one is http://",
            );
            return None;
        }
        None
    };
    Some(Jwks::remote(
        name,
        uri,
        Arc::new(ClientSettings::new(tls, Http2::Never)),
    ))
}

fn compile_api_key(path: &Path, config: &ApiKey, problems: &mut Problems) -> Option<ApiKeys> {
    let before = problems.len();
    let header = problems.check(
        &path.key("header"),
        HeaderName::from_bytes(config.header.as_bytes())
            .map_err(|_| format!("`{}` is not a valid header name", config.header))
            .and_then(|name| match crate::headers::is_hop_by_hop(&name) {
                true => Err(format!(
                    "`{}` describes the client's connection: a key cannot travel in it",
                    config.header
                )),
                false => Ok(name),
            }),
    );
    if config.keys.is_empty() {
        problems.at(
            path.key("keys"),
            "keys is empty: list at least one `sha256:<hex>` (`fanout hash-key` prints it)",
        );
    } else if config.keys.len() > MAX_KEYS {
        problems.at(
            path.key("keys"),
            format!("{} keys is more than {MAX_KEYS}", config.keys.len()),
        );
    }
    let hashes: Vec<[u8; 32]> = config
        .keys
        .iter()
        .enumerate()
        .filter_map(|(i, key)| {
            problems.check(&path.key("keys").index(i), auth::api_key::parse_hash(key))
        })
        .collect();
    let header = header?;
    (problems.len() == before).then(|| ApiKeys::new(header, hashes))
}

/// What `endpoint` (at `path`) requires of a request; `None` when it has a
/// problem (reported), `Some(None)` when it requires nothing.
pub(super) fn endpoint(
    path: &Path,
    endpoint: &Endpoint,
    config: &Config,
    schemes: &BTreeMap<String, Arc<Scheme>>,
    problems: &mut Problems,
) -> Option<Option<EndpointAuth>> {
    let before = problems.len();
    let names: &[String] = endpoint.auth.as_ref().map_or(&[], AuthNames::as_slice);
    let name_at = |i: usize| match &endpoint.auth {
        Some(AuthNames::Many(_)) => path.key("auth").index(i),
        _ => path.key("auth"),
    };
    if endpoint.auth.is_some() && names.is_empty() {
        problems.at(
            path.key("auth"),
            "auth names no scheme: name one from the `auth` map, or leave `auth` out",
        );
    }
    let mut compiled = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        if !config.auth.contains_key(name) {
            problems.at(
                name_at(i),
                format!(
                    "unknown auth scheme `{name}` (defined schemes: {})",
                    list(config.auth.keys())
                ),
            );
        } else if let Some(scheme) = schemes.get(name) {
            compiled.push(scheme.clone());
        }
    }
    let api_key_scheme = names
        .iter()
        .find(|n| config.auth.get(*n).is_some_and(|s| s.jwt.is_none()));
    let any_jwt = names
        .iter()
        .any(|n| config.auth.get(n).is_some_and(|s| s.jwt.is_some()));
    if !endpoint.scopes.is_empty() {
        if names.is_empty() {
            problems.at(
                path.key("scopes"),
                "scopes are checked on a token: add `auth` with a JWT scheme",
            );
        } else if let Some(key) = api_key_scheme {
            problems.at(
                path.key("scopes"),
                format!(
                    "scopes come from a token's claims, and `{key}` is an API-key scheme whose keys carry none: give it an endpoint of its own, or drop scopes"
                ),
            );
        }
    }
    for (i, scope) in endpoint.scopes.iter().enumerate() {
        if scope.is_empty()
            || scope
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\\')
        {
            problems.at(
                path.key("scopes").index(i),
                format!("scope `{scope}`: a scope is one word, without spaces or quotes"),
            );
        }
    }
    if !endpoint.claims_to_headers.is_empty() && !any_jwt {
        problems.at(
            path.key("claims_to_headers"),
            "claims_to_headers reads a token's claims: add `auth` with a JWT scheme",
        );
    }
    let mut claim_headers = Vec::with_capacity(endpoint.claims_to_headers.len());
    for (header, claim) in &endpoint.claims_to_headers {
        let at = path.key("claims_to_headers").key(header.as_str());
        let name = problems.check(&at, claim_header(header, endpoint, config));
        let claim = problems.check(
            &at,
            FieldPath::parse(claim).map_err(|e| format!("claim {e}")),
        );
        if let (Some(name), Some(claim)) = (name, claim) {
            claim_headers.push((name, claim));
        }
    }
    if problems.len() != before {
        return None;
    }
    if names.is_empty() {
        return Some(None);
    }
    // A scheme with problems of its own (reported) leaves the endpoint out.
    if compiled.len() != names.len() {
        return None;
    }
    Some(Some(EndpointAuth {
        schemes: compiled,
        scopes: endpoint.scopes.clone(),
        claim_headers,
    }))
}

/// `header` as a claim header of `endpoint`: a valid name, not one the
/// gateway or the connection owns, not forwarded from the client, not set
/// by an upstream the endpoint calls.
fn claim_header(header: &str, endpoint: &Endpoint, config: &Config) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(header.as_bytes())
        .map_err(|_| format!("`{header}` is not a valid header name"))?;
    if crate::headers::is_hop_by_hop(&name)
        || matches!(name.as_str(), "x-forwarded-for" | "x-forwarded-host")
    {
        return Err(format!(
            "`{header}` is set by the gateway or the connection: pick another header"
        ));
    }
    if endpoint
        .forward_headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case(header))
    {
        return Err(format!(
            "`{header}` is also in forward_headers: it comes from the token, never from the client, so remove it there"
        ));
    }
    let upstreams: BTreeSet<&str> = endpoint
        .backends
        .iter()
        .filter_map(|b| b.upstream.as_deref())
        .collect();
    for upstream in upstreams {
        let sets = config
            .upstreams
            .get(upstream)
            .is_some_and(|u| u.headers.keys().any(|h| h.eq_ignore_ascii_case(header)));
        if sets {
            return Err(format!(
                "`{header}` is also set by upstream `{upstream}` (its `headers`): one of them would be lost"
            ));
        }
    }
    Ok(name)
}

/// `{jwt.…}` (at `at`) needs a token on every request of the endpoint:
/// every scheme of its `auth` must be a JWT scheme.
pub(super) fn check_jwt_var(
    at: &Path,
    var: &Var,
    endpoint: &Endpoint,
    config: &Config,
    problems: &mut Problems,
) {
    check_token_reader(at, var, endpoint, config, problems);
}

/// What reads the request's token (`what`: a `{jwt.…}` template value, a
/// `claim:` rate-limit key) needs one on every request of the endpoint:
/// every scheme of its `auth` must be a JWT scheme (a request an API key
/// accepted has no claims).
pub(super) fn check_token_reader(
    at: &Path,
    what: &dyn std::fmt::Display,
    endpoint: &Endpoint,
    config: &Config,
    problems: &mut Problems,
) {
    let names: &[String] = endpoint.auth.as_ref().map_or(&[], AuthNames::as_slice);
    if names.is_empty() {
        problems.at(
            at.clone(),
            format!(
                "{what} reads the request's token: add `auth` with a JWT scheme to the endpoint"
            ),
        );
    } else if let Some(key) = names
        .iter()
        .find(|n| config.auth.get(*n).is_some_and(|s| s.jwt.is_none()))
    {
        problems.at(
            at.clone(),
            format!(
                "{what} reads the request's token, and `{key}` is an API-key scheme: a request it accepts has no token"
            ),
        );
    }
}

/// The files the schemes read (JWKS files, CA files), from the config's folder.
pub(super) fn files(config: &Config, dir: &FsPath) -> Vec<PathBuf> {
    config
        .auth
        .values()
        .filter_map(|s| s.jwt.as_ref())
        .flat_map(|j| [&j.jwks_file, &j.jwks_ca])
        .flatten()
        .map(|file| dir.join(file))
        .collect()
}

/// A digest of the files a scheme reads (unreadable ones count as empty).
fn digest(scheme: &AuthScheme, dir: &FsPath) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in scheme
        .jwt
        .iter()
        .flat_map(|j| [&j.jwks_file, &j.jwks_ca])
        .flatten()
    {
        std::fs::read(dir.join(file))
            .unwrap_or_default()
            .hash(&mut hasher);
    }
    hasher.finish()
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
