//! What the gateway tests share: a recording HTTP backend, a raw HTTP client, tokens, instance
//! records and a gateway on a free port.

#![allow(dead_code)] // each test module uses part of this

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fctf_core::clock::unix_now_secs;
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::store::{
    DeploymentRecord, DeploymentState, RateLimit, Reservation, StateStore, UpdateOutcome,
};
use fctf_core::token::{Claims, Keyring, TokenKey, Verifier, mint};
use fctf_gateway::admission::{Admission, AdmissionSettings};
use fctf_gateway::client::TrustedProxies;
use fctf_gateway::host::InstanceHosts;
use fctf_gateway::http::{HttpLimits, HttpSettings};
use fctf_gateway::routing::Routing;
use fctf_gateway::server::{GatewayHandle, GatewayOptions, Listen, spawn};
use fctf_gateway::tcp::{TcpCaps, TcpSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Fails the test loudly unless Redis answers on the default address.
pub async fn require_redis() {
    let ok = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect("127.0.0.1:6379"))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    assert!(
        ok,
        "Redis does not answer on 127.0.0.1:6379; this test needs the real server.\n\
         Start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' \
         --appendonly no"
    );
}

/// The signing key of the tests.
pub fn key() -> TokenKey {
    TokenKey::new("k1", b"gateway-test-secret-of-32-bytes!".to_vec()).expect("valid key")
}

/// A key the gateway does not know.
pub fn foreign_key() -> TokenKey {
    TokenKey::new("k1", b"another-secret-that-is-32-bytes!".to_vec()).expect("valid key")
}

/// One running instance and its token.
#[derive(Clone, Debug)]
pub struct Instance {
    pub team: TeamId,
    pub challenge: ChallengeId,
    pub instance: InstanceId,
    pub route: String,
    pub record: DeploymentRecord,
}

impl Instance {
    /// An instance that no store knows (for tests where the store is down).
    pub fn unchecked(route: &str) -> Instance {
        let instance = InstanceId::new();
        Instance {
            team: TeamId(1),
            challenge: ChallengeId(1),
            instance,
            route: route.to_owned(),
            record: DeploymentRecord {
                team: TeamId(1),
                challenge: ChallengeId(1),
                instance,
                state: DeploymentState::Running,
                version: 1,
                route: Some(route.to_owned()),
                reason: None,
                created_at_ms: 0,
                updated_at_ms: 0,
                expires_at_ms: None,
            },
        }
    }

    /// Claims for this instance, valid from 10 s ago for `ttl_secs`.
    pub fn claims(&self, ttl_secs: u64) -> Claims {
        let now = unix_now_secs();
        Claims {
            kid: "k1".into(),
            team: self.team,
            challenge: self.challenge,
            instance: self.instance,
            route: self.route.clone(),
            iat: now - 10,
            exp: now + ttl_secs,
        }
    }

    /// A valid token for this instance.
    pub fn token(&self) -> String {
        mint(&key(), &self.claims(600)).expect("mint")
    }
}

/// Reserves (team, challenge) and marks it Running with `route`.
pub async fn run_instance(
    store: &dyn StateStore,
    team: i64,
    challenge: i64,
    route: &str,
) -> Instance {
    let instance = InstanceId::new();
    let record = DeploymentRecord {
        team: TeamId(team),
        challenge: ChallengeId(challenge),
        instance,
        state: DeploymentState::Queued,
        version: 0,
        route: None,
        reason: None,
        created_at_ms: 0,
        updated_at_ms: 0,
        expires_at_ms: None,
    };
    let ttl = Duration::from_secs(600);
    let Reservation::Reserved(mut record) = store
        .reserve_instance(&record, 10, ttl)
        .await
        .expect("reserve")
    else {
        panic!("instance not reserved");
    };
    record.state = DeploymentState::Running;
    record.route = Some(route.to_owned());
    let UpdateOutcome::Updated(record) =
        store.update_deployment(&record, ttl).await.expect("update")
    else {
        panic!("instance not updated");
    };
    Instance {
        team: TeamId(team),
        challenge: ChallengeId(challenge),
        instance,
        route: route.to_owned(),
        record,
    }
}

