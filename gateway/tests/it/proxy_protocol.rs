//! PROXY protocol v2 towards the instance: a TCP backend that requires the header learns the
//! player's address, then relays as usual.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use fctf_core::store::{MemoryStore, StateStore};
use fctf_gateway::proxy_protocol::SIGNATURE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::support::*;

/// What the backend parsed from a header: (source, destination).
type Seen = (SocketAddr, SocketAddr);

/// A backend that reads a PROXY v2 header (IPv4 or IPv6, TCP), reports its addresses, then
/// echoes; a connection without a valid header is closed at once.
async fn proxy_protocol_echo() -> (SocketAddr, mpsc::UnboundedReceiver<Option<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let seen = read_header(&mut conn).await;
                let valid = seen.is_some();
                let _ = tx.send(seen);
                if valid {
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    (addr, rx)
}

/// Parses a v2 PROXY header (HAProxy's spec, 2.2) off `conn`.
async fn read_header(conn: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut fixed = [0u8; 16];
    conn.read_exact(&mut fixed).await.ok()?;
    if fixed[..12] != SIGNATURE || fixed[12] != 0x21 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let mut rest = vec![0u8; len];
    conn.read_exact(&mut rest).await.ok()?;
    let port = |at: usize| u16::from_be_bytes([rest[at], rest[at + 1]]);
    match fixed[13] {
        0x11 if len >= 12 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    rest[at],
                    rest[at + 1],
                    rest[at + 2],
                    rest[at + 3],
                ))
            };
            Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            ))
        }
        0x21 if len >= 36 => {
            let ip = |at: usize| {
                let octets: [u8; 16] = rest[at..at + 16].try_into().expect("16 bytes");
                IpAddr::V6(octets.into())
            };
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            ))
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_learns_the_players_address_from_a_proxy_v2_header() {
    let (backend, mut seen) = proxy_protocol_echo().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let inst = run_instance(&*store, 81, 1, &backend.to_string()).await;
    let mut settings = tcp_settings(15);
    settings.proxy_protocol = true;
    let gw = start_gateway_with(store, generous_limits(), settings);
    let gateway_addr = gw.tcp_addr().expect("bound");

    let mut conn = tcp_connect(gateway_addr).await;
    let player = conn.local_addr().expect("local addr");
    conn.write_all(format!("{}\nsent with the token\n", inst.token()).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_line(&mut conn).await, "access granted\n");
    // The header came first, and the pipelined bytes after it, intact.
    assert_eq!(read_line(&mut conn).await, "sent with the token\n");
    conn.write_all(b"later\n").await.expect("write");
    assert_eq!(read_line(&mut conn).await, "later\n");
    let header = seen.recv().await.expect("a connection");
    assert_eq!(header, Some((player, gateway_addr)));
    gw.stop();
}
