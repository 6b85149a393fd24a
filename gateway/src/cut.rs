//! Cutting an HTTP connection from outside the task that serves it: a WebSocket (any upgraded
//! connection) must end when its instance stops, also while no byte moves.
//!
//! Pingora's proxy loop calls our hooks on an upgraded connection only when data flows (the body
//! filters), so a hook cannot end an idle one; a read timeout would also end the idle
//! connections of instances that still run; and the upstream socket's raw fd
//! (`connected_to_upstream`) can only be shut down with `unsafe` code, and may already name
//! another socket by the time an instance stops. Instead, every accepted HTTP connection is
//! wrapped in a [`Cuttable`] stream before Pingora's HTTP app sees it ([`CuttableApp`]). It
//! delegates every call to the socket, plus one atomic load per poll. The request that upgrades
//! takes the connection's [`CutSwitch`] ([`switch_of`]) and hands it to a watcher task; when
//! the instance stops, the watcher [cuts](CutSwitch::cut) it: the task serving the connection is
//! woken, its next read or write fails with `ConnectionAborted`, and Pingora ends the session,
//! which closes the client's connection and the instance's.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, IO, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Waker slots of a [`CutSwitch`]: the connection's task may wait on a read and a write at once.
const READ: usize = 0;
const WRITE: usize = 1;

/// The switch that cuts one connection. Shared by the connection's [`Cuttable`] stream and
/// whoever may cut it.
#[derive(Debug, Default)]
pub struct CutSwitch {
    cut: AtomicBool,
    /// Set once someone holds the switch to cut it: only then does a pending poll leave its
    /// waker here (a connection nobody watches pays no lock).
    armed: AtomicBool,
    wakers: parking_lot::Mutex<[Option<Waker>; 2]>,
}

impl CutSwitch {
    /// Cuts the connection: every read and write fails from now on, and a task waiting on one
    /// is woken to see it.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers.lock());
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// True once [`Self::cut`] was called.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Makes pending polls register their wakers, so a later [`Self::cut`] wakes them. Call it
    /// from the connection's own task before it polls again (as a request filter is).
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// After a poll of the socket was pending: leaves the task's waker (when armed) and says
    /// whether the switch was cut meanwhile (then the poll must fail instead of waiting).
    fn pending(&self, slot: usize, cx: &Context<'_>) -> bool {
        if !self.armed.load(Ordering::Relaxed) {
            return false;
        }
        {
            let mut wakers = self.wakers.lock();
            match &mut wakers[slot] {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                other => *other = Some(cx.waker().clone()),
            }
        }
        // A cut between the first check and the registration above took no waker from here,
        // but its flag is visible now.
        self.is_cut()
    }
}

fn aborted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "connection cut")
}

/// A stream that fails every read and write once its [`CutSwitch`] is cut; otherwise the
/// stream it wraps.
#[derive(Debug)]
pub struct Cuttable {
    inner: Stream,
    switch: Arc<CutSwitch>,
}

impl Cuttable {
    /// Wraps `inner` with a switch of its own.
    pub fn new(inner: Stream) -> Self {
        Cuttable {
            inner,
            switch: Arc::default(),
        }
    }

    /// The switch that cuts this stream.
    pub fn switch(&self) -> &Arc<CutSwitch> {
        &self.switch
    }

    /// Polls the socket unless the switch is cut; a pending poll leaves its waker with the
    /// switch.
    fn poll_io<T>(
        &mut self,
        slot: usize,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut (dyn IO + 'static)>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.switch.is_cut() {
            return Poll::Ready(Err(aborted()));
        }
        match poll(Pin::new(&mut *self.inner), cx) {
            Poll::Pending if self.switch.pending(slot, cx) => Poll::Ready(Err(aborted())),
            other => other,
        }
    }
}

/// The cut switch of the connection under `session` (an HTTP/1 session on a stream
/// [`CuttableApp`] wrapped); `None` for any other.
pub fn switch_of(session: &pingora::protocols::http::ServerSession) -> Option<Arc<CutSwitch>> {
    let stream = session.stream()?;
    (**stream)
        .as_any()
        .downcast_ref::<Cuttable>()
        .map(|cuttable| cuttable.switch.clone())
}

impl AsyncRead for Cuttable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut()
            .poll_io(READ, cx, |io, cx| io.poll_read(cx, buf))
    }
}

impl AsyncWrite for Cuttable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_io(WRITE, cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_io(WRITE, cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .poll_io(WRITE, cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing a cut connection is still closing it.
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Cuttable {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for Cuttable {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Cuttable {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Cuttable {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Cuttable {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Cuttable {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for Cuttable {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// A [`ServerApp`] (Pingora's HTTP proxy) whose connections are [`Cuttable`].
#[derive(Debug)]
pub struct CuttableApp<A> {
    app: Arc<A>,
}

impl<A> CuttableApp<A> {
    /// `app`, served on cuttable connections.
    pub fn new(app: A) -> Self {
        CuttableApp { app: Arc::new(app) }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for CuttableApp<A> {
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // A connection handed back for reuse is wrapped already.
        let io: Stream = if (*io).as_any().is::<Cuttable>() {
            io
        } else {
            Box::new(Cuttable::new(io))
        };
        self.app.process_new(io, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_cut_wakes_a_pending_read_and_fails_every_later_call() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut stream = Cuttable::new(Box::new(near));
        let switch = stream.switch().clone();
        switch.arm();
        far.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");

        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let read = stream.read(&mut buf).await;
            (stream, read)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!reader.is_finished(), "nothing to read yet");
        switch.cut();
        let (mut stream, read) = tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .expect("the cut wakes the reader")
            .unwrap();
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        // Data that arrives later is not read, and nothing is written.
        far.write_all(b"late").await.unwrap();
        assert!(stream.read(&mut buf).await.is_err());
        assert!(stream.write_all(b"x").await.is_err());
        assert!(switch.is_cut());
    }

    #[tokio::test]
    async fn an_unarmed_stream_keeps_no_waker() {
        let (near, _far) = tokio::io::duplex(64);
        let mut stream = Cuttable::new(Box::new(near));
        let mut buf = [0u8; 8];
        assert!(
            tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buf))
                .await
                .is_err()
        );
        assert!(stream.switch().wakers.lock().iter().all(Option::is_none));
    }
}
