//! The host worker: [`outage_core::driver::drive`] on an async-std task,
//! with surf for the requests and the application's handlers for the tasks.
//!
//! Everything here is I/O and storage: every decision (what to send when,
//! what an answer means, the grace of a stop, whether to delete the worker)
//! is the core's [`Lifecycle`].

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use async_std::channel::{Receiver, Sender, bounded};
use futures_lite::FutureExt;
use outage_core::driver::{Io, Names, drive};
use outage_core::{
    Clock, Config, Control, Event, Failure, Instant, Lifecycle, NO_HANDLER_ERROR, Reply, Request,
    SHUTDOWN_ERROR, Stage, Stats, StopReason,
};

use crate::api::{Api, ApiError, SharedToken, Task};
use crate::builder::{Credentials, StartError, read_token_file};
use crate::http::{Http, SurfHttp};
use crate::job::{Handler, Job, TaskResult};
use crate::{StdClock, emit};

/// Sees every event the worker logs ([`crate::WorkerBuilder::on_event`]).
pub(crate) type Observer = Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// What [`crate::WorkerBuilder`] hands over, checked.
pub(crate) struct Launch<H> {
    pub http: H,
    pub url: String,
    pub token: SharedToken,
    pub credentials: Credentials,
    pub jobs: Vec<(Job, Arc<dyn Handler>)>,
    pub config: Config,
    pub seed: u64,
    pub observer: Option<Observer>,
}

/// What the worker's task shares with its handle.
struct Shared<H> {
    api: Api<H>,
    clock: StdClock,
    jobs: Vec<(Job, Arc<dyn Handler>)>,
    credentials: Credentials,
    observer: Option<Observer>,
    /// The current worker id, for the heartbeat lane and the handle.
    worker_id: Mutex<String>,
    control: Mutex<Control>,
    control_changed: (Sender<()>, Receiver<()>),
    view: Mutex<View>,
    /// Published once startup is over, and again once the driver returns.
    progress: (Sender<()>, Receiver<()>),
    /// The server's words on the last refused request (for startup errors).
    last_detail: Mutex<Option<String>>,
}

#[derive(Clone, Copy)]
struct View {
    stage: Stage,
    stop: Option<StopReason>,
    stats: Stats,
    last_recovery: Option<StdInstant>,
    finished: bool,
    startup_error: Option<outage_core::StartupError>,
}

/// A lane's own storage: ids and, on the claim lane, the held task.
#[derive(Default)]
pub(crate) struct Lane {
    current: String,
    pending: String,
    old: String,
    task: Option<Task>,
    outcome: Option<TaskResult>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<H: Http> Shared<H> {
    fn failed(&self, e: ApiError) -> Failure {
        if e.detail.is_some() {
            *lock(&self.last_detail) = e.detail;
        }
        e.failure
    }

    async fn exchange(&self, lane: &mut Lane, req: Request) -> Result<Reply, ApiError> {
        let api = &self.api;
        let task_id = lane.task.as_ref().map_or("", |t| t.id.as_str());
        match req {
            Request::Login => return self.renew().await.map(|()| Reply::Done),
            Request::CreateWorker => lane.pending = api.create_worker().await?,
            Request::RegisterJob(n) => match self.jobs.get(usize::from(n)) {
                Some((job, _)) => api.register_job(job, &lane.pending).await?,
                None => return Err(local(req)),
            },
            Request::Heartbeat => {
                let id = lock(&self.worker_id).clone();
                api.heartbeat(&id).await?
            }
            Request::Claim => {
                lane.task = api.claim(&lane.current).await?;
                lane.outcome = None;
                return Ok(Reply::Claimed(lane.task.is_some()));
            }
            Request::Update(status) => {
                let error = lane.outcome.as_ref().and_then(|o| o.as_ref().err());
                api.set_status(task_id, status, error.map(String::as_str)).await?
            }
            Request::GetTask => return api.get_task(task_id, &lane.current).await.map(Reply::Task),
            Request::Retire => api.disconnect(req, &lane.old).await?,
            Request::Disconnect => api.disconnect(req, &lane.current).await?,
        }
        Ok(Reply::Done)
    }

    /// Renew the credentials: log in again, or read the token file again.
    async fn renew(&self) -> Result<(), ApiError> {
        let refused = |failure| ApiError {
            endpoint: outage_core::Endpoint::Login,
            failure,
            detail: None,
        };
        match &self.credentials {
            Credentials::Login { user, password } => self.api.login(user, password).await,
            Credentials::TokenFile(path) => match read_token_file(path) {
                Ok(token) => Ok(self.api.set_token(&token)),
                Err(why) => {
                    self.emit(&Event::TokenFileUnusable { why: &why });
                    Err(refused(Failure::status(401)))
                }
            },
            // The core asks only when the credentials can be renewed.
            Credentials::Token(_) => Err(refused(Failure::status(401))),
        }
    }

    fn emit(&self, event: &Event<'_>) {
        emit(event);
        if let Event::Recovered { .. } = event {
            lock(&self.view).last_recovery = Some(StdInstant::now());
        }
        if let Some(o) = &self.observer {
            o(event);
        }
    }
}

/// A request the worker cannot even address: its own problem.
fn local(req: Request) -> ApiError {
    ApiError {
        endpoint: req.endpoint(),
        failure: Failure::Local(outage_core::Local::Encoding),
        detail: None,
    }
}

impl<H: Http> Io for Shared<H> {
    type Lane = Lane;

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn emit(&self, event: &Event<'_>) {
        Shared::emit(self, event);
    }

