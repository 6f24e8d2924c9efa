//! Question: what does verifying one client token cost at the handshake?
//! Baseline: HS256 with one key; the same with a token signed by an unknown key (the cost of a
//! forged-token flood). ES256 and RS256 handshake rates belong to the load test (issue 3).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use wsgate::auth::jwt::{self, MintRequest};
use wsgate::auth::keys::KeySet;
use wsgate::config::{AuthConfig, KeyConfig};

fn keys(secret: &str) -> KeySet {
    let cfg = KeyConfig { kid: None, algorithm: "HS256".into(), secret_env: Some("S".into()), public_key_file: None };
    KeySet::load_with(&[cfg], |_| Some(secret.to_string())).expect("keys")
}

fn bench(c: &mut Criterion) {
    let ks = keys("0123456789abcdef0123456789abcdef");
    let other = keys("fedcba9876543210fedcba9876543210");
    let st = AuthConfig::default();
    let now = SystemTime::now();
    let req = MintRequest { sub: "alice", scope: "chat:read chat:write", ttl: Duration::from_secs(600) };
    let good = jwt::mint(&ks, &st, &req, now).expect("mint");
    let forged = jwt::mint(&other, &st, &req, now).expect("mint");
    let mut g = c.benchmark_group("jwt_verify");
    for (name, token) in [("hs256_valid", &good), ("hs256_forged", &forged)] {
        g.bench_with_input(BenchmarkId::from_parameter(name), token, |b, t| {
            b.iter(|| jwt::verify(black_box(t), &ks, &st, now))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
