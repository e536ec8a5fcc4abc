//! Task-available push, as a hint.
//!
//! A job server may push `task_available` when a task is submitted to one
//! of the worker's jobs (ZnDraw does, over Socket.IO). The core treats it
//! as a *hint*, never as an assignment: the claim over REST stays the only
//! authority, so an event for a task someone else claimed costs one empty
//! claim and nothing else.
//!
//! * A hint wakes an idle claim loop at once ([`crate::Lifecycle::push_hint`]),
//!   except during an outage (the backoff stands: only REST answers end an
//!   outage) or before a server's `Retry-After` has passed.
//! * While the push connection is up ([`crate::Lifecycle::push_connected`]), an empty
//!   claim waits [`crate::Config::push_poll_interval`] (default 60 s)
//!   instead of `poll_interval`: polling is only the fallback for a missed
//!   event. When the connection comes up or goes away, the claim loop claims
//!   at once (tasks submitted while nobody listened sent their event to
//!   nobody), and without it polls on `poll_interval` again.
//! * A push connection that fails is *not* a server outage: no countdown,
//!   no outage warning. [`PushLink`] schedules its reconnection on the
//!   claim backoff, jittered.
//!
//! A runtime feeds the driver through [`crate::driver::Io::push`]
//! ([`PushInput`]); a runtime without push (the embassy one) builds the core
//! without this feature (`push`), and the core polls exactly as before.

use crate::{Config, Duration, Instant, backoff};

/// Whether a worker uses push.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PushMode {
    /// Never: poll.
    Off,
    /// When the server offers it: a server that answers that it serves no
    /// push (no Socket.IO) before push ever worked is not asked again.
    #[default]
    Auto,
    /// Always try, and keep trying on the backoff when it fails.
    On,
}

/// What a runtime's push connection tells the driver
/// ([`crate::driver::Io::push`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushInput {
    /// The push connection is up and listens for every job of the worker.
    pub connected: bool,
    /// How many hints for the worker's jobs arrived so far (a wrapping
    /// counter: a change is a hint).
    pub hints: u32,
}

/// The push connection's reconnect schedule: when to connect, and when to
/// try again after it failed or was lost (the claim backoff,
/// `poll_interval · 2^n` capped by `backoff_cap`, with the configured
/// jitter, from the first failure after a connection that lasted at least
/// `backoff_cap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushLink {
    mode: PushMode,
    /// Since when the connection is up.
    up_since: Option<Instant>,
    /// It was up at least once.
    ever_up: bool,
    /// Failures since it last stayed up: the backoff exponent.
    attempt: u32,
    /// The next attempt (`None`: never).
    next: Option<Instant>,
}

impl PushLink {
    /// A link that connects at `now` (never with [`PushMode::Off`]).
    pub const fn new(mode: PushMode, now: Instant) -> Self {
        PushLink {
            mode,
            up_since: None,
            ever_up: false,
            attempt: 0,
            next: match mode {
                PushMode::Off => None,
                _ => Some(now),
            },
        }
    }

    /// True while the connection is up.
    pub const fn is_up(&self) -> bool {
        self.up_since.is_some()
    }

    /// When to connect next: `None` while up, with push off, or after the
    /// server said it offers no push ([`PushMode::Auto`]).
    pub const fn connect_at(&self) -> Option<Instant> {
        match self.up_since {
            Some(_) => None,
            None => self.next,
        }
    }

    /// The connection is up (and listening) at `now`.
    pub fn up(&mut self, now: Instant) {
        self.up_since = Some(now);
        self.ever_up = true;
    }

