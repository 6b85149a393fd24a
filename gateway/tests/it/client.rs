//! Who the client is (TEST-PLAN T35): `X-Forwarded-For` counts only from a trusted proxy, and
//! IPv6 clients are limited by their /64.

use std::sync::Arc;

use fctf_core::store::{MemoryStore, RateLimit, StateStore};
use fctf_gateway::client::TrustedProxies;
use fctf_gateway::http::HttpLimits;

use crate::support::*;

/// One token+IP bucket of 2 requests that refills in 10 s: the third request of a client is
/// refused.
fn two_per_client() -> HttpLimits {
    HttpLimits {
        token_ip: RateLimit {
            per_second: 0.1,
            burst: 2,
        },
        ..generous_limits()
    }
}

/// A GET with the gateway cookie and an `X-Forwarded-For` header.
async fn get_forwarded(addr: std::net::SocketAddr, token: &str, forwarded_for: &str) -> Response {
    let raw = format!(
        "GET / HTTP/1.1\r\nHost: chal.test\r\nCookie: FCTF_Auth_Token={token}\r\n\
         X-Forwarded-For: {forwarded_for}\r\n\r\n"
    );
    send(addr, raw.as_bytes()).await
}

/// The `X-Forwarded-For` value of a recorded request head.
fn forwarded_for(head: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|(_, v)| v.trim().to_owned())
}

fn proxies(nets: &[&str]) -> TrustedProxies {
    TrustedProxies::new(nets.iter().map(|n| n.parse().expect("a CIDR")).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let backend = Backend::start().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let inst = run_instance(&*store, 7, 3, &backend.addr.to_string()).await;
    // Proxies are trusted, but the test client (loopback) is not one of them.
    let gw = start_gateway_trusting(
        store,
        two_per_client(),
        tcp_settings(15),
        false,
        proxies(&["10.0.0.0/8"]),
    );
    let addr = gw.http_addr().expect("bound");
    let token = inst.token();

    // Each request claims another client: all count against the real peer.
    assert_eq!(get_forwarded(addr, &token, "1.1.1.1").await.status, 200);
    assert_eq!(get_forwarded(addr, &token, "2.2.2.2").await.status, 200);
    let third = get_forwarded(addr, &token, "3.3.3.3, 10.0.0.1").await;
    assert_eq!(third.status, 429, "{third:?}");

    let heads = backend.heads();
    assert_eq!(heads.len(), 2);
    for head in &heads {
        // Replaced, not appended to: the challenge sees the real peer only.
        assert_eq!(forwarded_for(head).as_deref(), Some("127.0.0.1"), "{head}");
    }
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_client_and_ipv6_clients_share_their_slash_64() {
    let backend = Backend::start().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let inst = run_instance(&*store, 7, 3, &backend.addr.to_string()).await;
    // The test client plays a front proxy (ingress) on loopback.
    let gw = start_gateway_trusting(
        store,
        two_per_client(),
        tcp_settings(15),
        false,
        proxies(&["127.0.0.1/32"]),
    );
    let addr = gw.http_addr().expect("bound");
    let token = inst.token();

    // The client forged 6.6.6.6; the proxy appended the address it saw, 203.0.113.9.
    let chain = "6.6.6.6, 203.0.113.9";
    assert_eq!(get_forwarded(addr, &token, chain).await.status, 200);
    assert_eq!(get_forwarded(addr, &token, chain).await.status, 200);
    assert_eq!(get_forwarded(addr, &token, chain).await.status, 429);
    // Another client behind the same proxy has a bucket of its own, whatever it forged.
    let other = get_forwarded(addr, &token, "203.0.113.9, 203.0.113.10").await;
    assert_eq!(other.status, 200, "{other:?}");

    let heads = backend.heads();
    assert_eq!(heads.len(), 3);
    // Appended to: the challenge sees the whole chain, ending with the proxy.
    assert_eq!(
        forwarded_for(&heads[0]).as_deref(),
        Some("6.6.6.6, 203.0.113.9, 127.0.0.1"),
        "{}",
        heads[0]
    );

    // 50 addresses of one /64 are one client: two requests between them all.
    let mut admitted = 0;
    for host in 1..=50u32 {
        let client = format!("2001:db8:1:2:{host:x}::{:x}", host * 7);
        match get_forwarded(addr, &token, &client).await.status {
            200 => admitted += 1,
            429 => {}
            status => panic!("status {status} for {client}"),
        }
    }
    assert_eq!(admitted, 2, "one bucket for the whole /64");
    let next_subnet = get_forwarded(addr, &token, "2001:db8:1:3::1").await;
    assert_eq!(next_subnet.status, 200, "{next_subnet:?}");
    gw.stop();
}
