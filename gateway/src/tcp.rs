//! The TCP gateway: a Pingora [`ServerApp`] that reads a token line, admits the connection and
//! relays it to the instance.
//!
//! On connect, before the prompt and as the original: a per-address attempt limit, then one
//! connection lease in the global scope and one in the client address's; over either, the
//! connection closes silently. Then the prompt at once, the token line (bounded in size and
//! time), verify, liveness (an instance still starting is waited for up to the starting hold),
//! and a lease in the token's scope. The answer is one line: `access granted` or
//! `access denied: <reason>`. Leases are renewed while the session lives (re-asserted if the
//! store lost them) and released when it ends, however it ends. Bytes the client sent right
//! after the token line reach the backend first, after a PROXY protocol v2 header naming the
//! player when that is on. The relay forwards half-closes and ends when both directions are
//! done, at token expiry, when the instance stops being the live one, or at shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fctf_core::store::{LeaseOutcome, LeaseScope, RateLimit, StateStore};
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::access;
use crate::admin::Histogram;
use crate::admission::{Admission, Grant, Refusal, client_key};
use crate::proxy_protocol;
use crate::resolve::Resolver;
use crate::tcp_line::{LineError, read_token_line};

/// The prompt sent on connect.
pub const PROMPT: &[u8] = b"token: ";

/// The answer when the connection is admitted.
pub const GRANTED: &[u8] = b"access granted\n";

/// How long a connection lease lives without renewal by default: a gateway that dies leaks its
/// leases for at most this long. Sessions renew theirs every third of it.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// What one direction of a relay reads into while it waits for data: all an idle session holds
/// (it lives in the session's future), so 10,000 idle sessions cost a few MiB, not the 320 MiB
/// of two 16 KiB buffers each.
const RELAY_SMALL: usize = 512;

/// What a direction reads into while data keeps arriving: allocated when a read fills the small
/// buffer, and freed as soon as a read would wait.
const RELAY_LARGE: usize = 16 * 1024;

/// Connection caps, each counted by leases in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpCaps {
    /// All sessions of the deployment.
    pub global: u32,
    /// Sessions from one client address.
    pub per_ip: u32,
    /// Sessions with one token.
    pub per_token: u32,
}

/// Settings of the TCP gateway.
#[derive(Clone, Debug)]
pub struct TcpSettings {
    /// Connection attempts from one client address.
    pub attempts: RateLimit,
    /// The connection caps.
    pub caps: TcpCaps,
    /// How long the client may take to send its token line.
    pub auth_timeout: Duration,
    /// Longest TCP connect to an instance.
    pub connect_timeout: Duration,
    /// This gateway process's name in lease holders (unique per process).
    pub gateway_id: String,
    /// Send a PROXY protocol v2 header naming the player to the instance first.
    pub proxy_protocol: bool,
    /// How long a connection lease lives without renewal ([`LEASE_TTL`]); renewed every third.
    pub lease_ttl: Duration,
    /// How often a live session checks that its instance is still the live one; a session of
    /// a stopped or replaced instance ends at most this long (plus the route cache) after.
    /// Zero: never ([`LIVENESS_RECHECK`] by default).
    pub liveness_recheck: Duration,
}

/// How often a live session checks its instance by default.
pub const LIVENESS_RECHECK: Duration = Duration::from_secs(5);

/// Counters for metrics; all monotonic except `active_sessions`.
#[derive(Debug, Default)]
pub struct TcpCounters {
    /// Sessions relaying right now.
    pub active_sessions: AtomicU64,
    /// Sessions admitted since start.
    pub sessions: AtomicU64,
    /// Connections refused (any reason, silent closes included).
    pub refused: AtomicU64,
    /// Connections closed silently by the per-address attempt limit.
    pub refused_attempts: AtomicU64,
    /// Connections refused by a full scope, indexed by [`CapScope`].
    pub refused_caps: [AtomicU64; 3],
    /// How long connecting to instances took.
    pub connect_latency: Histogram,
    /// Leases of live sessions found gone at renewal (the store lost them) and taken again.
    pub leases_reasserted: AtomicU64,
    /// Leases of live sessions found gone at renewal that could not be taken again (the scope
    /// had filled up meanwhile, or the store failed); retried at the next renewal.
    pub leases_lost: AtomicU64,
}

/// The scopes connection caps count in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapScope {
    /// Every session of the deployment.
    Global = 0,
    /// Sessions from one client address.
    Ip = 1,
    /// Sessions with one token.
    Token = 2,
}

