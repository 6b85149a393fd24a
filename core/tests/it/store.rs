//! The state-store conformance suite: every case runs against [`MemoryStore`] and against
//! [`RedisStore`] on the real Redis (a fresh key prefix per test), and must pass on both.
//!
//! After each Redis case the suite checks that every key the store wrote carries an expiry (the
//! store never leaves garbage behind), then deletes them. Store-specific behaviour (Redis outage,
//! `SCRIPT FLUSH`, key layout; the in-process store's clock and memory bound) follows the suite.

use std::sync::Arc;
use std::time::Duration;

use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::store::{
    DeploymentRecord, DeploymentState, LeaseOutcome, LeaseScope, LockToken, MemoryStore, RateLimit,
    RedisStore, Reservation, StateStore, StoreError, UpdateOutcome,
};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

use crate::redis_fixture::{RedisBackend, on_both_stores};

type Store = Arc<dyn StateStore>;

/// Long enough never to expire during a test.
const LONG: Duration = Duration::from_secs(60);

// Each case runs as `store::memory::<case>` and `store::redis::<case>`.
on_both_stores!(
    "store":
    ping_answers,
    reserve_writes_version_one_and_takes_a_slot,
    reserve_returns_the_existing_record_unchanged,
    reserve_refuses_beyond_the_quota,
    reserve_frees_expired_slots_after_their_ttl,
    update_bumps_the_version_and_keeps_the_creation_time,
    update_with_a_stale_version_conflicts,
    update_of_another_instance_conflicts,
    update_of_a_missing_record_conflicts_with_none,
    update_extends_the_record_and_its_slot,
    update_to_an_inactive_state_frees_the_slot,
    release_frees_slot_and_record_once,
    release_of_an_old_instance_leaves_a_newer_record_alone,
    list_returns_every_live_record,
    rate_limit_grants_the_burst_then_refuses_with_retry_after,
    rate_limit_refills_over_time,
    rate_limit_cost_zero_peeks_and_an_oversized_cost_never_fits,
    rate_limit_buckets_are_independent,
    rate_take_grants_partial_batches,
    fractional_rates_set_the_refill_interval,
    lease_acquire_is_all_or_none,
    lease_cap_counts_holders_and_reacquiring_renews,
    lease_expires_when_its_holder_stops_renewing,
    lease_renew_extends_only_live_leases,
    lease_renew_after_expiry_or_release_recreates_nothing,
    lease_release_is_idempotent,
    lock_is_exclusive_until_released_or_expired,
    lock_release_needs_the_holders_token,
    counter_stops_at_its_cap_and_resets,
    counter_window_starts_at_the_first_increment,
    cooldown_runs_for_its_period,
    remember_once_refuses_a_replay_until_it_expires,
    concurrent_reservations_never_exceed_the_quota,
    concurrent_lock_acquires_have_one_winner,
    concurrent_counter_increments_stop_at_the_cap,
    concurrent_lease_acquires_stop_at_the_cap,
    concurrent_rate_limits_grant_exactly_the_burst,
);

// ---- helpers ----

fn record(team: i64, challenge: i64) -> DeploymentRecord {
    DeploymentRecord {
        team: TeamId(team),
        challenge: ChallengeId(challenge),
        instance: InstanceId::new(),
        state: DeploymentState::Queued,
        version: 0,
        route: None,
        reason: None,
        created_at_ms: 0,
        updated_at_ms: 0,
        expires_at_ms: None,
    }
}

async fn reserve(
    store: &Store,
    record: &DeploymentRecord,
    quota: u32,
    ttl: Duration,
) -> DeploymentRecord {
    match store.reserve_instance(record, quota, ttl).await.unwrap() {
        Reservation::Reserved(stored) => stored,
        other => panic!("expected Reserved, got {other:?}"),
    }
}

/// The stored record of `team` on `challenge`, if any.
async fn deployment(store: &Store, team: i64, challenge: i64) -> Option<DeploymentRecord> {
    store
        .get_deployment(TeamId(team), ChallengeId(challenge))
        .await
        .unwrap()
}

async fn update(store: &Store, record: &DeploymentRecord, ttl: Duration) -> DeploymentRecord {
    match store.update_deployment(record, ttl).await.unwrap() {
        UpdateOutcome::Updated(stored) => stored,
        other => panic!("expected Updated, got {other:?}"),
    }
}

fn wall_ms() -> u64 {
    fctf_core::clock::unix_now_millis()
}

fn scope(key: &str, cap: u32) -> LeaseScope<'_> {
    LeaseScope { key, cap }
}

fn rate(per_second: f64, burst: u32) -> RateLimit {
    RateLimit { per_second, burst }
}

