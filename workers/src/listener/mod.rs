//! The Deployment Listener: compares what the runtime really runs with the state store and the
//! database's tracking rows, and corrects them.
//!
//! - [`decision`]: the pure function `reconcile(&Views, &Memory, now, &Rules) -> Decision`
//!   (every rule lives there).
//! - [`executor`]: reads complete views, applies actions (store CAS writes, runtime removes,
//!   tracking-row writes).
//! - [`Listener`]: the loop. A full resync every `[listener].resync_secs`, plus event hints from
//!   an optional [`ChangeFeed`], sharded by instance to `[listener].shards` workers (order kept
//!   per instance). Without a feed, the resync alone converges.
//!
//! See `docs/listener.md` for the rules in words.

pub mod decision;
pub mod executor;
pub mod metrics;
pub mod poll;

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use fctf_core::clock;
use fctf_core::config::ListenerConfig;
use fctf_core::db::Database;
use fctf_core::ids::InstanceId;
use fctf_core::runtime::{InstanceRef, InstanceRuntime};
use fctf_core::store::StateStore;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::Notify;
use tokio::task::JoinSet;

pub use self::decision::{Action, ActionKind, Decision, Memory, Rules, Scope, Views, reconcile};
pub use self::executor::{Applied, Executor, ViewError};
pub use self::metrics::{ListenerMetrics, MetricsSnapshot};

/// When the contest ends. Implemented by the Contestant Service (admins change the end at
/// runtime); [`FixedContestWindow`] for tests and configs without one.
#[async_trait]
pub trait ContestWindow: Send + Sync + fmt::Debug {
    /// The contest end in Unix milliseconds, or `None` for no end (or unknown: an
    /// implementation that cannot tell must answer `None`, never a guess, since the end
    /// deletes every instance).
    async fn ends_at_ms(&self) -> Option<u64>;
}

/// A contest end that never changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FixedContestWindow(pub Option<u64>);

#[async_trait]
impl ContestWindow for FixedContestWindow {
    async fn ends_at_ms(&self) -> Option<u64> {
        self.0
    }
}

/// Hints that an instance changed (a pod event). A runtime that can watch implements it (the
/// Kubernetes runtime); a hint only triggers a reconcile of that instance from fresh views, so a
/// late, repeated or spurious hint is harmless. The stream may end (the resync goes on).
pub trait ChangeFeed: Send + Sync + fmt::Debug {
    fn changes(&self) -> BoxStream<'static, InstanceRef>;
}

/// The hints waiting for one shard: each instance at most once, in the order of its first hint
/// not yet taken. A hint of an instance that is already waiting adds nothing (its pass reads
/// fresh views, which include whatever the later events changed), so a burst of events never
/// overflows a shard and no hint is dropped: what waits is bounded by the number of instances.
/// An instance taken for a pass can be queued again at once: a hint during its pass gets a pass
/// of its own after it.
#[derive(Debug, Default)]
struct ShardQueue {
    waiting: Mutex<(VecDeque<InstanceRef>, HashSet<InstanceId>)>,
    wake: Notify,
}

impl ShardQueue {
    /// Queues `id` unless it is already waiting.
    fn push(&self, id: InstanceRef) {
        let added = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let (order, members) = &mut *waiting;
            let added = members.insert(id.instance);
            if added {
                order.push_back(id);
            }
            added
        };
        if added {
            self.wake.notify_one();
        }
    }

    /// Takes up to `max` waiting instances, oldest first.
    fn take(&self, max: usize) -> Vec<InstanceRef> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let (order, members) = &mut *waiting;
        let n = order.len().min(max);
        let batch: Vec<InstanceRef> = order.drain(..n).collect();
        for id in &batch {
            members.remove(&id.instance);
        }
        batch
    }
}

/// Most hints one shard reconciles from one snapshot.
const HINT_BATCH: usize = 64;

