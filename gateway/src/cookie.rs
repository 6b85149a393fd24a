//! The gateway's own cookie: finding the token in `Cookie` headers, removing it before the
//! request goes upstream, and writing the `Set-Cookie` of the token exchange.
//!
//! The cookie is `FCTF_Auth_Token` on plain listeners and `__Host-FCTF_Auth_Token` on TLS ones
//! (the prefix makes browsers refuse it unless it is Secure, host-only and `Path=/`). Both names
//! are ours on every listener, so neither can ever leak to a challenge.

use std::borrow::Cow;
use std::sync::LazyLock;

/// Cookie name on plain-HTTP listeners.
pub const COOKIE_NAME: &str = "FCTF_Auth_Token";

/// Cookie name on TLS listeners.
pub const HOST_COOKIE_NAME: &str = "__Host-FCTF_Auth_Token";

/// True when `name` is one of the gateway's cookie names (exact: cookie names are
/// case-sensitive).
fn is_ours(name: &[u8]) -> bool {
    name == COOKIE_NAME.as_bytes() || name == HOST_COOKIE_NAME.as_bytes()
}

/// The `;`-separated segments of one `Cookie` header value, as sent. Found with `memchr` (a
/// token is a few hundred bytes, and this runs on every request).
fn segments(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(header);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b';', current) {
            Some(i) => {
                rest = Some(&current[i + 1..]);
                Some(&current[..i])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// The `name=value` pairs of one `Cookie` header value, each trimmed of surrounding spaces and
/// tabs (RFC 6265 §5.4 separates pairs with `"; "`, and user agents vary).
fn pairs(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    segments(header).filter_map(|pair| {
        let pair = trim_ows(pair);
        let eq = memchr::memchr(b'=', pair)?;
        Some((trim_ows(&pair[..eq]), trim_ows(&pair[eq + 1..])))
    })
}

/// True when every byte is visible ASCII. Without an early exit, so the loop vectorizes.
fn all_visible(value: &[u8]) -> bool {
    value
        .iter()
        .fold(true, |visible, b| visible & b.is_ascii_graphic())
}

/// True when `header` may hold one of our cookies: both names contain [`COOKIE_NAME`].
fn mentions_ours(header: &[u8]) -> bool {
    // Built once: building a searcher costs more than searching a header.
    static FINDER: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(COOKIE_NAME.as_bytes()));
    FINDER.find(header).is_some()
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

/// The token in the gateway's cookie, from every `Cookie` header of a request.
///
/// The `__Host-` cookie wins over the plain one (only a TLS origin can have set it); otherwise
/// the first one found. A value that is not visible ASCII is ignored: a token never is.
pub fn token_from_cookies<'a>(headers: impl IntoIterator<Item = &'a [u8]>) -> Option<&'a str> {
    let mut plain = None;
    for header in headers {
        if !mentions_ours(header) {
            continue;
        }
        for (name, value) in pairs(header) {
            if !is_ours(name) || value.is_empty() || !all_visible(value) {
                continue;
            }
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            if name == HOST_COOKIE_NAME.as_bytes() {
                return Some(value);
            }
            plain.get_or_insert(value);
        }
    }
    plain
}

/// Every token in the gateway's cookies, in the order sent (both names; values that are not
/// visible ASCII skipped). With instance hosts, the gateway takes the first one for the host's
/// instance, so a cookie another instance's page planted under a parent domain cannot shadow
/// the right one.
pub fn tokens_from_cookies<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
) -> impl Iterator<Item = &'a str> {
    headers
        .into_iter()
        .flat_map(pairs)
        .filter_map(|(name, value)| {
            if !is_ours(name) || value.is_empty() || !all_visible(value) {
                return None;
            }
            std::str::from_utf8(value).ok()
        })
}

