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
//!
//! One round trip for both: when the [`per_ip`] middleware can tell the user without any I/O
//! (an API token this process has cached, or a session cookie whose signature verifies), it
//! charges the per-IP and the per-user bucket at once (two commands written together on the
//! store's multiplexed connection, answered together), and the extractors charge neither again.
//! Otherwise the per-IP bucket is charged first, as before, and the per-user one after the
//! credentials were checked. A request charged early this way whose credentials then turn out
//! refused (a banned user, a session that is not the latest login) has spent a token of the user
//! its credentials name: the same user, so nothing is charged to anyone else.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
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

/// Marks a request whose per-user limit was taken, for that user.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UserCharged(i64);

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

fn ip_limit(state: &AppState) -> RateLimit {
    let config = &state.config.contestant;
    RateLimit {
        per_second: f64::from(config.api_ip_per_sec),
        burst: config.api_ip_burst,
    }
}

fn user_limit(state: &AppState) -> RateLimit {
    let config = &state.config.contestant;
    RateLimit {
        per_second: f64::from(config.api_user_per_sec),
        burst: config.api_user_burst,
    }
}

fn client_of(parts: &Parts, state: &AppState) -> IpAddr {
    client_ip(
        peer_of(parts),
        forwarded_for(&parts.headers),
        &state.config.contestant.trusted_proxies,
    )
}

/// Applies the per-IP limit once per request; returns the client address.
pub(crate) async fn charge_ip(parts: &mut Parts, state: &AppState) -> Result<IpAddr, ApiError> {
    if let Some(IpCharged(ip)) = parts.extensions.get::<IpCharged>() {
        return Ok(*ip);
    }
    let ip = client_of(parts, state);
    charge(state, &format!("api:ip:{ip}"), ip_limit(state)).await?;
    parts.extensions.insert(IpCharged(ip));
    Ok(ip)
}

/// Applies the per-user limit once per request.
pub(crate) async fn charge_user(
    parts: &mut Parts,
    state: &AppState,
    user_id: i64,
) -> Result<(), ApiError> {
    if parts
        .extensions
        .get::<UserCharged>()
        .is_some_and(|UserCharged(charged)| *charged == user_id)
    {
        return Ok(());
    }
    charge(state, &format!("api:user:{user_id}"), user_limit(state)).await?;
    parts.extensions.insert(UserCharged(user_id));
    Ok(())
}

/// The user the request's credentials name, when that is known without any I/O: an API token
/// in this process's token cache (unexpired), or a session cookie whose signature verifies.
/// Whether the credentials are valid is decided later by the extractors, as always.
fn user_without_io(parts: &Parts, state: &AppState) -> Option<i64> {
    let accounts = &state.accounts;
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let token = value.to_str().ok()?.strip_prefix("Token ")?.trim();
        // Longer than any token we issue (tokens.rs refuses it too): not worth hashing.
        if token.is_empty() || token.len() > 128 {
            return None;
        }
        let (user, expiration) = accounts.tokens.get(&super::tokens::digest(token))?;
        return (super::now_ms() < expiration).then_some(user);
    }
    let jwt = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| super::session::cookie_value(v, super::session::COOKIE))?;
    let claims = accounts
        .session_key
        .verify(jwt, super::now_ms() / 1000)
        .ok()?;
    Some(claims.sub)
}

/// Applies the per-IP limit, and the per-user one in the same round trip when the user is
/// known without I/O ([`user_without_io`]).
async fn charge_early(parts: &mut Parts, state: &AppState) -> Result<(), ApiError> {
    if parts.extensions.get::<IpCharged>().is_some() {
        return Ok(());
    }
    let Some(user) = user_without_io(parts, state) else {
        return charge_ip(parts, state).await.map(|_| ());
    };
    let ip = client_of(parts, state);
    let ip_key = format!("api:ip:{ip}");
    let user_key = format!("api:user:{user}");
    let (by_ip, by_user) = tokio::join!(
        charge(state, &ip_key, ip_limit(state)),
        charge(state, &user_key, user_limit(state)),
    );
    by_ip?;
    parts.extensions.insert(IpCharged(ip));
    by_user?;
    parts.extensions.insert(UserCharged(user));
    Ok(())
}

/// The per-IP limit as middleware (and the per-user one with it when it costs no I/O to know
/// the user), for every route:
/// `router.layer(axum::middleware::from_fn_with_state(state.clone(), limits::per_ip))`. The
/// extractors then see the request as charged and do not charge it again.
pub async fn per_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match charge_early(&mut parts, &state).await {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
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
