//! Replay protection of service signatures against real state stores: the same scenarios on
//! [`MemoryStore`] and on [`RedisStore`] (the real Redis, a fresh key prefix per test), then the
//! fail-closed behaviour when Redis is down (TEST-PLAN T50).
//!
//! The pure checks (tampering, window, syntax) are unit tests in `core/src/signing.rs`.

use std::sync::Arc;
use std::time::Duration;

use fctf_core::clock::unix_now_secs;
use fctf_core::signing::{
    DEFAULT_WINDOW, KeyRing, SignatureError, SignedHeaders, SigningKey, authenticate, check_replay,
    new_nonce, nonce_ttl, sign, verify,
};
use fctf_core::store::{RedisStore, StateStore, StoreError};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::redis_fixture::{RedisBackend, on_both_stores};

type Store = Arc<dyn StateStore>;

const METHOD: &str = "POST";
const PATH: &str = "/api/v1/instances/start?source=contestant";
const BODY: &[u8] = br#"{"team":3,"challenge":7}"#;

fn key() -> SigningKey {
    SigningKey::new("cs1", b"integration-test secret, 32+ bytes long").unwrap()
}

fn ring() -> KeyRing {
    KeyRing::from(key())
}

/// A genuine request signed now with a fresh nonce.
fn signed_now() -> SignedHeaders {
    sign(&key(), METHOD, PATH, BODY, unix_now_secs(), &new_nonce()).unwrap()
}

/// What the Deployment Center does with an incoming request.
async fn admit(
    store: &dyn StateStore,
    body: &[u8],
    headers: &SignedHeaders,
) -> Result<(), SignatureError> {
    authenticate(
        &ring(),
        store,
        METHOD,
        PATH,
        body,
        headers,
        unix_now_secs(),
        DEFAULT_WINDOW,
    )
    .await
    .map(|_| ())
}

// Each scenario runs as `signing::memory::<case>` and `signing::redis::<case>`.
on_both_stores!(
    "signing":
    a_replayed_request_is_refused,
    a_forged_request_does_not_use_up_the_nonce,
    concurrent_replays_admit_exactly_one,
);

async fn a_replayed_request_is_refused(store: Store) {
    let headers = signed_now();
    admit(&*store, BODY, &headers).await.unwrap();
    for _ in 0..3 {
        let replay = admit(&*store, BODY, &headers).await;
        assert!(
            matches!(replay, Err(SignatureError::Replayed)),
            "{replay:?}"
        );
    }
    // The same call signed again (a new nonce) is a new request.
    admit(&*store, BODY, &signed_now()).await.unwrap();
}

async fn a_forged_request_does_not_use_up_the_nonce(store: Store) {
    // An attacker who saw the headers in flight cannot burn the genuine request's nonce.
    let headers = signed_now();
    let forged = admit(&*store, br#"{"team":4,"challenge":7}"#, &headers).await;
    assert!(
        matches!(forged, Err(SignatureError::BadSignature)),
        "{forged:?}"
    );
    admit(&*store, BODY, &headers).await.unwrap();
    assert!(matches!(
        admit(&*store, BODY, &headers).await,
        Err(SignatureError::Replayed)
    ));
}

async fn concurrent_replays_admit_exactly_one(store: Store) {
    let headers = Arc::new(signed_now());
    let mut tasks = JoinSet::new();
    for _ in 0..64 {
        let (store, headers) = (store.clone(), headers.clone());
        tasks.spawn(async move { admit(&*store, BODY, &headers).await });
    }
    let (mut admitted, mut replayed) = (0, 0);
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            Ok(()) => admitted += 1,
            Err(SignatureError::Replayed) => replayed += 1,
            Err(other) => panic!("unexpected refusal: {other:?}"),
        }
    }
    assert_eq!((admitted, replayed), (1, 63));
}

/// The nonce is kept exactly as long as a replay could still pass the window, and no longer:
/// one key per accepted request, expiring within [`nonce_ttl`].
#[tokio::test]
async fn redis_remembers_each_nonce_for_the_whole_window_and_then_forgets_it() {
    let backend = RedisBackend::start("signing", "nonce-ttl").await;
    let headers = signed_now();
    admit(&*backend.store(), BODY, &headers).await.unwrap();

    let written = backend.keys_with_ttl().await;
    assert_eq!(written.len(), 1, "{written:?}");
    let (key, pttl) = &written[0];
    assert!(key.contains(&headers.nonce), "{key}");
    let ttl_ms = i64::try_from(nonce_ttl(DEFAULT_WINDOW).as_millis()).unwrap();
    // Set moments ago: at most the full TTL, and not a second less than it.
    assert!(
        (ttl_ms - 1000..=ttl_ms).contains(pttl),
        "PTTL {pttl} ms, expected about {ttl_ms} ms"
    );
    backend.check_expiry_and_clean().await;
}

/// A window set in the configuration reaches the store as its TTL.
#[tokio::test]
async fn redis_nonce_ttl_follows_the_configured_window() {
    let backend = RedisBackend::start("signing", "nonce-ttl-window").await;
    let window = Duration::from_secs(5);
    let now = unix_now_secs();
    let headers = sign(&key(), METHOD, PATH, BODY, now, &new_nonce()).unwrap();
    let verified = verify(&ring(), METHOD, PATH, BODY, &headers, now, window).unwrap();
    check_replay(&*backend.store(), &verified, window)
        .await
        .unwrap();

    let written = backend.keys_with_ttl().await;
    assert_eq!(written.len(), 1, "{written:?}");
    assert!((10_000..=11_000).contains(&written[0].1), "{written:?}");
    backend.check_expiry_and_clean().await;
}

mod redis_down {
    use super::*;

    /// Bound on each store call in these tests.
    const TIMEOUT: Duration = Duration::from_millis(500);
    /// Nothing listens on port 1.
    const DEAD: &str = "redis://127.0.0.1:1";

    /// A service that must connect first cannot start, so it admits nothing.
    #[tokio::test]
    async fn connecting_to_a_dead_redis_fails() {
        let result = RedisStore::connect(DEAD, "fctf-test:signing-dead:", TIMEOUT).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
    }

    /// A service already running when Redis goes away refuses every signed request (fail
    /// closed), promptly, and keeps refusing: never admits one because the nonce check failed.
    #[tokio::test]
    async fn a_genuine_request_is_refused_while_the_store_is_down() {
        let store = RedisStore::connect_lazy(DEAD, "fctf-test:signing-dead:", TIMEOUT).unwrap();
        for _ in 0..3 {
            let headers = signed_now();
            let started = Instant::now();
            let outcome = admit(&store, BODY, &headers).await;
            assert!(
                matches!(
                    outcome,
                    Err(SignatureError::StoreUnavailable(StoreError::Unavailable(_)))
                ),
                "{outcome:?}"
            );
            let refused = outcome.unwrap_err();
            assert_eq!(refused.kind(), "store_unavailable");
            assert!(started.elapsed() < TIMEOUT * 3, "{:?}", started.elapsed());
        }
    }

    /// The store is consulted only after the signature is good: a bad request is refused for
    /// what it is even while Redis is down.
    #[tokio::test]
    async fn a_forged_request_is_refused_as_forged_while_the_store_is_down() {
        let store = RedisStore::connect_lazy(DEAD, "fctf-test:signing-dead:", TIMEOUT).unwrap();
        let outcome = admit(&store, b"{}", &signed_now()).await;
        assert!(
            matches!(outcome, Err(SignatureError::BadSignature)),
            "{outcome:?}"
        );
    }
}