/// One `Cookie` header value without the gateway's cookies, every other pair kept byte for byte
/// (with its original separator). `None` when nothing is left, so the header is dropped; borrowed
/// when there was nothing to remove.
pub fn strip_ours(header: &[u8]) -> Option<Cow<'_, [u8]>> {
    let is_ours_segment = |segment: &[u8]| {
        let pair = trim_ows(segment);
        let name = memchr::memchr(b'=', pair).map_or(pair, |eq| trim_ows(&pair[..eq]));
        is_ours(name)
    };
    if !mentions_ours(header) || !segments(header).any(is_ours_segment) {
        return if trim_ows(header).is_empty() {
            None
        } else {
            Some(Cow::Borrowed(header))
        };
    }
    let mut kept: Vec<u8> = Vec::with_capacity(header.len());
    for segment in segments(header).filter(|s| !is_ours_segment(s)) {
        if kept.is_empty() {
            // The first kept pair loses the space that separated it from a removed one.
            let start = segment
                .iter()
                .position(|b| *b != b' ' && *b != b'\t')
                .unwrap_or(segment.len());
            kept.extend_from_slice(&segment[start..]);
        } else {
            kept.push(b';');
            kept.extend_from_slice(segment);
        }
    }
    if trim_ows(&kept).is_empty() {
        None
    } else {
        Some(Cow::Owned(kept))
    }
}

/// The `Set-Cookie` value carrying `token` for `max_age_secs` (the token's time left).
///
/// HttpOnly (scripts of the challenge page cannot read it), SameSite=Lax (sent on top-level
/// navigation only), `Path=/`, no Domain (host-only). On TLS listeners the `__Host-` name and
/// Secure.
pub fn set_cookie(token: &str, max_age_secs: u64, tls: bool) -> String {
    let (name, secure) = if tls {
        (HOST_COOKIE_NAME, "; Secure")
    } else {
        (COOKIE_NAME, "")
    };
    format!("{name}={token}; Max-Age={max_age_secs}; Path=/; HttpOnly; SameSite=Lax{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_cookie_among_others_and_prefers_the_host_prefixed_one() {
        let headers: [&[u8]; 2] = [b"a=1; FCTF_Auth_Token=tok.en; b=2", b"c=3"];
        assert_eq!(token_from_cookies(headers), Some("tok.en"));
        let both: [&[u8]; 1] = [b"FCTF_Auth_Token=plain;__Host-FCTF_Auth_Token=tls"];
        assert_eq!(token_from_cookies(both), Some("tls"));
        let none: [&[u8]; 2] = [b"fctf_auth_token=x; other=FCTF_Auth_Token", b""];
        assert_eq!(token_from_cookies(none), None);
        let odd: [&[u8]; 1] = [b"FCTF_Auth_Token=; FCTF_Auth_Token=\x01x;FCTF_Auth_Token = t "];
        assert_eq!(token_from_cookies(odd), Some("t"));
    }

    #[test]
    fn lists_every_token_of_ours_in_order() {
        let headers: [&[u8]; 2] = [
            b"FCTF_Auth_Token=a; x=1; __Host-FCTF_Auth_Token=b",
            b"FCTF_Auth_Token=; FCTF_Auth_Token=\x01; FCTF_Auth_Token=c",
        ];
        assert_eq!(
            tokens_from_cookies(headers).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn strips_only_ours_and_keeps_the_rest_byte_for_byte() {
        let strip = |h: &'static [u8]| strip_ours(h).map(|c| c.into_owned());
        assert_eq!(
            strip(b"a=1; FCTF_Auth_Token=x; b=\"q r\""),
            Some(b"a=1; b=\"q r\"".to_vec())
        );
        assert_eq!(
            strip(b"FCTF_Auth_Token=x;  a=1;b=2"),
            Some(b"a=1;b=2".to_vec())
        );
        assert_eq!(strip(b"__Host-FCTF_Auth_Token=x; FCTF_Auth_Token=y"), None);
        assert_eq!(strip(b"a=1"), Some(b"a=1".to_vec()));
        assert!(matches!(strip_ours(b"a=1;b"), Some(Cow::Borrowed(_))));
        assert_eq!(strip(b"  "), None);
        // A look-alike name is not ours and stays.
        assert_eq!(
            strip(b"XFCTF_Auth_Token=1; FCTF_Auth_Token=2"),
            Some(b"XFCTF_Auth_Token=1".to_vec())
        );
    }

    #[test]
    fn set_cookie_has_the_attributes_of_each_listener_kind() {
        assert_eq!(
            set_cookie("t.k", 60, false),
            "FCTF_Auth_Token=t.k; Max-Age=60; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            set_cookie("t.k", 5, true),
            "__Host-FCTF_Auth_Token=t.k; Max-Age=5; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
    }
}