/// Asserts `low < d <= high`.
fn assert_between(d: Duration, low: Duration, high: Duration) {
    assert!(low < d && d <= high, "{d:?} not in ({low:?}, {high:?}]");
}

// ---- cases: deployment state and quota ----

async fn ping_answers(store: Store) {
    store.ping().await.unwrap();
}

async fn reserve_writes_version_one_and_takes_a_slot(store: Store) {
    let asked = DeploymentRecord {
        route: Some("team-1-1-web-1".to_owned()),
        version: 41, // ignored: the store sets it
        ..record(1, 1)
    };
    let before = wall_ms();
    let stored = reserve(&store, &asked, 3, LONG).await;
    assert_eq!(stored.version, 1);
    assert_eq!(stored.instance, asked.instance);
    assert_eq!(stored.state, DeploymentState::Queued);
    assert_eq!(stored.route, asked.route);
    assert_eq!(stored.created_at_ms, stored.updated_at_ms);
    assert!(stored.created_at_ms + 5_000 >= before && stored.created_at_ms <= wall_ms() + 5_000);
    assert_eq!(deployment(&store, 1, 1).await, Some(stored));
    assert_eq!(store.quota_usage(TeamId(1)).await.unwrap(), 1);
    assert_eq!(store.quota_usage(TeamId(2)).await.unwrap(), 0);
}

async fn reserve_returns_the_existing_record_unchanged(store: Store) {
    let first = reserve(&store, &record(1, 1), 3, LONG).await;
    let again = store
        .reserve_instance(&record(1, 1), 3, LONG)
        .await
        .unwrap();
    assert_eq!(again, Reservation::AlreadyActive(first.clone()));
    assert_eq!(store.quota_usage(TeamId(1)).await.unwrap(), 1);
    assert_eq!(deployment(&store, 1, 1).await, Some(first));
}

async fn reserve_refuses_beyond_the_quota(store: Store) {
    reserve(&store, &record(1, 1), 2, LONG).await;
    reserve(&store, &record(1, 2), 2, LONG).await;
    assert_eq!(
        store
            .reserve_instance(&record(1, 3), 2, LONG)
            .await
            .unwrap(),
        Reservation::QuotaExceeded { active: 2 }
    );
    assert_eq!(deployment(&store, 1, 3).await, None);
    assert_eq!(store.quota_usage(TeamId(1)).await.unwrap(), 2);
    // Quotas are per team, and a quota of zero refuses everything.
    reserve(&store, &record(2, 3), 2, LONG).await;
    assert_eq!(
        store
            .reserve_instance(&record(3, 1), 0, LONG)
            .await
            .unwrap(),
        Reservation::QuotaExceeded { active: 0 }
    );
}

async fn reserve_frees_expired_slots_after_their_ttl(store: Store) {
    let ttl = Duration::from_millis(300);
    reserve(&store, &record(1, 1), 1, ttl).await;
    assert_eq!(
        store.reserve_instance(&record(1, 2), 1, ttl).await.unwrap(),
        Reservation::QuotaExceeded { active: 1 }
    );
    sleep(Duration::from_millis(400)).await;
    assert_eq!(store.quota_usage(TeamId(1)).await.unwrap(), 0);
    assert_eq!(deployment(&store, 1, 1).await, None);
    reserve(&store, &record(1, 2), 1, ttl).await;
}

async fn update_bumps_the_version_and_keeps_the_creation_time(store: Store) {
    let reserved = reserve(&store, &record(1, 1), 3, LONG).await;
    sleep(Duration::from_millis(5)).await;
    let next = DeploymentRecord {
        state: DeploymentState::Running,
        route: Some("team-1-1-web-1".to_owned()),
        expires_at_ms: Some(wall_ms() + 3_600_000),
        created_at_ms: 1, // ignored: the store keeps its own
        ..reserved.clone()
    };
    let updated = update(&store, &next, LONG).await;
    assert_eq!(updated.version, 2);
    assert_eq!(updated.state, DeploymentState::Running);
    assert_eq!(updated.route, next.route);
    assert_eq!(updated.expires_at_ms, next.expires_at_ms);
    assert_eq!(updated.created_at_ms, reserved.created_at_ms);
    assert!(updated.updated_at_ms > reserved.updated_at_ms);
    assert_eq!(deployment(&store, 1, 1).await, Some(updated.clone()));
    let third = update(&store, &updated, LONG).await;
    assert_eq!(third.version, 3);
}

