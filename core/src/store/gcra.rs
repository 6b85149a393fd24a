//! The rate-limit decision: GCRA (generic cell rate algorithm), pure and in integer microseconds.
//!
//! A bucket of `burst` tokens that refills at `per_second` is kept as one number, the *theoretical
//! arrival time* (TAT): the instant at which the bucket would be full again. Taking `n` tokens moves
//! the TAT `n` emission intervals later; a request is allowed while the TAT stays within the
//! bucket's tolerance (`burst` intervals) of now. One number per bucket, no background refill, and
//! the stored entry can expire at the TAT because an absent bucket and a full one are the same.
//!
//! [`MemoryStore`](super::MemoryStore) runs this code; `lua/rate_limit.lua` and
//! `lua/rate_take.lua` are line-for-line ports of it for [`RedisStore`](super::RedisStore) (the
//! arithmetic stays exact there because every value stays below 2^53 µs). It is also the model the
//! Redis scripts are checked against.
//!
//! Rates outside what this can represent are clamped rather than refused, so a limit is never
//! silently switched off: at most one token per microsecond, at least one token per
//! [`MAX_INTERVAL`], and a tolerance of at most [`MAX_TOLERANCE`].

use std::time::Duration;

use super::{RateDecision, RateLimit};

/// Longest emission interval (one token per 30 days): slower rates, zero, negative and NaN rates
/// are clamped to it.
pub const MAX_INTERVAL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Longest tolerance (a full bucket's worth of intervals): 2^50 µs, about 35 years. Keeps
/// `now + tolerance` far below 2^53 µs so the Lua port (doubles) stays exact.
pub const MAX_TOLERANCE: Duration = Duration::from_micros(1 << 50);

/// A [`RateLimit`] in the units the algorithm works in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    interval_us: u64,
    tolerance_us: u64,
}

/// What one [`Gcra::check`] decided, and what to store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The answer for the caller.
    pub decision: RateDecision,
    /// The bucket's new TAT, to store until it passes; `None` when nothing changed.
    pub new_tat: Option<u64>,
}

/// What one [`Gcra::take`] granted, and what to store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taken {
    /// Tokens granted (at most the `max` asked for).
    pub taken: u32,
    /// The bucket's new TAT, to store until it passes; `None` when nothing was taken.
    pub new_tat: Option<u64>,
}

impl Gcra {
    /// The algorithm's parameters for `limit`, clamped as the module explains.
    pub fn new(limit: RateLimit) -> Self {
        let max_interval_us = duration_us(MAX_INTERVAL);
        let ideal_us = 1e6 / limit.per_second;
        // NaN, zero, negative and tiny rates fail this test: all of them mean "as slow as
        // representable", never "unlimited".
        let interval_us = if limit.per_second > 0.0 && ideal_us < max_interval_us as f64 {
            // In [0, MAX_INTERVAL): the cast after rounding is exact.
            (ideal_us.round() as u64).max(1)
        } else {
            max_interval_us
        };
        let tolerance_us = interval_us
            .saturating_mul(u64::from(limit.burst))
            .min(duration_us(MAX_TOLERANCE));
        Self {
            interval_us,
            tolerance_us,
        }
    }

    /// Microseconds between two tokens.
    pub fn interval_us(self) -> u64 {
        self.interval_us
    }

    /// Microseconds of credit a full bucket holds (`burst` intervals).
    pub fn tolerance_us(self) -> u64 {
        self.tolerance_us
    }

    /// Take `cost` tokens if the bucket holds them. `stored_tat` is the bucket's TAT (`None`
    /// when absent, which is the same as full) and `now_us` the store's clock, both in µs.
    ///
    /// A `cost` of zero is a free look at the bucket. A `cost` larger than the bucket can ever
    /// hold is refused with a `retry_after` of [`Duration::MAX`].
    pub fn check(self, stored_tat: Option<u64>, now_us: u64, cost: u32) -> Checked {
        let (tat, used) = self.debt(stored_tat, now_us);
        let credit = self.tolerance_us.saturating_sub(used);
        let needed = u64::from(cost).saturating_mul(self.interval_us);
        if needed <= credit {
            Checked {
                decision: RateDecision {
                    allowed: true,
                    remaining: self.whole_tokens(credit - needed),
                    retry_after: Duration::ZERO,
                },
                new_tat: (needed > 0).then_some(tat + needed),
            }
        } else {
            let retry_after = if needed > self.tolerance_us {
                Duration::MAX
            } else {
                // The debt must shrink until `needed` fits under the tolerance.
                Duration::from_micros(used + needed - self.tolerance_us)
            };
            Checked {
                decision: RateDecision {
                    allowed: false,
                    remaining: self.whole_tokens(credit),
                    retry_after,
                },
                new_tat: None,
            }
        }
    }

    /// Take as many whole tokens as the bucket holds, up to `max`.
    pub fn take(self, stored_tat: Option<u64>, now_us: u64, max: u32) -> Taken {
        let (tat, used) = self.debt(stored_tat, now_us);
        let credit = self.tolerance_us.saturating_sub(used);
        let taken = self.whole_tokens(credit).min(max);
        Taken {
            taken,
            new_tat: (taken > 0).then(|| tat + u64::from(taken) * self.interval_us),
        }
    }

    /// The effective TAT (never in the past) and how far ahead of now it is.
    fn debt(self, stored_tat: Option<u64>, now_us: u64) -> (u64, u64) {
        let tat = stored_tat.map_or(now_us, |t| t.max(now_us));
        (tat, tat - now_us)
    }

