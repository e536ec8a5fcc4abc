//! The worker's whole life, sans-IO: startup, both lanes of requests, the
//! task, the grace period, the shutdown and the final delete.
//!
//! [`Machine`] holds the outage rules of the two loops; a [`Lifecycle`]
//! wraps it with everything around them that both runtimes used to
//! re-implement: the startup order and its retry schedule, the machine's
//! fresh start once registered, re-registration as a request sequence, which
//! statuses each request accepts, the stale-connection re-send, the grace
//! period and the hard limit of a stop, whether to delete the worker at the
//! end, the counters, and the events to log, handed to the runtime as
//! they are produced (an `out` sink: no queue to size, nothing dropped).
//!
//! In the style of quinn-proto's `Connection`: the runtime asks which lane
//! starts what next ([`Lifecycle::poll_start`]), performs it, and reports the
//! [`Outcome`] ([`Lifecycle::handle`]); time enters as `now`, deadlines
//! leave as [`Lifecycle::poll_timeout`]. [`crate::driver`] is that runtime
//! loop, written once for every executor.

use crate::machine::Settled;
use crate::protocol::TaskStatus;
use crate::{
    ClaimAction, Config, ConfigError, Duration, Endpoint, Event, Failure, GiveUp, HeartbeatAction, Instant,
    Machine, SplitMix64, StartupError, StartupRetry, StartupStep, Step, StopReason, TaskState, ValidConfig,
    Wake,
};

/// A task's identity for the lifecycle, which holds no strings: a 32-bit
/// FNV-1a hash of its id ([`TaskKey::of`]). The driver takes it from the
/// runtime's copy of a claimed task's id ([`Lifecycle::claimed`]), so that
/// the lifecycle can tell a claim answer naming a task it already holds
/// or has just finished (an answer delivered twice) and never start a
/// task twice. Two different ids with one key (one chance in 2^32 per
/// pair) would only make a claim needlessly ambiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TaskKey(core::num::NonZeroU32);

impl TaskKey {
    /// The key of the task with this id.
    pub const fn of(id: &str) -> TaskKey {
        let b = id.as_bytes();
        let mut h: u32 = 0x811c_9dc5;
        let mut i = 0;
        while i < b.len() {
            h = (h ^ b[i] as u32).wrapping_mul(0x0100_0193);
            i += 1;
        }
        // Never zero, so that an `Option<TaskKey>` is four bytes: a hash
        // of 0 shares the key of 1.
        match core::num::NonZeroU32::new(h) {
            Some(k) => TaskKey(k),
            None => TaskKey(core::num::NonZeroU32::MIN),
        }
    }
}

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
    /// ([`Failure::resend_once`])? The core's one re-send rule: every
    /// request but the `POST`s (login, create, claim), which create
    /// something each time they are acted on. `GET`, `PUT` (a registration
    /// links the same job again) and `DELETE` are idempotent; of the
    /// `PATCH`es a heartbeat is, and a repeated task update is refused with
    /// 409, which the core then checks against the task's state.
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

/// Where an operation runs: lane 0 carries heartbeats and credential
/// renewals; lane `1 + i` is task slot `i`, which carries its task's
/// requests (claim, `running`, outcome, check) and runs its handler. The
/// claim loop's requests (also startup, re-registration, the final delete)
/// go one at a time, on whichever slot they concern or on an idle one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Lane(pub u8);

impl Lane {
    /// Heartbeats and credential renewals.
    pub const HEARTBEAT: Lane = Lane(0);

    /// Task slot `i`.
    pub const fn slot(i: usize) -> Lane {
        Lane(i as u8 + 1)
    }

    /// The task slot of this lane (`None` for the heartbeat).
    pub const fn slot_index(self) -> Option<usize> {
        match self.0 {
            0 => None,
            n => Some(n as usize - 1),
        }
    }
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
    /// A login (or a token file read) gave a token with `valid_for` left
    /// before it expires ([`crate::jwt::expires_at`] against the wall
    /// clock): with the `renew-ahead` feature it is renewed ahead of that
    /// ([`crate::jwt::renew_after`]), so the server never answers 401. A
    /// token whose expiry is unknown is [`Reply::Done`].
    Renewed {
        /// The token's remaining life when it arrived.
        valid_for: Duration,
    },
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
    /// The handler of the task held in `lane` finished:
    /// [`Event::TaskFinished`].
    TaskFinished {
        /// The task's slot.
        lane: Lane,
        /// How long it ran.
        took: Duration,
    },
    /// The final delete succeeded: [`Event::Disconnected`].
    Disconnected,
    /// The final delete failed: [`Event::DisconnectFailed`].
    DisconnectFailed(Failure),
    /// The outcome of the task held in `lane` is given up:
    /// [`Event::OutcomeGivenUp`].
    OutcomeGivenUp {
        /// The task's slot.
        lane: Lane,
        /// Why.
        why: GiveUp,
    },
    /// Not a line: the pending worker id (from [`Request::CreateWorker`])
    /// is registered and becomes the current one; the current one becomes
    /// the old one ([`Request::Retire`]). The driver calls
    /// [`crate::driver::Io::adopt`].
    Adopt,
}

/// Where a [`Lifecycle`] hands its notices, in order, as they are produced
/// (the driver logs them at once with the runtime's names). Without the
/// crate's `events` feature only [`Notice::Adopt`] is handed out.
pub type Out<'a> = &'a mut dyn FnMut(Notice);

pub use crate::routes::Count;

