//! The anti-smuggling framing rules, on requests parsed the way Pingora parses them.
//!
//! The input is a raw HTTP/1 header block, parsed with httparse (Pingora's parser) into the
//! header map `check` sees; Pingora's removal of a Content-Length sent with Transfer-Encoding is
//! replayed on request, and the same headers are also checked as HTTP/2 (no raw block).
//! `check` refuses exactly when one of its rules is broken, with the error of a broken rule;
//! so whatever it accepts has one unambiguous body length: at most one Content-Length or
//! Transfer-Encoding field in the raw block, an exact `chunked` only on HTTP/1.1, a
//! Content-Length of plain digits that fits a u64, CRLF line ends and no `_` in names.

#![no_main]

use fctf_gateway::framing::{FramingError, MAX_HEADER_BYTES, check};
use http::{HeaderMap, HeaderName, HeaderValue, Version};
use libfuzzer_sys::fuzz_target;

/// The values of the fields named `name` (ASCII case-insensitive).
fn values<'a>(fields: &[(&str, &'a [u8])], name: &str) -> Vec<&'a [u8]> {
    fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
        .collect()
}

/// Every rule `raw` (when given), the parsed fields and the version break.
fn broken_rules(
    version: Version,
    fields: &[(&str, &[u8])],
    map: &HeaderMap,
    raw: Option<&[u8]>,
) -> Vec<FramingError> {
    let mut broken = Vec::new();
    if let Some(raw) = raw {
        if raw.len() > MAX_HEADER_BYTES {
            broken.push(FramingError::HeaderTooLarge);
        }
        if raw.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r') || raw.first() == Some(&b'\n') {
            broken.push(FramingError::BareLf);
        }
    }
    if fields.iter().any(|(n, _)| n.contains('_')) {
        broken.push(FramingError::UnderscoreInName);
    }
    let te = values(fields, "transfer-encoding");
    let cl = values(fields, "content-length");
    if !te.is_empty() {
        if te.len() > 1 || version != Version::HTTP_11 || !te[0].eq_ignore_ascii_case(b"chunked") {
            broken.push(FramingError::BadTransferEncoding);
        }
        if !cl.is_empty() {
            broken.push(FramingError::LengthAndChunked);
        }
    }
    // What reaches `check` after Pingora dropped a Content-Length is judged on the map.
    let map_cl: Vec<&HeaderValue> = map.get_all(http::header::CONTENT_LENGTH).iter().collect();
    if let [value, rest @ ..] = map_cl.as_slice() {
        let digits = value.as_bytes();
        if !rest.is_empty()
            || !(1..=19).contains(&digits.len())
            || !digits.iter().all(u8::is_ascii_digit)
        {
            broken.push(FramingError::BadContentLength);
        }
    }
    if version == Version::HTTP_11 && values(fields, "host").is_empty() {
        broken.push(FramingError::MissingHost);
    }
    broken
}

fn run(version: Version, fields: &[(&str, &[u8])], raw: Option<&[u8]>, drop_cl: bool) {
    let mut map = HeaderMap::new();
    let has_te = fields
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    for (name, value) in fields {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            return; // Not a header the http crate (so Pingora) would hand over.
        };
        if drop_cl && has_te && name == http::header::CONTENT_LENGTH {
            continue;
        }
        map.append(name, value);
    }
    // Without the raw block, a dropped Content-Length is invisible by design: not a rule here.
    let fields_seen: Vec<(&str, &[u8])> = if raw.is_none() && drop_cl && has_te {
        fields
            .iter()
            .copied()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("content-length"))
            .collect()
    } else {
        fields.to_vec()
    };
    let broken = broken_rules(version, &fields_seen, &map, raw);
    match check(version, &map, raw) {
        Ok(()) => assert!(
            broken.is_empty(),
            "{version:?} {fields:?} accepted, breaks {broken:?}"
        ),
        Err(e) => {
            assert!(
                broken.contains(&e),
                "{version:?} {fields:?}: {e:?}, rules broken: {broken:?}"
            );
            assert_eq!(e.status() == 431, e == FramingError::HeaderTooLarge);
        }
    }
    if check(version, &map, raw).is_ok() {
        let cl = map.get(http::header::CONTENT_LENGTH);
        assert!(cl.is_none_or(|v| {
            std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .is_some()
        }));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, raw)) = data.split_first() else {
        return;
    };
    let mut storage = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut storage);
    let Ok(httparse::Status::Complete(len)) = request.parse(raw) else {
        return;
    };
    let raw = &raw[..len];
    let version = if request.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let fields: Vec<(&str, &[u8])> = request.headers.iter().map(|h| (h.name, h.value)).collect();
    let drop_cl = flags & 1 != 0;
    run(version, &fields, Some(raw), drop_cl);
    run(Version::HTTP_2, &fields, None, drop_cl);
});
