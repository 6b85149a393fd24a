//! Local pre-allocation of rate-limit tokens: a gateway takes a batch of tokens from the shared
//! bucket (`StateStore::rate_take`) and spends them in-process, so only one request in a batch
//! pays a store round trip.
//!
//! # Accuracy across gateways
//!
//! Tokens are debited from the shared bucket *before* they are spent, so N gateways together never
//! admit more than the bucket's long-run rate. Two effects bound the difference from a single
//! exact bucket:
//! - a gateway may hold up to `batch - 1` tokens another gateway cannot use, so a client spread
//!   over N gateways can be refused up to `N * (batch - 1)` requests early;
//! - over any window, at most `rate * window + burst + N * (batch - 1)` requests pass: what was
//!   debited in the window plus what the gateways held when it began. This holds whatever the
//!   held tokens' lifetime; they expire only so capacity a gateway no longer uses goes back to the
//!   others: after the time the bucket takes to refill the batch, but never sooner than
//!   [`MIN_LIFETIME`] (at high rates that time is shorter than the gap between one client's
//!   requests, which would shrink every batch back to 1 and cost a store call per request) and
//!   never later than [`MAX_LIFETIME`].
//!
//! Batches adapt to the traffic, so a slow client wastes nothing: the first take is 1 token, a
//! batch spent before it lapses doubles the next one (up to the bucket's largest batch), and a
//! batch that lapsed with tokens unspent makes the next one only as large as what was spent.
//!
//! The largest batch is a tenth of the burst, at most [`MAX_BATCH`]; a burst under 20 gives
//! batches of 1, which the caller serves with an exact `rate_limit` call instead.

use std::time::{Duration, Instant};

use fctf_core::store::RateLimit;

/// Largest batch taken at once.
pub const MAX_BATCH: u32 = 64;

/// Longest time held tokens stay spendable.
pub const MAX_LIFETIME: Duration = Duration::from_secs(1);

/// Shortest time held tokens stay spendable.
pub const MIN_LIFETIME: Duration = Duration::from_millis(250);

/// The largest batch for `limit`: a tenth of the burst, 1 to [`MAX_BATCH`].
pub fn batch_size(limit: RateLimit) -> u32 {
    (limit.burst / 10).clamp(1, MAX_BATCH)
}

/// Time between two tokens of `limit` (at least 1 µs, at most a day).
pub fn interval(limit: RateLimit) -> Duration {
    if limit.per_second.is_finite() && limit.per_second > 0.0 {
        Duration::from_secs_f64((1.0 / limit.per_second).clamp(1e-6, 86_400.0))
    } else {
        Duration::from_secs(86_400)
    }
}

/// What [`LocalBudget::spend`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spend {
    /// A held token was spent: allow, no store call.
    Spent,
    /// The shared bucket was found empty recently: refuse, no store call.
    Empty {
        /// Until the local verdict lapses.
        retry_after: Duration,
    },
    /// Nothing held: take a batch from the store.
    Refill,
}

/// The tokens one gateway holds for one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalBudget {
    tokens: u32,
    /// Held tokens lapse at this instant.
    expires: Option<Instant>,
    /// The shared bucket was empty; do not ask again before this instant.
    empty_until: Option<Instant>,
    /// Size of the last batch taken.
    last_batch: u32,
    /// Size of the next batch to take (0 before the first: 1).
    next_batch: u32,
}

impl LocalBudget {
    /// Spends one held token if there is one.
    pub fn spend(&mut self, now: Instant) -> Spend {
        if let Some(until) = self.empty_until {
            if now < until {
                return Spend::Empty {
                    retry_after: until - now,
                };
            }
            self.empty_until = None;
        }
        if self.expires.is_some_and(|at| now >= at) {
            // Only what was spent of the lapsed batch is worth taking next time.
            self.next_batch = self.last_batch.saturating_sub(self.tokens).max(1);
            self.tokens = 0;
            self.expires = None;
            return Spend::Refill;
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            Spend::Spent
        } else {
            // The whole batch was spent in time: take more next time.
            self.next_batch = self.last_batch.saturating_mul(2).max(1);
            Spend::Refill
        }
    }

    /// How many tokens to take on a [`Spend::Refill`], at most `max`.
    pub fn next_batch(&self, max: u32) -> u32 {
        self.next_batch.clamp(1, max.max(1))
    }

