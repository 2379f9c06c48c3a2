//! Throw-away certificates for trying TLS with mocks: a CA made on the spot,
//! a server certificate it signs for `localhost`, `127.0.0.1` and `::1`,
//! and a client certificate for mTLS. Each run makes new keys; they are for
//! loopback experiments and tests, never for anything real.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::MockError;

/// The files [`make`] wrote.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Made {
    /// The CA's certificate (`ca.pem`): what a gateway trusts (`tls.ca`).
    pub ca: PathBuf,
    /// The server certificate (`mock.pem`) for `localhost`, `127.0.0.1`, `::1`.
    pub server_cert: PathBuf,
    /// Its key (`mock-key.pem`).
    pub server_key: PathBuf,
    /// A client certificate (`gateway.pem`), for mTLS (`tls.client_cert`).
    pub client_cert: PathBuf,
    /// Its key (`gateway-key.pem`).
    pub client_key: PathBuf,
}

/// Makes a new test CA and the certificates it signs, in `dir` (created if
/// need be; files of the same names are replaced).
pub fn make(dir: &Path) -> Result<Made, MockError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| MockError::Tls(format!("{what}: {e}"));
    std::fs::create_dir_all(dir)
        .map_err(|e| fail(&format!("cannot create {}", dir.display()), &e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA", &e))?;
    // A name of its own: two test CAs must not look like one renewed CA.
    params.distinguished_name.push(
        DnType::CommonName,
        format!(
            "fanout mock test CA {:08x} (not for production)",
            rand::random::<u32>()
        ),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().map_err(|e| fail("CA key", &e))?;
    let ca = CertifiedIssuer::self_signed(params, key).map_err(|e| fail("CA", &e))?;

    let leaf = |names: Vec<SanType>, usage: ExtendedKeyUsagePurpose, cn: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(cn, &e))?;
        params.subject_alt_names = names;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().map_err(|e| fail(cn, &e))?;
        let cert = params.signed_by(&key, &ca).map_err(|e| fail(cn, &e))?;
        Ok::<_, MockError>((cert.pem(), key.serialize_pem()))
    };
    let localhost = "localhost".try_into().map_err(|e| fail("localhost", &e))?;
    let server = leaf(
        vec![
            SanType::DnsName(localhost),
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
        "localhost",
    )?;
    let gateway = "gateway.test"
        .try_into()
        .map_err(|e| fail("gateway.test", &e))?;
    let client = leaf(
        vec![SanType::DnsName(gateway)],
        ExtendedKeyUsagePurpose::ClientAuth,
        "gateway.test",
    )?;
    let made = Made {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("mock.pem"),
        server_key: dir.join("mock-key.pem"),
        client_cert: dir.join("gateway.pem"),
        client_key: dir.join("gateway-key.pem"),
    };
    for (path, text) in [
        (&made.ca, ca.pem()),
        (&made.server_cert, server.0),
        (&made.server_key, server.1),
        (&made.client_cert, client.0),
        (&made.client_key, client.1),
    ] {
        std::fs::write(path, text)
            .map_err(|e| fail(&format!("cannot write {}", path.display()), &e))?;
    }
    Ok(made)
}
