//! Micro-benchmarks of the gateway's per-request token check and of instance naming.
//!
//! Run: `cargo bench -p fctf-benches --bench token`. The goal is `token/verify` ≤ 1 µs.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::naming::{namespace_name, parse_namespace};
use fctf_core::token::{Claims, Keyring, MAX_TOKEN_LEN, TokenError, TokenKey, Verifier, mint};

const NOW: u64 = 1_700_000_000;

/// A realistic token: a production-sized key id, a namespace route, a one-hour lifetime.
fn claims() -> Claims {
    Claims {
        kid: "2024-11-a".to_owned(),
        team: TeamId(1_234),
        challenge: ChallengeId(56),
        instance: InstanceId::new(),
        route: namespace_name(TeamId(1_234), ChallengeId(56), "Bảo mật Web", NOW),
        iat: NOW,
        exp: NOW + 3_600,
    }
}

fn token(c: &mut Criterion) {
    let key = TokenKey::new("2024-11-a", b"0123456789abcdef0123456789abcdef".to_vec())
        .expect("valid key");
    let claims = claims();
    let token = mint(&key, &claims).expect("mint");
    let verifier = Verifier::new(
        Keyring::new(vec![key.clone()]).expect("keyring"),
        Duration::from_secs(30),
    );
    assert!(verifier.verify(&token, NOW).is_ok());

    // Same length and structure, last tag character changed: full parse + MAC, then refusal.
    let mut forged = token.clone();
    let last = forged.pop().expect("non-empty token");
    forged.push(if last == 'A' { 'E' } else { 'A' });
    assert_eq!(verifier.verify(&forged, NOW), Err(TokenError::BadSignature));

    let too_long = "A".repeat(MAX_TOKEN_LEN * 10);
    assert_eq!(verifier.verify(&too_long, NOW), Err(TokenError::TooLong));

    let mut group = c.benchmark_group("token");
    group.bench_function("mint", |b| {
        b.iter(|| mint(black_box(&key), black_box(&claims)))
    });
    group.bench_function("verify", |b| {
        b.iter(|| verifier.verify(black_box(&token), black_box(NOW)))
    });
    group.bench_function("verify_bad_signature", |b| {
        b.iter(|| verifier.verify(black_box(&forged), black_box(NOW)))
    });
    group.bench_function("verify_too_long", |b| {
        b.iter(|| verifier.verify(black_box(&too_long), black_box(NOW)))
    });
    group.finish();
}

fn naming(c: &mut Criterion) {
    let name = namespace_name(TeamId(1_234), ChallengeId(56), "Bảo mật Web", NOW);
    let mut group = c.benchmark_group("naming");
    group.bench_function("namespace_name", |b| {
        b.iter(|| {
            namespace_name(
                black_box(TeamId(1_234)),
                black_box(ChallengeId(56)),
                black_box("Bảo mật Web: Đường đến Hà Nội"),
                black_box(NOW),
            )
        })
    });
    group.bench_function("parse_namespace", |b| {
        b.iter(|| parse_namespace(black_box(&name)))
    });
    group.finish();
}

criterion_group!(benches, token, naming);
criterion_main!(benches);
