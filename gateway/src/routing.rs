//! Where a token's route leads: the upstream address of a challenge instance.
//!
//! A route (the `route` claim) is either a Kubernetes namespace name, which leads to the
//! instance's service `<ns>-svc.<ns>.<cluster domain>:<port>`, or a literal `host:port` (the
//! local-process runtime, or a fixed backend). Literal IP addresses are parsed here once and never
//! touch DNS; host names are resolved by the caller (off the parsing path, cached).

use std::net::{IpAddr, SocketAddr};

/// Where the traffic of a route goes, before any DNS lookup.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// A literal socket address: connect to it as it is.
    Addr(SocketAddr),
    /// A host name and port, to resolve (the service of a namespace route, or a named host).
    Named {
        /// A DNS name, validated: lowercase-insensitive letters, digits, `-` and `.`.
        host: String,
        /// The TCP port.
        port: u16,
    },
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Addr(addr) => write!(f, "{addr}"),
            Upstream::Named { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Why a route could not be turned into an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Neither a namespace name (a DNS-1123 label) nor a valid `host:port`.
    #[error("route is neither a namespace name nor host:port")]
    Invalid,
    /// A `host:port` whose port is not a number in 1..=65535.
    #[error("route has an invalid port")]
    InvalidPort,
}

/// How namespace routes map to service addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    cluster_domain: String,
    namespace_port: u16,
}

impl Routing {
    /// Namespace `ns` leads to `ns-svc.ns.<cluster_domain>:<namespace_port>`.
    pub fn new(cluster_domain: impl Into<String>, namespace_port: u16) -> Self {
        let cluster_domain = cluster_domain.into();
        // A trailing dot (an absolute name) would double up when joined.
        let cluster_domain = cluster_domain.trim_end_matches('.').to_owned();
        Routing {
            cluster_domain,
            namespace_port,
        }
    }

    /// The upstream of `route`.
    pub fn upstream(&self, route: &str) -> Result<Upstream, RouteError> {
        if !route.contains(':') {
            if !is_dns_label(route) {
                return Err(RouteError::Invalid);
            }
            return Ok(Upstream::Named {
                host: format!("{route}-svc.{route}.{}", self.cluster_domain),
                port: self.namespace_port,
            });
        }
        // `[v6]:port`, `v4:port` and `name:port`; a bare IPv6 address has no port.
        let (host, port) = route.rsplit_once(':').ok_or(RouteError::Invalid)?;
        let port = parse_port(port)?;
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            let ip: std::net::Ipv6Addr = v6.parse().map_err(|_| RouteError::Invalid)?;
            return Ok(Upstream::Addr(SocketAddr::new(IpAddr::V6(ip), port)));
        }
        if host.contains(':') || host.contains('[') || host.contains(']') {
            return Err(RouteError::Invalid);
        }
        if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            return Ok(Upstream::Addr(SocketAddr::new(IpAddr::V4(ip), port)));
        }
        if !is_dns_name(host) {
            return Err(RouteError::Invalid);
        }
        Ok(Upstream::Named {
            host: host.to_owned(),
            port,
        })
    }
}

/// A port: 1 to 5 ASCII digits, 1..=65535 (no sign, no spaces, which `u16::from_str` would
/// partly accept).
fn parse_port(text: &str) -> Result<u16, RouteError> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RouteError::InvalidPort);
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(RouteError::InvalidPort),
        Ok(port) => Ok(port),
    }
}

/// A DNS-1123 label: 1 to 63 lowercase letters, digits and `-`, not starting or ending with `-`
/// (what a Kubernetes namespace name is).
fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A host name: dot-separated labels of letters, digits and `-` (any case), at most 253 bytes,
/// whose last label does not read as a number. Names like `127.1`, `2130706433` or `0x7f.1` are
/// IPv4 addresses to the system resolver (and to browsers' URL parsers) but not to
/// `Ipv4Addr::from_str`: accepting them as names would dial an address the route never spelled.
fn is_dns_name(text: &str) -> bool {
    text.len() <= 253
        && !text.rsplit('.').next().is_some_and(reads_as_number)
        && text.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= 63
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

/// A label an IPv4 parser in the inet_aton tradition takes for a number: decimal digits, or
/// `0x` followed by hex digits (or nothing).
fn reads_as_number(label: &str) -> bool {
    let hex = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing() -> Routing {
        Routing::new("svc.cluster.local.", 3333)
    }

    #[test]
    fn a_namespace_leads_to_its_service() {
        assert_eq!(
            routing().upstream("t7-c3-abc"),
            Ok(Upstream::Named {
                host: "t7-c3-abc-svc.t7-c3-abc.svc.cluster.local".to_owned(),
                port: 3333
            })
        );
        assert_eq!(
            Routing::new("example.internal", 80)
                .upstream("ns")
                .map(|u| u.to_string()),
            Ok("ns-svc.ns.example.internal:80".to_owned())
        );
    }

    #[test]
    fn literal_addresses_are_parsed_without_dns() {
        assert_eq!(
            routing().upstream("127.0.0.1:9000"),
            Ok(Upstream::Addr("127.0.0.1:9000".parse().unwrap()))
        );
        assert_eq!(
            routing().upstream("[::1]:443"),
            Ok(Upstream::Addr("[::1]:443".parse().unwrap()))
        );
        assert_eq!(
            routing().upstream("challenge.local:31337"),
            Ok(Upstream::Named {
                host: "challenge.local".to_owned(),
                port: 31337
            })
        );
    }

    #[test]
    fn malformed_routes_are_refused() {
        for route in [
            "",
            "-ns",
            "ns-",
            "Upper",
            "a.b",
            "::1",
            "[::1]",
            "[nope]:80",
            "a:b:80",
            "[::1:80",
            "host..x:80",
            ":80",
            "a_b:80",
            // Numeric spellings of 127.0.0.1 that glibc would resolve without DNS.
            "127.1:80",
            "2130706433:80",
            "0x7f.1:80",
            "127.000.000.001:80",
            "host.0x:80",
        ] {
            assert!(routing().upstream(route).is_err(), "{route:?} accepted");
        }
        for route in ["h:0", "h:65536", "h:+80", "h:", "h: 80", "h:000080"] {
            assert_eq!(
                routing().upstream(route),
                Err(RouteError::InvalidPort),
                "{route:?}"
            );
        }
        let long_label = "a".repeat(64);
        assert!(routing().upstream(&long_label).is_err());
    }
}
