//! The TCP gateway end to end: token line, pipelined bytes, refusals, per-token caps.

use std::sync::Arc;
use std::time::Duration;

use fctf_core::store::{DeploymentState, MemoryStore, RedisStore, StateStore};
use fctf_core::token::mint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sent_right_after_the_token_line_reach_the_backend() {
    let echo = EchoBackend::start().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let inst = run_instance(&*store, 7, 3, &echo.addr.to_string()).await;
    let gw = start_gateway(store, generous_limits());
    let addr = gw.tcp_addr().expect("bound");

    let mut conn = tcp_connect(addr).await;
    // pwntools: sendline(token); sendline(payload), in one segment.
    conn.write_all(format!("{}\r\nfirst payload\n", inst.token()).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_line(&mut conn).await, "access granted\n");
    assert_eq!(read_line(&mut conn).await, "first payload\n");
    conn.write_all(b"second\n").await.expect("write");
    assert_eq!(read_line(&mut conn).await, "second\n");
    // A half-close reaches the backend, whose close ends the session.
    conn.shutdown().await.expect("write");
    assert!(closes(&mut conn).await);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_get_one_line_and_a_close() {
    let echo = EchoBackend::start().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let mut inst = run_instance(&*store, 7, 3, &echo.addr.to_string()).await;
    let gw = start_gateway(store.clone(), generous_limits());
    let addr = gw.tcp_addr().expect("bound");

    let expired = {
        let mut claims = inst.claims(0);
        claims.iat -= 100;
        claims.exp -= 100;
        mint(&key(), &claims).unwrap()
    };
    let other_key = mint(&foreign_key(), &inst.claims(600)).expect("write");
    let long = "a".repeat(2000);
    for (line, answer) in [
        ("garbage", "access denied: invalid token\n"),
        (expired.as_str(), "access denied: token expired\n"),
        (other_key.as_str(), "access denied: invalid token\n"),
        (long.as_str(), "access denied: token line too long\n"),
    ] {
        let mut conn = tcp_connect(addr).await;
        conn.write_all(format!("{line}\npayload\n").as_bytes())
            .await
            .expect("write");
        assert_eq!(read_line(&mut conn).await, answer);
        assert!(closes(&mut conn).await);
    }

    set_state(&*store, &mut inst, DeploymentState::Stopping).await;
    let mut conn = tcp_connect(addr).await;
    conn.write_all(format!("{}\n", inst.token()).as_bytes())
        .await
        .expect("write");
    let answer = read_line(&mut conn).await;
    assert!(answer.contains("no longer running"), "{answer}");
    gw.stop();
}

/// The per-token cap counts live sessions: the 16th is refused, and a closed session frees its
/// slot.
async fn per_token_cap(store: Arc<dyn StateStore>) {
    let echo = EchoBackend::start().await;
    let inst = run_instance(&*store, 11, 3, &echo.addr.to_string()).await;
    let gw = start_gateway_with(store.clone(), generous_limits(), tcp_settings(15));
    let addr = gw.tcp_addr().expect("bound");
    let token = inst.token();

    let mut sessions = Vec::new();
    for _ in 0..15 {
        let mut conn = tcp_connect(addr).await;
        conn.write_all(format!("{token}\n").as_bytes())
            .await
            .expect("write");
        assert_eq!(read_line(&mut conn).await, "access granted\n");
        sessions.push(conn);
    }
    let mut sixteenth = tcp_connect(addr).await;
    sixteenth
        .write_all(format!("{token}\n").as_bytes())
        .await
        .expect("write");
    assert_eq!(
        read_line(&mut sixteenth).await,
        "access denied: too many connections with this token\n"
    );

    // Closing one session releases its lease (asynchronously).
    drop(sessions.pop());
    let mut granted = false;
    for _ in 0..50 {
        let mut conn = tcp_connect(addr).await;
        conn.write_all(format!("{token}\n").as_bytes())
            .await
            .expect("write");
        if read_line(&mut conn).await == "access granted\n" {
            granted = true;
            sessions.push(conn);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(granted, "a freed slot is reusable");
    drop(sessions);
    gw.stop();
    release(&*store, &inst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sixteenth_session_of_a_token_is_refused() {
    per_token_cap(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sixteenth_session_of_a_token_is_refused_on_redis() {
    require_redis().await;
    let prefix = format!(
        "fctf-test:gateway-tcp:{}:",
        fctf_core::ids::InstanceId::new()
    );
    let redis = RedisStore::connect("redis://127.0.0.1:6379", &prefix, Duration::from_secs(2))
        .await
        .expect("redis");
    per_token_cap(Arc::new(redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_token_expires() {
    let echo = EchoBackend::start().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let inst = run_instance(&*store, 7, 3, &echo.addr.to_string()).await;
    let gw = start_gateway(store, generous_limits());
    let addr = gw.tcp_addr().expect("bound");

    let short = mint(&key(), &inst.claims(2)).expect("mint");
    let mut conn = tcp_connect(addr).await;
    conn.write_all(format!("{short}\nping\n").as_bytes())
        .await
        .expect("write");
    assert_eq!(read_line(&mut conn).await, "access granted\n");
    assert_eq!(read_line(&mut conn).await, "ping\n");
    let started = std::time::Instant::now();
    assert!(closes(&mut conn).await, "the session is cut at expiry");
    assert!(started.elapsed() <= Duration::from_secs(3));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_falls_back_to_local_caps_or_fails_closed() {
    let echo = EchoBackend::start().await;
    let inst = Instance::unchecked(&echo.addr.to_string());
    let token = inst.token();
    let open = start_gateway_full(
        unreachable_store(),
        generous_limits(),
        tcp_settings(2),
        false,
    );
    let addr = open.tcp_addr().expect("bound");
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let mut conn = tcp_connect(addr).await;
        conn.write_all(format!("{token}\n").as_bytes())
            .await
            .expect("write");
        assert_eq!(read_line(&mut conn).await, "access granted\n");
        sessions.push(conn);
    }
    let mut third = tcp_connect(addr).await;
    third
        .write_all(format!("{token}\n").as_bytes())
        .await
        .expect("write");
    assert_eq!(
        read_line(&mut third).await,
        "access denied: too many connections with this token\n"
    );
    drop(sessions);
    open.stop();

    // Fail-closed: even the attempt limit cannot be checked, so the connection closes at once,
    // without a prompt (as any connection over the attempt limit).
    let closed = start_gateway_full(
        unreachable_store(),
        generous_limits(),
        tcp_settings(2),
        true,
    );
    let mut conn = connect(closed.tcp_addr().expect("bound")).await;
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut received))
        .await
        .expect("closed within 5 s")
        .expect("read");
    assert!(received.is_empty(), "{received:?}");
    closed.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_session_ends_when_its_instance_is_stopped() {
    let echo = EchoBackend::start().await;
    let store = redis_store().await;
    let mut inst = run_instance(&*store, 93, 1, &echo.addr.to_string()).await;
    let other = run_instance(&*store, 93, 2, &echo.addr.to_string()).await;
    let mut settings = tcp_settings(15);
    settings.liveness_recheck = Duration::from_millis(300);
    let gw = start_gateway_with(store.clone(), generous_limits(), settings);
    let addr = gw.tcp_addr().expect("bound");

    let mut sessions = Vec::new();
    for token in [inst.token(), other.token()] {
        let mut conn = tcp_connect(addr).await;
        conn.write_all(format!("{token}\nhi\n").as_bytes())
            .await
            .expect("write");
        assert_eq!(read_line(&mut conn).await, "access granted\n");
        assert_eq!(read_line(&mut conn).await, "hi\n");
        sessions.push(conn);
    }
    // Live sessions outlast several rechecks.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for conn in &mut sessions {
        conn.write_all(b"still\n").await.expect("write");
        assert_eq!(read_line(conn).await, "still\n");
    }

    set_state(&*store, &mut inst, DeploymentState::Stopping).await;
    let (mut stopped, mut running) = (sessions.remove(0), sessions.remove(0));
    assert!(
        closes(&mut stopped).await,
        "the stopped instance's session ends"
    );
    running.write_all(b"on\n").await.expect("write");
    assert_eq!(read_line(&mut running).await, "on\n");
    wait_leases(&*store, "gw:tcp:all", 1).await;
    drop(running);
    wait_leases(&*store, "gw:tcp:all", 0).await;
    gw.stop();
    release(&*store, &inst).await;
    release(&*store, &other).await;
}