    fn whole_tokens(self, credit_us: u64) -> u32 {
        u32::try_from(credit_us / self.interval_us).unwrap_or(u32::MAX)
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn limit(per_second: f64, burst: u32) -> Gcra {
        Gcra::new(RateLimit { per_second, burst })
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_refuses_until_one_interval_passes() {
        let g = limit(10.0, 3); // one token per 100 ms
        let mut tat = None;
        for left in [2, 1, 0] {
            let c = g.check(tat, 0, 1);
            assert!(c.decision.allowed);
            assert_eq!(c.decision.remaining, left);
            tat = c.new_tat;
        }
        let refused = g.check(tat, 0, 1);
        assert!(!refused.decision.allowed);
        assert_eq!(refused.decision.retry_after, Duration::from_millis(100));
        assert_eq!(refused.new_tat, None);
        let later = g.check(tat, 40_000, 1);
        assert_eq!(later.decision.retry_after, Duration::from_millis(60));
        assert!(g.check(tat, 100_000, 1).decision.allowed);
    }

    #[test]
    fn zero_cost_looks_without_taking_and_oversized_cost_never_fits() {
        let g = limit(1.0, 2);
        let look = g.check(None, 5, 0);
        assert!(look.decision.allowed);
        assert_eq!(look.decision.remaining, 2);
        assert_eq!(look.new_tat, None);
        let never = g.check(None, 5, 3);
        assert!(!never.decision.allowed);
        assert_eq!(never.decision.retry_after, Duration::MAX);
        assert_eq!(never.decision.remaining, 2);
    }

    #[test]
    fn take_grants_what_the_bucket_holds_up_to_max() {
        let g = limit(1.0, 5);
        let first = g.take(None, 0, 3);
        assert_eq!(first.taken, 3);
        let second = g.take(first.new_tat, 0, 3);
        assert_eq!(second.taken, 2);
        let third = g.take(second.new_tat, 0, 3);
        assert_eq!(
            third,
            Taken {
                taken: 0,
                new_tat: None
            }
        );
        assert_eq!(g.take(second.new_tat, 1_000_000, 3).taken, 1);
    }

    #[test]
    fn fractional_and_degenerate_rates_are_represented_or_clamped() {
        assert_eq!(limit(0.5, 1).interval_us(), 2_000_000);
        assert_eq!(limit(2.5, 4).interval_us(), 400_000);
        assert_eq!(limit(3.0, 1).interval_us(), 333_333);
        let slowest = duration_us(MAX_INTERVAL);
        for rate in [0.0, -1.0, f64::NAN, f64::NEG_INFINITY, 1e-12] {
            assert_eq!(limit(rate, 1).interval_us(), slowest, "rate {rate}");
        }
        assert_eq!(limit(f64::INFINITY, 1).interval_us(), 1);
        assert_eq!(limit(1e9, 1).interval_us(), 1);
        assert_eq!(
            limit(0.0, u32::MAX).tolerance_us(),
            duration_us(MAX_TOLERANCE)
        );
        assert!(!limit(10.0, 0).check(None, 0, 1).decision.allowed);
    }

    #[test]
    fn a_shrunk_limit_counts_the_whole_debt_in_retry_after() {
        // Debt of 1 s left by a larger burst; the new tolerance is 200 ms.
        let g = limit(10.0, 2);
        let c = g.check(Some(1_000_000), 0, 1);
        assert!(!c.decision.allowed);
        assert_eq!(c.decision.remaining, 0);
        assert_eq!(c.decision.retry_after, Duration::from_millis(900));
    }

    /// A continuous token bucket in integer microseconds of credit: the textbook definition the
    /// GCRA must agree with exactly.
    struct Bucket {
        credit_us: u64,
        last_us: u64,
    }

    impl Bucket {
        fn arrive(&mut self, g: Gcra, now_us: u64, cost: u32) -> RateDecision {
            self.credit_us = (self.credit_us + (now_us - self.last_us)).min(g.tolerance_us());
            self.last_us = now_us;
            let needed = u64::from(cost) * g.interval_us();
            if needed <= self.credit_us {
                self.credit_us -= needed;
                RateDecision {
                    allowed: true,
                    remaining: (self.credit_us / g.interval_us()) as u32,
                    retry_after: Duration::ZERO,
                }
            } else {
                RateDecision {
                    allowed: false,
                    remaining: (self.credit_us / g.interval_us()) as u32,
                    retry_after: if needed > g.tolerance_us() {
                        Duration::MAX
                    } else {
                        Duration::from_micros(needed - self.credit_us)
                    },
                }
            }
        }
    }

    proptest! {
        #[test]
        fn gcra_agrees_with_a_token_bucket(
            rate in prop::sample::select(vec![0.5, 2.5, 3.0, 10.0, 1000.0]),
            burst in 1u32..8,
            arrivals in prop::collection::vec((0u64..700_000, 0u32..4), 1..60),
        ) {
            let g = limit(rate, burst);
            let mut model = Bucket { credit_us: g.tolerance_us(), last_us: 1_000 };
            let mut tat = None;
            let mut now = 1_000;
            for (gap, cost) in arrivals {
                now += gap;
                let c = g.check(tat, now, cost);
                prop_assert_eq!(c.decision, model.arrive(g, now, cost));
                if let Some(t) = c.new_tat {
                    tat = Some(t);
                }
            }
        }
    }
}
