//! The handle of a running host worker: its view, and stopping it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use async_std::channel::bounded;
use futures_lite::FutureExt;
use outage_core::driver::drive;
use outage_core::{Clock, Control, Event, Lifecycle, Stage, Stats, StopReason};

use crate::api::Api;
use crate::builder::{Credentials, StartError};
use crate::http::{Http, SurfHttp};
use crate::worker::{Ids, Lane, Launch, SLOTS, Shared, View, lock};
use crate::{StdClock, emit};

/// A running worker, on a thread of its own until it stops; call
/// [`Worker::disconnect`] (or [`Worker::run_until_signal`]) to stop it and
/// delete it from the server. Dropping it halts it at once (without the
/// delete).
pub struct Worker<H: Http = SurfHttp> {
    shared: Arc<Shared<H>>,
}

impl<H: Http> Worker<H> {
    /// Start the driver; return once registered (or why not).
    pub(crate) async fn launch(l: Launch<H>) -> Result<Worker<H>, StartError> {
        let login_first = matches!(l.credentials, Credentials::Login { .. });
        let clock = StdClock::new();
        let jobs = u16::try_from(l.jobs.len()).map_err(|_| StartError::NoJobs)?;
        let mut lc = Lifecycle::<SLOTS>::new(l.config, jobs, login_first, l.seed, clock.now())
            .map_err(StartError::Config)?;
        let job_names: Vec<String> = l.jobs.iter().map(|(j, _)| j.full_name()).collect();
        let request_timeout = StdDuration::from_millis(l.config.request_timeout.as_millis());
        let ops = crate::ops::Ops::new(l.ops, clock, &job_names, request_timeout);
        let shared = Arc::new(Shared {
            api: Api::new(l.http, &l.url, l.token, l.config),
            config: l.config,
            url: l.url,
            push_input: Mutex::new(Default::default()),
            push_wake: bounded(1),
            clock,
            jobs: l.jobs,
            credentials: l.credentials,
            observer: l.observer,
            ids: Mutex::new(Ids::default()),
            control: Mutex::new(Control::Run),
            control_changed: bounded(1),
            view: Mutex::new(View {
                stage: Stage::Starting,
                stop: None,
                stats: Stats::default(),
                last_recovery: None,
                finished: false,
                startup_error: None,
            }),
            progress: bounded(1),
            last_detail: Mutex::new(None),
            sleeps: Default::default(),
            ops,
        });
        let io = shared.clone();
        let (push, seed) = (l.push, l.seed);
        // The whole worker is one future; it runs on a thread of its own
        // with `block_on`, which polls the I/O reactor on this same thread
        // while the worker waits. A request's answer then wakes the thread
        // that runs the worker, instead of the reactor thread waking an
        // executor thread for every request (~10× fewer context switches
        // and a fraction of the CPU per task; see BENCHMARKS.md). Handlers
        // run on it too, as before inside the driver's future; what they
        // spawn goes to async-std's executor as usual.
        std::thread::Builder::new()
            .name("outage-driver".into())
            .spawn(move || {
                let slots: [Lane; SLOTS] = std::array::from_fn(|_| Lane::default());
                // On the heap: with its task slots the future is large (more
                // so in debug builds), and `block_on` would keep it on this
                // thread's stack.
                async_std::task::block_on(Box::pin(drive(&*io, &mut lc, (), slots)));
                let mut view = lock(&io.view);
                (view.finished, view.startup_error) = (true, lc.startup_error());
                drop(view);
                io.ops.on_finish();
                io.progress.0.close();
                io.wake_push();
            })
            // Only when the OS refuses a thread.
            .map_err(StartError::Thread)?;
        let _ = shared.progress.1.recv().await;
        // A startup that failed leaves `Starting` too, but its error is
        // known only once the driver has returned (on its own thread, maybe
        // a moment later): unless the worker is serving, wait for the end.
        while {
            let view = lock(&shared.view);
            view.stage != Stage::Running && !view.finished
        } {
            if shared.progress.1.recv().await.is_err() {
                break; // closed: the driver has returned
            }
        }
        let failed = lock(&shared.view).startup_error;
        if let Some(error) = failed {
            let detail = lock(&shared.last_detail).take();
            return Err(StartError::Startup { error, detail });
        }
        if push != outage_core::push::PushMode::Off {
            async_std::task::spawn(crate::listen::run(shared.clone(), push, seed));
        }
        Ok(Worker { shared })
    }