/// What a worker has done so far. The same counters on every runtime, each
/// a [`Count`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// Requests sent (each re-send counts).
    pub requests: Count,
    /// Requests that failed (transport, or an unexpected status).
    pub failed_requests: Count,
    /// Requests sent once more at once after meeting a closed keep-alive
    /// connection.
    pub stale_connection_retries: Count,
    /// Tasks whose handler succeeded.
    pub tasks_completed: Count,
    /// Tasks whose handler failed (or was abandoned at a stop).
    pub tasks_failed: Count,
    /// Outcomes held through an outage.
    pub outcomes_held: Count,
    /// Outcomes the server has: delivered, or found already applied.
    pub outcomes_delivered: Count,
    /// Outcomes given up (refused, or the server unreachable until a
    /// stop's limit): [`Event::OutcomeGivenUp`].
    pub outcomes_given_up: Count,
    /// Outages survived.
    pub recoveries: Count,
    /// Restarts after the worker stopped by itself (supervised devices).
    pub restarts: Count,
    /// Times the worker registered again under a new id: after the server
    /// forgot it (policy `Register`), or afresh after a lost claim answer.
    pub reregistrations: Count,
    /// Credential renewals that succeeded (a login again, a token file read
    /// again).
    pub renewals: Count,
    /// Requests by route and by what their answer meant (feature `ops`; a
    /// host's metrics read them).
    #[cfg(feature = "ops")]
    pub routes: crate::RouteStats,
}

/// What a runtime shows of a [`Lifecycle`] ([`crate::driver::Io::publish`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Where its life is.
    pub stage: Stage,
    /// Why it stopped (or is stopping), once it does.
    pub stop: Option<StopReason>,
    /// Why startup gave up, if it did.
    pub startup_error: Option<StartupError>,
    /// The counters.
    pub stats: Stats,
    /// What a host shows its operators (feature `ops`): the outage, the
    /// server's last confirmation, push, the tasks.
    #[cfg(feature = "ops")]
    pub detail: Detail,
}

/// A [`Snapshot`]'s detail for operators (feature `ops`): read by
/// [`Snapshot::status`], [`Snapshot::is_ready`] and a host's metrics.
#[cfg(feature = "ops")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detail {
    /// When the running outage began (`None`: no outage).
    pub outage_since: Option<Instant>,
    /// When the server last confirmed the worker: its registration, or the
    /// last heartbeat it accepted (`None` before registering).
    pub confirmed_at: Option<Instant>,
    /// Task-available push is connected.
    pub push_connected: bool,
    /// Tasks whose handler runs now.
    pub running: u8,
    /// Outcomes finished and not yet delivered (held through an outage,
    /// or waiting their turn).
    pub waiting: u8,
    /// Jobs served.
    pub jobs: u16,
    /// [`Config::max_unreachable`].
    pub max_unreachable: Duration,
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

/// The most task slots (lanes `1..=MAX_SLOTS`), and the default of
/// [`Lifecycle`]'s `SLOTS`.
pub const MAX_SLOTS: usize = Config::MAX_CONCURRENCY as usize;

/// The operation in flight on a lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Busy {
    op: Op,
    /// When its first attempt started (a re-send keeps it).
    started: Instant,
    /// Sent once more already after a stale connection.
    resent: bool,
    /// One of the claim loop's requests (they go one at a time).
    serial: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LaneState {
    busy: Option<Busy>,
    /// Send this again at once (stale connection).
    again: Option<Busy>,
    cancel: bool,
}

/// A task slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Slot {
    /// No task.
    #[default]
    Free,
    /// The claim loop's task: being claimed, started, delivered or checked.
    Focus,
    /// Its handler runs.
    Running,
    /// Its handler finished (`true`: succeeded); the outcome waits for the
    /// claim loop.
    Finished(bool),
}

/// The lifecycle's timers: one deadline each, in one table (quinn's
/// `TimerTable`), so that the next instant to act is one scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// A stop's grace ends (handlers still running are abandoned).
    Grace,
    /// A stop's hard limit (the grace, a request timeout and a second).
    Halt,
    /// The heartbeat lane acts next.
    Heartbeat,
    /// The claim loop (startup, claims, outcomes) acts next.
    Serial,
    /// Renew the credentials ahead of the token's expiry
    /// ([`Reply::Renewed`]).
    #[cfg(feature = "renew-ahead")]
    RenewAhead,
}

const TIMERS: usize = 4 + cfg!(feature = "renew-ahead") as usize;

/// When each [`Timer`] fires (`None`: not armed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Timers([Option<Instant>; TIMERS]);

impl Timers {
    fn get(&self, t: Timer) -> Option<Instant> {
        self.0[t as usize]
    }

    fn put(&mut self, t: Timer, at: Option<Instant>) {
        self.0[t as usize] = at;
    }

    fn set(&mut self, t: Timer, at: Instant) {
        self.put(t, Some(at));
    }

    fn stop(&mut self, t: Timer) {
        self.put(t, None);
    }

    /// Armed, and due at `now`.
    fn expired(&self, t: Timer, now: Instant) -> bool {
        self.get(t).is_some_and(|at| now >= at)
    }

    /// The earliest deadline of the timers `live` counts (by [`Timer`]).
    fn next(&self, live: [bool; TIMERS]) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for (at, live) in self.0.into_iter().zip(live) {
            if let Some(at) = at.filter(|&at| live && next.is_none_or(|n| at < n)) {
                next = Some(at);
            }
        }
        next
    }
}

/// Where startup is: which request comes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Startup {
    Login,
    /// 0: create the worker; `n`: register job `n - 1`.
    Register(u16),
}

