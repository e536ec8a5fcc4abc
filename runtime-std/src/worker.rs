//! The host worker's I/O for [`outage_core::driver::drive`] (which
//! [`crate::Worker`] runs on a thread of its own): surf for the requests
//! (each one's id, route, body and answer the core's
//! [`outage_core::call`]), the application's handlers for the tasks.
//!
//! Everything here is I/O and storage: every decision (what to send when,
//! what an answer means, the grace of a stop, whether to delete the worker)
//! is the core's [`outage_core::Lifecycle`].

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use async_std::channel::{Receiver, Sender};
use futures_lite::FutureExt;
use outage_core::call::{self, Answer, Subject, WhichId};
use outage_core::driver::{Io, TaskNames};
use outage_core::{
    Clock, Config, Control, Event, Failure, Instant, NO_HANDLER_ERROR, Reply, Request, SHUTDOWN_ERROR,
    Snapshot, Stage, Stats, StopReason,
};

use crate::StdClock;
use crate::api::{self, Api, ApiError, SharedToken, text, written};
use crate::deadline::Deadlines;
use crate::http::Http;
use crate::job::Task;
use crate::job::{Handler, Job, TaskResult};
use crate::setup::{Credentials, read_token_file};
use crate::sync::lock;

/// Task slots the host driver has: [`Config::concurrency`] of them are used.
pub(crate) const SLOTS: usize = Config::MAX_CONCURRENCY as usize;

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
    pub push: outage_core::push::PushMode,
    pub ops: crate::ops::OpsConfig,
    pub max_push_message: usize,
}

/// What the worker's task shares with its handle.
pub(crate) struct Shared<H> {
    pub(crate) api: Api<H>,
    pub(crate) clock: StdClock,
    pub(crate) jobs: Vec<(Job, Arc<dyn Handler>)>,
    pub(crate) credentials: Credentials,
    pub(crate) observer: Option<Observer>,
    pub(crate) config: Config,
    /// The server's URL (for push).
    pub(crate) url: String,
    /// The largest push message accepted.
    pub(crate) max_push_message: usize,
    /// What the push task tells the driver ([`Io::push`]).
    pub(crate) push_input: Mutex<outage_core::push::PushInput>,
    /// Wakes the push task ([`Shared::wake_push`]).
    pub(crate) push_wake: (Sender<()>, Receiver<()>),
    /// The worker ids: current, pending (created, not yet registered) and
    /// old (given up, to be retired).
    pub(crate) ids: Mutex<Ids>,
    pub(crate) control: Mutex<Control>,
    pub(crate) control_changed: (Sender<()>, Receiver<()>),
    pub(crate) view: Mutex<View>,
    /// Published once startup is over, and again once the driver returns.
    pub(crate) progress: (Sender<()>, Receiver<()>),
    /// Closed once startup is over (registered, given up or stopped), which
    /// wakes every waiter at once ([`Worker::started`](crate::Worker::started),
    /// the push listener).
    pub(crate) startup_over: (Sender<()>, Receiver<()>),
    /// The server's words on the last refused request (for startup errors).
    pub(crate) last_detail: Mutex<Option<String>>,
    /// The driver's sleeps, on a timer kept from one turn of its loop to
    /// the next (not a fresh one per turn, that is per request).
    pub(crate) sleeps: Deadlines,
    /// Metrics, systemd, the worker id of log lines.
    pub(crate) ops: crate::ops::Ops,
}

#[derive(Clone, Copy)]
pub(crate) struct View {
    pub(crate) stage: Stage,
    pub(crate) stop: Option<StopReason>,
    pub(crate) stats: Stats,
    pub(crate) last_recovery: Option<StdInstant>,
    pub(crate) finished: bool,
    pub(crate) startup_error: Option<outage_core::StartupError>,
    /// It registered and served (startup succeeded).
    pub(crate) registered: bool,
}

/// The worker ids.
#[derive(Default)]
pub(crate) struct Ids {
    pub(crate) current: String,
    pending: String,
    old: String,
}