/// Passes a shard makes at once, after a hint pass, over the instances whose store write lost a
/// race (the record moved under the pass: the consumer's Deploying write, a stop). Past them the
/// instance waits for its next hint or the resync.
const LOST_RACE_PASSES: usize = 3;

/// The clock the listener reads `now` from (Unix milliseconds).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// One Deployment Listener: its adapters, rules and memory.
pub struct Listener {
    executor: Executor,
    rules: Rules,
    memory: Mutex<Memory>,
    clock: Clock,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("executor", &self.executor)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// What one pass did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassReport {
    pub actions: Vec<Action>,
    pub applied: Applied,
}

impl Listener {
    /// A listener with an empty memory and the wall clock.
    pub fn new(
        runtime: Arc<dyn InstanceRuntime>,
        store: Arc<dyn StateStore>,
        db: Database,
        contest: Arc<dyn ContestWindow>,
        rules: Rules,
    ) -> Self {
        Self {
            executor: Executor {
                runtime,
                store,
                db,
                contest,
                metrics: Arc::new(ListenerMetrics::default()),
            },
            rules,
            memory: Mutex::new(Memory::default()),
            clock: Arc::new(clock::unix_now_millis),
        }
    }

    /// Counts into `metrics` (shared with a `/metrics` responder) instead of counters of its
    /// own.
    pub fn with_metrics(mut self, metrics: Arc<ListenerMetrics>) -> Self {
        self.executor.metrics = metrics;
        self
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The counters (for `/metrics`).
    pub fn metrics(&self) -> Arc<ListenerMetrics> {
        self.executor.metrics.clone()
    }

    /// The memory now (tests, debugging).
    pub fn memory(&self) -> Memory {
        self.lock_memory().clone()
    }

    fn lock_memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        // The memory is replaced whole, never left half-written.
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One full resync at `now_ms`. A view that cannot be read completely makes no pass: no
    /// action, memory unchanged.
    pub async fn resync_at(&self, now_ms: u64) -> Result<PassReport, ViewError> {
        let views = match self.executor.views().await {
            Ok(views) => views,
            Err(error) => {
                self.executor.metrics.incomplete();
                return Err(error);
            }
        };
        Ok(self.pass(&views, now_ms).await)
    }

    /// One full resync now.
    pub async fn resync(&self) -> Result<PassReport, ViewError> {
        self.resync_at((self.clock)()).await
    }

    /// A reconcile of one instance at `now_ms` (an event hint).
    pub async fn reconcile_instance_at(
        &self,
        id: &InstanceRef,
        now_ms: u64,
    ) -> Result<PassReport, ViewError> {
        self.reconcile_instances_at(std::slice::from_ref(id), now_ms)
            .await
    }

    /// A reconcile of some instances at `now_ms` (a batch of event hints), from one runtime
    /// snapshot.
    pub async fn reconcile_instances_at(
        &self,
        ids: &[InstanceRef],
        now_ms: u64,
    ) -> Result<PassReport, ViewError> {
        let views = match self.executor.views_of(ids).await {
            Ok(views) => views,
            Err(error) => {
                self.executor.metrics.incomplete();
                return Err(error);
            }
        };
        Ok(self.pass(&views, now_ms).await)
    }

    async fn pass(&self, views: &Views, now_ms: u64) -> PassReport {
        let actions = {
            let mut memory = self.lock_memory();
            let decision = reconcile(views, &memory, now_ms, &self.rules);
            *memory = decision.memory;
            decision.actions
        };
        self.executor
            .metrics
            .pass(matches!(views.scope, Scope::All));
        let applied = self.executor.apply(&actions, now_ms).await;
        PassReport { actions, applied }
    }

    /// Runs until `shutdown` resolves: a full resync every `resync` (the first at once), and a
    /// reconcile of each hinted instance on its shard.
    pub async fn run(
        self: Arc<Self>,
        feed: Option<Arc<dyn ChangeFeed>>,
        resync: Duration,
        shards: u32,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let mut workers = JoinSet::new();
        let mut shard_queues: Vec<Arc<ShardQueue>> = Vec::new();
        if feed.is_some() {
            for _ in 0..shards.max(1) {
                let queue = Arc::new(ShardQueue::default());
                shard_queues.push(queue.clone());
                let listener = self.clone();
                workers.spawn(async move {
                    loop {
                        // Hints that came in while a pass ran are taken together: one snapshot
                        // for the batch, each instance once.
                        let mut batch = queue.take(HINT_BATCH);
                        if batch.is_empty() {
                            // A push between the take and this wait leaves a permit: no hint
                            // is missed.
                            queue.wake.notified().await;
                            continue;
                        }
                        for _ in 0..=LOST_RACE_PASSES {
                            let now = (listener.clock)();
                            let report = match listener.reconcile_instances_at(&batch, now).await
                            {
                                Ok(report) => report,
                                Err(error) => {
                                    tracing::warn!(hints = batch.len(), %error, "listener: hint pass skipped");
                                    break;
                                }
                            };
                            // A lost race means the record just moved: read it again now
                            // rather than at the next hint or resync.
                            let lost: HashSet<_> = report.applied.lost.into_iter().collect();
                            batch.retain(|id| lost.contains(&id.instance));
                            if batch.is_empty() {
                                break;
                            }
                        }
                    }
                });
            }
        }
        let mut hints = feed.map(|f| f.changes());
        let mut ticker = tokio::time::interval(resync.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticker.tick() => {
                    if let Err(error) = self.resync().await {
                        tracing::warn!(%error, "listener: resync skipped (incomplete views)");
                    }
                }
                hint = next_hint(&mut hints) => match hint {
                    Some(id) => {
                        let shard = shard_of(&id, shard_queues.len());
                        let queue = shard_queues.get(shard);
                        if let Some(queue) = queue {
                            queue.push(id);
                        }
                        self.executor.metrics.hint(queue.is_none());
                    }
                    None => {
                        tracing::info!("listener: change feed ended; resync only");
                        hints = None;
                    }
                },
            }
        }
        workers.shutdown().await;
    }
}

