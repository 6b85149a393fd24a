//! A Deployment Center per test on either backend pair, requests signed like the real callers
//! sign them, and readers for what it wrote to the store and the queue.
//!
//! Isolation: the in-process backends are private to the test; on the real servers each test
//! has its own Redis key prefix and its own RabbitMQ exchange and queue names (deleted when the
//! test ends, also when it fails).

#![allow(dead_code)] // each test module uses part of this

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use fctf_control::deployment::contract::{InstanceKey, StartRequest};
use fctf_control::deployment::{CenterKeys, DeploymentCenter, router};
use fctf_core::config::DeploymentConfig;
use fctf_core::ids::{ChallengeId, TeamId};
use fctf_core::queue::{AmqpQueue, DeployJob, DeploySpec, JobQueue, MemoryQueue, Topology};
use fctf_core::signing::{self, KeyRing, SigningKey};
use fctf_core::store::{
    DeploymentRecord, DeploymentState, MemoryStore, RedisStore, StateStore, UpdateOutcome,
};
use fctf_core::token::TokenKey;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt as _;
use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use serde::Serialize;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

/// Runs each `async fn(Backend)` case on both backend pairs, as `CASE::memory` and
/// `CASE::redis_rabbitmq`, under the given test attribute (`#[tokio::test]` by default).
/// The calling module must have `Backend` in scope.
macro_rules! on_both {
    (#[$test:meta] $($case:ident),* $(,)?) => {$(
        mod $case {
            #[$test]
            async fn memory() {
                super::$case(super::Backend::Memory).await;
            }
            #[$test]
            async fn redis_rabbitmq() {
                super::$case(super::Backend::Real).await;
            }
        }
    )*};
    ($($case:ident),* $(,)?) => {
        on_both!(#[tokio::test] $($case),*);
    };
}
pub(crate) use on_both;
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

pub const SIGNING_SECRET: &[u8] = b"deployment-center-test-signing-secret-0123456789";
pub const TOKEN_SECRET: &[u8] = b"deployment-center-test-token-secret-0123456789ab";

