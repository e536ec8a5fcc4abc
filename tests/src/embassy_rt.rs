//! The embassy runtime (`outage-runtime-embassy`) plugged into the scenario
//! list, on the host: embassy's std executor platform, embassy-time's std
//! driver, and std-embedded-nal-async for TCP. Each worker gets its own
//! executor thread; its whole life (`Worker::run`) runs as one embassy task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use embassy_executor::Executor;
use outage_core::StopReason;
use outage_runtime_embassy::{ClaimBuffers, ErrorText, Handler, Job, Restart, Task, Worker};
use serde::Deserialize;
use std_embedded_nal_async::Stack;

use crate::record;
use crate::scenarios::{JOBS, RunningWorker, Runtime, Setup};

type W = Worker<'static, Stack, Stack>;

/// What every scenario's handlers do, by payload; each run is recorded
/// (with the payload bytes this handler got) in [`crate::record`].
///
/// The handler is host test code, so it reads the payload with serde_json:
/// serde-json-core's borrowed `&str` would keep a failure text's escapes
/// (`\"` stays backslash-quote), and the handler must fail with the text the
/// payload means.
pub struct Behave;

#[derive(Deserialize, Default)]
struct Payload {
    sleep_ms: Option<u64>,
    fail: Option<String>,
}

impl Handler for Behave {
    async fn run(&mut self, task: Task<'_>) -> Result<(), ErrorText> {
        let run = record::started(task.id, task.room_id, task.payload);
        let p: Payload = serde_json::from_slice(task.payload).unwrap_or_default();
        if let Some(ms) = p.sleep_ms {
            embassy_time::Timer::after_millis(ms).await;
        }
        let result = match p.fail {
            Some(text) => Err(ErrorText::try_from(text.as_str()).unwrap_or_default()),
            None => Ok(()),
        };
        let returned = result.as_ref().map(|_| ()).map_err(|e| e.as_str().to_owned());
        record::finished(task.id, run, &returned);
        result
    }
}

/// Runs [`Worker::run`]: one life of the worker, startup to delete.
#[embassy_executor::task(pool_size = 32)]
async fn run_task(
    worker: &'static W,
    hb_rx: &'static mut [u8],
    bufs: ClaimBuffers<'static>,
    handler: &'static mut Behave,
) {
    let _ = worker.run(hb_rx, bufs, handler).await;
}

/// Runs [`Worker::supervise`] (what the firmware example runs), then marks
/// `returned`.
#[embassy_executor::task(pool_size = 8)]
async fn supervised_task(
    worker: &'static W,
    hb_rx: &'static mut [u8],
    bufs: ClaimBuffers<'static>,
    handler: &'static mut Behave,
    policy: Restart,
    returned: &'static AtomicBool,
) {
    worker.supervise(hb_rx, bufs, handler, policy).await;
    returned.store(true, Ordering::SeqCst);
}

/// The heartbeat's receive buffer, as in the firmware example: smaller than
/// a heartbeat request with a long token, which is then written in pieces.
const HEARTBEAT_RX: usize = 512;

fn leak_buf(n: usize) -> &'static mut [u8] {
    Box::leak(vec![0u8; n].into_boxed_slice())
}

