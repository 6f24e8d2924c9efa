//! The verification keys of `[[auth.keys]]`: each is loaded once and bound to exactly one
//! algorithm, so an HS256 token can never be checked against an RSA public key (algorithm
//! confusion) and `none` has no key at all.

use std::str::FromStr;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use super::AuthError;
use crate::config::KeyConfig;

/// Shortest HMAC secret accepted per algorithm (RFC 7518 §3.2: at least the hash size).
fn min_secret_bytes(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

/// One verification key.
pub struct VerifyKey {
    /// `kid` it answers to, if any.
    pub kid: Option<String>,
    /// The only algorithm it is used with.
    pub alg: Algorithm,
    /// The key material.
    pub key: DecodingKey,
    /// For HMAC keys, the secret (lets `wsgate token` mint with the same key).
    secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("VerifyKey").field("kid", &self.kid).field("alg", &self.alg).finish()
    }
}

/// All configured keys.
#[derive(Debug, Default)]
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
            keys.push(VerifyKey { kid: c.kid.clone(), alg, key, secret });
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

    /// Number of keys loaded.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is loaded.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
