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

mod leases;
mod relay;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fctf_core::store::{LeaseScope, RateLimit};
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use self::leases::{Held, LeaseBook, StoreLease, Taken};
use self::relay::relay;
use crate::access;
use crate::admin::Histogram;
use crate::admission::{Admission, ClientKey, Grant, Refusal};
use crate::proxy_protocol;
use crate::resolve::Resolver;
use crate::tcp_line::{LineError, TokenLine, read_token_line};

/// The prompt sent on connect.
pub const PROMPT: &[u8] = b"token: ";

/// The answer when the connection is admitted.
pub const GRANTED: &[u8] = b"access granted\n";

/// How long a connection lease lives without renewal by default: a gateway that dies leaks its
/// leases for at most this long. The gateway renews every live session's leases every third of
/// it, all together ([`leases`]).
pub const LEASE_TTL: Duration = Duration::from_secs(30);

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
    /// The store leases of every live session.
    leases: Arc<LeaseBook>,
    local_caps: Arc<LocalCaps>,
    drain: Duration,
}

impl TcpGateway {
    /// A gateway admitting connections with `admission`.
    pub fn new(admission: Arc<Admission>, settings: TcpSettings) -> Self {
        let counters = Arc::<TcpCounters>::default();
        let leases = Arc::new(LeaseBook::new(
            admission.store().clone(),
            settings.gateway_id.clone(),
            settings.lease_ttl,
            settings.caps,
            counters.clone(),
        ));
        TcpGateway {
            admission,
            resolver: Resolver::new(),
            settings,
            counters,
            leases,
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
        let client_key = ClientKey::from(client);
        // Connect-time checks close without a word, as the original: a flood learns nothing
        // and costs one accept.
        let attempt_name = leases::named("gw:tcp:att:", client_key);
        let attempt = self
            .admission
            .limit(&attempt_name, self.settings.attempts)
            .await;
        drop(attempt_name);
        if let Err(refusal) = attempt {
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
        let connect_place = match self.take_connect_leases(client_key).await {
            Ok(place) => place,
            Err(refusal) => {
                self.count_refusal(refusal);
                log.reason = refusal.kind();
                return Err(Denied::Silent);
            }
        };
        write_flush(&mut io, PROMPT).await?;
        let TokenLine { token, early } = match tokio::time::timeout(
            self.settings.auth_timeout,
            read_token_line(&mut io),
        )
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
        let verified = self.admission.verify(&token, now);
        // Not kept for the session: an idle session holds as little as it can.
        drop(token);
        let grant = match verified {
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
        let token_place = match self.take_token_lease(&grant.digest).await {
            Ok(place) => place,
            Err(refusal) => {
                self.count_refusal(refusal);
                log.reason = refusal.kind();
                return Err(deny(&mut io, refusal.reason()).await);
            }
        };
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
        if !early.is_empty() {
            upstream
                .write_all(&early)
                .await
                .map_err(|_| Denied::Silent)?;
        }
        drop(early);

        self.counters.sessions.fetch_add(1, Ordering::Relaxed);
        self.counters
            .active_sessions
            .fetch_add(1, Ordering::Relaxed);
        let mut shutdown = shutdown.clone();
        log.reason = tokio::select! {
            _ = relay(&mut io, &mut upstream) => "ended",
            ended = self.watch(&grant) => ended,
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
        drop((connect_place, token_place));
        Ok(())
    }

    /// Returns why a live session must end: its token expired, or its instance is no longer the
    /// live one (looked at every `liveness_recheck`, through the liveness cache). One timer for
    /// both.
    async fn watch(&self, grant: &Grant) -> &'static str {
        let now = fctf_core::clock::unix_now_secs();
        let expires = tokio::time::Instant::now() + Duration::from_secs(grant.secs_left(now));
        let every = self.settings.liveness_recheck;
        loop {
            let next = if every.is_zero() {
                expires
            } else {
                (tokio::time::Instant::now() + every).min(expires)
            };
            tokio::time::sleep_until(next).await;
            if tokio::time::Instant::now() >= expires {
                return "token_expired";
            }
            if !self.admission.still_live(grant).await {
                return "instance_stopped";
            }
        }
    }

    fn count_refusal(&self, refusal: LeaseRefusal) {
        if let LeaseRefusal::Full(scope) = refusal {
            self.counters.refused_caps[scope as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The connection's leases in the global scope and its address's, taken together (both or
    /// neither) before the prompt.
    async fn take_connect_leases(&self, client: ClientKey) -> Result<Place, LeaseRefusal> {
        let held = Held {
            connect: Some(client),
            token: None,
        };
        self.acquire(held, &[CapScope::Global, CapScope::Ip]).await
    }

    /// The connection's lease in its token's scope.
    async fn take_token_lease(&self, digest: &Arc<str>) -> Result<Place, LeaseRefusal> {
        let held = Held {
            connect: None,
            token: Some(digest.clone()),
        };
        self.acquire(held, &[CapScope::Token]).await
    }

    /// Takes a lease in every one of `scopes`' scopes (named `names`, in [`Held::scopes`]
    /// order), or in none: in the store, or in this gateway's own counts while the store is
    /// unreachable.
    async fn acquire(&self, scopes: Held, names: &[CapScope]) -> Result<Place, LeaseRefusal> {
        let full = |i: usize| LeaseRefusal::Full(names.get(i).copied().unwrap_or(CapScope::Global));
        match self.leases.acquire(scopes.clone()).await {
            Ok(Taken::Lease(lease)) => Ok(Place::Store(lease)),
            Ok(Taken::Full { scope }) => Err(full(scope)),
            Err(error) => {
                self.admission
                    .counters()
                    .store_fallbacks
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "connection caps without the store");
                if self.admission.fails_closed() {
                    return Err(LeaseRefusal::StoreDown);
                }
                let keys = scopes.scopes(self.settings.caps);
                let caps: Vec<LeaseScope<'_>> = keys
                    .iter()
                    .map(|(key, cap)| LeaseScope { key, cap: *cap })
                    .collect();
                let local = self.local_caps.acquire(&caps).map_err(full)?;
                Ok(Place::Local(local))
            }
        }
    }
}

/// A place a session holds under the caps (in some scopes); dropping it frees it.
#[derive(Debug)]
enum Place {
    /// Leases in the store, shared by every gateway (renewed, then released, by the book).
    Store(#[allow(dead_code)] StoreLease),
    /// This gateway's own counts, taken while the store was unreachable (uncounted on drop).
    Local(#[allow(dead_code)] LocalLease),
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
