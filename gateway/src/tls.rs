//! Optional TLS on the gateway's ports, next to plain text on the same listener.
//!
//! Pingora is built without its TLS features; the gateway terminates TLS itself (rustls with the
//! `ring` provider) in a [`ServerApp`] that wraps the HTTP or the TCP app ([`TlsApp`]). It looks
//! at the first byte of each new connection without consuming it (Pingora's own peek: one byte
//! read, then put back in front of the stream):
//!
//! - `0x16` (a TLS handshake record, which a ClientHello always opens with): the handshake runs,
//!   within [`TlsListener`]'s handshake timeout, and the app is handed a [`TlsIo`], whose
//!   [`Ssl::get_ssl_digest`] is `Some`: the HTTP app sees TLS in its session's digest
//!   ([`is_tls`]).
//! - any other byte: the app is handed the connection as it is, byte included.
//! - no byte yet: what happens depends on who speaks first ([`Silence`]). On the TCP port the
//!   gateway does (its prompt): after a short wait (`gateway.tls_detect_ms`) the connection is
//!   plain, so `nc` users see the prompt without typing first. On the HTTP port the client does:
//!   a connection that sends nothing for [`HTTP_FIRST_BYTE`] is closed (Pingora's own wait for a
//!   first request).
//!
//! A plain connection pays one peeked byte and nothing else (no wrapper stays in its path); a
//! listener without TLS has no [`TlsApp`] at all.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use fctf_core::config::TlsIdentity;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::TlsAcceptor;

/// The first byte of every TLS connection: the content type of a handshake record, which
/// carries the ClientHello. No HTTP request line and no token line starts with it.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How long an HTTP connection may stay silent before its first byte: Pingora's own read timeout
/// for a first request, so a listener with TLS keeps the same limit as one without.
pub const HTTP_FIRST_BYTE: Duration = Duration::from_secs(60);

/// The ALPN protocol the HTTP port offers: Pingora serves HTTP/1.1 here (no h2 over TLS).
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// How a connection opens, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// A TLS ClientHello: run the handshake.
    Tls,
    /// Anything else: plain text.
    Plain,
}

/// How the connection whose first byte is `first` opens.
pub fn opening(first: u8) -> Opening {
    if first == TLS_HANDSHAKE_RECORD {
        Opening::Tls
    } else {
        Opening::Plain
    }
}

/// What a listener does with a connection whose client has sent nothing yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// Serve it as plain text after this long: the server speaks first (the TCP port's prompt).
    Plain(Duration),
    /// Close it after this long: the client speaks first (HTTP).
    Close(Duration),
}

/// Why a TLS listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("TLS certificate {path} and its key: {source}")]
pub struct TlsError {
    /// The certificate file.
    pub path: String,
    /// What rustls refused (a key that does not match the certificate, an unsupported key type,
    /// a malformed certificate).
    pub source: rustls::Error,
}

