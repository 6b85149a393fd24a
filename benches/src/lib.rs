//! Benchmark harness crate: see `benches/benches/` for the criterion targets.
