//! The admin port: `/healthz`, `/readyz` and `/metrics` (Prometheus text format), on loopback by
//! default.
//!
//! `/healthz` answers 200 while the process serves; `/readyz` answers 503 from the moment a
//! graceful stop (drain) begins, so load balancers stop sending new traffic while the sessions
//! in flight finish. The admin port itself keeps answering through the drain.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::admission::{Admission, TOKEN_FAILURE_REASONS};
use crate::http::{HTTP_LIMIT_KINDS, HttpCounters};
use crate::tcp::{CapScope, TcpCounters};

/// Upper bounds of the latency histograms' buckets, in microseconds (Prometheus `le`, seconds).
const LATENCY_BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram with fixed buckets: one relaxed atomic add per observation, no lock and
/// no allocation.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Counts one observation of `elapsed`.
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_US.partition_point(|le| *le < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the histogram `name` with `labels` (`key="value"` pairs, comma-separated).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = match LATENCY_BUCKETS_US.get(i) {
                Some(us) => format!("{}", *us as f64 / 1e6),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {}", self.count());
    }
}

/// What `/metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    admission: Arc<Admission>,
    http: Arc<HttpCounters>,
    tcp: Option<Arc<TcpCounters>>,
    draining: Arc<AtomicBool>,
}

impl Metrics {
    /// Metrics of a gateway's admission checks, HTTP responses and TCP sessions.
    pub fn new(
        admission: Arc<Admission>,
        http: Arc<HttpCounters>,
        tcp: Option<Arc<TcpCounters>>,
    ) -> Self {
        Metrics {
            admission,
            http,
            tcp,
            draining: Arc::default(),
        }
    }