/// A rustls server config for `identity` offering `alpn` (empty: no ALPN).
pub fn server_config(
    identity: &TlsIdentity,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let error = |source| TlsError {
        path: identity.cert_path.display().to_string(),
        source,
    };
    // The provider is named, not taken from the process default, which is ambiguous when another
    // crate in the binary enables a second one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(error)?
        .with_no_client_auth()
        .with_single_cert(identity.cert_chain.clone(), identity.key.der())
        .map_err(error)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The TLS side of one listener: its certificate, and how connections are told apart.
#[derive(Clone)]
pub struct TlsListener {
    acceptor: TlsAcceptor,
    silence: Silence,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("silence", &self.silence)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// A listener serving `config`, treating silent clients as `silence` says, and closing a
    /// connection whose handshake is not done `handshake_timeout` after its first byte.
    pub fn new(config: Arc<ServerConfig>, silence: Silence, handshake_timeout: Duration) -> Self {
        TlsListener {
            acceptor: TlsAcceptor::from(config),
            silence,
            handshake_timeout,
        }
    }

    /// The HTTP port's: ALPN `http/1.1`; a client silent for [`HTTP_FIRST_BYTE`] is closed.
    pub fn http(identity: &TlsIdentity, handshake_timeout: Duration) -> Result<Self, TlsError> {
        Ok(Self::new(
            server_config(identity, &[ALPN_HTTP11])?,
            Silence::Close(HTTP_FIRST_BYTE),
            handshake_timeout,
        ))
    }

    /// The TCP port's: no ALPN; a client silent for `detect` is plain text (it gets the prompt).
    pub fn tcp(
        identity: &TlsIdentity,
        detect: Duration,
        handshake_timeout: Duration,
    ) -> Result<Self, TlsError> {
        Ok(Self::new(
            server_config(identity, &[])?,
            Silence::Plain(detect),
            handshake_timeout,
        ))
    }

    /// The connection `io` as the app should see it: over TLS, as it is, or `None` (closed: a
    /// silent HTTP client, a failed or stalled handshake).
    pub async fn open(&self, mut io: Stream) -> Option<Stream> {
        let (Silence::Plain(wait) | Silence::Close(wait)) = self.silence;
        let mut first = [0u8; 1];
        // One byte, so a peek cut short by the timeout has consumed nothing.
        match tokio::time::timeout(wait, io.try_peek(&mut first)).await {
            Ok(Ok(true)) => {}
            // A stream that cannot peek is taken as plain; so is one closed or reset before its
            // first byte: the app sees the end itself (and the TCP gateway logs the session).
            Ok(Ok(false) | Err(_)) => return Some(io),
            Err(_silent) => {
                return match self.silence {
                    Silence::Plain(_) => Some(io),
                    Silence::Close(_) => None,
                };
            }
        }
        match opening(first[0]) {
            Opening::Plain => Some(io),
            // Boxed: the handshake's state (a whole rustls connection) would otherwise size the
            // future of every connection, plain ones included, for as long as it is served.
            Opening::Tls => Box::pin(self.handshake(io)).await,
        }
    }

    /// Runs the server side of the handshake on `io` (its first byte put back).
    async fn handshake(&self, io: Stream) -> Option<Stream> {
        let peer = io
            .get_socket_digest()
            .and_then(|d| d.peer_addr().map(ToString::to_string));
        match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(io)).await {
            Ok(Ok(tls)) => Some(Box::new(TlsIo::new(tls))),
            Ok(Err(error)) => {
                tracing::debug!(?peer, %error, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(?peer, "TLS handshake timed out");
                None
            }
        }
    }
}

/// True when the HTTP request of `session` came over TLS (terminated by this gateway).
pub fn is_tls(session: &pingora::proxy::Session) -> bool {
    session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some())
}

/// A connection over TLS, as a Pingora stream: reads and writes go through rustls; the socket's
/// digests are the socket's; [`Ssl::get_ssl_digest`] tells the app it is TLS.
#[derive(Debug)]
pub struct TlsIo {
    inner: tokio_rustls::server::TlsStream<Stream>,
    digest: Arc<SslDigest>,
    alpn: Option<ALPN>,
}

impl TlsIo {
    fn new(inner: tokio_rustls::server::TlsStream<Stream>) -> Self {
        let (_, conn) = inner.get_ref();
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|suite| suite.suite().as_str())
            .unwrap_or("unknown");
        let version = conn
            .protocol_version()
            .and_then(|version| version.as_str())
            .unwrap_or("unknown");
        let alpn = match conn.alpn_protocol() {
            Some(ALPN_HTTP11) => Some(ALPN::H1),
            _ => None,
        };
        let digest = SslDigest::new(
            Cow::Borrowed(cipher),
            Cow::Borrowed(version),
            None,
            None,
            Vec::new(),
        );
        TlsIo {
            inner,
            digest: Arc::new(digest),
            alpn,
        }
    }

    /// The socket under TLS.
    fn socket(&self) -> &Stream {
        self.inner.get_ref().0
    }

    fn socket_mut(&mut self) -> &mut Stream {
        self.inner.get_mut().0
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Sends close_notify, then shuts the socket's write side.
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for TlsIo {
    async fn shutdown(&mut self) {
        if let Err(error) = AsyncWriteExt::shutdown(&mut self.inner).await {
            tracing::debug!(%error, "TLS shutdown");
        }
    }
}

impl UniqueID for TlsIo {
    fn id(&self) -> UniqueIDType {
        self.socket().id()
    }
}

impl Ssl for TlsIo {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(self.digest.clone())
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.alpn.clone()
    }
}

