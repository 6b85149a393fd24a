//! Request framing rules stricter than Pingora's parser, against request smuggling
//! (TEST-PLAN decision 1, T01-T04).
//!
//! Pingora 0.9.1 already refuses (400 and close) a Transfer-Encoding whose last value is not
//! `chunked`, TE on HTTP/1.0, obs-fold, CTLs, invalid or differing Content-Lengths and two Host
//! headers. It *accepts* what this module refuses: Content-Length together with
//! Transfer-Encoding (it drops the CL), TE lists ending in `chunked` (`gzip, chunked`), equal
//! duplicate Content-Lengths, bare-LF line endings, `_` in header names (`Transfer_Encoding`,
//! which some front proxies map to `Transfer-Encoding`) and HTTP/1.1 without Host.
//!
//! The check is pure: the caller passes the parsed header and, for HTTP/1, the raw header bytes
//! (needed because the parser has already removed a Content-Length that came with TE).

use http::{HeaderMap, Version, header};

/// The largest request header block accepted (Pingora's own cap is 1 MiB).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Why a request's framing was refused; each answers with [`FramingError::status`] and a close.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The header block is larger than [`MAX_HEADER_BYTES`].
    #[error("request header too large")]
    HeaderTooLarge,
    /// A line of the header block ends with a bare LF instead of CRLF.
    #[error("bare LF in the request header")]
    BareLf,
    /// A header name contains `_`.
    #[error("underscore in a header name")]
    UnderscoreInName,
    /// Transfer-Encoding is not exactly one `chunked`.
    #[error("unsupported Transfer-Encoding")]
    BadTransferEncoding,
    /// Both Content-Length and Transfer-Encoding.
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    /// More than one Content-Length, or one that is not plain digits.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// An HTTP/1.1 request without Host.
    #[error("missing Host header")]
    MissingHost,
}

impl FramingError {
    /// The HTTP status to answer with.
    pub fn status(self) -> u16 {
        match self {
            FramingError::HeaderTooLarge => 431,
            _ => 400,
        }
    }
}

/// Checks a request's framing. `raw` is the HTTP/1 header block as received (request line
/// included), `None` for HTTP/2.
pub fn check(
    version: Version,
    headers: &HeaderMap,
    raw: Option<&[u8]>,
) -> Result<(), FramingError> {
    if let Some(raw) = raw {
        if raw.len() > MAX_HEADER_BYTES {
            return Err(FramingError::HeaderTooLarge);
        }
        if memchr::memchr_iter(b'\n', raw).any(|i| i == 0 || raw[i - 1] != b'\r') {
            return Err(FramingError::BareLf);
        }
    }
    if headers.keys().any(|name| name.as_str().contains('_')) {
        return Err(FramingError::UnderscoreInName);
    }
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(value) = te.next() {
        if te.next().is_some()
            || version != Version::HTTP_11
            || !value.as_bytes().eq_ignore_ascii_case(b"chunked")
        {
            return Err(FramingError::BadTransferEncoding);
        }
        if headers.contains_key(header::CONTENT_LENGTH)
            || raw.is_some_and(|raw| has_header(raw, b"content-length"))
        {
            return Err(FramingError::LengthAndChunked);
        }
    }
    let mut cl = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(value) = cl.next() {
        let bytes = value.as_bytes();
        if cl.next().is_some()
            || bytes.is_empty()
            || bytes.len() > 19
            || !bytes.iter().all(u8::is_ascii_digit)
        {
            return Err(FramingError::BadContentLength);
        }
    }
    if version == Version::HTTP_11 && !headers.contains_key(header::HOST) {
        return Err(FramingError::MissingHost);
    }
    Ok(())
}

/// True when the raw header block has a field named `name` (ASCII case-insensitive, `name`
/// lowercase). The request line is skipped.
fn has_header(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|b| *b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn check11(pairs: &[(&str, &str)], raw: &str) -> Result<(), FramingError> {
        check(Version::HTTP_11, &headers(pairs), Some(raw.as_bytes()))
    }

    const RAW: &str = "POST / HTTP/1.1\r\nHost: a\r\n\r\n";

    #[test]
    fn plain_requests_pass() {
        assert_eq!(check11(&[("host", "a")], RAW), Ok(()));
        assert_eq!(
            check11(&[("host", "a"), ("transfer-encoding", "Chunked")], RAW),
            Ok(())
        );
        assert_eq!(
            check11(&[("host", "a"), ("content-length", "005")], RAW),
            Ok(())
        );
        assert_eq!(check(Version::HTTP_10, &headers(&[]), None), Ok(()));
        assert_eq!(check(Version::HTTP_2, &headers(&[]), None), Ok(()));
    }

    #[test]
    fn content_length_with_chunked_is_refused_even_when_the_parser_dropped_it() {
        let te = [("host", "a"), ("transfer-encoding", "chunked")];
        for raw in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\ncOnTeNt-LeNgTh: 5\r\n\r\n",
        ] {
            assert_eq!(check11(&te, raw), Err(FramingError::LengthAndChunked));
        }
        let both = [
            ("host", "a"),
            ("transfer-encoding", "chunked"),
            ("content-length", "5"),
        ];
        assert_eq!(check11(&both, RAW), Err(FramingError::LengthAndChunked));
        // A header merely mentioning it is not a Content-Length field.
        let raw = "POST / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(check11(&te, raw), Ok(()));
    }

    #[test]
    fn only_exactly_chunked_is_accepted() {
        for value in [
            "gzip, chunked",
            "chunked, chunked",
            "identity",
            "\"chunked\"",
            "xchunked",
            "gzip",
        ] {
            assert_eq!(
                check11(&[("host", "a"), ("transfer-encoding", value)], RAW),
                Err(FramingError::BadTransferEncoding),
                "{value}"
            );
        }
        let twice = [
            ("host", "a"),
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(check11(&twice, RAW), Err(FramingError::BadTransferEncoding));
        assert_eq!(
            check(
                Version::HTTP_10,
                &headers(&[("transfer-encoding", "chunked")]),
                None
            ),
            Err(FramingError::BadTransferEncoding)
        );
    }

    #[test]
    fn content_length_must_be_one_plain_number() {
        for value in ["5, 5", "", "+5", "-1", "0x5", "5 ", "99999999999999999999"] {
            assert_eq!(
                check11(&[("host", "a"), ("content-length", value)], RAW),
                Err(FramingError::BadContentLength),
                "{value:?}"
            );
        }
        let dup = [
            ("host", "a"),
            ("content-length", "5"),
            ("content-length", "5"),
        ];
        assert_eq!(check11(&dup, RAW), Err(FramingError::BadContentLength));
    }

    #[test]
    fn header_syntax_rules() {
        assert_eq!(
            check11(&[("host", "a")], "GET / HTTP/1.1\nHost: a\r\n\r\n"),
            Err(FramingError::BareLf)
        );
        assert_eq!(
            check11(&[("host", "a")], "GET / HTTP/1.1\r\nHost: a\n\r\n"),
            Err(FramingError::BareLf)
        );
        assert_eq!(
            check11(&[("host", "a"), ("transfer_encoding", "chunked")], RAW),
            Err(FramingError::UnderscoreInName)
        );
        assert_eq!(check11(&[], RAW), Err(FramingError::MissingHost));
        let big = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEADER_BYTES)
        );
        let refused = check11(&[("host", "a")], &big);
        assert_eq!(refused, Err(FramingError::HeaderTooLarge));
        assert_eq!(FramingError::HeaderTooLarge.status(), 431);
        assert_eq!(FramingError::BareLf.status(), 400);
    }
}