    /// The flag a graceful stop sets; `/readyz` answers 503 once it is set.
    pub fn draining(&self) -> &Arc<AtomicBool> {
        &self.draining
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let a = self.admission.counters();
        metric(
            &mut out,
            "fctf_gateway_token_cache_hits_total",
            "counter",
            "Token verifications answered from the cache.",
            &[("", load(&a.token_cache_hits))],
        );
        metric(
            &mut out,
            "fctf_gateway_token_cache_misses_total",
            "counter",
            "Token verifications that ran the verifier.",
            &[("", load(&a.token_cache_misses))],
        );
        metric(
            &mut out,
            "fctf_gateway_liveness_cache_hits_total",
            "counter",
            "Instance liveness checks answered from the cache.",
            &[("", load(&a.liveness_cache_hits))],
        );
        metric(
            &mut out,
            "fctf_gateway_liveness_cache_misses_total",
            "counter",
            "Instance liveness checks that asked the state store.",
            &[("", load(&a.liveness_cache_misses))],
        );
        let reasons: Vec<(String, u64)> = TOKEN_FAILURE_REASONS
            .iter()
            .zip(&a.token_failures)
            .map(|(reason, c)| (format!("{{reason=\"{reason}\"}}"), load(c)))
            .collect();
        metric(
            &mut out,
            "fctf_gateway_token_failures_total",
            "counter",
            "Requests and connections refused for their token, by reason.",
            &labelled(&reasons),
        );
        metric(
            &mut out,
            "fctf_gateway_starting_holds_total",
            "counter",
            "Requests and connections held because their instance was still starting.",
            &[("", load(&a.starting_holds))],
        );
        metric(
            &mut out,
            "fctf_gateway_starting_timeouts_total",
            "counter",
            "Held requests and connections whose instance was still starting after the hold.",
            &[("", load(&a.starting_timeouts))],
        );
        metric(
            &mut out,
            "fctf_gateway_draining",
            "gauge",
            "1 once a graceful stop has begun (/readyz answers 503).",
            &[("", u64::from(self.draining.load(Ordering::Relaxed)))],
        );
        metric(
            &mut out,
            "fctf_gateway_limit_store_calls_total",
            "counter",
            "Rate-limit calls to the state store (one per batch for batched buckets).",
            &[("", load(&a.limit_store_calls))],
        );
        metric(
            &mut out,
            "fctf_gateway_store_fallbacks_total",
            "counter",
            "Store calls that failed, so a local fallback or fail-closed refusal decided.",
            &[("", load(&a.store_fallbacks))],
        );
        let classes: Vec<(String, u64)> = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .zip(&self.http.responses_by_class)
            .map(|(class, c)| (format!("{{class=\"{class}\"}}"), load(c)))
            .collect();
        let classes: Vec<(&str, u64)> = classes.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            &mut out,
            "fctf_gateway_http_responses_total",
            "counter",
            "HTTP responses by status class.",
            &classes,
        );
        let statuses: Vec<(String, u64)> = self
            .http
            .responses_by_status
            .iter()
            .enumerate()
            .filter_map(|(status, c)| {
                let n = load(c);
                (n > 0).then(|| (format!("{{status=\"{status}\"}}"), n))
            })
            .collect();
        metric(
            &mut out,
            "fctf_gateway_http_requests_total",
            "counter",
            "HTTP requests by the status answered (0: no response was sent).",
            &labelled(&statuses),
        );
        let kinds: Vec<(String, u64)> = HTTP_LIMIT_KINDS
            .iter()
            .zip(&self.http.limit_refusals)
            .map(|(kind, c)| (format!("{{kind=\"{kind}\"}}"), load(c)))
            .collect();
        metric(
            &mut out,
            "fctf_gateway_http_limit_refusals_total",
            "counter",
            "HTTP requests refused by a rate limit, by kind.",
            &labelled(&kinds),
        );
        let _ = writeln!(
            out,
            "# HELP fctf_gateway_upstream_latency_seconds HTTP: from choosing the instance to its \
             response header; TCP: connecting to the instance.\n\
             # TYPE fctf_gateway_upstream_latency_seconds histogram"
        );
        self.http.upstream_latency.render(
            &mut out,
            "fctf_gateway_upstream_latency_seconds",
            "proto=\"http\"",
        );
        if let Some(tcp) = &self.tcp {
            tcp.connect_latency.render(
                &mut out,
                "fctf_gateway_upstream_latency_seconds",
                "proto=\"tcp\"",
            );
        }
        if let Some(tcp) = &self.tcp {
            metric(
                &mut out,
                "fctf_gateway_tcp_active_sessions",
                "gauge",
                "TCP sessions relaying now.",
                &[("", load(&tcp.active_sessions))],
            );
            metric(
                &mut out,
                "fctf_gateway_tcp_sessions_total",
                "counter",
                "TCP sessions admitted.",
                &[("", load(&tcp.sessions))],
            );
            metric(
                &mut out,
                "fctf_gateway_tcp_leases_reasserted_total",
                "counter",
                "Leases of live TCP sessions the store had lost, taken again at renewal.",
                &[("", load(&tcp.leases_reasserted))],
            );
            metric(
                &mut out,
                "fctf_gateway_tcp_leases_lost_total",
                "counter",
                "Leases of live TCP sessions the store had lost that could not be taken again.",
                &[("", load(&tcp.leases_lost))],
            );
            metric(
                &mut out,
                "fctf_gateway_tcp_refused_total",
                "counter",
                "TCP connections refused.",
                &[("", load(&tcp.refused))],
            );
            let mut kinds = vec![(
                "{kind=\"attempts\"}".to_owned(),
                load(&tcp.refused_attempts),
            )];
            kinds.extend(CapScope::ALL.iter().map(|scope| {
                (
                    format!("{{kind=\"cap_{}\"}}", scope.label()),
                    load(&tcp.refused_caps[*scope as usize]),
                )
            }));
            let kinds: Vec<(&str, u64)> = kinds.iter().map(|(l, v)| (l.as_str(), *v)).collect();
            metric(
                &mut out,
                "fctf_gateway_tcp_limit_refusals_total",
                "counter",
                "TCP connections refused by the attempt limit or a connection cap, by kind.",
                &kinds,
            );
        }
        out
    }
}

