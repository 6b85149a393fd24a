//! The config sections and their fields: the one place a field is declared. Its doc comment is
//! its description in `docs/configuration.md` and in `fctf.example.toml`; its default, type,
//! rule and environment variable are taken from here too.
//!
//! To add a field: add one line (with its doc comment) to its section below, then run
//! `fctf config-docs > docs/configuration.md` and `fctf config-docs --example > fctf.example.toml`
//! (tests fail until both files match).

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::error::ErrorKind;
use super::schema::{FieldCx, Problem, Render, Rule, Setting, config_section, toml_string};
use super::tls::{CertChain, PemFile, PrivateKey};
use super::values::{
    KeyEntry, KeyId, ListenAddr, Name, QueueBackend, Range, ServiceUrl, StoreBackend, Url,
};
use crate::signing::{self, SigningKey};
use crate::token::{self, Keyring, TokenKey, Verifier};

config_section! {
    /// Challenge access tokens: the keys that sign them (Contestant Service) and verify them
    /// (gateway), and how long they last. Keys rotate by id: add the new key everywhere, make it
    /// active, and remove the old one once its last tokens have expired (`ttl_secs` later).
    pub struct TokensConfig in "tokens" {
        /// Id of the key that signs new tokens; must name one of `keys`. The other keys still
        /// verify tokens until they are removed.
        active_kid: String = "k1".to_owned(), check KeyId;
        /// Token keys, each `{ kid = "...", secret_file = "..." }` (a file of at least 32 bytes;
        /// trailing whitespace is trimmed) or `{ kid = "...", secret = "..." }` (inline:
        /// discouraged, the config then holds a secret). Required unless `store.backend` and
        /// `queue.backend` are both `memory` (the embedded default, one process), where a random
        /// key is generated at each start.
        keys: Vec<KeyEntry<TokenKey>> = Vec::new(),
            example "[{ kid = \"k1\", secret_file = \"/etc/fctf/token-k1.key\" }]";
        /// How far the verifier's clock may be from the issuer's, in seconds, before a token
        /// counts as expired or not yet valid.
        skew_secs: u64 = 30, check Range(0, 300);
        /// Lifetime of a token issued to a player, in seconds.
        ttl_secs: u64 = 3600, check Range(1, 7 * 24 * 3600);
    }
}

impl TokensConfig {
    /// The key that signs new tokens. Always `Some` in a config returned by
    /// [`load`](super::load), which refuses an `active_kid` that names no key.
    pub fn active_key(&self) -> Option<&TokenKey> {
        self.keys
            .iter()
            .find(|entry| entry.kid() == self.active_kid)
            .map(KeyEntry::key)
    }

    /// Every configured key, for verifying.
    pub fn keyring(&self) -> Result<Keyring, token::KeyError> {
        Keyring::new(self.keys.iter().map(|entry| entry.key().clone()).collect())
    }

    /// A verifier with every key and the configured skew.
    pub fn verifier(&self) -> Result<Verifier, token::KeyError> {
        Ok(Verifier::new(self.keyring()?, self.skew()))
    }

    /// [`Self::skew_secs`] as a duration.
    pub fn skew(&self) -> Duration {
        Duration::from_secs(self.skew_secs)
    }

    /// [`Self::ttl_secs`] as a duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs)
    }
}

config_section! {
    /// Service-to-service request signatures: every call into the Deployment Center is signed
    /// with the active key and checked against all keys. Keys rotate like token keys.
    pub struct SigningConfig in "signing" {
        /// Id of the key that signs requests; must name one of `keys`.
        active_kid: String = "s1".to_owned(), check KeyId;
        /// Signing keys, each `{ kid, secret_file }` or `{ kid, secret }`, with the same rules
        /// as `tokens.keys` (and also generated when absent in the embedded default). Use
        /// secrets other than the token keys'.
        keys: Vec<KeyEntry<SigningKey>> = Vec::new(),
            example "[{ kid = \"s1\", secret_file = \"/etc/fctf/signing-s1.key\" }]";
        /// How far a request's timestamp may be from the receiver's clock, in seconds, in
        /// either direction. Nonces are remembered for twice this long to refuse replays.
        window_secs: u64 = 60, check Range(1, 3600);
    }
}

