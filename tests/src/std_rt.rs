//! The host runtime (`outage-runtime-std`) plugged into the scenario list.

use std::time::Duration;

use outage_core::StopReason;
use outage_runtime_std::{Job, Task, Worker, WorkerBuilder};

use crate::record;
use crate::scenarios::{JOBS, RunningWorker, Runtime, Setup};

/// The async-std + surf worker.
pub struct StdRuntime;

/// What every scenario's handlers do, by payload; each run is recorded
/// (with the payload as this handler got it) in [`crate::record`].
async fn behave(task: Task) -> Result<(), String> {
    let seen = task.payload_json().as_bytes().to_vec();
    let run = record::started(&task.id, &task.room_id, &seen);
    let result = by_payload(&task).await;
    record::finished(&task.id, run, &result);
    result
}

async fn by_payload(task: &Task) -> Result<(), String> {
    let payload: serde_json::Value = task.payload().map_err(|e| e.to_string())?;
    if payload["panic"] == true {
        panic!("boom");
    }
    if let Some(ms) = payload["sleep_ms"].as_u64() {
        async_std::task::sleep(Duration::from_millis(ms)).await;
    }
    match payload["fail"].as_str() {
        Some(text) => Err(text.to_owned()),
        None => Ok(()),
    }
}

impl Runtime for StdRuntime {
    const NAME: &'static str = "runtime-std";
    type Worker = StdWorker;
    const MAX_CONCURRENCY: u8 = outage_core::Config::MAX_CONCURRENCY;

    fn start(setup: &Setup) -> Result<StdWorker, String> {
        let mut b = WorkerBuilder::new(setup.url.clone(), setup.token.clone()).config(setup.config);
        for name in JOBS {
            b = b.job(Job::parse(name)?, behave);
        }
        async_std::task::block_on(b.start())
            .map(StdWorker)
            .map_err(|e| e.to_string())
    }
}

/// A worker that is disconnected when the test drops it (also when the
/// test fails), so no worker outlives its scenario.
pub struct StdWorker(pub Worker);

impl Drop for StdWorker {
    fn drop(&mut self) {
        async_std::task::block_on(self.0.disconnect());
    }
}

impl std::ops::Deref for StdWorker {
    type Target = Worker;
    fn deref(&self) -> &Worker {
        &self.0
    }
}

impl RunningWorker for StdWorker {
    fn wait_stopped(&self, limit: Duration) -> Option<StopReason> {
        async_std::task::block_on(async_std::future::timeout(limit, self.wait())).ok()
    }

    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    fn stop_reason(&self) -> Option<StopReason> {
        self.0.stop_reason()
    }

    fn disconnect(&self) {
        async_std::task::block_on(self.0.disconnect());
    }

    fn id(&self) -> String {
        self.0.id()
    }

    fn stale_connection_retries(&self) -> u64 {
        self.stats().stale_connection_retries
    }

    fn requests(&self) -> Option<u64> {
        Some(self.stats().requests)
    }

    fn shutdown(&self, grace: Duration) {
        async_std::task::block_on(self.0.shutdown(grace));
    }

    fn stats(&self) -> outage_core::Stats {
        self.0.stats()
    }
}
