//! The HTTP gateway end to end: token exchange, cookie, liveness, limits, framing.

use std::sync::Arc;
use std::time::Duration;

use fctf_core::store::{DeploymentState, MemoryStore, RateLimit, RedisStore, StateStore};

use fctf_core::token::mint;
use fctf_gateway::http::HttpLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_visit_sets_the_cookie_then_the_cookie_is_proxied_and_stripped() {
    let backend = Backend::start().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let inst = run_instance(&*store, 7, 3, &backend.addr.to_string()).await;
    let gw = start_gateway(store, generous_limits());
    let addr = gw.http_addr().expect("bound");
    let token = inst.token();

    let visit = get(addr, &format!("/a/b?x=1&fctftoken={token}&y=%20"), None).await;
    assert_eq!(visit.status, 302, "{visit:?}");
    assert_eq!(visit.header("location"), Some("/a/b?x=1&y=%20"));
    let set_cookie = visit.header("set-cookie").expect("a Set-Cookie");
    assert!(set_cookie.starts_with(&format!("FCTF_Auth_Token={token}; Max-Age=")));
    let max_age: u64 = set_cookie
        .split("Max-Age=")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|s| s.parse().ok())
        .expect("Max-Age");
    assert!((590..=600).contains(&max_age), "Max-Age {max_age}");
    for attribute in ["Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert_eq!(visit.header("cache-control"), Some("no-store"));
    assert_eq!(visit.header("referrer-policy"), Some("no-referrer"));
    assert!(
        backend.heads().is_empty(),
        "the visit itself is not proxied"
    );

    let cookie = format!("a=1; FCTF_Auth_Token={token}; b=\"x y\"");
    let proxied = get(addr, "/a/b?x=1", Some(&cookie)).await;
    assert_eq!(proxied.status, 200, "{proxied:?}");
    assert_eq!(proxied.body, "hello");
    let heads = backend.heads();
    assert_eq!(heads.len(), 1);
    let head = &heads[0];
    assert!(head.starts_with("GET /a/b?x=1 HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains("\r\ncookie: a=1; b=\"x y\"\r\n")
            || head.contains("\r\nCookie: a=1; b=\"x y\"\r\n"),
        "{head}"
    );
    assert!(
        !head.contains(&token),
        "the token reached the backend: {head}"
    );
    assert!(!head.contains("FCTF_Auth_Token"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(lower.contains("\r\nx-forwarded-proto: http\r\n"), "{head}");

    // Only our cookie: the upstream request has no Cookie header at all.
    let only_ours = get(addr, "/", Some(&format!("FCTF_Auth_Token={token}"))).await;
    assert_eq!(only_ours.status, 200);
    let heads = backend.heads();
    assert!(
        !heads[1].to_ascii_lowercase().contains("\r\ncookie:"),
        "{}",
        heads[1]
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_never_reach_the_instance() {
    let backend = Backend::start().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let route = backend.addr.to_string();
    let mut inst = run_instance(&*store, 7, 3, &route).await;
    let gw = start_gateway(store.clone(), generous_limits());
    let addr = gw.http_addr().expect("bound");

    let mut forged = inst.token();
    let last = forged.pop().expect("non-empty");
    forged.push(if last == 'A' { 'Q' } else { 'A' });
    let expired = {
        let mut claims = inst.claims(0);
        claims.iat -= 100;
        claims.exp -= 100;
        mint(&key(), &claims).expect("mint")
    };
    let other_key = mint(&foreign_key(), &inst.claims(600)).expect("mint");
    let other_instance = {
        let mut claims = inst.claims(600);
        claims.instance = fctf_core::ids::InstanceId::new();
        mint(&key(), &claims).expect("mint")
    };

    let cases = [
        (forged.as_str(), 401, "invalid token"),
        (expired.as_str(), 401, "token expired"),
        (other_key.as_str(), 401, "invalid token"),
        (other_instance.as_str(), 403, "no longer running"),
    ];
    for (token, status, text) in cases {
        let refused = get(addr, "/", Some(&format!("FCTF_Auth_Token={token}"))).await;
        assert_eq!(refused.status, status, "{refused:?}");
        assert!(refused.body.contains(text), "{refused:?}");
        assert!(refused.closed, "an early answer closes the connection");
    }
    let visit = get(addr, &format!("/?fctftoken={forged}"), None).await;
    assert_eq!(visit.status, 401);
    assert!(visit.header("set-cookie").is_none());
    let missing = get(addr, "/", Some("a=1")).await;
    assert_eq!(missing.status, 401);
    assert!(missing.body.contains("missing token"), "{missing:?}");

    // The real token works until its instance stops.
    let token = inst.token();
    let cookie = format!("FCTF_Auth_Token={token}");
    assert_eq!(get(addr, "/", Some(&cookie)).await.status, 200);
    set_state(&*store, &mut inst, DeploymentState::Stopping).await;
    let stopped = get(addr, "/", Some(&cookie)).await;
    assert_eq!(stopped.status, 403, "{stopped:?}");
    assert_eq!(
        backend.heads().len(),
        1,
        "only the valid request was proxied"
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_visit_with_a_stopped_or_unknown_instances_token_is_refused_at_once() {
    let backend = Backend::start().await;
    let store = redis_store().await;
    let route = backend.addr.to_string();
    let mut inst = run_instance(&*store, 8, 3, &route).await;
    let gw = start_gateway(store.clone(), generous_limits());
    let addr = gw.http_addr().expect("bound");
    let token = inst.token();

    let visit = get(addr, &format!("/p?fctftoken={token}"), None).await;
    assert_eq!(visit.status, 302, "{visit:?}");

    // An instance the store never knew (a token for it is authentic, but opens nothing).
    let unknown = {
        let mut claims = inst.claims(600);
        claims.instance = fctf_core::ids::InstanceId::new();
        mint(&key(), &claims).expect("mint")
    };
    // A (team, challenge) with no record at all.
    let no_record = {
        let mut claims = inst.claims(600);
        claims.challenge = fctf_core::ids::ChallengeId(99_999);
        mint(&key(), &claims).expect("mint")
    };
    for token in [&unknown, &no_record] {
        let refused = get(addr, &format!("/p?fctftoken={token}"), None).await;
        assert_eq!(refused.status, 403, "{refused:?}");
        assert!(refused.header("set-cookie").is_none(), "{refused:?}");
        assert!(refused.body.contains("no longer running"), "{refused:?}");
        assert!(refused.closed, "an early answer closes the connection");
    }

    set_state(&*store, &mut inst, DeploymentState::Stopping).await;
    let stopped = get(addr, &format!("/p?fctftoken={token}"), None).await;
    assert_eq!(stopped.status, 403, "{stopped:?}");
    assert!(stopped.header("set-cookie").is_none(), "{stopped:?}");
    assert!(stopped.header("location").is_none(), "{stopped:?}");
    assert!(stopped.body.contains("no longer running"), "{stopped:?}");
    // The cookie path answers the same.
    let by_cookie = get(addr, "/p", Some(&format!("FCTF_Auth_Token={token}"))).await;
    assert_eq!(by_cookie.status, stopped.status);
    assert_eq!(by_cookie.body, stopped.body);
    assert!(backend.heads().is_empty(), "nothing was proxied");
    gw.stop();
    release(&*store, &inst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_before_anything_else() {
    let backend = Backend::start().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let inst = run_instance(&*store, 7, 3, &backend.addr.to_string()).await;
    let gw = start_gateway(store, generous_limits());
    let addr = gw.http_addr().expect("bound");
    let cookie = format!("FCTF_Auth_Token={}", inst.token());
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: chal.test\r\n\r\n";

    let requests = [
        format!(
            "POST / HTTP/1.1\r\nHost: chal.test\r\nCookie: {cookie}\r\nContent-Length: 4\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST / HTTP/1.1\r\nHost: chal.test\r\nCookie: {cookie}\r\nTransfer-Encoding: chunked\r\n\
             content-length: 4\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST / HTTP/1.1\r\nHost: chal.test\r\nCookie: {cookie}\r\n\
             Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST / HTTP/1.1\r\nHost: chal.test\r\nCookie: {cookie}\r\nContent-Length: 0\r\n\
             Content-Length: 0\r\n\r\n{smuggled}"
        ),
        format!("GET / HTTP/1.1\r\nHost: chal.test\r\nCookie: {cookie}\nX: y\r\n\r\n{smuggled}"),
        format!("GET / HTTP/1.1\r\nCookie: {cookie}\r\n\r\n{smuggled}"),
    ];
    for raw in &requests {
        let refused = send(addr, raw.as_bytes()).await;
        assert_eq!(refused.status, 400, "{raw:?} -> {refused:?}");
        assert!(refused.closed, "{raw:?}");
        assert!(!refused.body.contains("hello"), "{raw:?} -> {refused:?}");
    }
    assert!(backend.heads().is_empty(), "{:?}", backend.heads());

    // A refused request's body is never read as a request either (T06).
    let early = format!(
        "POST / HTTP/1.1\r\nHost: chal.test\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let refused = send(addr, early.as_bytes()).await;
    assert_eq!(refused.status, 401);
    assert!(refused.closed);
    assert!(backend.heads().is_empty());
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_is_429_with_retry_after_and_a_dead_instance_502() {
    let backend = Backend::start().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let inst = run_instance(&*store, 7, 3, &backend.addr.to_string()).await;
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let dead = run_instance(&*store, 7, 4, &dead_port).await;
    let limits = HttpLimits {
        token_ip: RateLimit {
            per_second: 0.1,
            burst: 2,
        },
        ..generous_limits()
    };
    let gw = start_gateway(store, limits);
    let addr = gw.http_addr().expect("bound");

    let cookie = format!("FCTF_Auth_Token={}", inst.token());
    assert_eq!(get(addr, "/", Some(&cookie)).await.status, 200);
    assert_eq!(get(addr, "/", Some(&cookie)).await.status, 200);
    let limited = get(addr, "/", Some(&cookie)).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    assert_eq!(backend.heads().len(), 2);

    let unreachable = get(
        addr,
        "/",
        Some(&format!("FCTF_Auth_Token={}", dead.token())),
    )
    .await;
    assert_eq!(unreachable.status, 502, "{unreachable:?}");
    assert!(unreachable.body.contains("unreachable"), "{unreachable:?}");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_backs_liveness_and_limits() {
    require_redis().await;
    let prefix = format!("fctf-test:gateway:{}:", fctf_core::ids::InstanceId::new());
    let redis = RedisStore::connect("redis://127.0.0.1:6379", &prefix, Duration::from_secs(2))
        .await
        .expect("redis");
    let store: Arc<dyn StateStore> = Arc::new(redis);
    let backend = Backend::start().await;
    let mut inst = run_instance(&*store, 9, 5, &backend.addr.to_string()).await;
    let limits = HttpLimits {
        token_ip: RateLimit {
            per_second: 0.1,
            burst: 3,
        },
        ..generous_limits()
    };
    let gw = start_gateway(store.clone(), limits);
    let addr = gw.http_addr().expect("bound");
    let cookie = format!("FCTF_Auth_Token={}", inst.token());
    for _ in 0..3 {
        assert_eq!(get(addr, "/", Some(&cookie)).await.status, 200);
    }
    assert_eq!(get(addr, "/", Some(&cookie)).await.status, 429);
    set_state(&*store, &mut inst, DeploymentState::Stopping).await;
    assert_eq!(get(addr, "/", Some(&cookie)).await.status, 403);
    gw.stop();
    release(&*store, &inst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_serves_health_and_metrics() {
    let backend = Backend::start().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let inst = run_instance(&*store, 7, 3, &backend.addr.to_string()).await;
    let gw = start_gateway(store, generous_limits());
    let addr = gw.http_addr().expect("bound");
    let admin = gw.admin_addr().expect("bound");
    let cookie = format!("FCTF_Auth_Token={}", inst.token());
    assert_eq!(get(addr, "/", Some(&cookie)).await.status, 200);
    assert_eq!(get(addr, "/", Some(&cookie)).await.status, 200);
    assert_eq!(get(addr, "/", None).await.status, 401);

    let health = get(admin, "/healthz", None).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(get(admin, "/nope", None).await.status, 404);
    let metrics = get(admin, "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    for line in [
        "fctf_gateway_http_responses_total{class=\"2xx\"} 2\n",
        "fctf_gateway_http_responses_total{class=\"4xx\"} 1\n",
        "fctf_gateway_token_cache_hits_total 1\n",
        "fctf_gateway_token_cache_misses_total 1\n",
        "fctf_gateway_tcp_active_sessions 0\n",
    ] {
        assert!(
            metrics.body.contains(line),
            "{line} not in:\n{}",
            metrics.body
        );
    }
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_falls_back_to_local_limits_or_fails_closed() {
    let backend = Backend::start().await;
    // The instance exists nowhere: the store is down, so liveness cannot be checked either.
    let inst = Instance::unchecked(&backend.addr.to_string());
    let cookie = format!("FCTF_Auth_Token={}", inst.token());
    let limits = HttpLimits {
        token_ip: RateLimit {
            per_second: 0.1,
            burst: 2,
        },
        ..generous_limits()
    };

    let open = start_gateway_full(unreachable_store(), limits, tcp_settings(15), false);
    let addr = open.http_addr().expect("bound");
    assert_eq!(get(addr, "/", Some(&cookie)).await.status, 200);
    assert_eq!(get(addr, "/", Some(&cookie)).await.status, 200);
    let limited = get(addr, "/", Some(&cookie)).await;
    assert_eq!(limited.status, 429, "local limits still hold: {limited:?}");
    open.stop();

    let closed = start_gateway_full(unreachable_store(), limits, tcp_settings(15), true);
    let addr = closed.http_addr().expect("bound");
    let refused = get(addr, "/", Some(&cookie)).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // Token checks never need the store: a forged token is still a 401, not a 503.
    let forged = get(addr, "/", Some("FCTF_Auth_Token=x.y")).await;
    assert_eq!(forged.status, 401);
    closed.stop();
    assert_eq!(backend.heads().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_is_tunnelled() {
    let backend = Backend::start().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let inst = run_instance(&*store, 7, 3, &backend.addr.to_string()).await;
    let gw = start_gateway(store, generous_limits());
    let addr = gw.http_addr().expect("bound");

    let mut conn = connect(addr).await;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: chal.test\r\nCookie: FCTF_Auth_Token={}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        inst.token()
    );
    conn.write_all(request.as_bytes()).await.expect("write");
    let head = read_until_blank_line(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    conn.write_all(b"frame-bytes").await.expect("write");
    assert_eq!(read_exactly(&mut conn, 11).await, b"frame-bytes");
    let heads = backend.heads();
    assert!(!heads[0].contains("FCTF_Auth_Token"), "{}", heads[0]);
    gw.stop();
}

/// Opens a WebSocket-style upgrade through the gateway with `token` and checks that bytes are
/// echoed through it.
async fn open_upgraded(addr: std::net::SocketAddr, token: &str) -> tokio::net::TcpStream {
    let mut conn = connect(addr).await;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: chal.test\r\nCookie: FCTF_Auth_Token={token}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.expect("write");
    let head = read_until_blank_line(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    conn.write_all(b"ping").await.expect("write");
    assert_eq!(read_exactly(&mut conn, 4).await, b"ping");
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_ends_when_its_instance_stops() {
    let backend = Backend::start().await;
    let store = redis_store().await;
    let route = backend.addr.to_string();
    let mut stopping = run_instance(&*store, 94, 1, &route).await;
    let running = run_instance(&*store, 94, 2, &route).await;
    let mut tcp = tcp_settings(15);
    tcp.liveness_recheck = Duration::from_millis(300);
    let gw = start_gateway_with(store.clone(), generous_limits(), tcp);
    let addr = gw.http_addr().expect("bound");

    let mut idle = open_upgraded(addr, &stopping.token()).await;
    let mut busy = open_upgraded(addr, &stopping.token()).await;
    let mut other = open_upgraded(addr, &running.token()).await;
    // Live connections outlast several rechecks.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for conn in [&mut idle, &mut busy, &mut other] {
        conn.write_all(b"still").await.expect("write");
        assert_eq!(read_exactly(conn, 5).await, b"still");
    }

    set_state(&*store, &mut stopping, DeploymentState::Stopping).await;
    let stopped_at = std::time::Instant::now();
    // One keeps sending while the other sends nothing at all: both are cut.
    let sender = tokio::spawn(async move {
        let mut buf = [0u8; 4];
        for _ in 0..100 {
            if busy.write_all(b"more").await.is_err() {
                return true;
            }
            match tokio::time::timeout(Duration::from_secs(5), busy.read_exact(&mut buf)).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return true,
                Err(_) => return false,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    });
    // `closes` waits at most 5 s; the recheck is every 300 ms.
    assert!(closes(&mut idle).await, "the idle WebSocket is closed");
    eprintln!(
        "idle WebSocket closed {:?} after the stop",
        stopped_at.elapsed()
    );
    assert!(
        sender.await.expect("sender"),
        "the busy WebSocket is closed"
    );

    // The other instance's WebSocket goes on.
    other.write_all(b"on").await.expect("write");
    assert_eq!(read_exactly(&mut other, 2).await, b"on");
    gw.stop();
    release(&*store, &stopping).await;
    release(&*store, &running).await;
}

/// Reads a response head byte by byte (so nothing after it is consumed).
async fn read_until_blank_line(conn: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend(read_exactly(conn, 1).await);
    }
    String::from_utf8(head).expect("text")
}
