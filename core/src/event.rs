//! Every line a worker logs, as one structured type with one rendering.

use crate::render::{Render, Secs, Sink, WholeSecs, impl_render_outputs, words};
use crate::{Duration, Endpoint, Failure, Fatal, StartupError};

/// The error a running task is reported `failed` with when a graceful stop's
/// grace period runs out before it finishes.
pub const SHUTDOWN_ERROR: &str = "worker shutting down";

/// The error a claimed task is reported `failed` with when the worker has no
/// handler for its job (it was registered by another worker of the same id).
pub const NO_HANDLER_ERROR: &str = "this worker has no handler for the task's job";

/// Log level of an [`Event`]; runtimes map it onto `log` or `defmt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Level {
    /// The worker stops, or cannot start.
    Error,
    /// Something went wrong and the worker copes.
    Warn,
    /// Normal but notable.
    Info,
    /// Detail for troubleshooting.
    Debug,
}

/// Why a worker stopped. Visible to every loop at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The outage lasted longer than `max_unreachable`.
    Unreachable {
        /// The last failure seen.
        last_error: Failure,
    },
    /// The server will not serve this worker any more.
    RegistrationLost(Fatal),
    /// Registering again after a lost registration was refused.
    RegistrationRejected(Failure),
    /// The application asked the worker to stop (disconnect, signal).
    Requested,
    /// The worker could not write a request (its buffers or configuration
    /// are too small for it): retrying cannot help.
    Local {
        /// Which request.
        what: Endpoint,
        /// Why.
        error: crate::Local,
    },
}

impl Render for StopReason {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        match self {
            StopReason::Unreachable { last_error } => {
                out.words(words!("server unreachable for too long (last error: "));
                last_error.render(out);
                out.words(words!(")"));
            }
            StopReason::RegistrationLost(cause) => {
                out.words(words!("registration lost: "));
                cause.render(out);
            }
            StopReason::RegistrationRejected(error) => {
                out.words(words!("registering again was refused: "));
                error.render(out);
            }
            StopReason::Requested => out.words(words!("stop requested")),
            StopReason::Local { what, error } => {
                out.words(words!("cannot write the "));
                what.render(out);
                out.words(words!(" request: "));
                error.render(out);
            }
        }
    }
}

impl Render for Endpoint {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        out.words(match self {
            Endpoint::CreateWorker => words!("create worker"),
            Endpoint::RegisterJob => words!("register job"),
            Endpoint::Claim => words!("claim"),
            Endpoint::TaskStatus => words!("task status update"),
            Endpoint::Heartbeat => words!("heartbeat"),
            Endpoint::Disconnect => words!("disconnect"),
            Endpoint::Submit => words!("submit"),
            Endpoint::GetTask => words!("get task"),
            Endpoint::Login => words!("login"),
        });
    }
}

