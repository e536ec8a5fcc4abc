//! The outage clock shared by every loop of a worker.

use crate::{Duration, Failure, Instant};

/// Outage bookkeeping, exactly the reference semantics:
///
/// - the first failure starts the outage clock; later failures don't move it;
/// - any success ends the outage **and resets the log throttle**, so a new
///   outage is never silent (review finding 1);
/// - `elapsed` is zero while healthy; stop once `elapsed > max`;
/// - at most one warning per log interval, across all loops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outage {
    start: Option<Instant>,
    last_log: Option<Instant>,
    last_error: Option<Failure>,
}

impl Outage {
    /// A healthy state.
    pub const fn new() -> Self {
        Outage {
            start: None,
            last_log: None,
            last_error: None,
        }
    }

    /// A request failed at `now` because the server is unreachable.
    pub fn record_failure(&mut self, now: Instant, error: Failure) {
        if self.start.is_none() {
            self.start = Some(now);
        }
        self.last_error = Some(error);
    }

    /// The server answered at `now`. Returns how long the outage it ended
    /// lasted, or `None` if there was none.
    pub fn record_success(&mut self, now: Instant) -> Option<Duration> {
        let ended = self.start.take().map(|start| now - start);
        self.last_log = None;
        self.last_error = None;
        ended
    }

    /// True while no outage is running.
    pub const fn is_healthy(&self) -> bool {
        self.start.is_none()
    }

    /// When the running outage began.
    pub const fn started_at(&self) -> Option<Instant> {
        self.start
    }

    /// Time since the outage began; zero while healthy.
    pub fn elapsed(&self, now: Instant) -> Duration {
        match self.start {
            Some(start) => now - start,
            None => Duration::ZERO,
        }
    }

    /// Time left before `elapsed > max`; zero once exceeded.
    pub fn remaining(&self, now: Instant, max: Duration) -> Duration {
        max.saturating_sub(self.elapsed(now))
    }

    /// True once the outage has lasted longer than `max`.
    pub fn should_stop(&self, now: Instant, max: Duration) -> bool {
        self.start.is_some() && self.elapsed(now) > max
    }

    /// Whether a warning may be logged at `now`; if so, the throttle is
    /// armed for `interval`.
    pub fn should_log(&mut self, now: Instant, interval: Duration) -> bool {
        let allowed = match self.last_log {
            None => true,
            Some(last) => now - last >= interval,
        };
        if allowed {
            self.last_log = Some(now);
        }
        allowed
    }

    /// The most recent failure of the running outage.
    pub const fn last_error(&self) -> Option<Failure> {
        self.last_error
    }
}

/// The reference's nine unit tests, translated (manual clock, no sleeping),
/// plus review finding 1.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, ManualClock, Transport};

    const MAX: Duration = Duration::from_secs(120);
    const LOG: Duration = Duration::from_secs(5);
    const REFUSED: Failure = Failure::Transport(Transport::ConnectionRefused);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn initial_state() {
        let clock = ManualClock::new(Instant::from_millis(1_000));
        let o = Outage::new();
        assert!(o.is_healthy());
        assert_eq!(o.elapsed(clock.now()), Duration::ZERO);
        assert!(!o.should_stop(clock.now(), MAX));
        assert_eq!(o.last_error(), None);
    }

    #[test]
    fn failure_starts_the_clock() {
        let clock = ManualClock::new(Instant::from_millis(1_000));
        let mut o = Outage::new();
        o.record_failure(clock.now(), REFUSED);
        assert!(!o.is_healthy());
        clock.advance(secs(10));
        assert_eq!(o.elapsed(clock.now()), secs(10));
        assert_eq!(o.last_error(), Some(REFUSED));
    }

    #[test]
    fn repeated_failures_do_not_reset_the_clock() {
        let clock = ManualClock::new(Instant::ZERO);
        let mut o = Outage::new();
        o.record_failure(clock.now(), REFUSED);
        clock.advance(secs(10));
        o.record_failure(clock.now(), Failure::status(502));
        clock.advance(secs(10));
        assert_eq!(o.elapsed(clock.now()), secs(20));
        assert_eq!(o.last_error(), Some(Failure::status(502)));
    }

    #[test]
    fn success_resets() {
        let clock = ManualClock::new(Instant::ZERO);
        let mut o = Outage::new();
        o.record_failure(clock.now(), REFUSED);
        clock.advance(secs(30));
        assert_eq!(o.record_success(clock.now()), Some(secs(30)));
        assert!(o.is_healthy());
        assert_eq!(o.elapsed(clock.now()), Duration::ZERO);
        assert_eq!(o.record_success(clock.now()), None);
    }

    #[test]
    fn shutdown_after_max() {
        let clock = ManualClock::new(Instant::ZERO);
        let mut o = Outage::new();
        o.record_failure(clock.now(), REFUSED);
        clock.advance(MAX + Duration::from_millis(1));
        assert!(o.should_stop(clock.now(), MAX));
    }

    #[test]
    fn no_shutdown_before_max() {
        let clock = ManualClock::new(Instant::ZERO);
        let mut o = Outage::new();
        o.record_failure(clock.now(), REFUSED);
        clock.advance(MAX);
        // `elapsed > max`, strictly: exactly max is not yet too long.
        assert!(!o.should_stop(clock.now(), MAX));
        assert_eq!(o.remaining(clock.now(), MAX), Duration::ZERO);
    }

    #[test]
    fn first_log_allowed() {
        let clock = ManualClock::new(Instant::ZERO);
        let mut o = Outage::new();
        o.record_failure(clock.now(), REFUSED);
        assert!(o.should_log(clock.now(), LOG));
    }

    #[test]
    fn log_rate_limit() {
        let clock = ManualClock::new(Instant::ZERO);
        let mut o = Outage::new();
        o.record_failure(clock.now(), REFUSED);
        assert!(o.should_log(clock.now(), LOG));
        clock.advance(secs(2));
        assert!(!o.should_log(clock.now(), LOG));
        clock.advance(secs(3));
        assert!(o.should_log(clock.now(), LOG));
    }

    #[test]
    fn recovery_starts_fresh() {
        let clock = ManualClock::new(Instant::ZERO);
        let mut o = Outage::new();
        o.record_failure(clock.now(), REFUSED);
        clock.advance(secs(100));
        o.record_success(clock.now());
        clock.advance(secs(5));
        o.record_failure(clock.now(), REFUSED);
        clock.advance(secs(30));
        assert_eq!(o.elapsed(clock.now()), secs(30));
        assert!(!o.should_stop(clock.now(), MAX));
    }

    /// Review finding 1: the log throttle survived recovery, so a new
    /// outage right after a recovery started silent.
    #[test]
    fn review_finding_1_recovery_resets_the_log_throttle() {
        let clock = ManualClock::new(Instant::ZERO);
        let mut o = Outage::new();
        o.record_failure(clock.now(), REFUSED);
        assert!(o.should_log(clock.now(), LOG));
        clock.advance(secs(1));
        o.record_success(clock.now());
        clock.advance(secs(1));
        o.record_failure(clock.now(), REFUSED);
        assert!(o.should_log(clock.now(), LOG), "a new outage must warn at once");
    }
}
