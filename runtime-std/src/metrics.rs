//! Prometheus metrics of a worker, and its health and readiness (feature
//! `metrics`).
//!
//! The numbers are the core's: its [`outage_core::Stats`] and
//! [`outage_core::Snapshot`], read at each scrape, and its events
//! ([`outage_core::Event::TaskFinished`] for tasks by job). Nothing here
//! counts requests or outages a second time.
//!
//! ```no_run
//! use outage_runtime_std::metrics::{Metrics, serve};
//! use outage_runtime_std::{Job, Task, WorkerBuilder};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let metrics = Metrics::new();
//! // /metrics, /healthz, /readyz on loopback (or mount `metrics` in your own server:
//! // `metrics.register(&mut registry)`, `metrics.health()`).
//! let _server = serve("127.0.0.1:9100", metrics.clone())?;
//! let worker = WorkerBuilder::new("http://127.0.0.1:8765", "secret")
//!     .metrics(&metrics)
//!     .job(Job::new("@global", "modifiers", "Echo"), |_t: Task| async { Ok(()) })
//!     .start()
//!     .await?;
//! # drop(worker); Ok(()) }
//! ```
//!
//! Metrics (prefix `outage_`; counters end in `_total`). The job label is
//! `job_name` (ZnDraw's word), not `job`, which Prometheus gives the scrape
//! job itself:
//!
//! | metric | type | what |
//! | --- | --- | --- |
//! | `tasks_total{job_name,outcome}` | counter | tasks finished, `completed` or `failed` |
//! | `task_duration_seconds{job_name}` | histogram | how long each task's handler ran |
//! | `requests_total{route,class}` | counter | requests by route and by what the answer meant (`ok`, `transient`, `congested`, `fatal`, `rejected`, `local`, `cancelled`) |
//! | `server_unreachable` | gauge | 1 during an outage |
//! | `server_unreachable_seconds` | gauge | how long the running outage has lasted (0 without one) |
//! | `server_unreachable_limit_seconds` | gauge | `max_unreachable` (absent without a limit) |
//! | `outages_survived_total` | counter | outages the worker recovered from |
//! | `outcomes_held_total` | counter | outcomes held through an outage |
//! | `outcomes_delivered_total` | counter | outcomes the server has (delivered, or found applied already) |
//! | `outcomes_given_up_total` | counter | finished outcomes given up (refused, or the server still away at a stop's limit) |
//! | `outcomes_waiting` | gauge | outcomes not yet delivered |
//! | `tasks_running` | gauge | handlers running now |
//! | `reregistrations_total` | counter | registrations under a new id |
//! | `token_renewals_total` | counter | credential renewals |
//! | `stale_connection_retries_total` | counter | requests sent again on a fresh connection |
//! | `push_connected` | gauge | 1 while task-available push is connected |
//! | `heartbeat_age_seconds` | gauge | since the server last accepted a heartbeat (or the registration) |
//! | `ready` | gauge | 1 when ready (see [`Health`]) |
//! | `worker_info{worker_id,version}` | info | the worker's current id and this crate's version |

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use outage_core::{Clock, Endpoint, Event, Snapshot, Stage};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::StdClock;
#[path = "serve.rs"]
mod server;
use crate::sync::lock;
pub use server::{MetricsServer, serve};

/// Task durations' buckets, in seconds.
const DURATION_BUCKETS: [f64; 16] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// How long the driver may go without a turn before `/healthz` calls it
/// stalled (at least; more with a long request timeout).
const STALL_FLOOR: StdDuration = StdDuration::from_secs(30);

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// A worker's metrics and health: attach it to a worker with
/// [`crate::WorkerBuilder::metrics`] (one worker per `Metrics`), serve it
/// with [`serve`], or mount it in the application's own registry with
/// [`Metrics::register`]. Cheap to clone (one shared state).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<Mutex<State>>,
    tasks: Family<Labels, Counter>,
    durations: Histograms,
    /// Its own registry (what [`serve`] encodes).
    registry: Registry,
}

