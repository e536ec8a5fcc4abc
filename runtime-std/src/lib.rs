//! # outage-runtime-std
//!
//! The host worker for ZnDraw job servers (`zndraw-joblib`), on async-std
//! and surf. It registers, heartbeats, claims tasks, runs them and reports
//! their status — and rides out server outages exactly as
//! [`outage_core`] decides: one outage clock for both loops, countdown
//! warnings, capped jittered backoff, outcomes held until the server returns,
//! an immediate stop on fatal answers, and a clean stop when the outage
//! outlasts its limit.
//!
//! ```no_run
//! use outage_runtime_std::{Job, WorkerBuilder};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let worker = WorkerBuilder::new("http://127.0.0.1:8765", "secret")
//!     .job(Job::new("@global", "modifiers", "Echo"), |task: outage_runtime_std::Task| async move {
//!         println!("payload: {}", task.payload_json());
//!         Ok(())
//!     })
//!     .start()
//!     .await?;
//! worker.run_until_signal(std::time::Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```
//!
//! Logs go through the `log` crate (target `outage`) with the core's event
//! texts, and each event's fields as the record's key-values. The token
//! never appears in a log line or an error message.
//!
//! For operators: [`metrics`] (feature `metrics`: Prometheus metrics of the
//! core's counters, `/healthz` and `/readyz`) and [`systemd`] (`Type=notify`
//! readiness, status, watchdog, credentials).
//!
//! The HTTP seam is API, not a test hook: [`http::Http`] is what
//! [`WorkerBuilder::start_with`] takes (an application's own client, a
//! test's fault injector), [`http::SurfHttp`] the default, and
//! [`h1::H1Client`] surf's backend under it, for an application that wants
//! surf with this pool (a connection reused only after a complete
//! exchange). The bytes both frame are the core's ([`outage_core::wire`]).
//!
//! Layering (bottom-up; a module imports only modules of lower layers —
//! `python3 .ci/layers.py` checks it in CI): `sync`, `job`, `setup`,
//! `record`, `tls`, `systemd` · `deadline`, `h1`, `push`, `metrics` ·
//! `http`, `ops` · `api` · `worker` (the driver's I/O), `command` ·
//! `listen`, `process` · `handle` · `builder`; the CLI (`bin/`, `cli/`) on
//! top.

#![forbid(unsafe_code)]

mod api;
mod builder;
pub mod command;
mod deadline;
pub mod h1;
mod handle;
pub mod http;
mod job;
mod listen;
#[cfg(feature = "metrics")]
pub mod metrics;
mod ops;
pub mod process;
pub mod push;
mod record;
mod setup;
mod sync;
pub mod systemd;
pub mod tls;
mod worker;

pub use api::{ApiError, SharedToken};
pub use builder::WorkerBuilder;
pub use handle::{IGNORED_SIGNALS, STOP_SIGNALS, Worker, handled_signals, next_stop_signal};
pub use job::{Handler, Job, Task, TaskResult};
pub use outage_core::Stats;
pub use outage_core::push::PushMode;
pub use outage_core::{Config, Duration, Jitter, OnRegistrationLost, StopReason};
pub use setup::{Credentials, StartError};

use outage_core::{Clock, Event, Instant};

/// The core's clock over `std::time::Instant`.
#[derive(Debug, Clone, Copy)]
pub struct StdClock {
    epoch: std::time::Instant,
}

impl StdClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        StdClock {
            epoch: std::time::Instant::now(),
        }
    }
}

impl Default for StdClock {
    fn default() -> Self {
        StdClock::new()
    }
}

impl Clock for StdClock {
    fn now(&self) -> Instant {
        Instant::from_millis(self.epoch.elapsed().as_millis() as u64)
    }
}

/// Log one event through `log`, at its level, with its one rendering,
/// and its fields ([`outage_core::Event::fields`], plus `event`: its name)
/// as the record's key-values for a structured logger.
pub fn emit(event: &Event<'_>) {
    record::emit_as(event, None);
}
