//! # outage-core
//!
//! The pure, deterministic heart of the `outage` job-server worker: how a
//! worker behaves when its job server goes away. No I/O, no clock, no RNG,
//! no heap, no floating point: time enters as [`Instant`] values, randomness
//! as caller-supplied `u32`s, and the answers are actions with deadlines and
//! [`Event`]s to log. Both runtimes (async-std on hosts, embassy on
//! microcontrollers) drive the same [`Machine`], so they behave the same.
//!
//! ```
//! use outage_core::{ClaimAction, Config, Failure, Instant, Machine, Transport};
//!
//! let t0 = Instant::ZERO;
//! let mut m = Machine::new(Config::REFERENCE, t0, 0).unwrap();
//! assert_eq!(m.claim_poll(t0), ClaimAction::Claim);
//! // The server is down: the claim fails, the outage clock starts, and the
//! // claim loop backs off 2 s (the reference schedule without jitter).
//! let refused = Failure::Transport(Transport::ConnectionRefused);
//! let step = m.on_claim(t0, t0, Err(refused), 0);
//! assert_eq!(step.action, ClaimAction::Wait(Instant::from_millis(2_000)));
//! let line = step.events.iter().next().unwrap().to_string();
//! assert_eq!(line, "Server unreachable — retrying (0s/120s elapsed)");
//! ```
//!
//! Layout follows quinn-proto and smoltcp: [`time`] (integer milliseconds
//! and the [`Clock`] seam), [`Outage`] (the shared outage clock),
//! [`Machine`] (one pure step per loop), [`classify`] (error classes decided
//! once), [`Event`] (one rendering for `log` and `defmt`), [`protocol`]
//! (zndraw-joblib's wire types and routes), [`wire`] (HTTP/1.1, sans-IO:
//! the requests both runtimes write and the responses they read) and
//! [`Config`].
//!
//! Layering (bottom-up; a module imports only modules of lower layers —
//! `python3 .ci/layers.py` checks it in CI): `time`, `fuzz` · `render`,
//! `jwt`, `respawn` · `config`, `error` · `backoff`, `outage`, `protocol`,
//! `routes` · `event`, `push`, `wire` · `fields`, `machine`, `startup` ·
//! `lifecycle` · `driver`, `status`.

#![no_std]
// One audited `unsafe` (a pinned array's element projection) in `driver`;
// none anywhere else.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod backoff;
mod config;
pub mod driver;
mod error;
mod event;
mod fields;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod jwt;
mod lifecycle;
mod machine;
mod outage;
pub mod protocol;
#[cfg(feature = "push")]
pub mod push;
pub mod render;
pub mod respawn;
mod routes;
mod startup;
#[cfg(feature = "ops")]
mod status;
pub mod time;
pub mod wire;

pub use backoff::{SplitMix64, backoff, first_phase};
pub use config::{Config, ConfigError, Jitter, OnRegistrationLost, ValidConfig};
pub use error::{
    Class, Endpoint, Failure, Fatal, Local, StartupError, Transport, classify, parse_retry_after,
};
pub use event::{Event, GiveUp, Level, NO_HANDLER_ERROR, Only, SHUTDOWN_ERROR, StopReason, Stopped, keep};
pub use fields::FieldSink;
#[cfg(feature = "ops")]
pub use lifecycle::Detail;
pub use lifecycle::{
    Control, Count, Lane, Lifecycle, MAX_SLOTS, Notice, Op, Out, Outcome, Reply, Request, Snapshot, Stage,
    Stats, TaskKey,
};
pub use machine::{ClaimAction, Events, HeartbeatAction, Machine, Phase, Step, TaskState, Wake};
pub use outage::Outage;
pub use render::{Render, Sink};
pub use routes::{AnswerClass, RouteStats};
pub use startup::{StartupRetry, StartupStep, startup_wait_floor};
#[cfg(feature = "ops")]
pub use status::Status;
pub use time::{Clock, Duration, Instant, ManualClock};
