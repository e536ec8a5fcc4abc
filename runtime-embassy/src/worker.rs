//! Running the embassy worker, and its handle: [`Worker::run`],
//! [`Worker::supervise`], stopping it. The worker's life is the core's
//! ([`outage_core::driver::drive`] over a [`outage_core::Lifecycle`]);
//! `adapter` performs its I/O on the worker's state (`state`). No heap:
//! every buffer is the caller's.
//!
//! Layering: the top; above `adapter`, `state`, `restart` and `types`.

use core::sync::atomic::Ordering;

use embassy_futures::select::{Either, select};
use embedded_nal_async::{Dns, TcpConnect};
use outage_core::{Clock, Control, Lifecycle, StartupError, StopReason};

use crate::adapter::{Driver, Slot};
use crate::restart::{Restart, Stopped};
use crate::state::Worker;
use crate::types::{EmbassyClock, Handler};

/// The buffers of the claim loop. Sizes are the user's: `rx` must hold the
/// largest claim response (headers included), `payload` the largest
/// payload, `tx` the largest request body (a status update carries up to
/// 128 bytes of error text; a registration carries the job's schema).
pub struct ClaimBuffers<'b> {
    /// Receive buffer.
    pub rx: &'b mut [u8],
    /// Request bodies.
    pub tx: &'b mut [u8],
    /// The current task's payload (kept through an outage).
    pub payload: &'b mut [u8],
}

impl<'a, T: TcpConnect, D: Dns> Worker<'a, T, D> {
    /// Run the worker once, in this task: log in if needed, create it and
    /// register its jobs (on the core's startup schedule), serve, and stop
    /// — by itself (an outage longer than `max_unreachable`, the
    /// registration lost, a request it cannot write) or when asked
    /// ([`Worker::shutdown`]) — deleting it from the server where the core
    /// decides. `heartbeat_rx` receives heartbeat answers (512 bytes is
    /// plenty); the claim lane uses `bufs`. Returns why it stopped, or why
    /// it could not start.
    pub async fn run<H: Handler>(
        &self,
        heartbeat_rx: &mut [u8],
        bufs: ClaimBuffers<'_>,
        handler: &mut H,
    ) -> Result<StopReason, StartupError> {
        let seed = (u64::from(self.rand()) << 32) | u64::from(self.rand());
        let jobs = self.jobs.len() as u16;
        // (The configuration was validated in `new`.)
        let mut lc = Lifecycle::<1>::with_valid(self.config, jobs, self.logs_in(), seed, EmbassyClock.now())
            .with_stats(self.stats());
        self.with_view(|v| {
            v.stop = None;
            v.registered_at = None;
            v.startup_error = None;
            if !self.stop_requested.load(Ordering::SeqCst) {
                v.control = Control::Run;
            }
        });
        self.progress.sender().send(1);
        let mut slot = Slot::new(bufs.rx, bufs.tx, bufs.payload, Some(handler));
        let driver = Driver::new(self);
        drive(&driver, &mut lc, heartbeat_rx, [&mut slot]).await;
        self.with_view(|v| v.startup_error = lc.startup_error());
        self.progress.sender().send(3);
        match lc.startup_error() {
            Some(e) => Err(e),
            None => Ok(lc.stop_reason().unwrap_or(StopReason::Requested)),
        }
    }

