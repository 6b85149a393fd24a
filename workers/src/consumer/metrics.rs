//! The consumer's counters: plain atomics, rendered as Prometheus text by whoever serves
//! `/metrics` (the `fctf consumer` role, `[consumer].metrics_listen`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the deploy-duration histogram's buckets.
pub const DEPLOY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Counters since the consumer started. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct ConsumerMetrics {
    /// Deliveries taken from the queue.
    taken: AtomicU64,
    /// Deliveries acknowledged (done, or nothing to do).
    acked: AtomicU64,
    /// Deliveries requeued after a failed attempt (held for the backoff first).
    retried: AtomicU64,
    /// Deliveries requeued without an attempt (shutdown, or the attempt could not be counted).
    requeued: AtomicU64,
    /// Deliveries dead-lettered (given up, or unreadable).
    parked: AtomicU64,
    /// Start jobs that had to wait for the budget.
    budget_waits: AtomicU64,
    /// Runtime deploy calls by result: ok, then failed.
    deploys_ok: AtomicU64,
    deploys_failed: AtomicU64,
    /// Deploy call durations: count per bucket of [`DEPLOY_BUCKETS`] (not cumulative; the
    /// rendering sums them), then above the last, and the sum in microseconds.
    deploy_buckets: [AtomicU64; DEPLOY_BUCKETS.len() + 1],
    deploy_micros: AtomicU64,
}

/// How a delivery was settled, for [`ConsumerMetrics::settled`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    Acked,
    Retried,
    Requeued,
    Parked,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerSnapshot {
    pub taken: u64,
    pub acked: u64,
    pub retried: u64,
    pub requeued: u64,
    pub parked: u64,
    pub budget_waits: u64,
    pub deploys_ok: u64,
    pub deploys_failed: u64,
    /// Per bucket of [`DEPLOY_BUCKETS`] and one above, not cumulative.
    pub deploy_buckets: Vec<u64>,
    pub deploy_micros: u64,
}

impl ConsumerMetrics {
    pub(crate) fn taken(&self) {
        self.taken.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn settled(&self, how: Settlement) {
        let counter = match how {
            Settlement::Acked => &self.acked,
            Settlement::Retried => &self.retried,
            Settlement::Requeued => &self.requeued,
            Settlement::Parked => &self.parked,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn budget_waited(&self) {
        self.budget_waits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn deployed(&self, took: Duration, ok: bool) {
        if ok {
            self.deploys_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.deploys_failed.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        let bucket = DEPLOY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(DEPLOY_BUCKETS.len());
        if let Some(counter) = self.deploy_buckets.get(bucket) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.deploy_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The counters now.
    pub fn snapshot(&self) -> ConsumerSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ConsumerSnapshot {
            taken: get(&self.taken),
            acked: get(&self.acked),
            retried: get(&self.retried),
            requeued: get(&self.requeued),
            parked: get(&self.parked),
            budget_waits: get(&self.budget_waits),
            deploys_ok: get(&self.deploys_ok),
            deploys_failed: get(&self.deploys_failed),
            deploy_buckets: self.deploy_buckets.iter().map(get).collect(),
            deploy_micros: get(&self.deploy_micros),
        }
    }
}

impl ConsumerSnapshot {
    /// Prometheus text exposition (format 0.0.4) of the counters.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP fctf_consumer_jobs_taken_total Deploy jobs delivered to the consumer."
        );
        let _ = writeln!(out, "# TYPE fctf_consumer_jobs_taken_total counter");
        let _ = writeln!(out, "fctf_consumer_jobs_taken_total {}", self.taken);
        let _ = writeln!(
            out,
            "# HELP fctf_consumer_jobs_settled_total Deliveries by settlement: acked, retried (requeued after a failed attempt), requeued (no attempt), parked (dead-lettered)."
        );
        let _ = writeln!(out, "# TYPE fctf_consumer_jobs_settled_total counter");
        for (how, n) in [
            ("acked", self.acked),
            ("retried", self.retried),
            ("requeued", self.requeued),
            ("parked", self.parked),
        ] {
            let _ = writeln!(
                out,
                "fctf_consumer_jobs_settled_total{{settlement=\"{how}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP fctf_consumer_budget_waits_total Start jobs that waited for the budget of deployments in progress."
        );
        let _ = writeln!(out, "# TYPE fctf_consumer_budget_waits_total counter");
        let _ = writeln!(
            out,
            "fctf_consumer_budget_waits_total {}",
            self.budget_waits
        );
        let _ = writeln!(
            out,
            "# HELP fctf_consumer_deploys_total Runtime deploy calls by result."
        );
        let _ = writeln!(out, "# TYPE fctf_consumer_deploys_total counter");
        let _ = writeln!(
            out,
            "fctf_consumer_deploys_total{{result=\"ok\"}} {}",
            self.deploys_ok
        );
        let _ = writeln!(
            out,
            "fctf_consumer_deploys_total{{result=\"failed\"}} {}",
            self.deploys_failed
        );
        let _ = writeln!(
            out,
            "# HELP fctf_consumer_deploy_duration_seconds Duration of the runtime's deploy call."
        );
        let _ = writeln!(
            out,
            "# TYPE fctf_consumer_deploy_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, n) in self.deploy_buckets.iter().enumerate() {
            cumulative += n;
            let le = DEPLOY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(
                out,
                "fctf_consumer_deploy_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "fctf_consumer_deploy_duration_seconds_sum {}",
            self.deploy_micros as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "fctf_consumer_deploy_duration_seconds_count {cumulative}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_prometheus_text_with_a_cumulative_histogram() {
        let m = ConsumerMetrics::default();
        m.taken();
        m.taken();
        m.settled(Settlement::Acked);
        m.settled(Settlement::Parked);
        m.deployed(Duration::from_millis(3), true);
        m.deployed(Duration::from_millis(30), true);
        m.deployed(Duration::from_secs(20), false);
        let text = m.snapshot().to_prometheus();
        for line in [
            "fctf_consumer_jobs_taken_total 2",
            "fctf_consumer_jobs_settled_total{settlement=\"acked\"} 1",
            "fctf_consumer_jobs_settled_total{settlement=\"parked\"} 1",
            "fctf_consumer_jobs_settled_total{settlement=\"retried\"} 0",
            "fctf_consumer_deploys_total{result=\"ok\"} 2",
            "fctf_consumer_deploys_total{result=\"failed\"} 1",
            "fctf_consumer_deploy_duration_seconds_bucket{le=\"0.005\"} 1",
            "fctf_consumer_deploy_duration_seconds_bucket{le=\"0.025\"} 1",
            "fctf_consumer_deploy_duration_seconds_bucket{le=\"0.05\"} 2",
            "fctf_consumer_deploy_duration_seconds_bucket{le=\"10\"} 2",
            "fctf_consumer_deploy_duration_seconds_bucket{le=\"+Inf\"} 3",
            "fctf_consumer_deploy_duration_seconds_count 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        let sum = text
            .lines()
            .find_map(|l| l.strip_prefix("fctf_consumer_deploy_duration_seconds_sum "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap();
        assert!((sum - 20.033).abs() < 1e-6, "{sum}");
    }
}