/// One log line. Render it with `Display` (host) or `defmt::Format`
/// (firmware, feature `defmt`): the same words either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// An outage is running (rate-limited across loops).
    OutageWarning {
        /// Time since the outage began.
        elapsed: Duration,
        /// `max_unreachable` ([`crate::Config::NO_LIMIT`]: none).
        max: Duration,
    },
    /// The server answered again after an outage.
    Recovered {
        /// How long the outage lasted.
        outage: Duration,
    },
    /// The outage lasted too long; the worker stops.
    Unreachable {
        /// `max_unreachable`.
        max: Duration,
        /// The last failure seen.
        last_error: Failure,
    },
    /// The server will not serve this worker; it stops.
    RegistrationLost {
        /// Why.
        cause: Fatal,
    },
    /// The server forgot the worker; it registers again (policy `Register`).
    Reregistering,
    /// Registered again after a lost registration.
    Reregistered,
    /// Registering again was refused; the worker stops.
    RegistrationRejected {
        /// The refusal.
        error: Failure,
    },
    /// A startup request failed and will be retried.
    StartupRetry {
        /// Which request.
        what: Endpoint,
        /// How it failed.
        error: Failure,
        /// This retry's number, from 1.
        retry: u32,
        /// How many retries are allowed.
        retries: u32,
        /// Wait before the retry.
        wait: Duration,
    },
    /// A startup request failed for good.
    StartupFailed {
        /// Which request.
        what: Endpoint,
        /// How it failed.
        error: Failure,
    },
    /// A claimed task could not be marked `running` and is skipped.
    TaskSkipped {
        /// The refusal.
        error: Failure,
    },
    /// A task's handler finished (one line per task, for operators); its
    /// outcome is delivered next.
    TaskFinished {
        /// Task id.
        task_id: &'a str,
        /// Full job name.
        job: &'a str,
        /// The task's room.
        room: &'a str,
        /// How long the handler ran.
        took: Duration,
        /// `None`: completed; the handler's error text: failed.
        error: Option<&'a str>,
    },
    /// A task outcome could not be delivered during an outage; it is kept.
    OutcomeHeld,
    /// A held task outcome was delivered after the outage.
    OutcomeDelivered,
    /// A finished task's outcome is given up: the server refused it, holds
    /// the task in another state, or stayed unreachable until the stop's
    /// time limit. One line per task: which, why, and what the server
    /// does with it.
    OutcomeGivenUp {
        /// Task id.
        task_id: &'a str,
        /// Full job name.
        job: &'a str,
        /// The task's room.
        room: &'a str,
        /// The outcome given up: `true` failed, `false` completed.
        failed: bool,
        /// Why.
        why: GiveUp,
    },
    /// A claim was refused (a 4xx that is not a lost registration): the
    /// claim loop backs off (logged at most once per log interval).
    ClaimRefused {
        /// The refusal.
        error: Failure,
        /// When it claims again.
        retry_in: Duration,
    },
    /// A claim answered with a task this worker already runs or has just
    /// finished (an answer delivered twice): not started again; the claim
    /// is ambiguous (its own answer is lost), so the worker registers
    /// afresh.
    ClaimRepeated,
    /// The token was refused (401, e.g. expired); the credentials are
    /// renewed.
    CredentialsExpired,
    /// The credentials were renewed; the worker carries on.
    CredentialsRenewed,
    /// The token file cannot be read or holds no valid token.
    TokenFileUnusable {
        /// Why (never the token).
        why: &'a str,
    },
    /// The application asked the worker to stop.
    StopRequested,
    /// Asked again while stopping: the grace period is given up and a
    /// running task abandoned.
    StopNow,
    /// The worker was created and its jobs registered.
    Registered {
        /// Its id on the server.
        worker_id: &'a str,
        /// How many jobs it serves.
        jobs: u32,
    },
    /// The worker was deleted from the server on the way out.
    Disconnected {
        /// Its id.
        worker_id: &'a str,
    },
    /// Deleting the worker on the way out failed (the server removes stale
    /// workers by itself).
    DisconnectFailed {
        /// Its id.
        worker_id: &'a str,
        /// How it failed.
        error: Failure,
    },
    /// A request met a connection closed before any answer (a keep-alive
    /// connection the server had closed); it goes once more, on a fresh one.
    StaleConnection {
        /// Which request.
        what: Endpoint,
    },
    /// A claim's answer was lost after the server may have acted on it: a
    /// task may be claimed under this worker's id without its knowledge.
    ClaimAnswerLost {
        /// How the claim failed.
        error: Failure,
    },
    /// Registered afresh after a lost claim answer; the old id is deleted
    /// next so the server fails whatever it held.
    RegisteredAfresh,
    /// The worker id given up after a lost claim answer was deleted.
    RetiredOldWorker,
    /// The old worker id could not be deleted; the server's sweeper fails
    /// its tasks once its heartbeats are stale.
    RetireFailed {
        /// How it failed.
        error: Failure,
    },
    /// A task update refused with 409 had in fact been applied by an
    /// earlier attempt whose answer was lost.
    UpdateAlreadyApplied {
        /// The status the server holds.
        status: crate::protocol::TaskStatus,
    },
    /// The server explained a refusal (the `detail` of its problem+json).
    ServerSaid {
        /// Which request.
        what: Endpoint,
        /// The status it answered.
        status: u16,
        /// Its explanation, as sent.
        detail: &'a str,
    },
    /// The words of a transport failure, below what the core classifies.
    TransportDetail {
        /// The error text (never holds the token).
        error: &'a str,
    },
    /// What the worker did, when it stops.
    Summary {
        /// Tasks whose handler succeeded.
        completed: u64,
        /// Tasks whose handler failed.
        failed: u64,
        /// Outcomes the server has (delivered, or found applied already).
        delivered: u64,
        /// Outcomes given up ([`Event::OutcomeGivenUp`]).
        given_up: u64,
        /// Requests sent.
        requests: u64,
        /// Requests that failed.
        failed_requests: u64,
        /// Outages survived.
        outages: u64,
    },
    /// A signal reached a host worker: it stops (a second stop signal stops
    /// at once), or it is ignored (a signal whose default would kill the
    /// worker outright, leaving its commands and tasks behind).
    Signal {
        /// Its name (`SIGHUP`).
        name: &'a str,
        /// It stops the worker.
        stops: bool,
    },
    /// The host could not listen for SIGINT/SIGTERM.
    SignalsUnavailable,
    /// The worker could not write a request; it stops
    /// ([`StopReason::Local`]).
    LocalError {
        /// Which request.
        what: Endpoint,
        /// Why.
        error: crate::Local,
    },
    /// What a task's program printed (hosts running external commands).
    TaskOutput {
        /// The output, trimmed.
        output: &'a str,
    },
    /// A long-lived handler process announced itself ready (hosts,
    /// `--serve`).
    HandlerReady {
        /// The job it serves.
        job: &'a str,
        /// Its process id.
        pid: u32,
        /// From its start until it was ready.
        took: Duration,
    },
    /// A handler process ended unplanned, or was replaced; a fresh one
    /// starts after `restart_in` ([`crate::respawn`]).
    HandlerEnded {
        /// The job it served.
        job: &'a str,
        /// Its process id.
        pid: u32,
        /// Why (exit status, a protocol fault, …; never holds the token).
        why: &'a str,
        /// When the next process starts.
        restart_in: Duration,
    },
    /// A handler process served its task limit and is replaced.
    HandlerRecycled {
        /// The job it served.
        job: &'a str,
        /// Its process id.
        pid: u32,
        /// The tasks it served.
        tasks: u32,
    },
    /// A job's handler cannot be started again: the worker stops.
    HandlerGaveUp {
        /// The job.
        job: &'a str,
        /// The starts that failed in a row.
        failed_starts: u32,
        /// Why the last one failed.
        why: &'a str,
    },
    /// A line a handler process wrote to stderr.
    HandlerOutput {
        /// The job it serves.
        job: &'a str,
        /// The task it was running (empty: between tasks).
        task_id: &'a str,
        /// The line, without its end.
        line: &'a str,
    },
    /// Task-available push is connected and listens for every job
    /// ([`crate::push`]).
    PushConnected {
        /// Jobs listened for.
        jobs: u32,
        /// How long an empty claim now waits.
        poll: Duration,
    },
    /// The push connection failed or was lost; the worker polls meanwhile.
    /// Not a server outage.
    PushDown {
        /// Why (never holds the token).
        why: &'a str,
        /// It had been connected (info); a failed attempt is debug.
        was_up: bool,
        /// When it tries again.
        retry_in: Duration,
    },
    /// The server offers no push: the worker polls (at debug level: the
    /// automatic choice).
    PushUnavailable,
    /// What the push connection did, for troubleshooting: a packet sent or
    /// received, in the runtime's words (never the token).
    PushTrace {
        /// What happened.
        detail: &'a str,
    },
    /// A `task_available` push event without its job, room and task: not
    /// ZnDraw's; skipped (the claim loop's polling still finds the task).
    PushMalformed,
    /// A supervised worker (a device) starts again after it stopped by
    /// itself.
    Restarting {
        /// Why it stopped.
        why: Stopped,
        /// How long it waits first.
        wait: Duration,
        /// Restarts so far, this one included.
        restart: u32,
    },
}

