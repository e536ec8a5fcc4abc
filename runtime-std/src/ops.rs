//! What a worker tells its operators as it runs: metrics (feature
//! `metrics`), systemd notifications and its watchdog, and the worker id
//! its log lines carry. Fed by the worker's I/O ([`crate::worker`]) from
//! the core's events and snapshots; no decision is made here.

use std::sync::Mutex;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use outage_core::{Clock, Event, Snapshot, Stage};

use crate::StdClock;
use crate::sync::lock;
use crate::systemd::{Notifier, status_line};

/// The longest the driver sleeps when something watches it (metrics'
/// health, systemd's watchdog): it turns at least this often.
const TICK: StdDuration = StdDuration::from_secs(5);

/// What the builder hands over.
#[derive(Default)]
pub(crate) struct OpsConfig {
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<crate::metrics::Metrics>,
    pub(crate) systemd: Option<Notifier>,
}

/// The worker's operator-facing state.
pub(crate) struct Ops {
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::Metrics>,
    systemd: Option<Mutex<Systemd>>,
    /// How often the driver turns at least (`None`: only when it must).
    tick: Option<StdDuration>,
    /// The current worker id, for log lines (kept apart from the ids: a
    /// line is logged while those are locked).
    worker_id: Mutex<String>,
    clock: StdClock,
}

struct Systemd {
    notifier: Notifier,
    ready: bool,
    stopping: bool,
    status: String,
    /// Ping the watchdog this often, and when it was last pinged.
    ping_every: Option<StdDuration>,
    pinged: Option<StdInstant>,
    /// A failed send is logged once.
    warned: bool,
}

impl Ops {
    pub(crate) fn new(
        config: OpsConfig,
        clock: StdClock,
        jobs: &[String],
        request_timeout: StdDuration,
    ) -> Ops {
        let ping_every = config
            .systemd
            .as_ref()
            .and_then(Notifier::watchdog)
            .map(|w| (w / 3).max(StdDuration::from_millis(10)));
        #[cfg(feature = "metrics")]
        let watched = config.metrics.is_some() || ping_every.is_some();
        #[cfg(not(feature = "metrics"))]
        let watched = ping_every.is_some();
        let tick = watched.then(|| ping_every.map_or(TICK, |p| p.min(TICK)));
        #[cfg(feature = "metrics")]
        if let Some(m) = &config.metrics {
            m.attach(clock, jobs, request_timeout);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (jobs, request_timeout);
        Ops {
            #[cfg(feature = "metrics")]
            metrics: config.metrics,
            systemd: config.systemd.map(|notifier| {
                Mutex::new(Systemd {
                    notifier,
                    ready: false,
                    stopping: false,
                    status: String::new(),
                    ping_every,
                    pinged: None,
                    warned: false,
                })
            }),
            tick,
            worker_id: Mutex::new(String::new()),
            clock,
        }
    }

    /// The current worker id ("" before registering).
    pub(crate) fn worker_id(&self) -> String {
        lock(&self.worker_id).clone()
    }

    /// An event was logged.
    pub(crate) fn on_event(&self, event: &Event<'_>) {
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.metrics {
            m.observe(event);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = event;
    }

    /// The worker's id is now `id`.
    pub(crate) fn on_adopt(&self, id: &str) {
        id.clone_into(&mut lock(&self.worker_id));
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.metrics {
            m.set_worker_id(id);
        }
    }

    /// The driver's snapshot after a step (every turn of its loop).
    pub(crate) fn on_publish(&self, snapshot: &Snapshot) {
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.metrics {
            m.publish(snapshot);
        }
        if let Some(sd) = &self.systemd {
            lock(sd).publish(snapshot, self.clock.now());
        }
    }

    /// The driver returned.
    pub(crate) fn on_finish(&self) {
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.metrics {
            m.finished();
        }
    }

    /// A wait until `t`, cut to the next tick when something watches the
    /// driver (on a fixed grid, so that the kept timer is rarely set again).
    pub(crate) fn cap(&self, t: StdInstant) -> StdInstant {
        let Some(tick) = self.tick else { return t };
        let tick_ms = (tick.as_millis() as u64).max(1);
        let now_ms = self.clock.now().as_millis();
        let next = (now_ms / tick_ms + 1) * tick_ms;
        let at = StdInstant::now() + StdDuration::from_millis(next - now_ms);
        t.min(at)
    }
}

impl Systemd {
    fn publish(&mut self, s: &Snapshot, now: outage_core::Instant) {
        let mut lines: Vec<String> = Vec::new();
        if !self.ready && s.stage == Stage::Running && s.stop.is_none() {
            self.ready = true;
            lines.push("READY=1".into());
        }
        if !self.stopping && (s.stop.is_some() || matches!(s.stage, Stage::Stopping | Stage::Done)) {
            self.stopping = true;
            lines.push("STOPPING=1".into());
        }
        let status = s.status(now).to_string();
        if status != self.status {
            lines.push(status_line(&status));
            self.status = status;
        }
        if let Some(every) = self.ping_every
            && self.pinged.is_none_or(|t| t.elapsed() >= every)
        {
            self.pinged = Some(StdInstant::now());
            lines.push("WATCHDOG=1".into());
        }
        if lines.is_empty() {
            return;
        }
        if let Err(e) = self.notifier.notify(&lines.join("\n"))
            && !self.warned
        {
            self.warned = true;
            log::warn!(target: "outage", "Cannot notify systemd (NOTIFY_SOCKET): {e}");
        }
    }
}