    /// Records a batch of `taken` tokens from the store, one of which the caller spends now.
    /// Returns whether that one was granted (`taken > 0`); an empty take refuses further spends
    /// for one `interval` of the limit.
    pub fn refilled(&mut self, taken: u32, limit: RateLimit, now: Instant) -> bool {
        let interval = interval(limit);
        if taken == 0 {
            self.empty_until = Some(now + interval);
            return false;
        }
        let lifetime = interval
            .saturating_mul(taken)
            .clamp(MIN_LIFETIME, MAX_LIFETIME);
        self.last_batch = taken;
        self.tokens = self.tokens.saturating_add(taken - 1);
        self.expires = Some(now + lifetime);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 100.0,
        burst: 200,
    };

    #[test]
    fn batches_are_a_tenth_of_the_burst() {
        assert_eq!(batch_size(LIMIT), 20);
        assert_eq!(
            batch_size(RateLimit {
                per_second: 1.0,
                burst: 5
            }),
            1
        );
        assert_eq!(
            batch_size(RateLimit {
                per_second: 1.0,
                burst: 10_000
            }),
            MAX_BATCH
        );
        assert_eq!(interval(LIMIT), Duration::from_millis(10));
        assert_eq!(
            interval(RateLimit {
                per_second: 0.0,
                burst: 1
            }),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn held_tokens_are_spent_then_refilled_with_a_growing_batch() {
        let t0 = Instant::now();
        let mut budget = LocalBudget::default();
        assert_eq!(budget.spend(t0), Spend::Refill);
        assert_eq!(budget.next_batch(20), 1);
        assert!(budget.refilled(1, LIMIT, t0));
        assert_eq!(budget.spend(t0), Spend::Refill);
        assert_eq!(budget.next_batch(20), 2);
        assert!(budget.refilled(3, LIMIT, t0));
        assert_eq!(budget.spend(t0), Spend::Spent);
        assert_eq!(budget.spend(t0), Spend::Spent);
        assert_eq!(budget.spend(t0), Spend::Refill);
        assert_eq!(budget.next_batch(20), 6);
        assert_eq!(budget.next_batch(4), 4);
    }

    #[test]
    fn a_lapsed_batch_shrinks_the_next_to_what_was_spent() {
        let t0 = Instant::now();
        let mut budget = LocalBudget::default();
        assert!(budget.refilled(16, LIMIT, t0));
        for _ in 0..3 {
            assert_eq!(budget.spend(t0), Spend::Spent);
        }
        assert_eq!(budget.spend(t0 + Duration::from_secs(1)), Spend::Refill);
        // One spent at the refill, three after: 4 of 16.
        assert_eq!(budget.next_batch(20), 4);
    }

    #[test]
    fn held_tokens_lapse_after_the_time_the_bucket_needs_to_refill_them() {
        let t0 = Instant::now();
        let mut budget = LocalBudget::default();
        assert!(budget.refilled(40, LIMIT, t0));
        // 40 tokens at 100/s: 400 ms.
        assert_eq!(budget.spend(t0 + Duration::from_millis(399)), Spend::Spent);
        assert_eq!(budget.spend(t0 + Duration::from_millis(400)), Spend::Refill);
    }

    #[test]
    fn at_high_rates_held_tokens_last_at_least_the_minimum_lifetime() {
        let fast = RateLimit {
            per_second: 1_000_000.0,
            burst: 200,
        };
        let t0 = Instant::now();
        let mut budget = LocalBudget::default();
        assert!(budget.refilled(20, fast, t0));
        // 20 tokens at 1,000,000/s refill in 20 µs: a client 80 µs apart still spends them.
        for i in 1..20 {
            assert_eq!(
                budget.spend(t0 + Duration::from_micros(80 * i)),
                Spend::Spent,
                "token {i}"
            );
        }
        assert_eq!(budget.spend(t0 + MIN_LIFETIME), Spend::Refill);
    }

    #[test]
    fn an_empty_bucket_is_not_asked_again_for_one_interval() {
        let t0 = Instant::now();
        let mut budget = LocalBudget::default();
        assert!(!budget.refilled(0, LIMIT, t0));
        assert_eq!(
            budget.spend(t0 + Duration::from_millis(4)),
            Spend::Empty {
                retry_after: Duration::from_millis(6)
            }
        );
        assert_eq!(budget.spend(t0 + Duration::from_millis(10)), Spend::Refill);
    }
}
