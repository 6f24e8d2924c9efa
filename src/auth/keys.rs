//! The verification keys of `[[auth.keys]]`: each is loaded once and bound to exactly one
//! algorithm, so an HS256 token can never be checked against an RSA public key (algorithm
//! confusion) and `none` has no key at all.

use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use super::AuthError;
use crate::config::{AuthConfig, KeyConfig};

/// Shortest HMAC secret accepted per algorithm (RFC 7518 §3.2: at least the hash size).
fn min_secret_bytes(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

/// Where a key came from (a reload keeps the keys fetched from the JWKS URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `[[auth.keys]]`.
    Configured,
    /// `auth.jwks_file`.
    JwksFile,
    /// `auth.jwks_url`.
    JwksUrl,
}

/// One verification key.
#[derive(Clone)]
pub struct VerifyKey {
    /// `kid` it answers to, if any.
    pub kid: Option<String>,
    /// The only algorithm it is used with.
    pub alg: Algorithm,
    /// The key material.
    pub key: DecodingKey,
    /// For HMAC keys, the secret (lets `wsgate token` mint with the same key).
    secret: Option<Vec<u8>>,
    /// Where it came from.
    pub origin: KeyOrigin,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("VerifyKey").field("kid", &self.kid).field("alg", &self.alg).finish()
    }
}

/// All configured keys.
#[derive(Debug, Default, Clone)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

// === impl KeySet ===

impl KeySet {
    /// Load every key; secrets come from the named environment variables.
    ///
    /// # Errors
    /// [`AuthError::KeyLoad`] naming the key's config path and the reason.
    pub fn load(configs: &[KeyConfig]) -> Result<Self, AuthError> {
        Self::load_with(configs, |name| std::env::var(name).ok())
    }

    /// As [`KeySet::load`], with environment lookup passed in (tests, demo).
    ///
    /// # Errors
    /// [`AuthError::KeyLoad`] naming the key's config path and the reason.
    pub fn load_with(configs: &[KeyConfig], env: impl Fn(&str) -> Option<String>) -> Result<Self, AuthError> {
        let mut keys = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let path = format!("auth.keys[{i}]");
            let err = |reason: String| AuthError::KeyLoad { key: path.clone(), reason };
            let alg = Algorithm::from_str(&c.algorithm)
                .map_err(|_| err(format!("unsupported algorithm {:?}", c.algorithm)))?;
            let (key, secret) = match (alg, &c.secret_env, &c.public_key_file) {
                (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, Some(var), None) => {
                    let secret = env(var)
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| err(format!("environment variable {var} (secret_env) is not set")))?;
                    if secret.len() < min_secret_bytes(alg) {
                        return Err(err(format!(
                            "the secret in {var} is {} bytes; {:?} needs at least {}",
                            secret.len(),
                            alg,
                            min_secret_bytes(alg)
                        )));
                    }
                    (DecodingKey::from_secret(secret.as_bytes()), Some(secret.into_bytes()))
                }
                (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, _, _) => {
                    return Err(err("an HMAC key needs secret_env and no public_key_file".into()));
                }
                (_, None, Some(file)) => {
                    let pem = std::fs::read(file).map_err(|e| err(format!("{}: {e}", file.display())))?;
                    let key = match alg {
                        Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512 => DecodingKey::from_rsa_pem(&pem),
                        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                        Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                        _ => return Err(err(format!("unsupported algorithm {alg:?}"))),
                    }
                    .map_err(|e| err(format!("{}: not a {alg:?} public key PEM ({e})", file.display())))?;
                    (key, None)
                }
                _ => return Err(err("an asymmetric key needs public_key_file and no secret_env".into())),
            };
            keys.push(VerifyKey { kid: c.kid.clone(), alg, key, secret, origin: KeyOrigin::Configured });
        }
        Ok(Self { keys })
    }

    /// The keys a token with header `alg`/`kid` may be checked against: with a `kid`, only the
    /// key of that kid (and only if its algorithm matches); without, every key of that algorithm.
    pub fn candidates<'a>(&'a self, alg: Algorithm, kid: Option<&'a str>) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        self.keys.iter().filter(move |k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
    }

    /// The first HMAC key (for minting dev tokens), with its kid and algorithm.
    pub fn signing_key(&self) -> Option<(EncodingKey, Algorithm, Option<&str>)> {
        self.keys.iter().find_map(|k| k.secret.as_ref().map(|s| (EncodingKey::from_secret(s), k.alg, k.kid.as_deref())))
    }

    /// Replace the keys of `origin` with `keys`.
    pub fn replace(&mut self, origin: KeyOrigin, keys: Vec<VerifyKey>) {
        self.keys.retain(|k| k.origin != origin);
        self.keys.extend(keys);
    }

    /// The keys of `origin`.
    pub fn of(&self, origin: KeyOrigin) -> Vec<VerifyKey> {
        self.keys.iter().filter(|k| k.origin == origin).cloned().collect()
    }

    /// True when a key answers to `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Number of keys loaded.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is loaded.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The keys a config names: `[[auth.keys]]` plus the keys of `auth.jwks_file`.
