//! The deploy queue: the job message, the RabbitMQ topology and the [`JobQueue`] trait with two
//! implementations that pass one conformance suite (`core/tests/it/queue/`):
//! [`MemoryQueue`] (in-process, the embedded default of `fctf up`) and [`AmqpQueue`] (RabbitMQ
//! through lapin, production).
//!
//! # Contract
//!
//! - **A refused publish is an error the caller gets.** [`JobQueue::publish`] returns `Ok` only
//!   once the broker confirmed the job (publisher confirms, `mandatory`, a timeout on every
//!   publish). Otherwise the caller gets [`QueueError::Full`], [`QueueError::Unroutable`],
//!   [`QueueError::Timeout`] or [`QueueError::Unavailable`] and rolls its reservation back.
//! - **The bound is exact.** At most [`Topology::max_length`] ready jobs; the next publish is
//!   refused with `Full` (the same refusal in both implementations) and nothing already queued is
//!   lost or displaced.
//! - **Manual acknowledgement, one delivery at a time.** Each [`Delivery`] is settled on its own
//!   with [`Delivery::ack`], [`Delivery::nack_requeue`] or [`Delivery::reject_to_dead_letter`]
//!   (never `multiple=true`, so a failure of job *k* can never be acked along with its
//!   neighbours). A delivery dropped unsettled is requeued, and so is every unsettled delivery of
//!   a dropped [`JobConsumer`]. A job is therefore delivered *at least* once: the consumer
//!   deduplicates by [`DeployJob::job_id`].
//! - **Persistent, with a stale-intent guard.** Jobs are persistent (delivery mode 2) and carry a
//!   per-message expiration equal to their remaining TTL ([`DeployJob::expires_at_ms`]); an
//!   expired job is never delivered and goes to the parked queue with reason
//!   [`DeadLetterReason::Expired`]. Jobs rejected by a consumer are parked with
//!   [`DeadLetterReason::Rejected`]. [`JobQueue::take_parked`] reads them back.
//!
//! # Classic queue, not quorum: the evidence
//!
//! Measured on this project's broker (RabbitMQ 3.10.8) by the tests in
//! `core/tests/it/queue/evidence.rs`, which re-check these facts on every run (`x-max-length=5`,
//! `x-overflow=reject-publish`; the concurrent counts vary from run to run and are printed):
//!
//! | | classic | quorum |
//! |---|---|---|
//! | sequential publishes accepted into an empty queue | exactly 5, the 6th nacked | 6 (one past the bound), the 7th nacked |
//! | after the queue was full, one message consumed, one published | accepted | **nacked**: publishing resumes only below 80 % of the bound |
//! | 8 channels publishing 4 jobs each, concurrently | exactly 5 accepted, every run | 8 to 32 accepted (six runs: 12, 8, 32, 12, 8, 8): the bound does not hold under concurrency |
//! | per-message TTL | honoured, expired message dead-lettered (`expired`) | the same |
//! | delivery limit | none (only the `redelivered` flag) | `x-delivery-limit=2` → 3 deliveries, then dead-lettered; `x-delivery-count` header |
//!
//! This is consistent with how quorum queues admit messages: the limit is evaluated in the Raft
//! state machine *after* an enqueue, and publishers learn of it from an asynchronous "reject from
//! now on" notice (and a "go" notice below the 80 % soft limit), hence the overshoot and the
//! hysteresis. The bound is what the Deployment Center turns into "queue full"
//! for players and what protects the cluster from a start-button storm, so it must be exact and
//! identical in the in-process queue: **the deploy queue is a classic queue** (declared with an
//! explicit `x-queue-type=classic`, so a leftover quorum queue of the same name fails the
//! declaration loudly).
//!
//! What the classic queue does not give, the consumer must: a classic queue has no delivery limit
//! and no delivery count, only [`Delivery::redelivered`]. The Deployment Consumer therefore counts
//! attempts per `job_id` in the state store *before* acting on a job (so a job that crashes the
//! consumer is counted too) and rejects it to the dead-letter exchange past its limit. The
//! [`MemoryQueue`] offers no count either, so code written against it works on the broker.
//! Classic dead-lettering is at-most-once (a parked message can be lost if the parked queue is
//! deleted at that moment), acceptable for jobs that are parked for inspection only.
//!
//! # Connection loss and reconnection ([`AmqpQueue`])
//!
//! One AMQP connection per [`AmqpQueue`], without lapin's automatic recovery (its replay of
//! consumers would hide a lost channel from the consumer, which must know to discard its
//! in-flight work). The publish timeout bounds every broker round trip of the queue, not only
//! publishes.
//!
//! - While the connection is down, [`JobQueue::publish`] fails fast with
//!   [`QueueError::Unavailable`]: the first publish after the loss tries one reconnect bounded by
//!   the publish timeout, later ones within [`RECONNECT_BACKOFF`] of a failed attempt fail at
//!   once without touching the network.
//! - Once the broker is back, the next publish after the backoff reconnects, redeclares the
//!   topology and publishes: no process restart.
//! - A [`JobConsumer`] whose channel or connection is lost returns `Unavailable` from
//!   [`JobConsumer::next`] (and on every later call). Its unsettled deliveries are requeued by the
//!   broker; settling them fails with `Unavailable`. The consumer loop calls
//!   [`JobQueue::consume`] again, which reconnects the same way.
//! - A publish that timed out may still have been enqueued (the confirm was late, not
//!   necessarily the message; the stall test shows exactly that). The publisher rolls back its
//!   reservation anyway; the consumer must therefore drop a job whose instance no longer holds a
//!   reservation in the state store. The publishing channel of a timed-out publish is closed and
//!   replaced by the next publish.

