//! The state store: everything Redis holds in production, behind one trait.
//!
//! Two implementations pass the same conformance suite (`core/tests/it/store.rs`):
//! [`RedisStore`] (Lua scripts from `lua/`, atomic on the server, Redis's own clock) and
//! [`MemoryStore`] (in-process, for the embedded default `fctf up`).
//!
//! Names passed in (the `key` and `name` arguments) are the caller's, within one kind of entry;
//! the store maps them to logical keys with [`keys`] (so a lock can never collide with a counter)
//! and adds its own prefix. No name ever contains a raw challenge token: callers pass
//! [`keys::digest`] of it.
//!
//! Durations become whole milliseconds, rounded up (at least 1 ms, at most 100 years).

pub mod gcra;
pub mod keys;
mod memory;
mod redis;
mod ttl;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::{ChallengeId, InstanceId, TeamId};

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

/// Why a store call failed. Callers branch on the kind: `Unavailable` drives the fail-open or
/// fail-closed policy of each caller (see `../shared/TEST-PLAN.md`, decision 3).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or did not answer in time.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered something this code does not understand (a script error, a reply of
    /// the wrong type).
    #[error("state store protocol error: {0}")]
    Protocol(String),
    /// A stored record could not be decoded.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

/// Result of a state-store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Lifecycle state of one challenge instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    /// Reserved and published; waiting in the deploy queue.
    Queued,
    /// A consumer took the job and submitted it to the runtime.
    Deploying,
    /// The instance answers; a token can be issued.
    Running,
    /// A stop was requested; the runtime is tearing it down.
    Stopping,
    /// Gone (kept briefly so status can say so).
    Stopped,
    /// Could not be deployed; `reason` says why.
    Failed,
}

impl DeploymentState {
    /// True for states that hold a slot of the team's instance quota.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::Queued | Self::Deploying | Self::Running | Self::Stopping
        )
    }
}

/// The state record of one instance, stored under (team, challenge).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub team: TeamId,
    pub challenge: ChallengeId,
    pub instance: InstanceId,
    pub state: DeploymentState,
    /// Set by the store: 1 when reserved, bumped by every successful update. An update must name
    /// the version it read, so a slower writer can never overwrite a newer state.
    pub version: u64,
    /// Where the gateway sends traffic: a namespace name or `host:port`, once known.
    pub route: Option<String>,
    /// Why the instance failed or was stopped, in words a player understands.
    pub reason: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    /// Unix milliseconds.
    pub updated_at_ms: u64,
    /// End of the instance's lifetime in unix milliseconds, once Running.
    pub expires_at_ms: Option<u64>,
}

/// Outcome of [`StateStore::reserve_instance`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The quota slot is taken and the record (version 1) written.
    Reserved(DeploymentRecord),
    /// The team already has a record for this challenge; nothing changed.
    AlreadyActive(DeploymentRecord),
    /// The team holds `active` slots, which is at least its quota; nothing changed.
    QuotaExceeded { active: u32 },
}

/// Outcome of [`StateStore::update_deployment`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Written; the record as stored (version bumped).
    Updated(DeploymentRecord),
    /// Not written: the stored record is of another instance or another version (or absent).
    Conflict(Option<DeploymentRecord>),
}

/// A rate: `per_second` tokens refill a bucket that holds at most `burst`. Fractional rates are
/// fine; rates the algorithm cannot represent are clamped (see [`gcra`]), never ignored.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// Outcome of [`StateStore::rate_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// Whole tokens left after this call.
    pub remaining: u32,
    /// When refused: how long until `cost` tokens are available ([`Duration::MAX`] when `cost`
    /// exceeds what the bucket can ever hold). Zero when allowed.
    pub retry_after: Duration,
}

/// One cap that a connection lease counts against (for example global, per IP, per token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseScope<'a> {
    pub key: &'a str,
    pub cap: u32,
}

/// Outcome of [`StateStore::lease_acquire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The holder now has a lease in every scope.
    Acquired,
    /// Scope number `scope` (index into the request) already holds `held` >= cap live leases;
    /// no lease was taken in any scope.
    Full { scope: usize, held: u32 },
}

/// One holder's request for leases in several scopes (all or none), for
/// [`StateStore::lease_acquire_many`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRequest<'a> {
    /// The holder.
    pub holder: &'a str,
    /// The scopes, each with its cap.
    pub scopes: &'a [LeaseScope<'a>],
}

/// One holder's leases, for the calls that renew or release many holders' leases at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldLeases<'a> {
    /// The holder, as named when the leases were taken.
    pub holder: &'a str,
    /// The scopes (lease keys) it holds a lease in.
    pub keys: &'a [&'a str],
}

/// Proof of holding a lock; releasing needs it (compare-and-delete).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockToken(pub String);