/// The worker's whole life, sans-IO: startup, the heartbeat lane and the
/// task slots, the stop and the final delete ([`crate::driver`] runs it).
/// `SLOTS` is how
/// many task slots its storage has (the runtime's driver has as many; a
/// device 1, a host [`MAX_SLOTS`]); [`Config::concurrency`] of them are
/// used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifecycle<const SLOTS: usize = MAX_SLOTS> {
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
    /// When each timer fires: a stop's grace and hard limit, when the
    /// heartbeat lane and the claim loop act next (from the last poll), the
    /// renewal ahead of the token's expiry.
    timers: Timers,
    halted: bool,
    /// The application dropped the worker: no last request.
    dropped: bool,
    slots: [Slot; SLOTS],
    /// How many slots are in use (`concurrency`, capped by the runtime).
    concurrency: usize,
    /// The slot of the claim loop's task.
    focus: Option<usize>,
    /// The key of each slot's task, or of the last one it finished (kept
    /// until the slot's next task); and a claimed task's key the driver
    /// reported for the claim's answer ([`Lifecycle::claimed`]).
    keys: [Option<TaskKey>; SLOTS],
    claimed: Option<TaskKey>,
    heartbeat: LaneState,
    lanes: [LaneState; SLOTS],
    /// The heartbeat lane is finished; the claim loop is finished.
    heartbeat_done: bool,
    serial_done: bool,
    stats: Stats,
    /// When the server last confirmed the worker ([`Detail::confirmed_at`]).
    #[cfg(feature = "ops")]
    confirmed_at: Option<Instant>,
}

