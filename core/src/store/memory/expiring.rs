//! A map whose entries expire: what one Redis keyspace with `PEXPIRE` is to [`super::MemoryStore`].
//!
//! Expired entries are dropped lazily when read, and by an incremental sweep: each write examines
//! a few entries after a cursor that walks the (ordered) map round and round. Since a write adds at
//! most one entry and sweeps [`SWEEP_STEP`] of them, the sweep outruns any rate of key creation,
//! so a flood of one-shot keys (rate-limit buckets of many addresses) cannot grow the map beyond
//! its live entries plus a small fraction, and no call ever pays for a full scan.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Entries a write examines for expiry.
pub(super) const SWEEP_STEP: usize = 16;

#[derive(Debug)]
struct Timed<V> {
    value: V,
    /// Store clock (µs); the entry is live while `now < expires_at`.
    expires_at: u64,
}

/// Entries of one kind, each with its own expiry time on the store's clock (µs).
#[derive(Debug)]
pub(super) struct Expiring<K, V> {
    entries: BTreeMap<K, Timed<V>>,
    /// Last key the sweep examined; `None` to start from the beginning.
    cursor: Option<K>,
}

impl<K: Ord + Clone, V> Expiring<K, V> {
    pub(super) fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
            cursor: None,
        }
    }

    /// The live value of `key`; an expired one is dropped.
    pub(super) fn get_mut<Q>(&mut self, key: &Q, now: u64) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        if self.entries.get(key)?.expires_at <= now {
            self.entries.remove(key);
            return None;
        }
        self.entries.get_mut(key).map(|t| &mut t.value)
    }

    /// The live value of `key` and its expiry time.
    pub(super) fn get_with_expiry<Q>(&mut self, key: &Q, now: u64) -> Option<(&V, u64)>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let expires_at = self.entries.get(key)?.expires_at;
        if expires_at <= now {
            self.entries.remove(key);
            return None;
        }
        self.entries.get(key).map(|t| (&t.value, expires_at))
    }

    /// Store `value` under `key` until `expires_at` (replacing any entry).
    pub(super) fn insert(&mut self, key: K, value: V, expires_at: u64) {
        self.entries.insert(key, Timed { value, expires_at });
    }

    /// Move the expiry of a present entry.
    pub(super) fn set_expiry<Q>(&mut self, key: &Q, expires_at: u64)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        if let Some(t) = self.entries.get_mut(key) {
            t.expires_at = expires_at;
        }
    }

    /// Drop `key`; its value if it was live.
    pub(super) fn remove<Q>(&mut self, key: &Q, now: u64) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.entries
            .remove(key)
            .filter(|t| t.expires_at > now)
            .map(|t| t.value)
    }

    /// Every live entry.
    pub(super) fn live(&self, now: u64) -> impl Iterator<Item = (&K, &V)> {
        self.entries
            .iter()
            .filter(move |(_, t)| t.expires_at > now)
            .map(|(k, t)| (k, &t.value))
    }

    /// Entries held, live or expired but not yet dropped.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Examine the next [`SWEEP_STEP`] entries after the cursor and drop the expired ones.
    pub(super) fn sweep(&mut self, now: u64) {
        let lower = match &self.cursor {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        let mut expired = Vec::new();
        let mut seen = 0;
        let mut last = None;
        for (k, t) in self
            .entries
            .range((lower, Bound::Unbounded))
            .take(SWEEP_STEP)
        {
            seen += 1;
            if t.expires_at <= now {
                expired.push(k.clone());
            }
            last = Some(k);
        }
        // A short step reached the end: the next one starts over.
        let next = if seen < SWEEP_STEP {
            None
        } else {
            last.cloned()
        };
        self.cursor = next;
        for k in expired {
            self.entries.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_entries_are_invisible_and_dropped_on_read() {
        let mut m = Expiring::new();
        m.insert("a", 1, 10);
        assert_eq!(m.get_mut(&"a", 9).copied(), Some(1));
        assert_eq!(m.get_mut(&"a", 10), None);
        assert_eq!(m.len(), 0);
        m.insert("b", 2, 10);
        assert_eq!(m.remove(&"b", 10), None, "expired: not reported as removed");
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn sweeps_walk_the_whole_map_and_drop_only_expired_entries() {
        let mut m = Expiring::new();
        for i in 0..1000u32 {
            // Every third entry stays live.
            m.insert(i, (), if i % 3 == 0 { 100 } else { 5 });
        }
        for _ in 0..(1000 / SWEEP_STEP + 1) {
            m.sweep(50);
        }
        assert_eq!(m.len(), 334);
        assert_eq!(m.live(50).count(), 334);
        // The cursor wraps: sweeping on finds the rest once they expire.
        for _ in 0..(334 / SWEEP_STEP + 2) {
            m.sweep(100);
        }
        assert_eq!(m.len(), 0);
    }
}
