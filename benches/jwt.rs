//! Question: what does verifying one client token cost at the handshake, per algorithm?
//! Baseline: HS256 with one key. Beside it: ES256 and RS256 (keys made with rcgen, tokens
//! signed by jsonwebtoken), and a token signed by an unknown HS256 key (the cost of a
//! forged-token flood). The handshake rate as a whole is `loadtest/compare.sh`'s ramp.

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use wsgate::auth::jwt::{self, MintRequest};
use wsgate::auth::keys::KeySet;
use wsgate::config::{AuthConfig, KeyConfig};

fn hmac_keys(secret: &str) -> KeySet {
    let cfg = KeyConfig { kid: None, algorithm: "HS256".into(), secret_env: Some("S".into()), public_key_file: None };
    KeySet::load_with(&[cfg], |_| Some(secret.to_string())).expect("keys")
}

/// A verification key set for `alg` and a token signed with the matching private key.
fn asymmetric(alg: &str, dir: &std::path::Path) -> (KeySet, String) {
    let (rcgen_alg, jwt_alg) = match alg {
        "ES256" => (&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
        _ => (&rcgen::PKCS_RSA_SHA256, Algorithm::RS256),
    };
    let pair = rcgen::KeyPair::generate_for(rcgen_alg).expect("key pair");
    let public = dir.join(format!("{alg}.pub.pem"));
    std::fs::File::create(&public).and_then(|mut f| f.write_all(pair.public_key_pem().as_bytes())).expect("write");
    let cfg = KeyConfig { kid: None, algorithm: alg.into(), secret_env: None, public_key_file: Some(public) };
    let keys = KeySet::load_with(&[cfg], |_| None).expect("keys");
    let pem = pair.serialize_pem();
    let signing = match jwt_alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .expect("signing key");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let claims = serde_json::json!({"sub": "alice", "scope": "chat:read", "iat": now, "exp": now + 600});
    (keys, jsonwebtoken::encode(&Header::new(jwt_alg), &claims, &signing).expect("sign"))
}

fn bench(c: &mut Criterion) {
    let ks = hmac_keys("0123456789abcdef0123456789abcdef");
    let other = hmac_keys("fedcba9876543210fedcba9876543210");
    let st = AuthConfig::default();
    let now = SystemTime::now();
    let req = MintRequest { sub: "alice", scope: "chat:read chat:write", ttl: Duration::from_secs(600) };
    let good = jwt::mint(&ks, &st, &req, now).expect("mint");
    let forged = jwt::mint(&other, &st, &req, now).expect("mint");
    let dir = tempfile::tempdir().expect("tempdir");
    let (es_keys, es_token) = asymmetric("ES256", dir.path());
    let (rs_keys, rs_token) = asymmetric("RS256", dir.path());
    let mut g = c.benchmark_group("jwt_verify");
    for (name, keys, token) in [
        ("hs256_valid", &ks, &good),
        ("hs256_forged", &ks, &forged),
        ("es256_valid", &es_keys, &es_token),
        ("rs256_valid", &rs_keys, &rs_token),
    ] {
        assert_eq!(jwt::verify(token, keys, &st, now).is_ok(), !name.contains("forged"), "{name}");
        g.bench_with_input(BenchmarkId::from_parameter(name), token, |b, t| {
            b.iter(|| jwt::verify(black_box(t), keys, &st, now))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