impl CapScope {
    /// Every scope, in index order.
    pub const ALL: [CapScope; 3] = [CapScope::Global, CapScope::Ip, CapScope::Token];

    /// Metrics label.
    pub fn label(self) -> &'static str {
        match self {
            CapScope::Global => "global",
            CapScope::Ip => "ip",
            CapScope::Token => "token",
        }
    }

    /// The line a client refused in this scope reads (only the token scope answers: the others
    /// close before the prompt).
    fn reason(self) -> &'static str {
        match self {
            CapScope::Global => "the gateway is full, try again later",
            CapScope::Ip => "too many connections from your address",
            CapScope::Token => "too many connections with this token",
        }
    }
}

/// Why a lease was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaseRefusal {
    /// The scope is at its cap.
    Full(CapScope),
    /// The store is unreachable and caps fail closed.
    StoreDown,
}

impl LeaseRefusal {
    /// Metrics and access-log kind.
    fn kind(self) -> &'static str {
        match self {
            LeaseRefusal::Full(CapScope::Global) => "cap_global",
            LeaseRefusal::Full(CapScope::Ip) => "cap_ip",
            LeaseRefusal::Full(CapScope::Token) => "cap_token",
            LeaseRefusal::StoreDown => "store_down",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            LeaseRefusal::Full(scope) => scope.reason(),
            LeaseRefusal::StoreDown => "temporarily unavailable",
        }
    }
}

/// The TCP gateway's logic.
#[derive(Debug)]
pub struct TcpGateway {
    admission: Arc<Admission>,
    resolver: Resolver,
    settings: TcpSettings,
    counters: Arc<TcpCounters>,
    next_holder: AtomicU64,
    local_caps: Arc<LocalCaps>,
    drain: Duration,
}

impl TcpGateway {
    /// A gateway admitting connections with `admission`.
    pub fn new(admission: Arc<Admission>, settings: TcpSettings) -> Self {
        TcpGateway {
            admission,
            resolver: Resolver::new(),
            settings,
            counters: Arc::default(),
            next_holder: AtomicU64::new(0),
            local_caps: Arc::default(),
            drain: Duration::ZERO,
        }
    }

    /// Lets sessions continue for `drain` after a graceful stop begins (none by default).
    pub fn with_drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// The counters, for metrics.
    pub fn counters(&self) -> &Arc<TcpCounters> {
        &self.counters
    }

