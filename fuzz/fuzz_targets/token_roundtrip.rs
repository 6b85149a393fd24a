//! Structured claims: whatever `mint` signs, `verify` returns unchanged inside the validity
//! window, and changing any one byte of the token makes `verify` refuse it.

#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::token::{Claims, Keyring, MAX_TOKEN_LEN, TokenKey, Verifier, mint};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fctf-fuzz-secret-0123456789abcdef";
const KID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const ROUTE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-[]";

#[derive(Arbitrary, Debug)]
struct Input {
    /// Mapped onto the key-id alphabet and cut to 1..=32 characters.
    kid: Vec<u8>,
    team: i64,
    challenge: i64,
    instance: u128,
    /// Mapped onto the route alphabet and cut to 1..=260 characters.
    route: Vec<u8>,
    iat: u64,
    ttl: u64,
    /// Where in `[iat, exp]` to verify.
    at: u64,
    /// One byte to change: (position, new ASCII byte).
    change: Option<(u16, u8)>,
}

/// `bytes` spelled in `alphabet`, `1..=max` characters long.
fn spell(bytes: &[u8], alphabet: &[u8], max: usize) -> String {
    let text: String = bytes
        .iter()
        .take(max)
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect();
    if text.is_empty() {
        "x".to_owned()
    } else {
        text
    }
}

fuzz_target!(|input: Input| {
    let kid = spell(&input.kid, KID_CHARS, 32);
    let key = TokenKey::new(kid.clone(), SECRET).expect("kid spelled in the kid alphabet");
    let claims = Claims {
        kid,
        team: TeamId(input.team),
        challenge: ChallengeId(input.challenge),
        instance: format!("{:032x}", input.instance)
            .parse::<InstanceId>()
            .expect("32 lowercase hex digits"),
        route: spell(&input.route, ROUTE_CHARS, 260),
        iat: input.iat,
        exp: input.iat.saturating_add(input.ttl),
    };
    let token = mint(&key, &claims).expect("valid claims");
    assert!(token.len() <= MAX_TOKEN_LEN);

    let verifier = Verifier::new(Keyring::new(vec![key]).expect("one key"), Duration::ZERO);
    let span = (claims.exp - claims.iat).saturating_add(1);
    let now = claims.iat + input.at % span;
    assert_eq!(verifier.verify(&token, now).as_ref(), Ok(&claims));

    if let Some((position, byte)) = input.change {
        let mut bytes = token.into_bytes();
        let i = usize::from(position) % bytes.len();
        let byte = byte & 0x7f; // stay ASCII, so the result is still a &str
        if bytes[i] != byte {
            bytes[i] = byte;
            let changed = String::from_utf8(bytes).expect("ASCII");
            assert!(
                verifier.verify(&changed, now).is_err(),
                "accepted {changed:?}"
            );
        }
    }
});
