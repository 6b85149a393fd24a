//! Admission: may this token, from this address, reach its instance now?
//!
//! Three checks, cheapest first, shared by the HTTP and TCP gateways:
//!
//! 1. [`Admission::verify`]: the token is authentic and valid (no store involved: a token check
//!    never fails because Redis is down). Verified tokens are cached until their `exp`, keyed by
//!    the token itself: a hit costs the cache's keyed hash of the token and one comparison, no
//!    SHA-256, HMAC or JSON work and no allocation. [`keys::digest`] (the token's name in store
//!    keys) is computed once, on a miss, and kept in the [`Grant`].
//! 2. [`Admission::check_live`]: the token's instance is still the Running one of its (team,
//!    challenge); the store's answer is cached briefly (`gateway.route_cache_ms`), so a stopped or
//!    replaced instance is unreachable at most that long after. [`Admission::await_live`] waits
//!    a while for an instance that is still starting (`gateway.starting_hold_ms`).
//! 3. [`Admission::limit`]: a rate limit on the store's clock, shared by every gateway. When the
//!    store is unreachable, limits fall back to this process's own GCRA buckets (or refuse, in
//!    fail-closed mode); every fallback is counted.
//!
//! Buckets with a burst of 20 or more spend tokens pre-allocated in batches ([`crate::budget`]),
//! so most requests pay no store round trip. The HTTP buckets are named by a [`Bucket`] value,
//! whose store name (a `String`) is built only when the store is asked, once per batch.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::store::gcra::Gcra;
use fctf_core::store::{DeploymentState, RateLimit, StateStore, keys};
use fctf_core::token::{Claims, TokenError, Verifier};
use moka::ops::compute::Op;

use crate::budget::{self, LocalBudget, Spend};
use crate::routing::{RouteError, Routing, Upstream};

/// The hasher of the per-request caches: seeded at random per process (a player cannot aim
/// collisions), and several times cheaper than the default SipHash on a token of a few hundred
/// bytes.
type Hasher = foldhash::fast::RandomState;

/// Most verified tokens kept at once. Only authentic tokens enter, so a flood of forged ones
/// cannot evict the real ones; each entry is well under 1 KiB.
const GRANT_CACHE_CAPACITY: u64 = 200_000;

/// Most instances whose liveness is cached at once.
const LIVENESS_CACHE_CAPACITY: u64 = 100_000;

/// Most local (fallback) rate-limit buckets; idle ones go first.
const LOCAL_BUCKETS_CAPACITY: u64 = 200_000;

/// How often a request held for a starting instance looks at its state again, and how long a
/// "starting" answer from the store is cached: the hold ends soon after the instance runs,
/// without a busy loop.
pub const STARTING_RECHECK: Duration = Duration::from_millis(250);

/// `Retry-After` of the answer "instance is starting", in seconds.
pub const STARTING_RETRY_AFTER_SECS: u64 = 2;

/// The token failure reasons counted in metrics (`reason` label), in counter index order: the
/// verifier's [`TokenError::kind`]s, then the gateway's own.
pub const TOKEN_FAILURE_REASONS: [&str; 10] = [
    "too_long",
    "malformed",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "missing_token",
    "bad_route",
    "not_live",
    "wrong_instance",
];

/// A verified token: its claims and where its route leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The token's claims.
    pub claims: Claims,
    /// The upstream the route names (not yet resolved when it is a host name).
    pub upstream: Upstream,
    /// [`keys::digest`] of the token: the token's name in store keys and logs.
    pub digest: Arc<str>,
    /// The upstream connection pool of the token's instance (a hash of its id): pooled
    /// connections are per instance, so a replaced instance never gets the old ones.
    pub pool_key: u64,
}

impl Grant {
    /// Whole seconds until the token expires (0 once past `exp`).
    pub fn secs_left(&self, now_unix: u64) -> u64 {
        self.claims.exp.saturating_sub(now_unix)
    }
}

/// Why a request or connection is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No token was presented.
    #[error("missing token")]
    MissingToken,
    /// The token was refused by the verifier.
    #[error("{}", .0.reason())]
    Token(TokenError),
    /// The token is authentic but its route is unusable (a minting bug, not the player's).
    #[error("token route is invalid")]
    BadRoute,
    /// The token's instance is no longer the live one (stopped, or replaced by a newer start).
    #[error("this instance is no longer running; open the challenge again")]
    NotLive,
    /// The token's instance is still being deployed (queued or deploying).
    #[error("instance is starting, try again in a few seconds")]
    Starting,
    /// The token is for another instance than the host name the request was sent to.
    #[error("this token is for another instance")]
    WrongInstance,
    /// A rate limit refused; retry after the given time.
    #[error("too many requests")]
    Limited {
        /// How long until the bucket allows one more.
        retry_after: Duration,
    },
    /// The state store is unreachable and limits are configured to fail closed.
    #[error("temporarily unavailable")]
    StoreDown,
}

