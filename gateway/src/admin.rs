//! The admin port: `/healthz`, `/readyz` and `/metrics` (Prometheus text format), on loopback by
//! default.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::admission::Admission;
use crate::http::HttpCounters;
use crate::tcp::{CapScope, TcpCounters};

/// What `/metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    admission: Arc<Admission>,
    http: Arc<HttpCounters>,
    tcp: Option<Arc<TcpCounters>>,
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
        }
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
            "/healthz" | "/readyz" => (200, "text/plain", b"ok\n".to_vec()),
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
            },
        ));
        let http = Arc::new(HttpCounters::default());
        http.responses_by_class[4].fetch_add(3, Ordering::Relaxed);
        let tcp = Arc::new(TcpCounters::default());
        tcp.active_sessions.fetch_add(2, Ordering::Relaxed);
        let text = Metrics::new(admission, http, Some(tcp)).render();
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