    /// Serves one connection to its end.
    async fn serve(
        &self,
        mut io: Stream,
        shutdown: &ShutdownWatch,
        log: &mut SessionLog,
    ) -> Result<(), Denied> {
        let digest = io.get_socket_digest();
        let peer = digest
            .as_ref()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet().copied()))
            .ok_or(Denied::Silent)?;
        let client = peer.ip().to_canonical();
        log.client = Some(client);
        let client_key = client_key(client);
        // Connect-time checks close without a word, as the original: a flood learns nothing
        // and costs one accept.
        let attempt_name = format!("gw:tcp:att:{client_key}");
        if let Err(refusal) = self
            .admission
            .limit(&attempt_name, self.settings.attempts)
            .await
        {
            if matches!(refusal, Refusal::Limited { .. }) {
                self.counters
                    .refused_attempts
                    .fetch_add(1, Ordering::Relaxed);
                log.reason = "attempts";
            } else {
                log.reason = refusal.kind();
            }
            return Err(Denied::Silent);
        }
        let mut leases = match self.take_connect_leases(&client_key).await {
            Ok(leases) => leases,
            Err(refusal) => {
                self.count_refusal(refusal);
                log.reason = refusal.kind();
                return Err(Denied::Silent);
            }
        };
        write_flush(&mut io, PROMPT).await?;
        let line = match tokio::time::timeout(self.settings.auth_timeout, read_token_line(&mut io))
            .await
        {
            Ok(Ok(line)) => line,
            Ok(Err(LineError::TooLong)) => {
                log.reason = "line_too_long";
                return Err(deny(&mut io, "token line too long").await);
            }
            Ok(Err(LineError::NotText)) => {
                log.reason = "line_not_text";
                return Err(deny(&mut io, "invalid token").await);
            }
            Ok(Err(_)) => {
                log.reason = "client_closed";
                return Err(Denied::Silent);
            }
            Err(_) => {
                log.reason = "auth_timeout";
                return Err(deny(&mut io, "timed out waiting for the token").await);
            }
        };
        let now = fctf_core::clock::unix_now_secs();
        let grant = match self.admission.verify(&line.token, now) {
            Ok(grant) => grant,
            Err(refusal) => {
                log.reason = refusal.kind();
                return Err(deny_refusal(&mut io, refusal).await);
            }
        };
        log.grant = Some(grant.clone());
        if let Err(refusal) = self.admission.await_live(&grant).await {
            log.reason = refusal.kind();
            return Err(deny_refusal(&mut io, refusal).await);
        }
        if let Err(refusal) = self.take_token_lease(&mut leases, &grant.digest).await {
            self.count_refusal(refusal);
            log.reason = refusal.kind();
            return Err(deny(&mut io, refusal.reason()).await);
        }
        let Some(addr) = self.resolver.resolve(&grant.upstream).await else {
            log.reason = "unresolved";
            return Err(deny(&mut io, "challenge instance unreachable").await);
        };
        log.upstream = Some(addr);
        let connecting = Instant::now();
        let upstream = tokio::time::timeout(
            self.settings.connect_timeout,
            tokio::net::TcpStream::connect(addr),
        )
        .await;
        let Ok(Ok(mut upstream)) = upstream else {
            log.reason = "unreachable";
            return Err(deny(&mut io, "challenge instance unreachable").await);
        };
        self.counters.connect_latency.observe(connecting.elapsed());
        // Small writes (prompts, answers) must not wait for Nagle.
        let _ = upstream.set_nodelay(true);
        if self.settings.proxy_protocol {
            // The address the player connected to; the listener's if the socket cannot say.
            let local = digest
                .as_ref()
                .and_then(|d| d.local_addr().and_then(|a| a.as_inet().copied()))
                .unwrap_or_else(|| SocketAddr::new(peer.ip(), 0));
            let header = proxy_protocol::Header::v2(peer, local);
            if upstream.write_all(header.as_bytes()).await.is_err() {
                log.reason = "unreachable";
                return Err(deny(&mut io, "challenge instance unreachable").await);
            }
        }
        write_flush(&mut io, GRANTED).await?;
        if !line.early.is_empty() {
            upstream
                .write_all(&line.early)
                .await
                .map_err(|_| Denied::Silent)?;
        }

        self.counters.sessions.fetch_add(1, Ordering::Relaxed);
        self.counters
            .active_sessions
            .fetch_add(1, Ordering::Relaxed);
        let expires_in = Duration::from_secs(grant.secs_left(fctf_core::clock::unix_now_secs()));
        let mut shutdown = shutdown.clone();
        log.reason = tokio::select! {
            _ = relay(&mut io, &mut upstream) => "ended",
            _ = tokio::time::sleep(expires_in) => "token_expired",
            _ = self.admission.until_not_live(&grant, self.settings.liveness_recheck) => "instance_stopped",
            _ = async {
                // Err: the server is gone; end now.
                if shutdown.wait_for(|stop| *stop).await.is_ok() {
                    tokio::time::sleep(self.drain).await;
                }
            } => "shutdown",
        };
        self.counters
            .active_sessions
            .fetch_sub(1, Ordering::Relaxed);
        drop(leases);
        Ok(())
    }

    fn count_refusal(&self, refusal: LeaseRefusal) {
        if let LeaseRefusal::Full(scope) = refusal {
            self.counters.refused_caps[scope as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The connection's leases in the global scope and its address's, taken together (both or
    /// neither) before the prompt.
    async fn take_connect_leases(&self, client_key: &str) -> Result<SessionLeases, LeaseRefusal> {
        let caps = self.settings.caps;
        let ip_key = format!("gw:tcp:ip:{client_key}");
        let scopes = [
            LeaseScope {
                key: GLOBAL_KEY,
                cap: caps.global,
            },
            LeaseScope {
                key: &ip_key,
                cap: caps.per_ip,
            },
        ];
        let mut leases = SessionLeases {
            holder: format!(
                "{}:{}",
                self.settings.gateway_id,
                self.next_holder.fetch_add(1, Ordering::Relaxed)
            ),
            store: None,
            local: Vec::new(),
        };
        self.acquire(&mut leases, &scopes, &[CapScope::Global, CapScope::Ip])
            .await?;
        Ok(leases)
    }

    /// Adds the lease in the token's scope to a connection's leases.
    async fn take_token_lease(
        &self,
        leases: &mut SessionLeases,
        digest: &str,
    ) -> Result<(), LeaseRefusal> {
        let key = format!("gw:tcp:tok:{digest}");
        let scopes = [LeaseScope {
            key: &key,
            cap: self.settings.caps.per_token,
        }];
        self.acquire(leases, &scopes, &[CapScope::Token]).await
    }

    /// Takes a lease in every one of `scopes` (named `names`) for `leases`' holder, or in none:
    /// in the store, or in this gateway's own counts while the store is unreachable.
    async fn acquire(
        &self,
        leases: &mut SessionLeases,
        scopes: &[LeaseScope<'_>],
        names: &[CapScope],
    ) -> Result<(), LeaseRefusal> {
        let store = self.admission.store();
        let ttl = self.settings.lease_ttl;
        match store.lease_acquire(scopes, &leases.holder, ttl).await {
            Ok(LeaseOutcome::Acquired) => {
                let taken = scopes.iter().map(|s| (s.key.to_owned(), s.cap));
                match &mut leases.store {
                    Some(lease) => lease.extend(taken),
                    None => {
                        leases.store = Some(Lease::start(
                            store.clone(),
                            taken.collect(),
                            leases.holder.clone(),
                            ttl,
                            self.counters.clone(),
                        ));
                    }
                }
                Ok(())
            }
            Ok(LeaseOutcome::Full { scope, .. }) => Err(LeaseRefusal::Full(names[scope])),
            Err(error) => {
                self.admission
                    .counters()
                    .store_fallbacks
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "connection caps without the store");
                if self.admission.fails_closed() {
                    return Err(LeaseRefusal::StoreDown);
                }
                let local = self
                    .local_caps
                    .acquire(scopes)
                    .map_err(|i| LeaseRefusal::Full(names[i]))?;
                leases.local.push(local);
                Ok(())
            }
        }
    }
}

/// The store key of the global scope.
const GLOBAL_KEY: &str = "gw:tcp:all";

/// What holds a session's places under the caps; dropping it frees them.
#[derive(Debug)]
struct SessionLeases {
    /// The session's name in the store's leases.
    holder: String,
    /// Leases in the store, shared by every gateway.
    store: Option<Lease>,
    /// This gateway's own counts, taken while the store was unreachable (held for their Drop,
    /// which uncounts them).
    local: Vec<LocalLease>,
}

#[async_trait]
impl ServerApp for TcpGateway {
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let mut log = SessionLog::default();
        let outcome = match self.serve(io, shutdown, &mut log).await {
            Ok(()) => "relayed",
            Err(denied) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                match denied {
                    Denied::Answered => "denied",
                    Denied::Silent => "closed",
                }
            }
        };
        log.write(outcome);
        // Never reused: the stream is dropped, which closes it.
        None
    }
}

/// What the access log says about a connection, filled in as it is served.
#[derive(Debug)]
struct SessionLog {
    started: Instant,
    client: Option<IpAddr>,
    grant: Option<Arc<Grant>>,
    upstream: Option<SocketAddr>,
    /// Why it was refused, or how the relay ended.
    reason: &'static str,
}

impl Default for SessionLog {
    fn default() -> Self {
        SessionLog {
            started: Instant::now(),
            client: None,
            grant: None,
            upstream: None,
            reason: "client_closed",
        }
    }
}

impl SessionLog {
    /// The connection's access-log event ([`crate::access`]).
    fn write(&self, outcome: &'static str) {
        let grant = self.grant.as_deref();
        tracing::info!(
            target: access::TARGET,
            proto = "tcp",
            client = self.client.map(tracing::field::display),
            outcome,
            reason = self.reason,
            team = grant.map(|g| g.claims.team.0),
            challenge = grant.map(|g| g.claims.challenge.0),
            instance = grant.map(|g| tracing::field::display(g.claims.instance)),
            upstream = self.upstream.map(tracing::field::display),
            duration_us = access::micros_since(self.started),
            "access"
        );
    }
}

/// Why a connection ended before relaying (the answer line, if any, was already written).
#[derive(Debug)]
enum Denied {
    /// Closed without a word.
    Silent,
    /// Answered with a reason.
    Answered,
}

impl From<std::io::Error> for Denied {
    fn from(_: std::io::Error) -> Self {
        Denied::Silent
    }
}

/// Relays `a` and `b` both ways until both directions have ended (an end of stream is passed on
/// as a half-close) or either fails.
async fn relay<A, B>(a: &mut A, b: &mut B) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (a_read, a_write) = tokio::io::split(a);
    let (b_read, b_write) = tokio::io::split(b);
    tokio::try_join!(pump(a_read, b_write), pump(b_read, a_write))?;
    Ok(())
}

