//! The access log: one event per HTTP request and TCP connection, with the instance it reached
//! and never the token (captured with a process-wide subscriber, so the check also covers every
//! other test running in this binary at the same time).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fctf_core::store::{MemoryStore, StateStore};
use fctf_core::token::mint;
use fctf_gateway::access;
use tokio::io::AsyncWriteExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::support::*;

/// Every captured event and span, one line each: `LEVEL target field=value ...`.
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Captures the gateway's events at every level and everyone else's at INFO and above.
struct Capture;

impl Capture {
    /// Installs the capture for the whole test binary (once).
    fn install() {
        static INSTALLED: OnceLock<()> = OnceLock::new();
        INSTALLED.get_or_init(|| {
            tracing::subscriber::set_global_default(Capture)
                .expect("no other global subscriber in this binary");
        });
    }

    fn push(line: String) {
        LINES.lock().expect("lock").push(line);
    }
}

struct Line<'a>(&'a mut String);

impl Visit for Line<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={value}", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("fctf") || *metadata.level() <= Level::INFO
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut line = format!("SPAN {}", span.metadata().name());
        span.record(&mut Line(&mut line));
        Capture::push(line);
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, values: &Record<'_>) {
        let mut line = "SPAN-RECORD".to_owned();
        values.record(&mut Line(&mut line));
        Capture::push(line);
    }

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut line = format!("{} {}", meta.level(), meta.target());
        event.record(&mut Line(&mut line));
        Capture::push(line);
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// The access-log lines that mention `needle`, once there are at least `n` (within 5 s).
async fn access_lines(needle: &str, n: usize) -> Vec<String> {
    let prefix = format!("INFO {}", access::TARGET);
    for _ in 0..100 {
        let lines: Vec<String> = LINES
            .lock()
            .expect("lock")
            .iter()
            .filter(|l| l.starts_with(&prefix) && l.contains(needle))
            .cloned()
            .collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} access-log lines mention {needle}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_and_session_is_logged_without_its_token() {
    Capture::install();
    let backend = Backend::start().await;
    let echo = EchoBackend::start().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let web = run_instance(&*store, 31, 4, &backend.addr.to_string()).await;
    let nc = run_instance(&*store, 31, 5, &echo.addr.to_string()).await;
    let gw = start_gateway(store, generous_limits());
    let http = gw.http_addr().expect("bound");
    let tcp = gw.tcp_addr().expect("bound");
    let web_token = web.token();
    let nc_token = nc.token();
    let foreign = mint(&foreign_key(), &web.claims(600)).expect("mint");

    // HTTP: the first visit (token in the query), a proxied request, a forged token.
    let visit = get(http, &format!("/p?fctftoken={web_token}&q=1"), None).await;
    assert_eq!(visit.status, 302);
    let cookie = format!("FCTF_Auth_Token={web_token}");
    assert_eq!(get(http, "/p?q=1", Some(&cookie)).await.status, 200);
    let forged = get(http, "/p", Some(&format!("FCTF_Auth_Token={foreign}"))).await;
    assert_eq!(forged.status, 401);
    // TCP: a session relayed, then a refused token.
    let mut conn = tcp_connect(tcp).await;
    conn.write_all(format!("{nc_token}\nping\n").as_bytes())
        .await
        .expect("write");
    assert_eq!(read_line(&mut conn).await, "access granted\n");
    assert_eq!(read_line(&mut conn).await, "ping\n");
    drop(conn);
    let mut refused = tcp_connect(tcp).await;
    refused
        .write_all(format!("{foreign}\n").as_bytes())
        .await
        .expect("write");
    assert!(read_line(&mut refused).await.starts_with("access denied"));
    drop(refused);

    let web_lines = access_lines(&web.instance.to_string(), 2).await;
    let visit_line = web_lines
        .iter()
        .find(|l| l.contains("status=302"))
        .expect("the visit is logged");
    for field in [
        "proto=http",
        "team=31",
        "challenge=4",
        "path=/p ",
        "reason=token_visit",
    ] {
        assert!(visit_line.contains(field), "{field} in {visit_line}");
    }
    let proxied = web_lines
        .iter()
        .find(|l| l.contains("status=200"))
        .expect("the proxied request is logged");
    for field in [
        format!("upstream={}", backend.addr),
        "client=127.0.0.1".to_owned(),
        "duration_us=".to_owned(),
    ] {
        assert!(proxied.contains(&field), "{field} in {proxied}");
    }
    let nc_line = &access_lines(&nc.instance.to_string(), 1).await[0];
    for field in [
        "proto=tcp".to_owned(),
        "outcome=relayed".to_owned(),
        format!("upstream={}", echo.addr),
        "team=31".to_owned(),
        "challenge=5".to_owned(),
    ] {
        assert!(nc_line.contains(&field), "{field} in {nc_line}");
    }
    access_lines("status=401", 1).await;
    access_lines("outcome=denied", 1).await;
    gw.stop();

    let lines = LINES.lock().expect("lock");
    for token in [&web_token, &nc_token, &foreign] {
        // The signature alone would do as much harm as the whole token.
        let signature = token.rsplit('.').next().expect("a signature");
        for line in lines.iter() {
            assert!(!line.contains(signature), "a token was logged: {line}");
        }
    }
}
