//! The embassy worker: startup, the heartbeat and claim loops over one
//! shared [`Machine`], and stopping. No heap: every buffer is the caller's.

use core::cell::{Cell, RefCell};
use core::net::IpAddr;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};

use embassy_futures::select::{Either, Either3, Select, select, select3};
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embassy_sync::watch::Watch;
use embedded_nal_async::{Dns, TcpConnect};
use outage_core::protocol::{Route, StatusUpdate, TaskStatus};
use outage_core::{
    ClaimAction, Clock, Config, ConfigError, Endpoint, Event, Failure, HeartbeatAction, Instant, Machine,
    NO_HANDLER_ERROR, Phase, SHUTDOWN_ERROR, SplitMix64, StartupError, StartupRetry, StartupStep, Step,
    StopReason, TaskState, Wake,
};

use crate::fmt::{emit, emit_restart};
use crate::json::{self, field_span, member, string, task_span, write_string};
#[cfg(not(feature = "login"))]
use crate::net::Bearer;
use crate::net::{Exchange, Request, Server, exchange, resolve};
use crate::restart::{Restart, Stopped};

type CS = CriticalSectionRawMutex;

#[cfg(feature = "login")]
mod login;

/// Longest server URL (`http://host:port`) accepted.
pub const MAX_SERVER_URL: usize = 96;
/// Longest bearer token accepted (a ZnDraw JWT is about 200 bytes). The
/// worker keeps no copy of it: it is written into each request from the
/// caller's string.
pub const MAX_TOKEN: usize = 512;
/// Longest job name part (room, category, name) accepted.
pub const MAX_NAME: usize = 48;
/// The text a handler may give when a task fails.
pub type ErrorText = heapless::String<128>;

const ID_CAP: usize = 40;
const JOB_CAP: usize = 3 * MAX_NAME + 2;

/// The embassy-time clock, as the core's [`Clock`].
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbassyClock;

impl Clock for EmbassyClock {
    fn now(&self) -> Instant {
        Instant::from_millis(embassy_time::Instant::now().as_millis())
    }
}

fn to_embassy(t: Instant) -> embassy_time::Instant {
    embassy_time::Instant::from_millis(t.as_millis())
}

/// A job the worker serves.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// Room (`@global` needs a superuser token).
    pub room: &'a str,
    /// `modifiers`, `selections` or `analysis`.
    pub category: &'a str,
    /// Job name.
    pub name: &'a str,
    /// JSON schema of the payload, as raw JSON text (`"{}"` for none).
    pub schema: &'a str,
}

impl Job<'_> {
    /// `room:category:name` is this job (room and category hold no colon;
    /// the name is the rest).
    fn matches(&self, full_name: &str) -> bool {
        let (room, category) = (self.room.as_bytes(), self.category.as_bytes());
        let rest = full_name
            .as_bytes()
            .strip_prefix(room)
            .and_then(|r| r.strip_prefix(b":"));
        let rest = rest
            .and_then(|r| r.strip_prefix(category))
            .and_then(|r| r.strip_prefix(b":"));
        rest == Some(self.name.as_bytes()) && !room.contains(&b':') && !category.contains(&b':')
    }
}

/// A claimed task, as a handler sees it.
#[derive(Debug, Clone, Copy)]
pub struct Task<'t> {
    /// Task UUID.
    pub id: &'t str,
    /// `room:category:name`.
    pub job_name: &'t str,
    /// Room it was submitted in.
    pub room_id: &'t str,
    /// The payload, raw JSON (read it with [`crate::json`], or serde-json-core).
    pub payload: &'t [u8],
}

/// Runs tasks. `Ok` → `completed`; `Err(text)` → `failed` with that text.
///
/// A microcontroller aborts on panic, so a handler must not panic.
#[allow(async_fn_in_trait)] // embassy executors are single-threaded: no Send bound needed.
pub trait Handler {
    /// Run one task.
    async fn run(&mut self, task: Task<'_>) -> Result<(), ErrorText>;
}

/// Why a worker cannot be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SetupError {
    /// The configuration is inconsistent.
    Config(ConfigError),
    /// The server URL is not `http://…` or longer than [`MAX_SERVER_URL`].
    ServerUrl,
    /// The token is longer than [`MAX_TOKEN`].
    TokenTooLong,
    /// The token has characters a bearer token cannot hold (RFC 6750).
    Token,
    /// `Config::renew_credentials`: this worker keeps a fixed token.
    RenewUnsupported,
    /// No job, or a job name part longer than [`MAX_NAME`].
    Jobs,
    /// [`Worker::with_login`]: an empty email or password, or one longer
    /// than [`crate::login::MAX_CREDENTIAL`].
    #[cfg(feature = "login")]
    Credentials,
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SetupError::Config(e) => write!(f, "{e}"),
            SetupError::ServerUrl => write!(
                f,
                "the server URL must be http://host:port, at most {MAX_SERVER_URL} bytes"
            ),
            SetupError::TokenTooLong => write!(f, "the token is longer than {MAX_TOKEN} bytes"),
            SetupError::RenewUnsupported => {
                f.write_str("this worker keeps a fixed token: renew_credentials must be off")
            }
            SetupError::Token => f.write_str(
                "invalid token: a bearer token holds only letters, digits and -._~+/ (then = padding)",
            ),
            SetupError::Jobs => write!(f, "no job, or a job name part longer than {MAX_NAME} bytes"),
            #[cfg(feature = "login")]
            SetupError::Credentials => write!(
                f,
                "the email and the password must not be empty nor longer than {} bytes",
                crate::login::MAX_CREDENTIAL
            ),
        }
    }
}

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

