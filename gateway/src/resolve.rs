//! Host-name upstreams to socket addresses, off the hot path: literal addresses pass through,
//! names are looked up with Tokio's resolver (a blocking-pool task, never on a worker) and cached
//! briefly, so a request pays a lookup at most once per [`TTL`] per name.

use std::net::SocketAddr;
use std::time::Duration;

use crate::routing::Upstream;

/// How long a resolved address is reused. Short, because a namespace service's address can
/// change when the instance is recreated; instances get new names then anyway.
pub const TTL: Duration = Duration::from_secs(10);

/// Most names cached at once.
const CAPACITY: u64 = 100_000;

/// A cache of resolved upstream names.
#[derive(Debug)]
pub struct Resolver {
    cache: moka::sync::Cache<(String, u16), SocketAddr>,
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

impl Resolver {
    /// An empty cache.
    pub fn new() -> Self {
        Resolver {
            cache: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(TTL)
                .build(),
        }
    }

    /// The address to connect to for `upstream`, or `None` when the name does not resolve.
    pub async fn resolve(&self, upstream: &Upstream) -> Option<SocketAddr> {
        match upstream {
            Upstream::Addr(addr) => Some(*addr),
            Upstream::Named { host, port } => {
                let key = (host.clone(), *port);
                if let Some(addr) = self.cache.get(&key) {
                    return Some(addr);
                }
                let addr = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .ok()?
                    .next()?;
                self.cache.insert(key, addr);
                Some(addr)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_pass_through_and_names_resolve() {
        let resolver = Resolver::new();
        let literal: SocketAddr = "10.1.2.3:80".parse().unwrap();
        assert_eq!(
            resolver.resolve(&Upstream::Addr(literal)).await,
            Some(literal)
        );
        let local = Upstream::Named {
            host: "localhost".into(),
            port: 8080,
        };
        let addr = resolver.resolve(&local).await.expect("localhost resolves");
        assert!(addr.ip().is_loopback());
        assert_eq!(addr.port(), 8080);
        let missing = Upstream::Named {
            host: "no-such-host.invalid".into(),
            port: 1,
        };
        assert_eq!(resolver.resolve(&missing).await, None);
    }
}
