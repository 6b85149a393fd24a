//! The Deployment Center's counters, rendered in the Prometheus text format by hand (a few
//! labelled counters need no metrics library).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use crate::prometheus::{bump, counter_family, rows};

/// Counters of one Deployment Center. Label values are fixed strings (route templates, outcome
/// and error kinds), so the label sets stay small.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    operations: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    refusals: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    /// One HTTP answer of `route` (the route template) with `status`.
    pub fn request(&self, route: &str, status: u16) {
        bump(&self.requests, (route.to_owned(), status));
    }

    /// One `operation` (`start`, `stop`, `extend`, `callback`) ended with `outcome`.
    pub fn operation(&self, operation: &'static str, outcome: &'static str) {
        bump(&self.operations, (operation, outcome));
    }

    /// One refused call, by kind (an error kind, or `signature_<kind>`).
    pub fn refusal(&self, kind: &str) {
        let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        match refusals.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                refusals.insert(kind.to_owned(), 1);
            }
        }
    }

    /// The value of an operation counter (for tests and diagnostics).
    pub fn operation_count(&self, operation: &str, outcome: &str) -> u64 {
        let ops = self
            .operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ops.iter()
            .filter(|((op, out), _)| *op == operation && *out == outcome)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Every counter in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        counter_family(
            &mut out,
            "fctf_deployment_requests_total",
            "HTTP answers by route and status.",
            &["route", "status"],
            rows(&self.requests, |(route, status)| {
                vec![route.clone(), status.to_string()]
            }),
        );
        counter_family(
            &mut out,
            "fctf_deployment_operations_total",
            "Instance operations by outcome (start, stop, extend, callback).",
            &["operation", "outcome"],
            rows(&self.operations, |(operation, outcome)| {
                vec![(*operation).to_owned(), (*outcome).to_owned()]
            }),
        );
        counter_family(
            &mut out,
            "fctf_deployment_refusals_total",
            "Refused calls by kind.",
            &["kind"],
            rows(&self.refusals, |kind| vec![kind.clone()]),
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
        m.request("/v1/instances/start", 200);
        m.request("/v1/instances/start", 200);
        m.operation("start", "queued");
        m.refusal("signature_replayed");
        let text = m.render();
        assert!(text.contains(
            "fctf_deployment_requests_total{route=\"/v1/instances/start\",status=\"200\"} 2\n"
        ));
        assert!(text.contains(
            "fctf_deployment_operations_total{operation=\"start\",outcome=\"queued\"} 1\n"
        ));
        assert!(text.contains("fctf_deployment_refusals_total{kind=\"signature_replayed\"} 1\n"));
        assert_eq!(m.operation_count("start", "queued"), 1);
        assert_eq!(crate::prometheus::escape("a\"b\\"), "a\\\"b\\\\");
    }
}
