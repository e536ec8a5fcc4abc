//! The embassy worker's public types: the jobs it serves, the tasks its
//! handler gets, the handler, the clock, and the sizes it accepts.
//!
//! Layering: the bottom (with `fmt`); imports nothing of the crate.

use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use outage_core::{Clock, Instant};

pub(crate) type CS = CriticalSectionRawMutex;

/// Longest server URL (`http://host:port`) accepted.
pub const MAX_SERVER_URL: usize = 96;
/// Longest bearer token accepted (a ZnDraw JWT is about 200 bytes). The
/// worker keeps no copy of it: it is written into each request from the
/// caller's string.
pub const MAX_TOKEN: usize = 512;
/// Longest job name part (room, category, name) accepted.
pub const MAX_NAME: usize = 48;
/// The text a handler may give when a task fails.
pub type ErrorText = heapless::String<128>;

/// The embassy-time clock, as the core's [`Clock`].
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbassyClock;

impl Clock for EmbassyClock {
    fn now(&self) -> Instant {
        Instant::from_millis(embassy_time::Instant::now().as_millis())
    }
}

pub(crate) fn to_embassy(t: Instant) -> embassy_time::Instant {
    embassy_time::Instant::from_millis(t.as_millis())
}

/// A job the worker serves: the core's, whose route, registration body
/// and name rule the host uses too.
pub use outage_core::call::Job;

/// A claimed task, as a handler sees it.
#[derive(Debug, Clone, Copy)]
pub struct Task<'t> {
    /// Task UUID.
    pub id: &'t str,
    /// `room:category:name`.
    pub job_name: &'t str,
    /// Room it was submitted in.
    pub room_id: &'t str,
    /// The payload, raw JSON (read it with [`crate::json`], or serde-json-core).
    pub payload: &'t [u8],
}

/// Runs tasks. `Ok` → `completed`; `Err(text)` → `failed` with that text.
///
/// A microcontroller aborts on panic, so a handler must not panic.
#[allow(async_fn_in_trait)] // embassy executors are single-threaded: no Send bound needed.
pub trait Handler {
    /// Run one task.
    async fn run(&mut self, task: Task<'_>) -> Result<(), ErrorText>;
}