impl SigningConfig {
    /// The key that signs requests. Always `Some` in a config returned by
    /// [`load`](super::load).
    pub fn active_key(&self) -> Option<&SigningKey> {
        self.keys
            .iter()
            .find(|entry| entry.kid() == self.active_kid)
            .map(KeyEntry::key)
    }

    /// Every configured key, for verifying.
    pub fn key_ring(&self) -> Result<signing::KeyRing, signing::KeyError> {
        signing::KeyRing::new(self.keys.iter().map(|entry| entry.key().clone()))
    }

    /// [`Self::window_secs`] as a duration.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }
}

config_section! {
    /// The state store: deployment state, team quotas, rate limits, connection leases, locks.
    pub struct StoreConfig in "store" {
        /// `memory` keeps state in this process (one process only: `fctf up`); `redis` shares
        /// it between every process of a deployment.
        backend: StoreBackend = StoreBackend::Memory;
        /// Redis to use when `backend = "redis"`.
        redis_url: ServiceUrl = ServiceUrl::new("redis://127.0.0.1:6379"),
            check Url(&["redis", "rediss"]);
        /// Prefix of every Redis key, so several deployments can share one Redis.
        key_prefix: String = "fctf:".to_owned(), check Name { max: 64, allow_empty: true };
        /// How long one Redis call may take, in milliseconds, before it counts as failed.
        timeout_ms: u64 = 500, check Range(1, 60_000);
    }
}

