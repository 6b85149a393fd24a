//! Who the client is: the TCP peer, or, behind a trusted proxy, the address that proxy names in
//! `X-Forwarded-For`.
//!
//! Only configured proxies ([`TrustedProxies`]) may name the client: from anyone else the header
//! is ignored, so a player cannot pick the address their limits and leases count against. Behind
//! a chain of proxies the client is the right-most address that is not itself a trusted proxy
//! (every address left of it was written by the client or an untrusted hop and could be forged).

use std::net::IpAddr;

use ipnet::IpNet;

/// The networks of the proxies allowed to name the client in `X-Forwarded-For`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trusts peers in `nets` (none: the client is always the TCP peer).
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    /// True when `ip` is a trusted proxy. IPv4-mapped IPv6 addresses count as IPv4, since a
    /// dual-stack socket reports IPv4 peers that way.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client of a connection from `peer` whose request carries the `X-Forwarded-For`
    /// header lines `forwarded_for` (in order).
    ///
    /// From an untrusted peer, the peer. From a trusted one, the right-most address that is not
    /// a trusted proxy; if every address is trusted, the left-most one; an entry that is not an
    /// address stops the walk at the trusted address right of it (what came before it cannot be
    /// relied on).
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let lines: Vec<&[u8]> = forwarded_for.into_iter().collect();
        let entries = lines
            .iter()
            .rev()
            .flat_map(|line| line.rsplit(|b| *b == b','));
        let mut client = peer;
        for entry in entries {
            let Some(ip) = parse_entry(entry) else {
                break;
            };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }

    /// The `X-Forwarded-For` value to send upstream for a request from `peer` that carried
    /// `forwarded_for`: from a trusted proxy, its list with `peer` appended; from anyone else,
    /// `peer` alone (the client's own header is discarded).
    pub fn forwarded_for<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    ) -> String {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return ip_text(peer);
        }
        let mut value = String::new();
        for line in forwarded_for {
            // Header values are visible ASCII (Pingora's parser refuses control characters);
            // anything else is dropped rather than passed on.
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            let line = line.trim();
            if !line.is_empty() {
                value.push_str(line);
                value.push_str(", ");
            }
        }
        value.push_str(&ip_text(peer));
        value
    }
}

/// `ip` as text, as its `Display` writes it; IPv4 (nearly every client) without the formatting
/// machinery, which costs more than the rest of the header work on this per-request path.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let digits = |octet: u8| 1 + usize::from(octet >= 10) + usize::from(octet >= 100);
    // Exactly as long as the text: a header value made from it keeps the buffer as it is,
    // where a spare capacity would cost a second allocation.
    let mut text = String::with_capacity(3 + v4.octets().into_iter().map(digits).sum::<usize>());
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// One `X-Forwarded-For` entry as an address: `1.2.3.4`, `2001:db8::1`, or with a port
/// (`1.2.3.4:5678`, `[2001:db8::1]:5678`), spaces around it ignored.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    text.parse::<std::net::SocketAddr>()
        .ok()
        .map(|addr| addr.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let none = TrustedProxies::default();
        let xff: [&[u8]; 1] = [b"6.6.6.6"];
        assert_eq!(none.client(ip("192.0.2.1"), xff), ip("192.0.2.1"));
        assert_eq!(none.forwarded_for(ip("192.0.2.1"), xff), "192.0.2.1");
        let proxies = trusted(&["10.0.0.0/8"]);
        assert_eq!(proxies.client(ip("192.0.2.1"), xff), ip("192.0.2.1"));
        assert_eq!(proxies.forwarded_for(ip("192.0.2.1"), xff), "192.0.2.1");
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_rightmost_untrusted_address() {
        let proxies = trusted(&["10.0.0.0/8", "fd00::/8"]);
        let peer = ip("10.1.1.1");
        // The client forged 6.6.6.6; the first proxy appended the real 203.0.113.9; a second
        // proxy appended the first.
        let xff: [&[u8]; 1] = [b"6.6.6.6, 203.0.113.9, 10.2.2.2"];
        assert_eq!(proxies.client(peer, xff), ip("203.0.113.9"));
        // Several header lines are one list, in order.
        let lines: [&[u8]; 2] = [b"6.6.6.6", b"203.0.113.9 ,10.2.2.2"];
        assert_eq!(proxies.client(peer, lines), ip("203.0.113.9"));
        // Ports and brackets are tolerated; IPv4-mapped addresses are IPv4.
        let ports: [&[u8]; 1] = [b"[2001:db8::7]:443, ::ffff:10.3.3.3"];
        assert_eq!(proxies.client(peer, ports), ip("2001:db8::7"));
        assert_eq!(
            proxies.client(ip("::ffff:10.1.1.1"), [&b"198.51.100.4"[..]]),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn a_missing_or_broken_list_falls_back_to_the_last_trusted_address() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let peer = ip("10.1.1.1");
        assert_eq!(proxies.client(peer, []), peer);
        assert_eq!(proxies.client(peer, [&b""[..]]), peer);
        assert_eq!(
            proxies.client(peer, [&b"1.2.3.4, garbage, 10.2.2.2"[..]]),
            ip("10.2.2.2")
        );
        // Every hop trusted: the left-most one is as far as we can see.
        assert_eq!(
            proxies.client(peer, [&b"10.9.9.9, 10.2.2.2"[..]]),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "127.0.0.1",
            "2001:db8::7",
        ] {
            assert_eq!(ip_text(ip(text)), text);
        }
        // IPv4 text is exactly as long as its buffer.
        for text in ["0.0.0.0", "9.10.99.100", "255.255.255.255"] {
            assert_eq!(ip_text(ip(text)).capacity(), text.len());
        }
    }

    #[test]
    fn a_trusted_peer_is_appended_to_the_list_sent_upstream() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let peer = ip("10.1.1.1");
        assert_eq!(
            proxies.forwarded_for(peer, [&b"6.6.6.6"[..], b" 203.0.113.9 "]),
            "6.6.6.6, 203.0.113.9, 10.1.1.1"
        );
        assert_eq!(proxies.forwarded_for(peer, []), "10.1.1.1");
    }
}
