//! Question: what does the sensitive-data guard cost per text message? The default pack (every
//! built-in rule, action log, both directions) over realistic chat envelopes
//! (`{"type":"chat.send","payload":{"room":"ops","text":"…"}}`) of 64 B, 1 KiB and 16 KiB:
//! clean (stage 1 alone: one classifying pass over 64-byte blocks, `wsgate-byteclass`) and
//! with one hit (a card number in the text: prefilter, walk, pointer, fingerprint). Beside
//! them, a clean message whose text holds a `\n` escape (it is walked, as an escape can hide
//! an anchor), and the floor: a `serde_json` syntax check of the same text. Last, the message
//! `loadtest/compare.sh` echoes (`{"type":"chat.send","id":"lt","payload":{"text":"xxx…"}}`)
//! at its two sizes, 64 B and 4 KiB: the guard's cost at the points compare.sh reports.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsgate::policy::sensitive::{Direction, FingerprintKey, Guard, GuardAction, RuleDef, RuleKind};

fn pack() -> Vec<RuleDef> {
    let rule = |name: &str, kind| RuleDef::new(name, kind, Direction::Both, GuardAction::Log);
    vec![
        rule("card_number", RuleKind::CardNumber),
        rule("iban", RuleKind::Iban),
        rule("aws_access_key", RuleKind::AwsAccessKey),
        rule("private_key_pem", RuleKind::PrivateKeyPem),
        rule("jwt", RuleKind::Jwt),
        rule("password_field", RuleKind::PasswordField { names: vec![] }),
    ]
}

fn default_pack() -> Guard {
    Guard::compile(&pack()).expect("default pack")
}

const WORDS: &[&str] = &[
    "the",
    "deploy",
    "of",
    "build",
    "42",
    "went",
    "out",
    "at",
    "10:30",
    "and",
    "the",
    "canary",
    "looks",
    "fine,",
    "latency",
    "p99",
    "is",
    "118ms",
    "on",
    "eu-west-1;",
    "I'll",
    "ping",
    "Asia",
    "team",
    "about",
    "the",
    "token",
    "refresh",
    "bug",
    "(ticket",
    "OPS-2291)",
    "before",
    "lunch.",
    "Anyone",
    "seen",
    "the",
    "password",
    "reset",
    "emails",
    "bounce?",
];

/// A chat envelope of `size` bytes (more when `secret` does not fit: 64 B leaves 9 bytes of
/// text), `secret` placed in the middle of the text.
fn chat(size: usize, secret: &str) -> String {
    let head = r#"{"type":"chat.send","payload":{"room":"ops","text":""#;
    let tail = r#""}}"#;
    let want = size.saturating_sub(head.len() + tail.len()).max(secret.len());
    let mut text = String::new();
    let mut i = 0;
    while text.len() < want {
        text.push_str(WORDS[i % WORDS.len()]);
        text.push(' ');
        i += 1;
    }
    text.truncate(want);
    if !secret.is_empty() {
        let mid = (want.saturating_sub(secret.len())) / 2;
        let mid = (0..=mid).rev().find(|&m| text.is_char_boundary(m)).unwrap_or(0);
        text.replace_range(mid..(mid + secret.len()).min(text.len()), secret);
        text.truncate(want);
    }
    format!("{head}{text}{tail}")
}

fn bench(c: &mut Criterion) {
    let guard = default_pack();
    let key = FingerprintKey::random();
    let mut g = c.benchmark_group("sensitive");
    for size in [64, 1024, 16 * 1024] {
        let clean = chat(size, "");
        let hit = chat(size, " 4111 1111 1111 1111 ");
        let escaped = chat(size, r" a\nb ");
        assert!(guard.scan(Direction::ClientToUpstream, &clean, &key).is_none(), "{clean}");
        assert_eq!(guard.scan(Direction::ClientToUpstream, &hit, &key).map(|f| f.hits.len()), Some(1), "{hit}");
        assert!(guard.scan(Direction::ClientToUpstream, &escaped, &key).is_none());
        for (name, text) in [("clean", &clean), ("one_hit", &hit), ("clean_escaped", &escaped)] {
            g.throughput(Throughput::Bytes(text.len() as u64));
            g.bench_with_input(BenchmarkId::new(name, size), text, |b, t| {
                b.iter(|| guard.scan(Direction::ClientToUpstream, black_box(t), &key))
            });
        }
        g.throughput(Throughput::Bytes(clean.len() as u64));
        g.bench_with_input(BenchmarkId::new("baseline_serde_ignored", size), &clean, |b, t| {
            b.iter(|| serde_json::from_str::<serde::de::IgnoredAny>(black_box(t)))
        });
    }
    g.finish();

    // Where a clean 1 KiB message's time goes: one rule at a time.
    let mut g = c.benchmark_group("sensitive_by_rule");
    let clean = chat(1024, "");
    g.throughput(Throughput::Bytes(clean.len() as u64));
    for (i, name) in
        ["card_number", "iban", "aws_access_key", "private_key_pem", "jwt", "password_field"].iter().enumerate()
    {
        let one = Guard::compile(&pack()[i..=i]).expect("rule");
        g.bench_with_input(BenchmarkId::new(*name, 1024), &clean, |b, t| {
            b.iter(|| one.scan(Direction::ClientToUpstream, black_box(t), &key))
        });
    }
    g.bench_with_input(BenchmarkId::new("memchr_backslash", 1024), &clean, |b, t| {
        b.iter(|| memchr::memchr(b'\\', black_box(t).as_bytes()))
    });
    g.finish();
}

/// The load test's message (`wsgate-loadtest`'s `payload`): an envelope padded with `x`.
fn padded(size: usize) -> String {
    let head = r#"{"type":"chat.send","id":"lt","payload":{"text":""#;
    let tail = r#""}}"#;
    format!("{head}{}{tail}", "x".repeat(size.saturating_sub(head.len() + tail.len())))
}

fn bench_loadtest_message(c: &mut Criterion) {
    let guard = default_pack();
    let key = FingerprintKey::random();
    let mut g = c.benchmark_group("sensitive_loadtest_message");
    for size in [64, 4096] {
        let text = padded(size);
        assert!(guard.scan(Direction::ClientToUpstream, &text, &key).is_none(), "{text}");
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::new("clean", size), &text, |b, t| {
            b.iter(|| guard.scan(Direction::ClientToUpstream, black_box(t), &key))
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_loadtest_message);
criterion_main!(benches);
