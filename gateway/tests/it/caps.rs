//! Connection caps under concurrency (TEST-PLAN T36): with a cap of N and 4N simultaneous
//! connections, exactly N are admitted, in each scope and on each store. The global and per-IP
//! caps close the others before the prompt, silently; the per-token cap answers one line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fctf_core::store::{MemoryStore, RedisStore, StateStore};
use fctf_gateway::server::GatewayHandle;
use fctf_gateway::tcp::TcpCaps;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

/// The cap under test.
const N: usize = 3;

/// The stores every case runs on: in-process, then the real Redis under a fresh prefix.
async fn stores() -> Vec<(&'static str, Arc<dyn StateStore>)> {
    require_redis().await;
    let prefix = format!(
        "fctf-test:gateway-caps:{}:",
        fctf_core::ids::InstanceId::new()
    );
    let redis = RedisStore::connect("redis://127.0.0.1:6379", &prefix, Duration::from_secs(2))
        .await
        .expect("redis");
    vec![
        ("memory", Arc::new(MemoryStore::new())),
        ("redis", Arc::new(redis)),
    ]
}

/// What a connection saw right after connecting.
enum Opening {
    /// The prompt: admitted to send a token.
    Prompted(TcpStream),
    /// Closed without a byte.
    Silent,
}

/// Opens `n` connections at once and reads how each opens.
async fn connect_all(addr: SocketAddr, n: usize) -> Vec<Opening> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                match open_tcp(addr).await {
                    Some(conn) => Opening::Prompted(conn),
                    None => Opening::Silent,
                }
            })
        })
        .collect();
    let mut openings = Vec::with_capacity(n);
    for task in tasks {
        openings.push(task.await.expect("connection task"));
    }
    openings
}

/// The value of `fctf_gateway_tcp_limit_refusals_total{kind="<kind>"}` on the admin port.
async fn refusals(admin: SocketAddr, kind: &str) -> u64 {
    let metrics = get(admin, "/metrics", None).await;
    let prefix = format!("fctf_gateway_tcp_limit_refusals_total{{kind=\"{kind}\"}} ");
    metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{}", metrics.body))
}

/// A gateway whose caps are `caps`, and a running instance behind it.
async fn gateway_with_caps(
    store: Arc<dyn StateStore>,
    caps: TcpCaps,
    echo: &EchoBackend,
) -> (GatewayHandle, Instance) {
    let inst = run_instance(&*store, 21, 5, &echo.addr.to_string()).await;
    let mut settings = tcp_settings(caps.per_token);
    settings.caps = caps;
    // The admitted connections wait while the others are counted.
    settings.auth_timeout = Duration::from_secs(20);
    (start_gateway_with(store, generous_limits(), settings), inst)
}

/// 4N connections at once against a connect-time cap: exactly N prompted, the rest closed
/// silently and counted under `kind`; the admitted ones then get their sessions.
async fn connect_time_cap(store: Arc<dyn StateStore>, caps: TcpCaps, kind: &str) {
    let echo = EchoBackend::start().await;
    let (gw, inst) = gateway_with_caps(store.clone(), caps, &echo).await;
    let addr = gw.tcp_addr().expect("bound");

    let openings = connect_all(addr, 4 * N).await;
    let mut admitted: Vec<TcpStream> = openings
        .into_iter()
        .filter_map(|o| match o {
            Opening::Prompted(conn) => Some(conn),
            Opening::Silent => None,
        })
        .collect();
    assert_eq!(admitted.len(), N, "exactly the cap is admitted");
    assert_eq!(
        refusals(gw.admin_addr().expect("bound"), kind).await,
        (3 * N) as u64
    );

    let token = inst.token();
    for conn in &mut admitted {
        conn.write_all(format!("{token}\nping\n").as_bytes())
            .await
            .expect("write");
        assert_eq!(read_line(conn).await, "access granted\n");
        assert_eq!(read_line(conn).await, "ping\n");
    }
    drop(admitted);
    gw.stop();
    release(&*store, &inst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_per_ip_cap_is_admitted_under_concurrent_connects() {
    for (name, store) in stores().await {
        eprintln!("store: {name}");
        let caps = TcpCaps {
            global: 10_000,
            per_ip: N as u32,
            per_token: 10_000,
        };
        connect_time_cap(store, caps, "cap_ip").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_global_cap_is_admitted_under_concurrent_connects() {
    for (name, store) in stores().await {
        eprintln!("store: {name}");
        let caps = TcpCaps {
            global: N as u32,
            per_ip: 10_000,
            per_token: 10_000,
        };
        connect_time_cap(store, caps, "cap_global").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_per_token_cap_is_granted_under_concurrent_token_lines() {
    for (name, store) in stores().await {
        eprintln!("store: {name}");
        let echo = EchoBackend::start().await;
        let caps = TcpCaps {
            global: 10_000,
            per_ip: 10_000,
            per_token: N as u32,
        };
        let (gw, inst) = gateway_with_caps(store.clone(), caps, &echo).await;
        let addr = gw.tcp_addr().expect("bound");
        let token = inst.token();

        let conns: Vec<TcpStream> = connect_all(addr, 4 * N)
            .await
            .into_iter()
            .map(|o| match o {
                Opening::Prompted(conn) => conn,
                Opening::Silent => panic!("refused before the token"),
            })
            .collect();
        let answers: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                let line = format!("{token}\n");
                tokio::spawn(async move {
                    conn.write_all(line.as_bytes()).await.expect("write");
                    let answer = read_line(&mut conn).await;
                    (answer, conn)
                })
            })
            .collect();
        let mut granted = Vec::new();
        let mut denied = 0;
        for task in answers {
            let (answer, conn) = task.await.expect("answer task");
            match answer.as_str() {
                "access granted\n" => granted.push(conn),
                "access denied: too many connections with this token\n" => {
                    let mut conn = conn;
                    assert!(closes(&mut conn).await, "a refusal closes");
                    denied += 1;
                }
                other => panic!("unexpected answer {other:?}"),
            }
        }
        assert_eq!(granted.len(), N, "exactly the cap is granted");
        assert_eq!(denied, 3 * N);
        assert_eq!(
            refusals(gw.admin_addr().expect("bound"), "cap_token").await,
            (3 * N) as u64
        );
        drop(granted);
        gw.stop();
        release(&*store, &inst).await;
    }
}