///
/// # Errors
/// [`AuthError::KeyLoad`] naming the key or file and the reason.
pub fn load_configured(auth: &AuthConfig) -> Result<KeySet, AuthError> {
    let mut set = KeySet::load(&auth.keys)?;
    if let Some(path) = &auth.jwks_file {
        let err = |reason: String| AuthError::KeyLoad { key: "auth.jwks_file".into(), reason };
        let text = std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let keys = parse_jwks(&text, KeyOrigin::JwksFile).map_err(|e| err(format!("{}: {e}", path.display())))?;
        set.replace(KeyOrigin::JwksFile, keys);
    }
    Ok(set)
}

/// `fresh` plus the keys `old` had fetched from the JWKS URL (a reload does not refetch).
pub fn with_fetched(mut fresh: KeySet, old: &KeySet) -> KeySet {
    fresh.replace(KeyOrigin::JwksUrl, old.of(KeyOrigin::JwksUrl));
    fresh
}

/// The algorithm a JWK is used with: its `alg`, or the one its key type implies.
fn jwk_algorithm(jwk: &Jwk) -> Result<Algorithm, String> {
    if let Some(alg) = jwk.common.key_algorithm {
        return Algorithm::try_from(alg).map_err(|_| format!("algorithm {alg} is not a signature algorithm"));
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Ok(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Ok(Algorithm::ES256),
            EllipticCurve::P384 => Ok(Algorithm::ES384),
            _ => Err("unsupported curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(_) => Ok(Algorithm::EdDSA),
        _ => Err("unsupported key type".into()),
    }
}

/// Parse an RFC 7517 JWK Set into verification keys. Symmetric (`oct`) keys and keys marked
/// `"use": "enc"` are skipped: a published key set must never hold an HMAC secret, and an
/// encryption key must not verify signatures. A key the gateway cannot use is skipped with a
/// warning; a document that is not a JWK Set is an error.
///
/// # Errors
/// Not JSON, or not a JWK Set.
pub fn parse_jwks(bytes: &[u8], origin: KeyOrigin) -> Result<Vec<VerifyKey>, String> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| format!("not a JWK Set: {e}"))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.iter().enumerate() {
        let kid = jwk.common.key_id.clone();
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            tracing::warn!(index = i, kid = kid.as_deref().unwrap_or(""), "JWKS: symmetric key skipped");
            continue;
        }
        let usable = jwk_algorithm(jwk).and_then(|alg| {
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err("HMAC algorithm on a public key".into());
            }
            DecodingKey::from_jwk(jwk).map(|key| (alg, key)).map_err(|e| e.to_string())
        });
        match usable {
            Ok((alg, key)) => keys.push(VerifyKey { kid, alg, key, secret: None, origin }),
            Err(why) => {
                tracing::warn!(index = i, kid = kid.as_deref().unwrap_or(""), reason = %why, "JWKS: key skipped")
            }
        }
    }
    Ok(keys)
}