/// What the worker has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// Requests sent.
    pub requests: u32,
    /// Requests retried once after meeting a closed connection.
    pub stale_connection_retries: u32,
    /// Restarts by [`Worker::supervise`].
    pub restarts: u32,
}

/// The worker: shared by its two loops (`&Worker` from `'static` storage,
/// e.g. a `static_cell`).
pub struct Worker<'a, T: TcpConnect, D: Dns> {
    tcp: &'a T,
    dns: &'a D,
    server: Server<'a>,
    token: &'a str,
    /// The server's address from the last name lookup, until a request
    /// fails below HTTP.
    address: Mutex<CS, Cell<Option<IpAddr>>>,
    jobs: &'a [Job<'a>],
    clock: EmbassyClock,
    machine: Mutex<CS, RefCell<Machine>>,
    worker_id: Mutex<CS, RefCell<heapless::String<ID_CAP>>>,
    rng: Mutex<CS, Cell<SplitMix64>>,
    wake_hb: Signal<CS, ()>,
    wake_claim: Signal<CS, ()>,
    halt_hb: Signal<CS, ()>,
    halt_claim: Signal<CS, ()>,
    halted: AtomicBool,
    live_loops: AtomicU8,
    finished: Watch<CS, bool, 4>,
    grace_deadline: Mutex<CS, Cell<Option<embassy_time::Instant>>>,
    requests: AtomicU32,
    stale_retries: AtomicU32,
    restarts: AtomicU32,
    disconnected: AtomicBool,
    /// The application asked the worker to stop: [`Worker::supervise`]
    /// returns instead of restarting.
    stop_requested: AtomicBool,
    stop: Signal<CS, ()>,
    /// [`Worker::with_login`]'s email, password and token.
    #[cfg(feature = "login")]
    login: Option<login::Credentials<'a>>,
}

/// A running claim: the task's identity and payload, kept (with its
/// outcome) through an outage.
struct Held {
    id: heapless::String<ID_CAP>,
    job_name: heapless::String<JOB_CAP>,
    room_id: heapless::String<MAX_NAME>,
    payload_len: Option<usize>,
    outcome: Option<Result<(), ErrorText>>,
}

impl Held {
    /// The status update `action` sends: `running` to start, the outcome
    /// to deliver.
    fn update(&self, action: ClaimAction) -> Option<StatusUpdate<'_>> {
        let (status, error) = match (action, &self.outcome) {
            (ClaimAction::Start, _) => (TaskStatus::Running, None),
            (ClaimAction::Deliver, Some(Ok(()))) => (TaskStatus::Completed, None),
            (ClaimAction::Deliver, Some(Err(text))) => (TaskStatus::Failed, Some(text.as_str())),
            _ => return None,
        };
        Some(StatusUpdate { status, error })
    }
}

type Id = heapless::String<ID_CAP>;

/// The JSON string at `span` of `body`, unescaped, if it fits `N` bytes.
fn json_string<const N: usize>(body: &[u8], span: core::ops::Range<usize>) -> Option<heapless::String<N>> {
    string(body.get(span)?)
}

/// A task status as JSON (`"claimed"`).
fn json_status(value: &[u8]) -> Option<TaskStatus> {
    use TaskStatus::*;
    let mut buf = [0u8; 12];
    let n = json::unescape(value, &mut buf)?;
    let name = buf.get(..n)?;
    [Pending, Claimed, Running, Completed, Failed, Cancelled]
        .into_iter()
        .find(|s| s.as_str().as_bytes() == name)
}

/// A task as `GET /tasks/{id}` and `PATCH /tasks/{id}` answer it: its
/// status, and the worker holding it (`null`: none).
fn task_info(body: &[u8]) -> Result<(TaskStatus, Option<Id>), Failure> {
    let bad = Failure::MalformedResponse;
    let status = member(body, "status").and_then(json_status).ok_or(bad)?;
    let worker = match member(body, "worker_id") {
        None | Some(b"null") => None,
        Some(v) => Some(string(v).ok_or(bad)?),
    };
    Ok((status, worker))
}

