//! Worker configuration with the reference defaults, and its validation.

use crate::Duration;
use crate::render::{Render, Secs, Sink, impl_render_outputs, words};

/// How the outage backoff is randomised, with a random `u32` the caller
/// supplies at each step (the core has no RNG).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Jitter {
    /// No jitter: exactly the reference schedule (2, 4, 8, 10, 10 … s) and
    /// no random first phase. A fleet that lost the server together retries
    /// together.
    Off,
    /// "Equal jitter": wait `b/2 + U(0, b/2)` where `b` is the capped
    /// exponential backoff. The default: chosen by the fleet simulation in
    /// `examples/fleet.rs` (spreads a fleet's retries, recovers in under 4 s
    /// median, sends at most ~1.2× the reference's requests).
    Equal,
    /// "Full jitter": wait `U(0, b)`. Spreads best, but sends ~1.6× the
    /// requests of the reference during an outage.
    Full,
}

/// What to do when the server no longer knows this worker (404 on a worker
/// endpoint, for example after a restart that lost its state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OnRegistrationLost {
    /// Stop the worker (the reference's behaviour).
    Stop,
    /// Create the worker and register its jobs again, then carry on.
    Register,
}

/// Every knob of the worker's behaviour. Build one from [`Config::DEFAULT`]
/// (`Config { poll_interval: …, ..Config::DEFAULT }`) and check it with
/// [`Config::validate`]; the worker constructors validate it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// How often to send a heartbeat. Reference: 30 s. Keep it well below
    /// the server's stale-worker timeout (60 s on zndraw-joblib).
    pub heartbeat_interval: Duration,
    /// How long to wait between claims when the queue is empty. Reference: 2 s.
    pub poll_interval: Duration,
    /// Stop once the server has been unreachable for longer than this.
    /// Reference: 120 s. [`Config::NO_LIMIT`]: never stop for an outage
    /// (the backoff stays capped by `backoff_cap`; the outage warning then
    /// reads `(30s elapsed, no limit)`).
    pub max_unreachable: Duration,
    /// At most one outage warning per this interval, across all loops.
    /// Reference: 5 s.
    pub log_interval: Duration,
    /// Cap of the claim backoff `poll · 2^attempt` during an outage, and of a
    /// server's `Retry-After`. Reference: 10 s.
    pub backoff_cap: Duration,
    /// Randomisation of the backoff and of each loop's first phase.
    pub jitter: Jitter,
    /// Startup calls (create worker, register jobs) are retried this many
    /// times after the first attempt. Reference: 5.
    pub startup_retries: u32,
    /// Startup retry `n` (from 0) waits `min(startup_base · 2^n, startup_cap)`
    /// plus up to one `startup_base` of jitter. Reference: 1 s.
    pub startup_base: Duration,
    /// Cap of the startup backoff. Reference: 30 s.
    pub startup_cap: Duration,
    /// What to do when the server forgets the worker.
    pub on_registration_lost: OnRegistrationLost,
    /// Timeout of each request (the runtime enforces it).
    pub request_timeout: Duration,
    /// Timeout of the final `DELETE /workers/{id}`. Reference: 5 s.
    pub disconnect_timeout: Duration,
    /// The runtime can renew the credentials (log in again, read a token
    /// file again): a 401 then renews them once instead of stopping, and
    /// stops only if the renewed token is refused too. ZnDraw's tokens
    /// expire after an hour. Default: off (a fixed token; 401 stops).
    /// Needs the core's `renew` feature (on by default): without it a 401
    /// stops whatever this says.
    pub renew_credentials: bool,
    /// How many tasks run at once, under one worker id and one heartbeat
    /// (1 to [`Config::MAX_CONCURRENCY`]). Each has its own held outcome;
    /// claims and status updates still go one at a time. Default 1 (the
    /// reference). A runtime may support fewer (a device: a const).
    pub concurrency: u8,
    /// How long to wait between claims when the queue is empty *while
    /// task-available push is connected* ([`crate::Lifecycle::push_connected`]): push
    /// wakes the claim loop when a task is submitted, so polling is only
    /// the fallback for a missed event. Default 60 s: with the heartbeat
    /// every 30 s (the server forgets a worker after 60 s without one), an
    /// idle worker then sends 0.05 requests per second — ten times fewer
    /// than polling every 2 s; at 30 s it would be 0.067. Unused without push.
    pub push_poll_interval: Duration,
}

