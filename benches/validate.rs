//! Question: what do the per-message checks cost, and what dominates the whole per-frame
//! decision? Each figure has its floor beside it:
//! - envelope (type, id, payload shape, scope) vs a bare `serde_json` parse of the same text
//!   into a `Value` and into `IgnoredAny` (syntax check only, the least any JSON-aware
//!   gateway pays);
//! - the JSON Schema check of the payload (a type with a schema) vs the envelope alone;
//! - the whole decision on a 256-byte client frame, through the session's own inbound
//!   pipeline: header parse and framing rules, unmasking copy, both token buckets, UTF-8,
//!   envelope + scope + schema.
//!
//! Also the frame guard per 4 KiB frame and the origin check.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use wsgate::config::{Limits, MessageRule, Route};
use wsgate::policy::framing::FrameGuard;
use wsgate::policy::origin::OriginPolicy;
use wsgate::policy::validate::check_text;
use wsgate::session::inbound::{Action, Inbound, Step};
use wsgate::wire;

fn route() -> Route {
    let schema =
        serde_json::json!({"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}});
    let mut r = Route::new("/ws", "ws://127.0.0.1:1/");
    r.origins = OriginPolicy::try_new(&["https://app.example.com".to_string()], false).expect("origins");
    r.messages.insert("chat.send".into(), MessageRule::new(Some("chat:write"), Some(&schema)).expect("schema"));
    r.messages.insert("chat.read".into(), MessageRule::new(Some("chat:read"), None).expect("rule"));
    r
}

/// An envelope of `kind` padded to exactly `size` bytes.
fn envelope(kind: &str, size: usize) -> String {
    let head = format!(r#"{{"type":"{kind}","id":"c-17","payload":{{"room":"ops","text":""#);
    let tail = r#""}}"#;
    format!("{head}{}{tail}", "x".repeat(size.saturating_sub(head.len() + tail.len())))
}

fn bench(c: &mut Criterion) {
    let r = route();
    let scopes = vec!["chat:read".to_string(), "chat:write".to_string()];
    let mut g = c.benchmark_group("envelope");
    for size in [64, 256, 4096] {
        let text = envelope("chat.read", size);
        g.bench_with_input(BenchmarkId::new("check_text", size), &text, |b, t| {
            b.iter(|| check_text(&r, &scopes, black_box(t)))
        });
        g.bench_with_input(BenchmarkId::new("baseline_serde_value", size), &text, |b, t| {
            b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(t)))
        });
        g.bench_with_input(BenchmarkId::new("baseline_serde_ignored", size), &text, |b, t| {
            b.iter(|| serde_json::from_str::<serde::de::IgnoredAny>(black_box(t)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("schema");
    for size in [64, 256, 4096] {
        let text = envelope("chat.send", size);
        g.bench_with_input(BenchmarkId::new("check_text_with_schema", size), &text, |b, t| {
            b.iter(|| check_text(&r, &scopes, black_box(t)))
        });
    }
    g.finish();

    // The whole decision for one masked 256-byte client text frame, in the session's order.
    let text = envelope("chat.send", 256);
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut frame = bytes::BytesMut::new();
    wire::encode(&mut frame, wire::OP_TEXT, true, text.as_bytes(), Some(key));
    let mut g = c.benchmark_group("frame_decision");
    g.bench_function("256B", |b| {
        let now = Instant::now();
        let limits = Limits {
            message_burst: u32::MAX,
            messages_per_second: 1_000_000,
            bytes_per_second: 1_000_000_000_000,
            ..Limits::default()
        };
        let mut inbound = Inbound::new(Arc::new(r.clone()), &limits, now);
        b.iter(|| {
            let step = inbound.next(black_box(&frame[..]), &scopes, Instant::now());
            assert!(matches!(step, Step::Frame { action: Action::Forward { .. }, .. }));
            step
        })
    });
    g.bench_function("baseline_serde_value_256B", |b| {
        b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(&text)))
    });
    g.finish();

    let mut frame = vec![0x81u8, 0x80 | 126, 0x10, 0x00, 1, 2, 3, 4];
    frame.extend(std::iter::repeat_n(b'a', 4096));
    let mut g = c.benchmark_group("frame_guard");
    g.bench_function("4KiB_frame", |b| {
        let mut guard = FrameGuard::new(65_536);
        b.iter(|| guard.feed(black_box(&frame)))
    });
    g.finish();
    let origins = &r.origins;
    c.bench_function("origin_check", |b| b.iter(|| origins.check(black_box(Some("https://app.example.com")))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
