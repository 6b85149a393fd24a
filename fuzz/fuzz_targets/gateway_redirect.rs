//! The token exchange's redirect, for any request target.
//!
//! A visit is found exactly when the target's query has a parameter named `fctftoken`; its token
//! is the first such value. The `Location` is a relative path starting with exactly one `/`
//! (never `//` or `/\`, which browsers read as another host), holds only visible ASCII (no CR,
//! LF or space to split a header or be stripped by a browser), has no `fctftoken` parameter, and
//! keeps every other parameter in order, byte for byte (bytes outside visible ASCII
//! percent-encoded). Checked against the URL rules written here independently.

#![no_main]

use fctf_gateway::redirect::{TOKEN_PARAM, token_visit};
use libfuzzer_sys::fuzz_target;

/// The path and query of `target` as the gateway sees it: an absolute-form target without its
/// scheme and authority; any other target not starting with `/` has none.
fn origin_form(target: &[u8]) -> &[u8] {
    if target.starts_with(b"/") {
        return target;
    }
    let lower = target.to_ascii_lowercase();
    for scheme in [&b"http://"[..], b"https://"] {
        if lower.starts_with(scheme) {
            let rest = &target[scheme.len()..];
            return rest
                .iter()
                .position(|b| *b == b'/' || *b == b'?')
                .map_or(&[][..], |i| &rest[i..]);
        }
    }
    &[]
}

fn name_of(param: &[u8]) -> &[u8] {
    param.split(|b| *b == b'=').next().unwrap_or(param)
}

fn visible(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, &b| {
        if (0x21..=0x7e).contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
        out
    })
}

fuzz_target!(|target: &[u8]| {
    let visit = token_visit(target);
    let origin = origin_form(target);
    let Some(q) = origin.iter().position(|b| *b == b'?') else {
        assert_eq!(visit, None, "{target:?}");
        return;
    };
    let (path, query) = (&origin[..q], &origin[q + 1..]);
    let params: Vec<&[u8]> = query.split(|b| *b == b'&').collect();
    let Some(first) = params.iter().find(|p| name_of(p) == TOKEN_PARAM.as_bytes()) else {
        assert_eq!(visit, None, "{target:?}");
        return;
    };
    let visit = visit.unwrap_or_else(|| panic!("{target:?}: token parameter not found"));

    let value = first.get(TOKEN_PARAM.len() + 1..).unwrap_or_default();
    assert_eq!(
        visit.token.as_bytes(),
        if std::str::from_utf8(value).is_ok() {
            value
        } else {
            b""
        },
        "{target:?}"
    );

    let location = visit.location.as_bytes();
    assert_eq!(location.first(), Some(&b'/'), "{target:?}");
    assert!(
        !matches!(location.get(1), Some(b'/' | b'\\')),
        "{target:?} -> {:?}",
        visit.location
    );
    assert!(
        location.iter().all(u8::is_ascii_graphic),
        "{:?}",
        visit.location
    );

    let (got_path, got_query) = match visit.location.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (visit.location.as_str(), None),
    };
    let trimmed = path
        .iter()
        .position(|b| *b != b'/' && *b != b'\\')
        .map_or(&[][..], |i| &path[i..]);
    assert_eq!(got_path, format!("/{}", visible(trimmed)), "{target:?}");

    let kept: Vec<String> = params
        .iter()
        .filter(|p| name_of(p) != TOKEN_PARAM.as_bytes())
        .map(|p| visible(p))
        .collect();
    match got_query {
        None => assert!(kept.is_empty(), "{target:?} lost {kept:?}"),
        Some(got) => {
            let got: Vec<&str> = got.split('&').collect();
            assert!(
                !got.iter()
                    .any(|p| name_of(p.as_bytes()) == TOKEN_PARAM.as_bytes())
            );
            assert_eq!(got, kept, "{target:?}");
        }
    }
});
