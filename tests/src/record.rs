//! What the scenario handlers were given and what they returned, for
//! exactly-once accounting: every run of a handler is recorded here under
//! its task id (the server's UUID), in both runtimes.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

/// One run of a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The task's room, as the handler got it.
    pub room_id: String,
    /// The payload as the handler got it: the raw bytes (embassy), or the
    /// handler's `serde_json::Value` written out again (std).
    pub payload: Vec<u8>,
    /// When the handler started.
    pub started: Instant,
    /// What it returned (`None` while it runs, or if it never returned:
    /// a panic, or the worker halted it).
    pub outcome: Option<Result<(), String>>,
    /// When it returned.
    pub finished: Option<Instant>,
}

static RUNS: LazyLock<Mutex<HashMap<String, Vec<Run>>>> = LazyLock::new(Mutex::default);

fn runs_map() -> std::sync::MutexGuard<'static, HashMap<String, Vec<Run>>> {
    RUNS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handler starts task `task_id`; returns the run's number for
/// [`finished`].
pub fn started(task_id: &str, room_id: &str, payload: &[u8]) -> usize {
    let mut map = runs_map();
    let runs = map.entry(task_id.to_owned()).or_default();
    runs.push(Run {
        room_id: room_id.to_owned(),
        payload: payload.to_vec(),
        started: Instant::now(),
        outcome: None,
        finished: None,
    });
    runs.len() - 1
}

/// Run `run` of task `task_id` returned `outcome`.
pub fn finished(task_id: &str, run: usize, outcome: &Result<(), String>) {
    if let Some(r) = runs_map().get_mut(task_id).and_then(|runs| runs.get_mut(run)) {
        r.outcome = Some(outcome.clone());
        r.finished = Some(Instant::now());
    }
}

/// Every run of task `task_id` so far, in start order.
pub fn runs(task_id: &str) -> Vec<Run> {
    runs_map().get(task_id).cloned().unwrap_or_default()
}
