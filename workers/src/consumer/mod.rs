//! The Deployment Consumer: takes deploy jobs from the queue and carries them out through an
//! [`InstanceRuntime`], keeping the state store's record of each instance true.
//!
//! - **At-least-once in, exactly-once out.** The queue may deliver a job twice (redelivery after
//!   a crash, a duplicate publish). A start job is carried out only while the store's record of
//!   its (team, challenge) is still its instance in state Queued (or Deploying, after a crash),
//!   and the instance id is fixed by the job, so the runtime's idempotent deploy finds an
//!   instance that a previous delivery created instead of creating a second one. The pure
//!   [`decide`] holds these rules.
//! - **Ack after the intent is persisted.** A start is acked only once the record says
//!   Deploying with the route the runtime gave (versioned compare-and-set); a crash before that
//!   redelivers the job, which finds the instance again.
//! - **Attempts are counted in the store before acting** (the classic queue has no delivery
//!   count), so a job that crashes the consumer is counted too. A failed attempt holds the
//!   delivery unacked for a backoff delay (`retry_base_ms` doubling up to `retry_max_ms`), then
//!   requeues it; the last allowed attempt (`[queue].delivery_limit`) dead-letters it and fails
//!   the instance with a reason the player sees. [`RuntimeError::Rejected`] fails it at once.
//! - **A budget of deployments in progress** ([`InstanceRuntime::in_progress`] plus the deploy
//!   calls under way): past it, start jobs wait unacked (re-checked every
//!   [`ConsumerSettings::budget_poll`], and at once when a local runtime announces a change
//!   ([`local::changes`]: an instance became ready or ended); no busy loop); the prefetch
//!   bounds how many wait.
//! - **Deliveries are carried out concurrently**, up to the prefetch (each in its own task);
//!   the runtime serialises only deploys of one instance.
//! - **Queue loss** (`Unavailable` from the consumer) starts a new consumer with backoff; the
//!   broker requeues what was unacked. **Shutdown** stops taking jobs, lets the ones under way
//!   finish (jobs still waiting for the budget or a retry are requeued at once), and requeues
//!   whatever is left after [`ConsumerSettings::shutdown_grace`].

mod decision;
pub mod metrics;

use std::future::Future;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fctf_core::clock;
use fctf_core::config::Config;
use fctf_core::queue::{Delivery, DeployJob, JobConsumer, JobKind, JobQueue, QueueError};
use fctf_core::runtime::{InstanceRef, InstanceRuntime, RuntimeError};
use fctf_core::store::{DeploymentRecord, DeploymentState, StateStore, StoreError, UpdateOutcome};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::runtime::local;

pub use self::decision::{Decision, backoff, decide};
use self::metrics::Settlement;
pub use self::metrics::{ConsumerMetrics, ConsumerSnapshot};

/// How the consumer behaves; [`ConsumerSettings::from_config`] reads it from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// Unsettled deliveries at once (`[consumer].prefetch`): the batch the consumer works on.
    pub prefetch: NonZeroU16,
    /// Most deployments in progress (`[consumer].budget`).
    pub budget: u32,
    /// First retry delay (`[consumer].retry_base_ms`), doubled each attempt.
    pub retry_base: Duration,
    /// Longest retry delay (`[consumer].retry_max_ms`).
    pub retry_max: Duration,
    /// Most deliveries of one job (`[queue].delivery_limit`).
    pub delivery_limit: u32,
    /// TTL of a Deploying record (`[deployment].provisional_ttl_secs`): the listener must see
    /// the instance run within it.
    pub deploying_ttl: Duration,
    /// How long a Failed or Stopped record is kept so the player's status can say so.
    pub ended_ttl: Duration,
    /// How often a full budget is looked at again.
    pub budget_poll: Duration,
    /// How long jobs under way may take to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl ConsumerSettings {
    /// The settings in force in `config` (`[consumer]`, `[queue].delivery_limit`,
    /// `[deployment].provisional_ttl_secs`).
    pub fn from_config(config: &Config) -> Self {
        Self {
            prefetch: NonZeroU16::new(config.consumer.prefetch).unwrap_or(NonZeroU16::MIN),
            budget: config.consumer.budget,
            retry_base: Duration::from_millis(config.consumer.retry_base_ms),
            retry_max: Duration::from_millis(config.consumer.retry_max_ms),
            delivery_limit: config.queue.delivery_limit,
            deploying_ttl: config.deployment.provisional_ttl(),
            ..Self::default()
        }
    }
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            prefetch: NonZeroU16::new(40).unwrap_or(NonZeroU16::MIN),
            budget: 100,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            delivery_limit: 5,
            deploying_ttl: Duration::from_secs(300),
            ended_ttl: Duration::from_secs(600),
            budget_poll: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// Why the consumer stopped on its own: the queue refused it for a reason retrying cannot fix.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The queue's topology or URL is wrong (fix the config or the broker).
    #[error("the deploy queue cannot be consumed: {0}")]
    Queue(#[from] QueueError),
}

