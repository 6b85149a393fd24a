//! The token exchange's redirect: `/<path>?fctftoken=<token>&...` is answered with a 302 to the
//! same path and query without the token, so the token leaves the address bar, the history and
//! any `Referer`.
//!
//! The `Location` is built from the request target's path only (never its host or scheme): it is
//! always a relative path starting with exactly one `/` (so `//evil` or `/\evil` cannot become a
//! protocol-relative redirect), with no byte outside visible ASCII (so no CR/LF can split the
//! header), and every other query parameter kept byte for byte (TEST-PLAN T22).

/// The query parameter that carries a token on a player's first visit.
pub const TOKEN_PARAM: &str = "fctftoken";

/// A request target that carried a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenVisit<'a> {
    /// The first `fctftoken` value, as sent (tokens need no percent-encoding).
    pub token: &'a str,
    /// Where to redirect: the target without any `fctftoken` parameter.
    pub location: String,
}

/// The token and redirect of `target` (the raw request target), or `None` when it carries no
/// `fctftoken` parameter.
///
/// Every `fctftoken` parameter is removed; the first one's value is the token. A value that is
/// not UTF-8 becomes an empty token (refused by the verifier as malformed).
pub fn token_visit(target: &[u8]) -> Option<TokenVisit<'_>> {
    let target = origin_form(target);
    let (path, query) = match target.iter().position(|b| *b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => return None,
    };
    let mut token = None;
    let mut kept: Vec<&[u8]> = Vec::new();
    for param in query.split(|b| *b == b'&') {
        let (name, value) = match param.iter().position(|b| *b == b'=') {
            Some(eq) => (&param[..eq], &param[eq + 1..]),
            None => (param, &b""[..]),
        };
        if name == TOKEN_PARAM.as_bytes() {
            token.get_or_insert(value);
        } else {
            kept.push(param);
        }
    }
    let token = std::str::from_utf8(token?).unwrap_or("");

    let mut location = String::with_capacity(target.len());
    location.push('/');
    // Every leading slash or backslash collapses into the one above.
    let start = path
        .iter()
        .position(|b| *b != b'/' && *b != b'\\')
        .unwrap_or(path.len());
    push_visible(&mut location, &path[start..]);
    if !kept.is_empty() {
        location.push('?');
        for (i, param) in kept.iter().enumerate() {
            if i > 0 {
                location.push('&');
            }
            push_visible(&mut location, param);
        }
    }
    Some(TokenVisit { token, location })
}

/// The path and query of a request target: an absolute-form target (`http://host/p?q`) loses
/// its scheme and authority, and anything else not starting with `/` counts as `/`.
fn origin_form(target: &[u8]) -> &[u8] {
    if target.first() == Some(&b'/') {
        return target;
    }
    for scheme in [&b"http://"[..], b"https://"] {
        if target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &target[scheme.len()..];
            // The authority ends at the first `/` or `?`.
            return match rest.iter().position(|b| *b == b'/' || *b == b'?') {
                Some(i) => &rest[i..],
                None => b"",
            };
        }
    }
    b""
}

/// Appends `bytes`, percent-encoding anything outside visible ASCII (CR, LF, space, controls,
/// non-ASCII): such bytes cannot reach a header value, whatever the parser let through.
fn push_visible(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn visit(target: &str) -> Option<(String, String)> {
        token_visit(target.as_bytes()).map(|v| (v.token.to_owned(), v.location))
    }

    #[test]
    fn removes_the_token_and_keeps_the_rest_byte_for_byte() {
        assert_eq!(visit("/a/b?fctftoken=T"), Some(("T".into(), "/a/b".into())));
        assert_eq!(
            visit("/x?a=1&fctftoken=T&b=%20&c&&d=e=f"),
            Some(("T".into(), "/x?a=1&b=%20&c&&d=e=f".into()))
        );
        assert_eq!(
            visit("/?fctftoken=A&fctftoken=B&next=http://evil"),
            Some(("A".into(), "/?next=http://evil".into()))
        );
        assert_eq!(visit("/?fctftoken"), Some(("".into(), "/".into())));
        assert_eq!(visit("/a?b=1"), None);
        assert_eq!(visit("/a"), None);
        assert_eq!(visit("/a?xfctftoken=1&fctftokenx=2"), None);
    }

    #[test]
    fn location_is_always_one_slash_relative_without_controls() {
        assert_eq!(visit("//evil?fctftoken=T").unwrap().1, "/evil");
        assert_eq!(visit("/\\evil?fctftoken=T").unwrap().1, "/evil");
        assert_eq!(visit("/%2f%2fevil?fctftoken=T").unwrap().1, "/%2f%2fevil");
        assert_eq!(visit("/%5cevil?fctftoken=T").unwrap().1, "/%5cevil");
        assert_eq!(
            visit("http://evil.example//x?fctftoken=T&a=1").unwrap().1,
            "/x?a=1"
        );
        assert_eq!(visit("HTTPS://evil.example?fctftoken=T").unwrap().1, "/");
        assert_eq!(visit("*?fctftoken=T"), None);
        let raw = token_visit(b"/a\r\nSet-Cookie: x\x00?fctftoken=T&b=\xff").unwrap();
        assert_eq!(raw.location, "/a%0D%0ASet-Cookie:%20x%00?b=%FF");
    }

    proptest! {
        #[test]
        fn any_target_gives_a_safe_location(
            target in prop::collection::vec(any::<u8>().prop_filter("no query", |b| *b != b'?'), 0..64),
        ) {
            let mut with_token = b"/".to_vec();
            with_token.extend_from_slice(&target);
            with_token.extend_from_slice(b"?fctftoken=T");
            let v = token_visit(&with_token).expect("a token parameter is present");
            let loc = v.location.as_bytes();
            prop_assert_eq!(loc[0], b'/');
            prop_assert!(loc.len() == 1 || (loc[1] != b'/' && loc[1] != b'\\'));
            prop_assert!(loc.iter().all(u8::is_ascii_graphic));
            prop_assert!(!v.location.contains('?'));
        }
    }
}
