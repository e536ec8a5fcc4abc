//! The worker's whole life, sans-IO: startup, both lanes of requests, the
//! task, the grace period, the shutdown and the final delete.
//!
//! [`Machine`] holds the outage rules of the two loops; a [`Lifecycle`]
//! wraps it with everything around them that both runtimes used to
//! re-implement: the startup order and its retry schedule, the machine's
//! fresh start once registered, re-registration as a request sequence, which
//! statuses each request accepts, the stale-connection re-send, the grace
//! period and the hard limit of a stop, whether to delete the worker at the
//! end, the counters, and an event queue that never drops.
//!
//! In the style of quinn-proto's `Connection`: the runtime asks what each
//! lane does next ([`Lifecycle::poll_lane`]), performs it, and reports the
//! [`Outcome`] ([`Lifecycle::handle`]); time enters as `now`, deadlines
//! leave as [`Lifecycle::poll_timeout`]. [`crate::driver`] is that runtime
//! loop, written once for every executor.

use crate::protocol::TaskStatus;
use crate::{
    ClaimAction, Config, ConfigError, Duration, Endpoint, Event, Failure, HeartbeatAction, Instant, Machine,
    SplitMix64, StartupError, StartupRetry, StartupStep, Step, StopReason, TaskState, Wake,
};

/// A request a [`Lifecycle`] asks the runtime to send. The runtime keeps
/// the strings (ids, names, the held task and its outcome); the core says
/// which request, when, and what its answer means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Request {
    /// ZnDraw's login (`POST /v1/auth/jwt/login`), or reading the token
    /// file again: the new token is used from then on.
    Login,
    /// `POST /workers`: the runtime keeps the new id as the *pending* one
    /// (the current id stays in use until [`crate::driver::Io::adopt`]).
    CreateWorker,
    /// `PUT /rooms/{room}/jobs` for job `n` under the pending id.
    RegisterJob(u16),
    /// `PATCH /workers/{current id}`.
    Heartbeat,
    /// `POST /tasks/claim`: the runtime keeps a claimed task in the claim
    /// lane and answers [`Reply::Claimed`].
    Claim,
    /// `PATCH /tasks/{held task}` to this status: `running`, or the
    /// outcome (`completed`, or `failed` with the handler's error text).
    /// The answer must carry the task in that status.
    Update(TaskStatus),
    /// `GET /tasks/{held task}`: answered with [`Reply::Task`].
    GetTask,
    /// `DELETE /workers/{old id}`: the id given up after an ambiguous claim.
    Retire,
    /// `DELETE /workers/{current id}`: the worker leaves the server.
    Disconnect,
}

impl Request {
    /// The endpoint, for classifying its failures and for the log.
    pub const fn endpoint(self) -> Endpoint {
        match self {
            Request::Login => Endpoint::Login,
            Request::CreateWorker => Endpoint::CreateWorker,
            Request::RegisterJob(_) => Endpoint::RegisterJob,
            Request::Heartbeat => Endpoint::Heartbeat,
            Request::Claim => Endpoint::Claim,
            Request::Update(_) => Endpoint::TaskStatus,
            Request::GetTask => Endpoint::GetTask,
            Request::Retire | Request::Disconnect => Endpoint::Disconnect,
        }
    }

    /// May it be sent again when its answer was lost
    /// ([`Failure::resend_once`])? Not the `POST`s: login, create, claim.
    pub const fn may_resend(self) -> bool {
        !matches!(self, Request::Login | Request::CreateWorker | Request::Claim)
    }

    /// Is an answer with this status a success? Anything else is a
    /// [`Failure::Status`] for the core to classify.
    pub const fn accepts(self, status: u16) -> bool {
        match self {
            Request::CreateWorker | Request::RegisterJob(_) => matches!(status, 200 | 201),
            Request::Retire | Request::Disconnect => matches!(status, 200 | 204),
            _ => status == 200,
        }
    }

    /// How long to wait for its answer.
    pub const fn timeout(self, cfg: &Config) -> Duration {
        match self {
            Request::Retire | Request::Disconnect => cfg.disconnect_timeout,
            _ => cfg.request_timeout,
        }
    }
}