impl Refusal {
    /// The HTTP status for this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::MissingToken | Refusal::Token(_) => 401,
            Refusal::BadRoute | Refusal::NotLive | Refusal::WrongInstance => 403,
            Refusal::Limited { .. } => 429,
            Refusal::StoreDown | Refusal::Starting => 503,
        }
    }

    /// Metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing_token",
            Refusal::Token(e) => e.kind(),
            Refusal::BadRoute => "bad_route",
            Refusal::NotLive => "not_live",
            Refusal::Starting => "starting",
            Refusal::WrongInstance => "wrong_instance",
            Refusal::Limited { .. } => "rate_limited",
            Refusal::StoreDown => "store_down",
        }
    }

    /// Whole seconds for a `Retry-After` header, when one applies (at least 1).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Refusal::Limited { retry_after } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
                    .map(|s| s.max(1))
            }
            Refusal::StoreDown => Some(1),
            Refusal::Starting => Some(STARTING_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// The index of this refusal in [`TOKEN_FAILURE_REASONS`], when it is a token failure.
    pub fn token_failure_index(&self) -> Option<usize> {
        Some(match self {
            Refusal::Token(TokenError::TooLong) => 0,
            Refusal::Token(TokenError::Malformed) => 1,
            Refusal::Token(TokenError::UnknownKey) => 2,
            Refusal::Token(TokenError::BadSignature) => 3,
            Refusal::Token(TokenError::Expired) => 4,
            Refusal::Token(TokenError::NotYetValid) => 5,
            Refusal::MissingToken => 6,
            Refusal::BadRoute => 7,
            Refusal::NotLive => 8,
            Refusal::WrongInstance => 9,
            Refusal::Limited { .. } | Refusal::StoreDown | Refusal::Starting => return None,
        })
    }
}

/// What admission needs to know, from `[gateway]` and `[tokens]`.
#[derive(Clone, Debug)]
pub struct AdmissionSettings {
    /// How namespace routes map to services.
    pub routing: Routing,
    /// How long a liveness answer from the store is trusted (zero: never cached).
    pub route_cache: Duration,
    /// Refuse (503) instead of falling back to local limits while the store is unreachable.
    pub fail_closed: bool,
    /// How long a request or connection for an instance that is still starting waits for it to
    /// run before it is answered "instance is starting" (zero: answered at once).
    pub starting_hold: Duration,
}

/// Counters for metrics; all monotonic.
#[derive(Debug, Default)]
pub struct AdmissionCounters {
    /// Verifications answered from the token cache.
    pub token_cache_hits: AtomicU64,
    /// Verifications that ran the verifier.
    pub token_cache_misses: AtomicU64,
    /// Liveness checks answered from the cache.
    pub liveness_cache_hits: AtomicU64,
    /// Liveness checks that asked the store.
    pub liveness_cache_misses: AtomicU64,
    /// Token failures, indexed like [`TOKEN_FAILURE_REASONS`].
    pub token_failures: [AtomicU64; TOKEN_FAILURE_REASONS.len()],
    /// Requests and connections held because their instance was starting.
    pub starting_holds: AtomicU64,
    /// Held ones whose instance was still starting at the end of the hold (answered 503).
    pub starting_timeouts: AtomicU64,
    /// Store calls that failed, so a fallback (or a fail-closed refusal) decided instead.
    pub store_fallbacks: AtomicU64,
    /// Rate-limit calls to the store (one per batch for batched buckets).
    pub limit_store_calls: AtomicU64,
}

/// The admission checks, shared by every request and connection of a gateway process.
#[derive(Debug)]
pub struct Admission {
    verifier: Verifier,
    settings: AdmissionSettings,
    store: Arc<dyn StateStore>,
    /// Keyed by the token itself (the cache hashes it with a per-process random key and
    /// compares it whole on a hit).
    grants: moka::sync::Cache<Box<str>, Arc<Grant>, Hasher>,
    liveness: Option<moka::sync::Cache<(TeamId, ChallengeId), Seen, Hasher>>,
    local: LocalLimits,
    budgets: moka::sync::Cache<Bucket, Arc<parking_lot::Mutex<LocalBudget>>, Hasher>,
    counters: AdmissionCounters,
}