    fn view(&self) -> View {
        *lock(&self.shared.view)
    }

    fn ask(&self, control: Control) {
        *lock(&self.shared.control) = control;
        let _ = self.shared.control_changed.0.try_send(());
        self.shared.wake_push();
    }

    /// The worker's id on the server (it changes if it registers again).
    pub fn id(&self) -> String {
        lock(&self.shared.ids).current.clone()
    }

    /// Why it stopped (or is stopping), once it does.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.view().stop
    }

    /// True once the worker has finished: stopped, and deleted from the
    /// server where the core decided to.
    pub fn is_finished(&self) -> bool {
        self.view().finished
    }

    /// The counters so far (the same on every runtime).
    pub fn stats(&self) -> Stats {
        self.view().stats
    }

    /// When the last outage ended.
    pub fn last_recovery(&self) -> Option<StdInstant> {
        self.view().last_recovery
    }

    /// Log `event` as this worker's ([`crate::emit`] with its current id
    /// as the `worker_id` field), e.g. the application's own summary line.
    pub fn log(&self, event: &Event<'_>) {
        crate::record::emit_as(event, Some(&self.id()));
    }

    /// Wait until the worker has finished — stopped by itself (outage too
    /// long, registration lost, a request it cannot write) or on request —
    /// and why. Always returns once the worker stops.
    pub async fn wait(&self) -> StopReason {
        while !self.is_finished() {
            let _ = self.shared.progress.1.recv().await;
        }
        self.stop_reason().unwrap_or(StopReason::Requested)
    }

    /// Stop claiming; give a running task up to `grace` to finish (else it
    /// is reported `failed`, "worker shutting down"); deliver what is held;
    /// delete the worker from the server (a failure there is only logged).
    /// Bounded by `grace + request_timeout + 1 s` plus the delete's own
    /// timeout. Idempotent: later calls wait for the first.
    pub async fn shutdown(&self, grace: StdDuration) {
        if *lock(&self.shared.control) == Control::Run {
            let grace = outage_core::Duration::from_millis(grace.as_millis() as u64);
            self.ask(Control::Stop { grace });
        }
        self.wait().await;
    }

    /// [`Worker::shutdown`] without grace.
    pub async fn disconnect(&self) {
        self.shutdown(StdDuration::ZERO).await;
    }

    /// Give up the grace period of a stop under way: a running task is
    /// abandoned at once and reported failed ("worker shutting down"). What
    /// a second Ctrl-C does.
    pub fn stop_now(&self) {
        self.ask(Control::StopNow);
    }

    /// Serve until SIGINT or SIGTERM (or until the worker stops by itself),
    /// then [`Worker::shutdown`] with `grace`; a second signal during the
    /// shutdown stops at once ([`Worker::stop_now`]). Returns why it
    /// stopped.
    pub async fn run_until_signal(&self, grace: StdDuration) -> StopReason {
        use futures_lite::StreamExt;
        let signals =
            signal_hook_async_std::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]);
        let Ok(mut signals) = signals else {
            emit(&Event::SignalsUnavailable);
            return self.wait().await;
        };
        let handle = signals.handle();
        // The stop itself is logged by the core ("Stop requested").
        let got_signal = async { signals.next().await.is_some() }.or(async {
            self.wait().await;
            false
        });
        if got_signal.await {
            let again = async {
                while signals.next().await.is_some() {
                    self.stop_now();
                }
                futures_lite::future::pending::<()>().await
            };
            self.shutdown(grace).or(again).await;
        }
        handle.close();
        self.wait().await
    }
}

impl<H: Http> Drop for Worker<H> {
    fn drop(&mut self) {
        self.ask(Control::Halt);
    }
}

impl<H: Http> fmt::Debug for Worker<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id())
            .field("stop_reason", &self.stop_reason())
            .finish_non_exhaustive()
    }
}