impl StoreConfig {
    /// [`Self::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

config_section! {
    /// The deploy queue between the Deployment Center and the Deployment Consumer.
    pub struct QueueConfig in "queue" {
        /// `memory` keeps the queue in this process (one process only: `fctf up`); `rabbitmq`
        /// uses RabbitMQ.
        backend: QueueBackend = QueueBackend::Memory;
        /// RabbitMQ to use when `backend = "rabbitmq"`, without the vhost (see `vhost`).
        amqp_url: ServiceUrl = ServiceUrl::new("amqp://guest:guest@127.0.0.1:5672"),
            check Url(&["amqp", "amqps"]);
        /// RabbitMQ virtual host of the deploy topology.
        vhost: String = "fctf_deploy".to_owned(), check Name { max: 255, allow_empty: false };
        /// Direct exchange deploy jobs are published to.
        exchange: String = "deployment_exchange".to_owned(),
            check Name { max: 255, allow_empty: false };
        /// Routing key binding `exchange` to `queue`.
        routing_key: String = "deploy".to_owned(), check Name { max: 255, allow_empty: false };
        /// Durable queue the Deployment Consumer reads.
        queue: String = "deployment_queue".to_owned(), check Name { max: 255, allow_empty: false };
        /// Most jobs waiting in the queue; a publish beyond it is refused (`reject-publish`) and
        /// the player is told to retry.
        max_length: u32 = 300, check Range(1, 1_000_000);
        /// How long a publish may wait for the broker's confirm, in milliseconds.
        publish_timeout_ms: u64 = 3000, check Range(1, 600_000);
        /// How many times a job is delivered before it goes to the dead-letter queue.
        delivery_limit: u32 = 5, check Range(1, 1000);
    }
}

impl QueueConfig {
    /// [`Self::publish_timeout_ms`] as a duration.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }
}

config_section! {
    /// The database: teams, challenges, solves, instance tracking.
    pub struct DatabaseConfig in "database" {
        /// `sqlite://PATH` (a file, created when missing: the embedded default) or
        /// `mysql://USER[:PASSWORD]@HOST:PORT/DB` for MariaDB in production, e.g.
        /// `mysql://root@127.0.0.1:3306/test`.
        url: ServiceUrl = ServiceUrl::new("sqlite://data/fctf.db"),
            check Url(&["sqlite", "mysql", "mariadb"]);
        /// Most open connections in each process's pool.
        max_connections: u32 = 16, check Range(1, 1024);
    }
}

config_section! {
    /// The Challenge Gateway: its listeners, where namespace routes lead, and its limits. Rates
    /// are per second with a burst (the bucket size); the defaults are the original system's
    /// production values.
    pub struct GatewayConfig in "gateway" {
        /// Address of the HTTP listener (`IP:PORT`).
        http_listen: String = "0.0.0.0:8080".to_owned(), check ListenAddr;
        /// Address of the TCP listener (`IP:PORT`).
        tcp_listen: String = "0.0.0.0:1337".to_owned(), check ListenAddr;
        /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`); keep it on
        /// loopback or a private network.
        admin_listen: String = "127.0.0.1:9100".to_owned(), check ListenAddr;
        /// Cluster DNS domain of namespace routes: a route `ns` leads to
        /// `ns-svc.ns.<cluster_domain>:<namespace_port>`.
        cluster_domain: String = "svc.cluster.local".to_owned(),
            check Name { max: 200, allow_empty: false };
        /// Port of a namespace route's service.
        namespace_port: u16 = 3333, check Range(1, 65535);
        /// HTTP requests per second allowed to one token from one client address.
        http_token_ip_per_sec: u32 = 100, check Range(1, 1_000_000);
        /// Burst of `http_token_ip_per_sec`.
        http_token_ip_burst: u32 = 200, check Range(1, 10_000_000);
        /// HTTP requests per second allowed to one client address, all tokens together.
        http_ip_per_sec: u32 = 500, check Range(1, 1_000_000);
        /// Burst of `http_ip_per_sec`.
        http_ip_burst: u32 = 1000, check Range(1, 10_000_000);
        /// Largest request body, in bytes; a larger one is refused with 413.
        body_limit_bytes: u64 = 10 * 1024 * 1024, check Range(0, 1 << 40);
        /// TCP connection attempts per second allowed from one client address.
        tcp_attempts_per_sec: u32 = 50, check Range(1, 1_000_000);
        /// Burst of `tcp_attempts_per_sec`.
        tcp_attempts_burst: u32 = 200, check Range(1, 10_000_000);
        /// Most TCP sessions open through one gateway deployment (all gateways together).
        tcp_connections_global: u32 = 4000, check Range(1, 10_000_000);
        /// Most TCP sessions open from one client address.
        tcp_connections_per_ip: u32 = 1000, check Range(1, 10_000_000);
        /// Most TCP sessions open with one token.
        tcp_connections_per_token: u32 = 15, check Range(1, 100_000);
        /// How long a TCP client may take to send its token line, in milliseconds.
        tcp_auth_timeout_ms: u64 = 10_000, check Range(100, 600_000);
        /// How long the gateway trusts what it read about an instance's state, in milliseconds;
        /// a stopped or replaced instance stops being reachable at most this long after.
        route_cache_ms: u64 = 2000, check Range(0, 60_000);
        /// How long a connection to an instance may take to open, in milliseconds.
        connect_timeout_ms: u64 = 3000, check Range(1, 60_000);
        /// What limits do while the state store is unreachable: `local` (fall back to this
        /// gateway's own limits, counted in metrics) or `closed` (refuse with 503).
        store_outage: String = "local".to_owned(), check OneOf(&["local", "closed"]);
        /// Networks of the proxies in front of the gateway (CIDRs or single addresses, e.g.
        /// `["10.0.0.0/8"]`). Only a peer in one of them may name the client in
        /// `X-Forwarded-For`: the client is then its right-most address outside them. Empty:
        /// the client is always the TCP peer.
        trusted_proxies: Vec<IpNet> = Vec::new();
        /// How long in-flight requests and TCP sessions may continue after a graceful stop
        /// (SIGTERM), in seconds, before they are cut.
        drain_secs: u64 = 5, check Range(0, 3600);
        /// How long a request or TCP connection for an instance that is still starting (queued
        /// or deploying) is held, in milliseconds, waiting for it to run; after that it is
        /// answered 503 with `Retry-After` (TCP: one refusal line). 0 answers at once.
        starting_hold_ms: u64 = 3000, check Range(0, 30_000);
        /// Wildcard host suffix of HTTP instances, e.g. `inst.example.org`: each instance is then
        /// reached at `<instance-id>.<suffix>` with a cookie of its own, so several instances
        /// work in one browser, and a token opens only its own instance's host. Empty: one host
        /// for every instance, whose cookie holds the last instance visited.
        instance_host_suffix: String = String::new(),
            check Name { max: 200, allow_empty: true };
        /// Send a PROXY protocol v2 header to the instance at the start of every TCP session, so
        /// the challenge sees the player's address (the challenge must expect it).
        proxy_protocol: bool = false;
        /// PEM file of the gateway's TLS certificate chain (server certificate first, then its
        /// intermediates). Set with `tls_key_file`, the HTTP and the TCP port both also accept
        /// TLS: a connection that opens with a TLS ClientHello is served over TLS, any other in
        /// plain text, on the same port. Read at start (a new certificate needs a restart); a
        /// relative path is relative to the config file. Unset: no TLS.
        tls_cert_file: PemFile<CertChain> = PemFile::unset(),
            example "\"/etc/fctf/tls/fullchain.pem\"";
        /// PEM file of the private key of `tls_cert_file` (PKCS#8, PKCS#1 or SEC1, unencrypted);
        /// required with it.
        tls_key_file: PemFile<PrivateKey> = PemFile::unset(),
            example "\"/etc/fctf/tls/key.pem\"";
        /// With TLS: how long the TCP port waits for a client's first byte, in milliseconds,
        /// before it takes the connection as plain text and sends the prompt (`nc` sends nothing
        /// first; a TLS client sends its ClientHello at once).
        tls_detect_ms: u64 = 250, check Range(10, 10_000);
        /// With TLS: how long a client may take from its first byte to the end of the TLS
        /// handshake, in milliseconds, before its connection is closed.
        tls_handshake_timeout_ms: u64 = 10_000, check Range(100, 600_000);
    }
}

impl GatewayConfig {
    /// [`Self::route_cache_ms`] as a duration.
    pub fn route_cache(&self) -> Duration {
        Duration::from_millis(self.route_cache_ms)
    }

    /// [`Self::tcp_auth_timeout_ms`] as a duration.
    pub fn tcp_auth_timeout(&self) -> Duration {
        Duration::from_millis(self.tcp_auth_timeout_ms)
    }

    /// [`Self::connect_timeout_ms`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// True when limits refuse traffic while the state store is unreachable
    /// (`store_outage = "closed"`).
    pub fn fail_closed(&self) -> bool {
        self.store_outage == "closed"
    }

    /// [`Self::drain_secs`] as a duration.
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }

    /// [`Self::starting_hold_ms`] as a duration.
    pub fn starting_hold(&self) -> Duration {
        Duration::from_millis(self.starting_hold_ms)
    }
}

/// A list of networks: each a CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address (a /32 or
/// /128). A CIDR with bits set after its prefix is refused, since it usually means a typo.
impl Setting for Vec<IpNet> {
    const TYPE: &'static str = "array of strings";
    const ENV_IS_TEXT: bool = false;

    fn parse(value: &toml::Value, cx: &mut FieldCx<'_>) -> Option<Self> {
        let Some(items) = value.as_array() else {
            cx.wrong_type("", "an array of strings", value);
            return None;
        };
        let mut nets = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let at = format!("[{i}]");
            let Some(text) = item.as_str() else {
                cx.wrong_type(&at, "a string", item);
                ok = false;
                continue;
            };
            match parse_net(text) {
                Ok(net) => nets.push(net),
                Err(problem) => {
                    cx.report_at(&at, problem);
                    ok = false;
                }
            }
        }
        ok.then_some(nets)
    }

    fn render(&self, _: Render) -> Option<String> {
        let nets: Vec<String> = self.iter().map(|n| toml_string(&n.to_string())).collect();
        Some(format!("[{}]", nets.join(", ")))
    }
}

/// One network of a list: a CIDR with no host bits, or a single address.
fn parse_net(text: &str) -> Result<IpNet, Problem> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    let net: IpNet = text.parse().map_err(|_| {
        Problem::new(
            ErrorKind::InvalidValue,
            format!("expected a CIDR such as \"10.0.0.0/8\" or an IP address, got {text:?}"),
        )
    })?;
    if net.trunc() != net {
        return Err(Problem::new(
            ErrorKind::InvalidValue,
            format!("{text:?} has bits set after its prefix"),
        )
        .hint(format!("did you mean \"{}\"?", net.trunc())));
    }
    Ok(net)
}

/// A string field that must be one of a few words.
struct OneOf(&'static [&'static str]);

impl Rule<String> for OneOf {
    fn check(&self, value: &String) -> Result<(), Problem> {
        if self.0.contains(&value.as_str()) {
            Ok(())
        } else {
            Err(Problem::new(
                ErrorKind::InvalidValue,
                format!("must be one of {}, got {value:?}", self.describe()),
            ))
        }
    }

    fn describe(&self) -> String {
        self.0
            .iter()
            .map(|word| format!("`{word}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
