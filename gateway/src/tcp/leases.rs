//! The store leases of this gateway's live sessions, kept in one book. Three loops per process
//! talk to the store for every session: one takes the leases sessions ask for, one renews all
//! live leases ([`RENEW_BATCH`] holders per store call), one releases those of ended sessions.
//! Asks and releases that arrive while the store is busy with the previous call go together in
//! the next one (one store call for many connections under load, at most one call's wait more
//! when idle); releases also wait [`RELEASE_GATHER`] for more sessions to end. A session holds
//! only [`StoreLease`]s (a holder number each): no task, timer or key string of its own.
//!
//! The guarantees are the per-session ones:
//! - leases are renewed while their session lives: every third of the time to live, so a renewal
//!   can be late by two thirds of it before a lease runs out;
//! - a renewal that finds a lease gone while the session lives (the store lost its data: a Redis
//!   restart without persistence, a failover, a flush) takes it again under the same caps; if a
//!   scope filled up meanwhile, the session goes on uncounted there and the next renewal tries
//!   again;
//! - a session's leases are released once it ends, however it ends (dropping its
//!   [`StoreLease`]); a lease taken again by a renewal racing with that end is released again;
//! - when the process dies, renewals stop and the leases expire after their time to live.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fctf_core::store::{
    HeldLeases, LeaseOutcome, LeaseRequest, LeaseScope, StateStore, StoreError,
};
use tokio::sync::{Notify, oneshot};

use super::{TcpCaps, TcpCounters};
use crate::admission::ClientKey;

/// Asks taken per store call, at most.
pub const ACQUIRE_BATCH: usize = 128;

/// Holders renewed per store call.
pub const RENEW_BATCH: usize = 256;

/// Holders released per store call, at most.
pub const RELEASE_BATCH: usize = 256;

/// How long the release loop gathers ended sessions before it releases them: sessions end one
/// at a time, so without a wait each would cost a store call of its own. A place under the caps
/// is freed this much later than its session ended.
pub const RELEASE_GATHER: Duration = Duration::from_millis(10);

/// The store key of the global scope.
pub const GLOBAL_KEY: &str = "gw:tcp:all";

/// The store key of a client address's scope.
pub fn ip_key(client: ClientKey) -> String {
    named("gw:tcp:ip:", client)
}

/// The store key of a token's scope (`digest`: the token's [`fctf_core::store::keys::digest`]).
pub fn token_key(digest: &str) -> String {
    let mut key = String::with_capacity(11 + digest.len());
    key.push_str("gw:tcp:tok:");
    key.push_str(digest);
    key
}

/// `prefix` followed by `client` as [`ClientKey`] displays it. IPv4 addresses are written digit
/// by digit: these names are built several times per connection, and the formatting machinery
/// costs several times more.
pub fn named(prefix: &str, client: ClientKey) -> String {
    match client {
        ClientKey::V4(ip) => {
            let mut name = String::with_capacity(prefix.len() + 15);
            name.push_str(prefix);
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    name.push('.');
                }
                push_decimal(&mut name, octet.into());
            }
            name
        }
        ClientKey::V6(_) => format!("{prefix}{client}"),
    }
}

/// Appends `n` in decimal.
fn push_decimal(text: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    text.extend(digits[start..].iter().map(|d| char::from(*d)));
}

/// A batch of holders' names and lease keys, owned, so the [`HeldLeases`] views the store
/// takes can borrow them.
struct HolderBatch {
    names: Vec<String>,
    scopes: Vec<Vec<(String, u32)>>,
}

impl HolderBatch {
    /// Each holder's lease keys.
    fn keys(&self) -> Vec<Vec<&str>> {
        self.scopes
            .iter()
            .map(|s| s.iter().map(|(key, _)| key.as_str()).collect())
            .collect()
    }

    /// The store's view of each holder, over `keys` (from [`Self::keys`]).
    fn held<'a>(&'a self, keys: &'a [Vec<&'a str>]) -> Vec<HeldLeases<'a>> {
        self.names
            .iter()
            .zip(keys)
            .map(|(holder, keys)| HeldLeases { holder, keys })
            .collect()
    }
}