impl Admission {
    /// Admission with `verifier`'s keys, `store` for liveness and limits, and `settings`.
    pub fn new(
        verifier: Verifier,
        store: Arc<dyn StateStore>,
        settings: AdmissionSettings,
    ) -> Self {
        let grants = moka::sync::Cache::builder()
            .max_capacity(GRANT_CACHE_CAPACITY)
            .expire_after(UntilExpiry)
            .build_with_hasher(Hasher::default());
        let liveness = (!settings.route_cache.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(LIVENESS_CACHE_CAPACITY)
                .expire_after(LiveFor(settings.route_cache))
                .build_with_hasher(Hasher::default())
        });
        Admission {
            verifier,
            settings,
            store,
            grants,
            liveness,
            local: LocalLimits::new(),
            budgets: moka::sync::Cache::builder()
                .max_capacity(LOCAL_BUCKETS_CAPACITY)
                // Held tokens lapse within a second anyway.
                .time_to_idle(Duration::from_secs(10))
                .build_with_hasher(Hasher::default()),
            counters: AdmissionCounters::default(),
        }
    }

    /// The counters, for metrics.
    pub fn counters(&self) -> &AdmissionCounters {
        &self.counters
    }

    /// The settings this admission was made with.
    pub fn settings(&self) -> &AdmissionSettings {
        &self.settings
    }

    /// True when limits refuse while the store is unreachable (instead of falling back).
    pub fn fails_closed(&self) -> bool {
        self.settings.fail_closed
    }

    /// Counts `refusal` in the token failure metrics when it is a token failure (the checks
    /// here count their own; callers count the ones they decide, such as a missing token).
    pub fn count_refusal(&self, refusal: &Refusal) {
        if let Some(i) = refusal.token_failure_index() {
            self.counters.token_failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The store limits and liveness go through.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The grant of `token` if it is authentic and valid at `now_unix`.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Arc<Grant>, Refusal> {
        if token.len() > fctf_core::token::MAX_TOKEN_LEN {
            // Refused before hashing, like the verifier would.
            let refusal = Refusal::Token(TokenError::TooLong);
            self.count_refusal(&refusal);
            return Err(refusal);
        }
        if let Some(grant) = self.grants.get(token) {
            // Past `exp`, only the verifier knows the skew rules: ask it again.
            if now_unix <= grant.claims.exp {
                self.counters
                    .token_cache_hits
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(grant);
            }
        }
        self.counters
            .token_cache_misses
            .fetch_add(1, Ordering::Relaxed);
        let claims = self.verifier.verify(token, now_unix).map_err(|error| {
            let refusal = Refusal::Token(error);
            self.count_refusal(&refusal);
            refusal
        })?;
        let upstream = self
            .settings
            .routing
            .upstream(&claims.route)
            .map_err(|_: RouteError| {
                self.count_refusal(&Refusal::BadRoute);
                Refusal::BadRoute
            })?;
        let pool_key = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            claims.instance.hash(&mut hasher);
            hasher.finish()
        };
        let grant = Arc::new(Grant {
            claims,
            upstream,
            digest: keys::digest(token.as_bytes()).into(),
            pool_key,
        });
        // Tokens in their skew margin past `exp` are not cached: every use re-verifies them.
        if now_unix <= grant.claims.exp {
            self.grants.insert(token.into(), Arc::clone(&grant));
        }
        Ok(grant)
    }

    /// Ok when the grant's instance is the Running instance of its (team, challenge);
    /// [`Refusal::Starting`] while that instance is still queued or deploying.
    ///
    /// While the store is unreachable (and nothing is cached), the instance counts as live
    /// unless limits fail closed: the token itself was verified, and a stopped instance is
    /// unreachable anyway.
    pub async fn check_live(&self, grant: &Grant) -> Result<(), Refusal> {
        let decision = self.live(grant).await;
        if let Err(refusal) = &decision {
            self.count_refusal(refusal);
        }
        decision
    }

    /// True while the grant's instance is still the live one as far as the store (or its
    /// cache) says; false once it is stopped or replaced. For sessions that outlive their
    /// admission: not a refusal, so not counted as a token failure.
    pub async fn still_live(&self, grant: &Grant) -> bool {
        self.live(grant).await != Err(Refusal::NotLive)
    }

    /// Returns once the grant's instance is no longer the live one, looking every `every`
    /// (through the liveness cache, so within `every` + `route_cache_ms` of a stop); never when
    /// `every` is zero. For sessions that outlive their admission (TCP, WebSocket).
    pub async fn until_not_live(&self, grant: &Grant, every: Duration) {
        if every.is_zero() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(every).await;
            if !self.still_live(grant).await {
                return;
            }
        }
    }

    /// [`Self::check_live`] without counting.
    async fn live(&self, grant: &Grant) -> Result<(), Refusal> {
        let key = (grant.claims.team, grant.claims.challenge);
        if let Some(seen) = self.liveness.as_ref().and_then(|cache| cache.get(&key)) {
            self.counters
                .liveness_cache_hits
                .fetch_add(1, Ordering::Relaxed);
            let verdict = seen.live.admits(grant.claims.instance);
            // A refusal from the cache is final only for tokens older than the cached answer:
            // a token issued since then may name the instance that replaced the cached one
            // (a fresh start within the route cache time), so the store is asked. Old tokens
            // of stopped instances stay served from the cache.
            if verdict.is_ok() || !seen.may_be_older_than(grant.claims.iat) {
                return verdict;
            }
        }
        self.counters
            .liveness_cache_misses
            .fetch_add(1, Ordering::Relaxed);
        match self.store.get_deployment(key.0, key.1).await {
            Ok(record) => {
                let live = Live::of(record.as_ref().map(|r| (r.state, r.instance)));
                if let Some(cache) = &self.liveness {
                    let at_secs = fctf_core::clock::unix_now_secs();
                    cache.insert(key, Seen { live, at_secs });
                }
                live.admits(grant.claims.instance)
            }
            Err(error) => {
                self.counters
                    .store_fallbacks
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "liveness check without the store");
                if self.settings.fail_closed {
                    Err(Refusal::StoreDown)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// [`Self::check_live`], but an instance that is still starting is waited for: its state
    /// is looked at again every [`STARTING_RECHECK`] for up to the configured hold
    /// (`gateway.starting_hold_ms`), and the request goes on as soon as it runs. Costs nothing
    /// more for a running instance.
    pub async fn await_live(&self, grant: &Grant) -> Result<(), Refusal> {
        let first = self.check_live(grant).await;
        let hold = self.settings.starting_hold;
        if first != Err(Refusal::Starting) || hold.is_zero() {
            return first;
        }
        self.counters.starting_holds.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                self.counters
                    .starting_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::Starting);
            }
            tokio::time::sleep(left.min(STARTING_RECHECK)).await;
            match self.check_live(grant).await {
                Err(Refusal::Starting) => {}
                other => return other,
            }
        }
    }

    /// Forgets what is cached about the instance of (team, challenge), so the next request
    /// asks the store (for a stop notification).
    pub fn forget_instance(&self, team: TeamId, challenge: ChallengeId) {
        if let Some(cache) = &self.liveness {
            cache.invalidate(&(team, challenge));
        }
    }

    /// Takes one token from the bucket `name` (a store rate-limit name: never a raw secret).
    ///
    /// Buckets with a burst of 20 or more are served from tokens pre-allocated in batches
    /// ([`crate::budget`]): one store call per batch. Smaller ones ask the store every time,
    /// which also gives an exact `Retry-After`.
    pub async fn limit(&self, name: &str, limit: RateLimit) -> Result<(), Refusal> {
        self.limit_bucket(&Bucket::Named(name.into()), limit).await
    }

    /// [`Self::limit`] for a [`Bucket`]: no `String` is built unless the store is asked.
    pub async fn limit_bucket(&self, bucket: &Bucket, limit: RateLimit) -> Result<(), Refusal> {
        let batch = budget::batch_size(limit);
        if batch <= 1 {
            self.counters
                .limit_store_calls
                .fetch_add(1, Ordering::Relaxed);
            let name = bucket.name();
            return match self.store.rate_limit(&name, limit, 1).await {
                Ok(decision) if decision.allowed => Ok(()),
                Ok(decision) => Err(Refusal::Limited {
                    retry_after: decision.retry_after,
                }),
                Err(error) => self.limit_without_store(&name, limit, &error),
            };
        }
        let held = self.budgets.get_with_by_ref(bucket, || {
            Arc::new(parking_lot::Mutex::new(LocalBudget::default()))
        });
        let take = {
            let mut held = held.lock();
            match held.spend(Instant::now()) {
                Spend::Spent => return Ok(()),
                Spend::Empty { retry_after } => return Err(Refusal::Limited { retry_after }),
                Spend::Refill => held.next_batch(batch),
            }
        };
        self.counters
            .limit_store_calls
            .fetch_add(1, Ordering::Relaxed);
        let name = bucket.name();
        match self.store.rate_take(&name, limit, take).await {
            Ok(taken) => {
                if held.lock().refilled(taken, limit, Instant::now()) {
                    Ok(())
                } else {
                    Err(Refusal::Limited {
                        retry_after: budget::interval(limit),
                    })
                }
            }
            Err(error) => self.limit_without_store(&name, limit, &error),
        }
    }

    /// The decision of a limit while the store is unreachable: this process's own bucket, or a
    /// refusal when failing closed.
    fn limit_without_store(
        &self,
        name: &str,
        limit: RateLimit,
        error: &fctf_core::store::StoreError,
    ) -> Result<(), Refusal> {
        self.counters
            .store_fallbacks
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%error, "rate limit without the store");
        if self.settings.fail_closed {
            Err(Refusal::StoreDown)
        } else {
            self.local.check(name, limit)
        }
    }
}

