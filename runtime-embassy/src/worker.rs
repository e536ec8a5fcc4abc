//! The embassy worker: the public types and the handle. The worker's life
//! is the core's ([`outage_core::driver::drive`] over a
//! [`outage_core::Lifecycle`]); [`crate::adapter`] performs its I/O. No
//! heap: every buffer is the caller's.

use core::cell::{Cell, RefCell};
use core::net::IpAddr;
use core::sync::atomic::{AtomicBool, Ordering};

use embassy_futures::select::{Either, select};
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embassy_sync::watch::Watch;
use embedded_nal_async::{Dns, TcpConnect};
use outage_core::{
    Clock, Config, ConfigError, Control, Instant, Lifecycle, SplitMix64, Stage, StartupError, Stats,
    StopReason, ValidConfig,
};

use crate::adapter::{Driver, Lane};
use crate::net::Server;
use crate::restart::{Restart, Stopped};
use crate::wire::Id;

pub(crate) type CS = CriticalSectionRawMutex;

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

/// The embassy-time clock, as the core's [`Clock`].
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbassyClock;

impl Clock for EmbassyClock {
    fn now(&self) -> Instant {
        Instant::from_millis(embassy_time::Instant::now().as_millis())
    }
}

pub(crate) fn to_embassy(t: Instant) -> embassy_time::Instant {
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
    pub(crate) fn matches(&self, full_name: &str) -> bool {
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

/// What the worker shares between its driver and its handle.
pub(crate) struct View {
    /// The current worker id; the pending one (created, not yet
    /// registered); the old one (given up, to be retired).
    pub worker_id: Id,
    pub pending: Id,
    pub old: Id,
    pub control: Control,
    pub stage: Stage,
    pub stop: Option<StopReason>,
    pub stats: Stats,
    /// When the current run registered (for the restart streak).
    pub registered_at: Option<Instant>,
    /// Why the last run could not start.
    pub startup_error: Option<StartupError>,
}

/// The worker: `&Worker` from `'static` storage (e.g. a `static_cell`),
/// shared by the task that runs it ([`Worker::run`] or
/// [`Worker::supervise`]) and whoever stops it.
pub struct Worker<'a, T: TcpConnect, D: Dns> {
    pub(crate) tcp: &'a T,
    pub(crate) dns: &'a D,
    pub(crate) server: Server<'a>,
    pub(crate) token: &'a str,
    pub(crate) jobs: &'a [Job<'a>],
    /// Checked once, here: a constant configuration (a device's) then
    /// costs no validation at run time.
    pub(crate) config: ValidConfig,
    /// The server's address from the last name lookup, until a request
    /// fails below HTTP.
    pub(crate) address: Mutex<CS, Cell<Option<IpAddr>>>,
    pub(crate) view: Mutex<CS, RefCell<View>>,
    rng: Mutex<CS, Cell<SplitMix64>>,
    pub(crate) control_changed: Signal<CS, ()>,
    /// 0 idle, 1 starting, 2 running, 3 finished.
    pub(crate) progress: Watch<CS, u8, 4>,
    /// The application asked the worker to stop: [`Worker::supervise`]
    /// returns instead of restarting.
    stop_requested: AtomicBool,
    /// [`Worker::with_observer`]: sees every event after it is logged.
    #[cfg(feature = "observer")]
    pub(crate) observer: Option<fn(&outage_core::Event<'_>)>,
    /// [`Worker::with_login`]'s email, password and token.
    #[cfg(feature = "login")]
    login: Option<login::Credentials<'a>>,
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
        let config = config.validated().map_err(SetupError::Config)?;
        if config.concurrency != 1 {
            // One task slot: a device runs one task at a time (its RAM).
            return Err(SetupError::Config(ConfigError::Concurrency(config.concurrency)));
        }
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
        if jobs.is_empty() || jobs.len() > usize::from(u16::MAX) || jobs.iter().any(too_long) {
            return Err(SetupError::Jobs);
        }
        Ok(Worker {
            tcp,
            dns,
            server,
            token,
            jobs,
            config,
            address: Mutex::new(Cell::new(None)),
            view: Mutex::new(RefCell::new(View {
                worker_id: Id::new(),
                pending: Id::new(),
                old: Id::new(),
                control: Control::Run,
                stage: Stage::Done,
                stop: None,
                stats: Stats::default(),
                registered_at: None,
                startup_error: None,
            })),
            rng: Mutex::new(Cell::new(SplitMix64::new(seed))),
            control_changed: Signal::new(),
            progress: Watch::new_with(0),
            stop_requested: AtomicBool::new(false),
            #[cfg(feature = "observer")]
            observer: None,
            #[cfg(feature = "login")]
            login: None,
        })
    }

    /// Also hand every event to `observer` after it is logged (counters of
    /// the application's own, a status LED, a report upstream). Called in
    /// the worker's task: keep it short. [`Worker::stats`] has the counters.
    /// (Feature `observer`: without it, a build that logs nothing — defmt
    /// off — builds no event at all.)
    #[cfg(feature = "observer")]
    pub fn with_observer(mut self, observer: fn(&outage_core::Event<'_>)) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Log `event` and hand it to the observer, if any.
    pub(crate) fn emit(&self, event: &outage_core::Event<'_>) {
        crate::fmt::emit(event);
        #[cfg(feature = "observer")]
        if let Some(observe) = self.observer {
            observe(event);
        }
    }

    /// The token requests carry (with feature `login`, see `login.rs`).
    #[cfg(not(feature = "login"))]
    pub(crate) fn bearer(&self) -> crate::net::Bearer<'_> {
        crate::net::Bearer::Fixed(self.token)
    }

    /// Whether a run starts with a login (with feature `login`, see
    /// `login.rs`).
    #[cfg(not(feature = "login"))]
    pub(crate) fn logs_in(&self) -> bool {
        false
    }

    pub(crate) fn with_view<R>(&self, f: impl FnOnce(&mut View) -> R) -> R {
        self.view.lock(|v| f(&mut v.borrow_mut()))
    }

    fn rand(&self) -> u32 {
        self.rng.lock(|cell| {
            let mut rng = cell.get();
            let r = rng.next_u32();
            cell.set(rng);
            r
        })
    }

    /// The worker id on the server (empty before it registers).
    pub fn worker_id(&self) -> Id {
        self.with_view(|v| v.worker_id.clone())
    }

    /// Why the worker stopped (or is stopping), once it does.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.with_view(|v| v.stop)
    }

    /// True once a run has finished (stopped, and deleted from the server
    /// where the core decided to), and before the first.
    pub fn is_finished(&self) -> bool {
        self.progress.try_get() == Some(3)
    }

    /// The counters so far, over every run (the same type on every
    /// runtime).
    pub fn stats(&self) -> Stats {
        self.with_view(|v| v.stats)
    }

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
        let mut slot = Lane::new(bufs.rx, bufs.tx, bufs.payload, Some(handler));
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
