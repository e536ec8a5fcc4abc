//! The worker's state machine: both loops over one shared outage state.
//!
//! Two loops, heartbeat and claim, share one [`Machine`] (the
//! [`crate::Lifecycle`] owns it; both runtimes drive the lifecycle through
//! [`crate::driver`]). Each loop asks what to do
//! ([`Machine::heartbeat_poll`], [`Machine::claim_poll`]), performs the I/O,
//! and reports the result with the attempt's start time and the current time;
//! the answer is a [`Step`]: the next action, the events to log, and which
//! other loops to wake. Waiting loops sleep until the deadline in
//! [`HeartbeatAction::Wait`]/[`ClaimAction::Wait`] *or until woken*, and then
//! poll again; spurious wake-ups are harmless.

use crate::backoff::{backoff, first_phase};
use crate::protocol::TaskStatus;
use crate::{
    Class, Config, Duration, Endpoint, Event, Failure, Fatal, GiveUp, Instant, OnRegistrationLost, Outage,
    StopReason, ValidConfig,
};

/// How the claim loop's task outcome ended, for the lifecycle (which names
/// the task and counts it): taken with [`Machine::take_settled`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The server has it (delivered, or found already applied).
    Delivered,
    /// Given up: the server will not have it, and why.
    GivenUp(GiveUp),
}

/// What the heartbeat loop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeartbeatAction {
    /// Sleep until this instant (or until woken), then poll again.
    Wait(Instant),
    /// Send `PATCH /workers/{id}` now; report with [`Machine::on_heartbeat`].
    Beat,
    /// Renew the credentials now (log in again, or read the token file
    /// again): the server refused the token with 401. Report with
    /// [`Machine::on_login`]. Only with [`Config::renew_credentials`].
    Login,
    /// The outage has outlasted `max_unreachable` with no failing request
    /// to say so (a long task running, heartbeats far apart): call
    /// [`Machine::on_expired`], which stops the worker.
    Expire,
    /// Exit the loop.
    Stop(StopReason),
}

/// What the claim loop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimAction {
    /// Sleep until this instant (or until woken), then poll again.
    Wait(Instant),
    /// Send `POST /tasks/claim` now; report with [`Machine::on_claim`].
    Claim,
    /// Mark the claimed task `running`; report with [`Machine::on_started`].
    Start,
    /// Run the task's handler; report with [`Machine::on_executed`].
    Execute,
    /// Send the task's outcome; report with [`Machine::on_delivered`].
    Deliver,
    /// Create the worker and register its jobs again; report with
    /// [`Machine::on_registered`]. Until that succeeds the runtime keeps
    /// using (and heartbeating) the worker id it had.
    Register,
    /// Ask the server for the current task's state (`GET /tasks/{id}`):
    /// its update was refused with 409, perhaps because an earlier attempt
    /// whose answer was lost had already been applied. Report with
    /// [`Machine::on_verified`].
    Verify,
    /// Delete the worker id given up after an ambiguous claim
    /// (`DELETE /workers/{old id}`), so the server fails any task it holds
    /// under that id. Report with [`Machine::on_retired`].
    Retire,
    /// The outage has outlasted `max_unreachable`: call
    /// [`Machine::on_expired`] (apply its events and wake-ups), then poll.
    Expire,
    /// Exit the loop.
    Stop(StopReason),
}

/// Where the claim loop is in a task's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No task: claiming.
    Idle,
    /// A task is claimed and not yet marked `running`.
    Starting,
    /// The handler is running.
    Executing,
    /// An outcome is waiting to be delivered (possibly held over an outage).
    Delivering,
    /// A task update was refused with 409; its state is being checked.
    Verifying,
}

/// A task's state on the server ([`crate::Reply::Task`]): what
/// [`crate::Request::GetTask`] found when an update was refused with 409.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskState {
    /// Its status.
    pub status: TaskStatus,
    /// Whether its `worker_id` is this worker's current id.
    pub ours: bool,
}

/// Which loops a step asks the runtime to wake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Nobody.
    Nobody,
    /// The claim loop (a success ended the outage, or it must register).
    Claim,
    /// The heartbeat loop (the credentials need renewing).
    Heartbeat,
    /// Every loop, to stop gracefully: the application asked, so a running
    /// task may finish (within the runtime's grace) and its outcome gets one
    /// delivery attempt. (Only [`Machine::request_stop`], the unit tests'
    /// API, asks for it: the lifecycle stops its lanes itself.)
    #[cfg(test)]
    Everyone,
    /// Every loop, to stop at once: the server is gone or refuses the worker,
    /// so requests in flight and a running task are abandoned.
    Halt,
}

/// The events of one step, in order (at most [`Events::CAPACITY`]).
///
/// Without the crate's `events` feature a step keeps none (nothing would
/// log them): only how many outcomes were held and outages survived, for
/// the [`crate::Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Events {
    items: [Option<Event<'static>>; Events::KEPT],
    /// How many there are (the first `len` items).
    len: u8,
    /// Of them, [`Event::OutcomeHeld`] and [`Event::Recovered`] (counted
    /// with or without the feature).
    pub(crate) held: u8,
    pub(crate) recovered: u8,
    /// [`Event::Reregistered`] and [`Event::RegisteredAfresh`], and
    /// [`Event::CredentialsRenewed`] (counted the same way).
    pub(crate) reregistered: u8,
    pub(crate) renewed: u8,
}

impl Events {
    /// The most events one step produces.
    pub const CAPACITY: usize = 4;

    /// How many this build keeps.
    const KEPT: usize = if cfg!(feature = "events") {
        Self::CAPACITY
    } else {
        0
    };

    fn push(&mut self, e: Event<'static>) {
        match e {
            Event::OutcomeHeld => self.held += 1,
            Event::Recovered { .. } => self.recovered += 1,
            Event::Reregistered | Event::RegisteredAfresh => self.reregistered += 1,
            Event::CredentialsRenewed => self.renewed += 1,
            _ => {}
        }
        if !cfg!(feature = "events") {
            return;
        }
        if let Some(slot) = self.items.get_mut(usize::from(self.len)) {
            *slot = Some(e);
            self.len += 1;
        } else {
            debug_assert!(false, "a step produced more than {} events", Self::CAPACITY);
        }
    }

    /// The events, in order (none without the `events` feature).
    pub fn iter(&self) -> impl Iterator<Item = &Event<'static>> {
        self.items.iter().take(usize::from(self.len)).flatten()
    }

    /// True when there is nothing to log.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The answer to a reported result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Step<A> {
    /// What this loop does next.
    pub action: A,
    /// What to log, in order.
    pub events: Events,
    /// Which other loops to wake.
    pub wake: Wake,
}