    /// The connection could not be made, or was lost, at `now`; `no_push`:
    /// the server said it serves no push at all. Returns how long until the
    /// next attempt, or `None` when there is none (see
    /// [`PushLink::connect_at`]).
    pub fn down(&mut self, cfg: &Config, now: Instant, no_push: bool, rand: u32) -> Option<Duration> {
        if self.mode == PushMode::Off {
            return None;
        }
        if let Some(since) = self.up_since.take()
            && now - since >= cfg.backoff_cap
        {
            self.attempt = 0;
        }
        if no_push && self.mode == PushMode::Auto && !self.ever_up {
            self.next = None;
            return None;
        }
        let wait = backoff(cfg.poll_interval, cfg.backoff_cap, self.attempt, cfg.jitter, rand);
        self.attempt = self.attempt.saturating_add(1);
        self.next = Some(now + wait);
        Some(wait)
    }

    /// Connect again at once (new credentials): a link that is not given up
    /// tries at `now`.
    pub fn retry_now(&mut self, now: Instant) {
        if self.next.is_some() {
            self.next = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Jitter;

    const T0: Instant = Instant::ZERO;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    #[test]
    fn off_never_connects() {
        let mut l = PushLink::new(PushMode::Off, T0);
        assert_eq!(l.connect_at(), None);
        assert_eq!(l.down(&Config::REFERENCE, T0, false, 0), None);
        l.retry_now(T0);
        assert_eq!(l.connect_at(), None);
    }

    #[test]
    fn reconnects_on_the_claim_backoff_and_resets_after_staying_up() {
        let cfg = Config::REFERENCE;
        let mut l = PushLink::new(PushMode::On, T0);
        assert_eq!(l.connect_at(), Some(T0));
        // 2, 4, 8, 10, 10 s: the reference claim backoff.
        let mut now = T0;
        for want in [2_000, 4_000, 8_000, 10_000, 10_000] {
            let wait = l.down(&cfg, now, false, 0).expect("retries");
            assert_eq!(wait, Duration::from_millis(want));
            now += wait;
            assert_eq!(l.connect_at(), Some(now));
        }
        // Up briefly: a flapping connection keeps its backoff.
        l.up(now);
        assert!(l.is_up());
        assert_eq!(l.connect_at(), None);
        now += Duration::from_secs(1);
        assert_eq!(l.down(&cfg, now, false, 0), Some(Duration::from_secs(10)));
        // Up for a while: the next loss retries quickly again.
        l.up(now);
        now += Duration::from_secs(60);
        assert_eq!(l.down(&cfg, now, false, 0), Some(Duration::from_secs(2)));
        // New credentials: at once.
        l.retry_now(ms(70_000));
        assert_eq!(l.connect_at(), Some(ms(70_000)));
    }

    #[test]
    fn jittered_reconnects_spread() {
        let cfg = Config {
            jitter: Jitter::Equal,
            ..Config::DEFAULT
        };
        let mut l = PushLink::new(PushMode::On, T0);
        let a = l.down(&cfg, T0, false, 0).unwrap();
        let mut l = PushLink::new(PushMode::On, T0);
        let b = l.down(&cfg, T0, false, u32::MAX).unwrap();
        assert_eq!(a, Duration::from_secs(1));
        assert!(b > a && b <= Duration::from_secs(2), "{b:?}");
    }

    #[test]
    fn auto_gives_up_on_a_server_without_push_only_before_it_ever_worked() {
        let cfg = Config::REFERENCE;
        let mut l = PushLink::new(PushMode::Auto, T0);
        assert_eq!(l.down(&cfg, T0, true, 0), None);
        assert_eq!(l.connect_at(), None);
        l.retry_now(ms(5));
        assert_eq!(l.connect_at(), None, "given up for good");
        // Other failures are retried.
        let mut l = PushLink::new(PushMode::Auto, T0);
        assert_eq!(l.down(&cfg, T0, false, 0), Some(Duration::from_secs(2)));
        // Once it worked, a server restarted without push is asked again.
        l.up(ms(2_000));
        assert_eq!(l.down(&cfg, ms(90_000), true, 0), Some(Duration::from_secs(2)));
        // `On` never gives up.
        let mut l = PushLink::new(PushMode::On, T0);
        assert_eq!(l.down(&cfg, T0, true, 0), Some(Duration::from_secs(2)));
    }
}