/// The scopes one holder has leases in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// The global scope and this client address's (taken together, at connect).
    pub connect: Option<ClientKey>,
    /// The token's scope (its digest), once the token line was verified.
    pub token: Option<Arc<str>>,
}

impl Held {
    /// The store keys, each with its cap.
    pub fn scopes(&self, caps: TcpCaps) -> Vec<(String, u32)> {
        let mut scopes = Vec::with_capacity(3);
        if let Some(client) = self.connect {
            scopes.push((GLOBAL_KEY.to_owned(), caps.global));
            scopes.push((ip_key(client), caps.per_ip));
        }
        if let Some(digest) = &self.token {
            scopes.push((token_key(digest), caps.per_token));
        }
        scopes
    }
}

/// Every live session's store leases, for one gateway process.
#[derive(Debug)]
pub struct LeaseBook {
    store: Arc<dyn StateStore>,
    /// This gateway's name in holders: a holder is `{gateway_id}:{number}`.
    gateway_id: String,
    ttl: Duration,
    caps: TcpCaps,
    counters: Arc<TcpCounters>,
    next_id: AtomicU64,
    /// Leases asked for, for the acquire loop.
    asked: parking_lot::Mutex<Vec<Ask>>,
    wake_acquire: Notify,
    /// Every live holder's scopes.
    live: parking_lot::Mutex<HashMap<u64, Held>>,
    /// Ended sessions' leases, for the release loop.
    ended: parking_lot::Mutex<Vec<(u64, Held)>>,
    wake_release: Notify,
    /// The loops were started (on the first lease, in the runtime that serves sessions).
    started: AtomicBool,
}

/// Leases taken in the store for one holder: renewed while this lives, released when it is
/// dropped.
#[derive(Debug)]
pub struct StoreLease {
    book: Arc<LeaseBook>,
    id: u64,
}

/// The store's answer to an ask.
#[derive(Debug)]
pub enum Taken {
    /// Taken in every scope.
    Lease(StoreLease),
    /// Scope number `scope` (in [`Held::scopes`] order) is at its cap; nothing was taken.
    Full {
        /// The full scope.
        scope: usize,
    },
}

/// One session's ask, waiting for the acquire loop.
#[derive(Debug)]
struct Ask {
    id: u64,
    held: Held,
    answer: oneshot::Sender<Result<Taken, Arc<StoreError>>>,
}

impl Drop for StoreLease {
    fn drop(&mut self) {
        self.book.release(self.id);
    }
}

impl LeaseBook {
    /// An empty book for leases of `ttl` under `caps`.
    pub fn new(
        store: Arc<dyn StateStore>,
        gateway_id: String,
        ttl: Duration,
        caps: TcpCaps,
        counters: Arc<TcpCounters>,
    ) -> Self {
        LeaseBook {
            store,
            gateway_id,
            ttl,
            caps,
            counters,
            next_id: AtomicU64::new(0),
            asked: parking_lot::Mutex::default(),
            wake_acquire: Notify::new(),
            live: parking_lot::Mutex::default(),
            ended: parking_lot::Mutex::default(),
            wake_release: Notify::new(),
            started: AtomicBool::new(false),
        }
    }

    /// The store's name of holder number `id`.
    pub fn holder(&self, id: u64) -> String {
        let mut holder = String::with_capacity(self.gateway_id.len() + 21);
        holder.push_str(&self.gateway_id);
        holder.push(':');
        push_decimal(&mut holder, id);
        holder
    }

