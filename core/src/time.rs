//! Integer time: the core never reads a clock, every timestamp is an argument.
//!
//! [`Instant`] and [`Duration`] are plain milliseconds in a `u64`, so the core
//! needs no floating point and behaves the same on a host and on a
//! microcontroller. A runtime turns its own clock into an [`Instant`] through
//! the [`Clock`] trait; tests use [`ManualClock`] and jump time forward.

use core::cell::Cell;
use core::ops::{Add, AddAssign, Sub};

/// A span of time in whole milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Duration(u64);

impl Duration {
    /// No time at all.
    pub const ZERO: Duration = Duration(0);
    /// The longest representable span.
    pub const MAX: Duration = Duration(u64::MAX);

    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms)
    }

    /// A duration of `s` seconds (saturating).
    pub const fn from_secs(s: u64) -> Self {
        Duration(s.saturating_mul(1000))
    }

    /// Whole milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds, rounded down.
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// `self + rhs`, saturating at [`Duration::MAX`].
    pub const fn saturating_add(self, rhs: Duration) -> Duration {
        Duration(self.0.saturating_add(rhs.0))
    }

    /// `self - rhs`, or zero when `rhs` is longer.
    pub const fn saturating_sub(self, rhs: Duration) -> Duration {
        Duration(self.0.saturating_sub(rhs.0))
    }

    /// `self * 2^exp`, saturating.
    pub const fn saturating_shl(self, exp: u32) -> Duration {
        if exp >= 64 || self.0 > (u64::MAX >> exp) {
            Duration::MAX
        } else {
            Duration(self.0 << exp)
        }
    }

    /// The smaller of two durations.
    pub const fn min(self, other: Duration) -> Duration {
        if self.0 <= other.0 { self } else { other }
    }

    /// A point in `[0, self]` chosen by `rand`, a uniformly random `u32`
    /// supplied by the caller (`0` gives zero, `u32::MAX` gives almost all).
    pub const fn scaled_by(self, rand: u32) -> Duration {
        // (ms * rand) / 2^32 without overflow: u64 * u32 fits in u128.
        Duration(((self.0 as u128 * rand as u128) >> 32) as u64)
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, rhs: Duration) -> Duration {
        self.saturating_add(rhs)
    }
}

/// A point in time: milliseconds since an arbitrary, runtime-chosen epoch
/// (boot, process start, or zero in tests). Only differences are meaningful.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant(u64);

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant(0);

    /// The instant `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, or zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }

    /// The earlier of two instants.
    pub const fn min(self, other: Instant) -> Instant {
        if self.0 <= other.0 { self } else { other }
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub for Instant {
    type Output = Duration;
    /// Saturating: an earlier minus a later instant is zero.
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

/// The seam between the core and a runtime's notion of time.
///
/// The std runtime implements it over `std::time::Instant`, the embassy
/// runtime over `embassy_time::Instant`, and tests use [`ManualClock`].
pub trait Clock {
    /// The current time.
    fn now(&self) -> Instant;
}

/// A clock that only moves when told to: deterministic tests, simulations
/// and replays. Shared by reference (`&ManualClock` is a [`Clock`] too).
#[derive(Debug, Default)]
pub struct ManualClock {
    now: Cell<u64>,
}

impl ManualClock {
    /// A clock reading `start`.
    pub const fn new(start: Instant) -> Self {
        ManualClock {
            now: Cell::new(start.0),
        }
    }

    /// Move time forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now.set(self.now.get().saturating_add(d.0));
    }

    /// Jump to `t`. Time never goes backwards: an earlier `t` is ignored.
    pub fn set(&self, t: Instant) {
        if t.0 > self.now.get() {
            self.now.set(t.0);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        Instant(self.now.get())
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Instant::from_millis(5) - Instant::from_millis(9), Duration::ZERO);
        assert_eq!(Duration::MAX + Duration::from_millis(1), Duration::MAX);
        assert_eq!(Duration::from_secs(2).saturating_shl(3), Duration::from_secs(16));
        assert_eq!(Duration::from_secs(2).saturating_shl(64), Duration::MAX);
        assert_eq!(
            Duration::from_millis(u64::MAX / 2).saturating_shl(2),
            Duration::MAX
        );
    }

    #[test]
    fn scaled_by_spans_the_range() {
        let d = Duration::from_secs(10);
        assert_eq!(d.scaled_by(0), Duration::ZERO);
        assert_eq!(d.scaled_by(u32::MAX / 2 + 1), Duration::from_secs(5));
        assert!(d.scaled_by(u32::MAX) < d);
        assert!(Duration::MAX.scaled_by(u32::MAX) < Duration::MAX);
    }

    #[test]
    fn manual_clock_moves_only_forward() {
        let c = ManualClock::new(Instant::from_millis(10));
        c.advance(Duration::from_millis(5));
        assert_eq!(c.now(), Instant::from_millis(15));
        c.set(Instant::from_millis(3));
        assert_eq!(c.now(), Instant::from_millis(15));
        c.set(Instant::from_millis(30));
        let by_ref: &dyn Clock = &&c;
        assert_eq!(by_ref.now(), Instant::from_millis(30));
    }
}
