//! T70, shard ordering: 10,000 events over 500 instances (20 each, interleaved across
//! instances, in order per instance), each event a change of the instance in the runtime
//! followed by its hint, sent as fast as the test can, into the listener's loop with 8 shards.
//! Only each instance's last event calls for an action (ready: mark it Running at that event's
//! route; ended: fail it and remove it); the 19 before it (created, started and not ready, each
//! at a route of its own) call for none.
//!
//! A hint only asks for a pass over fresh views, so "per-instance order" is: an instance's
//! hints are taken in order by one shard, and its last event is followed by a pass that sees it,
//! whatever the burst (no hint lost on the way, none acted on twice). Checked:
//!
//! - the final state equals the last event: every record is Running at its last event's route,
//!   or Failed (`START_FAILED`) and removed from the runtime;
//! - every action on an instance (the runtime's `set_deadline` after Running, its `remove`)
//!   happened once, with the instance at its last event; the counters agree (250 Running, 250
//!   Failed, 250 removes), no hint was dropped, and no resync did it instead of the hints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fctf_core::clock;
use fctf_core::ids::InstanceId;
use fctf_core::queue::DeploySpec;
use fctf_core::runtime::{InstanceRef, InstanceRuntime, Observed, Phase, Placement, RuntimeResult};
use fctf_core::store::DeploymentState;
use fctf_workers::listener::decision::reasons;
use fctf_workers::listener::{ActionKind, ChangeFeed};
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;

use super::live::Backend;
use super::support::{FakeRuntime, iref, observed};

const INSTANCES: usize = 500;
const EVENTS_EACH: u32 = 20;
const SHARDS: u32 = 8;

/// The fake runtime, with the number of the last event applied to each instance, and for every
/// `set_deadline` and `remove` the event number the instance was at when it was called.
#[derive(Debug, Default)]
struct Recorded {
    inner: FakeRuntime,
    at_event: Mutex<HashMap<InstanceId, u32>>,
    deadlines_at: Mutex<Vec<(InstanceId, u32)>>,
    removes_at: Mutex<Vec<(InstanceId, u32)>>,
}

impl Recorded {
    /// Applies event `seq` to the instance: its new observation.
    fn apply(&self, seq: u32, o: Observed) {
        let mut at = self.at_event.lock().unwrap();
        self.inner.put(o.clone());
        at.insert(o.id.instance, seq);
    }

    fn event_of(&self, id: InstanceId) -> u32 {
        self.at_event.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
}

#[async_trait]
impl InstanceRuntime for Recorded {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn deploy(
        &self,
        id: &InstanceRef,
        spec: &DeploySpec,
        started_at_ms: u64,
    ) -> RuntimeResult<Placement> {
        self.inner.deploy(id, spec, started_at_ms).await
    }

    async fn remove(&self, id: &InstanceRef) -> RuntimeResult<()> {
        let seq = self.event_of(id.instance);
        self.removes_at.lock().unwrap().push((id.instance, seq));
        self.inner.remove(id).await
    }

    async fn in_progress(&self) -> RuntimeResult<u32> {
        self.inner.in_progress().await
    }

    async fn snapshot(&self) -> RuntimeResult<Vec<Observed>> {
        // Taken under the event lock, so a snapshot never holds half of an event.
        let _at = self.at_event.lock().unwrap();
        let inner = &self.inner;
        futures_util::FutureExt::now_or_never(inner.snapshot()).expect("the fake never waits")
    }

    async fn logs(&self, id: &InstanceRef, tail: u32) -> RuntimeResult<String> {
        self.inner.logs(id, tail).await
    }

    async fn set_deadline(&self, id: &InstanceRef, ends_at_ms: u64) -> RuntimeResult<()> {
        let seq = self.event_of(id.instance);
        self.deadlines_at.lock().unwrap().push((id.instance, seq));
        self.inner.set_deadline(id, ends_at_ms).await
    }
}

/// Hints from a channel the test feeds.
#[derive(Debug)]
struct ChannelFeed(Mutex<Option<mpsc::UnboundedReceiver<InstanceRef>>>);

impl ChangeFeed for ChannelFeed {
    fn changes(&self) -> BoxStream<'static, InstanceRef> {
        let rx = self.0.lock().unwrap().take().expect("one subscription");
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|id| (id, rx))
        }))
    }
}

/// The route an instance has at event `seq`.
fn route(k: usize, seq: u32) -> String {
    format!("instance-{k}.event-{seq}:80")
}

/// Instance `k`'s observation at event `seq` (1-based): created, then started and not ready,
/// alternating, each at a route of its own; the last event is ready (even `k`) or ended with
/// a failure (odd `k`).
fn event(id: InstanceRef, k: usize, seq: u32, now: u64) -> Observed {
    let phase = match seq {
        EVENTS_EACH if k.is_multiple_of(2) => Phase::Started { ready: true },
        EVENTS_EACH => Phase::Ended { succeeded: false },
        s if !s.is_multiple_of(2) => Phase::Creating,
        _ => Phase::Started { ready: false },
    };
    Observed {
        route: Some(route(k, seq)),
        ..observed(id, phase, now)
    }
}