/// The state store. All operations are atomic on their own; time-based ones use the store's
/// clock (Redis `TIME` for [`RedisStore`]), never the caller's.
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Round trip to the backend (readiness checks).
    async fn ping(&self) -> StoreResult<()>;

    // ---- deployment state and per-team instance quota ----

    /// Atomically: if a record exists for (team, challenge), return it; otherwise drop the
    /// team's expired quota slots, refuse when `quota` slots are live, else take a slot for
    /// `record.instance` (expiring after `ttl`) and write `record` with version 1 and TTL `ttl`.
    /// The store stamps `created_at_ms` and `updated_at_ms` with its own clock.
    async fn reserve_instance(
        &self,
        record: &DeploymentRecord,
        quota: u32,
        ttl: Duration,
    ) -> StoreResult<Reservation>;

    /// Write `record` if the stored record has the same instance and version; the stored copy
    /// gets version + 1 and TTL `ttl`, and the instance's quota slot is extended to `ttl` (or
    /// freed, when the new state is not [active](DeploymentState::is_active)). The store keeps
    /// `created_at_ms` and stamps `updated_at_ms`.
    async fn update_deployment(
        &self,
        record: &DeploymentRecord,
        ttl: Duration,
    ) -> StoreResult<UpdateOutcome>;

    /// Free the quota slot of `instance` and delete the record of (team, challenge) only if it
    /// belongs to `instance`. Returns whether a record was deleted. Idempotent.
    async fn release_instance(
        &self,
        team: TeamId,
        challenge: ChallengeId,
        instance: InstanceId,
    ) -> StoreResult<bool>;

    /// The record of (team, challenge), if any.
    async fn get_deployment(
        &self,
        team: TeamId,
        challenge: ChallengeId,
    ) -> StoreResult<Option<DeploymentRecord>>;

    /// Every deployment record (for the reconciler). Unordered.
    async fn list_deployments(&self) -> StoreResult<Vec<DeploymentRecord>>;

    /// Live quota slots of `team`.
    async fn quota_usage(&self, team: TeamId) -> StoreResult<u32>;

    // ---- rate limits (token bucket / GCRA on the store's clock) ----

    /// Take `cost` tokens from bucket `key` if it holds them.
    async fn rate_limit(&self, key: &str, limit: RateLimit, cost: u32)
    -> StoreResult<RateDecision>;

    /// Take as many tokens as the bucket holds, up to `max`; returns how many were taken. For
    /// local pre-allocation: a gateway takes a batch and spends it in-process.
    async fn rate_take(&self, key: &str, limit: RateLimit, max: u32) -> StoreResult<u32>;

    // ---- connection leases (expire on their own when their holder dies) ----

    /// Take a lease for `holder` in every scope, or in none (when one is at its cap). Expired
    /// leases are dropped first. Re-acquiring a lease the holder already has renews it.
    async fn lease_acquire(
        &self,
        scopes: &[LeaseScope<'_>],
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<LeaseOutcome>;

    /// [`lease_acquire`](Self::lease_acquire) for each of `requests`, in one round trip (one
    /// process takes its connections' leases together). The requests are taken in order, each
    /// all or none on its own, as consecutive calls would; the answer has one outcome per
    /// request, in order.
    async fn lease_acquire_many(
        &self,
        requests: &[LeaseRequest<'_>],
        ttl: Duration,
    ) -> StoreResult<Vec<LeaseOutcome>>;

    /// Extend `holder`'s leases in `keys` to `ttl` from now. Returns false (and re-creates
    /// nothing) if any of them had already expired or been released.
    async fn lease_renew(&self, keys: &[&str], holder: &str, ttl: Duration) -> StoreResult<bool>;

    /// Drop `holder`'s leases in `keys`. Idempotent.
    async fn lease_release(&self, keys: &[&str], holder: &str) -> StoreResult<()>;

    /// [`lease_renew`](Self::lease_renew) for each of `held`, in one round trip (one process
    /// renews all its sessions' leases together). Each holder is renewed or not on its own, as
    /// its own call would; the answer has one entry per holder, in order.
    async fn lease_renew_many(
        &self,
        held: &[HeldLeases<'_>],
        ttl: Duration,
    ) -> StoreResult<Vec<bool>>;

    /// [`lease_release`](Self::lease_release) for each of `held`, in one round trip. Idempotent.
    async fn lease_release_many(&self, held: &[HeldLeases<'_>]) -> StoreResult<()>;

    /// Live leases in `key`.
    async fn lease_count(&self, key: &str) -> StoreResult<u32>;

    // ---- short locks ----

    /// Take lock `name` for `ttl` if nobody holds it.
    async fn lock_acquire(&self, name: &str, ttl: Duration) -> StoreResult<Option<LockToken>>;

    /// Release lock `name` only if `token` still holds it (compare-and-delete).
    async fn lock_release(&self, name: &str, token: &LockToken) -> StoreResult<bool>;

    // ---- counters, cooldowns, nonces ----

    /// Increment counter `key` unless it is already at `cap`; the counter expires `window` after
    /// its first increment. Returns the new value, or `None` when at the cap (unchanged).
    async fn counter_incr(&self, key: &str, cap: u64, window: Duration)
    -> StoreResult<Option<u64>>;

    /// Current value of counter `key` (0 when absent or expired).
    async fn counter_get(&self, key: &str) -> StoreResult<u64>;

    /// Delete counter `key`.
    async fn counter_reset(&self, key: &str) -> StoreResult<()>;

    /// Start a cooldown of `period` on `key` unless one is running. Returns `None` when started,
    /// or the time left of the running one.
    async fn cooldown_begin(&self, key: &str, period: Duration) -> StoreResult<Option<Duration>>;

    /// Remember `key` for `ttl`. Returns true if it was not already remembered (a fresh nonce).
    async fn remember_once(&self, key: &str, ttl: Duration) -> StoreResult<bool>;
}

#[cfg(test)]
mod tests;