async fn update_with_a_stale_version_conflicts(store: Store) {
    let reserved = reserve(&store, &record(1, 1), 3, LONG).await;
    let deploying = DeploymentRecord {
        state: DeploymentState::Deploying,
        ..reserved.clone()
    };
    let current = update(&store, &deploying, LONG).await;
    // A slower writer that read version 1 must not overwrite version 2.
    let stale = DeploymentRecord {
        state: DeploymentState::Failed,
        ..reserved
    };
    assert_eq!(
        store.update_deployment(&stale, LONG).await.unwrap(),
        UpdateOutcome::Conflict(Some(current.clone()))
    );
    assert_eq!(deployment(&store, 1, 1).await, Some(current));
}

async fn update_of_another_instance_conflicts(store: Store) {
    let reserved = reserve(&store, &record(1, 1), 3, LONG).await;
    let other = DeploymentRecord {
        instance: InstanceId::new(),
        state: DeploymentState::Running,
        ..reserved.clone()
    };
    assert_eq!(
        store.update_deployment(&other, LONG).await.unwrap(),
        UpdateOutcome::Conflict(Some(reserved))
    );
    // The other instance got no quota slot either.
    assert_eq!(store.quota_usage(TeamId(1)).await.unwrap(), 1);
}

async fn update_of_a_missing_record_conflicts_with_none(store: Store) {
    let absent = DeploymentRecord {
        version: 1,
        ..record(5, 5)
    };
    assert_eq!(
        store.update_deployment(&absent, LONG).await.unwrap(),
        UpdateOutcome::Conflict(None)
    );
    assert_eq!(deployment(&store, 5, 5).await, None);
    assert_eq!(store.quota_usage(TeamId(5)).await.unwrap(), 0);
}

async fn update_extends_the_record_and_its_slot(store: Store) {
    let reserved = reserve(&store, &record(1, 1), 3, Duration::from_millis(300)).await;
    let running = DeploymentRecord {
        state: DeploymentState::Running,
        ..reserved
    };
    update(&store, &running, LONG).await;
    sleep(Duration::from_millis(400)).await;
    assert!(deployment(&store, 1, 1).await.is_some());
    assert_eq!(store.quota_usage(TeamId(1)).await.unwrap(), 1);
}

async fn update_to_an_inactive_state_frees_the_slot(store: Store) {
    let reserved = reserve(&store, &record(1, 1), 1, LONG).await;
    let failed = DeploymentRecord {
        state: DeploymentState::Failed,
        reason: Some("image pull failed".to_owned()),
        ..reserved
    };
    update(&store, &failed, LONG).await;
    assert_eq!(store.quota_usage(TeamId(1)).await.unwrap(), 0);
    // The record stays readable so status can say why.
    let kept = deployment(&store, 1, 1).await.unwrap();
    assert_eq!(kept.state, DeploymentState::Failed);
    reserve(&store, &record(1, 2), 1, LONG).await;
}

async fn release_frees_slot_and_record_once(store: Store) {
    let reserved = reserve(&store, &record(1, 1), 1, LONG).await;
    let release = || store.release_instance(TeamId(1), ChallengeId(1), reserved.instance);
    assert!(release().await.unwrap());
    assert!(!release().await.unwrap());
    assert_eq!(deployment(&store, 1, 1).await, None);
    assert_eq!(store.quota_usage(TeamId(1)).await.unwrap(), 0);
    reserve(&store, &record(1, 2), 1, LONG).await;
}

async fn release_of_an_old_instance_leaves_a_newer_record_alone(store: Store) {
    let old = reserve(&store, &record(1, 1), 1, LONG).await;
    assert!(
        store
            .release_instance(TeamId(1), ChallengeId(1), old.instance)
            .await
            .unwrap()
    );
    let newer = reserve(&store, &record(1, 1), 1, LONG).await;
    // A late, repeated release of the old instance.
    assert!(
        !store
            .release_instance(TeamId(1), ChallengeId(1), old.instance)
            .await
            .unwrap()
    );
    assert_eq!(deployment(&store, 1, 1).await, Some(newer));
    assert_eq!(store.quota_usage(TeamId(1)).await.unwrap(), 1);
}

async fn list_returns_every_live_record(store: Store) {
    assert_eq!(store.list_deployments().await.unwrap(), vec![]);
    let mut expected = vec![
        reserve(&store, &record(1, 1), 3, LONG).await,
        reserve(&store, &record(1, 2), 3, LONG).await,
        reserve(&store, &record(-1, 7), 3, LONG).await,
    ];
    reserve(&store, &record(2, 1), 3, Duration::from_millis(100)).await;
    sleep(Duration::from_millis(200)).await;
    let mut listed = store.list_deployments().await.unwrap();
    listed.sort_by_key(|r| (r.team, r.challenge));
    expected.sort_by_key(|r| (r.team, r.challenge));
    assert_eq!(listed, expected);
}