/// Runs the Deployment Consumer until `shutdown` completes (then stops gracefully and returns
/// `Ok`). Queue outages are waited out; only a configuration error ends it early.
pub async fn run(
    queue: Arc<dyn JobQueue>,
    store: Arc<dyn StateStore>,
    runtime: Arc<dyn InstanceRuntime>,
    settings: ConsumerSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConsumerError> {
    run_with_metrics(
        queue,
        store,
        runtime,
        settings,
        Arc::new(ConsumerMetrics::default()),
        shutdown,
    )
    .await
}

/// [`run`], counting into `metrics` (for `/metrics`).
pub async fn run_with_metrics(
    queue: Arc<dyn JobQueue>,
    store: Arc<dyn StateStore>,
    runtime: Arc<dyn InstanceRuntime>,
    settings: ConsumerSettings,
    metrics: Arc<ConsumerMetrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConsumerError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Arc::new(Context {
        store,
        runtime,
        gate: Gate::default(),
        stop: stop_rx,
        settings,
        metrics,
    });
    let mut tasks = JoinSet::new();
    let mut consumer: Option<JobConsumer> = None;
    let mut outages: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let Some(current) = consumer.as_mut() else {
            tokio::select! {
                () = &mut shutdown => break,
                started = queue.consume(ctx.settings.prefetch) => match started {
                    Ok(started) => {
                        if outages > 0 {
                            tracing::info!("deploy queue: consuming again");
                        }
                        outages = 0;
                        consumer = Some(started);
                    }
                    Err(e) if is_fatal(&e) => return Err(e.into()),
                    Err(e) => {
                        outages += 1;
                        tracing::warn!("deploy queue: cannot consume: {e}");
                        if !ctx.pause(ctx.outage_delay(outages), &mut shutdown).await {
                            break;
                        }
                    }
                },
            }
            continue;
        };
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!("deploy job handler panicked: {e}");
                }
            }
            next = current.next() => match next {
                Ok(delivery) => {
                    ctx.metrics.taken();
                    tasks.spawn(handle(ctx.clone(), delivery));
                }
                Err(e) => {
                    // The consumer is finished; the broker requeues what it held. Jobs under
                    // way keep running; their settlement fails and the job is redone.
                    outages += 1;
                    tracing::warn!("deploy queue: consumer lost: {e}");
                    consumer = None;
                    if !ctx.pause(ctx.outage_delay(outages), &mut shutdown).await {
                        break;
                    }
                }
            },
        }
    }
    tracing::info!(in_flight = tasks.len(), "deployment consumer stopping");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(ctx.settings.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "jobs still under way at the end of the shutdown grace are requeued"
        );
        tasks.shutdown().await;
    }
    drop(consumer);
    Ok(())
}

/// Errors that consuming again cannot fix.
fn is_fatal(e: &QueueError) -> bool {
    matches!(
        e,
        QueueError::TopologyMismatch(_)
            | QueueError::InvalidUrl(_)
            | QueueError::InvalidTopology(_)
    )
}

/// What every job handler shares.
#[derive(Debug)]
struct Context {
    store: Arc<dyn StateStore>,
    runtime: Arc<dyn InstanceRuntime>,
    gate: Gate,
    /// Becomes true at shutdown: waits end early and their jobs are requeued.
    stop: watch::Receiver<bool>,
    settings: ConsumerSettings,
    metrics: Arc<ConsumerMetrics>,
}

impl Context {
    fn outage_delay(&self, outages: u64) -> Duration {
        backoff(outages, self.settings.retry_base, self.settings.retry_max)
    }

    fn retry_delay(&self, attempts: u64) -> Duration {
        backoff(attempts, self.settings.retry_base, self.settings.retry_max)
    }