/// Why a supervised worker is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It could not start: registering failed for good.
    Startup(StartupError),
    /// It stopped by itself (an outage longer than `max_unreachable`, the
    /// registration lost).
    Stop(StopReason),
}

impl Render for Stopped {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        match self {
            Stopped::Startup(e) => {
                out.words(words!("could not start: "));
                e.render(out);
            }
            Stopped::Stop(reason) => {
                out.words(words!("stopped: "));
                reason.render(out);
            }
        }
    }
}

/// Why a finished task's outcome was given up ([`Event::OutcomeGivenUp`]),
/// which says what the server does with the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum GiveUp {
    /// The server answered the update (or its check) with a refusal: a
    /// 4xx (the task is gone, or the request is wrong), a refused token.
    /// It keeps the task as it is (a refused token: as the server's
    /// sweeper leaves it).
    Refused(Failure),
    /// Refused with 409, and the server holds the task in this state (it
    /// was cancelled, or failed "Worker disconnected", meanwhile).
    Holds(crate::protocol::TaskStatus),
    /// The server stayed unreachable (this last failure) until a stop's
    /// time limit: the server fails the task ("Worker disconnected") once it
    /// deletes this worker or its heartbeats are stale.
    Unreachable(Failure),
    /// The worker stopped (an outage too long, a lost registration, a
    /// stop's hard limit) before the outcome could go out.
    Stopped,
}

impl Render for GiveUp {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        match self {
            GiveUp::Refused(error) => {
                out.words(words!("the server refused it ("));
                error.render(out);
                out.words(words!("); the server keeps the task as it is"));
            }
            GiveUp::Holds(status) => {
                out.words(words!("the server holds the task as "));
                out.text(status.as_str());
                out.words(words!(" already"));
            }
            GiveUp::Unreachable(error) => {
                out.words(words!("the server was still unreachable at the stop's time limit ("));
                error.render(out);
                out.words(words!(
                    "); the server fails the task (\"Worker disconnected\") once it deletes this worker or its heartbeats are stale"
                ));
            }
            GiveUp::Stopped => out.words(words!(
                "the worker stopped first; the server fails the task (\"Worker disconnected\") once it deletes this worker or its heartbeats are stale"
            )),
        }
    }
}

/// The level of the server's explanation of a refusal: a 4xx is the
/// operator's to read (warn); a 5xx is part of an outage, which has its
/// own lines, and a refused claim has its own throttled line (debug).
const fn said_level(what: Endpoint, status: u16) -> Level {
    match (what, status) {
        (Endpoint::Claim, 401 | 403 | 404) => Level::Warn,
        (Endpoint::Claim, _) => Level::Debug,
        (_, 0..500) => Level::Warn,
        _ => Level::Debug,
    }
}

impl Event<'_> {
    /// The level to log this event at.
    pub const fn level(&self) -> Level {
        match self {
            Event::Unreachable { .. }
            | Event::RegistrationLost { .. }
            | Event::RegistrationRejected { .. }
            | Event::StartupFailed { .. }
            | Event::LocalError { .. } => Level::Error,
            Event::OutageWarning { .. }
            | Event::Reregistering
            | Event::StartupRetry { .. }
            | Event::TaskSkipped { .. }
            | Event::TaskFinished { error: Some(_), .. }
            | Event::OutcomeGivenUp { .. }
            | Event::ClaimRefused { .. }
            | Event::ClaimRepeated => Level::Warn,
            Event::Recovered { .. }
            | Event::TaskFinished { error: None, .. }
            | Event::Reregistered
            | Event::OutcomeHeld
            | Event::OutcomeDelivered
            | Event::StopRequested
            | Event::Registered { .. }
            | Event::Disconnected { .. }
            | Event::Summary { .. } => Level::Info,
            Event::Signal { stops: true, .. } => Level::Info,
            Event::SignalsUnavailable
            | Event::Signal { .. }
            | Event::ClaimAnswerLost { .. }
            | Event::RetireFailed { .. }
            | Event::StopNow
            | Event::TokenFileUnusable { .. } => Level::Warn,
            Event::RegisteredAfresh | Event::RetiredOldWorker | Event::CredentialsExpired => Level::Info,
            Event::CredentialsRenewed | Event::TransportDetail { .. } => Level::Debug,
            Event::ServerSaid { what, status, .. } => said_level(*what, *status),
            Event::UpdateAlreadyApplied { .. } => Level::Debug,
            Event::DisconnectFailed { .. } | Event::StaleConnection { .. } | Event::TaskOutput { .. } => {
                Level::Debug
            }
            Event::PushConnected { .. } | Event::PushDown { was_up: true, .. } => Level::Info,
            Event::PushDown { .. } | Event::PushUnavailable | Event::PushTrace { .. } => Level::Debug,
            Event::PushMalformed | Event::Restarting { .. } => Level::Warn,
            Event::HandlerReady { .. } | Event::HandlerRecycled { .. } => Level::Info,
            Event::HandlerEnded { .. } => Level::Warn,
            Event::HandlerGaveUp { .. } => Level::Error,
            Event::HandlerOutput { .. } => Level::Debug,
        }
    }
}

