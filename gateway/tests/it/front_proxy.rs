//! Request smuggling through a front proxy (TEST-PLAN T12, group A): Debian's nginx (set up as
//! ingress-nginx is in production) and haproxy, each started privately on free loopback ports
//! with a config written here, in front of the gateway. The group A corpus is sent to the front
//! proxy; each attack hides a complete request to `/smuggled` (carrying a valid cookie, so it
//! would be proxied if any hop parsed it as a request). A strict recording upstream checks that
//! it never arrives, and that everything it receives is canonically framed.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fctf_core::store::{MemoryStore, RateLimit, StateStore};
use fctf_gateway::client::TrustedProxies;
use fctf_gateway::http::HttpLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{
    Extra, Instance, free_addr, release, run_instance, start_gateway_options, tcp_settings,
};

/// What the recording upstream saw: one entry per request, `METHOD target`, or `BAD: why` for
/// bytes a strict HTTP/1.1 parser refuses (the connection is then closed).
#[derive(Clone, Debug, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn all(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }

    fn push(&self, entry: String) {
        self.0.lock().expect("lock").push(entry);
    }
}

/// A strict HTTP/1.1 upstream: CRLF only, one Host, Content-Length or exactly `chunked`
/// (never both), plain hex chunk sizes. Answers `200` with `hello <target>`.
struct Recorder {
    addr: SocketAddr,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Seen::default();
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(record(conn, recorded.clone()));
            }
        });
        Recorder { addr, seen, task }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads more bytes into `buf`; false at the end of the stream.
async fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match conn.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Takes one CRLF-terminated line from the front of `buf` (reading as needed).
async fn line(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, String> {
    loop {
        if let Some(lf) = buf.iter().position(|b| *b == b'\n') {
            if lf == 0 || buf[lf - 1] != b'\r' {
                return Err("bare LF".into());
            }
            let line = buf[..lf - 1].to_vec();
            buf.drain(..=lf);
            if line.contains(&b'\r') {
                return Err("bare CR".into());
            }
            return Ok(Some(line));
        }
        if buf.len() > 64 * 1024 {
            return Err("line too long".into());
        }
        if !fill(conn, buf).await {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err("truncated".into())
            };
        }
    }
}

