//! Two gateways sharing one Redis (issue 3, "measure it with two gateways"; TEST-PLAN group D):
//! the connection caps hold across both (the sum admitted never exceeds a cap), every count is
//! released when its session closes, a crashed gateway's leases expire after their time to live,
//! and a shared rate limit never admits more than its bucket holds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fctf_core::store::{RateLimit, RedisStore, StateStore, keys};
use fctf_gateway::http::HttpLimits;
use fctf_gateway::server::GatewayHandle;
use fctf_gateway::tcp::{TcpCaps, TcpSettings};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// A store on the shared Redis under `prefix`, with a connection of its own (each gateway
/// process has its own).
async fn store_at(url: &str, prefix: &str) -> Arc<dyn StateStore> {
    Arc::new(
        RedisStore::connect(url, prefix, Duration::from_secs(2))
            .await
            .expect("redis"),
    )
}

/// A fresh key prefix on the shared Redis.
fn fresh_prefix() -> String {
    format!(
        "fctf-test:gateway-two:{}:",
        fctf_core::ids::InstanceId::new()
    )
}

fn settings(caps: TcpCaps) -> TcpSettings {
    let mut settings = tcp_settings(caps.per_token);
    settings.caps = caps;
    // Admitted connections wait for their token line while the others are counted.
    settings.auth_timeout = Duration::from_secs(30);
    settings
}

/// Opens `n` connections at once, alternating between `addrs`; the prompted ones.
async fn open_all(addrs: &[SocketAddr], n: usize) -> Vec<TcpStream> {
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(open_tcp(addrs[i % addrs.len()])))
        .collect();
    let mut prompted = Vec::new();
    for task in tasks {
        prompted.extend(task.await.expect("connection task"));
    }
    prompted
}

