//! The TCP gateway's first line: the token a player sends after the prompt.
//!
//! At most [`MAX_LINE`] bytes before the line end (LF or CRLF). Whatever the client sent after
//! the line in the same reads (pwntools' `sendline(token); sendline(payload)`) is returned too,
//! so it reaches the backend instead of being lost.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest token line, line end excluded.
pub const MAX_LINE: usize = 1024;

/// A token line and the bytes that followed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenLine {
    /// The line without its line end and surrounding ASCII whitespace.
    pub token: String,
    /// Bytes read after the line end, to forward to the backend first.
    pub early: Vec<u8>,
}

/// Why no token line was read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// More than [`MAX_LINE`] bytes without a line end.
    #[error("token line too long")]
    TooLong,
    /// The client closed the connection before ending the line.
    #[error("connection closed before the token line ended")]
    Closed,
    /// The line is not UTF-8 text.
    #[error("token line is not text")]
    NotText,
    /// Reading failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the line ends in `buf`: (end of the line content, start of what follows). `None` while
/// no LF has arrived.
pub fn split_line(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.iter().position(|b| *b == b'\n')?;
    let end = if lf > 0 && buf[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    Some((end, lf + 1))
}

/// Reads the token line from `reader` (the caller bounds the time).
pub async fn read_token_line<R: AsyncRead + Unpin>(reader: &mut R) -> Result<TokenLine, LineError> {
    // Room for the longest line, its CRLF and a little of what follows; reads fill it without
    // zeroing it first.
    let mut buf = Vec::with_capacity(MAX_LINE + 2 + 1024);
    let mut searched = 0;
    loop {
        if let Some((end, rest)) = split_line(&buf[searched..]) {
            let (end, rest) = (searched + end, searched + rest);
            if end > MAX_LINE {
                return Err(LineError::TooLong);
            }
            let token = std::str::from_utf8(&buf[..end])
                .map_err(|_| LineError::NotText)?
                .trim_ascii()
                .to_owned();
            let early = buf[rest..].to_vec();
            return Ok(TokenLine { token, early });
        }
        // A CR at the end may be the start of a CRLF: look at it again with what follows.
        searched = buf.len().saturating_sub(1);
        if buf.len() > MAX_LINE + 1 {
            // No LF within MAX_LINE + CR: the line can no longer be valid.
            return Err(LineError::TooLong);
        }
        let n = reader.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(LineError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads from a cursor, which hands out everything in as few reads as the buffer allows:
    /// the "payload in the same packet as the token" case. Split arrivals are `split_line`'s.
    async fn read(bytes: &[u8]) -> Result<TokenLine, LineError> {
        read_token_line(&mut std::io::Cursor::new(bytes.to_vec())).await
    }

    #[tokio::test]
    async fn lf_crlf_and_pipelined_bytes() {
        let line = read(b"tok.en\npayload\n").await.unwrap();
        assert_eq!(line.token, "tok.en");
        assert_eq!(line.early, b"payload\n");
        let line = read(b"  tok.en \r\n").await.unwrap();
        assert_eq!(line.token, "tok.en");
        assert!(line.early.is_empty());
    }

    #[tokio::test]
    async fn bounds_and_endings() {
        let max = "a".repeat(MAX_LINE);
        assert_eq!(
            read(format!("{max}\r\n").as_bytes()).await.unwrap().token,
            max
        );
        let over = "a".repeat(MAX_LINE + 1);
        assert!(matches!(
            read(format!("{over}\n").as_bytes()).await,
            Err(LineError::TooLong)
        ));
        let flood = vec![b'a'; 10_000];
        assert!(matches!(read(&flood).await, Err(LineError::TooLong)));
        assert!(matches!(read(b"no newline").await, Err(LineError::Closed)));
        assert!(matches!(read(b"\xff\xfe\n").await, Err(LineError::NotText)));
    }

    #[test]
    fn split_line_finds_the_first_line_end() {
        assert_eq!(split_line(b"ab\r\ncd\n"), Some((2, 4)));
        assert_eq!(split_line(b"ab\ncd"), Some((2, 3)));
        assert_eq!(split_line(b"\n"), Some((0, 1)));
        assert_eq!(split_line(b"ab\r"), None);
    }
}