/// A 409: the server refused the update as an invalid transition.
const fn is_conflict(failure: Failure) -> bool {
    matches!(failure, Failure::Status { status: 409, .. })
}

/// How a loop goes on after a failure.
enum Verdict {
    Outage {
        retry_after: Option<Duration>,
    },
    Rejected,
    Reregister,
    /// The token was refused (401) and is being renewed: try again after.
    Renew {
        asked: bool,
    },
    Stopped,
}

/// The worker's shared, pure state: both loops over one outage clock.
///
/// A runtime keeps one `Machine` behind its mutex. Each loop asks what to do
/// ([`Machine::heartbeat_poll`], [`Machine::claim_poll`]), performs the I/O,
/// and reports the result with the attempt's start time and the current
/// time; the answer is a [`Step`]: the next action, the events to log, and
/// which other loops to wake. A waiting loop sleeps until its deadline *or
/// until woken*, then polls again; spurious wake-ups are harmless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Machine {
    cfg: Config,
    outage: Outage,
    stop: Option<StopReason>,
    heartbeat_next: Instant,
    claim_next: Instant,
    /// Consecutive outage failures (or refused claims) of the claim loop:
    /// the backoff exponent.
    claim_attempt: u32,
    phase: Phase,
    /// The pending outcome was held over an outage.
    held: bool,
    /// The server forgot the worker; the claim loop registers again.
    reregister: bool,
    /// The server asked the claim loop (Retry-After) not to come back
    /// before this; a success seen elsewhere does not cut it short.
    claim_not_before: Instant,
    /// A claim may have been acted on without us learning the task: the
    /// worker registers afresh before it claims again.
    ambiguous: bool,
    /// After registering afresh, the old worker id is to be deleted.
    retire: bool,
    /// The outcome being delivered is a success.
    outcome_ok: bool,
    /// What a [`Phase::Verifying`] check looks for.
    verify_wanted: TaskStatus,
    /// When the worker last registered again (its id changed then).
    registered_at: Option<Instant>,
    /// The token was refused: the heartbeat loop renews the credentials.
    renew: bool,
    /// When the credentials were last renewed.
    renewed_at: Option<Instant>,
    /// The server accepted the current token at least once.
    token_proven: bool,
    /// The next login attempt, and the backoff exponent of login attempts.
    login_next: Instant,
    login_attempt: u32,
    /// Every task slot is busy: the claim loop cannot probe the server
    /// (see [`Machine::set_saturated`]).
    saturated: bool,
    /// Task-available push is connected ([`Machine::set_push`]).
    #[cfg(feature = "push")]
    push: bool,
    /// Push hints so far ([`Machine::hint`]), and their count when the
    /// last claim was asked for: one that arrived since may be for a task
    /// that claim missed.
    #[cfg(feature = "push")]
    hints: u32,
    #[cfg(feature = "push")]
    claim_hints: u32,
    /// During a requested stop: the last instant an outcome's delivery may
    /// be tried again ([`Machine::set_stop_limit`]).
    stop_limit: Option<Instant>,
    /// The outcome of the claim loop's task was delivered or given up
    /// (taken by the lifecycle).
    settled: Option<Settled>,
    /// When a refused claim was last logged (a refusal backs off on
    /// `claim_attempt`, as an outage does).
    refusal_logged: Option<Instant>,
}

impl Machine {
    /// A machine for a worker that registered at `now`. `rand` picks each
    /// loop's first phase (ignored with `Jitter::Off`).
    #[cfg(test)]
    pub fn new(cfg: Config, now: Instant, rand: u32) -> Result<Self, crate::ConfigError> {
        Ok(Self::with_valid(cfg.validated()?, now, rand))
    }

    /// [`Machine::new`] with a configuration checked already.
    pub fn with_valid(cfg: ValidConfig, now: Instant, rand: u32) -> Self {
        let cfg = *cfg.get();
        let claim_phase = first_phase(cfg.poll_interval, cfg.jitter, rand);
        // The reference heartbeat waits one interval first; with jitter the
        // first heartbeat falls anywhere in that interval.
        let heartbeat_phase = match cfg.jitter {
            crate::Jitter::Off => cfg.heartbeat_interval,
            _ => first_phase(cfg.heartbeat_interval, cfg.jitter, rand.rotate_left(16)),
        };
        Machine {
            cfg,
            outage: Outage::new(),
            stop: None,
            heartbeat_next: now + heartbeat_phase,
            claim_next: now + claim_phase,
            claim_attempt: 0,
            phase: Phase::Idle,
            held: false,
            reregister: false,
            claim_not_before: now,
            ambiguous: false,
            retire: false,
            outcome_ok: true,
            verify_wanted: TaskStatus::Running,
            registered_at: None,
            renew: false,
            renewed_at: None,
            token_proven: false,
            login_next: now,
            login_attempt: 0,
            saturated: false,
            #[cfg(feature = "push")]
            push: false,
            #[cfg(feature = "push")]
            hints: 0,
            #[cfg(feature = "push")]
            claim_hints: 0,
            stop_limit: None,
            settled: None,
            refusal_logged: None,
        }
    }

    /// The configuration.
    pub const fn config(&self) -> &Config {
        &self.cfg
    }

    /// The configuration, which passed validation when the machine was made.
    pub(crate) const fn valid_config(&self) -> ValidConfig {
        ValidConfig::checked_already(self.cfg)
    }

    /// The shared outage state.
    pub const fn outage(&self) -> &Outage {
        &self.outage
    }

    /// Why the worker stopped, once it has.
    pub const fn stop_reason(&self) -> Option<StopReason> {
        self.stop
    }

    /// The outcome being delivered is a success.
    pub const fn outcome_ok(&self) -> bool {
        self.outcome_ok
    }

    /// Where the claim loop is.
    pub const fn phase(&self) -> Phase {
        self.phase
    }

    /// True while the server has forgotten the worker and the claim loop has
    /// not registered it again.
    pub const fn is_reregistering(&self) -> bool {
        self.reregister
    }

    /// True while a claim's answer is lost: a task may be claimed under
    /// this worker's id without its knowledge, so the claim loop registers
    /// afresh (and then retires the old id) before it claims again.
    pub const fn is_claim_ambiguous(&self) -> bool {
        self.ambiguous
    }