/// Which events a rendering keeps: a set of these bits, a const parameter
/// of [`Only`]. An event is kept when its level's bit is in the set, and,
/// if only a host ever logs it (the command's output, the summary, a
/// signal, a token file, the server's `detail`, a transport's words), when
/// [`keep::HOST`] is too.
pub mod keep {
    /// [`super::Level::Error`] events.
    pub const ERROR: u8 = 1;
    /// [`super::Level::Warn`] events.
    pub const WARN: u8 = 2;
    /// [`super::Level::Info`] events.
    pub const INFO: u8 = 4;
    /// [`super::Level::Debug`] events.
    pub const DEBUG: u8 = 8;
    /// Events only a host logs.
    pub const HOST: u8 = 16;
    /// Every event (what `Display` renders).
    pub const ALL: u8 = ERROR | WARN | INFO | DEBUG | HOST;
}

/// Is an event of `level` (`host`: only a host logs it) kept by `keep`?
/// Always inlined, so that with a constant `keep` every arm of
/// [`Event::render_kept`] a build does not keep folds away.
#[inline(always)]
const fn kept(keep: u8, level: Level, host: bool) -> bool {
    let bit = match level {
        Level::Error => keep::ERROR,
        Level::Warn => keep::WARN,
        Level::Info => keep::INFO,
        Level::Debug => keep::DEBUG,
    };
    keep & bit != 0 && (!host || keep & keep::HOST != 0)
}

/// An [`Event`] rendered only if [`keep`] bits `KEEP` keep it (else
/// nothing), through `Display` or `defmt::Format` like the event itself.
///
/// For a logger that drops levels at compile time (defmt's `DEFMT_LOG`): a
/// device that logs each event with `Only::<{ keep::WARN }>(&event)` at
/// warn level, and so on, carries in flash only the words of the levels it
/// logs and none of the host's. Every line reads as `Display` renders it.
///
/// ```
/// use outage_core::{Duration, Event, Only, keep};
/// let e = Event::Recovered { outage: Duration::from_secs(3) };
/// assert_eq!(Only::<{ keep::INFO }>(&e).to_string(), "Server reachable again after 3s");
/// assert_eq!(Only::<{ keep::WARN }>(&e).to_string(), "");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Only<'e, 'a, const KEEP: u8>(pub &'e Event<'a>);

impl<const KEEP: u8> Render for Only<'_, '_, KEEP> {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        self.0.render_kept::<S, KEEP>(out);
    }
}

impl<const KEEP: u8> core::fmt::Display for Only<'_, '_, KEEP> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        crate::render::display(self, f)
    }
}

#[cfg(feature = "defmt")]
impl<const KEEP: u8> defmt::Format for Only<'_, '_, KEEP> {
    fn format(&self, f: defmt::Formatter<'_>) {
        self.render(&mut crate::render::DefmtSink { f });
    }
}

impl Render for Event<'_> {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        self.render_kept::<S, { keep::ALL }>(out);
    }
}