/// Releases `instance`'s quota slot and record, so a test on a shared Redis leaves nothing behind.
pub async fn release(store: &dyn StateStore, instance: &Instance) {
    store
        .release_instance(instance.team, instance.challenge, instance.instance)
        .await
        .expect("release");
}

/// Sets the state of `instance`'s record.
pub async fn set_state(store: &dyn StateStore, instance: &mut Instance, state: DeploymentState) {
    let mut record = instance.record.clone();
    record.state = state;
    let UpdateOutcome::Updated(record) = store
        .update_deployment(&record, Duration::from_secs(600))
        .await
        .expect("update")
    else {
        panic!("state not updated");
    };
    instance.record = record;
}

/// Limits high enough never to interfere.
pub fn generous_limits() -> HttpLimits {
    let limit = RateLimit {
        per_second: 10_000.0,
        burst: 10_000,
    };
    HttpLimits {
        token_ip: limit,
        ip: limit,
    }
}

/// TCP settings for tests: generous attempts, `per_token` sessions per token, short timeouts.
pub fn tcp_settings(per_token: u32) -> TcpSettings {
    TcpSettings {
        attempts: RateLimit {
            per_second: 10_000.0,
            burst: 10_000,
        },
        caps: TcpCaps {
            global: 10_000,
            per_ip: 10_000,
            per_token,
        },
        auth_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        gateway_id: format!("test-{}", InstanceId::new()),
        proxy_protocol: false,
        lease_ttl: fctf_gateway::tcp::LEASE_TTL,
        liveness_recheck: fctf_gateway::tcp::LIVENESS_RECHECK,
    }
}

/// A gateway on free ports in front of `store`.
pub fn start_gateway(store: Arc<dyn StateStore>, limits: HttpLimits) -> GatewayHandle {
    start_gateway_with(store, limits, tcp_settings(15))
}

/// A gateway on free ports in front of `store`, with TCP settings.
pub fn start_gateway_with(
    store: Arc<dyn StateStore>,
    limits: HttpLimits,
    tcp: TcpSettings,
) -> GatewayHandle {
    start_gateway_full(store, limits, tcp, false)
}

/// A gateway on free ports in front of `store`, with TCP settings and the store-outage policy.
pub fn start_gateway_full(
    store: Arc<dyn StateStore>,
    limits: HttpLimits,
    tcp: TcpSettings,
    fail_closed: bool,
) -> GatewayHandle {
    start_gateway_trusting(store, limits, tcp, fail_closed, TrustedProxies::default())
}

/// A gateway on free ports in front of `store` that lets `trusted_proxies` name the client.
pub fn start_gateway_trusting(
    store: Arc<dyn StateStore>,
    limits: HttpLimits,
    tcp: TcpSettings,
    fail_closed: bool,
    trusted_proxies: TrustedProxies,
) -> GatewayHandle {
    start_gateway_draining(
        store,
        limits,
        tcp,
        fail_closed,
        trusted_proxies,
        Duration::ZERO,
    )
}

/// A gateway on free ports in front of `store` whose graceful stop drains for `drain`.
pub fn start_gateway_draining(
    store: Arc<dyn StateStore>,
    limits: HttpLimits,
    tcp: TcpSettings,
    fail_closed: bool,
    trusted_proxies: TrustedProxies,
    drain: Duration,
) -> GatewayHandle {
    start_gateway_options(
        store,
        limits,
        tcp,
        Extra {
            fail_closed,
            trusted_proxies,
            drain,
            ..Extra::default()
        },
    )
}

/// The less common gateway settings, defaulting to what the other helpers use.
#[derive(Debug, Default)]
pub struct Extra {
    pub fail_closed: bool,
    pub trusted_proxies: TrustedProxies,
    pub drain: Duration,
    pub starting_hold: Duration,
    pub instance_hosts: Option<InstanceHosts>,
}