/// Waits (up to `within`) until `key` holds `want` leases; panics with the last count.
async fn wait_count(store: &dyn StateStore, key: &str, want: u32, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let count = store.lease_count(key).await.expect("count");
        if count == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} holds {count} leases, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_and_per_ip_caps_hold_across_two_gateways_and_are_released_on_close() {
    require_redis().await;
    let prefix = fresh_prefix();
    let url = "redis://127.0.0.1:6379";
    let echo = EchoBackend::start().await;
    let (store_a, store_b) = (store_at(url, &prefix).await, store_at(url, &prefix).await);
    let inst = run_instance(&*store_a, 41, 1, &echo.addr.to_string()).await;
    const CAP: u32 = 6;

    for (scope, caps) in [
        (
            "gw:tcp:all",
            TcpCaps {
                global: CAP,
                per_ip: 10_000,
                per_token: 10_000,
            },
        ),
        (
            "gw:tcp:ip:127.0.0.1",
            TcpCaps {
                global: 10_000,
                per_ip: CAP,
                per_token: 10_000,
            },
        ),
    ] {
        let a = start_gateway_with(store_a.clone(), generous_limits(), settings(caps));
        let b = start_gateway_with(store_b.clone(), generous_limits(), settings(caps));
        let addrs = [a.tcp_addr().expect("bound"), b.tcp_addr().expect("bound")];

        // 4 x CAP connections at once, half to each gateway: exactly CAP admitted in all.
        let mut admitted = open_all(&addrs, 4 * CAP as usize).await;
        assert_eq!(admitted.len(), CAP as usize, "{scope}: the sum admitted");
        assert_eq!(store_a.lease_count(scope).await.expect("count"), CAP);
        // Full for both gateways, whichever is asked.
        for addr in addrs {
            assert!(open_tcp(addr).await.is_none(), "{scope}: over the cap");
        }

        // The admitted sessions work, through whichever gateway admitted them.
        let token = inst.token();
        for conn in &mut admitted {
            conn.write_all(format!("{token}\nping\n").as_bytes())
                .await
                .expect("write");
            assert_eq!(read_line(conn).await, "access granted\n");
            assert_eq!(read_line(conn).await, "ping\n");
        }
        // Closing half frees exactly that many places, on both gateways.
        let rest = admitted.split_off(CAP as usize / 2);
        drop(admitted);
        wait_count(&*store_a, scope, CAP - CAP / 2, Duration::from_secs(5)).await;
        let again = open_all(&addrs, 2 * CAP as usize).await;
        assert_eq!(again.len(), (CAP / 2) as usize, "{scope}: the freed places");
        drop((rest, again));
        wait_count(&*store_a, scope, 0, Duration::from_secs(5)).await;
        a.stop();
        b.stop();
    }
    release(&*store_a, &inst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_token_cap_holds_across_two_gateways() {
    require_redis().await;
    let prefix = fresh_prefix();
    let url = "redis://127.0.0.1:6379";
    let echo = EchoBackend::start().await;
    let (store_a, store_b) = (store_at(url, &prefix).await, store_at(url, &prefix).await);
    let inst = run_instance(&*store_a, 42, 1, &echo.addr.to_string()).await;
    const PER_TOKEN: u32 = 5;
    let caps = TcpCaps {
        global: 10_000,
        per_ip: 10_000,
        per_token: PER_TOKEN,
    };
    let a = start_gateway_with(store_a.clone(), generous_limits(), settings(caps));
    let b = start_gateway_with(store_b.clone(), generous_limits(), settings(caps));
    let addrs = [a.tcp_addr().expect("bound"), b.tcp_addr().expect("bound")];
    let token = inst.token();
    let token_key = format!("gw:tcp:tok:{}", keys::digest(token.as_bytes()));

    let conns = open_all(&addrs, 4 * PER_TOKEN as usize).await;
    assert_eq!(conns.len(), 4 * PER_TOKEN as usize);
    let answers: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let line = format!("{token}\n");
            tokio::spawn(async move {
                conn.write_all(line.as_bytes()).await.expect("write");
                (read_line(&mut conn).await, conn)
            })
        })
        .collect();
    let mut granted = Vec::new();
    for task in answers {
        let (answer, conn) = task.await.expect("answer task");
        match answer.as_str() {
            "access granted\n" => granted.push(conn),
            "access denied: too many connections with this token\n" => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(granted.len(), PER_TOKEN as usize, "the sum granted");
    assert_eq!(
        store_b.lease_count(&token_key).await.expect("count"),
        PER_TOKEN
    );
    drop(granted);
    wait_count(&*store_a, &token_key, 0, Duration::from_secs(5)).await;
    wait_count(&*store_a, "gw:tcp:all", 0, Duration::from_secs(5)).await;
    a.stop();
    b.stop();
    release(&*store_a, &inst).await;
}

/// A TCP proxy to `target` that the test can cut: every connection through it ends, and new
/// ones are refused.
struct CutProxy {
    addr: SocketAddr,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    async fn start(target: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let relays = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                    }
                });
                relays.lock().expect("lock").push(relay);
            }
        });
        CutProxy {
            addr,
            tasks,
            accept,
        }
    }

    fn cut(&self) {
        self.accept.abort();
        for task in self.tasks.lock().expect("lock").drain(..) {
            task.abort();
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_gateways_leases_expire_and_the_other_gateway_gets_the_places_back() {
    require_redis().await;
    let prefix = fresh_prefix();
    let echo = EchoBackend::start().await;
    let store_a = store_at("redis://127.0.0.1:6379", &prefix).await;
    // Gateway B reaches Redis through a proxy: cutting it is B's crash, as Redis sees it (no
    // renewal, no release).
    let proxy = CutProxy::start(SocketAddr::from(([127, 0, 0, 1], 6379))).await;
    let store_b = store_at(&format!("redis://{}", proxy.addr), &prefix).await;
    let inst = run_instance(&*store_a, 43, 1, &echo.addr.to_string()).await;
    const CAP: u32 = 4;
    let caps = TcpCaps {
        global: CAP,
        per_ip: 10_000,
        per_token: 10_000,
    };
    let a = start_gateway_with(store_a.clone(), generous_limits(), settings(caps));
    let mut b_settings = settings(caps);
    // Renewed every 2 s; gone at most 6 s after the last renewal.
    let ttl = Duration::from_secs(6);
    b_settings.lease_ttl = ttl;
    let b = start_gateway_with(store_b.clone(), generous_limits(), b_settings);
    let (addr_a, addr_b) = (a.tcp_addr().expect("bound"), b.tcp_addr().expect("bound"));

    // B holds 3 sessions, then crashes.
    let token = inst.token();
    let mut on_b = open_all(&[addr_b], 3).await;
    assert_eq!(on_b.len(), 3);
    for conn in &mut on_b {
        conn.write_all(format!("{token}\n").as_bytes())
            .await
            .expect("write");
        assert_eq!(read_line(conn).await, "access granted\n");
    }
    wait_count(&*store_a, "gw:tcp:all", 3, Duration::from_secs(5)).await;
    proxy.cut();
    b.stop();
    // Its sessions are gone, but Redis cannot know: their places stay taken until the leases
    // expire, and A admits only what is left of the cap meanwhile.
    let crashed_at = tokio::time::Instant::now();
    assert_eq!(store_a.lease_count("gw:tcp:all").await.expect("count"), 3);
    let meanwhile = open_all(&[addr_a], CAP as usize).await;
    assert_eq!(meanwhile.len(), 1, "A admits what B's leases left");
    drop(meanwhile);
    wait_count(&*store_a, "gw:tcp:all", 3, Duration::from_secs(5)).await;

    // Expired within the lease's time to live: the whole cap is A's again.
    wait_count(&*store_a, "gw:tcp:all", 0, ttl + Duration::from_secs(3)).await;
    eprintln!(
        "B's leases expired {:?} after it crashed",
        crashed_at.elapsed()
    );
    let after = open_all(&[addr_a], 2 * CAP as usize).await;
    assert_eq!(after.len(), CAP as usize, "the whole cap, after expiry");
    drop((after, on_b));
    wait_count(&*store_a, "gw:tcp:all", 0, Duration::from_secs(5)).await;
    a.stop();
    release(&*store_a, &inst).await;
}

/// A GET with `cookie` that asks the gateway to close the connection after it (so the client
/// does not wait to learn that).
async fn get_closing(addr: SocketAddr, cookie: &str) -> u16 {
    let raw = format!(
        "GET / HTTP/1.1\r\nHost: chal.test\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    send(addr, raw.as_bytes()).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_rate_limit_admits_at_most_its_bucket_across_two_gateways() {
    require_redis().await;
    let prefix = fresh_prefix();
    let url = "redis://127.0.0.1:6379";
    let backend = Backend::start().await;
    let (store_a, store_b) = (store_at(url, &prefix).await, store_at(url, &prefix).await);
    let inst = run_instance(&*store_a, 44, 1, &backend.addr.to_string()).await;
    // A bucket that does not refill during the test, served in batches of 10.
    const BURST: u32 = 100;
    let batch = fctf_gateway::budget::batch_size(RateLimit {
        per_second: 0.001,
        burst: BURST,
    });
    let limits = HttpLimits {
        token_ip: RateLimit {
            per_second: 0.001,
            burst: BURST,
        },
        ..generous_limits()
    };
    let a: GatewayHandle = start_gateway(store_a.clone(), limits);
    let b: GatewayHandle = start_gateway(store_b.clone(), limits);
    let addrs = [a.http_addr().expect("bound"), b.http_addr().expect("bound")];
    let cookie = format!("FCTF_Auth_Token={}", inst.token());

    let (mut allowed, mut refused) = ([0u32; 2], [0u32; 2]);
    // Alternate until both gateways refuse (each may still hold part of a batch).
    for i in 0..(2 * BURST as usize + 40) {
        let g = i % 2;
        match get_closing(addrs[g], &cookie).await {
            200 => allowed[g] += 1,
            429 => refused[g] += 1,
            other => panic!("unexpected status {other}"),
        }
        if refused[0] >= 5 && refused[1] >= 5 {
            break;
        }
    }
    let total = allowed[0] + allowed[1];
    eprintln!("allowed {allowed:?} refused {refused:?} (batch {batch})");
    assert!(total <= BURST, "{total} admitted from a bucket of {BURST}");
    // Each gateway may have lost what it held when its held tokens lapsed.
    assert!(
        total >= BURST - 2 * (batch - 1),
        "{total} admitted from a bucket of {BURST}, batch {batch}"
    );
    assert!(allowed[0] > 0 && allowed[1] > 0, "{allowed:?}");
    a.stop();
    b.stop();
    release(&*store_a, &inst).await;
}
