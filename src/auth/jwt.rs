//! JWT verification (RFC 7519) and minting of dev tokens.
//!
//! jsonwebtoken checks the signature, the algorithm allowlist (one algorithm per key), `iss`
//! and `aud`. The time claims are checked here, against a `now` passed in, because
//! jsonwebtoken reads the clock itself, skips `nbf` by default and defaults to 60 s leeway.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::{Map, Value};

use super::keys::KeySet;
use super::{AuthError, Claims};
use crate::config::AuthConfig;

/// Verify `token` with the configured keys at `now`.
///
/// # Errors
/// [`AuthError::Expired`] past `exp` + leeway; [`AuthError::Invalid`] for everything else
/// (bad signature, `alg` not allowed for any key, unknown `kid`, `iss`/`aud` mismatch, `nbf`
/// in the future, missing `sub`/`exp`, malformed token).
pub fn verify(token: &str, keys: &KeySet, settings: &AuthConfig, now: SystemTime) -> Result<Claims, AuthError> {
    // `alg: none` and unknown algorithms fail here: they are not `Algorithm` variants.
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("malformed"))?;
    let mut candidates = keys.candidates(header.alg, header.kid.as_deref()).peekable();
    if candidates.peek().is_none() {
        return Err(AuthError::Invalid(if header.kid.is_some() { "unknown_kid" } else { "alg_not_allowed" }));
    }
    let mut last = AuthError::Invalid("bad_signature");
    for key in candidates {
        let mut v = Validation::new(key.alg);
        v.leeway = 0;
        v.validate_exp = false;
        v.validate_nbf = false;
        v.required_spec_claims.clear();
        v.validate_aud = settings.audience.is_some();
        if let Some(aud) = &settings.audience {
            v.set_audience(&[aud]);
        }
        if let Some(iss) = &settings.issuer {
            v.set_issuer(&[iss]);
        }
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &v) {
            Ok(data) => return claims_from(&data.claims, settings, now),
            Err(e) => {
                last = AuthError::Invalid(match e.kind() {
                    ErrorKind::InvalidSignature => "bad_signature",
                    ErrorKind::InvalidAudience => "audience",
                    ErrorKind::InvalidIssuer => "issuer",
                    ErrorKind::MissingRequiredClaim(_) => "missing_claim",
                    ErrorKind::InvalidAlgorithm => "alg_not_allowed",
                    _ => "malformed",
                });
                if last != AuthError::Invalid("bad_signature") {
                    return Err(last);
                }
            }
        }
    }
    Err(last)
}

fn numeric_date(map: &Map<String, Value>, name: &str) -> Result<Option<u64>, AuthError> {
    match map.get(name) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
            _ => Err(AuthError::Invalid("bad_time_claim")),
        },
    }
}

fn claims_from(map: &Map<String, Value>, settings: &AuthConfig, now: SystemTime) -> Result<Claims, AuthError> {
    let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let leeway = settings.leeway.as_secs_f64();
    let sub = match map.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(AuthError::Invalid("missing_sub")),
    };
    let exp = numeric_date(map, "exp")?.ok_or(AuthError::Invalid("missing_exp"))?;
    if let Some(nbf) = numeric_date(map, "nbf")? {
        if nbf as f64 > now_s + leeway {
            return Err(AuthError::Invalid("not_yet_valid"));
        }
    }
    if now_s >= exp as f64 + leeway {
        return Err(AuthError::Expired);
    }
    let scopes = match map.get(&settings.scope_claim) {
        None => Vec::new(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        Some(_) => return Err(AuthError::Invalid("bad_scope_claim")),
    };
    Ok(Claims {
        sub,
        exp,
        iat: numeric_date(map, "iat")?,
        jti: map.get("jti").and_then(Value::as_str).map(str::to_string),
        scopes,
    })
}

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct MintRequest<'a> {
    /// `sub`.
    pub sub: &'a str,
    /// Space-separated scopes.
    pub scope: &'a str,
    /// Lifetime from now.
    pub ttl: Duration,
}

/// Sign a token with the first configured HMAC key (dev and scripting use: `wsgate token`,
/// `wsgate demo`). Adds `iss`/`aud` when configured, `iat`, `nbf` and a random `jti`.
///
/// # Errors
/// [`AuthError::Mint`] when no HMAC key is configured or signing fails.
pub fn mint(keys: &KeySet, settings: &AuthConfig, req: &MintRequest<'_>, now: SystemTime) -> Result<String, AuthError> {
    let (key, alg, kid) =
        keys.signing_key().ok_or_else(|| AuthError::Mint("no HMAC key (secret_env) is configured".into()))?;
    let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut claims = serde_json::json!({
        "sub": req.sub,
        "iat": iat,
        "nbf": iat,
        "exp": iat + req.ttl.as_secs().max(1),
        "jti": random_hex(16),
    });
    claims[settings.scope_claim.as_str()] = Value::String(req.scope.to_string());
    if let Some(iss) = &settings.issuer {
        claims["iss"] = Value::String(iss.clone());
    }
    if let Some(aud) = &settings.audience {
        claims["aud"] = Value::String(aud.clone());
    }
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    debug_assert!(matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512));
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| AuthError::Mint(e.to_string()))
}