/// Redis for tests: `FCTF_TEST_REDIS_URL`, or the machine's default.
pub fn redis_url() -> String {
    std::env::var("FCTF_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// RabbitMQ for tests (without vhost): `FCTF_TEST_AMQP_URL`, or the machine's default.
pub fn amqp_url() -> String {
    std::env::var("FCTF_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned())
}

fn host_port(url: &str, default: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(default);
    if authority.is_empty() {
        default.to_owned()
    } else {
        authority.to_owned()
    }
}

/// Fails the test loudly unless something accepts TCP connections at `addr`.
pub async fn require_tcp(service: &str, addr: &str) {
    let ok = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    assert!(
        ok,
        "{service} does not answer on {addr}; this test needs the real server \
         (run `bash .ci/run`, which starts every service it needs)"
    );
}

/// A name no other test (or run) shares.
pub fn unique(test: &str) -> String {
    format!("fctf-test:dc-{test}:{}:", uuid::Uuid::new_v4().simple())
}

/// Which backends a Deployment Center runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// MemoryStore + MemoryQueue.
    Memory,
    /// RedisStore + AmqpQueue on the real servers.
    Real,
}

/// The `[deployment]` settings of every test: 10-minute extensions, opening 15 minutes before
/// the end, at most two.
pub fn test_config() -> DeploymentConfig {
    DeploymentConfig {
        provisional_ttl_secs: 120,
        extend_secs: 600,
        extend_window_secs: 900,
        extend_max: 2,
        public_http_url: fctf_core::config::ServiceUrl::new("http://ctf.example:8080/"),
        public_tcp_host: "tcp.ctf.example".to_owned(),
        public_tcp_port: 31337,
        ..DeploymentConfig::default()
    }
}

pub fn signing_key() -> SigningKey {
    SigningKey::new("s1", SIGNING_SECRET).unwrap()
}

pub fn token_key() -> TokenKey {
    TokenKey::new("k1", TOKEN_SECRET.to_vec()).unwrap()
}

pub fn keys() -> CenterKeys {
    CenterKeys {
        signing: KeyRing::from(signing_key()),
        signing_window: Duration::from_secs(60),
        token: token_key(),
    }
}

/// A Deployment Center on one backend pair, with handles on its store and queue.
pub struct Harness {
    pub backend: Backend,
    pub center: Arc<DeploymentCenter>,
    pub store: Arc<dyn StateStore>,
    pub queue: Arc<dyn JobQueue>,
    pub config: DeploymentConfig,
    pub proxy: Option<Proxy>,
    broker: Option<BrokerCleanup>,
}

impl Backend {
    /// A Deployment Center with a deploy queue of `max_length` jobs.
    pub async fn harness(self, test: &str, max_length: u32) -> Harness {
        match self {
            Backend::Memory => {
                let topology = Topology {
                    max_length,
                    ..Topology::default()
                };
                Harness::new(
                    self,
                    Arc::new(MemoryStore::new()),
                    Arc::new(MemoryQueue::new(&topology)),
                    None,
                    None,
                )
            }
            Backend::Real => {
                let store = redis_store(test).await;
                let topology = unique_topology(test, max_length);
                let cleanup = BrokerCleanup(topology.clone());
                require_tcp("RabbitMQ", &host_port(&amqp_url(), "127.0.0.1:5672")).await;
                let queue = AmqpQueue::connect(&amqp_url(), &topology, Duration::from_secs(5))
                    .await
                    .unwrap_or_else(|e| panic!("connect to RabbitMQ: {e}"));
                Harness::new(self, store, Arc::new(queue), None, Some(cleanup))
            }
        }
    }
}

/// A RedisStore on a prefix of its own.
pub async fn redis_store(test: &str) -> Arc<dyn StateStore> {
    require_tcp("Redis", &host_port(&redis_url(), "127.0.0.1:6379")).await;
    Arc::new(
        RedisStore::connect(&redis_url(), &unique(test), Duration::from_secs(2))
            .await
            .unwrap(),
    )
}

/// A Deployment Center on real Redis whose AmqpQueue reaches RabbitMQ through a [`Proxy`] the
/// test can cut.
pub async fn behind_proxy(test: &str) -> Harness {
    let store = redis_store(test).await;
    let topology = unique_topology(test, 300);
    let cleanup = BrokerCleanup(topology.clone());
    let upstream = host_port(&amqp_url(), "127.0.0.1:5672");
    require_tcp("RabbitMQ", &upstream).await;
    let proxy = Proxy::start(&upstream).await;
    let url = amqp_url().replace(&upstream, &format!("127.0.0.1:{}", proxy.addr.port()));
    let queue = AmqpQueue::connect(&url, &topology, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("connect to RabbitMQ through the proxy: {e}"));
    Harness::new(
        Backend::Real,
        store,
        Arc::new(queue),
        Some(proxy),
        Some(cleanup),
    )
}

impl Harness {
    fn new(
        backend: Backend,
        store: Arc<dyn StateStore>,
        queue: Arc<dyn JobQueue>,
        proxy: Option<Proxy>,
        cleanup: Option<BrokerCleanup>,
    ) -> Harness {
        let config = test_config();
        let center = Arc::new(DeploymentCenter::new(
            Arc::clone(&store),
            Arc::clone(&queue),
            &config,
            keys(),
        ));
        Harness {
            backend,
            center,
            store,
            queue,
            config,
            proxy,
            broker: cleanup,
        }
    }

    /// Sends `request` through the router.
    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = router(Arc::clone(&self.center))
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            headers,
            body,
        }
    }

    /// POSTs `body` to `path`, signed as the Contestant Service signs.
    pub async fn post(&self, path: &str, body: &impl Serialize) -> Answer {
        self.send(signed_request(
            path,
            &serde_json::to_vec(body).unwrap(),
            now_secs(),
        ))
        .await
    }

    /// The record of (team, challenge).
    pub async fn record(&self, key: InstanceKey) -> Option<DeploymentRecord> {
        self.store
            .get_deployment(key.team, key.challenge)
            .await
            .unwrap()
    }

    /// Moves the record of `key` to Running at `route`, expiring at `expires_at_ms`, as the
    /// Deployment Listener would.
    pub async fn set_running(&self, key: InstanceKey, expires_at_ms: u64) -> DeploymentRecord {
        let current = self.record(key).await.expect("a record to make Running");
        let running = DeploymentRecord {
            state: DeploymentState::Running,
            route: Some("127.0.0.1:40123".to_owned()),
            expires_at_ms: Some(expires_at_ms),
            ..current
        };
        match self
            .store
            .update_deployment(&running, Duration::from_secs(7200))
            .await
            .unwrap()
        {
            UpdateOutcome::Updated(stored) => stored,
            UpdateOutcome::Conflict(other) => panic!("could not set Running: {other:?}"),
        }
    }

    /// Waits for and acknowledges `count` jobs, in queue order.
    pub async fn take_jobs(&self, count: usize) -> Vec<DeployJob> {
        let mut consumer = self
            .queue
            .consume(NonZeroU16::new(50).unwrap())
            .await
            .unwrap();
        let mut jobs = Vec::new();
        for _ in 0..count {
            let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
                .await
                .expect("a job within 10 s")
                .unwrap();
            jobs.push(delivery.job().unwrap().clone());
            delivery.ack().await.unwrap();
        }
        jobs
    }

    /// On the real broker: takes the next message straight from the queue, as the broker holds
    /// it: its job, delivery mode and per-message expiration (ms). `None` in-process.
    pub async fn take_raw(&self) -> Option<(DeployJob, Option<u8>, u64)> {
        let topology = &self.broker.as_ref()?.0;
        let url = format!("{}/{}", amqp_url(), topology.vhost);
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let message = channel
            .basic_get(
                topology.queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
            .expect("a message in the queue");
        let properties = &message.delivery.properties;
        let expiration = properties
            .expiration()
            .as_ref()
            .expect("a per-message expiration")
            .as_str()
            .parse()
            .unwrap();
        let job = DeployJob::decode(&message.delivery.data).unwrap();
        let mode = *properties.delivery_mode();
        let _ = connection.close(200, "done".into()).await;
        Some((job, mode, expiration))
    }

    /// The broker topology of a harness on the real backends.
    pub fn topology(&self) -> Option<&Topology> {
        self.broker.as_ref().map(|b| &b.0)
    }

    /// On the real broker: removes (`bound = false`) or restores the binding of the queue to
    /// the exchange, so publishes become unroutable or routable again.
    pub async fn set_bound(&self, bound: bool) {
        let topology = self.topology().expect("a real broker");
        let url = format!("{}/{}", amqp_url(), topology.vhost);
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let (queue, exchange, key) = (
            topology.queue.as_str().into(),
            topology.exchange.as_str().into(),
            topology.routing_key.as_str().into(),
        );
        if bound {
            channel
                .queue_bind(queue, exchange, key, Default::default(), Default::default())
                .await
                .unwrap();
        } else {
            channel
                .queue_unbind(queue, exchange, key, Default::default())
                .await
                .unwrap();
        }
        let _ = connection.close(200, "done".into()).await;
    }

    /// Jobs waiting in the queue.
    pub async fn ready_jobs(&self) -> u32 {
        self.queue.stats().await.unwrap().ready
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Asserts the one error shape with `kind` and `status`.
    pub fn assert_error(&self, status: StatusCode, kind: &str) {
        assert_eq!(self.status, status, "{:?}", self.body);
        assert_eq!(self.body["success"], Value::Bool(false), "{:?}", self.body);
        assert_eq!(self.body["error"], kind, "{:?}", self.body);
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{:?}",
            self.body
        );
        assert_eq!(self.headers[http::header::CONTENT_TYPE], "application/json");
    }
}

pub fn now_secs() -> u64 {
    fctf_core::clock::unix_now_secs()
}

pub fn now_ms() -> u64 {
    fctf_core::clock::unix_now_millis()
}

/// A POST of `body` to `path` signed with the test key at `at` (unix seconds).
pub fn signed_request(path: &str, body: &[u8], at: u64) -> Request<Body> {
    signed_with(&signing_key(), path, body, at, &signing::new_nonce())
}

pub fn signed_with(
    key: &SigningKey,
    path: &str,
    body: &[u8],
    at: u64,
    nonce: &str,
) -> Request<Body> {
    let headers = signing::sign(key, "POST", path, body, at, nonce).unwrap();
    let mut request = Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json");
    for (name, value) in headers.pairs() {
        request = request.header(name, value);
    }
    request.body(Body::from(body.to_vec())).unwrap()
}

pub fn spec() -> DeploySpec {
    DeploySpec {
        challenge_name: "Baby Web".to_owned(),
        image: Some("registry.local/ctf/baby-web:1".to_owned()),
        command: None,
        container_port: 3333,
        cpu_millicores: 250,
        memory_mib: 128,
        use_gvisor: false,
        harden: true,
        lifetime_secs: 3600,
        env: [("FLAG".to_owned(), "FCTF{test}".to_owned())].into(),
    }
}

pub fn key(team: i64, challenge: i64) -> InstanceKey {
    InstanceKey {
        team: TeamId(team),
        challenge: ChallengeId(challenge),
    }
}

pub fn start_request(key: InstanceKey, quota: u32) -> StartRequest {
    StartRequest {
        key,
        quota,
        spec: spec(),
        contest_ends_at_ms: None,
    }
}

// ---- RabbitMQ isolation ----

/// A topology with names no other test uses, in the `fctf_deploy` vhost.
pub fn unique_topology(test: &str, max_length: u32) -> Topology {
    let prefix = unique(test);
    Topology {
        exchange: format!("{prefix}exchange"),
        queue: format!("{prefix}queue"),
        dead_letter_exchange: format!("{prefix}dlx"),
        parked_queue: format!("{prefix}parked"),
        max_length,
        parked_max_length: 100,
        ..Topology::default()
    }
}

/// Deletes a topology's exchanges and queues when dropped (on its own thread and runtime, so it
/// works from a failing test too).
pub struct BrokerCleanup(pub Topology);

impl Drop for BrokerCleanup {
    fn drop(&mut self) {
        let topology = self.0.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(delete_topology(&topology));
        });
        let _ = cleanup.join();
    }
}

async fn delete_topology(topology: &Topology) {
    let url = format!("{}/{}", amqp_url(), topology.vhost);
    let Ok(connection) = Connection::connect(&url, ConnectionProperties::default()).await else {
        return;
    };
    for queue in [&topology.queue, &topology.parked_queue] {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    for exchange in [&topology.exchange, &topology.dead_letter_exchange] {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "test cleanup".into()).await;
}

// ---- a TCP proxy the test can close, so "the broker is down" needs no shared server stopped ----

/// Relays a loopback port to an upstream until [`Proxy::close`]: then the port is closed and
/// every relayed connection dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    acceptor: JoinHandle<()>,
    relays: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relays: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let upstream = upstream.to_owned();
        let handles = Arc::clone(&relays);
        let acceptor = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let relay = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                handles.lock().unwrap().push(relay);
            }
        });
        Proxy {
            addr,
            acceptor,
            relays,
        }
    }

    /// Closes the port (the listener is dropped) and every relayed connection.
    pub async fn close(&self) {
        self.acceptor.abort();
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
        // The aborted acceptor drops its listener at its next poll; wait until the port refuses.
        for _ in 0..100 {
            if TcpStream::connect(self.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the proxy port stayed open");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }
}
