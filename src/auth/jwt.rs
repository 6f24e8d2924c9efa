//! JWT verification (RFC 7519 / RFC 7515 compact JWS) and minting of dev tokens.
//!
//! Everything but the signature arithmetic is done here, strictly, so that the gateway and any
//! other parser agree on what a token says:
//! - exactly three base64url parts; header and claims are JSON objects in which no member name
//!   appears twice, at any depth, also when spelled with escapes (`"\u0073cope"` = `"scope"`);
//! - the header's `alg` is bound to the key that checks it (never `none`), `kid` is a string,
//!   and a header with `crit` is refused (RFC 7515 §4.1.11: no extension is understood here);
//! - the signature is checked by jsonwebtoken's crypto provider (aws-lc) with the key's own
//!   algorithm;
//! - claims: `sub` (non-empty string), `exp` (required), `nbf`, `iat` as NumericDates within
//!   [0, [`MAX_NUMERIC_DATE`]], checked against a `now` passed in with the configured leeway;
//!   when `auth.issuer` / `auth.audience` are set, `iss` / `aud` must be present, of the right
//!   type and match; `auth.max_token_lifetime_seconds` bounds `exp - iat` (or `exp - now`);
//!   `jti` and the scope claim must have their documented types.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Map, Value};

use super::keys::KeySet;
use super::{AuthError, Claims};
use crate::config::AuthConfig;
use crate::policy::token_source::MAX_TOKEN_BYTES;
use crate::policy::validate::{Strict, DUPLICATE_NAME};

pub use super::MAX_NUMERIC_DATE;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Verify `token` with the configured keys at `now`.
///
/// # Errors
/// [`AuthError::Expired`] past `exp` + leeway; [`AuthError::Invalid`] for everything else
/// (malformed, duplicate members, `crit`, `alg` not allowed for any key, unknown `kid`, bad
/// signature, `iss`/`aud` missing or not matching, `nbf` or `iat` in the future, lifetime over
/// the bound, time claims out of range, claims of the wrong type).
pub fn verify(token: &str, keys: &KeySet, settings: &AuthConfig, now: SystemTime) -> Result<Claims, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid("oversized"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Invalid("malformed"));
    };
    let header = strict_object(header_b64)?;
    if header.contains_key("crit") {
        return Err(AuthError::Invalid("crit"));
    }
    // `alg: none` and unknown algorithms fail here: they are not `Algorithm` variants.
    let alg = match header.get("alg") {
        Some(Value::String(a)) => Algorithm::from_str(a).map_err(|_| AuthError::Invalid("malformed"))?,
        _ => return Err(AuthError::Invalid("malformed")),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(AuthError::Invalid("malformed")),
    };
    let mut candidates = keys.candidates(alg, kid).peekable();
    if candidates.peek().is_none() {
        return Err(AuthError::Invalid(if kid.is_some() { "unknown_kid" } else { "alg_not_allowed" }));
    }
    let signed = &token[..header_b64.len() + 1 + claims_b64.len()];
    let mut verified = false;
    for key in candidates {
        match jsonwebtoken::crypto::verify(signature, signed.as_bytes(), &key.key, key.alg) {
            Ok(true) => {
                verified = true;
                break;
            }
            Ok(false) => {}
            Err(_) => return Err(AuthError::Invalid("malformed")),
        }
    }
    if !verified {
        return Err(AuthError::Invalid("bad_signature"));
    }
    claims_from(&strict_object(claims_b64)?, settings, now)
}

/// A base64url part decoded and parsed as a JSON object with no duplicate member names, at
/// any depth, compared unescaped (the message checks' strict parse).
fn strict_object(part: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = B64.decode(part).map_err(|_| AuthError::Invalid("malformed"))?;
    match serde_json::from_slice::<Strict>(&bytes) {
        Ok(Strict(Value::Object(map))) => Ok(map),
        Ok(_) => Err(AuthError::Invalid("malformed")),
        Err(e) if e.to_string().starts_with(DUPLICATE_NAME) => Err(AuthError::Invalid("duplicate_member")),
        Err(_) => Err(AuthError::Invalid("malformed")),
    }
}

