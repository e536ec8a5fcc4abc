//! (Feature `ops`.) What a worker is doing, in one line and two answers: its [`Status`]
//! (systemd's `STATUS=`, a dashboard, a device's display), whether it is
//! ready (registered and not in an outage) — read from a [`Snapshot`], so
//! every runtime shows the same.

use crate::render::{Render, Sink, impl_render_outputs, words};
use crate::{Duration, Event, Instant, Snapshot, Stage, StartupError, StopReason};

/// A worker's state at one instant, for people: rendered as one line
/// (`Display`, or [`Render`] into any sink).
///
/// ```
/// use outage_core::{Duration, Stage, Status};
/// let s = Status {
///     stage: Stage::Running,
///     stop: None,
///     startup_error: None,
///     outage: Some(Duration::from_millis(30_500)),
///     max_unreachable: Duration::from_secs(120),
///     jobs: 2,
///     running: 1,
///     waiting: 0,
/// };
/// assert_eq!(s.to_string(), "Server unreachable — retrying (30s/120s elapsed); 1 task running");
/// assert!(!s.is_ready());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Where its life is.
    pub stage: Stage,
    /// Why it stops, once it does.
    pub stop: Option<StopReason>,
    /// Why startup gave up, if it did.
    pub startup_error: Option<StartupError>,
    /// How long the running outage has lasted (`None`: no outage).
    pub outage: Option<Duration>,
    /// [`crate::Config::max_unreachable`].
    pub max_unreachable: Duration,
    /// Jobs served.
    pub jobs: u16,
    /// Tasks whose handler runs.
    pub running: u8,
    /// Outcomes not yet delivered.
    pub waiting: u8,
}

impl Status {
    /// Registered, serving, and the server answers: what a readiness probe
    /// asks. Not ready while starting, during an outage, once stopping.
    pub const fn is_ready(&self) -> bool {
        matches!(self.stage, Stage::Running) && self.stop.is_none() && self.outage.is_none()
    }
}

impl Snapshot {
    /// How long the running outage has lasted at `now` (`None`: none).
    pub fn outage_elapsed(&self, now: Instant) -> Option<Duration> {
        self.detail.outage_since.map(|since| now - since)
    }

    /// How long ago the server last confirmed the worker (registration, or
    /// an accepted heartbeat), at `now`.
    pub fn confirmed_age(&self, now: Instant) -> Option<Duration> {
        self.detail.confirmed_at.map(|at| now - at)
    }

    /// The worker's [`Status`] at `now`.
    pub fn status(&self, now: Instant) -> Status {
        Status {
            stage: self.stage,
            stop: self.stop,
            startup_error: self.startup_error,
            outage: self.outage_elapsed(now),
            max_unreachable: self.detail.max_unreachable,
            jobs: self.detail.jobs,
            running: self.detail.running,
            waiting: self.detail.waiting,
        }
    }

    /// Ready ([`Status::is_ready`]): registered, serving, and not in an
    /// outage.
    pub const fn is_ready(&self) -> bool {
        matches!(self.stage, Stage::Running) && self.stop.is_none() && self.detail.outage_since.is_none()
    }
}

/// `; 1 task running`, `; 2 outcomes to deliver` (nothing for zero).
fn counts<S: Sink + ?Sized>(out: &mut S, running: u8, waiting: u8, held: bool) {
    if running > 0 {
        out.words(words!("; "));
        out.num(u64::from(running));
        out.words(if running == 1 {
            words!(" task running")
        } else {
            words!(" tasks running")
        });
    }
    if waiting > 0 {
        out.words(words!("; "));
        out.num(u64::from(waiting));
        out.words(match (waiting == 1, held) {
            (true, true) => words!(" outcome held"),
            (false, true) => words!(" outcomes held"),
            (true, false) => words!(" outcome to deliver"),
            (false, false) => words!(" outcomes to deliver"),
        });
    }
}

impl Render for Status {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        let jobs = |out: &mut S| {
            out.num(u64::from(self.jobs));
            out.words(if self.jobs == 1 {
                words!(" job")
            } else {
                words!(" jobs")
            });
        };
        match (self.stage, self.stop) {
            (Stage::Done, _) => match (self.startup_error, self.stop) {
                (Some(e), _) => {
                    out.words(words!("Could not start: "));
                    e.render(out);
                }
                (None, Some(reason)) => {
                    out.words(words!("Stopped: "));
                    reason.render(out);
                }
                (None, None) => out.words(words!("Stopped")),
            },
            (Stage::Stopping, _) | (Stage::Running, Some(_)) => {
                out.words(words!("Stopping: "));
                match self.stop {
                    Some(reason) => reason.render(out),
                    None => out.words(words!("stop requested")),
                }
                counts(out, self.running, self.waiting, false);
            }
            (Stage::Starting, _) => {
                out.words(words!("Starting: registering "));
                jobs(out);
            }
            (Stage::Running, None) => match self.outage {
                Some(elapsed) => {
                    Event::OutageWarning {
                        elapsed,
                        max: self.max_unreachable,
                    }
                    .render(out);
                    counts(out, self.running, self.waiting, true);
                }
                None => {
                    out.words(words!("Serving "));
                    jobs(out);
                    counts(out, self.running, self.waiting, false);
                }
            },
        }
    }
}

impl_render_outputs!(Status);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::{Endpoint, Failure, Transport};
    use std::string::ToString;

    fn running() -> Status {
        Status {
            stage: Stage::Running,
            stop: None,
            startup_error: None,
            outage: None,
            max_unreachable: Duration::from_secs(120),
            jobs: 1,
            running: 0,
            waiting: 0,
        }
    }

    #[test]
    fn lines() {
        let s = running();
        assert_eq!(s.to_string(), "Serving 1 job");
        assert!(s.is_ready());
        let s = Status {
            jobs: 2,
            running: 2,
            waiting: 1,
            ..running()
        };
        assert_eq!(
            s.to_string(),
            "Serving 2 jobs; 2 tasks running; 1 outcome to deliver"
        );
        let s = Status {
            outage: Some(Duration::from_secs(30)),
            waiting: 2,
            ..running()
        };
        assert_eq!(
            s.to_string(),
            "Server unreachable — retrying (30s/120s elapsed); 2 outcomes held"
        );
        assert!(!s.is_ready());
        let s = Status {
            stage: Stage::Starting,
            jobs: 3,
            ..running()
        };
        assert_eq!(s.to_string(), "Starting: registering 3 jobs");
        assert!(!s.is_ready());
        let s = Status {
            stop: Some(StopReason::Requested),
            running: 1,
            ..running()
        };
        assert_eq!(s.to_string(), "Stopping: stop requested; 1 task running");
        assert!(!s.is_ready());
        let refused = Failure::Transport(Transport::ConnectionRefused);
        let s = Status {
            stage: Stage::Done,
            stop: Some(StopReason::Unreachable { last_error: refused }),
            ..running()
        };
        assert_eq!(
            s.to_string(),
            "Stopped: server unreachable for too long (last error: Connection refused)"
        );
        let e = StartupError {
            what: Endpoint::CreateWorker,
            error: refused,
            retries: 5,
        };
        let s = Status {
            stage: Stage::Done,
            startup_error: Some(e),
            ..running()
        };
        assert_eq!(s.to_string(), std::format!("Could not start: {e}"));
    }
}