/// What the store says about the instance of a (team, challenge), as liveness needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Live {
    /// This instance runs.
    Running(InstanceId),
    /// This instance is queued or deploying.
    Starting(InstanceId),
    /// Nothing runs or starts (no record, stopping, stopped or failed).
    Down,
}

impl Live {
    fn of(record: Option<(DeploymentState, InstanceId)>) -> Live {
        match record {
            Some((DeploymentState::Running, instance)) => Live::Running(instance),
            Some((DeploymentState::Queued | DeploymentState::Deploying, instance)) => {
                Live::Starting(instance)
            }
            _ => Live::Down,
        }
    }

    /// Whether a token for `instance` may pass.
    fn admits(self, instance: InstanceId) -> Result<(), Refusal> {
        match self {
            Live::Running(live) if live == instance => Ok(()),
            Live::Starting(starting) if starting == instance => Err(Refusal::Starting),
            _ => Err(Refusal::NotLive),
        }
    }
}

/// A cached liveness answer and when the store gave it (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    live: Live,
    at_secs: u64,
}

impl Seen {
    /// Whether this answer may predate a token issued at `iat` (Unix seconds; both clocks
    /// count whole seconds, so a token of the same second counts as newer).
    fn may_be_older_than(self, iat: u64) -> bool {
        iat >= self.at_secs
    }
}