/// A gateway on free ports in front of `store`, with every setting.
pub fn start_gateway_options(
    store: Arc<dyn StateStore>,
    limits: HttpLimits,
    tcp: TcpSettings,
    extra: Extra,
) -> GatewayHandle {
    let Extra {
        fail_closed,
        trusted_proxies,
        drain,
        starting_hold,
        instance_hosts,
    } = extra;
    let verifier = Verifier::new(
        Keyring::new(vec![key()]).expect("keyring"),
        Duration::from_secs(5),
    );
    let admission = Admission::new(
        verifier,
        store,
        AdmissionSettings {
            routing: Routing::new("svc.cluster.local", 3333),
            // Every request asks the store: the tests change states between requests.
            route_cache: Duration::ZERO,
            fail_closed,
            starting_hold,
        },
    );
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    spawn(GatewayOptions {
        http: Listen::Bound(bind()),
        tcp: Some(Listen::Bound(bind())),
        admin: Some(Listen::Bound(bind())),
        tcp_settings: tcp,
        admission: Arc::new(admission),
        http_settings: HttpSettings {
            limits,
            body_limit: 1024 * 1024,
            connect_timeout: Duration::from_secs(1),
            tls: false,
            trusted_proxies,
            instance_hosts,
        },
        threads: 1,
        grace_period: drain,
    })
    .expect("gateway starts")
}

/// A Redis store whose server is down: every call fails as `Unavailable`.
pub fn unreachable_store() -> Arc<dyn StateStore> {
    let url = format!("redis://{}", free_addr());
    Arc::new(
        fctf_core::store::RedisStore::connect_lazy(&url, "t:", Duration::from_millis(300))
            .expect("a lazy store"),
    )
}

/// A loopback address no one listens on right now (bound, then released).
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// An HTTP backend that records the head of every request it receives and answers `hello`.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = heads.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, recorded.clone()));
            }
        });
        Backend { addr, heads, task }
    }

    /// The heads received so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut conn: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_head(&mut conn, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let body_len = content_length(&head);
        while buf.len() < head_end + body_len {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + body_len);
        let upgrade = head
            .to_ascii_lowercase()
            .contains("\r\nupgrade: websocket\r\n");
        heads.lock().expect("lock").push(head);
        if upgrade {
            // Switch protocols, then echo raw bytes both ways until the client closes.
            let switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                           Connection: Upgrade\r\n\r\n";
            if conn.write_all(switch).await.is_err() || conn.write_all(&buf).await.is_err() {
                return;
            }
            let (mut r, mut w) = conn.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            return;
        }
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        if conn.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// Reads until `buf` holds a whole head; returns its length (blank line included).
async fn read_head(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A response as the raw client read it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
    /// True when the server closed the connection after the response.
    pub closed: bool,
}

impl Response {
    /// The value of the first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }
}

/// Sends `raw` on a new connection to `addr` and reads one response (and whether the connection
/// then closed).
pub async fn send(addr: SocketAddr, raw: &[u8]) -> Response {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut conn = connect(addr).await;
        conn.write_all(raw).await.expect("write request");
        let mut buf = Vec::new();
        let head_end = read_head(&mut conn, &mut buf)
            .await
            .expect("a response head");
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let body_len = content_length(&head);
        while buf.len() < head_end + body_len {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
        // Anything after the response (a second answer) would show up here.
        let mut rest = [0u8; 1024];
        let closed = matches!(
            tokio::time::timeout(Duration::from_millis(300), conn.read(&mut rest)).await,
            Ok(Ok(0)) | Ok(Err(_))
        );
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status code");
        Response {
            status,
            head,
            body,
            closed,
        }
    })
    .await
    .expect("the gateway answers within 10 s")
}

/// A GET of `target` with `cookie` (if any).
pub async fn get(addr: SocketAddr, target: &str, cookie: Option<&str>) -> Response {
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    let raw = format!("GET {target} HTTP/1.1\r\nHost: chal.test\r\n{cookie}\r\n");
    send(addr, raw.as_bytes()).await
}

/// Connects, retrying while the gateway starts.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    for _ in 0..100 {
        if let Ok(conn) = TcpStream::connect(addr).await {
            return conn;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway does not accept on {addr}");
}

/// A TCP echo backend.
#[derive(Debug)]
pub struct EchoBackend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl EchoBackend {
    pub async fn start() -> EchoBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        EchoBackend { addr, task }
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects to the TCP gateway and reads its prompt.
pub async fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let mut conn = connect(addr).await;
    let prompt = read_exactly(&mut conn, fctf_gateway::tcp::PROMPT.len()).await;
    assert_eq!(prompt, fctf_gateway::tcp::PROMPT);
    conn
}

