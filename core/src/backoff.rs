//! Capped exponential backoff with caller-supplied randomness.

use crate::{Duration, Jitter};

/// `min(base · 2^attempt, cap)`, jittered, then clamped to `cap`.
///
/// `attempt` counts from 0 (the wait after the first failure); `rand` is a
/// uniformly random `u32` from the caller. With [`Jitter::Off`] this is the
/// reference schedule: 2, 4, 8, 10, 10 … s for base 2 s and cap 10 s.
pub const fn backoff(base: Duration, cap: Duration, attempt: u32, jitter: Jitter, rand: u32) -> Duration {
    let b = base.saturating_shl(attempt).min(cap);
    let waited = match jitter {
        Jitter::Off => b,
        Jitter::Equal => {
            let half = Duration::from_millis(b.as_millis() / 2);
            half.saturating_add(b.saturating_sub(half).scaled_by(rand))
        }
        Jitter::Full => b.scaled_by(rand),
    };
    waited.min(cap)
}

/// The random first phase of a loop with period `period`: `U(0, period)`,
/// or zero without jitter (the reference starts both loops at once).
pub const fn first_phase(period: Duration, jitter: Jitter, rand: u32) -> Duration {
    match jitter {
        Jitter::Off => Duration::ZERO,
        Jitter::Equal | Jitter::Full => period.scaled_by(rand),
    }
}

/// SplitMix64: a tiny, seeded generator for the `rand` numbers the core asks
/// its caller for. The core itself never draws randomness; runtimes seed one
/// of these from real entropy (the OS, a hardware RNG) and draw from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S2: Duration = Duration::from_secs(2);
    const S10: Duration = Duration::from_secs(10);

    #[test]
    fn reference_schedule_without_jitter() {
        let waits: [u64; 6] =
            core::array::from_fn(|i| backoff(S2, S10, i as u32, Jitter::Off, 12345).as_secs());
        assert_eq!(waits, [2, 4, 8, 10, 10, 10]);
        assert_eq!(backoff(S2, S10, u32::MAX, Jitter::Off, 0), S10);
    }

    #[test]
    fn equal_jitter_stays_in_the_upper_half() {
        for attempt in 0..8 {
            let b = S2.saturating_shl(attempt).min(S10);
            for rand in [0, 1, u32::MAX / 3, u32::MAX / 2, u32::MAX] {
                let w = backoff(S2, S10, attempt, Jitter::Equal, rand);
                assert!(
                    w.as_millis() >= b.as_millis() / 2 && w <= b,
                    "{attempt} {rand} {w:?}"
                );
            }
        }
    }

    #[test]
    fn full_jitter_spans_zero_to_cap() {
        assert_eq!(backoff(S2, S10, 5, Jitter::Full, 0), Duration::ZERO);
        assert!(backoff(S2, S10, 5, Jitter::Full, u32::MAX) <= S10);
    }

    #[test]
    fn splitmix_is_deterministic_and_spread() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let xs: [u32; 4] = core::array::from_fn(|_| a.next_u32());
        let ys: [u32; 4] = core::array::from_fn(|_| b.next_u32());
        assert_eq!(xs, ys);
        assert!(xs.windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn first_phase_is_within_the_period() {
        assert_eq!(first_phase(S2, Jitter::Off, u32::MAX), Duration::ZERO);
        assert!(first_phase(S2, Jitter::Equal, u32::MAX) < S2);
    }
}