/// What the collector reads at each scrape.
#[derive(Default)]
struct State {
    clock: Option<StdClock>,
    snapshot: Option<Snapshot>,
    worker_id: String,
    /// The driver's last turn.
    last_turn: Option<StdInstant>,
    /// The driver has returned.
    finished: bool,
    stall_limit: StdDuration,
}

/// A worker's health, for probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `/healthz`: the process and its driver are alive — the driver's loop
    /// has turned within the stall limit (30 s, or twice the request
    /// timeout when longer), and it has not finished. True before a worker
    /// is attached (starting).
    pub alive: bool,
    /// `/readyz`: registered, serving, and the server answers (not in an
    /// outage, not stopping) — [`outage_core::Status::is_ready`].
    pub ready: bool,
    /// What it is doing, in words (the core's [`outage_core::Status`]), or
    /// why it is not alive.
    pub status: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics with no worker attached yet.
    pub fn new() -> Metrics {
        let state = Arc::new(Mutex::new(State {
            stall_limit: STALL_FLOOR,
            ..State::default()
        }));
        let tasks = Family::<Labels, Counter>::default();
        let durations: Histograms = Family::new_with_constructor(histogram);
        let mut registry = Registry::default();
        register_into(&mut registry, &state, &tasks, &durations);
        Metrics {
            inner: Arc::new(Inner {
                state,
                tasks,
                durations,
                registry,
            }),
        }
    }

    /// Add these metrics (prefix `outage_`) to `registry`, the
    /// application's own: they are then encoded with the application's.
    pub fn register(&self, registry: &mut Registry) {
        register_into(
            registry,
            &self.inner.state,
            &self.inner.tasks,
            &self.inner.durations,
        );
    }

    /// The registry [`serve`] encodes (these metrics alone).
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The metrics in the OpenMetrics text format
    /// (`application/openmetrics-text; version=1.0.0`).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    /// The metrics in Prometheus's text format (`text/plain;
    /// version=0.0.4`), for tools that read only that (`promtool check
    /// metrics`, `curl`).
    pub fn encode_prometheus(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry);
        out
    }

    /// Health and readiness now.
    pub fn health(&self) -> Health {
        let state = lock(&self.inner.state);
        let Some((snapshot, clock)) = state.snapshot.zip(state.clock) else {
            return Health {
                alive: !state.finished,
                ready: false,
                status: "starting".into(),
            };
        };
        let status = snapshot.status(clock.now()).to_string();
        if state.finished {
            return Health {
                alive: false,
                ready: false,
                status,
            };
        }
        let idle = state.last_turn.map_or(StdDuration::ZERO, |t| t.elapsed());
        if idle > state.stall_limit {
            return Health {
                alive: false,
                ready: false,
                status: format!(
                    "stalled: the worker's driver has not run for {}s (a handler blocking its thread?)",
                    idle.as_secs()
                ),
            };
        }
        Health {
            alive: true,
            ready: snapshot.is_ready(),
            status,
        }
    }

    // ------------------------------------------------ fed by the worker

    /// A worker starts with these metrics: its clock, its jobs (their
    /// series start at zero) and its request timeout (the stall limit).
    pub(crate) fn attach(&self, clock: StdClock, jobs: &[String], request_timeout: StdDuration) {
        {
            let mut state = lock(&self.inner.state);
            state.clock = Some(clock);
            state.finished = false;
            state.last_turn = Some(StdInstant::now());
            state.stall_limit = STALL_FLOOR.max(request_timeout * 2);
        }
        for job in jobs {
            for outcome in ["completed", "failed"] {
                let _ = self.inner.tasks.get_or_create(&task_labels(job, outcome));
            }
            let _ = self
                .inner
                .durations
                .get_or_create(&vec![("job_name", job.clone())]);
        }
    }

    /// The driver's snapshot after one of its steps.
    pub(crate) fn publish(&self, snapshot: &Snapshot) {
        let mut state = lock(&self.inner.state);
        state.snapshot = Some(*snapshot);
        state.last_turn = Some(StdInstant::now());
    }

    /// The worker's id changed.
    pub(crate) fn set_worker_id(&self, id: &str) {
        lock(&self.inner.state).worker_id = id.to_owned();
    }

    /// The driver returned.
    pub(crate) fn finished(&self) {
        lock(&self.inner.state).finished = true;
    }

    /// An event: tasks by job and their durations.
    pub(crate) fn observe(&self, event: &Event<'_>) {
        if let Event::TaskFinished { job, took, error, .. } = *event {
            let outcome = if error.is_some() { "failed" } else { "completed" };
            self.inner.tasks.get_or_create(&task_labels(job, outcome)).inc();
            let secs = StdDuration::from_millis(took.as_millis()).as_secs_f64();
            self.inner
                .durations
                .get_or_create(&vec![("job_name", job.to_owned())])
                .observe(secs);
        }
    }
}

