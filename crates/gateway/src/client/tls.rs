//! TLS to upstreams: the rustls configuration of one upstream (roots, client
//! certificate, ALPN), built when the config is compiled so that a missing
//! or unreadable certificate is a located problem, and the words for a
//! handshake that failed.
//!
//! The crypto provider is ring: it builds from source with a C compiler
//! alone and quickly, and the handshake cost does not matter once pools are
//! warm (connections are reused; see BENCHMARKS.md, "TLS to backends").

use std::{
    path::Path,
    sync::{Arc, OnceLock},
};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};

/// What a `tls` block and its files come to.
#[derive(Debug)]
pub(crate) struct TlsSettings {
    /// The rustls configuration, verification always on.
    pub(crate) config: Arc<ClientConfig>,
    /// `tls.server_name`, which replaces every target's own name.
    pub(crate) server_name: Option<ServerName<'static>>,
}

/// A problem with one key of a `tls` block.
pub(crate) type TlsProblem = (&'static str, String);

/// The TLS settings for an upstream: `ca`, `client_cert`, `client_key` are
/// paths relative to `dir`; `alpn` the protocols to offer.
pub(crate) fn settings(
    tls: Option<&crate::config::Tls>,
    dir: &Path,
    alpn: &[&[u8]],
) -> Result<TlsSettings, Vec<TlsProblem>> {
    let mut problems = Vec::new();
    let roots = match tls.and_then(|t| t.ca.as_deref()) {
        Some(ca) => match certificates(dir, ca) {
            Ok(certs) => {
                let mut roots = RootCertStore::empty();
                let (_, ignored) = roots.add_parsable_certificates(certs);
                if roots.is_empty() {
                    problems.push((
                        "ca",
                        format!("`{ca}` holds no certificate a root can be made of"),
                    ));
                } else if ignored > 0 {
                    problems.push((
                        "ca",
                        format!("`{ca}`: {ignored} of its certificates cannot be parsed"),
                    ));
                }
                Arc::new(roots)
            }
            Err(message) => {
                problems.push(("ca", message));
                Arc::new(RootCertStore::empty())
            }
        },
        None => system_roots(),
    };
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| vec![("ca", format!("no TLS version available: {e}"))])?
            .with_root_certificates(roots);
    let cert = tls.and_then(|t| t.client_cert.as_deref());
    let key = tls.and_then(|t| t.client_key.as_deref());
    let config = match (cert, key) {
        (None, None) => Some(builder.with_no_client_auth()),
        (Some(_), None) => {
            problems.push((
                "client_cert",
                "client_cert needs client_key beside it".into(),
            ));
            None
        }
        (None, Some(_)) => {
            problems.push((
                "client_key",
                "client_key needs client_cert beside it".into(),
            ));
            None
        }
        (Some(cert), Some(key)) => {
            let chain = certificates(dir, cert)
                .map_err(|m| problems.push(("client_cert", m)))
                .ok();
            let key_der = private_key(dir, key)
                .map_err(|m| problems.push(("client_key", m)))
                .ok();
            match (chain, key_der) {
                (Some(chain), Some(key_der)) => match builder.with_client_auth_cert(chain, key_der)
                {
                    Ok(config) => Some(config),
                    Err(e) => {
                        problems.push((
                            "client_key",
                            format!("`{key}` does not go with `{cert}`: {e}"),
                        ));
                        None
                    }
                },
                _ => None,
            }
        }
    };
    let server_name = match tls.and_then(|t| t.server_name.as_deref()) {
        Some(name) => match ServerName::try_from(name.to_owned()) {
            Ok(name) => Some(name),
            Err(_) => {
                problems.push((
                    "server_name",
                    format!("`{name}` is not a DNS name or an IP address"),
                ));
                None
            }
        },
        None => None,
    };
    match config {
        Some(mut config) if problems.is_empty() => {
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsSettings {
                config: Arc::new(config),
                server_name,
            })
        }
        _ => Err(problems),
    }
}

/// Every certificate in a PEM file.
fn certificates(dir: &Path, file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let path = dir.join(file);
    let text =
        std::fs::read(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{}` is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn private_key(dir: &Path, file: &str) -> Result<PrivateKeyDer<'static>, String> {
    let path = dir.join(file);
    let text =
        std::fs::read(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|_| {
        format!(
            "`{}` holds no PEM private key (PKCS#8, RSA or EC)",
            path.display()
        )
    })
}

/// The system's roots, read once; Mozilla's (webpki-roots) where the system
/// has none.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            Arc::new(roots)
        })
        .clone()
}

/// Why a handshake failed, in words, if `error` (or what caused it) is a
/// TLS error.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(tls) = rustls_error(e) {
            return Some(words(tls));
        }
        // Worded already by `in_words` below a layer (h2) that keeps only
        // the text of an I/O error.
        let text = e.to_string();
        if text.starts_with(WORDED) {
            return Some(text);
        }
        cause = e.source();
    }
    None
}

/// An I/O error of a TLS stream with its rustls cause put in words, so the
/// reason survives HTTP/2, which keeps only an I/O error's kind and text
/// (TLS 1.3 reports a refused client certificate on the first read, and
/// that read is the h2 connection's).
pub(crate) fn in_words(error: std::io::Error) -> std::io::Error {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => std::io::Error::new(error.kind(), words(tls)),
        None => error,
    }
}

const WORDED: &str = "TLS: ";

fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    e.downcast_ref::<rustls::Error>().or_else(|| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    })
}

fn words(error: &rustls::Error) -> String {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error};
    match error {
        Error::InvalidCertificate(Cert::UnknownIssuer) => {
            "TLS: the backend's certificate is not signed by a trusted root (unknown issuer): give its CA in tls.ca".into()
        }
        Error::InvalidCertificate(Cert::BadSignature) => {
            "TLS: the backend's certificate names a trusted CA as its issuer, but that CA did not sign it (a different or renewed CA of the same name): give its CA in tls.ca".into()
        }
        Error::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            "TLS: the backend's certificate is not valid for the name the gateway asked for (name mismatch): fix the URL's host or tls.server_name".into()
        }
        Error::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            "TLS: the backend's certificate has expired".into()
        }
        Error::InvalidCertificate(Cert::NotValidYet | Cert::NotValidYetContext { .. }) => {
            "TLS: the backend's certificate is not valid yet".into()
        }
        Error::AlertReceived(Alert::CertificateRequired) => {
            "TLS: the backend requires a client certificate: give tls.client_cert and tls.client_key".into()
        }
        Error::AlertReceived(
            Alert::BadCertificate | Alert::UnknownCA | Alert::CertificateUnknown | Alert::AccessDenied,
        ) => "TLS: the backend refused the gateway's client certificate".into(),
        other => format!("TLS: {other}"),
    }
}