impl<'a, T: TcpConnect, D: Dns> Worker<'a, T, D> {
    /// A worker for `server` (`http://host:port`) with `token`, serving
    /// `jobs`. `seed` is entropy for the jitter (e.g. from a hardware RNG).
    pub fn new(
        tcp: &'a T,
        dns: &'a D,
        server: &'a str,
        token: &'a str,
        jobs: &'a [Job<'a>],
        config: Config,
        seed: u64,
    ) -> Result<Self, SetupError> {
        config.validate().map_err(SetupError::Config)?;
        if config.renew_credentials {
            return Err(SetupError::RenewUnsupported);
        }
        let server = match Server::parse(server) {
            Some(s) if server.len() <= MAX_SERVER_URL => s,
            _ => return Err(SetupError::ServerUrl),
        };
        if token.len() > MAX_TOKEN {
            return Err(SetupError::TokenTooLong);
        }
        if !outage_core::protocol::is_valid_token(token) {
            return Err(SetupError::Token);
        }
        let too_long = |j: &Job<'_>| {
            [j.room, j.category, j.name]
                .iter()
                .any(|p| p.len() > MAX_NAME || p.is_empty())
        };
        if jobs.is_empty() || jobs.iter().any(too_long) {
            return Err(SetupError::Jobs);
        }
        let clock = EmbassyClock;
        Ok(Worker {
            tcp,
            dns,
            server,
            token,
            address: Mutex::new(Cell::new(None)),
            jobs,
            clock,
            machine: Mutex::new(RefCell::new(
                Machine::new(config, clock.now(), 0).map_err(SetupError::Config)?,
            )),
            worker_id: Mutex::new(RefCell::new(heapless::String::new())),
            rng: Mutex::new(Cell::new(SplitMix64::new(seed))),
            wake_hb: Signal::new(),
            wake_claim: Signal::new(),
            halt_hb: Signal::new(),
            halt_claim: Signal::new(),
            halted: AtomicBool::new(false),
            live_loops: AtomicU8::new(2),
            finished: Watch::new_with(false),
            grace_deadline: Mutex::new(Cell::new(None)),
            requests: AtomicU32::new(0),
            stale_retries: AtomicU32::new(0),
            restarts: AtomicU32::new(0),
            disconnected: AtomicBool::new(false),
            stop_requested: AtomicBool::new(false),
            stop: Signal::new(),
            #[cfg(feature = "login")]
            login: None,
        })
    }

    /// The worker id on the server (empty before [`Worker::start`]).
    pub fn worker_id(&self) -> heapless::String<ID_CAP> {
        self.worker_id.lock(|w| w.borrow().clone())
    }

    /// Why the worker stopped, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.machine.lock(|m| m.borrow().stop_reason())
    }

    /// True once both loops have exited.
    pub fn is_finished(&self) -> bool {
        self.live_loops.load(Ordering::SeqCst) == 0
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            stale_connection_retries: self.stale_retries.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
        }
    }

    fn rand(&self) -> u32 {
        self.rng.lock(|cell| {
            let mut rng = cell.get();
            let r = rng.next_u32();
            cell.set(rng);
            r
        })
    }

    /// The configuration (kept once, in the core's machine). Not inside
    /// `with_machine`: the machine is borrowed there.
    fn config(&self) -> Config {
        self.with_machine(|m| *m.config())
    }

    fn with_machine<R>(&self, f: impl FnOnce(&mut Machine) -> R) -> R {
        self.machine.lock(|m| f(&mut m.borrow_mut()))
    }

    fn halt(&self) {
        self.halted.store(true, Ordering::SeqCst);
        self.halt_hb.signal(());
        self.halt_claim.signal(());
    }

    /// Log a step's events and wake whom it says.
    fn apply<A>(&self, step: &Step<A>) {
        for e in step.events.iter() {
            emit(e);
        }
        match step.wake {
            Wake::Nobody => {}
            Wake::Claim => self.wake_claim.signal(()),
            Wake::Heartbeat => self.wake_hb.signal(()),
            Wake::Everyone | Wake::Halt => {
                if step.wake == Wake::Halt {
                    self.halt();
                }
                self.wake_hb.signal(());
                self.wake_claim.signal(());
            }
        }
    }

    /// `fut`, unless the worker halts first: `Either::Second(output)`, or
    /// `Either::First(())` once halted (`fut` is then not polled at all).
    ///
    /// A plain function, not an `async fn`: an `async fn` would keep `fut`
    /// as its argument and again inside the `select`, storing every
    /// request's future twice in the loop's task.
    fn or_halt<'s, F: core::future::Future>(
        &self,
        halt: &'s Signal<CS, ()>,
        fut: F,
    ) -> Select<impl core::future::Future<Output = ()> + 's, F> {
        // A halt stays signalled for every later wait.
        select(
            async move {
                halt.wait().await;
                halt.signal(());
            },
            fut,
        )
    }

    /// Sleep until `t` or until woken; false once halted.
    async fn sleep_until(&self, t: Instant, wake: &Signal<CS, ()>, halt: &Signal<CS, ()>) -> bool {
        if self.halted.load(Ordering::SeqCst) {
            return false;
        }
        match select3(embassy_time::Timer::at(to_embassy(t)), wake.wait(), halt.wait()).await {
            Either3::Third(()) => {
                halt.signal(());
                false
            }
            _ => !self.halted.load(Ordering::SeqCst),
        }
    }

    /// One request; re-sent once on a fresh connection only where the
    /// core's [`Failure::resend_once`] says so.
    async fn call(&self, route: Route<'_>, body: Option<&[u8]>, rx: &mut [u8]) -> Result<Exchange, Failure> {
        let req = Request {
            server: &self.server,
            route,
            token: self.bearer(),
            body,
        };
        let disconnect = route.endpoint() == Endpoint::Disconnect;
        let timeout = self.with_machine(|m| match disconnect {
            true => m.config().disconnect_timeout,
            false => m.config().request_timeout,
        });
        let mut stale = false;
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let work = async {
                let ip = match self.address.lock(Cell::get) {
                    Some(ip) => ip,
                    None => {
                        let ip = resolve(self.dns, &self.server).await?;
                        self.address.lock(|a| a.set(Some(ip)));
                        ip
                    }
                };
                exchange(self.tcp, ip, &req, rx).await
            };
            let limit = embassy_time::Duration::from_millis(timeout.as_millis());
            let result = embassy_time::with_timeout(limit, work)
                .await
                .unwrap_or(Err(Failure::Transport(outage_core::Transport::Timeout)));
            if matches!(result, Err(Failure::Transport(_))) {
                self.address.lock(|a| a.set(None));
            }
            match result {
                Err(f) if f.resend_once(route.may_resend()) && !stale => {
                    emit(&Event::StaleConnection {
                        what: route.endpoint(),
                    });
                    self.stale_retries.fetch_add(1, Ordering::Relaxed);
                    stale = true;
                }
                other => return other,
            }
        }
    }

    /// The token requests carry (with feature `login`, see `login.rs`).
    #[cfg(not(feature = "login"))]
    fn bearer(&self) -> Bearer<'_> {
        Bearer::Fixed(self.token)
    }

    /// An answer with an unexpected status is a failure of its own.
    fn expect(&self, x: Exchange, ok: &[u16]) -> Result<Exchange, Failure> {
        if ok.contains(&x.status) {
            Ok(x)
        } else {
            Err(Failure::Status {
                status: x.status,
                retry_after: x.retry_after,
            })
        }
    }

    fn set_worker_id(&self, id: Id) {
        self.worker_id.lock(|cell| *cell.borrow_mut() = id);
    }

    /// Create a worker and register every job for it; the new id becomes
    /// the current one only then (until then the loops keep the old one).
    async fn register_all(&self, rx: &mut [u8], tx: &mut [u8]) -> Result<(), (Endpoint, Failure)> {
        let mut id = Id::new();
        for step in 0..=self.jobs.len() {
            self.startup_request(step, &mut id, rx, tx).await?;
        }
        self.set_worker_id(id);
        Ok(())
    }

    /// Registration request `step`: 0 creates a worker (`POST /workers`,
    /// its id into `id`), `n` registers job `n-1` for it (`PUT
    /// /rooms/{room}/jobs`). One `call` await for both.
    async fn startup_request(
        &self,
        step: usize,
        id: &mut Id,
        rx: &mut [u8],
        tx: &mut [u8],
    ) -> Result<(), (Endpoint, Failure)> {
        let (route, body) = match step.checked_sub(1) {
            None => (Route::CreateWorker, None),
            Some(n) => {
                let job = &self.jobs[n];
                let len = registration_body(tx, job, id).ok_or((
                    Endpoint::RegisterJob,
                    Failure::Transport(outage_core::Transport::Network),
                ))?;
                (Route::RegisterJob { room: job.room }, Some(len))
            }
        };
        let fail = |f| (route.endpoint(), f);
        let x = self.call(route, body.map(|n| &tx[..n]), rx).await.map_err(fail)?;
        let x = self.expect(x, &[200, 201]).map_err(fail)?;
        if step == 0 {
            *id = member(&rx[x.body], "id")
                .and_then(string)
                .ok_or(fail(Failure::MalformedResponse))?;
        }
        Ok(())
    }

    /// Create the worker and register its jobs, retrying each request on the
    /// core's startup schedule; fatal answers are not retried. `rx` receives
    /// the answers, `tx` holds registration bodies (schemas included).
    pub async fn start(&self, rx: &mut [u8], tx: &mut [u8]) -> Result<(), StartupError> {
        #[cfg(feature = "login")]
        self.first_login(rx).await?;
        let mut id = Id::new();
        for step in 0..=self.jobs.len() {
            let mut schedule = StartupRetry::new();
            loop {
                let started = self.clock.now();
                let Err((what, failure)) = self.startup_request(step, &mut id, rx, tx).await else {
                    break;
                };
                let (next, event) = schedule.on_failure(&self.config(), what, started, failure, self.rand());
                emit(&event);
                match next {
                    StartupStep::RetryAt(t) => embassy_time::Timer::at(to_embassy(t)).await,
                    StartupStep::GiveUp(e) => return Err(e),
                }
            }
        }
        self.set_worker_id(id);
        emit(&Event::Registered {
            worker_id: &self.worker_id(),
            jobs: self.jobs.len() as u32,
        });
        // The loops' clocks start now, after a possibly long startup.
        self.fresh_machine();
        Ok(())
    }

    /// A fresh core state with the same configuration, its clocks starting
    /// now.
    fn fresh_machine(&self) {
        let rand = self.rand();
        let now = self.clock.now();
        self.with_machine(|m| {
            if let Ok(fresh) = Machine::new(*m.config(), now, rand) {
                *m = fresh;
            }
        });
    }

    fn loop_exited(&self) {
        if self.live_loops.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.finished.sender().send(true);
        }
    }

    /// The heartbeat loop; run it in its own task. `rx` receives answers
    /// (512 bytes is plenty).
    pub async fn heartbeat_loop(&self, rx: &mut [u8]) {
        loop {
            let action = self.with_machine(|m| m.heartbeat_poll(self.clock.now()));
            match action {
                HeartbeatAction::Wait(t) => {
                    if !self.sleep_until(t, &self.wake_hb, &self.halt_hb).await {
                        break;
                    }
                }
                HeartbeatAction::Beat => {
                    let id = self.worker_id();
                    let started = self.clock.now();
                    let call = async {
                        let x = self
                            .call(Route::Heartbeat { worker_id: &id }, None, &mut *rx)
                            .await?;
                        self.expect(x, &[200]).map(drop)
                    };
                    let Either::Second(result) = self.or_halt(&self.halt_hb, call).await else {
                        break;
                    };
                    let step = self.with_machine(|m| m.on_heartbeat(started, self.clock.now(), result));
                    self.apply(&step);
                }
                HeartbeatAction::Login => {
                    #[cfg(feature = "login")]
                    let Some(step) = self.renew_login(&mut *rx).await else {
                        break;
                    };
                    // A fixed token (`new` refuses `renew_credentials`):
                    // the core never asks; if it did, the token stays
                    // refused.
                    #[cfg(not(feature = "login"))]
                    let step = {
                        let now = self.clock.now();
                        self.with_machine(|m| m.on_login(now, now, Err(Failure::status(401)), 0))
                    };
                    self.apply(&step);
                }
                HeartbeatAction::Expire => {
                    let now = self.clock.now();
                    let step = self.with_machine(|m| m.on_expired(now));
                    self.apply(&step);
                }
                HeartbeatAction::Stop(_) => break,
            }
        }
        self.loop_exited();
    }

    /// Ends when a graceful stop's grace period has run out.
    async fn overrun(&self) {
        loop {
            match self.grace_deadline.lock(|d| d.get()) {
                Some(d) if embassy_time::Instant::now() >= d => return,
                Some(d) => {
                    let _ = select(embassy_time::Timer::at(d), self.wake_claim.wait()).await;
                }
                None => self.wake_claim.wait().await,
            }
        }
    }

    /// The claim loop; run it in its own task.
    ///
    /// Every request but the registration goes through one `call` await
    /// (its route and body chosen before it, its answer read after it):
    /// each await of an async state machine costs flash.
    pub async fn claim_loop<H: Handler>(&self, bufs: ClaimBuffers<'_>, handler: &mut H) {
        let ClaimBuffers { rx, tx, payload } = bufs;
        let mut held: Option<Held> = None;
        // The id given up after an ambiguous claim, until it is deleted.
        let mut retired: Option<Id> = None;
        'claim: loop {
            let now = self.clock.now();
            let action = self.with_machine(|m| m.claim_poll(now));
            let id = self.worker_id();
            let task_id = held.as_ref().map_or("", |h| h.id.as_str());
            // The request of this action: route, body (its length in `tx`;
            // `None` if it does not fit), the statuses that are success.
            let step = 'step: {
                let (route, body, ok): (Route<'_>, Option<Option<usize>>, &[u16]) = match action {
                    ClaimAction::Wait(t) => {
                        if !self.sleep_until(t, &self.wake_claim, &self.halt_claim).await {
                            break 'claim;
                        }
                        continue 'claim;
                    }
                    ClaimAction::Stop(_) => break 'claim,
                    ClaimAction::Expire => {
                        let step = self.with_machine(|m| m.on_expired(now));
                        self.apply(&step);
                        continue 'claim;
                    }
                    ClaimAction::Claim => (Route::Claim, claim_body(tx, &id).map(Some), &[200]),
                    ClaimAction::Start | ClaimAction::Deliver => {
                        let Some(update) = held.as_ref().and_then(|h| h.update(action)) else {
                            break 'claim;
                        };
                        (
                            Route::TaskStatus { task_id },
                            status_body(tx, &update).map(Some),
                            &[200],
                        )
                    }
                    ClaimAction::Verify => (Route::GetTask { task_id }, Some(None), &[200]),
                    ClaimAction::Retire => match retired.as_deref() {
                        Some(old) => (Route::Disconnect { worker_id: old }, Some(None), &[200, 204]),
                        None => {
                            let rand = self.rand();
                            let step =
                                self.with_machine(|m| m.on_retired(now, self.clock.now(), Ok(()), rand));
                            if !self.with_machine(|m| m.is_retiring()) {
                                retired = None;
                            }
                            break 'step step;
                        }
                    },
                    ClaimAction::Register => {
                        let call = self.register_all(&mut *rx, &mut *tx);
                        let Either::Second(result) = self.or_halt(&self.halt_claim, call).await else {
                            break 'claim;
                        };
                        let rand = self.rand();
                        let step =
                            self.with_machine(|m| m.on_registered(now, self.clock.now(), result, rand));
                        if self.with_machine(|m| m.is_retiring()) {
                            retired = Some(id);
                        }
                        break 'step step;
                    }
                    ClaimAction::Execute => {
                        let Some(h) = held.as_mut() else { break 'claim };
                        let outcome = match (self.jobs.iter().any(|j| j.matches(&h.job_name)), h.payload_len)
                        {
                            (false, _) => Err(error_text(NO_HANDLER_ERROR)),
                            (true, None) => Err(error_text("payload larger than the worker's buffer")),
                            (true, Some(len)) => {
                                let task = Task {
                                    id: &h.id,
                                    job_name: &h.job_name,
                                    room_id: &h.room_id,
                                    payload: &payload[..len],
                                };
                                let run = select(handler.run(task), self.overrun());
                                match self.or_halt(&self.halt_claim, run).await {
                                    Either::Second(Either::First(r)) => r,
                                    Either::Second(Either::Second(())) => Err(error_text(SHUTDOWN_ERROR)),
                                    Either::First(()) => break 'claim,
                                }
                            }
                        };
                        emit(&Event::TaskFinished {
                            task_id: &h.id,
                            job: &h.job_name,
                            room: &h.room_id,
                            took: self.clock.now() - now,
                            error: outcome.as_ref().err().map(|t| t.as_str()),
                        });
                        let ok = outcome.is_ok();
                        h.outcome = Some(outcome);
                        break 'step self.with_machine(|m| m.on_executed(self.clock.now(), ok));
                    }
                };
                // A body that does not fit `tx` stops the loop, as before.
                let Some(body) = body else {
                    break 'claim;
                };
                let call = async {
                    let x = self.call(route, body.map(|n| &tx[..n]), &mut *rx).await?;
                    self.expect(x, ok)
                };
                let Either::Second(result) = self.or_halt(&self.halt_claim, call).await else {
                    break 'claim;
                };
                let answer = |x: Exchange| &rx[x.body];
                let later = self.clock.now();
                let rand = self.rand();
                match action {
                    ClaimAction::Claim => {
                        let result = result.and_then(|x| take_task(answer(x), payload)).map(|task| {
                            held = task;
                            held.is_some()
                        });
                        self.with_machine(|m| m.on_claim(now, later, result, rand))
                    }
                    ClaimAction::Start | ClaimAction::Deliver => {
                        // The server answers with the updated task; an answer
                        // that does not say so cannot prove the update applied
                        // (the core sends it again, and checks a 409 with a GET).
                        let sent = held.as_ref().and_then(|h| h.update(action)).map(|u| u.status);
                        let result = result.and_then(|x| match task_info(answer(x)) {
                            Ok((status, _)) if Some(status) == sent => Ok(()),
                            _ => Err(Failure::MalformedResponse),
                        });
                        match action {
                            ClaimAction::Start => {
                                self.with_machine(|m| m.on_started(now, later, result, rand))
                            }
                            _ => self.with_machine(|m| m.on_delivered(now, later, result, rand)),
                        }
                    }
                    ClaimAction::Verify => {
                        let result = result.and_then(|x| {
                            let (status, holder) = task_info(answer(x))?;
                            let ours = holder.as_deref() == Some(id.as_str());
                            Ok(TaskState { status, ours })
                        });
                        self.with_machine(|m| m.on_verified(now, later, result, rand))
                    }
                    _ => {
                        let step = self.with_machine(|m| m.on_retired(now, later, result.map(drop), rand));
                        if !self.with_machine(|m| m.is_retiring()) {
                            retired = None;
                        }
                        step
                    }
                }
            };
            if self.with_machine(|m| m.phase()) == Phase::Idle {
                held = None;
            }
            self.apply(&step);
        }
        self.loop_exited();
    }

    /// Both loops in the current task (for applications that spare no
    /// second task).
    pub async fn run<H: Handler>(&self, heartbeat_rx: &mut [u8], bufs: ClaimBuffers<'_>, handler: &mut H) {
        embassy_futures::join::join(self.heartbeat_loop(heartbeat_rx), self.claim_loop(bufs, handler)).await;
    }

    /// Run the worker for as long as the device runs: start it (create and
    /// register, on the startup schedule), run both loops in this task, and
    /// whenever it stops by itself — an outage longer than
    /// `max_unreachable`, a lost or refused registration, a startup that
    /// gave up — log why, wait `policy`'s backoff, delete the old worker
    /// from the server (best effort, as [`Worker::shutdown`] does) and start
    /// a fresh one. Returns only once [`Worker::shutdown`] (or
    /// [`Worker::disconnect`]) is called from another task.
    ///
    /// A task that was running when the worker stopped is not resumed: the
    /// server fails it when it sweeps the old worker (or at once, when the
    /// old worker is deleted).
    pub async fn supervise<H: Handler>(
        &self,
        heartbeat_rx: &mut [u8],
        bufs: ClaimBuffers<'_>,
        handler: &mut H,
        policy: Restart,
    ) {
        let ClaimBuffers { rx, tx, payload } = bufs;
        let mut streak = 0u32;
        loop {
            let why = match self.unless_stopped(self.start(rx, tx)).await {
                Either::First(()) => break,
                Either::Second(Err(e)) => Stopped::Startup(e),
                Either::Second(Ok(())) => {
                    let registered = self.clock.now();
                    let bufs = ClaimBuffers {
                        rx: &mut *rx,
                        tx: &mut *tx,
                        payload: &mut *payload,
                    };
                    self.run(heartbeat_rx, bufs, handler).await;
                    match self.stop_reason() {
                        None | Some(StopReason::Requested) => break,
                        Some(reason) => {
                            streak = policy.streak_after(streak, self.clock.now() - registered);
                            Stopped::Stop(reason)
                        }
                    }
                }
            };
            let wait = policy.wait(streak, self.config().jitter, self.rand());
            streak = streak.saturating_add(1);
            let restart = self.restarts.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            emit_restart(&why, wait, restart);
            let wait = embassy_time::Duration::from_millis(wait.as_millis());
            if let Either::First(()) = self.unless_stopped(embassy_time::Timer::after(wait)).await {
                break;
            }
            self.delete_worker(rx).await;
            if self.stop_requested.load(Ordering::SeqCst) {
                break;
            }
            self.renew();
        }
        self.loops_gone();
    }

    /// `fut`, unless the application asks the worker to stop first
    /// (`Either::First(())`, without polling `fut`).
    fn unless_stopped<'s, F: core::future::Future>(
        &'s self,
        fut: F,
    ) -> Select<impl core::future::Future<Output = ()> + 's, F> {
        select(
            async move {
                if !self.stop_requested.load(Ordering::SeqCst) {
                    self.stop.wait().await;
                }
            },
            fut,
        )
    }

    /// Make a stopped worker as new — fresh core state, no worker id, no
    /// stop request — so that [`Worker::start`] and the loops can run again
    /// (what [`Worker::supervise`] does between runs; for applications that
    /// restart the worker themselves). [`Worker::stats`] are kept. Only once
    /// both loops have exited ([`Worker::is_finished`]): otherwise this
    /// returns false and changes nothing (a worker whose loops never ran
    /// needs no reset).
    pub fn reset(&self) -> bool {
        if !self.is_finished() {
            return false;
        }
        self.renew();
        true
    }

    fn renew(&self) {
        self.fresh_machine();
        self.set_worker_id(Id::new());
        for signal in [
            &self.wake_hb,
            &self.wake_claim,
            &self.halt_hb,
            &self.halt_claim,
            &self.stop,
        ] {
            signal.reset();
        }
        self.halted.store(false, Ordering::SeqCst);
        self.grace_deadline.lock(|d| d.set(None));
        self.disconnected.store(false, Ordering::SeqCst);
        self.stop_requested.store(false, Ordering::SeqCst);
        self.live_loops.store(2, Ordering::SeqCst);
        self.finished.sender().send(false);
    }

    /// The loops will not run (any more): whoever waits for them is done.
    fn loops_gone(&self) {
        if self.live_loops.swap(0, Ordering::SeqCst) != 0 {
            self.finished.sender().send(true);
        }
    }

    /// Wait until both loops have exited; why the worker stopped. (Under
    /// [`Worker::supervise`], the first stop: the worker then starts again.)
    pub async fn wait(&self) -> StopReason {
        match self.finished.receiver() {
            Some(mut r) => {
                r.get_and(|done| *done).await;
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
    /// reported failed, "worker shutting down"); wait for both loops; delete
    /// the worker from the server (a failure there is only logged).
    /// Idempotent: a second call only waits for the loops.
    pub async fn shutdown(&self, grace: embassy_time::Duration, rx: &mut [u8]) {
        self.stop_requested.store(true, Ordering::SeqCst);
        self.stop.signal(());
        self.grace_deadline
            .lock(|d| d.set(Some(embassy_time::Instant::now() + grace)));
        let step = self.with_machine(|m| m.request_stop());
        self.apply(&step);
        let limit =
            grace + embassy_time::Duration::from_millis(self.config().request_timeout.as_millis() + 1_000);
        if embassy_time::with_timeout(limit, self.wait()).await.is_err() {
            self.halt();
            self.wait().await;
        }
        self.delete_worker(rx).await;
    }

    /// `DELETE /workers/{id}` once, unless the server forgot the worker;
    /// a failure is only logged (the server sweeps stale workers).
    async fn delete_worker(&self, rx: &mut [u8]) {
        let id = self.worker_id();
        let forgotten = matches!(self.stop_reason(), Some(StopReason::RegistrationLost(_)));
        let first = !self.disconnected.swap(true, Ordering::SeqCst);
        if first && !id.is_empty() && !forgotten {
            let result = match self.call(Route::Disconnect { worker_id: &id }, None, rx).await {
                Ok(x) => self.expect(x, &[200, 204]).map(drop),
                Err(f) => Err(f),
            };
            match result {
                Ok(()) => emit(&Event::Disconnected { worker_id: &id }),
                Err(error) => emit(&Event::DisconnectFailed {
                    worker_id: &id,
                    error,
                }),
            }
        }
    }

    /// [`Worker::shutdown`] without grace: stop now.
    pub async fn disconnect(&self, rx: &mut [u8]) {
        self.shutdown(embassy_time::Duration::from_ticks(0), rx).await;
    }
}

/// Parse a claim answer and keep the task (and its payload) in `held`.
/// Names are unescaped (the server accepts rooms such as `r\\x`); the
/// payload is kept as the exact bytes the server sent. An answer that
/// cannot be read is [`Failure::MalformedResponse`]: an ambiguous claim
/// for the core, never a silent loss.
fn take_task(body: &[u8], payload_buf: &mut [u8]) -> Result<Option<Held>, Failure> {
    let bad = Failure::MalformedResponse;
    let task = task_span(body).ok_or(bad)?;
    if &body[task.clone()] == b"null" {
        return Ok(None);
    }
    let field = |key: &[u8]| field_span(body, &task, key).ok_or(bad);
    let status = json_status(&body[field(b"status")?]).ok_or(bad)?;
    if status != TaskStatus::Claimed {
        return Err(bad);
    }
    let payload = &body[field(b"payload")?];
    let payload_len = payload_buf.get_mut(..payload.len()).map(|dst| {
        dst.copy_from_slice(payload);
        payload.len()
    });
    Ok(Some(Held {
        id: json_string(body, field(b"id")?).ok_or(bad)?,
        job_name: json_string(body, field(b"job_name")?).ok_or(bad)?,
        room_id: json_string(body, field(b"room_id")?).ok_or(bad)?,
        payload_len,
        outcome: None,
    }))
}

/// `s`, cut to [`ErrorText`]'s capacity at a character boundary.
fn error_text(s: &str) -> ErrorText {
    let mut end = s.len().min(128);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end)
        .and_then(|s| ErrorText::try_from(s).ok())
        .unwrap_or_default()
}

/// A request body being written into a buffer.
struct Body<'t> {
    buf: &'t mut [u8],
    len: usize,
}

