//! Graceful stop: no new connection, the sessions in flight continue for the drain period, then
//! end and release their leases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fctf_core::store::{MemoryStore, StateStore};
use fctf_gateway::client::TrustedProxies;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_lets_sessions_continue_for_the_drain_period() {
    let echo = EchoBackend::start().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let inst = run_instance(&*store, 41, 3, &echo.addr.to_string()).await;
    let drain = Duration::from_secs(2);
    let gw = start_gateway_draining(
        store.clone(),
        generous_limits(),
        tcp_settings(15),
        false,
        TrustedProxies::default(),
        drain,
    );
    let addr = gw.tcp_addr().expect("bound");

    let mut session = tcp_connect(addr).await;
    session
        .write_all(format!("{}\nbefore\n", inst.token()).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_line(&mut session).await, "access granted\n");
    assert_eq!(read_line(&mut session).await, "before\n");
    assert_eq!(store.lease_count("gw:tcp:all").await.expect("count"), 1);

    let started = Instant::now();
    let stopping = tokio::task::spawn_blocking(move || gw.drain());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Draining: the session still relays, but nobody new gets in.
    session.write_all(b"during\n").await.expect("write");
    assert_eq!(read_line(&mut session).await, "during\n");
    if let Ok(mut late) = tokio::net::TcpStream::connect(addr).await {
        let mut byte = [0u8; 1];
        let prompt = tokio::time::timeout(Duration::from_millis(500), late.read(&mut byte)).await;
        assert!(
            !matches!(prompt, Ok(Ok(1))),
            "a connection was served while draining"
        );
    }

    // The drain period over, the session ends and its leases are released.
    assert!(
        closes(&mut session).await,
        "the session ends after the drain"
    );
    let ended = started.elapsed();
    assert!(
        ended >= drain - Duration::from_millis(200) && ended <= drain + Duration::from_secs(2),
        "ended after {ended:?}"
    );
    stopping.await.expect("the gateway stops");
    assert_eq!(store.lease_count("gw:tcp:all").await.expect("count"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_while_draining_and_healthz_stays_200() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let gw = start_gateway_draining(
        store,
        generous_limits(),
        tcp_settings(15),
        false,
        TrustedProxies::default(),
        Duration::from_secs(2),
    );
    let admin = gw.admin_addr().expect("bound");
    let ready = get(admin, "/readyz", None).await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ok\n"));
    assert_eq!(metric(admin, "fctf_gateway_draining").await, 0);

    let stopping = tokio::task::spawn_blocking(move || gw.drain());
    // The flag is set as the stop begins; give the server a moment to broadcast it.
    let mut status = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = get(admin, "/readyz", None).await.status;
        if status == 503 {
            break;
        }
    }
    assert_eq!(status, 503, "/readyz still ready while draining");
    let ready = get(admin, "/readyz", None).await;
    assert_eq!((ready.status, ready.body.as_str()), (503, "draining\n"));
    let health = get(admin, "/healthz", None).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(metric(admin, "fctf_gateway_draining").await, 1);
    stopping.await.expect("the gateway stops");
}
