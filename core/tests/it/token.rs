//! Challenge tokens: the T17 token matrix, key rotation, and properties of mint and verify.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::token::{Claims, Keyring, MAX_TOKEN_LEN, TokenError, TokenKey, Verifier, mint};
use hmac::{Hmac, KeyInit, Mac};
use proptest::prelude::*;
use sha2::Sha256;

const SECRET: [u8; 32] = *b"test-secret-0123456789-abcdefghi";
const OTHER_SECRET: [u8; 32] = *b"another-secret-9876543210-zyxwvu";
const SKEW: Duration = Duration::from_secs(30);
const IAT: u64 = 1_700_000_000;
const EXP: u64 = IAT + 3600;

fn key(kid: &str, secret: &[u8]) -> TokenKey {
    TokenKey::new(kid, secret.to_vec()).unwrap()
}

fn claims() -> Claims {
    Claims {
        kid: "k1".to_owned(),
        team: TeamId(42),
        challenge: ChallengeId(7),
        instance: "0123456789abcdef0123456789abcdef".parse().unwrap(),
        route: "team-42-7-web-1700000000".to_owned(),
        iat: IAT,
        exp: EXP,
    }
}

fn verifier(keys: Vec<TokenKey>) -> Verifier {
    Verifier::new(Keyring::new(keys).unwrap(), SKEW)
}

/// The verifier of most tests: knows `k1` with `SECRET`.
fn k1_verifier() -> Verifier {
    verifier(vec![key("k1", &SECRET)])
}

fn valid_token() -> String {
    mint(&key("k1", &SECRET), &claims()).unwrap()
}

