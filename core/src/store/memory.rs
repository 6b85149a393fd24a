//! [`MemoryStore`]: the state store in process memory, for the embedded default (`fctf up`).
//!
//! Same semantics as the Redis store, call for call: each operation runs under one
//! `std::sync::Mutex` (never held across an await), so it is atomic as a Lua script is. Time
//! for expiry, rate limits and leases is Tokio's monotonic clock (so tests can pause it); record
//! timestamps are wall-clock Unix milliseconds.

mod expiring;

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use self::expiring::Expiring;
use super::gcra::Gcra;
use super::{
    DeploymentRecord, HeldLeases, LeaseOutcome, LeaseRequest, LeaseScope, LockToken, RateDecision,
    RateLimit, Reservation, StateStore, StoreResult, UpdateOutcome, ttl,
};
use crate::clock;
use crate::ids::{ChallengeId, InstanceId, TeamId};

/// The in-process state store. Cheap to create; share it behind an `Arc`.
#[derive(Debug)]
pub struct MemoryStore {
    /// Zero of the store's clock.
    base: Instant,
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            state: Mutex::new(State::new()),
        }
    }

    /// Entries held, live or expired but not yet swept: for metrics and memory-bound tests.
    pub fn entry_count(&self) -> usize {
        self.lock().entry_count()
    }

    /// Run `op` on the state at the store's current time (µs since `base`).
    fn with<T>(&self, op: impl FnOnce(&mut State, u64) -> T) -> T {
        let now = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX);
        op(&mut self.lock(), now)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every operation leaves the maps consistent before it could panic, so the state behind
        // a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Members of one set (quota slots of a team, leases of a scope), each with its expiry (µs):
/// what a Redis sorted set scored by expiry is to [`RedisStore`](super::RedisStore).
#[derive(Debug)]
struct Slots<M>(BTreeMap<M, u64>);

impl<M: Ord> Slots<M> {
    fn prune(&mut self, now: u64) {
        self.0.retain(|_, expires_at| *expires_at > now);
    }

    fn live_count(&self, now: u64) -> u32 {
        let live = self.0.values().filter(|e| **e > now).count();
        u32::try_from(live).unwrap_or(u32::MAX)
    }

    fn is_live<Q>(&self, member: &Q, now: u64) -> bool
    where
        M: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.get(member).is_some_and(|e| *e > now)
    }

    /// When the last member expires: the whole set's expiry.
    fn latest(&self) -> u64 {
        self.0.values().copied().max().unwrap_or(0)
    }
}

/// Put `member` into set `key` until `expires_at`; the set lives as long as its last member.
fn put_slot<K, M>(sets: &mut Expiring<K, Slots<M>>, key: K, member: M, expires_at: u64, now: u64)
where
    K: Ord + Clone,
    M: Ord,
{
    if let Some(slots) = sets.get_mut(&key, now) {
        slots.0.insert(member, expires_at);
        let latest = slots.latest();
        sets.set_expiry(&key, latest);
    } else {
        sets.insert(
            key,
            Slots(BTreeMap::from([(member, expires_at)])),
            expires_at,
        );
    }
}

/// Take `member` out of set `key`; an emptied set disappears.
fn remove_slot<K, KQ, M, MQ>(sets: &mut Expiring<K, Slots<M>>, key: &KQ, member: &MQ, now: u64)
where
    K: Ord + Clone + Borrow<KQ>,
    KQ: Ord + ?Sized,
    M: Ord + Borrow<MQ>,
    MQ: Ord + ?Sized,
{
    let Some(slots) = sets.get_mut(key, now) else {
        return;
    };
    slots.0.remove(member);
    if slots.0.is_empty() {
        sets.remove(key, now);
    } else {
        let latest = slots.latest();
        sets.set_expiry(key, latest);
    }
}

/// Everything the store holds, one map per kind of entry (so kinds can never collide).
#[derive(Debug)]
struct State {
    deployments: Expiring<(TeamId, ChallengeId), DeploymentRecord>,
    quotas: Expiring<TeamId, Slots<InstanceId>>,
    /// Rate-limit buckets: the TAT (µs), expiring when it passes.
    buckets: Expiring<String, u64>,
    leases: Expiring<String, Slots<String>>,
    locks: Expiring<String, String>,
    counters: Expiring<String, u64>,
    cooldowns: Expiring<String, ()>,
    nonces: Expiring<String, ()>,
}

