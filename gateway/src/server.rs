//! Running the gateway: one Pingora server with the HTTP gateway, the TCP gateway and the admin
//! port, built from the config.
//!
//! - [`run_from_config`]: `fctf gateway -c fctf.toml` in one call (opens the store, serves until
//!   a signal).
//! - [`GatewayOptions::from_config`] turns `[gateway]` and `[tokens]` into options (with TLS on
//!   the HTTP and TCP listeners when `[gateway]` names a certificate: [`crate::tls`]).
//! - [`run`] serves until SIGTERM (graceful), SIGINT (fast) or SIGQUIT (graceful upgrade):
//!   `fctf gateway`.
//! - [`spawn`] serves on a thread of its own until the returned [`GatewayHandle`] is stopped or
//!   dropped: tests and the all-in-one `fctf up`.
//!
//! Pingora gives every service its own Tokio runtime. A [`StateStore`] that holds connections
//! (Redis) must therefore be created on a runtime that outlives the gateway; see
//! [`StoreRuntime`].

use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fctf_core::config::{Config, StoreBackend};
use fctf_core::store::{MemoryStore, RateLimit, RedisStore, StateStore, StoreError};
use pingora::apps::ServerApp;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::{
    Fds, ListenFds, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch,
};
use pingora::services::Service;
use tokio::sync::watch;

use crate::admin::{AdminApp, Metrics};
use crate::admission::{Admission, AdmissionSettings};
use crate::client::TrustedProxies;
use crate::cut::CuttableApp;
use crate::host::InstanceHosts;
use crate::http::{HttpGateway, HttpLimits, HttpSettings};
use crate::routing::Routing;
use crate::tcp::{TcpCaps, TcpGateway, TcpSettings};
use crate::tls::{TlsApp, TlsError, TlsListener};

/// A name for this gateway process in lease holders: host name (when known), process id and
/// start time, so two processes never share one.
pub fn gateway_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{host}:{}:{}",
        std::process::id(),
        fctf_core::clock::unix_now_millis()
    )
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The token keys could not form a verifier.
    #[error("token keys: {0}")]
    Keys(#[from] fctf_core::token::KeyError),
    /// A listener could not be prepared.
    #[error("listener {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The state store could not be opened.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// The runtime that holds the store's connections could not start.
    #[error("store runtime: {0}")]
    Runtime(std::io::Error),
    /// The TLS certificate and key could not form a TLS config.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl GatewayError {
    /// True when the config is at fault (keys, TLS certificate), not the machine: `fctf`
    /// exits 64 for these.
    pub fn is_config(&self) -> bool {
        matches!(self, GatewayError::Keys(_) | GatewayError::Tls(_))
    }
}

/// Where a listener listens.
#[derive(Debug)]
pub enum Listen {
    /// Bind this `host:port` (production; supports Pingora's graceful upgrade).
    Addr(String),
    /// Use this already-bound socket (tests on port 0, or a caller that binds itself).
    Bound(std::net::TcpListener),
    /// This listener, also accepting TLS ([`crate::tls`]): a connection that opens with a TLS
    /// ClientHello is served over TLS, any other in plain text. For the HTTP and TCP listeners;
    /// the admin listener ignores the TLS part.
    WithTls(Box<Listen>, TlsListener),
}

impl Listen {
    /// This listener, also accepting TLS as `tls` says.
    pub fn with_tls(self, tls: TlsListener) -> Listen {
        Listen::WithTls(Box::new(self.without_tls().0), tls)
    }

    /// The TLS part of this listener, if any.
    pub fn tls(&self) -> Option<&TlsListener> {
        match self {
            Listen::WithTls(_, tls) => Some(tls),
            _ => None,
        }
    }

    /// The address, when it is known before binding.
    fn known_addr(&self) -> Option<SocketAddr> {
        match self {
            Listen::Bound(listener) => listener.local_addr().ok(),
            Listen::Addr(addr) => addr.parse().ok(),
            Listen::WithTls(listen, _) => listen.known_addr(),
        }
    }