fn leak_str(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// The embassy worker, on the host.
pub struct EmbassyRuntime;

impl Runtime for EmbassyRuntime {
    const NAME: &'static str = "runtime-embassy";
    type Worker = EmbassyWorker;
    const MAX_CONCURRENCY: u8 = 1;

    fn start(setup: &Setup) -> Result<EmbassyWorker, String> {
        run(new_worker(setup, None)?)
    }
}

impl EmbassyRuntime {
    /// An embassy worker that logs in with `email` and `password`
    /// (`Worker::with_login`) instead of using `setup.token`, started and
    /// running.
    pub fn start_with_login(setup: &Setup, email: &str, password: &str) -> Result<EmbassyWorker, String> {
        run(new_worker(setup, Some((email, password)))?)
    }
}

impl EmbassyRuntime {
    /// An embassy worker whose request-body buffer is `tx` bytes (the
    /// default is 2 KiB), started and running.
    pub fn start_with_tx(setup: &Setup, tx: usize) -> Result<EmbassyWorker, String> {
        run_with_tx(new_worker(setup, None)?, tx)
    }
}

/// Run `worker` (`Worker::run`) in a task of its own; return once it has
/// registered (or why it could not).
fn run(worker: &'static W) -> Result<EmbassyWorker, String> {
    run_with_tx(worker, 2 << 10)
}

fn run_with_tx(worker: &'static W, tx: usize) -> Result<EmbassyWorker, String> {
    let hb_rx = leak_buf(HEARTBEAT_RX);
    let bufs = ClaimBuffers {
        rx: leak_buf(16 << 10),
        tx: leak_buf(tx),
        payload: leak_buf(4 << 10),
    };
    let handler: &'static mut Behave = Box::leak(Box::new(Behave));
    run_executor(move |spawner| {
        spawner.spawn(run_task(worker, hb_rx, bufs, handler).expect("a free run task slot"));
    })?;
    futures_lite::future::block_on(worker.started())
        .map_err(|e| format!("could not start the worker: {e}"))?;
    Ok(EmbassyWorker { worker })
}

/// An executor of its own, on a thread of its own, running what `init`
/// spawns.
fn run_executor(init: impl FnOnce(embassy_executor::Spawner) + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name("embassy-executor".into())
        .spawn(move || {
            let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
            executor.run(init)
        })
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A worker for `setup`, in leaked (`'static`) storage; with `login`, one
/// that logs in with that email and password instead of `setup.token`.
fn new_worker(setup: &Setup, login: Option<(&str, &str)>) -> Result<&'static W, String> {
    let stack: &'static Stack = Box::leak(Box::default());
    let jobs: Vec<Job<'static>> = JOBS
        .iter()
        .map(|name| {
            let mut parts = name.splitn(3, ':');
            Job {
                room: parts.next().unwrap_or_default(),
                category: parts.next().unwrap_or_default(),
                name: parts.next().unwrap_or_default(),
                schema: "{}",
            }
        })
        .collect();
    let jobs: &'static [Job<'static>] = Box::leak(jobs.into_boxed_slice());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    let url = leak_str(&setup.url);
    let worker = match login {
        None => W::new(
            stack,
            stack,
            url,
            leak_str(&setup.token),
            jobs,
            setup.config,
            seed,
        ),
        Some((email, password)) => W::with_login(
            stack,
            stack,
            url,
            leak_str(email),
            leak_str(password),
            jobs,
            setup.config,
            seed,
        ),
    }
    .map_err(|e| e.to_string())?;
    Ok(Box::leak(Box::new(worker)))
}

/// The embassy worker run by [`Worker::supervise`], as the firmware example
/// runs it: started (and restarted after it stops by itself) in one embassy
/// task. Shut down when dropped.
pub struct SupervisedWorker {
    worker: &'static W,
    returned: &'static AtomicBool,
}

impl SupervisedWorker {
    /// Start supervising a worker for `setup` (returns at once: startup
    /// happens in the task).
    pub fn start(setup: &Setup, policy: Restart) -> Result<SupervisedWorker, String> {
        let worker = new_worker(setup, None)?;
        let returned: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let hb_rx = leak_buf(HEARTBEAT_RX);
        let bufs = ClaimBuffers {
            rx: leak_buf(16 << 10),
            tx: leak_buf(2 << 10),
            payload: leak_buf(4 << 10),
        };
        let handler: &'static mut Behave = Box::leak(Box::new(Behave));
        run_executor(move |spawner| {
            let task = supervised_task(worker, hb_rx, bufs, handler, policy, returned);
            spawner.spawn(task.expect("a free supervised task slot"));
        })?;
        Ok(SupervisedWorker { worker, returned })
    }

    /// The worker (its id, stop reason, counters).
    pub fn worker(&self) -> &W {
        self.worker
    }

    /// True once `supervise` has returned.
    pub fn returned(&self) -> bool {
        self.returned.load(Ordering::SeqCst)
    }

    /// Stop the worker (`Worker::disconnect`) and wait, at most `limit`,
    /// until `supervise` has returned; whether it did.
    pub fn shutdown(&self, limit: Duration) -> bool {
        futures_lite::future::block_on(self.worker.disconnect());
        let deadline = Instant::now() + limit;
        while !self.returned() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

impl Drop for SupervisedWorker {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(10));
    }
}

/// A running embassy worker; disconnected when dropped.
pub struct EmbassyWorker {
    worker: &'static W,
}

impl Drop for EmbassyWorker {
    fn drop(&mut self) {
        RunningWorker::disconnect(self);
    }
}

impl RunningWorker for EmbassyWorker {
    fn wait_stopped(&self, limit: Duration) -> Option<StopReason> {
        let deadline = Instant::now() + limit;
        while !self.worker.is_finished() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.worker.stop_reason()
    }

    fn is_finished(&self) -> bool {
        self.worker.is_finished()
    }

    fn stop_reason(&self) -> Option<StopReason> {
        self.worker.stop_reason()
    }

    fn disconnect(&self) {
        futures_lite::future::block_on(self.worker.disconnect());
    }

    fn id(&self) -> String {
        self.worker.worker_id().as_str().to_owned()
    }

    fn stale_connection_retries(&self) -> u64 {
        self.worker.stats().stale_connection_retries
    }

    fn requests(&self) -> Option<u64> {
        Some(self.worker.stats().requests)
    }

    fn shutdown(&self, grace: Duration) {
        let grace = embassy_time::Duration::from_millis(grace.as_millis() as u64);
        futures_lite::future::block_on(self.worker.shutdown(grace));
    }

    fn stats(&self) -> outage_core::Stats {
        self.worker.stats()
    }
}