/// The next hint, or pending forever without a feed.
async fn next_hint(hints: &mut Option<BoxStream<'static, InstanceRef>>) -> Option<InstanceRef> {
    match hints {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// The shard of an instance: stable, so one instance's hints stay in order.
pub fn shard_of(id: &InstanceRef, shards: usize) -> usize {
    let n = u128::try_from(shards.max(1)).unwrap_or(1);
    usize::try_from(id.instance.0.as_u128() % n).unwrap_or(0)
}

/// Runs the Deployment Listener with `config` until `shutdown` resolves (the `fctf listener`
/// role). [`run_with_metrics`] keeps a handle on its metrics.
pub async fn run(
    runtime: Arc<dyn InstanceRuntime>,
    store: Arc<dyn StateStore>,
    db: Database,
    contest: Arc<dyn ContestWindow>,
    feed: Option<Arc<dyn ChangeFeed>>,
    config: ListenerConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    let metrics = Arc::new(ListenerMetrics::default());
    run_with_metrics(runtime, store, db, contest, feed, config, metrics, shutdown).await;
}

/// [`run`], counting into `metrics` (for `/metrics`).
#[allow(clippy::too_many_arguments)] // the role's parts, each needed once
pub async fn run_with_metrics(
    runtime: Arc<dyn InstanceRuntime>,
    store: Arc<dyn StateStore>,
    db: Database,
    contest: Arc<dyn ContestWindow>,
    feed: Option<Arc<dyn ChangeFeed>>,
    config: ListenerConfig,
    metrics: Arc<ListenerMetrics>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let listener = Arc::new(
        Listener::new(runtime, store, db, contest, Rules::from_config(&config))
            .with_metrics(metrics),
    );
    listener
        .run(
            feed,
            Duration::from_secs(config.resync_secs),
            config.shards,
            shutdown,
        )
        .await;
}