// ---- cases: rate limits ----

async fn rate_limit_grants_the_burst_then_refuses_with_retry_after(store: Store) {
    let limit = rate(1.0, 3);
    for left in [2, 1, 0] {
        let d = store.rate_limit("ip:1", limit, 1).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, left);
        assert_eq!(d.retry_after, Duration::ZERO);
    }
    let refused = store.rate_limit("ip:1", limit, 1).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    assert_between(
        refused.retry_after,
        Duration::from_millis(500),
        Duration::from_secs(1),
    );
}

async fn rate_limit_refills_over_time(store: Store) {
    let limit = rate(5.0, 1); // one token per 200 ms
    assert!(store.rate_limit("t", limit, 1).await.unwrap().allowed);
    let refused = store.rate_limit("t", limit, 1).await.unwrap();
    assert!(!refused.allowed);
    assert_between(
        refused.retry_after,
        Duration::ZERO,
        Duration::from_millis(200),
    );
    sleep(refused.retry_after + Duration::from_millis(10)).await;
    assert!(store.rate_limit("t", limit, 1).await.unwrap().allowed);
    // A full refill restores the whole burst only, never more.
    let limit = rate(5.0, 2);
    sleep(Duration::from_millis(600)).await;
    assert_eq!(store.rate_limit("t", limit, 0).await.unwrap().remaining, 2);
}

async fn rate_limit_cost_zero_peeks_and_an_oversized_cost_never_fits(store: Store) {
    let limit = rate(1.0, 3);
    let peek = store.rate_limit("k", limit, 0).await.unwrap();
    assert!(peek.allowed);
    assert_eq!(peek.remaining, 3);
    let two = store.rate_limit("k", limit, 2).await.unwrap();
    assert!(two.allowed);
    assert_eq!(two.remaining, 1);
    let refused = store.rate_limit("k", limit, 2).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 1);
    assert_between(
        refused.retry_after,
        Duration::from_millis(500),
        Duration::from_secs(1),
    );
    let never = store.rate_limit("k", limit, 4).await.unwrap();
    assert!(!never.allowed);
    assert_eq!(never.retry_after, Duration::MAX);
    // Refusals took nothing.
    assert_eq!(store.rate_limit("k", limit, 0).await.unwrap().remaining, 1);
}

async fn rate_limit_buckets_are_independent(store: Store) {
    let limit = rate(0.1, 1);
    assert!(store.rate_limit("a", limit, 1).await.unwrap().allowed);
    assert!(!store.rate_limit("a", limit, 1).await.unwrap().allowed);
    assert!(store.rate_limit("b", limit, 1).await.unwrap().allowed);
}

async fn rate_take_grants_partial_batches(store: Store) {
    let limit = rate(1.0, 5);
    assert_eq!(store.rate_take("gw", limit, 3).await.unwrap(), 3);
    assert_eq!(store.rate_take("gw", limit, 3).await.unwrap(), 2);
    assert_eq!(store.rate_take("gw", limit, 3).await.unwrap(), 0);
    assert!(!store.rate_limit("gw", limit, 1).await.unwrap().allowed);
    // Same bucket as rate_limit, and a take of nothing takes nothing.
    assert!(store.rate_limit("other", limit, 4).await.unwrap().allowed);
    assert_eq!(store.rate_take("other", limit, 0).await.unwrap(), 0);
    assert_eq!(store.rate_take("other", limit, 9).await.unwrap(), 1);
}

async fn fractional_rates_set_the_refill_interval(store: Store) {
    let half = rate(0.5, 1); // one token per 2 s
    assert!(store.rate_limit("half", half, 1).await.unwrap().allowed);
    let refused = store.rate_limit("half", half, 1).await.unwrap();
    assert_between(
        refused.retry_after,
        Duration::from_millis(1500),
        Duration::from_secs(2),
    );
    let two_and_a_half = rate(2.5, 2); // one token per 400 ms
    assert!(
        store
            .rate_limit("2.5", two_and_a_half, 2)
            .await
            .unwrap()
            .allowed
    );
    let refused = store.rate_limit("2.5", two_and_a_half, 1).await.unwrap();
    assert_between(
        refused.retry_after,
        Duration::from_millis(200),
        Duration::from_millis(400),
    );
}

// ---- cases: leases ----

