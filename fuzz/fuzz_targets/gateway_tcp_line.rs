//! The TCP gateway's token line, read from bytes arriving in arbitrary pieces.
//!
//! `read_token_line` answers exactly what the protocol says, whatever the read sizes: a line of
//! at most `MAX_LINE` bytes before its LF (or CRLF) is read, trimmed, as the token; a longer one,
//! or `MAX_LINE + 2` bytes without an LF, is `TooLong`; an end of input before the line ends is
//! `Closed` (or the read error). The `early` bytes are exactly what followed the line end in the
//! reads so far: `early` plus the bytes never read is the rest of the input, so nothing the
//! client pipelined behind the token is lost or reordered. `split_line` finds the first LF.

#![no_main]

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use fctf_gateway::tcp_line::{LineError, MAX_LINE, read_token_line, split_line};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

/// A client: `bytes`, handed out in a first read of `first` bytes and then reads of `then` bytes
/// (0: as many as the reader asks for), then an end of input or a reset.
#[derive(Debug)]
struct Client<'a> {
    bytes: &'a [u8],
    first: usize,
    then: usize,
    reads: usize,
    reset_at_end: bool,
}

impl AsyncRead for Client<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.bytes.is_empty() {
            return Poll::Ready(if self.reset_at_end {
                Err(io::ErrorKind::ConnectionReset.into())
            } else {
                Ok(())
            });
        }
        let size = match if self.reads == 0 {
            self.first
        } else {
            self.then
        } {
            0 => usize::MAX,
            size => size,
        };
        let n = size.min(self.bytes.len()).min(buf.remaining());
        assert!(n > 0, "read_token_line read into a full buffer");
        let (now, later) = self.bytes.split_at(n);
        buf.put_slice(now);
        self.bytes = later;
        self.reads += 1;
        Poll::Ready(Ok(()))
    }
}

/// What the protocol says `input` reads as, written from the rules above.
enum Expected<'a> {
    Line { content: &'a [u8], after: usize },
    TooLong,
    NotText,
    Ended,
}

fn expected(input: &[u8]) -> Expected<'_> {
    match input.iter().position(|b| *b == b'\n') {
        Some(lf) => {
            let end = if lf > 0 && input[lf - 1] == b'\r' {
                lf - 1
            } else {
                lf
            };
            if end > MAX_LINE {
                Expected::TooLong
            } else if std::str::from_utf8(&input[..end]).is_err() {
                Expected::NotText
            } else {
                Expected::Line {
                    content: &input[..end],
                    after: lf + 1,
                }
            }
        }
        // MAX_LINE bytes and a CR are the longest start a valid line can have.
        None if input.len() > MAX_LINE + 1 => Expected::TooLong,
        None => Expected::Ended,
    }
}

fuzz_target!(|data: &[u8]| {
    // Two bytes of read sizes (the high bit of the first: a reset instead of an end), then the
    // bytes the client sends.
    let [first, then, input @ ..] = data else {
        return;
    };

    match (split_line(input), input.iter().position(|b| *b == b'\n')) {
        (None, None) => {}
        (Some((end, rest)), Some(lf)) => {
            assert_eq!(rest, lf + 1);
            assert!(end == lf || (end + 1 == lf && input[end] == b'\r'));
            assert_eq!(end + 1 == lf, lf > 0 && input[lf - 1] == b'\r');
        }
        (found, lf) => panic!("split_line {found:?} but the first LF is at {lf:?}"),
    }

    let reset_at_end = first & 0x80 != 0;
    let mut client = Client {
        bytes: input,
        first: usize::from(first & 0x7f),
        then: usize::from(*then),
        reads: 0,
        reset_at_end,
    };
    let result = {
        let read = pin!(read_token_line(&mut client));
        // The client is always ready, so one poll finishes the read.
        match read.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("pending on a reader that is always ready"),
        }
    };
    let consumed = input.len() - client.bytes.len();

    match (expected(input), result) {
        (Expected::Line { content, after }, Ok(line)) => {
            assert!(line.token.len() <= MAX_LINE);
            let text = std::str::from_utf8(content).expect("checked by expected()");
            assert_eq!(line.token, text.trim_ascii());
            assert!(consumed >= after, "early bytes from beyond the reads");
            assert_eq!(line.early, &input[after..consumed]);
        }
        (Expected::TooLong, Err(LineError::TooLong))
        | (Expected::NotText, Err(LineError::NotText)) => {}
        (Expected::Ended, Err(LineError::Closed)) if !reset_at_end => {}
        (Expected::Ended, Err(LineError::Io(e))) if reset_at_end => {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        }
        (_, result) => panic!("{input:?} read by {client:?}: {result:?}"),
    }
});