/// `n` random bytes from the OS, hex-encoded (token ids, dev secrets).
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // The OS RNG failing is not recoverable in any useful way; fall back to the clock so a
    // jti is still unique per process (never used for secrets: see `random_secret`).
    if getrandom::fill(&mut buf).is_err() {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        buf.iter_mut().enumerate().for_each(|(i, b)| *b = (t >> (8 * (i % 16))) as u8);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random secret for the demo's HMAC key.
///
/// # Errors
/// [`AuthError::Mint`] when the OS RNG is unavailable.
pub fn random_secret() -> Result<String, AuthError> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).map_err(|e| AuthError::Mint(format!("os rng: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use base64::Engine;
    use jsonwebtoken::EncodingKey;

    use super::*;
    use crate::config::KeyConfig;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn settings() -> AuthConfig {
        AuthConfig {
            issuer: Some("https://idp.test/".into()),
            audience: Some("wsgate".into()),
            ..AuthConfig::default()
        }
    }

    fn keyset(kid: Option<&str>) -> KeySet {
        let cfg = KeyConfig {
            kid: kid.map(str::to_string),
            algorithm: "HS256".into(),
            secret_env: Some("S".into()),
            public_key_file: None::<PathBuf>,
        };
        KeySet::load_with(&[cfg], |_| Some(SECRET.into())).expect("keys")
    }

    fn sign(claims: Value, alg: Algorithm, kid: Option<&str>, secret: &str) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("sign")
    }

    fn base_claims(now: u64) -> Value {
        serde_json::json!({"sub":"alice","exp":now+60,"iss":"https://idp.test/","aud":"wsgate","scope":"a b"})
    }

    fn now() -> (SystemTime, u64) {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        (t, 1_800_000_000)
    }

    #[test]
    fn valid_token_yields_claims_and_scopes() {
        let (t, s) = now();
        let c =
            verify(&sign(base_claims(s), Algorithm::HS256, None, SECRET), &keyset(None), &settings(), t).expect("ok");
        assert_eq!(c.sub, "alice");
        assert_eq!(c.scopes, vec!["a", "b"]);
    }

    #[test]
    fn expiry_honours_leeway_exactly() {
        let (t, s) = now();
        let mut claims = base_claims(s);
        claims["exp"] = (s - 4).into();
        assert!(verify(&sign(claims.clone(), Algorithm::HS256, None, SECRET), &keyset(None), &settings(), t).is_ok());
        claims["exp"] = (s - 5).into();
        let err = verify(&sign(claims, Algorithm::HS256, None, SECRET), &keyset(None), &settings(), t);
        assert_eq!(err, Err(AuthError::Expired));
    }

    #[test]
    fn every_invalid_shape_is_refused() {
        let (t, s) = now();
        let ks = keyset(None);
        let st = settings();
        let check = |claims: Value| verify(&sign(claims, Algorithm::HS256, None, SECRET), &ks, &st, t);
        let mut c = base_claims(s);
        c["nbf"] = (s + 60).into();
        assert_eq!(check(c), Err(AuthError::Invalid("not_yet_valid")));
        let mut c = base_claims(s);
        c["aud"] = "other".into();
        assert_eq!(check(c), Err(AuthError::Invalid("audience")));
        let mut c = base_claims(s);
        c["iss"] = "https://evil/".into();
        assert_eq!(check(c), Err(AuthError::Invalid("issuer")));
        let mut c = base_claims(s);
        c.as_object_mut().expect("obj").remove("sub");
        assert_eq!(check(c), Err(AuthError::Invalid("missing_sub")));
        let mut c = base_claims(s);
        c.as_object_mut().expect("obj").remove("exp");
        assert_eq!(check(c), Err(AuthError::Invalid("missing_exp")));
        let forged = sign(base_claims(s), Algorithm::HS256, None, "another-secret-another-secret-xx");
        assert_eq!(verify(&forged, &ks, &st, t), Err(AuthError::Invalid("bad_signature")));
        let hs512 = sign(base_claims(s), Algorithm::HS512, None, SECRET);
        assert_eq!(verify(&hs512, &ks, &st, t), Err(AuthError::Invalid("alg_not_allowed")));
    }

    #[test]
    fn alg_none_is_never_accepted() {
        let (t, s) = now();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token =
            format!("{}.{}.", b64.encode(br#"{"alg":"none","typ":"JWT"}"#), b64.encode(base_claims(s).to_string()));
        assert_eq!(verify(&token, &keyset(None), &settings(), t), Err(AuthError::Invalid("malformed")));
    }

    #[test]
    fn kid_selects_only_its_key() {
        let (t, s) = now();
        let ks = keyset(Some("k1"));
        let ok = sign(base_claims(s), Algorithm::HS256, Some("k1"), SECRET);
        assert!(verify(&ok, &ks, &settings(), t).is_ok());
        let other = sign(base_claims(s), Algorithm::HS256, Some("k2"), SECRET);
        assert_eq!(verify(&other, &ks, &settings(), t), Err(AuthError::Invalid("unknown_kid")));
    }

    #[test]
    fn minted_tokens_verify() {
        let (t, _) = now();
        let ks = keyset(None);
        let req = MintRequest { sub: "bob", scope: "chat:read", ttl: Duration::from_secs(60) };
        let token = mint(&ks, &settings(), &req, t).expect("mint");
        let c = verify(&token, &ks, &settings(), t).expect("verify");
        assert_eq!((c.sub.as_str(), c.scopes.as_slice()), ("bob", ["chat:read".to_string()].as_slice()));
        assert!(c.jti.is_some());
    }

    #[test]
    fn short_hmac_secrets_are_refused_at_load() {
        let cfg =
            KeyConfig { kid: None, algorithm: "HS256".into(), secret_env: Some("S".into()), public_key_file: None };
        let err = KeySet::load_with(&[cfg], |_| Some("short".into())).unwrap_err();
        assert!(err.to_string().contains("needs at least 32"), "{err}");
    }
}
