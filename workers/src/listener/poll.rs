//! A [`ChangeFeed`] for runtimes that cannot watch (the `local` runtime): it takes a snapshot
//! and hints every instance whose observation changed (appeared, changed phase or readiness,
//! started terminating, vanished). A snapshot is taken at once when the local runtime announces
//! a change ([`local::changes`]), so readiness reaches the listener within the time of one
//! in-process snapshot, and every `interval` as a backstop. A changed instance is hinted once
//! more, at the first tick [`SETTLE`] after its last change: the record may still have been
//! moving at the first hint (the consumer's Deploying write racing the listener's Running write
//! makes the listener's compare-and-set lose; the listener re-reads such an instance at once,
//! and this covers what that misses), and without a new hint the instance would wait for the
//! next full resync. One late hint per change, not one per tick: during a burst of starts every
//! hint costs the listener a read of the store and the database. Cheap for the local runtime,
//! whose snapshot is in-process; a hint of a settled instance reconciles to nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fctf_core::runtime::{InstanceRef, InstanceRuntime, Observed, Phase};
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;

use super::ChangeFeed;
use crate::runtime::local;

/// How long after its last change a changed instance is hinted once more.
pub const SETTLE: Duration = Duration::from_secs(1);

/// What of an observation, when it changes, deserves a reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Signature {
    phase: Phase,
    terminating: bool,
    restarts: u32,
    route: Option<String>,
}

impl From<&Observed> for Signature {
    fn from(o: &Observed) -> Self {
        Self {
            phase: o.phase.clone(),
            terminating: o.terminating,
            restarts: o.restarts,
            route: o.route.clone(),
        }
    }
}

/// The instances whose signature differs between `before` and `now` (including those that
/// appeared or vanished). Pure, so the diff is tested without a runtime.
fn changed(
    before: &HashMap<InstanceRef, Signature>,
    now: &HashMap<InstanceRef, Signature>,
) -> Vec<InstanceRef> {
    let mut out: Vec<InstanceRef> = now
        .iter()
        .filter(|(id, sig)| before.get(id) != Some(sig))
        .map(|(id, _)| *id)
        .collect();
    out.extend(before.keys().filter(|id| !now.contains_key(id)).copied());
    out
}

/// Polls a runtime's snapshot for changes (and looks at once when a local runtime announces
/// one).
#[derive(Debug)]
pub struct SnapshotPoller {
    runtime: Arc<dyn InstanceRuntime>,
    interval: Duration,
}

impl SnapshotPoller {
    /// Polls `runtime` every `interval`, and whenever a local runtime of this process announces
    /// a change.
    pub fn new(runtime: Arc<dyn InstanceRuntime>, interval: Duration) -> Self {
        Self { runtime, interval }
    }
}

impl ChangeFeed for SnapshotPoller {
    fn changes(&self) -> BoxStream<'static, InstanceRef> {
        let (tx, rx) = mpsc::channel::<InstanceRef>(1024);
        let runtime = self.runtime.clone();
        let interval = self.interval;
        tokio::spawn(async move {
            let mut seen: HashMap<InstanceRef, Signature> = HashMap::new();
            let mut settling: HashMap<InstanceRef, Instant> = HashMap::new();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut announced = local::changes();
            loop {
                // Changes announced while a snapshot was taken are seen by the next `changed`,
                // so none is missed; a burst of them costs one snapshot per wake-up.
                let on_tick = tokio::select! {
                    _ = tick.tick() => true,
                    _ = announced.changed() => false,
                };
                // A failed snapshot hints nothing; the next one compares with the last good one.
                let Ok(observed) = runtime.snapshot().await else {
                    continue;
                };
                let now: HashMap<InstanceRef, Signature> = observed
                    .iter()
                    .map(|o| (o.id, Signature::from(o)))
                    .collect();
                let at = Instant::now();
                let fresh = changed(&seen, &now);
                for id in &fresh {
                    settling.insert(*id, at);
                }
                seen = now;
                let mut hints = fresh;
                if on_tick {
                    settling.retain(|id, since| {
                        let settled = at.duration_since(*since) >= SETTLE;
                        if settled {
                            hints.push(*id);
                        }
                        !settled
                    });
                }
                for id in hints {
                    if tx.send(id).await.is_err() {
                        return; // the listener stopped reading
                    }
                }
            }
        });
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|id| (id, rx))
        }))
    }
}

#[cfg(test)]
mod tests {
    use fctf_core::ids::{ChallengeId, InstanceId, TeamId};

    use super::*;

    fn id(n: i64) -> InstanceRef {
        InstanceRef {
            team: TeamId(n),
            challenge: ChallengeId(1),
            instance: InstanceId::new(),
        }
    }

    fn sig(phase: Phase) -> Signature {
        Signature {
            phase,
            terminating: false,
            restarts: 0,
            route: Some("127.0.0.1:1".to_owned()),
        }
    }

    #[test]
    fn appearing_changing_and_vanishing_instances_are_hinted_and_steady_ones_are_not() {
        let (steady, readied, gone, new) = (id(1), id(2), id(3), id(4));
        let before = HashMap::from([
            (steady, sig(Phase::Started { ready: true })),
            (readied, sig(Phase::Creating)),
            (gone, sig(Phase::Started { ready: true })),
        ]);
        let now = HashMap::from([
            (steady, sig(Phase::Started { ready: true })),
            (readied, sig(Phase::Started { ready: true })),
            (new, sig(Phase::Creating)),
        ]);
        let mut hinted = changed(&before, &now);
        hinted.sort_by_key(|i| i.team.0);
        assert_eq!(hinted, vec![readied, gone, new]);
        assert!(changed(&now, &now).is_empty());
    }
}