impl Config {
    /// The reference worker's defaults, with equal jitter.
    pub const DEFAULT: Config = Config {
        heartbeat_interval: Duration::from_secs(30),
        poll_interval: Duration::from_secs(2),
        max_unreachable: Duration::from_secs(120),
        log_interval: Duration::from_secs(5),
        backoff_cap: Duration::from_secs(10),
        jitter: Jitter::Equal,
        startup_retries: 5,
        startup_base: Duration::from_secs(1),
        startup_cap: Duration::from_secs(30),
        on_registration_lost: OnRegistrationLost::Stop,
        request_timeout: Duration::from_secs(10),
        disconnect_timeout: Duration::from_secs(5),
        renew_credentials: false,
        concurrency: 1,
        push_poll_interval: Duration::from_secs(60),
    };

    /// The reference schedule exactly: [`Config::DEFAULT`] without jitter.
    pub const REFERENCE: Config = Config {
        jitter: Jitter::Off,
        ..Config::DEFAULT
    };

    /// `max_unreachable` without a limit: the worker never stops because the
    /// server is unreachable, however long that lasts. For a device nobody
    /// restarts: it keeps retrying on the capped backoff (at most one claim
    /// every `backoff_cap`, one heartbeat every `heartbeat_interval`) and
    /// serves again as soon as the server answers. Every other reason to
    /// stop (a refused token, a lost registration under
    /// [`OnRegistrationLost::Stop`]) still stops it.
    ///
    /// ```
    /// use outage_core::Config;
    /// let never_give_up = Config { max_unreachable: Config::NO_LIMIT, ..Config::DEFAULT };
    /// assert!(never_give_up.validate().is_ok());
    /// assert!(!never_give_up.has_outage_limit());
    /// ```
    pub const NO_LIMIT: Duration = Duration::MAX;

    /// False when `max_unreachable` is [`Config::NO_LIMIT`].
    pub const fn has_outage_limit(&self) -> bool {
        self.max_unreachable.as_millis() != Self::NO_LIMIT.as_millis()
    }

    /// The most tasks a worker runs at once ([`Config::concurrency`]).
    pub const MAX_CONCURRENCY: u8 = 16;

    /// The longest duration any setting accepts: 30 days (and
    /// [`Config::NO_LIMIT`] for `max_unreachable`). Longer values
    /// are a mistake (a unit slip) and would risk overflowing instants.
    pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