    /// Takes a lease in every one of `scopes`' scopes, or in none, for a new holder: renewed
    /// while the returned [`StoreLease`] lives, released when it is dropped. Asks that arrive
    /// while a store call is under way go together in the next one. Must be called within a
    /// Tokio runtime (the first call starts the loops in it).
    pub async fn acquire(self: &Arc<Self>, scopes: Held) -> Result<Taken, Arc<StoreError>> {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(acquire_loop(self.clone()));
            tokio::spawn(renew_loop(self.clone()));
            tokio::spawn(release_loop(self.clone()));
        }
        let (answer, answered) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.asked.lock().push(Ask {
            id,
            held: scopes,
            answer,
        });
        self.wake_acquire.notify_one();
        answered.await.unwrap_or_else(|_| {
            Err(Arc::new(StoreError::Unavailable(
                "the gateway's lease loop has ended".to_owned(),
            )))
        })
    }

    /// Asks the store for what was asked, [`ACQUIRE_BATCH`] asks per call, until none is left.
    async fn acquire_asked(self: &Arc<Self>) {
        loop {
            let asks: Vec<Ask> = {
                let mut asked = self.asked.lock();
                if asked.is_empty() {
                    return;
                }
                let n = asked.len().min(ACQUIRE_BATCH);
                asked.drain(..n).collect()
            };
            let outcomes = {
                let names: Vec<String> = asks.iter().map(|ask| self.holder(ask.id)).collect();
                let scopes: Vec<Vec<(String, u32)>> =
                    asks.iter().map(|ask| ask.held.scopes(self.caps)).collect();
                let caps: Vec<Vec<LeaseScope<'_>>> = scopes
                    .iter()
                    .map(|s| {
                        s.iter()
                            .map(|(key, cap)| LeaseScope { key, cap: *cap })
                            .collect()
                    })
                    .collect();
                let requests: Vec<LeaseRequest<'_>> = names
                    .iter()
                    .zip(&caps)
                    .map(|(holder, scopes)| LeaseRequest { holder, scopes })
                    .collect();
                self.store.lease_acquire_many(&requests, self.ttl).await
            };
            match outcomes {
                Ok(outcomes) => {
                    for (ask, outcome) in asks.into_iter().zip(outcomes) {
                        let taken = match outcome {
                            LeaseOutcome::Acquired => {
                                self.live.lock().insert(ask.id, ask.held);
                                Taken::Lease(StoreLease {
                                    book: self.clone(),
                                    id: ask.id,
                                })
                            }
                            LeaseOutcome::Full { scope, .. } => Taken::Full { scope },
                        };
                        // An asker that is gone drops the answer, and with it the lease, which
                        // releases it.
                        let _ = ask.answer.send(Ok(taken));
                    }
                }
                Err(error) => {
                    let error = Arc::new(error);
                    for ask in asks {
                        let _ = ask.answer.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    /// Live holders.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.live.lock().len()
    }

    /// True when no session holds store leases.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names and lease keys of `batch`'s holders, as the store's batched calls take them.
    fn holder_batch(&self, batch: &[(u64, Held)]) -> HolderBatch {
        HolderBatch {
            names: batch.iter().map(|(id, _)| self.holder(*id)).collect(),
            scopes: batch
                .iter()
                .map(|(_, held)| held.scopes(self.caps))
                .collect(),
        }
    }

    fn release(&self, id: u64) {
        let Some(held) = self.live.lock().remove(&id) else {
            return;
        };
        self.ended.lock().push((id, held));
        self.wake_release.notify_one();
    }

    /// Renews every live holder's leases, [`RENEW_BATCH`] holders per store call; takes again
    /// the ones found gone.
    async fn renew_all(&self) {
        let snapshot: Vec<(u64, Held)> = self
            .live
            .lock()
            .iter()
            .map(|(id, held)| (*id, held.clone()))
            .collect();
        for chunk in snapshot.chunks(RENEW_BATCH) {
            let renewed = {
                let batch = self.holder_batch(chunk);
                let keys = batch.keys();
                self.store
                    .lease_renew_many(&batch.held(&keys), self.ttl)
                    .await
            };
            match renewed {
                Ok(renewed) => {
                    for ((id, _), renewed) in chunk.iter().zip(renewed) {
                        if !renewed {
                            self.reassert(*id).await;
                        }
                    }
                }
                Err(error) => tracing::debug!(%error, "lease renewal failed"),
            }
        }
    }

    /// Takes again the leases of holder `id`, found gone at renewal, if its session still lives.
    async fn reassert(&self, id: u64) {
        let Some(held) = self.live.lock().get(&id).cloned() else {
            // Ended meanwhile: its release is on its way.
            return;
        };
        let holder = self.holder(id);
        let scopes = held.scopes(self.caps);
        let caps: Vec<LeaseScope<'_>> = scopes
            .iter()
            .map(|(key, cap)| LeaseScope { key, cap: *cap })
            .collect();
        match self.store.lease_acquire(&caps, &holder, self.ttl).await {
            Ok(LeaseOutcome::Acquired) => {
                self.counters
                    .leases_reasserted
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%holder, "connection lease was lost; re-asserted");
                // The session may have ended while its leases were being taken again, after its
                // release was sent: release them once more.
                if !self.live.lock().contains_key(&id) {
                    self.ended.lock().push((id, held));
                    self.wake_release.notify_one();
                }
            }
            outcome => {
                self.counters.leases_lost.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%holder, ?outcome, "connection lease was lost");
            }
        }
    }

    /// Releases what ended sessions held, [`RELEASE_BATCH`] holders per store call, until none
    /// is left.
    async fn release_ended(&self) {
        loop {
            let batch: Vec<(u64, Held)> = {
                let mut ended = self.ended.lock();
                if ended.is_empty() {
                    return;
                }
                let n = ended.len().min(RELEASE_BATCH);
                ended.drain(..n).collect()
            };
            let holders = self.holder_batch(&batch);
            let keys = holders.keys();
            if let Err(error) = self.store.lease_release_many(&holders.held(&keys)).await {
                tracing::debug!(%error, "lease release failed; they will expire");
            }
        }
    }
}

/// Takes the leases sessions ask for. Ends with its runtime.
async fn acquire_loop(book: Arc<LeaseBook>) {
    loop {
        book.wake_acquire.notified().await;
        book.acquire_asked().await;
    }
}

/// Renews every live lease every third of the time to live. Ends with its runtime.
async fn renew_loop(book: Arc<LeaseBook>) {
    let mut every = tokio::time::interval(book.ttl / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: nothing taken just now needs renewing.
    every.tick().await;
    loop {
        every.tick().await;
        book.renew_all().await;
    }
}

/// Releases ended sessions' leases, [`RELEASE_GATHER`] after the first of them ended: those that
/// end meanwhile, or while a release is on its way, go together. Ends with its runtime (what it
/// had not released then expires).
async fn release_loop(book: Arc<LeaseBook>) {
    loop {
        book.wake_release.notified().await;
        tokio::time::sleep(RELEASE_GATHER).await;
        book.release_ended().await;
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use fctf_core::store::MemoryStore;

    use super::*;

    fn book(store: Arc<dyn StateStore>, ttl: Duration) -> Arc<LeaseBook> {
        Arc::new(LeaseBook::new(
            store,
            "gw-test".to_owned(),
            ttl,
            TcpCaps {
                global: 3,
                per_ip: 10,
                per_token: 1,
            },
            Arc::default(),
        ))
    }

    async fn wait_count(store: &dyn StateStore, key: &str, want: u32) {
        for _ in 0..200 {
            if store.lease_count(key).await.unwrap() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{key} never held {want} leases");
    }

    fn connect(last: u8) -> Held {
        Held {
            connect: Some(ClientKey::from(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))),
            token: None,
        }
    }

    fn token(digest: &str) -> Held {
        Held {
            connect: None,
            token: Some(digest.into()),
        }
    }

    async fn lease(book: &Arc<LeaseBook>, scopes: Held) -> StoreLease {
        match book.acquire(scopes).await.expect("store") {
            Taken::Lease(lease) => lease,
            Taken::Full { scope } => panic!("scope {scope} is full"),
        }
    }

    #[tokio::test]
    async fn leases_live_past_their_ttl_while_held_and_are_released_on_drop() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let ttl = Duration::from_millis(300);
        let book = book(store.clone(), ttl);
        let ip = ip_key(connect(1).connect.unwrap());
        let tok = token_key("d1");
        let one = lease(&book, connect(1)).await;
        let one_token = lease(&book, token("d1")).await;
        let two = lease(&book, connect(1)).await;
        assert_eq!(book.len(), 3);
        // Three times the time to live: alive only through the renewals.
        tokio::time::sleep(3 * ttl).await;
        assert_eq!(store.lease_count(GLOBAL_KEY).await.unwrap(), 2);
        assert_eq!(store.lease_count(&ip).await.unwrap(), 2);
        assert_eq!(store.lease_count(&tok).await.unwrap(), 1);

        drop((one, one_token));
        wait_count(&*store, &tok, 0).await;
        wait_count(&*store, GLOBAL_KEY, 1).await;
        drop(two);
        wait_count(&*store, GLOBAL_KEY, 0).await;
        wait_count(&*store, &ip, 0).await;
        assert!(book.is_empty());
        // And nothing comes back.
        tokio::time::sleep(2 * ttl).await;
        assert_eq!(store.lease_count(GLOBAL_KEY).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn concurrent_asks_get_exactly_the_cap_and_each_its_own_answer() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let book = book(store.clone(), Duration::from_secs(30));
        let asks: Vec<_> = (0..10)
            .map(|i| {
                let book = book.clone();
                tokio::spawn(async move { book.acquire(connect(i)).await.expect("store") })
            })
            .collect();
        let mut taken = Vec::new();
        for ask in asks {
            match ask.await.expect("ask") {
                Taken::Lease(lease) => taken.push(lease),
                // The global scope, the first of a connect ask's.
                Taken::Full { scope } => assert_eq!(scope, 0),
            }
        }
        assert_eq!(taken.len(), 3, "the global cap");
        assert_eq!(store.lease_count(GLOBAL_KEY).await.unwrap(), 3);
        let first = lease(&book, token("t")).await;
        assert!(matches!(
            book.acquire(token("t")).await,
            Ok(Taken::Full { scope: 0 })
        ));
        drop((taken, first));
        wait_count(&*store, GLOBAL_KEY, 0).await;
        wait_count(&*store, &token_key("t"), 0).await;
    }

    #[tokio::test]
    async fn an_asker_that_is_gone_leaves_no_lease_behind() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let book = book(store.clone(), Duration::from_secs(30));
        // Asked, then dropped before the answer could be read.
        let mut ask = Box::pin(book.acquire(connect(9)));
        assert!(poll_once(ask.as_mut()).await.is_none());
        drop(ask);
        tokio::time::sleep(Duration::from_millis(50)).await;
        wait_count(&*store, GLOBAL_KEY, 0).await;
        assert!(book.is_empty());
    }

    /// Polls `fut` once: its output if it was ready.
    #[test]
    fn names_are_written_as_the_display_would() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.3.255",
            "255.255.255.255",
            "2001:db8:1:2::7",
            "::ffff:192.0.2.9",
        ] {
            let client = ClientKey::from(ip.parse::<IpAddr>().unwrap());
            assert_eq!(ip_key(client), format!("gw:tcp:ip:{client}"));
            assert_eq!(named("gw:tcp:att:", client), format!("gw:tcp:att:{client}"));
        }
        assert_eq!(token_key("abc"), "gw:tcp:tok:abc");
        let book = book(Arc::new(MemoryStore::new()), Duration::from_secs(1));
        for id in [0, 7, 10, 1234567890, u64::MAX] {
            assert_eq!(book.holder(id), format!("gw-test:{id}"));
        }
    }

    async fn poll_once<F: std::future::Future + Unpin>(fut: F) -> Option<F::Output> {
        let mut fut = fut;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut fut).poll(cx) {
                std::task::Poll::Ready(out) => Some(out),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    #[tokio::test]
    async fn a_lease_the_store_lost_is_taken_again_at_the_next_renewal() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let ttl = Duration::from_millis(300);
        let book = book(store.clone(), ttl);
        let held = lease(&book, connect(2)).await;
        // The store loses it.
        store
            .lease_release(
                &[GLOBAL_KEY, &ip_key(connect(2).connect.unwrap())],
                &book.holder(0),
            )
            .await
            .unwrap();
        assert_eq!(store.lease_count(GLOBAL_KEY).await.unwrap(), 0);
        wait_count(&*store, GLOBAL_KEY, 1).await;
        assert_eq!(
            store
                .lease_count(&ip_key(connect(2).connect.unwrap()))
                .await
                .unwrap(),
            1
        );
        assert!(book.counters.leases_reasserted.load(Ordering::Relaxed) >= 1);
        drop(held);
        wait_count(&*store, GLOBAL_KEY, 0).await;
    }
}