    /// Sleeps `delay` unless `shutdown` completes first; false on shutdown.
    async fn pause(
        &self,
        delay: Duration,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> bool {
        tokio::select! {
            () = shutdown.as_mut() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    /// Sleeps `delay`, or until `announced` sees a change, unless the consumer is stopping;
    /// false when it is.
    async fn wait_or_change(&self, delay: Duration, announced: &mut watch::Receiver<u64>) -> bool {
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => false,
            () = tokio::time::sleep(delay) => true,
            _ = announced.changed() => true,
        }
    }

    /// Sleeps `delay` unless the consumer is stopping; false when it is.
    async fn wait(&self, delay: Duration) -> bool {
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// The budget of deployments in progress: the runtime's count plus the deploy calls this
/// consumer has under way (not yet visible to the runtime's count).
#[derive(Debug, Default)]
struct Gate {
    /// Held while the budget is checked and a slot taken, so two jobs cannot take the last one.
    check: tokio::sync::Mutex<()>,
    deploying: Arc<AtomicU32>,
}

/// A slot of the budget, given back on drop.
#[derive(Debug)]
struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gate {
    /// Waits for a slot of the budget; `None` when the consumer stops first. The slot comes
    /// with whether it had to be waited for.
    async fn acquire(&self, ctx: &Context) -> Option<(Slot, bool)> {
        // Subscribed before the first look, so a change between the look and the wait wakes it.
        let mut announced = local::changes();
        let mut waited = false;
        loop {
            {
                let _check = self.check.lock().await;
                match ctx.runtime.in_progress().await {
                    Ok(busy) => {
                        let ours = self.deploying.load(Ordering::SeqCst);
                        if busy.saturating_add(ours) < ctx.settings.budget {
                            self.deploying.fetch_add(1, Ordering::SeqCst);
                            return Some((Slot(self.deploying.clone()), waited));
                        }
                    }
                    Err(e) => tracing::warn!("runtime in_progress: {e}"),
                }
            }
            if !waited {
                ctx.metrics.budget_waited();
            }
            waited = true;
            if !ctx
                .wait_or_change(ctx.settings.budget_poll, &mut announced)
                .await
            {
                return None;
            }
        }
    }
}

/// How a job ended, for the settlement.
enum Outcome {
    /// Done (or nothing to do): ack.
    Done,
    /// Failed for now: retry after a delay, or give up at the limit.
    Retry(String),
    /// Failed for good: fail the instance with this reason, dead-letter the job.
    Fail(String),
    /// The consumer is stopping before the job could start: requeue now.
    Requeue,
}

/// Handles one delivery from decoding to settlement.
async fn handle(ctx: Arc<Context>, delivery: Delivery) {
    let job = match delivery.job() {
        Ok(job) => job.clone(),
        Err(e) => {
            // Permanent: the same bytes never decode. Parked for an operator.
            tracing::warn!("deploy queue: unreadable job parked: {e}");
            settle(
                &ctx,
                delivery.reject_to_dead_letter().await,
                Settlement::Parked,
            );
            return;
        }
    };
    let attempts = match count_attempt(&ctx, &job).await {
        Ok(attempts) => attempts,
        Err(e) => {
            // Not counted, not acted on: try again later.
            tracing::warn!(job = %job.job_id, "cannot count the attempt: {e}");
            ctx.wait(ctx.retry_delay(1)).await;
            settle(&ctx, delivery.nack_requeue().await, Settlement::Requeued);
            return;
        }
    };
    let outcome = carry_out(&ctx, &job, attempts).await;
    match outcome {
        Outcome::Done => settle(&ctx, delivery.ack().await, Settlement::Acked),
        Outcome::Requeue => settle(&ctx, delivery.nack_requeue().await, Settlement::Requeued),
        Outcome::Fail(reason) => give_up(&ctx, &job, delivery, &reason).await,
        Outcome::Retry(error) if attempts >= u64::from(ctx.settings.delivery_limit) => {
            tracing::warn!(job = %job.job_id, attempts, "deploy job failed for the last time: {error}");
            let reason = format!(
                "The instance could not be {} after {attempts} attempts ({error}); please try again later.",
                if job.spec().is_some() {
                    "started"
                } else {
                    "stopped"
                }
            );
            give_up(&ctx, &job, delivery, &reason).await;
        }
        Outcome::Retry(error) => {
            let delay = ctx.retry_delay(attempts);
            tracing::info!(job = %job.job_id, attempts, ?delay, "deploy job failed, will retry: {error}");
            // Held unacked during the delay (the prefetch bounds how many), then requeued.
            ctx.wait(delay).await;
            settle(&ctx, delivery.nack_requeue().await, Settlement::Retried);
        }
    }
}

fn settle(ctx: &Context, result: Result<(), QueueError>, how: Settlement) {
    ctx.metrics.settled(how);
    if let Err(e) = result {
        let what = match how {
            Settlement::Acked => "ack",
            Settlement::Retried | Settlement::Requeued => "requeue",
            Settlement::Parked => "dead-letter",
        };
        // The channel is gone: the broker requeued the job, which will be redone idempotently.
        tracing::warn!("deploy queue: {what} failed: {e}");
    }
}

/// Counts this delivery of `job` in the store and returns the count (including it). At the cap
/// (`delivery_limit + 1`) the count stops growing and the cap is returned.
async fn count_attempt(ctx: &Context, job: &DeployJob) -> Result<u64, StoreError> {
    let cap = u64::from(ctx.settings.delivery_limit) + 1;
    // A job cannot be delivered after it expired; keep the count a little longer than that.
    let window = job
        .remaining_ttl(clock::unix_now_millis())
        .unwrap_or_default()
        + Duration::from_secs(3600);
    let count = ctx
        .store
        .counter_incr(&attempt_key(job), cap, window)
        .await?;
    Ok(count.unwrap_or(cap))
}

/// The store counter of a job's deliveries.
pub fn attempt_key(job: &DeployJob) -> String {
    format!("consumer-attempts:{}", job.job_id)
}

/// Decides and acts.
async fn carry_out(ctx: &Context, job: &DeployJob, attempts: u64) -> Outcome {
    let limit = ctx.settings.delivery_limit;
    let record = match ctx.store.get_deployment(job.team, job.challenge).await {
        Ok(record) => record,
        Err(e) => return Outcome::Retry(format!("state store: {e}")),
    };
    let mut decision = decide(
        job,
        record.as_ref(),
        clock::unix_now_millis(),
        attempts,
        limit,
    );
    let _slot = if decision == Decision::Deploy {
        // Wait for the budget, then look again if it took a while: the job may have gone
        // stale meanwhile. (A slot taken at once follows the look just made; the record is
        // checked again, by compare-and-set, when the deploy is persisted.)
        let Some((slot, waited)) = ctx.gate.acquire(ctx).await else {
            return Outcome::Requeue;
        };
        if waited {
            let record = match ctx.store.get_deployment(job.team, job.challenge).await {
                Ok(record) => record,
                Err(e) => return Outcome::Retry(format!("state store: {e}")),
            };
            decision = decide(
                job,
                record.as_ref(),
                clock::unix_now_millis(),
                attempts,
                limit,
            );
        }
        Some(slot)
    } else {
        None
    };
    let id = InstanceRef::of_job(job);
    tracing::debug!(job = %job.job_id, instance = %job.instance, attempts, ?decision, "deploy job");
    match decision {
        Decision::Deploy => {
            let Some(spec) = job.spec() else {
                return Outcome::Done;
            };
            let began = std::time::Instant::now();
            let deployed = ctx.runtime.deploy(&id, spec, job.enqueued_at_ms).await;
            ctx.metrics.deployed(began.elapsed(), deployed.is_ok());
            match deployed {
                Ok(placement) => match persist_deploying(ctx, job, &placement.route).await {
                    Ok(true) => Outcome::Done,
                    Ok(false) => {
                        // The reservation went away while deploying (stopped, expired, failed):
                        // what was just created must not run on.
                        tracing::info!(instance = %job.instance, "reservation gone during deploy; removing");
                        match ctx.runtime.remove(&id).await {
                            Ok(()) => Outcome::Done,
                            Err(e) => Outcome::Retry(format!("runtime: {e}")),
                        }
                    }
                    Err(e) => Outcome::Retry(format!("state store: {e}")),
                },
                Err(RuntimeError::Rejected(reason)) => Outcome::Fail(reason),
                Err(e) => Outcome::Retry(format!("runtime: {e}")),
            }
        }
        Decision::Remove => match ctx.runtime.remove(&id).await {
            Ok(()) => match finish(
                ctx,
                job,
                DeploymentState::Stopped,
                "The instance was stopped.",
            )
            .await
            {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::Retry(format!("state store: {e}")),
            },
            Err(e) => Outcome::Retry(format!("runtime: {e}")),
        },
        Decision::DropExpired => {
            // A crashed earlier attempt may have created it before persisting anything.
            if let Err(e) = ctx.runtime.remove(&id).await {
                return Outcome::Retry(format!("runtime: {e}"));
            }
            match ctx
                .store
                .release_instance(job.team, job.challenge, job.instance)
                .await
            {
                Ok(released) => {
                    tracing::info!(job = %job.job_id, released, "expired deploy job dropped");
                    Outcome::Done
                }
                Err(e) => Outcome::Retry(format!("state store: {e}")),
            }
        }
        Decision::DropStale => {
            tracing::info!(job = %job.job_id, instance = %job.instance, "deploy job no longer wanted; dropped");
            Outcome::Done
        }
        Decision::GiveUp { reason } => Outcome::Fail(reason),
    }
}

/// Fails the instance with `reason` (removing whatever was created), then dead-letters the job.
/// If the store cannot be written, the job is requeued instead: its count stays at the cap, so
/// the next delivery gives up again.
async fn give_up(ctx: &Context, job: &DeployJob, delivery: Delivery, reason: &str) {
    tracing::warn!(job = %job.job_id, instance = %job.instance, "deploy job given up: {reason}");
    // Remove what an attempt may have created, unless the record shows it was carried out
    // after all (Running or being stopped through the normal path).
    let carried_out = match ctx.store.get_deployment(job.team, job.challenge).await {
        Ok(Some(r)) => {
            r.instance == job.instance
                && matches!(
                    r.state,
                    DeploymentState::Running | DeploymentState::Stopping
                )
                && job.spec().is_some()
        }
        Ok(None) => false,
        // Unknown: keep the instance; the listener reconciles what has no record.
        Err(_) => true,
    };
    if !carried_out && let Err(e) = ctx.runtime.remove(&InstanceRef::of_job(job)).await {
        tracing::warn!(instance = %job.instance, "cannot remove a failed instance: {e}");
    }
    if let Err(e) = finish(ctx, job, DeploymentState::Failed, reason).await {
        tracing::warn!(job = %job.job_id, "cannot mark the instance failed: {e}");
        ctx.wait(ctx.settings.retry_max).await;
        settle(ctx, delivery.nack_requeue().await, Settlement::Requeued);
        return;
    }
    settle(
        ctx,
        delivery.reject_to_dead_letter().await,
        Settlement::Parked,
    );
}

/// Most compare-and-set rounds against concurrent writers before giving the attempt up.
const CAS_ROUNDS: usize = 8;

/// Persists the intent: the record becomes Deploying with `route`. `Ok(false)` when the record
/// is no longer this job's instance waiting to deploy (and not already Running either).
async fn persist_deploying(
    ctx: &Context,
    job: &DeployJob,
    route: &str,
) -> Result<bool, StoreError> {
    for _ in 0..CAS_ROUNDS {
        let Some(current) = ctx.store.get_deployment(job.team, job.challenge).await? else {
            return Ok(false);
        };
        if current.instance != job.instance {
            return Ok(false);
        }
        match current.state {
            DeploymentState::Queued | DeploymentState::Deploying => {}
            DeploymentState::Running => return Ok(true),
            _ => return Ok(false),
        }
        let next = DeploymentRecord {
            state: DeploymentState::Deploying,
            route: Some(route.to_owned()),
            reason: None,
            ..current
        };
        if let UpdateOutcome::Updated(_) = ctx
            .store
            .update_deployment(&next, ctx.settings.deploying_ttl)
            .await?
        {
            return Ok(true);
        }
    }
    Err(StoreError::Unavailable(
        "the record kept changing while the deploy was persisted".to_owned(),
    ))
}

/// Moves this job's instance to `state` (Stopped or Failed) with `reason`, if the record is
/// still this instance and still means to run (a start gives up only while Queued or
/// Deploying; a stop ends whatever active state it is in).
async fn finish(
    ctx: &Context,
    job: &DeployJob,
    state: DeploymentState,
    reason: &str,
) -> Result<(), StoreError> {
    for _ in 0..CAS_ROUNDS {
        let Some(current) = ctx.store.get_deployment(job.team, job.challenge).await? else {
            return Ok(());
        };
        let applies = current.instance == job.instance
            && match job.kind {
                JobKind::Start(_) => matches!(
                    current.state,
                    DeploymentState::Queued | DeploymentState::Deploying
                ),
                JobKind::Stop => current.state.is_active(),
            };
        if !applies {
            return Ok(());
        }
        let next = DeploymentRecord {
            state,
            reason: Some(reason.to_owned()),
            ..current
        };
        if let UpdateOutcome::Updated(_) = ctx
            .store
            .update_deployment(&next, ctx.settings.ended_ttl)
            .await?
        {
            return Ok(());
        }
    }
    Err(StoreError::Unavailable(
        "the record kept changing while the instance was being ended".to_owned(),
    ))
}