/// A token over any payload text, signed like `mint` signs: for payloads `mint` refuses to make.
fn sign_raw(secret: &[u8], payload_json: &str) -> String {
    let payload_b64 = URL_SAFE_NO_PAD.encode(payload_json);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(payload_b64.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!("{payload_b64}.{}", URL_SAFE_NO_PAD.encode(tag))
}

fn split(token: &str) -> (&str, &str) {
    token.split_once('.').unwrap()
}

/// Asserts a forgery-class refusal: the given kind, and the same player text as every other
/// forgery (T17: all forgery failures give the same response).
#[track_caller]
fn assert_forgery(result: Result<Claims, TokenError>, expected: TokenError) {
    assert_eq!(result, Err(expected));
    assert_eq!(expected.reason(), TokenError::BadSignature.reason());
}

#[test]
fn a_valid_token_verifies_to_its_claims() {
    assert_eq!(k1_verifier().verify(&valid_token(), IAT + 10), Ok(claims()));
}

#[test]
fn any_payload_bit_flip_is_refused() {
    let token = valid_token();
    let (payload_b64, tag_b64) = split(&token);
    let payload = URL_SAFE_NO_PAD.decode(payload_b64).unwrap();
    let verifier = k1_verifier();
    for bit in 0..payload.len() * 8 {
        let mut flipped = payload.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let forged = format!("{}.{tag_b64}", URL_SAFE_NO_PAD.encode(&flipped));
        let result = verifier.verify(&forged, IAT);
        assert!(
            matches!(
                result,
                Err(TokenError::Malformed | TokenError::UnknownKey | TokenError::BadSignature)
            ),
            "bit {bit}: {result:?}"
        );
    }
    // A flip that still parses (team 42 -> 43) is caught by the MAC.
    let text = String::from_utf8(payload).unwrap();
    let forged_text = text.replacen("\"team\":42", "\"team\":43", 1);
    assert_ne!(text, forged_text);
    let forged = format!("{}.{tag_b64}", URL_SAFE_NO_PAD.encode(forged_text));
    assert_forgery(verifier.verify(&forged, IAT), TokenError::BadSignature);
}

#[test]
fn any_tag_bit_flip_is_refused() {
    let token = valid_token();
    let (payload_b64, tag_b64) = split(&token);
    let tag = URL_SAFE_NO_PAD.decode(tag_b64).unwrap();
    assert_eq!(tag.len(), 32);
    let verifier = k1_verifier();
    for bit in 0..tag.len() * 8 {
        let mut flipped = tag.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let forged = format!("{payload_b64}.{}", URL_SAFE_NO_PAD.encode(&flipped));
        assert_forgery(verifier.verify(&forged, IAT), TokenError::BadSignature);
    }
}

#[test]
fn truncated_tags_are_refused() {
    let token = valid_token();
    let (payload_b64, tag_b64) = split(&token);
    let tag = URL_SAFE_NO_PAD.decode(tag_b64).unwrap();
    let verifier = k1_verifier();
    for len in 0..32 {
        let forged = format!("{payload_b64}.{}", URL_SAFE_NO_PAD.encode(&tag[..len]));
        assert_forgery(verifier.verify(&forged, IAT), TokenError::Malformed);
    }
    // A longer tag (the right 32 bytes plus one) is no better.
    let mut longer = tag.clone();
    longer.push(0);
    let forged = format!("{payload_b64}.{}", URL_SAFE_NO_PAD.encode(&longer));
    assert_forgery(verifier.verify(&forged, IAT), TokenError::Malformed);
}

#[test]
fn a_token_signed_with_another_secret_is_refused() {
    let forged = mint(&key("k1", &OTHER_SECRET), &claims()).unwrap();
    assert_forgery(k1_verifier().verify(&forged, IAT), TokenError::BadSignature);
}

#[test]
fn a_token_of_an_unknown_key_id_is_refused() {
    let token = mint(
        &key("k2", &SECRET),
        &Claims {
            kid: "k2".to_owned(),
            ..claims()
        },
    )
    .unwrap();
    assert_forgery(k1_verifier().verify(&token, IAT), TokenError::UnknownKey);
}

#[test]
fn key_ids_shaped_like_paths_or_sql_are_refused_even_when_signed() {
    let verifier = k1_verifier();
    for kid in [
        "../../etc/passwd",
        "/k1",
        "k1/../k1",
        "k1' OR '1'='1",
        "k1; DROP TABLE keys; --",
        "k1\u{0}",
        "k1\n",
        "",
        "k\u{0131}",
        "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", // 33 characters
    ] {
        let payload = serde_json::to_string(&Claims {
            kid: kid.to_owned(),
            ..claims()
        })
        .unwrap();
        let token = sign_raw(&SECRET, &payload);
        assert_forgery(verifier.verify(&token, IAT), TokenError::Malformed);
    }
}

#[test]
fn expiry_allows_exactly_the_skew() {
    let verifier = k1_verifier();
    let token = valid_token();
    assert!(verifier.verify(&token, EXP).is_ok());
    assert!(verifier.verify(&token, EXP + 30).is_ok(), "within the skew");
    assert_eq!(
        verifier.verify(&token, EXP + 31),
        Err(TokenError::Expired),
        "just beyond the skew"
    );
    assert_ne!(
        TokenError::Expired.reason(),
        TokenError::BadSignature.reason()
    );
    // A forged token is a forgery first, even when it is also expired.
    let forged = mint(&key("k1", &OTHER_SECRET), &claims()).unwrap();
    assert_eq!(
        verifier.verify(&forged, EXP + 31),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn a_token_issued_in_the_future_is_not_yet_valid() {
    let verifier = k1_verifier();
    let token = valid_token();
    assert!(verifier.verify(&token, IAT - 30).is_ok(), "within the skew");
    assert_eq!(
        verifier.verify(&token, IAT - 31),
        Err(TokenError::NotYetValid)
    );
    let no_skew = Verifier::new(
        Keyring::new(vec![key("k1", &SECRET)]).unwrap(),
        Duration::ZERO,
    );
    assert_eq!(
        no_skew.verify(&token, IAT - 1),
        Err(TokenError::NotYetValid)
    );
    assert!(no_skew.verify(&token, IAT).is_ok());
}

#[test]
fn window_arithmetic_does_not_overflow() {
    let token = mint(
        &key("k1", &SECRET),
        &Claims {
            iat: u64::MAX,
            exp: u64::MAX,
            ..claims()
        },
    )
    .unwrap();
    let verifier = Verifier::new(
        Keyring::new(vec![key("k1", &SECRET)]).unwrap(),
        Duration::MAX,
    );
    assert!(verifier.verify(&token, 0).is_ok());
    assert!(verifier.verify(&token, u64::MAX).is_ok());
}

#[test]
fn oversized_tokens_are_refused_before_any_decoding() {
    let verifier = k1_verifier();
    let valid = valid_token();
    // A valid token followed by junk: TooLong, not Malformed or BadSignature, shows the length
    // is checked before the token is split, decoded or MACed.
    let padded = format!("{valid}{}", "A".repeat(10 * 1024));
    assert_eq!(verifier.verify(&padded, IAT), Err(TokenError::TooLong));
    assert_eq!(
        verifier.verify(&"a".repeat(10 * 1024), IAT),
        Err(TokenError::TooLong)
    );
    assert_eq!(
        verifier.verify(&"a".repeat(MAX_TOKEN_LEN + 1), IAT),
        Err(TokenError::TooLong)
    );
    // At exactly the limit the token is looked at (and refused for what it is).
    assert_eq!(
        verifier.verify(&"a".repeat(MAX_TOKEN_LEN), IAT),
        Err(TokenError::Malformed)
    );
    let payload_len = MAX_TOKEN_LEN - 44;
    let at_limit = format!("{}.{}", "a".repeat(payload_len), split(&valid).1);
    assert_eq!(at_limit.len(), MAX_TOKEN_LEN);
    assert_eq!(verifier.verify(&at_limit, IAT), Err(TokenError::Malformed));
    assert_ne!(TokenError::TooLong.kind(), TokenError::Malformed.kind());
}

/// Flips one trailing (padding) bit of the last character of a base64 segment whose length is
/// not a multiple of 4: the decoded bytes stay the same, so only a strict decoder notices.
fn with_trailing_bit_set(segment: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_ne!(segment.len() % 4, 0, "no trailing bits in a full quantum");
    let last = *segment.as_bytes().last().unwrap();
    let value = ALPHABET.iter().position(|&c| c == last).unwrap();
    let mut out = segment[..segment.len() - 1].to_owned();
    out.push(char::from(ALPHABET[value | 1]));
    // A canonical encoding has its trailing bits clear, so this always changes the text.
    assert_ne!(out, segment);
    out
}

/// A valid token whose payload length is not a multiple of 3 (so its encoding has trailing
/// bits) and whose text has a `-` or `_` (so it has a `+/` spelling).
fn token_with_trailing_bits_and_url_chars() -> String {
    (0..200)
        .map(|i| {
            let route = format!("team-42-7-{}-1700000000", "w".repeat(1 + i % 3));
            mint(
                &key("k1", &SECRET),
                &Claims {
                    route,
                    iat: IAT + i as u64 / 3,
                    ..claims()
                },
            )
            .unwrap()
        })
        .find(|t| {
            let (payload_b64, _) = split(t);
            payload_b64.len() % 4 != 0 && t.contains(['-', '_'])
        })
        .unwrap()
}

#[test]
fn non_canonical_base64_is_refused() {
    let verifier = k1_verifier();
    let token = token_with_trailing_bits_and_url_chars();
    assert!(verifier.verify(&token, IAT).is_ok());
    let (payload_b64, tag_b64) = split(&token);

    // Trailing bits: same bytes, different text.
    let trailing_payload = format!("{}.{tag_b64}", with_trailing_bit_set(payload_b64));
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(with_trailing_bit_set(payload_b64))
            .ok(),
        None,
        "the strict reference decoder refuses it too"
    );
    let trailing_tag = format!("{payload_b64}.{}", with_trailing_bit_set(tag_b64));

    // Padding on either segment.
    let pad = |s: &str| format!("{s}{}", "=".repeat((4 - s.len() % 4) % 4));
    let padded_payload = format!("{}.{tag_b64}", pad(payload_b64));
    let padded_tag = format!("{payload_b64}.{}", pad(tag_b64));

    // The standard alphabet.
    let standard = token.replace('-', "+").replace('_', "/");
    assert_ne!(standard, token);

    for (what, forged) in [
        ("trailing bits in payload", trailing_payload),
        ("trailing bits in tag", trailing_tag),
        ("padded payload", padded_payload),
        ("padded tag", padded_tag),
        ("+/ alphabet", standard),
        ("leading space", format!(" {token}")),
        ("trailing newline", format!("{token}\n")),
        ("trailing CRLF", format!("{token}\r\n")),
        ("space inside", format!("{} {}", &token[..10], &token[10..])),
        ("tab before tag", format!("{payload_b64}.\t{tag_b64}")),
    ] {
        assert_eq!(
            verifier.verify(&forged, IAT),
            Err(TokenError::Malformed),
            "{what}"
        );
    }
}

#[test]
fn tokens_must_have_exactly_two_segments() {
    let verifier = k1_verifier();
    let token = valid_token();
    let (payload_b64, tag_b64) = split(&token);
    for forged in [
        String::new(),
        ".".to_owned(),
        payload_b64.to_owned(),
        format!("{payload_b64}."),
        format!(".{tag_b64}"),
        format!("{token}."),
        format!("{payload_b64}.{tag_b64}.{tag_b64}"),
        format!("{payload_b64}..{tag_b64}"),
        format!("{tag_b64}.{payload_b64}"),
    ] {
        assert_forgery(verifier.verify(&forged, IAT), TokenError::Malformed);
    }
}

#[test]
fn signed_payloads_that_are_not_exactly_the_claims_are_refused() {
    let verifier = k1_verifier();
    let good = serde_json::to_string(&claims()).unwrap();
    assert!(verifier.verify(&sign_raw(&SECRET, &good), IAT).is_ok());
    let body = good
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_owned();
    for payload in [
        format!("{{{body},\"admin\":true}}"),
        format!("{{{body},\"team\":1}}"),
        format!("{{\"team\":1,{body}}}"),
        good.replace(",\"route\":\"team-42-7-web-1700000000\"", ""),
        good.replace("\"team\":42", "\"team\":\"42\""),
        good.replace("\"team\":42", "\"team\":42.0"),
        good.replace("\"iat\":1700000000", "\"iat\":-1"),
        good.replace(
            "0123456789abcdef0123456789abcdef",
            "0123456789ABCDEF0123456789ABCDEF",
        ),
        good.replace(
            "0123456789abcdef0123456789abcdef",
            "01234567-89ab-cdef-0123-456789abcdef",
        ),
        good.replace("team-42-7-web-1700000000", "team 42"),
        good.replace("team-42-7-web-1700000000", ""),
        good.replace("team-42-7-web-1700000000", &"r".repeat(261)),
        format!("{good} x"),
        format!("[{good}]"),
        "null".to_owned(),
        String::new(),
    ] {
        let token = sign_raw(&SECRET, &payload);
        assert_forgery(verifier.verify(&token, IAT), TokenError::Malformed);
    }
}

#[test]
fn key_rotation_overlaps_then_retires_the_old_key() {
    let old = key("2024a", &SECRET);
    let new = key("2024b", &OTHER_SECRET);
    let old_token = mint(
        &old,
        &Claims {
            kid: "2024a".to_owned(),
            ..claims()
        },
    )
    .unwrap();
    let new_token = mint(
        &new,
        &Claims {
            kid: "2024b".to_owned(),
            ..claims()
        },
    )
    .unwrap();

    let overlap = verifier(vec![old, new.clone()]);
    assert!(overlap.verify(&old_token, IAT).is_ok());
    assert!(overlap.verify(&new_token, IAT).is_ok());

    let after = verifier(vec![new]);
    assert_eq!(after.verify(&old_token, IAT), Err(TokenError::UnknownKey));
    assert!(after.verify(&new_token, IAT).is_ok());
}

fn arb_claims() -> impl Strategy<Value = Claims> {
    (
        "[A-Za-z0-9_-]{1,32}",
        any::<i64>(),
        any::<i64>(),
        any::<u128>(),
        r"[A-Za-z0-9._:\[\]-]{1,260}",
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(kid, team, challenge, instance, route, iat, ttl)| Claims {
            kid,
            team: TeamId(team),
            challenge: ChallengeId(challenge),
            instance: InstanceId(uuid::Uuid::from_u128(instance)),
            route,
            iat,
            exp: iat.saturating_add(ttl),
        })
}

proptest! {
    #[test]
    fn mint_then_verify_round_trips(claims in arb_claims(), at in any::<u64>()) {
        let key = key(&claims.kid, &SECRET);
        let token = mint(&key, &claims).unwrap();
        prop_assert!(token.len() <= MAX_TOKEN_LEN);
        // Any instant inside [iat, exp].
        let now = claims.iat + at % (claims.exp - claims.iat).saturating_add(1);
        let verifier = Verifier::new(Keyring::new(vec![key]).unwrap(), Duration::ZERO);
        prop_assert_eq!(verifier.verify(&token, now), Ok(claims));
    }

    #[test]
    fn any_single_byte_change_is_refused(
        claims in arb_claims(),
        at in any::<prop::sample::Index>(),
        byte in 0x20u8..0x7f,
        edit in 0..3u8,
    ) {
        let key = key(&claims.kid, &SECRET);
        let token = mint(&key, &claims).unwrap();
        let verifier = Verifier::new(Keyring::new(vec![key]).unwrap(), Duration::MAX);
        let mut bytes = token.clone().into_bytes();
        let i = at.index(bytes.len());
        match edit {
            0 => {
                prop_assume!(bytes[i] != byte);
                bytes[i] = byte;
            }
            1 => {
                bytes.remove(i);
            }
            _ => bytes.insert(i, byte),
        }
        let mutated = String::from_utf8(bytes).unwrap();
        prop_assert!(verifier.verify(&mutated, claims.iat).is_err(), "{} accepted", mutated);
        prop_assert!(verifier.verify(&token, claims.iat).is_ok());
    }
}
