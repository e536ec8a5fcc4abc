//! The handle of a running host worker: its view, and stopping it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use async_std::channel::bounded;
use futures_lite::FutureExt;
use outage_core::driver::drive;
use outage_core::{Clock, Control, Event, Lifecycle, Stage, Stats, StopReason};

use crate::api::Api;
use crate::http::{Http, SurfHttp};
use crate::setup::{Credentials, StartError};
use crate::sync::lock;
use crate::worker::{Ids, Launch, SLOTS, Shared, Slot, View};
use crate::{StdClock, emit};

/// A running worker, on a thread of its own until it stops; call
/// [`Worker::disconnect`] (or [`Worker::run_until_signal`]) to stop it and
/// delete it from the server. Dropping it halts it at once (without the
/// delete).
pub struct Worker<H: Http = SurfHttp> {
    shared: Arc<Shared<H>>,
}

impl<H: Http> Worker<H> {
    /// Start the driver on its own thread; [`Worker::started`] waits for
    /// the registration.
    pub(crate) fn launch(l: Launch<H>) -> Result<Worker<H>, StartError> {
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
            max_push_message: l.max_push_message,
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
                registered: false,
            }),
            progress: bounded(1),
            startup_over: bounded(1),
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
                let slots: [Slot; SLOTS] = std::array::from_fn(|_| Slot::default());
                // On the heap: with its task slots the future is large (more
                // so in debug builds), and `block_on` would keep it on this
                // thread's stack.
                async_std::task::block_on(Box::pin(drive(&*io, &mut lc, (), slots)));
                let mut view = lock(&io.view);
                (view.finished, view.startup_error) = (true, lc.startup_error());
                drop(view);
                io.ops.on_finish();
                io.progress.0.close();
                io.startup_over.0.close();
                io.wake_push();
            })
            // Only when the OS refuses a thread.
            .map_err(StartError::Thread)?;
        if push != outage_core::push::PushMode::Off {
            // Push listens once the worker is registered (its rooms are
            // its jobs' and its id's).
            let shared = shared.clone();
            async_std::task::spawn(async move {
                if registered(&shared).await {
                    crate::listen::run(shared, push, seed).await;
                }
            });
        }
        Ok(Worker { shared })
    }

    /// Wait until the worker is registered and serving; or why it could
    /// not start (its startup retries gave up — logged as they happened —
    /// or it was stopped first: [`StartError::Stopped`]).
    pub async fn started(&self) -> Result<(), StartError> {
        if registered(&self.shared).await {
            return Ok(());
        }
        let failed = lock(&self.shared.view).startup_error;
        match failed {
            Some(error) => {
                let detail = lock(&self.shared.last_detail).take();
                Err(StartError::Startup { error, detail })
            }
            None => Err(StartError::Stopped),
        }
    }

    /// Why its startup gave up, if it did.
    pub fn startup_error(&self) -> Option<outage_core::StartupError> {
        self.view().startup_error
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

    /// Serve until a stop signal (or until the worker stops by itself),
    /// then [`Worker::shutdown`] with `grace`; a second stop signal during
    /// the shutdown stops at once ([`Worker::stop_now`]). Returns why it
    /// stopped. Also during startup: a stop signal then ends the startup
    /// retries, and the worker stops as requested.
    ///
    /// The stop signals ([`STOP_SIGNALS`]): SIGINT, SIGTERM, SIGHUP (the
    /// terminal it was started from closed), SIGQUIT, SIGXCPU (a CPU
    /// limit: the kernel kills soon after) and, on Linux, SIGPWR (the power
    /// is going); each is logged. [`IGNORED_SIGNALS`] — SIGUSR1, SIGUSR2,
    /// SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGXFSZ and, on Linux,
    /// SIGSTKFLT, whose default would end the process at once — are
    /// logged and ignored. Either way no signal that can be caught leaves a
    /// command orphaned or a task `running` on the server. (SIGKILL cannot
    /// be caught: a command then lives on, in its own process group, and the
    /// server's sweeper fails its task.)
    pub async fn run_until_signal(&self, grace: StdDuration) -> StopReason {
        let Ok(mut signals) = handled_signals() else {
            emit(&Event::SignalsUnavailable);
            return self.wait().await;
        };
        let handle = signals.handle();
        let mut next_stop = async || next_stop_signal(&mut signals).await.is_some();
        // The stop itself is logged by the core ("Stop requested").
        let got_signal = async { next_stop().await }.or(async {
            self.wait().await;
            false
        });
        if got_signal.await {
            let again = async {
                while next_stop().await {
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

/// Every signal a worker handles ([`STOP_SIGNALS`] and
/// [`IGNORED_SIGNALS`]), as a stream for [`next_stop_signal`]: the one
/// list [`Worker::run_until_signal`] and the CLI's `--serve` startup use.
pub fn handled_signals() -> std::io::Result<signal_hook_async_std::Signals> {
    signal_hook_async_std::Signals::new(STOP_SIGNALS.iter().chain(IGNORED_SIGNALS).map(|(s, _)| *s))
}

/// The next stop signal from `signals` (from [`handled_signals`]): its
/// name, once logged; the ignored ones are logged and skipped. `None` when
/// the stream is closed.
pub async fn next_stop_signal(signals: &mut signal_hook_async_std::Signals) -> Option<&'static str> {
    use futures_lite::StreamExt;
    while let Some(sig) = signals.next().await {
        if let Some((_, name)) = IGNORED_SIGNALS.iter().find(|(s, _)| *s == sig) {
            emit(&Event::Signal { name, stops: false });
            continue;
        }
        let name = STOP_SIGNALS
            .iter()
            .find(|(s, _)| *s == sig)
            .map_or("a signal", |(_, n)| n);
        emit(&Event::Signal { name, stops: true });
        return Some(name);
    }
    None
}

/// The signals that stop a worker ([`Worker::run_until_signal`]), with
/// their names. SIGPWR (Linux): a UPS daemon saying the power is going —
/// a stop, like SIGTERM, so the running task's outcome is delivered while
/// there is power.
pub const STOP_SIGNALS: &[(i32, &str)] = {
    use signal_hook::consts::*;
    &[
        (SIGINT, "SIGINT"),
        (SIGTERM, "SIGTERM"),
        (SIGHUP, "SIGHUP"),
        (SIGQUIT, "SIGQUIT"),
        (SIGXCPU, "SIGXCPU"),
        #[cfg(any(target_os = "linux", target_os = "android"))]
        (nix::libc::SIGPWR, "SIGPWR"),
    ]
};

/// The signals a worker logs and ignores ([`Worker::run_until_signal`]):
/// by default each would end the process at once, leaving its commands
/// orphaned and its tasks `running`. SIGSTKFLT (Linux) is ignored, not a
/// stop: the kernel never sends it (a coprocessor stack fault, unused), so
/// one that comes is a stray `kill`, not a request to stop, and a stray
/// signal should not cost the work under way.
pub const IGNORED_SIGNALS: &[(i32, &str)] = {
    use signal_hook::consts::*;
    &[
        (SIGUSR1, "SIGUSR1"),
        (SIGUSR2, "SIGUSR2"),
        (SIGALRM, "SIGALRM"),
        (SIGVTALRM, "SIGVTALRM"),
        (SIGPROF, "SIGPROF"),
        (SIGIO, "SIGIO"),
        (SIGXFSZ, "SIGXFSZ"),
        #[cfg(all(
            any(target_os = "linux", target_os = "android"),
            not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64"))
        ))]
        (nix::libc::SIGSTKFLT, "SIGSTKFLT"),
    ]
};

/// Wait until startup is over: `true` if the worker registered.
async fn registered<H: Http>(shared: &Shared<H>) -> bool {
    // Nothing is ever sent: the channel is closed when startup is over.
    let _ = shared.startup_over.1.recv().await;
    lock(&shared.view).registered
}

#[cfg(test)]
impl<H: Http> Worker<H> {
    /// The bound the push listener ([`crate::listen`]) connects with.
    pub(crate) fn push_bound(&self) -> usize {
        self.shared.max_push_message
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
