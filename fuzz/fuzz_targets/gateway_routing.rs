//! A token's route to its upstream, for any route text.
//!
//! Only well-formed routes lead anywhere: a DNS-1123 label leads to its namespace's service, and
//! `host:port` (port 1..=65535 in at most five digits) to a literal IPv4 or bracketed IPv6
//! address or to a valid DNS name; everything else is refused. Written here independently of
//! the gateway. An upstream's text form routes back to the same upstream, so what the logs show
//! is what is dialled.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fctf_gateway::routing::{RouteError, Routing, Upstream};
use libfuzzer_sys::fuzz_target;

const DOMAIN: &str = "svc.cluster.local";
const PORT: u16 = 3333;

fn is_label(text: &str, any_case: bool) -> bool {
    let b = text.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || *c == b'-'
                || (any_case && c.is_ascii_uppercase())
        })
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// A name whose last label reads as a number is an IPv4 address to the system resolver: refused.
fn is_dns_name(text: &str) -> bool {
    let last = text.rsplit('.').next().unwrap_or("");
    let numeric = match last.strip_prefix("0x").or_else(|| last.strip_prefix("0X")) {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()),
    };
    text.len() <= 253 && !numeric && text.split('.').all(|l| is_label(l, true))
}

fn port_of(text: &str) -> Option<u16> {
    let ok = (1..=5).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| text.parse::<u16>().ok())
        .flatten()
        .filter(|p| *p != 0)
}

fuzz_target!(|data: &[u8]| {
    let Ok(route) = std::str::from_utf8(data) else {
        return;
    };
    // A trailing dot on the cluster domain must not double up.
    let routing = Routing::new(
        if route.len() % 2 == 0 {
            DOMAIN
        } else {
            "svc.cluster.local."
        },
        PORT,
    );
    let got = routing.upstream(route);

    let Some((host, port)) = route.rsplit_once(':') else {
        let want = Upstream::Named {
            host: format!("{route}-svc.{route}.{DOMAIN}"),
            port: PORT,
        };
        if is_label(route, false) {
            assert_eq!(got, Ok(want), "{route:?}");
        } else {
            assert_eq!(got, Err(RouteError::Invalid), "{route:?}");
        }
        return;
    };
    let Some(port) = port_of(port) else {
        assert_eq!(got, Err(RouteError::InvalidPort), "{route:?}");
        return;
    };
    let want = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<Ipv6Addr>()
            .map(|ip| Upstream::Addr((IpAddr::V6(ip), port).into()))
            .map_err(|_| RouteError::Invalid)
    } else if let Ok(ip) = host.parse::<Ipv4Addr>() {
        Ok(Upstream::Addr((IpAddr::V4(ip), port).into()))
    } else if is_dns_name(host) {
        Ok(Upstream::Named {
            host: host.to_owned(),
            port,
        })
    } else {
        Err(RouteError::Invalid)
    };
    assert_eq!(got, want, "{route:?}");

    if let Ok(upstream) = got {
        let text = upstream.to_string();
        assert_eq!(
            routing.upstream(&text),
            Ok(upstream),
            "{route:?} -> {text:?}"
        );
    }
});
