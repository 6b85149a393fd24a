//! How both stores turn a [`Duration`] into a time to live: whole milliseconds, rounded up, at
//! least one and at most [`MAX_MILLIS`]. Redis refuses `PX 0` and expiry times that overflow its
//! clock, and rounding up means a TTL is never shorter than asked.

use std::time::Duration;

/// The longest TTL either store keeps (100 years): longer ones are "forever" in practice and are
/// clamped so that `now + ttl` never overflows.
pub(crate) const MAX_MILLIS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// `ttl` in whole milliseconds, rounded up, within `1..=MAX_MILLIS`.
pub(crate) fn millis(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).clamp(1, MAX_MILLIS)
}

/// [`millis`] in microseconds (the in-process store's clock unit).
pub(crate) fn micros(ttl: Duration) -> u64 {
    millis(ttl) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_to_whole_milliseconds_within_bounds() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_nanos(1)), 1);
        assert_eq!(millis(Duration::from_millis(250)), 250);
        assert_eq!(millis(Duration::from_micros(250_001)), 251);
        assert_eq!(millis(Duration::MAX), MAX_MILLIS);
        assert_eq!(micros(Duration::from_micros(1)), 1000);
    }
}
