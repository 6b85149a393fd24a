//! The relay between a player and an instance, both ways, holding no buffer while a session is
//! idle: each read goes into a buffer on the stack of the poll that makes it (a read that would
//! wait returns no bytes, so nothing has to be kept), and only bytes the other side was not
//! ready to take are copied to the heap, until they are written. So an idle session's relay is
//! a few dozen bytes, and a busy one reads and writes in [`CHUNK`]-byte pieces.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes one read takes (on the stack of the poll).
pub const CHUNK: usize = 16 * 1024;

/// Relays `a` and `b` both ways until both directions have ended (an end of stream is passed on
/// as a half-close) or either fails.
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut a_to_b = Pump::default();
    let mut b_to_a = Pump::default();
    poll_fn(|cx| {
        let forward = a_to_b.poll(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let back = b_to_a.poll(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        if forward.is_ready() && back.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Where one direction is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// Copying.
    #[default]
    Copying,
    /// The reader ended: flush, then shut the writer's write side down.
    Closing,
    /// Done.
    Done,
}

/// One direction of a relay.
#[derive(Debug, Default)]
struct Pump {
    /// Bytes read that the writer was not ready for (empty, unallocated, otherwise).
    held: Vec<u8>,
    /// How many of `held` were written since.
    written: usize,
    /// Something was written since the last flush (streams may buffer writes: what was relayed
    /// must go out before waiting for more).
    unflushed: bool,
    phase: Phase,
}

impl Pump {
    /// Copies what `from` has to `to` until `from` would wait (Pending) or ends (Ready, once
    /// `to` is shut down).
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut from: Pin<&mut R>,
        mut to: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            match self.phase {
                Phase::Done => return Poll::Ready(Ok(())),
                Phase::Closing => {
                    if self.unflushed {
                        ready!(to.as_mut().poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    ready!(to.as_mut().poll_shutdown(cx))?;
                    self.phase = Phase::Done;
                    return Poll::Ready(Ok(()));
                }
                Phase::Copying => {}
            }
            while self.written < self.held.len() {
                let n = ready!(to.as_mut().poll_write(cx, &self.held[self.written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.written += n;
                self.unflushed = true;
            }
            if self.held.capacity() > 0 {
                self.held = Vec::new();
                self.written = 0;
            }
            let mut space = [MaybeUninit::<u8>::uninit(); CHUNK];
            let mut buf = ReadBuf::uninit(&mut space);
            match from.as_mut().poll_read(cx, &mut buf) {
                Poll::Pending => {
                    if self.unflushed {
                        ready!(to.as_mut().poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(result) => result?,
            }
            let data = buf.filled();
            if data.is_empty() {
                self.phase = Phase::Closing;
                continue;
            }
            let mut off = 0;
            while off < data.len() {
                match to.as_mut().poll_write(cx, &data[off..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        off += n;
                        self.unflushed = true;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {
                        // Kept until the writer is ready: the only time a direction holds bytes.
                        self.held = data[off..].to_vec();
                        self.written = 0;
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn the_relay_carries_bursts_and_small_writes_both_ways_and_passes_half_closes_on() {
        // Small pipes: the writer is often not ready, so held bytes are exercised.
        let (mut client, mut near) = tokio::io::duplex(1000);
        let (mut far, mut backend) = tokio::io::duplex(700);
        let relay = tokio::spawn(async move { relay(&mut near, &mut far).await });

        // A burst much larger than a chunk and than both pipes, byte-exact, while small writes
        // go back.
        let burst: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = burst.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client
        });
        let mut got = vec![0u8; burst.len()];
        backend.read_exact(&mut got).await.unwrap();
        assert!(got == burst, "the burst arrived byte-exact");
        let mut client = writer.await.unwrap();
        backend.write_all(b"ok\n").await.unwrap();
        let mut line = [0u8; 3];
        client.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"ok\n");

        // The client half-closes: the backend sees the end, and can still answer.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        backend.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        backend.write_all(b"bye").await.unwrap();
        backend.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"bye");
        tokio::time::timeout(Duration::from_secs(2), relay)
            .await
            .expect("the relay ends when both directions have")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn an_idle_relay_is_small() {
        let (mut near, _client) = tokio::io::duplex(64);
        let (mut far, _backend) = tokio::io::duplex(64);
        let relay = relay(&mut near, &mut far);
        // Two directions' state and two references: no buffer lives in the future.
        assert!(
            std::mem::size_of_val(&relay) <= 160,
            "{} bytes",
            std::mem::size_of_val(&relay)
        );
    }

    #[tokio::test]
    async fn a_failed_write_ends_the_relay_with_the_error() {
        let (mut near, mut client) = tokio::io::duplex(64);
        let (mut far, backend) = tokio::io::duplex(64);
        drop(backend);
        client.write_all(b"to nobody").await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(2), relay(&mut near, &mut far))
            .await
            .expect("the relay ends");
        assert!(ended.is_err(), "{ended:?}");
    }
}