fn task_labels(job: &str, outcome: &str) -> Labels {
    vec![("job_name", job.to_owned()), ("outcome", outcome.to_owned())]
}

fn register_into(
    registry: &mut Registry,
    state: &Arc<Mutex<State>>,
    tasks: &Family<Labels, Counter>,
    durations: &Histograms,
) {
    let sub = registry.sub_registry_with_prefix("outage");
    sub.register("tasks", "Tasks finished, by job and outcome", tasks.clone());
    sub.register_with_unit(
        "task_duration",
        "How long each task's handler ran",
        Unit::Seconds,
        durations.clone(),
    );
    sub.register_collector(Box::new(CoreCollector { state: state.clone() }));
}

/// Reads the core's counters and snapshot at each scrape.
struct CoreCollector {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for CoreCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CoreCollector")
    }
}

fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: f64,
) -> fmt::Result {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, unit, g.metric_type())?;
    g.encode(m)
}

fn secs(d: outage_core::Duration) -> f64 {
    StdDuration::from_millis(d.as_millis()).as_secs_f64()
}

impl Collector for CoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let (snapshot, clock, worker_id) = {
            let state = lock(&self.state);
            (state.snapshot, state.clock, state.worker_id.clone())
        };
        let (Some(s), Some(clock)) = (snapshot, clock) else {
            return Ok(());
        };
        let now = clock.now();
        let stats = s.stats;
        {
            let c = ConstCounter::new(0u64);
            let mut fam = enc.encode_descriptor(
                "requests",
                "Requests to the job server, by route and by what the answer meant",
                None,
                c.metric_type(),
            )?;
            for (route, class, n) in stats.routes.iter() {
                // Workers never submit.
                if route == Endpoint::Submit {
                    continue;
                }
                let labels: [(&str, &str); 2] = [("route", route.as_str()), ("class", class.as_str())];
                ConstCounter::new(n).encode(fam.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut enc,
            "outages_survived",
            "Outages the worker recovered from",
            stats.recoveries,
        )?;
        counter(
            &mut enc,
            "outcomes_held",
            "Task outcomes held through an outage",
            stats.outcomes_held,
        )?;
        counter(
            &mut enc,
            "outcomes_delivered",
            "Task outcomes the server has (delivered, or found applied already)",
            stats.outcomes_delivered,
        )?;
        counter(
            &mut enc,
            "outcomes_given_up",
            "Finished task outcomes given up (refused, or the server still unreachable at a stop's limit)",
            stats.outcomes_given_up,
        )?;
        counter(
            &mut enc,
            "reregistrations",
            "Registrations under a new worker id (server forgot it, or a lost claim answer)",
            stats.reregistrations,
        )?;
        counter(
            &mut enc,
            "token_renewals",
            "Credential renewals that succeeded",
            stats.renewals,
        )?;
        counter(
            &mut enc,
            "stale_connection_retries",
            "Requests sent again on a fresh connection after a closed keep-alive one",
            stats.stale_connection_retries,
        )?;
        let outage = s.outage_elapsed(now);
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        gauge(
            &mut enc,
            "server_unreachable",
            "1 during an outage",
            None,
            flag(outage.is_some()),
        )?;
        gauge(
            &mut enc,
            "server_unreachable",
            "How long the running outage has lasted (0 without one)",
            Some(&Unit::Seconds),
            outage.map_or(0.0, secs),
        )?;
        if s.detail.max_unreachable != outage_core::Config::NO_LIMIT {
            gauge(
                &mut enc,
                "server_unreachable_limit",
                "How long an outage may last before the worker stops (max_unreachable)",
                Some(&Unit::Seconds),
                secs(s.detail.max_unreachable),
            )?;
        }
        gauge(
            &mut enc,
            "tasks_running",
            "Task handlers running now",
            None,
            f64::from(s.detail.running),
        )?;
        gauge(
            &mut enc,
            "outcomes_waiting",
            "Task outcomes finished and not yet delivered",
            None,
            f64::from(s.detail.waiting),
        )?;
        gauge(
            &mut enc,
            "push_connected",
            "1 while task-available push is connected",
            None,
            flag(s.detail.push_connected),
        )?;
        if let Some(age) = s.confirmed_age(now) {
            gauge(
                &mut enc,
                "heartbeat_age",
                "Since the server last accepted a heartbeat (or the registration)",
                Some(&Unit::Seconds),
                secs(age),
            )?;
        }
        gauge(
            &mut enc,
            "ready",
            "1 when registered, serving and not in an outage",
            None,
            flag(s.is_ready()),
        )?;
        gauge(
            &mut enc,
            "registered",
            "1 once registered and until stopped",
            None,
            flag(matches!(s.stage, Stage::Running)),
        )?;
        let labels: [(&str, &str); 2] = [("worker_id", &worker_id), ("version", env!("CARGO_PKG_VERSION"))];
        let m = enc.encode_descriptor(
            "worker",
            "The worker's current id and version",
            None,
            MetricType::Info,
        )?;
        let mut m = m;
        m.encode_info(&labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outage_core::{Config, Lifecycle};

    const JOB: &str = "@global:modifiers:Echo";

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn an_application_mounts_the_metrics_in_its_own_registry() {
        let metrics = Metrics::new();
        metrics.attach(StdClock::new(), &[JOB.to_owned()], StdDuration::from_secs(10));
        metrics.set_worker_id("w-1");
        let mut app = Registry::default();
        let own = Counter::<u64>::default();
        app.register("app_requests", "The application's own requests", own.clone());
        metrics.register(&mut app);
        own.inc();
        metrics.observe(&Event::TaskFinished {
            task_id: "t-1",
            job: JOB,
            room: "r",
            took: outage_core::Duration::from_millis(1_500),
            error: None,
        });
        let out = text(&app);
        assert!(out.contains("app_requests_total 1"), "{out}");
        assert!(
            out.contains(r#"outage_tasks_total{job_name="@global:modifiers:Echo",outcome="completed"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"outage_tasks_total{job_name="@global:modifiers:Echo",outcome="failed"} 0"#),
            "{out}"
        );
        assert!(out.contains("outage_task_duration_seconds_count"), "{out}");
        // The application's registry and the worker's own say the same.
        let own_text = metrics.encode_openmetrics();
        assert!(own_text.contains(r#"outcome="completed"} 1"#), "{own_text}");
    }

    #[test]
    fn a_driver_that_stops_turning_is_not_alive() {
        let metrics = Metrics::new();
        let h = metrics.health();
        assert!(h.alive && !h.ready && h.status == "starting", "{h:?}");
        let clock = StdClock::new();
        metrics.attach(clock, &[JOB.to_owned()], StdDuration::from_secs(10));
        let lc = Lifecycle::<1>::new(Config::DEFAULT, 1, false, 7, clock.now()).unwrap();
        metrics.publish(&lc.snapshot());
        assert!(metrics.health().alive, "{:?}", metrics.health());
        // The driver's last turn longer ago than the stall limit.
        lock(&metrics.inner.state).last_turn =
            Some(StdInstant::now() - STALL_FLOOR - StdDuration::from_secs(1));
        let h = metrics.health();
        assert!(!h.alive && !h.ready && h.status.starts_with("stalled: "), "{h:?}");
        metrics.publish(&lc.snapshot());
        assert!(metrics.health().alive);
        metrics.finished();
        assert!(!metrics.health().alive);
    }
}
