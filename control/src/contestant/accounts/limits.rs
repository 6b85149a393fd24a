//! Per-IP and per-user API rate limits (token buckets in the state store, so every process of
//! the service shares them), and the client address they are keyed by.
//!
//! The client is the TCP peer, unless the peer is one of `[contestant].trusted_proxies`: then
//! `X-Forwarded-For` is read from the right, skipping trusted proxies, and the first address not
//! trusted is the client. A client behind no trusted proxy cannot name itself.
//!
//! The limits are applied by the extractors ([`super::Caller`], `Option<Caller>`,
//! [`ClientIp`]) and by the [`per_ip`] middleware, at most once per request each. A store outage lets requests through (logged):
//! these limits protect capacity, not secrets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fctf_core::store::RateLimit;
use ipnet::IpNet;

use super::super::AppState;
use crate::error::{ApiError, ErrorKind};

/// The client's address (see the module docs), after the per-IP limit was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Marks a request whose per-IP limit was taken.
#[derive(Clone, Copy, Debug)]
struct IpCharged(IpAddr);

/// Marks a request whose per-user limit was taken.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UserCharged;

/// The client address: pure, from the TCP peer, the `X-Forwarded-For` header and the trusted
/// proxy networks.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut last = peer;
    for hop in header.rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // A garbled hop: nothing left of it can be trusted; the last trusted hop's view wins.
            return last;
        };
        if !is_trusted(&ip) {
            return ip;
        }
        last = ip;
    }
    last
}

fn peer_of(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn forwarded_for(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-forwarded-for").and_then(|v| v.to_str().ok())
}

/// Takes one token from `key`'s bucket: a 429 with `Retry-After` when empty.
async fn charge(state: &AppState, key: &str, limit: RateLimit) -> Result<(), ApiError> {
    match state.store.rate_limit(key, limit, 1).await {
        Ok(decision) if decision.allowed => Ok(()),
        Ok(decision) => {
            let secs = decision.retry_after.as_secs_f64().ceil().min(3600.0) as u64;
            Err(ApiError::new(
                ErrorKind::RateLimited,
                "Too many requests; slow down and try again shortly.",
            )
            .retry_after(secs))
        }
        Err(error) => {
            tracing::warn!(%error, key, "rate limit unavailable; request let through");
            Ok(())
        }
    }
}

/// Applies the per-IP limit once per request; returns the client address.
pub(crate) async fn charge_ip(parts: &mut Parts, state: &AppState) -> Result<IpAddr, ApiError> {
    if let Some(IpCharged(ip)) = parts.extensions.get::<IpCharged>() {
        return Ok(*ip);
    }
    let config = &state.config.contestant;
    let ip = client_ip(
        peer_of(parts),
        forwarded_for(&parts.headers),
        &config.trusted_proxies,
    );
    let limit = RateLimit {
        per_second: f64::from(config.api_ip_per_sec),
        burst: config.api_ip_burst,
    };
    charge(state, &format!("api:ip:{ip}"), limit).await?;
    parts.extensions.insert(IpCharged(ip));
    Ok(ip)
}

/// Applies the per-user limit once per request.
pub(crate) async fn charge_user(
    parts: &mut Parts,
    state: &AppState,
    user_id: i64,
) -> Result<(), ApiError> {
    if parts.extensions.get::<UserCharged>().is_some() {
        return Ok(());
    }
    let config = &state.config.contestant;
    let limit = RateLimit {
        per_second: f64::from(config.api_user_per_sec),
        burst: config.api_user_burst,
    };
    charge(state, &format!("api:user:{user_id}"), limit).await?;
    parts.extensions.insert(UserCharged);
    Ok(())
}

/// The per-IP limit as middleware, for routes that take no extractor from here:
/// `router.layer(axum::middleware::from_fn_with_state(state.clone(), limits::per_ip))`. The
/// extractors then see the request as charged and do not charge it again.
pub async fn per_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match charge_ip(&mut parts, &state).await {
        Ok(_) => next.run(Request::from_parts(parts, body)).await,
        Err(error) => error.into_response(),
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        charge_ip(parts, state).await.map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // Untrusted peer: the header is ignored.
        assert_eq!(
            client_ip(ip("1.2.3.4"), Some("9.9.9.9"), &trusted),
            ip("1.2.3.4")
        );
        // Trusted peer: the rightmost untrusted hop is the client; spoofed hops to its left
        // are not believed.
        assert_eq!(
            client_ip(ip("10.0.0.1"), Some("6.6.6.6, 5.5.5.5, 10.0.0.2"), &trusted),
            ip("5.5.5.5")
        );
        assert_eq!(client_ip(ip("10.0.0.1"), None, &trusted), ip("10.0.0.1"));
        assert_eq!(
            client_ip(ip("10.0.0.1"), Some("garbage, 10.0.0.3"), &trusted),
            ip("10.0.0.3")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), Some("5.5.5.5"), &[]),
            ip("10.0.0.1")
        );
    }
}