mod amqp;
mod job;
mod memory;
mod topology;

use std::fmt;
use std::num::NonZeroU16;
use std::time::Duration;

use async_trait::async_trait;

pub use self::amqp::{AmqpQueue, RECONNECT_BACKOFF};
pub use self::job::{
    DeployJob, DeploySpec, InvalidJob, JobDecodeError, JobKind, MAX_ENCODED_JOB_BYTES,
    SCHEMA_VERSION,
};
pub use self::memory::MemoryQueue;
pub use self::topology::{
    ArgumentValue, InvalidTopology, QUEUE_TYPE, Topology, TopologyProblem, declare,
};

/// How long a publish waits for the broker's confirm unless configured otherwise.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a queue operation failed. The Deployment Center maps the publish kinds to HTTP
/// (`Full` → 429, the others → 503) after rolling back the reservation.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker refused the job (nack): the queue holds `max_length` ready jobs
    /// (`x-overflow=reject-publish`). Nothing was enqueued.
    #[error("the deploy queue is full; try again shortly")]
    Full,
    /// The broker had no route for the job (returned with `mandatory`, or the exchange is
    /// missing): the topology is broken. Nothing was enqueued.
    #[error("the deploy job could not be routed to the deploy queue: {0}")]
    Unroutable(String),
    /// No confirm within the publish timeout (broker overloaded, blocked by a resource alarm, or
    /// the network stalled). The job may or may not have been enqueued.
    #[error("the broker did not confirm the deploy job within {0:?}")]
    Timeout(Duration),
    /// No usable connection to the broker (down, unreachable, connection or channel lost).
    #[error("the deploy queue is unavailable: {0}")]
    Unavailable(String),
    /// An existing queue or exchange is declared differently from this [`Topology`]
    /// (406 PRECONDITION_FAILED). A deployment error: stop and fix the config or the broker.
    #[error("the broker's deploy queue topology differs from the configured one: {0}")]
    TopologyMismatch(String),
    /// The AMQP URL in the config is not usable (the message never contains the password).
    #[error("invalid AMQP URL: {0}")]
    InvalidUrl(String),
    /// The topology in the config is not usable.
    #[error(transparent)]
    InvalidTopology(#[from] InvalidTopology),
    /// The job breaks an invariant of the message and was not published.
    #[error(transparent)]
    InvalidJob(#[from] InvalidJob),
    /// The broker refused an operation for another reason (access refused, a missing vhost, …).
    #[error("the broker refused the operation: {0}")]
    Broker(String),
}

/// Why a parked job was dead-lettered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// A consumer called [`Delivery::reject_to_dead_letter`].
    Rejected,
    /// Its per-message expiration passed while it waited in the queue.
    Expired,
    /// Any other reason the broker gave (for example `maxlen`, `delivery_limit`).
    Other(String),
}

/// A job in the parked (dead-letter) queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedJob {
    /// The message exactly as published (it may not decode: poison messages are parked too).
    pub payload: Vec<u8>,
    /// Why it was parked.
    pub reason: DeadLetterReason,
}

impl ParkedJob {
    /// Decodes the payload.
    pub fn job(&self) -> Result<DeployJob, JobDecodeError> {
        DeployJob::decode(&self.payload)
    }
}

/// Message counts of the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs ready for delivery (what `max_length` bounds). Excludes delivered, unsettled ones.
    pub ready: u32,
    /// Jobs in the parked queue.
    pub parked: u32,
}

