//! A [`RedisStore`] on the real Redis, on a key prefix no other test shares, with a raw
//! connection to inspect what the store wrote and to delete it afterwards; and
//! [`on_both_stores!`], which runs the same cases on the in-process store and on Redis.

use std::sync::Arc;
use std::time::Duration;

use fctf_core::store::{RedisStore, StateStore};
use redis::aio::MultiplexedConnection;

use crate::services;

/// A [`RedisStore`] on a key prefix of its own, plus a raw connection to inspect what it wrote.
pub struct RedisBackend {
    store: Arc<RedisStore>,
    prefix: String,
    raw: MultiplexedConnection,
}

impl RedisBackend {
    /// Connects a store on a fresh prefix named after the test `area` and `case`; fails the test
    /// loudly when Redis is down.
    pub async fn start(area: &str, case: &str) -> Self {
        services::require_redis().await;
        let prefix = services::unique_prefix(&format!("{area}-{case}"));
        let store = RedisStore::connect(&services::redis_url(), &prefix, Duration::from_secs(2))
            .await
            .unwrap();
        let raw = redis::Client::open(services::redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Self {
            store: Arc::new(store),
            prefix,
            raw,
        }
    }

    /// The store under test.
    pub fn store(&self) -> Arc<dyn StateStore> {
        self.store.clone()
    }

    /// The prefix every key of this store starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A connection to the same Redis that bypasses the store.
    pub fn raw(&self) -> MultiplexedConnection {
        self.raw.clone()
    }

    /// The keys under this backend's prefix. SCAN rather than KEYS: it does not block a Redis
    /// that other tests are using at the same time.
    pub async fn keys(&self) -> Vec<String> {
        let mut raw = self.raw();
        let mut keys = Vec::new();
        let mut cursor = 0_u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .cursor_arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut raw)
                .await
                .unwrap();
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    /// Every key under this backend's prefix, with its remaining lifetime in milliseconds (the
    /// PTTL reply: -1 for a key without expiry, -2 for one gone since the scan).
    pub async fn keys_with_ttl(&self) -> Vec<(String, i64)> {
        let mut raw = self.raw();
        let mut out = Vec::new();
        for key in self.keys().await {
            let pttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut raw)
                .await
                .unwrap();
            out.push((key, pttl));
        }
        out
    }

    /// Every key the store wrote must expire on its own; then delete them.
    pub async fn check_expiry_and_clean(&self) {
        let mut raw = self.raw();
        for (key, pttl) in self.keys_with_ttl().await {
            // -2: expired since the scan, which is fine; -1 would be a key that never expires.
            assert_ne!(pttl, -1, "{key} has no expiry");
            let _: i64 = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut raw)
                .await
                .unwrap();
        }
    }
}

/// Generates, for each `case` (an `async fn(Arc<dyn StateStore>)` of the calling module),
/// `memory::<case>` on a fresh [`MemoryStore`](fctf_core::store::MemoryStore) and
/// `redis::<case>` on a [`RedisBackend`] named after `area`, whose keys must all carry an expiry
/// once the case is done (then they are deleted).
macro_rules! on_both_stores {
    ($area:literal: $($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(std::sync::Arc::new(fctf_core::store::MemoryStore::new())).await;
                }
            )*
        }

        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend =
                        $crate::redis_fixture::RedisBackend::start($area, stringify!($case)).await;
                    super::$case(backend.store()).await;
                    backend.check_expiry_and_clean().await;
                }
            )*
        }
    };
}

pub(crate) use on_both_stores;