impl Event<'_> {
    /// The rendering, if `KEEP` keeps this event (see [`Only`]).
    fn render_kept<S: Sink + ?Sized, const KEEP: u8>(&self, out: &mut S) {
        match *self {
            Event::OutageWarning { elapsed, max } if kept(KEEP, Level::Warn, false) => {
                out.words(words!("Server unreachable — retrying ("));
                WholeSecs(elapsed).render(out);
                if max == crate::Config::NO_LIMIT {
                    out.words(words!(" elapsed, no limit)"));
                } else {
                    out.words(words!("/"));
                    Secs(max).render(out);
                    out.words(words!(" elapsed)"));
                }
            }
            Event::Recovered { outage } if kept(KEEP, Level::Info, false) => {
                out.words(words!("Server reachable again after "));
                WholeSecs(outage).render(out);
            }
            Event::Unreachable { max, last_error } if kept(KEEP, Level::Error, false) => {
                out.words(words!("Server unreachable for >"));
                Secs(max).render(out);
                out.words(words!(", shutting down. Last error: "));
                last_error.render(out);
            }
            Event::RegistrationLost { cause } if kept(KEEP, Level::Error, false) => {
                out.words(words!("Registration lost, shutting down: "));
                cause.render(out);
            }
            Event::Reregistering if kept(KEEP, Level::Warn, false) => {
                out.words(words!("Registration lost: "));
                Fatal::WorkerUnknown.render(out);
                out.words(words!("; registering again"));
            }
            Event::Reregistered if kept(KEEP, Level::Info, false) => out.words(words!("Registered again; serving")),
            Event::RegistrationRejected { error } if kept(KEEP, Level::Error, false) => {
                out.words(words!("Registering again failed, shutting down: "));
                error.render(out);
            }
            Event::StartupRetry {
                what,
                error,
                retry,
                retries,
                wait,
            } if kept(KEEP, Level::Warn, false) => {
                out.words(words!("Startup: "));
                what.render(out);
                out.words(words!(" failed ("));
                error.render(out);
                out.words(words!("); retry "));
                out.num(u64::from(retry));
                out.words(words!("/"));
                out.num(u64::from(retries));
                out.words(words!(" in "));
                Secs(wait).render(out);
            }
            Event::StartupFailed { what, error } if kept(KEEP, Level::Error, false) => {
                out.words(words!("Startup: "));
                what.render(out);
                out.words(words!(" failed, giving up: "));
                error.render(out);
            }
            Event::TaskSkipped { error } if kept(KEEP, Level::Warn, false) => {
                out.words(words!("Could not mark the claimed task running ("));
                error.render(out);
                out.words(words!("); skipping it"));
            }
            Event::TaskFinished {
                task_id,
                job,
                room,
                took,
                error,
            } if kept(KEEP, if error.is_some() { Level::Warn } else { Level::Info }, false) => {
                out.words(words!("Task "));
                out.value(task_id);
                out.words(words!(" ("));
                out.value(job);
                out.words(words!(", room "));
                out.value(room);
                match error {
                    None => {
                        out.words(words!(") completed in "));
                        crate::render::Took(took).render(out);
                    }
                    Some(error) => {
                        out.words(words!(") failed after "));
                        crate::render::Took(took).render(out);
                        out.words(words!(": "));
                        out.value(error);
                    }
                }
            }
            Event::OutcomeHeld if kept(KEEP, Level::Info, false) => out.words(words!("Task outcome held until the server is reachable again")),
            Event::OutcomeDelivered if kept(KEEP, Level::Info, false) => out.words(words!("Delivered the task outcome held during the outage")),
            Event::OutcomeGivenUp {
                task_id,
                job,
                room,
                failed,
                why,
            } if kept(KEEP, Level::Warn, false) => {
                out.words(words!("Gave up the outcome of task "));
                out.value(task_id);
                out.words(words!(" ("));
                out.value(job);
                out.words(words!(", room "));
                out.value(room);
                out.words(if failed { words!(", failed): ") } else { words!(", completed): ") });
                why.render(out);
            }
            Event::ClaimRefused { error, retry_in } if kept(KEEP, Level::Warn, false) => {
                out.words(words!("The server refused the claim ("));
                error.render(out);
                out.words(words!("); backing off while it refuses, claiming again in "));
                Secs(retry_in).render(out);
            }
            Event::ClaimRepeated if kept(KEEP, Level::Warn, false) => out.words(words!(
                "A claim answered with a task this worker already runs or has finished (an answer delivered twice): not starting it again; its own answer is lost, so a task may be held under this worker id: registering afresh once no task of this id runs"
            )),
            Event::StopRequested if kept(KEEP, Level::Info, false) => out.words(words!("Stop requested, shutting down")),
            Event::CredentialsExpired if kept(KEEP, Level::Info, false) => out.words(words!("Token refused (HTTP 401): renewing the credentials")),
            Event::CredentialsRenewed if kept(KEEP, Level::Debug, false) => out.words(words!("Credentials renewed; serving")),
            Event::ServerSaid { what, status, detail } if kept(KEEP, said_level(what, status), true) => {
                out.words(words!("The server refused the "));
                what.render(out);
                out.words(words!(" (HTTP "));
                out.num(u64::from(status));
                out.words(words!("): "));
                out.value(detail);
            }
            Event::Summary {
                completed,
                failed,
                delivered,
                given_up,
                requests,
                failed_requests,
                outages,
            } if kept(KEEP, Level::Info, true) => {
                out.words(words!("Summary: "));
                out.num(completed);
                out.words(words!(" tasks completed, "));
                out.num(failed);
                out.words(words!(" failed; "));
                out.num(delivered);
                out.words(words!(" outcomes delivered, "));
                out.num(given_up);
                out.words(words!(" given up; "));
                out.num(requests);
                out.words(words!(" requests, "));
                out.num(failed_requests);
                out.words(words!(" failed; "));
                out.num(outages);
                out.words(words!(" outages survived"));
            }
            Event::TransportDetail { error } if kept(KEEP, Level::Debug, true) => {
                out.words(words!("Request failed: "));
                out.value(error);
            }
            Event::TokenFileUnusable { why } if kept(KEEP, Level::Warn, true) => {
                out.words(words!("Cannot renew the token: "));
                out.value(why);
            }
            Event::StopNow if kept(KEEP, Level::Warn, false) => out.words(words!("Asked again: stopping now, the running task is abandoned")),
            Event::Registered { worker_id, jobs } if kept(KEEP, Level::Info, false) => {
                out.words(words!("Registered as worker "));
                out.value(worker_id);
                out.words(words!(" ("));
                out.num(u64::from(jobs));
                out.words(if jobs == 1 { words!(" job)") } else { words!(" jobs)") });
            }
            Event::Disconnected { worker_id } if kept(KEEP, Level::Info, false) => {
                out.words(words!("Worker "));
                out.value(worker_id);
                out.words(words!(" deleted from the server"));
            }
            Event::DisconnectFailed { worker_id, error } if kept(KEEP, Level::Debug, false) => {
                out.words(words!("Could not delete worker "));
                out.value(worker_id);
                out.words(words!(" from the server: "));
                error.render(out);
            }
            Event::StaleConnection { what } if kept(KEEP, Level::Debug, false) => {
                what.render(out);
                out.words(words!(": connection closed before an answer; sending again on a fresh one"));
            }
            // Only a host has token files.
            Event::LocalError {
                error: crate::Local::TokenFile,
                ..
            } if kept(KEEP, Level::Error, true) => out.words(words!(
                "Cannot renew the token: the token file is unusable, shutting down (fix it and start the worker again)"
            )),
            Event::LocalError { what, error } if kept(KEEP, Level::Error, false) => {
                out.words(words!("Cannot write the "));
                what.render(out);
                out.words(words!(" request ("));
                error.render(out);
                out.words(match error {
                    crate::Local::Encoding => words!("), shutting down"),
                    _ => words!("), shutting down: a worker setting is too small for it"),
                });
            }
            Event::Signal { name, stops } if kept(KEEP, if stops { Level::Info } else { Level::Warn }, true) => {
                out.value(name);
                out.words(if stops {
                    words!(" received: stopping (a second stop signal stops at once)")
                } else {
                    words!(" received: ignored (SIGTERM or SIGINT stops the worker)")
                });
            }
            Event::SignalsUnavailable if kept(KEEP, Level::Warn, true) => {
                out.words(words!("Cannot listen for SIGINT/SIGTERM; running until the worker stops by itself"))
            }
            Event::ClaimAnswerLost { error } if kept(KEEP, Level::Warn, false) => {
                out.words(words!("Claim answer lost ("));
                error.render(out);
                out.words(words!("); a task may be held under this worker id: registering afresh once the server answers"));
            }
            Event::RegisteredAfresh if kept(KEEP, Level::Info, false) => {
                out.words(words!("Registered afresh after a lost claim answer; deleting the old worker id so the server fails any task it held"))
            }
            Event::RetiredOldWorker if kept(KEEP, Level::Info, false) => out.words(words!("Old worker id deleted; serving")),
            Event::RetireFailed { error } if kept(KEEP, Level::Warn, false) => {
                out.words(words!("Could not delete the old worker id ("));
                error.render(out);
                out.words(words!("); the server fails its tasks once its heartbeats are stale"));
            }
            Event::UpdateAlreadyApplied { status } if kept(KEEP, Level::Debug, false) => {
                out.words(words!("Task was already "));
                out.text(status.as_str());
                out.words(words!(" on the server (an earlier update's answer was lost)"));
            }
            Event::TaskOutput { output } if kept(KEEP, Level::Debug, true) => {
                out.words(words!("Task output: "));
                out.value(output);
            }
            Event::PushConnected { jobs, poll } if kept(KEEP, Level::Info, true) => {
                out.words(words!("Push connected: claiming when a task is submitted ("));
                out.num(u64::from(jobs));
                out.words(if jobs == 1 { words!(" job") } else { words!(" jobs") });
                out.words(words!(", polling every "));
                Secs(poll).render(out);
                out.words(words!(" meanwhile)"));
            }
            Event::PushDown { why, was_up, retry_in }
                if kept(KEEP, if was_up { Level::Info } else { Level::Debug }, true) =>
            {
                out.words(if was_up { words!("Push connection lost (") } else { words!("Push unavailable (") });
                out.value(why);
                out.words(words!("); polling, reconnecting in "));
                Secs(retry_in).render(out);
            }
            Event::PushUnavailable if kept(KEEP, Level::Debug, true) => {
                out.words(words!("The server offers no push: polling"));
            }
            Event::PushTrace { detail } if kept(KEEP, Level::Debug, true) => {
                out.words(words!("Push: "));
                out.value(detail);
            }
            Event::PushMalformed if kept(KEEP, Level::Warn, true) => {
                out.words(words!(
                    "Push: a task_available event without job_name, room_id and task_id; skipped"
                ));
            }
            Event::HandlerReady { job, pid, took } if kept(KEEP, Level::Info, true) => {
                out.words(words!("Handler for "));
                out.value(job);
                out.words(words!(" ready (pid "));
                out.num(u64::from(pid));
                out.words(words!(", after "));
                Secs(took).render(out);
                out.words(words!(")"));
            }
            Event::HandlerEnded {
                job,
                pid,
                why,
                restart_in,
            } if kept(KEEP, Level::Warn, true) => {
                out.words(words!("Handler for "));
                out.value(job);
                out.words(words!(" (pid "));
                out.num(u64::from(pid));
                out.words(words!(") ended: "));
                out.value(why);
                out.words(words!("; a fresh one starts in "));
                Secs(restart_in).render(out);
            }
            Event::HandlerRecycled { job, pid, tasks } if kept(KEEP, Level::Info, true) => {
                out.words(words!("Handler for "));
                out.value(job);
                out.words(words!(" (pid "));
                out.num(u64::from(pid));
                out.words(words!(") served "));
                out.num(u64::from(tasks));
                out.words(words!(" tasks, its limit: replaced by a fresh one"));
            }
            Event::HandlerGaveUp {
                job,
                failed_starts,
                why,
            } if kept(KEEP, Level::Error, true) => {
                out.words(words!("Handler for "));
                out.value(job);
                out.words(words!(" cannot be started ("));
                out.num(u64::from(failed_starts));
                out.words(if failed_starts == 1 {
                    words!(" start failed: ")
                } else {
                    words!(" starts in a row failed: ")
                });
                out.value(why);
                out.words(words!("); stopping"));
            }
            Event::HandlerOutput { job, task_id, line } if kept(KEEP, Level::Debug, true) => {
                out.words(words!("Handler output ("));
                out.value(job);
                if !task_id.is_empty() {
                    out.words(words!(", task "));
                    out.value(task_id);
                }
                out.words(words!("): "));
                out.value(line);
            }
            Event::Restarting { why, wait, restart } if kept(KEEP, Level::Warn, false) => {
                out.words(words!("Worker "));
                why.render(out);
                out.words(words!("; starting again in "));
                Secs(wait).render(out);
                out.words(words!(" (restart "));
                out.num(u64::from(restart));
                out.words(words!(")"));
            }
            _ => {}
        }
    }
}

