//! When a host starts a long-lived handler process again (`outage-worker
//! --serve`): the rule, decided here once, that the runtime only carries
//! out (it spawns, waits and sleeps).
//!
//! - A job whose *first* process never becomes ready is not served at all:
//!   the worker does not start (the user is watching; retrying would only
//!   hide a broken command).
//! - A process that ends unplanned (it exited or was killed, broke the
//!   protocol, never became ready on a restart) is replaced after a
//!   backoff: [`Respawn::FIRST`] doubling per unplanned end in a row, capped
//!   at [`Respawn::CAP`]. A reply to a task (any outcome) resets the row: a
//!   handler that crashes on one bad payload pays 0.5 s, not more.
//! - [`Respawn::MAX_FAILED_STARTS`] restarts in a row that never became
//!   ready: the restarts are given up and the worker stops (it must not spin
//!   on a handler that can no longer start, say its virtualenv was removed).
//! - A planned replacement (recycled after its task limit, or killed after
//!   a task timed out) starts again at once and is no failure.
//!
//! Depends only on [`crate::time`].

use crate::time::Duration;

/// What to do after a handler process ended or failed to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Start a fresh process after this long.
    After(Duration),
    /// Give up: the job's handler cannot be started; the worker stops.
    GiveUp {
        /// The starts that failed in a row.
        failed_starts: u32,
    },
}

/// The restart state of one job's handler processes (one per job, shared by
/// its task slots).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Respawn {
    ever_ready: bool,
    failed_starts: u32,
    unplanned: u32,
}

impl Respawn {
    /// The wait before the first restart after an unplanned end.
    pub const FIRST: Duration = Duration::from_millis(500);
    /// The longest wait between restarts.
    pub const CAP: Duration = Duration::from_secs(30);
    /// Restarts in a row that never became ready before giving up.
    pub const MAX_FAILED_STARTS: u32 = 5;

    /// A fresh rule: no process started yet.
    pub const fn new() -> Respawn {
        Respawn {
            ever_ready: false,
            failed_starts: 0,
            unplanned: 0,
        }
    }

    /// A process announced itself ready.
    pub fn ready(&mut self) {
        self.ever_ready = true;
        self.failed_starts = 0;
    }

    /// A process replied to a task (completed or failed: it works).
    pub fn replied(&mut self) {
        self.unplanned = 0;
    }

    /// A process exited, timed out or broke the protocol before it was
    /// ready. Before any process of the job was ever ready: give up at once.
    pub fn start_failed(&mut self) -> Restart {
        if !self.ever_ready {
            return Restart::GiveUp { failed_starts: 1 };
        }
        self.failed_starts = self.failed_starts.saturating_add(1);
        if self.failed_starts >= Self::MAX_FAILED_STARTS {
            return Restart::GiveUp {
                failed_starts: self.failed_starts,
            };
        }
        Restart::After(self.unplanned_end())
    }

    /// A ready process ended unplanned: exited or killed (mid-task or
    /// idle), a garbage, out-of-order or oversized reply.
    pub fn ended(&mut self) -> Restart {
        Restart::After(self.unplanned_end())
    }

    /// A process replaced on purpose (its task limit, a task timeout, a
    /// stop): no wait, no failure.
    pub fn replaced(&mut self) -> Restart {
        Restart::After(Duration::ZERO)
    }

    fn unplanned_end(&mut self) -> Duration {
        let doublings = self.unplanned.min(16);
        self.unplanned = self.unplanned.saturating_add(1);
        let ms = Self::FIRST.as_millis().saturating_mul(1 << doublings);
        Duration::from_millis(ms.min(Self::CAP.as_millis()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(ms: u64) -> Restart {
        Restart::After(Duration::from_millis(ms))
    }

    #[test]
    fn a_first_process_that_never_becomes_ready_is_not_retried() {
        let mut r = Respawn::new();
        assert_eq!(r.start_failed(), Restart::GiveUp { failed_starts: 1 });
    }

    #[test]
    fn unplanned_ends_back_off_doubling_to_the_cap_and_a_reply_resets() {
        let mut r = Respawn::new();
        r.ready();
        let waits: [Restart; 8] = core::array::from_fn(|_| r.ended());
        assert_eq!(
            waits,
            [
                after(500),
                after(1_000),
                after(2_000),
                after(4_000),
                after(8_000),
                after(16_000),
                after(30_000),
                after(30_000)
            ]
        );
        r.ready();
        r.replied();
        assert_eq!(r.ended(), after(500));
        // Many more ends never overflow, and stay at the cap.
        let waits: [Duration; 100] = core::array::from_fn(|_| r.ended().max_wait());
        assert!(waits.iter().all(|w| *w <= Respawn::CAP));
        assert_eq!(waits[99], Respawn::CAP);
    }

    #[test]
    fn restarts_that_never_become_ready_are_given_up_after_five() {
        let mut r = Respawn::new();
        r.ready();
        assert_eq!(r.ended(), after(500));
        // Each restart dies before it is ready: the waits go on doubling.
        assert_eq!(r.start_failed(), after(1_000));
        assert_eq!(r.start_failed(), after(2_000));
        assert_eq!(r.start_failed(), after(4_000));
        assert_eq!(r.start_failed(), after(8_000));
        assert_eq!(r.start_failed(), Restart::GiveUp { failed_starts: 5 });
    }

    #[test]
    fn a_ready_restart_clears_the_failed_starts() {
        let mut r = Respawn::new();
        r.ready();
        for _ in 0..4 {
            assert!(matches!(r.start_failed(), Restart::After(_)));
        }
        r.ready();
        for _ in 0..4 {
            assert!(matches!(r.start_failed(), Restart::After(_)));
        }
        assert!(matches!(r.start_failed(), Restart::GiveUp { .. }));
    }

    #[test]
    fn planned_replacements_wait_for_nothing_and_count_for_nothing() {
        let mut r = Respawn::new();
        r.ready();
        for _ in 0..10 {
            assert_eq!(r.replaced(), after(0));
        }
        assert_eq!(r.ended(), after(500));
    }

    impl Restart {
        fn max_wait(self) -> Duration {
            match self {
                Restart::After(d) => d,
                Restart::GiveUp { .. } => Duration::MAX,
            }
        }
    }
}
