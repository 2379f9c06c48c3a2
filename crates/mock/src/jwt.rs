//! Throw-away signing keys for testing JWT validation: an RSA (RS256) or an
//! ECDSA P-256 (ES256) key made on the spot, its public JWK (what an issuer
//! publishes in its JWKS, and what a mock serves), and tokens it signs.
//! Hostile tokens too: unsigned (`alg: none`) and HMAC-signed ones. Each
//! run makes new keys; they are for tests and loopback experiments only.
//!
//! ```
//! use fanout_mock::jwt::{SigningKey, jwks};
//! use serde_json::json;
//!
//! let key = SigningKey::es256("k1").unwrap();
//! let token = key.sign(&json!({ "sub": "ada", "exp": 4102444800u64 }));
//! assert_eq!(token.split('.').count(), 3);
//! assert_eq!(jwks(&[&key])["keys"][0]["kid"], "k1");
//! ```

use base64::Engine;
use ring::{
    rand::SystemRandom,
    signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
    },
};
use serde_json::{Value, json};

use crate::MockError;

/// A private key that signs tokens, with its key id.
#[derive(Debug)]
pub struct SigningKey {
    kid: String,
    alg: &'static str,
    pair: Pair,
    /// The public key as a JWK.
    jwk: Value,
    /// The public key as PEM (SubjectPublicKeyInfo), for key-confusion tests.
    public_pem: String,
}

#[derive(Debug)]
enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

fn fail(what: &str, e: &dyn std::fmt::Display) -> MockError {
    MockError::Tls(format!("{what}: {e}"))
}

impl SigningKey {
    /// A new RSA key (3072 bits, the `rsa` crate's default), signing RS256.
    pub fn rs256(kid: &str) -> Result<SigningKey, MockError> {
        use rsa::{
            pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding},
            traits::PublicKeyParts,
        };
        let private =
            <rsa::PrivateKey as rsa::Generate>::try_generate().map_err(|e| fail("RSA key", &e))?;
        let der = private.to_pkcs8_der().map_err(|e| fail("RSA key", &e))?;
        let pair = RsaKeyPair::from_pkcs8(der.as_bytes()).map_err(|e| fail("RSA key", &e))?;
        let public = private.to_public_key();
        let public_pem = public
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| fail("RSA key", &e))?;
        let jwk = json!({
            "kty": "RSA",
            "kid": kid,
            "use": "sig",
            "alg": "RS256",
            "n": b64(&public.n_bytes()),
            "e": b64(&public.e_bytes()),
        });
        Ok(SigningKey {
            kid: kid.to_owned(),
            alg: "RS256",
            pair: Pair::Rsa(pair),
            jwk,
            public_pem,
        })
    }

    /// A new ECDSA P-256 key, signing ES256.
    pub fn es256(kid: &str) -> Result<SigningKey, MockError> {
        let key = rcgen::KeyPair::generate().map_err(|e| fail("EC key", &e))?;
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &SystemRandom::new(),
        )
        .map_err(|e| fail("EC key", &e))?;
        let point = pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        let jwk = json!({
            "kty": "EC",
            "kid": kid,
            "use": "sig",
            "alg": "ES256",
            "crv": "P-256",
            "x": b64(x),
            "y": b64(y),
        });
        Ok(SigningKey {
            kid: kid.to_owned(),
            alg: "ES256",
            pair: Pair::Ec(pair),
            jwk,
            public_pem: key.public_key_pem(),
        })
    }

    /// Its key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Its public key as a JWK (with `kid`, `alg` and `use: sig`).
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// Its public key as PEM.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// A token of `claims`, with the header `{alg, typ: JWT, kid}`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({ "alg": self.alg, "typ": "JWT", "kid": self.kid }),
            claims,
        )
    }

    /// A token of `claims` with any header, signed with this key (whatever
    /// the header's `alg` claims).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let rng = SystemRandom::new();
        let signature = match &self.pair {
            Pair::Rsa(pair) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut signature)
                    .map(|()| signature)
            }
            Pair::Ec(pair) => pair
                .sign(&rng, input.as_bytes())
                .map(|s| s.as_ref().to_vec()),
        }
        .unwrap_or_default();
        format!("{input}.{}", b64(&signature))
    }
}

/// A JWKS of these keys' public halves: `{"keys": [...]}`.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

/// An unsigned token (`alg: none`, empty signature).
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.",
        signing_input(&json!({ "alg": "none", "typ": "JWT" }), claims)
    )
}

/// A token signed with HMAC-SHA256 under `secret`, with the header `{alg:
/// HS256, typ: JWT}` plus `kid` if given (the key-confusion attack signs
/// with an RSA public key's bytes as the secret).
pub fn hs256(secret: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({ "alg": "HS256", "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let input = signing_input(&header, claims);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// Base64url without padding, as JWTs write their parts.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}