/// Reads exactly `n` bytes (within 5 s).
pub async fn read_exactly(conn: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut buf))
        .await
        .expect("bytes within 5 s")
        .expect("read");
    buf
}

/// Reads one line (within 5 s).
pub async fn read_line(conn: &mut TcpStream) -> String {
    let mut line = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut byte = [0u8; 1];
        while conn.read(&mut byte).await.expect("read") == 1 {
            line.push(byte[0]);
            if byte[0] == b'\n' {
                break;
            }
        }
    })
    .await
    .expect("a line within 5 s");
    String::from_utf8(line).expect("text")
}

/// True when the peer closes the connection within 5 s (after any pending bytes).
pub async fn closes(conn: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

/// A store on the shared Redis under a key prefix of its own.
pub async fn redis_store() -> Arc<dyn StateStore> {
    require_redis().await;
    let prefix = format!("fctf-test:gateway:{}:", InstanceId::new());
    let redis = fctf_core::store::RedisStore::connect(
        "redis://127.0.0.1:6379",
        &prefix,
        Duration::from_secs(2),
    )
    .await
    .expect("redis");
    Arc::new(redis)
}

/// Reserves (team, challenge) for a new instance that stays Queued; its tokens name `route`.
pub async fn queue_instance(
    store: &dyn StateStore,
    team: i64,
    challenge: i64,
    route: &str,
) -> Instance {
    let instance = InstanceId::new();
    let record = DeploymentRecord {
        team: TeamId(team),
        challenge: ChallengeId(challenge),
        instance,
        state: DeploymentState::Queued,
        version: 0,
        route: None,
        reason: None,
        created_at_ms: 0,
        updated_at_ms: 0,
        expires_at_ms: None,
    };
    let Reservation::Reserved(mut record) = store
        .reserve_instance(&record, 10, Duration::from_secs(600))
        .await
        .expect("reserve")
    else {
        panic!("instance not reserved");
    };
    record.route = Some(route.to_owned());
    Instance {
        team: TeamId(team),
        challenge: ChallengeId(challenge),
        instance,
        route: route.to_owned(),
        record,
    }
}

/// The value of the sample `name_and_labels` (e.g. `x_total{a="b"}`) on the admin port's
/// `/metrics`, or 0 when it is absent.
pub async fn metric(admin: SocketAddr, name_and_labels: &str) -> u64 {
    let metrics = get(admin, "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    let prefix = format!("{name_and_labels} ");
    metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().expect("an integer sample"))
        .unwrap_or(0)
}

/// A GET of `target` sent to `host`, with `cookie` (if any).
pub async fn get_host(
    addr: SocketAddr,
    host: &str,
    target: &str,
    cookie: Option<&str>,
) -> Response {
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    let raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{cookie}\r\n");
    send(addr, raw.as_bytes()).await
}

/// Waits (up to 5 s) until `key` holds `want` leases in `store`; panics with the last count.
pub async fn wait_leases(store: &dyn StateStore, key: &str, want: u32) {
    let mut count = u32::MAX;
    for _ in 0..100 {
        count = store.lease_count(key).await.expect("count");
        if count == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{key} holds {count} leases, not {want}");
}

/// A redis-server of the test's own on a free port (no persistence), killed on drop: for tests
/// that lose its data or stop it, which the shared server must never see.
#[derive(Debug)]
pub struct PrivateRedis {
    pub port: u16,
    child: std::process::Child,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let port = free_addr().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let redis = PrivateRedis { port, child };
        connect(SocketAddr::from(([127, 0, 0, 1], port))).await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs one command with redis-cli and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects to `addr` and reads how the connection opens: `Some` with the prompt read, `None`
/// when it was closed without a byte.
pub async fn open_tcp(addr: SocketAddr) -> Option<TcpStream> {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let mut first = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 64];
        while first.len() < fctf_gateway::tcp::PROMPT.len() {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => first.extend_from_slice(&buf[..k]),
            }
        }
    })
    .await
    .expect("prompt or close within 5 s");
    if first.is_empty() {
        None
    } else {
        assert_eq!(
            first,
            fctf_gateway::tcp::PROMPT,
            "a connection opens with the prompt or nothing"
        );
        Some(conn)
    }
}
