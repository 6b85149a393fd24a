//! Tests of the served Contestant Service (control/src/contestant/server.rs): real TCP listeners
//! on 127.0.0.1:0, SQLite and the in-process store, spoken to with a minimal HTTP/1.1 client so
//! the peer address, the fallbacks, the headers, the admin listener, graceful shutdown and the
//! OpenAPI document are checked as a client sees them.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fctf_control::contestant::accounts::testkit::{self, Player, RecordingDeployment};
use fctf_control::contestant::{AppState, router, serve};
use fctf_control::deployment::contract::{
    DeploymentControl, ExtendRequest, InstanceStatus, InstanceTarget, StartRequest,
};
use fctf_control::error::ApiError;
use fctf_core::config::Config;
use fctf_core::ids::TeamId;
use fctf_core::store::{MemoryStore, RateLimit};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// A served Contestant Service.
struct Served {
    api: SocketAddr,
    admin: SocketAddr,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Served {
    async fn start(config: Config, deployment: Arc<dyn DeploymentControl>) -> Self {
        let db = testkit::database(None).await;
        let (state, _) =
            testkit::app_with(db, Arc::new(MemoryStore::new()), config, deployment).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = listener.local_addr().unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            Some(admin_listener),
            state.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            api,
            admin,
            state,
            stop: Some(stop),
            task,
        }
    }

    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        http(self.api, method, path, headers, None).await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

/// Limits no test reaches, unless it sets its own.
fn roomy() -> Config {
    let mut config = Config::default();
    config.contestant.api_ip_per_sec = 1_000_000;
    config.contestant.api_ip_burst = 10_000_000;
    config.contestant.api_user_per_sec = 1_000_000;
    config.contestant.api_user_burst = 10_000_000;
    config.contestant.files_dir = std::env::temp_dir()
        .join(format!("fctf-files-{}", uuid::Uuid::new_v4()))
        .display()
        .to_string();
    config
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the one error shape with `status` and `kind`.
    fn assert_error(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        let body = self.json();
        assert_eq!(body["success"], false, "{body}");
        assert_eq!(body["error"], kind, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json"))
        );
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: fctf.test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    parse(&raw)
}

fn parse(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = body.as_slice();
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn token(player: &Player) -> String {
    player.authorization()
}

#[tokio::test]
async fn per_ip_limit_keys_on_the_socket_peer_and_charges_once() {
    let mut config = roomy();
    config.contestant.api_ip_per_sec = 1;
    config.contestant.api_ip_burst = 4;
    let served = Served::start(config, Arc::new(RecordingDeployment::default())).await;
    let alice = testkit::player(&served.state, "alice", Some("red")).await;
    let auth = token(&alice);
    // Routes with the accounts extractor (Caller) and without one (the document, an unknown
    // route) draw on one bucket, one token each: a double charge would refuse the third call.
    for path in [
        "/api/v1/users/me",
        "/api/v1/users/me",
        "/api/v1/openapi.json",
        "/no/such/route",
    ] {
        let answer = served.call("GET", path, &[("Authorization", &auth)]).await;
        assert_ne!(answer.status, 429, "{path}: {}", answer.text());
    }
    let mut refused = None;
    for _ in 0..3 {
        let answer = served
            .call(
                "GET",
                "/api/v1/openapi.json",
                &[("X-Forwarded-For", "198.51.100.1")],
            )
            .await;
        if answer.status == 429 {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("the burst is spent");
    refused.assert_error(429, "rate_limited");
    assert!(refused.header("retry-after").is_some());
    // The bucket is the TCP peer's (an untrusted peer cannot name itself in X-Forwarded-For):
    // it is far from full (refilling takes 4 s), while the named address's is untouched.
    let limit = RateLimit {
        per_second: 1.0,
        burst: 4,
    };
    let peer = served
        .state
        .store
        .rate_limit("api:ip:127.0.0.1", limit, 4)
        .await
        .unwrap();
    assert!(!peer.allowed, "the peer's bucket is the one spent");
    let other = served
        .state
        .store
        .rate_limit("api:ip:198.51.100.1", limit, 4)
        .await
        .unwrap();
    assert!(other.allowed);
    served.stop().await;
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client() {
    let mut config = roomy();
    config.contestant.api_ip_per_sec = 1;
    config.contestant.api_ip_burst = 2;
    config.contestant.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let served = Served::start(config, Arc::new(RecordingDeployment::default())).await;
    let from = |ip: &'static str| [("X-Forwarded-For", ip)];
    for _ in 0..2 {
        let answer = served
            .call("GET", "/api/v1/contest", &from("203.0.113.7"))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            served
                .call("GET", "/api/v1/contest", &from("203.0.113.7"))
                .await
                .status,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let other = served
        .call("GET", "/api/v1/contest", &from("203.0.113.8"))
        .await;
    assert_eq!(
        other.status, 200,
        "another client behind the proxy has its own bucket"
    );
    served.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_the_error_shape() {
    let served = Served::start(roomy(), Arc::new(RecordingDeployment::default())).await;
    for path in [
        "/nope",
        "/api/v1/nope",
        "/api/v1/challenges/1/instance/nope",
    ] {
        served
            .call("GET", path, &[])
            .await
            .assert_error(404, "not_found");
    }
    let wrong = served.call("PUT", "/api/v1/challenges", &[]).await;
    wrong.assert_error(405, "method_not_allowed");
    let allow = wrong.header("allow").expect("405 names the methods");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    served
        .call("DELETE", "/api/v1/openapi.json", &[])
        .await
        .assert_error(405, "method_not_allowed");
    served.stop().await;
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let served = Served::start(roomy(), Arc::new(RecordingDeployment::default())).await;
    let alice = testkit::player(&served.state, "alice", None).await;
    let auth = token(&alice);
    let check = |answer: &Answer, no_store: bool| {
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(answer.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(answer.header("x-frame-options"), Some("DENY"));
        if no_store {
            assert_eq!(
                answer.header("cache-control"),
                Some("no-store"),
                "{answer:?}"
            );
        }
    };
    let public = served.call("GET", "/api/v1/contest", &[]).await;
    assert_eq!(public.status, 200);
    check(&public, false);
    let private = served
        .call("GET", "/api/v1/users/me", &[("Authorization", &auth)])
        .await;
    assert_eq!(private.status, 200, "{}", private.text());
    check(&private, true);
    let cookie = served
        .call(
            "GET",
            "/api/v1/contest",
            &[("Cookie", "fctf_session=stale")],
        )
        .await;
    check(&cookie, true);
    let login = http(
        served.api,
        "POST",
        "/api/v1/auth/login",
        &[],
        Some(&json!({"name": "alice", "password": testkit::PASSWORD}).to_string()),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.text());
    assert!(login.header("set-cookie").is_some());
    check(&login, true);
    check(&served.call("GET", "/nope", &[]).await, true);
    check(&served.call("PATCH", "/api/v1/contest", &[]).await, true);
    check(
        &served.call("GET", "/api/v1/openapi.json", &[]).await,
        false,
    );
    served.stop().await;
}

#[tokio::test]
async fn admin_listener_serves_health_readiness_and_metrics_by_route_template() {
    let served = Served::start(roomy(), Arc::new(RecordingDeployment::default())).await;
    let admin = testkit::admin(&served.state).await;
    let alice = testkit::player(&served.state, "alice", Some("red")).await;
    let healthz = http(served.admin, "GET", "/healthz", &[], None).await;
    assert_eq!((healthz.status, healthz.text().trim()), (200, "ok"));
    let readyz = http(served.admin, "GET", "/readyz", &[], None).await;
    assert_eq!(readyz.status, 200, "{}", readyz.text());
    // The API's routes are not on the admin listener, nor the admin routes on the API's.
    http(served.admin, "GET", "/api/v1/contest", &[], None)
        .await
        .assert_error(404, "not_found");
    served
        .call("GET", "/metrics", &[])
        .await
        .assert_error(404, "not_found");

    let missing = served
        .call(
            "GET",
            "/api/v1/challenges/7",
            &[("Authorization", &token(&admin))],
        )
        .await;
    missing.assert_error(404, "not_found");
    served.call("GET", "/api/v1/challenges/8", &[]).await;
    let created = http(
        served.api,
        "POST",
        "/api/v1/challenges",
        &[("Authorization", &token(&admin))],
        Some(&json!({"name": "warmup", "description": "d", "value": 10}).to_string()),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["data"]["id"].as_i64().unwrap();
    let flag = http(
        served.api,
        "POST",
        "/api/v1/flags",
        &[("Authorization", &token(&admin))],
        Some(&json!({"challenge": id, "type": "static", "content": "flag{x}"}).to_string()),
    )
    .await;
    assert_eq!(flag.status, 200, "{}", flag.text());
    for submission in ["flag{no}", "flag{x}"] {
        let answer = http(
            served.api,
            "POST",
            "/api/v1/challenges/attempt",
            &[("Authorization", &token(&alice))],
            Some(&json!({"challenge_id": id, "submission": submission}).to_string()),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }

    let metrics = http(served.admin, "GET", "/metrics", &[], None).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    let text = metrics.text();
    assert!(
        text.contains(
            "fctf_contestant_requests_total{route=\"/api/v1/challenges/{id}\",status=\"404\"} 1\n"
        ),
        "{text}"
    );
    assert!(!text.contains("/api/v1/challenges/7"), "{text}");
    assert!(!text.contains("/api/v1/challenges/8"), "{text}");
    assert!(
        text.contains("route=\"unmatched\",status=\"404\"} 1\n"),
        "{text}"
    );
    // The portal is the API's fallback, yet its answers are counted under its own routes.
    let page = http(served.api, "GET", "/", &[], None).await;
    assert_eq!(page.status, 200);
    let metrics = http(served.admin, "GET", "/metrics", &[], None).await;
    assert!(
        metrics
            .text()
            .contains("fctf_contestant_requests_total{route=\"/\",status=\"200\"} 1\n"),
        "{}",
        metrics.text()
    );
    assert!(
        text.contains("fctf_contestant_errors_total{kind=\"not_found\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("fctf_contestant_submissions_total{outcome=\"correct\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("fctf_contestant_submissions_total{outcome=\"incorrect\"} 1\n"),
        "{text}"
    );

    // The database gone: not ready, in the error shape.
    served.state.db.pool().close().await;
    http(served.admin, "GET", "/readyz", &[], None)
        .await
        .assert_error(503, "unavailable");
    served.stop().await;
}

/// A Deployment Center whose `list` waits until released: a request held in flight.
#[derive(Debug, Default)]
struct GatedDeployment {
    inner: RecordingDeployment,
    entered: Notify,
    release: Notify,
}

#[async_trait]
impl DeploymentControl for GatedDeployment {
    async fn start(&self, request: &StartRequest) -> Result<InstanceStatus, ApiError> {
        self.inner.start(request).await
    }
    async fn stop(&self, target: &InstanceTarget) -> Result<InstanceStatus, ApiError> {
        self.inner.stop(target).await
    }
    async fn status(&self, target: &InstanceTarget) -> Result<InstanceStatus, ApiError> {
        self.inner.status(target).await
    }
    async fn extend(&self, request: &ExtendRequest) -> Result<InstanceStatus, ApiError> {
        self.inner.extend(request).await
    }
    async fn list(
        &self,
        team: Option<TeamId>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<InstanceStatus>, ApiError> {
        self.entered.notify_one();
        self.release.notified().await;
        self.inner.list(team, limit, offset).await
    }
    async fn stop_all(&self) -> Result<u32, ApiError> {
        self.inner.stop_all().await
    }
    async fn logs(&self, target: &InstanceTarget, tail: u32) -> Result<String, ApiError> {
        self.inner.logs(target, tail).await
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let gate = Arc::new(GatedDeployment::default());
    let served = Served::start(roomy(), gate.clone()).await;
    let admin = testkit::admin(&served.state).await;
    let api = served.api;
    let auth = token(&admin);
    let in_flight = tokio::spawn(async move {
        http(
            api,
            "GET",
            "/api/v1/instances",
            &[("Authorization", &auth)],
            None,
        )
        .await
    });
    tokio::time::timeout(Duration::from_secs(10), gate.entered.notified())
        .await
        .expect("the request reaches the handler");
    let Served { mut stop, task, .. } = served;
    let _ = stop.take().unwrap().send(());
    // The listener closes: new connections are refused while the request is still held.
    tokio::time::timeout(Duration::from_secs(10), async {
        while TcpStream::connect(api).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the listener closes on shutdown");
    assert!(!task.is_finished(), "serve waits for the request in flight");
    gate.release.notify_one();
    let answer = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the held request is answered")
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["success"], true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("serve returns once the request is done")
        .unwrap()
        .unwrap();
}

/// The path templates registered in `router`, from its `Debug` rendering (axum has no route
/// listing; the test fails loudly if that rendering changes, since the set must be large).
fn registered_paths(router: &axum::Router) -> BTreeSet<String> {
    let rendered = format!("{router:?}");
    // Only the path router: the fallback router registers `/` and a catch-all of its own.
    let rendered = rendered
        .split("fallback_router")
        .next()
        .unwrap_or_default()
        .to_owned();
    let quoted = regex::Regex::new(r#""(/[^"]*)""#).unwrap();
    let paths: BTreeSet<String> = quoted
        .captures_iter(&rendered)
        .map(|c| c[1].to_owned())
        .filter(|p| !p.contains("__private__"))
        .collect();
    assert!(paths.len() > 40, "route listing changed? {rendered:.2000}");
    paths
}

#[tokio::test]
async fn openapi_document_lists_every_route_and_nothing_else() {
    let served = Served::start(roomy(), Arc::new(RecordingDeployment::default())).await;
    let answer = served.call("GET", "/api/v1/openapi.json", &[]).await;
    assert_eq!(answer.status, 200);
    let doc = answer.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    // What the router serves: its path templates, and for each the methods its 405 allows
    // (OPTIONS is registered nowhere).
    let mut served_ops = BTreeSet::new();
    for template in registered_paths(&router(served.state.clone())) {
        let concrete: String = template
            .split('/')
            .map(|seg| if seg.starts_with('{') { "1" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let probe = served.call("OPTIONS", &concrete, &[]).await;
        assert_eq!(probe.status, 405, "{template}: {}", probe.text());
        let allow = probe
            .header("allow")
            .unwrap_or_else(|| panic!("{template}: no Allow"));
        let documented_path = template.replace("{*", "{");
        for method in allow.split(',').map(str::trim).filter(|m| *m != "HEAD") {
            served_ops.insert(format!("{} {documented_path}", method.to_lowercase()));
        }
    }
    // What the document lists.
    let mut documented_ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(operation["responses"].is_object(), "{method} {path}");
            let params = operation["parameters"].as_array().unwrap();
            assert_eq!(
                params.iter().filter(|p| p["in"] == "path").count(),
                path.matches('{').count(),
                "{method} {path}: path parameters"
            );
            documented_ops.insert(format!("{method} {path}"));
        }
    }
    let undocumented: Vec<_> = served_ops.difference(&documented_ops).collect();
    let unserved: Vec<_> = documented_ops.difference(&served_ops).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
    assert!(served_ops.len() >= 80, "{}", served_ops.len());
    served.stop().await;
}

/// A small deterministic generator (xorshift64*), so a failing example replays from its seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const PATH_VALUES: &[&str] = &[
    "1",
    "2",
    "0",
    "-5",
    "abc",
    "99999999999999999999",
    "%00",
    "..%2F..%2Fetc",
    "%F0%9F%9A%A9",
    "tags",
    "1.5",
];
const QUERY_VALUES: &[&str] = &[
    "1",
    "0",
    "-1",
    "x",
    "",
    "100000",
    "%FF",
    "9223372036854775808",
];

/// A value for `schema`, valid most of the time, with a wrong type now and then.
fn value_for(g: &mut Gen, schema: &Value, depth: u32) -> Value {
    if g.chance(10) {
        return g
            .pick(&[
                json!(null),
                json!("wrong"),
                json!(-1),
                json!([]),
                json!({}),
                json!(true),
            ])
            .clone();
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.is_empty()
        && g.chance(80)
    {
        return g.pick(options).clone();
    }
    match schema["type"].as_str() {
        Some("integer") => g
            .pick(&[
                json!(1),
                json!(2),
                json!(0),
                json!(-1),
                json!(10),
                json!(i64::MAX),
            ])
            .clone(),
        Some("boolean") => json!(g.chance(50)),
        Some("string") => {
            let long = "x".repeat(5000);
            g.pick(&[
                json!("fuzz"),
                json!(""),
                json!(long),
                json!("ü🚩\u{0}"),
                json!("' OR 1=1 --"),
                json!("../../etc/passwd"),
                json!("flag{fuzz}"),
                json!("a(b|c)*+"),
            ])
            .clone()
        }
        Some("array") if depth < 3 => {
            let n = g.below(3);
            Value::Array(
                (0..n)
                    .map(|_| value_for(g, &schema["items"], depth + 1))
                    .collect(),
            )
        }
        Some("object") if depth < 3 => {
            let mut out = serde_json::Map::new();
            let required: Vec<&str> = schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(props) = schema["properties"].as_object() {
                for (name, prop) in props {
                    let keep = if required.contains(&name.as_str()) {
                        g.chance(90)
                    } else {
                        g.chance(50)
                    };
                    if keep {
                        out.insert(name.clone(), value_for(g, prop, depth + 1));
                    }
                }
            }
            if g.chance(10) {
                out.insert("unexpected_field".to_owned(), json!(1));
            }
            Value::Object(out)
        }
        _ => json!("any"),
    }
}

/// One request for `operation` at `path`: path and query parameters, and a body (valid-ish,
/// or garbage now and then).
fn example(g: &mut Gen, path: &str, operation: &Value) -> (String, Option<String>) {
    let mut uri: String = path
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                (*g.pick(PATH_VALUES)).to_owned()
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    let mut query = Vec::new();
    for p in operation["parameters"].as_array().into_iter().flatten() {
        if p["in"] == "query" && g.chance(50) {
            query.push(format!(
                "{}={}",
                p["name"].as_str().unwrap(),
                g.pick(QUERY_VALUES)
            ));
        }
    }
    if !query.is_empty() {
        uri = format!("{uri}?{}", query.join("&"));
    }
    let body = operation["requestBody"]["content"]
        .as_object()
        .and_then(|c| c.values().next())
        .map(|media| {
            if g.chance(10) {
                (*g.pick(&[
                    "{",
                    "[1,2]",
                    "null",
                    "\"s\"",
                    "{\"a\":}",
                    "---\nname: [",
                    "\u{1}",
                ]))
                .to_owned()
            } else {
                value_for(g, &media["schema"], 0).to_string()
            }
        });
    (uri, body)
}

/// Does the document promise CTFd's envelope for this operation's success?
fn promises_envelope(operation: &Value) -> bool {
    operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        == "#/components/schemas/Envelope"
}

/// Property-based API fuzzing from the OpenAPI document, bounded: every operation, several
/// generated examples each, as anonymous, a player and an admin. Never a 500 (a 503 is a
/// retryable answer, counted); every error in the one error shape; every success the document
/// promises as CTFd's envelope is one. `FCTF_FUZZ_EXAMPLES` (default 4) sets the examples per
/// operation and caller.
#[tokio::test]
async fn fuzzing_every_documented_operation_never_answers_500() {
    let started = std::time::Instant::now();
    let served = Served::start(roomy(), Arc::new(RecordingDeployment::default())).await;
    let player = testkit::player(&served.state, "fuzz-player", Some("fuzzers")).await;
    let admin = testkit::admin(&served.state).await;
    // Something to hit: a challenge with a flag and a hint.
    let admin_auth = token(&admin);
    let created = http(
        served.api,
        "POST",
        "/api/v1/challenges",
        &[("Authorization", &admin_auth)],
        Some(&json!({"name": "target", "description": "d", "value": 10}).to_string()),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let doc = served.call("GET", "/api/v1/openapi.json", &[]).await.json();
    let examples_per_caller: u64 = std::env::var("FCTF_FUZZ_EXAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let callers = [None, Some(token(&player)), Some(admin_auth.clone())];
    let mut requests = 0u64;
    let mut unavailable = 0u64;
    let mut failures = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (c, caller) in callers.iter().enumerate() {
                for n in 0..examples_per_caller {
                    let seed = 0x9E37_79B9_7F4A_7C15
                        ^ (requests.wrapping_add(1)).wrapping_mul(0x1000_0000_01B3)
                        ^ ((c as u64) << 56)
                        ^ n;
                    let mut g = Gen(seed | 1);
                    let (uri, body) = example(&mut g, path, operation);
                    let mut headers = Vec::new();
                    if let Some(auth) = caller {
                        headers.push(("Authorization", auth.as_str()));
                    }
                    let answer = http(
                        served.api,
                        &method.to_uppercase(),
                        &uri,
                        &headers,
                        body.as_deref(),
                    )
                    .await;
                    requests += 1;
                    let what = format!(
                        "{} {uri} (seed {seed:#x}, caller {c}) body {:.200} -> {} {:.300}",
                        method.to_uppercase(),
                        body.as_deref().unwrap_or(""),
                        answer.status,
                        answer.text()
                    );
                    let is_json = answer
                        .header("content-type")
                        .is_some_and(|t| t.starts_with("application/json"));
                    if answer.status == 503 {
                        // A backend reported busy (retryable, documented): not a bug, but
                        // counted so a run full of them shows.
                        unavailable += 1;
                    }
                    if answer.status >= 500 && answer.status != 503 {
                        failures.push(format!("5xx: {what}"));
                    } else if answer.status >= 400 {
                        let shaped = is_json
                            && serde_json::from_slice::<Value>(&answer.body).is_ok_and(|b| {
                                b["success"] == false
                                    && b["error"].is_string()
                                    && b["message"].is_string()
                            });
                        if !shaped {
                            failures.push(format!("error not in the shape: {what}"));
                        }
                    } else if is_json && promises_envelope(operation) {
                        let enveloped = serde_json::from_slice::<Value>(&answer.body)
                            .is_ok_and(|b| b["success"] == true);
                        if !enveloped {
                            failures.push(format!("success not in the envelope: {what}"));
                        }
                    }
                }
            }
        }
    }
    served.stop().await;
    eprintln!(
        "fuzzed {requests} requests in {:.1?} ({unavailable} answered 503)",
        started.elapsed()
    );
    assert!(requests > 500, "{requests}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