/// Copies `from` to `to` until `from` ends, then shuts `to`'s write side down. Waits for data
/// with only [`RELAY_SMALL`] bytes of buffer (in the future itself); a read that fills it means
/// more is coming, and a [`RELAY_LARGE`] buffer is used until a read would wait, then freed.
async fn pump<R, W>(mut from: R, mut to: W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut small = [0u8; RELAY_SMALL];
    loop {
        let n = from.read(&mut small).await?;
        if n == 0 {
            break;
        }
        to.write_all(&small[..n]).await?;
        let mut ended = false;
        if n == RELAY_SMALL {
            let mut large = vec![0u8; RELAY_LARGE];
            // Reads that find data at once; `None` once one would wait.
            while let Some(read) = try_read(&mut from, &mut large).await {
                match read? {
                    0 => {
                        ended = true;
                        break;
                    }
                    n => to.write_all(&large[..n]).await?,
                }
            }
        }
        // Pingora's streams may buffer writes: what was relayed must go out before waiting.
        to.flush().await?;
        if ended {
            break;
        }
    }
    to.shutdown().await
}

/// One read of `from` into `buf` if it can complete now; `None` if it would wait (the waker it
/// leaves is harmless: the next read registers again).
async fn try_read<R: AsyncRead + Unpin>(
    from: &mut R,
    buf: &mut [u8],
) -> Option<std::io::Result<usize>> {
    std::future::poll_fn(|cx| {
        let mut read = ReadBuf::new(buf);
        Poll::Ready(match Pin::new(&mut *from).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => Some(Ok(read.filled().len())),
            Poll::Ready(Err(error)) => Some(Err(error)),
            Poll::Pending => None,
        })
    })
    .await
}