    /// True while the credentials are being renewed (a 401 was seen): the
    /// claim loop sends nothing until they are.
    pub const fn is_renewing(&self) -> bool {
        // Without the `renew` feature never: the renewal's code folds away.
        cfg!(feature = "renew") && self.renew
    }

    /// Does a 401 renew the credentials ([`Config::renew_credentials`])?
    /// Only with the core's `renew` feature; without it a 401 stops the
    /// worker, and a device that keeps a fixed token carries no renewal.
    const fn renews(&self) -> bool {
        cfg!(feature = "renew") && self.cfg.renew_credentials
    }

    /// True while an old worker id waits to be deleted
    /// ([`ClaimAction::Retire`]).
    #[cfg(test)]
    pub const fn is_retiring(&self) -> bool {
        self.retire
    }

    /// A task runs and the claim loop cannot probe the server: the claimed
    /// task executes, or every task slot is busy.
    fn executing(&self) -> bool {
        self.phase == Phase::Executing || self.saturated
    }

    /// Tasks run beside the claim loop (task slots, see
    /// [`crate::Lifecycle`]): the task that just started executing is
    /// handed to its slot, and the claim loop goes back to claiming (at
    /// once, as after a task). Its outcome comes back later through
    /// [`Machine::on_executed`], when the claim loop is idle.
    pub fn park(&mut self, now: Instant) {
        if self.phase == Phase::Executing {
            self.phase = Phase::Idle;
            self.held = false;
            self.claim_next = now;
        }
    }

    /// Every task slot is busy (`true`), or one is free again: while they
    /// all are, the claim loop sends nothing, so the heartbeat makes the
    /// last try before the outage limit, as while a single task runs.
    pub fn set_saturated(&mut self, saturated: bool) {
        self.saturated = saturated;
    }

    /// A requested stop's time limit for outcomes: a delivery that fails
    /// while the server is unreachable is tried again on the outage
    /// schedule, the last time at `limit` at the latest (the lifecycle
    /// sets it so that the try ends before the stop's hard limit), then
    /// given up. Without one, an outcome gets one try during a stop.
    pub(crate) fn set_stop_limit(&mut self, limit: Instant) {
        self.stop_limit = Some(limit);
    }

    /// The claim loop's task has an outcome to deliver (or to check after
    /// a 409).
    pub(crate) fn holds_outcome(&self) -> bool {
        match self.phase {
            Phase::Delivering => true,
            Phase::Verifying => self.verify_wanted != TaskStatus::Running,
            _ => false,
        }
    }

    /// How the last outcome ended, once it did: delivered or given up.
    pub(crate) fn take_settled(&mut self) -> Option<Settled> {
        self.settled.take()
    }

    /// When the current outage outlasts `max_unreachable` (the first
    /// instant `elapsed > max`); `None` while the server answers.
    pub fn outage_deadline(&self) -> Option<Instant> {
        self.outage
            .started_at()
            .map(|s| s + self.cfg.max_unreachable + Duration::from_millis(1))
    }

    /// The outage deadline has passed ([`HeartbeatAction::Expire`]): stop,
    /// with the same line as any loop that finds the outage too long.
    /// Spurious calls (no outage, deadline not reached) change nothing.
    /// Either loop then polls again (and finds `Stop`).
    #[cfg(test)]
    pub fn on_expired(&mut self, now: Instant) -> Step<()> {
        let mut events = Events::default();
        let mut wake = Wake::Nobody;
        if let Some(e) = self.expire(now) {
            events.push(e);
            wake = Wake::Halt;
        }
        Step {
            action: (),
            events,
            wake,
        }
    }

