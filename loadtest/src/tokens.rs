//! JWTs for the generated clients: HS256 from a secret, ES256 or RS256 from a PEM private key.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// Mints tokens with one key.
pub struct Minter {
    alg: Algorithm,
    key: EncodingKey,
    kid: Option<String>,
    iss: Option<String>,
    aud: Option<String>,
}

impl Minter {
    /// From `--hs256-secret` or `--private-key` + `--alg`.
    pub fn new(
        secret: Option<&str>,
        private_key: Option<&str>,
        alg: &str,
        kid: Option<String>,
    ) -> anyhow::Result<Option<Self>> {
        match (secret, private_key) {
            (Some(s), _) => Ok(Some(Self {
                alg: Algorithm::HS256,
                key: EncodingKey::from_secret(s.as_bytes()),
                kid,
                iss: None,
                aud: None,
            })),
            (None, Some(path)) => {
                let pem = std::fs::read(path).with_context(|| format!("read {path}"))?;
                let (alg, key) = match alg {
                    "ES256" => (Algorithm::ES256, EncodingKey::from_ec_pem(&pem)?),
                    "RS256" => (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem)?),
                    other => anyhow::bail!("--alg {other}: ES256 or RS256 with --private-key"),
                };
                Ok(Some(Self { alg, key, kid, iss: None, aud: None }))
            }
            (None, None) => Ok(None),
        }
    }

    /// The same minter, adding `iss` / `aud` claims when given.
    pub fn with_issuer_audience(mut self, iss: Option<String>, aud: Option<String>) -> Self {
        self.iss = iss;
        self.aud = aud;
        self
    }

    /// A token for `sub` with `scope`, expiring `ttl_secs` from now (negative: already expired).
    pub fn mint(&self, sub: &str, scope: &str, ttl_secs: i64) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
        let mut claims = serde_json::json!({"sub": sub, "scope": scope, "iat": now, "exp": now + ttl_secs});
        if let Some(iss) = &self.iss {
            claims["iss"] = iss.clone().into();
        }
        if let Some(aud) = &self.aud {
            claims["aud"] = aud.clone().into();
        }
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}