/// The deploy queue. Object-safe: services hold an `Arc<dyn JobQueue>` chosen by the config.
#[async_trait]
pub trait JobQueue: Send + Sync + fmt::Debug {
    /// Publishes `job` (persistent, expiring at `job.expires_at_ms`). `Ok` means the broker has
    /// taken responsibility for it; every refusal is an error (see [`QueueError`]). A job that is
    /// invalid or already expired is refused with [`QueueError::InvalidJob`] before anything is
    /// sent.
    async fn publish(&self, job: &DeployJob) -> Result<(), QueueError>;

    /// Starts a consumer that holds at most `prefetch` unsettled deliveries at a time.
    async fn consume(&self, prefetch: NonZeroU16) -> Result<JobConsumer, QueueError>;

    /// Removes and returns up to `max` parked jobs, oldest first (for operators, and for tests).
    async fn take_parked(&self, max: usize) -> Result<Vec<ParkedJob>, QueueError>;

    /// Current message counts.
    async fn stats(&self) -> Result<QueueStats, QueueError>;
}

/// What a consumer decided about a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disposition {
    Ack,
    Requeue,
    DeadLetter,
}

/// The backend side of one unsettled delivery.
#[async_trait]
trait Settlement: Send + Sync + fmt::Debug {
    /// Tells the broker what happened to the delivery.
    async fn settle(self: Box<Self>, disposition: Disposition) -> Result<(), QueueError>;
    /// The delivery was dropped unsettled: requeue it, without waiting (runs in `Drop`).
    fn abandon(self: Box<Self>);
}

/// One delivered job, to be settled exactly once. Dropping it unsettled requeues the job (marked
/// redelivered).
#[derive(Debug)]
pub struct Delivery {
    payload: Vec<u8>,
    job: Result<DeployJob, JobDecodeError>,
    redelivered: bool,
    settlement: Option<Box<dyn Settlement>>,
}

impl Delivery {
    fn new(payload: Vec<u8>, redelivered: bool, settlement: Box<dyn Settlement>) -> Self {
        let job = DeployJob::decode(&payload);
        Self {
            payload,
            job,
            redelivered,
            settlement: Some(settlement),
        }
    }

    /// The decoded job, or why the message is not a valid job (it can still be settled: a poison
    /// message is rejected to the dead-letter queue like any other).
    pub fn job(&self) -> Result<&DeployJob, &JobDecodeError> {
        self.job.as_ref()
    }

    /// The message exactly as received.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// True if this job was delivered before (and requeued: nacked, dropped, or its consumer or
    /// channel went away). It may have been partly processed.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// Done: remove the job from the queue.
    pub async fn ack(self) -> Result<(), QueueError> {
        self.settle(Disposition::Ack).await
    }

    /// Not now: put the job back in the queue for another delivery.
    pub async fn nack_requeue(self) -> Result<(), QueueError> {
        self.settle(Disposition::Requeue).await
    }

    /// Never: move the job to the parked queue (reason [`DeadLetterReason::Rejected`]).
    pub async fn reject_to_dead_letter(self) -> Result<(), QueueError> {
        self.settle(Disposition::DeadLetter).await
    }

    async fn settle(mut self, disposition: Disposition) -> Result<(), QueueError> {
        match self.settlement.take() {
            Some(settlement) => settlement.settle(disposition).await,
            // Unreachable: settling consumes the delivery, and only settling takes the handle.
            None => Err(QueueError::Unavailable(
                "delivery was already settled".to_owned(),
            )),
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(settlement) = self.settlement.take() {
            settlement.abandon();
        }
    }
}

/// The backend side of a consumer.
#[async_trait]
trait DeliverySource: Send + fmt::Debug {
    async fn next(&mut self) -> Result<Delivery, QueueError>;
}

/// A stream of deliveries with a prefetch bound. Dropping it requeues every delivery it handed
/// out that is still unsettled.
#[derive(Debug)]
pub struct JobConsumer {
    source: Box<dyn DeliverySource>,
}

impl JobConsumer {
    fn new(source: Box<dyn DeliverySource>) -> Self {
        Self { source }
    }

    /// Waits for the next delivery. While `prefetch` deliveries are unsettled, waits until one is
    /// settled. `Err(Unavailable)` means this consumer is finished (channel or connection lost):
    /// start a new one with [`JobQueue::consume`].
    pub async fn next(&mut self) -> Result<Delivery, QueueError> {
        self.source.next().await
    }
}
