//! The pod watcher behind the Deployment Listener: a never-ending stream of "this instance
//! changed" hints.
//!
//! Hints, not state: the listener re-reads what it needs (or waits for its next complete
//! snapshot), so a hint lost while the watch is down costs only latency. kube-runtime's
//! watcher relists after a 410 Gone or a dropped stream; the backoff here spaces its retries
//! so an API server that answers 429 or 500 is not hammered.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use fctf_core::runtime::InstanceRef;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};

use super::manifest::{KIND_CHALLENGE, LABEL_KIND};
use super::observe::instance_of_pod;

/// How the watch behaves on a quiet or failing API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchSettings {
    /// Server-side timeout of each watch call, in seconds: a silently stalled stream is noticed
    /// after at most this (plus kube's 5 s margin), not after the 290 s default.
    pub timeout_secs: u32,
    /// First delay after an error; doubled per consecutive error.
    pub backoff_min: Duration,
    /// Longest delay between retries.
    pub backoff_max: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            timeout_secs: 55,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Exponential backoff without jitter, reset by the watcher after a success.
#[derive(Clone, Debug)]
pub struct ExpBackoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl ExpBackoff {
    /// Starts at `min`, doubles up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            next: min,
        }
    }
}

impl Iterator for ExpBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(now)
    }
}

impl Backoff for ExpBackoff {
    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Turns watch events into hints, remembering which instances it has seen so that an instance
/// whose pods vanished while the watch was down (no delete event ever came) is hinted when the
/// relist that follows a 410 or a restart completes without it.
#[derive(Debug, Default)]
pub struct HintTracker {
    known: HashSet<InstanceRef>,
    relisted: Option<HashSet<InstanceRef>>,
}

impl HintTracker {
    /// The hints one event gives.
    pub fn on_event(&mut self, event: watcher::Event<Pod>) -> Vec<InstanceRef> {
        match event {
            watcher::Event::Apply(pod) => self.seen(&pod, false),
            watcher::Event::Delete(pod) => {
                let id = instance_of_pod(&pod);
                if let Some(id) = id {
                    self.known.remove(&id);
                }
                id.into_iter().collect()
            }
            watcher::Event::Init => {
                self.relisted = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(pod) => self.seen(&pod, true),
            watcher::Event::InitDone => {
                let listed = self.relisted.take().unwrap_or_default();
                let mut vanished: Vec<InstanceRef> =
                    self.known.difference(&listed).copied().collect();
                vanished.sort_by_key(|id| id.instance.0);
                self.known = listed;
                vanished
            }
        }
    }

    fn seen(&mut self, pod: &Pod, listing: bool) -> Vec<InstanceRef> {
        let Some(id) = instance_of_pod(pod) else {
            return Vec::new();
        };
        if listing && let Some(listed) = &mut self.relisted {
            listed.insert(id);
        }
        self.known.insert(id);
        vec![id]
    }
}

/// The instance of every challenge pod added, changed, listed or deleted (or found gone by a
/// relist), for as long as the stream is polled. Errors are logged and retried after the
/// backoff; a 410 or a dropped stream makes the watcher resume or relist.
pub fn instance_hints(client: Client, settings: WatchSettings) -> BoxStream<'static, InstanceRef> {
    let api = Api::<Pod>::all(client);
    let config = watcher::Config::default()
        .labels(&format!("{LABEL_KIND}={KIND_CHALLENGE}"))
        .timeout(settings.timeout_secs);
    let mut tracker = HintTracker::default();
    watcher(api, config)
        .backoff(ExpBackoff::new(settings.backoff_min, settings.backoff_max))
        .map(move |event| match event {
            Ok(event) => tracker.on_event(event),
            Err(err) => {
                tracing::warn!(error = %err, "pod watch failed; retrying after backoff");
                Vec::new()
            }
        })
        .flat_map(futures_util::stream::iter)
        .boxed()
}

/// The Deployment Listener's change feed on a cluster (the `kubernetes` and `argo` runtimes):
/// [`instance_hints`] through its own client, a fresh watch for each call of `changes`.
#[derive(Clone)]
pub struct PodWatch {
    client: Client,
    settings: WatchSettings,
}

impl fmt::Debug for PodWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodWatch")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl PodWatch {
    /// Watches challenge pods through `client`.
    pub fn new(client: Client, settings: WatchSettings) -> Self {
        Self { client, settings }
    }
}

impl crate::listener::ChangeFeed for PodWatch {
    fn changes(&self) -> BoxStream<'static, InstanceRef> {
        instance_hints(self.client.clone(), self.settings)
    }
}