/// The two lanes of a worker: each carries one operation at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Lane {
    /// Heartbeats and credential renewals.
    Heartbeat = 0,
    /// Startup, claims, the task and its updates, re-registration, the
    /// final delete.
    Claim = 1,
}

impl Lane {
    /// Both lanes, in index order.
    pub const ALL: [Lane; 2] = [Lane::Heartbeat, Lane::Claim];
}

/// What a lane does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Op {
    /// Send this request; report [`Outcome::Replied`].
    Send(Request),
    /// Run the held task's handler; report [`Outcome::Ran`].
    Run,
}

/// A successful answer, read by the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The request did what it asked.
    Done,
    /// A claim: whether it returned a task.
    Claimed(bool),
    /// `GET /tasks/{id}`: the task's state.
    Task(TaskState),
}

/// How a lane's operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The request's answer, or how it failed.
    Replied(Result<Reply, Failure>),
    /// The handler finished: `true` if it succeeded.
    Ran(bool),
    /// The operation was cancelled ([`Lifecycle::cancels`]) and dropped.
    Cancelled,
}

/// What a lane does, asked of an idle lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LanePoll {
    /// Start this operation now.
    Start(Op),
    /// Nothing before this instant (ask again then, or after anything
    /// happens).
    Wait(Instant),
    /// Nothing until something happens on the other lane.
    Idle,
    /// This lane is finished.
    Done,
}

/// What the application asks of a running worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Control {
    /// Serve.
    Run,
    /// Stop gracefully: a running task gets `grace` to finish.
    Stop {
        /// How long a running task may still take.
        grace: Duration,
    },
    /// Stop now: a running task is abandoned (what a second Ctrl-C does).
    StopNow,
    /// Stop at once, without any last request (the worker's handle was
    /// dropped).
    Halt,
}

/// An event for the runtime to log. Most are core [`Event`]s; a few name
/// things only the runtime holds (ids, the task), and the driver renders
/// them with the runtime's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A core event.
    Event(Event<'static>),
    /// Registered as the pending id, now current:
    /// [`Event::Registered`].
    Registered {
        /// Jobs registered.
        jobs: u32,
    },
    /// The held task's handler finished: [`Event::TaskFinished`].
    TaskFinished {
        /// How long it ran.
        took: Duration,
    },
    /// The final delete succeeded: [`Event::Disconnected`].
    Disconnected,
    /// The final delete failed: [`Event::DisconnectFailed`].
    DisconnectFailed(Failure),
    /// Not a line: the pending worker id (from [`Request::CreateWorker`])
    /// is registered and becomes the current one; the current one becomes
    /// the old one ([`Request::Retire`]). The driver calls
    /// [`crate::driver::Io::adopt`].
    Adopt,
}

/// What a worker has done so far. The same counters on every runtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// Requests sent (each re-send counts).
    pub requests: u64,
    /// Requests that failed (transport, or an unexpected status).
    pub failed_requests: u64,
    /// Requests sent once more at once after meeting a closed keep-alive
    /// connection.
    pub stale_connection_retries: u64,
    /// Tasks whose handler succeeded.
    pub tasks_completed: u64,
    /// Tasks whose handler failed (or was abandoned at a stop).
    pub tasks_failed: u64,
    /// Outcomes held through an outage.
    pub outcomes_held: u64,
    /// Outages survived.
    pub recoveries: u64,
    /// Restarts after the worker stopped by itself (supervised devices).
    pub restarts: u64,
}

/// Where a worker's life is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Logging in, creating the worker, registering its jobs.
    Starting,
    /// Both lanes serving.
    Running,
    /// Stopping: the last requests (outcome, delete).
    Stopping,
    /// Finished: [`Lifecycle::stop_reason`] says why.
    Done,
}

/// The most events queued at once: a step of [`Machine`] makes at most
/// [`crate::Events::CAPACITY`], and the driver drains the queue after every
/// outcome and every poll. Overflowing it is a bug, caught in tests
/// (`debug_assert`) and counted, never silent, in release builds.
const QUEUE: usize = 8;

