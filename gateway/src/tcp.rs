//! The TCP gateway: a Pingora [`ServerApp`] that reads a token line, admits the connection and
//! relays it to the instance.
//!
//! On connect: a per-address attempt limit (over it, the connection closes silently, as the
//! original's), then the prompt at once, the token line (bounded in size and time), verify,
//! liveness, then one connection lease in each of three scopes (global, per address, per
//! token), renewed while the session lives and released when it ends. The answer is one line:
//! `access granted` or `access denied: <reason>`. Bytes the client sent right after the token
//! line reach the backend first. The relay forwards half-closes and ends when both directions
//! are done, or at token expiry, or at shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fctf_core::store::{LeaseOutcome, LeaseScope, RateLimit, StateStore};
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use crate::admission::{Admission, Refusal, client_key};
use crate::resolve::Resolver;
use crate::tcp_line::{LineError, read_token_line};

/// The prompt sent on connect.
pub const PROMPT: &[u8] = b"token: ";

/// The answer when the connection is admitted.
pub const GRANTED: &[u8] = b"access granted\n";

/// How long a connection lease lives without renewal: a gateway that dies leaks its leases for
/// at most this long.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// How often a live session renews its leases.
const LEASE_RENEW_EVERY: Duration = Duration::from_secs(10);

/// Relay buffer per direction.
const RELAY_BUFFER: usize = 16 * 1024;

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
}

/// Counters for metrics; all monotonic except `active_sessions`.
#[derive(Debug, Default)]
pub struct TcpCounters {
    /// Sessions relaying right now.
    pub active_sessions: AtomicU64,
    /// Sessions admitted since start.
    pub sessions: AtomicU64,
    /// Connections refused (any reason, silent closes included).
    pub refused: AtomicU64,
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
        }
    }

    /// The counters, for metrics.
    pub fn counters(&self) -> &Arc<TcpCounters> {
        &self.counters
    }

    /// Serves one connection to its end.
    async fn serve(&self, mut io: Stream, shutdown: &ShutdownWatch) -> Result<(), Denied> {
        let client = io
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet().map(SocketAddr::ip)))
            .ok_or(Denied::Silent)?;
        let attempt_name = format!("gw:tcp:att:{}", client_key(client));
        if self
            .admission
            .limit(&attempt_name, self.settings.attempts)
            .await
            .is_err()
        {
            return Err(Denied::Silent);
        }
        write_flush(&mut io, PROMPT).await?;
        let line = match tokio::time::timeout(self.settings.auth_timeout, read_token_line(&mut io))
            .await
        {
            Ok(Ok(line)) => line,
            Ok(Err(LineError::TooLong)) => return Err(deny(&mut io, "token line too long").await),
            Ok(Err(LineError::NotText)) => return Err(deny(&mut io, "invalid token").await),
            Ok(Err(_)) => return Err(Denied::Silent),
            Err(_) => return Err(deny(&mut io, "timed out waiting for the token").await),
        };
        let now = fctf_core::clock::unix_now_secs();
        let grant = match self.admission.verify(&line.token, now) {
            Ok(grant) => grant,
            Err(refusal) => return Err(deny_refusal(&mut io, refusal).await),
        };
        if let Err(refusal) = self.admission.check_live(&grant).await {
            return Err(deny_refusal(&mut io, refusal).await);
        }
        let lease = match self.take_lease(client, &grant.digest).await {
            Ok(lease) => lease,
            Err(reason) => return Err(deny(&mut io, reason).await),
        };
        let Some(addr) = self.resolver.resolve(&grant.upstream).await else {
            return Err(deny(&mut io, "challenge instance unreachable").await);
        };
        let upstream = tokio::time::timeout(
            self.settings.connect_timeout,
            tokio::net::TcpStream::connect(addr),
        )
        .await;
        let Ok(Ok(mut upstream)) = upstream else {
            return Err(deny(&mut io, "challenge instance unreachable").await);
        };
        // Small writes (prompts, answers) must not wait for Nagle.
        let _ = upstream.set_nodelay(true);
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
        tokio::select! {
            _ = tokio::io::copy_bidirectional_with_sizes(&mut io, &mut upstream, RELAY_BUFFER, RELAY_BUFFER) => {}
            _ = tokio::time::sleep(expires_in) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
        self.counters
            .active_sessions
            .fetch_sub(1, Ordering::Relaxed);
        drop(lease);
        Ok(())
    }

    /// One lease per scope for this connection, or the reason to refuse it.
    async fn take_lease(&self, client: IpAddr, digest: &str) -> Result<SessionLease, &'static str> {
        let caps = self.settings.caps;
        let keys = [
            "gw:tcp:all".to_owned(),
            format!("gw:tcp:ip:{}", client_key(client)),
            format!("gw:tcp:tok:{digest}"),
        ];
        let scopes = [
            LeaseScope {
                key: &keys[0],
                cap: caps.global,
            },
            LeaseScope {
                key: &keys[1],
                cap: caps.per_ip,
            },
            LeaseScope {
                key: &keys[2],
                cap: caps.per_token,
            },
        ];
        let holder = format!(
            "{}:{}",
            self.settings.gateway_id,
            self.next_holder.fetch_add(1, Ordering::Relaxed)
        );
        let store = self.admission.store();
        match store.lease_acquire(&scopes, &holder, LEASE_TTL).await {
            Ok(LeaseOutcome::Acquired) => Ok(SessionLease::Store(Lease::start(
                store.clone(),
                keys.to_vec(),
                holder,
            ))),
            Ok(LeaseOutcome::Full { scope, .. }) => Err(full_reason(scope)),
            Err(error) => {
                self.admission
                    .counters()
                    .store_fallbacks
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "connection caps without the store");
                if self.admission.fails_closed() {
                    return Err("temporarily unavailable");
                }
                self.local_caps
                    .acquire(&scopes)
                    .map(SessionLease::Local)
                    .map_err(full_reason)
            }
        }
    }
}

