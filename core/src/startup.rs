//! Startup: create the worker and register its jobs, with the reference's
//! retry schedule (`min(base·2^n, cap) + U(0, base)`, 5 retries by default).
//! Fatal and rejected answers are not retried.

pub use crate::error::StartupError;
use crate::{Class, Config, Duration, Endpoint, Event, Failure, Instant};

/// What to do after a startup request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartupStep {
    /// Try the same request again at this instant.
    RetryAt(Instant),
    /// Give up: the worker cannot start.
    GiveUp(StartupError),
}

/// Retry bookkeeping for one startup request (create one `StartupRetry`
/// per request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartupRetry {
    retries: u32,
}

impl StartupRetry {
    /// No retries made yet.
    pub const fn new() -> Self {
        StartupRetry { retries: 0 }
    }

    /// Retries made so far.
    pub const fn retries(&self) -> u32 {
        self.retries
    }

    /// `what`, started at `started`, failed. Returns the next step and the
    /// event to log.
    pub fn on_failure(
        &mut self,
        cfg: &Config,
        what: Endpoint,
        started: Instant,
        failure: Failure,
        rand: u32,
    ) -> (StartupStep, Event<'static>) {
        let retryable = matches!(failure.classify(what), Class::Transient | Class::Congested { .. });
        if !retryable || self.retries >= cfg.startup_retries {
            let err = StartupError {
                what,
                error: failure,
                retries: self.retries,
            };
            return (
                StartupStep::GiveUp(err),
                Event::StartupFailed { what, error: failure },
            );
        }
        let mut wait = cfg
            .startup_base
            .saturating_shl(self.retries)
            .min(cfg.startup_cap)
            .saturating_add(cfg.startup_base.scaled_by(rand));
        if let Class::Congested {
            retry_after: Some(ra),
        } = failure.classify(what)
            && ra > wait
        {
            wait = ra.min(cfg.startup_cap);
        }
        self.retries += 1;
        let event = Event::StartupRetry {
            what,
            error: failure,
            retry: self.retries,
            retries: cfg.startup_retries,
            wait,
        };
        (StartupStep::RetryAt(started + wait), event)
    }
}

/// The reference's startup waits without their random part, for docs/tests.
pub fn startup_wait_floor(cfg: &Config, retry: u32) -> Duration {
    cfg.startup_base.saturating_shl(retry).min(cfg.startup_cap)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::Transport;
    use std::string::ToString;

    const REFUSED: Failure = Failure::Transport(Transport::ConnectionRefused);

    #[test]
    fn five_retries_on_the_reference_schedule_then_give_up() {
        let cfg = Config::DEFAULT;
        let mut r = StartupRetry::new();
        let mut t = Instant::ZERO;
        let mut waits = std::vec::Vec::new();
        loop {
            match r.on_failure(&cfg, Endpoint::CreateWorker, t, REFUSED, 0).0 {
                StartupStep::RetryAt(at) => {
                    waits.push((at - t).as_secs());
                    t = at;
                }
                StartupStep::GiveUp(e) => {
                    assert_eq!(e.retries, 5);
                    assert_eq!(
                        e.to_string(),
                        "create worker failed: Connection refused (after 5 retries)"
                    );
                    break;
                }
            }
        }
        assert_eq!(waits, [1, 2, 4, 8, 16]);
    }

    #[test]
    fn jitter_adds_up_to_one_base() {
        let cfg = Config::DEFAULT;
        let mut r = StartupRetry::new();
        let (step, event) = r.on_failure(&cfg, Endpoint::CreateWorker, Instant::ZERO, REFUSED, u32::MAX);
        let StartupStep::RetryAt(at) = step else { panic!() };
        assert!(at.as_millis() >= 1_000 && at.as_millis() < 2_000);
        assert_eq!(
            event.to_string(),
            "Startup: create worker failed (Connection refused); retry 1/5 in 1.9s"
        );
    }

    #[test]
    fn fatal_and_rejected_are_not_retried() {
        let cfg = Config::DEFAULT;
        for (what, f) in [
            (Endpoint::CreateWorker, Failure::status(401)),
            (Endpoint::RegisterJob, Failure::status(409)),
            (Endpoint::RegisterJob, Failure::status(403)),
            (Endpoint::RegisterJob, Failure::status(400)),
        ] {
            let mut r = StartupRetry::new();
            let (step, event) = r.on_failure(&cfg, what, Instant::ZERO, f, 0);
            assert!(matches!(
                step,
                StartupStep::GiveUp(StartupError { retries: 0, .. })
            ));
            assert!(matches!(event, Event::StartupFailed { .. }));
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let cfg = Config::DEFAULT;
        let mut r = StartupRetry::new();
        let f = Failure::Status {
            status: 503,
            retry_after: Some(Duration::from_secs(600)),
        };
        let (step, _) = r.on_failure(&cfg, Endpoint::CreateWorker, Instant::ZERO, f, 0);
        assert_eq!(step, StartupStep::RetryAt(Instant::ZERO + cfg.startup_cap));
        assert_eq!(startup_wait_floor(&cfg, 10), cfg.startup_cap);
    }
}
