//! An instance that is still starting: requests and TCP connections are held up to
//! `starting_hold`, then proxied once it runs, or answered "instance is starting" (HTTP 503 with
//! Retry-After, a TCP refusal line).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fctf_core::store::{DeploymentState, StateStore};
use tokio::io::AsyncWriteExt;

use crate::support::*;

const HOLD: Duration = Duration::from_millis(1500);

fn gateway(store: Arc<dyn StateStore>) -> fctf_gateway::server::GatewayHandle {
    start_gateway_options(
        store,
        generous_limits(),
        tcp_settings(15),
        Extra {
            starting_hold: HOLD,
            ..Extra::default()
        },
    )
}

/// Marks `inst` Deploying at once, then Running after `after`.
fn run_later(
    store: Arc<dyn StateStore>,
    mut inst: Instance,
    after: Duration,
) -> tokio::task::JoinHandle<Instance> {
    tokio::spawn(async move {
        set_state(&*store, &mut inst, DeploymentState::Deploying).await;
        tokio::time::sleep(after).await;
        set_state(&*store, &mut inst, DeploymentState::Running).await;
        inst
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_wait_for_a_starting_instance_then_get_503_with_retry_after() {
    let store = redis_store().await;
    let backend = Backend::start().await;
    let inst = queue_instance(&*store, 51, 1, &backend.addr.to_string()).await;
    let gw = gateway(store.clone());
    let addr = gw.http_addr().expect("bound");
    let admin = gw.admin_addr().expect("bound");
    let cookie = format!("FCTF_Auth_Token={}", inst.token());

    // Still queued for the whole hold: 503, after the hold, and nothing proxied.
    let started = Instant::now();
    let starting = get(addr, "/", Some(&cookie)).await;
    assert_eq!(starting.status, 503, "{starting:?}");
    assert!(
        starting.body.contains("instance is starting"),
        "{starting:?}"
    );
    assert_eq!(starting.header("retry-after"), Some("2"));
    assert_eq!(starting.header("cache-control"), Some("no-store"));
    assert!(
        started.elapsed() >= HOLD - Duration::from_millis(100),
        "answered after {:?}, before the hold ended",
        started.elapsed()
    );
    assert!(backend.heads().is_empty());
    assert_eq!(
        metric(admin, "fctf_gateway_starting_timeouts_total").await,
        1
    );

    // The 503 is an early answer: a request hidden in the body is never read (TEST-PLAN T06).
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: chal.test\r\n\r\n";
    let raw = format!(
        "POST / HTTP/1.1\r\nHost: chal.test\r\nCookie: {cookie}\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let answer = send(addr, raw.as_bytes()).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        answer.closed,
        "the connection closes after the early answer"
    );
    assert!(!answer.body.contains("HTTP/1.1"), "{answer:?}");
    assert!(backend.heads().is_empty());

    // Runs during the hold: the same request is proxied.
    let running = run_later(store.clone(), inst, Duration::from_millis(400));
    let proxied = get(addr, "/x", Some(&cookie)).await;
    assert_eq!(proxied.status, 200, "{proxied:?}");
    assert_eq!(proxied.body, "hello");
    assert_eq!(backend.heads().len(), 1);
    let mut inst = running.await.expect("state task");
    assert_eq!(metric(admin, "fctf_gateway_starting_holds_total").await, 3);
    assert_eq!(
        metric(admin, "fctf_gateway_starting_timeouts_total").await,
        2
    );

    // A failed start is not waited for: the instance is not live.
    set_state(&*store, &mut inst, DeploymentState::Stopping).await;
    let stopped = get(addr, "/", Some(&cookie)).await;
    assert_eq!(stopped.status, 403, "{stopped:?}");
    gw.stop();
    release(&*store, &inst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_wait_for_a_starting_instance_then_get_a_refusal_line() {
    let store = redis_store().await;
    let echo = EchoBackend::start().await;
    let inst = queue_instance(&*store, 52, 1, &echo.addr.to_string()).await;
    let gw = gateway(store.clone());
    let addr = gw.tcp_addr().expect("bound");

    let mut conn = tcp_connect(addr).await;
    conn.write_all(format!("{}\n", inst.token()).as_bytes())
        .await
        .expect("write");
    assert_eq!(
        read_line(&mut conn).await,
        "access denied: instance is starting, try again in a few seconds\n"
    );
    assert!(closes(&mut conn).await);
    wait_leases(&*store, "gw:tcp:all", 0).await;

    // Runs during the hold: granted, and the bytes sent with the token line arrive.
    let token = inst.token();
    let running = run_later(store.clone(), inst, Duration::from_millis(400));
    let mut conn = tcp_connect(addr).await;
    conn.write_all(format!("{token}\nping\n").as_bytes())
        .await
        .expect("write");
    assert_eq!(read_line(&mut conn).await, "access granted\n");
    assert_eq!(read_line(&mut conn).await, "ping\n");
    drop(conn);
    let inst = running.await.expect("state task");
    gw.stop();
    release(&*store, &inst).await;
}