/// A lane's own storage: on a task slot, the held task and its outcome.
#[derive(Default)]
pub(crate) struct Slot {
    task: Option<Task>,
    outcome: Option<TaskResult>,
}

impl<H: Http> Shared<H> {
    fn failed(&self, e: ApiError) -> Failure {
        if e.detail.is_some() {
            *lock(&self.last_detail) = e.detail;
        }
        e.failure
    }

    async fn exchange(&self, lane: &mut Slot, req: Request) -> Result<Reply, ApiError> {
        if req == Request::Login {
            self.renew().await?;
            // The new token's remaining life, if it is a JWT: the core
            // renews it ahead of its expiry.
            let token = self.api.token().get();
            let unix_now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let exp_ms = outage_core::jwt::expires_at(&token).map(|s| s.saturating_mul(1000));
            return Ok(match exp_ms {
                Some(exp) if exp > unix_now_ms => Reply::Renewed {
                    valid_for: outage_core::Duration::from_millis(exp - unix_now_ms),
                },
                _ => Reply::Done,
            });
        }
        // The worker id the request names (the core's rule), its job and
        // the held task: what the core writes its route and body from.
        let id = {
            let ids = lock(&self.ids);
            match req.names_id() {
                Some(WhichId::Pending) => ids.pending.clone(),
                Some(WhichId::Old) => ids.old.clone(),
                _ => ids.current.clone(),
            }
        };
        let (job, schema) = match req {
            Request::RegisterJob(n) => {
                let (job, _) = self.jobs.get(usize::from(n)).ok_or_else(|| local(req))?;
                (
                    Some(job),
                    serde_json::to_string(&job.schema).expect("a JSON value serialises"),
                )
            }
            _ => (None, String::new()),
        };
        let job = job.map(|j| call::Job {
            room: &j.room,
            category: &j.category,
            name: &j.name,
            schema: &schema,
        });
        let s = Subject {
            worker_id: &id,
            task_id: lane.task.as_ref().map_or("", |t| t.id.as_str()),
            job: job.as_ref(),
            error: lane
                .outcome
                .as_ref()
                .and_then(|o| o.as_ref().err())
                .map(String::as_str),
        };
        let route = req.route(&s).map_err(|_| local(req))?;
        let body = req.has_body().then(|| written(|out| req.write_body(&s, out)));
        let resp = self.api.call(req, route, body.as_deref()).await?;
        let malformed = |failure| ApiError {
            endpoint: req.endpoint(),
            failure,
            detail: None,
        };
        let answer = req.read(&resp.body, &id).map_err(malformed)?;
        match answer {
            Answer::Created(raw) => {
                let created = text(raw).ok_or(malformed(Failure::MalformedResponse))?;
                lock(&self.ids).pending = created;
            }
            Answer::Claimed(task) => {
                lane.task = task.map(api::task).transpose().map_err(malformed)?;
                lane.outcome = None;
            }
            Answer::Done | Answer::Task(_) => {}
        }
        Ok(answer.reply())
    }

    /// Renew the credentials: log in again, or read the token file again.
    async fn renew(&self) -> Result<(), ApiError> {
        let refused = |failure| ApiError {
            endpoint: outage_core::Endpoint::Login,
            failure,
            detail: None,
        };
        let renewed = match &self.credentials {
            Credentials::Login { user, password } => self.api.login(user, password).await,
            Credentials::TokenFile(path) => match read_token_file(path) {
                Ok(token) => {
                    self.api.set_token(&token);
                    Ok(())
                }
                Err(why) => {
                    // The server was not asked: the worker cannot renew
                    // its token (not "the login was refused").
                    self.emit(&Event::TokenFileUnusable { why: &why });
                    Err(refused(Failure::Local(outage_core::Local::TokenFile)))
                }
            },
            // The core asks only when the credentials can be renewed.
            Credentials::Token(_) => Err(refused(Failure::status(401))),
        };
        if renewed.is_ok() {
            // Push authenticates again with the new token.
            self.wake_push();
        }
        renewed
    }