/// Liveness answers are cached for the route cache time, "starting" ones only until the next
/// recheck of a held request.
struct LiveFor(Duration);

impl moka::Expiry<(TeamId, ChallengeId), Seen> for LiveFor {
    fn expire_after_create(
        &self,
        _: &(TeamId, ChallengeId),
        seen: &Seen,
        _: Instant,
    ) -> Option<Duration> {
        Some(match seen.live {
            Live::Starting(_) => self.0.min(STARTING_RECHECK),
            _ => self.0,
        })
    }

    fn expire_after_update(
        &self,
        key: &(TeamId, ChallengeId),
        seen: &Seen,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, seen, now)
    }
}

/// Grants expire from the cache when their token does.
struct UntilExpiry;

impl moka::Expiry<Box<str>, Arc<Grant>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &Box<str>,
        grant: &Arc<Grant>,
        _: Instant,
    ) -> Option<Duration> {
        let now = fctf_core::clock::unix_now_secs();
        Some(Duration::from_secs(grant.secs_left(now)))
    }
}

/// This process's own GCRA buckets: the fallback while the store is unreachable.
#[derive(Debug)]
struct LocalLimits {
    epoch: Instant,
    buckets: moka::sync::Cache<String, u64>,
}

impl LocalLimits {
    fn new() -> Self {
        LocalLimits {
            epoch: Instant::now(),
            buckets: moka::sync::Cache::builder()
                .max_capacity(LOCAL_BUCKETS_CAPACITY)
                // A bucket idle this long is full again for any rate we configure.
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }

    fn check(&self, name: &str, limit: RateLimit) -> Result<(), Refusal> {
        let gcra = Gcra::new(limit);
        let now_us = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut decision = None;
        self.buckets
            .entry(name.to_owned())
            .and_compute_with(|entry| {
                let checked = gcra.check(entry.map(|e| e.into_value()), now_us, 1);
                decision = Some(checked.decision);
                match checked.new_tat {
                    Some(tat) => Op::Put(tat),
                    None => Op::Nop,
                }
            });
        match decision {
            Some(d) if !d.allowed => Err(Refusal::Limited {
                retry_after: d.retry_after,
            }),
            _ => Ok(()),
        }
    }
}

/// A rate-limit bucket. The HTTP ones are values (cheap to hash and compare), so the hot path
/// builds no `String`; [`Bucket::name`] is the store's name for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Any store rate-limit name.
    Named(Arc<str>),
    /// HTTP requests of one client: `gw:http:ip:{client}`.
    HttpIp(ClientKey),
    /// HTTP requests of one token (its [`Grant::digest`]) from one client:
    /// `gw:http:tip:{digest}:{client}`.
    HttpTokenIp(Arc<str>, ClientKey),
}

impl Bucket {
    /// The store's name of this bucket (never a raw token: the digest stands for it).
    pub fn name(&self) -> Cow<'_, str> {
        match self {
            Bucket::Named(name) => Cow::Borrowed(name),
            Bucket::HttpIp(client) => Cow::Owned(format!("gw:http:ip:{client}")),
            Bucket::HttpTokenIp(digest, client) => {
                Cow::Owned(format!("gw:http:tip:{digest}:{client}"))
            }
        }
    }
}

