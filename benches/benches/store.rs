//! State-store operations on the gateway's hot path: one rate-limit decision, and one connection
//! lease taken and given back (two scopes, as a TCP session does), on the in-process store and on
//! Redis at 127.0.0.1:6379 (`FCTF_BENCH_REDIS_URL` to point elsewhere).
//!
//! Run: `cargo bench -p fctf-benches --bench store`

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fctf_core::store::{LeaseScope, MemoryStore, RateLimit, RedisStore, StateStore};
use tokio::runtime::Runtime;

/// Generous enough that the benchmark measures the allowed path, as most traffic is.
const LIMIT: RateLimit = RateLimit {
    per_second: 1e6,
    burst: 1_000_000,
};
const LEASE_TTL: Duration = Duration::from_secs(30);
const SCOPES: [LeaseScope<'static>; 2] = [
    LeaseScope {
        key: "bench:global",
        cap: 1_000_000,
    },
    LeaseScope {
        key: "bench:ip:127.0.0.1",
        cap: 1_000,
    },
];
const LEASE_KEYS: [&str; 2] = ["bench:global", "bench:ip:127.0.0.1"];

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime for the benchmarks")
}

fn bench_store(c: &mut Criterion, name: &str, rt: &Runtime, store: &dyn StateStore) {
    let mut group = c.benchmark_group(format!("store/{name}"));
    group.bench_function("rate_limit", |b| {
        b.to_async(rt).iter(|| async {
            store
                .rate_limit("bench:ip:127.0.0.1", LIMIT, 1)
                .await
                .expect("rate_limit")
        });
    });
    group.bench_function("lease_acquire_release", |b| {
        b.to_async(rt).iter(|| async {
            store
                .lease_acquire(&SCOPES, "bench-holder", LEASE_TTL)
                .await
                .expect("lease_acquire");
            store
                .lease_release(&LEASE_KEYS, "bench-holder")
                .await
                .expect("lease_release");
        });
    });
    group.finish();
}

fn memory(c: &mut Criterion) {
    let rt = runtime();
    let store = rt.block_on(async { MemoryStore::new() });
    bench_store(c, "memory", &rt, &store);
}

fn redis(c: &mut Criterion) {
    let rt = runtime();
    let url = std::env::var("FCTF_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("fctf-bench:{}:", std::process::id());
    let store = rt
        .block_on(RedisStore::connect(&url, &prefix, Duration::from_secs(2)))
        .unwrap_or_else(|e| {
            panic!(
                "the Redis benchmarks need Redis at {url} ({e}).\nStart it with: \
                 redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
            )
        });
    bench_store(c, "redis", &rt, &store);
}

criterion_group!(benches, memory, redis);
criterion_main!(benches);