    /// [`Machine::on_expired`] for the lifecycle: the event, if it stops
    /// the worker (then it halts), without a step to fill.
    pub(crate) fn expire(&mut self, now: Instant) -> Option<Event<'static>> {
        let max = self.cfg.max_unreachable;
        if self.stop.is_none()
            && self.outage.should_stop(now, max)
            && let Some(last_error) = self.outage.last_error()
        {
            self.stop = Some(StopReason::Unreachable { last_error });
            return Some(Event::Unreachable { max, last_error });
        }
        None
    }

    /// Stop at the application's request (disconnect, signal). Idempotent;
    /// the first call returns the event to log. Wakes every loop. A pending
    /// outcome gets one last delivery attempt.
    #[cfg(test)]
    pub fn request_stop(&mut self) -> Step<()> {
        let mut events = Events::default();
        if self.stop_requested() {
            events.push(Event::StopRequested);
        }
        Step {
            action: (),
            events,
            wake: Wake::Everyone,
        }
    }

    /// [`Machine::request_stop`] for the lifecycle: true the first time
    /// (log [`Event::StopRequested`]; every loop is woken anyway). An
    /// outcome waiting for its next try keeps its schedule.
    pub(crate) fn stop_requested(&mut self) -> bool {
        let first = self.stop.is_none();
        if first {
            self.stop = Some(StopReason::Requested);
        }
        first
    }

    // ------------------------------------------------------------ heartbeat

    /// What the heartbeat loop does at `now`.
    pub fn heartbeat_poll(&mut self, now: Instant) -> HeartbeatAction {
        // A requested stop beats on while its tasks finish and their
        // outcomes go out (the lifecycle ends the lane when the claim loop
        // is done): a server that heard nothing for its stale-worker
        // timeout would fail them. No outage limit applies then: the stop
        // has its own.
        let deadline = match self.stop {
            Some(StopReason::Requested) => None,
            Some(reason) => return HeartbeatAction::Stop(reason),
            None => self.outage_deadline(),
        };
        if deadline.is_some_and(|d| now >= d) {
            return HeartbeatAction::Expire;
        }
        let until = |t: Instant| match deadline {
            Some(d) if d < t => d,
            _ => t,
        };
        if self.is_renewing() {
            return if now < self.login_next {
                HeartbeatAction::Wait(until(self.login_next))
            } else {
                HeartbeatAction::Login
            };
        }
        if now < self.heartbeat_next {
            return HeartbeatAction::Wait(until(self.heartbeat_next));
        }
        if self.reregister {
            // No worker id to beat for until the claim loop registers again.
            while self.heartbeat_next <= now {
                self.heartbeat_next += self.cfg.heartbeat_interval;
            }
            return HeartbeatAction::Wait(until(self.heartbeat_next));
        }
        HeartbeatAction::Beat
    }

    /// Report a heartbeat that started at `started` and ended at `now`.
    #[cfg(test)]
    pub fn on_heartbeat(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<(), Failure>,
    ) -> Step<HeartbeatAction> {
        let step = self.report_heartbeat(started, now, result);
        self.heartbeat_step(now, step)
    }

    /// [`Machine::on_heartbeat`] without the next action (the lifecycle polls
    /// for it itself).
    pub(crate) fn report_heartbeat(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<(), Failure>,
    ) -> Step<()> {
        let mut events = Events::default();
        let mut wake = Wake::Nobody;
        // A requested stop beats on: the beat keeps the worker known; an
        // answer ends an outage (a waiting outcome is pulled forward), a
        // failure changes nothing (the stop has its limit, the outcomes
        // their own answers).
        if matches!(self.stop, None | Some(StopReason::Requested)) {
            self.heartbeat_next = started + self.cfg.heartbeat_interval;
            match result {
                Ok(()) => {
                    if self.succeeded(now, &mut events) {
                        wake = Wake::Claim;
                    }
                }
                Err(_) if self.stop.is_some() => {}
                // A heartbeat sent under the id given up by a registration
                // that completed meanwhile: its 404 says nothing about the
                // current id. Beat again for the current one.
                Err(Failure::Status { status: 404, .. })
                    if self.registered_at.is_some_and(|at| at >= started) =>
                {
                    self.heartbeat_next = now;
                }
                Err(failure) => {
                    wake = match self.failed(Endpoint::Heartbeat, started, now, failure, &mut events) {
                        Verdict::Stopped => Wake::Halt,
                        Verdict::Reregister => {
                            // Register now, not after the (perhaps long,
                            // with push) idle poll.
                            if self.phase == Phase::Idle {
                                self.claim_next = self.claim_next.min(now);
                            }
                            Wake::Claim
                        }
                        Verdict::Renew { .. } => {
                            self.heartbeat_next = now;
                            Wake::Nobody
                        }
                        Verdict::Outage { .. } => {
                            // While a task runs the claim loop cannot probe:
                            // the heartbeat makes the last try before the
                            // limit (otherwise the claim loop's do).
                            if self.executing() {
                                let rand = (started.as_millis() as u32).rotate_left(13) ^ 0x9E37_79B9;
                                self.heartbeat_next = self.within_limit(self.heartbeat_next, now, rand);
                            }
                            Wake::Nobody
                        }
                        Verdict::Rejected => Wake::Nobody,
                    };
                }
            }
        }
        Step {
            action: (),
            events,
            wake,
        }
    }

    // ---------------------------------------------------------------- claim

    /// What the claim loop does at `now`.
    pub fn claim_poll(&mut self, now: Instant) -> ClaimAction {
        let due = now >= self.claim_next;
        match self.stop {
            // Asked to stop: an outcome is delivered (checked after a 409),
            // tried again on the outage schedule until the stop's limit.
            Some(StopReason::Requested)
                if matches!(self.phase, Phase::Delivering | Phase::Verifying) && !due =>
            {
                ClaimAction::Wait(self.claim_next)
            }
            Some(StopReason::Requested) if self.phase == Phase::Delivering => ClaimAction::Deliver,
            Some(StopReason::Requested) if self.phase == Phase::Executing => ClaimAction::Execute,
            Some(StopReason::Requested) if self.phase == Phase::Verifying => ClaimAction::Verify,
            Some(StopReason::Requested) if self.retire => ClaimAction::Retire,
            Some(reason) => ClaimAction::Stop(reason),
            None => match self.phase {
                Phase::Executing => ClaimAction::Execute,
                _ if self.outage_deadline().is_some_and(|d| now >= d) => ClaimAction::Expire,
                // The token is being renewed: no request until then (woken
                // when it is; re-polled after a heartbeat interval anyway).
                _ if self.is_renewing() => ClaimAction::Wait(now + self.cfg.heartbeat_interval),
                _ if !due => ClaimAction::Wait(match self.outage_deadline() {
                    Some(d) if d < self.claim_next => d,
                    _ => self.claim_next,
                }),
                Phase::Starting => ClaimAction::Start,
                Phase::Delivering => ClaimAction::Deliver,
                Phase::Verifying => ClaimAction::Verify,
                Phase::Idle if self.reregister || self.ambiguous => ClaimAction::Register,
                Phase::Idle if self.retire => ClaimAction::Retire,
                Phase::Idle => {
                    #[cfg(feature = "push")]
                    {
                        self.claim_hints = self.hints;
                    }
                    ClaimAction::Claim
                }
            },
        }
    }

    /// Report a claim that started at `started` and ended at `now`:
    /// `Ok(true)` if it returned a task, `Ok(false)` for `{"task": null}`.
    ///
    /// A failure after which the server may have claimed a task for us
    /// ([`Failure::maybe_acted`]: a timeout, a connection lost after the
    /// request was sent, a 5xx but 503, a 200 that could not be read) makes
    /// the claim *ambiguous*: the worker does not claim again under this id.
    /// Once the server answers, it registers afresh
    /// ([`ClaimAction::Register`]) and deletes the old id
    /// ([`ClaimAction::Retire`]), which makes the server fail whatever task
    /// that id held — no task stays `claimed` without our knowledge.
    #[cfg(test)]
    pub fn on_claim(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<bool, Failure>,
        rand: u32,
    ) -> Step<ClaimAction> {
        let step = self.report_claim(started, now, result, rand);
        self.claim_step(now, step)
    }

    /// [`Machine::on_claim`] without the next action (the lifecycle polls
    /// for it itself).
    pub(crate) fn report_claim(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<bool, Failure>,
        rand: u32,
    ) -> Step<()> {
        let mut events = Events::default();
        let mut wake = Wake::Nobody;
        if self.stop.is_none() {
            match result {
                Ok(got_task) => {
                    self.succeeded(now, &mut events);
                    self.claim_attempt = 0;
                    self.refusal_logged = None;
                    if got_task {
                        self.phase = Phase::Starting;
                        self.claim_next = now;
                    } else {
                        self.claim_next = started + self.idle_poll_interval();
                        // A hint that arrived while this claim was out may
                        // be for a task submitted after it: claim again.
                        #[cfg(feature = "push")]
                        if self.hints != self.claim_hints {
                            self.claim_next = now;
                        }
                    }
                }
                Err(failure) => {
                    if failure.maybe_acted() && !self.ambiguous {
                        self.ambiguous = true;
                        events.push(Event::ClaimAnswerLost { error: failure });
                    }
                    wake = self.claim_loop_failed(Endpoint::Claim, started, now, failure, rand, &mut events);
                    if matches!(failure.classify(Endpoint::Claim), Class::Rejected) {
                        // Refused (a 4xx that is not a lost registration:
                        // a proxy's redirect, an API the server does not
                        // have). Not an outage, and perhaps not for good (a
                        // proxy being redeployed): back off as in one, up
                        // to the cap, and say so at most once per log
                        // interval rather than once per poll.
                        self.retry_before(Instant::from_millis(u64::MAX), started, now, None, rand);
                        if self
                            .refusal_logged
                            .is_none_or(|at| now - at >= self.cfg.log_interval)
                        {
                            self.refusal_logged = Some(now);
                            events.push(Event::ClaimRefused {
                                error: failure,
                                retry_in: self.claim_next - now,
                            });
                        }
                    }
                }
            }
        }
        Step {
            action: (),
            events,
            wake,
        }
    }

    /// A claim answered at `now` with a task the worker already holds in
    /// another slot or has just finished (the lifecycle knows by the
    /// task's [`crate::TaskKey`]): an answer delivered twice (a proxy, a
    /// connection mixing answers up). The task is not started again. The
    /// claim's own answer is lost with it, and the server may have claimed
    /// another task for this worker, so the claim is ambiguous: register
    /// afresh, as after any lost claim answer.
    pub(crate) fn report_repeated_claim(&mut self, now: Instant) -> Step<()> {
        let mut events = Events::default();
        if self.stop.is_none() {
            self.succeeded(now, &mut events);
            self.phase = Phase::Idle;
            self.claim_next = now;
            events.push(Event::ClaimRepeated);
            self.ambiguous = true;
        }
        Step {
            action: (),
            events,
            wake: Wake::Nobody,
        }
    }

    /// Report the `running` update of the claimed task.
    #[cfg(test)]
    pub fn on_started(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<(), Failure>,
        rand: u32,
    ) -> Step<ClaimAction> {
        let step = self.report_started(started, now, result, rand);
        self.claim_step(now, step)
    }

    /// [`Machine::on_started`] without the next action (the lifecycle polls
    /// for it itself).
    pub(crate) fn report_started(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<(), Failure>,
        rand: u32,
    ) -> Step<()> {
        let mut events = Events::default();
        let mut wake = Wake::Nobody;
        if self.stop.is_some() {
            // Stopping: the task is left claimed; deleting the worker fails it.
            self.phase = Phase::Idle;
        } else {
            match result {
                Ok(()) => {
                    self.succeeded(now, &mut events);
                    self.phase = Phase::Executing;
                }
                Err(failure) if is_conflict(failure) => {
                    // Perhaps an earlier attempt whose answer was lost was
                    // applied: ask the server before giving the task up.
                    self.succeeded(now, &mut events);
                    self.verify(now, TaskStatus::Running);
                }
                Err(failure) => {
                    if matches!(failure.classify(Endpoint::TaskStatus), Class::Rejected) {
                        // Cancelled or gone meanwhile: skip it and claim again.
                        events.push(Event::TaskSkipped { error: failure });
                        self.phase = Phase::Idle;
                    }
                    wake = self.claim_loop_failed(
                        Endpoint::TaskStatus,
                        started,
                        now,
                        failure,
                        rand,
                        &mut events,
                    );
                }
            }
        }
        Step {
            action: (),
            events,
            wake,
        }
    }

    /// The handler finished at `now` (`ok`: it succeeded); its outcome is
    /// to be delivered.
    #[cfg(test)]
    pub fn on_executed(&mut self, now: Instant, ok: bool) -> Step<ClaimAction> {
        let step = self.report_executed(now, ok);
        self.claim_step(now, step)
    }

    /// [`Machine::on_executed`] without the next action (the lifecycle polls
    /// for it itself).
    pub(crate) fn report_executed(&mut self, now: Instant, ok: bool) -> Step<()> {
        self.phase = Phase::Delivering;
        self.outcome_ok = ok;
        self.held = false;
        self.claim_next = now;
        Step {
            action: (),
            events: Events::default(),
            wake: Wake::Nobody,
        }
    }

    /// Report the delivery of a task's outcome.
    #[cfg(test)]
    pub fn on_delivered(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<(), Failure>,
        rand: u32,
    ) -> Step<ClaimAction> {
        let step = self.report_delivered(started, now, result, rand);
        self.claim_step(now, step)
    }

    /// [`Machine::on_delivered`] without the next action (the lifecycle polls
    /// for it itself).
    pub(crate) fn report_delivered(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<(), Failure>,
        rand: u32,
    ) -> Step<()> {
        let mut events = Events::default();
        let mut wake = Wake::Nobody;
        match result {
            Ok(()) => {
                self.succeeded(now, &mut events);
                if self.held {
                    events.push(Event::OutcomeDelivered);
                }
                self.settle(now, Settled::Delivered);
            }
            Err(failure) if is_conflict(failure) => {
                // Perhaps an earlier delivery whose answer was lost was
                // applied: ask the server before calling it refused.
                self.succeeded(now, &mut events);
                let wanted = if self.outcome_ok {
                    TaskStatus::Completed
                } else {
                    TaskStatus::Failed
                };
                self.verify(now, wanted);
            }
            Err(failure) if self.stop.is_some() => {
                self.stopping_failed(Endpoint::TaskStatus, started, now, failure, rand, &mut events);
            }
            Err(failure) => {
                let class = failure.classify(Endpoint::TaskStatus);
                if matches!(class, Class::Rejected) {
                    self.settle(now, Settled::GivenUp(GiveUp::Refused(failure)));
                } else if matches!(class, Class::Transient | Class::Congested { .. }) && !self.held {
                    self.held = true;
                    events.push(Event::OutcomeHeld);
                }
                wake = self.claim_loop_failed(Endpoint::TaskStatus, started, now, failure, rand, &mut events);
            }
        }
        Step {
            action: (),
            events,
            wake,
        }
    }

    /// Report registering again (create worker, then every job); on failure
    /// name the request that failed.
    #[cfg(test)]
    pub fn on_registered(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<(), (Endpoint, Failure)>,
        rand: u32,
    ) -> Step<ClaimAction> {
        let step = self.report_registered(started, now, result, rand);
        self.claim_step(now, step)
    }

    /// [`Machine::on_registered`] without the next action (the lifecycle polls
    /// for it itself).
    pub(crate) fn report_registered(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<(), (Endpoint, Failure)>,
        rand: u32,
    ) -> Step<()> {
        let mut events = Events::default();
        let mut wake = Wake::Nobody;
        if self.stop.is_none() {
            match result {
                Ok(()) => {
                    self.succeeded(now, &mut events);
                    self.retire = self.ambiguous && !self.reregister;
                    self.registered_at = Some(now);
                    self.ambiguous = false;
                    self.reregister = false;
                    self.claim_next = now;
                    events.push(if self.retire {
                        Event::RegisteredAfresh
                    } else {
                        Event::Reregistered
                    });
                }
                Err((endpoint, failure)) => match failure.classify(endpoint) {
                    Class::Rejected | Class::Fatal(Fatal::WorkerUnknown | Fatal::NoJobApi) => {
                        self.stop = Some(StopReason::RegistrationRejected(failure));
                        events.push(Event::RegistrationRejected { error: failure });
                        wake = Wake::Halt;
                    }
                    _ => wake = self.claim_loop_failed(endpoint, started, now, failure, rand, &mut events),
                },
            }
        }
        Step {
            action: (),
            events,
            wake,
        }
    }

    /// Report the [`ClaimAction::Verify`] check of the current task:
    /// its state on the server, or how asking failed.
    #[cfg(test)]
    pub fn on_verified(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<TaskState, Failure>,
        rand: u32,
    ) -> Step<ClaimAction> {
        let step = self.report_verified(started, now, result, rand);
        self.claim_step(now, step)
    }

    /// [`Machine::on_verified`] without the next action (the lifecycle polls
    /// for it itself).
    pub(crate) fn report_verified(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<TaskState, Failure>,
        rand: u32,
    ) -> Step<()> {
        let mut events = Events::default();
        let mut wake = Wake::Nobody;
        let wanted = self.verify_wanted;
        match result {
            Ok(state) => {
                self.succeeded(now, &mut events);
                let applied = state.status == wanted && (state.ours || wanted != TaskStatus::Running);
                let conflict = Failure::status(409);
                match (wanted, applied) {
                    (TaskStatus::Running, true) if self.stop.is_none() => {
                        events.push(Event::UpdateAlreadyApplied { status: wanted });
                        self.phase = Phase::Executing;
                    }
                    // Stopping: the task is left to the disconnect.
                    (TaskStatus::Running, true) => self.phase = Phase::Idle,
                    (TaskStatus::Running, false) => {
                        events.push(Event::TaskSkipped { error: conflict });
                        self.phase = Phase::Idle;
                    }
                    (_, true) => {
                        events.push(Event::UpdateAlreadyApplied { status: wanted });
                        if self.held {
                            events.push(Event::OutcomeDelivered);
                        }
                        self.settle(now, Settled::Delivered);
                    }
                    (_, false) => self.settle(now, Settled::GivenUp(GiveUp::Holds(state.status))),
                }
            }
            Err(failure) if wanted != TaskStatus::Running && self.stop.is_some() => {
                // Stopping with an outcome to check: tried again like a
                // delivery, until the stop's limit.
                self.stopping_failed(Endpoint::GetTask, started, now, failure, rand, &mut events);
            }
            Err(failure) => {
                let class = failure.classify(Endpoint::GetTask);
                if self.stop.is_some() || matches!(class, Class::Rejected) {
                    // The task is gone (404) or we are stopping: give it up.
                    if wanted == TaskStatus::Running {
                        events.push(Event::TaskSkipped { error: failure });
                        self.phase = Phase::Idle;
                    } else {
                        self.settle(now, Settled::GivenUp(GiveUp::Refused(failure)));
                    }
                }
                if self.stop.is_none() {
                    wake =
                        self.claim_loop_failed(Endpoint::GetTask, started, now, failure, rand, &mut events);
                }
            }
        }
        Step {
            action: (),
            events,
            wake,
        }
    }

    /// Report the [`ClaimAction::Retire`] deletion of the old worker id.
    #[cfg(test)]
    pub fn on_retired(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<(), Failure>,
        rand: u32,
    ) -> Step<ClaimAction> {
        let step = self.report_retired(started, now, result, rand);
        self.claim_step(now, step)
    }

    /// [`Machine::on_retired`] without the next action (the lifecycle polls
    /// for it itself).
    pub(crate) fn report_retired(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<(), Failure>,
        rand: u32,
    ) -> Step<()> {
        let mut events = Events::default();
        let mut wake = Wake::Nobody;
        match result {
            Ok(()) => {
                self.succeeded(now, &mut events);
                self.retire = false;
                events.push(Event::RetiredOldWorker);
            }
            Err(failure) if self.stop.is_some() => {
                self.retire = false;
                events.push(Event::RetireFailed { error: failure });
            }
            Err(failure) => match failure.classify(Endpoint::Disconnect) {
                Class::Rejected => {
                    // 404: the server had already dropped it (swept). Any
                    // other refusal: its heartbeats have stopped, so the
                    // server's sweeper fails what it holds.
                    self.succeeded(now, &mut events);
                    self.retire = false;
                    events.push(Event::RetireFailed { error: failure });
                }
                // An outage (retry later) or a refused token (stop).
                _ => {
                    wake = self.claim_loop_failed(
                        Endpoint::Disconnect,
                        started,
                        now,
                        failure,
                        rand,
                        &mut events,
                    );
                }
            },
        }
        Step {
            action: (),
            events,
            wake,
        }
    }

    /// Renew the credentials now, ahead of the token's expiry (the
    /// lifecycle's [`crate::jwt::renew_after`] schedule): the next
    /// heartbeat action is [`HeartbeatAction::Login`]. Only with
    /// [`Config::renew_credentials`], while serving; a renewal already under
    /// way goes on as it is.
    #[cfg(feature = "renew-ahead")]
    pub(crate) fn renew_ahead(&mut self, now: Instant) {
        if self.renews() && self.stop.is_none() && !self.renew {
            self.renew = true;
            self.login_next = now;
        }
    }

    /// Report renewing the credentials ([`HeartbeatAction::Login`]) that
    /// started at `started`: `Ok` once the new token is in use.
    #[cfg(all(test, feature = "renew"))]
    pub fn on_login(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<(), Failure>,
        rand: u32,
    ) -> Step<HeartbeatAction> {
        let step = self.report_login(started, now, result, rand);
        self.heartbeat_step(now, step)
    }

    /// [`Machine::on_login`] without the next action (the lifecycle polls
    /// for it itself).
    pub(crate) fn report_login(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<(), Failure>,
        rand: u32,
    ) -> Step<()> {
        let mut events = Events::default();
        let mut wake = Wake::Nobody;
        if self.stop.is_none() {
            match result {
                Ok(()) => {
                    self.reached(now, &mut events);
                    self.renew = false;
                    self.renewed_at = Some(now);
                    self.token_proven = false;
                    self.login_attempt = 0;
                    // Beat at once: it proves the new token.
                    self.heartbeat_next = now;
                    events.push(Event::CredentialsRenewed);
                    wake = Wake::Claim;
                }
                Err(failure) => match failure.classify(Endpoint::Login) {
                    Class::Fatal(cause) => {
                        self.stop = Some(StopReason::RegistrationLost(cause));
                        events.push(Event::RegistrationLost { cause });
                        wake = Wake::Halt;
                    }
                    Class::Local(error) => {
                        self.local_failure(Endpoint::Login, error, &mut events);
                        wake = Wake::Halt;
                    }
                    class => {
                        let retry_after = match class {
                            Class::Congested { retry_after } => retry_after,
                            _ => None,
                        };
                        match self.outage_failure(now, failure, retry_after, &mut events) {
                            Verdict::Stopped => wake = Wake::Halt,
                            _ => {
                                let wait = backoff(
                                    self.cfg.poll_interval,
                                    self.cfg.backoff_cap,
                                    self.login_attempt,
                                    self.cfg.jitter,
                                    rand,
                                );
                                self.login_attempt = self.login_attempt.saturating_add(1);
                                self.login_next = started + wait;
                            }
                        }
                    }
                },
            }
        }
        Step {
            action: (),
            events,
            wake,
        }
    }

    // ----------------------------------------------------------------- push
    // (Feature `push`: a device that never uses push carries none of it.)

    /// Task-available push is connected (`true`) or lost at `now` (see
    /// [`crate::push`]). While it is, an empty claim waits
    /// [`Config::push_poll_interval`] instead of `poll_interval`. When it
    /// comes or goes, an idle claim loop claims at once (as on a
    /// [`Machine::hint`]): events sent while nobody listened are lost.
    #[cfg(feature = "push")]
    pub fn set_push(&mut self, connected: bool, now: Instant) {
        if self.push != connected {
            self.push = connected;
            self.hint(now);
        }
    }

    /// True while task-available push is connected.
    #[cfg(feature = "push")]
    pub const fn is_push_connected(&self) -> bool {
        self.push
    }

    /// A push hint at `now`: a task may be waiting. An idle claim loop
    /// claims at once — not during an outage (the backoff stands), nor
    /// before a `Retry-After` has passed. The claim stays the authority: a
    /// hint for a task someone else took costs one empty claim.
    #[cfg(feature = "push")]
    pub fn hint(&mut self, now: Instant) {
        self.hints = self.hints.wrapping_add(1);
        if self.phase == Phase::Idle && self.outage.started_at().is_none() && now < self.claim_next {
            self.claim_next = now.max(self.claim_not_before).min(self.claim_next);
        }
    }

    /// How long an empty claim waits: longer while push is connected.
    const fn idle_poll_interval(&self) -> Duration {
        #[cfg(feature = "push")]
        if self.push {
            return self.cfg.push_poll_interval;
        }
        self.cfg.poll_interval
    }

    // -------------------------------------------------------------- private

    /// A retry during an outage at `t`, or by the outage's limit if that
    /// comes first (never before `now`): the last attempt happens before the
    /// outage has lasted `max_unreachable`, and the deadline
    /// ([`HeartbeatAction::Expire`]) only stops a worker whose requests
    /// could no longer save it. With jitter, a capped retry lands anywhere
    /// in the second half of the time left (`rand`), so that a fleet that
    /// lost the server together does not retry together at its limit.
    fn within_limit(&self, t: Instant, now: Instant, rand: u32) -> Instant {
        let Some(start) = self.outage.started_at() else {
            return t;
        };
        pull_before(start + self.cfg.max_unreachable, t, now, self.cfg.jitter, rand)
    }

    fn verify(&mut self, now: Instant, wanted: TaskStatus) {
        self.phase = Phase::Verifying;
        self.verify_wanted = wanted;
        self.claim_next = now;
    }

    /// A reported step, with the claim loop's next action.
    #[cfg(test)]
    fn claim_step(&mut self, now: Instant, step: Step<()>) -> Step<ClaimAction> {
        Step {
            action: self.claim_poll(now),
            events: step.events,
            wake: step.wake,
        }
    }

    /// A reported step, with the heartbeat loop's next action.
    #[cfg(test)]
    fn heartbeat_step(&mut self, now: Instant, step: Step<()>) -> Step<HeartbeatAction> {
        Step {
            action: self.heartbeat_poll(now),
            events: step.events,
            wake: step.wake,
        }
    }

    fn finish_task(&mut self, now: Instant) {
        self.phase = Phase::Idle;
        self.held = false;
        // The reference claims again at once after a task.
        self.claim_next = now;
    }

    /// The outcome was delivered or given up: the task is finished.
    fn settle(&mut self, now: Instant, how: Settled) {
        self.settled = Some(how);
        self.finish_task(now);
    }

    /// An outcome's delivery (or its check after a 409) failed during a
    /// requested stop. Unreachable (a transient failure, 429, 503): tried
    /// again on the outage schedule — the outage clock and its warnings go
    /// on, but a requested stop stays one — with the last try by the
    /// stop's limit; past it, given up. Any other answer is final.
    fn stopping_failed(
        &mut self,
        endpoint: Endpoint,
        started: Instant,
        now: Instant,
        failure: Failure,
        rand: u32,
        events: &mut Events,
    ) {
        let retry_after = match failure.classify(endpoint) {
            Class::Transient => None,
            Class::Congested { retry_after } => retry_after,
            // A refusal, a refused token, a request the worker cannot
            // write: no later try is answered otherwise.
            _ => return self.settle(now, Settled::GivenUp(GiveUp::Refused(failure))),
        };
        // The outage clock and its warnings go on (a requested stop stays
        // one: `outage_failure` decides no stop then).
        self.outage_failure(now, failure, retry_after, events);
        let limit = self.stop_limit.unwrap_or(now);
        if now >= limit {
            return self.settle(now, Settled::GivenUp(GiveUp::Unreachable(failure)));
        }
        if !self.held {
            self.held = true;
            events.push(Event::OutcomeHeld);
        }
        self.retry_before(limit, started, now, retry_after, rand);
    }

    /// The claim loop's next try after an attempt (started at `started`)
    /// met the server unreachable: the outage schedule (capped, jittered
    /// backoff), `Retry-After` honoured but never past the cap nor (much)
    /// past `limit` — the outage's or a stop's, so the decision at the
    /// limit stays prompt — and the last try pulled before `limit`.
    fn retry_before(
        &mut self,
        limit: Instant,
        started: Instant,
        now: Instant,
        retry_after: Option<Duration>,
        rand: u32,
    ) {
        let mut wait = backoff(
            self.cfg.poll_interval,
            self.cfg.backoff_cap,
            self.claim_attempt,
            self.cfg.jitter,
            rand,
        );
        self.claim_attempt = self.claim_attempt.saturating_add(1);
        if let Some(ra) = retry_after {
            let budget = (limit - now).saturating_add(Duration::from_millis(1));
            wait = wait.max(ra.min(budget)).min(self.cfg.backoff_cap);
            self.claim_not_before = started + wait;
        }
        self.claim_next = pull_before(limit, started + wait, now, self.cfg.jitter, rand);
    }

    /// A claim-loop request failed: apply it and schedule the retry.
    fn claim_loop_failed(
        &mut self,
        endpoint: Endpoint,
        started: Instant,
        now: Instant,
        failure: Failure,
        rand: u32,
        events: &mut Events,
    ) -> Wake {
        match self.failed(endpoint, started, now, failure, events) {
            Verdict::Stopped => Wake::Halt,
            Verdict::Renew { asked } => {
                // Try the same request again once the token is renewed.
                self.claim_next = now;
                if asked { Wake::Heartbeat } else { Wake::Nobody }
            }
            Verdict::Reregister => {
                self.claim_next = now;
                Wake::Nobody
            }
            Verdict::Rejected => {
                if self.phase == Phase::Idle {
                    self.claim_next = now;
                }
                Wake::Nobody
            }
            Verdict::Outage { retry_after } => {
                // (An outage has started: `failed` recorded it.)
                let limit = self.outage.started_at().unwrap_or(now) + self.cfg.max_unreachable;
                self.retry_before(limit, started, now, retry_after, rand);
                Wake::Nobody
            }
        }
    }

    /// The server answered and took the token (any answer but 401/403).
    /// Ends an outage (true if one ended), resets the claim backoff and
    /// pulls a sleeping claim loop forward.
    fn succeeded(&mut self, now: Instant, events: &mut Events) -> bool {
        self.token_proven = true;
        self.reached(now, events)
    }

    /// The server answered (whatever it said): the outage, if any, is over.
    fn reached(&mut self, now: Instant, events: &mut Events) -> bool {
        match self.outage.record_success(now) {
            Some(outage) => {
                events.push(Event::Recovered { outage });
                self.claim_attempt = 0;
                let pulled = self.claim_next.min(now);
                self.claim_next = if pulled < self.claim_not_before {
                    self.claim_not_before
                } else {
                    pulled
                };
                true
            }
            None => false,
        }
    }

    /// Classify a failure of a request that started at `started` once and
    /// apply it to the shared state.
    fn failed(
        &mut self,
        endpoint: Endpoint,
        started: Instant,
        now: Instant,
        failure: Failure,
        events: &mut Events,
    ) -> Verdict {
        match failure.classify(endpoint) {
            Class::Fatal(Fatal::AuthRefused { status: 401 }) if self.renews() => {
                self.reached(now, events);
                let fresh = self.renewed_at.is_some_and(|at| started >= at);
                if self.renewed_at.is_some_and(|at| started < at) {
                    // Sent with a token given up since: just send it again.
                    Verdict::Renew { asked: false }
                } else if fresh && !self.token_proven {
                    // The token we just got is refused too: no more tries.
                    let cause = Fatal::AuthRefused { status: 401 };
                    self.stop = Some(StopReason::RegistrationLost(cause));
                    events.push(Event::RegistrationLost { cause });
                    Verdict::Stopped
                } else {
                    let asked = !self.renew;
                    if asked {
                        self.renew = true;
                        self.login_next = now;
                        events.push(Event::CredentialsExpired);
                    }
                    Verdict::Renew { asked }
                }
            }
            Class::Rejected => {
                // The server answered: whatever the request's problem, this
                // is no outage.
                self.succeeded(now, events);
                Verdict::Rejected
            }
            Class::Fatal(Fatal::WorkerUnknown)
                if self.cfg.on_registration_lost == OnRegistrationLost::Register =>
            {
                self.succeeded(now, events);
                if !self.reregister {
                    self.reregister = true;
                    events.push(Event::Reregistering);
                }
                Verdict::Reregister
            }
            Class::Fatal(cause) => {
                self.stop = Some(StopReason::RegistrationLost(cause));
                events.push(Event::RegistrationLost { cause });
                Verdict::Stopped
            }
            Class::Transient => self.outage_failure(now, failure, None, events),
            Class::Congested { retry_after } => self.outage_failure(now, failure, retry_after, events),
            Class::Local(error) => self.local_failure(endpoint, error, events),
        }
    }

    /// The worker could not write a request: say which and why, and stop
    /// (no retry can help; the server was not asked, so no outage).
    fn local_failure(&mut self, what: Endpoint, error: crate::Local, events: &mut Events) -> Verdict {
        self.stop = Some(StopReason::Local { what, error });
        events.push(Event::LocalError { what, error });
        Verdict::Stopped
    }

    fn outage_failure(
        &mut self,
        now: Instant,
        failure: Failure,
        retry_after: Option<Duration>,
        events: &mut Events,
    ) -> Verdict {
        self.outage.record_failure(now, failure);
        let max = self.cfg.max_unreachable;
        if self.outage.should_stop(now, max) {
            if self.stop.is_some() {
                // A requested stop under way: its own limit holds, and the
                // countdown has nothing more to say.
                return Verdict::Outage { retry_after };
            }
            self.stop = Some(StopReason::Unreachable { last_error: failure });
            events.push(Event::Unreachable {
                max,
                last_error: failure,
            });
            return Verdict::Stopped;
        }
        if self.outage.should_log(now, self.cfg.log_interval) {
            events.push(Event::OutageWarning {
                elapsed: self.outage.elapsed(now),
                max,
            });
        }
        Verdict::Outage { retry_after }
    }
}

/// A retry at `t`, or by `limit` if that comes first (never before `now`):
/// the last try happens before the limit. With jitter, a pulled retry
/// lands anywhere in the second half of the time left (`rand`), so that a
/// fleet that lost the server together does not retry together at a
/// shared limit.
fn pull_before(limit: Instant, t: Instant, now: Instant, jitter: crate::Jitter, rand: u32) -> Instant {
    if limit <= now || t <= limit {
        return t;
    }
    let spread = match jitter {
        crate::Jitter::Off => 0,
        _ => (limit - now).as_millis() / 2,
    };
    Instant::from_millis(limit.as_millis() - u64::from(rand) % (spread + 1))
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