/// A NumericDate claim (RFC 7519 §2): any JSON number in [0, MAX_NUMERIC_DATE], as seconds.
fn numeric_date(map: &Map<String, Value>, name: &str) -> Result<Option<f64>, AuthError> {
    match map.get(name) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(f) if f.is_finite() && (0.0..=MAX_NUMERIC_DATE as f64).contains(&f) => Ok(Some(f)),
            _ => Err(AuthError::Invalid("bad_time_claim")),
        },
    }
}

/// A string claim that must be printable (it reaches headers and logs).
fn printable(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_control)
}

fn claims_from(map: &Map<String, Value>, settings: &AuthConfig, now: SystemTime) -> Result<Claims, AuthError> {
    let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let leeway = settings.leeway.as_secs_f64();
    let sub = match map.get("sub") {
        Some(Value::String(s)) if printable(s) => s.clone(),
        Some(Value::String(s)) if !s.is_empty() => return Err(AuthError::Invalid("bad_sub")),
        _ => return Err(AuthError::Invalid("missing_sub")),
    };
    if let Some(iss) = &settings.issuer {
        if !matches!(map.get("iss"), Some(Value::String(s)) if s == iss) {
            return Err(AuthError::Invalid("issuer"));
        }
    }
    if let Some(aud) = &settings.audience {
        let ok = match map.get("aud") {
            Some(Value::String(s)) => s == aud,
            Some(Value::Array(a)) => {
                a.iter().all(Value::is_string) && a.iter().any(|v| v.as_str() == Some(aud.as_str()))
            }
            _ => false,
        };
        if !ok {
            return Err(AuthError::Invalid("audience"));
        }
    }
    // Conservative rounding of fractional dates: `exp` down, `nbf` and `iat` as they are.
    let exp = numeric_date(map, "exp")?.ok_or(AuthError::Invalid("missing_exp"))?.floor();
    let iat = numeric_date(map, "iat")?;
    if settings.require_iat && iat.is_none() {
        return Err(AuthError::Invalid("missing_iat"));
    }
    if let Some(nbf) = numeric_date(map, "nbf")? {
        if nbf > now_s + leeway {
            return Err(AuthError::Invalid("not_yet_valid"));
        }
    }
    if iat.is_some_and(|iat| iat > now_s + leeway) {
        return Err(AuthError::Invalid("iat_in_future"));
    }
    if now_s >= exp + leeway {
        return Err(AuthError::Expired);
    }
    let max = settings.max_token_lifetime.as_secs_f64();
    if max > 0.0 && exp - iat.unwrap_or(now_s) > max {
        return Err(AuthError::Invalid("lifetime"));
    }
    let scopes = match map.get(&settings.scope_claim) {
        None => Vec::new(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().filter(|s| printable(s)).map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or(AuthError::Invalid("bad_scope_claim"))?,
        Some(_) => return Err(AuthError::Invalid("bad_scope_claim")),
    };
    if scopes.iter().any(|s| !printable(s)) {
        return Err(AuthError::Invalid("bad_scope_claim"));
    }
    let jti = match map.get("jti") {
        None => None,
        Some(Value::String(s)) if printable(s) => Some(s.clone()),
        Some(_) => return Err(AuthError::Invalid("bad_jti")),
    };
    // In range by `numeric_date`: the casts are exact for whole seconds and cannot wrap.
    Ok(Claims { sub, exp: exp as u64, iat: iat.map(|i| i.floor() as u64), jti, scopes })
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
    let max = settings.max_token_lifetime;
    if !max.is_zero() && req.ttl > max {
        return Err(AuthError::Mint(format!(
            "a lifetime of {} s is over auth.max_token_lifetime_seconds ({}): the gateway would refuse the token",
            req.ttl.as_secs(),
            max.as_secs()
        )));
    }
    let exp = iat
        .checked_add(req.ttl.as_secs().max(1))
        .filter(|exp| *exp <= MAX_NUMERIC_DATE)
        .ok_or_else(|| AuthError::Mint("the lifetime is out of range".into()))?;
    let mut claims = serde_json::json!({
        "sub": req.sub,
        "iat": iat,
        "nbf": iat,
        "exp": exp,
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

    /// A token with exactly these header and claims texts, signed with [`SECRET`] (HS256).
    fn sign_raw(header: &str, claims: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let message = format!("{}.{}", b64.encode(header), b64.encode(claims));
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .expect("sign");
        format!("{message}.{sig}")
    }

    const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

    fn claims_text(now: u64, extra: &str) -> String {
        format!(r#"{{"sub":"alice","exp":{},"iss":"https://idp.test/","aud":"wsgate"{extra}}}"#, now + 60)
    }

    #[test]
    fn raw_tokens_of_the_tests_verify() {
        let (t, s) = now();
        assert!(verify(&sign_raw(HS256, &claims_text(s, "")), &keyset(None), &settings(), t).is_ok());
    }

    #[test]
    fn issuer_and_audience_must_be_present_and_of_their_type_when_configured() {
        let (t, s) = now();
        let ks = keyset(None);
        let check = |claims: Value| verify(&sign(claims, Algorithm::HS256, None, SECRET), &ks, &settings(), t);
        for bad in [Value::Null, "".into(), 7.into(), serde_json::json!(["https://idp.test/"]), serde_json::json!({})] {
            let mut c = base_claims(s);
            c["iss"] = bad.clone();
            assert_eq!(check(c), Err(AuthError::Invalid("issuer")), "iss {bad}");
        }
        let mut c = base_claims(s);
        c.as_object_mut().expect("obj").remove("iss");
        assert_eq!(check(c), Err(AuthError::Invalid("issuer")));
        for bad in [
            Value::Null,
            "".into(),
            7.into(),
            serde_json::json!([]),
            serde_json::json!(["other"]),
            serde_json::json!(["wsgate", 7]),
            serde_json::json!({"wsgate": true}),
            "WSGATE".into(),
        ] {
            let mut c = base_claims(s);
            c["aud"] = bad.clone();
            assert_eq!(check(c), Err(AuthError::Invalid("audience")), "aud {bad}");
        }
        let mut c = base_claims(s);
        c.as_object_mut().expect("obj").remove("aud");
        assert_eq!(check(c), Err(AuthError::Invalid("audience")));
        let mut c = base_claims(s);
        c["aud"] = serde_json::json!(["other", "wsgate"]);
        assert!(check(c).is_ok());
        // Not configured: any iss / aud (or none) is accepted.
        let open = AuthConfig::default();
        let mut c = base_claims(s);
        c.as_object_mut().expect("obj").remove("aud");
        c["iss"] = Value::Null;
        assert!(verify(&sign(c, Algorithm::HS256, None, SECRET), &ks, &open, t).is_ok());
    }

    #[test]
    fn time_claims_of_any_json_number_never_overflow() {
        let (t, s) = now();
        let ks = keyset(None);
        let st = AuthConfig { max_token_lifetime: Duration::ZERO, ..settings() };
        for exp in [
            "1e20",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "-1e300",
            "253402300800",
        ] {
            let claims = format!(r#"{{"sub":"a","exp":{exp},"iss":"https://idp.test/","aud":"wsgate"}}"#);
            assert_eq!(
                verify(&sign_raw(HS256, &claims), &ks, &st, t),
                Err(AuthError::Invalid("bad_time_claim")),
                "{exp}"
            );
        }
        for (name, value) in [("nbf", "1e20"), ("iat", "-5"), ("nbf", "\"1\""), ("iat", "null"), ("exp", "true")] {
            let claims =
                format!(r#"{{"sub":"a","exp":{},"{name}":{value},"iss":"https://idp.test/","aud":"wsgate"}}"#, s + 60);
            let claims = if name == "exp" { claims.replacen(&format!(r#""exp":{},"#, s + 60), "", 1) } else { claims };
            assert_eq!(
                verify(&sign_raw(HS256, &claims), &ks, &st, t),
                Err(AuthError::Invalid("bad_time_claim")),
                "{claims}"
            );
        }
        // Numbers outside f64 do not even parse.
        let claims = r#"{"sub":"a","exp":1e400,"iss":"https://idp.test/","aud":"wsgate"}"#;
        assert_eq!(verify(&sign_raw(HS256, claims), &ks, &st, t), Err(AuthError::Invalid("malformed")));
        // Fractional dates are dates; the deadline of the largest one is representable.
        let claims = format!(
            r#"{{"sub":"a","exp":{}.75,"nbf":{}.5,"iat":{}.25,"iss":"https://idp.test/","aud":"wsgate"}}"#,
            s + 60,
            s,
            s
        );
        let c = verify(&sign_raw(HS256, &claims), &ks, &st, t).expect("fractional dates");
        assert_eq!((c.exp, c.iat), (s + 60, Some(s)));
        let claims = r#"{"sub":"a","exp":253402300799,"iss":"https://idp.test/","aud":"wsgate"}"#;
        let c = verify(&sign_raw(HS256, claims), &ks, &st, t).expect("latest date");
        assert!(c.deadline(Duration::from_secs(3600)) > t);
        assert!(c.time_left(Duration::from_secs(3600), t) > Duration::from_secs(1_000_000_000));
    }

    #[test]
    fn lifetime_iat_and_their_neighbours() {
        let (t, s) = now();
        let ks = keyset(None);
        let st = AuthConfig { max_token_lifetime: Duration::from_secs(3600), ..settings() };
        let check = |claims: Value, st: &AuthConfig| verify(&sign(claims, Algorithm::HS256, None, SECRET), &ks, st, t);
        let mut c = base_claims(s);
        c["exp"] = (s + 3601).into();
        assert_eq!(check(c.clone(), &st), Err(AuthError::Invalid("lifetime")), "exp - now");
        c["iat"] = (s + 1).into();
        assert!(check(c.clone(), &st).is_ok(), "exp - iat = 3600");
        c["iat"] = (s - 10).into();
        assert_eq!(check(c.clone(), &st), Err(AuthError::Invalid("lifetime")), "exp - iat");
        let unbounded = AuthConfig { max_token_lifetime: Duration::ZERO, ..settings() };
        assert!(check(c, &unbounded).is_ok());
        let mut c = base_claims(s);
        c["iat"] = (s + 6).into();
        assert_eq!(check(c.clone(), &st), Err(AuthError::Invalid("iat_in_future")));
        c["iat"] = (s + 5).into();
        assert!(check(c, &st).is_ok(), "within the leeway");
        let strict = AuthConfig { require_iat: true, ..settings() };
        assert_eq!(check(base_claims(s), &strict), Err(AuthError::Invalid("missing_iat")));
        let mut c = base_claims(s);
        c["iat"] = s.into();
        assert!(check(c, &strict).is_ok());
    }

    #[test]
    fn crit_and_duplicate_members_are_refused() {
        let (t, s) = now();
        let ks = keyset(None);
        let check = |header: &str, claims: &str| verify(&sign_raw(header, claims), &ks, &settings(), t);
        for header in [
            r#"{"alg":"HS256","crit":["exp"]}"#,
            r#"{"alg":"HS256","crit":[]}"#,
            r#"{"alg":"HS256","crit":null}"#,
            r#"{"alg":"HS256","\u0063rit":["b64"]}"#,
        ] {
            assert_eq!(check(header, &claims_text(s, "")), Err(AuthError::Invalid("crit")), "{header}");
        }
        let dup = Err(AuthError::Invalid("duplicate_member"));
        assert_eq!(check(r#"{"alg":"HS256","alg":"HS256"}"#, &claims_text(s, "")), dup);
        assert_eq!(check(r#"{"alg":"HS256","\u0061lg":"HS512"}"#, &claims_text(s, "")), dup);
        assert_eq!(check(HS256, &claims_text(s, r#","scope":"a","scope":"admin""#)), dup);
        assert_eq!(check(HS256, &claims_text(s, r#","scope":"a","\u0073cope":"admin""#)), dup);
        assert_eq!(check(HS256, &claims_text(s, r#","sub":"mallory""#)), dup);
        assert_eq!(check(HS256, &claims_text(s, r#","x":{"k":1,"k":2}"#)), dup);
        assert_eq!(check(HS256, &claims_text(s, r#","x":[{"k":1,"\u006b":2}]"#)), dup);
        // Same name, different case or different content: distinct members.
        assert!(check(HS256, &claims_text(s, r#","Scope":"x","scope":"a""#)).is_ok());
    }

    #[test]
    fn claims_of_the_wrong_type_or_unprintable_are_refused() {
        let (t, s) = now();
        let ks = keyset(None);
        let check = |extra: &str| verify(&sign_raw(HS256, &claims_text(s, extra)), &ks, &settings(), t);
        assert_eq!(check(r#","scope":["a",7]"#), Err(AuthError::Invalid("bad_scope_claim")));
        assert_eq!(check(r#","scope":null"#), Err(AuthError::Invalid("bad_scope_claim")));
        assert_eq!(check(r#","scope":"a \u0000b""#), Err(AuthError::Invalid("bad_scope_claim")));
        assert_eq!(check(r#","jti":7"#), Err(AuthError::Invalid("bad_jti")));
        assert_eq!(check(r#","jti":"""#), Err(AuthError::Invalid("bad_jti")));
        let claims = format!(r#"{{"sub":"al\nice","exp":{},"iss":"https://idp.test/","aud":"wsgate"}}"#, s + 60);
        assert_eq!(verify(&sign_raw(HS256, &claims), &ks, &settings(), t), Err(AuthError::Invalid("bad_sub")));
        let claims = format!(r#"{{"sub":7,"exp":{},"iss":"https://idp.test/","aud":"wsgate"}}"#, s + 60);
        assert_eq!(verify(&sign_raw(HS256, &claims), &ks, &settings(), t), Err(AuthError::Invalid("missing_sub")));
        // Non-ASCII subjects are fine.
        let claims = format!(r#"{{"sub":"Zoë","exp":{},"iss":"https://idp.test/","aud":"wsgate"}}"#, s + 60);
        assert_eq!(verify(&sign_raw(HS256, &claims), &ks, &settings(), t).map(|c| c.sub), Ok("Zoë".to_string()));
    }

    #[test]
    fn malformed_shapes_are_refused() {
        let (t, s) = now();
        let ks = keyset(None);
        let good = sign_raw(HS256, &claims_text(s, ""));
        for bad in [
            format!("{good}."),
            good.replacen('.', "..", 1),
            format!("{good}=="),
            sign_raw(r#"["HS256"]"#, &claims_text(s, "")),
            sign_raw(r#"{"alg":"HS256","kid":7}"#, &claims_text(s, "")),
            sign_raw(r#"{"alg":"hs256"}"#, &claims_text(s, "")),
            sign_raw(HS256, "[1]"),
            sign_raw(HS256, &format!("{} ", claims_text(s, "")).replace('}', "}x")),
            "a".repeat(super::MAX_TOKEN_BYTES + 1),
        ] {
            assert!(verify(&bad, &ks, &settings(), t).is_err(), "{bad}");
        }
    }

    #[test]
    fn short_hmac_secrets_are_refused_at_load() {
        let cfg =
            KeyConfig { kid: None, algorithm: "HS256".into(), secret_env: Some("S".into()), public_key_file: None };
        let err = KeySet::load_with(&[cfg], |_| Some("short".into())).unwrap_err();
        assert!(err.to_string().contains("needs at least 32"), "{err}");
    }
}