/// The part of a client address that limits count against: an IPv4 address, or the /64 of an
/// IPv6 one (one subscriber usually holds a whole /64). IPv4-mapped IPv6 counts as IPv4.
/// Displays as [`client_key`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An IPv4 client.
    V4(Ipv4Addr),
    /// The first four 16-bit groups of an IPv6 client.
    V6([u16; 4]),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4),
                None => {
                    let s = v6.segments();
                    ClientKey::V6([s[0], s[1], s[2], s[3]])
                }
            },
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(v4) => v4.fmt(f),
            ClientKey::V6(s) => write!(f, "{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]),
        }
    }
}

/// [`ClientKey`] of `ip` as text: the name limits and leases count a client under.
pub fn client_key(ip: IpAddr) -> String {
    ClientKey::from(ip).to_string()
}

#[cfg(test)]
mod tests {
    use fctf_core::store::{DeploymentRecord, MemoryStore, Reservation, UpdateOutcome};
    use fctf_core::token::{Keyring, TokenKey, mint};

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn key() -> TokenKey {
        TokenKey::new("k1", vec![7u8; 32]).unwrap()
    }

    fn claims(instance: InstanceId) -> Claims {
        Claims {
            kid: "k1".into(),
            team: TeamId(7),
            challenge: ChallengeId(3),
            instance,
            route: "127.0.0.1:9".into(),
            iat: NOW - 10,
            exp: NOW + 100,
        }
    }

    fn admission(store: Arc<dyn StateStore>, fail_closed: bool) -> Admission {
        let verifier = Verifier::new(Keyring::new(vec![key()]).unwrap(), Duration::from_secs(30));
        Admission::new(
            verifier,
            store,
            AdmissionSettings {
                routing: Routing::new("svc.cluster.local", 3333),
                route_cache: Duration::from_secs(60),
                fail_closed,
                starting_hold: Duration::ZERO,
            },
        )
    }

    fn record(instance: InstanceId, state: DeploymentState) -> DeploymentRecord {
        DeploymentRecord {
            team: TeamId(7),
            challenge: ChallengeId(3),
            instance,
            state,
            version: 0,
            route: Some("127.0.0.1:9".into()),
            reason: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            expires_at_ms: None,
        }
    }

    /// Reserves `instance`'s slot (Queued), as the Deployment Center does.
    async fn reserve(store: &MemoryStore, instance: InstanceId) -> DeploymentRecord {
        match store
            .reserve_instance(
                &record(instance, DeploymentState::Queued),
                3,
                Duration::from_secs(60),
            )
            .await
            .unwrap()
        {
            Reservation::Reserved(rec) => rec,
            other => panic!("not reserved: {other:?}"),
        }
    }

    /// Moves `rec` to `state`, as the consumer or the listener does; the record as stored.
    async fn set_state(
        store: &MemoryStore,
        mut rec: DeploymentRecord,
        state: DeploymentState,
    ) -> DeploymentRecord {
        rec.state = state;
        match store
            .update_deployment(&rec, Duration::from_secs(60))
            .await
            .unwrap()
        {
            UpdateOutcome::Updated(rec) => rec,
            other => panic!("not updated: {other:?}"),
        }
    }

    #[test]
    fn verified_tokens_are_cached_and_forged_ones_refused() {
        let adm = admission(Arc::new(MemoryStore::new()), false);
        let token = mint(&key(), &claims(InstanceId::new())).unwrap();
        let grant = adm.verify(&token, NOW).unwrap();
        assert_eq!(
            grant.upstream,
            Upstream::Addr("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(*grant.digest, keys::digest(token.as_bytes()));
        assert_eq!(adm.verify(&token, NOW).unwrap(), grant);
        assert_eq!(adm.counters().token_cache_hits.load(Ordering::Relaxed), 1);
        // Past exp, the cache does not answer: the verifier applies its skew.
        assert!(adm.verify(&token, NOW + 120).is_ok());
        assert_eq!(
            adm.verify(&token, NOW + 131),
            Err(Refusal::Token(TokenError::Expired))
        );
        let mut forged = token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'Q' } else { 'A' });
        assert!(matches!(adm.verify(&forged, NOW), Err(Refusal::Token(_))));
        assert_eq!(Refusal::Token(TokenError::BadSignature).status(), 401);
    }

