//! The access log: one structured `tracing` event per HTTP request and per TCP connection, at
//! `INFO` under the target [`TARGET`], so it can be routed apart from diagnostics.
//!
//! Fields: `proto` (`http` or `tcp`), `client` (after [`crate::client`]), `status` (HTTP status,
//! 0 when nothing was sent) or `outcome` (TCP: `relayed`, `denied`, `closed`), `reason` (why it
//! was answered or refused, a metrics kind), `team`, `challenge`, `instance` (once a token was
//! verified), `upstream` (the instance's address, once chosen), `duration_us`; HTTP adds
//! `method` and `path` (never the query, which carries the token on a first visit).
//!
//! A token never appears: only its claims do. Store keys name a token by its digest, and no
//! event carries a header, a cookie or a query string.

/// The target of access-log events.
pub const TARGET: &str = "fctf_gateway::access";

/// Microseconds since `started`, saturating.
pub fn micros_since(started: std::time::Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}