impl_render_outputs!(StopReason, Stopped, Endpoint, Event<'_>);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::Transport;
    use std::string::{String, ToString};

    /// A supervised device's restart line, the same words it had when the
    /// embassy runtime wrote it itself.
    #[test]
    fn restart_lines() {
        let refused = Failure::Transport(Transport::ConnectionRefused);
        let e = Event::Restarting {
            why: Stopped::Stop(StopReason::Unreachable { last_error: refused }),
            wait: Duration::from_millis(7_500),
            restart: 3,
        };
        assert_eq!(e.level(), Level::Warn);
        assert_eq!(
            e.to_string(),
            "Worker stopped: server unreachable for too long (last error: Connection refused); \
             starting again in 7.5s (restart 3)"
        );
        let startup = StartupError {
            what: Endpoint::CreateWorker,
            error: refused,
            retries: 5,
        };
        let e = Event::Restarting {
            why: Stopped::Startup(startup),
            wait: Duration::from_secs(60),
            restart: 9,
        };
        assert_eq!(
            e.to_string(),
            std::format!("Worker could not start: {startup}; starting again in 60s (restart 9)")
        );
    }

    /// Golden texts from the reference worker.
    #[test]
    fn golden_outage_warning() {
        let e = Event::OutageWarning {
            elapsed: Duration::from_millis(30_400),
            max: Duration::from_secs(120),
        };
        assert_eq!(e.to_string(), "Server unreachable — retrying (30s/120s elapsed)");
        assert_eq!(e.level(), Level::Warn);
        let e = Event::OutageWarning {
            elapsed: Duration::from_millis(30_400),
            max: crate::Config::NO_LIMIT,
        };
        assert_eq!(
            e.to_string(),
            "Server unreachable — retrying (30s elapsed, no limit)"
        );
    }

    #[test]
    fn golden_unreachable_shutdown() {
        let e = Event::Unreachable {
            max: Duration::from_secs(120),
            last_error: Failure::Transport(Transport::ConnectionRefused),
        };
        assert_eq!(
            e.to_string(),
            "Server unreachable for >120s, shutting down. Last error: Connection refused"
        );
        assert_eq!(e.level(), Level::Error);
    }

    #[test]
    fn registration_lost_keeps_the_reference_words() {
        let e = Event::RegistrationLost {
            cause: Fatal::WorkerUnknown,
        };
        assert!(e.to_string().starts_with("Registration lost, shutting down"));
        let e = Event::RegistrationLost {
            cause: Fatal::AuthRefused { status: 401 },
        };
        assert_eq!(
            e.to_string(),
            "Registration lost, shutting down: the server refused the token (HTTP 401)"
        );
    }

    /// A sink that records pieces: the same pieces feed `defmt`.
    #[derive(Default)]
    struct Pieces(String);
    impl Sink for Pieces {
        fn text(&mut self, s: &str) {
            self.0.push_str(s);
        }
        fn num(&mut self, n: u64) {
            self.0.push_str(&n.to_string());
        }
    }

    #[test]
    fn every_event_renders_the_same_through_any_sink() {
        let refused = Failure::Transport(Transport::ConnectionRefused);
        let events = [
            Event::OutageWarning {
                elapsed: Duration::from_secs(5),
                max: Duration::from_secs(120),
            },
            Event::OutageWarning {
                elapsed: Duration::from_secs(5),
                max: crate::Config::NO_LIMIT,
            },
            Event::Recovered {
                outage: Duration::from_secs(42),
            },
            Event::Unreachable {
                max: Duration::from_secs(120),
                last_error: refused,
            },
            Event::RegistrationLost {
                cause: Fatal::WorkerUnknown,
            },
            Event::Reregistering,
            Event::Reregistered,
            Event::RegistrationRejected {
                error: Failure::status(409),
            },
            Event::StartupRetry {
                what: Endpoint::CreateWorker,
                error: refused,
                retry: 1,
                retries: 5,
                wait: Duration::from_millis(1_400),
            },
            Event::StartupFailed {
                what: Endpoint::RegisterJob,
                error: Failure::status(409),
            },
            Event::TaskSkipped {
                error: Failure::status(409),
            },
            Event::TaskFinished {
                task_id: "t-1",
                job: "@global:modifiers:Echo",
                room: "room1",
                took: Duration::from_millis(1_250),
                error: Some("exit status 2: boom"),
            },
            Event::TaskFinished {
                task_id: "t-1",
                job: "@global:modifiers:Echo",
                room: "room1",
                took: Duration::from_millis(30),
                error: None,
            },
            Event::ClaimAnswerLost {
                error: Failure::Transport(Transport::Timeout),
            },
            Event::RegisteredAfresh,
            Event::RetiredOldWorker,
            Event::RetireFailed { error: refused },
            Event::UpdateAlreadyApplied {
                status: crate::protocol::TaskStatus::Running,
            },
            Event::CredentialsExpired,
            Event::CredentialsRenewed,
            Event::TokenFileUnusable {
                why: "cannot read /run/token: No such file or directory",
            },
            Event::StopNow,
            Event::ServerSaid {
                what: Endpoint::RegisterJob,
                status: 400,
                detail: "Category 'compute' not in allowed list",
            },
            Event::TransportDetail {
                error: "connection refused",
            },
            Event::Summary {
                completed: 12,
                failed: 1,
                delivered: 12,
                given_up: 1,
                requests: 340,
                failed_requests: 5,
                outages: 2,
            },
            Event::OutcomeHeld,
            Event::OutcomeDelivered,
            Event::OutcomeGivenUp {
                task_id: "t-1",
                job: "@global:modifiers:Echo",
                room: "room1",
                failed: false,
                why: GiveUp::Unreachable(refused),
            },
            Event::OutcomeGivenUp {
                task_id: "t-2",
                job: "@global:modifiers:Echo",
                room: "room1",
                failed: true,
                why: GiveUp::Holds(crate::protocol::TaskStatus::Cancelled),
            },
            Event::OutcomeGivenUp {
                task_id: "t-3",
                job: "@global:modifiers:Echo",
                room: "room1",
                failed: false,
                why: GiveUp::Refused(Failure::status(404)),
            },
            Event::OutcomeGivenUp {
                task_id: "t-4",
                job: "@global:modifiers:Echo",
                room: "room1",
                failed: false,
                why: GiveUp::Stopped,
            },
            Event::ClaimRefused {
                error: Failure::status(308),
                retry_in: Duration::from_secs(4),
            },
            Event::ClaimRepeated,
            Event::StopRequested,
            Event::Registered {
                worker_id: "w-1",
                jobs: 2,
            },
            Event::Disconnected { worker_id: "w-1" },
            Event::DisconnectFailed {
                worker_id: "w-1",
                error: refused,
            },
            Event::StaleConnection {
                what: Endpoint::Heartbeat,
            },
            Event::SignalsUnavailable,
            Event::LocalError {
                what: Endpoint::Claim,
                error: crate::Local::BodyTooLarge,
            },
            Event::TaskOutput { output: "42" },
            Event::PushConnected {
                jobs: 2,
                poll: Duration::from_secs(30),
            },
            Event::PushDown {
                why: "push connection closed: the connection ended without a WebSocket close",
                was_up: true,
                retry_in: Duration::from_millis(1_400),
            },
            Event::PushDown {
                why: "cannot connect for push: Connection refused",
                was_up: false,
                retry_in: Duration::from_secs(4),
            },
            Event::PushUnavailable,
            Event::PushTrace {
                detail: "received ack 3",
            },
            Event::PushMalformed,
            Event::Signal {
                name: "SIGHUP",
                stops: true,
            },
            Event::Signal {
                name: "SIGUSR1",
                stops: false,
            },
            Event::Restarting {
                why: Stopped::Stop(StopReason::Unreachable { last_error: refused }),
                wait: Duration::from_secs(5),
                restart: 1,
            },
            Event::HandlerReady {
                job: "@global:modifiers:Shift",
                pid: 4242,
                took: Duration::from_millis(1_250),
            },
            Event::HandlerEnded {
                job: "@global:modifiers:Shift",
                pid: 4242,
                why: "exit status 1 while running task t-1: ValueError: boom",
                restart_in: Duration::from_millis(500),
            },
            Event::HandlerRecycled {
                job: "@global:modifiers:Shift",
                pid: 4242,
                tasks: 100,
            },
            Event::HandlerGaveUp {
                job: "@global:modifiers:Shift",
                failed_starts: 5,
                why: "exit status 1 before it was ready",
            },
            Event::HandlerOutput {
                job: "@global:modifiers:Shift",
                task_id: "t-1",
                line: "hello from user code",
            },
            Event::HandlerOutput {
                job: "@global:modifiers:Shift",
                task_id: "",
                line: "loading the model",
            },
        ];
        for e in events {
            let mut p = Pieces::default();
            e.render(&mut p);
            let shown = e.to_string();
            assert_eq!(p.0, shown);
            let mut fixed: heapless::String<400> = heapless::String::new();
            e.render(&mut fixed);
            assert_eq!(fixed.as_str(), shown);
            assert!(
                !shown.contains("{") && !shown.contains("Some(") && !shown.contains("::"),
                "{shown}"
            );
        }
        // `Only` keeps exactly the events of its levels, and the host's
        // only with `keep::HOST`; what it keeps reads as `Display`.
        fn only<const K: u8>(e: &Event<'_>) -> String {
            Only::<K>(e).to_string()
        }
        for e in &events {
            let host_only = matches!(
                e,
                Event::ServerSaid { .. }
                    | Event::Summary { .. }
                    | Event::TransportDetail { .. }
                    | Event::TokenFileUnusable { .. }
                    | Event::SignalsUnavailable
                    | Event::Signal { .. }
                    | Event::TaskOutput { .. }
                    | Event::PushConnected { .. }
                    | Event::PushDown { .. }
                    | Event::PushUnavailable
                    | Event::PushTrace { .. }
                    | Event::PushMalformed
                    | Event::HandlerReady { .. }
                    | Event::HandlerEnded { .. }
                    | Event::HandlerRecycled { .. }
                    | Event::HandlerGaveUp { .. }
                    | Event::HandlerOutput { .. }
            );
            let full = e.to_string();
            let by_level = [
                (
                    Level::Error,
                    only::<{ keep::ERROR }>(e),
                    only::<{ keep::ERROR | keep::HOST }>(e),
                ),
                (
                    Level::Warn,
                    only::<{ keep::WARN }>(e),
                    only::<{ keep::WARN | keep::HOST }>(e),
                ),
                (
                    Level::Info,
                    only::<{ keep::INFO }>(e),
                    only::<{ keep::INFO | keep::HOST }>(e),
                ),
                (
                    Level::Debug,
                    only::<{ keep::DEBUG }>(e),
                    only::<{ keep::DEBUG | keep::HOST }>(e),
                ),
            ];
            for (level, device, host) in by_level {
                let mine = e.level() == level;
                assert_eq!(host, if mine { full.as_str() } else { "" }, "{level:?}: {full}");
                let kept = mine && !host_only;
                assert_eq!(device, if kept { full.as_str() } else { "" }, "{level:?}: {full}");
            }
            assert_eq!(only::<{ keep::ALL }>(e), full);
        }
        assert_eq!(
            events[8].to_string(),
            "Startup: create worker failed (Connection refused); retry 1/5 in 1.4s"
        );
        let finished: std::vec::Vec<String> = events
            .iter()
            .filter(|e| matches!(e, Event::TaskFinished { .. }))
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            finished,
            [
                "Task t-1 (@global:modifiers:Echo, room room1) failed after 1.25s: exit status 2: boom",
                "Task t-1 (@global:modifiers:Echo, room room1) completed in 30ms",
            ]
        );
    }
}
