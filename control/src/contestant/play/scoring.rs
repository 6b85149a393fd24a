//! Challenge values: static, and dynamic decay exactly as CTFd computes it
//! (`CTFd/plugins/dynamic_challenges/decay.py`), plus the optional first-blood bonus.
//!
//! A dynamic value depends only on how many teams solved the challenge in the view being
//! scored, so the frozen board (solves before the freeze) and the live board each get their
//! own, and every solver of a challenge holds its current value (CTFd's rule).

use serde::{Deserialize, Serialize};

/// How a dynamic challenge decays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayFunction {
    /// `initial - decay * (solves - 1)`, rounded up, at least `minimum`.
    Linear,
    /// A parabola from `initial` reaching `minimum` at `decay` solves, rounded up.
    Logarithmic,
}

impl DecayFunction {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Logarithmic => "logarithmic",
        }
    }

    /// Reads the stored word (anything unknown is linear, CTFd's default).
    pub fn parse(word: &str) -> Self {
        if word.eq_ignore_ascii_case("logarithmic") {
            Self::Logarithmic
        } else {
            Self::Linear
        }
    }
}

/// How a challenge is worth points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Valuation {
    /// A fixed value.
    Static(i64),
    /// CTFd's dynamic value.
    Dynamic {
        initial: i64,
        minimum: i64,
        decay: i64,
        function: DecayFunction,
    },
}

impl Valuation {
    /// The value with `solves` solves counted (the new solve included, as CTFd counts it).
    pub fn value(self, solves: u64) -> i64 {
        match self {
            Self::Static(value) => value,
            Self::Dynamic {
                initial,
                minimum,
                decay,
                function,
            } => dynamic_value(function, initial, minimum, decay, solves),
        }
    }
}

/// CTFd's dynamic value after `solves` solves. The first solver gets `initial`.
pub fn dynamic_value(
    function: DecayFunction,
    initial: i64,
    minimum: i64,
    decay: i64,
    solves: u64,
) -> i64 {
    // CTFd subtracts one so the first solver gets the full value.
    let n = solves.saturating_sub(1) as f64;
    let (initial_f, minimum_f) = (initial as f64, minimum as f64);
    let value = match function {
        DecayFunction::Linear => initial_f - decay as f64 * n,
        DecayFunction::Logarithmic => {
            // CTFd turns a zero decay into 1 (it would divide by zero).
            let decay = if decay == 0 { 1.0 } else { decay as f64 };
            ((minimum_f - initial_f) / (decay * decay)) * (n * n) + initial_f
        }
    };
    let value = value.ceil();
    if !value.is_finite() || value < minimum_f {
        return minimum;
    }
    if value >= i64::MAX as f64 {
        return i64::MAX;
    }
    value as i64
}

/// Points of one solve: the challenge's value in the view, plus `bonus` for the first solver
/// (first by the database-stamped solve order).
pub fn solve_points(value: i64, first_blood: bool, bonus: i64) -> i64 {
    if first_blood {
        value.saturating_add(bonus.max(0))
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn linear_matches_ctfd() {
        // initial 500, minimum 100, decay 50: 500, 500, 450, 400, ... down to 100.
        let v = |n| dynamic_value(DecayFunction::Linear, 500, 100, 50, n);
        assert_eq!(v(0), 500);
        assert_eq!(v(1), 500);
        assert_eq!(v(2), 450);
        assert_eq!(v(3), 400);
        assert_eq!(v(9), 100);
        assert_eq!(v(10), 100);
        assert_eq!(v(1000), 100);
    }

    #[test]
    fn logarithmic_matches_ctfd() {
        // CTFd: ((min - init) / decay^2) * (n-1)^2 + init, ceil, at least min.
        let v = |n| dynamic_value(DecayFunction::Logarithmic, 500, 100, 10, n);
        assert_eq!(v(1), 500);
        assert_eq!(v(2), 496); // -400/100*1 + 500
        assert_eq!(v(3), 484);
        assert_eq!(v(6), 400);
        assert_eq!(v(11), 100);
        assert_eq!(v(12), 100);
        // Fractions round up: -400/9 * 1 + 500 = 455.56 -> 456.
        assert_eq!(
            dynamic_value(DecayFunction::Logarithmic, 500, 100, 3, 2),
            456
        );
        // Zero decay is treated as 1.
        assert_eq!(
            dynamic_value(DecayFunction::Logarithmic, 500, 100, 0, 2),
            100
        );
    }

    #[test]
    fn first_blood_adds_the_bonus_once() {
        assert_eq!(solve_points(100, true, 25), 125);
        assert_eq!(solve_points(100, false, 25), 100);
        assert_eq!(solve_points(100, true, -5), 100);
    }

    proptest! {
        #[test]
        fn dynamic_values_never_rise_and_stay_in_range(
            initial in 0i64..100_000,
            span in 0i64..100_000,
            decay in 0i64..1000,
            log in any::<bool>(),
            n in 0u64..10_000,
        ) {
            let minimum = initial - span.min(initial);
            let function = if log { DecayFunction::Logarithmic } else { DecayFunction::Linear };
            let a = dynamic_value(function, initial, minimum, decay, n);
            let b = dynamic_value(function, initial, minimum, decay, n + 1);
            prop_assert!(b <= a);
            prop_assert!(a <= initial && a >= minimum);
            prop_assert_eq!(dynamic_value(function, initial, minimum, decay, 1), initial);
        }
    }
}