async fn write_flush(io: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    // Pingora streams may buffer writes: the client must see the line now.
    io.flush().await
}

async fn deny(io: &mut Stream, reason: &str) -> Denied {
    let line = format!("access denied: {reason}\n");
    match write_flush(io, line.as_bytes()).await {
        Ok(()) => Denied::Answered,
        Err(_) => Denied::Silent,
    }
}

async fn deny_refusal(io: &mut Stream, refusal: Refusal) -> Denied {
    deny(io, &refusal.to_string()).await
}

/// A session's connection leases: renewed in the background while held, released on drop
/// (however the session ends). If the process dies, they expire after their time to live.
///
/// A renewal that finds a lease gone while the session lives (the store lost its data:
/// a Redis restart without persistence, a failover, a flush) takes it again under the same caps,
/// so the counts stay right; if a scope filled up meanwhile, the session goes on uncounted there
/// and the next renewal tries again.
#[derive(Debug)]
struct Lease {
    store: Arc<dyn StateStore>,
    /// Every (scope key, cap) the holder has a lease in.
    scopes: Vec<(String, u32)>,
    holder: String,
    ttl: Duration,
    counters: Arc<TcpCounters>,
    renewal: tokio::task::JoinHandle<()>,
}

impl Lease {
    fn start(
        store: Arc<dyn StateStore>,
        scopes: Vec<(String, u32)>,
        holder: String,
        ttl: Duration,
        counters: Arc<TcpCounters>,
    ) -> Self {
        let renewal = renew(
            store.clone(),
            scopes.clone(),
            holder.clone(),
            ttl,
            counters.clone(),
        );
        Lease {
            store,
            scopes,
            holder,
            ttl,
            counters,
            renewal,
        }
    }

    /// Adds leases the holder has just taken in `scopes`; they are renewed with the others.
    fn extend(&mut self, scopes: impl IntoIterator<Item = (String, u32)>) {
        self.renewal.abort();
        self.scopes.extend(scopes);
        self.renewal = renew(
            self.store.clone(),
            self.scopes.clone(),
            self.holder.clone(),
            self.ttl,
            self.counters.clone(),
        );
    }
}

