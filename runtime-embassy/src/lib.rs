//! # outage-runtime-embassy
//!
//! The microcontroller worker for ZnDraw job servers: the same behaviour as
//! the host worker — every rule is `outage-core`'s — on embassy, with no
//! heap. Time is embassy-time, shared state and signals are embassy-sync,
//! HTTP/1.1 is a small exchange of its own over embedded-nal-async
//! (embassy-net TCP on a device, a std adapter on a host) framed by the
//! core's codec ([`outage_core::wire`]), the server's bodies are the
//! core's too ([`outage_core::protocol::body`], on the core's few JSON
//! functions, [`json`], which a handler may use), and every buffer is the
//! caller's.
//!
//! ```ignore
//! static WORKER: StaticCell<Worker<'static, TcpClient<'static, 2>, DnsSocket<'static>>> = StaticCell::new();
//! let worker = WORKER.init(Worker::new(&tcp, &dns, "http://192.168.1.10:8765", TOKEN, &JOBS, Config::DEFAULT, seed)?);
//! // In one task: create + register (with retries), serve, stop, delete.
//! let why = worker.run(&mut hb_rx, ClaimBuffers { rx, tx, payload }, &mut handler).await;
//! ```
//!
//! The whole life is the core's ([`outage_core::Lifecycle`], driven by
//! [`outage_core::driver::drive`]); this crate only performs its I/O.
//!
//! Or, on a device that should never stay down, one task that starts the
//! worker and starts it again whenever it stops by itself, after a capped
//! backoff ([`Restart`]), until [`Worker::shutdown`]:
//!
//! ```ignore
//! worker.supervise(&mut hb_rx, ClaimBuffers { rx, tx, payload }, &mut handler, Restart::DEFAULT).await;
//! ```
//!
//! With feature `login`, [`Worker::with_login`] logs in with an email and a
//! password (ZnDraw's `POST /v1/auth/jwt/login`) at start and again whenever
//! the token expires ([`login`]).
//!
//! Logs: feature `defmt` on a device, `log` on a host (never both): the
//! core's events with the same words either way.
//!
//! Layering (bottom-up; a module imports only modules of lower layers —
//! `python3 .ci/layers.py` checks it in CI): `fmt`, `types`,
//! `restart` · `login`, `wire` · `net` · `state` (the [`Worker`] value) ·
//! `adapter` (its I/O for the core's driver) · `worker` (running it, the
//! handle).

#![no_std]
#![forbid(unsafe_code)]

mod adapter;
mod fmt;
pub mod login;
mod net;
mod restart;
mod state;
mod types;
mod wire;
mod worker;

/// The core's JSON functions, for handlers reading a small payload.
pub use outage_core::json;

pub use fmt::emit;
pub use net::NoDns;
pub use outage_core::{Config, Duration, Jitter, OnRegistrationLost, StartupError, Stats, StopReason};
pub use restart::{Restart, Stopped};
pub use state::{SetupError, Worker};
pub use types::{EmbassyClock, ErrorText, Handler, Job, MAX_NAME, MAX_SERVER_URL, MAX_TOKEN, Task};
pub use worker::ClaimBuffers;
