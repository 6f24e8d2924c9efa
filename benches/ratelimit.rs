//! Question: what does the per-frame token bucket cost? Baseline: a take that succeeds and a
//! take that is refused (the flood case).

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use wsgate::policy::ratelimit::TokenBucket;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("token_bucket");
    let t0 = Instant::now();
    for (name, burst, rate) in [("plenty", u64::MAX / 4, u64::MAX / 4), ("empty", 1, 1)] {
        let mut bucket = TokenBucket::try_new(burst, rate, t0).expect("bucket");
        let _ = bucket.try_take(1, t0);
        g.bench_function(BenchmarkId::from_parameter(name), |b| b.iter(|| bucket.try_take(black_box(1), t0)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
