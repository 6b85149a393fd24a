//! The batched lease calls on both stores (the real Redis at 127.0.0.1:6379, which must be
//! there): each holder is renewed or released as its own call would, in one round trip.

use std::sync::Arc;
use std::time::Duration;

use super::{
    HeldLeases, LeaseOutcome, LeaseRequest, LeaseScope, MemoryStore, RedisStore, StateStore,
};

async fn both_stores() -> Vec<(&'static str, Arc<dyn StateStore>)> {
    let prefix = format!(
        "fctf-test:core-lease-many:{}:",
        uuid::Uuid::new_v4().simple()
    );
    let redis = RedisStore::connect("redis://127.0.0.1:6379", &prefix, Duration::from_secs(2))
        .await
        .expect("the tests need Redis on 127.0.0.1:6379");
    vec![
        ("memory", Arc::new(MemoryStore::new())),
        ("redis", Arc::new(redis)),
    ]
}

fn scope(key: &str, cap: u32) -> LeaseScope<'_> {
    LeaseScope { key, cap }
}

#[tokio::test]
async fn store_lease_acquire_many_takes_each_request_in_order_all_or_none() {
    for (name, store) in both_stores().await {
        let ttl = Duration::from_secs(5);
        let a = [scope("all", 3), scope("ip:a", 1)];
        let b = [scope("all", 3), scope("ip:b", 2)];
        let tok = [scope("tok", 1)];
        let requests = [
            LeaseRequest {
                holder: "h1",
                scopes: &a,
            },
            // Sees h1's lease: ip:a is full, so nothing is taken in "all" either.
            LeaseRequest {
                holder: "h2",
                scopes: &a,
            },
            LeaseRequest {
                holder: "h3",
                scopes: &b,
            },
            // A holder asking again renews its own place.
            LeaseRequest {
                holder: "h1",
                scopes: &a,
            },
            LeaseRequest {
                holder: "h4",
                scopes: &b,
            },
            // "all" is full now (h1, h3, h4).
            LeaseRequest {
                holder: "h5",
                scopes: &b,
            },
            LeaseRequest {
                holder: "h6",
                scopes: &tok,
            },
            LeaseRequest {
                holder: "h7",
                scopes: &tok,
            },
            LeaseRequest {
                holder: "h8",
                scopes: &[],
            },
        ];
        let outcomes = store
            .lease_acquire_many(&requests, ttl)
            .await
            .expect("acquire many");
        assert_eq!(
            outcomes,
            [
                LeaseOutcome::Acquired,
                LeaseOutcome::Full { scope: 1, held: 1 },
                LeaseOutcome::Acquired,
                LeaseOutcome::Acquired,
                LeaseOutcome::Acquired,
                LeaseOutcome::Full { scope: 0, held: 3 },
                LeaseOutcome::Acquired,
                LeaseOutcome::Full { scope: 0, held: 1 },
                LeaseOutcome::Acquired,
            ],
            "{name}"
        );
        assert_eq!(store.lease_count("all").await.expect("count"), 3, "{name}");
        assert_eq!(store.lease_count("ip:a").await.expect("count"), 1, "{name}");
        assert_eq!(store.lease_count("ip:b").await.expect("count"), 2, "{name}");
        assert_eq!(store.lease_count("tok").await.expect("count"), 1, "{name}");
        assert!(
            store
                .lease_acquire_many(&[], ttl)
                .await
                .expect("nothing")
                .is_empty()
        );
        // What the batch took is released like any lease.
        store
            .lease_release_many(&[
                HeldLeases {
                    holder: "h1",
                    keys: &["all", "ip:a"],
                },
                HeldLeases {
                    holder: "h3",
                    keys: &["all", "ip:b"],
                },
                HeldLeases {
                    holder: "h4",
                    keys: &["all", "ip:b"],
                },
                HeldLeases {
                    holder: "h6",
                    keys: &["tok"],
                },
            ])
            .await
            .expect("release");
        for key in ["all", "ip:a", "ip:b", "tok"] {
            assert_eq!(
                store.lease_count(key).await.expect("count"),
                0,
                "{name} {key}"
            );
        }
    }
}

