//! The admin port's metrics: token failures by reason (HTTP and TCP), requests by status,
//! upstream latency, HTTP limit refusals by kind, liveness cache lookups.

use std::sync::Arc;

use fctf_core::ids::InstanceId;
use fctf_core::store::{RateLimit, StateStore};
use fctf_core::token::{TokenKey, mint};
use fctf_gateway::http::HttpLimits;
use tokio::io::AsyncWriteExt;

use crate::support::*;

fn failures(reason: &str) -> String {
    format!("fctf_gateway_token_failures_total{{reason=\"{reason}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_failures_are_counted_by_reason() {
    let backend = Backend::start().await;
    let store: Arc<dyn StateStore> = redis_store().await;
    let inst = run_instance(&*store, 71, 1, &backend.addr.to_string()).await;
    let limits = HttpLimits {
        token_ip: RateLimit {
            per_second: 0.01,
            burst: 2,
        },
        ..generous_limits()
    };
    let gw = start_gateway(store.clone(), limits);
    let (addr, admin) = (
        gw.http_addr().expect("bound"),
        gw.admin_addr().expect("bound"),
    );

    let token = inst.token();
    // A flipped tag bit that stays canonical base64 ('A' and 'Q' differ only in a kept bit).
    let mut forged = token.clone();
    let last = forged.pop().expect("non-empty");
    forged.push(if last == 'A' { 'Q' } else { 'A' });
    let unknown_kid = {
        let mut claims = inst.claims(600);
        claims.kid = "k9".into();
        let key = TokenKey::new("k9", b"gateway-test-secret-of-32-bytes!".to_vec()).expect("key");
        mint(&key, &claims).expect("mint")
    };
    let expired = {
        let mut claims = inst.claims(0);
        claims.iat -= 100;
        claims.exp -= 100;
        mint(&key(), &claims).expect("mint")
    };
    let other_instance = {
        let mut claims = inst.claims(600);
        claims.instance = InstanceId::new();
        mint(&key(), &claims).expect("mint")
    };
    let other_key = mint(&foreign_key(), &inst.claims(600)).expect("mint");
    let cases = [
        (forged.as_str(), "bad_signature", 401),
        (other_key.as_str(), "bad_signature", 401),
        (unknown_kid.as_str(), "unknown_key", 401),
        (expired.as_str(), "expired", 401),
        ("not-a-token", "malformed", 401),
        (other_instance.as_str(), "not_live", 403),
    ];
    for (token, _, status) in cases {
        let cookie = format!("FCTF_Auth_Token={token}");
        assert_eq!(
            get(addr, "/", Some(&cookie)).await.status,
            status,
            "{token}"
        );
    }
    assert_eq!(get(addr, "/", None).await.status, 401);
    for (reason, want) in [
        ("bad_signature", 2),
        ("unknown_key", 1),
        ("expired", 1),
        ("malformed", 1),
        ("not_live", 1),
        ("missing_token", 1),
        ("too_long", 0),
        ("wrong_instance", 0),
    ] {
        assert_eq!(metric(admin, &failures(reason)).await, want, "{reason}");
    }

    // The TCP gateway counts into the same reasons.
    let mut conn = tcp_connect(gw.tcp_addr().expect("bound")).await;
    conn.write_all(format!("{forged}\n").as_bytes())
        .await
        .expect("write");
    assert_eq!(read_line(&mut conn).await, "access denied: invalid token\n");
    assert_eq!(metric(admin, &failures("bad_signature")).await, 3);

    // Proxied requests: by status, upstream latency, liveness lookups; then the token+IP limit.
    let cookie = format!("FCTF_Auth_Token={token}");
    for _ in 0..2 {
        assert_eq!(get(addr, "/", Some(&cookie)).await.status, 200);
    }
    assert_eq!(get(addr, "/", Some(&cookie)).await.status, 429);
    assert_eq!(
        metric(admin, "fctf_gateway_http_requests_total{status=\"200\"}").await,
        2
    );
    assert_eq!(
        metric(admin, "fctf_gateway_http_requests_total{status=\"401\"}").await,
        6
    );
    assert_eq!(
        metric(admin, "fctf_gateway_http_requests_total{status=\"429\"}").await,
        1
    );
    assert_eq!(
        metric(
            admin,
            "fctf_gateway_http_limit_refusals_total{kind=\"token_ip\"}"
        )
        .await,
        1
    );
    assert_eq!(
        metric(
            admin,
            "fctf_gateway_upstream_latency_seconds_count{proto=\"http\"}"
        )
        .await,
        2
    );
    assert_eq!(
        metric(
            admin,
            "fctf_gateway_upstream_latency_seconds_bucket{proto=\"http\",le=\"+Inf\"}"
        )
        .await,
        2
    );
    // No route cache in these tests: every liveness check asked the store.
    assert_eq!(
        metric(admin, "fctf_gateway_liveness_cache_misses_total").await,
        4
    );
    gw.stop();
    release(&*store, &inst).await;
}
