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
        self.mint_with_jti(sub, scope, ttl_secs, None)
    }

    /// [`Minter::mint`] with a `jti` claim when given (the `revoke` scenario revokes each
    /// connection's token by its own `jti`).
    pub fn mint_with_jti(&self, sub: &str, scope: &str, ttl_secs: i64, jti: Option<&str>) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
        let mut claims = serde_json::json!({"sub": sub, "scope": scope, "iat": now, "exp": now + ttl_secs});
        if let Some(jti) = jti {
            claims["jti"] = jti.into();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    fn claims(token: &str) -> serde_json::Value {
        let mut v = Validation::new(Algorithm::HS256);
        v.required_spec_claims.clear();
        jsonwebtoken::decode::<serde_json::Value>(token, &DecodingKey::from_secret(b"s3cret"), &v)
            .expect("valid")
            .claims
    }

    #[test]
    fn a_jti_is_added_only_when_asked() {
        let m = Minter::new(Some("s3cret"), None, "ES256", None).unwrap().unwrap();
        let with = claims(&m.mint_with_jti("alice", "chat:read", 60, Some("lt-1-7")).unwrap());
        assert_eq!(with["jti"], "lt-1-7");
        assert_eq!(with["sub"], "alice");
        assert_eq!(with["scope"], "chat:read");
        let without = claims(&m.mint("alice", "chat:read", 60).unwrap());
        assert!(without.get("jti").is_none(), "{without}");
        assert_eq!(without["exp"].as_i64().unwrap() - without["iat"].as_i64().unwrap(), 60);
    }
}