/// The refusal for a full scope (the order of `take_lease`'s scopes).
fn full_reason(scope: usize) -> &'static str {
    match scope {
        0 => "the gateway is full, try again later",
        1 => "too many connections from your address",
        _ => "too many connections with this token",
    }
}

/// What holds a session's place under the caps.
#[derive(Debug)]
#[expect(
    dead_code,
    reason = "the leases are held for their Drop, which releases them"
)]
enum SessionLease {
    /// Leases in the store, shared by every gateway.
    Store(Lease),
    /// This gateway's own counts, while the store is unreachable.
    Local(LocalLease),
}

#[async_trait]
impl ServerApp for TcpGateway {
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        if self.serve(io, shutdown).await.is_err() {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
        }
        // Never reused: the stream is dropped, which closes it.
        None
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

/// A session's connection leases: renewed in the background while held, released on drop
/// (however the session ends). If the process dies, they expire after [`LEASE_TTL`].
#[derive(Debug)]
struct Lease {
    store: Arc<dyn StateStore>,
    keys: Vec<String>,
    holder: String,
    renewal: tokio::task::JoinHandle<()>,
}

impl Lease {
    fn start(store: Arc<dyn StateStore>, keys: Vec<String>, holder: String) -> Self {
        let renewal = {
            let store = store.clone();
            let keys = keys.clone();
            let holder = holder.clone();
            tokio::spawn(async move {
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                loop {
                    tokio::time::sleep(LEASE_RENEW_EVERY).await;
                    match store.lease_renew(&keys, &holder, LEASE_TTL).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(%holder, "connection lease was lost"),
                        Err(error) => tracing::debug!(%error, "lease renewal failed"),
                    }
                }
            })
        };
        Lease {
            store,
            keys,
            holder,
            renewal,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
        let store = self.store.clone();
        let keys = std::mem::take(&mut self.keys);
        let holder = std::mem::take(&mut self.holder);
        // Without a runtime (process teardown) the leases expire by themselves.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
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
