//! The listener's counters: plain atomics, read by the `/metrics` handler of whoever runs it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::decision::ActionKind;

/// Counters since the listener started. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    /// Actions applied successfully, by [`ActionKind::index`].
    applied: [AtomicU64; ActionKind::ALL.len()],
    passes_full: AtomicU64,
    passes_instance: AtomicU64,
    /// Passes not made because a view could not be read completely.
    incomplete: AtomicU64,
    /// Store writes that lost a race (the next pass re-reads).
    conflicts: AtomicU64,
    /// Actions that failed (runtime, store or database errors).
    errors: AtomicU64,
    hints: AtomicU64,
    /// Hints dropped because their shard's queue was full (the next resync covers them).
    hints_dropped: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// `(kind name, count)` for every [`ActionKind`], in [`ActionKind::ALL`] order.
    pub applied: Vec<(&'static str, u64)>,
    pub passes_full: u64,
    pub passes_instance: u64,
    pub incomplete: u64,
    pub conflicts: u64,
    pub errors: u64,
    pub hints: u64,
    pub hints_dropped: u64,
}

impl MetricsSnapshot {
    /// Count of one action kind.
    pub fn applied(&self, kind: ActionKind) -> u64 {
        self.applied
            .iter()
            .find(|(name, _)| *name == kind.name())
            .map_or(0, |(_, n)| *n)
    }

    /// Prometheus text exposition of the counters.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::from("# TYPE fctf_listener_actions_total counter\n");
        for (kind, n) in &self.applied {
            out.push_str(&format!(
                "fctf_listener_actions_total{{kind=\"{kind}\"}} {n}\n"
            ));
        }
        for (name, n) in [
            (
                "fctf_listener_passes_total{scope=\"full\"}",
                self.passes_full,
            ),
            (
                "fctf_listener_passes_total{scope=\"instance\"}",
                self.passes_instance,
            ),
            ("fctf_listener_incomplete_snapshots_total", self.incomplete),
            ("fctf_listener_conflicts_total", self.conflicts),
            ("fctf_listener_action_errors_total", self.errors),
            ("fctf_listener_hints_total", self.hints),
            ("fctf_listener_hints_dropped_total", self.hints_dropped),
        ] {
            out.push_str(&format!("{name} {n}\n"));
        }
        out
    }
}

impl ListenerMetrics {
    pub(crate) fn applied(&self, kind: ActionKind) {
        if let Some(counter) = self.applied.get(kind.index()) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn pass(&self, full: bool) {
        let counter = if full {
            &self.passes_full
        } else {
            &self.passes_instance
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn incomplete(&self) {
        self.incomplete.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn conflict(&self) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn hint(&self, dropped: bool) {
        self.hints.fetch_add(1, Ordering::Relaxed);
        if dropped {
            self.hints_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            applied: ActionKind::ALL
                .iter()
                .map(|k| (k.name(), self.applied.get(k.index()).map_or(0, get)))
                .collect(),
            passes_full: get(&self.passes_full),
            passes_instance: get(&self.passes_instance),
            incomplete: get(&self.incomplete),
            conflicts: get(&self.conflicts),
            errors: get(&self.errors),
            hints: get(&self.hints),
            hints_dropped: get(&self.hints_dropped),
        }
    }
}
