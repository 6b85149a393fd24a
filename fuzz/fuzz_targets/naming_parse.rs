//! Namespace names, both ways.
//!
//! The input as text: `parse_namespace` never panics, accepts only DNS-1123 labels, and what it
//! reads is what `namespace_name` writes back. The same input as (team, challenge, name, time):
//! `namespace_name` always makes a label of at most 63 characters, and its Service name too,
//! which parse back to the same ids and time whenever those are in the valid domain.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use fctf_core::ids::{ChallengeId, TeamId};
use fctf_core::naming::{MAX_STARTED_UNIX, namespace_name, parse_namespace, service_name};
use libfuzzer_sys::fuzz_target;

/// DNS-1123 label starting with a letter, written independently of fctf-core.
fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(parsed) = parse_namespace(text)
    {
        assert!(is_label(text) && text.starts_with("team-"), "{text:?}");
        if parsed.started_unix <= MAX_STARTED_UNIX {
            let again = namespace_name(parsed.team, parsed.challenge, "x", parsed.started_unix);
            assert_eq!(parse_namespace(&again), Ok(parsed), "{text:?} -> {again:?}");
        }
    }

    let u = Unstructured::new(data);
    let Ok((team, challenge, time, name)) = <(i64, i64, u64, &str)>::arbitrary_take_rest(u) else {
        return;
    };
    let ns = namespace_name(TeamId(team), ChallengeId(challenge), name, time);
    assert!(is_label(&ns), "{name:?} -> {ns:?}");
    assert!(is_label(&service_name(&ns)), "{ns:?}");
    let valid_ids = (team >= 0 || TeamId(team) == TeamId::SHARED) && challenge >= 0;
    match parse_namespace(&ns) {
        Ok(parsed) => {
            assert!(valid_ids, "{ns:?} parsed though its ids are negative");
            assert_eq!(parsed.team, TeamId(team));
            assert_eq!(parsed.challenge, ChallengeId(challenge));
            assert_eq!(parsed.started_unix, time.min(MAX_STARTED_UNIX));
        }
        Err(e) => assert!(!valid_ids, "{ns:?}: {e}"),
    }
});