    async fn sleep_until(&self, t: Instant) {
        async_std::task::sleep(StdDuration::from_millis((t - self.now()).as_millis())).await;
    }

    async fn send(&self, lane: &mut Lane, req: Request) -> Result<Reply, Failure> {
        self.exchange(lane, req).await.map_err(|e| self.failed(e))
    }

    async fn run(&self, lane: &mut Lane) -> bool {
        // The handler owns the task (its payload moves, no copy); the lane
        // keeps its id and names for the delivery.
        let Some(task) = lane.task.take() else {
            return false;
        };
        lane.task = Some(task.header());
        let handler = self.jobs.iter().find(|(j, _)| j.full_name() == task.job_name);
        let outcome = match handler {
            None => Err(NO_HANDLER_ERROR.to_owned()),
            Some((_, h)) => match AssertUnwindSafe(h.run(task)).catch_unwind().await {
                Ok(r) => r,
                Err(panic) => Err(panic_text(&*panic)),
            },
        };
        let ok = outcome.is_ok();
        lane.outcome = Some(outcome);
        ok
    }

    fn abandon(&self, lane: &mut Lane) {
        lane.outcome = Some(Err(SHUTDOWN_ERROR.to_owned()));
    }

    fn adopt(&self, lane: &mut Lane) {
        lane.old = std::mem::replace(&mut lane.current, std::mem::take(&mut lane.pending));
        lock(&self.worker_id).clone_from(&lane.current);
    }

    fn names<'l>(&self, lane: &'l Lane) -> Names<'l> {
        let task = lane.task.as_ref();
        Names {
            worker_id: &lane.current,
            task_id: task.map_or("", |t| &t.id),
            job: task.map_or("", |t| &t.job_name),
            room: task.map_or("", |t| &t.room_id),
            error: lane
                .outcome
                .as_ref()
                .and_then(|o| o.as_ref().err())
                .map(String::as_str),
        }
    }

    fn control(&self) -> Control {
        *lock(&self.control)
    }

    async fn control_changed(&self) {
        let _ = self.control_changed.1.recv().await;
    }

    fn publish(&self, lc: &Lifecycle) {
        let mut view = lock(&self.view);
        let started = view.stage == Stage::Starting && lc.stage() != Stage::Starting;
        (view.stage, view.stop, view.stats) = (lc.stage(), lc.stop_reason(), lc.stats());
        if started {
            let _ = self.progress.0.try_send(());
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("handler panicked: {msg}")
}

/// A running worker, on its own async-std task until it stops; call
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
        let mut lc =
            Lifecycle::new(l.config, jobs, login_first, l.seed, clock.now()).map_err(StartError::Config)?;
        let shared = Arc::new(Shared {
            api: Api::new(l.http, &l.url, l.token, l.config),
            clock,
            jobs: l.jobs,
            credentials: l.credentials,
            observer: l.observer,
            worker_id: Mutex::new(String::new()),
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
        });
        let io = shared.clone();
        async_std::task::spawn(async move {
            drive(&*io, &mut lc, Lane::default(), Lane::default()).await;
            let mut view = lock(&io.view);
            (view.finished, view.startup_error) = (true, lc.startup_error());
            drop(view);
            io.progress.0.close();
        });
        let _ = shared.progress.1.recv().await;
        let failed = lock(&shared.view).startup_error;
        if let Some(error) = failed {
            let detail = lock(&shared.last_detail).take();
            return Err(StartError::Startup { error, detail });
        }
        Ok(Worker { shared })
    }

    fn view(&self) -> View {
        *lock(&self.shared.view)
    }

    fn ask(&self, control: Control) {
        *lock(&self.shared.control) = control;
        let _ = self.shared.control_changed.0.try_send(());
    }

    /// The worker's id on the server (it changes if it registers again).
    pub fn id(&self) -> String {
        lock(&self.shared.worker_id).clone()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_become_error_texts() {
        let p: Box<dyn std::any::Any + Send> = Box::new("boom");
        assert_eq!(panic_text(&*p), "handler panicked: boom");
        let p: Box<dyn std::any::Any + Send> = Box::new(String::from("bad"));
        assert_eq!(panic_text(&*p), "handler panicked: bad");
    }
}