/// A fixed queue of notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Queue {
    items: [Option<Notice>; QUEUE],
    head: usize,
    len: usize,
}

impl Queue {
    const EMPTY: Queue = Queue {
        items: [None; QUEUE],
        head: 0,
        len: 0,
    };

    fn push(&mut self, n: Notice) -> bool {
        if self.len == QUEUE {
            return false;
        }
        self.items[(self.head + self.len) % QUEUE] = Some(n);
        self.len += 1;
        true
    }

    fn pop(&mut self) -> Option<Notice> {
        if self.len == 0 {
            return None;
        }
        let n = self.items[self.head].take();
        self.head = (self.head + 1) % QUEUE;
        self.len -= 1;
        n
    }
}

/// The operation in flight on a lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Busy {
    op: Op,
    /// When its first attempt started (a re-send keeps it).
    started: Instant,
    /// Sent once more already after a stale connection.
    resent: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LaneState {
    busy: Option<Busy>,
    /// Send this again at once (stale connection).
    again: Option<Busy>,
    cancel: bool,
    done: bool,
}

/// Where startup is: which request comes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Startup {
    Login,
    /// 0: create the worker; `n`: register job `n - 1`.
    Register(u16),
}

/// The worker's whole life. See the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    cfg: Config,
    jobs: u16,
    stage: Stage,
    machine: Machine,
    rng: SplitMix64,
    /// Startup: the next request, its retry schedule and when to send it.
    startup: Startup,
    retry: StartupRetry,
    startup_at: Instant,
    startup_error: Option<StartupError>,
    /// Re-registration (running): the next request (0 create, n job n-1)
    /// and when the sequence started.
    reregister: Option<(u16, Instant)>,
    /// A stop was requested: the stop's time and its grace.
    grace_at: Option<Instant>,
    halt_at: Option<Instant>,
    halted: bool,
    /// The application dropped the worker: no last request.
    dropped: bool,
    /// The outcome to deliver is a success.
    outcome_ok: bool,
    lanes: [LaneState; 2],
    stats: Stats,
    queue: Queue,
    lost_events: u32,
}

impl Lifecycle {
    /// A worker about to start at `now`: it logs in first if `login_first`
    /// (credentials that must be exchanged for a token), then creates the
    /// worker and registers `jobs` jobs. `seed` feeds the jitter.
    pub fn new(
        cfg: Config,
        jobs: u16,
        login_first: bool,
        seed: u64,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        let machine = Machine::new(cfg, now, 0)?;
        Ok(Lifecycle {
            cfg,
            jobs,
            stage: Stage::Starting,
            machine,
            rng: SplitMix64::new(seed),
            startup: if login_first {
                Startup::Login
            } else {
                Startup::Register(0)
            },
            retry: StartupRetry::new(),
            startup_at: now,
            startup_error: None,
            reregister: None,
            grace_at: None,
            halt_at: None,
            halted: false,
            dropped: false,
            outcome_ok: true,
            lanes: [LaneState::default(); 2],
            stats: Stats::default(),
            queue: Queue::EMPTY,
            lost_events: 0,
        })
    }

    /// The same worker, to start again at `now` after it stopped (a
    /// supervised device): fresh state, the counters kept, one more restart.
    pub fn restarted(&self, login_first: bool, now: Instant) -> Self {
        let mut rng = self.rng;
        let seed = (u64::from(rng.next_u32()) << 32) | u64::from(rng.next_u32());
        let mut fresh = match Lifecycle::new(self.cfg, self.jobs, login_first, seed, now) {
            Ok(l) => l,
            // The configuration was valid when `self` was made.
            Err(_) => self.clone(),
        };
        fresh.stats = self.stats;
        fresh.stats.restarts += 1;
        fresh
    }

    /// The same lifecycle, counting on from `stats` (a worker run again).
    pub const fn with_stats(mut self, stats: Stats) -> Self {
        self.stats = stats;
        self
    }

    /// The configuration.
    pub const fn config(&self) -> &Config {
        &self.cfg
    }

    /// The outage rules' state.
    pub const fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Where the worker's life is.
    pub const fn stage(&self) -> Stage {
        self.stage
    }

