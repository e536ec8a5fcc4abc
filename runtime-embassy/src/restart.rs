//! Restarting a worker that stopped by itself: a device has no service
//! manager to start it again, so [`Worker::supervise`](crate::Worker::supervise)
//! does, after a capped backoff, for as long as the device runs.

use outage_core::{Duration, Jitter, backoff};

/// When a stopped worker starts again: a capped exponential backoff between
/// restarts, reset by a run that stayed up long enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Restart {
    /// The wait before the first restart of a streak; each restart that
    /// follows soon after the previous one doubles it.
    pub first: Duration,
    /// The longest wait between two restarts.
    pub cap: Duration,
    /// A run that stayed registered at least this long ends the streak: the
    /// next wait is `first` again.
    pub healthy_after: Duration,
}

impl Restart {
    /// 5 s, doubling to at most 60 s; a run of 5 min resets it.
    ///
    /// With the core's default startup schedule a restart that finds the
    /// server still down spends about 30 s retrying before it gives up, so
    /// at the cap a gateway asks about every 1.5 min — a few requests, not a
    /// load — and is back within that time once the server is.
    pub const DEFAULT: Restart = Restart {
        first: Duration::from_secs(5),
        cap: Duration::from_secs(60),
        healthy_after: Duration::from_secs(300),
    };

    /// The wait before a restart, `streak` restarts into a streak (from 0),
    /// randomised like the outage backoff (`jitter`, with a random `rand`).
    pub const fn wait(&self, streak: u32, jitter: Jitter, rand: u32) -> Duration {
        backoff(self.first, self.cap, streak, jitter, rand)
    }

    /// The streak after a run that stayed registered for `ran` (zero when it
    /// never registered), `streak` restarts into the previous streak.
    pub const fn streak_after(&self, streak: u32, ran: Duration) -> u32 {
        if ran.as_millis() >= self.healthy_after.as_millis() {
            0
        } else {
            streak
        }
    }
}

impl Default for Restart {
    fn default() -> Self {
        Restart::DEFAULT
    }
}

/// Why a supervised worker is started again (the core's: its restart line
/// is the core's [`outage_core::Event::Restarting`]).
pub use outage_core::Stopped;

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use outage_core::{Endpoint, Failure, StartupError, StopReason, Transport};
    use std::string::ToString;

    #[test]
    fn waits_double_to_the_cap_and_reset_after_a_healthy_run() {
        let p = Restart::DEFAULT;
        let waits: [u64; 6] = core::array::from_fn(|n| p.wait(n as u32, Jitter::Off, 0).as_secs());
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(p.wait(u32::MAX, Jitter::Off, 0), p.cap);
        for n in 0..10 {
            let w = p.wait(n, Jitter::Equal, u32::MAX / 3);
            assert!(w <= p.cap && w.as_millis() >= p.wait(n, Jitter::Off, 0).as_millis() / 2);
        }
        assert_eq!(p.streak_after(4, Duration::from_secs(299)), 4);
        assert_eq!(p.streak_after(4, Duration::from_secs(300)), 0);
    }

    #[test]
    fn says_why() {
        let why = Stopped::Stop(StopReason::Unreachable {
            last_error: Failure::Transport(Transport::ConnectionRefused),
        });
        assert_eq!(
            why.to_string(),
            "stopped: server unreachable for too long (last error: Connection refused)"
        );
        let why = Stopped::Startup(StartupError {
            what: Endpoint::CreateWorker,
            error: Failure::status(401),
            retries: 0,
        });
        assert!(
            why.to_string()
                .starts_with("could not start: create worker failed: ")
        );
    }
}
