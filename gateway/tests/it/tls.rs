//! TLS next to plain text on the same ports (`[gateway] tls_cert_file`, `tls_key_file`): HTTPS
//! and plain HTTP on the HTTP port, TLS and `nc`-style plain clients on the TCP port, stalled
//! handshakes closed, bad certificate files refused. The gateway is built by
//! `GatewayOptions::from_config` from a config naming the fixtures in `tests/fixtures/tls/`
//! (made by `make.sh` there: a test CA and a certificate for localhost and 127.0.0.1).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fctf_core::config::{self, Config, ErrorKind, MapSource};
use fctf_core::store::{DeploymentState, StateStore};
use fctf_gateway::server::{GatewayError, GatewayHandle, GatewayOptions, Listen, spawn};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::*;

/// A fixture file's path.
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// A config with the test token key and TLS from the fixture certificate and `key`, each
/// instance read from the store at every request, and short TLS and TCP timeouts.
fn tls_config(key: &str) -> Result<Config, config::ConfigErrors> {
    let toml = format!(
        "[tokens]\nkeys = [{{ kid = \"k1\", secret = \"gateway-test-secret-of-32-bytes!\" }}]\n\
         [gateway]\nroute_cache_ms = 0\ntcp_auth_timeout_ms = 3000\n\
         tls_cert_file = {cert:?}\ntls_key_file = {key:?}\n\
         tls_detect_ms = 200\ntls_handshake_timeout_ms = 500\n",
        cert = fixture("cert.pem").display().to_string(),
        key = fixture(key).display().to_string(),
    );
    config::load(&toml, &files(&["cert.pem", key]))
}

/// A config source holding the fixture files `names` at their real paths (and no environment).
fn files(names: &[&str]) -> MapSource {
    names.iter().fold(MapSource::new(), |source, name| {
        let path = fixture(name);
        let contents = std::fs::read(&path).expect("a fixture");
        source.with_file(path, contents)
    })
}

/// A gateway with TLS on its HTTP and TCP ports (free ports, no admin port) in front of `store`.
fn start_tls_gateway(store: Arc<dyn StateStore>) -> GatewayHandle {
    let config = tls_config("key.pem").expect("the TLS config loads");
    let mut options = GatewayOptions::from_config(&config, store).expect("options");
    let bind = || Listen::Bound(std::net::TcpListener::bind("127.0.0.1:0").expect("bind"));
    let http_tls = options.http.tls().expect("TLS on HTTP").clone();
    let tcp_tls = options
        .tcp
        .as_ref()
        .and_then(Listen::tls)
        .expect("TLS on TCP")
        .clone();
    options.http = bind().with_tls(http_tls);
    options.tcp = Some(bind().with_tls(tcp_tls));
    options.admin = None;
    options.tcp_settings.liveness_recheck = Duration::from_millis(300);
    spawn(options).expect("gateway starts")
}

/// A TLS client trusting the fixture CA; `tls12` limits it to TLS 1.2.
fn client(tls12: bool) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(fixture("ca.pem")).expect("ca.pem");
    roots.add(ca).expect("the CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider);
    let builder = if tls12 {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        builder.with_safe_default_protocol_versions()
    };
    let config = builder
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `addr`, the certificate checked for `localhost`.
async fn tls_connect(addr: SocketAddr) -> TlsStream<TcpStream> {
    tls_connect_with(addr, client(false)).await
}

async fn tls_connect_with(addr: SocketAddr, client: TlsConnector) -> TlsStream<TcpStream> {
    let tcp = connect(addr).await;
    let name = ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(Duration::from_secs(5), client.connect(name, tcp))
        .await
        .expect("a handshake within 5 s")
        .expect("the handshake succeeds")
}

/// One response read from `conn`: status, head and body (by Content-Length).
async fn read_response<S: AsyncRead + Unpin>(conn: &mut S) -> (u16, String, String) {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut byte = [0u8; 1];
            assert_eq!(conn.read(&mut byte).await.expect("read"), 1, "closed early");
            buf.push(byte[0]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let body_len: usize =
            header(&head, "content-length").map_or(0, |v| v.parse().expect("a length"));
        let mut body = vec![0u8; body_len];
        conn.read_exact(&mut body).await.expect("body");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        (status, head, String::from_utf8(body).expect("text"))
    })
    .await
    .expect("a response within 5 s")
}

/// The first header `name` of `head` (case-insensitive).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Sends a GET of `target` with `cookie` on `conn` and reads the response.
async fn get_on<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut S,
    target: &str,
    cookie: Option<&str>,
) -> (u16, String, String) {
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {target} HTTP/1.1\r\nHost: chal.test\r\n{cookie}\r\n");
    conn.write_all(request.as_bytes()).await.expect("write");
    read_response(conn).await
}