impl<const SLOTS: usize> Lifecycle<SLOTS> {
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
        Ok(Self::with_valid(cfg.validated()?, jobs, login_first, seed, now))
    }

    /// [`Lifecycle::new`] with a configuration checked already (when the
    /// runtime was set up): it cannot fail.
    pub fn with_valid(cfg: ValidConfig, jobs: u16, login_first: bool, seed: u64, now: Instant) -> Self {
        let machine = Machine::with_valid(cfg, now, 0);
        Lifecycle {
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
            timers: Timers::default(),
            halted: false,
            dropped: false,
            slots: [Slot::Free; SLOTS],
            concurrency: usize::from(cfg.concurrency).clamp(1, SLOTS),
            focus: None,
            keys: [None; SLOTS],
            claimed: None,
            heartbeat: LaneState::default(),
            lanes: [LaneState::default(); SLOTS],
            heartbeat_done: false,
            serial_done: false,
            stats: Stats::default(),
            #[cfg(feature = "ops")]
            confirmed_at: None,
        }
    }

    /// The same lifecycle, counting on from `stats` (a worker run again).
    pub const fn with_stats(mut self, stats: Stats) -> Self {
        self.stats = stats;
        self
    }

    /// Use at most `slots` task slots (what the runtime provides), even if
    /// the configuration asks for more.
    pub fn limit_slots(&mut self, slots: usize) {
        self.concurrency = self.concurrency.min(slots.max(1));
    }

    /// How many tasks run at once.
    pub const fn concurrency(&self) -> usize {
        self.used()
    }

    /// The slots in use: `concurrency`, which with one slot is always 1
    /// (`new` and `limit_slots` clamp it), said so that a one-slot build
    /// (a device) folds its loops over the slots away.
    const fn used(&self) -> usize {
        if SLOTS == 1 { 1 } else { self.concurrency }
    }

    /// The configuration.
    pub const fn config(&self) -> &Config {
        self.machine.config()
    }

    /// The outage clock: whether the server is unreachable now, since when,
    /// and the last failure.
    pub const fn outage(&self) -> &crate::Outage {
        self.machine.outage()
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

    /// What a runtime shows of it.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            stage: self.stage,
            stop: self.stop_reason(),
            startup_error: self.startup_error,
            stats: self.stats,
            #[cfg(feature = "ops")]
            detail: self.detail(),
        }
    }

    /// The snapshot's detail for operators.
    #[cfg(feature = "ops")]
    fn detail(&self) -> Detail {
        let count = |f: fn(&Slot) -> bool| self.slots.iter().filter(|s| f(s)).count() as u8;
        Detail {
            outage_since: self.machine.outage().started_at(),
            confirmed_at: self.confirmed_at,
            #[cfg(feature = "push")]
            push_connected: self.machine.is_push_connected(),
            #[cfg(not(feature = "push"))]
            push_connected: false,
            running: count(|s| *s == Slot::Running),
            waiting: count(|s| matches!(s, Slot::Finished(_)))
                + u8::from(matches!(
                    self.machine.phase(),
                    crate::Phase::Delivering | crate::Phase::Verifying
                )),
            jobs: self.jobs,
            max_unreachable: self.machine.config().max_unreachable,
        }
    }

    /// Tasks whose handler runs now.
    pub fn running(&self) -> usize {
        self.slots.iter().filter(|s| **s == Slot::Running).count()
    }

    /// True once the worker is finished and every lane is idle.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done && self.all_lanes().all(|l| l.busy.is_none())
    }

    /// Should the operation on `lane` be cancelled (a stop's grace ran
    /// out, or the worker halts)? The runtime then drops it and reports
    /// [`Outcome::Cancelled`].
    pub fn cancels(&self, lane: Lane) -> bool {
        let i = usize::from(lane.0);
        i <= SLOTS && {
            let l = self.lane(i);
            l.cancel && l.busy.is_some()
        }
    }

    /// The next instant the lifecycle acts by itself (a lane's deadline, a
    /// stop's grace or hard limit), after [`Lifecycle::poll_start`] has
    /// returned `None`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.halted {
            return None;
        }
        // By timer: the grace matters while a handler runs, the hard limit
        // always, a lane's next action while it is idle; the renewal is the
        // heartbeat lane's (folded into its next action).
        self.timers.next([
            self.running() > 0,
            true,
            self.heartbeat.busy.is_none(),
            !self.serial_busy(),
            #[cfg(feature = "renew-ahead")]
            false,
        ])
    }

    // ------------------------------------------------------------- inputs

    /// What the application asks ([`Control`]); repeated asks change
    /// nothing.
    pub fn control(&mut self, now: Instant, control: Control, out: Out<'_>) {
        match control {
            Control::Run => {}
            Control::Stop { grace } => self.request_stop(now, grace, out),
            Control::StopNow => {
                match self.timers.get(Timer::Grace) {
                    None => self.request_stop(now, Duration::ZERO, out),
                    Some(g) if g > now => self.timers.set(Timer::Grace, now),
                    Some(_) => return,
                }
                // At once: each outcome gets one try, none a retry.
                self.machine.set_stop_limit(now);
                self.push(out, Notice::Event(Event::StopNow));
                self.handle_timeout(now, out);
            }
            Control::Halt => {
                self.dropped = true;
                self.request_stop(now, Duration::ZERO, out);
                self.halt(out);
            }
        }
    }

    /// Task-available push is connected (`true`) or lost at `now`
    /// ([`crate::push`]): while it is, an empty claim waits
    /// [`Config::push_poll_interval`]; when it comes or goes, an idle claim
    /// loop claims at once. Repeats change nothing.
    #[cfg(feature = "push")]
    pub fn push_connected(&mut self, now: Instant, connected: bool) {
        self.machine.set_push(connected, now);
    }

    /// A push hint for one of the worker's jobs at `now`: an idle claim
    /// loop claims at once.
    #[cfg(feature = "push")]
    pub fn push_hint(&mut self, now: Instant) {
        if self.stage == Stage::Running {
            self.machine.hint(now);
        }
    }

    /// Stop at the application's request: running tasks may take `grace`
    /// (then they are abandoned and reported failed), every request in
    /// flight at most `grace + request_timeout + 1 s` in all (the stop's
    /// hard limit); then the worker is deleted from the server.
    ///
    /// Heartbeats go on meanwhile, and an outcome the server does not take
    /// because it is unreachable (a refused connection, a timeout, a 5xx,
    /// a 429 or 503) is tried again on the outage schedule, the last time
    /// so that the try ends by the hard limit (`grace + 1 s` after `now`);
    /// only then is it given up ([`Event::OutcomeGivenUp`]). A refusal is
    /// final, a 409 checked against the task's state first.
    pub fn request_stop(&mut self, now: Instant, grace: Duration, out: Out<'_>) {
        if self.timers.get(Timer::Grace).is_some() {
            return;
        }
        let timeout = self.machine.config().request_timeout;
        self.timers.set(Timer::Grace, now + grace);
        self.timers
            .set(Timer::Halt, now + grace + timeout + Duration::from_secs(1));
        self.machine.set_stop_limit(now + grace + Duration::from_secs(1));
        match self.stage {
            Stage::Starting => {
                // Nothing registered yet to deliver or delete: stop here.
                self.stage = Stage::Done;
                if self.machine.stop_requested() {
                    self.push(out, Notice::Event(Event::StopRequested));
                }
                self.halt(out);
            }
            Stage::Running => {
                if self.machine.stop_requested() {
                    self.push(out, Notice::Event(Event::StopRequested));
                }
            }
            Stage::Stopping | Stage::Done => {}
        }
    }

    /// Deadlines passed: a stop's grace (abandon the running tasks) or its
    /// hard limit (cancel everything in flight; an outcome still waiting is
    /// given up).
    pub fn handle_timeout(&mut self, now: Instant, out: Out<'_>) {
        if self.halted {
            return;
        }
        if self.timers.expired(Timer::Halt, now) && self.stage != Stage::Stopping {
            self.halt(out);
            return;
        }
        if self.timers.expired(Timer::Grace, now) {
            for (i, slot) in self.slots.iter().enumerate() {
                if *slot == Slot::Running {
                    self.lanes[i].cancel = true;
                }
            }
        }
    }

    /// The next operation to start now on an idle lane; call until `None`,
    /// then sleep until [`Lifecycle::poll_timeout`] or until anything
    /// happens.
    pub fn poll_start(&mut self, now: Instant, out: Out<'_>) -> Option<(Lane, Op)> {
        // A stale connection's re-send, at once.
        for i in 0..=SLOTS {
            if self.lane(i).busy.is_none()
                && let Some(again) = self.lane_mut(i).again.take()
            {
                return Some(self.begin(Lane(i as u8), again));
            }
        }
        if self.heartbeat.busy.is_none()
            && let Some(op) = self.heartbeat_poll(now, out)
        {
            return Some(self.begin(Lane::HEARTBEAT, self.fresh(op, now, false)));
        }
        // Handlers of tasks that started.
        for i in 0..self.used() {
            if self.slots[i] == Slot::Running && self.lanes[i].busy.is_none() && !self.halted {
                return Some(self.begin(Lane::slot(i), self.fresh(Op::Run, now, false)));
            }
        }
        if !self.serial_busy() {
            let stage = self.stage;
            if let Some((lane, op)) = self.serial_poll(now, out) {
                return Some(self.begin(lane, self.fresh(op, now, true)));
            }
            if self.stage != stage {
                // Stopping now: the final delete goes at once. (Stages
                // only move forward, so this recursion is short.)
                return self.poll_start(now, out);
            }
        }
        None
    }

    /// A claim on `lane` was answered with a task, whose id has this key
    /// (the driver reads it from the runtime's copy): call it before
    /// [`Lifecycle::handle`] reports the answer. A task the worker already
    /// holds in another slot, or finished a moment ago, is then not
    /// started again (the claim is ambiguous instead). Without it the
    /// lifecycle cannot tell.
    pub fn claimed(&mut self, lane: Lane, key: TaskKey) {
        if lane.slot_index().is_some() {
            self.claimed = Some(key);
        }
    }

    /// The operation on `lane` ended at `now`.
    pub fn handle(&mut self, lane: Lane, now: Instant, outcome: Outcome, out: Out<'_>) {
        let i = usize::from(lane.0);
        if i > SLOTS {
            return;
        }
        let Some(busy) = self.lane_mut(i).busy.take() else {
            return;
        };
        self.lane_mut(i).cancel = false;
        #[cfg(feature = "ops")]
        if let Op::Send(req) = busy.op {
            let what = req.endpoint();
            let class = answer_class(what, &outcome);
            self.stats.routes.count(what, class);
        }
        if let Outcome::Replied(Err(failure)) = outcome {
            self.stats.failed_requests += 1;
            if let Op::Send(req) = busy.op
                && !busy.resent
                && !self.halted
                && failure.resend_once(req.may_resend())
            {
                self.stats.stale_connection_retries += 1;
                self.push(
                    out,
                    Notice::Event(Event::StaleConnection { what: req.endpoint() }),
                );
                self.lane_mut(i).again = Some(Busy { resent: true, ..busy });
                return;
            }
        }
        let slot = lane.slot_index();
        match (busy.op, outcome) {
            (Op::Run, Outcome::Ran(ok)) => self.ran(lane, busy.started, now, ok, out),
            (Op::Run, Outcome::Cancelled) if !self.halted => {
                // The grace ran out: abandoned, reported failed.
                self.ran(lane, busy.started, now, false, out)
            }
            (_, Outcome::Cancelled) => {
                if let Some(s) = slot {
                    if self.focus == Some(s) {
                        if self.machine.holds_outcome() {
                            // The stop's hard limit cut its delivery off.
                            self.give_up(out, lane, GiveUp::Stopped);
                        }
                        self.focus = None;
                    }
                    self.free(s);
                }
            }
            (Op::Send(req), Outcome::Replied(result)) => {
                self.replied(lane, req, busy.started, now, result, out);
                self.settle(now);
            }
            (Op::Send(_), Outcome::Ran(_)) | (Op::Run, Outcome::Replied(_)) => {}
        }
        self.finish_if_idle();
    }

    // ------------------------------------------------------------ private

    /// Lane `i` (0: heartbeat, `1 + n`: slot `n`).
    fn lane(&self, i: usize) -> &LaneState {
        match i {
            0 => &self.heartbeat,
            n => &self.lanes[n - 1],
        }
    }

    fn lane_mut(&mut self, i: usize) -> &mut LaneState {
        match i {
            0 => &mut self.heartbeat,
            n => &mut self.lanes[n - 1],
        }
    }

    fn all_lanes(&self) -> impl Iterator<Item = &LaneState> {
        core::iter::once(&self.heartbeat).chain(self.lanes.iter())
    }

    fn fresh(&self, op: Op, now: Instant, serial: bool) -> Busy {
        Busy {
            op,
            started: now,
            resent: false,
            serial,
        }
    }

    fn begin(&mut self, lane: Lane, busy: Busy) -> (Lane, Op) {
        if matches!(busy.op, Op::Send(_)) {
            self.stats.requests += 1;
        }
        let l = self.lane_mut(usize::from(lane.0));
        l.busy = Some(busy);
        l.cancel = false;
        (lane, busy.op)
    }

    fn serial_busy(&self) -> bool {
        self.all_lanes()
            .any(|l| l.busy.is_some_and(|b| b.serial) || l.again.is_some_and(|b| b.serial))
    }

    fn rand(&mut self) -> u32 {
        self.rng.next_u32()
    }

    /// Hand a notice to the runtime. Without the `events` feature only
    /// [`Notice::Adopt`] goes out: the others are only for the log.
    fn push(&mut self, out: Out<'_>, n: Notice) {
        if cfg!(feature = "events") || matches!(n, Notice::Adopt) {
            out(n);
        }
    }

    /// Count and log a machine step's events and act on its wake-up (a
    /// halt cancels everything in flight; other wake-ups are implicit:
    /// every idle lane is polled again after anything happens).
    fn apply<A>(&mut self, out: Out<'_>, step: Step<A>) {
        self.stats.outcomes_held += Count::from(step.events.held);
        self.stats.recoveries += Count::from(step.events.recovered);
        self.stats.reregistrations += Count::from(step.events.reregistered);
        self.stats.renewals += Count::from(step.events.renewed);
        for e in step.events.iter() {
            self.push(out, Notice::Event(*e));
        }
        if step.wake == Wake::Halt {
            self.halt(out);
        }
    }

    /// Stop everything at once: requests in flight and running handlers
    /// are cancelled; an outcome that was still to go out is given up (one
    /// line each; one whose delivery is in flight, when it is cancelled).
    fn halt(&mut self, out: Out<'_>) {
        if self.halted {
            return;
        }
        self.halted = true;
        self.heartbeat_done = true;
        self.serial_done = true;
        for l in core::iter::once(&mut self.heartbeat).chain(self.lanes.iter_mut()) {
            l.again = None;
            l.cancel = l.busy.is_some();
        }
        for i in 0..SLOTS {
            let in_flight = self.lanes[i].busy.is_some();
            let waiting = match self.slots[i] {
                Slot::Finished(_) => true,
                Slot::Focus => !in_flight && self.machine.holds_outcome(),
                Slot::Free | Slot::Running => false,
            };
            if waiting {
                self.give_up(out, Lane::slot(i), GiveUp::Stopped);
            }
            if self.slots[i] != Slot::Running && !(in_flight && self.focus == Some(i)) {
                self.free(i);
            }
        }
        if self.focus.is_some_and(|f| self.lanes[f].busy.is_none()) {
            self.focus = None;
        }
        self.finish_if_idle();
    }

    /// Once both parts are finished and no lane is busy, the worker stops
    /// (and deletes itself from the server, unless the server has
    /// forgotten it).
    fn finish_if_idle(&mut self) {
        let idle = self.all_lanes().all(|l| l.busy.is_none() && l.again.is_none());
        if !(self.heartbeat_done && self.serial_done && idle) {
            return;
        }
        match self.stage {
            Stage::Running if self.deletes_itself() => {
                self.stage = Stage::Stopping;
                // The delete is cancelled only by a halt of the
                // application (it has its own timeout).
                self.halted = false;
                self.timers.stop(Timer::Halt);
                self.serial_done = false;
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

    /// A login's answer: schedule the next renewal ahead of the token's
    /// expiry (`started`: the earliest it can have arrived), at least
    /// [`crate::jwt::MIN_RENEWAL_GAP`] after this one. A token with less
    /// life than that left is not renewed ahead: a 401 renews it, as
    /// before. (A token file nobody renews is so read a few more times as
    /// its end nears, each at least that far apart.)
    #[cfg(feature = "renew-ahead")]
    fn token_arrived(&mut self, started: Instant, result: &Result<Reply, Failure>) {
        match *result {
            Ok(Reply::Renewed { valid_for }) => {
                let gap = crate::jwt::MIN_RENEWAL_GAP;
                let at = (valid_for > gap).then(|| {
                    let after = crate::jwt::renew_after(valid_for);
                    started + if after > gap { after } else { gap }
                });
                self.timers.put(Timer::RenewAhead, at);
            }
            Ok(_) => self.timers.stop(Timer::RenewAhead),
            Err(_) => {}
        }
    }

    fn heartbeat_poll(&mut self, now: Instant, out: Out<'_>) -> Option<Op> {
        self.timers.stop(Timer::Heartbeat);
        if self.heartbeat_done {
            return None;
        }
        match self.stage {
            Stage::Starting => return None,
            Stage::Stopping | Stage::Done => {
                self.heartbeat_done = true;
                return None;
            }
            Stage::Running => {}
        }
        #[cfg(feature = "renew-ahead")]
        if self.timers.expired(Timer::RenewAhead, now) {
            self.timers.stop(Timer::RenewAhead);
            self.machine.renew_ahead(now);
        }
        loop {
            match self.machine.heartbeat_poll(now) {
                HeartbeatAction::Wait(t) => {
                    #[cfg(feature = "renew-ahead")]
                    let t = match self.timers.get(Timer::RenewAhead) {
                        Some(at) if at < t => at,
                        _ => t,
                    };
                    self.timers.set(Timer::Heartbeat, t);
                    return None;
                }
                HeartbeatAction::Beat => return Some(Op::Send(Request::Heartbeat)),
                HeartbeatAction::Login => return Some(Op::Send(Request::Login)),
                HeartbeatAction::Expire => {
                    if let Some(e) = self.machine.expire(now) {
                        self.push(out, Notice::Event(e));
                        self.halt(out);
                    }
                }
                HeartbeatAction::Stop(_) => {
                    self.heartbeat_done = true;
                    self.finish_if_idle();
                    return None;
                }
            }
        }
    }

    /// The first slot lane with nothing in flight and no task of its own
    /// (for requests that concern no task), preferring free slots.
    fn idle_lane(&self) -> Option<Lane> {
        let idle = |i: &usize| self.lanes[*i].busy.is_none() && self.lanes[*i].again.is_none();
        (0..self.used())
            .filter(idle)
            .find(|i| self.slots[*i] == Slot::Free)
            .or_else(|| (0..self.used()).find(|i| idle(i) && self.slots[*i] != Slot::Running))
            .map(Lane::slot)
    }

    /// Keep the slots in step with the claim loop's task: a task that
    /// started executing runs in its slot; a task the machine is done with
    /// frees its slot. Only while no claim-loop request is in flight (a
    /// claim in flight leaves the machine idle until it is answered).
    fn settle(&mut self, now: Instant) {
        if let Some(f) = self.focus
            && !self.serial_busy()
        {
            match self.machine.phase() {
                crate::Phase::Executing => {
                    self.slots[f] = Slot::Running;
                    self.machine.park(now);
                    self.focus = None;
                }
                crate::Phase::Idle => {
                    self.free(f);
                    self.focus = None;
                }
                _ => {}
            }
        }
        let free = self.slots[..self.used()].contains(&Slot::Free);
        self.machine.set_saturated(!free || self.draining());
    }

    /// A lost claim answer waits for the tasks running under this worker
    /// id before the worker registers afresh: deleting the old id would
    /// make the server fail them while they run, and its heartbeats (which
    /// go to the current id) would stop. Meanwhile nothing is claimed, and
    /// the heartbeat probes the server, as while every slot is busy.
    fn draining(&self) -> bool {
        // One slot: a claim goes out only while it is free, so no task of
        // this id can be running when a claim's answer is lost.
        SLOTS > 1
            && self.machine.is_claim_ambiguous()
            && !self.machine.is_reregistering()
            && self.slots[..self.used()].contains(&Slot::Running)
    }

    /// Slot `i` has no task any more (its key stays: the last task it
    /// finished).
    fn free(&mut self, i: usize) {
        self.slots[i] = Slot::Free;
    }

    /// Does a slot hold a task with this key, or was it the last one a
    /// slot finished?
    fn holds(&self, key: TaskKey) -> bool {
        self.keys[..self.used()].contains(&Some(key))
    }

    /// The outcome of the task in `lane` is given up: one line, counted.
    fn give_up(&mut self, out: Out<'_>, lane: Lane, why: GiveUp) {
        self.stats.outcomes_given_up += 1;
        self.push(out, Notice::OutcomeGivenUp { lane, why });
    }

    /// Count (and name) how the machine settled the claim loop's task.
    fn settled(&mut self, out: Out<'_>, lane: Lane) {
        match self.machine.take_settled() {
            Some(Settled::Delivered) => self.stats.outcomes_delivered += 1,
            Some(Settled::GivenUp(why)) => self.give_up(out, lane, why),
            None => {}
        }
    }

    /// The claim loop's next request, and the lane it goes on.
    fn serial_poll(&mut self, now: Instant, out: Out<'_>) -> Option<(Lane, Op)> {
        self.timers.stop(Timer::Serial);
        if self.serial_done {
            return None;
        }
        match self.stage {
            Stage::Starting => {
                if now < self.startup_at {
                    self.timers.set(Timer::Serial, self.startup_at);
                    return None;
                }
                let req = match self.startup {
                    Startup::Login => Request::Login,
                    Startup::Register(0) => Request::CreateWorker,
                    Startup::Register(n) => Request::RegisterJob(n - 1),
                };
                return Some((Lane::slot(0), Op::Send(req)));
            }
            Stage::Stopping => return Some((self.idle_lane()?, Op::Send(Request::Disconnect))),
            Stage::Done => return None,
            Stage::Running => {}
        }
        self.settle(now);
        let stopped = self.machine.stop_reason().is_some();
        // An outcome waiting in a slot comes before anything new.
        if self.focus.is_none() && self.machine.phase() == crate::Phase::Idle && !self.halted {
            let finished = (0..self.used()).find(|i| matches!(self.slots[*i], Slot::Finished(_)));
            if let Some(i) = finished {
                let Slot::Finished(ok) = self.slots[i] else {
                    return None;
                };
                self.slots[i] = Slot::Focus;
                self.focus = Some(i);
                let step = self.machine.report_executed(now, ok);
                self.apply(out, step);
            }
        }
        if let Some((n, _)) = self.reregister
            && !stopped
        {
            let req = match n {
                0 => Request::CreateWorker,
                n => Request::RegisterJob(n - 1),
            };
            return Some((self.idle_lane()?, Op::Send(req)));
        }
        loop {
            let focus_lane = self.focus.map(Lane::slot);
            let op = match self.machine.claim_poll(now) {
                ClaimAction::Wait(t) => {
                    self.timers.set(Timer::Serial, t);
                    return None;
                }
                ClaimAction::Stop(_) => {
                    if let Some(f) = self.focus.take() {
                        // Claimed, not started: the delete fails it.
                        self.free(f);
                    }
                    if self.slots[..self.used()]
                        .iter()
                        .any(|s| matches!(s, Slot::Running | Slot::Finished(_)))
                        && !self.halted
                    {
                        // Running tasks get their grace, then their outcome
                        // is delivered (tried again until the stop's limit).
                        return None;
                    }
                    self.serial_done = true;
                    // The heartbeat beat on through the stop: now it ends.
                    self.heartbeat_done = true;
                    self.finish_if_idle();
                    return None;
                }
                ClaimAction::Expire => {
                    if let Some(e) = self.machine.expire(now) {
                        self.push(out, Notice::Event(e));
                        self.halt(out);
                    }
                    continue;
                }
                ClaimAction::Claim => {
                    let free = (0..self.used())
                        .find(|i| self.slots[*i] == Slot::Free && self.lanes[*i].busy.is_none());
                    let Some(i) = free else {
                        // Every slot is busy: claim when one is free.
                        self.machine.set_saturated(true);
                        return None;
                    };
                    self.slots[i] = Slot::Focus;
                    self.focus = Some(i);
                    return Some((Lane::slot(i), Op::Send(Request::Claim)));
                }
                ClaimAction::Start => Op::Send(Request::Update(TaskStatus::Running)),
                ClaimAction::Deliver => Op::Send(Request::Update(if self.machine.outcome_ok() {
                    TaskStatus::Completed
                } else {
                    TaskStatus::Failed
                })),
                ClaimAction::Verify => Op::Send(Request::GetTask),
                ClaimAction::Execute => {
                    // Started executing: the task runs in its slot.
                    self.settle(now);
                    continue;
                }
                ClaimAction::Retire => return Some((self.idle_lane()?, Op::Send(Request::Retire))),
                ClaimAction::Register if self.draining() => {
                    // Woken when a slot's task finishes.
                    self.machine.set_saturated(true);
                    return None;
                }
                ClaimAction::Register => {
                    self.reregister = Some((0, now));
                    return Some((self.idle_lane()?, Op::Send(Request::CreateWorker)));
                }
            };
            return Some((focus_lane?, op));
        }
    }

    fn ran(&mut self, lane: Lane, started: Instant, now: Instant, ok: bool, out: Out<'_>) {
        if ok {
            self.stats.tasks_completed += 1;
        } else {
            self.stats.tasks_failed += 1;
        }
        self.push(
            out,
            Notice::TaskFinished {
                lane,
                took: now - started,
            },
        );
        if let Some(i) = lane.slot_index() {
            self.slots[i] = Slot::Finished(ok);
        }
        self.settle(now);
    }

    fn replied(
        &mut self,
        lane: Lane,
        req: Request,
        started: Instant,
        now: Instant,
        result: Result<Reply, Failure>,
        out: Out<'_>,
    ) {
        match self.stage {
            Stage::Starting => self.startup_replied(req, started, now, result, out),
            Stage::Running => self.running_replied(lane, req, started, now, result, out),
            Stage::Stopping => {
                self.push(
                    out,
                    match result {
                        Ok(_) => Notice::Disconnected,
                        Err(f) => Notice::DisconnectFailed(f),
                    },
                );
                self.serial_done = true;
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
        out: Out<'_>,
    ) {
        #[cfg(feature = "renew-ahead")]
        if self.startup == Startup::Login {
            self.token_arrived(started, &result);
        }
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
                        #[cfg(feature = "push")]
                        let pushing = self.machine.is_push_connected();
                        let cfg = self.machine.valid_config();
                        self.machine = Machine::with_valid(cfg, now, rand);
                        #[cfg(feature = "push")]
                        self.machine.set_push(pushing, now);
                        self.stage = Stage::Running;
                        #[cfg(feature = "ops")]
                        {
                            self.confirmed_at = Some(now);
                        }
                        self.push(out, Notice::Adopt);
                        self.push(
                            out,
                            Notice::Registered {
                                jobs: u32::from(self.jobs),
                            },
                        );
                        return;
                    }
                };
            }
            Err(failure) => {
                let rand = self.rand();
                let (step, event) =
                    self.retry
                        .on_failure(self.machine.config(), req.endpoint(), started, failure, rand);
                self.push(out, Notice::Event(event));
                match step {
                    StartupStep::RetryAt(t) => self.startup_at = t,
                    StartupStep::GiveUp(e) => {
                        self.startup_error = Some(e);
                        self.stage = Stage::Done;
                        self.halt(out);
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
        out: Out<'_>,
    ) {
        let rand = self.rand();
        #[cfg(feature = "renew-ahead")]
        if lane == Lane::HEARTBEAT && req == Request::Login {
            self.token_arrived(started, &result);
        }
        let done = result.map(drop);
        match (lane, req) {
            (Lane::HEARTBEAT, Request::Heartbeat) => {
                #[cfg(feature = "ops")]
                if done.is_ok() {
                    self.confirmed_at = Some(now);
                }
                let step = self.machine.report_heartbeat(started, now, done);
                self.apply(out, step);
            }
            // A renewal's login (never asked without the `renew` feature:
            // its code folds away).
            (Lane::HEARTBEAT, _) if cfg!(feature = "renew") => {
                let step = self.machine.report_login(started, now, done, rand);
                self.apply(out, step);
            }
            (Lane::HEARTBEAT, _) => {}
            (_, Request::CreateWorker | Request::RegisterJob(_)) => {
                let Some((n, began)) = self.reregister else { return };
                let result = match done {
                    Ok(()) if n < self.jobs => {
                        self.reregister = Some((n + 1, began));
                        return;
                    }
                    Ok(()) => {
                        #[cfg(feature = "ops")]
                        {
                            self.confirmed_at = Some(now);
                        }
                        self.push(out, Notice::Adopt);
                        Ok(())
                    }
                    Err(f) => Err((req.endpoint(), f)),
                };
                self.reregister = None;
                let step = self.machine.report_registered(began, now, result, rand);
                self.apply(out, step);
            }
            (_, Request::Claim) => {
                let got = answer(result, |r| match r {
                    Reply::Claimed(got) => Some(got),
                    _ => None,
                });
                let key = self.claimed.take();
                if let (Ok(true), Some(i)) = (got, lane.slot_index()) {
                    match key {
                        Some(k) if self.holds(k) => {
                            let step = self.machine.report_repeated_claim(now);
                            return self.apply(out, step);
                        }
                        k => self.keys[i] = k,
                    }
                }
                let step = self.machine.report_claim(started, now, got, rand);
                self.apply(out, step);
            }
            (_, Request::Update(TaskStatus::Running)) => {
                let step = self.machine.report_started(started, now, done, rand);
                self.apply(out, step);
            }
            (_, Request::Update(_)) => {
                let step = self.machine.report_delivered(started, now, done, rand);
                self.apply(out, step);
                self.settled(out, lane);
            }
            (_, Request::GetTask) => {
                let state = answer(result, |r| match r {
                    Reply::Task(s) => Some(s),
                    _ => None,
                });
                let step = self.machine.report_verified(started, now, state, rand);
                self.apply(out, step);
                self.settled(out, lane);
            }
            (_, Request::Retire) => {
                let step = self.machine.report_retired(started, now, done, rand);
                self.apply(out, step);
            }
            (_, Request::Login | Request::Heartbeat | Request::Disconnect) => {}
        }
    }
}

/// The part of a reply a request expects; any other reply is unreadable.
fn answer<T>(result: Result<Reply, Failure>, pick: fn(Reply) -> Option<T>) -> Result<T, Failure> {
    result.and_then(|r| pick(r).ok_or(Failure::MalformedResponse))
}

/// The class of how a request to `endpoint` ended (for [`RouteStats`](crate::RouteStats)).
#[cfg_attr(not(feature = "ops"), allow(dead_code))]
const fn answer_class(endpoint: crate::Endpoint, outcome: &Outcome) -> crate::AnswerClass {
    match outcome {
        Outcome::Replied(Ok(_)) | Outcome::Ran(_) => crate::AnswerClass::Ok,
        Outcome::Replied(Err(f)) => crate::AnswerClass::of_failure(endpoint, *f),
        Outcome::Cancelled => crate::AnswerClass::Cancelled,
    }
}
