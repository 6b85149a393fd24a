//! The Prometheus text format (version 0.0.4) for the few labelled counters of the control
//! plane's services, written by hand (they need no metrics library). Shared by the Contestant
//! Service and the Deployment Center, so both escape and lay out their counters the same way.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

/// Adds one to the counter of `key`.
pub fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .or_default() += 1;
}

/// Writes one counter family: its `# HELP` and `# TYPE` lines, then a line per row, whose label
/// values are given in the order of `labels` (and escaped here).
pub fn counter_family(
    out: &mut String,
    name: &str,
    help: &str,
    labels: &[&str],
    rows: impl IntoIterator<Item = (Vec<String>, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (values, n) in rows {
        let pairs: Vec<String> = labels
            .iter()
            .zip(&values)
            .map(|(label, value)| format!("{label}=\"{}\"", escape(value)))
            .collect();
        let _ = writeln!(out, "{name}{{{}}} {n}", pairs.join(","));
    }
}

/// The rows of a counter map, each key turned into its label values by `labels`.
pub fn rows<K, F>(map: &Mutex<BTreeMap<K, u64>>, labels: F) -> Vec<(Vec<String>, u64)>
where
    F: Fn(&K) -> Vec<String>,
{
    map.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(key, n)| (labels(key), *n))
        .collect()
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_has_help_type_and_escaped_labels_in_order() {
        let counts = Mutex::new(BTreeMap::from([(("a\"b\\".to_owned(), 200_u16), 3_u64)]));
        let mut out = String::new();
        counter_family(
            &mut out,
            "x_total",
            "Things.",
            &["route", "status"],
            rows(&counts, |(route, status)| {
                vec![route.clone(), status.to_string()]
            }),
        );
        assert_eq!(
            out,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{route=\"a\\\"b\\\\\",status=\"200\"} 3\n"
        );
        assert_eq!(escape("a\"b\\"), "a\\\"b\\\\");
    }
}