    /// The counters.
    pub const fn stats(&self) -> Stats {
        self.stats
    }

    /// Why the worker stopped (or is stopping); `None` while it serves, and
    /// after a startup that gave up ([`Lifecycle::startup_error`]).
    pub const fn stop_reason(&self) -> Option<StopReason> {
        match self.stage {
            Stage::Starting | Stage::Running => self.machine.stop_reason(),
            _ => match self.startup_error {
                Some(_) => None,
                None => match self.machine.stop_reason() {
                    Some(r) => Some(r),
                    None => Some(StopReason::Requested),
                },
            },
        }
    }

    /// Why startup gave up, if it did.
    pub const fn startup_error(&self) -> Option<StartupError> {
        self.startup_error
    }

    /// True once the worker is finished and both lanes are idle.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done && self.lanes.iter().all(|l| l.busy.is_none())
    }

    /// Events lost to a full queue (always 0: a nonzero count is a bug).
    pub const fn lost_events(&self) -> u32 {
        self.lost_events
    }

    /// The next thing to log, in order.
    pub fn poll_event(&mut self) -> Option<Notice> {
        self.queue.pop()
    }

    /// Should the operation on `lane` be cancelled (a stop's grace ran
    /// out, or the worker halts)? The runtime then drops it and reports
    /// [`Outcome::Cancelled`].
    pub fn cancels(&self, lane: Lane) -> bool {
        let l = &self.lanes[lane as usize];
        l.cancel && l.busy.is_some()
    }

    /// The next instant the lifecycle itself acts (a stop's grace or hard
    /// limit); lanes add their own [`LanePoll::Wait`]s.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.grace_at, self.halt_at) {
            _ if self.halted => None,
            (Some(g), Some(h))
                if self.lanes[Lane::Claim as usize]
                    .busy
                    .is_some_and(|b| b.op == Op::Run) =>
            {
                Some(g.min(h))
            }
            (_, h) => h,
        }
    }

    // ------------------------------------------------------------- inputs

    /// What the application asks ([`Control`]); repeated asks change
    /// nothing.
    pub fn control(&mut self, now: Instant, control: Control) {
        match control {
            Control::Run => {}
            Control::Stop { grace } => self.request_stop(now, grace),
            Control::StopNow => {
                match self.grace_at {
                    None => self.request_stop(now, Duration::ZERO),
                    Some(g) if g > now => self.grace_at = Some(now),
                    Some(_) => return,
                }
                self.push(Notice::Event(Event::StopNow));
                self.handle_timeout(now);
            }
            Control::Halt => {
                self.dropped = true;
                self.request_stop(now, Duration::ZERO);
                self.halt();
            }
        }
    }

    /// Stop at the application's request: a running task may take `grace`
    /// (then it is abandoned and reported failed), every request in flight
    /// at most `grace + request_timeout + 1 s` in all; then the worker is
    /// deleted from the server.
    pub fn request_stop(&mut self, now: Instant, grace: Duration) {
        if self.grace_at.is_some() {
            return;
        }
        self.grace_at = Some(now + grace);
        self.halt_at = Some(now + grace + self.cfg.request_timeout + Duration::from_secs(1));
        match self.stage {
            Stage::Starting => {
                // Nothing registered yet to deliver or delete: stop here.
                self.stage = Stage::Done;
                self.halt();
                let step = self.machine.request_stop();
                self.apply(step);
            }
            Stage::Running => {
                let step = self.machine.request_stop();
                self.apply(step);
            }
            Stage::Stopping | Stage::Done => {}
        }
    }

    /// Deadlines passed: a stop's grace (abandon the task) or its hard
    /// limit (cancel everything in flight).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.halted {
            return;
        }
        if self.halt_at.is_some_and(|h| now >= h) {
            self.halt();
            return;
        }
        let claim = &mut self.lanes[Lane::Claim as usize];
        if self.grace_at.is_some_and(|g| now >= g) && claim.busy.is_some_and(|b| b.op == Op::Run) {
            claim.cancel = true;
        }
    }

    /// What `lane` does next (ask only while it is idle).
    pub fn poll_lane(&mut self, lane: Lane, now: Instant) -> LanePoll {
        let state = self.lanes[lane as usize];
        if state.busy.is_some() {
            return LanePoll::Idle;
        }
        if state.done {
            return LanePoll::Done;
        }
        if let Some(again) = state.again {
            self.lanes[lane as usize].again = None;
            return self.begin(lane, again);
        }
        let poll = match self.stage {
            Stage::Starting => match lane {
                Lane::Heartbeat => LanePoll::Idle,
                Lane::Claim if now < self.startup_at => LanePoll::Wait(self.startup_at),
                Lane::Claim => LanePoll::Start(Op::Send(match self.startup {
                    Startup::Login => Request::Login,
                    Startup::Register(0) => Request::CreateWorker,
                    Startup::Register(n) => Request::RegisterJob(n - 1),
                })),
            },
            Stage::Running => match lane {
                Lane::Heartbeat => self.heartbeat_poll(now),
                Lane::Claim => self.claim_poll(now),
            },
            Stage::Stopping => match lane {
                Lane::Heartbeat => LanePoll::Done,
                Lane::Claim => LanePoll::Start(Op::Send(Request::Disconnect)),
            },
            Stage::Done => LanePoll::Done,
        };
        match poll {
            LanePoll::Start(op) => self.begin(
                lane,
                Busy {
                    op,
                    started: now,
                    resent: false,
                },
            ),
            LanePoll::Done => {
                self.lanes[lane as usize].done = true;
                self.lane_finished();
                // The claim lane may have the final delete to send.
                self.poll_lane(lane, now)
            }
            other => other,
        }
    }

    /// The operation on `lane` ended at `now`.
    pub fn handle(&mut self, lane: Lane, now: Instant, outcome: Outcome) {
        let Some(busy) = self.lanes[lane as usize].busy.take() else {
            return;
        };
        self.lanes[lane as usize].cancel = false;
        if let Outcome::Replied(Err(failure)) = outcome {
            self.stats.failed_requests += 1;
            if let Op::Send(req) = busy.op
                && !busy.resent
                && !self.halted
                && failure.resend_once(req.may_resend())
            {
                self.stats.stale_connection_retries += 1;
                self.push(Notice::Event(Event::StaleConnection { what: req.endpoint() }));
                self.lanes[lane as usize].again = Some(Busy { resent: true, ..busy });
                return;
            }
        }
        match (busy.op, outcome) {
            (Op::Run, Outcome::Ran(ok)) => self.ran(busy.started, now, ok),
            (Op::Run, Outcome::Cancelled) if !self.halted => {
                // The grace ran out: abandoned, reported failed.
                self.ran(busy.started, now, false)
            }
            (_, Outcome::Cancelled) => {
                if self.halted {
                    self.lanes[lane as usize].done = true;
                    self.lane_finished();
                }
            }
            (Op::Send(req), Outcome::Replied(result)) => self.replied(lane, req, busy.started, now, result),
            (Op::Send(_), Outcome::Ran(_)) | (Op::Run, Outcome::Replied(_)) => {}
        }
    }

    // ------------------------------------------------------------ private

    fn begin(&mut self, lane: Lane, busy: Busy) -> LanePoll {
        if matches!(busy.op, Op::Send(_)) {
            self.stats.requests += 1;
        }
        self.lanes[lane as usize].busy = Some(busy);
        self.lanes[lane as usize].cancel = false;
        LanePoll::Start(busy.op)
    }

    fn rand(&mut self) -> u32 {
        self.rng.next_u32()
    }

    fn push(&mut self, n: Notice) {
        if let Notice::Event(e) = n {
            match e {
                Event::OutcomeHeld => self.stats.outcomes_held += 1,
                Event::Recovered { .. } => self.stats.recoveries += 1,
                _ => {}
            }
        }
        if !self.queue.push(n) {
            debug_assert!(false, "the lifecycle's event queue overflowed");
            self.lost_events = self.lost_events.saturating_add(1);
        }
    }

    /// Log a machine step's events and act on its wake-up (a halt cancels
    /// everything in flight; other wake-ups are implicit: every idle lane
    /// is polled again after anything happens).
    fn apply<A>(&mut self, step: Step<A>) {
        for e in step.events.iter() {
            self.push(Notice::Event(*e));
        }
        if step.wake == Wake::Halt {
            self.halt();
        }
    }

    fn halt(&mut self) {
        if self.halted {
            return;
        }
        self.halted = true;
        for l in &mut self.lanes {
            l.again = None;
            if l.busy.is_some() {
                l.cancel = true;
            } else {
                l.done = true;
            }
        }
        // Lanes idle now are done; the delete comes once the busy ones
        // report their cancellation.
        self.lane_finished();
    }

    /// A lane finished: once both are, the worker stops (and deletes
    /// itself from the server, unless the server has forgotten it).
    fn lane_finished(&mut self) {
        if !self.lanes.iter().all(|l| l.done && l.busy.is_none()) {
            return;
        }
        match self.stage {
            Stage::Running if self.deletes_itself() => {
                self.stage = Stage::Stopping;
                // The claim lane carries the delete, which nothing but a
                // halt of the application cancels (it has its own timeout).
                self.halted = false;
                self.halt_at = None;
                self.lanes[Lane::Claim as usize].done = false;
            }
            Stage::Stopping | Stage::Running | Stage::Starting => self.stage = Stage::Done,
            Stage::Done => {}
        }
    }

    /// Delete the worker at the end? Not when the server has forgotten it
    /// or refused its token (the delete would be refused too), nor after a
    /// [`Control::Halt`].
    fn deletes_itself(&self) -> bool {
        !self.dropped
            && matches!(
                self.machine.stop_reason(),
                Some(StopReason::Requested | StopReason::Unreachable { .. } | StopReason::Local { .. })
            )
    }

    fn heartbeat_poll(&mut self, now: Instant) -> LanePoll {
        loop {
            match self.machine.heartbeat_poll(now) {
                HeartbeatAction::Wait(t) => return LanePoll::Wait(t),
                HeartbeatAction::Beat => return LanePoll::Start(Op::Send(Request::Heartbeat)),
                HeartbeatAction::Login => return LanePoll::Start(Op::Send(Request::Login)),
                HeartbeatAction::Expire => {
                    let step = self.machine.on_expired(now);
                    self.apply(step);
                }
                HeartbeatAction::Stop(_) => return LanePoll::Done,
            }
        }
    }

    fn claim_poll(&mut self, now: Instant) -> LanePoll {
        if let Some((n, _)) = self.reregister
            && self.machine.stop_reason().is_none()
        {
            return LanePoll::Start(Op::Send(match n {
                0 => Request::CreateWorker,
                n => Request::RegisterJob(n - 1),
            }));
        }
        loop {
            let op = match self.machine.claim_poll(now) {
                ClaimAction::Wait(t) => return LanePoll::Wait(t),
                ClaimAction::Stop(_) => return LanePoll::Done,
                ClaimAction::Expire => {
                    let step = self.machine.on_expired(now);
                    self.apply(step);
                    continue;
                }
                ClaimAction::Claim => Op::Send(Request::Claim),
                ClaimAction::Start => Op::Send(Request::Update(TaskStatus::Running)),
                ClaimAction::Execute => Op::Run,
                ClaimAction::Deliver => Op::Send(Request::Update(if self.outcome_ok {
                    TaskStatus::Completed
                } else {
                    TaskStatus::Failed
                })),
                ClaimAction::Verify => Op::Send(Request::GetTask),
                ClaimAction::Retire => Op::Send(Request::Retire),
                ClaimAction::Register => {
                    self.reregister = Some((0, now));
                    Op::Send(Request::CreateWorker)
                }
            };
            return LanePoll::Start(op);
        }
    }

    fn ran(&mut self, started: Instant, now: Instant, ok: bool) {
        if ok {
            self.stats.tasks_completed += 1;
        } else {
            self.stats.tasks_failed += 1;
        }
        self.push(Notice::TaskFinished { took: now - started });
        self.outcome_ok = ok;
        let step = self.machine.on_executed(now, ok);
        self.apply(step);
    }

    fn replied(
        &mut self,
        lane: Lane,
        req: Request,
        started: Instant,
        now: Instant,
        result: Result<Reply, Failure>,
    ) {
        match self.stage {
            Stage::Starting => self.startup_replied(req, started, now, result),
            Stage::Running => self.running_replied(lane, req, started, now, result),
            Stage::Stopping => {
                self.push(match result {
                    Ok(_) => Notice::Disconnected,
                    Err(f) => Notice::DisconnectFailed(f),
                });
                self.lanes[Lane::Claim as usize].done = true;
                self.stage = Stage::Done;
            }
            Stage::Done => {}
        }
    }

    fn startup_replied(
        &mut self,
        req: Request,
        started: Instant,
        now: Instant,
        result: Result<Reply, Failure>,
    ) {
        match result {
            Ok(_) => {
                self.retry = StartupRetry::new();
                self.startup_at = now;
                self.startup = match self.startup {
                    Startup::Login => Startup::Register(0),
                    Startup::Register(n) if n < self.jobs => Startup::Register(n + 1),
                    Startup::Register(_) => {
                        // Registered: the loops' clocks start now.
                        let rand = self.rand();
                        if let Ok(m) = Machine::new(self.cfg, now, rand) {
                            self.machine = m;
                        }
                        self.stage = Stage::Running;
                        self.push(Notice::Adopt);
                        self.push(Notice::Registered {
                            jobs: u32::from(self.jobs),
                        });
                        return;
                    }
                };
            }
            Err(failure) => {
                let rand = self.rand();
                let (step, event) = self
                    .retry
                    .on_failure(&self.cfg, req.endpoint(), started, failure, rand);
                self.push(Notice::Event(event));
                match step {
                    StartupStep::RetryAt(t) => self.startup_at = t,
                    StartupStep::GiveUp(e) => {
                        self.startup_error = Some(e);
                        self.stage = Stage::Done;
                        self.halt();
                    }
                }
            }
        }
    }

    fn running_replied(
        &mut self,
        lane: Lane,
        req: Request,
        started: Instant,
        now: Instant,
        result: Result<Reply, Failure>,
    ) {
        let rand = self.rand();
        let done = result.map(drop);
        match (lane, req) {
            (Lane::Heartbeat, Request::Heartbeat) => {
                let step = self.machine.on_heartbeat(started, now, done);
                self.apply(step);
            }
            (Lane::Heartbeat, _) => {
                let step = self.machine.on_login(started, now, done, rand);
                self.apply(step);
            }
            (_, Request::CreateWorker | Request::RegisterJob(_)) => {
                let Some((n, began)) = self.reregister else { return };
                match done {
                    Ok(()) if n < self.jobs => self.reregister = Some((n + 1, began)),
                    Ok(()) => {
                        self.reregister = None;
                        self.push(Notice::Adopt);
                        let step = self.machine.on_registered(began, now, Ok(()), rand);
                        self.apply(step);
                    }
                    Err(f) => {
                        self.reregister = None;
                        let step = self
                            .machine
                            .on_registered(began, now, Err((req.endpoint(), f)), rand);
                        self.apply(step);
                    }
                }
            }
            (_, Request::Claim) => {
                let got = result.and_then(|r| match r {
                    Reply::Claimed(got) => Ok(got),
                    _ => Err(Failure::MalformedResponse),
                });
                let step = self.machine.on_claim(started, now, got, rand);
                self.apply(step);
            }
            (_, Request::Update(TaskStatus::Running)) => {
                let step = self.machine.on_started(started, now, done, rand);
                self.apply(step);
            }
            (_, Request::Update(_)) => {
                let step = self.machine.on_delivered(started, now, done, rand);
                self.apply(step);
            }
            (_, Request::GetTask) => {
                let state = result.and_then(|r| match r {
                    Reply::Task(s) => Ok(s),
                    _ => Err(Failure::MalformedResponse),
                });
                let step = self.machine.on_verified(started, now, state, rand);
                self.apply(step);
            }
            (_, Request::Retire) => {
                let step = self.machine.on_retired(started, now, done, rand);
                self.apply(step);
            }
            (_, Request::Login | Request::Heartbeat | Request::Disconnect) => {}
        }
    }
}
