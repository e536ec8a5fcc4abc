//! # outage-core
//!
//! The pure, deterministic heart of the `outage` job-server worker: how a
//! worker behaves when its job server goes away. No I/O, no clock, no RNG,
//! no heap, no floating point: time enters as [`Instant`] values, randomness
//! as caller-supplied `u32`s, and the answers are actions with deadlines and
//! [`Event`]s to log. Both runtimes (async-std on hosts, embassy on
//! microcontrollers) drive the same [`Lifecycle`] through the same
//! [`driver`], so they behave the same.
//!
//! ```
//! use outage_core::{Config, Failure, Instant, Lane, Lifecycle, Notice, Op, Outcome, Reply, Request, Transport};
//!
//! let t0 = Instant::ZERO;
//! // One task slot, no job to register, no login, seed 7.
//! let mut lc = Lifecycle::<1>::new(Config::REFERENCE, 0, false, 7, t0).unwrap();
//! let mut lines = Vec::new();
//! let mut out = |n: Notice| {
//!     if let Notice::Event(e) = n {
//!         lines.push(e.to_string());
//!     }
//! };
//! // Startup: the worker creates itself on the server.
//! let (lane, op) = lc.poll_start(t0, &mut out).unwrap();
//! assert_eq!((lane, op), (Lane::slot(0), Op::Send(Request::CreateWorker)));
//! lc.handle(lane, t0, Outcome::Replied(Ok(Reply::Done)), &mut out);
//! // Serving: the task slot claims at once (the first heartbeat is due in
//! // 30 s).
//! let (slot, op) = lc.poll_start(t0, &mut out).unwrap();
//! assert_eq!(op, Op::Send(Request::Claim));
//! // The server is gone: the claim fails, the outage clock starts, and the
//! // claim loop backs off 2 s (the reference schedule without jitter).
//! let refused = Failure::Transport(Transport::ConnectionRefused);
//! lc.handle(slot, t0, Outcome::Replied(Err(refused)), &mut out);
//! assert_eq!(lc.poll_start(t0, &mut out), None);
//! assert_eq!(lc.poll_timeout(), Some(Instant::from_millis(2_000)));
//! assert_eq!(lines, ["Server unreachable — retrying (0s/120s elapsed)"]);
//! ```
//!
//! Layout follows quinn-proto and smoltcp: [`time`] (integer milliseconds
//! and the [`Clock`] seam), [`Outage`] (the shared outage clock),
//! [`Lifecycle`] (the worker's whole life, sans-IO: startup, the lanes, the
//! stop; inside it the outage rules of both loops), [`driver`] (the one
//! runtime loop over it), [`classify`] (error classes decided
//! once), [`Event`] (one rendering for `log` and `defmt`), [`protocol`]
//! (zndraw-joblib's wire types and routes), [`wire`] (HTTP/1.1, sans-IO:
//! the requests both runtimes write and the responses they read) and
//! [`Config`]; [`json`] and [`protocol::body`] write and read the
//! server's bodies for both runtimes, and [`call`] says what each
//! [`Request`] is on the wire (its id, route, body and answer).
//!
//! Layering (bottom-up; a module imports only modules of lower layers —
//! `python3 .ci/layers.py` checks it in CI): `time`, `fuzz`, `json` · `render`,
//! `jwt`, `respawn` · `config`, `error` · `backoff`, `outage`, `protocol`,
//! `routes` · `event`, `push`, `wire` · `fields`, `machine`, `startup` ·
//! `lifecycle` · `call`, `driver`, `status`.

#![no_std]
// One audited `unsafe` (a pinned array's element projection) in `driver`;
// none anywhere else.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod backoff;
pub mod call;
mod config;
pub mod driver;
mod error;
mod event;
mod fields;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod json;
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
pub use machine::TaskState;
pub(crate) use machine::{ClaimAction, HeartbeatAction, Machine, Phase, Step, Wake};
pub use outage::Outage;
pub use render::{Render, Sink};
pub use routes::{AnswerClass, RouteStats};
pub use startup::{StartupRetry, StartupStep, startup_wait_floor};
#[cfg(feature = "ops")]
pub use status::Status;
pub use time::{Clock, Duration, Instant, ManualClock};
