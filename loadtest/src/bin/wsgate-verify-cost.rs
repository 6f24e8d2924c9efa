//! CPU time of one JWT signature verification with the same library and backend as the
//! gateway (jsonwebtoken on aws-lc): the yardstick `compare.sh` sets beside the handshake
//! storms ("NGINX's proxied handshake plus one ES256 verification").
//!
//!   wsgate-verify-cost --private-key KEY.pk8.pem --public-key KEY.pub.pem [--alg ES256] [--count 3000]
//!
//! Mints one token, verifies it `--count` times (1..=1 000 000), prints one JSON line:
//! `{"alg":…,"verifications":…,"cpu_us_per_verify":…}` (process user+system time from
//! /proc/self/stat, in clock ticks of 10 ms: keep the run above a second or so).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};

fn cpu_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // fields after the parenthesised command: state is field 3, utime 14, stime 15
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow::anyhow!("/proc/self/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let at =
        |i: usize| -> anyhow::Result<u64> { Ok(f.get(i).ok_or_else(|| anyhow::anyhow!("/proc/self/stat"))?.parse()?) };
    Ok(at(11)? + at(12)?)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut private, mut public, mut alg, mut count) = (None, None, "ES256".to_string(), 3000u64);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow::anyhow!("{a} needs a value"));
        match a.as_str() {
            "--private-key" => private = Some(value()?),
            "--public-key" => public = Some(value()?),
            "--alg" => alg = value()?,
            "--count" => count = value()?.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!((1..=1_000_000).contains(&count), "--count must be within 1..=1000000");
    let private = std::fs::read(private.ok_or_else(|| anyhow::anyhow!("--private-key is required"))?)?;
    let public = std::fs::read(public.ok_or_else(|| anyhow::anyhow!("--public-key is required"))?)?;
    let (algorithm, enc, dec) = match alg.as_str() {
        "ES256" => (Algorithm::ES256, EncodingKey::from_ec_pem(&private)?, DecodingKey::from_ec_pem(&public)?),
        "RS256" => (Algorithm::RS256, EncodingKey::from_rsa_pem(&private)?, DecodingKey::from_rsa_pem(&public)?),
        other => anyhow::bail!("--alg must be ES256 or RS256, not {other}"),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({"sub": "yardstick", "iat": now, "exp": now + 3600});
    let token = encode(&Header::new(algorithm), &claims, &enc)?;
    let mut validation = Validation::new(algorithm);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let start = cpu_ticks()?;
    for _ in 0..count {
        decode::<serde_json::Value>(std::hint::black_box(&token), &dec, &validation)?;
    }
    let ticks = cpu_ticks()?.saturating_sub(start);
    // USER_HZ is 100 on Linux (sysconf(_SC_CLK_TCK)); a tick is 10 000 us
    let per = ticks as f64 * 10_000.0 / count as f64;
    println!("{{\"alg\":\"{alg}\",\"verifications\":{count},\"cpu_us_per_verify\":{per:.1}}}");
    Ok(())
}
