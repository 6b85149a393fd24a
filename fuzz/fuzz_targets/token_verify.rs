//! Any bytes as a token: `Verifier::verify` never panics, refuses by length exactly when the
//! input is over `MAX_TOKEN_LEN`, and accepts only what `mint` writes byte for byte for the
//! claims it returns (one spelling per token: no re-encoding gets past a cache keyed by text).

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use fctf_core::token::{Keyring, MAX_TOKEN_LEN, TokenError, TokenKey, Verifier, mint};
use libfuzzer_sys::fuzz_target;

/// The key the seed tokens in `corpus/token_verify` are signed with (see docs/fuzzing.md).
const KID: &str = "fuzz";
const SECRET: &[u8] = b"fctf-fuzz-secret-0123456789abcdef";
/// The seeds are valid from `NOW` to `NOW + 3600`.
const NOW: u64 = 1_700_000_000;
const SKEW: u64 = 30;

static KEY: LazyLock<TokenKey> =
    LazyLock::new(|| TokenKey::new(KID, SECRET).expect("valid fuzz key"));
static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    Verifier::new(
        Keyring::new(vec![KEY.clone()]).expect("one key"),
        Duration::from_secs(SKEW),
    )
});

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    // The window arithmetic at its edges as well as inside the seeds' window.
    for now in [0, NOW, NOW + 3600 + SKEW + 1, u64::MAX] {
        match VERIFIER.verify(&token, now) {
            Ok(claims) => {
                // Only the key holder can sign, so an accepted token is one `mint` wrote.
                assert_eq!(mint(&KEY, &claims).as_deref(), Ok(&*token));
                assert!(now <= claims.exp.saturating_add(SKEW));
                assert!(claims.iat <= now.saturating_add(SKEW));
            }
            Err(TokenError::TooLong) => assert!(token.len() > MAX_TOKEN_LEN),
            Err(_) => assert!(token.len() <= MAX_TOKEN_LEN),
        }
    }
});