    /// Where to listen, and the TLS part if any.
    fn without_tls(self) -> (Listen, Option<TlsListener>) {
        match self {
            Listen::WithTls(listen, tls) => (listen.without_tls().0, Some(tls)),
            plain => (plain, None),
        }
    }
}

/// Everything [`run`] and [`spawn`] need.
#[derive(Debug)]
pub struct GatewayOptions {
    /// The HTTP listener.
    pub http: Listen,
    /// The admission checks (token cache, liveness, limits).
    pub admission: Arc<Admission>,
    /// The HTTP gateway's settings.
    pub http_settings: HttpSettings,
    /// The TCP listener; `None` serves HTTP only.
    pub tcp: Option<Listen>,
    /// The TCP gateway's settings.
    pub tcp_settings: TcpSettings,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`); `None` for none.
    pub admin: Option<Listen>,
    /// Worker threads of the HTTP service.
    pub threads: usize,
    /// How long requests and TCP sessions in flight may continue after a graceful stop
    /// (`[gateway] drain_secs`).
    pub grace_period: Duration,
}

impl GatewayOptions {
    /// Options from a loaded config, with `store` for liveness and limits.
    pub fn from_config(config: &Config, store: Arc<dyn StateStore>) -> Result<Self, GatewayError> {
        let gw = &config.gateway;
        let admission = Admission::new(
            config.tokens.verifier()?,
            store,
            AdmissionSettings {
                routing: Routing::new(gw.cluster_domain.clone(), gw.namespace_port),
                route_cache: gw.route_cache(),
                fail_closed: gw.fail_closed(),
                starting_hold: gw.starting_hold(),
            },
        );
        let rate = |per_second: u32, burst: u32| RateLimit {
            per_second: f64::from(per_second),
            burst,
        };
        let mut http = Listen::Addr(gw.http_listen.clone());
        let mut tcp = Listen::Addr(gw.tcp_listen.clone());
        if let Some(identity) = gw.tls_identity() {
            let handshake = gw.tls_handshake_timeout();
            http = http.with_tls(TlsListener::http(&identity, handshake)?);
            tcp = tcp.with_tls(TlsListener::tcp(&identity, gw.tls_detect(), handshake)?);
        }
        Ok(GatewayOptions {
            http,
            admission: Arc::new(admission),
            http_settings: HttpSettings {
                limits: HttpLimits {
                    token_ip: rate(gw.http_token_ip_per_sec, gw.http_token_ip_burst),
                    ip: rate(gw.http_ip_per_sec, gw.http_ip_burst),
                },
                body_limit: gw.body_limit_bytes,
                connect_timeout: gw.connect_timeout(),
                // TLS is told per connection (`tls::is_tls`): one port serves both.
                tls: false,
                trusted_proxies: TrustedProxies::new(gw.trusted_proxies.clone()),
                instance_hosts: InstanceHosts::new(&gw.instance_host_suffix),
            },
            tcp: Some(tcp),
            admin: Some(Listen::Addr(gw.admin_listen.clone())),
            tcp_settings: TcpSettings {
                attempts: rate(gw.tcp_attempts_per_sec, gw.tcp_attempts_burst),
                caps: TcpCaps {
                    global: gw.tcp_connections_global,
                    per_ip: gw.tcp_connections_per_ip,
                    per_token: gw.tcp_connections_per_token,
                },
                auth_timeout: gw.tcp_auth_timeout(),
                connect_timeout: gw.connect_timeout(),
                gateway_id: gateway_id(),
                proxy_protocol: gw.proxy_protocol,
                lease_ttl: crate::tcp::LEASE_TTL,
                liveness_recheck: crate::tcp::LIVENESS_RECHECK,
            },
            threads: 1,
            grace_period: gw.drain(),
        })
    }
}

/// A state store and the runtime its connections live on. Keep it alive as long as the gateway.
#[derive(Debug)]
pub struct StoreRuntime {
    /// The store.
    pub store: Arc<dyn StateStore>,
    // Dropping the runtime would close the store's connections.
    _runtime: Option<tokio::runtime::Runtime>,
}

impl StoreRuntime {
    /// The store `[store]` names: in-process, or Redis (connected lazily, so the gateway starts
    /// and falls back while Redis is down).
    pub fn open(config: &Config) -> Result<Self, GatewayError> {
        match config.store.backend {
            StoreBackend::Memory => Ok(StoreRuntime {
                store: Arc::new(MemoryStore::new()),
                _runtime: None,
            }),
            StoreBackend::Redis => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("gateway-store")
                    .enable_all()
                    .build()
                    .map_err(GatewayError::Runtime)?;
                let store = runtime.block_on(async {
                    RedisStore::connect_lazy(
                        config.store.redis_url.as_str(),
                        &config.store.key_prefix,
                        config.store.timeout(),
                    )
                })?;
                Ok(StoreRuntime {
                    store: Arc::new(store),
                    _runtime: Some(runtime),
                })
            }
        }
    }
}

/// Serves until a signal stops the process: SIGTERM drains gracefully, SIGINT stops at once,
/// SIGQUIT hands the listeners to a new process (`--upgrade`). Blocks the calling thread.
pub fn run(options: GatewayOptions) -> Result<(), GatewayError> {
    let server = build(options)?;
    server.run(RunArgs::default());
    Ok(())
}

/// Opens the store `config` names and serves the gateway until a signal stops the process
/// (see [`run`]): the whole of `fctf gateway`.
pub fn run_from_config(config: &Config) -> Result<(), GatewayError> {
    let store = StoreRuntime::open(config)?;
    let options = GatewayOptions::from_config(config, store.store.clone())?;
    let result = run(options);
    // The store's runtime lives until the server has stopped.
    drop(store);
    result
}

/// How a spawned gateway is asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopKind {
    /// At once (SIGINT).
    Fast,
    /// Stop accepting, let what is in flight continue for the drain period (SIGTERM).
    Drain,
}

/// A gateway serving on its own thread; stops (fast) when stopped or dropped.
#[derive(Debug)]
pub struct GatewayHandle {
    stop: watch::Sender<Option<StopKind>>,
    join: Option<std::thread::JoinHandle<()>>,
    http_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
}

impl GatewayHandle {
    /// The admin listener's address, when it is known before binding.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The TCP listener's address, when it is known before binding.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The HTTP listener's address, when it is known before binding (a bound socket, or a
    /// literal `ip:port`).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Stops the gateway and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown(StopKind::Fast);
    }

    /// Stops the gateway as SIGTERM does: no new connection is accepted, requests and TCP
    /// sessions in flight continue for the drain period (`[gateway] drain_secs`), then end.
    /// Blocks until the gateway has stopped.
    pub fn drain(mut self) {
        self.shutdown(StopKind::Drain);
    }

    fn shutdown(&mut self, kind: StopKind) {
        // Err only when the server thread is already gone. A second request does not change
        // the first.
        self.stop.send_if_modified(|stop| {
            let unset = stop.is_none();
            if unset {
                *stop = Some(kind);
            }
            unset
        });
        if let Some(join) = self.join.take()
            && join.join().is_err()
        {
            tracing::error!("gateway thread panicked");
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        self.shutdown(StopKind::Fast);
    }
}

/// Starts the gateway on a thread of its own. Listeners given as [`Listen::Bound`] accept at
/// once; [`Listen::Addr`] ones once Pingora has bound them.
pub fn spawn(options: GatewayOptions) -> Result<GatewayHandle, GatewayError> {
    let http_addr = options.http.known_addr();
    let tcp_addr = options.tcp.as_ref().and_then(Listen::known_addr);
    let admin_addr = options.admin.as_ref().and_then(Listen::known_addr);
    let server = build(options)?;
    let (stop, stopped) = watch::channel(None);
    let join = std::thread::Builder::new()
        .name("gateway".to_owned())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(StopSignal(stopped)),
            })
        })
        .map_err(GatewayError::Runtime)?;
    Ok(GatewayHandle {
        stop,
        join: Some(join),
        http_addr,
        tcp_addr,
        admin_addr,
    })
}

/// The Pingora server with the gateway's services.
fn build(options: GatewayOptions) -> Result<Server, GatewayError> {
    let conf = ServerConf {
        threads: options.threads.max(1),
        // Pingora's no-steal runtime finds its pool through a `thread_local::ThreadLocal`, whose
        // slots outlive their threads: a second server in one process (tests, a restart in
        // `fctf up`) inherits the first one's dead pool and its services exit at once.
        work_stealing: true,
        // TCP sessions end when the drain period is over (and release their leases); the extra
        // second lets those releases reach the store before the runtimes are dropped.
        grace_period_seconds: Some(options.grace_period.as_secs_f64().ceil() as u64 + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        // Above the peak of concurrent upstream connections, so the pool does not churn.
        upstream_keepalive_pool_size: 1024,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let gateway = HttpGateway::new(options.admission.clone(), options.http_settings)
        .with_liveness_recheck(options.tcp_settings.liveness_recheck);
    let http_counters = gateway.counters().clone();
    // Cuttable connections: an upgraded one (WebSocket) is cut when its instance stops. With
    // TLS, the cuttable stream is the one inside TLS, the one Pingora's session holds (which is
    // where `cut::switch_of` looks); a cut ends the session, which drops TLS and the socket.
    let http = CuttableApp::new(pingora::proxy::http_proxy(&server.configuration, gateway));
    add_app(
        &mut server,
        "Pingora HTTP Proxy Service",
        http,
        options.http,
        |addr: &str| ListenerConfig::tcp(addr),
    )?;
    let mut tcp_counters = None;
    if let Some(listen) = options.tcp {
        let gateway = TcpGateway::new(options.admission.clone(), options.tcp_settings)
            .with_drain(options.grace_period);
        tcp_counters = Some(gateway.counters().clone());
        add_app(&mut server, "TCP gateway", gateway, listen, |addr| {
            // Unbuffered: no 64 KiB read buffer per idle session, and every write goes out.
            ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::unbuffered())
        })?;
    }
    if let Some(listen) = options.admin {
        let metrics = Metrics::new(options.admission, http_counters, tcp_counters);
        let draining = metrics.draining().clone();
        let mut admin =
            pingora::services::listening::Service::new("admin".to_owned(), AdminApp::new(metrics));
        admin.threads = Some(1);
        // The admin port answers through the drain, so `/readyz` can say 503.
        let (listen, _no_tls) = listen.without_tls();
        add_listening(&mut server, admin, listen, Some(draining), |addr: &str| {
            ListenerConfig::tcp(addr)
        })?;
    }
    Ok(server)
}

/// Adds a service named `name` serving `app` on `listen` (wrapped in a [`TlsApp`] when `listen`
/// has TLS); `listener` is the listener's config for an address.
fn add_app<A: ServerApp + Send + Sync + 'static>(
    server: &mut Server,
    name: &str,
    app: A,
    listen: Listen,
    listener: impl FnOnce(&str) -> ListenerConfig,
) -> Result<(), GatewayError> {
    use pingora::services::listening::Service;
    match listen.without_tls() {
        (listen, Some(tls)) => {
            let service = Service::new(name.to_owned(), TlsApp::new(app, tls));
            add_listening(server, service, listen, None, listener)
        }
        (listen, None) => {
            let service = Service::new(name.to_owned(), app);
            add_listening(server, service, listen, None, listener)
        }
    }
}

/// Adds `service` listening on `listen` (its TLS part, if any, already taken: see [`add_app`]);
/// `listener` is the listener's config for an address. With `draining`, the service keeps
/// serving through a graceful stop and the flag tells it one began.
fn add_listening<A: ServerApp + Send + Sync + 'static>(
    server: &mut Server,
    mut service: pingora::services::listening::Service<A>,
    listen: Listen,
    draining: Option<Arc<AtomicBool>>,
    listener: impl FnOnce(&str) -> ListenerConfig,
) -> Result<(), GatewayError> {
    let fds = match listen {
        Listen::Addr(addr) => {
            service.add_listener(listener(&addr));
            None
        }
        Listen::Bound(listener_socket) => {
            let (fds, addr) = prebound_fds(listener_socket)?;
            service.add_listener(listener(&addr));
            Some(fds)
        }
        // Not reached from `add_app`, which takes the TLS part off.
        Listen::WithTls(listen, _) => {
            return add_listening(server, service, *listen, draining, listener);
        }
    };
    server.add_service(Listening {
        inner: service,
        fds,
        draining,
    });
    Ok(())
}

/// A Pingora service, with two optional changes to how it starts.
///
/// - `fds`: its listener is a socket bound before the server started. Pingora looks listeners
///   up by their address string in the fd table it hands each service; this hands the service
///   a table holding its own socket under that string.
/// - `draining`: it does not stop at a graceful stop (its runtime ends with the server's);
///   instead the flag is set when the stop begins (the admin port's `/readyz`).
struct Listening<S> {
    inner: S,
    fds: Option<ListenFds>,
    draining: Option<Arc<AtomicBool>>,
}

impl<S> std::fmt::Debug for Listening<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listening").finish_non_exhaustive()
    }
}

/// An fd table holding `listener` under its address string, and that string.
fn prebound_fds(listener: std::net::TcpListener) -> Result<(ListenFds, String), GatewayError> {
    let addr = listener
        .local_addr()
        .map_err(|source| GatewayError::Listen {
            addr: "pre-bound socket".to_owned(),
            source,
        })?
        .to_string();
    // Pingora drives the socket from Tokio, which needs it non-blocking.
    listener
        .set_nonblocking(true)
        .map_err(|source| GatewayError::Listen {
            addr: addr.clone(),
            source,
        })?;
    let mut fds = Fds::new();
    fds.add(addr.clone(), listener.into_raw_fd());
    Ok((Arc::new(parking_lot::Mutex::new(fds)), addr))
}

#[async_trait]
impl<S: Service> Service for Listening<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let fds = self.fds.clone().or(fds);
        let shutdown = match &self.draining {
            None => shutdown,
            Some(draining) => {
                let draining = draining.clone();
                let (keep, kept) = watch::channel(false);
                let mut stop = shutdown;
                tokio::spawn(async move {
                    // Err: the server is gone, and so is this runtime soon.
                    if stop.wait_for(|stop| *stop).await.is_ok() {
                        draining.store(true, Ordering::Relaxed);
                    }
                    // The service's own watch stays open (and false) until the runtime ends.
                    let _keep = keep;
                    std::future::pending::<()>().await;
                });
                kept
            }
        };
        Service::start_service(&mut self.inner, fds, shutdown, listeners_per_fd).await
    }

    fn name(&self) -> &str {
        Service::name(&self.inner)
    }

    fn threads(&self) -> Option<usize> {
        Service::threads(&self.inner)
    }
}

/// Stops a spawned server when its handle says so.
struct StopSignal(watch::Receiver<Option<StopKind>>);

#[async_trait]
impl ShutdownSignalWatch for StopSignal {
    async fn recv(&self) -> ShutdownSignal {
        let mut stopped = self.0.clone();
        // An error means the handle is gone: stop fast as well.
        let kind = stopped
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|stop| *stop);
        match kind {
            Some(StopKind::Drain) => ShutdownSignal::GracefulTerminate,
            _ => ShutdownSignal::FastShutdown,
        }
    }
}
