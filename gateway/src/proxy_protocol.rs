//! The PROXY protocol version 2 header (HAProxy's `proxy-protocol.txt`, section 2.2), sent to an
//! instance at the start of a TCP session when `gateway.proxy_protocol` is on, so the challenge
//! sees the player's address instead of the gateway's.
//!
//! Only the `PROXY` command over TCP is written: IPv4 when both addresses are IPv4, otherwise
//! IPv6 (an IPv4 address then in its mapped form), never TLVs.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest header written: 16 fixed bytes and two IPv6 addresses with ports.
pub const MAX_LEN: usize = 16 + 36;

/// A v2 header, on the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    bytes: [u8; MAX_LEN],
    len: usize,
}

impl Header {
    /// The header of a connection from `source` (the player) to `destination` (the gateway's
    /// address the player connected to).
    pub fn v2(source: SocketAddr, destination: SocketAddr) -> Header {
        let mut bytes = [0u8; MAX_LEN];
        bytes[..12].copy_from_slice(&SIGNATURE);
        // Version 2, command PROXY.
        bytes[12] = 0x21;
        let len = match (source.ip(), destination.ip()) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                // AF_INET, STREAM; 12 address bytes.
                bytes[13] = 0x11;
                bytes[14..16].copy_from_slice(&12u16.to_be_bytes());
                bytes[16..20].copy_from_slice(&src.octets());
                bytes[20..24].copy_from_slice(&dst.octets());
                bytes[24..26].copy_from_slice(&source.port().to_be_bytes());
                bytes[26..28].copy_from_slice(&destination.port().to_be_bytes());
                28
            }
            (src, dst) => {
                // AF_INET6, STREAM; 36 address bytes.
                bytes[13] = 0x21;
                bytes[14..16].copy_from_slice(&36u16.to_be_bytes());
                bytes[16..32].copy_from_slice(&v6(src).octets());
                bytes[32..48].copy_from_slice(&v6(dst).octets());
                bytes[48..50].copy_from_slice(&source.port().to_be_bytes());
                bytes[50..52].copy_from_slice(&destination.port().to_be_bytes());
                52
            }
        };
        Header { bytes, len }
    }

    /// The header's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_is_28_bytes_in_network_order() {
        let header = Header::v2(
            "192.0.2.1:40000".parse().unwrap(),
            "198.51.100.7:1337".parse().unwrap(),
        );
        let mut expected = SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0, 12]);
        expected.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 7]);
        expected.extend_from_slice(&[0x9c, 0x40, 0x05, 0x39]);
        assert_eq!(header.as_bytes(), expected.as_slice());
    }

    #[test]
    fn ipv6_or_mixed_families_use_the_ipv6_form() {
        let header = Header::v2(
            "[2001:db8::1]:443".parse().unwrap(),
            "10.0.0.1:1337".parse().unwrap(),
        );
        let bytes = header.as_bytes();
        assert_eq!(bytes.len(), 52);
        assert_eq!(&bytes[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(
            &bytes[16..32],
            &"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(
            &bytes[32..48],
            &"::ffff:10.0.0.1".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(&bytes[48..52], &[0x01, 0xbb, 0x05, 0x39]);
    }
}