#[tokio::test]
async fn store_lease_renew_many_renews_each_live_holder_and_only_those() {
    for (name, store) in both_stores().await {
        let short = Duration::from_millis(400);
        for holder in ["a", "b", "c"] {
            let taken = store
                .lease_acquire(&[scope("all", 9), scope(holder, 1)], holder, short)
                .await
                .expect("acquire");
            assert_eq!(taken, LeaseOutcome::Acquired, "{name}");
        }
        // b's lease in its own scope is gone: b is not renewed, not even in "all".
        store.lease_release(&["b"], "b").await.expect("release");
        let held = [
            HeldLeases {
                holder: "a",
                keys: &["all", "a"],
            },
            HeldLeases {
                holder: "b",
                keys: &["all", "b"],
            },
            HeldLeases {
                holder: "c",
                keys: &["all", "c"],
            },
            HeldLeases {
                holder: "never",
                keys: &["all"],
            },
            HeldLeases {
                holder: "none",
                keys: &[],
            },
        ];
        let renewed = store
            .lease_renew_many(&held, Duration::from_secs(5))
            .await
            .expect("renew");
        assert_eq!(renewed, [true, false, true, false, true], "{name}");
        assert!(
            store
                .lease_renew_many(&[], Duration::from_secs(5))
                .await
                .expect("renew nothing")
                .is_empty()
        );
        // Past the first time to live: a and c live on, b's other lease ran out untouched, and
        // nothing was created for the holder that had none.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(store.lease_count("all").await.expect("count"), 2, "{name}");
        assert_eq!(store.lease_count("a").await.expect("count"), 1, "{name}");
        assert_eq!(store.lease_count("c").await.expect("count"), 1, "{name}");
        assert_eq!(store.lease_count("b").await.expect("count"), 0, "{name}");

        store
            .lease_release_many(&[
                HeldLeases {
                    holder: "a",
                    keys: &["all", "a"],
                },
                HeldLeases {
                    holder: "c",
                    keys: &["all", "c"],
                },
                HeldLeases {
                    holder: "gone",
                    keys: &["all"],
                },
            ])
            .await
            .expect("release many");
        assert_eq!(store.lease_count("all").await.expect("count"), 0, "{name}");
        assert_eq!(store.lease_count("a").await.expect("count"), 0, "{name}");
        assert_eq!(store.lease_count("c").await.expect("count"), 0, "{name}");
        // Idempotent, and a no-op when empty.
        store
            .lease_release_many(&[HeldLeases {
                holder: "a",
                keys: &["all", "a"],
            }])
            .await
            .expect("release again");
        store
            .lease_release_many(&[])
            .await
            .expect("release nothing");
    }
}

#[tokio::test]
async fn store_lease_renew_many_keeps_every_redis_key_expiring_and_frees_emptied_sets() {
    let prefix = format!(
        "fctf-test:core-lease-many:{}:",
        uuid::Uuid::new_v4().simple()
    );
    let store = RedisStore::connect("redis://127.0.0.1:6379", &prefix, Duration::from_secs(2))
        .await
        .expect("the tests need Redis on 127.0.0.1:6379");
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let keys_now = |mut con: redis::aio::MultiplexedConnection| {
        let pattern = format!("{prefix}*");
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut con)
                .await
                .expect("KEYS");
            keys
        }
    };
    let holders: Vec<String> = (0..50).map(|i| format!("h{i}")).collect();
    for holder in &holders {
        store
            .lease_acquire(
                &[scope("all", 100), scope(holder, 1)],
                holder,
                Duration::from_millis(300),
            )
            .await
            .expect("acquire");
    }
    let keys: Vec<[&str; 2]> = holders.iter().map(|h| ["all", h.as_str()]).collect();
    let held: Vec<HeldLeases<'_>> = holders
        .iter()
        .zip(&keys)
        .map(|(holder, keys)| HeldLeases { holder, keys })
        .collect();
    let renewed = store
        .lease_renew_many(&held, Duration::from_secs(10))
        .await
        .expect("renew");
    assert!(renewed.iter().all(|r| *r));
    let written = keys_now(con.clone()).await;
    assert_eq!(written.len(), 51, "{written:?}");
    for key in &written {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("PTTL");
        // Each set expires with its last lease, now the renewed one.
        assert!((1_000..=10_000).contains(&pttl), "{key}: {pttl} ms");
    }
    store.lease_release_many(&held).await.expect("release");
    assert!(
        keys_now(con.clone()).await.is_empty(),
        "emptied sets are gone"
    );
}
