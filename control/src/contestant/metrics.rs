//! The Contestant Service's counters, rendered in the Prometheus text format by hand (a few
//! labelled counters need no metrics library). Label values are route templates (axum's
//! `MatchedPath`, never the raw path, so ids do not explode the label sets), status codes, error
//! kinds and submission outcomes: all small fixed sets.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::prometheus::{bump, counter_family, rows};

/// Put on a flag submission's answer by the handler: the outcome the metrics count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmissionOutcome(pub &'static str);

/// Counters of one Contestant Service process.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    submissions: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// One HTTP answer of `route` (the route template, or `unmatched`) with `status`.
    pub fn request(&self, route: &str, status: u16) {
        bump(&self.requests, (route.to_owned(), status));
    }

    /// One error answer of `kind` (the `error` field of the one error shape).
    pub fn error(&self, kind: &str) {
        bump(&self.errors, kind.to_owned());
    }

    /// One flag submission answered with `outcome` (`correct`, `incorrect`, ...).
    pub fn submission(&self, outcome: &'static str) {
        bump(&self.submissions, outcome);
    }

    /// Every counter in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        counter_family(
            &mut out,
            "fctf_contestant_requests_total",
            "HTTP answers by route and status.",
            &["route", "status"],
            rows(&self.requests, |(route, status)| {
                vec![route.clone(), status.to_string()]
            }),
        );
        counter_family(
            &mut out,
            "fctf_contestant_errors_total",
            "Error answers by kind.",
            &["kind"],
            rows(&self.errors, |kind| vec![kind.clone()]),
        );
        counter_family(
            &mut out,
            "fctf_contestant_submissions_total",
            "Flag submissions by outcome.",
            &["outcome"],
            rows(&self.submissions, |outcome| vec![(*outcome).to_owned()]),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::default();
        m.request("/api/v1/challenges/{id}", 200);
        m.request("/api/v1/challenges/{id}", 200);
        m.error("not_found");
        m.submission("correct");
        let text = m.render();
        assert!(text.contains(
            "fctf_contestant_requests_total{route=\"/api/v1/challenges/{id}\",status=\"200\"} 2\n"
        ));
        assert!(text.contains("fctf_contestant_errors_total{kind=\"not_found\"} 1\n"));
        assert!(text.contains("fctf_contestant_submissions_total{outcome=\"correct\"} 1\n"));
    }
}