/// True when the peer closes `conn` within 5 s, having sent nothing.
async fn closes_silently<S: AsyncRead + Unpin>(conn: &mut S) -> bool {
    let mut rest = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await {
        Ok(Ok(_)) => rest.is_empty(),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_sets_the_host_cookie_and_forwards_https_while_plain_http_shares_the_port() {
    let backend = Backend::start().await;
    let store = redis_store().await;
    let inst = run_instance(&*store, 71, 1, &backend.addr.to_string()).await;
    let gw = start_tls_gateway(store.clone());
    let addr = gw.http_addr().expect("bound");
    let token = inst.token();

    let mut conn = tls_connect(addr).await;
    let (status, head, _) = get_on(&mut conn, &format!("/p?fctftoken={token}"), None).await;
    assert_eq!(status, 302, "{head}");
    let set_cookie = header(&head, "set-cookie").expect("a Set-Cookie");
    assert!(
        set_cookie.starts_with(&format!("__Host-FCTF_Auth_Token={token}; ")),
        "{set_cookie}"
    );
    assert!(set_cookie.ends_with("; Secure"), "{set_cookie}");
    for attribute in ["Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(closes_silently(&mut conn).await, "an early answer closes");

    // Two requests on one kept-alive TLS connection.
    let cookie = format!("__Host-FCTF_Auth_Token={token}");
    let mut conn = tls_connect(addr).await;
    for target in ["/one", "/two"] {
        let (status, head, body) = get_on(&mut conn, target, Some(&cookie)).await;
        assert_eq!((status, body.as_str()), (200, "hello"), "{head}");
    }
    let heads = backend.heads();
    assert_eq!(heads.len(), 2);
    for head in &heads {
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("\r\nx-forwarded-proto: https\r\n"), "{head}");
        assert!(
            !head.contains(&token),
            "the token reached the backend: {head}"
        );
    }

    // Plain HTTP on the same port: the plain cookie, `http`.
    let visit = get(addr, &format!("/p?fctftoken={token}"), None).await;
    assert_eq!(visit.status, 302, "{visit:?}");
    let set_cookie = visit.header("set-cookie").expect("a Set-Cookie");
    assert!(set_cookie.starts_with(&format!("FCTF_Auth_Token={token}; ")));
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    let proxied = get(addr, "/three", Some(&format!("FCTF_Auth_Token={token}"))).await;
    assert_eq!(proxied.status, 200, "{proxied:?}");
    let heads = backend.heads();
    assert!(
        heads[2]
            .to_ascii_lowercase()
            .contains("\r\nx-forwarded-proto: http\r\n"),
        "{}",
        heads[2]
    );
    gw.stop();
    release(&*store, &inst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls12_client_is_served_too() {
    let backend = Backend::start().await;
    let store = redis_store().await;
    let inst = run_instance(&*store, 71, 2, &backend.addr.to_string()).await;
    let gw = start_tls_gateway(store.clone());
    let addr = gw.http_addr().expect("bound");
    let mut conn = tls_connect_with(addr, client(true)).await;
    assert_eq!(
        conn.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let cookie = format!("__Host-FCTF_Auth_Token={}", inst.token());
    let (status, head, body) = get_on(&mut conn, "/", Some(&cookie)).await;
    assert_eq!((status, body.as_str()), (200, "hello"), "{head}");
    gw.stop();
    release(&*store, &inst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_over_tls_is_cut_when_its_instance_stops() {
    let backend = Backend::start().await;
    let store = redis_store().await;
    let mut inst = run_instance(&*store, 71, 3, &backend.addr.to_string()).await;
    let gw = start_tls_gateway(store.clone());
    let addr = gw.http_addr().expect("bound");

    let mut conn = tls_connect(addr).await;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: chal.test\r\nCookie: __Host-FCTF_Auth_Token={}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        inst.token()
    );
    conn.write_all(request.as_bytes()).await.expect("write");
    let (status, head, _) = read_response(&mut conn).await;
    assert_eq!(status, 101, "{head}");
    conn.write_all(b"ping").await.expect("write");
    let mut echo = [0u8; 4];
    conn.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"ping");

    // Idle from here on: the cut, not a write, must end it.
    set_state(&*store, &mut inst, DeploymentState::Stopping).await;
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the upgraded TLS connection ends within 5 s");
    gw.stop();
    release(&*store, &inst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_over_tls_gets_the_prompt_then_relays() {
    let echo = EchoBackend::start().await;
    let store = redis_store().await;
    let inst = run_instance(&*store, 71, 4, &echo.addr.to_string()).await;
    let gw = start_tls_gateway(store.clone());
    let addr = gw.tcp_addr().expect("bound");

    let mut conn = tls_connect(addr).await;
    let mut prompt = vec![0u8; fctf_gateway::tcp::PROMPT.len()];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut prompt))
        .await
        .expect("the prompt within 5 s")
        .expect("read");
    assert_eq!(prompt, fctf_gateway::tcp::PROMPT);
    conn.write_all(format!("{}\nover tls\n", inst.token()).as_bytes())
        .await
        .expect("write");
    let mut reply = vec![0u8; "access granted\nover tls\n".len()];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut reply))
        .await
        .expect("the relay within 5 s")
        .expect("read");
    assert_eq!(reply, b"access granted\nover tls\n");
    // close_notify and a half-close reach the backend, whose close ends the session.
    conn.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the session ends after the backend closes");
    gw.stop();
    release(&*store, &inst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tcp_client_that_sends_nothing_gets_the_prompt() {
    let echo = EchoBackend::start().await;
    let store = redis_store().await;
    let inst = run_instance(&*store, 71, 5, &echo.addr.to_string()).await;
    let gw = start_tls_gateway(store.clone());
    let addr = gw.tcp_addr().expect("bound");

    // `nc`: connect, wait for the prompt, then type.
    let mut conn = tcp_connect(addr).await;
    conn.write_all(format!("{}\n", inst.token()).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_line(&mut conn).await, "access granted\n");
    conn.write_all(b"plain\n").await.expect("write");
    assert_eq!(read_line(&mut conn).await, "plain\n");

    // pwntools without waiting: the token line first; the prompt still comes, then the relay.
    let mut conn = connect(addr).await;
    conn.write_all(format!("{}\nfast\n", inst.token()).as_bytes())
        .await
        .expect("write");
    assert_eq!(
        read_exactly(&mut conn, fctf_gateway::tcp::PROMPT.len()).await,
        fctf_gateway::tcp::PROMPT
    );
    assert_eq!(read_line(&mut conn).await, "access granted\n");
    assert_eq!(read_line(&mut conn).await, "fast\n");

    // A garbage first line is a plain (refused) token line, not TLS.
    let mut conn = connect(addr).await;
    conn.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
    read_exactly(&mut conn, fctf_gateway::tcp::PROMPT.len()).await;
    assert_eq!(read_line(&mut conn).await, "access denied: invalid token\n");
    assert!(closes(&mut conn).await);
    gw.stop();
    release(&*store, &inst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_closed_on_both_ports() {
    let store = redis_store().await;
    let gw = start_tls_gateway(store);
    let ports = [
        gw.http_addr().expect("bound"),
        gw.tcp_addr().expect("bound"),
    ];
    for addr in ports {
        // A handshake record header and the start of a ClientHello, then nothing.
        let mut conn = connect(addr).await;
        conn.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .expect("write");
        assert!(
            closes_silently(&mut conn).await,
            "{addr}: closed without a byte (no prompt, no HTTP answer)"
        );
        // Not TLS at all after its first byte: refused by rustls, closed.
        let mut conn = connect(addr).await;
        conn.write_all(b"\x16garbage that is no TLS record\r\n\r\n")
            .await
            .expect("write");
        assert!(closes(&mut conn).await, "{addr}: a bad record is closed");
    }
    gw.stop();
}

#[test]
fn a_bad_certificate_file_is_a_config_error_naming_it() {
    let not_pem = fixture("make.sh");
    let toml = format!(
        "[gateway]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
        not_pem.display().to_string(),
        fixture("key.pem").display().to_string(),
    );
    let errors = config::load(&toml, &files(&["make.sh", "key.pem"])).unwrap_err();
    assert_eq!(errors.paths(), ["gateway.tls_cert_file"]);
    assert_eq!(errors.0[0].kind, ErrorKind::InvalidValue);
    assert!(
        errors.0[0]
            .message
            .starts_with(&format!("{} holds no certificate", not_pem.display())),
        "{}",
        errors.0[0]
    );

    let errors = config::load(
        "[gateway]\ntls_cert_file = \"/nowhere/cert.pem\"\ntls_key_file = \"/nowhere/key.pem\"",
        &MapSource::new(),
    )
    .unwrap_err();
    assert_eq!(
        errors.paths(),
        ["gateway.tls_cert_file", "gateway.tls_key_file"]
    );
    assert!(errors.0[0].message.contains("/nowhere/cert.pem"));
}

#[test]
fn a_key_of_another_certificate_stops_the_gateway_from_starting() {
    // The files are well-formed, so the config loads; the TLS library finds the mismatch.
    let config = tls_config("other-key.pem").expect("the config loads");
    let store: Arc<dyn StateStore> = Arc::new(fctf_core::store::MemoryStore::new());
    let error = GatewayOptions::from_config(&config, store).unwrap_err();
    assert!(matches!(error, GatewayError::Tls(_)), "{error}");
    assert!(error.is_config());
    let cert = fixture("cert.pem").display().to_string();
    assert!(error.to_string().contains(&cert), "{error}");
}
