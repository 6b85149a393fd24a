//! [`MemoryQueue`]: the deploy queue inside the process, for the embedded default (`fctf up`) and
//! for tests. It behaves like the classic RabbitMQ queue of [`Topology`]: the same exact bound and
//! refusal, per-consumer prefetch, requeue on nack or drop, expiry into the parked queue.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    DeadLetterReason, Delivery, DeliverySource, DeployJob, Disposition, InvalidJob, JobConsumer,
    JobQueue, ParkedJob, QueueError, QueueStats, Settlement, Topology,
};
use crate::clock;

/// The in-process deploy queue. Cheap to clone; clones share one queue.
#[derive(Clone, Debug)]
pub struct MemoryQueue {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    max_length: usize,
    parked_max_length: usize,
    state: Mutex<State>,
    /// Woken whenever a message may have become deliverable (published, requeued) or a consumer's
    /// in-flight count dropped.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Message>,
    /// Delivered, unsettled messages by delivery tag.
    unacked: HashMap<u64, Outstanding>,
    parked: VecDeque<ParkedJob>,
    /// Unsettled deliveries per live consumer.
    in_flight: HashMap<u64, u16>,
    next_tag: u64,
    next_consumer: u64,
}

#[derive(Debug)]
struct Message {
    payload: Vec<u8>,
    /// When the message expires (the broker's per-message `expiration`).
    deadline: Instant,
    redelivered: bool,
}

#[derive(Debug)]
struct Outstanding {
    consumer: u64,
    message: Message,
}

impl MemoryQueue {
    /// An empty queue with the bounds of `topology` (`max_length`, `parked_max_length`; the names
    /// do not matter in-process).
    pub fn new(topology: &Topology) -> Self {
        Self {
            shared: Arc::new(Shared {
                max_length: usize::try_from(topology.max_length).unwrap_or(usize::MAX),
                parked_max_length: usize::try_from(topology.parked_max_length)
                    .unwrap_or(usize::MAX),
                state: Mutex::new(State::default()),
                changed: Notify::new(),
            }),
        }
    }