impl State {
    fn new() -> Self {
        Self {
            deployments: Expiring::new(),
            quotas: Expiring::new(),
            buckets: Expiring::new(),
            leases: Expiring::new(),
            locks: Expiring::new(),
            counters: Expiring::new(),
            cooldowns: Expiring::new(),
            nonces: Expiring::new(),
        }
    }

    fn entry_count(&self) -> usize {
        self.deployments.len()
            + self.quotas.len()
            + self.buckets.len()
            + self.leases.len()
            + self.locks.len()
            + self.counters.len()
            + self.cooldowns.len()
            + self.nonces.len()
    }

    fn reserve(
        &mut self,
        record: &DeploymentRecord,
        quota: u32,
        ttl_us: u64,
        now: u64,
        wall_ms: u64,
    ) -> Reservation {
        self.deployments.sweep(now);
        self.quotas.sweep(now);
        let key = (record.team, record.challenge);
        if let Some(existing) = self.deployments.get_mut(&key, now) {
            return Reservation::AlreadyActive(existing.clone());
        }
        let active = self.quotas.get_mut(&record.team, now).map_or(0, |slots| {
            slots.prune(now);
            slots.live_count(now)
        });
        if active >= quota {
            return Reservation::QuotaExceeded { active };
        }
        let expires_at = now + ttl_us;
        put_slot(
            &mut self.quotas,
            record.team,
            record.instance,
            expires_at,
            now,
        );
        let stored = DeploymentRecord {
            version: 1,
            created_at_ms: wall_ms,
            updated_at_ms: wall_ms,
            ..record.clone()
        };
        self.deployments.insert(key, stored.clone(), expires_at);
        Reservation::Reserved(stored)
    }

    fn update(
        &mut self,
        record: &DeploymentRecord,
        ttl_us: u64,
        now: u64,
        wall_ms: u64,
    ) -> UpdateOutcome {
        let key = (record.team, record.challenge);
        let Some(stored) = self.deployments.get_mut(&key, now) else {
            return UpdateOutcome::Conflict(None);
        };
        if stored.instance != record.instance || stored.version != record.version {
            return UpdateOutcome::Conflict(Some(stored.clone()));
        }
        let next = DeploymentRecord {
            version: stored.version + 1,
            created_at_ms: stored.created_at_ms,
            updated_at_ms: wall_ms,
            ..record.clone()
        };
        let expires_at = now + ttl_us;
        self.deployments.insert(key, next.clone(), expires_at);
        if record.state.is_active() {
            put_slot(
                &mut self.quotas,
                record.team,
                record.instance,
                expires_at,
                now,
            );
        } else {
            remove_slot(&mut self.quotas, &record.team, &record.instance, now);
        }
        UpdateOutcome::Updated(next)
    }

    fn release(
        &mut self,
        team: TeamId,
        challenge: ChallengeId,
        instance: InstanceId,
        now: u64,
    ) -> bool {
        remove_slot(&mut self.quotas, &team, &instance, now);
        let key = (team, challenge);
        let owned = self
            .deployments
            .get_mut(&key, now)
            .is_some_and(|r| r.instance == instance);
        if owned {
            self.deployments.remove(&key, now);
        }
        owned
    }

    fn rate_limit(&mut self, key: &str, limit: RateLimit, cost: u32, now: u64) -> RateDecision {
        self.buckets.sweep(now);
        let tat = self.buckets.get_mut(key, now).copied();
        let checked = Gcra::new(limit).check(tat, now, cost);
        if let Some(t) = checked.new_tat {
            self.buckets.insert(key.to_owned(), t, t);
        }
        checked.decision
    }

    fn rate_take(&mut self, key: &str, limit: RateLimit, max: u32, now: u64) -> u32 {
        self.buckets.sweep(now);
        let tat = self.buckets.get_mut(key, now).copied();
        let taken = Gcra::new(limit).take(tat, now, max);
        if let Some(t) = taken.new_tat {
            self.buckets.insert(key.to_owned(), t, t);
        }
        taken.taken
    }

