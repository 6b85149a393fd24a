//! [`DeploymentCenter`]: the Deployment Center in-process. Each operation reads the store, asks
//! [`policy`](super::policy) what to do, and writes with the store's atomic operations (quota
//! reservation, versioned compare-and-set), so concurrent calls and the other services' writers
//! never overwrite each other.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fctf_core::config::{Config, DeploymentConfig};
use fctf_core::ids::{InstanceId, TeamId};
use fctf_core::queue::{DeployJob, JobQueue, QueueError};
use fctf_core::runtime::{InstanceRef, InstanceRuntime, RuntimeError};
use fctf_core::store::{
    DeploymentRecord, DeploymentState, Reservation, StateStore, StoreError, UpdateOutcome,
};
use fctf_core::token;

use super::contract::{
    DeploymentControl, ExtendRequest, InstanceKey, InstanceStatus, InstanceTarget, StartRequest,
    WorkflowCallback, WorkflowPhase,
};
use super::metrics::Metrics;
use super::policy::{self, ExtendRefusal, ExtensionRules, PublicEndpoints, QueueOrder};
use super::{CenterKeys, Clock, SetupError, SystemClock};
use crate::error::{ApiError, ErrorKind};

/// Seconds a player is told to wait when the deploy queue is full.
pub const QUEUE_FULL_RETRY_SECS: u64 = 10;

/// How long a scan of the Queued records answers queue positions before it is redone.
pub const QUEUE_ORDER_CACHE: Duration = Duration::from_secs(1);

/// Most log lines one call returns.
pub const MAX_LOG_TAIL: u32 = 10_000;

/// Most instances one list call returns.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// How often an operation re-reads and retries after losing a compare-and-set race.
const CAS_ATTEMPTS: usize = 3;

/// How long a start may stay Queued without any change before a new start request of its slot
/// publishes its job again. A reservation can be written with no job behind it: the store call
/// timed out for the caller (who was told 503) but the store applied it. Jobs are idempotent
/// per instance, so a second job of a start that was only slow costs a queue slot, no more.
pub const REPUBLISH_AFTER: Duration = Duration::from_secs(30);

/// The answer to a start the deploy queue refused as full.
fn queue_full() -> ApiError {
    ApiError::new(
        ErrorKind::QueueFull,
        "Too many instances are starting right now (the deploy queue is full); \
         please try again shortly.",
    )
    .retry_after(QUEUE_FULL_RETRY_SECS)
}

/// Whether `record` looks like a reservation whose job may be lost: still Queued and unchanged
/// for [`REPUBLISH_AFTER`] at `now_ms`.
pub fn job_may_be_lost(record: &DeploymentRecord, now_ms: u64) -> bool {
    record.state == DeploymentState::Queued
        && now_ms.saturating_sub(record.updated_at_ms) >= REPUBLISH_AFTER.as_millis() as u64
}

/// The Deployment Center: the one control API for instance start, stop, status, extension and
/// logs, over the state store and the deploy queue.
#[derive(Debug)]
pub struct DeploymentCenter {
    store: Arc<dyn StateStore>,
    queue: Arc<dyn JobQueue>,
    provisional_ttl: Duration,
    rules: ExtensionRules,
    endpoints: PublicEndpoints,
    keys: CenterKeys,
    clock: Arc<dyn Clock>,
    runtime: Option<Arc<dyn InstanceRuntime>>,
    metrics: Metrics,
    queue_order: Mutex<QueueOrderCache>,
    /// Held by the one call that scans the records for the queue order.
    queue_order_scan: tokio::sync::Mutex<()>,
}

/// The queue order the center answers positions from, and when it was last scanned (`None`:
/// not yet).
#[derive(Debug, Default)]
struct QueueOrderCache {
    order: Arc<Vec<QueueOrder>>,
    scanned_at: Option<Instant>,
}