/// Borrowed `(labels, value)` pairs for [`metric`].
fn labelled(samples: &[(String, u64)]) -> Vec<(&str, u64)> {
    samples.iter().map(|(l, v)| (l.as_str(), *v)).collect()
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// The admin port's HTTP app.
#[derive(Debug)]
pub struct AdminApp {
    metrics: Metrics,
}

impl AdminApp {
    /// Serves `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        AdminApp { metrics }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let (status, content_type, body) = match session.req_header().uri.path() {
            "/healthz" => (200, "text/plain", b"ok\n".to_vec()),
            "/readyz" if self.metrics.draining.load(Ordering::Relaxed) => {
                (503, "text/plain", b"draining\n".to_vec())
            }
            "/readyz" => (200, "text/plain", b"ok\n".to_vec()),
            "/metrics" => (
                200,
                "text/plain; version=0.0.4",
                self.metrics.render().into_bytes(),
            ),
            _ => (404, "text/plain", b"not found\n".to_vec()),
        };
        let length = body.len();
        let mut response = http::Response::new(body);
        *response.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(length),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fctf_core::store::MemoryStore;
    use fctf_core::token::{Keyring, TokenKey, Verifier};

    use super::*;
    use crate::admission::AdmissionSettings;
    use crate::routing::Routing;

    #[test]
    fn metrics_render_in_the_prometheus_text_format() {
        let key = TokenKey::new("k1", vec![1u8; 32]).unwrap();
        let admission = Arc::new(Admission::new(
            Verifier::new(Keyring::new(vec![key]).unwrap(), Duration::ZERO),
            Arc::new(MemoryStore::new()),
            AdmissionSettings {
                routing: Routing::new("svc.cluster.local", 3333),
                route_cache: Duration::ZERO,
                fail_closed: false,
                starting_hold: Duration::ZERO,
            },
        ));
        let http = Arc::new(HttpCounters::default());
        http.responses_by_class[4].fetch_add(3, Ordering::Relaxed);
        let tcp = Arc::new(TcpCounters::default());
        tcp.active_sessions.fetch_add(2, Ordering::Relaxed);
        http.responses_by_status[429].fetch_add(2, Ordering::Relaxed);
        http.upstream_latency.observe(Duration::from_millis(3));
        http.upstream_latency.observe(Duration::from_secs(30));
        admission.count_refusal(&crate::admission::Refusal::MissingToken);
        let text = Metrics::new(admission, http, Some(tcp)).render();
        assert!(
            text.contains("fctf_gateway_http_requests_total{status=\"429\"} 2\n"),
            "{text}"
        );
        assert!(!text.contains("{status=\"200\"}"), "{text}");
        assert!(
            text.contains("fctf_gateway_token_failures_total{reason=\"missing_token\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "fctf_gateway_upstream_latency_seconds_bucket{proto=\"http\",le=\"0.0025\"} 0\n\
                 fctf_gateway_upstream_latency_seconds_bucket{proto=\"http\",le=\"0.005\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "fctf_gateway_upstream_latency_seconds_bucket{proto=\"http\",le=\"+Inf\"} 2\n\
                 fctf_gateway_upstream_latency_seconds_sum{proto=\"http\"} 30.003\n\
                 fctf_gateway_upstream_latency_seconds_count{proto=\"http\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("fctf_gateway_draining 0\n"), "{text}");
        assert!(
            text.contains("fctf_gateway_http_responses_total{class=\"4xx\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE fctf_gateway_tcp_active_sessions gauge\nfctf_gateway_tcp_active_sessions 2\n"), "{text}");
        assert!(text.contains("fctf_gateway_store_fallbacks_total 0\n"));
        assert!(
            text.contains("fctf_gateway_tcp_limit_refusals_total{kind=\"cap_ip\"} 0\n"),
            "{text}"
        );
    }
}
