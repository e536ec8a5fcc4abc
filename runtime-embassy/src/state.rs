//! The worker's state: the [`Worker`] value (what it was built with, and
//! the view its driver and its handle share), its construction and the
//! accessors both use. Running it is [`crate::worker`]'s; performing its
//! I/O is `adapter`'s, which reads this state.
//!
//! Layering: above `types`, `net`, `wire`, `login`; below `adapter` and
//! `worker`.

use core::cell::{Cell, RefCell};
use core::net::IpAddr;
use core::sync::atomic::AtomicBool;

use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::signal::Signal;
use embassy_sync::watch::Watch;
use embedded_nal_async::{Dns, TcpConnect};
use outage_core::{
    Config, ConfigError, Control, Instant, SplitMix64, Stage, StartupError, Stats, StopReason, ValidConfig,
};

use crate::net::Server;
use crate::types::{CS, Job, MAX_NAME, MAX_SERVER_URL, MAX_TOKEN};
use crate::wire::Id;

#[cfg(feature = "login")]
mod login;

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
    pub(crate) stop_requested: AtomicBool,
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

    pub(crate) fn rand(&self) -> u32 {
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
}