    /// Wait until a run has registered (`Ok`) or could not start.
    pub async fn started(&self) -> Result<(), StartupError> {
        if let Some(mut r) = self.progress.receiver() {
            r.get_and(|p| *p >= 2).await;
        } else {
            while self.progress.try_get().is_some_and(|p| p < 2) {
                embassy_time::Timer::after_millis(5).await;
            }
        }
        match self.with_view(|v| v.startup_error) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Run the worker for as long as the device runs: [`Worker::run`], and
    /// whenever it stops by itself — an outage longer than
    /// `max_unreachable`, a lost or refused registration, a startup that
    /// gave up — log why, wait `policy`'s backoff and run it again, as a
    /// fresh worker. Returns only once [`Worker::shutdown`] (or
    /// [`Worker::disconnect`]) is called from another task.
    ///
    /// A task that was running when the worker stopped is not resumed: the
    /// server fails it when it sweeps the old worker (or at once, when the
    /// old worker is deleted).
    // Not an `async fn`: that would move each argument into the future's
    // locals and keep its first copy too (68 bytes of the task's RAM); an
    // `async move` block uses them where they are.
    #[allow(clippy::manual_async_fn)]
    pub fn supervise<H: Handler>(
        &self,
        heartbeat_rx: &mut [u8],
        bufs: ClaimBuffers<'_>,
        handler: &mut H,
        policy: Restart,
    ) -> impl Future<Output = ()> {
        async move {
            let mut streak = 0u32;
            while !self.stop_requested.load(Ordering::SeqCst) {
                let run = ClaimBuffers {
                    rx: &mut *bufs.rx,
                    tx: &mut *bufs.tx,
                    payload: &mut *bufs.payload,
                };
                let why = match self.run(&mut *heartbeat_rx, run, &mut *handler).await {
                    Ok(StopReason::Requested) => break,
                    Ok(reason) => Stopped::Stop(reason),
                    Err(e) => Stopped::Startup(e),
                };
                if self.stop_requested.load(Ordering::SeqCst) {
                    break;
                }
                let ran = self.with_view(|v| v.registered_at.map(|at| EmbassyClock.now() - at));
                streak = policy.streak_after(streak, ran.unwrap_or_default());
                let wait = policy.wait(streak, self.config.jitter, self.rand());
                streak = streak.saturating_add(1);
                let restarts = self.with_view(|v| {
                    v.stats.restarts += 1;
                    v.stats.restarts
                });
                self.emit(&outage_core::Event::Restarting {
                    why,
                    wait,
                    restart: restarts as u32,
                });
                let wait = embassy_time::Timer::after(embassy_time::Duration::from_millis(wait.as_millis()));
                if let Either::Second(()) = select(wait, self.until_stop_requested()).await {
                    break;
                }
            }
        }
    }

    async fn until_stop_requested(&self) {
        while !self.stop_requested.load(Ordering::SeqCst) {
            self.control_changed.wait().await;
        }
    }

    fn ask(&self, control: Control) {
        self.with_view(|v| v.control = control);
        self.control_changed.signal(());
    }

    /// Wait until the current run has finished; why it stopped.
    pub async fn wait(&self) -> StopReason {
        match self.progress.receiver() {
            Some(mut r) => {
                r.get_and(|p| *p == 3).await;
            }
            None => {
                while !self.is_finished() {
                    embassy_time::Timer::after_millis(5).await;
                }
            }
        }
        self.stop_reason().unwrap_or(StopReason::Requested)
    }

    /// Stop claiming; give a running task up to `grace` (else it is
    /// reported failed, "worker shutting down"); deliver what is held;
    /// delete the worker from the server (a failure there is only logged);
    /// and make [`Worker::supervise`] return. Bounded by the core: `grace +
    /// request_timeout + 1 s`, then the delete's own timeout. Idempotent.
    pub async fn shutdown(&self, grace: embassy_time::Duration) {
        self.stop_requested.store(true, Ordering::SeqCst);
        if self.with_view(|v| v.control == Control::Run) {
            let grace = outage_core::Duration::from_millis(grace.as_millis());
            self.ask(Control::Stop { grace });
        }
        self.control_changed.signal(());
        self.wait().await;
    }

    /// [`Worker::shutdown`] without grace: stop now.
    pub async fn disconnect(&self) {
        self.shutdown(embassy_time::Duration::from_ticks(0)).await;
    }

    /// Give up the grace of a stop under way: a running task is abandoned
    /// at once and reported failed.
    pub fn stop_now(&self) {
        self.ask(Control::StopNow);
    }
}

use outage_core::driver::drive;
