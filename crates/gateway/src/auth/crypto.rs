//! `jsonwebtoken`'s signature checks on `ring`, the crypto library rustls
//! already brings into the gateway (its `aws_lc_rs` and `rust_crypto`
//! features would each add a second crypto stack). Only verification: the
//! gateway never signs, and never checks an HMAC signature (a JWKS holds
//! public keys; an HS* token checked against one is the key-confusion
//! attack), so both are refused here whatever the caller asks.

use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey,
    crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils},
    errors::{Error, ErrorKind, Result},
    jwk::ThumbprintHash,
    signature,
};
use ring::signature as ring_sig;

/// Makes this the process's `jsonwebtoken` provider, unless one was already
/// installed (an embedding program's choice stands). Returns whether a
/// provider is in place.
pub(crate) fn install() -> bool {
    let _ = PROVIDER.install_default();
    CryptoProvider::try_get_default().is_some()
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(unsupported()),
        rsa_pub_components_from_public_key: |_| Err(unsupported()),
        ec_pub_components_from_private_key: |_, _| Err(unsupported()),
        ed_pub_components_from_private_key: |_, _| Err(unsupported()),
        compute_digest: digest,
    },
};

fn unsupported() -> Error {
    ErrorKind::Provider("the gateway only verifies signatures".into()).into()
}

fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    Err(unsupported())
}

fn digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
        _ => return Err(unsupported()),
    };
    Ok(ring::digest::digest(algorithm, data).as_ref().to_vec())
}

/// The RSA parameters of an RSA algorithm.
fn rsa_parameters(algorithm: Algorithm) -> Option<&'static ring_sig::RsaParameters> {
    Some(match algorithm {
        Algorithm::RS256 => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &ring_sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &ring_sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &ring_sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &ring_sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &ring_sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// The ring algorithm for a JWS algorithm, `None` for HMAC (never verified).
fn parameters(algorithm: Algorithm) -> Option<&'static dyn ring_sig::VerificationAlgorithm> {
    if let Some(rsa) = rsa_parameters(algorithm) {
        return Some(rsa);
    }
    Some(match algorithm {
        Algorithm::ES256 => &ring_sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &ring_sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &ring_sig::ED25519,
        _ => return None,
    })
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let algorithm = *algorithm;
    // The key decides which algorithms may use it: an RSA key never checks
    // an EC or HMAC signature, whatever the token's header says.
    if algorithm.family() == AlgorithmFamily::Hmac
        || key.family() != algorithm.family()
        || parameters(algorithm).is_none()
    {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Ok(Box::new(Verifier {
        algorithm,
        key: key.clone(),
    }))
}

/// One key, checking signatures of one algorithm.
struct Verifier {
    algorithm: Algorithm,
    key: DecodingKey,
}

impl signature::Verifier<Vec<u8>> for Verifier {
    fn verify(
        &self,
        message: &[u8],
        signature: &Vec<u8>,
    ) -> std::result::Result<(), signature::Error> {
        let checked = match self.key.kind() {
            DecodingKeyKind::RsaModulusExponent { n, e } => rsa_parameters(self.algorithm)
                .ok_or(ring::error::Unspecified)
                .and_then(|params| {
                    ring_sig::RsaPublicKeyComponents { n, e }.verify(params, message, signature)
                }),
            DecodingKeyKind::SecretOrDer(bytes) => parameters(self.algorithm)
                .ok_or(ring::error::Unspecified)
                .and_then(|params| {
                    ring_sig::UnparsedPublicKey::new(params, bytes).verify(message, signature)
                }),
        };
        checked.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Verifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}