/// Renews `holder`'s leases in `scopes` every third of `ttl`, until aborted; re-asserts them
/// when they are gone.
fn renew(
    store: Arc<dyn StateStore>,
    scopes: Vec<(String, u32)>,
    holder: String,
    ttl: Duration,
    counters: Arc<TcpCounters>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let keys: Vec<&str> = scopes.iter().map(|(key, _)| key.as_str()).collect();
        let caps: Vec<LeaseScope<'_>> = scopes
            .iter()
            .map(|(key, cap)| LeaseScope { key, cap: *cap })
            .collect();
        loop {
            tokio::time::sleep(ttl / 3).await;
            match store.lease_renew(&keys, &holder, ttl).await {
                Ok(true) => {}
                Ok(false) => match store.lease_acquire(&caps, &holder, ttl).await {
                    Ok(LeaseOutcome::Acquired) => {
                        counters.leases_reasserted.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%holder, "connection lease was lost; re-asserted");
                    }
                    outcome => {
                        counters.leases_lost.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%holder, ?outcome, "connection lease was lost");
                    }
                },
                Err(error) => tracing::debug!(%error, "lease renewal failed"),
            }
        }
    })
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
        let store = self.store.clone();
        let scopes = std::mem::take(&mut self.scopes);
        let holder = std::mem::take(&mut self.holder);
        // Without a runtime (process teardown) the leases expire by themselves.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let keys: Vec<&str> = scopes.iter().map(|(key, _)| key.as_str()).collect();
                if let Err(error) = store.lease_release(&keys, &holder).await {
                    tracing::debug!(%error, "lease release failed; it will expire");
                }
            });
        }
    }
}

/// Per-gateway connection counts: the caps' fallback while the store is unreachable. Each
/// gateway then admits up to the caps on its own, so a deployment of N gateways admits at most N
/// times the global cap until the store is back.
#[derive(Debug, Default)]
struct LocalCaps {
    counts: parking_lot::Mutex<std::collections::HashMap<String, u32>>,
}

impl LocalCaps {
    /// Counts one session in every scope, or in none: `Err(i)` when scope `i` is full.
    fn acquire(self: &Arc<Self>, scopes: &[LeaseScope<'_>]) -> Result<LocalLease, usize> {
        let mut counts = self.counts.lock();
        for (i, scope) in scopes.iter().enumerate() {
            if counts.get(scope.key).copied().unwrap_or(0) >= scope.cap {
                return Err(i);
            }
        }
        for scope in scopes {
            *counts.entry(scope.key.to_owned()).or_insert(0) += 1;
        }
        Ok(LocalLease {
            caps: self.clone(),
            keys: scopes.iter().map(|s| s.key.to_owned()).collect(),
        })
    }
}

/// One session counted in [`LocalCaps`]; uncounted on drop.
#[derive(Debug)]
struct LocalLease {
    caps: Arc<LocalCaps>,
    keys: Vec<String>,
}

impl Drop for LocalLease {
    fn drop(&mut self) {
        let mut counts = self.caps.counts.lock();
        for key in &self.keys {
            if let Some(count) = counts.get_mut(key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_relay_carries_bursts_and_small_writes_both_ways_and_passes_half_closes_on() {
        let (mut client, mut near) = tokio::io::duplex(64 * 1024);
        let (mut far, mut backend) = tokio::io::duplex(64 * 1024);
        let relay = tokio::spawn(async move { relay(&mut near, &mut far).await });

        // A burst much larger than both buffers, byte-exact, while small writes go back.
        let burst: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = burst.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client
        });
        let mut got = vec![0u8; burst.len()];
        backend.read_exact(&mut got).await.unwrap();
        assert!(got == burst, "the burst arrived byte-exact");
        let mut client = writer.await.unwrap();
        backend.write_all(b"ok\n").await.unwrap();
        let mut line = [0u8; 3];
        client.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"ok\n");

        // The client half-closes: the backend sees the end, and can still answer.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        backend.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        backend.write_all(b"bye").await.unwrap();
        backend.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"bye");
        tokio::time::timeout(Duration::from_secs(2), relay)
            .await
            .expect("the relay ends when both directions have")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn local_caps_count_every_scope_or_none_and_uncount_on_drop() {
        let caps = Arc::new(LocalCaps::default());
        let scopes = |token: &'static str| {
            [
                LeaseScope { key: "all", cap: 3 },
                LeaseScope { key: token, cap: 2 },
            ]
        };
        let a1 = caps.acquire(&scopes("a")).expect("first");
        let a2 = caps.acquire(&scopes("a")).expect("second");
        assert_eq!(caps.acquire(&scopes("a")).err(), Some(1));
        let b1 = caps.acquire(&scopes("b")).expect("other token");
        assert_eq!(caps.acquire(&scopes("b")).err(), Some(0));
        drop(a1);
        let _b2 = caps.acquire(&scopes("b")).expect("a slot was freed");
        drop((a2, b1));
        assert_eq!(caps.counts.lock().get("a"), None);
        assert_eq!(caps.counts.lock().get("all"), Some(&1));
    }
}