async fn lease_acquire_is_all_or_none(store: Store) {
    assert_eq!(
        store
            .lease_acquire(&[scope("ip:a", 1)], "h1", LONG)
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
    let both = [scope("global", 5), scope("ip:a", 1)];
    assert_eq!(
        store.lease_acquire(&both, "h2", LONG).await.unwrap(),
        LeaseOutcome::Full { scope: 1, held: 1 }
    );
    assert_eq!(store.lease_count("global").await.unwrap(), 0);
    assert_eq!(
        store
            .lease_acquire(&[scope("global", 5), scope("ip:b", 1)], "h2", LONG)
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
    assert_eq!(store.lease_count("global").await.unwrap(), 1);
    assert_eq!(store.lease_count("ip:b").await.unwrap(), 1);
    assert_eq!(
        store.lease_acquire(&[], "h3", LONG).await.unwrap(),
        LeaseOutcome::Acquired
    );
}

async fn lease_cap_counts_holders_and_reacquiring_renews(store: Store) {
    for holder in ["h1", "h2", "h3"] {
        assert_eq!(
            store
                .lease_acquire(&[scope("tok", 3)], holder, LONG)
                .await
                .unwrap(),
            LeaseOutcome::Acquired
        );
    }
    assert_eq!(
        store
            .lease_acquire(&[scope("tok", 3)], "h4", LONG)
            .await
            .unwrap(),
        LeaseOutcome::Full { scope: 0, held: 3 }
    );
    // A holder at the cap renews its own lease.
    assert_eq!(
        store
            .lease_acquire(&[scope("tok", 3)], "h2", LONG)
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
    assert_eq!(store.lease_count("tok").await.unwrap(), 3);
    assert_eq!(
        store
            .lease_acquire(&[scope("zero", 0)], "h1", LONG)
            .await
            .unwrap(),
        LeaseOutcome::Full { scope: 0, held: 0 }
    );
}

async fn lease_expires_when_its_holder_stops_renewing(store: Store) {
    let ttl = Duration::from_millis(300);
    store
        .lease_acquire(&[scope("ip", 1)], "crashed", ttl)
        .await
        .unwrap();
    assert_eq!(
        store
            .lease_acquire(&[scope("ip", 1)], "next", ttl)
            .await
            .unwrap(),
        LeaseOutcome::Full { scope: 0, held: 1 }
    );
    sleep(Duration::from_millis(400)).await;
    assert_eq!(store.lease_count("ip").await.unwrap(), 0);
    assert_eq!(
        store
            .lease_acquire(&[scope("ip", 1)], "next", ttl)
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
}

async fn lease_renew_extends_only_live_leases(store: Store) {
    let ttl = Duration::from_millis(300);
    store
        .lease_acquire(&[scope("a", 9)], "h", ttl)
        .await
        .unwrap();
    sleep(Duration::from_millis(100)).await;
    assert!(
        store
            .lease_renew(&["a"], "h", Duration::from_secs(2))
            .await
            .unwrap()
    );
    // Past the first TTL: alive only thanks to the renewal.
    sleep(Duration::from_millis(300)).await;
    assert_eq!(store.lease_count("a").await.unwrap(), 1);
    assert!(store.lease_renew(&[], "h", ttl).await.unwrap());
}

async fn lease_renew_after_expiry_or_release_recreates_nothing(store: Store) {
    let ttl = Duration::from_millis(300);
    store
        .lease_acquire(&[scope("c", 9), scope("d", 9)], "h", ttl)
        .await
        .unwrap();
    store.lease_release(&["d"], "h").await.unwrap();
    assert!(!store.lease_renew(&["c", "d"], "h", LONG).await.unwrap());
    assert_eq!(store.lease_count("d").await.unwrap(), 0);
    // The failed renewal extended nothing: "c" runs out on its own.
    sleep(Duration::from_millis(400)).await;
    assert_eq!(store.lease_count("c").await.unwrap(), 0);
    assert!(!store.lease_renew(&["c"], "h", LONG).await.unwrap());
    assert_eq!(store.lease_count("c").await.unwrap(), 0);
    assert!(!store.lease_renew(&["never"], "h", LONG).await.unwrap());
    assert_eq!(store.lease_count("never").await.unwrap(), 0);
}

async fn lease_release_is_idempotent(store: Store) {
    store
        .lease_acquire(&[scope("g", 2), scope("ip", 2)], "h1", LONG)
        .await
        .unwrap();
    store
        .lease_acquire(&[scope("g", 2)], "h2", LONG)
        .await
        .unwrap();
    store.lease_release(&["g", "ip"], "h1").await.unwrap();
    store.lease_release(&["g", "ip"], "h1").await.unwrap();
    store.lease_release(&["g"], "stranger").await.unwrap();
    store.lease_release(&[], "h2").await.unwrap();
    assert_eq!(store.lease_count("g").await.unwrap(), 1);
    assert_eq!(store.lease_count("ip").await.unwrap(), 0);
    assert_eq!(store.lease_count("unknown").await.unwrap(), 0);
}

// ---- cases: locks, counters, cooldowns, nonces ----

async fn lock_is_exclusive_until_released_or_expired(store: Store) {
    let token = store
        .lock_acquire("solve:1:2", LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.lock_acquire("solve:1:2", LONG).await.unwrap(), None);
    assert!(
        store
            .lock_acquire("solve:1:3", LONG)
            .await
            .unwrap()
            .is_some()
    );
    assert!(store.lock_release("solve:1:2", &token).await.unwrap());
    let short = store
        .lock_acquire("solve:1:2", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(short, token);
    sleep(Duration::from_millis(300)).await;
    let successor = store
        .lock_acquire("solve:1:2", LONG)
        .await
        .unwrap()
        .unwrap();
    // The expired holder cannot release its successor's lock.
    assert!(!store.lock_release("solve:1:2", &short).await.unwrap());
    assert!(store.lock_release("solve:1:2", &successor).await.unwrap());
}

async fn lock_release_needs_the_holders_token(store: Store) {
    let token = store.lock_acquire("l", LONG).await.unwrap().unwrap();
    assert!(
        !store
            .lock_release("l", &LockToken("not-the-token".to_owned()))
            .await
            .unwrap()
    );
    assert_eq!(store.lock_acquire("l", LONG).await.unwrap(), None);
    assert!(store.lock_release("l", &token).await.unwrap());
    assert!(!store.lock_release("l", &token).await.unwrap());
    assert!(!store.lock_release("never-taken", &token).await.unwrap());
}

async fn counter_stops_at_its_cap_and_resets(store: Store) {
    for expected in 1..=3 {
        assert_eq!(
            store.counter_incr("attempts:1:2", 3, LONG).await.unwrap(),
            Some(expected)
        );
    }
    assert_eq!(
        store.counter_incr("attempts:1:2", 3, LONG).await.unwrap(),
        None
    );
    assert_eq!(store.counter_get("attempts:1:2").await.unwrap(), 3);
    store.counter_reset("attempts:1:2").await.unwrap();
    assert_eq!(store.counter_get("attempts:1:2").await.unwrap(), 0);
    assert_eq!(
        store.counter_incr("attempts:1:2", 3, LONG).await.unwrap(),
        Some(1)
    );
    assert_eq!(store.counter_incr("capless", 0, LONG).await.unwrap(), None);
    assert_eq!(store.counter_get("capless").await.unwrap(), 0);
    store.counter_reset("never-counted").await.unwrap();
}

async fn counter_window_starts_at_the_first_increment(store: Store) {
    let window = Duration::from_millis(500);
    assert_eq!(store.counter_incr("c", 10, window).await.unwrap(), Some(1));
    sleep(Duration::from_millis(200)).await;
    assert_eq!(store.counter_incr("c", 10, window).await.unwrap(), Some(2));
    // 600 ms after the first increment: the later one did not move the window.
    sleep(Duration::from_millis(400)).await;
    assert_eq!(store.counter_get("c").await.unwrap(), 0);
    assert_eq!(store.counter_incr("c", 10, window).await.unwrap(), Some(1));
}

async fn cooldown_runs_for_its_period(store: Store) {
    let period = Duration::from_millis(500);
    assert_eq!(store.cooldown_begin("hint:1", period).await.unwrap(), None);
    let left = store
        .cooldown_begin("hint:1", period)
        .await
        .unwrap()
        .unwrap();
    assert_between(left, Duration::from_millis(250), period);
    assert_eq!(store.cooldown_begin("hint:2", period).await.unwrap(), None);
    sleep(Duration::from_millis(550)).await;
    assert_eq!(store.cooldown_begin("hint:1", period).await.unwrap(), None);
}

async fn remember_once_refuses_a_replay_until_it_expires(store: Store) {
    let ttl = Duration::from_millis(200);
    assert!(store.remember_once("nonce:abc", ttl).await.unwrap());
    assert!(!store.remember_once("nonce:abc", ttl).await.unwrap());
    assert!(store.remember_once("nonce:abd", ttl).await.unwrap());
    sleep(Duration::from_millis(300)).await;
    assert!(store.remember_once("nonce:abc", ttl).await.unwrap());
}

// ---- cases: concurrency ----

/// Runs `op(store, i)` for `i` in `0..n` as concurrent tasks; returns the results.
async fn concurrently<T, F, Fut>(store: &Store, n: usize, op: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Store, usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for i in 0..n {
        tasks.spawn(op(store.clone(), i));
    }
    tasks.join_all().await
}

async fn concurrent_reservations_never_exceed_the_quota(store: Store) {
    let outcomes = concurrently(&store, 200, |store, i| async move {
        let challenge = i64::try_from(i).unwrap();
        store
            .reserve_instance(&record(1, challenge), 3, LONG)
            .await
            .unwrap()
    })
    .await;
    let reserved = outcomes
        .iter()
        .filter(|o| matches!(o, Reservation::Reserved(_)))
        .count();
    assert_eq!(reserved, 3);
    assert!(outcomes.iter().all(|o| matches!(
        o,
        Reservation::Reserved(_) | Reservation::QuotaExceeded { active: 3 }
    )));
    assert_eq!(store.quota_usage(TeamId(1)).await.unwrap(), 3);
    assert_eq!(store.list_deployments().await.unwrap().len(), 3);
}

async fn concurrent_lock_acquires_have_one_winner(store: Store) {
    let tokens = concurrently(&store, 200, |store, _| async move {
        store.lock_acquire("one", LONG).await.unwrap()
    })
    .await;
    assert_eq!(tokens.iter().flatten().count(), 1);
}

async fn concurrent_counter_increments_stop_at_the_cap(store: Store) {
    let values = concurrently(&store, 200, |store, _| async move {
        store.counter_incr("wrong-flags", 5, LONG).await.unwrap()
    })
    .await;
    let mut granted: Vec<u64> = values.into_iter().flatten().collect();
    granted.sort_unstable();
    assert_eq!(granted, vec![1, 2, 3, 4, 5]);
    assert_eq!(store.counter_get("wrong-flags").await.unwrap(), 5);
}

async fn concurrent_lease_acquires_stop_at_the_cap(store: Store) {
    let outcomes = concurrently(&store, 200, |store, i| async move {
        store
            .lease_acquire(
                &[scope("global", 50), scope("ip", 10)],
                &format!("conn-{i}"),
                LONG,
            )
            .await
            .unwrap()
    })
    .await;
    let acquired = outcomes
        .iter()
        .filter(|o| **o == LeaseOutcome::Acquired)
        .count();
    assert_eq!(acquired, 10);
    assert!(outcomes.iter().all(|o| matches!(
        o,
        LeaseOutcome::Acquired | LeaseOutcome::Full { scope: 1, held: 10 }
    )));
    assert_eq!(store.lease_count("global").await.unwrap(), 10);
    assert_eq!(store.lease_count("ip").await.unwrap(), 10);
}

async fn concurrent_rate_limits_grant_exactly_the_burst(store: Store) {
    let limit = rate(0.001, 10);
    let decisions = concurrently(&store, 200, move |store, _| async move {
        store.rate_limit("flood", limit, 1).await.unwrap()
    })
    .await;
    assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 10);
}

// ---- Redis only ----

mod redis_only {
    use super::*;

    const SHORT: Duration = Duration::from_millis(500);

    #[tokio::test]
    async fn connect_to_a_dead_redis_is_unavailable_within_the_timeout() {
        let started = Instant::now();
        let result = RedisStore::connect("redis://127.0.0.1:1", "fctf-test:dead:", SHORT).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(started.elapsed() < SHORT + Duration::from_millis(500));
    }

    #[tokio::test]
    async fn calls_without_redis_are_unavailable_within_the_timeout() {
        let store =
            RedisStore::connect_lazy("redis://127.0.0.1:1", "fctf-test:dead:", SHORT).unwrap();
        for _ in 0..2 {
            let started = Instant::now();
            let result = store.rate_limit("ip", rate(1.0, 1), 1).await;
            assert!(
                matches!(result, Err(StoreError::Unavailable(_))),
                "{result:?}"
            );
            assert!(started.elapsed() < SHORT + Duration::from_millis(500));
        }
        assert!(matches!(
            store.reserve_instance(&record(1, 1), 1, LONG).await,
            Err(StoreError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn an_invalid_url_is_refused() {
        assert!(matches!(
            RedisStore::connect_lazy("http://nope", "p:", SHORT),
            Err(StoreError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn scripts_are_reloaded_after_script_flush() {
        let backend = RedisBackend::start("store", "script-flush").await;
        let store = backend.store();
        let mut raw = backend.raw();
        let sha = ::redis::Script::new(include_str!("../../../lua/rate_limit.lua"))
            .get_hash()
            .to_owned();
        assert!(
            store
                .rate_limit("k", rate(1.0, 5), 1)
                .await
                .unwrap()
                .allowed
        );
        let _: () = ::redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut raw)
            .await
            .unwrap();
        let loaded: Vec<bool> = ::redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&sha)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(loaded, vec![false]);
        let after = store.rate_limit("k", rate(1.0, 5), 1).await.unwrap();
        assert!(after.allowed);
        assert_eq!(after.remaining, 3, "the bucket survived the flush");
        let loaded: Vec<bool> = ::redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&sha)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(loaded, vec![true]);
        backend.check_expiry_and_clean().await;
    }

    #[tokio::test]
    async fn keys_follow_the_documented_layout() {
        let backend = RedisBackend::start("store", "layout").await;
        let store = backend.store();
        reserve(&store, &record(7, 3), 1, LONG).await;
        store.rate_limit("ip:1", rate(1.0, 1), 1).await.unwrap();
        store
            .lease_acquire(&[scope("global", 1)], "h", LONG)
            .await
            .unwrap();
        store.lock_acquire("solve", LONG).await.unwrap();
        store.counter_incr("tries", 3, LONG).await.unwrap();
        store.cooldown_begin("hint", LONG).await.unwrap();
        store.remember_once("nonce", LONG).await.unwrap();
        let mut keys: Vec<String> = backend
            .keys()
            .await
            .into_iter()
            .map(|k| k.strip_prefix(backend.prefix()).unwrap().to_owned())
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "cd:hint",
                "ctr:tries",
                "deploy:7:3",
                "lease:global",
                "lock:solve",
                "once:nonce",
                "quota:7",
                "rl:ip:1",
            ]
        );
        backend.check_expiry_and_clean().await;
    }

    #[tokio::test]
    async fn an_unreadable_record_is_reported_as_corrupt() {
        let backend = RedisBackend::start("store", "corrupt").await;
        let store = backend.store();
        let mut raw = backend.raw();
        let _: () = ::redis::cmd("SET")
            .arg(format!("{}deploy:1:1", backend.prefix()))
            .arg("not json")
            .arg("PX")
            .arg(60_000)
            .query_async(&mut raw)
            .await
            .unwrap();
        let corrupt = |r: &Result<_, StoreError>| matches!(r, Err(StoreError::Corrupt(_)));
        assert!(corrupt(
            &store
                .get_deployment(TeamId(1), ChallengeId(1))
                .await
                .map(|_| ())
        ));
        let stale = DeploymentRecord {
            version: 1,
            ..record(1, 1)
        };
        assert!(corrupt(
            &store.update_deployment(&stale, LONG).await.map(|_| ())
        ));
        assert!(corrupt(
            &store
                .release_instance(TeamId(1), ChallengeId(1), stale.instance)
                .await
                .map(|_| ())
        ));
        // Listing skips what it cannot read rather than hiding every other record.
        let fine = reserve(&store, &record(2, 1), 1, LONG).await;
        assert_eq!(store.list_deployments().await.unwrap(), vec![fine]);
        backend.check_expiry_and_clean().await;
    }
}

// ---- in-process store only ----

mod memory_only {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expiry_follows_tokios_clock() {
        let store = MemoryStore::new();
        store
            .lease_acquire(&[scope("ip", 1)], "h", Duration::from_secs(10))
            .await
            .unwrap();
        let limit = rate(1.0, 1);
        assert!(store.rate_limit("k", limit, 1).await.unwrap().allowed);
        assert!(!store.rate_limit("k", limit, 1).await.unwrap().allowed);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(store.lease_count("ip").await.unwrap(), 1);
        assert!(store.rate_limit("k", limit, 1).await.unwrap().allowed);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(store.lease_count("ip").await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn one_shot_buckets_of_many_addresses_do_not_grow_memory() {
        let store = MemoryStore::new();
        // A full bucket after 10 ms: each address's entry is garbage 10 ms after its request.
        let limit = rate(100.0, 10);
        let mut most = 0;
        for i in 0..100_000 {
            store
                .rate_limit(&format!("ip:{i}"), limit, 1)
                .await
                .unwrap();
            if i % 100 == 99 {
                tokio::time::advance(Duration::from_millis(1)).await;
            }
            most = most.max(store.entry_count());
        }
        // About 1,000 buckets are live at any time (10 ms of 100 requests per ms).
        assert!(most < 2_000, "{most} entries held");
        tokio::time::advance(Duration::from_secs(1)).await;
        for i in 0..200 {
            store.remember_once(&format!("n{i}"), LONG).await.unwrap();
            store.rate_limit("steady", limit, 0).await.unwrap();
        }
        assert!(
            store.entry_count() < 1_000,
            "{} entries held",
            store.entry_count()
        );
    }
}