    #[tokio::test]
    async fn only_the_running_instance_is_live() {
        let store = Arc::new(MemoryStore::new());
        let adm = admission(store.clone(), false);
        let live = InstanceId::new();
        let token = mint(&key(), &claims(live)).unwrap();
        let grant = adm.verify(&token, NOW).unwrap();
        assert_eq!(adm.check_live(&grant).await, Err(Refusal::NotLive));
        adm.forget_instance(TeamId(7), ChallengeId(3));

        let rec = reserve(&store, live).await;
        assert_eq!(adm.check_live(&grant).await, Err(Refusal::Starting));
        adm.forget_instance(TeamId(7), ChallengeId(3));
        set_state(&store, rec, DeploymentState::Running).await;
        assert_eq!(adm.check_live(&grant).await, Ok(()));
        assert_eq!(adm.check_live(&grant).await, Ok(()));
        assert_eq!(
            adm.counters().liveness_cache_hits.load(Ordering::Relaxed),
            1
        );

        let other = adm
            .verify(&mint(&key(), &claims(InstanceId::new())).unwrap(), NOW)
            .unwrap();
        assert_eq!(adm.check_live(&other).await, Err(Refusal::NotLive));
    }

    #[tokio::test]
    async fn a_token_newer_than_the_cached_answer_asks_the_store_and_an_old_one_does_not() {
        let store = Arc::new(MemoryStore::new());
        let adm = admission(store.clone(), false);
        // The test's NOW is ahead of the real clock: this token is newer than any cached answer.
        let fresh = InstanceId::new();
        let grant = adm
            .verify(&mint(&key(), &claims(fresh)).unwrap(), NOW)
            .unwrap();
        assert_eq!(adm.check_live(&grant).await, Err(Refusal::NotLive));
        let rec = reserve(&store, fresh).await;
        set_state(&store, rec, DeploymentState::Running).await;
        // The cache still says "down", but the token may name what replaced it: no refusal.
        assert_eq!(adm.check_live(&grant).await, Ok(()));
        let misses = adm.counters().liveness_cache_misses.load(Ordering::Relaxed);
        assert_eq!(misses, 2);

        // An old token of another instance is refused from the cache, without the store.
        let mut old = claims(InstanceId::new());
        old.iat = 1;
        let old = adm.verify(&mint(&key(), &old).unwrap(), NOW).unwrap();
        assert_eq!(adm.check_live(&old).await, Err(Refusal::NotLive));
        assert_eq!(
            adm.counters().liveness_cache_misses.load(Ordering::Relaxed),
            misses
        );
    }