impl Body<'_> {
    fn raw(&mut self, b: &[u8]) -> Option<()> {
        let dst = self.buf.get_mut(self.len..self.len + b.len())?;
        dst.copy_from_slice(b);
        self.len += b.len();
        Some(())
    }
    fn string(&mut self, s: &str) -> Option<()> {
        self.len += write_string(self.buf.get_mut(self.len..)?, s)?;
        Some(())
    }
}

/// `{"worker_id":…}` into `tx`.
fn claim_body(tx: &mut [u8], worker_id: &str) -> Option<usize> {
    let mut w = Body { buf: tx, len: 0 };
    w.raw(b"{\"worker_id\":")?;
    w.string(worker_id)?;
    w.raw(b"}")?;
    Some(w.len)
}

/// `{"status":…}` or `{"status":…,"error":…}` into `tx`.
fn status_body(tx: &mut [u8], update: &StatusUpdate<'_>) -> Option<usize> {
    let mut w = Body { buf: tx, len: 0 };
    w.raw(b"{\"status\":")?;
    w.string(update.status.as_str())?;
    if let Some(error) = update.error {
        w.raw(b",\"error\":")?;
        w.string(error)?;
    }
    w.raw(b"}")?;
    Some(w.len)
}

/// `{"category":…,"name":…,"schema":<raw>,"worker_id":…}` into `tx`.
fn registration_body(tx: &mut [u8], job: &Job<'_>, worker_id: &str) -> Option<usize> {
    let mut w = Body { buf: tx, len: 0 };
    w.raw(b"{\"category\":")?;
    w.string(job.category)?;
    w.raw(b",\"name\":")?;
    w.string(job.name)?;
    w.raw(b",\"schema\":")?;
    w.raw(job.schema.as_bytes())?;
    w.raw(b",\"worker_id\":")?;
    w.string(worker_id)?;
    w.raw(b"}")?;
    Some(w.len)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn registration_bodies() {
        let mut tx = [0u8; 200];
        let job = Job {
            room: "@global",
            category: "modifiers",
            name: "E\"x",
            schema: r#"{"type":"object"}"#,
        };
        let n = registration_body(&mut tx, &job, "w-1").unwrap();
        assert_eq!(
            core::str::from_utf8(&tx[..n]).unwrap(),
            r#"{"category":"modifiers","name":"E\"x","schema":{"type":"object"},"worker_id":"w-1"}"#
        );
        let mut small = [0u8; 10];
        assert_eq!(registration_body(&mut small, &job, "w-1"), None);
    }

    #[test]
    fn claim_and_status_bodies() {
        let mut tx = [0u8; 80];
        let n = claim_body(&mut tx, "w-1").unwrap();
        assert_eq!(&tx[..n], br#"{"worker_id":"w-1"}"#);
        let update = StatusUpdate {
            status: TaskStatus::Failed,
            error: Some("bad \"input\""),
        };
        let n = status_body(&mut tx, &update).unwrap();
        assert_eq!(&tx[..n], br#"{"status":"failed","error":"bad \"input\""}"#);
        let update = StatusUpdate {
            status: TaskStatus::Running,
            error: None,
        };
        let n = status_body(&mut tx, &update).unwrap();
        assert_eq!(&tx[..n], br#"{"status":"running"}"#);
        assert_eq!(status_body(&mut tx[..10], &update), None);
    }

    #[test]
    fn task_answers() {
        let body = br#"{"id":"t","status":"running","worker_id":"w\u002d1","error":null}"#;
        let (status, worker) = task_info(body).unwrap();
        assert_eq!((status, worker.as_deref()), (TaskStatus::Running, Some("w-1")));
        let (_, worker) = task_info(br#"{"status":"failed","worker_id":null}"#).unwrap();
        assert_eq!(worker, None);
        assert_eq!(
            task_info(br#"{"status":"done"}"#),
            Err(Failure::MalformedResponse)
        );
        assert_eq!(
            task_info(br#"{"status":"failed","worker_id":7}"#),
            Err(Failure::MalformedResponse)
        );
    }

    #[test]
    fn jobs_match_full_names() {
        let job = Job {
            room: "@global",
            category: "modifiers",
            name: "Echo",
            schema: "{}",
        };
        assert!(job.matches("@global:modifiers:Echo"));
        assert!(!job.matches("@global:modifiers:Echo2"));
        assert!(!job.matches("room:modifiers:Echo"));
    }

    const CLAIM: &[u8] = br#"{"task":{"id":"ef81d82c-0cdb-4b06-a3d4-e4df27161b69","job_name":"@global:modifiers:E\"x","room_id":"r\\x","status":"claimed","created_at":"2026-11-23T23:02:16","worker_id":"w","error":null,"payload":{"a":[1,-0.0,"\u0000"],"s":"}\"]"},"queue_position":null}}"#;

    #[test]
    fn claims_keep_the_payload_and_unescape_names() {
        let mut payload = [0u8; 64];
        let held = take_task(CLAIM, &mut payload).unwrap().unwrap();
        assert_eq!(held.room_id, "r\\x");
        assert_eq!(held.job_name, "@global:modifiers:E\"x");
        let n = held.payload_len.unwrap();
        assert_eq!(&payload[..n], br#"{"a":[1,-0.0,"\u0000"],"s":"}\"]"}"#);
        assert!(take_task(br#"{"task":null}"#, &mut payload).unwrap().is_none());
        // A payload larger than its buffer is kept as "too large", not lost.
        let mut small = [0u8; 4];
        assert_eq!(take_task(CLAIM, &mut small).unwrap().unwrap().payload_len, None);
        // Unreadable answers are failures (an ambiguous claim for the core).
        for bad in [
            &b""[..],
            b"{",
            br#"{"task":{"id":"x"}}"#,
            br#"{"task":{"id":1,"job_name":"a","room_id":"r","status":"claimed","payload":1}}"#,
        ] {
            assert_eq!(
                take_task(bad, &mut payload).err(),
                Some(Failure::MalformedResponse)
            );
        }
    }

    /// Fuzz cases per property: 2,000 in a normal test run; `.ci/run`'s fuzz
    /// step sets `OUTAGE_FUZZ_CASES` higher.
    fn fuzz_cases() -> u32 {
        std::env::var("OUTAGE_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: fuzz_cases(), ..Default::default() })]

        /// Fuzz: arbitrary bytes and mutated claim answers never panic.
        #[test]
        fn claim_parsing_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            edits in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 0..6),
            cut in 0usize..400,
        ) {
            let mut payload = [0u8; 128];
            let _ = take_task(&bytes, &mut payload);
            let mut body = CLAIM.to_vec();
            for (at, b) in edits {
                let i = at % body.len();
                body[i] = b;
            }
            body.truncate(cut.max(body.len() / 2));
            let _ = take_task(&body, &mut payload);
        }
    }

    #[test]
    fn jobs_match_only_their_own_full_name() {
        let job = Job {
            room: "room",
            category: "analysis",
            name: "a:b",
            schema: "{}",
        };
        assert!(job.matches("room:analysis:a:b"));
        assert!(!job.matches("room:analysis:a"));
        assert!(!job.matches("room:analysisa:b"));
        assert!(!job.matches("roo:analysis:a:b"));
        let colon = Job { room: "r:x", ..job };
        assert!(
            !colon.matches("r:x:analysis:a:b"),
            "a room with a colon never matches, as the server splits"
        );
    }

    #[test]
    fn error_texts_cut_at_a_character() {
        let long: std::string::String = "é".repeat(100);
        let t = error_text(&long);
        assert_eq!(t.len(), 128);
        let odd = std::format!("x{long}");
        assert_eq!(error_text(&odd).len(), 127);
    }

    #[test]
    fn error_texts_are_bounded() {
        let long = "x".repeat_str_for_test();
        assert_eq!(error_text(&long).len(), 128);
    }

    trait Repeat {
        fn repeat_str_for_test(&self) -> heapless::String<300>;
    }
    impl Repeat for &str {
        fn repeat_str_for_test(&self) -> heapless::String<300> {
            let mut s = heapless::String::new();
            for _ in 0..300 {
                let _ = s.push_str(self);
            }
            s
        }
    }
}