    fn lease_acquire(
        &mut self,
        scopes: &[LeaseScope<'_>],
        holder: &str,
        ttl_us: u64,
        now: u64,
    ) -> LeaseOutcome {
        self.leases.sweep(now);
        // Check every scope before touching any: all or none.
        for (index, scope) in scopes.iter().enumerate() {
            let (holds, held) = self
                .leases
                .get_mut(scope.key, now)
                .map_or((false, 0), |slots| {
                    slots.prune(now);
                    (slots.is_live(holder, now), slots.live_count(now))
                });
            // A holder that already has its lease renews it: it takes no new place.
            if !holds && held >= scope.cap {
                return LeaseOutcome::Full { scope: index, held };
            }
        }
        for scope in scopes {
            put_slot(
                &mut self.leases,
                scope.key.to_owned(),
                holder.to_owned(),
                now + ttl_us,
                now,
            );
        }
        LeaseOutcome::Acquired
    }

    fn lease_renew(&mut self, keys: &[&str], holder: &str, ttl_us: u64, now: u64) -> bool {
        let all_live = keys.iter().all(|key| {
            self.leases
                .get_mut(*key, now)
                .is_some_and(|slots| slots.is_live(holder, now))
        });
        if all_live {
            for key in keys {
                put_slot(
                    &mut self.leases,
                    (*key).to_owned(),
                    holder.to_owned(),
                    now + ttl_us,
                    now,
                );
            }
        }
        all_live
    }

    fn lease_release(&mut self, keys: &[&str], holder: &str, now: u64) {
        for key in keys {
            remove_slot(&mut self.leases, *key, holder, now);
        }
    }

    fn lease_count(&mut self, key: &str, now: u64) -> u32 {
        self.leases
            .get_mut(key, now)
            .map_or(0, |slots| slots.live_count(now))
    }

    fn lock_acquire(&mut self, name: &str, ttl_us: u64, now: u64) -> Option<LockToken> {
        self.locks.sweep(now);
        if self.locks.get_mut(name, now).is_some() {
            return None;
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        self.locks
            .insert(name.to_owned(), token.clone(), now + ttl_us);
        Some(LockToken(token))
    }

    fn lock_release(&mut self, name: &str, token: &LockToken, now: u64) -> bool {
        let held = self
            .locks
            .get_mut(name, now)
            .is_some_and(|current| *current == token.0);
        if held {
            self.locks.remove(name, now);
        }
        held
    }

    fn counter_incr(&mut self, key: &str, cap: u64, window_us: u64, now: u64) -> Option<u64> {
        self.counters.sweep(now);
        match self.counters.get_mut(key, now) {
            Some(value) if *value >= cap => None,
            Some(value) => {
                *value += 1;
                Some(*value)
            }
            None if cap == 0 => None,
            None => {
                self.counters.insert(key.to_owned(), 1, now + window_us);
                Some(1)
            }
        }
    }

    fn cooldown_begin(&mut self, key: &str, period_us: u64, now: u64) -> Option<Duration> {
        self.cooldowns.sweep(now);
        if let Some((_, expires_at)) = self.cooldowns.get_with_expiry(key, now) {
            return Some(Duration::from_micros(expires_at - now));
        }
        self.cooldowns.insert(key.to_owned(), (), now + period_us);
        None
    }

    fn remember_once(&mut self, key: &str, ttl_us: u64, now: u64) -> bool {
        self.nonces.sweep(now);
        if self.nonces.get_mut(key, now).is_some() {
            return false;
        }
        self.nonces.insert(key.to_owned(), (), now + ttl_us);
        true
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn reserve_instance(
        &self,
        record: &DeploymentRecord,
        quota: u32,
        ttl: Duration,
    ) -> StoreResult<Reservation> {
        let wall_ms = clock::unix_now_millis();
        Ok(self.with(|s, now| s.reserve(record, quota, ttl::micros(ttl), now, wall_ms)))
    }

    async fn update_deployment(
        &self,
        record: &DeploymentRecord,
        ttl: Duration,
    ) -> StoreResult<UpdateOutcome> {
        let wall_ms = clock::unix_now_millis();
        Ok(self.with(|s, now| s.update(record, ttl::micros(ttl), now, wall_ms)))
    }

    async fn release_instance(
        &self,
        team: TeamId,
        challenge: ChallengeId,
        instance: InstanceId,
    ) -> StoreResult<bool> {
        Ok(self.with(|s, now| s.release(team, challenge, instance, now)))
    }

    async fn get_deployment(
        &self,
        team: TeamId,
        challenge: ChallengeId,
    ) -> StoreResult<Option<DeploymentRecord>> {
        Ok(self.with(|s, now| s.deployments.get_mut(&(team, challenge), now).cloned()))
    }

    async fn list_deployments(&self) -> StoreResult<Vec<DeploymentRecord>> {
        Ok(self.with(|s, now| s.deployments.live(now).map(|(_, r)| r.clone()).collect()))
    }

    async fn quota_usage(&self, team: TeamId) -> StoreResult<u32> {
        Ok(self.with(|s, now| {
            s.quotas
                .get_mut(&team, now)
                .map_or(0, |slots| slots.live_count(now))
        }))
    }

    async fn rate_limit(
        &self,
        key: &str,
        limit: RateLimit,
        cost: u32,
    ) -> StoreResult<RateDecision> {
        Ok(self.with(|s, now| s.rate_limit(key, limit, cost, now)))
    }

    async fn rate_take(&self, key: &str, limit: RateLimit, max: u32) -> StoreResult<u32> {
        Ok(self.with(|s, now| s.rate_take(key, limit, max, now)))
    }

    async fn lease_acquire(
        &self,
        scopes: &[LeaseScope<'_>],
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<LeaseOutcome> {
        Ok(self.with(|s, now| s.lease_acquire(scopes, holder, ttl::micros(ttl), now)))
    }

    async fn lease_renew(&self, keys: &[&str], holder: &str, ttl: Duration) -> StoreResult<bool> {
        Ok(self.with(|s, now| s.lease_renew(keys, holder, ttl::micros(ttl), now)))
    }

    async fn lease_release(&self, keys: &[&str], holder: &str) -> StoreResult<()> {
        self.with(|s, now| s.lease_release(keys, holder, now));
        Ok(())
    }

    async fn lease_acquire_many(
        &self,
        requests: &[LeaseRequest<'_>],
        ttl: Duration,
    ) -> StoreResult<Vec<LeaseOutcome>> {
        let ttl_us = ttl::micros(ttl);
        Ok(self.with(|s, now| {
            requests
                .iter()
                .map(|r| s.lease_acquire(r.scopes, r.holder, ttl_us, now))
                .collect()
        }))
    }

    async fn lease_renew_many(
        &self,
        held: &[HeldLeases<'_>],
        ttl: Duration,
    ) -> StoreResult<Vec<bool>> {
        let ttl_us = ttl::micros(ttl);
        Ok(self.with(|s, now| {
            held.iter()
                .map(|h| s.lease_renew(h.keys, h.holder, ttl_us, now))
                .collect()
        }))
    }

    async fn lease_release_many(&self, held: &[HeldLeases<'_>]) -> StoreResult<()> {
        self.with(|s, now| {
            for h in held {
                s.lease_release(h.keys, h.holder, now);
            }
        });
        Ok(())
    }

    async fn lease_count(&self, key: &str) -> StoreResult<u32> {
        Ok(self.with(|s, now| s.lease_count(key, now)))
    }

    async fn lock_acquire(&self, name: &str, ttl: Duration) -> StoreResult<Option<LockToken>> {
        Ok(self.with(|s, now| s.lock_acquire(name, ttl::micros(ttl), now)))
    }

    async fn lock_release(&self, name: &str, token: &LockToken) -> StoreResult<bool> {
        Ok(self.with(|s, now| s.lock_release(name, token, now)))
    }

    async fn counter_incr(
        &self,
        key: &str,
        cap: u64,
        window: Duration,
    ) -> StoreResult<Option<u64>> {
        Ok(self.with(|s, now| s.counter_incr(key, cap, ttl::micros(window), now)))
    }

    async fn counter_get(&self, key: &str) -> StoreResult<u64> {
        Ok(self.with(|s, now| s.counters.get_mut(key, now).copied().unwrap_or(0)))
    }

    async fn counter_reset(&self, key: &str) -> StoreResult<()> {
        self.with(|s, now| s.counters.remove(key, now));
        Ok(())
    }

    async fn cooldown_begin(&self, key: &str, period: Duration) -> StoreResult<Option<Duration>> {
        Ok(self.with(|s, now| s.cooldown_begin(key, ttl::micros(period), now)))
    }

    async fn remember_once(&self, key: &str, ttl: Duration) -> StoreResult<bool> {
        Ok(self.with(|s, now| s.remember_once(key, ttl::micros(ttl), now)))
    }
}
