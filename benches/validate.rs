//! Question: what do the per-message checks cost (JSON parse, envelope, type, scope, schema),
//! and the frame guard per chunk? Baseline: a bare `serde_json::from_str` of the same frame,
//! the floor any JSON-aware gateway pays.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use wsgate::config::{MessageRule, Route};
use wsgate::policy::framing::FrameGuard;
use wsgate::policy::origin::OriginPolicy;
use wsgate::policy::validate::check_text;

fn route() -> Route {
    let schema =
        serde_json::json!({"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}});
    let mut r = Route::new("/ws", "ws://127.0.0.1:1/");
    r.origins = OriginPolicy::try_new(&["https://app.example.com".to_string()], false).expect("origins");
    r.messages.insert("chat.send".into(), MessageRule::new(Some("chat:write"), Some(&schema)).expect("schema"));
    r.messages.insert("chat.read".into(), MessageRule::new(Some("chat:read"), None).expect("rule"));
    r
}

fn bench(c: &mut Criterion) {
    let r = route();
    let scopes = vec!["chat:read".to_string(), "chat:write".to_string()];
    let small = r#"{"type":"chat.send","payload":{"room":"ops","text":"hi"},"id":"c-17"}"#.to_string();
    let big = format!(r#"{{"type":"chat.send","payload":{{"room":"ops","text":"{}"}},"id":"c-18"}}"#, "x".repeat(4000));
    let mut g = c.benchmark_group("check_text");
    for (name, text) in [("64B", &small), ("4KiB", &big)] {
        g.bench_with_input(BenchmarkId::new("pipeline", name), text, |b, t| {
            b.iter(|| check_text(&r, &scopes, black_box(t)))
        });
        g.bench_with_input(BenchmarkId::new("serde_json_only", name), text, |b, t| {
            b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(t)))
        });
    }
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