/// A small deterministic generator (xorshift), so the interleaving is the same on every run.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).unwrap()
    }
}

async fn ten_thousand_events_keep_their_order_per_instance(b: &Backend) {
    let rt = Arc::new(Recorded::default());
    let (hints, rx) = mpsc::unbounded_channel();
    let feed: Arc<dyn ChangeFeed> = Arc::new(ChannelFeed(Mutex::new(Some(rx))));
    let runtime: Arc<dyn InstanceRuntime> = rt.clone();
    let listener = Arc::new(b.listener_on(runtime, None));
    let metrics = listener.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(listener.clone().run(
        Some(feed),
        Duration::from_secs(3600),
        SHARDS,
        async move {
            let _ = stopped.await;
        },
    ));
    super::live::eventually(|| async { metrics.snapshot().passes_full == 1 }).await;

    let ids: Vec<_> = (0..INSTANCES)
        .map(|k| iref(i64::try_from(k).unwrap() + 1, 10))
        .collect();
    for id in &ids {
        b.deploying(*id).await;
    }
    // Events in a random interleaving that keeps each instance's own order: repeatedly pick an
    // instance that has events left and apply its next one.
    let mut next = vec![1_u32; INSTANCES];
    let mut left: Vec<usize> = (0..INSTANCES).collect();
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let now = clock::unix_now_millis();
    let mut sent = 0_u64;
    while !left.is_empty() {
        let pick = rng.below(left.len());
        let k = left[pick];
        let seq = next[k];
        rt.apply(seq, event(ids[k], k, seq, now));
        hints.send(ids[k]).unwrap();
        sent += 1;
        next[k] += 1;
        if next[k] > EVENTS_EACH {
            left.swap_remove(pick);
        }
    }
    assert_eq!(sent, u64::from(EVENTS_EACH) * INSTANCES as u64);

    // The final state equals the last event.
    for (k, id) in ids.iter().enumerate() {
        if k.is_multiple_of(2) {
            super::live::eventually(|| async {
                b.record(*id).await.is_some_and(|r| {
                    r.state == DeploymentState::Running
                        && r.route.as_deref() == Some(route(k, EVENTS_EACH).as_str())
                })
            })
            .await;
        } else {
            super::live::eventually(|| async {
                b.record(*id).await.is_some_and(|r| {
                    r.state == DeploymentState::Failed
                        && r.reason.as_deref() == Some(reasons::START_FAILED)
                })
            })
            .await;
        }
    }
    super::live::eventually(|| async {
        rt.removes_at.lock().unwrap().len() == INSTANCES / 2
            && rt.deadlines_at.lock().unwrap().len() == INSTANCES / 2
    })
    .await;
    // Per instance, in order: every action came from a view holding the last event, once.
    for (what, calls) in [
        ("set_deadline", &rt.deadlines_at),
        ("remove", &rt.removes_at),
    ] {
        let calls = calls.lock().unwrap();
        let mut seen = HashMap::new();
        for (instance, seq) in calls.iter() {
            assert_eq!(
                *seq, EVENTS_EACH,
                "{what} of {instance} decided at event {seq}"
            );
            *seen.entry(*instance).or_insert(0) += 1;
        }
        assert!(seen.values().all(|n| *n == 1), "{what} twice: {seen:?}");
    }
    for (k, id) in ids.iter().enumerate() {
        let removed = rt
            .removes_at
            .lock()
            .unwrap()
            .iter()
            .any(|(i, _)| *i == id.instance);
        assert_eq!(removed, !k.is_multiple_of(2), "instance {k}");
    }
    let m = metrics.snapshot();
    assert_eq!(m.hints, sent);
    assert_eq!(m.hints_dropped, 0, "no hint was lost");
    assert_eq!(m.passes_full, 1, "the hints did it, not a resync");
    assert_eq!(m.applied(ActionKind::MarkRunning), INSTANCES as u64 / 2);
    assert_eq!(m.applied(ActionKind::MarkFailed), INSTANCES as u64 / 2);
    assert_eq!(m.applied(ActionKind::Remove), INSTANCES as u64 / 2);
    stop.send(()).unwrap();
    task.await.unwrap();
}

mod memory_sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ten_thousand_events_keep_their_order_per_instance() {
        let backend = super::Backend::memory_sqlite().await;
        super::ten_thousand_events_keep_their_order_per_instance(&backend).await;
        backend.finish().await;
    }
}

mod redis_mariadb {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ten_thousand_events_keep_their_order_per_instance() {
        let backend =
            super::Backend::redis_mariadb("ten_thousand_events_keep_their_order_per_instance")
                .await;
        super::ten_thousand_events_keep_their_order_per_instance(&backend).await;
        backend.finish().await;
    }
}