impl DeploymentCenter {
    /// A Deployment Center on `store` and `queue` with the `[deployment]` settings and `keys`,
    /// on the system clock and without a runtime (logs answer 503; extensions move only the
    /// record, for a runtime that has no deadline of its own).
    pub fn new(
        store: Arc<dyn StateStore>,
        queue: Arc<dyn JobQueue>,
        config: &DeploymentConfig,
        keys: CenterKeys,
    ) -> Self {
        Self {
            store,
            queue,
            provisional_ttl: config.provisional_ttl(),
            rules: ExtensionRules::from_config(config),
            endpoints: PublicEndpoints::from_config(config),
            keys,
            clock: Arc::new(SystemClock),
            runtime: None,
            metrics: Metrics::default(),
            queue_order: Mutex::new(QueueOrderCache::default()),
            queue_order_scan: tokio::sync::Mutex::new(()),
        }
    }

    /// [`Self::new`] with the keys of `[signing]` and `[tokens]` of `config`.
    pub fn from_config(
        config: &Config,
        store: Arc<dyn StateStore>,
        queue: Arc<dyn JobQueue>,
        runtime: Option<Arc<dyn InstanceRuntime>>,
    ) -> Result<Self, SetupError> {
        let keys = CenterKeys::from_config(config)?;
        let center = Self::new(store, queue, &config.deployment, keys);
        Ok(match runtime {
            Some(runtime) => center.with_runtime(runtime),
            None => center,
        })
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Reads instance logs through `runtime`, and moves an extended instance's deadline there
    /// ([`InstanceRuntime::set_deadline`]) so the runtime does not end it at its old end.
    pub fn with_runtime(mut self, runtime: Arc<dyn InstanceRuntime>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The state store (nonces of signed requests live there too).
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The keys: request verification and token signing.
    pub fn keys(&self) -> &CenterKeys {
        &self.keys
    }

    /// The counters `/metrics` shows.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Now, Unix milliseconds, on this center's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Records the final status of a deployment workflow (the Argo exit hook). A failed or
    /// errored workflow marks a Queued or Deploying instance Failed with Argo's message as the
    /// reason (freeing its quota slot) and asks for whatever it left behind to be removed; a
    /// succeeded one changes nothing (the Deployment Listener sees the instance run). A callback
    /// about an instance that is not the live one changes nothing: `NotFound` when its slot has
    /// no record (an image build's preview instance that was never started or is gone),
    /// `Conflict` when another instance holds the slot.
    pub async fn workflow_callback(
        &self,
        callback: &WorkflowCallback,
    ) -> Result<InstanceStatus, ApiError> {
        let result = self.callback_inner(callback).await;
        self.count("callback", &result)
    }

    // ---- the operations, each returning its outcome label for the metrics ----

    async fn start_inner(
        &self,
        request: &StartRequest,
    ) -> Result<(InstanceStatus, &'static str), ApiError> {
        let key = request.key;
        request
            .spec
            .validate()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let now = self.now_ms();
        let lifetime =
            policy::lifetime_secs(request.spec.lifetime_secs, now, request.contest_ends_at_ms)
                .map_err(|e| ApiError::forbidden(e.to_string()))?;
        let mut spec = request.spec.clone();
        spec.lifetime_secs = lifetime;

        for _ in 0..CAS_ATTEMPTS {
            let record = DeploymentRecord {
                team: key.team,
                challenge: key.challenge,
                instance: InstanceId::new(),
                state: DeploymentState::Queued,
                version: 0,
                route: None,
                reason: None,
                created_at_ms: now,
                updated_at_ms: now,
                expires_at_ms: None,
            };
            let reservation = self
                .store
                .reserve_instance(&record, request.quota, self.provisional_ttl)
                .await
                .map_err(store_unavailable)?;
            match reservation {
                Reservation::Reserved(stored) => {
                    self.note_queue_change(&stored, true);
                    return self.publish_start(key, stored, spec).await;
                }
                Reservation::AlreadyActive(existing) if job_may_be_lost(&existing, now) => {
                    // Marked first (a CAS that also renews the provisional TTL), so concurrent
                    // requests publish it once per REPUBLISH_AFTER; a lost race just answers.
                    let mut marked = existing.clone();
                    marked.updated_at_ms = now;
                    let outcome = self
                        .store
                        .update_deployment(&marked, self.provisional_ttl)
                        .await
                        .map_err(store_unavailable)?;
                    let UpdateOutcome::Updated(stored) = outcome else {
                        continue;
                    };
                    tracing::warn!(
                        team = %key.team, challenge = %key.challenge, instance = %stored.instance,
                        "a start queued for long without a change: its job is published again"
                    );
                    return self.republish_start(key, stored, spec).await;
                }
                Reservation::AlreadyActive(existing) if existing.state.is_active() => {
                    let status = self.status_of(key, Some(&existing)).await?;
                    return Ok((status, "already_active"));
                }
                Reservation::AlreadyActive(finished) => {
                    // A Stopped or Failed record kept for its status: clear it and start anew.
                    self.store
                        .release_instance(key.team, key.challenge, finished.instance)
                        .await
                        .map_err(store_unavailable)?;
                }
                Reservation::QuotaExceeded { active } => {
                    return Err(ApiError::new(
                        ErrorKind::QuotaExceeded,
                        format!(
                            "Your team already runs {active} instance{} (at most {} at once); \
                             stop one first.",
                            if active == 1 { "" } else { "s" },
                            request.quota
                        ),
                    ));
                }
            }
        }
        Err(ApiError::conflict(
            "This challenge's instance changed while starting it; please try again.",
        ))
    }

    /// Publishes the start job of a fresh reservation; rolls the reservation back when the queue
    /// refuses it.
    async fn publish_start(
        &self,
        key: InstanceKey,
        record: DeploymentRecord,
        spec: fctf_core::queue::DeploySpec,
    ) -> Result<(InstanceStatus, &'static str), ApiError> {
        let job = self.start_job(key, &record, spec);
        let refusal = match self.queue.publish(&job).await {
            Ok(()) => {
                let status = self.status_of(key, Some(&record)).await?;
                return Ok((status, "queued"));
            }
            Err(QueueError::Full) => queue_full(),
            Err(QueueError::InvalidJob(e)) => ApiError::bad_request(e.to_string()),
            Err(e @ QueueError::Timeout(_)) => {
                // The confirm was late, not necessarily the job: if a consumer already moved the
                // record on, the job got through and the start stands.
                if let Ok(Some(current)) = self.store.get_deployment(key.team, key.challenge).await
                    && current.instance == record.instance
                    && current.version > record.version
                {
                    let status = self.status_of(key, Some(&current)).await?;
                    return Ok((status, "queued"));
                }
                ApiError::unavailable("deploy queue", &e)
            }
            Err(e) => ApiError::unavailable("deploy queue", &e),
        };
        self.roll_back(&record).await;
        Err(refusal)
    }

    /// The start job of `record`'s instance, expiring with the provisional TTL.
    fn start_job(
        &self,
        key: InstanceKey,
        record: &DeploymentRecord,
        spec: fctf_core::queue::DeploySpec,
    ) -> DeployJob {
        DeployJob::start(
            key.team,
            key.challenge,
            record.instance,
            spec,
            self.now_ms(),
            self.provisional_ttl,
        )
    }

    /// Publishes the start job of a reservation again (see [`job_may_be_lost`]). Unlike a fresh
    /// start, a refusal leaves the reservation as it is: it was not made by this request.
    async fn republish_start(
        &self,
        key: InstanceKey,
        record: DeploymentRecord,
        spec: fctf_core::queue::DeploySpec,
    ) -> Result<(InstanceStatus, &'static str), ApiError> {
        let job = self.start_job(key, &record, spec);
        match self.queue.publish(&job).await {
            Ok(()) => {
                let status = self.status_of(key, Some(&record)).await?;
                Ok((status, "republished"))
            }
            Err(QueueError::Full) => Err(queue_full()),
            Err(e) => Err(ApiError::unavailable("deploy queue", &e)),
        }
    }

    /// Frees a reservation whose job was not published. A failure is logged: the reservation
    /// then ends with its provisional TTL.
    async fn roll_back(&self, record: &DeploymentRecord) {
        self.note_queue_change(record, false);
        if let Err(e) = self
            .store
            .release_instance(record.team, record.challenge, record.instance)
            .await
        {
            tracing::warn!(
                team = %record.team, challenge = %record.challenge, instance = %record.instance,
                error = %e, "could not roll back a reservation; it expires with its TTL"
            );
        }
    }

    async fn stop_inner(
        &self,
        target: &InstanceTarget,
    ) -> Result<(InstanceStatus, &'static str), ApiError> {
        let key = target.key;
        for _ in 0..CAS_ATTEMPTS {
            let record = self.live_record(target).await?;
            match record.state {
                DeploymentState::Stopping => {
                    let status = self.status_of(key, Some(&record)).await?;
                    return Ok((status, "already_stopping"));
                }
                DeploymentState::Stopped | DeploymentState::Failed => {
                    // Nothing runs: forget the record (its slot is already free).
                    self.store
                        .release_instance(key.team, key.challenge, record.instance)
                        .await
                        .map_err(store_unavailable)?;
                    let cleared = DeploymentRecord {
                        state: DeploymentState::Stopped,
                        ..record
                    };
                    return Ok((self.describe(key, Some(&cleared)), "cleared"));
                }
                DeploymentState::Queued | DeploymentState::Deploying | DeploymentState::Running => {
                    // Live: move it to Stopping below.
                }
            }
            let stopping = DeploymentRecord {
                state: DeploymentState::Stopping,
                ..record
            };
            let outcome = self
                .store
                .update_deployment(&stopping, self.provisional_ttl)
                .await
                .map_err(store_unavailable)?;
            let UpdateOutcome::Updated(stored) = outcome else {
                continue;
            };
            let job = DeployJob::stop(
                key.team,
                key.challenge,
                stored.instance,
                self.now_ms(),
                self.provisional_ttl,
            );
            // Stopping is already durable: the Deployment Listener removes Stopping instances,
            // so a stop job that could not be published delays the stop, it does not lose it.
            let outcome = match self.queue.publish(&job).await {
                Ok(()) => "stopping",
                Err(e) => {
                    tracing::warn!(
                        team = %key.team, challenge = %key.challenge, instance = %stored.instance,
                        error = %e, "stop recorded but its job not published; the listener will remove it"
                    );
                    "stopping_unpublished"
                }
            };
            return Ok((self.describe(key, Some(&stored)), outcome));
        }
        Err(ApiError::conflict(
            "The instance changed while stopping it; please try again.",
        ))
    }

    async fn extend_inner(
        &self,
        request: &ExtendRequest,
    ) -> Result<(InstanceStatus, &'static str), ApiError> {
        let key = request.target.key;
        let mut counted = false;
        for _ in 0..CAS_ATTEMPTS {
            let record = self.live_record(&request.target).await?;
            let counter = extension_counter(record.instance);
            let mut used = self
                .store
                .counter_get(&counter)
                .await
                .map_err(store_unavailable)?;
            if counted {
                used = used.saturating_sub(1); // this request's own increment
            }
            let now = self.now_ms();
            let new_expiry =
                policy::extension(self.rules, &record, used, now, request.contest_ends_at_ms)
                    .map_err(extend_refused)?;
            if !counted {
                let window = policy::extension_counter_window(self.rules, now, new_expiry);
                let taken = self
                    .store
                    .counter_incr(&counter, u64::from(self.rules.max), window)
                    .await
                    .map_err(store_unavailable)?;
                if taken.is_none() {
                    return Err(extend_refused(ExtendRefusal::LimitReached {
                        max: self.rules.max,
                    }));
                }
                counted = true;
            }
            let extended = DeploymentRecord {
                expires_at_ms: Some(new_expiry),
                ..record
            };
            // The record outlives the lifetime by the provisional TTL, so the listener has time
            // to tear the instance down while its record still says what it was.
            let ttl = Duration::from_millis(new_expiry.saturating_sub(now))
                .saturating_add(self.provisional_ttl);
            match self
                .store
                .update_deployment(&extended, ttl)
                .await
                .map_err(store_unavailable)?
            {
                UpdateOutcome::Updated(stored) => {
                    self.move_runtime_deadline(&stored, record.expires_at_ms, new_expiry)
                        .await?;
                    let status = self.status_of(key, Some(&stored)).await?;
                    return Ok((status, "extended"));
                }
                UpdateOutcome::Conflict(_) => continue,
            }
        }
        Err(ApiError::conflict(
            "The instance changed while extending it; please try again.",
        ))
    }

    /// Tells the runtime (when this center has one) that `stored`'s instance now ends at
    /// `new_expiry`, after the record says so. The runtime's own deadline would otherwise end it
    /// at its old end while the record, and so the player, says it runs on. If the runtime
    /// cannot move it, the record's extension is undone (back to `previous`) and the player is
    /// answered 503: record and runtime agree on the old end, and the player knows the
    /// extension did not happen. The extension counter keeps the attempt (the store has no
    /// decrement). A runtime without the instance (`NotFound`) has nothing that could end it
    /// early: the extension stands, and the listener deals with the missing instance.
    async fn move_runtime_deadline(
        &self,
        stored: &DeploymentRecord,
        previous: Option<u64>,
        new_expiry: u64,
    ) -> Result<(), ApiError> {
        let Some(runtime) = &self.runtime else {
            return Ok(());
        };
        let id = InstanceRef {
            team: stored.team,
            challenge: stored.challenge,
            instance: stored.instance,
        };
        let failure = match runtime.set_deadline(&id, new_expiry).await {
            Ok(()) => return self.follow_later_extension(runtime, &id, new_expiry).await,
            Err(RuntimeError::NotFound) => {
                tracing::info!(instance = %id.instance, "extended an instance the runtime does not have");
                return Ok(());
            }
            Err(e) => e,
        };
        tracing::warn!(instance = %id.instance, error = %failure, "runtime deadline not moved; extension undone");
        self.undo_extension(stored, previous, new_expiry).await?;
        Err(ApiError::unavailable("runtime", &failure))
    }

    /// After a successful runtime call: if a concurrent extension moved the record further and
    /// its runtime call landed first, the runtime now holds the older end; send the newer one.
    async fn follow_later_extension(
        &self,
        runtime: &Arc<dyn InstanceRuntime>,
        id: &InstanceRef,
        sent: u64,
    ) -> Result<(), ApiError> {
        let current = self
            .store
            .get_deployment(id.team, id.challenge)
            .await
            .map_err(store_unavailable)?;
        let later = current
            .filter(|r| r.instance == id.instance && r.state == DeploymentState::Running)
            .and_then(|r| r.expires_at_ms)
            .filter(|&at| at > sent);
        if let Some(at) = later {
            runtime.set_deadline(id, at).await.or_else(|e| match e {
                RuntimeError::NotFound => Ok(()),
                e => Err(ApiError::unavailable("runtime", &e)),
            })?;
        }
        Ok(())
    }

    /// Writes `stored` back to its `previous` expiry, unless the record moved on meanwhile
    /// ([`policy::extension_rollback`]); re-reads and retries a lost compare-and-set.
    async fn undo_extension(
        &self,
        stored: &DeploymentRecord,
        previous: Option<u64>,
        extended_to: u64,
    ) -> Result<(), ApiError> {
        let mut current = Some(stored.clone());
        for _ in 0..CAS_ATTEMPTS {
            let Some(undone) = current
                .filter(|r| r.instance == stored.instance)
                .and_then(|r| policy::extension_rollback(&r, extended_to, previous))
            else {
                return Ok(());
            };
            let now = self.now_ms();
            let ttl = Duration::from_millis(previous.unwrap_or(now).saturating_sub(now))
                .saturating_add(self.provisional_ttl);
            match self
                .store
                .update_deployment(&undone, ttl)
                .await
                .map_err(store_unavailable)?
            {
                UpdateOutcome::Updated(_) => return Ok(()),
                UpdateOutcome::Conflict(_) => {
                    current = self
                        .store
                        .get_deployment(stored.team, stored.challenge)
                        .await
                        .map_err(store_unavailable)?;
                }
            }
        }
        Err(ApiError::conflict(
            "The instance changed while undoing its extension; please check its status.",
        ))
    }

    async fn callback_inner(
        &self,
        callback: &WorkflowCallback,
    ) -> Result<(InstanceStatus, &'static str), ApiError> {
        let key = InstanceKey {
            team: callback.team,
            challenge: callback.challenge,
        };
        tracing::info!(
            team = %key.team, challenge = %key.challenge, instance = %callback.instance,
            workflow = %callback.workflow, status = ?callback.status, "workflow finished"
        );
        for _ in 0..CAS_ATTEMPTS {
            let record = self.callback_record(callback).await?;
            let failed = matches!(
                callback.status,
                WorkflowPhase::Failed | WorkflowPhase::Error
            );
            let pending = matches!(
                record.state,
                DeploymentState::Queued | DeploymentState::Deploying
            );
            if !(failed && pending) {
                let status = self.status_of(key, Some(&record)).await?;
                return Ok((status, "unchanged"));
            }
            let failed_record = DeploymentRecord {
                state: DeploymentState::Failed,
                reason: Some(policy::workflow_failure_reason(callback.message.as_deref())),
                ..record
            };
            match self
                .store
                .update_deployment(&failed_record, self.provisional_ttl)
                .await
                .map_err(store_unavailable)?
            {
                UpdateOutcome::Updated(stored) => {
                    // Whatever the workflow created before failing goes too (best effort: the
                    // listener deletes leftovers of Failed instances anyway).
                    let job = DeployJob::stop(
                        key.team,
                        key.challenge,
                        stored.instance,
                        self.now_ms(),
                        self.provisional_ttl,
                    );
                    if let Err(e) = self.queue.publish(&job).await {
                        tracing::warn!(instance = %stored.instance, error = %e, "cleanup job of a failed workflow not published");
                    }
                    return Ok((self.describe(key, Some(&stored)), "failed"));
                }
                UpdateOutcome::Conflict(_) => continue,
            }
        }
        Err(ApiError::conflict(
            "The instance changed while recording the workflow; please try again.",
        ))
    }

    /// The record a workflow callback is about. `NotFound` when its slot has no record at all (a
    /// build for a preview instance that was never started, or is gone: there is nothing to
    /// record the outcome on), `Conflict` when another instance holds the slot. Neither changes
    /// anything.
    async fn callback_record(
        &self,
        callback: &WorkflowCallback,
    ) -> Result<DeploymentRecord, ApiError> {
        let record = self
            .store
            .get_deployment(callback.team, callback.challenge)
            .await
            .map_err(store_unavailable)?;
        match record {
            Some(record) if record.instance == callback.instance => Ok(record),
            Some(_) => Err(not_live()),
            None => Err(ApiError::not_found(format!(
                "No instance {} of team {}, challenge {} is recorded; the workflow's outcome \
                 was not recorded.",
                callback.instance, callback.team, callback.challenge
            ))),
        }
    }

    // ---- reading ----

    /// The record of `target`'s slot if it is the live one: `NotFound` without a record,
    /// `Conflict` when the target names another instance.
    async fn live_record(&self, target: &InstanceTarget) -> Result<DeploymentRecord, ApiError> {
        let record = self
            .store
            .get_deployment(target.key.team, target.key.challenge)
            .await
            .map_err(store_unavailable)?;
        match (record, target.instance) {
            (Some(record), Some(named)) if record.instance != named => Err(not_live()),
            (Some(record), _) => Ok(record),
            (None, Some(_)) => Err(not_live()),
            (None, None) => Err(ApiError::not_found(
                "Your team has no instance of this challenge.",
            )),
        }
    }

    /// The full status of `record`: queue position while Queued, extensions left and access
    /// while Running.
    async fn status_of(
        &self,
        key: InstanceKey,
        record: Option<&DeploymentRecord>,
    ) -> Result<InstanceStatus, ApiError> {
        let now = self.now_ms();
        let Some(rec) = record else {
            return Ok(policy::describe(key, None, now, None, None, None));
        };
        let mut position = None;
        let mut extensions = None;
        let mut access = None;
        match rec.state {
            DeploymentState::Queued => {
                let order = self.cached_queue_order().await?;
                position = Some(policy::queue_position(&order, rec));
            }
            DeploymentState::Running => {
                let used = self
                    .store
                    .counter_get(&extension_counter(rec.instance))
                    .await
                    .map_err(store_unavailable)?;
                extensions = Some((used, self.rules.max));
                if let Some(claims) = policy::token_claims(self.keys.token.kid(), rec, now) {
                    let token = token::mint(&self.keys.token, &claims)
                        .map_err(|e| ApiError::internal(&e))?;
                    access = Some(self.endpoints.access(token));
                }
            }
            _ => {}
        }
        Ok(policy::describe(
            key,
            Some(rec),
            now,
            position,
            extensions,
            access,
        ))
    }

    /// The status of a record without store reads (no position, extensions or access).
    fn describe(&self, key: InstanceKey, record: Option<&DeploymentRecord>) -> InstanceStatus {
        policy::describe(key, record, self.now_ms(), None, None, None)
    }

    /// The queue order of every Queued record: from a scan at most [`QUEUE_ORDER_CACHE`] old,
    /// kept current with this center's own starts and rollbacks. When the scan is older, one
    /// caller scans again while the others answer from the order as it stands rather than wait
    /// for it (a burst of starts all answering at once would otherwise wait on, or each make, a
    /// scan of every record). Before the first scan has finished, that order holds this center's
    /// own starts only.
    async fn cached_queue_order(&self) -> Result<Arc<Vec<QueueOrder>>, ApiError> {
        let (order, fresh) = self.current_queue_order();
        if fresh {
            return Ok(order);
        }
        let Ok(_scan) = self.queue_order_scan.try_lock() else {
            return Ok(order);
        };
        // A scan may have finished between the look and the lock.
        let (order, fresh) = self.current_queue_order();
        if fresh {
            return Ok(order);
        }
        let records = self
            .store
            .list_deployments()
            .await
            .map_err(store_unavailable)?;
        let order = Arc::new(policy::queue_order(&records));
        *self
            .queue_order
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = QueueOrderCache {
            order: Arc::clone(&order),
            scanned_at: Some(Instant::now()),
        };
        Ok(order)
    }

    /// The cached queue order, and whether its scan is younger than [`QUEUE_ORDER_CACHE`].
    fn current_queue_order(&self) -> (Arc<Vec<QueueOrder>>, bool) {
        let cache = self
            .queue_order
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let fresh = cache
            .scanned_at
            .is_some_and(|at| at.elapsed() < QUEUE_ORDER_CACHE);
        (Arc::clone(&cache.order), fresh)
    }

    /// Keeps the cached queue order true to this center's own starts (added) and rollbacks
    /// (removed), so its answers count each other; other writers show with the next scan.
    fn note_queue_change(&self, record: &DeploymentRecord, queued: bool) {
        let mut cache = self
            .queue_order
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = (record.created_at_ms, record.instance);
        let order = Arc::make_mut(&mut cache.order);
        match (order.binary_search(&entry), queued) {
            (Err(at), true) => order.insert(at, entry),
            (Ok(at), false) => {
                order.remove(at);
            }
            _ => {}
        }
    }

    /// Counts the outcome of `operation` and passes the result on.
    fn count(
        &self,
        operation: &'static str,
        result: &Result<(InstanceStatus, &'static str), ApiError>,
    ) -> Result<InstanceStatus, ApiError> {
        match result {
            Ok((status, outcome)) => {
                self.metrics.operation(operation, outcome);
                Ok(status.clone())
            }
            Err(e) => {
                self.metrics.operation(operation, e.kind.as_str());
                self.metrics.refusal(e.kind.as_str());
                Err(e.clone())
            }
        }
    }
}

#[async_trait]
impl DeploymentControl for DeploymentCenter {
    async fn start(&self, request: &StartRequest) -> Result<InstanceStatus, ApiError> {
        let result = self.start_inner(request).await;
        self.count("start", &result)
    }

    async fn stop(&self, target: &InstanceTarget) -> Result<InstanceStatus, ApiError> {
        let result = self.stop_inner(target).await;
        self.count("stop", &result)
    }

    async fn status(&self, target: &InstanceTarget) -> Result<InstanceStatus, ApiError> {
        let record = self
            .store
            .get_deployment(target.key.team, target.key.challenge)
            .await
            .map_err(store_unavailable)?;
        match (&record, target.instance) {
            (Some(rec), Some(named)) if rec.instance != named => Err(ApiError::not_found(
                "That instance no longer exists; it was stopped or replaced.",
            )),
            (None, Some(_)) => Err(ApiError::not_found(
                "That instance no longer exists; it was stopped or replaced.",
            )),
            _ => self.status_of(target.key, record.as_ref()).await,
        }
    }

    async fn extend(&self, request: &ExtendRequest) -> Result<InstanceStatus, ApiError> {
        let result = self.extend_inner(request).await;
        self.count("extend", &result)
    }

    async fn list(
        &self,
        team: Option<TeamId>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<InstanceStatus>, ApiError> {
        let all = self
            .store
            .list_deployments()
            .await
            .map_err(store_unavailable)?;
        let order = policy::queue_order(&all);
        let mut records: Vec<&DeploymentRecord> = all
            .iter()
            .filter(|r| team.is_none_or(|t| r.team == t))
            .collect();
        records.sort_unstable_by_key(|r| (r.created_at_ms, r.instance));
        let now = self.now_ms();
        Ok(records
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit.min(MAX_LIST_LIMIT)).unwrap_or(0))
            .map(|r| {
                let key = InstanceKey {
                    team: r.team,
                    challenge: r.challenge,
                };
                let position = Some(policy::queue_position(&order, r));
                policy::describe(key, Some(r), now, position, None, None)
            })
            .collect())
    }

    async fn stop_all(&self) -> Result<u32, ApiError> {
        let records = self
            .store
            .list_deployments()
            .await
            .map_err(store_unavailable)?;
        let mut requested = 0_u32;
        for record in records.iter().filter(|r| {
            matches!(
                r.state,
                DeploymentState::Queued | DeploymentState::Deploying | DeploymentState::Running
            )
        }) {
            let target = InstanceTarget {
                key: InstanceKey {
                    team: record.team,
                    challenge: record.challenge,
                },
                instance: Some(record.instance),
            };
            match self.stop(&target).await {
                Ok(status) if status.state == Some(DeploymentState::Stopping) => requested += 1,
                Ok(_) => {}
                Err(e) if e.kind == ErrorKind::Unavailable => return Err(e),
                Err(e) => {
                    tracing::info!(instance = %record.instance, error = %e, "stop-all skipped an instance");
                }
            }
        }
        Ok(requested)
    }

    async fn logs(&self, target: &InstanceTarget, tail: u32) -> Result<String, ApiError> {
        let Some(runtime) = &self.runtime else {
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                "Instance logs are not available: this Deployment Center runs without a runtime.",
            ));
        };
        let record = self.live_record(target).await?;
        let id = InstanceRef {
            team: record.team,
            challenge: record.challenge,
            instance: record.instance,
        };
        runtime
            .logs(&id, tail.min(MAX_LOG_TAIL))
            .await
            .map_err(|e| match e {
                RuntimeError::NotFound => {
                    ApiError::not_found("That instance has no logs: it is not running.")
                }
                RuntimeError::Rejected(message) => ApiError::bad_request(message),
                e @ RuntimeError::Unavailable(_) => ApiError::unavailable("runtime", &e),
            })
    }
}

/// Name of the extension counter of `instance` (`ctr:deploy-ext:<instance>` in the store):
/// durable, and gone on its own after the instance.
pub fn extension_counter(instance: InstanceId) -> String {
    format!("deploy-ext:{instance}")
}

fn store_unavailable(e: StoreError) -> ApiError {
    ApiError::unavailable("state store", &e)
}

fn not_live() -> ApiError {
    ApiError::conflict("That instance is no longer the live one; nothing was changed.")
}

fn extend_refused(refusal: ExtendRefusal) -> ApiError {
    let kind = match refusal {
        ExtendRefusal::NotRunning | ExtendRefusal::Expired => ErrorKind::Conflict,
        ExtendRefusal::TooEarly { .. }
        | ExtendRefusal::LimitReached { .. }
        | ExtendRefusal::ContestEnds => ErrorKind::Unprocessable,
    };
    ApiError::new(kind, refusal.to_string())
}
