//! The end of an instance: a stop (Stopping, then gone), the lifetime, the contest end; and the
//! gateway refusing the token of a stopped instance.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fctf_control::deployment::contract::{DeploymentControl, InstanceKey, InstanceStatus};
use fctf_core::store::{DeploymentState, RateLimit};
use fctf_core::token::{Keyring, Verifier};
use fctf_gateway::admission::{Admission, AdmissionSettings};
use fctf_gateway::client::TrustedProxies;
use fctf_gateway::http::{HttpLimits, HttpSettings};
use fctf_gateway::routing::Routing;
use fctf_gateway::server::{GatewayHandle, GatewayOptions, Listen, spawn};
use fctf_gateway::tcp::{LEASE_TTL, LIVENESS_RECHECK, TcpCaps, TcpSettings};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::support::{Pipeline, key, now_ms, start_request, target, token_key};

/// Starts `keys` and waits until all are Running; their statuses.
async fn run_all(p: &Pipeline, keys: &[InstanceKey], lifetime_secs: u64) -> Vec<InstanceStatus> {
    for k in keys {
        p.center
            .start(&start_request(*k, lifetime_secs))
            .await
            .unwrap();
    }
    p.wait_records(keys, Duration::from_secs(30), "Running", |r| {
        r.as_ref()
            .is_some_and(|r| r.state == DeploymentState::Running)
    })
    .await;
    let mut statuses = Vec::new();
    for k in keys {
        statuses.push(p.center.status(&target(*k)).await.unwrap());
    }
    statuses
}

/// Waits until the tracking row of every instance of `statuses` is closed.
async fn wait_rows_closed(p: &Pipeline, statuses: &[InstanceStatus]) {
    for status in statuses {
        p.wait_row_closed(status.instance.unwrap()).await;
    }
}