    pub(crate) fn emit(&self, event: &Event<'_>) {
        crate::record::emit_as(event, Some(&self.ops.worker_id()));
        self.ops.on_event(event);
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
    type Slot = Slot;
    type Beat = ();

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn emit(&self, event: &Event<'_>) {
        Shared::emit(self, event);
    }

    async fn sleep_until(&self, t: Instant) {
        let left = StdDuration::from_millis((t - self.now()).as_millis());
        match StdInstant::now().checked_add(left) {
            Some(at) => self.sleeps.sleep_until(self.ops.cap(at)).await,
            None => std::future::pending().await,
        }
    }

    async fn send(&self, lane: &mut Slot, req: Request) -> Result<Reply, Failure> {
        self.exchange(lane, req).await.map_err(|e| self.failed(e))
    }

    async fn beat(&self, _: &mut (), req: Request) -> Result<Reply, Failure> {
        // Heartbeats and logins only (`Io::beat`): a request with a body
        // needs a lane's task or job, and a claim answered into this empty
        // slot would be lost, so one is refused, not sent.
        if req.has_body() {
            return Err(Failure::Local(outage_core::Local::Encoding));
        }
        self.send(&mut Slot::default(), req).await
    }

    async fn run(&self, lane: &mut Slot) -> bool {
        // The handler owns the task (its payload moves, no copy); the lane
        // keeps its id and names for the delivery.
        let Some(task) = lane.task.take() else {
            return false;
        };
        lane.task = Some(task.header());
        let handler = self.jobs.iter().find(|(j, _)| j.matches(&task.job_name));
        let outcome = match handler {
            None => Err(NO_HANDLER_ERROR.to_owned()),
            // The call inside the caught future: a handler may panic
            // before its future exists (`|t| { t.payload().unwrap(); … }`).
            Some((_, h)) => match AssertUnwindSafe(async move { h.run(task).await })
                .catch_unwind()
                .await
            {
                Ok(r) => r,
                Err(panic) => Err(panic_text(&*panic)),
            },
        };
        let ok = outcome.is_ok();
        lane.outcome = Some(outcome);
        ok
    }

    fn abandon(&self, lane: &mut Slot) {
        lane.outcome = Some(Err(SHUTDOWN_ERROR.to_owned()));
    }

    fn adopt(&self) {
        {
            let ids = &mut *lock(&self.ids);
            ids.old = std::mem::replace(&mut ids.current, std::mem::take(&mut ids.pending));
            self.ops.on_adopt(&ids.current);
        }
        // Push joins the rooms under the new id.
        self.wake_push();
    }

    fn with_worker_id(&self, f: &mut dyn FnMut(&str)) {
        f(&lock(&self.ids).current)
    }

    fn task<'l>(&self, lane: &'l Slot) -> TaskNames<'l> {
        let error = lane.outcome.as_ref().and_then(|o| o.as_ref().err());
        let names = |t: &'l Task| (t.id.as_str(), t.job_name.as_str(), t.room_id.as_str());
        TaskNames::of(lane.task.as_ref().map(names), error.map(String::as_str))
    }

    fn control(&self) -> Control {
        *lock(&self.control)
    }

    async fn control_changed(&self) {
        let _ = self.control_changed.1.recv().await;
    }

    fn push(&self) -> outage_core::push::PushInput {
        *lock(&self.push_input)
    }

    fn publish(&self, now: &Snapshot) {
        self.ops.on_publish(now);
        let mut view = lock(&self.view);
        if view.stage != now.stage {
            self.wake_push();
        }
        let started = view.stage == Stage::Starting && now.stage != Stage::Starting;
        (view.stage, view.stop, view.stats) = (now.stage, now.stop, now.stats);
        // Before the start is announced: the launch reads it then.
        view.startup_error = now.startup_error;
        view.registered |= now.stage == Stage::Running;
        if started {
            let _ = self.progress.0.try_send(());
            self.startup_over.0.close();
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