impl GetTimingDigest for TlsIo {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.socket().get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.socket().get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.socket().get_write_pending_time()
    }
}

impl GetProxyDigest for TlsIo {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.socket().get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.socket_mut().set_proxy_digest(digest);
    }
}

impl GetSocketDigest for TlsIo {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.socket().get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.socket_mut().set_socket_digest(digest);
    }
}

/// No peeking through TLS (nothing asks for it: h2c detection skips TLS streams).
#[async_trait]
impl Peek for TlsIo {}

/// An app (Pingora's HTTP proxy, the TCP gateway) whose listener also accepts TLS.
#[derive(Debug)]
pub struct TlsApp<A> {
    app: Arc<A>,
    tls: TlsListener,
}

impl<A> TlsApp<A> {
    /// `app`, served on connections opened by `tls`.
    pub fn new(app: A, tls: TlsListener) -> Self {
        TlsApp {
            app: Arc::new(app),
            tls,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for TlsApp<A> {
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let mut reuse = Some(self.tls.open(io).await?);
        // A kept-alive connection comes back to be served again; it is served here, as Pingora's
        // own loop would, so that it is not told apart a second time.
        while let Some(io) = reuse {
            reuse = self.app.process_new(io, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use pingora::protocols::l4::stream::Stream as L4Stream;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    /// A listener with the test certificate that treats silence as `silence`.
    fn listener(silence: Silence) -> TlsListener {
        let chain = CertificateDer::pem_file_iter(fixture("cert.pem"))
            .expect("cert.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificates");
        let key = PrivateKeyDer::from_pem_file(fixture("key.pem")).expect("key.pem");
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("the certificate and its key");
        TlsListener::new(Arc::new(config), silence, Duration::from_secs(5))
    }

    /// An accepted connection as Pingora hands it to an app, and its client.
    async fn accepted() -> (Stream, TcpStream) {
        let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(server.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (accepted, _) = server.accept().await.expect("accept");
        (Box::new(L4Stream::from(accepted)), client)
    }

    #[tokio::test]
    async fn a_silent_client_is_closed_or_served_plain_as_the_port_says() {
        let wait = Duration::from_millis(50);
        let (io, _client) = accepted().await;
        assert!(listener(Silence::Close(wait)).open(io).await.is_none());

        let (io, mut client) = accepted().await;
        let mut io = listener(Silence::Plain(wait))
            .open(io)
            .await
            .expect("served plain");
        assert!(io.get_ssl_digest().is_none());
        client.write_all(b"later").await.expect("write");
        let mut buf = [0u8; 5];
        io.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"later");
    }

    #[tokio::test]
    async fn a_plain_first_byte_is_put_back_for_the_app() {
        for silence in [
            Silence::Close(Duration::from_secs(5)),
            Silence::Plain(Duration::from_secs(5)),
        ] {
            let (io, mut client) = accepted().await;
            client
                .write_all(b"GET / HTTP/1.1\r\n")
                .await
                .expect("write");
            let mut io = listener(silence).open(io).await.expect("served plain");
            assert!(io.get_ssl_digest().is_none());
            let mut buf = [0u8; 16];
            io.read_exact(&mut buf).await.expect("read");
            assert_eq!(&buf, b"GET / HTTP/1.1\r\n");
        }
    }

    #[test]
    fn only_a_handshake_record_opens_tls() {
        assert_eq!(opening(0x16), Opening::Tls);
        // HTTP methods, a token line, SSLv2-style hellos, an HTTP/2 preface: all plain.
        for first in [b'G', b'P', b'e', b'\n', 0x80, 0x15, 0x17, 0x00] {
            assert_eq!(opening(first), Opening::Plain, "{first:#x}");
        }
    }
}