/// Takes exactly `n` bytes from the front of `buf` (reading as needed).
async fn exactly(conn: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> Result<(), String> {
    while buf.len() < n {
        if !fill(conn, buf).await {
            return Err("truncated body".into());
        }
    }
    buf.drain(..n);
    Ok(())
}

/// One request parsed strictly; `Ok(None)` at a clean end of the connection.
async fn strict_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<String>, String> {
    let Some(request_line) = line(conn, buf).await? else {
        return Ok(None);
    };
    let request_line = String::from_utf8(request_line).map_err(|_| "non-UTF-8 request line")?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some("HTTP/1.1"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("request line {request_line:?}"));
    };
    let entry = format!("{method} {target}");
    let (mut hosts, mut lengths, mut chunked) = (0, Vec::new(), 0);
    loop {
        let header = line(conn, buf).await?.ok_or("truncated head")?;
        if header.is_empty() {
            break;
        }
        let colon = header.iter().position(|b| *b == b':').ok_or("no colon")?;
        let name = &header[..colon];
        if name.is_empty()
            || !name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^`|~".contains(b))
        {
            return Err(format!("header name {:?}", String::from_utf8_lossy(name)));
        }
        let value = String::from_utf8_lossy(&header[colon + 1..])
            .trim_matches([' ', '\t'])
            .to_owned();
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        match name.as_str() {
            "host" => hosts += 1,
            "content-length" => lengths.push(value),
            "transfer-encoding" if value == "chunked" => chunked += 1,
            "transfer-encoding" => return Err(format!("Transfer-Encoding {value:?}")),
            _ => {}
        }
    }
    if hosts != 1 {
        return Err(format!("{hosts} Host headers"));
    }
    match (lengths.as_slice(), chunked) {
        ([], 0) => {}
        ([length], 0) => {
            if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("Content-Length {length:?}"));
            }
            let n = length.parse().map_err(|_| "Content-Length overflow")?;
            exactly(conn, buf, n).await?;
        }
        ([], 1) => loop {
            let size = line(conn, buf).await?.ok_or("truncated chunk")?;
            if size.is_empty() || size.len() > 8 || !size.iter().all(u8::is_ascii_hexdigit) {
                return Err(format!("chunk size {:?}", String::from_utf8_lossy(&size)));
            }
            let size = usize::from_str_radix(std::str::from_utf8(&size).unwrap_or("x"), 16)
                .map_err(|_| "chunk size")?;
            if size == 0 {
                let trailer = line(conn, buf).await?.ok_or("truncated trailer")?;
                if !trailer.is_empty() {
                    return Err("trailer fields".into());
                }
                break;
            }
            exactly(conn, buf, size).await?;
            if line(conn, buf).await?.ok_or("truncated chunk")? != b"" {
                return Err("no CRLF after chunk data".into());
            }
        },
        _ => return Err(format!("framing: {lengths:?} and {chunked} chunked")),
    }
    Ok(Some(entry))
}

async fn record(mut conn: TcpStream, seen: Seen) {
    let mut buf = Vec::new();
    loop {
        match strict_request(&mut conn, &mut buf).await {
            Ok(None) => return,
            Ok(Some(entry)) => {
                let body = format!("hello {}", entry.split(' ').nth(1).unwrap_or(""));
                seen.push(entry);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if conn.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
            Err(why) => {
                seen.push(format!("BAD: {why}"));
                return;
            }
        }
    }
}

/// A front proxy process started by a test, stopped when dropped.
struct FrontProxy {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

impl Drop for FrontProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private directory under the system temp dir, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "fctf-front-{name}-{}-{}",
            std::process::id(),
            fctf_core::ids::InstanceId::new()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The path of `program`, or a failure that says how to install it.
fn require(program: &str, package: &str) -> std::path::PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let path = std::path::Path::new(dir).join(program);
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "{program} is not installed; this test runs it in front of the gateway.\n\
         Install it with: apt-get install -y {package}"
    );
}

/// NGINX as ingress-nginx configures it: HTTP/1.1 to a keep-alive upstream, request buffering
/// on, the forwarding headers set, invalid header names dropped.
fn start_nginx(gateway: SocketAddr) -> FrontProxy {
    let nginx = require("nginx", "nginx");
    let dir = TempDir::new("nginx");
    let addr = free_addr();
    let d = dir.0.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
           proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           underscores_in_headers off;\n  ignore_invalid_headers on;\n\
           upstream gateway {{ server {gateway}; keepalive 320; }}\n\
           server {{\n    listen {addr};\n    location / {{\n\
               proxy_pass http://gateway;\n      proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
               proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
               proxy_set_header X-Forwarded-Proto $scheme;\n\
               proxy_request_buffering on;\n      proxy_buffering off;\n    }}\n  }}\n}}\n"
    );
    std::fs::write(dir.0.join("nginx.conf"), conf).expect("write nginx.conf");
    let child = Command::new(nginx)
        .args(["-e", "stderr", "-p"])
        .arg(&dir.0)
        .arg("-c")
        .arg(dir.0.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    FrontProxy {
        name: "nginx",
        addr,
        child,
        _dir: dir,
    }
}

/// HAProxy in HTTP mode with connection reuse, as the test plan's H5 sets it up.
fn start_haproxy(gateway: SocketAddr) -> FrontProxy {
    let haproxy = require("haproxy", "haproxy");
    let dir = TempDir::new("haproxy");
    let addr = free_addr();
    let conf = format!(
        "global\n  nbthread 1\n  maxconn 256\ndefaults\n  mode http\n  option http-keep-alive\n\
         option forwardfor\n  http-reuse always\n  timeout connect 5s\n  timeout client 10s\n\
         timeout server 10s\nfrontend front\n  bind {addr}\n  default_backend gateway\n\
         backend gateway\n  server gw {gateway}\n"
    );
    let path = dir.0.join("haproxy.cfg");
    std::fs::write(&path, conf).expect("write haproxy.cfg");
    let child = Command::new(haproxy)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy starts");
    FrontProxy {
        name: "haproxy",
        addr,
        child,
        _dir: dir,
    }
}

/// Waits until the front proxy accepts connections.
async fn wait_ready(front: &mut FrontProxy) {
    for _ in 0..100 {
        if TcpStream::connect(front.addr).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = front.child.try_wait() {
            panic!("{} exited at start: {status}", front.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} does not accept on {}", front.name, front.addr);
}

/// Sends `raw` on a new connection and reads everything that comes back until the connection
/// closes or stays silent for a moment: every response the client gets.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut conn = TcpStream::connect(addr)
        .await
        .expect("connect to the front proxy");
    // A proxy may close before reading everything: what it did not read was not forwarded.
    let _ = conn.write_all(raw).await;
    let mut got = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(500), conn.read(&mut chunk)).await
    {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The status codes of the responses in `got`, in order.
fn statuses(got: &str) -> Vec<u16> {
    got.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| got.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// What the tests send: the instances and tokens.
struct Corpus {
    cookie: String,
    valid: String,
    stopped: String,
}

impl Corpus {
    /// The request hidden in each attack: a valid cookie, so it would reach the upstream if any
    /// hop took it for a request.
    fn smuggled(&self) -> String {
        format!(
            "GET /smuggled HTTP/1.1\r\nHost: chal.test\r\nCookie: {}\r\n\r\n",
            self.cookie
        )
    }

    /// Group A: framing attacks. Each is built so that every reading a correct HTTP/1.1 hop may
    /// take keeps the smuggled request out of the request stream: it is the body by the
    /// Content-Length (which covers everything sent), inside a chunk, or after a framing that a
    /// hop must refuse, or answer and then close (RFC 9112 §6.3 for CL with TE). Only a hop that
    /// reads the framing differently from the others would see it as a second request. Every
    /// request names a client address of its own (trusted `X-Forwarded-For`), so the limits of
    /// one never touch another.
    fn framing(&self) -> Vec<(&'static str, String)> {
        let s = self.smuggled();
        let n = s.len();
        let c = &self.cookie;
        let head =
            |i: u32| format!("Host: chal.test\r\nX-Forwarded-For: 10.1.0.{i}\r\nCookie: {c}\r\n");
        // A chunked body that ends before the smuggled request, and a Content-Length that
        // covers both.
        let te = |i: u32, te_lines: &str| {
            format!(
                "POST /a HTTP/1.1\r\n{}{te_lines}Content-Length: {}\r\n\r\n0\r\n\r\n{s}",
                head(i),
                5 + n
            )
        };
        // The smuggled request inside one chunk whose size line is `size`.
        let chunk = |i: u32, size: String| {
            format!(
                "POST /a HTTP/1.1\r\n{}Transfer-Encoding: chunked\r\n\r\n{size}\r\n{s}\r\n0\r\n\r\n",
                head(i)
            )
        };
        // The smuggled request as the body, with `lines` in the head.
        let body = |i: u32, method: &str, lines: &str| {
            format!("{method} /a HTTP/1.1\r\n{}{lines}\r\n{s}", head(i))
        };
        vec![
            (
                "CL then TE",
                format!(
                    "POST /a HTTP/1.1\r\n{}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}",
                    head(1),
                    5 + n
                ),
            ),
            (
                "TE then CL, mixed case",
                te(2, "tRANSFER-eNCODING: chunked\r\n"),
            ),
            (
                "TE gzip, chunked",
                te(3, "Transfer-Encoding: gzip, chunked\r\n"),
            ),
            (
                "TE chunked, gzip",
                te(4, "Transfer-Encoding: chunked, gzip\r\n"),
            ),
            ("TE xchunked", te(5, "Transfer-Encoding: xchunked\r\n")),
            (
                "TE twice",
                te(
                    6,
                    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                ),
            ),
            ("TE identity", te(7, "Transfer-Encoding: identity\r\n")),
            ("TE with a tab", te(8, "Transfer-Encoding:\tchunked\t\r\n")),
            (
                "TE on HTTP/1.0",
                te(9, "Transfer-Encoding: chunked\r\n").replacen("HTTP/1.1", "HTTP/1.0", 1),
            ),
            (
                "Transfer_Encoding",
                te(10, "Transfer_Encoding: chunked\r\n"),
            ),
            ("obs-fold TE", te(11, "Transfer-Encoding:\r\n chunked\r\n")),
            (
                "equal CLs",
                body(
                    12,
                    "POST",
                    &format!("Content-Length: {n}\r\nContent-Length: {n}\r\n"),
                ),
            ),
            (
                "conflicting CLs",
                body(
                    13,
                    "POST",
                    &format!("Content-Length: {n}\r\nContent-Length: 0\r\n"),
                ),
            ),
            (
                "CL list",
                body(14, "POST", &format!("Content-Length: {n}, {n}\r\n")),
            ),
            (
                "CL with a sign",
                body(15, "POST", &format!("Content-Length: +{n}\r\n")),
            ),
            (
                "space before colon",
                body(16, "POST", &format!("Content-Length : {n}\r\n")),
            ),
            (
                "obs-fold header",
                body(
                    17,
                    "GET",
                    &format!("X-Folded: a\r\n b\r\nContent-Length: {n}\r\n"),
                ),
            ),
            (
                "bare LF in one line",
                body(18, "GET", &format!("X: y\nContent-Length: {n}\r\n")),
            ),
            (
                "bare CR in a value",
                body(19, "GET", &format!("X: y\rContent-Length: {n}\r\n")),
            ),
            (
                "body of a GET",
                body(20, "GET", &format!("Content-Length: {n}\r\n")),
            ),
            (
                "Expect 100-continue",
                body(
                    21,
                    "POST",
                    &format!("Expect: 100-continue\r\nContent-Length: {n}\r\n"),
                ),
            ),
            (
                "bare LF head",
                format!(
                    "POST /a HTTP/1.1\n{}Content-Length: {n}\n\n{s}",
                    head(22).replace("\r\n", "\n")
                ),
            ),
            (
                "CRLF in the target",
                format!(
                    "GET /a\r\nX: HTTP/1.1\r\n{}Content-Length: {n}\r\n\r\n{s}",
                    head(23)
                ),
            ),
            (
                "chunk size overflow",
                chunk(24, "7ffffffffffffff7".to_owned()),
            ),
            ("chunk size of 17 digits", chunk(25, format!("{n:017x}"))),
            ("chunk size 0x", chunk(26, format!("0x{n:x}"))),
            ("chunk size with a space", chunk(27, format!(" {n:x}"))),
            ("chunk size with a sign", chunk(28, format!("+{n:x}"))),
            ("bare LF chunk extension", chunk(29, format!("{n:x};a\nb"))),
            (
                "chunk data without CRLF",
                format!(
                    "POST /a HTTP/1.1\r\n{}Transfer-Encoding: chunked\r\n\r\n1\r\nxx\r\n0\r\n\r\n{s}",
                    head(30)
                ),
            ),
            (
                "trailer with CL",
                format!(
                    "POST /a HTTP/1.1\r\n{}Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nContent-Length: {n}\r\n\r\n",
                    head(31)
                ),
            ),
        ]
    }

    /// The early answers, each with a body that is a complete request; the status the client
    /// must get from the gateway for it (through the front proxy).
    fn early_answers(&self) -> Vec<(&'static str, u16, String)> {
        let s = self.smuggled();
        let n = s.len();
        let post = |target: &str, xff: &str, cookie: Option<&str>| {
            let cookie = cookie
                .map(|c| format!("Cookie: {c}\r\n"))
                .unwrap_or_default();
            format!(
                "POST {target} HTTP/1.1\r\nHost: chal.test\r\nX-Forwarded-For: {xff}\r\n{cookie}\
                 Content-Length: {n}\r\n\r\n{s}"
            )
        };
        vec![
            (
                "redirect",
                302,
                post(&format!("/r?fctftoken={}", self.valid), "10.2.0.1", None),
            ),
            ("401 no cookie", 401, post("/n", "10.2.0.2", None)),
            (
                "401 invalid token",
                401,
                post("/i", "10.2.0.3", Some("FCTF_Auth_Token=forged.token")),
            ),
            (
                "403 stopped instance",
                403,
                post(
                    "/s",
                    "10.2.0.4",
                    Some(&format!("FCTF_Auth_Token={}", self.stopped)),
                ),
            ),
            // 10.2.0.5 has spent its token+IP burst before this one (see the test).
            ("429", 429, post("/l", "10.2.0.5", Some(&self.cookie))),
        ]
    }
}

/// The gateway behind `front`: sends the whole corpus, then checks the recording upstream.
async fn smuggling_through(front: fn(SocketAddr) -> FrontProxy) {
    let recorder = Recorder::start().await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let route = recorder.addr.to_string();
    let live = run_instance(&*store, 7, 3, &route).await;
    let stopped: Instance = run_instance(&*store, 7, 4, &route).await;
    release(&*store, &stopped).await;
    // Token+IP: a burst of 2, so one client address reaches 429 quickly; every other request
    // names a client address of its own.
    let limits = HttpLimits {
        token_ip: RateLimit {
            per_second: 0.001,
            burst: 2,
        },
        ip: RateLimit {
            per_second: 1000.0,
            burst: 1000,
        },
    };
    let gw = start_gateway_options(
        store.clone(),
        limits,
        tcp_settings(15),
        Extra {
            trusted_proxies: TrustedProxies::new(vec!["127.0.0.0/8".parse().expect("net")]),
            ..Extra::default()
        },
    );
    let gw_addr = gw.http_addr().expect("bound");
    let mut front = front(gw_addr);
    wait_ready(&mut front).await;
    let corpus = Corpus {
        cookie: format!("FCTF_Auth_Token={}", live.token()),
        valid: live.token(),
        stopped: stopped.token(),
    };
    let name = front.name;

    // The chain works, and a request the client really pipelines does arrive: the recorder
    // would see a smuggled one.
    let two = format!(
        "GET /first HTTP/1.1\r\nHost: chal.test\r\nX-Forwarded-For: 10.0.0.1\r\nCookie: {c}\r\n\r\n\
         GET /second HTTP/1.1\r\nHost: chal.test\r\nX-Forwarded-For: 10.0.0.2\r\nCookie: {c}\r\n\r\n",
        c = corpus.cookie
    );
    let got = exchange(front.addr, two.as_bytes()).await;
    assert_eq!(statuses(&got), [200, 200], "{name}: {got}");
    assert!(got.contains("hello /second"), "{name}: {got}");
    assert_eq!(recorder.seen.all(), ["GET /first", "GET /second"], "{name}");

    let mut answered = Vec::new();
    for (case, raw) in corpus.framing() {
        let got = exchange(front.addr, raw.as_bytes()).await;
        assert!(
            !got.contains("/smuggled"),
            "{name}, {case}: the client got {got}"
        );
        let seen = recorder.seen.all();
        assert!(
            seen.iter()
                .all(|s| !s.contains("/smuggled") && !s.starts_with("BAD")),
            "{name}, {case}: the upstream saw {seen:?}"
        );
        answered.push(format!("{case}: {:?}", statuses(&got)));
    }

    // Spend 10.2.0.5's token+IP burst, so its next request is over the limit.
    for _ in 0..2 {
        let raw = format!(
            "GET /spend HTTP/1.1\r\nHost: chal.test\r\nX-Forwarded-For: 10.2.0.5\r\nCookie: {}\r\n\r\n",
            corpus.cookie
        );
        let got = exchange(front.addr, raw.as_bytes()).await;
        assert_eq!(statuses(&got), [200], "{name}: {got}");
    }
    for (case, status, raw) in corpus.early_answers() {
        let got = exchange(front.addr, raw.as_bytes()).await;
        assert_eq!(
            statuses(&got).first(),
            Some(&status),
            "{name}, {case}: the gateway's early answer must reach the client: {got}"
        );
        assert!(
            !got.contains("/smuggled"),
            "{name}, {case}: the client got {got}"
        );
        let seen = recorder.seen.all();
        assert!(
            seen.iter()
                .all(|s| !s.contains("/smuggled") && !s.starts_with("BAD")),
            "{name}, {case}: the upstream saw {seen:?}"
        );
    }

    // The pooled connections between the front proxy and the gateway are still clean: a
    // normal request gets its own answer.
    let raw = format!(
        "GET /after HTTP/1.1\r\nHost: chal.test\r\nX-Forwarded-For: 10.0.0.3\r\nCookie: {}\r\n\r\n",
        corpus.cookie
    );
    let got = exchange(front.addr, raw.as_bytes()).await;
    assert_eq!(statuses(&got), [200], "{name}: {got}");
    assert!(got.contains("hello /after"), "{name}: {got}");
    let seen = recorder.seen.all();
    assert!(
        seen.iter()
            .all(|s| !s.contains("/smuggled") && !s.starts_with("BAD")),
        "{name}: the upstream saw {seen:?}"
    );
    eprintln!("{name}: statuses the client got: {answered:#?}; the upstream saw {seen:?}");
    drop(front);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_smuggled_through_nginx_in_front() {
    smuggling_through(start_nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_smuggled_through_haproxy_in_front() {
    smuggling_through(start_haproxy).await;
}