    /// Check that the values make sense together.
    pub const fn validate(&self) -> Result<(), ConfigError> {
        // One table of names and one of values, checked in loops: on the
        // example firmware 84 bytes less flash than a table of pairs.
        const NAMES: [&str; 10] = [
            "heartbeat_interval",
            "poll_interval",
            "max_unreachable",
            "log_interval",
            "backoff_cap",
            "startup_base",
            "startup_cap",
            "request_timeout",
            "disconnect_timeout",
            "push_poll_interval",
        ];
        // The fields that must not be zero, in the order they are checked.
        const NOT_ZERO: [usize; 7] = [1, 0, 2, 7, 8, 5, 9];
        let max = Self::MAX_DURATION.as_millis();
        let millis = [
            self.heartbeat_interval.as_millis(),
            self.poll_interval.as_millis(),
            // No limit is in range.
            if self.has_outage_limit() {
                self.max_unreachable.as_millis()
            } else {
                max
            },
            self.log_interval.as_millis(),
            self.backoff_cap.as_millis(),
            self.startup_base.as_millis(),
            self.startup_cap.as_millis(),
            self.request_timeout.as_millis(),
            self.disconnect_timeout.as_millis(),
            self.push_poll_interval.as_millis(),
        ];
        let mut i = 0;
        while i < millis.len() {
            if millis[i] > max {
                return Err(ConfigError::TooLong(NAMES[i]));
            }
            i += 1;
        }
        let mut i = 0;
        while i < NOT_ZERO.len() {
            if millis[NOT_ZERO[i]] == 0 {
                return Err(ConfigError::Zero(NAMES[NOT_ZERO[i]]));
            }
            i += 1;
        }
        if self.backoff_cap.as_millis() < self.poll_interval.as_millis() {
            return Err(ConfigError::CapBelowBase {
                cap: "backoff_cap",
                cap_value: self.backoff_cap,
                base: "poll_interval",
                base_value: self.poll_interval,
            });
        }
        if self.startup_cap.as_millis() < self.startup_base.as_millis() {
            return Err(ConfigError::CapBelowBase {
                cap: "startup_cap",
                cap_value: self.startup_cap,
                base: "startup_base",
                base_value: self.startup_base,
            });
        }
        if self.concurrency == 0 || self.concurrency > Self::MAX_CONCURRENCY {
            return Err(ConfigError::Concurrency(self.concurrency));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

impl Config {
    /// The configuration, once it passed [`Config::validate`].
    pub const fn validated(self) -> Result<ValidConfig, ConfigError> {
        match self.validate() {
            Ok(()) => Ok(ValidConfig(self)),
            Err(e) => Err(e),
        }
    }
}

/// A [`Config`] that passed [`Config::validate`] ([`Config::validated`]):
/// what a runtime that checked its configuration once, when it was set up,
/// hands to [`crate::Lifecycle::with_valid`] at every start. A device
/// whose configuration is a constant then carries no validation at run
/// time at all (the compiler folds the one check away: 0.5 KB of flash on
/// the example firmware).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ValidConfig(Config);

impl ValidConfig {
    /// A configuration known to be valid (it came out of a `ValidConfig`).
    pub(crate) const fn checked_already(cfg: Config) -> Self {
        ValidConfig(cfg)
    }

    /// The configuration.
    pub const fn get(&self) -> &Config {
        &self.0
    }
}

impl core::ops::Deref for ValidConfig {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.0
    }
}

/// A [`Config`] that cannot work, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A duration that must be positive is zero.
    Zero(&'static str),
    /// A duration is longer than [`Config::MAX_DURATION`].
    TooLong(&'static str),
    /// `concurrency` is not between 1 and [`Config::MAX_CONCURRENCY`].
    Concurrency(u8),
    /// A cap is below the value it caps.
    CapBelowBase {
        /// Name of the cap field.
        cap: &'static str,
        /// Its value.
        cap_value: Duration,
        /// Name of the base field.
        base: &'static str,
        /// Its value.
        base_value: Duration,
    },
}

impl Render for ConfigError {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        match self {
            ConfigError::Zero(field) => {
                out.words(words!("invalid config: "));
                out.text(field);
                out.words(words!(" must be greater than zero"));
            }
            ConfigError::TooLong(field) => {
                out.words(words!("invalid config: "));
                out.text(field);
                out.words(words!(" must not be longer than 30 days"));
            }
            ConfigError::Concurrency(n) => {
                out.words(words!("invalid config: concurrency "));
                out.num(u64::from(*n));
                out.words(words!(" must be between 1 and 16"));
            }
            ConfigError::CapBelowBase {
                cap,
                cap_value,
                base,
                base_value,
            } => {
                out.words(words!("invalid config: "));
                out.text(cap);
                out.words(words!(" ("));
                Secs(*cap_value).render(out);
                out.words(words!(") must not be below "));
                out.text(base);
                out.words(words!(" ("));
                Secs(*base_value).render(out);
                out.words(words!(")"));
            }
        }
    }
}

impl_render_outputs!(ConfigError);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn defaults_are_the_reference_and_valid() {
        let c = Config::default();
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(c.poll_interval, Duration::from_secs(2));
        assert_eq!(c.max_unreachable, Duration::from_secs(120));
        assert_eq!(c.log_interval, Duration::from_secs(5));
        assert_eq!(c.backoff_cap, Duration::from_secs(10));
        assert_eq!(c.startup_retries, 5);
        assert_eq!(c.on_registration_lost, OnRegistrationLost::Stop);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(Config::REFERENCE.jitter, Jitter::Off);
        assert_eq!(Config::REFERENCE.validate(), Ok(()));
    }

    #[test]
    fn invalid_configs_explain_themselves() {
        let c = Config {
            backoff_cap: Duration::from_secs(1),
            ..Config::DEFAULT
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid config: backoff_cap (1s) must not be below poll_interval (2s)"
        );
        let c = Config {
            max_unreachable: Duration::ZERO,
            ..Config::DEFAULT
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid config: max_unreachable must be greater than zero"
        );
        let c = Config {
            startup_cap: Duration::from_millis(500),
            ..Config::DEFAULT
        };
        assert!(c.validate().is_err());
        let c = Config {
            heartbeat_interval: Duration::from_millis(u64::MAX),
            ..Config::DEFAULT
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid config: heartbeat_interval must not be longer than 30 days"
        );
        let c = Config {
            push_poll_interval: Duration::ZERO,
            ..Config::DEFAULT
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid config: push_poll_interval must be greater than zero"
        );
        assert_eq!(Config::DEFAULT.push_poll_interval, Duration::from_secs(60));
    }
}