async fn route_refuses(route: &str) -> bool {
    TcpStream::connect(route).await.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_goes_through_stopping_to_gone() {
    let p = Pipeline::new("stop", 300).await;
    let consumer = p.start_consumer();
    let listener = p.start_listener(None, Duration::from_secs(1));
    let k = key(5, 1);
    let running = run_all(&p, &[k], 3600).await.remove(0);
    let record = p.record(k).await.unwrap();
    let route = record.route.clone().unwrap();
    TcpStream::connect(&route).await.unwrap();

    let stopping = p.center.stop(&target(k)).await.unwrap();
    assert_eq!(
        stopping.state,
        Some(DeploymentState::Stopping),
        "{stopping:?}"
    );
    assert_eq!(stopping.instance, running.instance);
    assert!(stopping.access.is_none(), "{stopping:?}");

    // Gone: no process, the slot freed, the record Stopped (kept for the status) or released.
    p.wait_records(&[k], Duration::from_secs(20), "stopped", |r| {
        r.as_ref()
            .is_none_or(|r| r.state == DeploymentState::Stopped)
    })
    .await;
    assert!(p.snapshot().await.is_empty());
    assert!(route_refuses(&route).await);
    assert_eq!(p.store.quota_usage(k.team).await.unwrap(), 0);
    wait_rows_closed(&p, &[running]).await;
    assert!(p.db.tracking_open_rows().await.unwrap().is_empty());

    listener.stop().await;
    consumer.stop().await;
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_end_of_its_lifetime_removes_an_instance() {
    let p = Pipeline::new("lifetime", 300).await;
    let consumer = p.start_consumer();
    let listener = p.start_listener(None, Duration::from_secs(1));
    let k = key(6, 1);
    let running = run_all(&p, &[k], 4).await.remove(0);
    let route = p.record(k).await.unwrap().route.unwrap();
    assert!(
        running.expires_at_ms.unwrap() <= now_ms() + 4_000,
        "{running:?}"
    );

    let records = p
        .wait_records(&[k], Duration::from_secs(20), "stopped", |r| {
            r.as_ref()
                .is_some_and(|r| r.state == DeploymentState::Stopped)
        })
        .await;
    let reason = records[&k].as_ref().unwrap().reason.clone().unwrap();
    assert!(reason.contains("lifetime"), "{reason}");
    wait_rows_closed(&p, &[running]).await;
    assert!(p.snapshot().await.is_empty());
    assert!(route_refuses(&route).await);
    assert_eq!(p.store.quota_usage(k.team).await.unwrap(), 0);

    listener.stop().await;
    consumer.stop().await;
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_contest_end_removes_every_instance() {
    let p = Pipeline::new("contest-end", 300).await;
    let consumer = p.start_consumer();
    let during = p.start_listener(None, Duration::from_secs(1));
    let keys = [key(7, 1), key(7, 2), key(8, 1)];
    let statuses = run_all(&p, &keys, 3600).await;
    during.stop().await;

    // The contest ended a second ago.
    let after = p.start_listener(Some(now_ms() - 1000), Duration::from_secs(1));
    let records = p
        .wait_records(&keys, Duration::from_secs(20), "stopped", |r| {
            r.as_ref()
                .is_some_and(|r| r.state == DeploymentState::Stopped)
        })
        .await;
    for r in records.values().flatten() {
        let reason = r.reason.as_deref().unwrap_or_default();
        assert!(reason.contains("contest has ended"), "{r:?}");
    }
    wait_rows_closed(&p, &statuses).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !p.snapshot().await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "instances left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    after.stop().await;
    consumer.stop().await;
    p.finish().await;
}

// ---- the gateway ----

/// A gateway over `p`'s store that verifies the Deployment Center's tokens and caches a
/// liveness answer for `route_cache`.
fn gateway(p: &Pipeline, route_cache: Duration) -> GatewayHandle {
    let verifier = Verifier::new(
        Keyring::new(vec![token_key()]).unwrap(),
        Duration::from_secs(5),
    );
    let admission = Admission::new(
        verifier,
        p.store.clone(),
        AdmissionSettings {
            routing: Routing::new("svc.cluster.local", 3333),
            route_cache,
            fail_closed: false,
            starting_hold: Duration::ZERO,
        },
    );
    let generous = RateLimit {
        per_second: 10_000.0,
        burst: 10_000,
    };
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    spawn(GatewayOptions {
        http: Listen::Bound(bind()),
        tcp: Some(Listen::Bound(bind())),
        admin: None,
        tcp_settings: TcpSettings {
            attempts: generous,
            caps: TcpCaps {
                global: 100,
                per_ip: 100,
                per_token: 10,
            },
            auth_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            gateway_id: format!("pipeline-{}", fctf_core::ids::InstanceId::new()),
            proxy_protocol: false,
            lease_ttl: LEASE_TTL,
            liveness_recheck: LIVENESS_RECHECK,
        },
        admission: Arc::new(admission),
        http_settings: HttpSettings {
            limits: HttpLimits {
                token_ip: generous,
                ip: generous,
            },
            body_limit: 1024 * 1024,
            connect_timeout: Duration::from_secs(1),
            tls: false,
            trusted_proxies: TrustedProxies::default(),
            instance_hosts: None,
        },
        threads: 1,
        grace_period: Duration::ZERO,
    })
    .unwrap()
}

/// One HTTP/1.1 GET (connection closed after it): status and the whole response text.
async fn get(addr: SocketAddr, target: &str, cookie: Option<&str>) -> (u16, String) {
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: chal.test\r\n{cookie}Connection: close\r\n\r\n");
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut response))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {text:?}"));
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_token_of_a_stopped_instance_opens_nothing_at_the_gateway() {
    let p = Pipeline::new("gateway", 300).await;
    let consumer = p.start_consumer();
    let listener = p.start_listener(None, Duration::from_secs(1));
    let route_cache = Duration::from_secs(1);
    let gw = gateway(&p, route_cache);
    let addr = gw.http_addr().unwrap();
    let k = key(9, 1);
    let running = run_all(&p, &[k], 3600).await.remove(0);
    let token = running.access.clone().expect("access while Running").token;
    assert!(
        running.access.as_ref().unwrap().http_url.ends_with(&token),
        "{running:?}"
    );

    // The token visit sets the cookie; the cookie opens the instance's own page.
    let (status, visit) = get(addr, &format!("/?fctftoken={token}"), None).await;
    assert_eq!(status, 302, "{visit}");
    let cookie = format!("FCTF_Auth_Token={token}");
    let (status, page) = get(addr, "/", Some(&cookie)).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Welcome to the demo web challenge"), "{page}");

    p.center.stop(&target(k)).await.unwrap();
    p.wait_records(&[k], Duration::from_secs(20), "stopped", |r| {
        r.as_ref()
            .is_none_or(|r| r.state == DeploymentState::Stopped)
    })
    .await;
    // Refused once the cached liveness answer is over (bounded by the route cache time).
    let deadline = tokio::time::Instant::now() + route_cache + Duration::from_secs(3);
    loop {
        let (status, answer) = get(addr, "/", Some(&cookie)).await;
        if status == 403 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {status} after the route cache time: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new first visit with the old token is refused at once: the gateway checks the
    // instance before trading the token for a cookie.
    let (status, visit) = get(addr, &format!("/?fctftoken={token}"), None).await;
    assert_eq!(status, 403, "a new visit with the old token: {visit}");
    let (status, answer) = get(addr, "/", Some(&cookie)).await;
    assert_eq!(status, 403, "{answer}");

    gw.stop();
    listener.stop().await;
    consumer.stop().await;
    p.finish().await;
}