    #[tokio::test]
    async fn a_starting_instance_is_waited_for_up_to_the_hold() {
        let store = Arc::new(MemoryStore::new());
        let verifier = Verifier::new(Keyring::new(vec![key()]).unwrap(), Duration::from_secs(30));
        let adm = Admission::new(
            verifier,
            store.clone(),
            AdmissionSettings {
                routing: Routing::new("svc.cluster.local", 3333),
                route_cache: Duration::from_secs(60),
                fail_closed: false,
                starting_hold: Duration::from_millis(600),
            },
        );
        let instance = InstanceId::new();
        let grant = adm
            .verify(&mint(&key(), &claims(instance)).unwrap(), NOW)
            .unwrap();
        let rec = reserve(&store, instance).await;
        // Still starting at the end of the hold: refused, after rechecks of the store.
        assert_eq!(adm.await_live(&grant).await, Err(Refusal::Starting));
        assert!(adm.counters().liveness_cache_misses.load(Ordering::Relaxed) >= 2);
        assert_eq!(adm.counters().starting_timeouts.load(Ordering::Relaxed), 1);

        let rec = set_state(&store, rec, DeploymentState::Deploying).await;
        let runner = {
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                set_state(&store, rec, DeploymentState::Running).await;
            })
        };
        // Becomes Running during the hold: admitted, although "starting" was cached.
        assert_eq!(adm.await_live(&grant).await, Ok(()));
        runner.await.unwrap();
        assert_eq!(adm.counters().starting_holds.load(Ordering::Relaxed), 2);
        assert_eq!(adm.counters().starting_timeouts.load(Ordering::Relaxed), 1);
        assert_eq!(Refusal::Starting.status(), 503);
        assert_eq!(
            Refusal::Starting.retry_after_secs(),
            Some(STARTING_RETRY_AFTER_SECS)
        );
    }

    #[tokio::test]
    async fn limits_refuse_with_retry_after() {
        let adm = admission(Arc::new(MemoryStore::new()), false);
        let limit = RateLimit {
            per_second: 1.0,
            burst: 2,
        };
        assert_eq!(adm.limit("t:a", limit).await, Ok(()));
        assert_eq!(adm.limit("t:a", limit).await, Ok(()));
        let refused = adm.limit("t:a", limit).await.unwrap_err();
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.retry_after_secs(), Some(1));
        assert_eq!(adm.limit("t:b", limit).await, Ok(()));
    }

    /// A Redis store on a port where nothing listens: every call is `Unavailable`.
    fn unreachable_store() -> Arc<dyn StateStore> {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", dead.local_addr().unwrap());
        drop(dead);
        Arc::new(
            fctf_core::store::RedisStore::connect_lazy(&url, "t:", Duration::from_millis(200))
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn a_store_outage_falls_back_to_local_limits_or_fails_closed() {
        let limit = RateLimit {
            per_second: 0.01,
            burst: 1,
        };
        let open = admission(unreachable_store(), false);
        assert_eq!(open.limit("x", limit).await, Ok(()));
        assert!(matches!(
            open.limit("x", limit).await,
            Err(Refusal::Limited { .. })
        ));
        let grant = open
            .verify(&mint(&key(), &claims(InstanceId::new())).unwrap(), NOW)
            .unwrap();
        assert_eq!(open.check_live(&grant).await, Ok(()));
        assert_eq!(open.counters().store_fallbacks.load(Ordering::Relaxed), 3);

        let closed = admission(unreachable_store(), true);
        assert_eq!(closed.limit("x", limit).await, Err(Refusal::StoreDown));
        assert_eq!(closed.check_live(&grant).await, Err(Refusal::StoreDown));
        assert_eq!(Refusal::StoreDown.status(), 503);
    }

    #[tokio::test]
    async fn large_buckets_take_tokens_in_batches() {
        let store = Arc::new(MemoryStore::new());
        let adm = admission(store.clone(), false);
        let limit = RateLimit {
            per_second: 0.001,
            burst: 100,
        };
        let calls = || adm.counters().limit_store_calls.load(Ordering::Relaxed);
        // Batches of 1, 2, 4, 8, then the largest (10): 15 requests, 4 store calls.
        for _ in 0..15 {
            assert_eq!(adm.limit("big", limit).await, Ok(()));
        }
        assert_eq!(calls(), 4);
        assert_eq!(adm.limit("big", limit).await, Ok(()));
        assert_eq!(calls(), 5);
        // The shared bucket shows the whole batch as spent: 1 + 2 + 4 + 8 + 10.
        let left = store.rate_limit("big", limit, 0).await.unwrap();
        assert_eq!(left.remaining, 75);
        for _ in 16..100 {
            assert_eq!(adm.limit("big", limit).await, Ok(()));
        }
        assert_eq!(calls(), 13);
        assert!(matches!(
            adm.limit("big", limit).await,
            Err(Refusal::Limited { .. })
        ));
        // An empty bucket is not asked again until a token could exist.
        assert!(adm.limit("big", limit).await.is_err());
        assert_eq!(calls(), 14);
    }

    #[test]
    fn local_limits_are_gcra_buckets() {
        let local = LocalLimits::new();
        let limit = RateLimit {
            per_second: 0.01,
            burst: 2,
        };
        assert!(local.check("x", limit).is_ok());
        assert!(local.check("x", limit).is_ok());
        let Err(Refusal::Limited { retry_after }) = local.check("x", limit) else {
            panic!("third call allowed");
        };
        assert!(retry_after > Duration::from_secs(90));
        assert!(local.check("y", limit).is_ok());
    }

    #[test]
    fn bucket_names_are_the_store_names_of_before() {
        let v4 = ClientKey::from("10.0.0.1".parse::<IpAddr>().unwrap());
        let v6 = ClientKey::from("2001:db8:1:2:aa::1".parse::<IpAddr>().unwrap());
        assert_eq!(Bucket::HttpIp(v4).name(), "gw:http:ip:10.0.0.1");
        assert_eq!(Bucket::HttpIp(v6).name(), "gw:http:ip:2001:db8:1:2::/64");
        assert_eq!(
            Bucket::HttpTokenIp("d1g".into(), v4).name(),
            "gw:http:tip:d1g:10.0.0.1"
        );
        assert_eq!(Bucket::Named("x:y".into()).name(), "x:y");
        assert_eq!(
            ClientKey::from("::ffff:10.0.0.1".parse::<IpAddr>().unwrap()),
            v4
        );
    }

    #[test]
    fn client_keys_group_ipv6_by_slash_64() {
        assert_eq!(client_key("10.0.0.1".parse().unwrap()), "10.0.0.1");
        assert_eq!(client_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
        assert_eq!(
            client_key("2001:db8:1:2:aa::1".parse().unwrap()),
            client_key("2001:db8:1:2:bb::9".parse().unwrap())
        );
        assert_eq!(
            client_key("2001:db8:1:2::1".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
    }
}