    /// Enqueues raw bytes as a foreign publisher could (they need not be a valid job), expiring
    /// after `ttl`, under the same bound as [`JobQueue::publish`]. For poison-message tests and
    /// tools; services publish with [`JobQueue::publish`].
    pub fn publish_raw(&self, payload: Vec<u8>, ttl: Duration) -> Result<(), QueueError> {
        self.shared.enqueue(payload, ttl)
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before anything that could panic,
        // so a poisoned lock still guards valid data (and Drop impls must never panic).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enqueue(&self, payload: Vec<u8>, ttl: Duration) -> Result<(), QueueError> {
        let now = Instant::now();
        let mut state = self.state();
        state.expire(now, self.parked_max_length);
        // Ready messages only, as RabbitMQ counts `x-max-length`; refused, never displacing.
        if state.ready.len() >= self.max_length {
            return Err(QueueError::Full);
        }
        state.ready.push_back(Message {
            payload,
            deadline: now + ttl,
            redelivered: false,
        });
        drop(state);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Puts a delivered message back at the head of the queue, marked redelivered (like
    /// RabbitMQ's requeue to the original position). Requeues ignore the bound, as the broker's do.
    fn requeue(state: &mut State, mut message: Message) {
        message.redelivered = true;
        state.ready.push_front(message);
    }

    /// Removes delivery `tag` from the unsettled set, freeing its consumer's prefetch slot.
    fn take_outstanding(state: &mut State, tag: u64) -> Option<Message> {
        let outstanding = state.unacked.remove(&tag)?;
        if let Some(count) = state.in_flight.get_mut(&outstanding.consumer) {
            *count = count.saturating_sub(1);
        }
        Some(outstanding.message)
    }
}

impl State {
    /// Moves every expired ready message to the parked queue.
    fn expire(&mut self, now: Instant, parked_max_length: usize) {
        if !self.ready.iter().any(|m| m.deadline <= now) {
            return;
        }
        let (expired, live): (VecDeque<_>, VecDeque<_>) =
            self.ready.drain(..).partition(|m| m.deadline <= now);
        self.ready = live;
        for message in expired {
            self.park(
                message.payload,
                DeadLetterReason::Expired,
                parked_max_length,
            );
        }
    }

    /// Parks a message; beyond the bound the oldest parked one goes (`drop-head`).
    fn park(&mut self, payload: Vec<u8>, reason: DeadLetterReason, parked_max_length: usize) {
        self.parked.push_back(ParkedJob { payload, reason });
        while self.parked.len() > parked_max_length {
            self.parked.pop_front();
        }
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn publish(&self, job: &DeployJob) -> Result<(), QueueError> {
        let payload = job.encode_checked()?;
        let ttl = job
            .remaining_ttl(clock::unix_now_millis())
            .ok_or(InvalidJob("job expired before it was published"))?;
        self.shared.enqueue(payload, ttl)
    }

    async fn consume(&self, prefetch: NonZeroU16) -> Result<JobConsumer, QueueError> {
        let mut state = self.shared.state();
        let id = state.next_consumer;
        state.next_consumer += 1;
        state.in_flight.insert(id, 0);
        drop(state);
        Ok(JobConsumer::new(Box::new(MemoryConsumer {
            shared: Arc::clone(&self.shared),
            id,
            prefetch: prefetch.get(),
        })))
    }

    async fn take_parked(&self, max: usize) -> Result<Vec<ParkedJob>, QueueError> {
        let mut state = self.shared.state();
        state.expire(Instant::now(), self.shared.parked_max_length);
        let n = max.min(state.parked.len());
        Ok(state.parked.drain(..n).collect())
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut state = self.shared.state();
        state.expire(Instant::now(), self.shared.parked_max_length);
        Ok(QueueStats {
            ready: u32::try_from(state.ready.len()).unwrap_or(u32::MAX),
            parked: u32::try_from(state.parked.len()).unwrap_or(u32::MAX),
        })
    }
}

#[derive(Debug)]
struct MemoryConsumer {
    shared: Arc<Shared>,
    id: u64,
    prefetch: u16,
}

impl MemoryConsumer {
    /// The next deliverable message, if this consumer may take one now.
    fn try_take(&self) -> Option<Delivery> {
        let mut state = self.shared.state();
        state.expire(Instant::now(), self.shared.parked_max_length);
        let in_flight = state.in_flight.get(&self.id).copied().unwrap_or(0);
        if in_flight >= self.prefetch {
            return None;
        }
        let message = state.ready.pop_front()?;
        let tag = state.next_tag;
        state.next_tag += 1;
        state.in_flight.insert(self.id, in_flight + 1);
        let payload = message.payload.clone();
        let redelivered = message.redelivered;
        state.unacked.insert(
            tag,
            Outstanding {
                consumer: self.id,
                message,
            },
        );
        drop(state);
        Some(Delivery::new(
            payload,
            redelivered,
            Box::new(MemorySettlement {
                shared: Arc::clone(&self.shared),
                tag,
            }),
        ))
    }
}

#[async_trait]
impl DeliverySource for MemoryConsumer {
    async fn next(&mut self) -> Result<Delivery, QueueError> {
        loop {
            // Register for wake-ups before looking, so a change between the look and the wait is
            // not missed.
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(delivery) = self.try_take() {
                return Ok(delivery);
            }
            changed.await;
        }
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        // What the broker does when a channel closes: every unsettled delivery goes back, in
        // delivery order, ahead of the rest.
        let mut state = self.shared.state();
        state.in_flight.remove(&self.id);
        let mut tags: Vec<u64> = state
            .unacked
            .iter()
            .filter(|(_, o)| o.consumer == self.id)
            .map(|(tag, _)| *tag)
            .collect();
        tags.sort_unstable_by(|a, b| b.cmp(a));
        for tag in tags {
            if let Some(outstanding) = state.unacked.remove(&tag) {
                Shared::requeue(&mut state, outstanding.message);
            }
        }
        drop(state);
        self.shared.changed.notify_waiters();
    }
}

#[derive(Debug)]
struct MemorySettlement {
    shared: Arc<Shared>,
    tag: u64,
}

#[async_trait]
impl Settlement for MemorySettlement {
    async fn settle(self: Box<Self>, disposition: Disposition) -> Result<(), QueueError> {
        let mut state = self.shared.state();
        let Some(message) = Shared::take_outstanding(&mut state, self.tag) else {
            // As with a closed AMQP channel: the job was already requeued for someone else.
            return Err(QueueError::Unavailable(
                "delivery is no longer outstanding: its consumer was closed and the job requeued"
                    .to_owned(),
            ));
        };
        match disposition {
            Disposition::Ack => {}
            Disposition::Requeue => Shared::requeue(&mut state, message),
            Disposition::DeadLetter => state.park(
                message.payload,
                DeadLetterReason::Rejected,
                self.shared.parked_max_length,
            ),
        }
        drop(state);
        self.shared.changed.notify_waiters();
        Ok(())
    }

    fn abandon(self: Box<Self>) {
        let mut state = self.shared.state();
        if let Some(message) = Shared::take_outstanding(&mut state, self.tag) {
            Shared::requeue(&mut state, message);
        }
        drop(state);
        self.shared.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    //! Behaviour only the in-process queue can show deterministically (paused time). The shared
    //! behaviour is in the conformance suite, `core/tests/it/queue/`.

    use super::*;

    fn queue(max_length: u32) -> MemoryQueue {
        MemoryQueue::new(&Topology {
            max_length,
            parked_max_length: 2,
            ..Topology::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_follows_the_clock_and_parks() {
        let q = queue(10);
        q.publish_raw(b"short".to_vec(), Duration::from_secs(1))
            .expect("room");
        q.publish_raw(b"long".to_vec(), Duration::from_secs(10))
            .expect("room");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(q.stats().await.expect("stats").ready, 2);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            q.stats().await.expect("stats"),
            QueueStats {
                ready: 1,
                parked: 1
            }
        );
        let mut consumer = q
            .consume(NonZeroU16::new(1).expect("non-zero"))
            .await
            .expect("consume");
        let delivery = consumer.next().await.expect("delivery");
        assert_eq!(delivery.payload(), b"long");
    }

    #[tokio::test]
    async fn parked_queue_drops_its_oldest_beyond_its_bound() {
        let q = queue(10);
        for payload in [b"a", b"b", b"c"] {
            q.publish_raw(payload.to_vec(), Duration::from_secs(60))
                .expect("room");
        }
        let mut consumer = q
            .consume(NonZeroU16::new(3).expect("non-zero"))
            .await
            .expect("consume");
        for _ in 0..3 {
            let delivery = consumer.next().await.expect("delivery");
            delivery.reject_to_dead_letter().await.expect("reject");
        }
        let parked = q.take_parked(10).await.expect("parked");
        let payloads: Vec<&[u8]> = parked.iter().map(|p| p.payload.as_slice()).collect();
        assert_eq!(payloads, [b"b", b"c"]);
    }

    #[tokio::test]
    async fn a_zero_bound_refuses_everything() {
        let q = queue(0);
        assert!(matches!(
            q.publish_raw(b"x".to_vec(), Duration::from_secs(1)),
            Err(QueueError::Full)
        ));
    }
}
