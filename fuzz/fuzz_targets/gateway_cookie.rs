//! The gateway's cookie in `Cookie` headers, checked against the cookie rules written here
//! independently (pairs split on `;`, name and value trimmed of spaces and tabs, names exact).
//!
//! `strip_ours` never leaves one of our cookies, keeps every other pair byte for byte and in
//! order (only the first kept pair may lose its leading spaces), borrows exactly when there was
//! nothing to remove, and drops a header that would be left blank. `token_from_cookies` returns
//! the first visible-ASCII `__Host-` token, else the first plain one, and nothing once the
//! headers are stripped; `tokens_from_cookies` lists every such token of either name, in order.
//! `set_cookie` writes a cookie that carries the token back, with the
//! attributes of its listener kind.

#![no_main]

use std::borrow::Cow;

use fctf_gateway::cookie::{
    COOKIE_NAME, HOST_COOKIE_NAME, set_cookie, strip_ours, token_from_cookies, tokens_from_cookies,
};
use libfuzzer_sys::fuzz_target;

/// The characters of a token (base64url and the separating dots).
const TOKEN_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// The name of one `;`-separated segment: up to its first `=`, or all of it.
fn name_of(segment: &[u8]) -> &[u8] {
    let pair = trim_ows(segment);
    match pair.iter().position(|b| *b == b'=') {
        Some(eq) => trim_ows(&pair[..eq]),
        None => pair,
    }
}

fn is_ours(segment: &[u8]) -> bool {
    let name = name_of(segment);
    name == COOKIE_NAME.as_bytes() || name == HOST_COOKIE_NAME.as_bytes()
}

/// The value of one of our cookies in `segment`, when it is one a token could be.
fn our_token<'a>(segment: &'a [u8], name: &str) -> Option<&'a str> {
    let pair = trim_ows(segment);
    let eq = pair.iter().position(|b| *b == b'=')?;
    let value = trim_ows(&pair[eq + 1..]);
    (trim_ows(&pair[..eq]) == name.as_bytes()
        && !value.is_empty()
        && value.iter().all(u8::is_ascii_graphic))
    .then(|| std::str::from_utf8(value).expect("visible ASCII"))
}

fn check_strip(header: &[u8]) {
    let mut kept: Vec<&[u8]> = header
        .split(|b| *b == b';')
        .filter(|s| !is_ours(s))
        .collect();
    let removed_any = kept.len() != header.split(|b| *b == b';').count();
    if removed_any {
        // Blank segments before the first kept pair go with the removed ones: they hold no
        // cookie, and the kept text then starts with a pair instead of a separator.
        let blank = kept.iter().take_while(|s| trim_ows(s).is_empty()).count();
        kept.drain(..blank.min(kept.len().saturating_sub(1)));
    }
    let stripped = strip_ours(header);
    let Some(out) = stripped.as_deref() else {
        // Dropped: nothing but blanks was left.
        assert!(kept.iter().all(|s| trim_ows(s).is_empty()), "{header:?}");
        return;
    };
    assert!(!trim_ows(out).is_empty(), "{header:?} left blank: {out:?}");
    assert_eq!(matches!(stripped, Some(Cow::Borrowed(_))), !removed_any);
    if !removed_any {
        assert_eq!(out, header);
    }
    let out_segments: Vec<&[u8]> = out.split(|b| *b == b';').collect();
    assert!(
        !out_segments.iter().any(|s| is_ours(s)),
        "{header:?} -> {out:?}"
    );
    assert_eq!(token_from_cookies([out]), None, "{header:?} -> {out:?}");
    assert_eq!(out_segments.len(), kept.len(), "{header:?} -> {out:?}");
    for (i, (got, want)) in out_segments.iter().zip(&kept).enumerate() {
        if i == 0 && removed_any {
            assert_eq!(trim_ows(got), trim_ows(want));
            assert!(want.ends_with(got), "{header:?} -> {out:?}");
        } else {
            assert_eq!(got, want, "{header:?} -> {out:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // NUL-separated (no header value can hold one): first a control part, then the `Cookie`
    // header values. Control: a flags byte (bit 0: TLS listener), eight bytes of Max-Age (little
    // endian, missing bytes zero), then the token's bytes, mapped onto the token alphabet.
    let mut parts = data.split(|b| *b == 0);
    let control = parts.next().unwrap_or_default();
    let headers: Vec<&[u8]> = parts.collect();
    let tls = control.first().is_some_and(|f| f & 1 != 0);
    let mut max_age = [0u8; 8];
    let age_bytes = control.get(1..).unwrap_or_default();
    let age_len = age_bytes.len().min(8);
    max_age[..age_len].copy_from_slice(&age_bytes[..age_len]);
    let max_age = u64::from_le_bytes(max_age);
    let token_bytes = control.get(9..).unwrap_or_default();

    for header in &headers {
        check_strip(header);
    }

    let segments = || headers.iter().flat_map(|h| h.split(|b| *b == b';'));
    let want = segments()
        .find_map(|s| our_token(s, HOST_COOKIE_NAME))
        .or_else(|| segments().find_map(|s| our_token(s, COOKIE_NAME)));
    assert_eq!(token_from_cookies(headers.iter().copied()), want);
    // Every token of ours, in order, whatever its name (instance hosts try each).
    let all: Vec<&str> = segments()
        .filter_map(|s| our_token(s, COOKIE_NAME).or_else(|| our_token(s, HOST_COOKIE_NAME)))
        .collect();
    assert_eq!(
        tokens_from_cookies(headers.iter().copied()).collect::<Vec<_>>(),
        all
    );

    let stripped: Vec<Vec<u8>> = headers
        .iter()
        .filter_map(|h| strip_ours(h).map(Cow::into_owned))
        .collect();
    assert_eq!(token_from_cookies(stripped.iter().map(Vec::as_slice)), None);

    let token: String = token_bytes
        .iter()
        .map(|b| char::from(TOKEN_CHARS[usize::from(*b) % TOKEN_CHARS.len()]))
        .collect();
    let cookie = set_cookie(&token, max_age, tls);
    assert!(
        cookie.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
        "{cookie:?}"
    );
    let (pair, attributes) = cookie.split_once("; ").expect("attributes follow the pair");
    let name = if tls { HOST_COOKIE_NAME } else { COOKIE_NAME };
    assert_eq!(pair, format!("{name}={token}"));
    let mut attributes: Vec<&str> = attributes.split("; ").collect();
    attributes.sort_unstable();
    let max_age = format!("Max-Age={max_age}");
    let mut expected = vec!["HttpOnly", max_age.as_str(), "Path=/", "SameSite=Lax"];
    if tls {
        expected.push("Secure");
    }
    expected.sort_unstable();
    assert_eq!(attributes, expected, "{cookie:?}");
    // What a browser sends back is found, and stripped.
    if !token.is_empty() {
        let sent = format!("a=1; {pair}; b=2");
        assert_eq!(token_from_cookies([sent.as_bytes()]), Some(token.as_str()));
        assert_eq!(
            strip_ours(sent.as_bytes()).as_deref(),
            Some(&b"a=1; b=2"[..])
        );
    }
});
